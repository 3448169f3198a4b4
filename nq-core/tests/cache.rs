//! The cache's bookkeeping: budgets, windows, continuous compression, memory honesty.

use nq_core::{CompressedCache, CompressionConfig, KvShape, PoolKind, Preset, Storage};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::attention::gauss;

const SHAPE: KvShape = KvShape { layers: 3, q_heads: 9, kv_heads: 3, head_dim: 64 };

fn filled(cfg: CompressionConfig, t: usize, seed: u64) -> CompressedCache {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cache = CompressedCache::new(SHAPE, cfg, None).unwrap();
    let d = SHAPE.head_dim;
    let pos: Vec<u32> = (0..t as u32).collect();
    let w = cfg.evict.window.min(t);
    for layer in 0..SHAPE.layers {
        let k = gauss(&mut rng, SHAPE.kv_heads * t * d);
        let v = gauss(&mut rng, SHAPE.kv_heads * t * d);
        let q = gauss(&mut rng, SHAPE.q_heads * w * d);
        cache.observe_queries(layer, &q, &pos[t - w..]).unwrap();
        cache.append(layer, &k, &v, &pos).unwrap();
    }
    cache
}

#[test]
fn budget_is_held_after_prefill() {
    for preset in Preset::ALL {
        let cfg = preset.config();
        let t = 2000;
        let mut cache = filled(cfg, t, 1);
        cache.compress().unwrap();
        let s = cache.stats();
        let per_head = (s.compressed_slots + s.dense_slots) / (SHAPE.layers * SHAPE.kv_heads);
        let budget = (f64::from(cfg.evict.keep) * t as f64).round() as usize;
        assert_eq!(per_head, budget, "{preset:?}: {s:?}");
        assert_eq!(
            s.dense_slots,
            SHAPE.layers * SHAPE.kv_heads * (cfg.evict.sinks + cfg.evict.recent)
        );
        assert_eq!(
            s.compressed_slots + s.dense_slots + s.evicted_slots,
            SHAPE.layers * SHAPE.kv_heads * t
        );
    }
}

/// Max pooling keeps the neighbours of the tokens the window attends to: the kept tokens
/// come in longer runs than with a 5-token average, at the same budget.
#[test]
fn max_pooling_keeps_spans() {
    let mean_run = |cfg: CompressionConfig| {
        let mut cache = filled(cfg, 1000, 4);
        cache.compress().unwrap();
        let (mut kept, mut runs) = (0usize, 0usize);
        for layer in 0..SHAPE.layers {
            for head in 0..SHAPE.kv_heads {
                let pos = cache.positions(layer, head).to_vec();
                kept += pos.len();
                runs += 1 + pos.windows(2).filter(|w| w[1] != w[0] + 1).count();
            }
        }
        (kept, kept as f64 / runs as f64)
    };
    let mut avg = Preset::Balanced.config();
    (avg.evict.pool, avg.evict.pool_kernel) = (PoolKind::Avg, 5);
    let mut max = avg;
    (max.evict.pool, max.evict.pool_kernel) = (PoolKind::Max, 7);
    let ((kept_avg, run_avg), (kept_max, run_max)) = (mean_run(avg), mean_run(max));
    assert_eq!(kept_avg, kept_max);
    assert!(run_max > run_avg, "mean run: max7 {run_max}, avg5 {run_avg}");
}

#[test]
fn resident_bytes_are_the_buffers() {
    // Memory honesty: the reported bytes are the sum of what the buffers hold, recomputed
    // here from first principles for 2-bit keys and values.
    let cfg = Preset::Balanced.config();
    let mut cache = filled(cfg, 1000, 2);
    cache.compress().unwrap();
    let s = cache.stats();
    let d = SHAPE.head_dim;
    let code_bytes = |s: Storage| d / 8 * usize::from(s.bits()); // one byte per bit per 8 values
    // K and V codes, two f16 scales.
    let per_compressed = code_bytes(cfg.keys) + code_bytes(cfg.values) + 2 * 2;
    // Each head's positions: a bitmap from the first kept token's 64-token word to the last
    // one's, with that first word's index.
    let mut bitmaps = 0;
    for layer in 0..SHAPE.layers {
        for head in 0..SHAPE.kv_heads {
            let pos = cache.positions(layer, head).to_vec();
            if let (Some(first), Some(last)) = (pos.first(), pos.last()) {
                bitmaps += (last / 64 - first / 64 + 1) as usize * 8 + 4;
            }
        }
    }
    let per_dense_slot = 2 * d * 2 + 4; // f16 K and V, attention-mass score
    let expected = s.compressed_slots * per_compressed
        + bitmaps
        + s.dense_slots * per_dense_slot
        + SHAPE.layers * (cfg.evict.sinks + cfg.evict.recent) * 4 // dense positions, per layer
        + SHAPE.layers * 2 * d * 4 // rotation signs
        + SHAPE.layers * SHAPE.kv_heads * 2 * d * 4 // key and value means (centering)
        + SHAPE.layers * SHAPE.kv_heads * d * 4; // per-channel key smoothing
    assert_eq!(s.resident_bytes, expected, "{s:?}");
    assert_eq!(s.fp16_bytes, 2 * SHAPE.layers * SHAPE.kv_heads * 1000 * d * 2);
    assert!(s.ratio() > 5.0, "balanced ratio {}", s.ratio());
}

#[test]
fn decode_tokens_are_compressed_in_blocks() {
    // The preset keeps every decode-time token; `None` falls back to the prompt's fraction.
    let with_decode_keep = |k: Option<f32>| {
        let mut cfg = Preset::Balanced.config();
        cfg.evict.decode_keep = k;
        cfg
    };
    assert_eq!(Preset::Balanced.config().evict.decode_keep, Some(1.0));
    for cfg in [Preset::Balanced.config(), with_decode_keep(None), with_decode_keep(Some(0.75))] {
        decode_blocks(cfg);
    }
}

/// Three blocks of decode-time tokens are compressed at the decode-time keep fraction.
fn decode_blocks(cfg: CompressionConfig) {
    let t0 = 500;
    let mut cache = filled(cfg, t0, 3);
    cache.compress().unwrap();
    let before = cache.stats();
    let mut rng = StdRng::seed_from_u64(4);
    let d = SHAPE.head_dim;
    let steps = 3 * cfg.block + 10;
    for i in 0..steps {
        let p = (t0 + i) as u32;
        for layer in 0..SHAPE.layers {
            let k = gauss(&mut rng, SHAPE.kv_heads * d);
            let q = gauss(&mut rng, SHAPE.q_heads * d);
            cache.append(layer, &k, &k, &[p]).unwrap();
            let mut out = vec![0f32; q.len()];
            cache.attend(layer, &q, &[p], None, &mut out).unwrap();
            assert!(out.iter().all(|x| x.is_finite()));
        }
        cache.compress().unwrap();
    }
    let after = cache.stats();
    let units = SHAPE.layers * SHAPE.kv_heads;
    // Three full blocks left the recent window and were compressed at the kept fraction.
    let keep = cfg.evict.decode_keep.unwrap_or(cfg.evict.keep);
    let per_block = (f64::from(keep) * cfg.block as f64).round() as usize;
    assert_eq!(after.compressed_slots - before.compressed_slots, units * 3 * per_block);
    assert_eq!(after.dense_slots, units * (cfg.evict.sinks + cfg.evict.recent + 10));
    assert_eq!(after.tokens_seen, t0 + steps);
}

#[test]
fn chunked_prefill_never_requantizes() {
    // Compressing after every chunk only touches new tokens: codes already written stay
    // byte-identical.
    let cfg = Preset::Balanced.config();
    let mut rng = StdRng::seed_from_u64(5);
    let d = SHAPE.head_dim;
    let mut cache = CompressedCache::new(SHAPE, cfg, None).unwrap();
    let chunk = 300;
    let mut snapshot: Option<Vec<u8>> = None;
    for c in 0..3u32 {
        let pos: Vec<u32> = (c * chunk..(c + 1) * chunk).collect();
        for layer in 0..SHAPE.layers {
            let k = gauss(&mut rng, SHAPE.kv_heads * chunk as usize * d);
            let q = gauss(&mut rng, SHAPE.q_heads * 32 * d);
            cache.observe_queries(layer, &q, &pos[pos.len() - 32..]).unwrap();
            cache.append(layer, &k, &k, &pos).unwrap();
        }
        cache.compress().unwrap();
        let codes = cache.key_codes(0, 0).to_vec();
        if let Some(prev) = &snapshot {
            assert!(codes.len() > prev.len());
            assert_eq!(&codes[..prev.len()], &prev[..], "chunk {c} rewrote earlier codes");
        }
        snapshot = Some(codes);
    }
}

#[test]
fn kept_positions_are_sorted_and_original() {
    let cfg = Preset::Max.config();
    let mut cache = filled(cfg, 1500, 6);
    cache.compress().unwrap();
    for layer in 0..SHAPE.layers {
        for head in 0..SHAPE.kv_heads {
            let pos = cache.positions(layer, head).to_vec();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "layer {layer} head {head}");
            assert!(pos.iter().all(|&p| (cfg.evict.sinks as u32..1500 - cfg.evict.recent as u32).contains(&p)));
        }
    }
}

#[test]
fn none_preset_keeps_everything_dense() {
    let mut cache = filled(Preset::None.config(), 400, 7);
    cache.compress().unwrap();
    let s = cache.stats();
    assert_eq!(s.compressed_slots, 0);
    assert_eq!(s.dense_slots, SHAPE.layers * SHAPE.kv_heads * 400);
}

#[test]
fn window_mass_from_the_model_selects_like_the_queries() {
    // A model can hand over the window's attention (computed during its prefill) instead of
    // letting `compress` recompute it from the queries: the kept tokens must be the same.
    let (t, d, group) = (600usize, SHAPE.head_dim, SHAPE.group());
    let cfg = Preset::Balanced.config();
    let w = cfg.evict.window;
    let pos: Vec<u32> = (0..t as u32).collect();
    let mut rng = StdRng::seed_from_u64(9);
    let mut plain = CompressedCache::new(SHAPE, cfg, None).unwrap();
    let mut with_mass = plain.clone();
    for layer in 0..SHAPE.layers {
        let k = gauss(&mut rng, SHAPE.kv_heads * t * d);
        let v = gauss(&mut rng, SHAPE.kv_heads * t * d);
        let q = gauss(&mut rng, SHAPE.q_heads * w * d);
        // The reference mass, in f64 over the f16 keys the cache holds.
        let mut mass = vec![0f32; SHAPE.q_heads * t];
        for (h, row) in mass.chunks_exact_mut(t).enumerate() {
            let keys = &k[(h / group) * t * d..][..t * d];
            let mut acc = vec![0f64; t];
            for (j, qj) in q[h * w * d..][..w * d].chunks_exact(d).enumerate() {
                let qp = t - w + j;
                let logits: Vec<f64> = keys
                    .chunks_exact(d)
                    .take(qp + 1)
                    .map(|kr| {
                        let dot: f64 = kr
                            .iter()
                            .zip(qj)
                            .map(|(&a, &b)| f64::from(half::f16::from_f32(a)) * f64::from(b))
                            .sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                for (a, l) in acc.iter_mut().zip(&logits) {
                    *a += (l - max).exp() / sum;
                }
            }
            row.iter_mut().zip(&acc).for_each(|(m, a)| *m = *a as f32);
        }
        for cache in [&mut plain, &mut with_mass] {
            cache.observe_queries(layer, &q, &pos[t - w..]).unwrap();
            cache.append(layer, &k, &v, &pos).unwrap();
        }
        with_mass.observe_attention(layer, &mass).unwrap();
        assert!(with_mass.observe_attention(layer, &mass[1..]).is_err(), "short mass");
    }
    let before = with_mass.stats().resident_bytes;
    assert_eq!(before, plain.stats().resident_bytes + SHAPE.layers * SHAPE.q_heads * t * 4);
    plain.compress().unwrap();
    with_mass.compress().unwrap();
    for layer in 0..SHAPE.layers {
        for head in 0..SHAPE.kv_heads {
            assert_eq!(plain.positions(layer, head), with_mass.positions(layer, head));
        }
    }
    // The mass is transient: gone with the queries once the prompt is compressed.
    assert_eq!(with_mass.stats().resident_bytes, plain.stats().resident_bytes);
}

#[test]
fn key_smoothing_protects_the_channels_queries_weigh_most() {
    // Keys whose largest channels are the ones queries ignore, and queries that lean on a
    // small key channel (Qwen-like): smoothing moves quantization error off that channel, so
    // the attention logits of the compressed keys are closer to the exact ones.
    let (t, d) = (400usize, SHAPE.head_dim);
    let mut rng = StdRng::seed_from_u64(11);
    let mut k = gauss(&mut rng, SHAPE.kv_heads * t * d);
    let mut q = gauss(&mut rng, SHAPE.q_heads * 128 * d);
    for row in k.chunks_exact_mut(d) {
        row[1..8].iter_mut().for_each(|x| *x *= 20.0);
        row[0] *= 0.05;
    }
    for row in q.chunks_exact_mut(d) {
        row[0] *= 50.0;
    }
    let pos: Vec<u32> = (0..t as u32).collect();
    // One query per query head: the first window query of each.
    let probe: Vec<f32> = q.chunks_exact(128 * d).flat_map(|h| h[..d].to_vec()).collect();
    let mut errs = Vec::new();
    for smooth_keys in [false, true] {
        let cfg = CompressionConfig {
            evict: nq_core::EvictConfig { keep: 1.0, ..Preset::Balanced.config().evict },
            keys: Storage::E8 { bits: 3 },
            values: Storage::F16,
            smooth_keys,
            ..Preset::Balanced.config()
        };
        let mut cache = CompressedCache::new(SHAPE, cfg, None).unwrap();
        for layer in 0..SHAPE.layers {
            cache.observe_queries(layer, &q, &pos[t - 128..]).unwrap();
            cache.append(layer, &k, &k, &pos).unwrap();
        }
        cache.compress().unwrap();
        // Values are the keys (kept in f16): the output is a softmax-weighted key, compared
        // with the exact attention.
        let mut out = vec![0f32; SHAPE.q_heads * d];
        cache.attend(0, &probe, &[t as u32], None, &mut out).unwrap();
        let reference = nq_core::reference::attention(&probe, &[t as u32], &k, &k, &pos, SHAPE);
        let err: f64 =
            out.iter().zip(&reference).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
        errs.push(err);
    }
    assert!(errs[1] < 0.5 * errs[0], "smoothing should cut the error: {errs:?}");
}

#[test]
fn key_smoothing_survives_a_prompt_of_only_sinks_and_recent_tokens() {
    // 12 prompt tokens: nothing to compress after prefill (4 sinks + 16 recent). The first
    // rows are compressed while decoding; smoothing must still be computed then, from the
    // queries seen so far, and the query window dropped once it is.
    let cfg = Preset::Balanced.config();
    let d = SHAPE.head_dim;
    let mut rng = StdRng::seed_from_u64(5);
    let mut cache = CompressedCache::new(SHAPE, cfg, None).unwrap();
    let prompt: Vec<u32> = (0..12).collect();
    for layer in 0..SHAPE.layers {
        cache.observe_queries(layer, &gauss(&mut rng, SHAPE.q_heads * 12 * d), &prompt).unwrap();
        let kv = gauss(&mut rng, SHAPE.kv_heads * 12 * d);
        cache.append(layer, &kv, &kv, &prompt).unwrap();
    }
    cache.compress().unwrap();
    assert_eq!(cache.stats().compressed_slots, 0);
    for p in 12..12 + 200u32 {
        for layer in 0..SHAPE.layers {
            cache.observe_queries(layer, &gauss(&mut rng, SHAPE.q_heads * d), &[p]).unwrap();
            let kv = gauss(&mut rng, SHAPE.kv_heads * d);
            cache.append(layer, &kv, &kv, &[p]).unwrap();
        }
        cache.compress().unwrap();
    }
    let s = cache.stats();
    assert!(s.compressed_slots > 0, "{s:?}");
    for layer in 0..SHAPE.layers {
        for head in 0..SHAPE.kv_heads {
            let h = cache.head(layer, head);
            if h.pos.is_empty() {
                continue; // the budget split gave this head no row yet: nothing to smooth
            }
            assert_eq!(h.k_smooth.len(), d, "layer {layer} head {head} lost its smoothing");
            assert!(h.k_smooth.iter().all(|s| s.is_finite() && *s > 0.0));
        }
    }
    // The window is gone once smoothing has its statistics: resident bytes hold no queries.
    let before = cache.stats().resident_bytes;
    let mut out = vec![0f32; SHAPE.q_heads * d];
    cache.attend(0, &gauss(&mut rng, SHAPE.q_heads * d), &[212], None, &mut out).unwrap();
    assert_eq!(cache.stats().resident_bytes, before);
    assert!(before < s.fp16_bytes, "{s:?}");
}

#[test]
fn batched_rows_path_matches_one_cache_at_a_time() {
    // Two sequences of different lengths decode through `append_rows` + one batched
    // `attend_rows` call per layer; two copies go through `append` + `attend` one by one.
    // Outputs and storage must agree bit for bit, across decode-time block compressions.
    let cfg = Preset::Balanced.config();
    let (mut a, mut b) = (filled(cfg, 300, 11), filled(cfg, 420, 12));
    a.compress().unwrap();
    b.compress().unwrap();
    let (mut a1, mut b1) = (a.clone(), b.clone());
    let mut rng = StdRng::seed_from_u64(13);
    let (d, hq, hkv) = (SHAPE.head_dim, SHAPE.q_heads, SHAPE.kv_heads);
    for i in 0..cfg.block + 5 {
        let pos = [300 + i as u32, 420 + i as u32];
        for layer in 0..SHAPE.layers {
            let k = gauss(&mut rng, 2 * hkv * d);
            let v = gauss(&mut rng, 2 * hkv * d);
            let q = gauss(&mut rng, 2 * hq * d);
            let (ka, kb) = k.split_at(hkv * d);
            let (va, vb) = v.split_at(hkv * d);
            a.append_rows(layer, ka, va, &pos[..1]).unwrap();
            b.append_rows(layer, kb, vb, &pos[1..]).unwrap();
            let mut out = vec![0f32; q.len()];
            CompressedCache::attend_rows(&mut [&mut a, &mut b], layer, &q, &pos, None, &mut out)
                .unwrap();
            let (qa, qb) = q.split_at(hq * d);
            let mut one = vec![0f32; q.len()];
            a1.append(layer, ka, va, &pos[..1]).unwrap();
            a1.attend(layer, qa, &pos[..1], None, &mut one[..hq * d]).unwrap();
            b1.append(layer, kb, vb, &pos[1..]).unwrap();
            b1.attend(layer, qb, &pos[1..], None, &mut one[hq * d..]).unwrap();
            assert_eq!(out, one, "step {i}, layer {layer}");
        }
        for c in [&mut a, &mut b, &mut a1, &mut b1] {
            c.compress().unwrap();
        }
    }
    assert_eq!(a.stats(), a1.stats());
    assert!(a.stats().compressed_slots > 0);
    for layer in 0..SHAPE.layers {
        for head in 0..hkv {
            assert_eq!(a.head(layer, head), a1.head(layer, head));
            assert_eq!(b.head(layer, head), b1.head(layer, head));
        }
    }
}

#[test]
fn batched_rows_path_rejects_bad_batches() {
    let cfg = Preset::Balanced.config();
    let (mut a, mut b) = (filled(cfg, 100, 1), filled(Preset::Max.config(), 100, 2));
    let d = SHAPE.head_dim;
    let q = vec![0.5f32; 2 * SHAPE.q_heads * d];
    let mut out = vec![0f32; q.len()];
    let none: &mut [&mut CompressedCache] = &mut [];
    let e = CompressedCache::attend_rows(none, 0, &q, &[1], None, &mut out).unwrap_err();
    assert!(matches!(e, nq_core::Error::Len { what: "caches", .. }), "{e}");
    let e = CompressedCache::attend_rows(&mut [&mut a, &mut b], 0, &q, &[100, 100], None, &mut out)
        .unwrap_err();
    assert!(matches!(e, nq_core::Error::Config { .. }), "{e}");
    let mut a2 = a.clone();
    let e = CompressedCache::attend_rows(&mut [&mut a, &mut a2], 0, &q, &[100], None, &mut out)
        .unwrap_err();
    assert!(matches!(e, nq_core::Error::Len { what: "positions", .. }), "{e}");
    let e = CompressedCache::attend_rows(
        &mut [&mut a, &mut a2],
        0,
        &q[1..],
        &[100, 100],
        None,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, nq_core::Error::Len { what: "q", .. }), "{e}");
    let e = a.append_rows(0, &q[..5], &q[..5], &[100]).unwrap_err();
    assert!(matches!(e, nq_core::Error::Len { what: "k", .. }), "{e}");
    assert_eq!(a.len(0), 100, "nothing appended on error");
}
