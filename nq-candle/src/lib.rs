//! candle integration for nexusquant: compressed KV cache, Llama-family models, evaluation.
//!
//! The only crate that knows candle. It converts tensors to and from `nq-core`'s plain
//! slices, owns a Llama-family decoder whose KV cache is the compressed resident form,
//! and ships the `nq` program.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
