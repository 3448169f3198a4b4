//! Criterion benches for nq-core: prefix compression and decode-time attention at real
//! SmolLM2 shapes.
mod benchmarks;

criterion::criterion_main!(benchmarks::compress::benches, benchmarks::attend::benches);
