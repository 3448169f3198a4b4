//! Order-0 byte rANS (through `encode_bytes` with `Effort::Fast`, where it is the chosen
//! codec) against the textbook single-state coder of `reference`.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use nq_entropy::reference::{slow_rans_decode, slow_rans_encode};
use nq_entropy::{Effort, EncodeOptions, Limits, decode_bytes, encode_bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::bench;

fn rans(c: &mut Criterion) {
    let n = 1 << 20;
    let mut rng = StdRng::seed_from_u64(2);
    // Geometric-like bytes, ~2.6 bits of entropy.
    let data: Vec<u8> = (0..n)
        .map(|_| (rng.random::<u32>() | 1).trailing_zeros() as u8 + (rng.random::<u8>() & 1))
        .collect();
    let id = BenchmarkId::from_parameter(format!("n={n}"));
    let opts = EncodeOptions { effort: Effort::Fast, ..EncodeOptions::default() };
    let mut body = Vec::new();
    encode_bytes(&data, &opts, &mut body).expect("encode");

    let mut counts = [0u64; 256];
    for &b in &data {
        counts[usize::from(b)] += 1;
    }
    // A 12-bit table for the reference: proportional, remainder to the most frequent symbol.
    let mut freqs = [0u32; 256];
    for s in 0..256 {
        if counts[s] > 0 {
            freqs[s] = ((counts[s] * 4096 / n as u64) as u32).max(1);
        }
    }
    let top = (0..256).max_by_key(|&s| counts[s]).expect("nonempty");
    freqs[top] =
        4096 - freqs.iter().enumerate().filter(|&(s, _)| s != top).map(|(_, &f)| f).sum::<u32>();
    let slow = slow_rans_encode(&data, &freqs, 12);

    let bytes = n as u64;
    let mut out = Vec::new();
    bench(c, "cpu_rans_encode_u8", &id, bytes, || {
        out.clear();
        encode_bytes(black_box(&data), &opts, &mut out).expect("encode")
    });
    bench(c, "reference_rans_encode_u8", &id, bytes, || {
        slow_rans_encode(black_box(&data), &freqs, 12)
    });
    bench(c, "cpu_rans_decode_u8", &id, bytes, || {
        decode_bytes(black_box(&body), &Limits::default()).expect("decode")
    });
    bench(c, "reference_rans_decode_u8", &id, bytes, || {
        slow_rans_decode(black_box(&slow), &freqs, 12, n).expect("decode")
    });
}

criterion_group! { name = benches; config = super::quick(); targets = rans }
