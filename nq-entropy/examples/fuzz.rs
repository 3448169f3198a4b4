//! Long-running fuzz driver for the stable toolchain (no cargo-fuzz): mutates real archives
//! and stream bodies (bit flips, byte sets, truncation, insertion, removal, length-field
//! overwrites, splicing), half the time recomputing every checksum so the mutation reaches the
//! stream decoders, and decodes each under `catch_unwind` with small limits.
//!
//! `cargo run --release -p nq-entropy --example fuzz -- --seconds 600 [--seed N]`
//!
//! Prints progress to stderr and a final JSON summary (executions, panics, outcome counts) to
//! stdout. Inputs that panic are written to `$TMPDIR/nq-entropy-fuzz/crash-*.bin` (first
//! line of the file name says whether it was an archive or a stream body and its kind).

#[path = "../tests/support/e8.rs"]
mod e8;
#[path = "../tests/support/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nq_entropy::{Effort, Error, StreamKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use mutate::{
    apply, archive, bodies, decode_archive, decode_body, fix_checksums, fuzz_limits,
    random_mutation,
};

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

/// Short name of an outcome, for the histogram.
fn outcome(r: &Result<(), Error>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(Error::Truncated { .. }) => "truncated",
        Err(Error::BadMagic { .. }) => "bad_magic",
        Err(Error::UnsupportedVersion { .. }) => "unsupported_version",
        Err(Error::Checksum { .. }) => "checksum",
        Err(Error::Limit { .. }) => "limit",
        Err(Error::FingerprintMismatch { .. }) => "fingerprint_mismatch",
        Err(Error::Corrupt { .. }) => "corrupt",
        Err(Error::Zstd { .. }) => "zstd",
        Err(_) => "other",
    }
}

fn main() -> Result<()> {
    let seconds = arg("--seconds").unwrap_or(60);
    let seed = arg("--seed").unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = fuzz_limits();

    eprintln!("building corpus...");
    let archives: Vec<Vec<u8>> = vec![
        archive(1, 500, Effort::Fast),
        archive(2, 64, Effort::Default),
        archive(3, 200, Effort::Max),
        archive(4, 3, Effort::Fast),
    ];
    let mut corpus_bodies: Vec<(StreamKind, Vec<u8>)> = bodies(5, 300);
    corpus_bodies.extend(bodies(6, 9));
    for a in &archives {
        decode_archive(a, &limits).context("corpus archive must decode")?;
    }
    for (k, b) in &corpus_bodies {
        decode_body(*k, b, &limits).context("corpus body must decode")?;
    }

    // Panics are counted, not printed by the default hook.
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let lp = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        let msg = format!("{info}\n{}", std::backtrace::Backtrace::force_capture());
        eprintln!("panic: {msg}");
        if let Ok(mut s) = lp.lock() {
            *s = msg;
        }
    }));
    let crash_dir = std::env::temp_dir().join("nq-entropy-fuzz");

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut execs = 0u64;
    let mut panics = 0u64;
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut next_report = start + Duration::from_secs(10);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let on_archive = rng.random_bool(0.5);
            let (kind, base) = if on_archive {
                (None, &archives[rng.random_range(0..archives.len())])
            } else {
                let (k, b) = &corpus_bodies[rng.random_range(0..corpus_bodies.len())];
                (Some(*k), b)
            };
            let mut d = base.clone();
            for _ in 0..rng.random_range(1..=4) {
                let m = random_mutation(&mut rng, d.len());
                apply(&mut d, &m);
            }
            // Splice a chunk of another corpus input in, now and then.
            if rng.random_bool(0.1) {
                let other = &archives[rng.random_range(0..archives.len())];
                let from = rng.random_range(0..other.len());
                let len = rng.random_range(1..64).min(other.len() - from);
                let at = rng.random_range(0..=d.len());
                d.splice(at..at, other[from..from + len].iter().copied());
            }
            if on_archive && rng.random_bool(0.5) {
                fix_checksums(&mut d);
            }
            let r = catch_unwind(AssertUnwindSafe(|| match kind {
                None => decode_archive(&d, &limits).map(|_| ()),
                Some(k) => decode_body(k, &d, &limits).map(|_| ()),
            }));
            execs += 1;
            match r {
                Ok(r) => *outcomes.entry(outcome(&r)).or_default() += 1,
                Err(_) => {
                    panics += 1;
                    let msg = last_panic.lock().map(|s| s.clone()).unwrap_or_default();
                    eprintln!(
                        "PANIC #{panics} on {}: {msg}",
                        kind.map_or("archive".to_string(), |k| format!("{k:?}"))
                    );
                    std::fs::create_dir_all(&crash_dir)?;
                    let name = format!(
                        "crash-{panics}-{}.bin",
                        kind.map_or("archive".to_string(), |k| format!("{k:?}"))
                    );
                    std::fs::write(crash_dir.join(name), &d)?;
                }
            }
        }
        if Instant::now() >= next_report {
            eprintln!(
                "{:>5.0} s: {execs} execs ({:.0}/s), {panics} panics, {outcomes:?}",
                start.elapsed().as_secs_f64(),
                execs as f64 / start.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(30);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "bench": "entropy_fuzz", "seed": seed, "seconds": secs, "executions": execs,
        "panics": panics, "outcomes": outcomes,
    });
    println!("{summary}");
    anyhow::ensure!(panics == 0, "{panics} panics; inputs in {}", crash_dir.display());
    Ok(())
}
