//! Shared helpers: configs covering every layout and scaling kind, data, norms, bounds.
use nq_rope::{RopeConfig, RopeLayout, RopeScaling};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One of each scaling kind, with real-checkpoint parameters.
pub(crate) fn scalings() -> Vec<RopeScaling> {
    vec![
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        // factor < 1: angles beyond the vectorized kernel's range at large positions.
        RopeScaling::Linear { factor: 0.5 },
        RopeScaling::llama31(),
        RopeScaling::yarn(4.0, 32_768),
        RopeScaling::Yarn {
            factor: 40.0,
            original_max_position: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: Some(1.0),
            mscale_all_dim: Some(0.707),
            attention_factor: None,
            truncate: false,
        },
        RopeScaling::DynamicNtk { factor: 2.0, original_max_position: 2048, seq_len: 8192 },
    ]
}

/// Every layout x scaling kind, full and partial rotary, head_dim 64 and 128.
pub(crate) fn configs() -> Vec<RopeConfig> {
    let mut out = Vec::new();
    for layout in [RopeLayout::SplitHalf, RopeLayout::Interleaved] {
        for scaling in scalings() {
            for (head_dim, rotary_dim, theta) in
                [(64, 64, 10_000.0), (128, 128, 500_000.0), (80, 32, 10_000.0)]
            {
                out.push(
                    RopeConfig::new(head_dim, theta)
                        .with_rotary_dim(rotary_dim)
                        .with_layout(layout)
                        .with_scaling(scaling),
                );
            }
        }
    }
    out
}

/// `len` values uniform in [-2, 2) from a seeded generator.
pub(crate) fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// `n` positions: 0, 1_000_000, u32::MAX and the rest uniform in 0..=1_000_000.
pub(crate) fn positions(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p: Vec<u32> = (0..n).map(|_| rng.random_range(0..=1_000_000)).collect();
    if n >= 3 {
        p[0] = 0;
        p[1] = 1_000_000;
        p[2] = u32::MAX;
    }
    p
}

/// Euclidean norm in f64.
pub(crate) fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

/// Euclidean distance in f64.
pub(crate) fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>().sqrt()
}

/// Normwise bound, per row, for one f32 rotation against the exact (f64) one, `u = ε/2`:
/// the products and the sum round twice (`2√2 u ‖x‖`), the f32 cos/sin are off by `u`
/// (`√2 u ‖x‖`), the reference rounds once (`u ‖x‖`): `5.3 u < 3 ε`. An attention factor
/// adds its own rounding and a product rounding (`2u`): `4 ε`.
pub(crate) fn apply_bound(attention_factor: f64, norm: f64) -> f64 {
    let k = if attention_factor == 1.0 { 3.0 } else { 4.0 };
    k * f64::from(f32::EPSILON) * norm
}

/// Normwise bound for `invert(apply(x))`: two rotations of `2√2 u ‖x‖` each, and
/// `Rᵀ R = (c² + s²) I` with the f32 `c² + s² = 1 ± 2u`: `7.7 u < 4 ε`. An attention factor
/// adds `fl(a) fl(1/a) = 1 ± 2u` and two product roundings: `6 ε`.
pub(crate) fn roundtrip_bound(attention_factor: f64, norm: f64) -> f64 {
    let k = if attention_factor == 1.0 { 4.0 } else { 6.0 };
    k * f64::from(f32::EPSILON) * norm
}
