//! `cargo xtask bench gpu-decode`: greedy decode on a GPU with nq-candle's `cuda` feature,
//! candle's dense f16 cache against the compressed cache on the device
//! (`nq-candle/examples/gpu_decode.rs`).
//!
//! ```text
//! cargo xtask bench gpu-decode                 build (cargo xtask build-cuda) and package
//!                                              target/nq-gpu-candle/run.sh for a GPU machine
//! cargo xtask bench gpu-decode --collect OUT.. merge the records in each OUT (gpu-decode.json
//!                                              from `bash target/nq-gpu-candle/run.sh OUT`, or
//!                                              the per-record lines of gpu_decode's *.log) into
//!                                              target/nq-bench/gpu-decode.json; several OUT
//!                                              are several runs, kept apart (each record's
//!                                              `run` is its directory's name)
//! ```

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::project_root;

pub(crate) fn run(args: &[String]) -> Result<Vec<Value>> {
    match args {
        [] => {
            crate::build_cuda::run(&[])?;
            eprintln!(
                "on a GPU machine, from the repository root: bash target/nq-gpu-candle/run.sh OUT \
                 (carry target/nq-gpu-candle/{{run.sh,*.xz}}), then cargo xtask bench gpu-decode \
                 --collect OUT"
            );
            let path = project_root().join("target/nq-bench/gpu-decode.json");
            Ok(fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default())
        }
        [flag, dirs @ ..] if flag == "--collect" && !dirs.is_empty() => {
            let mut records: Vec<Value> = Vec::new();
            for dir in dirs {
                for r in collect(Path::new(dir))? {
                    // A configuration measured twice on one card: the first directory's.
                    if !records.iter().any(|x| key(x) == key(&r)) {
                        records.push(r);
                    }
                }
            }
            Ok(records)
        }
        _ => bail!("bench gpu-decode takes no arguments or `--collect DIR...`, got {args:?}"),
    }
}

/// What identifies a configuration: the run, the card, the model, the batch, the context and
/// the cache.
fn key(r: &Value) -> [String; 7] {
    ["run", "device", "shape", "weights", "batch", "context", "cache"].map(|k| r[k].to_string())
}

/// The records of a run, each tagged with the device line of `device.txt`: the JSON arrays
/// `gpu_decode` prints at the end (`*.json`) and the records it prints one per line to stderr
/// as each configuration finishes (`*.log`: what is left of a run stopped by a time limit),
/// each configuration once.
fn collect(out: &Path) -> Result<Vec<Value>> {
    let device = fs::read_to_string(out.join("device.txt")).unwrap_or_default();
    let mut files: Vec<_> = fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut records: Vec<Value> = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<Value> = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).unwrap_or_default(),
            Some("log") => text
                .lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            _ => continue,
        };
        for mut r in found.into_iter().filter(|r: &Value| r["bench"] == "gpu_decode") {
            if records.iter().any(|x| key(x) == key(&r)) {
                continue;
            }
            r["device_line"] = Value::String(device.trim().to_owned());
            // The directory names the run: the table compares caches within one run only.
            let run = out.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
            r["run"] = Value::String(run);
            records.push(r);
        }
    }
    if records.is_empty() {
        bail!("no gpu_decode records in {}", out.display());
    }
    Ok(records)
}
