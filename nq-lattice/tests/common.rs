//! Shared helpers: seeded Gaussian data and distances.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` samples of N(0, 1) (Box-Muller), reproducible from `seed`.
pub(crate) fn gauss(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>();
            let v: f64 = rng.random();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Squared distance in f64 between an f32 vector and an f64 vector.
pub(crate) fn dist2(x: &[f32; 8], y: &[f64; 8]) -> f64 {
    x.iter().zip(y).map(|(a, b)| (f64::from(*a) - b).powi(2)).sum()
}

/// f32 -> f64 array.
pub(crate) fn widen(x: &[f32; 8]) -> [f64; 8] {
    x.map(f64::from)
}

/// Signal-to-quantization-noise ratio in dB.
pub(crate) fn sqnr_db(x: &[f32], y: &[f32]) -> f64 {
    let s: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    let e: f64 = x.iter().zip(y).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
    10.0 * (s / e).log10()
}

/// Block `b` of a flat slice as an array.
pub(crate) fn block(x: &[f32], b: usize) -> [f32; 8] {
    std::array::from_fn(|i| x[8 * b + i])
}
