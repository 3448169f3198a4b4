//! `cargo xtask bench cuda`: the GPU measurements, built on any machine, run on one with an
//! NVIDIA GPU.
//!
//! ```text
//! cargo xtask bench cuda                 build + package target/nq-gpu/ (no CUDA needed here)
//! cargo xtask bench cuda --run           package, then run it here (needs a GPU) and collect
//! cargo xtask bench cuda --collect DIR   merge DIR/encode.json + DIR/attend.json (written by
//!                                        target/nq-gpu/run.sh on a GPU machine) into
//!                                        target/nq-bench/cuda.json
//! ```
//!
//! The package is the stripped release binaries of nq-cuda's test suite, its `bench` example
//! (device copy bandwidth, encode throughput) and its `attend_bench` example (fused decode
//! attention against PyTorch SDPA, which it runs through `nq-cuda/bench/sdpa.py`), plus
//! `run.sh`, which runs the three in one go from the repository root: `bash
//! target/nq-gpu/run.sh OUT_DIR`. Everything in `cuda.json` therefore comes from one run on
//! one card (each record names it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, project_root, run_checked};

/// The shell script that runs the package on the GPU machine, from the repository root.
const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs nq-cuda's tests and benchmarks on a machine with an NVIDIA GPU, from the repository root:
#   bash target/nq-gpu/run.sh OUT_DIR
# Writes OUT_DIR/tests.log, OUT_DIR/encode.json, OUT_DIR/attend.json. NVRTC comes from
# /usr/local/cuda/lib64 (CUDA 12 or 13); NQ_REQUIRE_GPU makes a missing GPU a test failure.
set -uo pipefail
out=${1:?usage: run.sh OUT_DIR}
mkdir -p "$out"
here=$(dirname "$0")
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export NQ_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
status=0
"$here/nq-cuda-tests" --test-threads=1 >"$out/tests.log" 2>&1 || status=$?
tail -n 5 "$out/tests.log"
grep -E "^test .* (FAILED|ok)$" "$out/tests.log" | grep -c " ok$" | sed 's/^/tests passed: /'
grep -E "FAILED|panicked" "$out/tests.log" | head -n 20
"$here/bench" >"$out/encode.json" 2>"$out/encode.log" || { status=1; tail -n 20 "$out/encode.log"; }
"$here/attend_bench" >"$out/attend.json" 2>"$out/attend.log" || { status=1; tail -n 20 "$out/attend.log"; }
exit $status
"#;

pub(crate) fn run(args: &[String]) -> Result<Vec<Value>> {
    let root = project_root();
    match args {
        [] => {
            let dir = package(&root)?;
            eprintln!(
                "packaged {}: run `bash {}/run.sh OUT` from the repository root on a GPU machine, \
                 then `cargo xtask bench cuda --collect OUT`",
                dir.display(),
                dir.display()
            );
            collect_existing(&root)
        }
        [flag] if flag == "--run" => {
            let dir = package(&root)?;
            let out = root.join("target").join("nq-gpu-out");
            run_checked(Command::new("bash").arg(dir.join("run.sh")).arg(&out).current_dir(&root))?;
            collect(&out)
        }
        [flag, out] if flag == "--collect" => collect(Path::new(out)),
        _ => bail!("bench cuda: expected no option, --run, or --collect DIR; got {args:?}"),
    }
}

/// Build the release binaries, strip them and write `target/nq-gpu/`.
fn package(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("nq-gpu");
    fs::create_dir_all(&dir)?;
    run_checked(cargo().args(["build", "--release", "-p", "nq-cuda", "--examples"]))?;
    let tests = test_binary()?;
    let release = root.join("target").join("release").join("examples");
    for (src, name) in [
        (tests, "nq-cuda-tests"),
        (release.join("bench"), "bench"),
        (release.join("attend_bench"), "attend_bench"),
    ] {
        let dst = dir.join(name);
        fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        run_checked(Command::new("strip").arg(&dst))?;
    }
    fs::write(dir.join("run.sh"), RUN_SH)?;
    Ok(dir)
}

/// The release test binary of nq-cuda, built by `cargo test --no-run`.
fn test_binary() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "-p", "nq-cuda", "--no-run", "--test", "integration"]);
    crate::build_cuda::test_binary(cmd)
}

/// Records of a finished run: both benchmark files, each record tagged with the device line.
fn collect(out: &Path) -> Result<Vec<Value>> {
    let device = fs::read_to_string(out.join("device.txt")).unwrap_or_default();
    let mut records = Vec::new();
    for file in ["encode.json", "attend.json"] {
        let path = out.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let parsed: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array of records", path.display()))?;
        let Value::Array(rs) = parsed else { bail!("{} is not a JSON array", path.display()) };
        for mut r in rs {
            if r.get("device").is_none() {
                r["device"] = Value::String(device.trim().to_owned());
            }
            records.push(r);
        }
    }
    Ok(records)
}

/// Without a run, the records already in `target/nq-bench/cuda.json` stay as they are.
fn collect_existing(root: &Path) -> Result<Vec<Value>> {
    let path = root.join("target").join("nq-bench").join("cuda.json");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
        Err(_) => Ok(Vec::new()),
    }
}
