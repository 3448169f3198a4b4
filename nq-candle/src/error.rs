//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by `nq-candle`.
///
/// candle's own errors pass through [`Error::Candle`]; at the [`KvCache`](crate::KvCache) seam,
/// whose methods return `candle_core::Result`, this type travels inside
/// `candle_core::Error::Wrapped` (see [`Error::into_candle`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A known model name whose file is not in the model cache.
    #[error(
        "{op}: model `{name}` is not installed at {}; fetch it with `nq fetch {name}` (in a checkout: `cargo xtask fetch-model {name}`)",
        path.display()
    )]
    ModelMissing {
        /// The operation that failed.
        op: &'static str,
        /// The short model name (`smollm2`, `qwen05`, `gemma270m`).
        name: String,
        /// Where the file was looked for.
        path: PathBuf,
    },
    /// Neither a known model name nor a path to an existing `.gguf` file.
    #[error("{op}: `{given}` is neither a known model ({known}) nor an existing .gguf file")]
    UnknownModel {
        /// The operation that failed.
        op: &'static str,
        /// What the caller passed.
        given: String,
        /// The known names, comma separated.
        known: String,
    },
    /// An I/O error while reading a file.
    #[error("{op}: {}: {source}", path.display())]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF file or its header/tensor table is corrupt.
    #[error("{op}: {} is not a readable GGUF file: {reason}", path.display())]
    NotGguf {
        /// The operation that failed.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The GGUF declares an architecture this crate does not implement.
    #[error("{op}: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The operation that failed.
        op: &'static str,
        /// `general.architecture` as found in the file.
        arch: String,
        /// The architectures this crate implements.
        supported: &'static str,
    },
    /// A required metadata key is absent or has the wrong type or value.
    #[error("{op}: metadata `{key}`: {reason}")]
    Metadata {
        /// The operation that failed.
        op: &'static str,
        /// The metadata key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent or has the wrong shape.
    #[error("{op}: tensor `{name}`: {reason}")]
    Tensor {
        /// The operation that failed.
        op: &'static str,
        /// The GGUF tensor name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The positions asked for exceed the context length the model supports.
    #[error("{op}: positions up to {got} exceed the model's context length {max}")]
    ContextTooLong {
        /// The operation that failed.
        op: &'static str,
        /// One past the last position requested.
        got: usize,
        /// The limit (`ModelConfig::max_context`).
        max: usize,
    },
    /// An empty token list where at least one token is needed.
    #[error("{op}: empty input")]
    EmptyInput {
        /// The operation that failed.
        op: &'static str,
    },
    /// A token id outside the vocabulary.
    #[error("{op}: token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The operation that failed.
        op: &'static str,
        /// The offending id.
        token: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Two inputs whose lengths or shapes must agree do not.
    #[error("{op}: shape mismatch: {reason}")]
    Shape {
        /// The operation that failed.
        op: &'static str,
        /// What disagreed.
        reason: String,
    },
    /// The tokenizer could not be built, or failed to encode or decode.
    #[error("{op}: tokenizer: {reason}")]
    Tokenizer {
        /// The operation that failed.
        op: &'static str,
        /// The tokenizer's message.
        reason: String,
    },
    /// A corpus folder that cannot be read or holds no sample.
    #[error("corpus {}: {reason}", path.display())]
    Corpus {
        /// The folder or sample.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A sample with fewer tokens than the evaluation protocol needs.
    #[error(
        "sample {sample}: {tokens} tokens, the protocol needs prefix + continuation = {needed}"
    )]
    SampleTooShort {
        /// `GENRE/NAME`.
        sample: String,
        /// Tokens of the sample (with its document-start token).
        tokens: usize,
        /// `prefix + continuation`.
        needed: usize,
    },
    /// An option given by the caller that is out of range or malformed.
    #[error("{op}: {option} = `{got}`: {reason}")]
    InvalidOption {
        /// The operation that rejected it.
        op: &'static str,
        /// The option, as the command line names it.
        option: &'static str,
        /// The value given.
        got: String,
        /// What a valid value is.
        reason: String,
    },
    /// An archive that cannot be written or read, named by its file.
    #[error("{op} {}: {source}", path.display())]
    Archive {
        /// The operation that failed.
        op: &'static str,
        /// The archive file.
        path: PathBuf,
        /// What nq-core found wrong.
        #[source]
        source: nq_core::Error,
    },
    /// An archive that nq-core reads but that lacks what resuming needs.
    #[error("resume from {}: {reason}", path.display())]
    Resume {
        /// The archive file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// A result file that holds results of another protocol, which this run would replace.
    #[error(
        "{} holds results of another protocol ({existing}); this run is ({wanted}). Pass --overwrite to replace it, or --out DIR to write elsewhere",
        path.display()
    )]
    ResultConflict {
        /// The file.
        path: PathBuf,
        /// The protocol of the results it holds.
        existing: String,
        /// The protocol of this run.
        wanted: String,
    },
    /// Installing a known model failed.
    #[error("fetching model `{name}`: {reason}")]
    Fetch {
        /// The model.
        name: String,
        /// What failed.
        reason: String,
    },
    /// An error of the compressed cache (configuration, shapes, archive contents).
    #[error(transparent)]
    Compression(#[from] nq_core::Error),
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wraps this error into a `candle_core::Error`, for code that must return candle's type
    /// (the [`KvCache`](crate::KvCache) methods).
    ///
    /// # Examples
    /// ```
    /// let e = nq_candle::Error::EmptyInput { op: "forward" }.into_candle();
    /// assert!(e.to_string().contains("empty input"));
    /// ```
    #[must_use]
    pub fn into_candle(self) -> candle_core::Error {
        match self {
            Self::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
