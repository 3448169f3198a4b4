//! The randomized Hadamard transform `H D` with seeded sign flips.

use crate::error::{Error, check_pow2, check_rows};
use crate::kernel::{Diag, ortho_scale, run};
use crate::{Isa, Result};

/// One step of SplitMix64 (Steele, Lea & Flood 2014; Vigna's public-domain `splitmix64.c`).
///
/// `state += 0x9E3779B97F4A7C15`, then the output is `state` mixed by
/// `z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
/// z ^ (z >> 31)` (wrapping arithmetic). Seeded with 0 the first outputs are
/// `0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F`.
///
/// # Examples
/// ```
/// let mut state = 0u64;
/// assert_eq!(nq_hadamard::splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
/// ```
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sign bits of the diagonal `D` for `(dim, seed)`: a `ceil(dim / 64)`-word bit vector.
///
/// **This is a storage format; it never changes.** Word `w` is the `(w + 1)`-th output of
/// [`splitmix64`] started from `state = seed`; bit `b` of word `w` (least significant first)
/// is the sign of coordinate `i = 64 w + b`: `1` means `D[i] = -1.0`, `0` means `D[i] = +1.0`.
/// Bits at `i >= dim` in the last word are cleared to 0. `dim == 0` gives no words.
///
/// # Examples
/// ```
/// let bits = nq_hadamard::sign_bits(8, 0);
/// assert_eq!(bits, vec![0xE220_A839_7B1D_CDAF & 0xFF]); // 0xAF = 0b1010_1111
/// ```
#[must_use]
pub fn sign_bits(dim: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut bits: Vec<u64> = (0..dim.div_ceil(64)).map(|_| splitmix64(&mut state)).collect();
    if let Some(last) = bits.last_mut()
        && !dim.is_multiple_of(64)
    {
        *last &= (1u64 << (dim % 64)) - 1;
    }
    bits
}

/// Randomized Hadamard transform: `forward` is `x <- H D x`, `inverse` is `x <- D H x`.
///
/// `H` is the orthonormal Walsh-Hadamard matrix (see [`fwht`](crate::fwht)) and `D` a diagonal
/// of ±1 signs drawn from `seed` by [`sign_bits`]. `H D` is orthogonal, so its inverse is its
/// transpose `D H` (H is symmetric), and dot products are preserved:
/// `(H D q) . (H D k) = q . k` — attention can run in the rotated space. The random signs
/// make the output coordinates of any fixed vector nearly Gaussian with equal variance, which
/// is what a per-vector scale and the E8 lattice quantizer want (QuIP#, QuaRot).
///
/// The `1/sqrt(n)` scale is folded into the stored diagonal (`signs * 1/sqrt(n)`), applied
/// at the load of the first stage (`forward`) or the store of the last (`inverse`).
///
/// # Examples
/// ```
/// use nq_hadamard::RandomizedHadamard;
/// let rh = RandomizedHadamard::new(64, 7)?;
/// let x: Vec<f32> = (0..64).map(|i| (i as f32).sin()).collect();
/// let mut y = x.clone();
/// rh.forward(&mut y)?;
/// rh.inverse(&mut y)?;
/// let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
/// assert!(err < 1e-5);
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RandomizedHadamard {
    dim: usize,
    seed: u64,
    isa: Isa,
    bits: Vec<u64>,
    signs: Vec<f32>,
    /// `signs[i] * (1/sqrt(dim) as f32)`: exact, since the signs are ±1.
    scaled: Vec<f32>,
}

impl RandomizedHadamard {
    /// The transform of dimension `dim` with signs drawn from `seed`, on [`Isa::detect`].
    ///
    /// # Errors
    /// [`Error::NotPowerOfTwo`] if `dim` is not a power of two (see the crate docs for padding
    /// and [`blocks_for`](crate::blocks_for) for a block-diagonal split).
    ///
    /// # Examples
    /// ```
    /// let rh = nq_hadamard::RandomizedHadamard::new(128, 42)?;
    /// assert_eq!(rh.dim(), 128);
    /// assert!(nq_hadamard::RandomizedHadamard::new(96, 42).is_err());
    /// # Ok::<(), nq_hadamard::Error>(())
    /// ```
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        check_pow2("RandomizedHadamard::new", dim)?;
        let bits = sign_bits(dim, seed);
        let signs: Vec<f32> = (0..dim)
            .map(|i| if (bits[i / 64] >> (i % 64)) & 1 == 1 { -1.0 } else { 1.0 })
            .collect();
        let s = ortho_scale(dim);
        let scaled = signs.iter().map(|&d| d * s).collect();
        Ok(Self { dim, seed, isa: Isa::detect(), bits, signs, scaled })
    }

    /// The same transform running on instruction set `isa` (results are bit-identical).
    ///
    /// # Errors
    /// [`Error::IsaUnavailable`] if `isa` cannot run on this machine.
    ///
    /// # Examples
    /// ```
    /// use nq_hadamard::{Isa, RandomizedHadamard};
    /// let rh = RandomizedHadamard::new(16, 1)?.with_isa(Isa::Scalar)?;
    /// assert_eq!(rh.isa(), Isa::Scalar);
    /// # Ok::<(), nq_hadamard::Error>(())
    /// ```
    pub fn with_isa(mut self, isa: Isa) -> Result<Self> {
        self.isa = isa.check("RandomizedHadamard::with_isa")?;
        Ok(self)
    }

    /// The transform dimension (a power of two).
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The seed the signs were drawn from.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The instruction set the transform runs on.
    #[must_use]
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The diagonal `D` as `dim` values of exactly `+1.0` or `-1.0`.
    #[must_use]
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// The diagonal `D` as bits (`1` = negative), in the layout documented at [`sign_bits`]:
    /// what a GPU kernel needs to reproduce the transform.
    #[must_use]
    pub fn sign_bits(&self) -> &[u64] {
        &self.bits
    }

    /// `x <- H D x` on one row.
    ///
    /// # Errors
    /// [`Error::RowLen`] if `row.len() != self.dim()`.
    pub fn forward(&self, row: &mut [f32]) -> Result<()> {
        self.check_row("RandomizedHadamard::forward", row.len())?;
        run(self.isa, row, self.dim, Diag::Pre(&self.scaled));
        Ok(())
    }

    /// `x <- D H x` on one row: the exact inverse (transpose) of [`forward`](Self::forward).
    ///
    /// # Errors
    /// [`Error::RowLen`] if `row.len() != self.dim()`.
    pub fn inverse(&self, row: &mut [f32]) -> Result<()> {
        self.check_row("RandomizedHadamard::inverse", row.len())?;
        run(self.isa, row, self.dim, Diag::Post(&self.scaled));
        Ok(())
    }

    /// [`forward`](Self::forward) on every row of a row-major `[rows, dim]` buffer.
    ///
    /// # Errors
    /// [`Error::Len`] if `data.len()` is not a multiple of `self.dim()`.
    ///
    /// # Examples
    /// ```
    /// let rh = nq_hadamard::RandomizedHadamard::new(8, 3)?;
    /// let mut rows = vec![1.0f32; 4 * 8];
    /// rh.forward_rows(&mut rows)?;
    /// let mut one = vec![1.0f32; 8];
    /// rh.forward(&mut one)?;
    /// assert!(rows.chunks(8).all(|r| r == one.as_slice()));
    /// # Ok::<(), nq_hadamard::Error>(())
    /// ```
    pub fn forward_rows(&self, data: &mut [f32]) -> Result<()> {
        check_rows("RandomizedHadamard::forward_rows", data.len(), self.dim)?;
        run(self.isa, data, self.dim, Diag::Pre(&self.scaled));
        Ok(())
    }

    /// [`inverse`](Self::inverse) on every row of a row-major `[rows, dim]` buffer.
    ///
    /// # Errors
    /// [`Error::Len`] if `data.len()` is not a multiple of `self.dim()`.
    pub fn inverse_rows(&self, data: &mut [f32]) -> Result<()> {
        check_rows("RandomizedHadamard::inverse_rows", data.len(), self.dim)?;
        run(self.isa, data, self.dim, Diag::Post(&self.scaled));
        Ok(())
    }

    fn check_row(&self, op: &'static str, got: usize) -> Result<()> {
        if got == self.dim { Ok(()) } else { Err(Error::RowLen { op, dim: self.dim, got }) }
    }
}
