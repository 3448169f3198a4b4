//! Plain orthonormal FWHT: AVX2 kernel (`cpu`), portable kernel (`scalar`), O(d²) reference.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_hadamard::{Isa, fwht_rows_with, reference};

use super::{DIMS, ROWS, config, data};

/// Rows per iteration for the O(d²) reference (it is ~100x slower).
const REFERENCE_ROWS: usize = 64;

fn kernel(c: &mut Criterion, group: &str, isa: Isa) {
    if !isa.is_available() {
        return;
    }
    let mut g = c.benchmark_group(group);
    for d in DIMS {
        let mut buf = data(ROWS, d);
        g.throughput(Throughput::Elements((ROWS * d) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("d={d},rows={ROWS}")), |b| {
            b.iter(|| fwht_rows_with(isa, black_box(&mut buf), d).expect("valid shape"));
        });
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    kernel(c, "cpu_fwht_f32", Isa::detect());
}

fn scalar(c: &mut Criterion) {
    kernel(c, "scalar_fwht_f32", Isa::Scalar);
}

fn naive(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference_fwht_f32");
    for d in DIMS {
        let mut buf = data(REFERENCE_ROWS, d);
        g.throughput(Throughput::Elements((REFERENCE_ROWS * d) as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("d={d},rows={REFERENCE_ROWS}")),
            |b| {
                b.iter(|| reference::fwht_rows(black_box(&mut buf), d).expect("valid shape"));
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu, scalar, naive
}
