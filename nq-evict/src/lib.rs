//! Token importance scorers and eviction policies for transformer KV caches.
//!
//! The first stage of the nexusquant pipeline: after a prefill, score every cached token of
//! every (layer, kv head), then keep the attention sinks, the recent window and the most
//! important of the rest within a budget. Eviction is physical: [`select`] returns, per head,
//! the sorted indices of the kept tokens, and [`gather`] compacts keys, values and positions.
//!
//! **Scorers** (each implements [`Scorer`] over one (layer, kv head) unit, [`ScoreInput`]):
//!
//! | type | method | reads |
//! |---|---|---|
//! | [`ObservedAttention`] | SnapKV: causal attention of the last `w` prompt queries, pooled | keys, queries, positions |
//! | [`ExpectedAttention`] | kvpress Expected Attention: Gaussian model of future queries | keys, queries |
//! | [`KeyNorm`] | low key norm = keep (Devoto et al. 2024) | keys |
//! | [`KeyKey`] | the Python original's: keys as queries, no mask (for comparison) | keys |
//! | [`Recency`] | StreamingLLM: latest first (for comparison) | positions |
//! | [`ValueNorm`] | any scorer times `||v||` | values |
//! | [`Blend`] | weighted mix of two normalized scorers | both parts' |
//!
//! GQA is handled in the scorers: the `group` query heads sharing a kv head are scored and
//! combined by [`GroupReduce`] (mean or max).
//!
//! **Policies** ([`Policy`], [`select`]): sinks and recent window always kept; a [`Budget`]
//! per head, shared [`Split::PerHead`], [`Split::PerLayer`] (Ada-KV) or [`Split::Global`];
//! optional pyramid per-layer budgets; exact budgets, deterministic ties, monotone in the
//! budget.
//!
//! All inputs are plain `f32` slices; every malformed input is an [`Error`], never a panic.
//! [`reference`](mod@reference) holds naive oracles of every scorer and of [`select`].
//!
//! # Examples
//!
//! Score one kv head with the observed attention of its window, then keep 40%:
//!
//! ```
//! use nq_evict::{select, Budget, ObservedAttention, Policy, ScoreInput, Scorer, Shape, Split};
//!
//! let (t, d, w, group) = (64usize, 8usize, 4usize, 2usize);
//! // A toy head: token i's key points along axis i % d; the queries look along axis 3.
//! let keys: Vec<f32> = (0..t * d).map(|x| if x % d == (x / d) % d { 2.0 } else { 0.0 }).collect();
//! let queries: Vec<f32> = (0..group * w * d).map(|x| if x % d == 3 { 1.0 } else { 0.0 }).collect();
//! let key_positions: Vec<u32> = (0..t as u32).collect();
//! let query_positions: Vec<u32> = (t - w..t).map(|p| p as u32).collect();
//! let input = ScoreInput {
//!     keys: &keys,
//!     values: None,
//!     queries: &queries,
//!     query_positions: &query_positions,
//!     key_positions: &key_positions,
//!     d,
//! };
//! let policy = Policy {
//!     sinks: 2,
//!     recent: 8,
//!     budget: Budget::KeepFraction(0.4),
//!     split: Split::PerHead,
//!     ..Policy::default()
//! };
//! let scorer = ObservedAttention { kernel: 1, protect: policy.protect(), ..Default::default() };
//! let mut scores = vec![0.0f32; t];
//! scorer.score(&input, &mut scores)?;
//! let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: t }, &policy)?;
//! println!("kept {:?}", kept[0]);
//! assert_eq!(kept[0].len(), 26); // round(0.4 * 64)
//! // every token whose key points along axis 3 is kept
//! assert!((0..t as u32).filter(|i| i % 8 == 3).all(|i| kept[0].contains(&i)));
//! # Ok::<(), nq_evict::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod error;
mod input;
mod kernel;
mod policy;
pub mod reference;
mod scorers;

pub use error::{Error, Result};
pub use input::{Dims, GroupReduce, Protect, ScoreInput, Scorer};
pub use kernel::Pool;
pub use policy::{Budget, HeadNorm, Policy, Shape, Shortfall, Split, gather, select};
pub use scorers::combine::{Blend, ValueNorm};
pub use scorers::expected::ExpectedAttention;
pub use scorers::observed::ObservedAttention;
pub use scorers::simple::{KeyKey, KeyNorm, Recency};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
