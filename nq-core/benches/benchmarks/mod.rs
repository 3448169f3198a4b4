pub(crate) mod attend;
pub(crate) mod compress;

use nq_core::{CompressedCache, CompressionConfig, KvShape};

/// SmolLM2-135M's cache shape.
pub(crate) const SMOLLM2: KvShape = KvShape { layers: 30, q_heads: 9, kv_heads: 3, head_dim: 64 };

/// A cache of `layers` layers filled with `t` tokens of Gaussian-like keys and values and an
/// observation window of 32 queries, not yet compressed.
pub(crate) fn filled(shape: KvShape, cfg: CompressionConfig, t: usize) -> CompressedCache {
    let mut cache = CompressedCache::new(shape, cfg, None).expect("valid shape and config");
    let d = shape.head_dim;
    let pos: Vec<u32> = (0..t as u32).collect();
    for layer in 0..shape.layers {
        let k = nq_core::testing::test_rows(shape.kv_heads * t, d, 2 * layer as u64);
        let v = nq_core::testing::test_rows(shape.kv_heads * t, d, 2 * layer as u64 + 1);
        let q = nq_core::testing::test_rows(shape.q_heads * 32, d, 1000 + layer as u64);
        cache.observe_queries(layer, &q, &pos[t - 32..]).expect("valid window");
        cache.append(layer, &k, &v, &pos).expect("valid append");
    }
    cache
}
