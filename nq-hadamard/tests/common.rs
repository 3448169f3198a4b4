//! Shared helpers: instruction sets to test, random data, normwise error and tolerance.
use nq_hadamard::Isa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every instruction set that can run on this machine (always includes `Scalar`).
pub(crate) fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2].into_iter().filter(|i| i.is_available()).collect()
}

/// `len` values uniform in [-1, 1) from a seeded generator.
pub(crate) fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Euclidean norm, accumulated in f64.
pub(crate) fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

/// Euclidean norm of `a - b`, accumulated in f64.
pub(crate) fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>().sqrt()
}

/// Normwise error bound of `passes` transforms of length `dim` applied to a vector of norm
/// `norm`: each pass rounds once per butterfly stage (log2 dim stages) plus the scale
/// multiply, a relative normwise error of at most `(log2 dim + 2) u`, `u = ε/2`. We allow the
/// documented backend contract `4 ε max(log2 dim, 1)` per pass, which covers it with margin
/// (and the one f32 rounding of the f64 reference).
pub(crate) fn tol(dim: usize, passes: u32, norm: f64) -> f64 {
    let stages = f64::from(dim.trailing_zeros().max(1));
    f64::from(passes) * 4.0 * f64::from(f32::EPSILON) * stages * norm
}

/// Asserts every row of `got` is within `tol(dim, passes, ‖want row‖)` of `want`.
#[track_caller]
pub(crate) fn assert_rows_close(got: &[f32], want: &[f32], dim: usize, passes: u32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (r, (g, w)) in got.chunks(dim).zip(want.chunks(dim)).enumerate() {
        let (e, t) = (dist(g, w), tol(dim, passes, norm(w)));
        assert!(e <= t, "{what}: dim {dim} row {r}: error {e:e} > bound {t:e}");
    }
}
