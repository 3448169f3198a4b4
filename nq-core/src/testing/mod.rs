//! Backend conformance harness (feature `testing`): runs a compressed cache on a backend and
//! on [`CpuBackend`], the oracle, and compares every result ([`check_backend`]). `nq-cuda`
//! instantiates it with [`backend_tests!`](crate::backend_tests). Also the deterministic data
//! the benchmarks and timing examples use.

mod conformance;

pub use conformance::{Perturbation, Perturbed, check_backend, check_rope_free_storage};

use crate::backend::Backend;
use crate::cache::{CompressedCache, KvShape};
use crate::config::CompressionConfig;
use crate::cpu::CpuBackend;
use crate::error::Result;
use crate::rotation::splitmix;
use nq_rope::Rope;

/// A conformance failure: which operation, and by how much.
#[derive(Debug)]
pub struct Mismatch {
    /// The operation.
    pub op: &'static str,
    /// What differed.
    pub detail: String,
}

pub(crate) fn fail(op: &'static str, detail: String) -> Mismatch {
    Mismatch { op, detail }
}

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
    filled_cache_on(CpuBackend, shape, cfg, t, mass)
}

/// [`filled_cache`] with its storage in `backend`.
///
/// # Errors
/// As [`filled_cache`], and backend failures.
pub fn filled_cache_on<B: Backend>(
    backend: B,
    shape: KvShape,
    cfg: CompressionConfig,
    t: usize,
    mass: bool,
) -> Result<CompressedCache<B>> {
    let mut cache = filled_cache_with(backend, shape, cfg, None, t)?;
    if mass {
        let w = cfg.evict.window.min(t);
        for layer in 0..shape.layers {
            let mut m = test_rows(shape.q_heads, t, 2000 + layer as u64);
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

/// [`filled_cache_on`] without attention mass, with the RoPE a `remove_rope` configuration
/// needs.
pub(crate) fn filled_cache_with<B: Backend>(
    backend: B,
    shape: KvShape,
    cfg: CompressionConfig,
    rope: Option<Rope>,
    t: usize,
) -> Result<CompressedCache<B>> {
    let mut cache = CompressedCache::with_backend(backend, shape, cfg, rope)?;
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

/// Instantiate the conformance tests for a backend: `nq_core::backend_tests!(make_backend());`
/// expands to two `#[test]`s, one running [`check_backend`], one [`check_rope_free_storage`].
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

        #[test]
        fn backend_conformance_rope_free_keys() {
            let backend = $make;
            if let Err(m) = $crate::testing::check_rope_free_storage(&backend) {
                panic!("{}: {}", m.op, m.detail);
            }
        }
    };
}
