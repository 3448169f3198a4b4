//! CUDA backend for nexusquant: [`nq_core::Backend`] on an NVIDIA GPU, with kernels
//! compiled at run time by NVRTC.
//!
//! `nq_core::CompressedCache::with_backend(CudaBackend::new(0)?, ..)` keeps the compressed
//! cache on the GPU: every layer's storage ([`CudaLayer`] over [`store::DeviceLayer`]), the
//! encode pipeline ([`encode::Encoder`]) and the fused decode attention
//! ([`attend::Attender`]) run there; only eviction scoring reads a few dense rows back. The CPU
//! backend of `nq-core` is its test oracle (`nq_core::testing::check_backend`, run by this
//! crate's tests through `backend_tests!`).
//!
//! | operation | where it runs |
//! |---|---|
//! | storage of a layer | [`store::DeviceLayer`]: codes, scales, positions, f16 dense rows, means, growable device buffers |
//! | encode (`Backend::compress`) | [`encode::Encoder`], `kernels/encode.cu`: gather, center, smooth, randomized Hadamard, scale and E8 codes in one launch per head; codes bit-identical to the CPU (RoPE inversion is not on the device yet: refused as `Unsupported`) |
//! | decode attention (`Backend::attend`) | [`attend::Attender`], `kernels/attend.cu`: flash-decoding over the codes in place (tensor cores, GQA, B sequences per call) |
//! | eviction scores | on the host, from the few dense rows `Backend::dense_rows` reads back |
//!
//! The crate builds without a CUDA toolkit (cudarc loads `libcuda` and `libnvrtc`
//! dynamically). At run time [`CudaBackend::new`] returns [`CudaError::NoLibrary`] when
//! the driver library is missing, instead of panicking. NVRTC (`libnvrtc.so`, e.g. from
//! `/usr/local/cuda/lib64`) must be on the library path when the first kernel is used.
//!
//! ```no_run
//! use nq_core::{CompressedCache, KvShape, Preset};
//! use nq_cuda::CudaBackend;
//!
//! let gpu = CudaBackend::new(0)?;
//! let shape = KvShape { layers: 1, q_heads: 4, kv_heads: 1, head_dim: 64 };
//! let mut cache = CompressedCache::with_backend(gpu, shape, Preset::Balanced.config(), None)
//!     .expect("valid configuration");
//! // append, compress and attend as on the CPU: the storage stays on the GPU.
//! # let _ = &mut cache;
//! # Ok::<(), nq_cuda::CudaError>(())
//! ```
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod attend;
mod backend;
mod cache;
pub mod encode;
mod error;
mod module;
pub mod store;

pub use backend::CudaBackend;
pub use cache::CudaLayer;
pub use error::{CudaError, Result};

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
