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
/// Each call hands the backend the new tokens' keys and values and the queries as host f32
/// slices (`nq_core::Backend` takes host slices; eviction scoring reads the queries on the
/// host): a few kilobytes per layer and decoded token, never the cache.
#[derive(Debug)]
pub struct CompressedKvCache<B: Backend = CpuBackend> {
    inner: CompressedCache<B>,
}

impl<B: Backend> Clone for CompressedKvCache<B>
where
    B::Layer: Clone,
{
    fn clone(&self) -> Self {
        CompressedKvCache { inner: self.inner.clone() }
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
        Ok(CompressedKvCache { inner })
    }

    /// Wrap an `nq-core` cache.
    pub fn from_inner(inner: CompressedCache<B>) -> Self {
        CompressedKvCache { inner }
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
        })
    }

    /// Measured contents.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}

fn to_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()
}

impl<B: Backend> KvCache for CompressedKvCache<B> {
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
        // nq-core scores with 1/sqrt(d): fold any other scale into the queries.
        let factor = f64::from(spec.scale) * (d as f64).sqrt();
        let q = if (factor - 1.0).abs() > 1e-7 { q.affine(factor, 0.0)? } else { q.clone() };
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
