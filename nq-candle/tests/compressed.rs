//! The compressed cache behind the decoder: equivalence with the dense cache where nothing is
//! lost, measured compression where something is (save/resume: resume.rs).

use candle_core::Tensor;
use nq_candle::{CompressedKvCache, DenseCache, KvCache};
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

/// The f16-native dense cache (f16 products, softmax in f32) against the f32 cache over the
/// same f16-rounded keys and values: a context written by `fill`, then decode queries. Each
/// product rounds its f16 inputs and output (relative 2^-11 each): with unit-scale rows the
/// outputs agree to about 1e-2 of their scale.
#[test]
fn f16_native_dense_cache_matches_the_f32_cache() {
    let dev = candle_core::Device::Cpu;
    let (kv, q_heads, d, t) = (2, 4, 32, 300);
    let k = Tensor::randn(0f32, 1.0, (kv, t, d), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (kv, t, d), &dev).unwrap();
    let k16 = k.to_dtype(candle_core::DType::F16).unwrap();
    let v16 = v.to_dtype(candle_core::DType::F16).unwrap();
    let positions: Vec<u32> = (0..t as u32).collect();
    let mut native = DenseCache::f16_native().with_capacity(t + 4);
    let mut wide = DenseCache::new();
    native.fill(0, &k16, &v16, &positions).unwrap();
    wide.fill(0, &k16, &v16, &positions).unwrap();
    // Room for the context and the four decode steps: no buffer grew.
    assert_eq!(native.resident_bytes(), 2 * kv * (t + 4) * d * 2);
    for step in 0..4u32 {
        let q = Tensor::randn(0f32, 1.0, (q_heads, 1, d), &dev).unwrap();
        let kn = Tensor::randn(0f32, 1.0, (kv, 1, d), &dev).unwrap();
        let vn = Tensor::randn(0f32, 1.0, (kv, 1, d), &dev).unwrap();
        let p = [t as u32 + step];
        let a = native.attend(0, &q, &kn, &vn, &p).unwrap().flatten_to(1).unwrap();
        let b = wide.attend(0, &q, &kn, &vn, &p).unwrap().flatten_to(1).unwrap();
        let (diff, scale) = max_diff(&rows(&a), &rows(&b));
        assert!(diff <= 1e-2 * scale.max(1e-3), "step {step}: {diff} against {scale}");
    }
    assert_eq!(native.resident_bytes(), 2 * kv * (t + 4) * d * 2);
    // fill refuses positions that are not after the stored ones.
    assert!(
        native.fill(0, &k16.narrow(1, 0, 1).unwrap(), &v16.narrow(1, 0, 1).unwrap(), &[3]).is_err()
    );
}
