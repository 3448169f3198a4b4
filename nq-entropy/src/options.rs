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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Most elements one stream may decode to (coordinates, codes, f16 values, positions,
    /// bytes). Default `2^30` (4 GiB of `i32` coordinates).
    pub max_stream_elements: u64,
    /// Most bytes one archive section may span on disk. Default `2^34` (16 GiB).
    pub max_section_bytes: u64,
    /// Most bytes of the archive header (the model fingerprint). Default `2^24` (16 MiB).
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_stream_elements: 1 << 30, max_section_bytes: 1 << 34, max_header_bytes: 1 << 24 }
    }
}
