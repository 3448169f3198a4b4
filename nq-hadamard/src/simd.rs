//! AVX2 + FMA kernel (x86-64), selected at run time.
//!
//! Layout: a row of `dim >= 8` floats is viewed as `dim / 8` vectors of 8 lanes.
//! - Strides 1, 2, 4 run inside each vector: a lane permute and one FMA per stage
//!   (`fma(x, ±1, permuted x)` is exactly `u + v` / `u - v`, rounded once).
//! - Strides 8 .. 4N run across the N vectors of a register block (N <= 16 vectors, up to
//!   128 floats held in registers), with the diagonal factor folded into the load or store.
//! - Rows longer than 128 floats finish with radix-8/4/2 passes over the row (in L1), the
//!   post-diagonal folded into the last pass. Each pass splits its block into R runs of h
//!   vectors so the inner loop has no bounds checks.
//!
//! Stages run in ascending stride as in the scalar kernel, so results are bit-identical.

use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_permute_ps,
    _mm256_permute2f128_ps, _mm256_set1_ps, _mm256_setr_ps, _mm256_storeu_ps, _mm256_sub_ps,
};

use crate::Isa;
use crate::kernel::{Diag, scalar_rows};

/// No diagonal factor at this end.
const NONE: u8 = 0;
/// A broadcast scalar factor.
const SCALE: u8 = 1;
/// A per-element vector factor.
const VEC: u8 = 2;

/// One 8-lane vector of a row.
type V8 = [f32; 8];

/// Runs the AVX2 kernel on every row (falls back to the scalar kernel if AVX2/FMA is
/// missing, which the dispatcher never allows; both give the same bits).
pub(crate) fn rows(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    if !Isa::Avx2.is_available() {
        scalar_rows(data, dim, diag);
        return;
    }
    // SAFETY: the CPU supports AVX2 and FMA (runtime-detected just above), which is the only
    // requirement of the `#[target_feature]` function.
    unsafe { rows_avx2(data, dim, diag) }
}

#[target_feature(enable = "avx2,fma")]
fn rows_avx2(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    match dim {
        8 => small::<1>(data, diag),
        16 => small::<2>(data, diag),
        32 => small::<4>(data, diag),
        64 => small::<8>(data, diag),
        // 16-vector blocks (128 floats in registers) measured faster than 8-vector blocks
        // plus one more radix pass, for every dim >= 128.
        _ if dim >= 128 => large::<16>(data, dim, diag),
        _ => scalar_rows(data, dim, diag),
    }
}

/// Rows of `8 N` floats: one register block per row.
#[target_feature(enable = "avx2,fma")]
fn small<const N: usize>(data: &mut [f32], diag: Diag<'_>) {
    let (vecs, _) = data.as_chunks_mut::<8>();
    let (rows, _) = vecs.as_chunks_mut::<N>();
    let unused = [[0.0f32; 8]; N];
    match diag {
        Diag::Scale(s) => {
            let s = _mm256_set1_ps(s);
            for r in rows {
                block::<N, SCALE, false>(r, &unused, s, &unused);
            }
        }
        Diag::Pre(d) => {
            let Some(d) = as_block::<N>(d) else { return fallback(data, 8 * N, diag) };
            for r in rows {
                block::<N, VEC, false>(r, d, _mm256_set1_ps(1.0), &unused);
            }
        }
        Diag::Post(d) => {
            let Some(d) = as_block::<N>(d) else { return fallback(data, 8 * N, diag) };
            for r in rows {
                block::<N, NONE, true>(r, &unused, _mm256_set1_ps(1.0), d);
            }
        }
    }
}

/// Rows longer than one register block: `8 NB`-float blocks, then radix passes.
#[target_feature(enable = "avx2,fma")]
fn large<const NB: usize>(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    let m = dim / 8;
    let one = _mm256_set1_ps(1.0);
    let unused = [[0.0f32; 8]; NB];
    let (pre, post): (&[V8], &[V8]) = match diag {
        Diag::Scale(_) => (&[], &[]),
        Diag::Pre(d) => (d.as_chunks::<8>().0, &[]),
        Diag::Post(d) => (&[], d.as_chunks::<8>().0),
    };
    if matches!(diag, Diag::Pre(_) | Diag::Post(_)) && pre.len() + post.len() != m {
        return fallback(data, dim, diag);
    }
    for row in data.chunks_exact_mut(dim) {
        let (v, _) = row.as_chunks_mut::<8>();
        let (blocks, _) = v.as_chunks_mut::<NB>();
        match diag {
            Diag::Scale(s) => {
                let s = _mm256_set1_ps(s);
                for b in blocks {
                    block::<NB, SCALE, false>(b, &unused, s, &unused);
                }
            }
            Diag::Pre(_) => {
                for (b, d) in blocks.iter_mut().zip(pre.as_chunks::<NB>().0) {
                    block::<NB, VEC, false>(b, d, one, &unused);
                }
            }
            // A row of exactly one block has no radix pass: the post-factor goes here.
            Diag::Post(_) if m == NB => {
                for (b, d) in blocks.iter_mut().zip(post.as_chunks::<NB>().0) {
                    block::<NB, NONE, true>(b, &unused, one, d);
                }
            }
            Diag::Post(_) => {
                for b in blocks {
                    block::<NB, NONE, false>(b, &unused, one, &unused);
                }
            }
        }
        // Remaining stages: strides 8h for h = NB, 2 NB, ..., m/2 vectors.
        let mut h = NB;
        while h < m {
            let left = (m / h).trailing_zeros();
            let radix = match left {
                1 => 2,
                2 | 4 => 4,
                _ => 8,
            };
            let last = h * radix == m;
            match (radix, last && !post.is_empty()) {
                (2, false) => pass::<2, false>(v, h, post),
                (2, true) => pass::<2, true>(v, h, post),
                (4, false) => pass::<4, false>(v, h, post),
                (4, true) => pass::<4, true>(v, h, post),
                (_, false) => pass::<8, false>(v, h, post),
                (_, true) => pass::<8, true>(v, h, post),
            }
            h *= radix;
        }
    }
}

/// The diagonal as `N` vectors, if it has exactly that length.
fn as_block<const N: usize>(d: &[f32]) -> Option<&[V8; N]> {
    let (v, rest) = d.as_chunks::<8>();
    if rest.is_empty() && v.len() == N { v.first_chunk::<N>() } else { None }
}

/// Unreachable in practice (public callers validate lengths); the scalar kernel gives the
/// same bits, so falling back keeps the result correct without a panic path.
fn fallback(data: &mut [f32], dim: usize, diag: Diag<'_>) {
    scalar_rows(data, dim, diag);
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn load(src: &V8) -> __m256 {
    // SAFETY: `src` is a valid reference to 8 contiguous f32; `loadu` needs no alignment.
    unsafe { _mm256_loadu_ps(src.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn store(dst: &mut V8, x: __m256) {
    // SAFETY: `dst` is a valid, exclusive reference to 8 contiguous f32; `storeu` needs no
    // alignment.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), x) }
}

/// Strides 1, 2, 4 inside one vector.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn h8(x: __m256) -> __m256 {
    let s1 = _mm256_setr_ps(1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0);
    let s2 = _mm256_setr_ps(1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0);
    let s4 = _mm256_setr_ps(1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0);
    // Lane i gets x[i ^ 1]; lower lanes then hold u + v, upper lanes u - v.
    let x = _mm256_fmadd_ps(x, s1, _mm256_permute_ps::<0b10_11_00_01>(x));
    // Lane i gets x[i ^ 2].
    let x = _mm256_fmadd_ps(x, s2, _mm256_permute_ps::<0b01_00_11_10>(x));
    // Lane i gets x[i ^ 4] (swap the 128-bit halves).
    _mm256_fmadd_ps(x, s4, _mm256_permute2f128_ps::<0x01>(x, x))
}

/// Radix-2 butterflies across the `N` registers, strides 1, 2, ..., N/2 in ascending order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn cross<const N: usize>(r: &mut [__m256; N]) {
    let mut h = 1;
    while h < N {
        for k in 0..N {
            if k & h == 0 {
                let (a, b) = (r[k], r[k + h]);
                r[k] = _mm256_add_ps(a, b);
                r[k + h] = _mm256_sub_ps(a, b);
            }
        }
        h *= 2;
    }
}

/// A whole `8 N`-float transform held in registers: optional pre-factor (`PRE`), strides 1..4N
/// (in floats), optional post-factor (`POST`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn block<const N: usize, const PRE: u8, const POST: bool>(
    v: &mut [V8; N],
    pre: &[V8; N],
    scale: __m256,
    post: &[V8; N],
) {
    let mut r = [_mm256_set1_ps(0.0); N];
    for k in 0..N {
        let mut x = load(&v[k]);
        if PRE == SCALE {
            x = _mm256_mul_ps(x, scale);
        } else if PRE == VEC {
            x = _mm256_mul_ps(x, load(&pre[k]));
        }
        r[k] = h8(x);
    }
    cross::<N>(&mut r);
    for k in 0..N {
        let x = if POST { _mm256_mul_ps(r[k], load(&post[k])) } else { r[k] };
        store(&mut v[k], x);
    }
}

/// One radix-`R` pass over a row of vectors: butterflies at vector strides h, 2h, ..,
/// (R/2)h, optionally times the post-factor.
///
/// Kept out of line (one copy per radix and post flag), which keeps the row loop small.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
fn pass<const R: usize, const POST: bool>(v: &mut [V8], h: usize, post: &[V8]) {
    let mut post_blocks = post.chunks_exact(R * h);
    for blk in v.chunks_exact_mut(R * h) {
        // The block as R runs of h vectors; the butterflies pair element j of each run.
        let mut runs = blk.chunks_exact_mut(h);
        let x: [&mut [V8]; R] = std::array::from_fn(|_| runs.next().unwrap_or_default());
        let pb = if POST { post_blocks.next().unwrap_or_default() } else { &[] };
        let mut pruns = pb.chunks_exact(h);
        let p: [&[V8]; R] = std::array::from_fn(|_| pruns.next().unwrap_or_default());
        if x.iter().any(|r| r.len() != h) || (POST && p.iter().any(|r| r.len() != h)) {
            return; // unreachable: `R h` divides the row and the post-factor has its length
        }
        for j in 0..h {
            let mut r = [_mm256_set1_ps(0.0); R];
            for k in 0..R {
                r[k] = load(&x[k][j]);
            }
            cross::<R>(&mut r);
            for k in 0..R {
                let y = if POST { _mm256_mul_ps(r[k], load(&p[k][j])) } else { r[k] };
                store(&mut x[k][j], y);
            }
        }
    }
}
