//! Codec-tagged byte blocks: the unit every stream is built from.
//!
//! A block is one codec byte, then the codec's payload. Its decoded length is never stored:
//! the caller knows it from the stream header and passes it in, which bounds every
//! allocation by a count already checked against [`Limits`](crate::Limits).

use std::io::Read;

use crate::bytes::{Cursor, put_varint};
use crate::rans;
use crate::{EncodeOptions, Error, Result};

/// How a block's bytes are coded (the id is stored in the block's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// A zstd frame.
    Zstd = 1,
    /// Static order-0 rANS (12-bit frequencies, 4-way interleaved); for lattice coordinates,
    /// with one table per coordinate class and context (see [`encode_coords`](crate::encode_coords)).
    Rans = 2,
}

impl Codec {
    pub(crate) fn from_id(id: u8, op: &'static str) -> Result<Self> {
        match id {
            0 => Ok(Self::Raw),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::Rans),
            _ => Err(Error::Corrupt { op, reason: "unknown codec id", value: u64::from(id) }),
        }
    }

    /// Lower-case name (`raw`, `zstd`, `rans`), as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Zstd => "zstd",
            Self::Rans => "rans",
        }
    }
}

/// Writes `data` as a block with the smallest of raw, rANS (estimated exactly from the
/// histogram) and, when `opts` asks for a trial, zstd (measured). Returns the codec used.
pub(crate) fn write_block(out: &mut Vec<u8>, data: &[u8], opts: &EncodeOptions) -> Result<Codec> {
    let raw = data.len() as u64 + 10;
    let hist = rans::histogram(data);
    let (freqs, rans_est) = rans::estimate_bytes(&hist);
    let zstd = match opts.zstd_level(data.len()) {
        Some(level) => try_zstd(data, level)?,
        None => None,
    };
    let zstd_len = zstd.as_ref().map_or(u64::MAX, |z| z.len() as u64 + 10);
    if zstd_len < rans_est && zstd_len < raw {
        out.push(Codec::Zstd as u8);
        let z = zstd.unwrap_or_default();
        put_varint(out, z.len() as u64);
        out.extend_from_slice(&z);
        Ok(Codec::Zstd)
    } else if rans_est < raw {
        out.push(Codec::Rans as u8);
        rans::encode_bytes(data, &freqs, out);
        Ok(Codec::Rans)
    } else {
        out.push(Codec::Raw as u8);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
        Ok(Codec::Raw)
    }
}

/// A zstd frame of `data` at `level`, or `None` for inputs too small to gain from one.
pub(crate) fn try_zstd(data: &[u8], level: i32) -> Result<Option<Vec<u8>>> {
    if data.len() < 32 {
        return Ok(None);
    }
    zstd::bulk::compress(data, level)
        .map(Some)
        .map_err(|source| Error::Zstd { op: "encode block", source })
}

/// What an encoder chose for one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Summary {
    /// Bytes appended to the output.
    pub bytes: usize,
    /// Whether the delta along rows was kept.
    pub delta: bool,
    /// Codec of the stream's largest block (for coordinates: of the symbols).
    pub codec: Codec,
}

/// Reads a block that decodes to exactly `n` bytes. `n` must already be checked against the
/// caller's limits.
pub(crate) fn read_block(cur: &mut Cursor<'_>, n: usize, op: &'static str) -> Result<Vec<u8>> {
    let codec = Codec::from_id(cur.u8(op)?, op)?;
    read_block_with(codec, cur, n, op)
}

/// [`read_block`] after the codec byte.
pub(crate) fn read_block_with(
    codec: Codec,
    cur: &mut Cursor<'_>,
    n: usize,
    op: &'static str,
) -> Result<Vec<u8>> {
    match codec {
        Codec::Raw => {
            let len = cur.varint(op)?;
            if len != n as u64 {
                return Err(Error::Corrupt {
                    op,
                    reason: "raw block length disagrees with its header",
                    value: len,
                });
            }
            Ok(cur.take(len, op)?.to_vec())
        }
        Codec::Zstd => {
            let len = cur.varint(op)?;
            let src = cur.take(len, op)?;
            zstd_decompress(src, n, op)
        }
        Codec::Rans => rans::decode_bytes(cur, n, op),
    }
}

/// Decompresses one zstd frame that must hold exactly `n` bytes. The output grows only as
/// the decoder produces bytes (never beyond `n + 1`), and the decoder's window is capped at
/// 16 MiB, so a forged frame cannot make it allocate more.
pub(crate) fn zstd_decompress(src: &[u8], n: usize, op: &'static str) -> Result<Vec<u8>> {
    let zerr = |source| Error::Zstd { op, source };
    let mut dec = zstd::stream::read::Decoder::with_buffer(src).map_err(zerr)?.single_frame();
    dec.window_log_max(24).map_err(zerr)?;
    let mut out = Vec::with_capacity(n.min(src.len().saturating_mul(64).saturating_add(4096)));
    (&mut dec).take(n as u64 + 1).read_to_end(&mut out).map_err(zerr)?;
    if out.len() != n {
        return Err(Error::Corrupt {
            op,
            reason: "zstd frame decodes to the wrong length",
            value: out.len() as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        // An LCG gives skewed bytes with no repeats for zstd to find.
        let mut x = 12345u32;
        let skewed: Vec<u8> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 24) as u8).leading_zeros() as u8
            })
            .collect();
        let repeats: Vec<u8> = (0..5000u32).map(|i| (i % 97) as u8).collect();
        let tiny = vec![1u8, 2, 3];
        for (data, want) in [(&skewed, Codec::Rans), (&repeats, Codec::Zstd), (&tiny, Codec::Raw)] {
            let mut out = Vec::new();
            let got = write_block(&mut out, data, &EncodeOptions::default()).unwrap();
            assert_eq!(got, want);
            let mut c = Cursor::new(&out);
            assert_eq!(&read_block(&mut c, data.len(), "t").unwrap(), data);
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn zstd_length_mismatch_is_an_error() {
        let z = zstd::bulk::compress(&[7u8; 100], 3).unwrap();
        assert!(zstd_decompress(&z, 100, "t").is_ok());
        assert!(matches!(zstd_decompress(&z, 99, "t"), Err(Error::Corrupt { .. })));
        assert!(matches!(zstd_decompress(&z, 101, "t"), Err(Error::Corrupt { .. })));
    }
}
