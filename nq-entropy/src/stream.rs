//! Named, typed streams: what an archive section is made of.
//!
//! Stream record inside a section payload:
//!
//! ```text
//! name_len varint (<= 65535) | name UTF-8 | kind u8 | body_len varint | body
//! ```

use half::f16;

use crate::bytes::{Cursor, put_varint};
use crate::{
    EncodeOptions, Error, Limits, Result, Summary, decode_bytes, decode_coords, decode_f16,
    decode_fixed_codes, decode_positions, encode_bytes, encode_coords, encode_f16,
    encode_fixed_codes, encode_positions,
};

/// Longest stream name, in bytes.
pub const MAX_NAME_LEN: usize = u16::MAX as usize;

/// What a stream's values are; decides its coding. The discriminant is stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKind {
    /// E8 points from variable-rate quantization: coset bits and `[z0..z6, h]` per vector
    /// ([`encode_coords`]).
    Coords = 1,
    /// Fixed-rate lattice codes, a fixed number of opaque bytes per vector
    /// ([`encode_fixed_codes`]).
    FixedCodes = 2,
    /// One f16 scale per row ([`encode_f16`]).
    Scales = 3,
    /// Kept token positions, ascending ([`encode_positions`]).
    Positions = 4,
    /// Uncompressed f16 values (sink and recent windows) ([`encode_f16`]).
    WindowF16 = 5,
    /// Opaque bytes ([`encode_bytes`]).
    Raw = 6,
}

impl StreamKind {
    /// Bytes one decoded element takes in memory, in eighths of a byte (a coordinate is an
    /// `i32` plus one coset byte per 8 coordinates).
    fn decoded_eighths_per_element(self) -> u64 {
        match self {
            Self::Coords => 33,
            Self::FixedCodes | Self::Raw => 8,
            Self::Scales | Self::WindowF16 => 16,
            Self::Positions => 32,
        }
    }

    fn from_id(id: u8, op: &'static str) -> Result<Self> {
        Ok(match id {
            1 => Self::Coords,
            2 => Self::FixedCodes,
            3 => Self::Scales,
            4 => Self::Positions,
            5 => Self::WindowF16,
            6 => Self::Raw,
            _ => {
                return Err(Error::Corrupt {
                    op,
                    reason: "unknown stream kind",
                    value: u64::from(id),
                });
            }
        })
    }
}

/// Borrowed stream contents, as given to [`ArchiveWriter::write_section`](crate::ArchiveWriter::write_section).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum DataRef<'a> {
    /// See [`StreamKind::Coords`]; `row_vectors` enables the delta trial (0: off).
    Coords {
        /// One coset bit (0 or 1) per vector.
        cosets: &'a [u8],
        /// 8 coordinates per vector.
        coords: &'a [i32],
        /// 8-vectors per row (token), for the delta trial; 0 disables it.
        row_vectors: usize,
    },
    /// See [`StreamKind::FixedCodes`].
    FixedCodes {
        /// `bytes_per_vector` bytes per vector.
        codes: &'a [u8],
        /// Bytes per code, 1..=8.
        bytes_per_vector: usize,
        /// 8-vectors per row (token), for the delta trial; 0 disables it.
        row_vectors: usize,
    },
    /// See [`StreamKind::Scales`]; `row_len` values per row enables the delta trial (0: off).
    Scales {
        /// The scales.
        values: &'a [f16],
        /// Values per row (token), for the delta trial; 0 disables it.
        row_len: usize,
    },
    /// See [`StreamKind::Positions`].
    Positions(&'a [u32]),
    /// See [`StreamKind::WindowF16`].
    WindowF16 {
        /// The values.
        values: &'a [f16],
        /// Values per row (token), for the delta trial; 0 disables it.
        row_len: usize,
    },
    /// See [`StreamKind::Raw`].
    Raw(&'a [u8]),
}

impl DataRef<'_> {
    /// The stream kind.
    pub fn kind(&self) -> StreamKind {
        match self {
            Self::Coords { .. } => StreamKind::Coords,
            Self::FixedCodes { .. } => StreamKind::FixedCodes,
            Self::Scales { .. } => StreamKind::Scales,
            Self::Positions(_) => StreamKind::Positions,
            Self::WindowF16 { .. } => StreamKind::WindowF16,
            Self::Raw(_) => StreamKind::Raw,
        }
    }

    /// Encodes the body of this stream (no name, kind or length) onto `out`.
    ///
    /// # Errors
    ///
    /// As the kind's encoder ([`encode_coords`], [`encode_f16`], ...).
    pub fn encode(&self, opts: &EncodeOptions, out: &mut Vec<u8>) -> Result<Summary> {
        match *self {
            Self::Coords { cosets, coords, row_vectors } => {
                encode_coords(cosets, coords, row_vectors, opts, out)
            }
            Self::FixedCodes { codes, bytes_per_vector, row_vectors } => {
                encode_fixed_codes(codes, bytes_per_vector, row_vectors, opts, out)
            }
            Self::Scales { values, row_len } | Self::WindowF16 { values, row_len } => {
                encode_f16(values, row_len, opts, out)
            }
            Self::Positions(p) => encode_positions(p, opts, out),
            Self::Raw(b) => encode_bytes(b, opts, out),
        }
    }
}

/// A named stream to write: `name` must be unique within its section by convention (the
/// container does not enforce it) and at most [`MAX_NAME_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamRef<'a> {
    /// Name, e.g. `"k.coords"`.
    pub name: &'a str,
    /// Contents.
    pub data: DataRef<'a>,
}

/// Owned stream contents, as read back.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Data {
    /// See [`StreamKind::Coords`].
    Coords {
        /// One coset bit per vector.
        cosets: Vec<u8>,
        /// 8 coordinates per vector.
        coords: Vec<i32>,
    },
    /// See [`StreamKind::FixedCodes`].
    FixedCodes {
        /// The codes.
        codes: Vec<u8>,
        /// Bytes per code.
        bytes_per_vector: usize,
    },
    /// See [`StreamKind::Scales`].
    Scales(Vec<f16>),
    /// See [`StreamKind::Positions`].
    Positions(Vec<u32>),
    /// See [`StreamKind::WindowF16`].
    WindowF16(Vec<f16>),
    /// See [`StreamKind::Raw`].
    Raw(Vec<u8>),
}

impl Data {
    /// The stream kind.
    pub fn kind(&self) -> StreamKind {
        match self {
            Self::Coords { .. } => StreamKind::Coords,
            Self::FixedCodes { .. } => StreamKind::FixedCodes,
            Self::Scales(_) => StreamKind::Scales,
            Self::Positions(_) => StreamKind::Positions,
            Self::WindowF16(_) => StreamKind::WindowF16,
            Self::Raw(_) => StreamKind::Raw,
        }
    }

    /// Decodes a body of `kind`.
    ///
    /// # Errors
    ///
    /// As the kind's decoder ([`decode_coords`], [`decode_f16`], ...).
    pub fn decode(kind: StreamKind, body: &[u8], limits: &Limits) -> Result<Self> {
        Ok(match kind {
            StreamKind::Coords => {
                let (cosets, coords) = decode_coords(body, limits)?;
                Self::Coords { cosets, coords }
            }
            StreamKind::FixedCodes => {
                let (codes, bytes_per_vector) = decode_fixed_codes(body, limits)?;
                Self::FixedCodes { codes, bytes_per_vector }
            }
            StreamKind::Scales => Self::Scales(decode_f16(body, limits)?),
            StreamKind::Positions => Self::Positions(decode_positions(body, limits)?),
            StreamKind::WindowF16 => Self::WindowF16(decode_f16(body, limits)?),
            StreamKind::Raw => Self::Raw(decode_bytes(body, limits)?),
        })
    }

    /// Bytes the decoded contents take in memory.
    pub fn decoded_bytes(&self) -> u64 {
        let n = match self {
            Self::Coords { cosets, coords } => cosets.len() + 4 * coords.len(),
            Self::FixedCodes { codes, .. } => codes.len(),
            Self::Scales(v) | Self::WindowF16(v) => 2 * v.len(),
            Self::Positions(p) => 4 * p.len(),
            Self::Raw(b) => b.len(),
        };
        n as u64
    }

    /// A borrowed view, e.g. to write the stream again.
    pub fn as_ref(&self) -> DataRef<'_> {
        match self {
            Self::Coords { cosets, coords } => DataRef::Coords { cosets, coords, row_vectors: 0 },
            Self::FixedCodes { codes, bytes_per_vector } => {
                DataRef::FixedCodes { codes, bytes_per_vector: *bytes_per_vector, row_vectors: 0 }
            }
            Self::Scales(v) => DataRef::Scales { values: v, row_len: 0 },
            Self::Positions(p) => DataRef::Positions(p),
            Self::WindowF16(v) => DataRef::WindowF16 { values: v, row_len: 0 },
            Self::Raw(b) => DataRef::Raw(b),
        }
    }
}

/// A named stream read back from an archive.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// Name as written.
    pub name: String,
    /// Decoded contents.
    pub data: Data,
}

/// Appends one stream record (name, kind, length-prefixed body).
pub(crate) fn write_stream(
    s: &StreamRef<'_>,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if s.name.len() > MAX_NAME_LEN {
        return Err(Error::Param {
            op: "write stream",
            what: "name length",
            got: s.name.len() as u64,
            min: 0,
            max: MAX_NAME_LEN as u64,
        });
    }
    scratch.clear();
    s.data.encode(opts, scratch)?;
    put_varint(out, s.name.len() as u64);
    out.extend_from_slice(s.name.as_bytes());
    out.push(s.data.kind() as u8);
    put_varint(out, scratch.len() as u64);
    out.extend_from_slice(scratch);
    Ok(())
}

/// What the streams of one archive may still decode to, in bytes
/// ([`Limits::decoded_bytes`] of its header).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeBudget {
    /// The bound for the whole archive.
    pub(crate) limit: u64,
    /// Bytes decoded so far.
    pub(crate) used: u64,
}

/// Reads one stream record, refusing before allocation a stream that would take the
/// archive's decoded bytes past `budget`.
pub(crate) fn read_stream(
    cur: &mut Cursor<'_>,
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<Stream> {
    const OP: &str = "read stream";
    let len = cur.varint_max(MAX_NAME_LEN as u64, OP)?;
    let name = std::str::from_utf8(cur.take(len, OP)?)
        .map_err(|e| Error::Corrupt {
            op: OP,
            reason: "stream name is not UTF-8",
            value: e.valid_up_to() as u64,
        })?
        .to_owned();
    let kind = StreamKind::from_id(cur.u8(OP)?, OP)?;
    let body_len = cur.varint(OP)?;
    let body = cur.take(body_len, OP)?;
    // The decoders check their element count against `max_stream_elements` before they
    // allocate, so the remaining budget is handed to them as that bound.
    let eighths = kind.decoded_eighths_per_element();
    let allowed = budget.limit.saturating_sub(budget.used).saturating_mul(8) / eighths;
    let capped = Limits { max_stream_elements: limits.max_stream_elements.min(allowed), ..*limits };
    let data = match Data::decode(kind, body, &capped) {
        Err(Error::Limit { op, what: "decoded elements", requested, .. })
            if requested > limits.max_stream_elements =>
        {
            return Err(Error::Limit {
                op,
                what: "decoded elements",
                requested,
                limit: limits.max_stream_elements,
            });
        }
        Err(Error::Limit { what: "decoded elements", requested, .. }) => {
            return Err(Error::Limit {
                op: OP,
                what: "decoded bytes of the archive (bound by its header's shape)",
                requested: budget
                    .used
                    .saturating_add(requested.saturating_mul(eighths).div_ceil(8)),
                limit: budget.limit,
            });
        }
        other => other?,
    };
    budget.used = budget.used.saturating_add(data.decoded_bytes());
    Ok(Stream { name, data })
}
