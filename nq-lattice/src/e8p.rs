//! An E8P-style codebook: 2^16 points of the shifted lattice E8 + ¼ (after QuIP#'s E8P,
//! Tseng et al. 2024), with an exact closed-form encoder.
//!
//! P is a set of 2^15 points of the half-integer coset D8 + ½ of E8, given by 256
//! absolute-value *patterns*, each with its 128 sign choices that stay in E8: all 227
//! patterns of squared norm ≤ 10 (as in QuIP#), then the 28 permutations of
//! (5/2, 5/2, ½^6) (norm 14) and (3/2)^8 (norm 18). QuIP# fills those 29 slots with 29 of
//! the 56 permutations of ((3/2)^5, ½^3) (norm 12); on N(0, 1) data at the best global
//! scale both give the same SQNR (10.384 vs 10.386 dB over 300k vectors; 10.287 with the
//! 227 patterns alone), but this choice keeps P closed under coordinate permutations, so
//! the encoder needs no search. The codebook is `P ± ¼·(1,..,1)`.
//!
//! Index (16 bits): bits 0-7 the pattern, bits 8-14 the sign flips of coordinates 0-6
//! relative to the pattern's base point (the flip of coordinate 7 is their parity, so the
//! number of flips is even and the point stays in E8), bit 15 the shift (1: +¼, 0: −¼).
//! The base point of a pattern is its absolute values with coordinate 7 negated when the
//! coordinate sum is odd (which puts it in E8).
//!
//! Exact encoder. For each shift `s`, the nearest point of P to `v = x − s` is found
//! without search: P is the union of 9 multisets of absolute values, each closed under
//! permutations and even sign changes, so with `w = |v|` sorted decreasingly the best
//! assignment of each multiset is the sorted one (rearrangement inequality), and when the
//! number of negative `v_i` has the wrong parity the cheapest fix is flipping the sign of
//! the smallest `w_i` (it is matched with the multiset's smallest value). Each multiset's
//! distance is then a closed form in the prefix sums of the sorted `w`; the winner's
//! values are assigned by rank. No branch depends on one block's data, so the same code
//! runs on one block (`f32`) or one block per SIMD lane: the ranks are comparisons with
//! the sorted values when those are strictly decreasing in every lane, and are counted
//! pairwise otherwise (ties; both give the same ranks where both apply).

use crate::lanes::Lanes;

/// The 256 absolute-value patterns, in half units (odd integers: 1 = ½, 3 = 3/2, 5 = 5/2).
///
/// First the 227 patterns of squared norm ≤ 10 in increasing base-3 key order (digit `i`
/// is `(a_i − ½)`, so pattern 0 is all ½), then (5/2, 5/2, ½^6) with the two 5/2 at
/// positions `i < j` in lexicographic order (28), then (3/2)^8.
pub(crate) const PATTERNS: [[u8; 8]; 256] = build_patterns();

/// Number of patterns of squared norm ≤ 10.
pub(crate) const N_BALL: usize = 227;

/// Base-3 key of a pattern (digit `i` = `(a_i − ½)` in {0, 1, 2}) → pattern id, or `NONE`
/// (padded past 2^13 entries so a 13-bit key needs no bounds check).
pub(crate) static KEY_TO_ID: [u16; KEY_TABLE_LEN] = build_key_to_id();

/// Length of [`KEY_TO_ID`]: 2^13 keys plus one entry, so a 32-bit load at any key stays
/// inside the table.
pub(crate) const KEY_TABLE_LEN: usize = 8193;

/// Marks a key that is no pattern of the codebook.
pub(crate) const NONE: u16 = u16::MAX;

/// Base point of each pattern (absolute values, coordinate 7 negated if the sum is odd).
pub(crate) static BASE: [[f32; 8]; 256] = build_base();

/// 7 sign-flip bits → 8 flip bits with even parity (bit 7 = parity of bits 0-6).
pub(crate) static FLIP8: [u8; 128] = build_flip8();

const fn build_patterns() -> [[u8; 8]; 256] {
    let mut out = [[0u8; 8]; 256];
    let mut n = 0;
    let mut key = 0u32;
    while key < 6561 {
        let mut k = key;
        let mut a = [0u8; 8];
        let mut norm = 0;
        let mut i = 0;
        while i < 8 {
            let d = k % 3;
            k /= 3;
            a[i] = (2 * d + 1) as u8;
            norm += (2 * d + 1) * (2 * d + 1);
            i += 1;
        }
        if norm <= 40 {
            out[n] = a;
            n += 1;
        }
        key += 1;
    }
    assert!(n == N_BALL);
    let mut i = 0;
    while i < 8 {
        let mut j = i + 1;
        while j < 8 {
            let mut a = [1u8; 8];
            a[i] = 5;
            a[j] = 5;
            out[n] = a;
            n += 1;
            j += 1;
        }
        i += 1;
    }
    out[n] = [3u8; 8];
    n += 1;
    assert!(n == 256);
    out
}

/// Base-3 key of a pattern given in half units.
const fn key_of(a: &[u8; 8]) -> usize {
    let mut key = 0usize;
    let mut i = 8;
    while i > 0 {
        i -= 1;
        key = key * 3 + ((a[i] - 1) / 2) as usize;
    }
    key
}

const fn build_key_to_id() -> [u16; KEY_TABLE_LEN] {
    let mut t = [NONE; KEY_TABLE_LEN];
    let mut p = 0;
    while p < 256 {
        t[key_of(&PATTERNS[p])] = p as u16;
        p += 1;
    }
    t
}

const fn build_base() -> [[f32; 8]; 256] {
    let mut t = [[0.0f32; 8]; 256];
    let mut p = 0;
    while p < 256 {
        let mut sum_half = 0u32;
        let mut i = 0;
        while i < 8 {
            sum_half += PATTERNS[p][i] as u32;
            t[p][i] = PATTERNS[p][i] as f32 * 0.5;
            i += 1;
        }
        // Coordinate sum is sum_half / 2 (an integer); odd sum: negate coordinate 7.
        if (sum_half / 2) % 2 == 1 {
            t[p][7] = -t[p][7];
        }
        p += 1;
    }
    t
}

const fn build_flip8() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut f = 0u32;
    while f < 128 {
        t[f as usize] = (f | ((f.count_ones() & 1) << 7)) as u8;
        f += 1;
    }
    t
}

/// The codeword of a 16-bit index.
#[inline]
pub(crate) fn decode(idx: u16) -> [f32; 8] {
    let base = &BASE[usize::from(idx & 0xff)];
    let flips = u32::from(FLIP8[usize::from((idx >> 8) & 0x7f)]);
    let shift = if idx & 0x8000 != 0 { 0.25 } else { -0.25 };
    std::array::from_fn(|i| f32::from_bits(base[i].to_bits() ^ (((flips >> i) & 1) << 31)) + shift)
}

/// The 9 multisets of absolute values (every one closed under permutations):
/// `(count ≥ 3/2, count = 5/2, squared norm, sum parity, smallest value)`.
pub(crate) const TYPES: [(usize, usize, f32, u32, f32); 9] = [
    (0, 0, 2.0, 0, 0.5),
    (1, 0, 4.0, 1, 0.5),
    (2, 0, 6.0, 0, 0.5),
    (3, 0, 8.0, 1, 0.5),
    (4, 0, 10.0, 0, 0.5),
    (1, 1, 8.0, 0, 0.5),
    (2, 1, 10.0, 1, 0.5),
    (2, 2, 14.0, 0, 0.5),
    (8, 0, 18.0, 0, 1.5),
];

/// Sorts 8 values per lane decreasingly: an optimal sorting network (19 comparators,
/// depth 6), unrolled.
#[inline(always)]
pub(crate) fn sort8<L: Lanes>(mut w: [L; 8]) -> [L; 8] {
    macro_rules! cas {
        ($($a:literal $b:literal),*) => {$(
            let hi = w[$a].max(w[$b]);
            let lo = w[$a].min(w[$b]);
            w[$a] = hi;
            w[$b] = lo;
        )*};
    }
    cas!(0 2, 1 3, 4 6, 5 7, 0 4, 1 5, 2 6, 3 7, 0 1, 2 3, 4 5, 6 7, 2 4, 3 5, 1 4, 3 6, 1 2, 3 4, 5 6);
    w
}

/// Lanes whose sorted values `srt` are strictly decreasing (no ties, no NaN).
#[inline(always)]
pub(crate) fn strictly_decreasing<L: Lanes>(srt: &[L; 8]) -> L::M {
    let mut m = srt[1].lt(srt[0]);
    for k in 1..7 {
        m = L::and(m, srt[k + 1].lt(srt[k]));
    }
    m
}

/// Rank of each value in decreasing order, ties broken by position (lower index first),
/// as exact small floats.
#[inline(always)]
pub(crate) fn ranks<L: Lanes>(w: &[L; 8]) -> [L; 8] {
    // rank_j = #{i < j: w_i ≥ w_j} + #{k > j: w_k > w_j}: start at j, then per pair i < j
    // move one unit from j to i when w_i < w_j.
    let one = L::splat(1.0);
    let mut rank = [L::splat(0.0); 8];
    for (j, r) in rank.iter_mut().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let start = j as f32;
        *r = L::splat(start);
    }
    macro_rules! pair {
        ($($i:literal $j:literal),*) => {$(
            let inc = L::mask_val(w[$i].lt(w[$j]), one);
            rank[$i] = rank[$i] + inc;
            rank[$j] = rank[$j] - inc;
        )*};
    }
    pair!(0 1, 0 2, 0 3, 0 4, 0 5, 0 6, 0 7, 1 2, 1 3, 1 4, 1 5, 1 6, 1 7, 2 3, 2 4, 2 5, 2 6,
        2 7, 3 4, 3 5, 3 6, 3 7, 4 5, 4 6, 4 7, 5 6, 5 7, 6 7);
    rank
}

/// One shift's nearest codeword, before its values are assigned to coordinates.
#[derive(Clone, Copy)]
struct Scored<L: Lanes> {
    /// `v − s`.
    t: [L; 8],
    /// `|t|` sorted decreasingly.
    srt: [L; 8],
    /// Squared distance to the nearest codeword of this shift.
    cost: L,
    /// Index into [`TYPES`] of the winning multiset (an exact small float).
    ty: L,
    /// Whether the number of negative `t_i` is odd.
    odd: L::M,
}

impl<L: Lanes> Scored<L> {
    /// Lane-wise `m ? a : b`.
    #[inline(always)]
    fn select(m: L::M, a: &Self, b: &Self) -> Self {
        Scored {
            t: select8(m, &a.t, &b.t),
            srt: select8(m, &a.srt, &b.srt),
            cost: L::select(m, a.cost, b.cost),
            ty: L::select(m, a.ty, b.ty),
            odd: L::mselect(m, a.odd, b.odd),
        }
    }
}

/// Per-type tables of [`TYPES`] for [`Lanes::lookup`] (padded to 16 entries): the number of
/// entries ≥ 3/2, the number = 5/2, and the parity of the sum.
const N3_OF: [f32; 16] = type_column(0);
const N5_OF: [f32; 16] = type_column(1);
const PARITY_OF: [f32; 16] = type_column(3);

#[allow(clippy::cast_precision_loss)]
const fn type_column(c: usize) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    let mut t = 0;
    while t < TYPES.len() {
        out[t] = match c {
            0 => TYPES[t].0 as f32,
            1 => TYPES[t].1 as f32,
            _ => TYPES[t].3 as f32,
        };
        t += 1;
    }
    out
}

/// Scores the codewords with the given shift (`up`: +¼, else −¼) for each lane's block `v`:
/// the nearest one's multiset and squared distance, computed as `|w|² − 2<w, a> + |a|²`
/// with `w = |v − s|` (exact up to `f32` rounding).
#[inline(always)]
fn score_shift<L: Lanes>(v: &[L; 8], up: bool) -> Scored<L> {
    let zero = L::splat(0.0);
    let s = L::splat(if up { 0.25 } else { -0.25 });
    let mut t = [zero; 8];
    let mut w = [zero; 8];
    let mut base = zero;
    for i in 0..8 {
        t[i] = v[i] - s;
        w[i] = t[i].abs();
        base = base + (w[i] * w[i] - w[i]);
    }
    // The number of negative t_i, from their sign bits: t = v ∓ ¼ is never -0 (a difference
    // is -0 only for -0 - +0), and finite for finite v.
    let odd = L::odd_signs(&t);
    let srt = sort8(w);
    let mut pre = [zero; 9];
    for r in 0..8 {
        pre[r + 1] = pre[r] + srt[r];
    }
    // `2 (pre[n3] + pre[n5])` as `pre2[n3] + pre2[n5]`, the same bits: doubling is exact and
    // commutes with rounding, and `pre2[0]` is +0 (added only where `n5 > 0`; the prefix sums
    // of magnitudes are never -0, so `x + 0 = x`).
    let two = L::splat(2.0);
    let pre2 = [zero, pre[1] * two, pre[2] * two, pre[3] * two, pre[4] * two, pre[8] * two];
    let mut best_key = L::splat(f32::INFINITY);
    let mut best_ty = zero;
    let even = L::not(odd);
    // One step per multiset (unrolled: `TYPES` in order). The number of negative
    // coordinates must have the parity of the multiset's sum; otherwise flip the smallest
    // |v_i|, which costs 4 * amin * w_min. Only the winner's index is tracked; `winner`
    // derives the rest from it.
    macro_rules! ty {
        ($t:expr) => {{
            let (n3, n5, norm, parity, amin) = TYPES[$t];
            let fix = if parity == 1 { even } else { odd };
            let at = |n: usize| pre2[if n == 8 { 5 } else { n }];
            let key = match (n3, n5) {
                (0, 0) => L::splat(norm),
                (_, 0) => L::splat(norm) - at(n3),
                _ => L::splat(norm) - (at(n3) + at(n5)),
            };
            let key = L::select(fix, key + srt[7] * L::splat(4.0 * amin), key);
            let better = key.lt(best_key);
            best_key = L::select(better, key, best_key);
            #[allow(clippy::cast_precision_loss)]
            let id = L::splat($t as f32);
            best_ty = L::select(better, id, best_ty);
        }};
    }
    ty!(0);
    ty!(1);
    ty!(2);
    ty!(3);
    ty!(4);
    ty!(5);
    ty!(6);
    ty!(7);
    ty!(8);
    Scored { t, srt, cost: base + best_key, ty: best_ty, odd }
}

/// The winning multiset of a scored codeword: `(n3, n5, u3, u5, fix)`, the number of entries
/// ≥ 3/2 and = 5/2, `srt[n3]` and `srt[n5]` (−1 when `n3` = 8: the largest `|t_i|` left
/// out), and whether the smallest `|t_i|` takes the sign opposite to `t_i` (parity fix).
#[inline(always)]
fn winner<L: Lanes>(s: &Scored<L>) -> (L, L, L, L, L::M) {
    let n3 = s.ty.lookup(&N3_OF);
    let n5 = s.ty.lookup(&N5_OF);
    let fix = L::xor(s.odd, s.ty.lookup(&PARITY_OF).eq(L::splat(1.0)));
    let mut u3 = s.srt[0];
    for k in 1..5 {
        #[allow(clippy::cast_precision_loss)]
        let kf = L::splat(k as f32);
        u3 = L::select(n3.eq(kf), s.srt[k], u3);
    }
    let u3 = L::select(n3.eq(L::splat(8.0)), L::splat(-1.0), u3);
    let u5 = L::select(n5.eq(L::splat(1.0)), s.srt[1], s.srt[0]);
    let u5 = L::select(n5.eq(L::splat(2.0)), s.srt[2], u5);
    (n3, n5, u3, u5, fix)
}

/// The signed pattern values of a scored codeword: the multiset's values assigned by rank
/// of `|t_i|` (ties: lower index first), signs of `t`, the smallest flipped on a parity fix.
/// Also returns their magnitudes and sign masks.
#[inline(always)]
fn assign<L: Lanes>(s: &Scored<L>) -> ([L; 8], [L; 8], [L::M; 8]) {
    let (zero, one, half) = (L::splat(0.0), L::splat(1.0), L::splat(0.5));
    let (n3, n5, u3, u5, fix) = winner(s);
    // A loop, not `s.t.map(L::abs)`: `array::map` is not inlined into the `#[target_feature]`
    // kernel, so the intrinsic inside it became a call per lane group (13% of AVX2 encode).
    let mut w = [zero; 8];
    for i in 0..8 {
        w[i] = s.t[i].abs();
    }
    let (mut p, mut a) = ([zero; 8], [zero; 8]);
    let mut neg = [L::none(); 8];
    if L::all(strictly_decreasing(&s.srt)) {
        // No ties (and no NaN): rank_i < n ⟺ w_i > srt[n], and rank 7 is the one w_i
        // equal to srt[7].
        for i in 0..8 {
            a[i] = half + L::mask_val(u3.lt(w[i]), one) + L::mask_val(u5.lt(w[i]), one);
            let flip = L::and(fix, w[i].eq(s.srt[7]));
            neg[i] = L::xor(s.t[i].lt(zero), flip);
            p[i] = a[i].neg_if(neg[i]);
        }
    } else {
        let rank = ranks(&w);
        let seven = L::splat(7.0);
        for i in 0..8 {
            a[i] = half + L::mask_val(rank[i].lt(n3), one) + L::mask_val(rank[i].lt(n5), one);
            let flip = L::and(fix, rank[i].eq(seven));
            neg[i] = L::xor(s.t[i].lt(zero), flip);
            p[i] = a[i].neg_if(neg[i]);
        }
    }
    (p, a, neg)
}

/// The nearest codeword over both shifts: signed pattern values, shift mask (+¼), and its
/// index packed by [`pack`]. Only the winning shift's values are assigned.
#[inline(always)]
pub(crate) fn nearest<L: Lanes>(v: &[L; 8]) -> ([L; 8], L::M, L) {
    let lo = score_shift(v, false);
    let hi = score_shift(v, true);
    let up = hi.cost.lt(lo.cost);
    let s = Scored::select(up, &hi, &lo);
    let (p, a, neg) = assign(&s);
    (p, up, pack(&a, &neg, up))
}

/// The codeword `p ± ¼` of signed pattern values and a shift mask.
#[inline(always)]
pub(crate) fn codeword<L: Lanes>(p: &[L; 8], up: L::M) -> [L; 8] {
    let s = L::select(up, L::splat(0.25), L::splat(-0.25));
    let mut c = *p;
    for ci in &mut c {
        *ci = *ci + s;
    }
    c
}

/// Lane-wise `m ? a : b` on 8 coordinates.
#[inline(always)]
pub(crate) fn select8<L: Lanes>(m: L::M, a: &[L; 8], b: &[L; 8]) -> [L; 8] {
    let mut out = *b;
    for i in 0..8 {
        out[i] = L::select(m, a[i], b[i]);
    }
    out
}

/// Per-lane index of signed pattern values `p`, given as their magnitudes `a` and sign
/// masks `neg`, packed as an exact small integer in `f32`: `key + 8192 hi`, with `key` the
/// base-3 key of `|p|` (the low index byte is `KEY_TO_ID[key]`) and `hi` the high index
/// byte (the negative coordinates 0-6 as bits 0-6, the shift as bit 7). Below 2^21, so
/// exact.
#[inline(always)]
fn pack<L: Lanes>(a: &[L; 8], neg: &[L::M; 8], up: L::M) -> L {
    let half = L::splat(0.5);
    let mut key = L::splat(0.0);
    let mut pow3 = 2187.0f32;
    for i in (0..8).rev() {
        key = key + (a[i] - half) * L::splat(pow3);
        pow3 /= 3.0;
    }
    let mut hi = L::mask_val(up, L::splat(128.0 * 8192.0));
    for i in 0..7 {
        #[allow(clippy::cast_precision_loss)]
        let bit = (1u32 << (i + 13)) as f32;
        hi = hi + L::mask_val(neg[i], L::splat(bit));
    }
    key + hi
}

/// The 16-bit index of a packed index of [`pack`] (converted to `u32`).
#[inline(always)]
pub(crate) fn index_of_packed(packed: u32) -> u32 {
    let id = KEY_TO_ID[(packed & 8191) as usize];
    debug_assert!(id != NONE, "key {} is not a pattern", packed & 8191);
    u32::from(id & 0xff) | ((packed >> 13) << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_sorts_all_zero_one_inputs() {
        // 0-1 principle: a comparator network sorts everything iff it sorts all 0/1 inputs.
        for m in 0u32..256 {
            let mut v: [f32; 8] = std::array::from_fn(|i| ((m >> i) & 1) as f32);
            v = sort8(v);
            assert!(v.windows(2).all(|p| p[0] >= p[1]), "{m:08b} -> {v:?}");
        }
    }

    #[test]
    fn tables_are_consistent() {
        let mut norms = [0usize; 19];
        for (p, pat) in PATTERNS.iter().enumerate() {
            assert_eq!(KEY_TO_ID[key_of(pat)], p as u16);
            let n: u32 = pat.iter().map(|&a| u32::from(a) * u32::from(a)).sum();
            assert_eq!(n % 4, 0);
            norms[(n / 4) as usize] += 1;
            let s: f32 = BASE[p].iter().sum();
            assert_eq!(s.rem_euclid(2.0), 0.0, "base {p} not in E8");
        }
        // 1 + 8 + 28 + 56 + 70 with no 5/2; 8 and 56 with one 5/2; 28 of norm 14, 1 of 18.
        assert_eq!(norms[2], 1);
        assert_eq!(norms[4], 8);
        assert_eq!(norms[6], 28);
        assert_eq!(norms[8], 56 + 8);
        assert_eq!(norms[10], 70 + 56);
        assert_eq!(norms[14], 28);
        assert_eq!(norms[18], 1);
        assert_eq!(KEY_TO_ID.iter().filter(|&&k| k != NONE).count(), 256);
    }
}
