//! The device abstraction: what a backend must do for the compression pipeline.

use half::f16;

use crate::error::Result;
use crate::store::{AttendQuery, CompressJob, HeadImage, LayerSpec, LayerUsage};
use std::borrow::Cow;

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
    /// Device failures, or a spec the backend does not support ([`Error::Backend`](crate::Error::Backend)).
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

    /// f32 values in the memory the backend computes in, read in place by
    /// [`append_rows`](Self::append_rows) and [`attend_rows`](Self::attend_rows): `[f32]` in
    /// host memory on the CPU, device memory on a GPU (`nq-cuda`: a `CudaView<f32>`), so a
    /// model whose tensors live there hands over its projections without a trip through the
    /// host.
    type Rows<'a>: ?Sized;

    /// Writable f32 values in the backend's memory (the output of
    /// [`attend_rows`](Self::attend_rows)).
    type RowsMut<'a>: ?Sized;

    /// [`append`](Self::append) from rows in the backend's memory: `k`, `v` are
    /// `[kv_heads, t, d]`. The backend checks their lengths.
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) for lengths that disagree with the shape;
    /// device failures. Nothing is appended on error.
    fn append_rows(
        &self,
        layer: &mut Self::Layer,
        k: &Self::Rows<'_>,
        v: &Self::Rows<'_>,
        positions: &[u32],
    ) -> Result<()>;

    /// [`attend`](Self::attend) of `B = layers.len()` sequences at once (one layer of each,
    /// specs equal), with `q` and `out` `[B, q_heads, t, d]` in the backend's memory and
    /// `queries[i]` describing sequence `i` (every `window`, `rope` and `record_mass` equal).
    /// A GPU runs the batch in one launch and never synchronizes with the host.
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) for lengths or specs that disagree; device
    /// failures.
    fn attend_rows(
        &self,
        layers: &mut [&mut Self::Layer],
        q: &Self::Rows<'_>,
        queries: &[AttendQuery<'_>],
        out: &mut Self::RowsMut<'_>,
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
