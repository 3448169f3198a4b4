//! Behaviour of the scorers: symmetries, causality, normalization, and what they rank first.

use nq_evict::{
    ExpectedAttention, GroupReduce, KeyKey, KeyNorm, ObservedAttention, Pool, Protect, Recency,
    ScoreInput, Scorer, ValueNorm,
};

use crate::common::{Case, assert_close, permutation, prefill};
use crate::oracle::{expected_bound, observed_bound};

fn run(s: &dyn Scorer, c: &Case) -> Vec<f32> {
    let mut out = vec![f32::NAN; c.t()];
    s.score(&c.input(), &mut out).expect("valid input");
    out
}

/// `b[i]` against `a[perm[i]]`, within `rel` (both are within `rel / 2` of the exact scores).
fn assert_permuted(a: &[f32], b: &[f32], perm: &[usize], rel: f32, what: &str) {
    let a_perm: Vec<f32> = perm.iter().map(|&p| a[p]).collect();
    assert_close(b, &a_perm, rel, what);
}

#[test]
fn scores_follow_a_permutation_of_tokens() {
    // Without pooling and protected ranges, a token's score depends on the token set, not on
    // its slot: reordering tokens (with their positions) reorders the scores.
    let c = prefill(21, 77, 9, 3, 32);
    let perm = permutation(5, 77);
    let p = c.permuted(&perm);
    let obs = ObservedAttention { kernel: 1, protect: Protect::NONE, ..Default::default() };
    let exp = ExpectedAttention { protect: Protect::NONE, ..Default::default() };
    let ob = 2.0 * observed_bound(&c, &obs);
    assert_permuted(&run(&obs, &c), &run(&obs, &p), &perm, ob, "observed");
    let eb = 2.0 * expected_bound(&c, &exp);
    assert_permuted(&run(&exp, &c), &run(&exp, &p), &perm, eb, "expected");
    let kk_bound = 4.0 * (2.0 * 34.0 * 40.0 + 77.0 + 8.0) * f32::EPSILON;
    assert_permuted(&run(&KeyKey, &c), &run(&KeyKey, &p), &perm, kk_bound, "key-key");
    let vn = ValueNorm::new(KeyNorm);
    assert_permuted(&run(&vn, &c), &run(&vn, &p), &perm, 0.0, "key norm x value norm");
    assert_permuted(&run(&Recency, &c), &run(&Recency, &p), &perm, 0.0, "recency");
}

#[test]
fn scores_do_not_depend_on_the_order_of_window_queries() {
    let c = prefill(22, 64, 12, 3, 16);
    let p = c.queries_permuted(&permutation(6, 12));
    let obs = ObservedAttention::default();
    let exp = ExpectedAttention { covariance: 0.5, ..Default::default() };
    let identity: Vec<usize> = (0..64).collect();
    let ob = 2.0 * observed_bound(&c, &obs);
    assert_permuted(&run(&obs, &c), &run(&obs, &p), &identity, ob, "observed");
    let eb = 2.0 * expected_bound(&c, &exp);
    assert_permuted(&run(&exp, &c), &run(&exp, &p), &identity, eb, "expected");
}

#[test]
fn observed_attention_is_causal() {
    // Keys positioned after every window query get no attention.
    let mut c = prefill(23, 50, 8, 2, 16);
    c.query_positions = (20..28).collect();
    let obs = ObservedAttention {
        kernel: 1,
        protect: Protect::NONE,
        normalize: false,
        ..Default::default()
    };
    let s = run(&obs, &c);
    assert!(s[28..].iter().all(|&x| x == 0.0), "{:?}", &s[28..]);
    assert!(s[..21].iter().all(|&x| x > 0.0));
    // every query head's rows sum to 1: the mean over heads sums to w
    let total: f32 = s.iter().sum();
    assert!((total - 8.0).abs() <= 8.0 * 64.0 * f32::EPSILON, "{total}");
}

#[test]
fn normalized_scores_are_distributions_over_candidates() {
    let c = prefill(24, 90, 16, 3, 32);
    let protect = Protect { sinks: 4, recent: 16 };
    let range = protect.candidates(90);
    for s in [
        run(&ObservedAttention { protect, normalize: true, ..Default::default() }, &c),
        run(
            &ObservedAttention { protect, normalize: true, pool: Pool::Max, ..Default::default() },
            &c,
        ),
        run(&ExpectedAttention { protect, ..Default::default() }, &c),
    ] {
        let sum: f32 = s[range.clone()].iter().sum();
        assert!((sum - 1.0).abs() <= 90.0 * 4.0 * f32::EPSILON, "{sum}");
        assert!(s.iter().all(|&x| x >= 0.0));
    }
    // expected attention gives protected tokens each head's top candidate score, so after the
    // group mean they are at least the top candidate score
    let s = run(&ExpectedAttention { protect, ..Default::default() }, &c);
    let top = s[range.clone()].iter().copied().fold(0.0, f32::max);
    assert!(s[..4].iter().chain(&s[74..]).all(|&x| x >= top * (1.0 - 4.0 * f32::EPSILON)));
}

#[test]
fn max_reduce_dominates_mean() {
    let c = prefill(25, 70, 8, 3, 16);
    for (mean, max) in [
        (
            run(&ObservedAttention::default(), &c),
            run(&ObservedAttention { reduce: GroupReduce::Max, ..Default::default() }, &c),
        ),
        (
            run(&ExpectedAttention::default(), &c),
            run(&ExpectedAttention { reduce: GroupReduce::Max, ..Default::default() }, &c),
        ),
    ] {
        for (a, b) in mean.iter().zip(&max) {
            assert!(b * (1.0 + 8.0 * f32::EPSILON) >= *a, "max {b} < mean {a}");
        }
    }
}

#[test]
fn window_and_expected_attention_find_the_needle() {
    // Token 40 carries the direction every window query looks for; it must be ranked first
    // among the candidates by the query-based scorers.
    let (t, d) = (200usize, 32usize);
    let mut c = prefill(26, t, 16, 3, d);
    let dir: Vec<f32> = (0..d).map(|i| if i % 3 == 0 { 1.0 } else { -0.5 }).collect();
    for (k, &x) in c.keys[40 * d..41 * d].iter_mut().zip(&dir) {
        *k = 3.0 * x;
    }
    for q in c.queries.chunks_exact_mut(d) {
        for (v, &x) in q.iter_mut().zip(&dir) {
            *v += 2.0 * x;
        }
    }
    let protect = Protect { sinks: 4, recent: 16 };
    for (name, s) in [
        ("observed", run(&ObservedAttention { protect, kernel: 1, ..Default::default() }, &c)),
        ("expected", run(&ExpectedAttention { protect, ..Default::default() }, &c)),
    ] {
        let best = protect.candidates(t).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        assert_eq!(best, 40, "{name}");
    }
}

#[test]
fn empty_unit_scores_nothing() {
    let c = prefill(27, 0, 4, 2, 8);
    let input = ScoreInput { query_positions: &[1, 2, 3, 4], ..c.input() };
    let scorers: [&dyn Scorer; 6] = [
        &Recency,
        &ObservedAttention::default(),
        &ExpectedAttention::default(),
        &KeyKey,
        &KeyNorm,
        &ValueNorm::new(KeyNorm),
    ];
    for s in scorers {
        let mut out: [f32; 0] = [];
        s.score(&input, &mut out).unwrap();
    }
}

#[test]
fn boxed_scorers_work() {
    let c = prefill(28, 30, 4, 1, 8);
    let boxed: Vec<Box<dyn Scorer>> =
        vec![Box::new(KeyNorm), Box::new(ObservedAttention::default())];
    for s in &boxed {
        let mut out = vec![f32::NAN; 30];
        s.score(&c.input(), &mut out).unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn window_option_equals_passing_only_the_last_queries() {
    let c = prefill(29, 80, 16, 3, 16);
    let (w, d, n) = (16usize, 16usize, 6usize);
    let mut short = c.clone();
    short.queries =
        (0..3).flat_map(|h| c.queries[(h * w + w - n) * d..(h + 1) * w * d].to_vec()).collect();
    short.query_positions = c.query_positions[w - n..].to_vec();
    let obs = ObservedAttention::default();
    let exp = ExpectedAttention::default();
    // identical arithmetic on identical data: bit-equal
    assert_eq!(run(&ObservedAttention { window: Some(n), ..obs }, &c), run(&obs, &short));
    assert_eq!(run(&ExpectedAttention { window: Some(n), ..exp.clone() }, &c), run(&exp, &short));
    // a window at least w is all of it
    assert_eq!(run(&ObservedAttention { window: Some(99), ..obs }, &c), run(&obs, &c));
}

#[test]
fn scores_from_mass_equal_scores_from_queries() {
    // The mass of each query head alone is what an unpooled, unnormalized group-of-one scorer
    // returns; `score_mass` must then finish it exactly as `score` does.
    let c = prefill(31, 90, 12, 3, 16);
    let (w, d) = (12usize, 16usize);
    let raw = ObservedAttention { kernel: 1, protect: Protect::NONE, ..Default::default() };
    let mut mass = Vec::new();
    for h in 0..3 {
        let mut one = c.clone();
        one.queries = c.queries[h * w * d..(h + 1) * w * d].to_vec();
        mass.extend(run(&raw, &one));
    }
    let protect = Protect { sinks: 4, recent: 16 };
    for scorer in [
        ObservedAttention { protect, ..Default::default() },
        ObservedAttention { protect, normalize: true, ..Default::default() },
        ObservedAttention {
            protect,
            reduce: GroupReduce::Max,
            pool: Pool::Max,
            kernel: 7,
            ..Default::default()
        },
    ] {
        let mut from_mass = vec![f32::NAN; c.t()];
        scorer.score_mass(&mass, 3, &mut from_mass).expect("valid mass");
        // identical arithmetic on identical data: bit-equal
        assert_eq!(from_mass, run(&scorer, &c), "{scorer:?}");
    }
    let mut out = vec![0.0; c.t()];
    assert!(raw.score_mass(&mass, 0, &mut out).is_err(), "zero group");
    assert!(raw.score_mass(&mass[1..], 3, &mut out).is_err(), "short mass");
}
