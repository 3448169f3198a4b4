//! Save and load through the .nqkv archive.

use nq_core::{CompressedCache, Error, KvShape, ModelId, Preset};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::attention::gauss;

const SHAPE: KvShape = KvShape { layers: 2, q_heads: 4, kv_heads: 2, head_dim: 64 };

fn model() -> ModelId {
    ModelId {
        architecture: "llama".into(),
        shape: SHAPE,
        rope_theta: 10000.0,
        rope_layout: 1,
        rope_scaling: Vec::new(),
    }
}

fn compressed(preset: Preset) -> CompressedCache {
    let mut rng = StdRng::seed_from_u64(11);
    let mut cache = CompressedCache::new(SHAPE, preset.config(), None).unwrap();
    let t = 700;
    let pos: Vec<u32> = (0..t as u32).collect();
    for layer in 0..SHAPE.layers {
        let k = gauss(&mut rng, SHAPE.kv_heads * t * 64);
        let v = gauss(&mut rng, SHAPE.kv_heads * t * 64);
        let q = gauss(&mut rng, SHAPE.q_heads * 32 * 64);
        cache.observe_queries(layer, &q, &pos[t - 32..]).unwrap();
        cache.append(layer, &k, &v, &pos).unwrap();
    }
    cache.compress().unwrap();
    cache
}

#[test]
fn round_trip_is_exact() {
    for preset in [Preset::High, Preset::Balanced, Preset::Max, Preset::None] {
        let mut cache = compressed(preset);
        let extras = vec![("next".to_owned(), vec![1u8, 2, 3])];
        let bytes = cache.save(Vec::new(), &model(), preset.name(), &extras).unwrap();
        let (mut back, name, got_extras) =
            CompressedCache::load(&bytes[..], &model(), None).unwrap();
        assert_eq!(name, preset.name());
        assert_eq!(got_extras, extras);
        assert_eq!(back.stats(), cache.stats(), "{preset:?}");
        let mut rng = StdRng::seed_from_u64(12);
        let q = gauss(&mut rng, SHAPE.q_heads * 64);
        let (mut a, mut b) = (vec![0f32; q.len()], vec![0f32; q.len()]);
        cache.attend(1, &q, &[700], None, &mut a).unwrap();
        back.attend(1, &q, &[700], None, &mut b).unwrap();
        assert_eq!(a, b, "{preset:?}: attention differs after the round trip");
    }
}

#[test]
fn archive_is_smaller_than_resident() {
    let cache = compressed(Preset::Balanced);
    let bytes = cache.save(Vec::new(), &model(), "balanced", &Vec::new()).unwrap();
    let s = cache.stats();
    assert!(
        bytes.len() < s.resident_bytes,
        "archive {} >= resident {}",
        bytes.len(),
        s.resident_bytes
    );
}

#[test]
fn wrong_model_is_refused() {
    let cache = compressed(Preset::Balanced);
    let bytes = cache.save(Vec::new(), &model(), "balanced", &Vec::new()).unwrap();
    let other = ModelId { rope_theta: 500000.0, ..model() };
    let err = CompressedCache::load(&bytes[..], &other, None).unwrap_err();
    assert!(matches!(err, Error::Entropy(nq_entropy::Error::FingerprintMismatch { .. })), "{err}");
}

#[test]
fn corrupt_archives_are_errors() {
    let cache = compressed(Preset::Max);
    let bytes = cache.save(Vec::new(), &model(), "max", &Vec::new()).unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    for i in 0..200 {
        let mut b = bytes.clone();
        match i % 3 {
            0 => b.truncate(rand::Rng::random_range(&mut rng, 0..bytes.len())),
            _ => {
                let at = rand::Rng::random_range(&mut rng, 0..bytes.len());
                b[at] ^= 1 << (i % 8);
            }
        }
        assert!(CompressedCache::load(&b[..], &model(), None).is_err(), "case {i} loaded");
    }
}

#[test]
fn config_bytes_round_trip_and_read_version_2() {
    use nq_core::{BudgetSplit, CompressionConfig, PoolKind, Preset};
    let mut configs: Vec<CompressionConfig> = Preset::ALL.iter().map(|p| p.config()).collect();
    let mut other = Preset::Balanced.config();
    other.evict.split = BudgetSplit::PerLayer;
    other.evict.value_norm = false;
    configs.push(other);
    let mut generous = Preset::Max.config();
    generous.evict.decode_keep = Some(0.75);
    configs.push(generous);
    let mut spans = Preset::High.config();
    (spans.evict.pool, spans.evict.pool_kernel) = (PoolKind::Max, 7);
    configs.push(spans);
    for cfg in configs {
        assert_eq!(CompressionConfig::from_bytes(&cfg.to_bytes()).unwrap(), cfg);
    }
    // Version 5 had no pooling (1 + 8 bytes; read as avg over 5, which `high` was then),
    // version 4 no decode-time keep (4 bytes), version 3 no key-smoothing byte either,
    // version 2 no value-norm byte.
    let mut high_avg5 = Preset::High.config();
    (high_avg5.evict.pool, high_avg5.evict.pool_kernel) = (PoolKind::Avg, 5);
    let mut v5 = spans.to_bytes();
    v5[0] = 5;
    v5.truncate(v5.len() - 9);
    let read = CompressionConfig::from_bytes(&v5).unwrap();
    assert_eq!(read, high_avg5);
    let mut v4 = Preset::Balanced.config().to_bytes();
    v4[0] = 4;
    v4.truncate(v4.len() - 13);
    let read = CompressionConfig::from_bytes(&v4).unwrap();
    let mut balanced_avg5 = Preset::Balanced.config();
    (balanced_avg5.evict.pool, balanced_avg5.evict.pool_kernel) = (PoolKind::Avg, 5);
    // Archives of version 4 evicted decode-time blocks at the prompt's fraction, and still do.
    balanced_avg5.evict.decode_keep = None;
    assert_eq!(read, balanced_avg5);
    let mut v3 = v4.clone();
    v3[0] = 3;
    v3.pop();
    let read = CompressionConfig::from_bytes(&v3).unwrap();
    assert!(read.evict.value_norm && !read.smooth_keys);
    let mut v2 = v3.clone();
    v2[0] = 2;
    v2.pop();
    let read = CompressionConfig::from_bytes(&v2).unwrap();
    assert!(!read.evict.value_norm && !read.smooth_keys);
    assert_eq!(read.evict.split, BudgetSplit::Global);
    // A bad value-norm or smoothing byte, a bad split tag, a bad decode-time keep, a bad
    // pooling tag or kernel, a truncated or future version: errors.
    for at in 14..=15 {
        let mut bad = Preset::Balanced.config().to_bytes();
        let n = bad.len();
        bad[n - at] = 7;
        assert!(CompressionConfig::from_bytes(&bad).is_err(), "flag byte {at} from the end");
    }
    let mut bad = Preset::Balanced.config().to_bytes();
    bad[42] = 9;
    assert!(CompressionConfig::from_bytes(&bad).is_err());
    let mut bad = Preset::Balanced.config().to_bytes();
    let n = bad.len();
    bad[n - 13..n - 9].copy_from_slice(&2.5f32.to_le_bytes());
    assert!(CompressionConfig::from_bytes(&bad).is_err(), "decode_keep 2.5");
    let mut bad = Preset::Balanced.config().to_bytes();
    let n = bad.len();
    bad[n - 9] = 2;
    assert!(CompressionConfig::from_bytes(&bad).is_err(), "pool tag 2");
    for kernel in [0u64, 6] {
        let mut bad = Preset::Balanced.config().to_bytes();
        let n = bad.len();
        bad[n - 8..].copy_from_slice(&kernel.to_le_bytes());
        assert!(CompressionConfig::from_bytes(&bad).is_err(), "pool kernel {kernel}");
    }
    let good = Preset::Balanced.config().to_bytes();
    assert!(CompressionConfig::from_bytes(&good[..good.len() - 2]).is_err());
    let mut future = good.clone();
    future[0] = 7;
    assert!(CompressionConfig::from_bytes(&future).is_err());
}

#[test]
fn inspect_reports_the_cache_bytes_by_component() {
    for preset in [Preset::High, Preset::Balanced, Preset::Max] {
        let cache = compressed(preset);
        let bytes = cache.save(Vec::new(), &model(), preset.name(), &Vec::new()).unwrap();
        let summary = nq_core::inspect(&bytes[..]).unwrap();
        let stats = cache.stats();
        assert_eq!(summary.preset, preset.name());
        assert_eq!(summary.config, preset.config());
        assert_eq!(summary.sections, 1 + SHAPE.layers);
        assert_eq!(summary.compressed_slots, stats.compressed_slots);
        assert_eq!(summary.dense_slots, stats.dense_slots);
        // Every component the archive stores decodes to what the cache holds; the rotations
        // are rebuilt from the seed, so they are the only difference.
        let mut resident = stats.bytes;
        resident.rotation = 0;
        assert_eq!(summary.bytes, resident, "{preset:?}");
        assert!(summary.bytes.key_codes > 0 && summary.bytes.value_codes > 0);
    }
}
