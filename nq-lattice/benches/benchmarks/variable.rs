//! Variable-rate symbols (nearest E8 point per block) and the brute-force nearest point.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_lattice::{ScaleMode, VariableCodec, reference};

use super::{ROWS, config, gauss};

fn cpu(c: &mut Criterion) {
    let d = 128;
    let codec = VariableCodec::new(1.1, ScaleMode::Rms).expect("valid");
    let x = gauss(ROWS * d);
    let (mut cosets, mut coords, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    let mut g = c.benchmark_group("cpu_variable_encode_f32");
    g.throughput(Throughput::Elements((ROWS * d) as u64));
    g.bench_function(BenchmarkId::from_parameter(format!("step=1.1,d={d},rows={ROWS}")), |b| {
        b.iter(|| {
            cosets.clear();
            coords.clear();
            scales.clear();
            codec.encode_rows(black_box(&x), d, &mut cosets, &mut coords, &mut scales).expect("ok");
        });
    });
    g.finish();
    let mut g = c.benchmark_group("cpu_nearest_f32");
    let blocks = 4096;
    let x = gauss(blocks * 8);
    g.throughput(Throughput::Elements((blocks * 8) as u64));
    g.bench_function(BenchmarkId::from_parameter(format!("blocks={blocks}")), |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            for blk in black_box(&x).chunks_exact(8) {
                let v: [f32; 8] = std::array::from_fn(|i| blk[i] * 1.7);
                acc += nq_lattice::nearest_e8(&v)[0];
            }
            acc
        });
    });
    g.finish();
}

fn naive(c: &mut Criterion) {
    let blocks = 256;
    let x = gauss(blocks * 8);
    let mut g = c.benchmark_group("reference_nearest_f32");
    g.throughput(Throughput::Elements((blocks * 8) as u64));
    g.bench_function(BenchmarkId::from_parameter(format!("blocks={blocks}")), |b| {
        b.iter(|| {
            let mut acc = 0.0f64;
            for blk in black_box(&x).chunks_exact(8) {
                let v: [f32; 8] = std::array::from_fn(|i| blk[i] * 1.7);
                acc += reference::nearest_e8_brute(&v).1;
            }
            acc
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu, naive
}
