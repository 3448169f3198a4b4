//! Fixed-rate codes for the resident cache: 2, 3 or 4 bits per value, one `f16` scale per row.

use half::f16;

use crate::isa::Isa;
use crate::lanes::{Lanes, ScaledBlocks};
use crate::scale::{self, ScaleMode};
use crate::{Result, check, e8p, e81b};

/// Bits per value of a [`FixedCodec`].
///
/// | variant | bytes per 8 values | code |
/// |---|---|---|
/// | `B2` | 2 | E8P: 2^16 points of E8 + ¼ in a ball |
/// | `B3` | 3 | E8P + a 256-word E8 residual code at half scale |
/// | `B4` | 4 | E8P + E8P residual at quarter scale |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FixedBits {
    /// 2 bits per value (16-bit index per 8 values).
    #[default]
    B2,
    /// 3 bits per value (24-bit index per 8 values).
    B3,
    /// 4 bits per value (32-bit index per 8 values).
    B4,
}

impl FixedBits {
    /// Bits per value (2, 3 or 4), not counting the per-row scale.
    #[must_use]
    pub fn bits_per_dim(self) -> u32 {
        match self {
            FixedBits::B2 => 2,
            FixedBits::B3 => 3,
            FixedBits::B4 => 4,
        }
    }

    /// Bytes of code per block of 8 values (2, 3 or 4).
    #[must_use]
    pub fn bytes_per_block(self) -> usize {
        self.bits_per_dim() as usize
    }

    /// Largest coordinate magnitude of any codeword (what [`ScaleMode::AbsMax`] maps the
    /// row's largest magnitude to): 2.75 for `B2`, 3.75 for `B3`, 3.4375 for `B4`.
    #[must_use]
    pub fn max_coordinate(self) -> f32 {
        match self {
            FixedBits::B2 => 2.75,
            FixedBits::B3 => 2.75 + 1.0,
            FixedBits::B4 => 2.75 + 2.75 / 4.0,
        }
    }

    /// Encodes one block already divided by its scale: the nearest codeword's code (the
    /// first [`bytes_per_block`](FixedBits::bytes_per_block) bytes; the rest are 0) and
    /// the codeword.
    ///
    /// `B2` finds the exact nearest E8P codeword; `B3`/`B4` then code the residual to it
    /// with the nearest word of the second stage (greedy two-stage search).
    /// `x` should be finite (a NaN gives some valid code, never a panic).
    ///
    /// # Examples
    /// ```
    /// use nq_lattice::FixedBits;
    /// let x = [0.3, -0.2, 1.1, 0.0, -0.7, 0.4, 0.9, -1.6];
    /// let (code, c) = FixedBits::B2.encode_block(&x);
    /// assert_eq!(FixedBits::B2.decode_block(code), c);
    /// ```
    #[must_use]
    pub fn encode_block(self, x: &[f32; 8]) -> ([u8; 4], [f32; 8]) {
        let mut code = [0u8; 4];
        let c = match self {
            FixedBits::B2 => encode_group::<f32, 2>(x, &mut code[..2]),
            FixedBits::B3 => encode_group::<f32, 3>(x, &mut code[..3]),
            FixedBits::B4 => encode_group::<f32, 4>(x, &mut code[..4]),
        };
        (code, c)
    }

    /// The codeword of a block's code (bytes beyond
    /// [`bytes_per_block`](FixedBits::bytes_per_block) are ignored). Every code is valid.
    #[must_use]
    pub fn decode_block(self, code: [u8; 4]) -> [f32; 8] {
        decode_block(self, &code)
    }
}

/// Lane values of `x` as an array (lanes `0..L::N`).
#[inline(always)]
fn lanes_of<L: Lanes>(x: L) -> [f32; MAX_LANES] {
    let mut out = [0.0f32; MAX_LANES];
    x.store(&mut out);
    out
}

/// Most lanes of any [`Lanes`] implementation.
pub(crate) const MAX_LANES: usize = 16;

/// The E8P index of each lane's codeword (from its packed index, `e8p::nearest`'s third).
#[inline(always)]
fn e8p_indices<L: Lanes>(packed: L) -> [u32; MAX_LANES] {
    let mut index = [0u32; MAX_LANES];
    packed.e8p_indices(&mut index);
    index
}

/// Encodes `L::N` blocks at once (lane `l` holds block `l`, already divided by its scale)
/// at `BPB` bytes per block (2, 3, 4: `B2`, `B3`, `B4`): writes the `L::N * BPB` bytes of
/// `codes` and returns the codewords.
///
/// Every rate starts with the nearest E8P codeword `c1` (over both shifts). `B3`/`B4` then
/// code the residual with the nearest second-stage word: `2 (v − c1)` in the 256-word
/// codebook, resp. `4 (v − c1)` in E8P (greedy: the first stage is not revisited).
#[inline(always)]
pub(crate) fn encode_group<L: Lanes, const BPB: usize>(v: &[L; 8], codes: &mut [u8]) -> [L; 8] {
    let codes = &mut codes[..L::N * BPB];
    let (p, up, packed) = e8p::nearest(v);
    let first = e8p_indices(packed);
    let c1 = e8p::codeword(&p, up);
    if BPB == 2 {
        for (out, &f) in codes.chunks_exact_mut(2).zip(&first) {
            #[allow(clippy::cast_possible_truncation)]
            out.copy_from_slice(&(f as u16).to_le_bytes());
        }
        c1
    } else if BPB == 3 {
        let r = residual(v, &c1, 2.0);
        let (w, _, k) = e81b::nearest(&r);
        let k = lanes_of(k);
        // 4-byte stores, each overlapping the next block's first byte (written after it);
        // the last block's 3 bytes alone.
        for b in 0..L::N {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let code = (first[b] | (k[b] as u32) << 16).to_le_bytes();
            if b + 1 < L::N {
                codes[3 * b..3 * b + 4].copy_from_slice(&code);
            } else {
                codes[3 * b..3 * b + 3].copy_from_slice(&code[..3]);
            }
        }
        add_scaled(&c1, &w, 0.5)
    } else {
        let r = residual(v, &c1, 4.0);
        let (p2, up2, packed2) = e8p::nearest(&r);
        let second = e8p_indices(packed2);
        for ((out, &f), &s) in codes.chunks_exact_mut(4).zip(&first).zip(&second) {
            out.copy_from_slice(&(f | s << 16).to_le_bytes());
        }
        add_scaled(&c1, &e8p::codeword(&p2, up2), 0.25)
    }
}

/// The residual `k (v − c1)` of the first stage.
#[inline(always)]
fn residual<L: Lanes>(v: &[L; 8], c1: &[L; 8], k: f32) -> [L; 8] {
    let mut r = *c1;
    for i in 0..8 {
        r[i] = (v[i] - c1[i]) * L::splat(k);
    }
    r
}

/// `c1 + f c2` (exact: dyadic values).
#[inline(always)]
fn add_scaled<L: Lanes>(c1: &[L; 8], c2: &[L; 8], f: f32) -> [L; 8] {
    let mut c = *c1;
    for i in 0..8 {
        c[i] = c1[i] + c2[i] * L::splat(f);
    }
    c
}

/// The codeword (unscaled) of one block's code.
#[inline]
pub(crate) fn decode_block(bits: FixedBits, code: &[u8]) -> [f32; 8] {
    let c1 = e8p::decode(u16::from_le_bytes([code[0], code[1]]));
    match bits {
        FixedBits::B2 => c1,
        FixedBits::B3 => {
            let w = &e81b::WORDS[usize::from(code[2])];
            std::array::from_fn(|i| c1[i] + w[i] * 0.5)
        }
        FixedBits::B4 => {
            let c2 = e8p::decode(u16::from_le_bytes([code[2], code[3]]));
            std::array::from_fn(|i| c1[i] + c2[i] * 0.25)
        }
    }
}

/// Encodes blocks with a decision scale per row: block `b` of `x` belongs to row
/// `(first + b) / blocks_per_row` and is multiplied by `inv[row]` (1 / scale, or 0 for a
/// zero row). Writes the codes and, per block, `<x/scale, c>` and `|c|²` (unless `xc` and
/// `cc` are both empty: a scale rule that does not refit skips them).
///
/// Groups of `L::N` blocks run on `L`; the remaining blocks run on `f32` (same results).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_blocks<L: Lanes>(
    bits: FixedBits,
    x: &[f32],
    first: usize,
    blocks_per_row: usize,
    inv: &[f32],
    codes: &mut [u8],
    xc: &mut [f32],
    cc: &mut [f32],
) {
    match bits {
        FixedBits::B2 => encode_fit::<L, 2>(x, first, blocks_per_row, inv, codes, xc, cc),
        FixedBits::B3 => encode_fit::<L, 3>(x, first, blocks_per_row, inv, codes, xc, cc),
        FixedBits::B4 => encode_fit::<L, 4>(x, first, blocks_per_row, inv, codes, xc, cc),
    }
}

/// [`encode_blocks`] at `BPB` bytes per block. Without the refit sums (empty `xc`, `cc`) the
/// codewords are dead code, which a separate instance drops.
#[inline(always)]
fn encode_fit<L: Lanes, const BPB: usize>(
    x: &[f32],
    first: usize,
    blocks_per_row: usize,
    inv: &[f32],
    codes: &mut [u8],
    xc: &mut [f32],
    cc: &mut [f32],
) {
    if xc.is_empty() && cc.is_empty() {
        encode_rate::<L, BPB, false>(x, first, blocks_per_row, inv, codes, xc, cc);
    } else {
        encode_rate::<L, BPB, true>(x, first, blocks_per_row, inv, codes, xc, cc);
    }
}

/// [`encode_blocks`] at `BPB` bytes per block, with the refit sums if `FIT`.
#[inline(always)]
fn encode_rate<L: Lanes, const BPB: usize, const FIT: bool>(
    x: &[f32],
    first: usize,
    blocks_per_row: usize,
    inv: &[f32],
    codes: &mut [u8],
    xc: &mut [f32],
    cc: &mut [f32],
) {
    let nb = x.len() / 8;
    let full = nb / L::N * L::N;
    let mut blocks = ScaledBlocks::new(inv, first, blocks_per_row);
    let mut b = 0;
    while b < full {
        let v = blocks.next::<L>(&x[8 * b..8 * (b + L::N)]);
        let c = encode_group::<L, BPB>(&v, &mut codes[b * BPB..(b + L::N) * BPB]);
        if FIT {
            let (mut d, mut n) = (L::splat(0.0), L::splat(0.0));
            for i in 0..8 {
                d = d + v[i] * c[i];
                n = n + c[i] * c[i];
            }
            d.store(&mut xc[b..b + L::N]);
            n.store(&mut cc[b..b + L::N]);
        }
        b += L::N;
    }
    if b < nb {
        let (xc, cc) = if FIT { (&mut xc[b..], &mut cc[b..]) } else { (xc, cc) };
        encode_rate::<f32, BPB, FIT>(
            &x[8 * b..],
            first + b,
            blocks_per_row,
            inv,
            &mut codes[b * BPB..],
            xc,
            cc,
        );
    }
}

/// A fixed-rate E8 code: `bits` per value plus one `f16` scale per row.
///
/// Row `n` of `dim` values (a multiple of 8) is stored as `dim / 8` codes of
/// [`bytes_per_block`](FixedCodec::bytes_per_block) bytes and a scale `s_n`; it decodes to
/// `s_n * c` where `c` is the concatenation of the blocks' codewords. Decoding is exact:
/// every codeword coordinate is a multiple of 1/16 below 4 in magnitude and the scale has
/// 11 significant bits, so `s_n * c_i` is an exact `f32` product.
///
/// Codes of one block (little-endian): `B2` the 16-bit E8P index; `B3` the E8P index, then
/// one byte indexing the 256-word residual codebook (decoded at half scale); `B4` two E8P
/// indices, the second decoded at quarter scale. The encoder finds the exact nearest E8P
/// point, then the exact nearest second-stage word to the residual (greedy; see the crate
/// docs for what the search over both first-stage shifts would gain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedCodec {
    bits: FixedBits,
    scale_mode: ScaleMode,
    isa: Isa,
}

impl FixedCodec {
    /// A codec with the given rate and scale rule, on the fastest instruction set here.
    ///
    /// # Errors
    /// [`Error::Param`](crate::Error::Param) if `scale_mode` is `BestOf` with 0 or more than
    /// [`scale::MAX_CANDIDATES`] candidates.
    ///
    /// # Examples
    /// ```
    /// use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
    /// let codec = FixedCodec::new(FixedBits::B2, ScaleMode::default())?;
    /// assert_eq!(codec.bytes_per_block(), 2);
    /// # Ok::<(), nq_lattice::Error>(())
    /// ```
    pub fn new(bits: FixedBits, scale_mode: ScaleMode) -> Result<Self> {
        scale_mode.validate("FixedCodec::new")?;
        Ok(FixedCodec { bits, scale_mode, isa: Isa::detect() })
    }

    /// The same codec on a given instruction set (for tests and benchmarks).
    ///
    /// # Errors
    /// [`Error::Param`](crate::Error::Param) if `isa` is not available on this CPU.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        Ok(FixedCodec { isa: isa.check("FixedCodec::with_isa")?, ..self })
    }

    /// Bits per value.
    #[must_use]
    pub fn bits(&self) -> FixedBits {
        self.bits
    }

    /// The scale rule.
    #[must_use]
    pub fn scale_mode(&self) -> ScaleMode {
        self.scale_mode
    }

    /// The instruction set the codec runs on.
    #[must_use]
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of code per block of 8 values: 2, 3 or 4.
    #[must_use]
    pub fn bytes_per_block(&self) -> usize {
        self.bits.bytes_per_block()
    }

    /// Bytes of code for `rows` rows of `dim` values (scales not included).
    #[must_use]
    pub fn code_len(&self, rows: usize, dim: usize) -> usize {
        rows * (dim / 8) * self.bytes_per_block()
    }

    /// Encodes rows of `dim` values: `x.len() / dim` rows, one scale per row.
    ///
    /// The scale of each row follows the codec's [`ScaleMode`]; it is stored as `f16` and
    /// the codes are chosen for (or refitted to) the rounded scale, so the stored pair
    /// decodes to exactly what the encoder measured. A row of zeros (or whose scale
    /// underflows `f16`) gets scale 0 and decodes to exact zeros.
    ///
    /// # Errors
    /// - [`Error::Dim`](crate::Error::Dim) if `dim` is 0 or not a multiple of 8.
    /// - [`Error::NotMultiple`](crate::Error::NotMultiple) if `x.len()` is not a multiple of `dim`.
    /// - [`Error::Len`](crate::Error::Len) if `codes.len() != rows * dim / 8 * bytes_per_block` or
    ///   `scales.len() != rows`.
    /// - [`Error::NonFinite`](crate::Error::NonFinite) if `x` holds a NaN or an infinity.
    /// - [`Error::ScaleOverflow`](crate::Error::ScaleOverflow) if a row needs a scale above 65504; the contents of
    ///   `codes` and `scales` are then unspecified.
    ///
    /// # Examples
    /// ```
    /// use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
    /// use half::f16;
    /// let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms)?;
    /// let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 16.0).collect();
    /// let mut codes = vec![0u8; codec.code_len(2, 32)];
    /// let mut scales = vec![f16::ZERO; 2];
    /// codec.encode_rows(&x, 32, &mut codes, &mut scales)?;
    /// let mut y = vec![0.0f32; 64];
    /// codec.decode_rows(&codes, &scales, 32, &mut y)?;
    /// let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    /// let sig: f32 = x.iter().map(|a| a * a).sum();
    /// assert!(err < 0.2 * sig);
    /// # Ok::<(), nq_lattice::Error>(())
    /// ```
    pub fn encode_rows(
        &self,
        x: &[f32],
        dim: usize,
        codes: &mut [u8],
        scales: &mut [f16],
    ) -> Result<()> {
        const OP: &str = "FixedCodec::encode_rows";
        let rows = check::rows(OP, x.len(), dim)?;
        check::len(OP, "codes", self.code_len(rows, dim), codes.len())?;
        check::len(OP, "scales", rows, scales.len())?;
        check::finite(OP, "x", x)?;
        scale::encode_fixed(self, x, dim, codes, scales)
    }

    /// Decodes rows: `out[n * dim + i] = scales[n] * c_n[i]`.
    ///
    /// # Errors
    /// - [`Error::Dim`](crate::Error::Dim) if `dim` is 0 or not a multiple of 8.
    /// - [`Error::Len`](crate::Error::Len) if `codes` or `out` do not match `scales.len()` rows of `dim`.
    /// - [`Error::BadScale`](crate::Error::BadScale) if a scale is negative, NaN or infinite.
    pub fn decode_rows(
        &self,
        codes: &[u8],
        scales: &[f16],
        dim: usize,
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "FixedCodec::decode_rows";
        check::dim(OP, dim)?;
        let rows = scales.len();
        check::len(OP, "codes", self.code_len(rows, dim), codes.len())?;
        check::len(OP, "out", rows * dim, out.len())?;
        check::scales(OP, scales)?;
        self.kernels().decode(self.bits, codes, scales, dim, out);
        Ok(())
    }

    /// Fused attention scores: `out[n] = scales[n] * <query, c_n>` for every row `n`,
    /// without materializing the decoded rows. `dim = query.len()`.
    ///
    /// # Errors
    /// - [`Error::Dim`](crate::Error::Dim) if `query.len()` is 0 or not a multiple of 8.
    /// - [`Error::Len`](crate::Error::Len) if `codes` or `out` do not match `scales.len()` rows.
    /// - [`Error::NonFinite`](crate::Error::NonFinite) if `query` holds a NaN or an infinity.
    /// - [`Error::BadScale`](crate::Error::BadScale) if a scale is negative, NaN or infinite.
    pub fn dot_rows(
        &self,
        query: &[f32],
        codes: &[u8],
        scales: &[f16],
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "FixedCodec::dot_rows";
        let dim = query.len();
        check::dim(OP, dim)?;
        let rows = scales.len();
        check::len(OP, "codes", self.code_len(rows, dim), codes.len())?;
        check::len(OP, "out", rows, out.len())?;
        check::finite(OP, "query", query)?;
        check::scales(OP, scales)?;
        self.kernels().dot(self.bits, query, codes, scales, out);
        Ok(())
    }

    /// Fused attention output: `acc += Σ_n weights[n] * scales[n] * c_n`, without
    /// materializing the decoded rows. `dim = acc.len()`, rows = `weights.len()`.
    ///
    /// # Errors
    /// - [`Error::Dim`](crate::Error::Dim) if `acc.len()` is 0 or not a multiple of 8.
    /// - [`Error::Len`](crate::Error::Len) if `scales` or `codes` do not match `weights.len()` rows.
    /// - [`Error::NonFinite`](crate::Error::NonFinite) if `weights` holds a NaN or an infinity.
    /// - [`Error::BadScale`](crate::Error::BadScale) if a scale is negative, NaN or infinite.
    pub fn axpy_rows(
        &self,
        weights: &[f32],
        codes: &[u8],
        scales: &[f16],
        acc: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "FixedCodec::axpy_rows";
        let dim = acc.len();
        check::dim(OP, dim)?;
        let rows = weights.len();
        check::len(OP, "scales", rows, scales.len())?;
        check::len(OP, "codes", self.code_len(rows, dim), codes.len())?;
        check::finite(OP, "weights", weights)?;
        check::scales(OP, scales)?;
        self.kernels().axpy(self.bits, weights, codes, scales, acc);
        Ok(())
    }

    pub(crate) fn kernels(&self) -> &'static dyn Kernels {
        crate::simd::kernels(self.isa)
    }
}

/// The hot loops of the fixed codes, one implementation per instruction set. Inputs are
/// validated by the caller.
pub(crate) trait Kernels: Sync {
    /// See [`encode_blocks`].
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        bits: FixedBits,
        x: &[f32],
        blocks_per_row: usize,
        inv: &[f32],
        codes: &mut [u8],
        xc: &mut [f32],
        cc: &mut [f32],
    );
    /// See [`crate::e8::nearest_blocks`].
    fn nearest(&self, x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]);
    /// Decodes rows.
    fn decode(&self, bits: FixedBits, codes: &[u8], scales: &[f16], dim: usize, out: &mut [f32]);
    /// Fused dot products.
    fn dot(&self, bits: FixedBits, q: &[f32], codes: &[u8], scales: &[f16], out: &mut [f32]);
    /// Fused weighted sum.
    fn axpy(&self, bits: FixedBits, w: &[f32], codes: &[u8], scales: &[f16], acc: &mut [f32]);
}

/// The portable implementation.
pub(crate) struct Scalar;

impl Kernels for Scalar {
    fn encode(
        &self,
        bits: FixedBits,
        x: &[f32],
        blocks_per_row: usize,
        inv: &[f32],
        codes: &mut [u8],
        xc: &mut [f32],
        cc: &mut [f32],
    ) {
        encode_blocks::<f32>(bits, x, 0, blocks_per_row, inv, codes, xc, cc);
    }

    fn nearest(&self, x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]) {
        crate::e8::nearest_blocks::<f32>(x, 0, blocks_per_row, inv, y);
    }

    fn decode(&self, bits: FixedBits, codes: &[u8], scales: &[f16], dim: usize, out: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let row_bytes = dim / 8 * bpb;
        for ((row_codes, s), row) in
            codes.chunks_exact(row_bytes).zip(scales).zip(out.chunks_exact_mut(dim))
        {
            let s = s.to_f32();
            for (code, o) in row_codes.chunks_exact(bpb).zip(row.chunks_exact_mut(8)) {
                let c = decode_block(bits, code);
                for i in 0..8 {
                    o[i] = s * c[i];
                }
            }
        }
    }

    fn dot(&self, bits: FixedBits, q: &[f32], codes: &[u8], scales: &[f16], out: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let row_bytes = q.len() / 8 * bpb;
        for ((row_codes, s), o) in codes.chunks_exact(row_bytes).zip(scales).zip(out.iter_mut()) {
            let mut acc = [0.0f32; 8];
            for (code, qb) in row_codes.chunks_exact(bpb).zip(q.chunks_exact(8)) {
                let c = decode_block(bits, code);
                for i in 0..8 {
                    acc[i] += qb[i] * c[i];
                }
            }
            *o = s.to_f32() * acc.iter().sum::<f32>();
        }
    }

    fn axpy(&self, bits: FixedBits, w: &[f32], codes: &[u8], scales: &[f16], acc: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let row_bytes = acc.len() / 8 * bpb;
        for ((row_codes, s), wn) in codes.chunks_exact(row_bytes).zip(scales).zip(w) {
            let f = wn * s.to_f32();
            if f == 0.0 {
                continue;
            }
            for (code, a) in row_codes.chunks_exact(bpb).zip(acc.chunks_exact_mut(8)) {
                let c = decode_block(bits, code);
                for i in 0..8 {
                    a[i] += f * c[i];
                }
            }
        }
    }
}
