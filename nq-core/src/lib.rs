//! The nexusquant composition: the [`Backend`] trait, presets, the compressed KV layout and
//! the CPU backend.
//!
//! `nq-core` composes the stage crates into a resident compressed cache that attention reads
//! directly:
//!
//! ```text
//! append (f16) -> compress: nq-evict scores + selects -> nq-rope invert (optional)
//!              -> nq-hadamard H D -> nq-lattice scale + E8 codes  -> CompressedCache
//! attend: rotate q once, dot with codes, accumulate values rotated, un-rotate once
//! save/load: nq-entropy archive (.nqkv)
//! ```
//!
//! ```
//! use nq_core::{CompressedCache, KvShape, Preset};
//! let shape = KvShape { layers: 1, q_heads: 2, kv_heads: 1, head_dim: 64 };
//! let mut cache = CompressedCache::new(shape, Preset::Balanced.config(), None)?;
//! let t = 2048;
//! let k: Vec<f32> = (0..t * 64).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
//! let positions: Vec<u32> = (0..t as u32).collect();
//! let q = vec![0.1f32; 2 * 128 * 64];
//! cache.observe_queries(0, &q, &positions[t - 128..])?;
//! cache.append(0, &k, &k, &positions)?;
//! cache.compress()?;
//! let stats = cache.stats();
//! assert!(stats.ratio() > 5.0, "{stats:?}");
//! let mut out = vec![0f32; 2 * 64];
//! cache.attend(0, &q[..2 * 64], &[t as u32], None, &mut out)?;
//! # Ok::<(), nq_core::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod archive;
mod attention;
mod backend;
mod cache;
mod codec;
mod config;
mod cpu;
mod error;
mod evict;
mod lattice;
mod positions;
pub mod prep;
pub mod reference;
mod rotation;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use archive::{ArchiveSummary, Extras, ModelId, inspect};
pub use backend::{Backend, DenseRows};
pub use cache::{CacheStats, CompressedCache, KvShape};
pub use config::{
    BudgetSplit, CompressionConfig, EvictConfig, PoolKind, Preset, ScorerKind, Storage,
};
pub use cpu::{CpuBackend, CpuLayer};
pub use error::{Error, Result};
pub use positions::Positions;
pub use rotation::Rotation;

// What the public API takes, re-exported so users need not depend on the stage crates.
pub use nq_hadamard::{RandomizedHadamard, splitmix64};
pub use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
pub use nq_rope::Rope;
pub use store::{
    AttendQuery, ByteBreakdown, CompressJob, EncodeSteps, HeadImage, LayerSpec, LayerUsage,
};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
