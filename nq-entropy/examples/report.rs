//! Coded size against empirical entropy, and single-core encode/decode throughput, per stream
//! kind and data set. Prints one JSON array of flat records to stdout; progress to stderr.
//!
//! `cargo run --release -p nq-entropy --example report [-- --quick]`
//!
//! Throughput (`encode_gb_per_s`, `decode_gb_per_s`) is measured on the *logical* bytes of
//! the stream, the same on both sides: for coords `4 * coords.len() + cosets.len()` (the
//! decoded `i32` coordinates plus one byte per coset bit), for f16 streams 2 bytes per value,
//! for positions 4 bytes per position, for fixed codes the code bytes. Each figure is the
//! best of several runs on one thread, timed by the thread's on-CPU time (Linux
//! `/proc/thread-self/schedstat`; wall time elsewhere), so a shared, loaded machine does not
//! count other processes' time slices.

#[path = "../tests/support/e8.rs"]
mod e8;

use std::time::Instant;

use anyhow::Result;
use half::f16;
use nq_entropy::reference::{coords_context_entropy_bits, coords_entropy_bits, entropy_bits};
use nq_entropy::{
    Effort, EncodeOptions, Limits, decode_coords, decode_f16, decode_fixed_codes, decode_positions,
    encode_coords, encode_f16, encode_fixed_codes, encode_positions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`), so time slices lost to
/// other processes on a shared machine do not count; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Best time of `runs` calls of `f`, in seconds: on-CPU time of this thread where the OS
/// reports it, wall time otherwise.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu_ns());
        let v = f();
        let wall = t.elapsed().as_secs_f64();
        let secs = match (c, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
            _ => wall,
        };
        best = best.min(secs);
        out = Some(v);
    }
    (best, out.expect("runs >= 1"))
}

fn counts<T: Ord + Copy>(it: impl Iterator<Item = T>) -> Vec<u64> {
    let mut m = std::collections::BTreeMap::new();
    for v in it {
        *m.entry(v).or_insert(0u64) += 1;
    }
    m.into_values().collect()
}

fn coords_records(
    out: &mut Vec<Value>,
    data: &str,
    cosets: &[u8],
    coords: &[i32],
    row_vectors: usize,
    runs: usize,
) -> Result<()> {
    let dims = coords.len() as f64;
    let logical = (4 * coords.len() + cosets.len()) as f64;
    let h0 = coords_entropy_bits(cosets, coords) / dims;
    let hc = coords_context_entropy_bits(cosets, coords) / dims;
    for (effort, name) in [(Effort::Fast, "fast"), (Effort::Default, "default")] {
        let opts = EncodeOptions { effort, ..EncodeOptions::default() };
        let mut body = Vec::new();
        let (enc_s, summary) = best_of(runs, || {
            body.clear();
            encode_coords(cosets, coords, row_vectors, &opts, &mut body)
        });
        let summary = summary?;
        let (dec_s, decoded) = best_of(runs, || decode_coords(&body, &Limits::default()));
        let (c2, z2) = decoded?;
        anyhow::ensure!(c2 == cosets && z2 == coords, "coords round trip failed on {data}");
        let coded = 8.0 * body.len() as f64 / dims;
        eprintln!(
            "coords {data} {name}: H0 {h0:.4} Hctx {hc:.4} coded {coded:.4} bits/dim ({:+.2}% vs H0), {} delta={}, enc {:.3} GB/s dec {:.3} GB/s",
            100.0 * (coded / h0 - 1.0),
            summary.codec.name(),
            summary.delta,
            logical / enc_s / 1e9,
            logical / dec_s / 1e9
        );
        out.push(json!({
            "bench": "entropy", "stream": "coords", "data": data, "effort": name,
            "vectors": cosets.len(), "codec": summary.codec.name(), "delta": summary.delta,
            "entropy_bits_per_dim": h0, "context_entropy_bits_per_dim": hc,
            "coded_bits_per_dim": coded, "vs_entropy_pct": 100.0 * (coded / h0 - 1.0),
            "encode_gb_per_s": logical / enc_s / 1e9, "decode_gb_per_s": logical / dec_s / 1e9,
        }));
    }
    // zstd alone on the same layout (packed cosets + one byte per coordinate), for comparison.
    let mut plain: Vec<u8> = cosets
        .chunks(8)
        .map(|c| c.iter().enumerate().fold(0u8, |a, (k, &b)| a | (b << k)))
        .collect();
    plain.extend(coords.iter().map(|&v| v.clamp(-128, 127) as i8 as u8));
    for level in [3, 19] {
        let (s, z) = best_of(1, || zstd::bulk::compress(&plain, level));
        let coded = 8.0 * z?.len() as f64 / dims;
        eprintln!(
            "coords {data} zstd-{level} only: {coded:.4} bits/dim ({:+.2}% vs H0)",
            100.0 * (coded / h0 - 1.0)
        );
        out.push(json!({
            "bench": "entropy", "stream": "coords", "data": data, "codec": format!("zstd-{level}-only"),
            "vectors": cosets.len(), "entropy_bits_per_dim": h0, "coded_bits_per_dim": coded,
            "vs_entropy_pct": 100.0 * (coded / h0 - 1.0), "encode_gb_per_s": logical / s / 1e9,
        }));
    }
    Ok(())
}

fn f16_record(
    out: &mut Vec<Value>,
    stream: &str,
    data: &str,
    values: &[f16],
    row_len: usize,
    runs: usize,
) -> Result<()> {
    let n = values.len() as f64;
    let h = entropy_bits(counts(values.iter().map(|v| v.to_bits()))) / n;
    let mut body = Vec::new();
    let (enc_s, summary) = best_of(runs, || {
        body.clear();
        encode_f16(values, row_len, &EncodeOptions::default(), &mut body)
    });
    let summary = summary?;
    let (dec_s, decoded) = best_of(runs, || decode_f16(&body, &Limits::default()));
    let decoded = decoded?;
    anyhow::ensure!(
        decoded.iter().map(|v| v.to_bits()).eq(values.iter().map(|v| v.to_bits())),
        "{stream} round trip failed"
    );
    let coded = 8.0 * body.len() as f64 / n;
    eprintln!(
        "{stream} {data}: H {h:.3} coded {coded:.3} bits/value, {} delta={}",
        summary.codec.name(),
        summary.delta
    );
    out.push(json!({
        "bench": "entropy", "stream": stream, "data": data, "values": values.len(),
        "codec": summary.codec.name(), "delta": summary.delta,
        "entropy_bits_per_value": h, "coded_bits_per_value": coded,
        "encode_gb_per_s": 2.0 * n / enc_s / 1e9, "decode_gb_per_s": 2.0 * n / dec_s / 1e9,
    }));
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let runs = if quick { 2 } else { 5 };
    let mut out = Vec::new();

    // Coords: Gaussian E8 output. step 1.14 gives 2.00 bits/dim of order-0 entropy.
    for (step, label) in [(1.14, "gauss-e8-step1.14"), (0.55, "gauss-e8-step0.55")] {
        eprintln!("generating {n} E8 points at step {step}...");
        let (cosets, coords) = e8::gaussian_e8(n, step, 7);
        coords_records(&mut out, label, &cosets, &coords, 16, runs)?;
    }
    // Coords with correlated rows: AR(1) along tokens, 16 vectors (head_dim 128) per row.
    let (cosets, coords) = e8::correlated_e8(n / 16, 16, 0.95, 0.4, 11);
    coords_records(&mut out, "ar1-rho0.95-e8-step0.4", &cosets, &coords, 16, runs)?;

    let mut rng = StdRng::seed_from_u64(5);
    // Scales: one per (token, head), 8 heads, 4096 tokens; per-head level times a slowly
    // varying per-token factor, as an RMS scale of Gaussian-like rows looks.
    let heads = 8;
    let tokens = 4096;
    let head_level: Vec<f32> = (0..heads).map(|_| 0.05 + rng.random::<f32>()).collect();
    let mut drift = vec![1.0f32; heads];
    let scales: Vec<f16> = (0..tokens * heads)
        .map(|i| {
            let h = i % heads;
            drift[h] = (drift[h] * (1.0 + 0.02 * (e8::gauss(&mut rng) as f32))).clamp(0.5, 2.0);
            f16::from_f32(head_level[h] * drift[h] * (1.0 + 0.05 * e8::gauss(&mut rng) as f32))
        })
        .collect();
    f16_record(&mut out, "scales", "drift-8heads-4096tok", &scales, heads, runs)?;
    // Windows: f16 N(0, 1) values (sink and recent tokens, 8 heads x 128 dims x 260 tokens).
    let window: Vec<f16> = (0..8 * 128 * 260).map(|_| f16::from_f64(e8::gauss(&mut rng))).collect();
    f16_record(&mut out, "window_f16", "gauss-f16", &window, 8 * 128, runs)?;

    // Positions: 4 sinks, 30% of the middle, a 256-token recent window, of 4096 tokens.
    let positions: Vec<u32> = (0..4096u32)
        .filter(|&t| !(4..4096 - 256).contains(&t) || rng.random::<f32>() < 0.3)
        .collect();
    let pn = positions.len() as f64;
    let deltas: Vec<u32> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let h = entropy_bits(counts(deltas.iter().copied())) / pn;
    let mut body = Vec::new();
    let (enc_s, s) = best_of(runs, || {
        body.clear();
        encode_positions(&positions, &EncodeOptions::default(), &mut body)
    });
    let s = s?;
    let (dec_s, d) = best_of(runs, || decode_positions(&body, &Limits::default()));
    anyhow::ensure!(d? == positions, "positions round trip failed");
    let coded = 8.0 * body.len() as f64 / pn;
    eprintln!("positions: H(delta) {h:.3} coded {coded:.3} bits/position, {}", s.codec.name());
    out.push(json!({
        "bench": "entropy", "stream": "positions", "data": "keep30pct-4096tok", "values": positions.len(),
        "codec": s.codec.name(), "entropy_bits_per_value": h, "coded_bits_per_value": coded,
        "encode_gb_per_s": 4.0 * pn / enc_s / 1e9, "decode_gb_per_s": 4.0 * pn / dec_s / 1e9,
    }));

    // Fixed codes: 2 bytes per vector, uniform (nothing to gain: must stay raw) and with a
    // skewed first byte (geometric, p = 0.3), uniform second byte.
    for (label, skew) in [("uniform-2B", false), ("geometric-first-byte-2B", true)] {
        let codes: Vec<u8> = (0..2 * n)
            .map(|i| {
                let r: u32 = rng.random();
                if skew && i % 2 == 0 {
                    ((r as f64 / 4294967296.0).max(1e-12).ln() / 0.7f64.ln()).floor().min(255.0)
                        as u8
                } else {
                    r as u8
                }
            })
            .collect();
        let nb = codes.len() as f64;
        let h = (entropy_bits(counts(codes.iter().step_by(2).copied()))
            + entropy_bits(counts(codes.iter().skip(1).step_by(2).copied())))
            / nb;
        let mut body = Vec::new();
        let (enc_s, s) = best_of(runs, || {
            body.clear();
            encode_fixed_codes(&codes, 2, 16, &EncodeOptions::default(), &mut body)
        });
        let s = s?;
        let (dec_s, d) = best_of(runs, || decode_fixed_codes(&body, &Limits::default()));
        anyhow::ensure!(d?.0 == codes, "fixed codes round trip failed");
        let coded = 8.0 * body.len() as f64 / nb;
        eprintln!("fixed {label}: H {h:.3} coded {coded:.3} bits/byte, {}", s.codec.name());
        out.push(json!({
            "bench": "entropy", "stream": "fixed_codes", "data": label, "bytes": codes.len(),
            "codec": s.codec.name(), "entropy_bits_per_byte": h, "coded_bits_per_byte": coded,
            "encode_gb_per_s": nb / enc_s / 1e9, "decode_gb_per_s": nb / dec_s / 1e9,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
