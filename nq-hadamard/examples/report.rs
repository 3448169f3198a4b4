//! Throughput records for `nq-hadamard`, as one JSON array on stdout.
//!
//! `cargo run --release -p nq-hadamard --example report`
//!
//! For d = 64, 128, 256 and each implementation (`simd` = AVX2+FMA kernel when available,
//! `scalar` = portable kernel, `naive` = O(d²) reference), times the in-place transform of a
//! batch on one core with `std::time::Instant` and keeps the best of several runs.
//! Records: `{"bench": "fwht" | "randomized_forward" | "randomized_inverse", "impl", "d",
//! "rows", "seconds", "rows_per_s", "melem_per_s"}`.
use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use nq_hadamard::{Isa, RandomizedHadamard, fwht_rows_with, reference};
use serde_json::{Value, json};

/// Rows per timed batch for the fast kernels (64K rows: 16-64 MiB, beyond L2).
const ROWS: usize = 1 << 16;
/// Rows per timed batch for the naive reference (O(d²) per row).
const NAIVE_ROWS: usize = 1 << 9;
/// Timed runs per configuration; the best is kept.
const RUNS: usize = 7;

fn main() -> Result<()> {
    let mut records = Vec::new();
    for d in [64usize, 128, 256] {
        let data: Vec<f32> =
            (0..ROWS * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
        let mut kernels = vec![("simd", Isa::Avx2), ("scalar", Isa::Scalar)];
        kernels.retain(|(_, isa)| isa.is_available());
        for (name, isa) in kernels {
            let rh = RandomizedHadamard::new(d, 42)?.with_isa(isa)?;
            records.push(time("fwht", name, d, &data, |x| fwht_rows_with(isa, x, d))?);
            records.push(time("randomized_forward", name, d, &data, |x| rh.forward_rows(x))?);
            records.push(time("randomized_inverse", name, d, &data, |x| rh.inverse_rows(x))?);
        }
        let naive = &data[..NAIVE_ROWS * d];
        records.push(time("fwht", "naive", d, naive, |x| reference::fwht_rows(x, d))?);
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}

/// Best-of-`RUNS` time of `f` over a fresh copy of `data`, as a record.
fn time(
    bench: &str,
    imp: &str,
    d: usize,
    data: &[f32],
    f: impl Fn(&mut [f32]) -> nq_hadamard::Result<()>,
) -> Result<Value> {
    let mut buf = data.to_vec();
    f(&mut buf)?; // warm-up (page faults, caches)
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        buf.copy_from_slice(data);
        let t = Instant::now();
        f(black_box(&mut buf))?;
        best = best.min(t.elapsed().as_secs_f64());
        black_box(&buf);
    }
    let rows = data.len() / d;
    let rows_per_s = rows as f64 / best;
    eprintln!("{bench:>20} {imp:>6} d={d:<4} {:>8.2} M rows/s", rows_per_s / 1e6);
    Ok(json!({
        "bench": bench,
        "impl": imp,
        "d": d,
        "rows": rows,
        "seconds": best,
        "rows_per_s": rows_per_s,
        "melem_per_s": rows_per_s * d as f64 / 1e6,
    }))
}
