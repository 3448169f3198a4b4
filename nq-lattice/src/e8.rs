//! Nearest point of the E8 lattice (Conway & Sloane, SPLAG ch. 20, "decoding D_n and E8").

/// Largest coordinate magnitude for which [`nearest_e8`] is exact in `f32` (2^21).
///
/// Below this bound `x - 1/2`, the rounding errors and every half-integer output are
/// exactly representable, so the decoder returns a true nearest point (its two candidate
/// distances are sums of 8 rounded squares; the candidate kept is nearest up to that
/// rounding, i.e. within a relative `8 * f32::EPSILON` of the true minimum).
pub const EXACT_RANGE: f32 = 2_097_152.0;

use crate::e8p::select8;
use crate::fixed::MAX_LANES;
use crate::lanes::{Lanes, ScaledBlocks};

/// Nearest point of the coset `D8 + t*(1,..,1)` to each lane's `x`, and its squared
/// distance.
///
/// D8 is the set of integer vectors with an even coordinate sum. Round every coordinate
/// (ties to even); if the sum is odd, re-round the coordinate with the largest rounding
/// error (the first one on ties) the other way.
#[inline(always)]
pub(crate) fn nearest_d8_coset<L: Lanes>(x: &[L; 8], t: f32) -> ([L; 8], L) {
    let zero = L::splat(0.0);
    let tv = L::splat(t);
    let mut f = [zero; 8];
    let mut e = [zero; 8];
    let mut sum = zero;
    for i in 0..8 {
        let v = x[i] - tv;
        f[i] = v.round();
        e[i] = v - f[i];
        // Exact: |f_i| ≤ 2^21 in the documented range, so the sum stays below 2^24.
        sum = sum + f[i];
    }
    let half = sum * L::splat(0.5);
    let odd = L::not(half.round().eq(half));
    let mut best = e[0].abs();
    let mut at = zero;
    for (i, ei) in e.iter().enumerate().skip(1) {
        let m = best.lt(ei.abs());
        best = L::select(m, ei.abs(), best);
        #[allow(clippy::cast_precision_loss)]
        let pos = L::splat(i as f32);
        at = L::select(m, pos, at);
    }
    let mut d = zero;
    for i in 0..8 {
        #[allow(clippy::cast_precision_loss)]
        let pos = L::splat(i as f32);
        let fix = L::and(odd, at.eq(pos));
        let step = L::select(e[i].lt(zero), L::splat(-1.0), L::splat(1.0));
        let delta = L::mask_val(fix, step);
        f[i] = f[i] + delta;
        e[i] = e[i] - delta;
        d = d + e[i] * e[i];
        f[i] = f[i] + tv;
    }
    (f, d)
}

/// Nearest E8 point to each lane's `x` (the closer coset point; the integer one on ties).
#[inline(always)]
pub(crate) fn nearest_lanes<L: Lanes>(x: &[L; 8]) -> [L; 8] {
    let (a, da) = nearest_d8_coset(x, 0.0);
    let (b, db) = nearest_d8_coset(x, 0.5);
    select8(db.lt(da), &b, &a)
}

/// Nearest point of the E8 lattice to `x` (Conway & Sloane's decoder).
///
/// E8 = D8 ∪ (D8 + ½): the union of the integer vectors with even coordinate sum and the
/// half-integer vectors (all coordinates in Z + ½) with even coordinate sum. The decoder
/// finds the nearest point of each coset (round, then fix the parity by re-rounding the
/// coordinate with the largest rounding error) and keeps the closer one; on an exact tie
/// between the cosets the integer point is kept.
///
/// The result is exact for finite inputs with every `|x_i| <` [`EXACT_RANGE`] (2^21).
/// Outside that range `f32` cannot represent the half-integer coset faithfully and the
/// result is only approximately nearest; NaN inputs give NaN outputs. The codecs of this
/// crate validate their inputs so that they only call it inside the exact range.
///
/// Every point of R^8 is within distance 1 of E8 (the covering radius; the minimal
/// distance between lattice points is √2).
///
/// # Examples
/// ```
/// use nq_lattice::nearest_e8;
/// // (0.4, ..., 0.4) is nearer to the half-integer point (½, ..., ½) than to 0.
/// assert_eq!(nearest_e8(&[0.4; 8]), [0.5; 8]);
/// // (0.9, 0, ..., 0) rounds to (1, 0, ..., 0), whose coordinate sum is odd; the parity fix
/// // re-rounds the coordinate with the largest rounding error (coordinate 0) the other way.
/// assert_eq!(nearest_e8(&[0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), [0.0; 8]);
/// ```
#[must_use]
pub fn nearest_e8(x: &[f32; 8]) -> [f32; 8] {
    nearest_lanes::<f32>(x)
}

/// Rounds blocks to E8 with a scale per row: block `b` of `x` belongs to row
/// `(first + b) / blocks_per_row` and is multiplied by `inv[row]` before rounding; the
/// lattice points are written to `y` (same layout as `x`). Groups of `L::N` blocks run on
/// `L`, the rest on `f32` (same results).
#[inline(always)]
pub(crate) fn nearest_blocks<L: Lanes>(
    x: &[f32],
    first: usize,
    blocks_per_row: usize,
    inv: &[f32],
    y: &mut [f32],
) {
    let nb = x.len() / 8;
    let full = nb / L::N * L::N;
    let mut out = [[0.0f32; MAX_LANES]; 8];
    let mut blocks = ScaledBlocks::new(inv, first, blocks_per_row);
    let mut b = 0;
    while b < full {
        let v = blocks.next::<L>(&x[8 * b..8 * (b + L::N)]);
        let p = nearest_lanes(&v);
        for i in 0..8 {
            p[i].store(&mut out[i]);
        }
        let y = &mut y[8 * b..8 * (b + L::N)];
        for l in 0..L::N {
            for i in 0..8 {
                y[8 * l + i] = out[i][l];
            }
        }
        b += L::N;
    }
    if b < nb {
        nearest_blocks::<f32>(&x[8 * b..], first + b, blocks_per_row, inv, &mut y[8 * b..]);
    }
}

/// Splits an E8 point `y` into the coset-aware symbols of the variable-rate layout.
///
/// `y = z + c/2` with `c` in {0, 1} and `z` in D8; the symbols are `c` and
/// `[z_0, .., z_6, h]` with `h = (z_7 - p) / 2`, `p = (z_0 + .. + z_6) mod 2`.
/// `y` must be an E8 point with coordinates below 2^21 in magnitude.
#[inline]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn to_symbols(y: &[f32; 8]) -> (u8, [i32; 8]) {
    // 2 y_0 is an integer, odd exactly for the half-integer coset.
    let c = ((y[0] * 2.0) as i32 & 1) as u8;
    let half = if c == 1 { 0.5 } else { 0.0 };
    let mut s = [0i32; 8];
    let mut sum = 0i32;
    for i in 0..8 {
        s[i] = (y[i] - half) as i32;
    }
    for v in &s[..7] {
        sum = sum.wrapping_add(*v);
    }
    // z_7 − p is even, so the halving is exact (an arithmetic shift floors, same result).
    s[7] = (s[7] - (sum & 1)) >> 1;
    (c, s)
}

/// Rebuilds the E8 point `z + c/2` from the variable-rate symbols, in `f64` (exact for any
/// `i32` symbols; the caller converts after scaling).
#[inline]
pub(crate) fn from_symbols(c: u8, s: &[i32; 8]) -> [f64; 8] {
    let half = if c == 1 { 0.5 } else { 0.0 };
    let mut sum = 0i64;
    let mut y = [0.0f64; 8];
    for i in 0..7 {
        sum += i64::from(s[i]);
        y[i] = f64::from(s[i]) + half;
    }
    let p = sum.rem_euclid(2);
    #[allow(clippy::cast_precision_loss)]
    let z7 = (2 * i64::from(s[7]) + p) as f64;
    y[7] = z7 + half;
    y
}
