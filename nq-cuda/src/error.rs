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
    /// From `nq-core` (a host image of a layer that does not validate).
    #[error(transparent)]
    Core(#[from] nq_core::Error),
    /// A value appended from device memory was NaN or infinite (found by the check before
    /// each compression and export; the rows stay held, so the layer keeps failing them).
    #[error("{op}: value {index} of an append from device memory is not finite")]
    NonFinite {
        /// The operation that found it.
        op: &'static str,
        /// Its index in that append's `[kv_heads, t, d]` keys or values.
        index: u64,
    },
    /// Positions must be strictly ascending and past the last one held.
    #[error("{op}: position {got} does not come after {last}")]
    Position {
        /// The operation.
        op: &'static str,
        /// The offending position.
        got: u32,
        /// The position it must exceed.
        last: u32,
    },
    /// An index or count past what is held.
    #[error("{op}: {what} {got} is out of range (limit {limit})")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// What was indexed or counted.
        what: &'static str,
        /// The offending value.
        got: usize,
        /// The first value out of range.
        limit: usize,
    },
}

/// `Result` with [`CudaError`].
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// `got == expected`, else [`CudaError::Len`] naming the buffer.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<()> {
    if got == expected { Ok(()) } else { Err(CudaError::Len { op, what, got, expected }) }
}

/// A size as a kernel argument of type `T`, else [`CudaError::Unsupported`] with the value.
pub(crate) fn kernel_int<T: TryFrom<usize>>(op: &'static str, v: usize) -> Result<T> {
    T::try_from(v).map_err(|_| CudaError::Unsupported {
        op,
        what: format!("{v} exceeds {}", std::any::type_name::<T>()),
    })
}

/// [`kernel_int`] as `i64`.
pub(crate) fn to_i64(op: &'static str, v: usize) -> Result<i64> {
    kernel_int(op, v)
}

/// [`kernel_int`] as `i32`.
pub(crate) fn to_i32(op: &'static str, v: usize) -> Result<i32> {
    kernel_int(op, v)
}

/// [`kernel_int`] as `u32`.
pub(crate) fn to_u32(op: &'static str, v: usize) -> Result<u32> {
    kernel_int(op, v)
}

/// Whether the CUDA driver library can be used: cudarc's loader panics on the first driver
/// call when it is missing, so [`crate::CudaBackend::new`] asks first. With the
/// `dynamic-linking` feature the library was linked at build time and is there by
/// construction.
pub(crate) fn driver_present() -> bool {
    #[cfg(feature = "dynamic-loading")]
    {
        // SAFETY: only tries to dlopen the driver library; no driver call is made.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }
    #[cfg(not(feature = "dynamic-loading"))]
    {
        true
    }
}

/// Whether NVRTC can be used, as [`driver_present`] for the driver.
pub(crate) fn nvrtc_present() -> bool {
    #[cfg(feature = "dynamic-loading")]
    {
        // SAFETY: only tries to dlopen NVRTC; no NVRTC call is made.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    }
    #[cfg(not(feature = "dynamic-loading"))]
    {
        true
    }
}
