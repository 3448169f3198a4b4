//! The compressed cache behind the decoder: equivalence with the dense cache where nothing is
//! lost, measured compression where something is, and save/resume.

use nq_candle::{CompressedKvCache, DenseCache, Generator, SamplingOptions, archive};
use nq_core::{CompressionConfig, EvictConfig, Preset, Storage};

use crate::common::{max_diff, rows, smollm2, tiny};

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

#[test]
fn generation_compresses_and_saves() {
    let Some((model, tok)) = smollm2() else { return };
    let text = std::fs::read_to_string(crate::common::data("dpkg_triggers.txt")).unwrap();
    let prompt: String = text.chars().take(3000).collect();
    let mut generator = Generator::new(model.clone(), tok.clone(), Preset::Balanced);
    let g = generator.generate(&prompt, 6).unwrap();
    assert_eq!(g.tokens.len(), 6);
    assert!(g.prompt_tokens > 600, "{}", g.prompt_tokens);
    // Measured, not computed: the balanced preset holds the prompt in well under a tenth of
    // its f16 size once windows are amortized.
    assert!(g.prompt_stats.ratio() > 5.0, "{:?}", g.prompt_stats);

    // Save a compressed prompt, resume from it, and continue exactly as from memory.
    let ids = tok.encode_document(&prompt).unwrap();
    let (head, last) = ids.split_at(ids.len() - 1);
    let mut cache = CompressedKvCache::new(model.config(), Preset::Balanced.config()).unwrap();
    model.forward_last(head, 0, &mut cache).unwrap();
    cache.compress().unwrap();
    let path = std::env::temp_dir().join(format!("nq-candle-test-{}.nqkv", std::process::id()));
    let bytes =
        archive::save(&path, &cache, model.config(), "balanced", last[0], head.len()).unwrap();
    assert!(bytes < cache.stats().resident_bytes, "archive {bytes} >= resident");
    let info = archive::inspect(&path).unwrap();
    assert_eq!(info.preset, "balanced");
    assert_eq!(info.sections, 1 + model.config().layers);
    let (loaded, next, pos) = archive::load(&path, model.config()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!((next, pos), (last[0], head.len()));
    let opts = SamplingOptions::default();
    let from_disk = generator.resume_with(loaded, next, pos, 5, opts, |_| {}).unwrap();
    let from_memory = generator.resume_with(cache, last[0], head.len(), 5, opts, |_| {}).unwrap();
    assert_eq!(from_disk.tokens, from_memory.tokens);
}

#[test]
fn archives_of_another_model_are_refused() {
    let Some((model, _)) = smollm2() else { return };
    let (tiny_model, tokens, _) = tiny("llama");
    let mut cache = CompressedKvCache::new(tiny_model.config(), Preset::Balanced.config()).unwrap();
    tiny_model.forward_last(&tokens, 0, &mut cache).unwrap();
    let path = std::env::temp_dir().join(format!("nq-candle-foreign-{}.nqkv", std::process::id()));
    archive::save(&path, &cache, tiny_model.config(), "balanced", 1, tokens.len()).unwrap();
    let err = archive::load(&path, model.config()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.to_string().contains("fingerprint") || err.to_string().contains("mismatch"),
        "{err}"
    );
}
