//! Naive oracles for the tests and the benchmarks' speedups: brute force in `f64`, written
//! independently of the fast paths (they share only the published codebook tables).

use half::f16;

use crate::FixedBits;
use crate::e8p::PATTERNS;

/// Squared distance in `f64`.
#[must_use]
pub fn dist2(a: &[f64; 8], b: &[f64; 8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Whether `y` is a point of E8: all coordinates in Z or all in Z + ½, with an even sum.
#[must_use]
pub fn is_e8(y: &[f64; 8]) -> bool {
    let int = y.iter().all(|v| v.fract() == 0.0);
    let half = y.iter().all(|v| (v - 0.5).fract() == 0.0 || (v + 0.5).fract() == 0.0);
    let sum: f64 = y.iter().sum();
    (int || half) && sum.rem_euclid(2.0) == 0.0
}

/// Every E8 point within distance `radius` of `x` (by enumeration of both cosets).
///
/// # Panics
/// If `radius` is negative or not finite (a caller bug, not data).
#[must_use]
#[track_caller]
pub fn e8_points_in_ball(x: &[f64; 8], radius: f64) -> Vec<[f64; 8]> {
    assert!(radius.is_finite() && radius >= 0.0, "radius {radius}");
    let mut out = Vec::new();
    for t in [0.0, 0.5] {
        // Candidate values of each coordinate within `radius`.
        let cand: Vec<Vec<f64>> = x
            .iter()
            .map(|&xi| {
                let lo = (xi - radius - t).ceil();
                let hi = (xi + radius - t).floor();
                let mut v = Vec::new();
                let mut k = lo;
                while k <= hi {
                    v.push(k + t);
                    k += 1.0;
                }
                v
            })
            .collect();
        let mut idx = [0usize; 8];
        if cand.iter().any(Vec::is_empty) {
            continue;
        }
        loop {
            let y: [f64; 8] = std::array::from_fn(|i| cand[i][idx[i]]);
            let sum: f64 = y.iter().sum();
            if sum.rem_euclid(2.0) == 0.0 && dist2(x, &y) <= radius * radius {
                out.push(y);
            }
            let mut i = 0;
            while i < 8 {
                idx[i] += 1;
                if idx[i] < cand[i].len() {
                    break;
                }
                idx[i] = 0;
                i += 1;
            }
            if i == 8 {
                break;
            }
        }
    }
    out
}

/// Nearest E8 point by brute force over the closed ball of radius 1 (the covering radius)
/// around `x`, and its squared distance. Ties: the first point enumerated.
#[must_use]
pub fn nearest_e8_brute(x: &[f32; 8]) -> ([f64; 8], f64) {
    let xd: [f64; 8] = x.map(f64::from);
    let mut best = ([0.0; 8], f64::INFINITY);
    for y in e8_points_in_ball(&xd, 1.0 + 1e-9) {
        let d = dist2(&xd, &y);
        if d < best.1 {
            best = (y, d);
        }
    }
    best
}

/// The 240 roots of E8 (squared norm 2).
#[must_use]
pub fn e8_roots() -> Vec<[f64; 8]> {
    e8_points_in_ball(&[0.0; 8], 2f64.sqrt())
        .into_iter()
        .filter(|y| dist2(y, &[0.0; 8]) == 2.0)
        .collect()
}

/// The E8P codeword of a 16-bit index, computed from the pattern list and the index
/// layout directly (no precomputed base points or flip table).
#[must_use]
pub fn e8p_word(idx: u16) -> [f64; 8] {
    let pat = &PATTERNS[usize::from(idx & 0xff)];
    let abs: [f64; 8] = std::array::from_fn(|i| f64::from(pat[i]) / 2.0);
    let odd_sum = (abs.iter().sum::<f64>() as i64) % 2 == 1;
    let flips = (idx >> 8) & 0x7f;
    let parity = flips.count_ones() % 2 == 1;
    let shift = if idx >> 15 == 1 { 0.25 } else { -0.25 };
    std::array::from_fn(|i| {
        let negative = if i < 7 { (flips >> i) & 1 == 1 } else { parity != odd_sum };
        (if negative { -abs[i] } else { abs[i] }) + shift
    })
}

/// The 256 words of the 3-bit code's residual codebook, by enumeration: the origin, the
/// 240 roots and 2e_0..2e_7, −2e_0..−2e_6, in the documented index order.
#[must_use]
pub fn e81b_words() -> Vec<[f64; 8]> {
    let mut out = vec![[0.0; 8]];
    for i in 0..8 {
        for j in i + 1..8 {
            for b in 0..4 {
                let mut v = [0.0; 8];
                v[i] = if b & 1 == 1 { -1.0 } else { 1.0 };
                v[j] = if b & 2 == 2 { -1.0 } else { 1.0 };
                out.push(v);
            }
        }
    }
    for m in 0u32..128 {
        let odd = m.count_ones() % 2 == 1;
        out.push(std::array::from_fn(|i| {
            let negative = if i < 7 { (m >> i) & 1 == 1 } else { odd };
            if negative { -0.5 } else { 0.5 }
        }));
    }
    for k in 0..15 {
        let mut v = [0.0; 8];
        v[k % 8] = if k < 8 { 2.0 } else { -2.0 };
        out.push(v);
    }
    out
}

/// Nearest word of `words` to `x` (first on ties) and its squared distance.
#[must_use]
pub fn nearest_word(words: &[[f64; 8]], x: &[f64; 8]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (k, w) in words.iter().enumerate() {
        let d = dist2(w, x);
        if d < best.1 {
            best = (k, d);
        }
    }
    best
}

/// All 2^16 E8P codewords, in index order.
#[must_use]
pub fn e8p_words() -> Vec<[f64; 8]> {
    (0..=u16::MAX).map(e8p_word).collect()
}

/// The codeword of one block's code of a fixed code (naive).
///
/// # Panics
/// If `code` is shorter than `bits.bytes_per_block()` (a caller bug).
#[must_use]
#[track_caller]
pub fn fixed_word(bits: FixedBits, code: &[u8]) -> [f64; 8] {
    let c1 = e8p_word(u16::from_le_bytes([code[0], code[1]]));
    match bits {
        FixedBits::B2 => c1,
        FixedBits::B3 => {
            static WORDS: std::sync::LazyLock<Vec<[f64; 8]>> = std::sync::LazyLock::new(e81b_words);
            let w = WORDS[usize::from(code[2])];
            std::array::from_fn(|i| c1[i] + w[i] / 2.0)
        }
        FixedBits::B4 => {
            let c2 = e8p_word(u16::from_le_bytes([code[2], code[3]]));
            std::array::from_fn(|i| c1[i] + c2[i] / 4.0)
        }
    }
}

/// Exact nearest E8P codeword to `x` by search over all 2^16 words (`words` from
/// [`e8p_words`]): index and squared distance.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub fn e8p_encode_brute(words: &[[f64; 8]], x: &[f64; 8]) -> (u16, f64) {
    let (k, d) = nearest_word(words, x);
    (k as u16, d)
}

/// The fixed codes' encoding rule by brute force, for one block `x` (already divided by
/// its scale): the nearest E8P word `c1` over all 2^16 (`e8p` from [`e8p_words`]), then for
/// `B3` the nearest word of [`e81b_words`] to `2 (x − c1)`, for `B4` the nearest E8P word
/// to `4 (x − c1)` (greedy: the first stage is fixed before the second is searched). Ties
/// go to the lowest index. Returns the code (first `bytes_per_block` bytes) and the
/// codeword.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub fn fixed_encode_brute(bits: FixedBits, e8p: &[[f64; 8]], x: &[f64; 8]) -> ([u8; 4], [f64; 8]) {
    let (k1, _) = e8p_encode_brute(e8p, x);
    let c1 = e8p[usize::from(k1)];
    let [a, b] = k1.to_le_bytes();
    match bits {
        FixedBits::B2 => ([a, b, 0, 0], c1),
        FixedBits::B3 => {
            let words = e81b_words();
            let r: [f64; 8] = std::array::from_fn(|i| 2.0 * (x[i] - c1[i]));
            let (k2, _) = nearest_word(&words, &r);
            let w = words[k2];
            ([a, b, k2 as u8, 0], std::array::from_fn(|i| c1[i] + w[i] / 2.0))
        }
        FixedBits::B4 => {
            let r: [f64; 8] = std::array::from_fn(|i| 4.0 * (x[i] - c1[i]));
            let (k2, _) = e8p_encode_brute(e8p, &r);
            let c2 = e8p[usize::from(k2)];
            let [c, d] = k2.to_le_bytes();
            ([a, b, c, d], std::array::from_fn(|i| c1[i] + c2[i] / 4.0))
        }
    }
}

/// Decodes rows of a fixed code naively: `out = scale * word`, in `f64` then rounded.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub fn fixed_decode_rows(bits: FixedBits, codes: &[u8], scales: &[f16], dim: usize) -> Vec<f32> {
    let bpb = bits.bytes_per_block();
    let mut out = Vec::with_capacity(scales.len() * dim);
    for (row, s) in codes.chunks_exact(dim / 8 * bpb).zip(scales) {
        for code in row.chunks_exact(bpb) {
            let w = fixed_word(bits, code);
            out.extend(w.iter().map(|v| (v * f64::from(s.to_f32())) as f32));
        }
    }
    out
}

/// Naive fused dot products: decode each row, then `f64` dot product with `query`.
#[must_use]
pub fn fixed_dot_rows(bits: FixedBits, query: &[f32], codes: &[u8], scales: &[f16]) -> Vec<f64> {
    let dim = query.len();
    let rows = fixed_decode_rows(bits, codes, scales, dim);
    rows.chunks_exact(dim)
        .map(|r| r.iter().zip(query).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum())
        .collect()
}

/// Naive fused weighted sum: `Σ_n weights[n] * decoded row n`, in `f64`.
#[must_use]
pub fn fixed_axpy_rows(
    bits: FixedBits,
    weights: &[f32],
    codes: &[u8],
    scales: &[f16],
    dim: usize,
) -> Vec<f64> {
    let rows = fixed_decode_rows(bits, codes, scales, dim);
    let mut acc = vec![0.0f64; dim];
    for (r, w) in rows.chunks_exact(dim).zip(weights) {
        for (a, v) in acc.iter_mut().zip(r) {
            *a += f64::from(*w) * f64::from(*v);
        }
    }
    acc
}

/// Naive variable-rate symbols of one E8 point: `(c, [z_0..z_6, h])`.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub fn symbols_of(y: &[f64; 8]) -> (u8, [i32; 8]) {
    let c = u8::from(y[0].fract() != 0.0);
    let z: [i64; 8] = std::array::from_fn(|i| (y[i] - f64::from(c) / 2.0) as i64);
    let p = z[..7].iter().sum::<i64>().rem_euclid(2);
    let mut s = [0i32; 8];
    for i in 0..7 {
        s[i] = z[i] as i32;
    }
    s[7] = ((z[7] - p) / 2) as i32;
    (c, s)
}

/// Naive order-0 entropy of the coset-aware symbols (bits per value), with hash maps.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn entropy_bits_per_dim(cosets: &[u8], coords: &[i32]) -> f64 {
    use std::collections::HashMap;
    let n = cosets.len().min(coords.len() / 8);
    if n == 0 {
        return 0.0;
    }
    let h = |counts: HashMap<i64, usize>| -> f64 {
        counts.values().map(|&k| k as f64 / n as f64).map(|p| -p * p.log2()).sum()
    };
    let mut c = HashMap::new();
    for &v in &cosets[..n] {
        *c.entry(i64::from(v)).or_insert(0) += 1;
    }
    let mut total = h(c);
    for k in 0..8 {
        let mut m = HashMap::new();
        for v in 0..n {
            *m.entry(i64::from(coords[8 * v + k])).or_insert(0) += 1;
        }
        total += h(m);
    }
    total / 8.0
}

/// The Voronoi (nested-lattice) code E8 / qE8, the alternative the fixed codes were
/// measured against: `log2(q)` bits per value exactly, codewords the E8 points in the
/// Voronoi cell of `qE8` (shifted by a tiny offset `a` that breaks boundary ties).
///
/// Encoding takes the nearest E8 point `y` and reduces it mod `qE8`:
/// `y − q Q((y − a)/q)`; a point outside the cell wraps around. With `shrink`, an
/// overloaded point is instead replaced by the best of the reduced points of
/// `Q(α x)` for α = 0.96, 0.92, .. (stopping at the first that needs no wrap), a cheap
/// overload rule that gains several dB.
#[must_use]
pub fn voronoi_quantize(x: &[f32; 8], q: f32, shrink: bool) -> [f32; 8] {
    let a: [f32; 8] = std::array::from_fn(|i| 3.7e-5 * (i as f32 + 1.0));
    let reduce = |y: &[f32; 8]| -> [f32; 8] {
        let t: [f32; 8] = std::array::from_fn(|i| (y[i] - a[i]) / q);
        let z = crate::nearest_e8(&t);
        std::array::from_fn(|i| y[i] - q * z[i])
    };
    let d2 = |u: &[f32; 8], v: &[f32; 8]| -> f32 {
        u.iter().zip(v).map(|(s, t)| (s - t) * (s - t)).sum()
    };
    let y = crate::nearest_e8(x);
    let r = reduce(&y);
    if !shrink || r == y {
        return r;
    }
    let mut best = (d2(x, &r), r);
    for k in 1..12 {
        let alpha = 1.0 - 0.04 * k as f32;
        let ys = crate::nearest_e8(&x.map(|v| v * alpha));
        let rs = reduce(&ys);
        let d = d2(x, &rs);
        if d < best.0 {
            best = (d, rs);
        }
        if rs == ys {
            break;
        }
    }
    best.1
}
