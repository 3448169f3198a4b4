//! Per-row scale selection.

use half::f16;

use crate::fixed::{FixedBits, FixedCodec};
use crate::{Error, Result};

/// How the scale of each row is chosen.
///
/// A row `x` of `dim` values is coded as `s * c` with one scale `s` (stored as `f16`) and
/// codewords `c`. Gaussian-like rows (what the randomized Hadamard transform produces) are
/// coded best when `s` follows the row's RMS, not its largest magnitude: the fixed codes
/// are ball-shaped and a max-based scale wastes most of the ball on rare outliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleMode {
    /// `s = max|x_i| / m`, with `m` the code's largest codeword coordinate
    /// ([`FixedBits::max_coordinate`]); for the variable-rate code the lattice grid is
    /// `step * max|x_i|`.
    AbsMax,
    /// `s = k * rms(x)` with a per-code factor `k` measured on Gaussian data
    /// ([`rms_factor`]); for the variable-rate code the lattice grid is `step * rms(x)`.
    Rms,
    /// Fixed-rate codes only: try `candidates` decision scales `k * rms(x) * 2^(δ j)`
    /// spread around the RMS scale (`j` centred on 0, `δ` = [`BEST_OF_SPREAD`]); for each,
    /// encode the row, refit the scale by least squares to the chosen codewords
    /// (`s = <x, c> / <c, c>`), round it to `f16`, and keep the candidate whose rounded
    /// scale gives the smallest squared error. Costs `candidates` encodings per row.
    BestOf {
        /// Number of decision scales tried, 1 to [`MAX_CANDIDATES`].
        candidates: u8,
    },
}

/// Largest `candidates` of [`ScaleMode::BestOf`].
pub const MAX_CANDIDATES: u8 = 16;

/// Spacing, in powers of two, between the decision scales of [`ScaleMode::BestOf`].
pub const BEST_OF_SPREAD: f32 = 0.1;

/// The default candidate count of [`ScaleMode::BestOf`] (see [`ScaleMode::default`]).
pub const DEFAULT_CANDIDATES: u8 = 4;

impl Default for ScaleMode {
    /// `BestOf { candidates: 4 }`, the best measured rule (see the crate docs).
    fn default() -> Self {
        ScaleMode::BestOf { candidates: DEFAULT_CANDIDATES }
    }
}

impl ScaleMode {
    pub(crate) fn validate(self, op: &'static str) -> Result<()> {
        match self {
            ScaleMode::BestOf { candidates } if candidates == 0 || candidates > MAX_CANDIDATES => {
                Err(Error::Param {
                    op,
                    what: "BestOf candidates",
                    value: f64::from(candidates),
                    range: "1..=16",
                })
            }
            _ => Ok(()),
        }
    }
}

/// The RMS factor `k` of each fixed code: the scale `k * σ` that maximizes the SQNR of
/// N(0, σ²) data with one global scale (the best point of a 0.025-step sweep over 2^17
/// blocks: `examples/report.rs`, records `lattice_scale_sweep`; 10.38, 15.27 and 20.73 dB).
#[must_use]
pub fn rms_factor(bits: FixedBits) -> f32 {
    match bits {
        FixedBits::B2 => 0.95,
        FixedBits::B3 => 1.0,
        FixedBits::B4 => 1.125,
    }
}

/// Scales below this are stored as 0 (half the smallest positive `f16`, 2^-24).
const TINY: f32 = 1.0 / 33_554_432.0;

/// Per-row sum of squares (f64) and largest magnitude.
pub(crate) fn row_stats(x: &[f32], dim: usize) -> Vec<(f64, f32)> {
    x.chunks_exact(dim).map(row_stat).collect()
}

/// Sum of squares (f64) and largest magnitude of one row (a multiple of 8 values).
#[inline]
fn row_stat(row: &[f32]) -> (f64, f32) {
    (row_sumsq(row), row_amax(row))
}

/// Sum of squares of one row (a multiple of 8 values): 8 lanes in f32, added in `f64`.
#[inline]
fn row_sumsq(row: &[f32]) -> f64 {
    let mut acc = [0.0f32; 8];
    for blk in row.as_chunks::<8>().0 {
        for i in 0..8 {
            acc[i] += blk[i] * blk[i];
        }
    }
    let mut total = 0.0f64;
    for a in acc {
        total += f64::from(a);
    }
    total
}

/// Largest magnitude of one row (a multiple of 8 values).
#[inline]
fn row_amax(row: &[f32]) -> f32 {
    // One maximum per lane, reduced at the end: one running maximum over the row was
    // a serial chain of 64 compares (the compiler may not reorder float selects).
    let mut amax = [0.0f32; 8];
    for blk in row.as_chunks::<8>().0 {
        for i in 0..8 {
            // Inputs are finite: a plain compare vectorizes (unlike `f32::max`).
            let a = blk[i].abs();
            amax[i] = if a > amax[i] { a } else { amax[i] };
        }
    }
    amax.into_iter().fold(0.0f32, |m, a| if a > m { a } else { m })
}

/// Rows encoded per kernel call by the rules that need no refit: their scales and inverse
/// scales fit on the stack, and the rows are still in L1 when they are encoded.
const RULE_ROWS: usize = 16;

/// The sums, in `f64` and in block order, of one row's per-block `<x/scale, c>` and `|c|²`.
#[inline]
fn row_sums(xc: &[f32], cc: &[f32]) -> (f64, f64) {
    // -0.0, the neutral element `Iterator::sum` starts from.
    let (mut a, mut b) = (-0.0f64, -0.0f64);
    for (&x, &c) in xc.iter().zip(cc) {
        a += f64::from(x);
        b += f64::from(c);
    }
    (a, b)
}

/// Rounds a scale to `f16`; `None` if it overflows.
fn to_f16(s: f32) -> Option<f16> {
    if s < TINY {
        return Some(f16::ZERO);
    }
    let h = f16::from_f32(s);
    h.is_finite().then_some(h)
}

/// Encodes rows with the codec's scale rule (inputs validated by the caller).
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn encode_fixed(
    codec: &FixedCodec,
    x: &[f32],
    dim: usize,
    codes: &mut [u8],
    scales: &mut [f16],
) -> Result<()> {
    const OP: &str = "FixedCodec::encode_rows";
    let bits = codec.bits();
    let kernels = codec.kernels();
    let bpr = dim / 8;
    let row_bytes = bpr * bits.bytes_per_block();
    // Dividing by a power of two is multiplying by its exact inverse (the same bits).
    let inv_dim = 1.0 / dim as f64;
    let rms = |sumsq: f64| {
        let ms = if dim.is_power_of_two() { sumsq * inv_dim } else { sumsq / dim as f64 };
        ms.sqrt() as f32
    };
    let overflow = |row: usize, scale: f32| Error::ScaleOverflow { op: OP, row, scale };
    match codec.scale_mode() {
        mode @ (ScaleMode::AbsMax | ScaleMode::Rms) => {
            // Each row's scale depends on that row alone: RULE_ROWS rows at a time, with
            // no refit sums (empty `xc`, `cc`).
            let mut inv = [0.0f32; RULE_ROWS];
            let chunks = x
                .chunks(RULE_ROWS * dim)
                .zip(codes.chunks_mut(RULE_ROWS * row_bytes))
                .zip(scales.chunks_mut(RULE_ROWS));
            for (c, ((x, codes), scales)) in chunks.enumerate() {
                for (r, (row, s)) in x.chunks_exact(dim).zip(scales.iter_mut()).enumerate() {
                    let target = if mode == ScaleMode::Rms {
                        rms_factor(bits) * rms(row_sumsq(row))
                    } else {
                        row_amax(row) / bits.max_coordinate()
                    };
                    let h = to_f16(target).ok_or_else(|| overflow(c * RULE_ROWS + r, target))?;
                    *s = h;
                    inv[r] = if h.to_f32() > 0.0 { 1.0 / h.to_f32() } else { 0.0 };
                }
                kernels.encode(bits, x, bpr, &inv[..scales.len()], codes, &mut [], &mut []);
            }
        }
        ScaleMode::BestOf { candidates } => {
            let stats = row_stats(x, dim);
            let rows = stats.len();
            let nb = rows * bpr;
            let mut xc = vec![0.0f32; nb];
            let mut cc = vec![0.0f32; nb];
            let n = usize::from(candidates);
            let mut best = vec![f64::INFINITY; rows];
            let mut tmp = vec![0u8; if n > 1 { codes.len() } else { 0 }];
            let mut inv = vec![0.0f32; rows];
            let mut dec = vec![0.0f32; rows];
            for k in 0..n {
                let g = ((k as f32 - (n - 1) as f32 / 2.0) * BEST_OF_SPREAD).exp2();
                for (r, &(sumsq, _)) in stats.iter().enumerate() {
                    let d = rms_factor(bits) * rms(sumsq) * g;
                    (dec[r], inv[r]) = if d < TINY { (0.0, 0.0) } else { (d, 1.0 / d) };
                }
                let out: &mut [u8] = if k == 0 { codes } else { &mut tmp };
                kernels.encode(bits, x, bpr, &inv, out, &mut xc, &mut cc);
                let per_row = xc.chunks_exact(bpr).zip(cc.chunks_exact(bpr)).zip(&stats);
                for (r, ((xc_r, cc_r), &(sumsq, _))) in per_row.enumerate() {
                    let (xc_r, cc_r) = row_sums(xc_r, cc_r);
                    // <x, c> in the units of x.
                    let xc_r = xc_r * f64::from(dec[r]);
                    let fit = if cc_r > 0.0 && xc_r > 0.0 { (xc_r / cc_r) as f32 } else { 0.0 };
                    let h = to_f16(fit).ok_or_else(|| overflow(r, fit))?;
                    let s = f64::from(h.to_f32());
                    let err = sumsq - 2.0 * s * xc_r + s * s * cc_r;
                    if err < best[r] {
                        best[r] = err;
                        scales[r] = h;
                        if k > 0 {
                            let span = r * row_bytes..(r + 1) * row_bytes;
                            codes[span.clone()].copy_from_slice(&tmp[span]);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
