//! Criterion benches for nq_hadamard: `cargo bench -p nq-hadamard`.
use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::fwht::benches, benchmarks::randomized::benches);
