//! The device abstraction: what a backend must do for the compression pipeline.

use half::f16;
use nq_lattice::FixedCodec;

use crate::error::{Error, Result};
use crate::rotation::Rotation;
use crate::store::{AttendQuery, CompressJob, HeadImage, LayerSpec, LayerUsage};
use std::borrow::Cow;

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

/// Row-level primitives of a device, checked one by one against the CPU by the conformance
/// harness (`testing::check_row_ops`): copies, the rotation, and the fixed-rate codec.
/// [`Backend`] is what the cache runs; these are the pieces a device implementation is
/// built from and tested on.
///
/// Contract, for every implementation:
/// - `rotate` must match [`Rotation`] on the CPU within `4 * eps * log2(dim) * |row|`.
/// - `encode` must produce exactly the codes and scales of [`FixedCodec::encode_rows`]
///   for the same (rotated) input, except where a row sits on a decision boundary within
///   rounding; `decode` must be exact for any codes.
/// - Methods never panic on data and never read or write outside the given shape.
pub trait RowOps {
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

impl RowOps for crate::CpuBackend {
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

/// A device that holds a compressed cache and runs its hot loops: the seam between
/// [`CompressedCache`](crate::CompressedCache) and where its bytes live.
///
/// The cache keeps the bookkeeping (what was seen, which tokens are dense, the query window,
/// when to compress and which tokens to keep); the backend owns every buffer of every layer
/// (codes, scales, positions, f16 windows, means, smoothing factors) and runs the three
/// operations whose cost grows with the context: appending rows, encoding kept rows, and
/// attention over the stored form. [`CpuBackend`](crate::CpuBackend) is the reference;
/// `nq-cuda`'s `CudaBackend` keeps the storage on a GPU. The conformance harness
/// (`testing::check_backend`, feature `testing`) runs the same cache on a backend and on
/// the CPU and compares every result.
///
/// Shapes are validated by the cache before any call: `k`, `v` are `[kv_heads, t, d]`,
/// `q`, `out` are `[q_heads, t, d]`, job indices are in range.
pub trait Backend: Clone + std::fmt::Debug + Send + Sync {
    /// One layer's storage, every kv head of it, resident where the backend computes.
    type Layer: std::fmt::Debug + Send;

    /// Empty storage for one layer.
    ///
    /// # Errors
    /// Device failures, or a spec the backend does not support ([`Error::Backend`]).
    fn new_layer(&self, spec: &LayerSpec) -> Result<Self::Layer>;

    /// Append dense rows at `positions` (strictly ascending, after every held position) to
    /// every head, stored as f16; their dense mass starts at 0.
    ///
    /// # Errors
    /// Device failures.
    fn append(
        &self,
        layer: &mut Self::Layer,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> Result<()>;

    /// Run one compression (see [`CompressJob`]).
    ///
    /// # Errors
    /// Device failures, stage errors.
    fn compress(&self, layer: &mut Self::Layer, job: &CompressJob<'_>) -> Result<()>;

    /// Causal attention of `q` over every token the layer holds, written to `out`
    /// (see [`AttendQuery`]; the dense mass changes only when `query.record_mass`).
    ///
    /// # Errors
    /// Device failures.
    fn attend(
        &self,
        layer: &mut Self::Layer,
        q: &[f32],
        query: &AttendQuery<'_>,
        out: &mut [f32],
    ) -> Result<()>;

    /// The dense rows of one head and their attention mass, on the host (eviction scoring
    /// runs on the host: its inputs are the few dense rows and its output a short list).
    ///
    /// # Errors
    /// Device failures.
    fn dense_rows<'a>(&self, layer: &'a Self::Layer, head: usize) -> Result<DenseRows<'a>>;

    /// Every head's storage as host buffers (archives, conformance checks).
    ///
    /// # Errors
    /// Device failures.
    fn export<'a>(&self, layer: &'a Self::Layer) -> Result<Cow<'a, [HeadImage]>>;

    /// Storage built from host buffers that [`HeadImage::validate`] accepted, whose dense
    /// rows sit at `dense_pos`.
    ///
    /// # Errors
    /// Device failures.
    fn import(
        &self,
        spec: &LayerSpec,
        heads: Vec<HeadImage>,
        dense_pos: &[u32],
    ) -> Result<Self::Layer>;

    /// What the layer holds, from its buffers' lengths.
    fn usage(&self, layer: &Self::Layer) -> LayerUsage;
}

/// One head's dense rows on the host, borrowed where the backend stores them there.
#[derive(Clone, Debug)]
pub struct DenseRows<'a> {
    /// f16 key rows `[dense, d]`.
    pub keys: Cow<'a, [f16]>,
    /// f16 value rows `[dense, d]`.
    pub values: Cow<'a, [f16]>,
    /// Attention mass per dense row.
    pub mass: Cow<'a, [f32]>,
}
