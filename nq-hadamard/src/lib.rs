//! Fast Walsh-Hadamard transform, plain and randomized (`H D`, seeded sign flips).
//!
//! In the nexusquant pipeline this stage sits between RoPE removal and lattice
//! quantization: it spreads the energy of each key/value vector evenly over its
//! coordinates so that a per-vector scale fits every 8-value lattice block. Because the
//! transform is orthogonal, attention can run in the rotated space:
//! `(H D q) . (H D k) = q . k`.
//!
//! - [`fwht`] / [`fwht_rows`]: orthonormal transform `x <- H x / sqrt(n)` in place, one row or
//!   a row-major batch. `H` is Sylvester-ordered (`H[i][j] = (-1)^popcount(i & j)`), so the
//!   transform is its own inverse.
//! - [`RandomizedHadamard`]: `x <- H D x` and its exact inverse `x <- D H x`, with the ±1
//!   diagonal `D` drawn from a `u64` seed by SplitMix64 ([`sign_bits`] documents the exact,
//!   frozen bit layout: stored caches depend on it).
//! - [`reference`](mod@reference): naive O(n²) dense-matrix oracles in f64.
//!
//! The kernels are O(n log n) butterflies with the `1/sqrt(n)` scale and the sign flips
//! folded into the first or last stage. An AVX2+FMA kernel is chosen at run time
//! ([`Isa::detect`]); the scalar kernel is always compiled and gives bit-identical results
//! (build with `RUSTFLAGS="--cfg nq_force_scalar"` to force it).
//!
//! # Lengths that are not a power of two
//!
//! The transform length must be a power of two; anything else is a typed
//! [`Error::NotPowerOfTwo`] error, never a silent pad. Callers with, say, `head_dim = 96`
//! choose one of two orthogonal extensions:
//!
//! - **Zero-pad** to [`padded_len`]`(96) = 128`: copy the 96 values into a 128-float row whose
//!   last 32 are zero, transform the 128. Dot products are preserved and energy is spread over
//!   all 128 coordinates, but 128 values are stored per vector (+33%).
//! - **Block-diagonal** with [`blocks_for`]`(96) = [64, 32]`: transform `x[..64]` and
//!   `x[64..96]` separately (two transforms or two [`RandomizedHadamard`]s with different
//!   seeds). Still orthogonal and no storage overhead, but energy only mixes within a block.
//!
//! # Example
//! ```
//! use nq_hadamard::{RandomizedHadamard, fwht_rows};
//!
//! // Two key rows of head_dim 8: the randomized transform keeps their dot product.
//! let k = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
//! let q = [0.5f32, -1.0, 0.25, 2.0, 0.0, 1.0, -0.5, 1.5];
//! let rh = RandomizedHadamard::new(8, 0xC0FFEE)?;
//! let (mut hk, mut hq) = (k, q);
//! rh.forward(&mut hk)?;
//! rh.forward(&mut hq)?;
//! let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
//! assert!((dot(&hk, &hq) - dot(&k, &q)).abs() < 1e-4);
//! rh.inverse(&mut hk)?; // D H undoes H D
//! assert!(hk.iter().zip(&k).all(|(a, b)| (a - b).abs() < 1e-5));
//!
//! // Plain FWHT over a batch is an involution.
//! let mut batch = vec![1.0f32; 4 * 16];
//! fwht_rows(&mut batch, 16)?;
//! fwht_rows(&mut batch, 16)?;
//! assert!(batch.iter().all(|&v| (v - 1.0).abs() < 1e-6));
//! # Ok::<(), nq_hadamard::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod blocks;
mod error;
mod fwht;
mod isa;
mod kernel;
mod randomized;
pub mod reference;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd;

pub use blocks::{blocks_for, padded_len};
pub use error::{Error, Result};
pub use fwht::{fwht, fwht_rows, fwht_rows_with, fwht_with};
pub use isa::Isa;
pub use randomized::{RandomizedHadamard, sign_bits, splitmix64};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
