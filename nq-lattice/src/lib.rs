//! E8 lattice quantization, the heart of the nexusquant pipeline.
//!
//! After eviction, RoPE removal and the randomized Hadamard transform, every KV vector is
//! cut into blocks of 8 values and each block is replaced by a point of the E8 lattice
//! (Conway & Sloane, *Sphere Packings, Lattices and Groups*, ch. 20): fixed-rate codes
//! for the resident cache that attention reads, variable-rate symbols for the archive that
//! `nq-entropy` codes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
