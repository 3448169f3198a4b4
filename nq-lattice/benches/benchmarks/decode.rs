//! Fixed-rate decoding to f32 rows: detected kernel, portable kernel, naive reference.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_lattice::{FixedBits, Isa, reference};

use super::{BITS, DIMS, ROWS, code, config, encoded};

fn kernel(c: &mut Criterion, group: &str, isa: Isa, bits: &[FixedBits]) {
    if !isa.is_available() {
        return;
    }
    let mut g = c.benchmark_group(group);
    for &b in bits {
        for d in DIMS {
            let (codec, codes, scales) = encoded(b, ROWS, d);
            let codec = codec.with_isa(isa).expect("available");
            let mut out = vec![0.0f32; ROWS * d];
            g.throughput(Throughput::Elements((ROWS * d) as u64));
            let id = format!("code={},d={d},rows={ROWS}", code(b));
            g.bench_function(BenchmarkId::from_parameter(id), |bch| {
                bch.iter(|| {
                    codec.decode_rows(black_box(&codes), &scales, d, &mut out).expect("ok")
                });
            });
        }
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    kernel(c, "cpu_decode_f32", Isa::detect(), &BITS);
}

fn scalar(c: &mut Criterion) {
    kernel(c, "scalar_decode_f32", Isa::Scalar, &[FixedBits::B2]);
}

fn naive(c: &mut Criterion) {
    let d = 128;
    let (_, codes, scales) = encoded(FixedBits::B2, ROWS, d);
    let mut g = c.benchmark_group("reference_decode_f32");
    g.throughput(Throughput::Elements((ROWS * d) as u64));
    g.bench_function(BenchmarkId::from_parameter(format!("code=fixed2,d={d},rows={ROWS}")), |b| {
        b.iter(|| reference::fixed_decode_rows(FixedBits::B2, black_box(&codes), &scales, d));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu, scalar, naive
}
