//! Fused attention primitives over the compressed rows: `dot_rows` (scores) and
//! `axpy_rows` (weighted sum of values), against decode-then-compute references.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_lattice::{FixedBits, reference};

use super::{BITS, DIMS, ROWS, code, config, encoded, gauss};

fn cpu(c: &mut Criterion) {
    let mut dot = c.benchmark_group("cpu_dot_f32");
    for b in BITS {
        for d in DIMS {
            let (codec, codes, scales) = encoded(b, ROWS, d);
            let q = gauss(d);
            let mut out = vec![0.0f32; ROWS];
            dot.throughput(Throughput::Elements((ROWS * d) as u64));
            let id = format!("code={},d={d},rows={ROWS}", code(b));
            dot.bench_function(BenchmarkId::from_parameter(id), |bch| {
                bch.iter(|| codec.dot_rows(black_box(&q), &codes, &scales, &mut out).expect("ok"));
            });
        }
    }
    dot.finish();
    let mut axpy = c.benchmark_group("cpu_axpy_f32");
    for b in BITS {
        for d in DIMS {
            let (codec, codes, scales) = encoded(b, ROWS, d);
            let w = gauss(ROWS);
            let mut acc = vec![0.0f32; d];
            axpy.throughput(Throughput::Elements((ROWS * d) as u64));
            let id = format!("code={},d={d},rows={ROWS}", code(b));
            axpy.bench_function(BenchmarkId::from_parameter(id), |bch| {
                bch.iter(|| codec.axpy_rows(black_box(&w), &codes, &scales, &mut acc).expect("ok"));
            });
        }
    }
    axpy.finish();
}

fn naive(c: &mut Criterion) {
    let d = 128;
    let (_, codes, scales) = encoded(FixedBits::B2, ROWS, d);
    let q = gauss(d);
    let w = gauss(ROWS);
    let id = format!("code=fixed2,d={d},rows={ROWS}");
    let mut g = c.benchmark_group("reference_dot_f32");
    g.throughput(Throughput::Elements((ROWS * d) as u64));
    g.bench_function(BenchmarkId::from_parameter(&id), |b| {
        b.iter(|| reference::fixed_dot_rows(FixedBits::B2, black_box(&q), &codes, &scales));
    });
    g.finish();
    let mut g = c.benchmark_group("reference_axpy_f32");
    g.throughput(Throughput::Elements((ROWS * d) as u64));
    g.bench_function(BenchmarkId::from_parameter(&id), |b| {
        b.iter(|| reference::fixed_axpy_rows(FixedBits::B2, black_box(&w), &codes, &scales, d));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu, naive
}
