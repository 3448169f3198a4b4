//! The compressed resident KV cache of `nq-core`, behind the decoder's [`KvCache`] seam.

use candle_core::Tensor;
use nq_core::{Backend, CacheStats, CompressedCache, CompressionConfig, CpuBackend, KvShape};

use crate::kv::{AttnSpec, DenseCache, KvCache};
use crate::model::ModelConfig;

/// A [`KvCache`] whose resident form is `nq-core`'s [`CompressedCache`], its storage where
/// the backend `B` keeps it: host memory ([`CpuBackend`], the default) or, with the `cuda`
/// feature, a GPU (`nq_cuda::CudaBackend`, see `CompressedKvCache::on_device`).
///
/// The prompt is prefilled with dense attention (candle matmuls); its keys and values are
/// appended in f16 and the last queries remembered for scoring. [`compress`](Self::compress)
/// then evicts and quantizes; later calls compress blocks of decoded tokens as they leave the
/// recent window. Every call after the first attends over the compressed form in place.
///
/// How the tensors reach the storage depends on the backend ([`CandleBackend`]): in host
/// memory they are copied to f32 slices; on a GPU, decode steps after the prompt's
/// compression hand the backend the tensors' device memory in place
/// (`Backend::append_rows`/`attend_rows`), so a step never waits for the host. The prompt's
/// chunks still pass through the host while eviction scoring keeps their queries.
#[derive(Debug)]
pub struct CompressedKvCache<B: Backend = CpuBackend> {
    inner: CompressedCache<B>,
    /// Every step through the host path, even where the backend could read the tensors in
    /// place ([`host_steps`](CompressedKvCache::host_steps)).
    host_steps: bool,
}

impl<B: Backend> Clone for CompressedKvCache<B>
where
    B::Layer: Clone,
{
    fn clone(&self) -> Self {
        CompressedKvCache { inner: self.inner.clone(), host_steps: self.host_steps }
    }
}

/// The `nq-core` shape of a model's cache.
pub fn kv_shape(config: &ModelConfig) -> KvShape {
    KvShape {
        layers: config.layers,
        q_heads: config.q_heads,
        kv_heads: config.kv_heads,
        head_dim: config.head_dim,
    }
}

/// The rotary embedding every layer of `config`'s model shares, for storing keys RoPE-free;
/// `None` when layers differ (Gemma-3's local and global bases): such a model cannot.
///
/// The mapping itself is [`ModelConfig::rope_spec`], the one place that knows a model's RoPE.
///
/// # Errors
/// When nq-rope rejects a layer's RoPE (see [`ModelConfig::rope`]); never for a config read
/// by [`ModelConfig::from_gguf`], which checked them all.
pub fn shared_rope(config: &ModelConfig) -> crate::Result<Option<nq_rope::Rope>> {
    let spec = config.rope_spec(0);
    if (1..config.layers).any(|l| config.rope_spec(l) != spec) {
        return Ok(None);
    }
    config.rope(0).map(Some)
}

/// [`shared_rope`], with layers that differ as an error.
///
/// # Errors
/// When layers use different RoPE parameters, or nq-rope rejects them.
pub fn rope_of(config: &ModelConfig) -> candle_core::Result<nq_rope::Rope> {
    match shared_rope(config).map_err(candle_core::Error::wrap)? {
        Some(rope) => Ok(rope),
        None => candle_core::bail!(
            "{}: layers use different RoPE parameters, keys cannot be stored RoPE-free",
            config.architecture
        ),
    }
}

impl CompressedKvCache {
    /// An empty cache in host memory for `config`'s model, compressing as `cfg` says.
    ///
    /// # Errors
    /// An invalid configuration, or RoPE removal asked for a model whose RoPE differs per layer.
    pub fn new(config: &ModelConfig, cfg: CompressionConfig) -> candle_core::Result<Self> {
        Self::with_backend(CpuBackend, config, cfg)
    }
}

#[cfg(feature = "cuda")]
impl CompressedKvCache<nq_cuda::CudaBackend> {
    /// An empty cache whose storage lives on `device`'s GPU, on candle's own CUDA stream (so
    /// the cache's kernels and the model's are ordered without extra synchronization).
    ///
    /// # Errors
    /// `device` is not a CUDA device; as [`new`](CompressedKvCache::new) otherwise.
    pub fn on_device(
        device: &candle_core::Device,
        config: &ModelConfig,
        cfg: CompressionConfig,
    ) -> candle_core::Result<Self> {
        let backend = cuda_backend(device)?;
        Self::with_backend(backend, config, cfg)
    }
}

/// nq-cuda's backend on the stream of candle's CUDA `device`.
///
/// # Errors
/// `device` is not a CUDA device.
#[cfg(feature = "cuda")]
pub fn cuda_backend(device: &candle_core::Device) -> candle_core::Result<nq_cuda::CudaBackend> {
    match device {
        candle_core::Device::Cuda(dev) => Ok(nq_cuda::CudaBackend::from_stream(dev.cuda_stream())),
        other => candle_core::bail!("a GPU cache needs a CUDA device, got {other:?}"),
    }
}

impl<B: Backend> CompressedKvCache<B> {
    /// An empty cache for `config`'s model, its storage in `backend`, compressing as `cfg`
    /// says.
    ///
    /// # Errors
    /// As [`new`](CompressedKvCache::new), and backend failures.
    pub fn with_backend(
        backend: B,
        config: &ModelConfig,
        cfg: CompressionConfig,
    ) -> candle_core::Result<Self> {
        let rope = if cfg.remove_rope { Some(rope_of(config)?) } else { None };
        let inner = CompressedCache::with_backend(backend, kv_shape(config), cfg, rope)
            .map_err(candle_core::Error::wrap)?;
        Ok(CompressedKvCache { inner, host_steps: false })
    }

    /// Wrap an `nq-core` cache.
    pub fn from_inner(inner: CompressedCache<B>) -> Self {
        CompressedKvCache { inner, host_steps: false }
    }

    /// Send every step's tensors through the host (`Backend::append`/`attend` on host
    /// slices), as before the in-place GPU path: the same results, for measuring what the
    /// in-place path saves.
    #[must_use]
    pub fn host_steps(mut self, on: bool) -> Self {
        self.host_steps = on;
        self
    }

    /// The `nq-core` cache.
    pub fn inner(&self) -> &CompressedCache<B> {
        &self.inner
    }

    /// The `nq-core` cache, to write a context straight into it (speed runs).
    pub fn inner_mut(&mut self) -> &mut CompressedCache<B> {
        &mut self.inner
    }

    /// Compress what is due (see [`CompressedCache::compress`]).
    ///
    /// # Errors
    /// Stage errors.
    pub fn compress(&mut self) -> candle_core::Result<()> {
        self.inner.compress().map_err(candle_core::Error::wrap)
    }

    /// A copy of this uncompressed cache under another configuration.
    ///
    /// # Errors
    /// See [`CompressedCache::reconfigured`].
    pub fn reconfigured(&self, cfg: CompressionConfig) -> candle_core::Result<Self> {
        Ok(CompressedKvCache {
            inner: self.inner.reconfigured(cfg).map_err(candle_core::Error::wrap)?,
            host_steps: self.host_steps,
        })
    }

    /// Measured contents.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}

/// A [`Backend`] the candle cache can drive: how a decode step's tensors reach its storage.
///
/// The default takes the host path (every backend can: `Backend::append` and `attend` take
/// host slices). A backend whose memory candle's tensors already live in overrides
/// [`decode_in_place`](Self::decode_in_place), as `nq_cuda::CudaBackend` does with the
/// `cuda` feature.
pub trait CandleBackend: Backend {
    /// Append the new rows of `caches` (one sequence each) and attend over them, reading the
    /// tensors where they are: `q` is `[q_heads, n, d]`, `k` and `v` `[kv_heads, n, d]`, the
    /// `n = B * t` rows sequence by sequence, post-RoPE and already scaled for nq-core's
    /// `1 / sqrt(d)`. Returns `[q_heads, n, d]`, or `None` when the step must take the host
    /// path (this backend cannot read the tensors, or a cache still observes queries).
    ///
    /// # Errors
    /// Backend failures, shapes that disagree.
    fn decode_in_place(
        caches: &mut [&mut CompressedCache<Self>],
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        window: Option<usize>,
    ) -> candle_core::Result<Option<Tensor>> {
        let _ = (caches, layer, q, k, v, positions, window);
        Ok(None)
    }

    /// The cache as one on nq-cuda's backend, so a batch of sequences whose caches all are
    /// attends in one launch ([`Model::forward_batch_last`](crate::Model::forward_batch_last)).
    #[cfg(feature = "cuda")]
    fn as_cuda(
        cache: &mut CompressedCache<Self>,
    ) -> Option<&mut CompressedCache<nq_cuda::CudaBackend>> {
        let _ = cache;
        None
    }
}

impl CandleBackend for CpuBackend {}

/// nq-core scores with `1 / sqrt(d)`: `q` with any other `spec.scale` folded in.
fn fold_scale(q: &Tensor, spec: &AttnSpec, d: usize) -> candle_core::Result<Tensor> {
    let factor = f64::from(spec.scale) * (d as f64).sqrt();
    if (factor - 1.0).abs() > 1e-7 { q.affine(factor, 0.0) } else { Ok(q.clone()) }
}

fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()
}

impl<B: CandleBackend> KvCache for CompressedKvCache<B> {
    #[cfg(feature = "cuda")]
    fn as_cuda(&mut self) -> Option<&mut CompressedCache<nq_cuda::CudaBackend>> {
        if self.host_steps { None } else { B::as_cuda(&mut self.inner) }
    }

    fn attend_with(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
    ) -> candle_core::Result<Tensor> {
        if spec.softcap.is_some() {
            candle_core::bail!(
                "the compressed cache does not support attention soft caps ({spec:?})"
            );
        }
        let (hq, t, d) = q.dims3()?;
        let wrap = candle_core::Error::wrap;
        let q = fold_scale(q, spec, d)?;
        if !self.host_steps
            && let Some(out) =
                B::decode_in_place(&mut [&mut self.inner], layer, &q, k, v, positions, spec.window)?
        {
            return Ok(out);
        }
        // One copy to the host for the three (a GPU model: one synchronization, not three).
        let mut qkv =
            to_vec(&Tensor::cat(&[q.flatten_all()?, k.flatten_all()?, v.flatten_all()?], 0)?)?;
        let vv = qkv.split_off(q.elem_count() + k.elem_count());
        let kv = qkv.split_off(q.elem_count());
        let qv = qkv;
        self.inner.observe_queries(layer, &qv, positions).map_err(wrap)?;
        if self.inner.len(layer) == 0 {
            // Prefill of an empty layer: dense attention of the chunk over itself (candle's
            // matmuls are much faster here), then store the chunk.
            let mut dense = DenseCache::new();
            let spec = AttnSpec { scale: (1.0 / (d as f64).sqrt()) as f32, ..*spec };
            let window = self.inner.config().evict.window;
            let (out, mass) = dense.attend_with_mass(0, &q, k, v, positions, &spec, window)?;
            self.inner.append(layer, &kv, &vv, positions).map_err(wrap)?;
            if let Some(mass) = mass {
                // The window's attention, for the observed-attention scorer at compression.
                self.inner.observe_attention(layer, &to_vec(&mass)?).map_err(wrap)?;
            }
            return Ok(out);
        }
        self.inner.append(layer, &kv, &vv, positions).map_err(wrap)?;
        let mut out = vec![0f32; hq * t * d];
        self.inner.attend(layer, &qv, positions, spec.window, &mut out).map_err(wrap)?;
        Tensor::from_vec(out, (hq, t, d), q.device())
    }
}

/// One decode row per sequence of `caches`, attended in one launch when every cache is a
/// compressed cache on the GPU past its prompt's compression; `None` otherwise (the caller
/// takes them one by one).
///
/// # Errors
/// A soft cap (which the compressed cache refuses), backend failures.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_on_device(
    caches: &mut [&mut dyn KvCache],
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &[u32],
    spec: &AttnSpec,
) -> candle_core::Result<Option<Tensor>> {
    if spec.softcap.is_some() {
        return Ok(None);
    }
    let mut gpu = Vec::with_capacity(caches.len());
    for cache in caches.iter_mut() {
        match cache.as_cuda() {
            Some(c) => gpu.push(c),
            None => return Ok(None),
        }
    }
    let q = fold_scale(q, spec, q.dim(2)?)?;
    nq_cuda::CudaBackend::decode_in_place(&mut gpu, layer, &q, k, v, positions, spec.window)
}
