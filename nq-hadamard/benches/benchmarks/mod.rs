//! One module per op.
pub(crate) mod fwht;
pub(crate) mod randomized;

use std::time::Duration;

use criterion::Criterion;

/// Head dimensions benchmarked (real KV shapes).
pub(crate) const DIMS: [usize; 3] = [64, 128, 256];
/// Rows per iteration for the fast kernels.
pub(crate) const ROWS: usize = 4096;

/// Quick settings: the whole crate's bench finishes in about a minute.
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// `rows * dim` deterministic values in [-1, 1].
pub(crate) fn data(rows: usize, dim: usize) -> Vec<f32> {
    (0..rows * dim).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect()
}
