//! E8 lattice quantization, the heart of the nexusquant pipeline.
//!
//! After eviction, RoPE removal and the randomized Hadamard transform, every KV row (one
//! token of one head, `dim` values, a multiple of 8) is cut into blocks of 8 values and
//! each block is replaced by a point of (a subset of) the E8 lattice (Conway & Sloane,
//! *Sphere Packings, Lattices and Groups*, ch. 4 and 20), with one `f16` scale per row:
//!
//! - [`FixedCodec`]: fixed-rate codes for the **resident** cache, 2, 3 or 4 bits per value.
//!   Attention reads them in place: [`FixedCodec::dot_rows`] gives the scores
//!   `s_n <q, c_n>` and [`FixedCodec::axpy_rows`] accumulates `Σ p_n s_n c_n`, decoding
//!   each block from two small tables in L1 (no dequantized copy).
//! - [`VariableCodec`]: the nearest E8 point at a chosen step, as coset-aware symbols that
//!   `nq-entropy` codes for the **archive**.
//! - [`nearest_e8`]: the exact nearest-point decoder underneath.
//!
//! ```
//! use half::f16;
//! use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
//!
//! let (rows, dim) = (4, 64);
//! let keys: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0).collect();
//! let codec = FixedCodec::new(FixedBits::B2, ScaleMode::default())?;
//! let mut codes = vec![0u8; codec.code_len(rows, dim)]; // 2 bits per value: 64 B per row
//! let mut scales = vec![f16::ZERO; rows];
//! codec.encode_rows(&keys, dim, &mut codes, &mut scales)?;
//!
//! // Attention scores straight from the codes.
//! let query = vec![0.1f32; dim];
//! let mut scores = vec![0.0f32; rows];
//! codec.dot_rows(&query, &codes, &scales, &mut scores)?;
//!
//! // The same as decoding first.
//! let mut decoded = vec![0.0f32; rows * dim];
//! codec.decode_rows(&codes, &scales, dim, &mut decoded)?;
//! for (n, s) in scores.iter().enumerate() {
//!     let d: f32 = decoded[n * dim..(n + 1) * dim].iter().map(|v| v * 0.1).sum();
//!     assert!((s - d).abs() <= 1e-4 * d.abs().max(1.0));
//! }
//! # Ok::<(), nq_lattice::Error>(())
//! ```
//!
//! # The fixed codes, and why these
//!
//! All figures: N(0, 1) data (the randomized Hadamard transform makes KV rows close to
//! that), SQNR = 10 log10(Σx² / Σ(x − x̂)²), scale bits not counted (they are
//! `16 / dim` per value: 0.125 at `dim` = 128). Produced by `examples/report.rs`
//! (2^20 blocks) unless said otherwise. Shannon's bound at 2 bits is 12.04 dB; Lloyd-Max
//! scalar quantization gets 9.30 / 14.62 / 20.22 dB at 2 / 3 / 4 bits.
//!
//! **2 bits: an E8P-style codebook** (2^16 points of E8 + ¼ inside a ball; after QuIP#,
//! Tseng et al., 2024). Decoding an index is one 8-float load from a 256-entry table of
//! base points, a sign flip from 7 index bits (the 8th is their parity) and a ±¼ shift.
//! Against the nested-lattice (Voronoi) code E8 / 4E8, at the best global scale:
//!
//! | code | SQNR at 2 bits |
//! |---|---|
//! | this E8P-style codebook | 10.38 dB |
//! | Voronoi E8 / 4E8, overloaded points wrapped | 6.44 dB |
//! | Voronoi E8 / 4E8, overloaded points shrunk into the cell | 9.72 dB |
//!
//! The Voronoi code's cell is not a ball, and every Gaussian tail point must be pulled
//! back into it; E8P's ball shape wins by 0.7 dB and decodes from a table instead of a
//! nearest-point computation. One departure from QuIP#: its 256 patterns are the 227
//! absolute-value patterns of D8 + ½ with squared norm ≤ 10 plus 29 of the 56 patterns
//! ((3/2)^5, ½^3); here the last 29 are the 28 permutations of (5/2, 5/2, ½^6) and
//! (3/2)^8, so the codebook is closed under coordinate permutations and the exact nearest
//! codeword has a closed form (sort `|x ∓ ¼|`, score 9 multisets from prefix sums, assign
//! by rank) with no search and no per-block branch, so the same code runs one block per
//! SIMD lane (one branch per group of lanes takes a rank-based path when a block has tied
//! magnitudes). Both choices give 10.38 dB at 2 bits (10.384 vs 10.386 dB, 300k vectors).
//!
//! **3 and 4 bits: two stages.** 3 bits: E8P, then the residual `2 (x − c1)` coded with a
//! 256-word codebook (the origin, the 240 roots of E8, 15 of ±2e_i), decoded at half
//! scale. 4 bits: E8P, then `4 (x − c1)` coded with E8P again, decoded at quarter scale.
//! The encoder is greedy: the nearest first-stage word, then the nearest residual word.
//! (Trying the nearest first-stage word of each shift and keeping the better pair gains
//! 0.01 dB at 3 bits and 0.08 dB at 4 bits, `Rms` scale, for a second residual search:
//! at 4 bits 6 nearest-E8P searches per block instead of 4.)
//! Decoding is two table lookups. At the best global scale:
//!
//! | bits | two-stage (this crate) | Voronoi E8 / qE8, shrink | Voronoi, wrap |
//! |---|---|---|---|
//! | 3 | 15.27 dB | 15.44 dB (q = 8) | 12.57 dB |
//! | 4 | 20.73 dB | 20.91 dB (q = 16) | 18.50 dB |
//!
//! With the shrink rule the Voronoi codes are 0.17 to 0.18 dB better at one global scale,
//! but every decoded block costs a nearest-E8 computation (and an overloaded block up to
//! 12 of them to encode), where the two-stage codes decode, and feed `dot_rows`, with two
//! table loads: for the resident cache read at every decoding step, speed wins. (The
//! residual stage is where QuIP#'s norm-12 patterns help: 20.89 dB at 4 bits in an
//! exploratory f64 prototype on 20k vectors.) The Voronoi figures come from
//! [`reference::voronoi_quantize`], records `lattice_voronoi`.
//!
//! # Scales
//!
//! One scale per row, stored as `f16`; the codes are always chosen for, or refitted to,
//! the rounded scale. [`ScaleMode::Rms`] uses `k σ̂` with a per-code factor
//! ([`rms_factor`]); [`ScaleMode::BestOf`] tries a few decision scales around it, refits
//! each to the least-squares scale of its codewords and keeps the best; [`ScaleMode::AbsMax`]
//! maps the largest magnitude to the largest codeword coordinate. Rows of 128, SQNR in dB:
//!
//! | bits | AbsMax | Rms | BestOf 1 | BestOf 2 | BestOf 4 (default) | BestOf 8 |
//! |---|---|---|---|---|---|---|
//! | 2 | 10.16 | 10.45 | 10.48 | 10.50 | 10.51 | 10.51 |
//! | 3 | 12.96 | 15.39 | 15.43 | 15.50 | 15.54 | 15.55 |
//! | 4 | 16.93 | 20.86 | 20.90 | 21.06 | 21.19 | 21.22 |
//!
//! Per-row scales beat the single global scale (gain-shape coding), and the search gains
//! most at 4 bits. `BestOf { candidates: n }` costs `n` encodings: the default (4) encodes
//! about 4 times slower than `Rms` or `BestOf { candidates: 1 }`, which are the rules to
//! use where encoding speed matters more than 0.03 dB (2 bits) to 0.3 dB (4 bits).
//!
//! # Variable rate and the symbol layout
//!
//! [`VariableCodec`] rounds each block of `x / (step · rms)` to the nearest E8 point
//! `y = z + c/2` and emits the coset bit `c` and `z_0..z_6, (z_7 − p)/2` with
//! `p = (z_0 + .. + z_6) mod 2` (see [`VariableCodec`] for the exact contract). The stored
//! scale is refitted by least squares, which pulls reconstructions toward their cells'
//! centroids. Until `nq-entropy` measures real bytes, the rate is the order-0 entropy of
//! these symbols ([`empirical_entropy_bits_per_dim`]): at `step` = 1.1, rows of 128,
//! 11.0 dB at 2.04 bits per value (1.99 bits with one model per coset,
//! [`coset_context_entropy_bits_per_dim`]).
//!
//! # Bad input
//!
//! NaN or infinite inputs, lengths that are not whole rows of a multiple of 8, and wrong
//! buffer lengths return a typed [`Error`] before anything is written. A row of zeros gets
//! scale 0 and decodes to exact zeros. Every code decodes (all 2^16 E8P indices are valid);
//! corrupt scales (negative, NaN, infinite) are rejected. No input makes a codec panic or
//! emit a NaN.
//!
//! # Instruction sets
//!
//! Encoders run on 8 (AVX2) or 16 (AVX-512F) blocks at once, one block per lane, with the
//! exact operation sequence of the portable path ([`Isa`]); decoding and the fused
//! primitives hold one block per AVX2 register. `RUSTFLAGS="--cfg nq_force_scalar"` forces
//! the portable path; the environment variable `NQ_FORCE_AVX2=1` makes runtime detection skip
//! AVX-512, so an AVX-512 machine measures the AVX2 path.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
// The kernels loop over the 8 coordinates of several arrays at once; an index reads
// better there than nested zips.
#![allow(clippy::needless_range_loop)]

mod check;
pub mod codebook;
mod e8;
mod e81b;
mod e8p;
mod error;
mod fixed;
mod isa;
mod lanes;
pub mod reference;
mod scale;
#[allow(unsafe_code)]
mod simd;
mod variable;

pub use e8::{EXACT_RANGE, nearest_e8};
pub use error::{Error, Result};
pub use fixed::{FixedBits, FixedCodec};
pub use isa::Isa;
pub use scale::{BEST_OF_SPREAD, DEFAULT_CANDIDATES, MAX_CANDIDATES, ScaleMode, rms_factor};
pub use variable::{
    MAX_STEP, MIN_STEP, VariableCodec, coset_context_entropy_bits_per_dim,
    empirical_entropy_bits_per_dim,
};

/// Widens `f16` values to `f32` (exact), as the encode pipeline gathers rows for the codecs:
/// 8 values per F16C conversion where the CPU has it, `half`'s conversion otherwise (the same
/// bits; NaN payloads included).
///
/// # Errors
/// [`Error::Len`] if `dst.len() != src.len()`.
///
/// # Examples
/// ```
/// use half::f16;
/// let src = [f16::from_f32(1.5), f16::from_f32(-0.25), f16::MAX];
/// let mut dst = [0.0f32; 3];
/// nq_lattice::widen_f16(&src, &mut dst)?;
/// assert_eq!(dst, [1.5, -0.25, 65504.0]);
/// # Ok::<(), nq_lattice::Error>(())
/// ```
pub fn widen_f16(src: &[half::f16], dst: &mut [f32]) -> Result<()> {
    check::len("widen_f16", "dst", src.len(), dst.len())?;
    simd::widen(src, dst);
    Ok(())
}

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
