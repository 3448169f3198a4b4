//! The device-input path (`Backend::append_rows` / `attend_rows`): rows that already sit in
//! device memory, as a GPU model's projections do, against the host-slice path.

use nq_core::testing::test_rows;
use nq_core::{CompressedCache, KvShape, Preset};
use nq_cuda::{CudaBackend, CudaError};

use crate::gpu;

const SHAPE: KvShape = KvShape { layers: 2, q_heads: 8, kv_heads: 2, head_dim: 128 };

/// A cache on `gpu` holding `t` prompt tokens (random rows and observation queries),
/// compressed once.
fn prompt_cache(gpu: &CudaBackend, t: usize, seed: u64) -> CompressedCache<CudaBackend> {
    let cfg = Preset::Balanced.config();
    let mut cache = CompressedCache::with_backend(gpu.clone(), SHAPE, cfg, None).unwrap();
    let (d, w) = (SHAPE.head_dim, cfg.evict.window.min(t));
    let pos: Vec<u32> = (0..t as u32).collect();
    for layer in 0..SHAPE.layers {
        let s = seed * 10 + layer as u64;
        let q = test_rows(SHAPE.q_heads * w, d, s + 1000);
        cache.observe_queries(layer, &q, &pos[t - w..]).unwrap();
        let k = test_rows(SHAPE.kv_heads * t, d, 2 * s);
        let v = test_rows(SHAPE.kv_heads * t, d, 2 * s + 1);
        cache.append(layer, &k, &v, &pos).unwrap();
    }
    cache.compress().unwrap();
    cache
}

/// Two sequences decode a block and a half: one batched `attend_rows` launch per layer over
/// rows uploaded once, against two copies going through the host `append` and `attend` one
/// by one. Outputs and storage agree bit for bit (the same kernels, the same inputs).
#[test]
fn device_rows_match_the_host_path() {
    let Some(gpu) = gpu() else { return };
    let (mut a, mut b) = (prompt_cache(&gpu, 700, 1), prompt_cache(&gpu, 900, 2));
    let (mut a1, mut b1) = (prompt_cache(&gpu, 700, 1), prompt_cache(&gpu, 900, 2));
    let (d, hq, hkv) = (SHAPE.head_dim, SHAPE.q_heads, SHAPE.kv_heads);
    let s = gpu.stream().clone();
    let steps = Preset::Balanced.config().block * 3 / 2;
    for i in 0..steps {
        let pos = [700 + i as u32, 900 + i as u32];
        for layer in 0..SHAPE.layers {
            let seed = (i * 7 + layer) as u64;
            let k = test_rows(2 * hkv, d, 3 * seed);
            let v = test_rows(2 * hkv, d, 3 * seed + 1);
            let q = test_rows(2 * hq, d, 3 * seed + 2);
            let (kd, vd, qd) =
                (s.clone_htod(&k).unwrap(), s.clone_htod(&v).unwrap(), s.clone_htod(&q).unwrap());
            let half = hkv * d;
            a.append_rows(layer, &kd.slice(..half), &vd.slice(..half), &pos[..1]).unwrap();
            b.append_rows(layer, &kd.slice(half..), &vd.slice(half..), &pos[1..]).unwrap();
            let mut out = s.alloc_zeros::<f32>(q.len()).unwrap();
            let mut caches = [&mut a, &mut b];
            CompressedCache::attend_rows(
                &mut caches,
                layer,
                &qd.slice(..),
                &pos,
                None,
                &mut out.slice_mut(..),
            )
            .unwrap();
            let out = s.clone_dtoh(&out).unwrap();
            let mut one = vec![0f32; q.len()];
            let (qa, qb) = q.split_at(hq * d);
            a1.append(layer, &k[..half], &v[..half], &pos[..1]).unwrap();
            a1.attend(layer, qa, &pos[..1], None, &mut one[..hq * d]).unwrap();
            b1.append(layer, &k[half..], &v[half..], &pos[1..]).unwrap();
            b1.attend(layer, qb, &pos[1..], None, &mut one[hq * d..]).unwrap();
            assert_eq!(out, one, "step {i}, layer {layer}");
        }
        for c in [&mut a, &mut b, &mut a1, &mut b1] {
            c.compress().unwrap();
        }
    }
    // The storage itself: every buffer of every layer, through an archive of each cache.
    let image = |c: &CompressedCache<CudaBackend>| {
        let id = nq_core::ModelId {
            architecture: "test".into(),
            shape: SHAPE,
            rope_theta: 1e4,
            rope_layout: 0,
            rope_scaling: Vec::new(),
        };
        c.save(Vec::new(), &id, "balanced", &Vec::new()).unwrap()
    };
    for (x, y) in [(&a, &a1), (&b, &b1)] {
        assert_eq!(x.stats(), y.stats());
        assert!(x.stats().compressed_slots > 0);
        assert_eq!(image(x), image(y));
    }
}

/// A NaN appended from device memory is not caught at the append (that would wait for the
/// stream) but by the next compression, which refuses, with the value's index.
#[test]
fn non_finite_device_rows_stop_the_next_compression() {
    let Some(gpu) = gpu() else { return };
    let mut cache = prompt_cache(&gpu, 300, 3);
    let (d, hkv) = (SHAPE.head_dim, SHAPE.kv_heads);
    let s = gpu.stream().clone();
    let block = Preset::Balanced.config().block;
    let mut failed = None;
    for i in 0..3 * block {
        let p = 300 + i as u32;
        for layer in 0..SHAPE.layers {
            let mut k = test_rows(hkv, d, i as u64);
            if i == 5 && layer == 1 {
                k[d + 3] = f32::NAN;
            }
            let kd = s.clone_htod(&k).unwrap();
            cache.append_rows(layer, &kd.slice(..), &kd.slice(..), &[p]).unwrap();
        }
        if let Err(e) = cache.compress() {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the compression of the block holding the NaN fails");
    let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<CudaError>());
    assert!(
        matches!(source, Some(CudaError::NonFinite { index, .. }) if *index == (d + 3) as u64),
        "{e}: {source:?}"
    );
}
