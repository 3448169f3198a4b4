//! The error type of `nq-evict`.

/// Errors returned by `nq-evict`.
///
/// Every variant names the operation (`op`) that rejected its input and the offending values.
/// All validation happens at the public boundary, before any work is done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer length disagrees with the declared shape.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Len {
        /// Operation that rejected the input.
        op: &'static str,
        /// Which buffer.
        what: &'static str,
        /// Length implied by the shape.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A buffer length is not a whole multiple of its row length.
    #[error("{op}: {what} has {got} elements, not a multiple of {row}")]
    NotMultiple {
        /// Operation that rejected the input.
        op: &'static str,
        /// Which buffer.
        what: &'static str,
        /// Row length the buffer must be a multiple of.
        row: usize,
        /// Length given.
        got: usize,
    },
    /// The head dimension `d` is zero.
    #[error("{op}: head dimension is zero")]
    ZeroDim {
        /// Operation that rejected the input.
        op: &'static str,
    },
    /// A shape has zero layers or zero heads, or its element count overflows `usize`.
    #[error("{op}: invalid shape {layers} layers x {heads} heads x {tokens} tokens")]
    Shape {
        /// Operation that rejected the input.
        op: &'static str,
        /// Layers.
        layers: usize,
        /// Heads per layer.
        heads: usize,
        /// Tokens per head.
        tokens: usize,
    },
    /// More tokens than a `u32` index can address.
    #[error("{op}: {tokens} tokens do not fit u32 indices")]
    TooManyTokens {
        /// Operation that rejected the input.
        op: &'static str,
        /// Tokens given.
        tokens: usize,
    },
    /// The scorer needs observation-window queries and none were given.
    #[error("{op}: no queries given (the scorer needs the observation-window queries)")]
    NoQueries {
        /// Operation that rejected the input.
        op: &'static str,
    },
    /// The scorer needs values and none were given.
    #[error("{op}: no values given (value-norm weighting needs them)")]
    NoValues {
        /// Operation that rejected the input.
        op: &'static str,
    },
    /// A budget fraction is NaN or outside `[0, 1]`.
    #[error("{op}: budget fraction {value} is not in [0, 1]")]
    BadFraction {
        /// Operation that rejected the input.
        op: &'static str,
        /// Fraction given.
        value: f32,
    },
    /// The budget is smaller than the sinks plus the recent window, and the policy's
    /// [`Shortfall`](crate::Shortfall) is `Error`.
    #[error("{op}: budget of {budget} tokens per head is below the {protected} protected tokens")]
    BudgetBelowProtected {
        /// Operation that rejected the input.
        op: &'static str,
        /// Per-head budget in tokens (already clamped to the sequence length).
        budget: usize,
        /// Sinks plus recent window, clamped to the sequence length.
        protected: usize,
    },
    /// A score that a pooled (cross-head) split cannot normalize: negative or infinite.
    ///
    /// Pooled splits turn each head's candidate scores into a distribution by dividing by their
    /// sum, which needs finite non-negative scores (NaN is allowed and ranks lowest).
    #[error("{op}: score {value} at flat index {index} is negative or infinite")]
    BadScore {
        /// Operation that rejected the input.
        op: &'static str,
        /// Flat index into the score buffer.
        index: usize,
        /// The score.
        value: f32,
    },
    /// A configuration value is out of its range.
    #[error("{op}: {what} = {value} is invalid ({expected})")]
    Config {
        /// Operation that rejected the input.
        op: &'static str,
        /// Which setting.
        what: &'static str,
        /// Value given.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
    /// A kept-index list is not strictly increasing or points past the end.
    #[error("{op}: kept index {index} at position {at} is out of order or >= {len}")]
    BadIndex {
        /// Operation that rejected the input.
        op: &'static str,
        /// Position in the kept list.
        at: usize,
        /// The index.
        index: u32,
        /// Number of rows in the source.
        len: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
