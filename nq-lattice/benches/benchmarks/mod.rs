//! One module per op. Group names `{backend}_{op}_f32`: `cpu` is the detected SIMD kernel,
//! `scalar` the portable one, `reference` the naive oracle (brute force, f64).
pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod fused;
pub(crate) mod variable;

use std::time::Duration;

use criterion::Criterion;
use half::f16;
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};

/// Head dimensions benchmarked (real KV shapes).
pub(crate) const DIMS: [usize; 2] = [64, 128];
/// Rows per iteration for the fast kernels.
pub(crate) const ROWS: usize = 4096;
/// The three fixed rates.
pub(crate) const BITS: [FixedBits; 3] = [FixedBits::B2, FixedBits::B3, FixedBits::B4];

/// Quick settings: the whole crate's bench finishes in about two minutes.
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
}

/// `n` deterministic samples of N(0, 1) (xorshift + Box-Muller).
pub(crate) fn gauss(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b) = (u(), u());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
        })
        .collect()
}

/// The code name used in benchmark ids: `fixed2`, `fixed3`, `fixed4`.
pub(crate) fn code(bits: FixedBits) -> String {
    format!("fixed{}", bits.bits_per_dim())
}

/// Codes and scales of `rows` Gaussian rows of `dim` values.
pub(crate) fn encoded(bits: FixedBits, rows: usize, dim: usize) -> (FixedCodec, Vec<u8>, Vec<f16>) {
    let codec = FixedCodec::new(bits, ScaleMode::Rms).expect("valid codec");
    let x = gauss(rows * dim);
    let mut codes = vec![0u8; codec.code_len(rows, dim)];
    let mut scales = vec![f16::ZERO; rows];
    codec.encode_rows(&x, dim, &mut codes, &mut scales).expect("finite input");
    (codec, codes, scales)
}
