//! The error type of `nq-hadamard`.

use crate::Isa;

/// Errors returned by `nq-hadamard`.
///
/// Every variant names the operation (`op`) that refused the input and the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transform length must be a power of two (1, 2, 4, ...); 0 is refused too.
    #[error("{op}: length {got} is not a power of two (pad to {padded} or split into blocks)")]
    NotPowerOfTwo {
        /// The operation that refused the input.
        op: &'static str,
        /// The length that was given.
        got: usize,
        /// The next power of two, the length a caller can zero-pad to (0 if it overflows).
        padded: usize,
    },
    /// A batch buffer must hold a whole number of rows.
    #[error("{op}: buffer of {got} elements is not a whole number of rows of length {dim}")]
    Len {
        /// The operation that refused the input.
        op: &'static str,
        /// The row length.
        dim: usize,
        /// The buffer length that was given.
        got: usize,
    },
    /// A single row must have exactly the transform's length.
    #[error("{op}: row has {got} elements, the transform has dimension {dim}")]
    RowLen {
        /// The operation that refused the input.
        op: &'static str,
        /// The transform dimension.
        dim: usize,
        /// The row length that was given.
        got: usize,
    },
    /// The requested instruction set is not available on this CPU (or is disabled by
    /// `--cfg nq_force_scalar`).
    #[error("{op}: instruction set {isa:?} is not available on this machine")]
    IsaUnavailable {
        /// The operation that refused the input.
        op: &'static str,
        /// The instruction set that was requested.
        isa: Isa,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that `dim` is a power of two.
pub(crate) fn check_pow2(op: &'static str, dim: usize) -> Result<()> {
    if dim.is_power_of_two() {
        Ok(())
    } else {
        Err(Error::NotPowerOfTwo {
            op,
            got: dim,
            padded: dim.checked_next_power_of_two().unwrap_or(0),
        })
    }
}

/// Checks that `dim` is a power of two and `len` a whole number of rows of `dim`.
pub(crate) fn check_rows(op: &'static str, len: usize, dim: usize) -> Result<()> {
    check_pow2(op, dim)?;
    if len.is_multiple_of(dim) { Ok(()) } else { Err(Error::Len { op, dim, got: len }) }
}
