//! Properties of DenseCache: any split of the new tokens into calls gives the same outputs as
//! one call; truncate + re-append reproduces the same outputs.

use candle_core::{Device, Tensor};
use nq_candle::{AttnSpec, DenseCache, KvCache};
use proptest::prelude::*;

fn t3(data: &[f32], h: usize, t: usize, d: usize) -> Tensor {
    Tensor::from_vec(data.to_vec(), (h, t, d), &Device::Cpu).unwrap()
}

/// Rows `[a, b)` of every head of a `[h, t, d]` buffer.
fn rows(data: &[f32], h: usize, t: usize, d: usize, a: usize, b: usize) -> Vec<f32> {
    (0..h).flat_map(|i| data[(i * t + a) * d..(i * t + b) * d].iter().copied()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_split_equals_one_call(
        hkv in 1usize..4,
        group in 1usize..4,
        d in prop::sample::select(vec![8usize, 24, 64]),
        splits in prop::collection::vec(1usize..9, 1..6),
        window in prop::option::of(1usize..12),
        chunk in 1usize..10,
        seed in any::<u64>(),
    ) {
        let hq = hkv * group;
        let t: usize = splits.iter().sum();
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let q: Vec<f32> = (0..hq * t * d).map(|_| next()).collect();
        let k: Vec<f32> = (0..hkv * t * d).map(|_| next()).collect();
        let v: Vec<f32> = (0..hkv * t * d).map(|_| next()).collect();
        let pos: Vec<u32> = (0..t as u32).map(|p| p * 2 + 1).collect();
        let spec = AttnSpec { window: window.map(|w| w * 2), ..AttnSpec::standard(d) };
        let full = DenseCache::new()
            .attend_with(0, &t3(&q, hq, t, d), &t3(&k, hkv, t, d), &t3(&v, hkv, t, d), &pos, &spec)?
            .to_vec3::<f32>()?;
        let mut cache = DenseCache::new().with_query_chunk(chunk);
        let mut a = 0;
        for n in &splits {
            let b = a + n;
            let out = cache.attend_with(
                0,
                &t3(&rows(&q, hq, t, d, a, b), hq, *n, d),
                &t3(&rows(&k, hkv, t, d, a, b), hkv, *n, d),
                &t3(&rows(&v, hkv, t, d, a, b), hkv, *n, d),
                &pos[a..b],
                &spec,
            )?.to_vec3::<f32>()?;
            for h in 0..hq {
                for i in 0..*n {
                    for c in 0..d {
                        let (x, y) = (out[h][i][c], full[h][a + i][c]);
                        // Summation order only; values <= 2 in magnitude.
                        prop_assert!((x - y).abs() <= 8.0 * f32::EPSILON * (d + t) as f32 * 2.0, "{x} vs {y}");
                    }
                }
            }
            a = b;
        }
        prop_assert_eq!(cache.len(), t);
        // Truncating to the first split and replaying the rest reproduces the same outputs.
        let first = splits[0];
        cache.truncate(first);
        prop_assert_eq!(cache.len(), first);
        let out = cache.attend_with(
            0,
            &t3(&rows(&q, hq, t, d, first, t), hq, t - first, d).contiguous()?,
            &t3(&rows(&k, hkv, t, d, first, t), hkv, t - first, d),
            &t3(&rows(&v, hkv, t, d, first, t), hkv, t - first, d),
            &pos[first..],
            &spec,
        );
        if t > first {
            let out = out?.to_vec3::<f32>()?;
            for h in 0..hq {
                for i in 0..t - first {
                    for c in 0..d {
                        prop_assert!((out[h][i][c] - full[h][first + i][c]).abs() <= 8.0 * f32::EPSILON * (d + t) as f32 * 2.0);
                    }
                }
            }
        } else {
            prop_assert!(out.is_err(), "an empty attend must fail");
        }
    }
}
