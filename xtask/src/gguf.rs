//! Just enough of the GGUF format to tell whether a reassembled download is complete: the
//! magic, the header, every tensor's offset and size, and the file length they imply.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

pub(crate) struct Summary {
    pub(crate) version: u32,
    pub(crate) tensors: u64,
    pub(crate) data_end: u64,
    pub(crate) file_len: u64,
}

/// Parse the header of `path` and check that the tensor data it describes fits the file exactly.
pub(crate) fn check(path: &Path) -> Result<Summary> {
    let file_len = std::fs::metadata(path)?.len();
    let mut r = Counting { inner: BufReader::new(File::open(path)?), pos: 0 };
    let magic = r.bytes::<4>()?;
    ensure!(&magic == b"GGUF", "bad magic {magic:?}, expected \"GGUF\"");
    let version = r.u32()?;
    ensure!((2..=3).contains(&version), "unsupported GGUF version {version}");
    let tensors = r.u64()?;
    let kvs = r.u64()?;
    ensure!(
        tensors < 1 << 20 && kvs < 1 << 20,
        "implausible counts: {tensors} tensors, {kvs} keys"
    );
    let mut alignment = 32u64;
    for _ in 0..kvs {
        let key = r.string()?;
        let ty = r.u32()?;
        if key == "general.alignment" && ty == 4 {
            alignment = u64::from(r.u32()?);
        } else {
            r.skip_value(ty)?;
        }
    }
    ensure!(alignment.is_power_of_two(), "alignment {alignment} is not a power of two");
    let mut extent = 0u64;
    for _ in 0..tensors {
        let name = r.string()?;
        let dims = r.u32()?;
        ensure!(dims <= 8, "tensor {name}: {dims} dimensions");
        let mut elems = 1u64;
        for _ in 0..dims {
            elems = elems.checked_mul(r.u64()?).context("element count overflows")?;
        }
        let ty = r.u32()?;
        let offset = r.u64()?;
        let (block, bytes) =
            block_layout(ty).with_context(|| format!("tensor {name}: unknown ggml type {ty}"))?;
        ensure!(
            elems.is_multiple_of(block),
            "tensor {name}: {elems} elements, not a multiple of block {block}"
        );
        let end = offset + elems / block * bytes;
        extent = extent.max(end);
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let data_end = data_start + extent;
    if data_end > file_len {
        bail!("tensor data ends at byte {data_end} but the file has {file_len} bytes (truncated)");
    }
    if file_len > data_end.div_ceil(alignment) * alignment {
        bail!(
            "file has {file_len} bytes but its tensor data ends at byte {data_end} (trailing bytes)"
        );
    }
    Ok(Summary { version, tensors, data_end, file_len })
}

/// `(elements per block, bytes per block)` of a ggml tensor type.
fn block_layout(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counting<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).context("file ends inside the GGUF header")?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        ensure!(copied == n, "file ends inside the GGUF header");
        self.pos += n;
        Ok(())
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        ensure!(len < 1 << 20, "string of {len} bytes in the header");
        let mut b = vec![0u8; usize::try_from(len)?];
        self.inner.read_exact(&mut b).context("file ends inside the GGUF header")?;
        self.pos += len;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    fn skip_value(&mut self, ty: u32) -> Result<()> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => self.string().map(drop),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.skip_value(inner)?;
                }
                Ok(())
            }
            _ => bail!("unknown GGUF value type {ty}"),
        }
    }
}
