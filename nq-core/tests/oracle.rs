//! The proptest oracle of the cache: random shapes, configurations, query windows, RoPE
//! removal on and off, decode-time blocks; attention over the compressed cache against exact
//! f64 attention over what it stores (`reference::stored_attention`), within the bound that
//! function derives from the arithmetic.

use nq_core::reference::stored_attention;
use nq_core::{CompressedCache, CompressionConfig, EvictConfig, KvShape, Preset, Storage};
use nq_rope::{Rope, RopeConfig};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::attention::gauss;

#[derive(Clone, Debug)]
struct Case {
    shape: KvShape,
    cfg: CompressionConfig,
    prompt: usize,
    decode: usize,
    /// Query rows per attention call, and the sliding window.
    t: usize,
    window: Option<usize>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, 1usize..=3, prop::sample::select(vec![8usize, 16, 64, 96])),
        (0usize..3, 0.1f32..=1.0, 2u8..=4, 2u8..=4, any::<bool>(), any::<bool>()),
        (1usize..=300, 0usize..=90, 1usize..=3, prop::option::of(1usize..=80), any::<u64>()),
    )
        .prop_map(|((layers, kv, group, d), (preset, keep, kb, vb, rope, center), rest)| {
            let base = [Preset::High, Preset::Balanced, Preset::Max][preset].config();
            let cfg = CompressionConfig {
                evict: EvictConfig { keep, window: 16, ..base.evict },
                keys: Storage::E8 { bits: kb },
                values: Storage::E8 { bits: vb },
                remove_rope: rope,
                center,
                block: 16,
                ..base
            };
            let shape = KvShape { layers, q_heads: kv * group, kv_heads: kv, head_dim: d };
            let (prompt, decode, t, window, seed) = rest;
            Case { shape, cfg, prompt, decode, t, window, seed }
        })
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let Case { shape, cfg, prompt, decode, t, window, seed } = case.clone();
    let d = shape.head_dim;
    let rope = Rope::new(RopeConfig::new(d, 10_000.0)).unwrap();
    let mut cache = CompressedCache::new(shape, cfg, Some(rope.clone())).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let pos: Vec<u32> = (0..prompt as u32).collect();
    let w = cfg.evict.window.min(prompt);
    for layer in 0..shape.layers {
        let q = gauss(&mut rng, shape.q_heads * w * d);
        cache.observe_queries(layer, &q, &pos[prompt - w..]).unwrap();
        let (k, v) = (
            gauss(&mut rng, shape.kv_heads * prompt * d),
            gauss(&mut rng, shape.kv_heads * prompt * d),
        );
        cache.append(layer, &k, &v, &pos).unwrap();
    }
    cache.compress().unwrap();
    for p in prompt..prompt + decode {
        let p = p as u32;
        for layer in 0..shape.layers {
            let (k, v) = (gauss(&mut rng, shape.kv_heads * d), gauss(&mut rng, shape.kv_heads * d));
            cache.append(layer, &k, &v, &[p]).unwrap();
            let q = gauss(&mut rng, shape.q_heads * d);
            let mut out = vec![0f32; q.len()];
            cache.attend(layer, &q, &[p], None, &mut out).unwrap();
        }
        cache.compress().unwrap();
    }
    let last = (prompt + decode) as u32 - 1;
    let positions: Vec<u32> =
        (0..t as u32).map(|i| last.saturating_sub(t as u32 - 1 - i)).collect();
    let positions = dedup(positions);
    for layer in 0..shape.layers {
        let q = gauss(&mut rng, shape.q_heads * positions.len() * d);
        let spec = cache.layer_spec(layer).unwrap();
        let heads: Vec<_> = (0..shape.kv_heads).map(|h| cache.head(layer, h).clone()).collect();
        let dense = cache.dense_positions(layer).to_vec();
        let w32 = window.map(|w| w as u32);
        let rope = cfg.remove_rope.then_some(&rope);
        let (want, bound) =
            stored_attention(&spec, &heads, &dense, &q, &positions, w32, rope).unwrap();
        let mut got = vec![f32::NAN; q.len()];
        cache.attend(layer, &q, &positions, window, &mut got).unwrap();
        for (i, (&g, (&w, &b))) in got.iter().zip(want.iter().zip(&bound)).enumerate() {
            prop_assert!(
                (f64::from(g) - w).abs() <= f64::from(b),
                "layer {layer} element {i}: {g} against exact {w} (bound {b:e})"
            );
        }
    }
    Ok(())
}

/// Positions strictly ascending (a prompt of one token gives repeats of 0).
fn dedup(mut p: Vec<u32>) -> Vec<u32> {
    p.dedup();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_the_exact_reference_over_the_stored_form(case in case()) {
        check(&case)?;
    }
}
