//! Coset-aware entropy coding of lattice indices and the `.nqkv` archive container.
//!
//! The last stage of the nexusquant pipeline, used only for storage and transfer: the
//! resident compressed cache is laid out so an entropy coder sees the real distribution
//! of its symbols, then written as a versioned, checksummed archive.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
