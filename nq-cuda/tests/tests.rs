//! Integration tests for nq-cuda. Every test skips (with a visible `SKIP:` line on stderr)
//! when no CUDA driver or device is available, and fails instead when `NQ_REQUIRE_GPU` is
//! set (as on the GPU machine, so a run there proves the tests ran).
#![allow(clippy::unwrap_used)]

mod attend;
mod encode;
mod rows;

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

// The conformance harness of nq-core: the compressed cache on the GPU against the same cache
// on the CPU (storage, attention within a derived bound, eviction bookkeeping).
nq_core::backend_tests!({
    match gpu() {
        Some(b) => b,
        None => return,
    }
});

/// A backend on a stream it did not create (as candle's `CudaDevice::cuda_stream()` would hand
/// over; here a second stream of the same context) passes the same conformance harness.
#[test]
fn a_backend_on_a_shared_stream_conforms() {
    let Some(gpu) = gpu() else { return };
    let stream = gpu.stream().context().new_stream().unwrap();
    let shared = CudaBackend::from_stream(stream);
    if let Err(m) = nq_core::testing::check_backend(&shared) {
        panic!("{}: {}", m.op, m.detail);
    }
}
