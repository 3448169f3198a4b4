//! Decode-time attention over a long SmolLM2-shaped cache: the f16 cache (`none`: every token
//! kept as f16 rows, read by the same attention code, each row widened as it is read) against
//! the compressed presets, through generation-like steps: every step appends one token to
//! each of the 30 layers, attends one query per layer, and compresses what is due (a block of
//! 64 tokens every 64 steps), so decode-time compression is in the timed loop.
//!
//! `cargo run --release -p nq-core --features testing --example attend_time -- [T] [STEPS]
//! [PRESET...]` (defaults 8000, 256, and none high balanced max; `none` first, as the base). Wall time per step, best of 3 passes; the attention runs on up
//! to as many threads as there are kv heads (3). Prints JSON records (bench
//! `cpu_decode_attention`: `preset`, `t`, `steps`, `ms_per_step`, `speedup_vs_f16`, `isa`).

use std::time::Instant;

use nq_core::testing::{filled_cache, test_rows};
use nq_core::{KvShape, Preset};

const SMOLLM2: KvShape = KvShape { layers: 30, q_heads: 9, kv_heads: 3, head_dim: 64 };

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t: usize = args.first().map_or(Ok(8000), |s| s.parse())?;
    let steps: usize = args.get(1).map_or(Ok(256), |s| s.parse())?;
    let shape = SMOLLM2;
    let d = shape.head_dim;
    let isa = nq_lattice::Isa::detect().name();
    let mut records = Vec::new();
    let mut f16_ms = None;
    let presets: Vec<Preset> = if args.len() > 2 {
        args[2..].iter().map(|s| s.parse()).collect::<Result<_, _>>()?
    } else {
        vec![Preset::None, Preset::High, Preset::Balanced, Preset::Max]
    };
    for preset in presets {
        let mut prefilled = filled_cache(shape, preset.config(), t, true)?;
        prefilled.compress()?;
        // The decode steps' rows, made before the clock starts.
        let kvs: Vec<Vec<f32>> =
            (0..steps).map(|s| test_rows(shape.kv_heads, d, 17 + s as u64)).collect();
        let qs: Vec<Vec<f32>> =
            (0..steps).map(|s| test_rows(shape.q_heads, d, 91 + s as u64)).collect();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let mut cache = prefilled.clone();
            let mut out = vec![0f32; shape.q_heads * d];
            let started = Instant::now();
            for step in 0..steps {
                let p = (t + step) as u32;
                for layer in 0..shape.layers {
                    cache.append(layer, &kvs[step], &kvs[step], &[p])?;
                    cache.attend(layer, &qs[step], &[p], None, &mut out)?;
                }
                cache.compress()?;
            }
            best = best.min(started.elapsed().as_secs_f64() / steps as f64);
        }
        let ms = best * 1e3;
        let base = *f16_ms.get_or_insert(ms);
        let stats = prefilled.stats();
        eprintln!(
            "{:>9} t={t}: {ms:7.2} ms/step ({:.2}x the f16 cache), {:.1} MiB resident",
            preset.name(),
            base / ms,
            stats.resident_bytes as f64 / (1 << 20) as f64
        );
        records.push(format!(
            r#"{{"bench": "cpu_decode_attention", "preset": "{}", "t": {t}, "steps": {steps}, "ms_per_step": {ms}, "speedup_vs_f16": {}, "resident_bytes": {}, "isa": "{isa}"}}"#,
            preset.name(),
            base / ms,
            stats.resident_bytes
        ));
    }
    println!("[\n  {}\n]", records.join(",\n  "));
    Ok(())
}
