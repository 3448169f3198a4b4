//! Prints one JSON array of flat records to stdout: scoring throughput (`tokens_per_s`) per
//! scorer, sequence length `t` and head dimension `d` (window 32, group 3, one core), and
//! selection throughput for a 30-layer x 3-kv-head cache. Progress goes to stderr.
//!
//! Run: `cargo run --release -p nq-evict --example report`

use std::time::Instant;

use anyhow::Result;
use nq_evict::{
    Blend, Budget, ExpectedAttention, KeyKey, KeyNorm, ObservedAttention, Policy, ScoreInput,
    Scorer, Shape, Split, ValueNorm, select,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const WINDOW: usize = 32;
const GROUP: usize = 3;

/// Best-of time of `f`, repeated until 0.4 s have passed (at least 2 runs after a warm-up).
fn time<F: FnMut() -> Result<()>>(mut f: F) -> Result<f64> {
    f()?;
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 2 || start.elapsed().as_secs_f64() < 0.4 {
        let t0 = Instant::now();
        f()?;
        best = best.min(t0.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok(best)
}

fn main() -> Result<()> {
    let mut records: Vec<Value> = Vec::new();
    for d in [64usize, 128] {
        let observed = ObservedAttention::default();
        let expected = ExpectedAttention::default();
        let scorers: Vec<(&str, Box<dyn Scorer>)> = vec![
            ("observed", Box::new(observed)),
            ("expected", Box::new(expected.clone())),
            ("expected_vnorm", Box::new(ValueNorm::new(expected.clone()))),
            ("blend", Box::new(Blend::new(observed, expected, 0.5))),
            ("keynorm", Box::new(KeyNorm)),
            ("keykey", Box::new(KeyKey)),
        ];
        for t in [2048usize, 8192, 32768] {
            let mut rng = StdRng::seed_from_u64(7);
            let mut gen_vec =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let keys = gen_vec(t * d);
            let values = gen_vec(t * d);
            let queries = gen_vec(GROUP * WINDOW * d);
            let t32 = u32::try_from(t)?;
            let key_positions: Vec<u32> = (0..t32).collect();
            let query_positions: Vec<u32> = (t32 - WINDOW as u32..t32).collect();
            let input = ScoreInput {
                keys: &keys,
                values: Some(&values),
                queries: &queries,
                query_positions: &query_positions,
                key_positions: &key_positions,
                d,
            };
            let mut out = vec![0.0f32; t];
            for (name, scorer) in &scorers {
                if *name == "keykey" && t > 8192 {
                    continue; // O(t^2 d): about 10 s per call at 32K
                }
                let s = time(|| Ok(scorer.score(&input, &mut out)?))?;
                #[allow(clippy::cast_precision_loss)]
                let tps = t as f64 / s;
                eprintln!("{name:>15} d={d:<3} t={t:<6} {s:>10.6} s  {:>8.3} Mtok/s", tps / 1e6);
                records.push(json!({
                    "bench": "evict_score",
                    "scorer": name,
                    "d": d,
                    "t": t,
                    "w": WINDOW,
                    "group": GROUP,
                    "seconds": s,
                    "tokens_per_s": tps,
                    "melem_per_s": tps / 1e6,
                }));
            }
        }
    }
    let (layers, heads) = (30usize, 3usize);
    for t in [2048usize, 32768] {
        let mut rng = StdRng::seed_from_u64(1);
        let scores: Vec<f32> = (0..layers * heads * t).map(|_| rng.random::<f32>()).collect();
        let shape = Shape { layers, heads, tokens: t };
        for (name, split, pyramid) in [
            ("perhead", Split::PerHead, None),
            ("perlayer", Split::PerLayer, None),
            ("pyramid", Split::PerLayer, Some(2.0)),
            ("global", Split::Global, None),
        ] {
            let policy =
                Policy { budget: Budget::EvictFraction(0.6), split, pyramid, ..Policy::default() };
            let s = time(|| {
                select(&scores, shape, &policy)?;
                Ok(())
            })?;
            #[allow(clippy::cast_precision_loss)]
            let tps = (layers * heads * t) as f64 / s;
            eprintln!("select {name:>9} t={t:<6} {s:>10.6} s  {:>8.3} Mtok/s", tps / 1e6);
            records.push(json!({
                "bench": "evict_select",
                "split": name,
                "t": t,
                "layers": layers,
                "heads": heads,
                "seconds": s,
                "tokens_per_s": tps,
                "melem_per_s": tps / 1e6,
            }));
        }
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}
