//! Every `Error` variant is reachable from bad input, and nothing panics.

use nq_evict::{
    Blend, Budget, Error, ExpectedAttention, HeadNorm, KeyKey, KeyNorm, ObservedAttention, Policy,
    ScoreInput, Scorer, Shape, Split, ValueNorm, gather, select,
};

use crate::common::prefill;

fn score(s: &dyn Scorer, input: &ScoreInput<'_>, t: usize) -> Result<(), Error> {
    let mut out = vec![0.0f32; t];
    s.score(input, &mut out)
}

#[test]
fn shape_errors_of_score_input() {
    let c = prefill(1, 10, 4, 2, 8);
    let ok = c.input();
    assert!(matches!(score(&KeyNorm, &ScoreInput { d: 0, ..ok }, 10), Err(Error::ZeroDim { .. })));
    assert!(matches!(
        score(&KeyNorm, &ScoreInput { keys: &c.keys[..79], ..ok }, 10),
        Err(Error::NotMultiple { what: "keys", .. })
    ));
    assert!(matches!(
        score(&KeyNorm, &ScoreInput { key_positions: &c.key_positions[..9], ..ok }, 10),
        Err(Error::Len { what: "key_positions", .. })
    ));
    assert!(matches!(
        score(&KeyNorm, &ScoreInput { values: Some(&c.values[..8]), ..ok }, 10),
        Err(Error::Len { what: "values", .. })
    ));
    assert!(matches!(
        score(&KeyNorm, &ScoreInput { queries: &c.queries[..60], ..ok }, 10),
        Err(Error::NotMultiple { what: "queries", .. })
    ));
    assert!(matches!(
        score(&KeyNorm, &ScoreInput { query_positions: &[], ..ok }, 10),
        Err(Error::Len { what: "queries", .. })
    ));
    assert!(matches!(score(&KeyKey, &ok, 9), Err(Error::Len { what: "out", .. })));
}

#[test]
fn scorer_requirements() {
    let c = prefill(2, 10, 4, 2, 8);
    let no_q = ScoreInput { queries: &[], query_positions: &[], ..c.input() };
    assert!(matches!(
        score(&ObservedAttention::default(), &no_q, 10),
        Err(Error::NoQueries { .. })
    ));
    assert!(matches!(
        score(&ExpectedAttention::default(), &no_q, 10),
        Err(Error::NoQueries { .. })
    ));
    // scorers that need no queries accept the same input
    assert!(score(&KeyKey, &no_q, 10).is_ok());
    let no_v = ScoreInput { values: None, ..c.input() };
    assert!(matches!(score(&ValueNorm::new(KeyNorm), &no_v, 10), Err(Error::NoValues { .. })));
    // weighing scores the caller has: values must be `[scores, d]`, d > 0, epsilon >= 0
    let mut s = [1.0f32; 3];
    let vn = ValueNorm::new(KeyNorm);
    assert!(matches!(vn.weigh(&[1.0; 5], 2, &mut s), Err(Error::Len { got: 5, expected: 6, .. })));
    assert!(matches!(vn.weigh(&[], 0, &mut s), Err(Error::ZeroDim { .. })));
    let bad = ValueNorm { epsilon: -1.0, ..ValueNorm::new(KeyNorm) };
    assert!(matches!(bad.weigh(&[1.0; 6], 2, &mut s), Err(Error::Config { .. })));
    assert_eq!(s, [1.0; 3], "nothing is written on error");
}

#[test]
fn config_errors() {
    let c = prefill(3, 10, 4, 2, 8);
    let i = c.input();
    let cfg = |r: Result<(), Error>, what: &str| match r {
        Err(Error::Config { what: w, .. }) => assert_eq!(w, what),
        other => panic!("{what}: {other:?}"),
    };
    cfg(score(&ObservedAttention { kernel: 4, ..Default::default() }, &i, 10), "kernel");
    cfg(score(&ObservedAttention { window: Some(0), ..Default::default() }, &i, 10), "window");
    cfg(score(&ObservedAttention { decay: Some(0.0), ..Default::default() }, &i, 10), "decay");
    cfg(score(&ObservedAttention { decay: Some(f32::NAN), ..Default::default() }, &i, 10), "decay");
    cfg(score(&ExpectedAttention { window: Some(0), ..Default::default() }, &i, 10), "window");
    cfg(score(&ExpectedAttention { covariance: -1.0, ..Default::default() }, &i, 10), "covariance");
    cfg(
        score(&ExpectedAttention { covariance: f32::NAN, ..Default::default() }, &i, 10),
        "covariance",
    );
    cfg(score(&ValueNorm { inner: KeyNorm, epsilon: -0.5 }, &i, 10), "epsilon");
    cfg(score(&Blend::new(KeyNorm, KeyKey, 1.5), &i, 10), "weight");
    let scores = vec![1.0f32; 100];
    let shape = Shape { layers: 1, heads: 1, tokens: 100 };
    let bad = |p: Policy, what: &str| cfg(select(&scores, shape, &p).map(|_| ()), what);
    bad(Policy { min_head_fraction: 1.5, ..Policy::default() }, "min_head_fraction");
    bad(Policy { pyramid: Some(0.0), ..Policy::default() }, "pyramid");
    bad(Policy { pyramid: Some(f32::INFINITY), ..Policy::default() }, "pyramid");
    bad(Policy { pyramid: Some(2.0), split: Split::Global, ..Policy::default() }, "pyramid");
}

#[test]
fn select_errors() {
    let scores = vec![1.0f32; 6 * 10];
    let p = Policy::default();
    assert!(matches!(
        select(&scores, Shape { layers: 2, heads: 0, tokens: 10 }, &p),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        select(&scores, Shape { layers: 0, heads: 3, tokens: 10 }, &p),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        select(&scores, Shape { layers: usize::MAX, heads: 3, tokens: 10 }, &p),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        select(&scores, Shape { layers: 1, heads: 1, tokens: u32::MAX as usize + 1 }, &p),
        Err(Error::TooManyTokens { .. })
    ));
    assert!(matches!(
        select(&scores, Shape { layers: 2, heads: 3, tokens: 11 }, &p),
        Err(Error::Len { what: "scores", .. })
    ));
    let shape = Shape { layers: 2, heads: 3, tokens: 10 };
    for f in [-0.1, 1.5, f32::NAN] {
        let bad = Policy { budget: Budget::KeepFraction(f), ..p };
        assert!(matches!(select(&scores, shape, &bad), Err(Error::BadFraction { .. })));
        let bad = Policy { budget: Budget::EvictFraction(f), ..p };
        assert!(matches!(select(&scores, shape, &bad), Err(Error::BadFraction { .. })));
    }
    let small = Policy { sinks: 2, recent: 2, budget: Budget::Tokens(3), ..p };
    assert_eq!(
        select(&scores, shape, &small),
        Err(Error::BudgetBelowProtected { op: "select", budget: 3, protected: 4 })
    );
}

#[test]
fn pooled_splits_reject_negative_and_infinite_candidates() {
    let shape = Shape { layers: 1, heads: 2, tokens: 10 };
    let policy = Policy {
        sinks: 1,
        recent: 1,
        budget: Budget::Tokens(5),
        head_norm: HeadNorm::Candidates,
        ..Policy::default()
    };
    for bad in [-1.0f32, f32::INFINITY, f32::NEG_INFINITY] {
        let mut scores = vec![1.0f32; 20];
        scores[13] = bad;
        assert_eq!(
            select(&scores, shape, &policy),
            Err(Error::BadScore { op: "select", index: 13, value: bad })
        );
        // per head, any ordering works
        let per_head = Policy { split: Split::PerHead, ..policy };
        assert!(select(&scores, shape, &per_head).is_ok());
        // protected scores are not read, except by HeadNorm::All sums
        let mut scores = vec![1.0f32; 20];
        scores[10] = bad;
        assert!(select(&scores, shape, &policy).is_ok());
        let all = Policy { head_norm: HeadNorm::All, ..policy };
        assert_eq!(
            select(&scores, shape, &all),
            Err(Error::BadScore { op: "select", index: 10, value: bad })
        );
        // raw comparison accepts anything
        let raw = Policy { head_norm: HeadNorm::None, ..policy };
        assert!(select(&scores, shape, &raw).is_ok());
    }
}

#[test]
fn gather_errors_and_result() {
    let rows: Vec<f32> = (0..12).map(|x| x as f32).collect();
    assert_eq!(gather(&rows, 3, &[0, 3]).unwrap(), vec![0.0, 1.0, 2.0, 9.0, 10.0, 11.0]);
    assert!(matches!(gather(&rows, 0, &[0]), Err(Error::ZeroDim { .. })));
    assert!(matches!(gather(&rows, 5, &[0]), Err(Error::NotMultiple { .. })));
    assert!(matches!(gather(&rows, 3, &[4]), Err(Error::BadIndex { at: 0, index: 4, .. })));
    assert!(matches!(gather(&rows, 3, &[1, 1]), Err(Error::BadIndex { at: 1, .. })));
    assert!(matches!(gather(&rows, 3, &[2, 1]), Err(Error::BadIndex { at: 1, .. })));
}

#[test]
fn non_finite_inputs_give_scores_not_panics() {
    let mut c = prefill(4, 30, 4, 2, 8);
    c.keys[5 * 8] = f32::NAN;
    c.keys[9 * 8] = f32::INFINITY;
    c.queries[3] = f32::NAN;
    let scorers: [&dyn Scorer; 4] =
        [&ObservedAttention::default(), &ExpectedAttention::default(), &KeyKey, &KeyNorm];
    for s in scorers {
        let mut out = vec![0.0f32; 30];
        s.score(&c.input(), &mut out).unwrap();
        let kept = select(
            &out,
            Shape { layers: 1, heads: 1, tokens: 30 },
            &Policy { recent: 4, split: Split::PerHead, ..Policy::default() },
        )
        .unwrap();
        assert_eq!(kept[0].len(), 12);
    }
}
