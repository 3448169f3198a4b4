//! Criterion benches for nq_lattice: `cargo bench -p nq-lattice`.
use criterion::criterion_main;

mod benchmarks;

criterion_main!(
    benchmarks::encode::benches,
    benchmarks::decode::benches,
    benchmarks::fused::benches,
    benchmarks::variable::benches
);
