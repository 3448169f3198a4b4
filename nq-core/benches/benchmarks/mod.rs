pub(crate) mod attend;
pub(crate) mod compress;

use nq_core::{CompressedCache, CompressionConfig, KvShape};

/// SmolLM2-135M's cache shape.
pub(crate) const SMOLLM2: KvShape = KvShape { layers: 30, q_heads: 9, kv_heads: 3, head_dim: 64 };

/// [`nq_core::testing::filled_cache`] for a valid shape and configuration.
pub(crate) fn filled(
    shape: KvShape,
    cfg: CompressionConfig,
    t: usize,
    mass: bool,
) -> CompressedCache {
    nq_core::testing::filled_cache(shape, cfg, t, mass).expect("valid shape and config")
}
