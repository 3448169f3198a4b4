//! Integration tests for nq-cuda. Every test skips (with a visible `SKIP:` line on stderr)
//! when no CUDA driver or device is available, and fails instead when `NQ_REQUIRE_GPU` is
//! set (as on the GPU machine, so a run there proves the tests ran).
#![allow(clippy::unwrap_used)]

mod attend;
mod encode;
mod errors;
mod oracle;

use nq_cuda::CudaBackend;

/// The backend on device 0, or `None` (after printing why) when there is none.
pub(crate) fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("NQ_REQUIRE_GPU").is_some() => {
            panic!("NQ_REQUIRE_GPU is set but there is no CUDA device: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: no CUDA device: {e}");
            None
        }
    }
}

// The row-level harness of nq-core: every RowOps primitive against CpuBackend.
nq_core::row_ops_tests!({
    match gpu() {
        Some(b) => b,
        None => return,
    }
});

// The conformance harness of nq-core: the compressed cache on the GPU against the same cache
// on the CPU (storage, attention within a derived bound, eviction bookkeeping).
nq_core::backend_tests!({
    match gpu() {
        Some(b) => b,
        None => return,
    }
});
