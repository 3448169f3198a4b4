//! Encoder options and decoder limits.

/// How hard the encoder searches for the smallest coding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Effort {
    /// Choose between raw and rANS (and delta or not) from histograms only; zstd is never
    /// tried. Fastest.
    Fast,
    /// As `Fast`, plus a real zstd trial on every block of at most 4 MiB (level 19 up to
    /// 64 KiB, 9 up to 1 MiB, 3 above), kept only where it is smaller.
    #[default]
    Default,
    /// A zstd trial at level 19 on every block, whatever its size.
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
            Effort::Default if len > 4 << 20 => return None,
            Effort::Default if len <= 64 << 10 => 19,
            Effort::Default if len <= 1 << 20 => 9,
            Effort::Default => 3,
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
