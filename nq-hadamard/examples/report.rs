//! Throughput records for `nq-hadamard`, as one JSON array on stdout.
//!
//! `cargo run --release -p nq-hadamard --example report`
//!
//! For d = 64, 128, 256 and each implementation (`simd` = AVX2+FMA kernel when available,
//! `scalar` = portable kernel, `naive` = O(d²) reference), times the in-place transform of
//! 65,536 rows on one core with `std::time::Instant` and keeps the best of 7 round-robin
//! rounds. The rows are processed as 16 calls on the same cache-resident 4,096-row batch
//! (`"batch_rows": 4096`, 1-4 MiB: kernel throughput) and as one call on a 65,536-row batch
//! (`"batch_rows": 65536`, 16-64 MiB: bound by memory bandwidth on most machines). Records: `{"bench": "fwht" | "randomized_forward" |
//! "randomized_inverse", "impl", "d", "rows", "batch_rows", "seconds", "rows_per_s",
//! "melem_per_s"}`.
use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use nq_hadamard::{Isa, RandomizedHadamard, fwht_rows_with, reference};
use serde_json::{Value, json};

/// Rows per timed run for the fast kernels.
const ROWS: usize = 1 << 16;
/// Batch sizes: cache-resident and streaming.
const BATCHES: [usize; 2] = [1 << 12, 1 << 16];
/// Rows per timed batch for the naive reference (O(d²) per row).
const NAIVE_ROWS: usize = 1 << 9;
/// Timing rounds; each round runs every configuration once (round-robin, so a burst of
/// load from other processes hits all configurations alike) and the best time is kept.
const ROUNDS: usize = 7;

/// A transform applied in place to a whole buffer.
type Op = Box<dyn Fn(&mut [f32]) -> nq_hadamard::Result<()>>;

/// One timed configuration.
struct Case {
    bench: &'static str,
    imp: &'static str,
    d: usize,
    batch_rows: usize,
    /// One batch; the op runs `repeat` times on it per timing.
    input: Vec<f32>,
    repeat: usize,
    op: Op,
    best: f64,
}

fn main() -> Result<()> {
    let mut cases = Vec::new();
    for d in [64usize, 128, 256] {
        let data: Vec<f32> =
            (0..ROWS * d).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
        let mut kernels = vec![("simd", Isa::Avx2), ("scalar", Isa::Scalar)];
        kernels.retain(|(_, isa)| isa.is_available());
        for (imp, isa) in kernels {
            let rh = RandomizedHadamard::new(d, 42)?.with_isa(isa)?;
            for batch_rows in BATCHES {
                let b = batch_rows * d;
                let (r1, r2) = (rh.clone(), rh.clone());
                let ops: [(&'static str, Op); 3] = [
                    (
                        "fwht",
                        Box::new(move |x| {
                            x.chunks_mut(b).try_for_each(|c| fwht_rows_with(isa, c, d))
                        }),
                    ),
                    (
                        "randomized_forward",
                        Box::new(move |x| x.chunks_mut(b).try_for_each(|c| r1.forward_rows(c))),
                    ),
                    (
                        "randomized_inverse",
                        Box::new(move |x| x.chunks_mut(b).try_for_each(|c| r2.inverse_rows(c))),
                    ),
                ];
                for (bench, op) in ops {
                    let input = data.clone();
                    let repeat = ROWS / batch_rows;
                    cases.push(Case {
                        bench,
                        imp,
                        d,
                        batch_rows,
                        input,
                        repeat,
                        op,
                        best: f64::INFINITY,
                    });
                }
            }
        }
        let input = data[..NAIVE_ROWS * d].to_vec();
        let op: Op = Box::new(move |x| reference::fwht_rows(x, d));
        cases.push(Case {
            bench: "fwht",
            imp: "naive",
            d,
            batch_rows: NAIVE_ROWS,
            input,
            repeat: 1,
            op,
            best: f64::INFINITY,
        });
    }
    for _ in 0..ROUNDS {
        for case in &mut cases {
            // In place on the case's own buffer (each op keeps norms, so repeating is safe).
            let t = Instant::now();
            for _ in 0..case.repeat {
                (case.op)(black_box(&mut case.input))?;
            }
            case.best = case.best.min(t.elapsed().as_secs_f64() / case.repeat as f64);
        }
    }
    let records: Vec<Value> = cases.iter().map(record).collect();
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}

fn record(c: &Case) -> Value {
    let per_call = c.input.len() / c.d;
    let rows_per_s = per_call as f64 / c.best;
    let rows = per_call * c.repeat;
    eprintln!(
        "{:>20} {:>6} d={:<4} batch={:<6} {:>8.2} M rows/s",
        c.bench,
        c.imp,
        c.d,
        c.batch_rows,
        rows_per_s / 1e6
    );
    json!({
        "bench": c.bench,
        "impl": c.imp,
        "d": c.d,
        "rows": rows,
        "batch_rows": c.batch_rows,
        "seconds": rows as f64 / rows_per_s,
        "rows_per_s": rows_per_s,
        "melem_per_s": rows_per_s * c.d as f64 / 1e6,
    })
}
