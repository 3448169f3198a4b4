//! E8 lattice quantization, the heart of the nexusquant pipeline.
//!
//! After eviction, RoPE removal and the randomized Hadamard transform, every KV vector is
//! cut into blocks of 8 values and each block is replaced by a point of the E8 lattice
//! (Conway & Sloane, *Sphere Packings, Lattices and Groups*, ch. 20): fixed-rate codes
//! for the resident cache that attention reads, variable-rate symbols for the archive that
//! `nq-entropy` codes.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

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
