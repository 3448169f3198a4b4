//! Byte-plane coding of fixed-width elements: f16 scales and windows, fixed-rate lattice codes,
//! raw bytes; and delta + varint coding of positions.
//!
//! Plane body:
//!
//! ```text
//! flags u8      bit 0 delta along rows
//! width u8      bytes per element, 1..=8
//! n     varint  number of elements
//! row   varint  elements per row (only with the delta flag)
//! width blocks  plane k holds byte k (little-endian) of every element, n bytes each
//! ```
//!
//! With the delta flag each element is replaced, before the split, by its difference to the
//! element one row earlier, as `width`-byte little-endian integers modulo `2^(8 width)`. For
//! f16 values that makes neighbouring scales of similar size cancel in the high byte.

use half::f16;

use crate::block::{read_block, write_block};
use crate::bytes::{Cursor, check_elements, put_varint};
use crate::rans;
use crate::{Codec, EncodeOptions, Error, Limits, Result, Summary};

const F_DELTA: u8 = 1;

/// An element held in the smallest unsigned integer that fits `width` bytes.
trait Elem: Copy + Default {
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
    /// Little-endian bytes `b` (`b.len()` <= the type's size).
    fn load(b: &[u8]) -> Self;
}

macro_rules! elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn to_u64(self) -> u64 {
                u64::from(self)
            }
            #[inline(always)]
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                match <[u8; size_of::<$t>()]>::try_from(b) {
                    Ok(a) => <$t>::from_le_bytes(a),
                    Err(_) => b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)) as $t,
                }
            }
        }
    )*};
}
elem!(u8, u16, u32, u64);

fn mask(width: usize) -> u64 {
    if width >= 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 }
}

/// Splits `data` (`n` elements of `width` bytes) into planes, delta-coded along rows of
/// `row` elements when `row > 0`.
fn split(data: &[u8], width: usize, row: usize) -> Vec<Vec<u8>> {
    match width {
        1 => split_as::<u8>(data, width, row),
        2 => split_as::<u16>(data, width, row),
        3 | 4 => split_as::<u32>(data, width, row),
        _ => split_as::<u64>(data, width, row),
    }
}

fn split_as<E: Elem>(data: &[u8], width: usize, row: usize) -> Vec<Vec<u8>> {
    let m = mask(width);
    let mut vals: Vec<E> = data.chunks_exact(width).map(E::load).collect();
    if row > 0 {
        for i in (row..vals.len()).rev() {
            vals[i] = E::from_u64(vals[i].to_u64().wrapping_sub(vals[i - row].to_u64()) & m);
        }
    }
    (0..width).map(|k| vals.iter().map(|v| (v.to_u64() >> (8 * k)) as u8).collect()).collect()
}

/// Inverse of [`split`].
fn join(planes: &[Vec<u8>], width: usize, n: usize, row: usize) -> Vec<u8> {
    match width {
        1 => join_as::<u8>(planes, width, n, row),
        2 => join_as::<u16>(planes, width, n, row),
        3 | 4 => join_as::<u32>(planes, width, n, row),
        _ => join_as::<u64>(planes, width, n, row),
    }
}

fn join_as<E: Elem>(planes: &[Vec<u8>], width: usize, n: usize, row: usize) -> Vec<u8> {
    let m = mask(width);
    let mut vals = vec![E::default(); n];
    for (k, p) in planes.iter().enumerate() {
        for (v, &b) in vals.iter_mut().zip(p) {
            *v = E::from_u64(v.to_u64() | (u64::from(b) << (8 * k)));
        }
    }
    if row > 0 {
        for i in row..n {
            vals[i] = E::from_u64(vals[i].to_u64().wrapping_add(vals[i - row].to_u64()) & m);
        }
    }
    let mut out = Vec::with_capacity(n * width);
    for v in vals {
        out.extend_from_slice(&v.to_u64().to_le_bytes()[..width]);
    }
    out
}

/// Estimated bytes of a set of planes, each coded raw or with rANS.
fn estimate(planes: &[Vec<u8>]) -> u64 {
    planes
        .iter()
        .map(|p| rans::estimate_bytes(&rans::histogram(p)).1.min(p.len() as u64 + 10))
        .sum()
}

/// Encodes `data` as `width`-byte elements (see the module docs).
fn encode_planes(
    data: &[u8],
    width: usize,
    row: usize,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
    op: &'static str,
) -> Result<Summary> {
    if !(1..=8).contains(&width) {
        return Err(Error::Param {
            op,
            what: "bytes per element",
            got: width as u64,
            min: 1,
            max: 8,
        });
    }
    if !data.len().is_multiple_of(width) {
        return Err(Error::Len {
            op,
            what: "bytes",
            expected: data.len() / width * width + width,
            got: data.len(),
        });
    }
    let n = data.len() / width;
    let start = out.len();
    let mut planes = split(data, width, 0);
    let mut use_delta = false;
    if row > 0 && row < n {
        let d = split(data, width, row);
        if estimate(&d) < estimate(&planes) {
            planes = d;
            use_delta = true;
        }
    }
    out.push(if use_delta { F_DELTA } else { 0 });
    out.push(width as u8);
    put_varint(out, n as u64);
    if use_delta {
        put_varint(out, row as u64);
    }
    let mut codec = Codec::Raw;
    let mut biggest = 0usize;
    for p in &planes {
        let before = out.len();
        let c = write_block(out, p, opts)?;
        if out.len() - before > biggest {
            biggest = out.len() - before;
            codec = c;
        }
    }
    Ok(Summary { bytes: out.len() - start, delta: use_delta, codec })
}

/// Decodes a plane body; returns `(bytes, width)`.
fn decode_planes(input: &[u8], limits: &Limits, op: &'static str) -> Result<(Vec<u8>, usize)> {
    let mut cur = Cursor::new(input);
    let flags = cur.u8(op)?;
    if flags & !F_DELTA != 0 {
        return Err(Error::Corrupt { op, reason: "unknown plane flags", value: u64::from(flags) });
    }
    let width = usize::from(cur.u8(op)?);
    if !(1..=8).contains(&width) {
        return Err(Error::Corrupt {
            op,
            reason: "element width outside 1..=8",
            value: width as u64,
        });
    }
    let n = cur.varint(op)?;
    check_elements(n.saturating_mul(width as u64), limits.max_stream_elements, op)?;
    let n = n as usize;
    let row = if flags & F_DELTA != 0 { cur.varint_max(n as u64, op)? as usize } else { 0 };
    if flags & F_DELTA != 0 && row == 0 {
        return Err(Error::Corrupt { op, reason: "delta stride is zero", value: 0 });
    }
    let mut planes = Vec::with_capacity(width);
    for _ in 0..width {
        planes.push(read_block(&mut cur, n, op)?);
    }
    cur.finish(op)?;
    Ok((join(&planes, width, n, row), width))
}

/// Encodes f16 values (per-row scales, or the uncompressed sink and recent windows) bit-exactly.
///
/// The values are split into a low-byte and a high-byte plane, each coded raw, with rANS or
/// with zstd, whichever measures smallest. `row_len` is the number of values per row
/// (token): when nonzero, the difference to the value one row earlier (of the bit patterns,
/// modulo 2^16) is tried too and kept if smaller. NaN payloads, signed zeros and subnormals
/// are preserved because only bit patterns are coded.
///
/// # Errors
///
/// [`Error::Zstd`] if the zstd library fails.
///
/// # Examples
///
/// ```
/// use half::f16;
/// use nq_entropy::{EncodeOptions, Limits, decode_f16, encode_f16};
/// let scales: Vec<f16> = (0..64).map(|i| f16::from_f32(0.5 + i as f32 / 256.0)).collect();
/// let mut body = Vec::new();
/// encode_f16(&scales, 1, &EncodeOptions::default(), &mut body)?;
/// assert_eq!(decode_f16(&body, &Limits::default())?, scales);
/// # Ok::<(), nq_entropy::Error>(())
/// ```
pub fn encode_f16(
    values: &[f16],
    row_len: usize,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<Summary> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    encode_planes(&bytes, 2, row_len, opts, out, "encode_f16")
}

/// Decodes a body written by [`encode_f16`].
///
/// # Errors
///
/// [`Error::Truncated`] or [`Error::Corrupt`] on malformed input (including a body of another
/// element width), [`Error::Limit`] if it claims more than `limits.max_stream_elements`
/// values, [`Error::Zstd`] if a zstd frame is invalid.
///
/// # Examples
///
/// See [`encode_f16`].
pub fn decode_f16(input: &[u8], limits: &Limits) -> Result<Vec<f16>> {
    const OP: &str = "decode_f16";
    let (bytes, width) = decode_planes(input, limits, OP)?;
    if width != 2 {
        return Err(Error::Corrupt {
            op: OP,
            reason: "element width is not 2",
            value: width as u64,
        });
    }
    Ok(bytes.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect())
}

/// Encodes fixed-rate lattice codes: `bytes_per_vector` (1..=8, in practice 2, 3 or 4) opaque
/// bytes per 8-vector.
///
/// Each byte position gets its own plane (for the E8P codebook: the pattern byte, which is
/// far from uniform, apart from the sign byte). `row_vectors` (vectors per row) enables the
/// trial of a delta along rows, as in [`encode_f16`].
///
/// # Errors
///
/// [`Error::Param`] if `bytes_per_vector` is 0 or above 8, [`Error::Len`] if `codes.len()` is
/// not a multiple of it, [`Error::Zstd`] if the zstd library fails.
///
/// # Examples
///
/// ```
/// use nq_entropy::{EncodeOptions, Limits, decode_fixed_codes, encode_fixed_codes};
/// let codes: Vec<u8> = (0..200u32).map(|i| (i * 37 % 11) as u8).collect();
/// let mut body = Vec::new();
/// encode_fixed_codes(&codes, 2, 0, &EncodeOptions::default(), &mut body)?;
/// assert_eq!(decode_fixed_codes(&body, &Limits::default())?, (codes, 2));
/// # Ok::<(), nq_entropy::Error>(())
/// ```
pub fn encode_fixed_codes(
    codes: &[u8],
    bytes_per_vector: usize,
    row_vectors: usize,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<Summary> {
    encode_planes(codes, bytes_per_vector, row_vectors, opts, out, "encode_fixed_codes")
}

/// Decodes a body written by [`encode_fixed_codes`]; returns `(codes, bytes_per_vector)`.
///
/// # Errors
///
/// As [`decode_f16`].
///
/// # Examples
///
/// See [`encode_fixed_codes`].
pub fn decode_fixed_codes(input: &[u8], limits: &Limits) -> Result<(Vec<u8>, usize)> {
    decode_planes(input, limits, "decode_fixed_codes")
}

/// Encodes opaque bytes as one block (raw, rANS or zstd, whichever measures smallest).
///
/// # Errors
///
/// [`Error::Zstd`] if the zstd library fails.
///
/// # Examples
///
/// ```
/// use nq_entropy::{EncodeOptions, Limits, decode_bytes, encode_bytes};
/// let mut body = Vec::new();
/// encode_bytes(b"metadata", &EncodeOptions::default(), &mut body)?;
/// assert_eq!(decode_bytes(&body, &Limits::default())?, b"metadata");
/// # Ok::<(), nq_entropy::Error>(())
/// ```
pub fn encode_bytes(data: &[u8], opts: &EncodeOptions, out: &mut Vec<u8>) -> Result<Summary> {
    encode_planes(data, 1, 0, opts, out, "encode_bytes")
}

/// Decodes a body written by [`encode_bytes`].
///
/// # Errors
///
/// As [`decode_f16`].
///
/// # Examples
///
/// See [`encode_bytes`].
pub fn decode_bytes(input: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    const OP: &str = "decode_bytes";
    let (bytes, width) = decode_planes(input, limits, OP)?;
    if width != 1 {
        return Err(Error::Corrupt {
            op: OP,
            reason: "element width is not 1",
            value: width as u64,
        });
    }
    Ok(bytes)
}

/// Encodes token positions: each the wrapping difference to its predecessor (the first to
/// 0) as a LEB128 varint, the varint bytes then coded as one block.
///
/// Positions kept after eviction are sorted ascending per (layer, head), so differences are
/// small; any `u32` sequence round-trips.
///
/// Body: `n varint | varint-bytes length varint | block`.
///
/// # Errors
///
/// [`Error::Zstd`] if the zstd library fails.
///
/// # Examples
///
/// ```
/// use nq_entropy::{EncodeOptions, Limits, decode_positions, encode_positions};
/// let kept = [0u32, 1, 2, 3, 17, 40, 41, 1000, 1001, 1002];
/// let mut body = Vec::new();
/// encode_positions(&kept, &EncodeOptions::default(), &mut body)?;
/// assert_eq!(decode_positions(&body, &Limits::default())?, kept);
/// # Ok::<(), nq_entropy::Error>(())
/// ```
pub fn encode_positions(
    positions: &[u32],
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<Summary> {
    let start = out.len();
    let mut v = Vec::with_capacity(positions.len() + 8);
    let mut prev = 0u32;
    for &p in positions {
        put_varint(&mut v, u64::from(p.wrapping_sub(prev)));
        prev = p;
    }
    put_varint(out, positions.len() as u64);
    put_varint(out, v.len() as u64);
    let codec = write_block(out, &v, opts)?;
    Ok(Summary { bytes: out.len() - start, delta: true, codec })
}

/// Decodes a body written by [`encode_positions`].
///
/// # Errors
///
/// As [`decode_f16`].
///
/// # Examples
///
/// See [`encode_positions`].
pub fn decode_positions(input: &[u8], limits: &Limits) -> Result<Vec<u32>> {
    const OP: &str = "decode_positions";
    let mut cur = Cursor::new(input);
    let n = check_elements(cur.varint(OP)?, limits.max_stream_elements, OP)?;
    let vlen = cur.varint_max(5 * n as u64, OP)? as usize;
    let v = read_block(&mut cur, vlen, OP)?;
    cur.finish(OP)?;
    let mut vc = Cursor::new(&v);
    let mut out = Vec::with_capacity(n.min(vlen));
    let mut prev = 0u32;
    for _ in 0..n {
        let d = vc.varint_max(u64::from(u32::MAX), OP)? as u32;
        prev = prev.wrapping_add(d);
        out.push(prev);
    }
    vc.finish(OP)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_join_invert_for_every_width_and_row() {
        let data: Vec<u8> = (0..240u32).map(|i| (i * 97 % 251) as u8).collect();
        for width in 1..=8usize {
            let n = data.len() / width;
            let d = &data[..n * width];
            for row in [0usize, 1, 3, n] {
                let planes = split(d, width, row);
                assert_eq!(join(&planes, width, n, row), d, "width {width} row {row}");
            }
        }
    }
}
