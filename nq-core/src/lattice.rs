//! The bridge to `nq-lattice`: a fixed-rate codec from a bit count and a scale search width.

use nq_lattice::{FixedBits, FixedCodec, ScaleMode};

use crate::error::{Error, Result};

/// The E8 codec of `bits` per value; `candidates` scales are tried per row (1 = RMS rule).
pub(crate) fn fixed_codec(bits: u8, candidates: u8) -> Result<FixedCodec> {
    let bits = match bits {
        2 => FixedBits::B2,
        3 => FixedBits::B3,
        4 => FixedBits::B4,
        b => return Err(Error::Config { field: "bits", value: b.to_string() }),
    };
    let mode = if candidates <= 1 { ScaleMode::Rms } else { ScaleMode::BestOf { candidates } };
    Ok(FixedCodec::new(bits, mode)?)
}
