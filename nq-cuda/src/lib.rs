//! CUDA backend for nexusquant: kernels compiled at run time by NVRTC.
//!
//! Implements `nq_core::Backend` on an NVIDIA GPU; the CPU backend of `nq-core` is its
//! test oracle.
#![deny(missing_docs)]
