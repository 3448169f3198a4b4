pub(crate) mod attend;
pub(crate) mod compress;

use nq_core::{CompressedCache, CompressionConfig, KvShape};

/// SmolLM2-135M's cache shape.
pub(crate) const SMOLLM2: KvShape = KvShape { layers: 30, q_heads: 9, kv_heads: 3, head_dim: 64 };

/// A cache of `layers` layers filled with `t` tokens of Gaussian-like keys and values and an
/// observation window of `cfg.evict.window` queries, not yet compressed. With `mass`, the
/// window's attention mass is also handed over, as nq-candle does from the prefill's own
/// attention (positive values, `window` per query head).
pub(crate) fn filled(
    shape: KvShape,
    cfg: CompressionConfig,
    t: usize,
    mass: bool,
) -> CompressedCache {
    let mut cache = CompressedCache::new(shape, cfg, None).expect("valid shape and config");
    let d = shape.head_dim;
    let w = cfg.evict.window.min(t);
    let pos: Vec<u32> = (0..t as u32).collect();
    for layer in 0..shape.layers {
        let k = nq_core::testing::test_rows(shape.kv_heads * t, d, 2 * layer as u64);
        let v = nq_core::testing::test_rows(shape.kv_heads * t, d, 2 * layer as u64 + 1);
        let q = nq_core::testing::test_rows(shape.q_heads * w, d, 1000 + layer as u64);
        cache.observe_queries(layer, &q, &pos[t - w..]).expect("valid window");
        cache.append(layer, &k, &v, &pos).expect("valid append");
        if mass {
            let mut m = nq_core::testing::test_rows(shape.q_heads, t, 2000 + layer as u64);
            for row in m.chunks_exact_mut(t) {
                row.iter_mut().for_each(|x| *x = x.abs());
                let sum: f32 = row.iter().sum();
                row.iter_mut().for_each(|x| *x *= w as f32 / sum);
            }
            cache.observe_attention(layer, &m).expect("valid mass");
        }
    }
    cache
}
