//! Backend conformance harness (feature `testing`): runs every [`Backend`] operation on a
//! backend and checks it against [`CpuBackend`], the oracle. `nq-cuda` instantiates it with
//! [`backend_tests!`](crate::backend_tests). Also the deterministic data the benchmarks and
//! timing examples use.

use crate::backend::{Backend, CpuBackend, Rows};
use crate::cache::{CompressedCache, KvShape};
use crate::config::CompressionConfig;
use crate::error::Result;
use crate::rotation::{Rotation, splitmix};

/// A cache of `shape` filled with `t` tokens of [`test_rows`] keys and values per layer and an
/// observation window of `cfg.evict.window` queries, not yet compressed. With `mass`, the
/// window's attention mass is also handed over, as a model does from its prefill's own
/// attention (positive values summing to the window length per query head).
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) or [`Error::Config`](crate::Error::Config) for a bad
/// shape or configuration.
pub fn filled_cache(
    shape: KvShape,
    cfg: CompressionConfig,
    t: usize,
    mass: bool,
) -> Result<CompressedCache> {
    let mut cache = CompressedCache::new(shape, cfg, None)?;
    let d = shape.head_dim;
    let w = cfg.evict.window.min(t);
    let pos: Vec<u32> = (0..t as u32).collect();
    for layer in 0..shape.layers {
        let seed = layer as u64;
        let k = test_rows(shape.kv_heads * t, d, 2 * seed);
        let v = test_rows(shape.kv_heads * t, d, 2 * seed + 1);
        let q = test_rows(shape.q_heads * w, d, 1000 + seed);
        cache.observe_queries(layer, &q, &pos[t - w..])?;
        cache.append(layer, &k, &v, &pos)?;
        if mass {
            let mut m = test_rows(shape.q_heads, t, 2000 + seed);
            for row in m.chunks_exact_mut(t.max(1)) {
                row.iter_mut().for_each(|x| *x = x.abs());
                let sum: f32 = row.iter().sum();
                row.iter_mut().for_each(|x| *x *= w as f32 / sum);
            }
            cache.observe_attention(layer, &m)?;
        }
    }
    Ok(cache)
}

/// Deterministic test rows: roughly Gaussian values from a seed (sum of uniforms).
pub fn test_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n * dim)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                state = splitmix(state);
                acc += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * 1.7
        })
        .collect()
}

/// A conformance failure: which operation, and by how much.
#[derive(Debug)]
pub struct Mismatch {
    /// The operation.
    pub op: &'static str,
    /// What differed.
    pub detail: String,
}

fn fail(op: &'static str, detail: String) -> Mismatch {
    Mismatch { op, detail }
}

/// Check `upload`/`download`, `rotate` (both directions) and `encode`/`decode` of `backend`
/// against [`CpuBackend`] for head dimensions 64, 96, 128 and 256 and every E8 rate.
///
/// # Errors
/// The first [`Mismatch`] found, or a backend error rendered as one.
pub fn check_backend<B: Backend>(backend: &B) -> Result<(), Mismatch> {
    let cpu = CpuBackend;
    for dim in [64usize, 96, 128, 256] {
        let n = 300;
        let rows = Rows::new(n, dim).map_err(|e| fail("Rows::new", e.to_string()))?;
        let host = test_rows(n, dim, dim as u64);
        let err = |op: &'static str| move |e: B::Error| fail(op, e.to_string());
        let buf = backend.upload(&host).map_err(err("upload"))?;
        if backend.download(&buf).map_err(err("download"))? != host {
            return Err(fail("upload/download", format!("dim {dim}: round trip changed values")));
        }
        let rot = Rotation::new(dim, 42).map_err(|e| fail("Rotation::new", e.to_string()))?;
        for inverse in [false, true] {
            let mut dev = backend.upload(&host).map_err(err("upload"))?;
            backend.rotate(&mut dev, rows, &rot, inverse).map_err(err("rotate"))?;
            let got = backend.download(&dev).map_err(err("download"))?;
            let mut want = host.clone();
            cpu.rotate(&mut want, rows, &rot, inverse)
                .map_err(|e| fail("rotate", e.to_string()))?;
            // Normwise bound of a length-dim FWHT in f32, per row, with margin for a
            // different summation order: 8 * eps * log2(dim) * |row|.
            let bound = 8.0 * f32::EPSILON * (dim as f32).log2();
            for (r, (g, w)) in got.chunks(dim).zip(want.chunks(dim)).enumerate() {
                let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
                let e = g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
                if e > bound * norm {
                    return Err(fail(
                        "rotate",
                        format!(
                            "dim {dim} inverse {inverse} row {r}: error {e} > {}",
                            bound * norm
                        ),
                    ));
                }
            }
        }
        for bits in [2u8, 3, 4] {
            let codec =
                crate::lattice::fixed_codec(bits, 8).map_err(|e| fail("codec", e.to_string()))?;
            let dev = backend.upload(&host).map_err(err("upload"))?;
            let got = backend.encode(&dev, rows, &codec).map_err(err("encode"))?;
            let want =
                cpu.encode(&host, rows, &codec).map_err(|e| fail("encode", e.to_string()))?;
            let differing = got
                .codes
                .chunks(codec.bytes_per_block())
                .zip(want.codes.chunks(codec.bytes_per_block()))
                .filter(|(a, b)| a != b)
                .count();
            // Rows on a decision boundary may round either way on another device; more than
            // 1 block in 1000 is a bug.
            if differing * 1000 > want.codes.len() / codec.bytes_per_block() {
                return Err(fail(
                    "encode",
                    format!("dim {dim} bits {bits}: {differing} blocks differ"),
                ));
            }
            let dec = backend.decode(&want, rows, &codec).map_err(err("decode"))?;
            let dec = backend.download(&dec).map_err(err("download"))?;
            let cpu_dec =
                cpu.decode(&want, rows, &codec).map_err(|e| fail("decode", e.to_string()))?;
            if dec != cpu_dec {
                return Err(fail("decode", format!("dim {dim} bits {bits}: decoded rows differ")));
            }
        }
    }
    Ok(())
}

/// Instantiate the conformance test for a backend: `nq_core::backend_tests!(make_backend());`
/// expands to a `#[test]` that runs [`check_backend`].
#[macro_export]
macro_rules! backend_tests {
    ($make:expr) => {
        #[test]
        fn backend_conformance() {
            let backend = $make;
            if let Err(m) = $crate::testing::check_backend(&backend) {
                panic!("{}: {}", m.op, m.detail);
            }
        }
    };
}
