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

/// Rows uploaded once and handed over in place against the host `append` and `attend`,
/// over a block and a half of decode steps (decode-time blocks compressed as they leave the
/// recent window). One sequence: outputs and every stored buffer agree bit for bit (the
/// same kernels read the same inputs). Two sequences attended in one launch against one
/// call each: the launch splits the contexts by the longest one, so a shorter sequence's
/// splits differ, and each split rounds its softmax weights to f16 against its own running
/// maximum (the bound nq-core's conformance harness derives: about 2^-10 of the output's
/// scale); outputs agree within 2^-10 of their largest magnitude (the first H100 run
/// measured 9.1e-5, the longer sequence bit for bit) and the caches hold the same slots.
#[test]
fn device_rows_match_the_host_path() {
    let Some(gpu) = gpu() else { return };
    let (d, hq, hkv) = (SHAPE.head_dim, SHAPE.q_heads, SHAPE.kv_heads);
    let s = gpu.stream().clone();
    let steps = Preset::Balanced.config().block * 3 / 2;
    let up = |x: &[f32]| s.clone_htod(x).unwrap();
    let (mut a, mut a1) = (prompt_cache(&gpu, 700, 1), prompt_cache(&gpu, 700, 1));
    let (mut b, mut c) = (prompt_cache(&gpu, 500, 2), prompt_cache(&gpu, 900, 3));
    let (mut b1, mut c1) = (prompt_cache(&gpu, 500, 2), prompt_cache(&gpu, 900, 3));
    let mut worst = 0f32;
    for i in 0..steps {
        for layer in 0..SHAPE.layers {
            let seed = (i * 7 + layer) as u64;
            let k = test_rows(2 * hkv, d, 3 * seed);
            let v = test_rows(2 * hkv, d, 3 * seed + 1);
            let q = test_rows(2 * hq, d, 3 * seed + 2);
            let (kd, vd, qd) = (up(&k), up(&v), up(&q));
            let (half, qhalf) = (hkv * d, hq * d);

            // One sequence, in place and through the host.
            let p = [700 + i as u32];
            a.append_rows(layer, &kd.slice(..half), &vd.slice(..half), &p).unwrap();
            let mut out = s.alloc_zeros::<f32>(qhalf).unwrap();
            let qa = qd.slice(..qhalf);
            CompressedCache::attend_rows(
                &mut [&mut a],
                layer,
                &qa,
                &p,
                None,
                &mut out.slice_mut(..),
            )
            .unwrap();
            let mut one = vec![0f32; qhalf];
            a1.append(layer, &k[..half], &v[..half], &p).unwrap();
            a1.attend(layer, &q[..qhalf], &p, None, &mut one).unwrap();
            assert_eq!(s.clone_dtoh(&out).unwrap(), one, "step {i}, layer {layer}");

            // Two sequences in one launch, and one call each through the host.
            let pos = [500 + i as u32, 900 + i as u32];
            b.append_rows(layer, &kd.slice(..half), &vd.slice(..half), &pos[..1]).unwrap();
            c.append_rows(layer, &kd.slice(half..), &vd.slice(half..), &pos[1..]).unwrap();
            let mut out = s.alloc_zeros::<f32>(q.len()).unwrap();
            let mut batch = [&mut b, &mut c];
            CompressedCache::attend_rows(
                &mut batch,
                layer,
                &qd.slice(..),
                &pos,
                None,
                &mut out.slice_mut(..),
            )
            .unwrap();
            let out = s.clone_dtoh(&out).unwrap();
            let mut each = vec![0f32; q.len()];
            b1.append(layer, &k[..half], &v[..half], &pos[..1]).unwrap();
            b1.attend(layer, &q[..qhalf], &pos[..1], None, &mut each[..qhalf]).unwrap();
            c1.append(layer, &k[half..], &v[half..], &pos[1..]).unwrap();
            c1.attend(layer, &q[qhalf..], &pos[1..], None, &mut each[qhalf..]).unwrap();
            let scale = each.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = out.iter().zip(&each).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            worst = worst.max(diff / scale);
        }
        for cache in [&mut a, &mut a1, &mut b, &mut b1, &mut c, &mut c1] {
            cache.compress().unwrap();
        }
    }
    eprintln!("two sequences in one launch against one call each: worst {worst:.2e}");
    assert!(worst <= 1.0 / 1024.0, "batched outputs differ by {worst:e}");
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
    assert!(a.stats().compressed_slots > 0);
    assert_eq!(a.stats(), a1.stats());
    assert_eq!(image(&a), image(&a1));
    for (x, y) in [(&b, &b1), (&c, &c1)] {
        let (sx, sy) = (x.stats(), y.stats());
        assert_eq!((sx.compressed_slots, sx.dense_slots), (sy.compressed_slots, sy.dense_slots));
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
