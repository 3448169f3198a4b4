//! `cargo xtask build-cuda`: build the `nq` program with nq-candle's `cuda` feature on a
//! machine without a GPU or a CUDA installation, for a machine with an NVIDIA GPU.
//!
//! ```text
//! cargo xtask build-cuda             toolchain into target/cuda13, build into target/cuda,
//!                                    the stripped program at target/nq-gpu-candle/nq
//! ```
//!
//! Candle's `cuda` feature compiles its kernels with nvcc at build time (candle-kernels) and
//! links cudarc against `libcuda`; neither is needed to run on the GPU machine, whose driver
//! and CUDA 13.0 libraries serve at run time. The steps (../shared/recipes/candle-cuda-build.sh,
//! as measured once: ~2 minutes of downloads, ~29 minutes of clean release build on 2 cores):
//!
//! 1. nvcc and the CUDA 13.0 headers and libraries from the Python package registry into
//!    `target/cuda13` (pinned: `nvidia-cuda-nvcc`, `-crt` and `nvidia-nvvm` at 13.0.88;
//!    newer PTX is too new for the GPU machine's driver 580).
//! 2. A CUDA_HOME for cudarc's dynamic linking in `target/cudalink`: unversioned library
//!    links and a `libcuda.so` stub (SONAME `libcuda.so.1`) exporting every `cu*` symbol
//!    cudarc declares, each returning CUDA_ERROR_STUB_LIBRARY.
//! 3. `cargo build --release -p nq-candle --features cuda --bin nq` into `target/cuda` (its
//!    own target directory, so the CPU build's artifacts stay), with `CUDA_COMPUTE_CAP=90`
//!    (H100 / H200: no nvidia-smi needed), then strip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{cargo, project_root, run_checked};

/// The CUDA 13.0 packages, pinned as the recipe measured them.
const PACKAGES: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
];

/// Unversioned links the linker looks for, to the versioned libraries of the packages.
const LIBS: &[(&str, &str)] =
    &[("cublas", "13"), ("cublasLt", "13"), ("curand", "10"), ("nvrtc", "13"), ("cudart", "13")];

/// CUDA_ERROR_STUB_LIBRARY: what every function of the link-time `libcuda` stub returns.
const STUB_ERROR: u32 = 34;

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("build-cuda takes no arguments, got `{a}`");
    }
    let root = project_root();
    let toolkit = toolchain(&root)?;
    let home = cuda_home(&root, &toolkit)?;
    let target_dir = root.join("target").join("cuda");
    let path =
        format!("{}:{}", toolkit.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let cuda_cargo = |args: &[&str]| {
        let mut c = cargo();
        c.args(args)
            .args(["--release", "-p", "nq-candle", "--features", "cuda", "--target-dir"])
            .arg(&target_dir)
            .env("PATH", &path)
            .env("CUDA_HOME", &home)
            .env("CUDA_COMPUTE_CAP", "90");
        c
    };
    run_checked(&mut cuda_cargo(&["build", "--bin", "nq", "--example", "gpu_decode"]))?;
    let tests = test_binary(cuda_cargo(&["test", "--no-run", "--test", "integration"]))?;
    let out = root.join("target").join("nq-gpu-candle");
    fs::create_dir_all(&out)?;
    let release = target_dir.join("release");
    for (src, name) in [
        (release.join("nq"), "nq"),
        (release.join("examples").join("gpu_decode"), "gpu_decode"),
        (tests, "nq-candle-tests"),
    ] {
        let dst = out.join(name);
        fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        run_checked(Command::new("strip").arg(&dst))?;
        // A GPU call carries at most 64 MiB: candle's embedded PTX compresses about tenfold.
        run_checked(Command::new("xz").args(["-T0", "-6", "-f", "-k"]).arg(&dst))?;
    }
    fs::write(out.join("run.sh"), RUN_SH)?;
    eprintln!(
        "built {}: nq, gpu_decode, nq-candle-tests (and .xz of each); on a GPU machine: \
         bash {}/run.sh OUT",
        out.display(),
        out.display()
    );
    Ok(())
}

/// The GPU run of nq-candle: the integration tests (the GPU ones must run) and the decode
/// benchmark, from the `.xz` programs, writing OUT/tests.log and OUT/gpu-decode.json.
const RUN_SH: &str = r#"#!/usr/bin/env bash
# bash target/nq-gpu-candle/run.sh OUT_DIR [gpu_decode arguments...]
set -uo pipefail
out=${1:?usage: run.sh OUT_DIR [gpu_decode arguments]}
shift
mkdir -p "$out"
here=$(dirname "$0")
bin=$(mktemp -d)
for p in nq-candle-tests gpu_decode; do xz -dc "$here/$p.xz" >"$bin/$p" && chmod +x "$bin/$p"; done
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export NQ_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
status=0
"$bin/nq-candle-tests" gpu:: --test-threads=1 --nocapture >"$out/tests.log" 2>&1 || status=$?
tail -n 12 "$out/tests.log"
"$bin/gpu_decode" "$@" >"$out/gpu-decode.json" 2>"$out/gpu-decode.log" || { status=1; tail -n 20 "$out/gpu-decode.log"; }
exit $status
"#;

/// The test binary `cargo` (a `cargo test --no-run` command) builds, from its JSON messages.
pub(crate) fn test_binary(mut cargo: Command) -> Result<PathBuf> {
    let output = cargo.arg("--message-format=json").output().context("cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the tests failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("no test executable in cargo's output")
}

/// `target/cuda13/nvidia/cu13` with nvcc in it, installed from the package registry once.
fn toolchain(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("cuda13");
    let cu13 = dir.join("nvidia").join("cu13");
    let stamp = dir.join("installed.txt");
    let want = PACKAGES.join("\n");
    if cu13.join("bin").join("nvcc").is_file()
        && fs::read_to_string(&stamp).is_ok_and(|s| s == want)
    {
        return Ok(cu13);
    }
    eprintln!("installing the CUDA 13.0 toolchain into {} (about 1.2 GB) ...", dir.display());
    // One install of every package: pip's --target replaces the shared `nvidia/` folder
    // on each call, so a second call would drop what the first installed.
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    run_checked(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .args(PACKAGES),
    )
    .context("pip (python3 -m pip) is needed to fetch the CUDA toolchain packages")?;
    if !cu13.join("bin").join("nvcc").is_file() {
        bail!("the packages installed no nvcc at {}", cu13.join("bin/nvcc").display());
    }
    fs::write(&stamp, want)?;
    Ok(cu13)
}

/// `target/cudalink`: include and lib folders as cudarc's build expects them, with the
/// `libcuda.so` stub.
fn cuda_home(root: &Path, toolkit: &Path) -> Result<PathBuf> {
    let home = root.join("target").join("cudalink");
    let lib = home.join("lib");
    fs::create_dir_all(&lib)?;
    relink(&toolkit.join("include"), &home.join("include"))?;
    for (name, version) in LIBS {
        let versioned = toolkit.join("lib").join(format!("lib{name}.so.{version}"));
        if !versioned.is_file() {
            bail!("{} is missing from the toolchain packages", versioned.display());
        }
        relink(&versioned, &lib.join(format!("lib{name}.so")))?;
    }
    let symbols = cudarc_symbols()?;
    let mut c = String::new();
    for s in &symbols {
        c.push_str(&format!("int {s}(void) {{ return {STUB_ERROR}; }}\n"));
    }
    let src = home.join("cuda_stub.c");
    fs::write(&src, c)?;
    run_checked(
        Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(lib.join("libcuda.so"))
            .arg(&src),
    )?;
    eprintln!("libcuda stub: {} symbols", symbols.len());
    Ok(home)
}

/// A symbolic link at `link` to `target`, replacing what was there.
fn relink(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        fs::remove_file(link).with_context(|| format!("replacing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

/// Every `cu*` function the locked cudarc declares (its driver bindings' source).
fn cudarc_symbols() -> Result<Vec<String>> {
    let out =
        cargo().args(["metadata", "--format-version", "1"]).output().context("cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "cudarc"))
        .and_then(|p| p["manifest_path"].as_str())
        .context("cudarc is not in the dependency graph")?;
    let sys = Path::new(manifest).with_file_name("src").join("driver").join("sys").join("mod.rs");
    let text = fs::read_to_string(&sys).with_context(|| format!("reading {}", sys.display()))?;
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let rest = l.strip_prefix("fn cu")?;
            let end = rest.find('(')?;
            let name = &rest[..end];
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_').then(|| format!("cu{name}"))
        })
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        bail!("no cu* functions found in {}", sys.display());
    }
    Ok(names)
}
