//! Time of one `compress()` of a 2,000-token SmolLM2-shaped cache, per preset, in this thread's
//! CPU time (so a busy machine does not inflate it) and wall time, mean CPU time and best wall
//! time of `N` runs.
//!
//! `cargo run --release -p nq-core --features testing --example compress_time -- [T] [N] [ONLY]`
//! (defaults 2000 and 20; `ONLY`, such as `high`, times that preset alone, for a profiler).
//! The window's attention is handed over as nq-candle does from the prefill
//! (`scores=prefill`); `balanced` is also timed recomputing it from the 128 window queries
//! (`scores=queries`). Prints JSON records (bench `cpu_compress_once`), each with the
//! instruction set nq-lattice's encoders run on (`NQ_FORCE_AVX2=1` makes an AVX-512 machine
//! take the AVX2 path).

use std::time::Instant;

use nq_core::testing::filled_cache;
use nq_core::{KvShape, Preset};

const SMOLLM2: KvShape = KvShape { layers: 30, q_heads: 9, kv_heads: 3, head_dim: 64 };

/// This thread's CPU time in seconds (Linux `/proc/thread-self/stat`, 100 ticks/s).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t: usize = args.first().map_or(Ok(2000), |s| s.parse())?;
    let n: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let mut records = Vec::new();
    let only = args.get(2);
    let runs = Preset::ALL.iter().map(|&p| (p, true)).chain([(Preset::Balanced, false)]);
    for (preset, mass) in runs.filter(|(p, mass)| only.is_none_or(|o| *mass && o == p.name())) {
        let cache = filled_cache(SMOLLM2, preset.config(), t, mass)?;
        // CPU time ticks at 10 ms: take the mean over the runs; wall time: the best run.
        let (mut cpu, mut wall) = (0.0, f64::INFINITY);
        for _ in 0..n {
            let mut c = cache.clone();
            let (w0, c0) = (Instant::now(), thread_cpu_seconds());
            c.compress()?;
            cpu += (thread_cpu_seconds() - c0) / n as f64;
            wall = wall.min(w0.elapsed().as_secs_f64());
        }
        let scores = if mass { "prefill" } else { "queries" };
        eprintln!(
            "{:>9} scores={scores:<8} cpu {:6.1} ms  wall {:6.1} ms",
            preset.name(),
            cpu * 1e3,
            wall * 1e3
        );
        records.push(format!(
            r#"{{"bench": "cpu_compress_once", "preset": "{}", "scores": "{scores}", "t": {t}, "cpu_seconds": {cpu}, "seconds": {wall}, "isa": "{}"}}"#,
            preset.name(),
            nq_lattice::Isa::detect().name()
        ));
    }
    println!("[\n  {}\n]", records.join(",\n  "));
    Ok(())
}
