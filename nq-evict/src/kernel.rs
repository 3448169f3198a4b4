//! Inner loops shared by the scorers: blocked query-key products, row softmax, pooling,
//! normalization. Inputs here are already validated; only `debug_assert!` guards remain.

use std::ops::Range;

/// Keys per block of the transposed key layout (the vector lanes of the product kernel).
const KB: usize = 8;
/// Queries per register tile of the product kernel.
const QB: usize = 4;

/// Keys `[t, d]` transposed into blocks of [`KB`] tokens: block `b` is `d` rows of `KB` lanes,
/// lane `l` of row `c` being coordinate `c` of key `b * KB + l`. The last block is zero padded.
///
/// With this layout the product kernel broadcasts one query coordinate against `KB` keys at a
/// time, so every lane does useful work and no horizontal reduction is needed.
pub(crate) struct KeyBlocks {
    data: Vec<f32>,
    t: usize,
    d: usize,
}

impl KeyBlocks {
    pub(crate) fn new(keys: &[f32], d: usize) -> Self {
        debug_assert!(d > 0 && keys.len().is_multiple_of(d));
        let t = keys.len() / d;
        let blocks = t.div_ceil(KB);
        let mut data = vec![0.0f32; blocks * KB * d];
        for (i, key) in keys.chunks_exact(d).enumerate() {
            let (b, l) = (i / KB, i % KB);
            let block = &mut data[b * KB * d..(b + 1) * KB * d];
            for (c, &x) in key.iter().enumerate() {
                block[c * KB + l] = x;
            }
        }
        KeyBlocks { data, t, d }
    }

    pub(crate) fn tokens(&self) -> usize {
        self.t
    }
}

/// `out[j * t + i] = scale * (q_j . k_i)` for the `m` query rows of `qs` (`[m, d]`) and all `t`
/// keys of `kb`: the logits matrix `[m, t]`, row per query.
pub(crate) fn logits(qs: &[f32], kb: &KeyBlocks, scale: f32, out: &mut [f32]) {
    let (t, d) = (kb.t, kb.d);
    debug_assert_eq!(qs.len() % d, 0);
    let m = qs.len() / d;
    debug_assert_eq!(out.len(), m * t);
    for (b, block) in kb.data.chunks_exact(KB * d).enumerate() {
        let i0 = b * KB;
        let lanes = KB.min(t - i0);
        let mut j = 0;
        while j + QB <= m {
            let acc = tile4(
                [
                    &qs[j * d..(j + 1) * d],
                    &qs[(j + 1) * d..(j + 2) * d],
                    &qs[(j + 2) * d..(j + 3) * d],
                    &qs[(j + 3) * d..(j + 4) * d],
                ],
                block,
            );
            for (r, row) in acc.iter().enumerate() {
                let dst = &mut out[(j + r) * t + i0..(j + r) * t + i0 + lanes];
                for (o, &a) in dst.iter_mut().zip(row) {
                    *o = a * scale;
                }
            }
            j += QB;
        }
        while j < m {
            let acc = tile1(&qs[j * d..(j + 1) * d], block);
            let dst = &mut out[j * t + i0..j * t + i0 + lanes];
            for (o, &a) in dst.iter_mut().zip(&acc) {
                *o = a * scale;
            }
            j += 1;
        }
    }
}

/// Four queries against one block of [`KB`] transposed keys.
#[inline]
fn tile4(q: [&[f32]; QB], block: &[f32]) -> [[f32; KB]; QB] {
    let mut a0 = [0.0f32; KB];
    let mut a1 = [0.0f32; KB];
    let mut a2 = [0.0f32; KB];
    let mut a3 = [0.0f32; KB];
    let rows = block.chunks_exact(KB);
    for ((((kv, &x0), &x1), &x2), &x3) in rows.zip(q[0]).zip(q[1]).zip(q[2]).zip(q[3]) {
        for l in 0..KB {
            a0[l] += x0 * kv[l];
            a1[l] += x1 * kv[l];
            a2[l] += x2 * kv[l];
            a3[l] += x3 * kv[l];
        }
    }
    [a0, a1, a2, a3]
}

/// One query against one block of [`KB`] transposed keys.
#[inline]
fn tile1(q: &[f32], block: &[f32]) -> [f32; KB] {
    let mut a = [0.0f32; KB];
    for (kv, &x) in block.chunks_exact(KB).zip(q) {
        for l in 0..KB {
            a[l] += x * kv[l];
        }
    }
    a
}

/// Replaces the logits in `row` by `exp(row - max(row))` and returns their sum (in `f64`).
///
/// Entries equal to `-inf` (masked) become exactly 0. A row with no finite entry becomes all
/// zeros and returns 0. The exponential is [`exp_neg`], written so that the loop vectorizes.
pub(crate) fn exp_row(row: &mut [f32]) -> f64 {
    let m = max(row);
    if m == f32::NEG_INFINITY || m.is_nan() {
        row.fill(0.0);
        return 0.0;
    }
    // f32 lane sums over blocks of SUM_BLOCK entries (at most SUM_BLOCK / LANES terms each,
    // so each block sum is within (SUM_BLOCK / LANES + LANES) eps of exact), then f64 across
    // blocks.
    const SUM_BLOCK: usize = 256;
    let mut s = 0.0f64;
    for block in row.chunks_mut(SUM_BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let e = exp_neg(c[l] - m);
                c[l] = e;
                acc[l] += e;
            }
        }
        for x in chunks.into_remainder() {
            let e = exp_neg(*x - m);
            *x = e;
            acc[0] += e;
        }
        s += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
    }
    s
}

/// Lanes of the vectorizable reductions.
const LANES: usize = 8;

/// Maximum of `v` (`-inf` for an empty slice); NaN entries are skipped unless all are NaN.
fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            // `if` form (not f32::max) so that the loop compiles to vector max instructions
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    chunks.remainder().iter().copied().fold(m, f32::max)
}

/// `exp(x)` for `x <= 0` (the shifted logits of a softmax), in straight-line code that
/// vectorizes: Cody-Waite reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, the degree-7 Taylor
/// polynomial of `exp(r)` in Horner form, and `2^n` built in the exponent bits.
///
/// Relative error at most about 2 ulp (the Taylor remainder `|r|^8 / 8! < 2^-23`, plus
/// rounding of the Horner steps). Inputs below `-87.3` (where `exp` leaves the normal range),
/// `-inf` included, give exactly 0; NaN gives NaN. Inputs `> 0` are not expected (they would
/// be computed correctly up to `x < 88`).
#[inline]
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_751_953_125; // 11 significant bits: n * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_765_330_187e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    // not f32::max: a NaN input must stay NaN
    let xc = if x < -87.3 { -87.3 } else { x };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC; // round(x / ln 2), exactly representable
    #[allow(clippy::cast_possible_wrap)]
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32; // the same integer
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0 + r * (1.0 / 40320.0);
    let p = 1.0 / 720.0 + r * p;
    let p = 1.0 / 120.0 + r * p;
    let p = 1.0 / 24.0 + r * p;
    let p = 1.0 / 6.0 + r * p;
    let p = 0.5 + r * p;
    let p = 1.0 + r * p;
    let p = 1.0 + r * p;
    #[allow(clippy::cast_sign_loss)]
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    let e = p * scale;
    if x < -87.3 { 0.0 } else { e }
}

/// `acc += a * x`.
#[inline]
pub(crate) fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (o, &v) in acc.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Pooling applied to scores along the token axis (SnapKV's clustering of neighbours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pool {
    /// Maximum over the kernel (SnapKV's `max_pool1d`).
    Max,
    /// Mean over the kernel (kvpress SnapKV's `avg_pool1d`); at the edges of the pooled range,
    /// the mean over the neighbours inside the range.
    #[default]
    Avg,
}

/// Pools `src` into `dst` over a centred window of `kernel` (odd) tokens, inside `range` only:
/// neighbours outside `range` are not read, tokens outside `range` are copied unchanged.
pub(crate) fn pool(src: &[f32], range: Range<usize>, kernel: usize, kind: Pool, dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    debug_assert!(kernel % 2 == 1);
    match kind {
        Pool::Max => max_pool(src, range, kernel, dst),
        Pool::Avg => pool_naive(src, range, kernel, kind, dst),
    }
}

/// [`pool`] as defined: every window read in full (`O(n * kernel)`). The reference of
/// [`max_pool`], and the average pooling itself (its sums stay in window order).
pub(crate) fn pool_naive(
    src: &[f32],
    range: Range<usize>,
    kernel: usize,
    kind: Pool,
    dst: &mut [f32],
) {
    dst.copy_from_slice(src);
    let r = kernel / 2;
    if r == 0 {
        return;
    }
    for i in range.clone() {
        let lo = i.saturating_sub(r).max(range.start);
        let hi = (i + r + 1).min(range.end);
        let win = &src[lo..hi];
        dst[i] = match kind {
            Pool::Max => win.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Pool::Avg => {
                #[allow(clippy::cast_precision_loss)] // window of at most `kernel` tokens
                let n = win.len() as f32;
                win.iter().sum::<f32>() / n
            }
        };
    }
}

/// [`pool`] with [`Pool::Max`] in `O(n log kernel)`, the same values as [`pool_naive`]: with
/// `p` the largest power of two `<= kernel`, `span[j]` becomes the maximum of the `p` tokens
/// from `j` (log2 p passes of pairwise maxima, each over the whole range, which vectorize),
/// and a full window is the maximum of the two spans of `p` at its ends, which overlap and
/// cover it. Windows cut short by the range's ends are read in full. NaN is ignored as
/// `f32::max` ignores it (a window of NaN only gives `-inf`, as the naive fold does).
fn max_pool(src: &[f32], range: Range<usize>, kernel: usize, dst: &mut [f32]) {
    dst.copy_from_slice(src);
    let r = kernel / 2;
    let n = range.len();
    if r == 0 || n == 0 {
        return;
    }
    let p = 1usize << kernel.ilog2();
    let mut span: Vec<f32> = src[range.clone()]
        .iter()
        .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
        .collect();
    let mut w = 1;
    let mut ahead = vec![0f32; n];
    while w < p && w < n {
        // `span[j] = max(span[j], span[j + w])` with the values before this pass: read from
        // a copy, so the pass vectorizes.
        ahead[..n - w].copy_from_slice(&span[w..]);
        for (x, &y) in span[..n - w].iter_mut().zip(&ahead[..n - w]) {
            *x = x.max(y);
        }
        w *= 2;
    }
    let s = range.start;
    // Full windows (`lo = i - r`, `hi = i + r + 1`): the two spans at their ends.
    let full = s + r..range.end.saturating_sub(r).max(s + r);
    let ends = full.start.min(range.end);
    for i in (s..ends).chain(full.end.max(ends)..range.end) {
        let lo = i.saturating_sub(r).max(s);
        let hi = (i + r + 1).min(range.end);
        dst[i] = src[lo..hi].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }
    if !full.is_empty() {
        let first = &span[full.start - r - s..full.end - r - s];
        let last = &span[full.start + r + 1 - p - s..full.end + r + 1 - p - s];
        for ((d, &a), &b) in dst[full].iter_mut().zip(first).zip(last) {
            *d = a.max(b);
        }
    }
}

/// Sum of the non-NaN entries of `v[range]`, in `f64`.
pub(crate) fn sum_range(v: &[f32], range: Range<usize>) -> f64 {
    v[range].iter().filter(|x| !x.is_nan()).map(|&x| f64::from(x)).sum()
}

/// Divides all of `v` by the sum of `v[range]` when that sum is positive and finite; leaves
/// `v` unchanged otherwise.
pub(crate) fn normalize(v: &mut [f32], range: Range<usize>) {
    let s = sum_range(v, range);
    if s > 0.0 && s.is_finite() {
        #[allow(clippy::cast_possible_truncation)] // 1/s of a sum of f32 is in f32 range
        let inv = (1.0 / s) as f32;
        for x in v.iter_mut() {
            *x *= inv;
        }
    }
}

/// Folds one query head's scores `v` into the kv-head scores `out`.
///
/// `first` marks the first head of the group (initializes `out`); `Mean` adds `v / group`.
pub(crate) fn reduce_into(
    out: &mut [f32],
    v: &[f32],
    reduce: crate::GroupReduce,
    group: usize,
    first: bool,
) {
    match reduce {
        crate::GroupReduce::Mean => {
            #[allow(clippy::cast_precision_loss)] // a handful of query heads
            let w = 1.0 / group as f32;
            if first {
                for (o, &x) in out.iter_mut().zip(v) {
                    *o = w * x;
                }
            } else {
                axpy(out, w, v);
            }
        }
        crate::GroupReduce::Max => {
            if first {
                out.copy_from_slice(v);
            } else {
                for (o, &x) in out.iter_mut().zip(v) {
                    // NaN in either operand propagates, so a NaN head poisons the token.
                    *o = if x.is_nan() || o.is_nan() { f32::NAN } else { o.max(x) };
                }
            }
        }
    }
}

/// `1 / sqrt(d)` in `f32`.
pub(crate) fn inv_sqrt(d: usize) -> f32 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let s = (1.0 / (d as f64).sqrt()) as f32;
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn logits_match_direct_dots_at_tile_edges() {
        // m = 7 (one 4-tile + 3 singles), t = 13 (one full block + a tail of 5), d = 3.
        let (m, t, d) = (7usize, 13usize, 3usize);
        let qs: Vec<f32> = (0..m * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let keys: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let kb = KeyBlocks::new(&keys, d);
        let mut out = vec![f32::NAN; m * t];
        logits(&qs, &kb, 0.5, &mut out);
        for j in 0..m {
            for i in 0..t {
                let direct: f32 =
                    (0..d).map(|c| qs[j * d + c] * keys[i * d + c]).sum::<f32>() * 0.5;
                let bound = 4.0 * f32::EPSILON * d as f32;
                assert!((out[j * t + i] - direct).abs() <= bound, "j {j} i {i}");
            }
        }
    }

    #[test]
    fn exp_row_masks_and_empty_rows() {
        let mut row = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        assert_eq!(exp_row(&mut row), 1.0);
        assert_eq!(row, [0.0, 1.0, 0.0]);
        let mut all_masked = [f32::NEG_INFINITY; 4];
        assert_eq!(exp_row(&mut all_masked), 0.0);
        assert_eq!(all_masked, [0.0; 4]);
    }

    #[test]
    fn exp_neg_is_within_two_ulp_of_exp() {
        // every 997th negative f32 from -1e-45 down to -87.3
        let mut worst = 0.0f64;
        let mut bits = (-f32::from_bits(1)).to_bits();
        while f32::from_bits(bits) >= -87.3 {
            let x = f32::from_bits(bits);
            let exact = f64::from(x).exp();
            worst = worst.max((f64::from(exp_neg(x)) - exact).abs() / exact);
            bits += 997;
        }
        assert!(worst <= 2.0 * f64::from(f32::EPSILON), "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(-100.0), 0.0);
        assert!(exp_neg(f32::NAN).is_nan());
    }

    proptest! {
        /// The doubling max pool gives the naive windows' maxima (NaN and -0 included:
        /// compared as values).
        #[test]
        fn max_pool_equals_the_naive_windows(
            src in proptest::collection::vec(prop_oneof![
                8 => 0.0f32..1.0,
                2 => (0u8..3).prop_map(f32::from),
                1 => Just(f32::NAN),
                1 => Just(-0.0f32),
            ], 0..300),
            half in 0usize..24,
            cut in (0.0f64..=1.0, 0.0f64..=1.0),
        ) {
            let n = src.len();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let (a, b) = ((cut.0 * n as f64) as usize, (cut.1 * n as f64) as usize);
            let range = a.min(b)..a.max(b);
            let kernel = 2 * half + 1;
            let (mut fast, mut naive) = (vec![0f32; n], vec![0f32; n]);
            pool(&src, range.clone(), kernel, Pool::Max, &mut fast);
            pool_naive(&src, range, kernel, Pool::Max, &mut naive);
            for (i, (f, g)) in fast.iter().zip(&naive).enumerate() {
                prop_assert!(f == g || (f.is_nan() && g.is_nan()), "{i}: {f} vs {g}");
            }
        }
    }

    #[test]
    fn pool_stays_inside_range() {
        let src = [9.0, 1.0, 2.0, 3.0, 9.0];
        let mut dst = [0.0; 5];
        pool(&src, 1..4, 3, Pool::Max, &mut dst);
        assert_eq!(dst, [9.0, 2.0, 3.0, 3.0, 9.0]);
        pool(&src, 1..4, 3, Pool::Avg, &mut dst);
        assert_eq!(dst, [9.0, 1.5, 2.0, 2.5, 9.0]);
    }
}
