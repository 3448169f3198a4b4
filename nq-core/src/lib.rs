//! The nexusquant composition: the `Backend` trait, presets, the compressed KV layout and
//! the CPU backend.
//!
//! `nq-core` composes the stage crates (evict -> RoPE inversion -> randomized Hadamard ->
//! scale -> E8 codes) into a resident compressed cache that attention reads directly.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
