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
//! | `upload` / `download` | driver copies |
//! | `rotate` (forward and inverse) | GPU kernel `kernels/rotate.cu`: shared-memory butterflies, one launch per power-of-two block of the block-diagonal rotation (96 = 64 + 32) |
//! | `decode` (2, 3, 4 bits) | GPU kernel `kernels/decode.cu`: one thread per 8 values, E8P and residual tables uploaded once per device; bit-identical to the CPU |
//! | `RowOps::encode` | host fallback (download, `FixedCodec::encode_rows`), kept for row-level comparisons |
//! | the cache's encode (`Backend::compress`) | [`encode::Encoder`], `kernels/encode.cu`: gather, center, smooth, rotate, scale and E8 codes in one launch per head; codes bit-identical to the CPU |
//! | storage of a layer | [`store::DeviceLayer`]: codes, scales, positions, f16 dense rows, means, growable device buffers |
//! | decode attention | [`attend::Attender`], `kernels/attend.cu`: flash-decoding over the codes in place (tensor cores, GQA, B sequences per call) |
//!
//! The crate builds without a CUDA toolkit (cudarc loads `libcuda` and `libnvrtc`
//! dynamically). At run time [`CudaBackend::new`] returns [`CudaError::NoLibrary`] when
//! the driver library is missing, instead of panicking. NVRTC (`libnvrtc.so`, e.g. from
//! `/usr/local/cuda/lib64`) must be on the library path when the first kernel is used.
//!
//! ```no_run
//! use nq_core::{CpuBackend, RowOps, Rows};
//! use nq_cuda::CudaBackend;
//!
//! let gpu = CudaBackend::new(0)?;
//! let rows = Rows::new(1024, 128).expect("valid shape");
//! let codec = nq_lattice::FixedCodec::new(nq_lattice::FixedBits::B2, Default::default())?;
//! let x: Vec<f32> = (0..rows.len()).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0).collect();
//! let enc = CpuBackend.encode(&x, rows, &codec).expect("cpu encode");
//! let dev = gpu.decode(&enc, rows, &codec)?; // decoded on the GPU
//! let cpu = CpuBackend.decode(&enc, rows, &codec).expect("cpu decode");
//! assert_eq!(gpu.download(&dev)?, cpu); // exact
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

pub use backend::{CudaBackend, DeviceCodes, MAX_BLOCK};
pub use cache::CudaLayer;
pub use error::{CudaError, Result};

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
