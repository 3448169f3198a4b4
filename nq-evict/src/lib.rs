//! Token importance scorers and eviction policies for KV caches.
//!
//! The first stage of the nexusquant pipeline: given keys (and the queries of an
//! observation window), score every cached token per layer and kv head, and keep the
//! attention sinks, the recent window and the most important of the rest within a budget.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
