//! The error type of `nq-entropy`.

/// Errors returned by `nq-entropy`.
///
/// Encoding fails only on caller input that breaks the symbol contract (lengths, coset bits,
/// sizes that do not fit the format). Decoding never panics: every malformed byte sequence maps
/// to one of the variants below, each naming the operation (`op`) and the offending values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two input slices disagree in length.
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Len {
        /// Operation that failed.
        op: &'static str,
        /// Which input.
        what: &'static str,
        /// Length required by the other inputs.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A coset entry is neither 0 nor 1.
    #[error("{op}: coset[{index}] = {value}, must be 0 or 1")]
    CosetNotBinary {
        /// Operation that failed.
        op: &'static str,
        /// Index of the first bad entry.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// A parameter is outside its documented range.
    #[error("{op}: {what} = {got} is outside {min}..={max}")]
    Param {
        /// Operation that failed.
        op: &'static str,
        /// Which parameter.
        what: &'static str,
        /// Value given.
        got: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// The input ended before a field or a block it announces.
    #[error("{op}: truncated input: needed {needed} bytes, {available} available")]
    Truncated {
        /// Operation (and field) that ran out of bytes.
        op: &'static str,
        /// Bytes the field needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// The file does not start with the `.nqkv` magic bytes.
    #[error("open archive: bad magic {found:02x?}, not an .nqkv archive")]
    BadMagic {
        /// The first 8 bytes found.
        found: [u8; 8],
    },
    /// The archive was written by a format version this reader does not know.
    #[error(
        "open archive: format version {found} is not supported (this reader reads 1..={supported})"
    )]
    UnsupportedVersion {
        /// Version found in the file.
        found: u16,
        /// Newest version this reader supports.
        supported: u16,
    },
    /// A stored checksum does not match the bytes it covers (bit rot, a flipped bit, a torn write).
    #[error("{op}: checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// Which part of the file (header, section header, section payload, trailer).
        op: &'static str,
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// A length or count read from the input exceeds a [`Limits`](crate::Limits) bound.
    #[error("{op}: {what} = {requested} exceeds the limit {limit}")]
    Limit {
        /// Operation that failed.
        op: &'static str,
        /// Which quantity.
        what: &'static str,
        /// Value claimed by the input.
        requested: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The archive was written for a different model than the one loading it.
    #[error("fingerprint mismatch on `{field}`: archive has {found}, model has {expected}")]
    FingerprintMismatch {
        /// Name of the first differing field.
        field: &'static str,
        /// Value the caller expected.
        expected: String,
        /// Value stored in the archive.
        found: String,
    },
    /// The bytes are structurally invalid (a bad codec id, an invalid frequency table, a
    /// coder that ends in the wrong state, ...).
    #[error("{op}: corrupt input: {reason} (value {value})")]
    Corrupt {
        /// Operation that failed.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
        /// The offending value.
        value: u64,
    },
    /// The zstd library rejected a frame.
    #[error("{op}: zstd: {source}")]
    Zstd {
        /// Operation that failed.
        op: &'static str,
        /// The library's error.
        source: std::io::Error,
    },
    /// Reading or writing the underlying stream failed.
    #[error("{op}: I/O error: {source}")]
    Io {
        /// Operation that failed.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
