//! Kernel dispatch and the portable scalar kernel.
//!
//! Every public transform is `y = H x` with a diagonal factor folded in at one end:
//! a scalar before the first stage (plain orthonormal FWHT), a vector before the first
//! stage (`H D`), or a vector after the last stage (`D H`). The butterfly stages run in
//! ascending stride (1, 2, 4, ..., n/2) in every kernel, which makes all kernels
//! bit-identical.

use crate::Isa;

/// The diagonal factor of a transform and where it is applied.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Diag<'a> {
    /// `y = H (s x)`: every element times `s` before the first stage.
    Scale(f32),
    /// `y = H (d ∘ x)`: element `i` times `d[i]` before the first stage (`d.len() == dim`).
    Pre(&'a [f32]),
    /// `y = d ∘ (H x)`: element `i` times `d[i]` after the last stage (`d.len() == dim`).
    Post(&'a [f32]),
}

/// The orthonormal scale `1/sqrt(dim)` rounded to f32 (exact when `dim` is a power of 4).
pub(crate) fn ortho_scale(dim: usize) -> f32 {
    ((dim as f64).sqrt().recip()) as f32
}

/// Runs the transform on every row of `data` with the given (available) instruction set.
///
/// Preconditions (checked by the public callers): `dim` is a power of two, `data.len()` is a
/// multiple of `dim`, a vector in `diag` has length `dim`, `isa` is available.
pub(crate) fn run(isa: Isa, data: &mut [f32], dim: usize, diag: Diag<'_>) {
    debug_assert!(dim.is_power_of_two() && data.len().is_multiple_of(dim));
    debug_assert!(match diag {
        Diag::Scale(_) => true,
        Diag::Pre(d) | Diag::Post(d) => d.len() == dim,
    });
    match isa {
        Isa::Scalar => scalar_rows(data, dim, diag),
        Isa::Avx2 => avx2_rows(data, dim, diag),
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_rows(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    crate::simd::rows(data, dim, diag);
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_rows(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    scalar_rows(data, dim, diag);
}

/// Scalar kernel: the diagonal multiply, then radix-2 stages in ascending stride.
pub(crate) fn scalar_rows(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    for row in data.chunks_exact_mut(dim) {
        match diag {
            Diag::Scale(s) => row.iter_mut().for_each(|x| *x *= s),
            Diag::Pre(d) => row.iter_mut().zip(d).for_each(|(x, s)| *x *= s),
            Diag::Post(_) => {}
        }
        let mut h = 1;
        while h < dim {
            for block in row.chunks_exact_mut(2 * h) {
                let (lo, hi) = block.split_at_mut(h);
                for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (u, v) = (*a, *b);
                    *a = u + v;
                    *b = u - v;
                }
            }
            h *= 2;
        }
        if let Diag::Post(d) = diag {
            row.iter_mut().zip(d).for_each(|(x, s)| *x *= s);
        }
    }
}
