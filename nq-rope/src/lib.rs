//! Rotary position embeddings: apply and invert, for every layout real checkpoints use.
//!
//! In the nexusquant pipeline keys arrive post-RoPE; this stage can remove the rotation
//! (at each kept token's original position) before the Hadamard transform, and re-apply
//! it at attention time. RoPE (Su et al. 2021, *RoFormer*) rotates each pair of a head
//! vector by the angle `position * inv_freq_k`; since rotations are orthogonal, removing it
//! is applying the transpose.
//!
//! - Layouts ([`RopeLayout`]): split-half (`rotate_half`: HF Llama, Qwen, Mistral, Gemma) and
//!   interleaved pairs (GPT-J, candle's `rope_i`, GGUF llama checkpoints).
//! - Partial rotary (`rotary_dim < head_dim`, Phi): the tail passes through unchanged.
//! - Scaling ([`RopeScaling`]): none, linear, llama3, YaRN (with its attention factor) and
//!   dynamic NTK, following `transformers.modeling_rope_utils`.
//! - Positions are explicit per row (`&[u32]`), because an evicted cache is not contiguous.
//! - Angles are computed in f64 (`f64(p) * inv_freq`, f64 `sin_cos`, rounded to f32) so
//!   [`Rope::invert`] undoes [`Rope::apply`] to f32 rounding at any position.
//! - [`Rope::table`] precomputes the cosines and sines of a position list once, for all the
//!   heads and layers that share a rope ([`Rope::apply_table`]).
//! - [`reference`](mod@reference): naive f64 oracles transliterated from the HF formulas.
//!
//! # Example
//! ```
//! use nq_rope::{Rope, RopeConfig, RopeLayout, RopeScaling};
//!
//! // A Llama 3.1 GGUF head: interleaved pairs, llama3 frequency scaling.
//! let cfg = RopeConfig::new(128, 500_000.0)
//!     .with_layout(RopeLayout::Interleaved)
//!     .with_scaling(RopeScaling::llama31());
//! let rope = Rope::new(cfg)?;
//!
//! // Three kept keys of an evicted cache, at their original positions.
//! let positions = [0u32, 4_097, 131_000];
//! let keys: Vec<f32> = (0..3 * 128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
//! let mut post_rope = keys.clone();
//! rope.apply(&mut post_rope, &positions)?;
//!
//! // Remove RoPE (e.g. before quantization), then put it back.
//! let mut plain = post_rope.clone();
//! rope.invert(&mut plain, &positions)?;
//! let err = keys.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
//! assert!(err < 1e-5);
//! # Ok::<(), nq_rope::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod error;
mod freqs;
pub mod reference;
mod rope;
mod trig;

pub use config::{RopeConfig, RopeLayout, RopeScaling};
pub use error::{Error, Result};
pub use rope::{Rope, RopeTable};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
