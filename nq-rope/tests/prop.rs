//! Properties: exact inversion up to position 1M (and u32::MAX), layout permutation,
//! norm preservation, relative-position invariance of dot products.
use crate::common::{dist, norm, roundtrip_bound, scalings};
use nq_rope::{Rope, RopeConfig, RopeLayout};
use proptest::prelude::*;

/// Any valid config: head_dim 2..=256 even, partial or full rotary, theta 100..1e7, any
/// layout and scaling kind.
fn config() -> impl Strategy<Value = RopeConfig> {
    (1usize..=128, 0usize..=128, 100f64..1e7, any::<bool>(), 0..scalings().len()).prop_map(
        |(half_head, half_rot, theta, inter, s)| {
            let head_dim = 2 * half_head;
            // DynamicNtk needs rotary_dim >= 4.
            let rotary_dim = (2 * half_rot.clamp(2, half_head.max(2))).min(head_dim.max(4));
            let head_dim = head_dim.max(rotary_dim);
            let layout = if inter { RopeLayout::Interleaved } else { RopeLayout::SplitHalf };
            RopeConfig::new(head_dim, theta)
                .with_rotary_dim(rotary_dim)
                .with_layout(layout)
                .with_scaling(scalings()[s])
        },
    )
}

fn case() -> impl Strategy<Value = (RopeConfig, Vec<u32>, Vec<f32>)> {
    config().prop_flat_map(|cfg| {
        let pos = prop::collection::vec(
            prop_oneof![0u32..=1_000_000, Just(1_000_000), Just(u32::MAX)],
            1..6,
        );
        pos.prop_flat_map(move |p| {
            let n = p.len() * cfg.head_dim;
            (
                Just(cfg),
                Just(p),
                prop::collection::vec(prop_oneof![-100f32..100.0, -1e-3f32..1e-3], n),
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invert_undoes_apply((cfg, pos, x) in case()) {
        let rope = Rope::new(cfg)?;
        let mut y = x.clone();
        rope.apply(&mut y, &pos)?;
        rope.invert(&mut y, &pos)?;
        let af = rope.attention_factor();
        for (a, b) in x.chunks(cfg.head_dim).zip(y.chunks(cfg.head_dim)) {
            let (e, bound) = (dist(a, b), roundtrip_bound(af, norm(a)));
            prop_assert!(e <= bound, "{e:e} > {bound:e}");
        }
        // Inverting first and applying after is the same identity.
        let mut z = x.clone();
        rope.invert(&mut z, &pos)?;
        rope.apply(&mut z, &pos)?;
        for (a, b) in x.chunks(cfg.head_dim).zip(z.chunks(cfg.head_dim)) {
            prop_assert!(dist(a, b) <= roundtrip_bound(af, norm(a)));
        }
    }

    /// Interleaved pair (2i, 2i+1) is split-half pair (i, i + r/2): same bits after permuting.
    #[test]
    fn layouts_agree_after_permutation((cfg, pos, x) in case()) {
        let (hd, r) = (cfg.head_dim, cfg.rotary_dim);
        let h = r / 2;
        let to_inter = |row: &[f32]| -> Vec<f32> {
            let mut out = row.to_vec();
            for i in 0..h {
                out[2 * i] = row[i];
                out[2 * i + 1] = row[i + h];
            }
            out
        };
        let split = Rope::new(cfg.with_layout(RopeLayout::SplitHalf))?;
        let inter = Rope::new(cfg.with_layout(RopeLayout::Interleaved))?;
        let mut a = x.clone();
        split.apply(&mut a, &pos)?;
        let mut b: Vec<f32> = x.chunks(hd).flat_map(to_inter).collect();
        inter.apply(&mut b, &pos)?;
        let a_perm: Vec<f32> = a.chunks(hd).flat_map(to_inter).collect();
        prop_assert_eq!(a_perm, b);
    }

    /// Rotations preserve the norm of each pair (times the attention factor).
    #[test]
    fn apply_preserves_norm((cfg, pos, x) in case()) {
        let rope = Rope::new(cfg)?;
        let mut y = x.clone();
        rope.apply(&mut y, &pos)?;
        let af = rope.attention_factor();
        let r = cfg.rotary_dim;
        for (a, b) in x.chunks(cfg.head_dim).zip(y.chunks(cfg.head_dim)) {
            let want = af * norm(&a[..r]);
            // One rotation (3 ε) plus the f64 norms.
            prop_assert!((norm(&b[..r]) - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want.max(norm(&a[..r])));
        }
    }

    /// `<R(p + t) q, R(s + t) k> = <R(p) q, R(s) k>`: attention sees only relative positions.
    #[test]
    fn dot_products_depend_on_relative_position(
        (cfg, qk) in config().prop_flat_map(|c| (Just(c), prop::collection::vec(-10f32..10.0, 2 * c.head_dim))),
        p in 0u32..=1_000_000, s in 0u32..=1_000_000, shift in 0u32..=500_000,
    ) {
        let rope = Rope::new(cfg)?;
        let (q, k) = qk.split_at(cfg.head_dim);
        let dot = |p: u32, s: u32| -> Result<f64, nq_rope::Error> {
            let (mut a, mut b) = (q.to_vec(), k.to_vec());
            rope.apply_row(&mut a, p)?;
            rope.apply_row(&mut b, s)?;
            Ok(a.iter().zip(&b).map(|(&u, &v)| f64::from(u) * f64::from(v)).sum())
        };
        let af2 = rope.attention_factor().powi(2);
        // Each side is within 2 x 3 ε ‖q‖ ‖k‖ af² of the exact rotated dot product (two
        // rotations, each 3 ε against the exact one); dots accumulate in f64.
        let bound = 12.0 * f64::from(f32::EPSILON) * af2 * norm(q) * norm(k);
        let (d0, d1) = (dot(p, s)?, dot(p + shift, s + shift)?);
        prop_assert!((d0 - d1).abs() <= bound, "{d0} vs {d1}, bound {bound:e}");
    }
}
