//! Naive O(n²) oracles, straight from the definitions, accumulated in f64.
//!
//! These are the test oracles for the fast kernels (and the baseline the benchmarks compare
//! against). They multiply by the dense Sylvester Hadamard matrix
//! `H[i][j] = (-1)^popcount(i & j) / sqrt(n)`, each entry computed from its definition, so
//! they share no code with the butterflies and need no O(n²) memory.

use crate::error::{Error, check_pow2, check_rows};
use crate::{Result, sign_bits};

/// The orthonormal Hadamard matrix `H[i][j] / sqrt(n)`, row-major, in f64.
///
/// # Errors
/// [`Error::NotPowerOfTwo`] if `n` is not a power of two.
///
/// # Examples
/// ```
/// let h = nq_hadamard::reference::hadamard_matrix(2)?;
/// let s = std::f64::consts::FRAC_1_SQRT_2;
/// assert!((h[3] + s).abs() < 1e-15 && (h[0] - s).abs() < 1e-15);
/// # Ok::<(), nq_hadamard::Error>(())
/// ```
pub fn hadamard_matrix(n: usize) -> Result<Vec<f64>> {
    check_pow2("reference::hadamard_matrix", n)?;
    Ok((0..n * n).map(|k| entry(n, k / n, k % n)).collect())
}

/// `H[i][j] / sqrt(n)` for the `n x n` Sylvester matrix.
fn entry(n: usize, i: usize, j: usize) -> f64 {
    let s = 1.0 / (n as f64).sqrt();
    if (i & j).count_ones().is_multiple_of(2) { s } else { -s }
}

/// `y = H x` for every row, dense f64 product, rounded once to f32.
///
/// # Errors
/// [`Error::NotPowerOfTwo`] / [`Error::Len`] as [`fwht_rows`](crate::fwht_rows).
pub fn fwht_rows(data: &mut [f32], dim: usize) -> Result<()> {
    check_rows("reference::fwht_rows", data.len(), dim)?;
    for row in data.chunks_exact_mut(dim) {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        for (i, out) in row.iter_mut().enumerate() {
            *out = x.iter().enumerate().map(|(j, b)| entry(dim, i, j) * b).sum::<f64>() as f32;
        }
    }
    Ok(())
}

/// [`fwht_rows`] on a single row.
///
/// # Errors
/// [`Error::NotPowerOfTwo`] if `row.len()` is not a power of two.
pub fn fwht(row: &mut [f32]) -> Result<()> {
    let dim = row.len();
    check_pow2("reference::fwht", dim)?;
    fwht_rows(row, dim)
}

/// The ±1 diagonal for `(dim, seed)`, decoded bit by bit from [`sign_bits`].
fn signs(dim: usize, seed: u64) -> Vec<f64> {
    let bits = sign_bits(dim, seed);
    (0..dim).map(|i| if bits[i / 64] & (1 << (i % 64)) != 0 { -1.0 } else { 1.0 }).collect()
}

/// Randomized forward transform `y = H D x` on every row, dense f64 product.
///
/// # Errors
/// [`Error::NotPowerOfTwo`] / [`Error::Len`] as [`fwht_rows`].
pub fn randomized_forward_rows(data: &mut [f32], dim: usize, seed: u64) -> Result<()> {
    randomized("reference::randomized_forward_rows", data, dim, seed, true)
}

/// Randomized inverse transform `y = D H x` on every row, dense f64 product.
///
/// # Errors
/// [`Error::NotPowerOfTwo`] / [`Error::Len`] as [`fwht_rows`].
pub fn randomized_inverse_rows(data: &mut [f32], dim: usize, seed: u64) -> Result<()> {
    randomized("reference::randomized_inverse_rows", data, dim, seed, false)
}

fn randomized(
    op: &'static str,
    data: &mut [f32],
    dim: usize,
    seed: u64,
    forward: bool,
) -> Result<(), Error> {
    check_rows(op, data.len(), dim)?;
    let d = signs(dim, seed);
    for row in data.chunks_exact_mut(dim) {
        // forward: (H D)[i][j] = H[i][j] d[j];  inverse: (D H)[i][j] = d[i] H[i][j].
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        for (i, out) in row.iter_mut().enumerate() {
            let h = |j: usize| entry(dim, i, j);
            let acc: f64 = if forward {
                x.iter().zip(&d).enumerate().map(|(j, (b, s))| h(j) * s * b).sum()
            } else {
                d[i] * x.iter().enumerate().map(|(j, b)| h(j) * b).sum::<f64>()
            };
            *out = acc as f32;
        }
    }
    Ok(())
}
