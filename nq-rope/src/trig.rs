//! Branch-free f64 `sin` and `cos` of `0 <= x <= LIMIT` (6e9: a `u32` position times an
//! inverse frequency up to 1.39), written so the per-pair loop vectorizes. Larger angles
//! (linear scaling with `factor < 0.72`) go to `std`.
//!
//! Reduction: `k = round(x 2/π)`, `r = x - k π/2` with π/2 split into five 21-bit parts
//! (Cody-Waite): `k < 2^32` times a 21-bit part is exact in f64, and the 105 bits of π/2
//! leave an error below `2^32 * 1.5e-33`. Kernels: the fdlibm minimax polynomials for `sin`
//! and `cos` on `[-π/4, π/4]`. Both results are within a few f64 ulps of the exact values,
//! far below the f32 rounding the rotation applies next; [`crate::reference`] keeps `std`'s
//! `sin_cos` as the independent oracle.

use std::f64::consts::FRAC_2_PI;

/// π/2 = P1 + P2 + P3 + P4 + P5 (+ 1.5e-33), each part with 21 significant bits.
const P1: f64 = 1.570_796_012_878_418;
const P2: f64 = 3.139_164_164_167_596e-7;
const P3: f64 = 6.223_374_680_175_42e-14;
const P4: f64 = -2.508_279_158_490_152_5e-20;
const P5: f64 = 3.521_561_362_568_105e-27;

/// 1.5 * 2^52: adding and subtracting it rounds to the nearest integer (|v| < 2^51).
const ROUND: f64 = 6_755_399_441_055_744.0;

// fdlibm __kernel_sin / __kernel_cos coefficients.
const S1: f64 = -0.16666666666666632;
const S2: f64 = 0.00833333333332249;
const S3: f64 = -0.0001984126982985795;
const S4: f64 = 2.7557313707070068e-06;
const S5: f64 = -2.5050760253406863e-08;
const S6: f64 = 1.58969099521155e-10;
const C1: f64 = 0.0416666666666666;
const C2: f64 = -0.001388888888887411;
const C3: f64 = 2.480158728947673e-05;
const C4: f64 = -2.7557314351390663e-07;
const C5: f64 = 2.087572321298175e-09;
const C6: f64 = -1.1359647557788195e-11;

/// Largest angle [`sin_cos`] takes: `k = round(x 2/π) < 2^32` keeps `k * P_i` exact.
pub(crate) const LIMIT: f64 = 6.0e9;

/// `(sin x, cos x)` for `0 <= x <= LIMIT`.
#[inline]
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    debug_assert!((0.0..=LIMIT).contains(&x));
    let t = x * FRAC_2_PI + ROUND;
    let quadrant = t.to_bits() & 3; // the low bits of t's mantissa are k mod 4
    let k = t - ROUND;
    let r = x - k * P1 - k * P2 - k * P3 - k * P4 - k * P5;
    let z = r * r;
    let sin_r = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
    let cos_r = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    // x = k π/2 + r: rotate (cos r, sin r) by k quarter turns.
    let (s, c) = if quadrant & 1 == 0 { (sin_r, cos_r) } else { (cos_r, -sin_r) };
    if quadrant & 2 == 0 { (s, c) } else { (-s, -c) }
}

#[cfg(test)]
mod tests {
    use super::sin_cos;

    /// Within a few f64 ulps (absolute, as |sin|, |cos| <= 1) of `std` across the range,
    /// including exact multiples of π/2 neighbourhoods and the largest u32 angles.
    #[test]
    fn matches_std() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = match i % 4 {
                0 => next() * 4.0,
                1 => next() * 1.0e6,
                2 => next() * super::LIMIT,
                _ => (i as f64) * std::f64::consts::FRAC_PI_2 * (1.0 + 1e-15 * next()),
            };
            let (s, c) = sin_cos(x);
            let (ws, wc) = x.sin_cos();
            worst = worst.max((s - ws).abs()).max((c - wc).abs());
        }
        assert!(worst <= 4.0 * f64::EPSILON, "worst abs error {worst:e}");
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
    }
}
