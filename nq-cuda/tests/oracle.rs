//! The GPU kernels against the CPU at shapes the conformance harness does not cover:
//! every 2-bit code, odd row counts, small and large Hadamard blocks.

use half::f16;
use nq_core::{CpuBackend, Encoded, Rotation, RowOps, Rows};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gpu;

/// Every one of the 2^16 E8P codes (2 bits), with varied scales including 0: exact.
#[test]
fn decode_every_2bit_code_exactly() {
    let Some(gpu) = gpu() else { return };
    let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap();
    let dim = 64; // 8 blocks per row, 8192 rows
    let rows = Rows::new(65536 / 8, dim).unwrap();
    let codes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let scales: Vec<f16> = (0..rows.n())
        .map(|i| f16::from_f32(if i % 97 == 0 { 0.0 } else { 0.01 * i as f32 }))
        .collect();
    let enc = Encoded { codes, scales };
    let got = gpu.download(&gpu.decode(&enc, rows, &codec).unwrap()).unwrap();
    let want = CpuBackend.decode(&enc, rows, &codec).unwrap();
    assert_eq!(got.len(), want.len());
    let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(bad, 0, "{bad} values differ in their bits");
}

/// Random 3- and 4-bit codes: exact, including -0.0 against +0.0 (bitwise comparison).
#[test]
fn decode_random_3_and_4_bit_codes_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    for bits in [FixedBits::B3, FixedBits::B4] {
        let codec = FixedCodec::new(bits, ScaleMode::Rms).unwrap();
        let rows = Rows::new(777, 96).unwrap();
        let codes: Vec<u8> =
            (0..codec.code_len(rows.n(), rows.dim())).map(|_| rng.random()).collect();
        let scales: Vec<f16> =
            (0..rows.n()).map(|_| f16::from_f32(rng.random_range(0.0..4.0))).collect();
        let enc = Encoded { codes, scales };
        let got = gpu.download(&gpu.decode(&enc, rows, &codec).unwrap()).unwrap();
        let want = CpuBackend.decode(&enc, rows, &codec).unwrap();
        let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bad, 0, "{bits:?}: {bad} values differ");
    }
}

/// Rotation at block sizes 8..=8192 (dims with several blocks) and row counts that leave
/// a partial CUDA block: within 8 eps log2(n) |row| of the CPU, and inverse(forward) = id.
#[test]
fn rotate_matches_cpu_at_odd_shapes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    for (n, dim) in [(1, 8), (33, 24), (1001, 40), (5, 8192 + 8), (3, 1024 + 512 + 16)] {
        let rows = Rows::new(n, dim).unwrap();
        let rot = Rotation::new(dim, 11).unwrap();
        let host: Vec<f32> = (0..rows.len()).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut dev = gpu.upload(&host).unwrap();
        gpu.rotate(&mut dev, rows, &rot, false).unwrap();
        let got = gpu.download(&dev).unwrap();
        let mut want = host.clone();
        CpuBackend.rotate(&mut want, rows, &rot, false).unwrap();
        let log2 = (dim as f32).log2().ceil();
        for (g, w) in got.chunks(dim).zip(want.chunks(dim)) {
            let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            let e = g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
            assert!(e <= 8.0 * f32::EPSILON * log2 * norm, "n {n} dim {dim}: {e} vs |x| {norm}");
        }
        gpu.rotate(&mut dev, rows, &rot, true).unwrap();
        let back = gpu.download(&dev).unwrap();
        for (b, h) in back.chunks(dim).zip(host.chunks(dim)) {
            let norm = h.iter().map(|x| x * x).sum::<f32>().sqrt();
            let e = b.iter().zip(h).map(|(a, c)| (a - c) * (a - c)).sum::<f32>().sqrt();
            // Two transforms, each within 4 eps log2(n) |x| of exact (plus margin).
            assert!(e <= 2.0 * 8.0 * f32::EPSILON * log2 * norm, "dim {dim}: round trip {e}");
        }
    }
}

/// The host-fallback encoder gives exactly the CPU's codes (it is the CPU codec).
#[test]
fn encode_equals_cpu() {
    let Some(gpu) = gpu() else { return };
    let rows = Rows::new(129, 128).unwrap();
    let host = nq_core::testing::test_rows(rows.n(), rows.dim(), 9);
    let codec = FixedCodec::new(FixedBits::B4, ScaleMode::default()).unwrap();
    let dev = gpu.upload(&host).unwrap();
    assert_eq!(
        gpu.encode(&dev, rows, &codec).unwrap(),
        CpuBackend.encode(&host, rows, &codec).unwrap()
    );
}
