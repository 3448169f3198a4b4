//! The compressed cache behind the decoder: equivalence with the dense cache where nothing is
//! lost, measured compression where something is (save/resume: resume.rs).

use nq_candle::{CompressedKvCache, DenseCache};
use nq_core::{CompressionConfig, EvictConfig, Preset, Storage};

use crate::common::{max_diff, rows, tiny};

/// No eviction, f16 codes: the only differences from the dense f32 cache are f16 rounding of
/// keys and values (and of their rotations), relative ~1e-3 per value.
fn lossless() -> CompressionConfig {
    CompressionConfig {
        evict: EvictConfig { keep: 1.0, sinks: 2, recent: 4, ..CompressionConfig::default().evict },
        keys: Storage::F16,
        values: Storage::F16,
        block: 4,
        ..CompressionConfig::default()
    }
}

#[test]
fn lossless_configs_match_the_dense_cache_tiny_models() {
    // phi3 has head_dim 96 (block-diagonal Hadamard 64 + 32); gemma3 and mistral have
    // sliding windows.
    for family in ["llama", "mistral", "qwen2", "phi3", "gemma3"] {
        let (model, tokens, _) = tiny(family);
        let full = rows(&model.forward(&tokens, 0, &mut DenseCache::new()).unwrap());
        for (name, cfg) in [("none", Preset::None.config()), ("f16 codes", lossless())] {
            let head_dim = model.config().head_dim;
            if !head_dim.is_multiple_of(8) {
                // E8 blocks are 8 values: such a model is refused with a typed error.
                let err = CompressedKvCache::new(model.config(), cfg).unwrap_err();
                assert!(err.to_string().contains("head_dim"), "{family}: {err}");
                continue;
            }
            let mut cache = CompressedKvCache::new(model.config(), cfg).unwrap();
            let mut got = Vec::new();
            let mut start = 0;
            // A prefill, compression, a chunk, then single tokens with compression of blocks
            // in between: every path of the cache.
            for n in [20usize, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
                if start >= tokens.len() {
                    break;
                }
                let n = n.min(tokens.len() - start);
                got.extend(rows(
                    &model.forward(&tokens[start..start + n], start, &mut cache).unwrap(),
                ));
                start += n;
                cache.compress().unwrap();
            }
            let full = &full[..got.len()];
            let (diff, mag) = max_diff(&got, full);
            assert!(
                diff <= 2e-2 * mag.max(1.0),
                "{family} {name}: max diff {diff} (|logit| max {mag})"
            );
            if name == "f16 codes" {
                let s = cache.stats();
                assert!(s.compressed_slots > 0, "{family}: nothing was compressed: {s:?}");
            }
        }
    }
}
