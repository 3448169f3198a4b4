//! Fixed-rate encoding (scale search included) on the detected kernel, the portable one,
//! and the brute-force reference (all 2^16 codewords per block).
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use half::f16;
use nq_lattice::{FixedBits, FixedCodec, Isa, ScaleMode, reference};

use super::{BITS, DIMS, ROWS, code, config, gauss};

/// Rows of 64 for the brute-force reference (about 10^4 times slower).
const REFERENCE_ROWS: usize = 16;

fn kernel(c: &mut Criterion, group: &str, isa: Isa, bits: &[FixedBits], modes: &[ScaleMode]) {
    if !isa.is_available() {
        return;
    }
    let mut g = c.benchmark_group(group);
    for &b in bits {
        for &mode in modes {
            for d in DIMS {
                let codec =
                    FixedCodec::new(b, mode).expect("valid").with_isa(isa).expect("available");
                let x = gauss(ROWS * d);
                let mut codes = vec![0u8; codec.code_len(ROWS, d)];
                let mut scales = vec![f16::ZERO; ROWS];
                let scale = match mode {
                    ScaleMode::BestOf { candidates } => format!("bestof{candidates}"),
                    ScaleMode::Rms => "rms".into(),
                    ScaleMode::AbsMax => "absmax".into(),
                };
                g.throughput(Throughput::Elements((ROWS * d) as u64));
                let id = format!("code={},scale={scale},d={d},rows={ROWS}", code(b));
                g.bench_function(BenchmarkId::from_parameter(id), |bch| {
                    bch.iter(|| {
                        codec.encode_rows(black_box(&x), d, &mut codes, &mut scales).expect("ok")
                    });
                });
            }
        }
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    kernel(c, "cpu_encode_f32", Isa::detect(), &BITS, &[ScaleMode::default()]);
    kernel(c, "cpu_encode_f32", Isa::detect(), &BITS, &[ScaleMode::Rms]);
}

fn scalar(c: &mut Criterion) {
    kernel(c, "scalar_encode_f32", Isa::Scalar, &[FixedBits::B2], &[ScaleMode::Rms]);
}

fn naive(c: &mut Criterion) {
    let words = reference::e8p_words();
    let d = 64;
    let x = gauss(REFERENCE_ROWS * d);
    let mut g = c.benchmark_group("reference_encode_f32");
    g.throughput(Throughput::Elements((REFERENCE_ROWS * d) as u64));
    let id = format!("code=fixed2,scale=rms,d={d},rows={REFERENCE_ROWS}");
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            // The RMS scale rule with a brute-force nearest codeword per block.
            let mut out = Vec::with_capacity(x.len() / 8);
            for row in black_box(&x).chunks_exact(d) {
                let rms = (row.iter().map(|v| v * v).sum::<f32>() / d as f32).sqrt();
                let s =
                    f64::from(f16::from_f32(nq_lattice::rms_factor(FixedBits::B2) * rms).to_f32());
                for blk in row.chunks_exact(8) {
                    let v: [f64; 8] = std::array::from_fn(|i| f64::from(blk[i]) / s);
                    out.push(reference::e8p_encode_brute(&words, &v).0);
                }
            }
            out
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = cpu, scalar, naive
}
