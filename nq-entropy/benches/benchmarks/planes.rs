//! f16 scales, fixed-rate codes and positions. Throughput counts logical bytes: 2 per f16,
//! the code bytes, 4 per position.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use half::f16;
use nq_entropy::{
    EncodeOptions, Limits, decode_f16, decode_fixed_codes, decode_positions, encode_f16,
    encode_fixed_codes, encode_positions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::bench;
use crate::e8;

fn planes(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let opts = EncodeOptions::default();
    let lim = Limits::default();
    let mut out = Vec::new();

    // Scales: 8 heads x 4096 tokens, per-head level with a little noise.
    let heads = 8;
    let scales: Vec<f16> = (0..heads * 4096)
        .map(|i| f16::from_f64((1.0 + (i % heads) as f64) * (1.0 + 0.05 * e8::gauss(&mut rng))))
        .collect();
    let mut body = Vec::new();
    encode_f16(&scales, heads, &opts, &mut body).expect("encode");
    let id = BenchmarkId::from_parameter(format!("n={},row={heads}", scales.len()));
    let bytes = 2 * scales.len() as u64;
    bench(c, "cpu_encode_scales_f16", &id, bytes, || {
        out.clear();
        encode_f16(black_box(&scales), heads, &opts, &mut out).expect("encode")
    });
    bench(c, "cpu_decode_scales_f16", &id, bytes, || {
        decode_f16(black_box(&body), &lim).expect("decode")
    });

    // Fixed codes: 2 bytes per vector, first byte skewed.
    let n = 1 << 18;
    let codes: Vec<u8> = (0..2 * n)
        .map(|i| {
            if i % 2 == 0 {
                (rng.random::<u32>() | 1 << 20).trailing_zeros() as u8
            } else {
                rng.random()
            }
        })
        .collect();
    let mut body = Vec::new();
    encode_fixed_codes(&codes, 2, 16, &opts, &mut body).expect("encode");
    let id = BenchmarkId::from_parameter(format!("vectors={n},bytes=2"));
    let bytes = codes.len() as u64;
    bench(c, "cpu_encode_fixed_u8", &id, bytes, || {
        out.clear();
        encode_fixed_codes(black_box(&codes), 2, 16, &opts, &mut out).expect("encode")
    });
    bench(c, "cpu_decode_fixed_u8", &id, bytes, || {
        decode_fixed_codes(black_box(&body), &lim).expect("decode")
    });

    // Positions: 30% of 64k tokens kept.
    let positions: Vec<u32> = (0..65536u32).filter(|_| rng.random::<f32>() < 0.3).collect();
    let mut body = Vec::new();
    encode_positions(&positions, &opts, &mut body).expect("encode");
    let id = BenchmarkId::from_parameter(format!("n={}", positions.len()));
    let bytes = 4 * positions.len() as u64;
    bench(c, "cpu_encode_positions_u32", &id, bytes, || {
        out.clear();
        encode_positions(black_box(&positions), &opts, &mut out).expect("encode")
    });
    bench(c, "cpu_decode_positions_u32", &id, bytes, || {
        decode_positions(black_box(&body), &lim).expect("decode")
    });
}

criterion_group! { name = benches; config = super::quick(); targets = planes }
