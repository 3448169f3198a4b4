//! The compressed resident KV cache of `nq-core`, behind the decoder's [`KvCache`] seam.

use candle_core::Tensor;
use nq_core::{CacheStats, CompressedCache, CompressionConfig, KvShape};

use crate::kv::{AttnSpec, DenseCache, KvCache};
use crate::model::ModelConfig;

/// A [`KvCache`] whose resident form is `nq-core`'s [`CompressedCache`].
///
/// The prompt is prefilled with dense attention (candle matmuls); its keys and values are
/// appended in f16 and the last queries remembered for scoring. [`compress`](Self::compress)
/// then evicts and quantizes; later calls compress blocks of decoded tokens as they leave the
/// recent window. Every call after the first attends over the compressed form in place.
#[derive(Debug, Clone)]
pub struct CompressedKvCache {
    inner: CompressedCache,
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
    /// An empty cache for `config`'s model, compressing as `cfg` says.
    ///
    /// # Errors
    /// An invalid configuration, or RoPE removal asked for a model whose RoPE differs per layer.
    pub fn new(config: &ModelConfig, cfg: CompressionConfig) -> candle_core::Result<Self> {
        let rope = if cfg.remove_rope { Some(rope_of(config)?) } else { None };
        let inner =
            CompressedCache::new(kv_shape(config), cfg, rope).map_err(candle_core::Error::wrap)?;
        Ok(CompressedKvCache { inner })
    }

    /// Wrap an `nq-core` cache.
    pub fn from_inner(inner: CompressedCache) -> Self {
        CompressedKvCache { inner }
    }

    /// The `nq-core` cache.
    pub fn inner(&self) -> &CompressedCache {
        &self.inner
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

impl KvCache for CompressedKvCache {
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
        let qv = to_vec(&q)?;
        self.inner.observe_queries(layer, &qv, positions).map_err(wrap)?;
        let (kv, vv) = (to_vec(k)?, to_vec(v)?);
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
