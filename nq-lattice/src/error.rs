//! The error type of `nq-lattice`.

/// Errors returned by `nq-lattice`.
///
/// Every variant names the operation (`op`) that failed and carries the offending values.
/// All checks happen at the public boundary, before any output is written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Row length must be a positive multiple of 8 (one E8 block is 8 values).
    #[error("{op}: row length {dim} is not a positive multiple of 8")]
    Dim {
        /// Operation that failed.
        op: &'static str,
        /// The row length given.
        dim: usize,
    },
    /// The input length is not a whole number of rows.
    #[error("{op}: input has {len} values, not a multiple of the row length {dim}")]
    NotMultiple {
        /// Operation that failed.
        op: &'static str,
        /// Length of the input.
        len: usize,
        /// Row length.
        dim: usize,
    },
    /// A buffer has the wrong length for the shape implied by the other arguments.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Len {
        /// Operation that failed.
        op: &'static str,
        /// Which buffer (`"codes"`, `"scales"`, `"out"`, ...).
        what: &'static str,
        /// Length the shape requires.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// An input value is NaN or infinite.
    #[error("{op}: {what}[{index}] = {value} is not finite")]
    NonFinite {
        /// Operation that failed.
        op: &'static str,
        /// Which buffer (`"x"`, `"query"`, `"weights"`).
        what: &'static str,
        /// Position of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The scale a row needs is larger than the largest finite `f16` (65504).
    #[error("{op}: row {row} needs scale {scale}, above the f16 maximum 65504")]
    ScaleOverflow {
        /// Operation that failed.
        op: &'static str,
        /// Row index.
        row: usize,
        /// The scale that does not fit.
        scale: f32,
    },
    /// A stored scale is negative, NaN or infinite (corrupt input to a decoder).
    #[error("{op}: scale {value} of row {row} is negative or not finite")]
    BadScale {
        /// Operation that failed.
        op: &'static str,
        /// Row index.
        row: usize,
        /// The stored scale, as `f32`.
        value: f32,
    },
    /// A codec parameter is out of its documented range.
    #[error("{op}: {what} = {value} is out of range ({range})")]
    Param {
        /// Operation that failed.
        op: &'static str,
        /// Parameter name.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range, in words.
        range: &'static str,
    },
    /// A lattice coordinate would exceed ±2^21, where `f32` arithmetic stops being exact.
    #[error("{op}: row {row} reaches lattice coordinate {value}, beyond ±2^21 (step too small)")]
    CoordOverflow {
        /// Operation that failed.
        op: &'static str,
        /// Row index.
        row: usize,
        /// The largest scaled magnitude in the row.
        value: f32,
    },
    /// A coset symbol is neither 0 nor 1 (corrupt input to the variable-rate decoder).
    #[error("{op}: coset symbol {value} of vector {index} is not 0 or 1")]
    Coset {
        /// Operation that failed.
        op: &'static str,
        /// Index of the 8-vector.
        index: usize,
        /// The symbol found.
        value: u8,
    },
}

/// `Result` with [`enum@Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
