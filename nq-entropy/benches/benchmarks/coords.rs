//! Coset-aware coordinate streams: encode and decode of Gaussian E8 output at ~2 bits/dim.
//! Throughput counts logical bytes: 4 per coordinate plus 1 per coset bit.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use nq_entropy::{Effort, EncodeOptions, Limits, decode_coords, encode_coords};

use super::bench;
use crate::e8;

fn coords(c: &mut Criterion) {
    let n = 1 << 17;
    let (cosets, coords) = e8::gaussian_e8(n, 1.14, 1);
    let bytes = (4 * coords.len() + cosets.len()) as u64;
    let id = BenchmarkId::from_parameter(format!("vectors={n},bits=2"));
    let mut out = Vec::new();
    for (name, effort) in [("fast", Effort::Fast), ("default", Effort::Default)] {
        let opts = EncodeOptions { effort, ..EncodeOptions::default() };
        let id = BenchmarkId::from_parameter(format!("vectors={n},bits=2,effort={name}"));
        bench(c, "cpu_encode_coords_i32", &id, bytes, || {
            out.clear();
            encode_coords(black_box(&cosets), black_box(&coords), 16, &opts, &mut out)
                .expect("encode")
        });
    }
    let mut body = Vec::new();
    encode_coords(&cosets, &coords, 16, &EncodeOptions::default(), &mut body).expect("encode");
    bench(c, "cpu_decode_coords_i32", &id, bytes, || {
        decode_coords(black_box(&body), &Limits::default()).expect("decode")
    });
}

criterion_group! { name = benches; config = super::quick(); targets = coords }
