//! The error type of `nq-cuda`.

/// Errors returned by `nq-cuda`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The CUDA driver library (`libcuda`) or NVRTC (`libnvrtc`) could not be loaded:
    /// no NVIDIA driver or CUDA toolkit on this machine.
    #[error("{op}: {library} not found (no NVIDIA driver or CUDA toolkit on this machine)")]
    NoLibrary {
        /// The operation.
        op: &'static str,
        /// The library that is missing.
        library: &'static str,
    },
    /// A driver call failed (no device at this ordinal, out of memory, launch failure).
    #[error(transparent)]
    Driver(#[from] cudarc::driver::DriverError),
    /// NVRTC failed to compile a kernel file.
    #[error("NVRTC compile of {file} failed: {source}")]
    Compile {
        /// The kernel file.
        file: &'static str,
        /// The NVRTC error with its log.
        #[source]
        source: cudarc::nvrtc::CompileError,
    },
    /// A shape the kernels do not support.
    #[error("{op}: unsupported shape: {what}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is out of range, with the numbers.
        what: String,
    },
    /// A buffer's length disagrees with the shape it was declared with.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Len {
        /// The operation.
        op: &'static str,
        /// Which buffer.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length the shape implies.
        expected: usize,
    },
    /// A stored scale is negative, NaN or infinite (corrupt input to a decoder).
    #[error("{op}: scale {value} of row {row} is negative or not finite")]
    BadScale {
        /// The operation.
        op: &'static str,
        /// Row index.
        row: usize,
        /// The stored scale, as `f32`.
        value: f32,
    },
    /// From the CPU codec (the host side of `encode`).
    #[error(transparent)]
    Lattice(#[from] nq_lattice::Error),
}

/// `Result` with [`CudaError`].
pub type Result<T, E = CudaError> = std::result::Result<T, E>;
