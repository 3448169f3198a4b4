//! Variable-rate lattice symbols for the archive (entropy coded by `nq-entropy`).

use half::f16;

use crate::e8::{EXACT_RANGE, from_symbols, to_symbols};
use crate::isa::Isa;
use crate::scale::{ScaleMode, row_stats};
use crate::{Error, Result, check};

/// Smallest accepted `step` (2^-16).
pub const MIN_STEP: f32 = 1.0 / 65536.0;
/// Largest accepted `step` (2^16).
pub const MAX_STEP: f32 = 65536.0;

/// Unbounded E8 quantization at a chosen step, emitted as coset-aware symbols.
///
/// Row `n` (of `dim` values, a multiple of 8) is divided by its grid `g_n = step * m_n`
/// (`m_n` the row's RMS for [`ScaleMode::Rms`], its largest magnitude for
/// [`ScaleMode::AbsMax`]) and every block of 8 is rounded to the nearest E8 point
/// `y = z + c/2` (coset bit `c` in {0, 1}, `z` in D8). The stored scale is the least-squares
/// reconstruction scale of the row, `s_n = <x, y> / (step * <y, y>)` rounded to `f16`;
/// on Gaussian rows of 128 it comes out near `m_n / 1.086` at `step` 1.1 (2.04 bits per
/// value; `m_n / 1.07` at step 1, `m_n / 1.16` at 1.5), which moves every reconstruction
/// toward its cell's centroid: 11.0 dB instead of 10.6 dB at the same rate. Decoding is
/// `x̂ = (step * s_n) * (z + c/2)`, computed in `f32` in that order.
///
/// # Symbol layout (the contract with `nq-entropy`)
/// Per block of 8 values: the coset bit `c` (one `u8`, 0 or 1) in `cosets`, and 8 `i32` in
/// `coords`: `z_0, .., z_6`, then `h = (z_7 − p) / 2` where `p = (z_0 + .. + z_6) mod 2`
/// (Euclidean, so `p` is 0 or 1). For `c = 1`, `z = y − ½`. Decoding recovers
/// `z_7 = 2h + p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariableCodec {
    step: f32,
    scale_mode: ScaleMode,
    isa: Isa,
}

impl VariableCodec {
    /// A codec with lattice step `step` relative to each row's scale.
    ///
    /// At `step = 1` with RMS scales, Gaussian rows cost about 2.1 bits per value (order-0
    /// entropy of the symbols); larger steps cost less.
    ///
    /// # Errors
    /// [`Error::Param`] if `step` is not finite or outside [2^-16, 2^16], or if
    /// `scale_mode` is [`ScaleMode::BestOf`] (a fixed-rate rule: with a free rate, a smaller
    /// scale always lowers the error, so there is nothing to search).
    ///
    /// # Examples
    /// ```
    /// use nq_lattice::{ScaleMode, VariableCodec};
    /// let codec = VariableCodec::new(1.0, ScaleMode::Rms)?;
    /// let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect();
    /// let (mut cosets, mut coords, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    /// codec.encode_rows(&x, 16, &mut cosets, &mut coords, &mut scales)?;
    /// assert_eq!((cosets.len(), coords.len(), scales.len()), (2, 16, 1));
    /// let mut y = vec![0.0f32; 16];
    /// codec.decode_rows(&cosets, &coords, &scales, 16, &mut y)?;
    /// let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    /// assert!(err < 0.1 * x.iter().map(|a| a * a).sum::<f32>());
    /// # Ok::<(), nq_lattice::Error>(())
    /// ```
    pub fn new(step: f32, scale_mode: ScaleMode) -> Result<Self> {
        const OP: &str = "VariableCodec::new";
        if !(step.is_finite() && (MIN_STEP..=MAX_STEP).contains(&step)) {
            return Err(Error::Param {
                op: OP,
                what: "step",
                value: f64::from(step),
                range: "[2^-16, 2^16]",
            });
        }
        if let ScaleMode::BestOf { candidates } = scale_mode {
            return Err(Error::Param {
                op: OP,
                what: "BestOf candidates",
                value: f64::from(candidates),
                range: "none: use ScaleMode::Rms or ScaleMode::AbsMax",
            });
        }
        Ok(VariableCodec { step, scale_mode, isa: Isa::detect() })
    }

    /// The same codec on a given instruction set (for tests and benchmarks).
    ///
    /// # Errors
    /// [`Error::Param`] if `isa` is not available on this CPU.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        Ok(VariableCodec { isa: isa.check("VariableCodec::with_isa")?, ..self })
    }

    /// The instruction set the codec runs on.
    #[must_use]
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The lattice step.
    #[must_use]
    pub fn step(&self) -> f32 {
        self.step
    }

    /// The scale rule.
    #[must_use]
    pub fn scale_mode(&self) -> ScaleMode {
        self.scale_mode
    }

    /// Encodes rows of `dim` values, **appending** `x.len() / 8` coset bits, `x.len()`
    /// coordinates and `x.len() / dim` scales to the three vectors.
    ///
    /// A row of zeros (or whose grid is below 2^-25) gets scale 0 and all-zero symbols.
    ///
    /// # Errors
    /// - [`Error::Dim`] if `dim` is 0 or not a multiple of 8.
    /// - [`Error::NotMultiple`] if `x.len()` is not a multiple of `dim`.
    /// - [`Error::NonFinite`] if `x` holds a NaN or an infinity.
    /// - [`Error::CoordOverflow`] if a row reaches a lattice coordinate beyond ±2^21.
    /// - [`Error::ScaleOverflow`] if a row's scale exceeds 65504.
    ///
    /// On error the three vectors are left as they were.
    pub fn encode_rows(
        &self,
        x: &[f32],
        dim: usize,
        cosets: &mut Vec<u8>,
        coords: &mut Vec<i32>,
        scales: &mut Vec<f16>,
    ) -> Result<()> {
        const OP: &str = "VariableCodec::encode_rows";
        check::rows(OP, x.len(), dim)?;
        check::finite(OP, "x", x)?;
        let stats = row_stats(x, dim);
        cosets.reserve(x.len() / 8);
        coords.reserve(x.len());
        scales.reserve(stats.len());
        self.encode_into(x, dim, &stats, cosets, coords, scales)
    }

    #[allow(clippy::cast_possible_truncation)]
    fn encode_into(
        &self,
        x: &[f32],
        dim: usize,
        stats: &[(f64, f32)],
        cosets: &mut Vec<u8>,
        coords: &mut Vec<i32>,
        scales: &mut Vec<f16>,
    ) -> Result<()> {
        const OP: &str = "VariableCodec::encode_rows";
        let mut inv = vec![0.0f32; stats.len()];
        for (r, &(sumsq, amax)) in stats.iter().enumerate() {
            let m = match self.scale_mode {
                ScaleMode::AbsMax => amax,
                _ => (sumsq / dim as f64).sqrt() as f32,
            };
            let grid = self.step * m;
            if grid >= 1.0 / 33_554_432.0 {
                inv[r] = 1.0 / grid;
                if amax * inv[r] >= EXACT_RANGE {
                    return Err(Error::CoordOverflow { op: OP, row: r, value: amax * inv[r] });
                }
            }
        }
        let mut y = vec![0.0f32; x.len()];
        crate::simd::kernels(self.isa).nearest(x, dim / 8, &inv, &mut y);
        let mut row_scales = Vec::with_capacity(stats.len());
        for (r, (row, yr)) in x.chunks_exact(dim).zip(y.chunks_exact(dim)).enumerate() {
            // 8 f32 lanes per block position (vectorizes), summed in f64.
            let (mut xy8, mut yy8) = ([0.0f32; 8], [0.0f32; 8]);
            for (a, b) in row.chunks_exact(8).zip(yr.chunks_exact(8)) {
                for i in 0..8 {
                    xy8[i] += a[i] * b[i];
                    yy8[i] += b[i] * b[i];
                }
            }
            let xy: f64 = xy8.iter().map(|&v| f64::from(v)).sum();
            let yy: f64 = yy8.iter().map(|&v| f64::from(v)).sum();
            let fit =
                if yy > 0.0 && xy > 0.0 { (xy / (yy * f64::from(self.step))) as f32 } else { 0.0 };
            let h = f16::from_f32(fit);
            if !h.is_finite() {
                return Err(Error::ScaleOverflow { op: OP, row: r, scale: fit });
            }
            row_scales.push(h);
        }
        let (c0, z0) = (cosets.len(), coords.len());
        cosets.resize(c0 + y.len() / 8, 0);
        coords.resize(z0 + y.len(), 0);
        for ((blk, c), z) in
            y.chunks_exact(8).zip(&mut cosets[c0..]).zip(coords[z0..].chunks_exact_mut(8))
        {
            let (cb, zb) = to_symbols(blk.try_into().unwrap_or(&[0.0; 8]));
            *c = cb;
            z.copy_from_slice(&zb);
        }
        scales.extend_from_slice(&row_scales);
        Ok(())
    }

    /// Decodes rows: block `b` of row `n` becomes `(step * scales[n]) * (z + c/2)`.
    ///
    /// Any `i32` coordinates decode to finite values (no overflow is possible within the
    /// accepted step and scale ranges).
    ///
    /// # Errors
    /// - [`Error::Dim`] if `dim` is 0 or not a multiple of 8.
    /// - [`Error::Len`] if `cosets`, `coords` or `out` do not match `scales.len()` rows.
    /// - [`Error::BadScale`] if a scale is negative, NaN or infinite.
    /// - [`Error::Coset`] if a coset symbol is not 0 or 1.
    #[allow(clippy::cast_possible_truncation)]
    pub fn decode_rows(
        &self,
        cosets: &[u8],
        coords: &[i32],
        scales: &[f16],
        dim: usize,
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "VariableCodec::decode_rows";
        check::dim(OP, dim)?;
        let rows = scales.len();
        check::len(OP, "cosets", rows * dim / 8, cosets.len())?;
        check::len(OP, "coords", rows * dim, coords.len())?;
        check::len(OP, "out", rows * dim, out.len())?;
        check::scales(OP, scales)?;
        if let Some(index) = cosets.iter().position(|&c| c > 1) {
            return Err(Error::Coset { op: OP, index, value: cosets[index] });
        }
        let bpr = dim / 8;
        for (b, ((&c, z), o)) in
            cosets.iter().zip(coords.chunks_exact(8)).zip(out.chunks_exact_mut(8)).enumerate()
        {
            let eff = self.step * scales[b / bpr].to_f32();
            let y = from_symbols(c, z.try_into().unwrap_or(&[0; 8]));
            for i in 0..8 {
                o[i] = eff * y[i] as f32;
            }
        }
        Ok(())
    }
}

/// Order-0 entropy of the coset-aware symbols, in bits per value.
///
/// With `n` vectors (`n = min(cosets.len(), coords.len() / 8)`; extra entries are
/// ignored), `H = (H(c) + Σ_{k=0..7} H(s_k)) / 8`, where `H(c)` is the empirical entropy of
/// the `n` coset bits and `H(s_k)` that of the `n` symbols at position `k` of the 8
/// coordinates (`z_0..z_6`, then `h`), each from its own histogram (plug-in estimate,
/// `−Σ p log2 p`). This is what an order-0 coder with one model per position approaches;
/// it does not count the models. 0 for no vectors.
///
/// # Examples
/// ```
/// // Two vectors, coset bits 0 and 1 (1 bit), all coordinates equal (0 bits): 1/8.
/// let h = nq_lattice::empirical_entropy_bits_per_dim(&[0, 1], &[0; 16]);
/// assert_eq!(h, 0.125);
/// ```
#[must_use]
pub fn empirical_entropy_bits_per_dim(cosets: &[u8], coords: &[i32]) -> f64 {
    let n = cosets.len().min(coords.len() / 8);
    if n == 0 {
        return 0.0;
    }
    let mut total = entropy(cosets[..n].iter().map(|&c| i64::from(c)), n);
    for k in 0..8 {
        total += entropy(coords[..8 * n].iter().skip(k).step_by(8).map(|&v| i64::from(v)), n);
    }
    total / 8.0
}

/// Order-0 entropy of the symbols given the coset bit, in bits per value:
/// `(H(c) + Σ_k H(s_k | c)) / 8`, same conventions as [`empirical_entropy_bits_per_dim`].
/// This is what a coder that keeps one model per position and coset approaches.
#[must_use]
pub fn coset_context_entropy_bits_per_dim(cosets: &[u8], coords: &[i32]) -> f64 {
    let n = cosets.len().min(coords.len() / 8);
    if n == 0 {
        return 0.0;
    }
    let h_c = entropy(cosets[..n].iter().map(|&c| i64::from(c)), n);
    let mut total = h_c;
    for k in 0..8 {
        // H(s | c) = H(c, s) − H(c); the pair is packed into one i64.
        let joint = cosets[..n]
            .iter()
            .zip(coords[..8 * n].iter().skip(k).step_by(8))
            .map(|(&c, &v)| (i64::from(v) << 1) | i64::from(c));
        total += entropy(joint, n) - h_c;
    }
    total / 8.0
}

/// Plug-in entropy (bits) of `n` symbols.
#[allow(clippy::cast_precision_loss)]
fn entropy(symbols: impl Iterator<Item = i64>, n: usize) -> f64 {
    let mut v: Vec<i64> = symbols.collect();
    v.sort_unstable();
    let nf = n as f64;
    let mut h = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i + 1;
        while j < v.len() && v[j] == v[i] {
            j += 1;
        }
        let p = (j - i) as f64 / nf;
        h -= p * p.log2();
        i = j;
    }
    h
}
