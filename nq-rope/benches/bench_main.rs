//! Criterion benches for nq_rope: `cargo bench -p nq-rope`.
use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::rope::benches);
