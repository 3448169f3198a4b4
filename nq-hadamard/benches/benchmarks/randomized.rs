//! Randomized transform `H D` and its inverse `D H` on the detected kernel.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_hadamard::RandomizedHadamard;

use super::{DIMS, ROWS, config, data};

fn run(c: &mut Criterion, group: &str, inverse: bool) {
    let mut g = c.benchmark_group(group);
    for d in DIMS {
        let rh = RandomizedHadamard::new(d, 42).expect("power of two");
        let mut buf = data(ROWS, d);
        g.throughput(Throughput::Elements((ROWS * d) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("d={d},rows={ROWS}")), |b| {
            b.iter(|| {
                let x = black_box(&mut buf);
                if inverse { rh.inverse_rows(x) } else { rh.forward_rows(x) }.expect("valid shape")
            });
        });
    }
    g.finish();
}

fn forward(c: &mut Criterion) {
    run(c, "cpu_randomized_forward_f32", false);
}

fn inverse(c: &mut Criterion) {
    run(c, "cpu_randomized_inverse_f32", true);
}

criterion_group! {
    name = benches;
    config = config();
    targets = forward, inverse
}
