//! Golden digests of the fixed-rate encoder: every code and scale byte it writes for a fixed
//! set of inputs (Gaussian rows, rows of exact ties, zero and outlier rows, a group
//! remainder), on every instruction set here. The encoder's speed work must leave these
//! bytes unchanged; the digests were recorded with the encoder before that work.

use half::f16;
use nq_lattice::{FixedBits, FixedCodec, Isa, ScaleMode};

/// FNV-1a over bytes.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}

/// Deterministic inputs: `rows` rows of `dim` values of several kinds.
fn inputs(rows: usize, dim: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut x = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        for _ in 0..dim {
            let (a, b) = (next().max(1e-7), next());
            let g = (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos();
            x.push(match r % 5 {
                // Ties: values on a grid of 1/8 (many equal magnitudes within a block).
                1 => (g * 8.0).round() / 8.0,
                2 => (g * 2.0).round() / 2.0,
                3 if r % 15 == 3 => 0.0,
                4 => g * if next() < 0.05 { 40.0 } else { 1.0 },
                _ => g * 3.0,
            });
        }
    }
    x
}

fn digest(codec: FixedCodec, x: &[f32], dim: usize) -> u64 {
    let rows = x.len() / dim;
    let mut codes = vec![0u8; codec.code_len(rows, dim)];
    let mut scales = vec![f16::ZERO; rows];
    codec.encode_rows(x, dim, &mut codes, &mut scales).expect("valid input");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, &codes);
    for s in &scales {
        fnv(&mut h, &s.to_bits().to_le_bytes());
    }
    h
}

#[test]
fn fixed_encoder_bytes_are_unchanged() {
    let mut all = 0xcbf2_9ce4_8422_2325u64;
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
        if !isa.is_available() {
            continue;
        }
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (rows, dim) in [(203, 64), (61, 24), (17, 8)] {
            let x = inputs(rows, dim);
            for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
                for mode in [ScaleMode::Rms, ScaleMode::AbsMax, ScaleMode::BestOf { candidates: 4 }]
                {
                    let codec = FixedCodec::new(bits, mode).unwrap().with_isa(isa).unwrap();
                    fnv(&mut h, &digest(codec, &x, dim).to_le_bytes());
                }
            }
        }
        println!("{}: {h:016x}", isa.name());
        if isa == Isa::Scalar {
            all = h;
        }
        assert_eq!(h, all, "{} differs from the scalar path", isa.name());
    }
    assert_eq!(all, GOLDEN, "encoder output changed: {all:016x}");
}

/// The digest of the encoder before the speed work (same on every instruction set).
const GOLDEN: u64 = 0x025d_39bd_5f23_4d64;
