//! Attention over the compressed cache against the dense reference.

use nq_core::{CompressedCache, CompressionConfig, EvictConfig, KvShape, Preset, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(crate) fn gauss(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller: keeps the tests free of extra distribution crates.
            let u: f64 = rng.random_range(1e-12..1.0);
            let v: f64 = rng.random_range(0.0..1.0);
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

struct Case {
    shape: KvShape,
    k: Vec<f32>,
    v: Vec<f32>,
    pos: Vec<u32>,
}

fn case(seed: u64, head_dim: usize, t: usize) -> Case {
    let shape = KvShape { layers: 2, q_heads: 6, kv_heads: 2, head_dim };
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.kv_heads * t * head_dim;
    Case { shape, k: gauss(&mut rng, n), v: gauss(&mut rng, n), pos: (0..t as u32).collect() }
}

fn run(c: &Case, cfg: CompressionConfig, q: &[f32], q_pos: &[u32]) -> Vec<f32> {
    let mut cache = CompressedCache::new(c.shape, cfg, None).unwrap();
    for layer in 0..c.shape.layers {
        // The test's own queries double as the observation window.
        cache.observe_queries(layer, q, q_pos).unwrap();
        cache.append(layer, &c.k, &c.v, &c.pos).unwrap();
    }
    cache.compress().unwrap();
    let mut out = vec![0f32; q.len()];
    cache.attend(1, q, q_pos, None, &mut out).unwrap();
    out
}

fn dense_reference(c: &Case, q: &[f32], q_pos: &[u32]) -> Vec<f32> {
    // f16 windows: the reference sees the same f16-rounded keys and values.
    let r = |x: &[f32]| x.iter().map(|&a| half::f16::from_f32(a).to_f32()).collect::<Vec<_>>();
    nq_core::reference::attention(q, q_pos, &r(&c.k), &r(&c.v), &c.pos, c.shape)
}

#[test]
fn uncompressed_matches_reference() {
    let c = case(1, 64, 300);
    let mut rng = StdRng::seed_from_u64(2);
    let q_pos: Vec<u32> = (250..300).collect();
    let q = gauss(&mut rng, c.shape.q_heads * q_pos.len() * 64);
    let got = run(&c, Preset::None.config(), &q, &q_pos);
    let want = dense_reference(&c, &q, &q_pos);
    // f32 dot products and softmax over <= 300 terms: well inside 1e-5 relative.
    let err = rel_err(&got, &want);
    assert!(err < 300.0 * 8.0 * f64::from(f32::EPSILON), "relative error {err}");
}

#[test]
fn f16_codes_without_eviction_match_reference() {
    // Compressed region in f16 through the rotation: only rotation rounding and f16 rounding
    // of the rotated rows separate it from the reference.
    let c = case(3, 64, 400);
    let cfg = CompressionConfig {
        evict: EvictConfig { keep: 1.0, ..CompressionConfig::default().evict },
        keys: Storage::F16,
        values: Storage::F16,
        ..CompressionConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(4);
    let q_pos: Vec<u32> = (360..400).collect();
    let q = gauss(&mut rng, c.shape.q_heads * q_pos.len() * 64);
    let got = run(&c, cfg, &q, &q_pos);
    let want = dense_reference(&c, &q, &q_pos);
    let err = rel_err(&got, &want);
    assert!(err < 2e-3, "relative error {err} (f16 rounding of rotated rows is ~5e-4)");
}

#[test]
fn e8_codes_without_eviction_are_close() {
    // 2-bit E8 codes at ~10 dB SQNR per row: attention outputs stay well correlated.
    for d in [64, 128] {
        let c = case(5, d, 400);
        let cfg = CompressionConfig {
            evict: EvictConfig { keep: 1.0, ..CompressionConfig::default().evict },
            ..CompressionConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(6);
        let q_pos: Vec<u32> = (380..400).collect();
        let q = gauss(&mut rng, c.shape.q_heads * q_pos.len() * d);
        let got = run(&c, cfg, &q, &q_pos);
        let want = dense_reference(&c, &q, &q_pos);
        let err = rel_err(&got, &want);
        assert!(err < 0.45, "d={d}: relative error {err}");
        let high = CompressionConfig {
            keys: Storage::E8 { bits: 4 },
            values: Storage::E8 { bits: 4 },
            ..cfg
        };
        let err4 = rel_err(&run(&c, high, &q, &q_pos), &want);
        assert!(err4 < err / 2.0, "d={d}: 4-bit error {err4} not well below 2-bit {err}");
    }
}

#[test]
fn non_power_of_two_head_dim_works() {
    // head_dim 96 = Hadamard blocks 64 + 32.
    let c = case(7, 96, 200);
    let mut rng = StdRng::seed_from_u64(8);
    let q_pos: Vec<u32> = (190..200).collect();
    let q = gauss(&mut rng, c.shape.q_heads * q_pos.len() * 96);
    let cfg = CompressionConfig {
        evict: EvictConfig { keep: 1.0, ..CompressionConfig::default().evict },
        keys: Storage::F16,
        values: Storage::F16,
        ..CompressionConfig::default()
    };
    let err = rel_err(&run(&c, cfg, &q, &q_pos), &dense_reference(&c, &q, &q_pos));
    assert!(err < 2e-3, "relative error {err}");
}
