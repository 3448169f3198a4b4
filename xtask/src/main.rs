//! Project automation for nexusquant-rs (`cargo xtask ...`, alias in `.cargo/config.toml`).
//!
//! ```text
//! cargo xtask fetch-model NAME             install a real GGUF checkpoint (see shared/models.md)
//! cargo xtask bench [STAGE...] [--no-criterion] [--quick]
//!                                            run benches, write target/nq-bench/STAGE.json
//! cargo xtask ci                             run exactly what .ci/run runs after its installs
//! cargo xtask compare-original [--model M,...] [--samples N | --quick] [--keep-venv]
//!                                            the Python original on our protocol (original.json)
//! ```

mod bench;
mod build_cuda;
mod ci;
mod cuda;
mod fetch;
mod gpu_decode;
mod original;
mod quality;
mod readme;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  fetch-model NAME               install a GGUF model (smollm2, qwen05, gemma270m) into the model
                                 cache ($NQ_MODEL_DIR or ~/.cache/nexusquant/models); no-op if present
  bench [STAGE...] [--no-criterion] [--quick] [--collect]
                                 run criterion benches and report examples; stages: hadamard, rope,
                                 lattice, entropy, evict, core, decode, quality (default: the
                                 five stage crates); writes target/nq-bench/STAGE.json. core:
                                 nq-core's compression/attention benches and compress_time;
                                 decode: decode tok/s at 8K, f16 vs compressed (needs smollm2);
                                 quality: `nq eval --json` on
                                 smollm2 and qwen05 (--quick: one sample per genre; --collect:
                                 merge eval files already written instead of running)
  bench cuda [--run | --collect DIR]
                                 GPU figures (cuda.json): build and strip nq-cuda's tests and
                                 benches into target/nq-gpu/ (no CUDA needed to build); run
                                 `bash target/nq-gpu/run.sh OUT` on a GPU machine, then --collect
                                 OUT (or --run on a GPU machine with Rust)
  bench gpu-decode [--collect DIR]
                                 greedy decode on a GPU (gpu-decode.json): build-cuda, then
                                 `bash target/nq-gpu-candle/run.sh OUT` on a GPU machine (the
                                 GPU tests of nq-candle and examples/gpu_decode), then --collect OUT
  build-cuda                     build `nq` with nq-candle's `cuda` feature on a machine without
                                 CUDA: nvcc 13.0 from the package registry into target/cuda13, a
                                 libcuda stub for linking, target/cuda; stripped program in
                                 target/nq-gpu-candle/nq (~30 min clean on 2 cores)
  ci                             run the CI command list (fmt, clippy, tests, scalar tests, docs)
  compare-original [--model smollm2,qwen05] [--samples N | --quick] [--threads N] [--mask-only]
                   [--keep-venv]
                                 the Python original (nexusquant-kv 0.6.3, pinned torch/transformers/
                                 gguf in target/original-venv, removed afterwards unless
                                 --keep-venv) on the protocol of `nq eval --mode prompt`: its three
                                 presets, same texts and tokens; writes target/nq-bench/original.json
                                 (--samples: per genre; --quick: one; --mask-only: also each
                                 preset's keep mask without quantization; torch threads: 2)
  readme [TABLE...]              regenerate the README's result tables (or only those named)
                                 from target/nq-bench/*.json
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "fetch-model" => fetch::run(&rest),
        "bench" => bench::run(&rest),
        "ci" => ci::run(&rest),
        "readme" => readme::run(&rest),
        "compare-original" => original::run(&rest),
        "build-cuda" => build_cuda::run(&rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// The workspace root (xtask lives one folder below it).
fn project_root() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `$CARGO`, the cargo that invoked us, so toolchain overrides are honoured.
fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Run a command to completion, failing with its command line if it exits non-zero.
fn run_checked(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd.status().with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
