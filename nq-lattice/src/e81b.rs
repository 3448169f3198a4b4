//! A 256-word codebook of small E8 points (the residual stage of the 3-bit code).
//!
//! The origin, the 240 roots (squared norm 2) and 15 of the 16 points ±2e_i (all but
//! −2e_7). Index layout: 0 is the origin; `1 + 4p + b` is ±e_i ±e_j for the `p`-th pair
//! `i < j` in lexicographic order, bit 0 of `b` negating e_i and bit 1 negating e_j;
//! `113 + m` is the half-integer root whose negative coordinates are the bits of `m`
//! (0..128) plus coordinate 7 when `m` has odd parity; `241 + i` is +2e_i and `249 + i`
//! is −2e_i (i < 7).
//!
//! Its nearest word is found in closed form: the best root of each kind, the best ±2e_i
//! and the origin are compared (no search over the 256 words).

use crate::e8p::FLIP8;

/// The 256 words.
pub(crate) static WORDS: [[f32; 8]; 256] = build_words();

const fn build_words() -> [[f32; 8]; 256] {
    let mut t = [[0.0f32; 8]; 256];
    let mut n = 1;
    let mut i = 0;
    while i < 8 {
        let mut j = i + 1;
        while j < 8 {
            let mut b = 0;
            while b < 4 {
                t[n][i] = if b & 1 == 1 { -1.0 } else { 1.0 };
                t[n][j] = if b & 2 == 2 { -1.0 } else { 1.0 };
                n += 1;
                b += 1;
            }
            j += 1;
        }
        i += 1;
    }
    assert!(n == 113);
    let mut m = 0;
    while m < 128 {
        let flips = FLIP8[m];
        let mut k = 0;
        while k < 8 {
            t[n][k] = if (flips >> k) & 1 == 1 { -0.5 } else { 0.5 };
            k += 1;
        }
        n += 1;
        m += 1;
    }
    let mut k = 0;
    while k < 15 {
        t[n][k % 8] = if k < 8 { 2.0 } else { -2.0 };
        n += 1;
        k += 1;
    }
    assert!(n == 256);
    t
}

/// Index of the pair `i < j` in lexicographic order.
#[inline]
fn pair_index(i: usize, j: usize) -> usize {
    7 * i - i * (i.saturating_sub(1)) / 2 + (j - i - 1)
}

/// Nearest word to `r`: its index and `|r − word|² − |r|²`.
#[inline]
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn encode(r: &[f32; 8]) -> (u8, f32) {
    let mut a = [0.0f32; 8];
    let mut neg = 0u32;
    let mut sum = 0.0f32;
    // Top two magnitudes (first index on ties) and the smallest.
    let (mut i1, mut i2) = (0usize, 1usize);
    let mut imin = 0usize;
    let mut best_pos = (r[0], 0usize); // largest r_i, for +2e_i
    let mut best_neg = (-r[0], 0usize); // largest −r_i, i < 7, for −2e_i
    for i in 0..8 {
        a[i] = r[i].abs();
        neg |= u32::from(r[i] < 0.0) << i;
        sum += a[i];
        if r[i] > best_pos.0 {
            best_pos = (r[i], i);
        }
        if i < 7 && -r[i] > best_neg.0 {
            best_neg = (-r[i], i);
        }
    }
    if a[1] > a[0] {
        (i1, i2) = (1, 0);
    }
    for i in 2..8 {
        if a[i] > a[i1] {
            i2 = i1;
            i1 = i;
        } else if a[i] > a[i2] {
            i2 = i;
        }
    }
    for i in 1..8 {
        if a[i] < a[imin] {
            imin = i;
        }
    }
    let mut best = (0u8, 0.0f32);
    let cost_a = 2.0 - 2.0 * (a[i1] + a[i2]);
    if cost_a < best.1 {
        let (lo, hi) = if i1 < i2 { (i1, i2) } else { (i2, i1) };
        let b = ((neg >> lo) & 1) | (((neg >> hi) & 1) << 1);
        best = ((1 + 4 * pair_index(lo, hi) + b as usize) as u8, cost_a);
    }
    let odd = neg.count_ones() & 1 == 1;
    let cost_b = if odd { 2.0 - sum + 2.0 * a[imin] } else { 2.0 - sum };
    if cost_b < best.1 {
        let m = if odd { neg ^ (1 << imin) } else { neg };
        best = ((113 + (m & 0x7f)) as u8, cost_b);
    }
    let cost_p = 4.0 - 4.0 * best_pos.0;
    if cost_p < best.1 {
        best = ((241 + best_pos.1) as u8, cost_p);
    }
    let cost_n = 4.0 - 4.0 * best_neg.0;
    if cost_n < best.1 {
        best = ((249 + best_neg.1) as u8, cost_n);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_e8_points() {
        for (k, w) in WORDS.iter().enumerate() {
            let s: f32 = w.iter().sum();
            assert_eq!(s.rem_euclid(2.0), 0.0, "word {k}");
            let n: f32 = w.iter().map(|v| v * v).sum();
            assert!(n == 0.0 || n == 2.0 || n == 4.0, "word {k} norm {n}");
            for v in &WORDS[..k] {
                assert_ne!(v, w);
            }
        }
        assert_eq!(pair_index(6, 7), 27);
    }
}
