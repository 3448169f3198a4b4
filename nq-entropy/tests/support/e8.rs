//! Test-data generator shared by tests, examples and benches: Gaussian vectors quantized on
//! the E8 lattice, converted to the coset-aware symbol layout that nq-lattice emits.
//!
//! nq-entropy must not depend on nq-lattice, so this is a small private copy of the
//! Conway-Sloane nearest-point algorithm (SPLAG ch. 20): round to D8 and to D8 + 1/2, fixing
//! the parity on the coordinate with the largest rounding error, and keep the closer.
#![allow(dead_code, unreachable_pub)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Nearest point of D8 (integer vectors with even coordinate sum) to `x`.
fn nearest_d8(x: &[f64; 8]) -> [i64; 8] {
    let mut r = [0i64; 8];
    let mut sum = 0i64;
    let mut worst = 0usize;
    let mut worst_err = -1.0f64;
    for i in 0..8 {
        let f = x[i].round();
        r[i] = f as i64;
        sum += r[i];
        let err = (x[i] - f).abs();
        if err > worst_err {
            worst_err = err;
            worst = i;
        }
    }
    if sum.rem_euclid(2) != 0 {
        // Re-round the worst coordinate the other way.
        r[worst] += if x[worst] > r[worst] as f64 { 1 } else { -1 };
    }
    r
}

/// Nearest E8 point to `x`, returned doubled (`2y`, all even or all odd integers).
pub fn nearest_e8_doubled(x: &[f64; 8]) -> [i64; 8] {
    let a = nearest_d8(x);
    let shifted: [f64; 8] = std::array::from_fn(|i| x[i] - 0.5);
    let b = nearest_d8(&shifted);
    let da: f64 = (0..8).map(|i| (x[i] - a[i] as f64).powi(2)).sum();
    let db: f64 = (0..8).map(|i| (x[i] - b[i] as f64 - 0.5).powi(2)).sum();
    if da <= db { a.map(|v| 2 * v) } else { b.map(|v| 2 * v + 1) }
}

/// Converts a doubled E8 point to the coset-aware layout: (coset bit, [z0..z6, h]).
pub fn to_layout(y2: &[i64; 8]) -> (u8, [i32; 8]) {
    let c = y2[0].rem_euclid(2);
    let z: [i64; 8] = y2.map(|v| (v - c) / 2);
    let p = z[..7].iter().sum::<i64>().rem_euclid(2);
    let mut out = [0i32; 8];
    for i in 0..7 {
        out[i] = z[i] as i32;
    }
    out[7] = ((z[7] - p) / 2) as i32;
    (c as u8, out)
}

/// A standard normal sample (Box-Muller).
pub fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` i.i.d. N(0,1) 8-vectors scaled by `1/step`, quantized on E8, in the coset-aware
/// layout: (cosets, coords).
pub fn gaussian_e8(n: usize, step: f64, seed: u64) -> (Vec<u8>, Vec<i32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cosets = Vec::with_capacity(n);
    let mut coords = Vec::with_capacity(8 * n);
    for _ in 0..n {
        let x: [f64; 8] = std::array::from_fn(|_| gauss(&mut rng) / step);
        let (c, v) = to_layout(&nearest_e8_doubled(&x));
        cosets.push(c);
        coords.extend_from_slice(&v);
    }
    (cosets, coords)
}

/// `rows` rows of `per_row` 8-vectors whose entries follow an AR(1) process along rows
/// (`x_t = rho x_{t-1} + sqrt(1 - rho^2) n_t`, unit variance), quantized like
/// [`gaussian_e8`]: a stand-in for keys of neighbouring tokens that resemble each other.
pub fn correlated_e8(
    rows: usize,
    per_row: usize,
    rho: f64,
    step: f64,
    seed: u64,
) -> (Vec<u8>, Vec<i32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = vec![0.0f64; 8 * per_row];
    for s in &mut state {
        *s = gauss(&mut rng);
    }
    let k = (1.0 - rho * rho).sqrt();
    let mut cosets = Vec::with_capacity(rows * per_row);
    let mut coords = Vec::with_capacity(8 * rows * per_row);
    for _ in 0..rows {
        for v in 0..per_row {
            let x: [f64; 8] = std::array::from_fn(|i| {
                let s = &mut state[8 * v + i];
                *s = rho * *s + k * gauss(&mut rng);
                *s / step
            });
            let (c, z) = to_layout(&nearest_e8_doubled(&x));
            cosets.push(c);
            coords.extend_from_slice(&z);
        }
    }
    (cosets, coords)
}
