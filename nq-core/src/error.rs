//! The error type of `nq-core`.

/// Errors returned by `nq-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is out of range.
    #[error("invalid configuration: {field} = {value}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its offending value.
        value: String,
    },
    /// A preset name that is not `high`, `balanced`, `max` or `none`.
    #[error("unknown preset `{got}` (expected high, balanced, max or none)")]
    UnknownPreset {
        /// The name given.
        got: String,
    },
    /// A model shape the cache cannot hold.
    #[error("{op}: invalid shape: {what}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What is wrong, with the numbers.
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
    /// A layer index past the model's layers.
    #[error("{op}: layer {layer} out of range (model has {layers})")]
    Layer {
        /// The operation.
        op: &'static str,
        /// The layer asked for.
        layer: usize,
        /// Layers in the model.
        layers: usize,
    },
    /// Positions must increase strictly past every position already in the cache.
    #[error("{op}: position {got} does not follow the last cached position {last}")]
    Position {
        /// The operation.
        op: &'static str,
        /// The offending position.
        got: u32,
        /// The last position held.
        last: u32,
    },
    /// A key or value holds NaN or infinity.
    #[error("{op}: non-finite value {value} at index {index}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// Index of the value in the buffer given.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An archive belongs to another model or preset, or is malformed at the layout level.
    #[error("archive: {0}")]
    Archive(String),
    /// A device backend failed (driver error, out of memory, unsupported configuration).
    #[error("{op}: {source}")]
    Backend {
        /// The backend operation.
        op: &'static str,
        /// The device error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// From the lattice stage.
    #[error(transparent)]
    Lattice(#[from] nq_lattice::Error),
    /// From the Hadamard stage.
    #[error(transparent)]
    Hadamard(#[from] nq_hadamard::Error),
    /// From the RoPE stage.
    #[error(transparent)]
    Rope(#[from] nq_rope::Error),
    /// From the eviction stage.
    #[error(transparent)]
    Evict(#[from] nq_evict::Error),
    /// From the entropy/archive stage.
    #[error(transparent)]
    Entropy(#[from] nq_entropy::Error),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
