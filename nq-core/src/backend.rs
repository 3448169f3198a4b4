//! The device abstraction: what a backend must do for the compression pipeline.

use half::f16;
use nq_lattice::FixedCodec;

use crate::error::{Error, Result};
use crate::rotation::Rotation;

/// A validated shape: `n` rows of `dim` values, `dim` a positive multiple of 8 and
/// `n * dim` representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    n: usize,
    dim: usize,
}

impl Rows {
    /// Validate a shape once, so backend methods can trust it.
    ///
    /// # Errors
    /// [`Error::Shape`] when `dim` is not a positive multiple of 8 or `n * dim` overflows.
    pub fn new(n: usize, dim: usize) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) || n.checked_mul(dim).is_none() {
            return Err(Error::Shape { op: "Rows::new", what: format!("{n} rows of {dim}") });
        }
        Ok(Rows { n, dim })
    }

    /// Number of rows.
    pub fn n(self) -> usize {
        self.n
    }

    /// Values per row.
    pub fn dim(self) -> usize {
        self.dim
    }

    /// `n * dim`.
    pub fn len(self) -> usize {
        self.n * self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(self) -> bool {
        self.n == 0
    }

    /// Check a buffer length against the shape.
    ///
    /// # Errors
    /// [`Error::Len`] when `got != n * dim`.
    pub fn check_len(self, op: &'static str, got: usize) -> Result<()> {
        if got != self.len() {
            return Err(Error::Len { op, what: "buffer", got, expected: self.len() });
        }
        Ok(())
    }
}

/// Fixed-rate codes of a batch of rows, on the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded {
    /// `n * dim / 8 * bytes_per_block` code bytes.
    pub codes: Vec<u8>,
    /// One f16 scale per row.
    pub scales: Vec<f16>,
}

/// A device that runs the compression stages. [`CpuBackend`] lives here; `nq-cuda`
/// implements it on the GPU, with `CpuBackend` as its oracle (see the `testing` module, feature `testing`).
///
/// Contract, for every implementation:
/// - `rotate` must match [`Rotation`] on the CPU within `4 * eps * log2(dim) * |row|`.
/// - `encode` must produce exactly the codes and scales of [`FixedCodec::encode_rows`]
///   for the same (rotated) input, except where a row sits on a decision boundary within
///   rounding; `decode` must be exact for any codes.
/// - Methods never panic on data and never read or write outside the given shape.
pub trait Backend {
    /// Owned device buffer of f32.
    type Buf;
    /// Backend failure (driver error, out of memory).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Copy host data to the device.
    ///
    /// # Errors
    /// Device failures.
    fn upload(&self, host: &[f32]) -> Result<Self::Buf, Self::Error>;

    /// Copy device data back to the host.
    ///
    /// # Errors
    /// Device failures.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, Self::Error>;

    /// `row <- R row` (or `R^T row` when `inverse`) for every row of `buf`.
    ///
    /// # Errors
    /// Device failures.
    fn rotate(
        &self,
        buf: &mut Self::Buf,
        rows: Rows,
        rot: &Rotation,
        inverse: bool,
    ) -> Result<(), Self::Error>;

    /// Fixed-rate E8 codes and f16 scales of every row.
    ///
    /// # Errors
    /// Device failures.
    fn encode(
        &self,
        buf: &Self::Buf,
        rows: Rows,
        codec: &FixedCodec,
    ) -> Result<Encoded, Self::Error>;

    /// Rows decoded from codes and scales.
    ///
    /// # Errors
    /// Device failures, or codes and scales that disagree with `rows`.
    fn decode(
        &self,
        enc: &Encoded,
        rows: Rows,
        codec: &FixedCodec,
    ) -> Result<Self::Buf, Self::Error>;
}

/// The CPU backend: the stage crates, called directly. Infallible.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Error = Error;

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn rotate(&self, buf: &mut Vec<f32>, rows: Rows, rot: &Rotation, inverse: bool) -> Result<()> {
        rows.check_len("CpuBackend::rotate", buf.len())?;
        if rot.dim() != rows.dim() {
            return Err(Error::Len {
                op: "CpuBackend::rotate",
                what: "rotation",
                got: rot.dim(),
                expected: rows.dim(),
            });
        }
        for row in buf.chunks_exact_mut(rows.dim()) {
            if inverse { rot.inverse(row)? } else { rot.forward(row)? }
        }
        Ok(())
    }

    fn encode(&self, buf: &Vec<f32>, rows: Rows, codec: &FixedCodec) -> Result<Encoded> {
        rows.check_len("CpuBackend::encode", buf.len())?;
        let mut enc = Encoded {
            codes: vec![0; rows.len() / 8 * codec.bytes_per_block()],
            scales: vec![f16::ZERO; rows.n()],
        };
        codec.encode_rows(buf, rows.dim(), &mut enc.codes, &mut enc.scales)?;
        Ok(enc)
    }

    fn decode(&self, enc: &Encoded, rows: Rows, codec: &FixedCodec) -> Result<Vec<f32>> {
        let mut out = vec![0f32; rows.len()];
        codec.decode_rows(&enc.codes, &enc.scales, rows.dim(), &mut out)?;
        Ok(out)
    }
}
