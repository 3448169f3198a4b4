//! The plain orthonormal fast Walsh-Hadamard transform.

use crate::error::{check_pow2, check_rows};
use crate::kernel::{Diag, ortho_scale, run};
use crate::{Isa, Result};

/// Orthonormal fast Walsh-Hadamard transform of one row, in place: `x <- H x / sqrt(n)`.
///
/// `H` is the Sylvester-ordered Hadamard matrix, `H[i][j] = (-1)^popcount(i & j)`, so with the
/// `1/sqrt(n)` scale the transform is orthogonal and symmetric: applying it twice gives back
/// `x` (up to rounding) and it preserves the Euclidean norm. Runs on [`Isa::detect`].
///
/// Rounding: the result is within `(log2(n) + 2) * f32::EPSILON / 2 * ‖x‖₂` (normwise) of the
/// exact transform; tests check the looser contract `4 * ε * max(log2 n, 1) * ‖x‖₂`.
///
/// # Errors
/// [`Error::NotPowerOfTwo`](crate::Error::NotPowerOfTwo) if `row.len()` is not a power of two
/// (zero included).
///
/// # Examples
/// ```
/// let mut x = [1.0f32, 0.0, 0.0, 0.0];
/// nq_hadamard::fwht(&mut x)?;
/// assert_eq!(x, [0.5; 4]); // first column of H_4 / 2
/// nq_hadamard::fwht(&mut x)?;
/// assert_eq!(x, [1.0, 0.0, 0.0, 0.0]); // involution
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
pub fn fwht(row: &mut [f32]) -> Result<()> {
    fwht_with(Isa::detect(), row)
}

/// [`fwht`] on a chosen instruction set (all give bit-identical results).
///
/// # Errors
/// [`Error::NotPowerOfTwo`](crate::Error::NotPowerOfTwo) as [`fwht`];
/// [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if `isa` cannot run here.
///
/// # Examples
/// ```
/// use nq_hadamard::{Isa, fwht_with};
/// let mut x = [1.0f32, 1.0];
/// fwht_with(Isa::Scalar, &mut x)?;
/// assert_eq!(x, [2.0 * std::f32::consts::FRAC_1_SQRT_2, 0.0]);
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
pub fn fwht_with(isa: Isa, row: &mut [f32]) -> Result<()> {
    const OP: &str = "fwht";
    check_pow2(OP, row.len())?;
    let isa = isa.check(OP)?;
    let dim = row.len();
    run(isa, row, dim, Diag::Scale(ortho_scale(dim)));
    Ok(())
}

/// Orthonormal FWHT of every row of a row-major `[rows, dim]` buffer, in place.
///
/// An empty buffer is a valid batch of zero rows. Runs on [`Isa::detect`].
///
/// # Errors
/// [`Error::NotPowerOfTwo`](crate::Error::NotPowerOfTwo) if `dim` is not a power of two;
/// [`Error::Len`](crate::Error::Len) if `data.len()` is not a multiple of `dim`.
///
/// # Examples
/// ```
/// let mut kv = vec![1.0f32; 3 * 8]; // three rows of head_dim 8
/// nq_hadamard::fwht_rows(&mut kv, 8)?;
/// let s = 8f32.sqrt(); // each constant row maps to (sqrt(8), 0, ..., 0)
/// assert!(kv.chunks(8).all(|r| (r[0] - s).abs() <= 4.0 * f32::EPSILON * s && r[1..] == [0.0; 7]));
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
pub fn fwht_rows(data: &mut [f32], dim: usize) -> Result<()> {
    fwht_rows_with(Isa::detect(), data, dim)
}

/// [`fwht_rows`] on a chosen instruction set (all give bit-identical results).
///
/// # Errors
/// As [`fwht_rows`], plus [`Error::IsaUnavailable`](crate::Error::IsaUnavailable) if `isa`
/// cannot run here.
///
/// # Examples
/// ```
/// use nq_hadamard::{Isa, fwht_rows_with};
/// let mut a = vec![0.25f32; 2 * 16];
/// let mut b = a.clone();
/// fwht_rows_with(Isa::Scalar, &mut a, 16)?;
/// fwht_rows_with(Isa::detect(), &mut b, 16)?;
/// assert_eq!(a, b);
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
pub fn fwht_rows_with(isa: Isa, data: &mut [f32], dim: usize) -> Result<()> {
    const OP: &str = "fwht_rows";
    check_rows(OP, data.len(), dim)?;
    let isa = isa.check(OP)?;
    run(isa, data, dim, Diag::Scale(ortho_scale(dim)));
    Ok(())
}
