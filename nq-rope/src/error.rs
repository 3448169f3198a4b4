//! The error type of `nq-rope`.

/// Errors returned by `nq-rope`.
///
/// Every variant names the operation (`op`) that refused the input and the offending values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `head_dim` must be positive.
    #[error("{op}: head_dim must be positive, got {got}")]
    HeadDim {
        /// The operation that refused the input.
        op: &'static str,
        /// The head dimension that was given.
        got: usize,
    },
    /// `rotary_dim` must be even, at least 2 (4 for dynamic NTK) and at most `head_dim`.
    #[error("{op}: rotary_dim {rotary_dim} must be even, >= {min} and <= head_dim {head_dim}")]
    RotaryDim {
        /// The operation that refused the input.
        op: &'static str,
        /// The rotary dimension that was given.
        rotary_dim: usize,
        /// The smallest allowed rotary dimension for this scaling kind.
        min: usize,
        /// The head dimension.
        head_dim: usize,
    },
    /// A floating-point or integer parameter is out of its domain.
    #[error("{op}: {name} = {value} is invalid, expected {expected}")]
    Param {
        /// The operation that refused the input.
        op: &'static str,
        /// The parameter's name as in the HF config (`rope_theta`, `factor`, ...).
        name: &'static str,
        /// The value that was given.
        value: f64,
        /// The domain, in words.
        expected: &'static str,
    },
    /// A batch buffer must hold exactly one row of `head_dim` per position.
    #[error("{op}: buffer has {got} values, expected {positions} positions x head_dim {head_dim}")]
    Len {
        /// The operation that refused the input.
        op: &'static str,
        /// The buffer length that was given.
        got: usize,
        /// The number of positions that was given.
        positions: usize,
        /// The head dimension.
        head_dim: usize,
    },
    /// A single row must have exactly `head_dim` values.
    #[error("{op}: row has {got} values, head_dim is {head_dim}")]
    RowLen {
        /// The operation that refused the input.
        op: &'static str,
        /// The row length that was given.
        got: usize,
        /// The head dimension.
        head_dim: usize,
    },
    /// Contiguous positions `start .. start + count` do not fit in `u32`.
    #[error("{op}: positions {start} + {count} overflow u32")]
    PositionOverflow {
        /// The operation that refused the input.
        op: &'static str,
        /// The first position.
        start: u32,
        /// The number of rows.
        count: usize,
    },
    /// A mean rotation over no position ([`Rope::apply_mean`](crate::Rope::apply_mean) with
    /// `count == 0`) is undefined.
    #[error("{op}: the mean rotation needs at least one position")]
    NoPositions {
        /// The operation that refused the input.
        op: &'static str,
    },
    /// A [`RopeTable`](crate::RopeTable) must come from a rope with the same `rotary_dim`,
    /// and the buffer must hold a whole number of `table.len()` rows.
    #[error(
        "{op}: table of {entries} positions x {table_pairs} pairs does not fit {got} values \
             (rotary pairs {pairs}, head_dim {head_dim})"
    )]
    Table {
        /// The operation that refused the input.
        op: &'static str,
        /// Positions in the table.
        entries: usize,
        /// Rotary pairs per table entry.
        table_pairs: usize,
        /// Rotary pairs of the rope.
        pairs: usize,
        /// The head dimension.
        head_dim: usize,
        /// The buffer length that was given.
        got: usize,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
