//! Encoder options and decoder limits.

/// How hard the encoder searches for the smallest coding.
///
/// Whatever the effort, the encoder picks between raw and rANS, delta or not, and the
/// context split of the coordinate tables from exact code lengths of histograms; effort
/// only decides where zstd is tried (compressing for real, kept if smaller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Effort {
    /// zstd is never tried. Fastest.
    Fast,
    /// zstd is tried on every byte block at a level chosen by the block's size (19 up to
    /// 4 KiB, 3 up to 1 MiB, 1 above), and on coordinate symbols only
    /// where a level-1 trial on a 16 KiB sample beats rANS by 10%.
    #[default]
    Default,
    /// zstd level 19 is tried on every block and on every coordinate stream.
    Max,
}

/// Encoder settings shared by every stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EncodeOptions {
    /// Search effort.
    pub effort: Effort,
    /// Overrides the zstd level of every trial (1..=22); `None` picks it per block as
    /// [`Effort`] describes.
    pub zstd_level: Option<i32>,
}

impl EncodeOptions {
    /// zstd level to try on a block of `len` bytes, or `None` for no trial.
    pub(crate) fn zstd_level(&self, len: usize) -> Option<i32> {
        let auto = match self.effort {
            Effort::Fast => return None,
            Effort::Default if len <= 4 << 10 => 19,
            Effort::Default if len <= 1 << 20 => 3,
            Effort::Default => 1,
            Effort::Max => 19,
        };
        Some(self.zstd_level.unwrap_or(auto))
    }
}

/// Bounds on what a decoder will allocate, whatever the input claims.
///
/// Every count read from the input is checked against these before any allocation that
/// depends on it; bytes are read from a [`Read`](std::io::Read) in chunks of at most 1 MiB,
/// so a forged length field costs at most the bytes actually present (plus one chunk).
/// An [`ArchiveReader`](crate::ArchiveReader) also bounds the total its streams decode to by
/// the header's shape ([`Limits::decoded_bytes`]), so a small file whose streams inflate
/// (a decompression bomb) is refused before the memory is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Most elements one stream may decode to (coordinates, codes, f16 values, positions,
    /// bytes). Default `2^30` (4 GiB of `i32` coordinates).
    pub max_stream_elements: u64,
    /// Most bytes one archive section may span on disk. Default `2^34` (16 GiB).
    pub max_section_bytes: u64,
    /// Most bytes of the archive header (the model fingerprint). Default `2^24` (16 MiB).
    pub max_header_bytes: u64,
    /// Most tokens one KV head of one layer may hold; with the header's shape it sets
    /// [`decoded_bytes`](Self::decoded_bytes). Default `2^15` (32768, the longest context of
    /// the models this project runs); raise it for archives of longer caches.
    pub max_tokens: u64,
}

/// Decoded bytes allowed per section beyond the per-token bound: fixed-size data such as a
/// query window (`q_heads * window * head_dim` f32), per-head means and a state record.
pub const SECTION_ALLOWANCE_BYTES: u64 = 4 << 20;

/// Decoded bytes allowed per token of one KV head beyond its keys and values in f16:
/// a position (u32), two scales (f16) and an attention mass (f32) with room to spare.
pub const TOKEN_METADATA_BYTES: u64 = 16;

impl Limits {
    /// Most bytes the streams of an archive with `fingerprint`'s shape may decode to, summed
    /// over the whole archive:
    /// `layers * kv_heads * max_tokens * (4 * head_dim + TOKEN_METADATA_BYTES)` (every token's
    /// key and value in f16, wider than any compressed form, plus its metadata) plus
    /// [`SECTION_ALLOWANCE_BYTES`] for each of the `layers + 1` sections (one per layer and a
    /// state section). Saturates at `u64::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nq_entropy::{Fingerprint, Limits};
    /// let fp = Fingerprint { layers: 30, kv_heads: 3, head_dim: 64, ..Fingerprint::default() };
    /// let limits = Limits { max_tokens: 8192, ..Limits::default() };
    /// let per_token = 4 * 64 + nq_entropy::TOKEN_METADATA_BYTES;
    /// let sections = 31 * nq_entropy::SECTION_ALLOWANCE_BYTES;
    /// assert_eq!(limits.decoded_bytes(&fp), 30 * 3 * 8192 * per_token + sections);
    /// ```
    pub fn decoded_bytes(&self, fingerprint: &crate::Fingerprint) -> u64 {
        let per_token = 4u64
            .saturating_mul(u64::from(fingerprint.head_dim))
            .saturating_add(TOKEN_METADATA_BYTES);
        let tokens = u64::from(fingerprint.layers)
            .saturating_mul(u64::from(fingerprint.kv_heads))
            .saturating_mul(self.max_tokens)
            .saturating_mul(per_token);
        let sections = (u64::from(fingerprint.layers) + 1).saturating_mul(SECTION_ALLOWANCE_BYTES);
        tokens.saturating_add(sections)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stream_elements: 1 << 30,
            max_section_bytes: 1 << 34,
            max_header_bytes: 1 << 24,
            max_tokens: 1 << 15,
        }
    }
}
