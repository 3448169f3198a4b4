//! Criterion benches for nq_entropy: one module per stream kind (see STYLE.md §8).
use criterion::criterion_main;

#[path = "../tests/support/e8.rs"]
mod e8;

mod benchmarks;

criterion_main!(
    benchmarks::coords::benches,
    benchmarks::rans::benches,
    benchmarks::planes::benches,
    benchmarks::archive::benches,
);
