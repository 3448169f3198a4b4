//! The E8P codebook: 2^16 points of the shifted lattice E8 + ¼ (after QuIP#, Tseng et al. 2024).
//!
//! P is a set of 2^15 points of the half-integer coset D8 + ½ of E8: every point with
//! squared norm ≤ 10 (227 absolute-value *patterns*, each with its 128 sign choices that
//! stay in E8) plus 29 patterns of squared norm 12 (of the 56 with five 3/2 and three 1/2,
//! the first 29 in the order of [`PATTERNS`]). The codebook is `P ± ¼·(1,..,1)`.
//!
//! Index (16 bits): bits 0-7 the pattern, bits 8-14 the sign flips of coordinates 0-6
//! relative to the pattern's base point (the flip of coordinate 7 is their parity, so the
//! number of flips is even and the point stays in E8), bit 15 the shift (1: +¼, 0: −¼).
//! The base point of a pattern is its absolute values with coordinate 7 negated when the
//! coordinate sum is odd (which puts it in E8).
//!
//! Exact encoder. For each shift `s`, the nearest point of P to `v = x − s` is found
//! without search: P's norm-≤10 part is closed under permutations and (even) sign changes,
//! so with `w = |v|` sorted decreasingly the best assignment of each of its 7 multisets of
//! absolute values is the sorted one (rearrangement inequality), and when the number of
//! negative `v_i` has the wrong parity the cheapest fix is flipping the smallest `w_i`
//! (whose value is ½ in every multiset). Each multiset's cost is then a closed form in the
//! prefix sums of the sorted `w`. The 29 norm-12 patterns are searched one by one only when
//! a lower bound (the best assignment of their multiset) beats the best norm-≤10 point.

/// The 256 absolute-value patterns, in half units (odd integers: 1 = ½, 3 = 3/2, 5 = 5/2).
///
/// First the 227 patterns of squared norm ≤ 10 in increasing base-3 key order (digit `i`
/// is `(a_i − ½)`, so pattern 0 is all ½), then the 29 norm-12 patterns: the masks `m` in
/// `0..256` with five bits set, in increasing order, coordinate `i` being 3/2 when bit
/// `7 − i` of `m` is set.
pub(crate) const PATTERNS: [[u8; 8]; 256] = build_patterns();

/// Number of patterns of squared norm ≤ 10.
pub(crate) const N_BALL: usize = 227;

/// Base-3 key of a pattern (digit `i` = `(a_i − ½)` in {0, 1, 2}) → pattern id, or `NONE`.
pub(crate) static KEY_TO_ID: [u16; 6561] = build_key_to_id();

/// Marks a key that is no pattern of the codebook.
pub(crate) const NONE: u16 = u16::MAX;

/// Base point of each pattern (absolute values, coordinate 7 negated if the sum is odd).
pub(crate) static BASE: [[f32; 8]; 256] = build_base();

/// 7 sign-flip bits → 8 flip bits with even parity (bit 7 = parity of bits 0-6).
pub(crate) static FLIP8: [u8; 128] = build_flip8();

/// The norm-12 patterns as `f32` absolute values.
static N12: [[f32; 8]; 29] = build_n12();

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
    let mut m = 0u32;
    while m < 256 && n < 256 {
        if m.count_ones() == 5 {
            let mut a = [1u8; 8];
            let mut i = 0;
            while i < 8 {
                if (m >> (7 - i)) & 1 == 1 {
                    a[i] = 3;
                }
                i += 1;
            }
            out[n] = a;
            n += 1;
        }
        m += 1;
    }
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

const fn build_key_to_id() -> [u16; 6561] {
    let mut t = [NONE; 6561];
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

const fn build_n12() -> [[f32; 8]; 29] {
    let mut t = [[0.0f32; 8]; 29];
    let mut p = 0;
    while p < 29 {
        let mut i = 0;
        while i < 8 {
            t[p][i] = PATTERNS[N_BALL + p][i] as f32 * 0.5;
            i += 1;
        }
        p += 1;
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

/// The multisets of the norm-≤10 part: (count ≥ 3/2, count = 5/2, squared norm, sum parity).
pub(crate) const TYPES: [(usize, usize, f32, u32); 7] = [
    (0, 0, 2.0, 0),
    (1, 0, 4.0, 1),
    (2, 0, 6.0, 0),
    (3, 0, 8.0, 1),
    (4, 0, 10.0, 0),
    (1, 1, 8.0, 0),
    (2, 1, 10.0, 1),
];

/// Sorting network for 8 values (19 comparators, depth 6).
pub(crate) const NETWORK: [(usize, usize); 19] = [
    (0, 2),
    (1, 3),
    (4, 6),
    (5, 7),
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7),
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7),
    (2, 4),
    (3, 5),
    (1, 4),
    (3, 6),
    (1, 2),
    (3, 4),
    (5, 6),
];

/// Nearest codeword with the given shift (`up`: +¼, else −¼) to `x`: its index and
/// squared distance (computed as `|w|² − 2<w,a> + |a|²`, exact up to `f32` rounding).
#[inline]
pub(crate) fn encode_shift(x: &[f32; 8], up: bool) -> (u16, f32) {
    let s = if up { 0.25 } else { -0.25 };
    let mut w = [0.0f32; 8];
    let mut neg = 0u32;
    let mut base = 0.0f32;
    for i in 0..8 {
        let v = x[i] - s;
        w[i] = v.abs();
        neg |= u32::from(v < 0.0) << i;
        base += w[i] * w[i] - w[i];
    }
    let negpar = neg.count_ones() & 1;
    let mut srt = w;
    for (a, b) in NETWORK {
        let (hi, lo) = (srt[a].max(srt[b]), srt[a].min(srt[b]));
        srt[a] = hi;
        srt[b] = lo;
    }
    let mut pre = [0.0f32; 6];
    for r in 0..5 {
        pre[r + 1] = pre[r] + srt[r];
    }
    let pen = 2.0 * srt[7];
    let mut best_t = 0;
    let mut best_key = f32::INFINITY;
    for (t, &(n3, n5, norm, par)) in TYPES.iter().enumerate() {
        let mut key = norm - 2.0 * (pre[n3] + pre[n5]);
        if par != negpar {
            key += pen;
        }
        if key < best_key {
            best_key = key;
            best_t = t;
        }
    }
    // Lower bound for the norm-12 patterns (five 3/2, sum parity 1).
    let mut bound = 12.0 - 2.0 * pre[5];
    if negpar != 1 {
        bound += pen;
    }
    let mut chosen_n12 = None;
    if bound < best_key {
        // Search the 29 patterns: key = |a|² − 2<w,a> + S + penalty (same basis as above).
        let sum_w: f32 = w.iter().sum();
        for (p, pat) in N12.iter().enumerate() {
            let mut dot = 0.0f32;
            let mut mn = f32::INFINITY;
            let mut arg = 0;
            for i in 0..8 {
                let m = w[i] * pat[i];
                dot += m;
                if m < mn {
                    mn = m;
                    arg = i;
                }
            }
            let mut key = 12.0 - 2.0 * dot + sum_w;
            if negpar != 1 {
                key += 4.0 * mn;
            }
            if key < best_key {
                best_key = key;
                chosen_n12 = Some((p, if negpar != 1 { arg } else { 8 }));
            }
        }
    }
    let mut a = [0.0f32; 8];
    let mut flip_at = 8;
    if let Some((p, arg)) = chosen_n12 {
        a = N12[p];
        flip_at = arg;
    } else {
        // A norm-≤10 multiset won: assign its values by rank.
        let (n3, n5, _, par) = TYPES[best_t];
        let rank = ranks(&w);
        for i in 0..8 {
            a[i] = 0.5 + f32::from(u8::from(rank[i] < n3)) + f32::from(u8::from(rank[i] < n5));
            if rank[i] == 7 && par != negpar {
                flip_at = i;
            }
        }
    }
    if flip_at < 8 {
        neg ^= 1 << flip_at;
    }
    (index_of(&a, neg, up), base + best_key)
}

/// Rank of each value in decreasing order (ties: lower index first).
#[inline]
pub(crate) fn ranks(w: &[f32; 8]) -> [usize; 8] {
    let mut rank = [0usize; 8];
    for i in 0..8 {
        for j in i + 1..8 {
            if w[j] > w[i] {
                rank[i] += 1;
            } else {
                rank[j] += 1;
            }
        }
    }
    rank
}

/// Index of the codeword with absolute values `a` (a pattern), negative coordinates `neg`
/// (a bit mask with the parity of the pattern) and the given shift.
#[inline]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn index_of(a: &[f32; 8], neg: u32, up: bool) -> u16 {
    let mut key = 0usize;
    for i in (0..8).rev() {
        key = key * 3 + (a[i] - 0.5) as usize;
    }
    let id = KEY_TO_ID[key];
    debug_assert!(id != NONE, "pattern {a:?} is not in the codebook");
    id | (((neg & 0x7f) as u16) << 8) | (u16::from(up) << 15)
}

/// Nearest codeword to `x` over both shifts: `[(index, cost) for −¼, for +¼]`.
#[inline]
pub(crate) fn encode_both(x: &[f32; 8]) -> [(u16, f32); 2] {
    [encode_shift(x, false), encode_shift(x, true)]
}

/// Nearest codeword to `x`: its index and squared distance.
#[inline]
pub(crate) fn encode(x: &[f32; 8]) -> (u16, f32) {
    let [lo, hi] = encode_both(x);
    if hi.1 < lo.1 { hi } else { lo }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_sorts_all_zero_one_inputs() {
        // 0-1 principle: a comparator network sorts everything iff it sorts all 0/1 inputs.
        for m in 0u32..256 {
            let mut v: [f32; 8] = std::array::from_fn(|i| ((m >> i) & 1) as f32);
            for (a, b) in NETWORK {
                let (hi, lo) = (v[a].max(v[b]), v[a].min(v[b]));
                v[a] = hi;
                v[b] = lo;
            }
            assert!(v.windows(2).all(|p| p[0] >= p[1]), "{m:08b} -> {v:?}");
        }
    }

    #[test]
    fn tables_are_consistent() {
        let mut norms = [0usize; 13];
        for (p, pat) in PATTERNS.iter().enumerate() {
            assert_eq!(KEY_TO_ID[key_of(pat)], p as u16);
            let n: u32 = pat.iter().map(|&a| u32::from(a) * u32::from(a)).sum();
            assert_eq!(n % 4, 0);
            norms[(n / 4) as usize] += 1;
            let s: f32 = BASE[p].iter().sum();
            assert_eq!(s.rem_euclid(2.0), 0.0, "base {p} not in E8");
        }
        // 1 + 8 + 28 + 56 + 70 with no 5/2; 8 and 56 with one 5/2; 29 of norm 12.
        assert_eq!(norms[2], 1);
        assert_eq!(norms[4], 8);
        assert_eq!(norms[6], 28);
        assert_eq!(norms[8], 56 + 8);
        assert_eq!(norms[10], 70 + 56);
        assert_eq!(norms[12], 29);
        assert_eq!(KEY_TO_ID.iter().filter(|&&k| k != NONE).count(), 256);
    }
}
