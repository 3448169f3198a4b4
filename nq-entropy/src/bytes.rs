//! Little-endian primitives, LEB128 varints and a bounds-checked slice cursor.

use crate::{Error, Result};

/// Appends `v` as an unsigned LEB128 varint (7 bits per byte, low group first).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps a signed value to an unsigned one so small magnitudes get small codes.
pub(crate) fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

/// A cursor over an in-memory byte slice; every read is bounds-checked and fails with
/// [`Error::Truncated`] naming `op`.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Consumes `n` bytes.
    pub(crate) fn take(&mut self, n: u64, op: &'static str) -> Result<&'a [u8]> {
        let avail = self.remaining();
        if n > avail as u64 {
            return Err(Error::Truncated { op, needed: n, available: avail as u64 });
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Consumes `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, op: &'static str) -> Result<[u8; N]> {
        let s = self.take(N as u64, op)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, op: &'static str) -> Result<u8> {
        Ok(self.array::<1>(op)?[0])
    }

    pub(crate) fn u32(&mut self, op: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(op)?))
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes that fits in `u64`.
    pub(crate) fn varint(&mut self, op: &'static str) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(op)?;
            let chunk = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(Error::Corrupt { op, reason: "varint overflows 64 bits", value: 0 });
            }
            v |= chunk << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Corrupt { op, reason: "varint longer than 10 bytes", value: v })
    }

    /// Reads a varint that must not exceed `max` (so it fits `usize` and the caller's bound).
    pub(crate) fn varint_max(&mut self, max: u64, op: &'static str) -> Result<u64> {
        let v = self.varint(op)?;
        if v > max {
            return Err(Error::Corrupt { op, reason: "value exceeds its bound", value: v });
        }
        Ok(v)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self, op: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            r => Err(Error::Corrupt { op, reason: "trailing bytes", value: r as u64 }),
        }
    }
}

/// Checks a decoded element count against [`Limits::max_stream_elements`](crate::Limits).
pub(crate) fn check_elements(n: u64, limit: u64, op: &'static str) -> Result<usize> {
    if n > limit {
        return Err(Error::Limit { op, what: "decoded elements", requested: n, limit });
    }
    usize::try_from(n).map_err(|_| Error::Limit {
        op,
        what: "decoded elements",
        requested: n,
        limit: usize::MAX as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_extremes() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut c = Cursor::new(&out);
            assert_eq!(c.varint("t").unwrap(), v);
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn varint_rejects_overlong() {
        let bad = [0xffu8; 11];
        assert!(matches!(Cursor::new(&bad).varint("t"), Err(Error::Corrupt { .. })));
        let bad = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(Cursor::new(&bad).varint("t"), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn zigzag_is_a_bijection_on_extremes() {
        for v in [0, 1, -1, 2, -2, i32::MAX, i32::MIN, i32::MIN + 1] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
