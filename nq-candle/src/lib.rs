//! candle integration for nexusquant: compressed KV cache, Llama-family models, evaluation.
//!
//! The only crate that knows candle. It converts tensors to and from `nq-core`'s plain
//! slices, owns a Llama-family decoder whose KV cache is the compressed resident form,
//! and ships the `nq` program.
//!
//! - [`Model`]: a decoder loaded from GGUF (llama/SmolLM2, mistral, qwen2, phi3, gemma3);
//!   [`Model::forward`] returns the logits of every token and hands keys/values to a
//!   [`KvCache`].
//! - [`KvCache`]: the seam where keys and values live; [`DenseCache`] is the uncompressed one.
//! - [`GgufTokenizer`]: the tokenizer stored in a GGUF file, matching llama.cpp's ids.
//! - [`needle`]: the retrieval check, a pass key hidden in prose and asked for at the end.
//! - [`perplexity_from_logits`], [`nll_from_logits`], [`kl_divergence_from_logits`]: scoring.
//!
//! ```no_run
//! use nq_candle::{DenseCache, GgufTokenizer, LoadOptions, Model, model_path};
//! let path = model_path("smollm2")?;
//! let tok = GgufTokenizer::from_gguf(&path)?;
//! let model = Model::from_gguf(&path, &candle_core::Device::Cpu, LoadOptions::default())?;
//! let ids = tok.encode("The quick brown fox jumps over the lazy dog.")?;
//! let mut cache = DenseCache::new();
//! let logits = model.forward(&ids[..ids.len() - 1], 0, &mut cache)?;
//! let ppl = nq_candle::perplexity_from_logits(&logits, &ids[1..])?;
//! assert!(ppl > 1.0);
//! # Ok::<(), nq_candle::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod archive;
pub mod compressed;
#[cfg(feature = "cuda")]
mod device;
mod error;
pub mod eval;
pub mod fetch;
mod generate;
pub mod kv;
pub mod model;
pub mod needle;
pub mod tokenizer;

#[cfg(feature = "cuda")]
pub use compressed::cuda_backend;
pub use compressed::{CandleBackend, CompressedKvCache};
pub use error::{Error, Result};
pub use generate::{Generation, Generator, Prefill, SamplingOptions, StopReason};
pub use kv::{AttendShape, AttnSpec, DenseCache, KvCache};
pub use model::{
    Architecture, GgufFile, KNOWN_MODELS, KnownModel, LoadOptions, Model, ModelConfig, RopeTables,
    SUPPORTED_ARCHITECTURES, SyntheticWeights, kl_divergence_from_logits, log_softmax, model_dir,
    model_path, model_path_in, nll_from_logits, perplexity_from_logits,
};
pub use tokenizer::{GgufTokenizer, TokenStream};
