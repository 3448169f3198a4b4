//! Integration tests for nq-cuda. Every test skips (with a visible `SKIP:` line on stderr)
//! when no CUDA driver or device is available.
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
