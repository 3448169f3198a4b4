//! A whole archive: 4 layers x 2 kv heads x 1024 tokens x head_dim 64, keys and values as
//! coords, per-row scales and positions, written to and read from memory. Throughput counts
//! the logical bytes of all streams.
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use half::f16;
use nq_entropy::{ArchiveReader, ArchiveWriter, DataRef, Fingerprint, StreamRef};

use super::bench;
use crate::e8;

fn archive(c: &mut Criterion) {
    let (layers, heads, tokens, d) = (4usize, 2usize, 1024usize, 64usize);
    let per_row = d / 8;
    let n = heads * tokens * per_row;
    let (kc, kz) = e8::gaussian_e8(n, 1.14, 1);
    let (vc, vz) = e8::gaussian_e8(n, 1.14, 2);
    let scales: Vec<f16> =
        (0..heads * tokens).map(|i| f16::from_f32(0.5 + (i % 7) as f32 * 0.01)).collect();
    let positions: Vec<u32> = (0..tokens as u32).map(|t| t * 2).collect();
    let fp = Fingerprint {
        architecture: "llama".into(),
        layers: layers as u32,
        kv_heads: heads as u32,
        head_dim: d as u32,
        ..Fingerprint::default()
    };
    let streams = [
        StreamRef {
            name: "k",
            data: DataRef::Coords { cosets: &kc, coords: &kz, row_vectors: per_row },
        },
        StreamRef {
            name: "v",
            data: DataRef::Coords { cosets: &vc, coords: &vz, row_vectors: per_row },
        },
        StreamRef { name: "k.scales", data: DataRef::Scales { values: &scales, row_len: heads } },
        StreamRef { name: "v.scales", data: DataRef::Scales { values: &scales, row_len: heads } },
        StreamRef { name: "positions", data: DataRef::Positions(&positions) },
    ];
    let write = || {
        let mut w = ArchiveWriter::new(Vec::new(), &fp).expect("header");
        for l in 0..layers {
            w.write_section(l as u32, &streams).expect("section");
        }
        w.finish().expect("finish")
    };
    let bytes = write();
    let logical =
        layers * (2 * (4 * kz.len() + kc.len()) + 2 * 2 * scales.len() + 4 * positions.len());
    let id = BenchmarkId::from_parameter(format!("layers={layers},heads={heads},t={tokens},d={d}"));
    bench(c, "cpu_archive_write_mixed", &id, logical as u64, write);
    bench(c, "cpu_archive_read_mixed", &id, logical as u64, || {
        let mut r = ArchiveReader::open(black_box(&bytes[..])).expect("open");
        let mut k = 0;
        while let Some(s) = r.next_section().expect("section") {
            k += s.streams.len();
        }
        k
    });
}

criterion_group! { name = benches; config = super::quick(); targets = archive }
