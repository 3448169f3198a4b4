//! Properties of `select`: exact budgets, protected tokens, monotonicity, ties, output form;
//! and `select` against its naive oracle.

use nq_evict::{Budget, Error, HeadNorm, Policy, Shape, Shortfall, Split, reference, select};
use proptest::prelude::*;

fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => (0u8..3).prop_map(f32::from),          // many ties
        4 => 0.0f32..100.0,
        1 => Just(f32::NAN),
        1 => Just(-0.0f32),
    ]
}

fn budget() -> impl Strategy<Value = Budget> {
    prop_oneof![
        (0.0f32..=1.0).prop_map(Budget::KeepFraction),
        (0.0f32..=1.0).prop_map(Budget::EvictFraction),
        (0usize..50).prop_map(Budget::Tokens),
    ]
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![Just(Split::PerHead), Just(Split::PerLayer), Just(Split::Global)]
}

prop_compose! {
    fn policy()(
        sinks in 0usize..5,
        recent in 0usize..8,
        budget in budget(),
        split in split(),
        min_head_fraction in prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..=1.0],
        pyramid in prop::option::of(0.25f32..4.0),
        keep_protected in any::<bool>(),
        head_norm in prop_oneof![Just(HeadNorm::Candidates), Just(HeadNorm::All), Just(HeadNorm::None)],
    ) -> Policy {
        Policy {
            sinks,
            recent,
            budget,
            split,
            min_head_fraction,
            pyramid: if split == Split::Global { None } else { pyramid },
            shortfall: if keep_protected { Shortfall::KeepProtected } else { Shortfall::Error },
            head_norm,
        }
    }
}

prop_compose! {
    fn case()(layers in 1usize..4, heads in 1usize..4, tokens in 0usize..40)
        (scores in prop::collection::vec(score(), layers * heads * tokens),
         layers in Just(layers), heads in Just(heads), tokens in Just(tokens))
        -> (Vec<f32>, Shape) {
        (scores, Shape { layers, heads, tokens })
    }
}

fn protected(policy: &Policy, t: usize) -> Vec<u32> {
    let c = policy.protect().candidates(t);
    (0..c.start).chain(c.end..t).map(|i| i as u32).collect()
}

/// Rank order used by `select`: NaN lowest, -0 == +0.
fn rank(x: f32) -> Option<f32> {
    if x.is_nan() { None } else { Some(x + 0.0) }
}

proptest! {
    #[test]
    fn select_matches_reference((scores, shape) in case(), policy in policy()) {
        let fast = select(&scores, shape, &policy);
        let slow = reference::select(&scores, shape, &policy);
        match (fast, slow) {
            (Ok(f), Ok(s)) => prop_assert_eq!(f, s),
            (Err(f), Err(s)) => prop_assert_eq!(
                std::mem::discriminant(&f), std::mem::discriminant(&s), "{} vs {}", f, s),
            (f, s) => prop_assert!(false, "fast {:?}, reference {:?}", f, s),
        }
    }

    #[test]
    fn budgets_are_exact_and_protected_tokens_kept((scores, shape) in case(), policy in policy()) {
        let t = shape.tokens;
        let p = protected(&policy, t).len();
        let b = policy.budget.per_head(t).unwrap();
        let kept = match select(&scores, shape, &policy) {
            Ok(k) => k,
            Err(Error::BudgetBelowProtected { budget, protected, .. }) => {
                prop_assert_eq!(policy.shortfall, Shortfall::Error);
                prop_assert_eq!((budget, protected), (b, p));
                prop_assert!(b < p);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
        };
        let b = if b < p { p } else { b }; // Shortfall::KeepProtected
        let per_layer = policy.layer_budgets(shape.layers, t).unwrap();
        prop_assert_eq!(per_layer.iter().sum::<usize>(), shape.layers * b);
        prop_assert!(per_layer.iter().all(|&bl| p <= bl && bl <= t));
        prop_assert_eq!(kept.len(), shape.layers * shape.heads);
        let prot = protected(&policy, t);
        for list in &kept {
            prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
            prop_assert!(list.iter().all(|&i| (i as usize) < t));
            prop_assert!(prot.iter().all(|i| list.contains(i)), "protected kept");
        }
        let count = |l: usize| -> usize { kept[l * shape.heads..(l + 1) * shape.heads].iter().map(Vec::len).sum() };
        match policy.split {
            Split::PerHead => for (l, &bl) in per_layer.iter().enumerate() {
                for h in 0..shape.heads {
                    prop_assert_eq!(kept[l * shape.heads + h].len(), bl.min(t));
                }
            },
            Split::PerLayer => for (l, &bl) in per_layer.iter().enumerate() {
                prop_assert_eq!(count(l), shape.heads * bl);
            },
            Split::Global => {
                let total: usize = kept.iter().map(Vec::len).sum();
                prop_assert_eq!(total, shape.layers * shape.heads * b);
            }
        }
        if policy.split != Split::PerHead {
            // per-head minimum m = clamp(round(f * b_l), p, b_l)
            for (l, &bl) in per_layer.iter().enumerate() {
                let m = ((f64::from(policy.min_head_fraction) * bl as f64).round() as usize).clamp(p, bl);
                for h in 0..shape.heads {
                    prop_assert!(kept[l * shape.heads + h].len() >= m);
                }
            }
        }
    }

    #[test]
    fn larger_budget_keeps_superset(
        (scores, shape) in case(), policy in policy(), k1 in 0usize..45, extra in 0usize..20,
    ) {
        let small = Policy { budget: Budget::Tokens(k1), ..policy };
        let large = Policy { budget: Budget::Tokens(k1 + extra), ..policy };
        if let (Ok(a), Ok(b)) = (select(&scores, shape, &small), select(&scores, shape, &large)) {
            for (x, y) in a.iter().zip(&b) {
                prop_assert!(x.iter().all(|i| y.contains(i)), "{:?} not within {:?}", x, y);
            }
        }
    }

    #[test]
    fn per_head_keeps_best_scores_and_lower_index_on_ties((scores, shape) in case(), policy in policy()) {
        let policy = Policy { split: Split::PerHead, pyramid: None, ..policy };
        let Ok(kept) = select(&scores, shape, &policy) else { return Ok(()) };
        let t = shape.tokens;
        let cand = policy.protect().candidates(t);
        for (u, list) in kept.iter().enumerate() {
            let s = &scores[u * t..(u + 1) * t];
            for i in cand.clone().filter(|&i| list.contains(&(i as u32))) {
                for j in cand.clone().filter(|&j| !list.contains(&(j as u32))) {
                    // kept i must rank at least as high as evicted j; on a tie, i < j
                    let (ri, rj) = (rank(s[i]), rank(s[j]));
                    prop_assert!(ri >= rj, "kept {} ({}) below evicted {} ({})", i, s[i], j, s[j]);
                    if ri == rj {
                        prop_assert!(i < j, "tie: kept {} after evicted {}", i, j);
                    }
                }
            }
        }
    }

    #[test]
    fn select_is_deterministic((scores, shape) in case(), policy in policy()) {
        let a = select(&scores, shape, &policy);
        let b = select(&scores, shape, &policy);
        prop_assert_eq!(a, b);
    }
}

#[test]
fn pyramid_gives_lower_layers_more() {
    let policy = Policy {
        budget: Budget::KeepFraction(0.4),
        split: Split::PerLayer,
        pyramid: Some(3.0),
        ..Policy::default()
    };
    let b = policy.layer_budgets(30, 1664).unwrap();
    assert_eq!(b.iter().sum::<usize>(), 30 * 666);
    assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");
    // weights 3 .. 1 linear: first / last close to 3 (rounding of one unit)
    let ratio = b[0] as f64 / b[29] as f64;
    assert!((ratio - 3.0).abs() < 0.02, "ratio {ratio}, {b:?}");
}

#[test]
fn pyramid_respects_protected_floor_and_sequence_cap() {
    // steep pyramid, small budget: late layers are held at the protected count, early ones at t
    let policy = Policy {
        sinks: 4,
        recent: 32,
        budget: Budget::Tokens(100),
        split: Split::PerHead,
        pyramid: Some(50.0),
        ..Policy::default()
    };
    // uncapped, D'Hondt would give layer 0 about 187 tokens (weights 50 .. 1, floor 36)
    let b = policy.layer_budgets(10, 150).unwrap();
    assert_eq!(b.iter().sum::<usize>(), 1000);
    assert!(b.iter().all(|&x| (36..=150).contains(&x)), "{b:?}");
    assert_eq!(b[0], 150);
    assert_eq!(b[9], 36);
}

#[test]
fn shortfall_keep_protected_keeps_exactly_the_protected_tokens() {
    let scores: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let policy = Policy {
        sinks: 3,
        recent: 5,
        budget: Budget::Tokens(2),
        split: Split::PerHead,
        shortfall: Shortfall::KeepProtected,
        ..Policy::default()
    };
    let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: 40 }, &policy).unwrap();
    assert_eq!(kept[0], vec![0, 1, 2, 35, 36, 37, 38, 39]);
    let strict = Policy { shortfall: Shortfall::Error, ..policy };
    assert_eq!(
        select(&scores, Shape { layers: 1, heads: 1, tokens: 40 }, &strict),
        Err(Error::BudgetBelowProtected { op: "select", budget: 2, protected: 8 })
    );
}

#[test]
fn ada_kv_moves_budget_to_the_peaked_head() {
    // head 0: attention concentrated on 4 tokens; head 1: flat. Per layer, 2 heads x 6 tokens.
    let t = 20;
    let mut scores = vec![0.0f32; 2 * t];
    for i in [3, 7, 11, 15] {
        scores[i] = 10.0;
    }
    for i in 0..t {
        scores[t + i] = 1.0 + 0.01 * i as f32;
    }
    let policy = Policy {
        sinks: 0,
        recent: 0,
        budget: Budget::Tokens(6),
        split: Split::PerLayer,
        min_head_fraction: 0.0,
        ..Policy::default()
    };
    let kept = select(&scores, Shape { layers: 1, heads: 2, tokens: t }, &policy).unwrap();
    // head 0's 4 peaks have normalized mass 0.25 each, more than any of head 1's ~0.05
    assert_eq!(kept[0], vec![3, 7, 11, 15]);
    assert_eq!(kept[1].len(), 8);
    assert_eq!(kept[1], (12..20).collect::<Vec<u32>>());
}

#[test]
fn head_norm_all_moves_budget_away_from_heads_that_attend_to_protected_tokens() {
    // Two heads, 1 sink, 1 recent; identical candidate scores, but head 0 puts almost all of
    // its mass on its protected tokens.
    let t = 10;
    let mut scores = vec![1.0f32; 2 * t];
    scores[0] = 100.0;
    scores[t - 1] = 100.0;
    let policy = Policy {
        sinks: 1,
        recent: 1,
        budget: Budget::Tokens(5),
        split: Split::PerLayer,
        min_head_fraction: 0.0,
        head_norm: HeadNorm::Candidates,
        ..Policy::default()
    };
    let shape = Shape { layers: 1, heads: 2, tokens: t };
    // over candidates the heads are identical: all ties, the lower head wins all 6 slots
    let kept = select(&scores, shape, &policy).unwrap();
    assert_eq!(kept[0], vec![0, 1, 2, 3, 4, 5, 6, 9]);
    assert_eq!(kept[1], vec![0, 9]);
    // over all tokens, head 0's candidates weigh 1/208 each, head 1's 1/10: head 1 wins them
    let all = Policy { head_norm: HeadNorm::All, ..policy };
    let kept = select(&scores, shape, &all).unwrap();
    assert_eq!(kept[0], vec![0, 9]);
    assert_eq!(kept[1], vec![0, 1, 2, 3, 4, 5, 6, 9]);
}

#[test]
fn nan_scores_rank_lowest() {
    let scores = [f32::NAN, -1.0, f32::NEG_INFINITY, f32::NAN, 0.5];
    let policy = Policy {
        sinks: 0,
        recent: 0,
        budget: Budget::Tokens(3),
        split: Split::PerHead,
        ..Policy::default()
    };
    let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: 5 }, &policy).unwrap();
    assert_eq!(kept[0], vec![1, 2, 4]); // -inf beats NaN
    let four = Policy { budget: Budget::Tokens(4), ..policy };
    let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: 5 }, &four).unwrap();
    assert_eq!(kept[0], vec![0, 1, 2, 4]); // of two NaNs, the earlier
}

#[test]
fn empty_sequence_and_oversized_budget() {
    let policy = Policy { budget: Budget::Tokens(1000), ..Policy::default() };
    let kept = select(&[], Shape { layers: 2, heads: 3, tokens: 0 }, &policy).unwrap();
    assert_eq!(kept, vec![Vec::<u32>::new(); 6]);
    let scores = vec![1.0f32; 2 * 50];
    let kept = select(&scores, Shape { layers: 1, heads: 2, tokens: 50 }, &policy).unwrap();
    assert!(kept.iter().all(|k| *k == (0..50).collect::<Vec<u32>>()));
}
