//! Throughput and round-trip accuracy records for `nq-rope`, as one JSON array on stdout.
//!
//! `cargo run --release -p nq-rope --example report`
//!
//! Throughput (one core, `std::time::Instant`, best of 7 runs over 4096 tokens at scattered
//! positions up to ~1M): `{"bench": "rope_apply" | "rope_invert", "impl": "cpu" | "table" |
//! "naive", "layout", "d", "t", "seconds", "rows_per_s", "melem_per_s"}`; `table` reuses
//! precomputed cos/sin (the per-head cost once a table is shared), `naive` is the f64
//! reference.
//!
//! Accuracy: `{"bench": "rope_roundtrip", "scaling", "layout", "d", "max_pos", "rows",
//! "max_rel_err", "max_rel_err_eps"}`: the largest `‖invert(apply(x, p), p) - x‖ / ‖x‖` over
//! random rows at random positions up to `max_pos`, also in units of `f32::EPSILON`.
use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use nq_rope::{Rope, RopeConfig, RopeLayout, RopeScaling, reference};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TOKENS: usize = 4096;
const NAIVE_TOKENS: usize = 256;
const RUNS: usize = 7;

fn main() -> Result<()> {
    let mut records = Vec::new();
    let layouts = [("split_half", RopeLayout::SplitHalf), ("interleaved", RopeLayout::Interleaved)];
    let pos: Vec<u32> = (0..TOKENS as u32).map(|i| i * 241 + (i * i) % 97).collect();
    for d in [64usize, 128] {
        for (lname, layout) in layouts {
            let cfg = RopeConfig::new(d, 500_000.0).with_layout(layout);
            let rope = Rope::new(cfg)?;
            let x = data(TOKENS * d);
            let table = rope.table(&pos);
            let base = |bench: &str, imp: &str| json!({"bench": bench, "impl": imp, "layout": lname, "d": d});
            records.push(time(base("rope_apply", "cpu"), &x, d, |y| rope.apply(y, &pos))?);
            records.push(time(base("rope_invert", "cpu"), &x, d, |y| rope.invert(y, &pos))?);
            records
                .push(time(base("rope_apply", "table"), &x, d, |y| rope.apply_table(y, &table))?);
            records
                .push(time(base("rope_invert", "table"), &x, d, |y| rope.invert_table(y, &table))?);
            let (xn, pn) = (&x[..NAIVE_TOKENS * d], &pos[..NAIVE_TOKENS]);
            records
                .push(time(base("rope_apply", "naive"), xn, d, |y| reference::apply(&cfg, y, pn))?);
        }
    }
    for (sname, scaling) in [("none", RopeScaling::None), ("yarn", RopeScaling::yarn(4.0, 32_768))]
    {
        for (lname, layout) in layouts {
            for d in [64usize, 128] {
                for max_pos in [4096u32, 1_000_000, u32::MAX] {
                    let cfg =
                        RopeConfig::new(d, 1_000_000.0).with_layout(layout).with_scaling(scaling);
                    records.push(roundtrip(&Rope::new(cfg)?, sname, lname, max_pos)?);
                }
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect()
}

/// Best-of-`RUNS` time of `f` over a fresh copy of `x`, merged into `record`.
fn time(
    mut record: Value,
    x: &[f32],
    d: usize,
    f: impl Fn(&mut [f32]) -> nq_rope::Result<()>,
) -> Result<Value> {
    let mut buf = x.to_vec();
    f(&mut buf)?;
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        buf.copy_from_slice(x);
        let t = Instant::now();
        f(black_box(&mut buf))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let t = x.len() / d;
    let rows_per_s = t as f64 / best;
    eprintln!("{record} {:.2} M rows/s", rows_per_s / 1e6);
    let fields = json!({"t": t, "seconds": best, "rows_per_s": rows_per_s, "melem_per_s": rows_per_s * d as f64 / 1e6});
    if let (Some(r), Some(f)) = (record.as_object_mut(), fields.as_object()) {
        r.extend(f.clone());
    }
    Ok(record)
}

/// Largest relative round-trip error over random rows at positions up to `max_pos`.
fn roundtrip(rope: &Rope, scaling: &str, layout: &str, max_pos: u32) -> Result<Value> {
    const ROWS: usize = 2048;
    let d = rope.head_dim();
    let mut rng = StdRng::seed_from_u64(u64::from(max_pos) ^ d as u64);
    let pos: Vec<u32> = (0..ROWS).map(|_| rng.random_range(0..=max_pos)).collect();
    let x: Vec<f32> = (0..ROWS * d).map(|_| rng.random_range(-4.0f32..4.0)).collect();
    let mut y = x.clone();
    rope.apply(&mut y, &pos)?;
    rope.invert(&mut y, &pos)?;
    let norm = |v: &[f32]| v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
    let worst = x
        .chunks(d)
        .zip(y.chunks(d))
        .map(|(a, b)| {
            let diff: Vec<f32> = a.iter().zip(b).map(|(p, q)| p - q).collect();
            norm(&diff) / norm(a)
        })
        .fold(0.0, f64::max);
    Ok(json!({
        "bench": "rope_roundtrip", "scaling": scaling, "layout": layout, "d": d,
        "max_pos": max_pos, "rows": ROWS, "max_rel_err": worst,
        "max_rel_err_eps": worst / f64::from(f32::EPSILON),
    }))
}
