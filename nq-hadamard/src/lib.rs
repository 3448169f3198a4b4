//! Fast Walsh-Hadamard transform, plain and randomized (`H D`, seeded sign flips).
//!
//! In the nexusquant pipeline this stage sits between RoPE removal and lattice
//! quantization: it spreads the energy of each key/value vector evenly over its
//! coordinates so that a per-vector scale fits every 8-value lattice block.
#![deny(unsafe_code)]
#![deny(missing_docs)]
