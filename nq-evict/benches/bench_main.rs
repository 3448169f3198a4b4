//! Criterion benches for nq_evict: scoring throughput per scorer and selection throughput.
//!
//! Throughput is `Elements(tokens)`: cached tokens of one (layer, kv head) unit scored per
//! iteration (for `select`, tokens of the whole cache).
use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::score::benches, benchmarks::select::benches);
