//! Quality and speed of the lattice codes: prints one JSON array of flat records to stdout.
//!
//! `cargo run --release -p nq-lattice --example report [-- --quick]`
//!
//! Data "gauss": 2^20 i.i.d. N(0, 1) 8-vectors (8 Mi values), cut into rows of `d` values
//! with one scale per row. Speeds are single-threaded, best of several runs (Instant).

use std::hint::black_box;
use std::time::Instant;

use half::f16;
use nq_lattice::{
    FixedBits, FixedCodec, ScaleMode, VariableCodec, coset_context_entropy_bits_per_dim,
    empirical_entropy_bits_per_dim,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn gauss(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>();
            let v: f64 = rng.random();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn sqnr_db(x: &[f32], y: &[f32]) -> f64 {
    let s: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    let e: f64 = x.iter().zip(y).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
    10.0 * (s / e).log10()
}

/// Wall time of `f` over `chunks` pieces of work, each timed `runs` times keeping the
/// fastest (so a busy machine's preemptions are dropped), summed, in seconds.
fn time_chunked(chunks: usize, runs: usize, mut f: impl FnMut(usize)) -> f64 {
    (0..chunks).map(|c| time(runs, || f(c))).sum()
}

/// Best-of-`runs` wall time of `f`, in seconds.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn mode_name(m: ScaleMode) -> String {
    match m {
        ScaleMode::AbsMax => "absmax".into(),
        ScaleMode::Rms => "rms".into(),
        ScaleMode::BestOf { candidates } => format!("bestof{candidates}"),
    }
}

/// Rows per timed chunk.
const CHUNK_ROWS: usize = 2048;

fn fixed_record(
    x: &[f32],
    d: usize,
    bits: FixedBits,
    mode: ScaleMode,
    runs: usize,
) -> anyhow::Result<Value> {
    let codec = FixedCodec::new(bits, mode)?;
    let rows = x.len() / d;
    let mut codes = vec![0u8; codec.code_len(rows, d)];
    let mut scales = vec![f16::ZERO; rows];
    // Chunks of CHUNK_ROWS rows, each the best of `runs` timings.
    let chunks = rows / CHUNK_ROWS;
    let (cb, xb) = (codec.code_len(CHUNK_ROWS, d), CHUNK_ROWS * d);
    let enc = time_chunked(chunks, runs, |c| {
        let (codes, scales) =
            (&mut codes[c * cb..(c + 1) * cb], &mut scales[c * CHUNK_ROWS..(c + 1) * CHUNK_ROWS]);
        codec.encode_rows(&x[c * xb..(c + 1) * xb], d, codes, scales).expect("encode");
    });
    let mut y = vec![0.0f32; x.len()];
    let dec = time_chunked(chunks, runs, |c| {
        let (codes, scales) =
            (&codes[c * cb..(c + 1) * cb], &scales[c * CHUNK_ROWS..(c + 1) * CHUNK_ROWS]);
        codec.decode_rows(codes, scales, d, &mut y[c * xb..(c + 1) * xb]).expect("decode");
    });
    let n = x.len() as f64;
    let rec = json!({
        "bench": "lattice",
        "code": format!("fixed{}", bits.bits_per_dim()),
        "data": "gauss",
        "d": d,
        "scale": mode_name(mode),
        "isa": codec.isa().name(),
        "bits_per_dim": f64::from(bits.bits_per_dim()),
        "scale_bits_per_dim": 16.0 / d as f64,
        "sqnr_db": sqnr_db(x, &y),
        "encode_melem_per_s": n / enc / 1e6,
        "decode_melem_per_s": n / dec / 1e6,
    });
    eprintln!("{rec}");
    Ok(rec)
}

fn fused_records(x: &[f32], d: usize, bits: FixedBits, runs: usize) -> anyhow::Result<Vec<Value>> {
    let codec = FixedCodec::new(bits, ScaleMode::Rms)?;
    let rows = 4096;
    let x = &x[..rows * d];
    let mut codes = vec![0u8; codec.code_len(rows, d)];
    let mut scales = vec![f16::ZERO; rows];
    codec.encode_rows(x, d, &mut codes, &mut scales)?;
    let q = gauss(d, 99);
    let w = gauss(rows, 98);
    let mut out = vec![0.0f32; rows];
    let mut acc = vec![0.0f32; d];
    // Fastest of many single calls (each 0.1-1 ms).
    let reps = 40 * runs;
    let t_dot =
        time(reps, || codec.dot_rows(black_box(&q), &codes, &scales, &mut out).expect("dot"));
    let t_axpy =
        time(reps, || codec.axpy_rows(black_box(&w), &codes, &scales, &mut acc).expect("axpy"));
    let n = (rows * d) as f64;
    let mut recs = Vec::new();
    for (op, t) in [("dot_rows", t_dot), ("axpy_rows", t_axpy)] {
        let rec = json!({
            "bench": "lattice_fused",
            "op": op,
            "code": format!("fixed{}", bits.bits_per_dim()),
            "d": d,
            "rows": rows,
            "isa": codec.isa().name(),
            "seconds": t,
            "melem_per_s": n / t / 1e6,
            "rows_per_s": rows as f64 / t,
        });
        eprintln!("{rec}");
        recs.push(rec);
    }
    Ok(recs)
}

fn variable_record(x: &[f32], d: usize, step: f32, runs: usize) -> anyhow::Result<Value> {
    let codec = VariableCodec::new(step, ScaleMode::Rms)?;
    let (mut cosets, mut coords, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    let enc = time(runs, || {
        cosets.clear();
        coords.clear();
        scales.clear();
        codec.encode_rows(x, d, &mut cosets, &mut coords, &mut scales).expect("encode");
    });
    let mut y = vec![0.0f32; x.len()];
    let dec =
        time(runs, || codec.decode_rows(&cosets, &coords, &scales, d, &mut y).expect("decode"));
    let n = x.len() as f64;
    let rec = json!({
        "bench": "lattice",
        "code": format!("variable-step{step}"),
        "data": "gauss",
        "d": d,
        "scale": "rms",
        "bits_source": "entropy",
        "bits_per_dim": empirical_entropy_bits_per_dim(&cosets, &coords),
        "bits_per_dim_coset_context": coset_context_entropy_bits_per_dim(&cosets, &coords),
        "scale_bits_per_dim": 16.0 / d as f64,
        "sqnr_db": sqnr_db(x, &y),
        "encode_melem_per_s": n / enc / 1e6,
        "decode_melem_per_s": n / dec / 1e6,
    });
    eprintln!("{rec}");
    Ok(rec)
}

/// SQNR of one global scale `k` (no per-row scale) on the first blocks of `x`, to find the
/// per-code RMS factor.
fn scale_sweep(x: &[f32], bits: FixedBits) -> Vec<Value> {
    let blocks = (x.len() / 8).min(1 << 17);
    let mut recs = Vec::new();
    for j in 0..=16 {
        let k = 0.8 + 0.025 * j as f32;
        let mut y = vec![0.0f32; blocks * 8];
        for (b, o) in y.chunks_exact_mut(8).enumerate() {
            let v: [f32; 8] = std::array::from_fn(|i| x[8 * b + i] / k);
            let (_, c) = bits.encode_block(&v);
            for i in 0..8 {
                o[i] = c[i] * k;
            }
        }
        recs.push(json!({
            "bench": "lattice_scale_sweep",
            "code": format!("fixed{}", bits.bits_per_dim()),
            "data": "gauss",
            "scale_over_sigma": k,
            "sqnr_db": sqnr_db(&x[..blocks * 8], &y),
        }));
    }
    let best = recs
        .iter()
        .max_by(|a, b| a["sqnr_db"].as_f64().partial_cmp(&b["sqnr_db"].as_f64()).expect("finite"))
        .cloned();
    eprintln!("sweep {bits:?}: best {best:?}");
    recs
}

/// The Voronoi codes E8 / qE8 (q = 4, 8, 16: 2, 3, 4 bits) at their best global scale
/// (0.025-step sweep of `scale / σ`), with plain wrap-around and with the shrink rule.
fn voronoi(x: &[f32]) -> Vec<Value> {
    let blocks = (x.len() / 8).min(1 << 15);
    let mut recs = Vec::new();
    for (q, bits) in [(4.0f32, 2), (8.0, 3), (16.0, 4)] {
        for shrink in [false, true] {
            let mut best = (0.0f32, f64::NEG_INFINITY);
            for j in 0..60 {
                // Scale relative to the lattice: 4/q * (0.5 .. 2.0).
                let k = 4.0 / q * (0.5 + 0.025 * j as f32);
                let mut y = vec![0.0f32; blocks * 8];
                for (b, o) in y.chunks_exact_mut(8).enumerate() {
                    let v: [f32; 8] = std::array::from_fn(|i| x[8 * b + i] / k);
                    let c = nq_lattice::reference::voronoi_quantize(&v, q, shrink);
                    for i in 0..8 {
                        o[i] = c[i] * k;
                    }
                }
                let s = sqnr_db(&x[..blocks * 8], &y);
                if s > best.1 {
                    best = (k, s);
                }
            }
            let rec = json!({
                "bench": "lattice_voronoi",
                "code": format!("voronoi{}", q as u32),
                "overload": if shrink { "shrink" } else { "wrap" },
                "data": "gauss",
                "bits_per_dim": bits,
                "scale_over_sigma": best.0,
                "sqnr_db": best.1,
            });
            eprintln!("{rec}");
            recs.push(rec);
        }
    }
    recs
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    let blocks = if quick { 1 << 16 } else { 1 << 20 };
    let runs = if quick { 1 } else { 5 };
    let x = gauss(blocks * 8, 2024);
    let mut out = Vec::new();
    let all_bits = [FixedBits::B2, FixedBits::B3, FixedBits::B4];
    if want("fixed") {
        for bits in all_bits {
            for d in [64, 128] {
                out.push(fixed_record(&x, d, bits, ScaleMode::default(), runs)?);
            }
            // The fast rule at the smaller head size (d = 128: in `modes`).
            out.push(fixed_record(&x, 64, bits, ScaleMode::Rms, runs)?);
        }
    }
    if want("modes") {
        for bits in all_bits {
            for mode in [
                ScaleMode::AbsMax,
                ScaleMode::Rms,
                ScaleMode::BestOf { candidates: 1 },
                ScaleMode::BestOf { candidates: 2 },
                ScaleMode::BestOf { candidates: 8 },
            ] {
                out.push(fixed_record(&x, 128, bits, mode, runs)?);
            }
        }
    }
    if want("variable") {
        for step in [0.9f32, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0] {
            out.push(variable_record(&x, 128, step, runs)?);
        }
    }
    if want("fused") {
        for bits in all_bits {
            for d in [64, 128] {
                out.extend(fused_records(&x, d, bits, runs)?);
            }
        }
    }
    if want("sweep") {
        for bits in all_bits {
            out.extend(scale_sweep(&x, bits));
        }
    }
    if want("voronoi") {
        out.extend(voronoi(&x));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
