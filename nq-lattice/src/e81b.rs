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

use crate::e8p::{FLIP8, ranks, sort8, strictly_decreasing};
use crate::lanes::Lanes;

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
#[cfg(test)]
fn pair_index(i: usize, j: usize) -> usize {
    7 * i - i * (i.saturating_sub(1)) / 2 + (j - i - 1)
}

/// Nearest word to each lane's `r`: the word and `|r − word|² − |r|²`.
///
/// Candidates, each in closed form: the origin (0); the best root ±e_i ±e_j (the two
/// largest `|r_i|`, by rank: `2 − 2(|r|_(1) + |r|_(2))`); the best half-integer root (signs
/// of `r`, the smallest `|r_i|` flipped if the number of negatives is odd:
/// `2 − Σ|r_i|`, plus `2 min|r_i|` for the flip); the best +2e_i (`4 − 4 max r_i`) and
/// −2e_i, i < 7 (`4 + 4 min r_i`). The first strictly smallest wins.
#[inline(always)]
pub(crate) fn nearest<L: Lanes>(r: &[L; 8]) -> ([L; 8], L, L) {
    let (zero, one) = (L::splat(0.0), L::splat(1.0));
    let mut a = [zero; 8];
    let mut negative = [L::none(); 8];
    let mut odd = L::none();
    let mut sum = zero;
    for i in 0..8 {
        a[i] = r[i].abs();
        negative[i] = r[i].lt(zero);
        odd = L::xor(odd, negative[i]);
        sum = sum + a[i];
    }
    // The two largest |r_i| (`top`) and the smallest (`low`), by rank (ties: lower index
    // first); without ties, by comparison with the sorted values.
    let srt = sort8(a);
    let (two, seven) = (L::splat(2.0), L::splat(7.0));
    let top2 = srt[0] + srt[1];
    let smallest = srt[7];
    let mut top = [L::none(); 8];
    let mut low = [L::none(); 8];
    if L::all(strictly_decreasing(&srt)) {
        for i in 0..8 {
            top[i] = srt[2].lt(a[i]);
            low[i] = a[i].eq(srt[7]);
        }
    } else {
        let rank = ranks(&a);
        for i in 0..8 {
            top[i] = rank[i].lt(two);
            low[i] = rank[i].eq(seven);
        }
    }
    // First largest r_i (for +2e_i) and first largest −r_i over i < 7 (for −2e_i).
    let (mut pos, mut pos_at) = (r[0], zero);
    let (mut neg, mut neg_at) = (zero - r[0], zero);
    for i in 1..8 {
        #[allow(clippy::cast_precision_loss)]
        let at = L::splat(i as f32);
        let m = pos.lt(r[i]);
        pos = L::select(m, r[i], pos);
        pos_at = L::select(m, at, pos_at);
        if i < 7 {
            let m = neg.lt(zero - r[i]);
            neg = L::select(m, zero - r[i], neg);
            neg_at = L::select(m, at, neg_at);
        }
    }
    let cost_root = two - two * top2;
    let cost_half = L::select(odd, two - sum + two * smallest, two - sum);
    let four = L::splat(4.0);
    let cost_pos = four - four * pos;
    let cost_neg = four - four * neg;
    // Kinds: 0 origin, 1 root, 2 half root, 3 +2e_i, 4 −2e_i.
    let mut best = zero;
    let mut kind = zero;
    for (k, cost) in [cost_root, cost_half, cost_pos, cost_neg].into_iter().enumerate() {
        let m = cost.lt(best);
        best = L::select(m, cost, best);
        #[allow(clippy::cast_precision_loss)]
        let kf = L::splat((k + 1) as f32);
        kind = L::select(m, kf, kind);
    }
    let half = L::splat(0.5);
    let mut word = [zero; 8];
    for i in 0..8 {
        #[allow(clippy::cast_precision_loss)]
        let at = L::splat(i as f32);
        let root = L::select(top[i], one, zero).neg_if(negative[i]);
        let flip = L::and(odd, low[i]);
        let half_root = half.neg_if(L::xor(negative[i], flip));
        let plus = L::select(pos_at.eq(at), two, zero);
        let minus = L::select(neg_at.eq(at), zero - two, zero);
        let mut w = zero;
        w = L::select(kind.eq(one), root, w);
        w = L::select(kind.eq(two), half_root, w);
        w = L::select(kind.eq(L::splat(3.0)), plus, w);
        w = L::select(kind.eq(four), minus, w);
        word[i] = w;
    }
    // The word's index, in lanes (exact small integers): kind 1 needs the two positions
    // i < j of the rank < 2 entries, kind 2 the negative coordinates 0-6.
    let (mut lo, mut hi) = (zero, zero);
    let (mut lo_neg, mut hi_neg) = (L::none(), L::none());
    for k in (0..8).rev() {
        #[allow(clippy::cast_precision_loss)]
        let at = L::splat(k as f32);
        lo = L::select(top[k], at, lo);
        lo_neg = L::mselect(top[k], negative[k], lo_neg);
    }
    for k in 0..8 {
        #[allow(clippy::cast_precision_loss)]
        let at = L::splat(k as f32);
        hi = L::select(top[k], at, hi);
        hi_neg = L::mselect(top[k], negative[k], hi_neg);
    }
    let root_bits = L::mask_val(lo_neg, one) + L::mask_val(hi_neg, two);
    // The negative coordinates of the half-integer root (what `word` holds when kind is 2),
    // from its sign masks, so that `word` is dead code when only the index is used.
    let mut half_bits = zero;
    for k in 0..7 {
        #[allow(clippy::cast_precision_loss)]
        let bit = (1u32 << k) as f32;
        let negative = L::xor(negative[k], L::and(odd, low[k]));
        half_bits = half_bits + L::mask_val(negative, L::splat(bit));
    }
    // pair(i, j) = 7i − i(i − 1)/2 + (j − i − 1), exact in f32.
    let pair = L::splat(7.0) * lo - lo * (lo - one) * L::splat(0.5) + (hi - lo - one);
    let mut index = zero;
    index = L::select(kind.eq(one), one + L::splat(4.0) * pair + root_bits, index);
    index = L::select(kind.eq(two), L::splat(113.0) + half_bits, index);
    index = L::select(kind.eq(L::splat(3.0)), L::splat(241.0) + pos_at, index);
    index = L::select(kind.eq(four), L::splat(249.0) + neg_at, index);
    (word, best, index)
}

/// Index of a word of the codebook (`word` must be one of [`WORDS`]), the naive way (the
/// encoder computes it in lanes; the tests check both agree).
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn index_of(word: &[f32; 8]) -> u8 {
    let mut nonzero = [0usize; 8];
    let mut count = 0;
    let mut neg = 0usize;
    for i in 0..8 {
        if word[i] != 0.0 {
            nonzero[count] = i;
            count += 1;
        }
        neg |= usize::from(word[i] < 0.0) << i;
    }
    let idx = match count {
        0 => 0,
        8 => 113 + (neg & 0x7f),
        2 => {
            let (i, j) = (nonzero[0], nonzero[1]);
            1 + 4 * pair_index(i, j) + ((neg >> i) & 1) + (((neg >> j) & 1) << 1)
        }
        _ => {
            let i = nonzero[0];
            if word[i] > 0.0 { 241 + i } else { 249 + i }
        }
    };
    debug_assert_eq!(&WORDS[idx], word);
    idx as u8
}

/// Nearest word to one block: its index and `|r − word|² − |r|²`.
#[cfg(test)]
pub(crate) fn encode(r: &[f32; 8]) -> (u8, f32) {
    let (w, cost, index) = nearest::<f32>(r);
    assert_eq!(f32::from(index_of(&w)), index);
    (index_of(&w), cost)
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

    #[test]
    fn closed_form_matches_search_and_index_round_trips() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        };
        for _ in 0..2000 {
            let r: [f32; 8] = std::array::from_fn(|_| next());
            let (k, cost) = encode(&r);
            let n: f32 = r.iter().map(|v| v * v).sum();
            let best = WORDS
                .iter()
                .map(|w| r.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>())
                .fold(f32::INFINITY, f32::min);
            let got: f32 =
                r.iter().zip(&WORDS[usize::from(k)]).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!((got - best).abs() <= 1e-4 * (1.0 + n), "{r:?}: {got} vs {best}");
            assert!((cost + n - got).abs() <= 1e-4 * (1.0 + n));
        }
        for (k, w) in WORDS.iter().enumerate() {
            assert_eq!(usize::from(index_of(w)), k);
        }
    }
}
