//! `cargo xtask compare-original`: the Python original (`nexusquant-kv` 0.6.3 from PyPI) run on
//! this project's protocol, side by side with `nq eval --mode prompt`. Optional and not part of
//! CI: it needs Python 3 with `venv`, about 6 GiB of disk for the virtual environment (PyPI's
//! torch brings CUDA libraries) and the fetched models.
//!
//! Steps: create `target/original-venv` with `python3 -m venv` if missing; install [`PINS`]
//! unless the environment's stamp says they are there; run `xtask/original/run_original.py`
//! (its header documents what it mirrors of nq-candle's eval) once per model, writing
//! `target/nq-bench/original/MODEL.json`; merge those files into
//! `target/nq-bench/original.json`, which `cargo xtask readme` puts beside our own eval records.
//! Without `--keep-venv` the environment is removed afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{project_root, run_checked, show};

/// The versions this comparison was run and checked with (`pip install` pins).
const PINS: &[&str] = &[
    "nexusquant-kv==0.6.3",
    "torch==2.15.0",
    "transformers==5.25.0",
    "tokenizers==0.23.3",
    "gguf==0.19.0",
    "accelerate==1.16.0",
];

/// Models compared by default, in table order.
const MODELS: &[&str] = &["smollm2", "qwen05"];

const USAGE: &str = "usage: cargo xtask compare-original [--model smollm2,qwen05] [--samples N | --quick] \
[--threads N] [--mask-only] [--keep-venv]";

/// Parsed command line.
#[derive(Debug)]
struct Options {
    models: Vec<String>,
    samples: Option<usize>,
    threads: usize,
    mask_only: bool,
    keep_venv: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        models: MODELS.iter().map(|m| (*m).to_owned()).collect(),
        samples: None,
        threads: 2,
        mask_only: false,
        keep_venv: false,
    };
    let mut it = args.iter();
    let count = |flag: &str, v: Option<&String>| -> Result<usize> {
        let v = v.with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{flag} {v}: not a positive count\n{USAGE}"),
        }
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => {
                let v = it.next().with_context(|| format!("--model needs a value\n{USAGE}"))?;
                o.models = v.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect();
                if o.models.is_empty() {
                    bail!("--model names no model\n{USAGE}");
                }
            }
            "--samples" => o.samples = Some(count("--samples", it.next())?),
            "--quick" => o.samples = Some(1),
            "--threads" => o.threads = count("--threads", it.next())?,
            "--mask-only" => o.mask_only = true,
            "--keep-venv" => o.keep_venv = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok(o)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = project_root();
    // Find every model before the long install, so a missing one fails fast.
    let ggufs = o.models.iter().map(|m| Ok((m, find_gguf(m)?))).collect::<Result<Vec<_>>>()?;
    let venv = root.join("target/original-venv");
    let python = ensure_venv(&venv)?;
    let out_dir = root.join("target/nq-bench/original");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let result = ggufs.iter().try_for_each(|(model, gguf)| {
        let mut cmd = Command::new(&python);
        cmd.current_dir(&root)
            .env("PYTHONUNBUFFERED", "1")
            .arg(root.join("xtask/original/run_original.py"))
            .args(["--model", model])
            .arg("--gguf")
            .arg(gguf)
            .arg("--corpus")
            .arg(root.join("nq-candle/tests/data/corpus"))
            .args(["--corpus-name", "builtin", "--threads", &o.threads.to_string()])
            .arg("--out")
            .arg(out_dir.join(format!("{model}.json")));
        if let Some(n) = o.samples {
            cmd.args(["--samples", &n.to_string()]);
        }
        if o.mask_only {
            cmd.arg("--mask-only");
        }
        run_checked(&mut cmd)
    });
    let merged = result.and_then(|()| merge(&out_dir, &root.join("target/nq-bench/original.json")));
    if !o.keep_venv {
        eprintln!("removing {} (pass --keep-venv to keep it)", venv.display());
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    merged
}

/// The one `.gguf` file of `model` in the model cache (`$NQ_MODEL_DIR`, else
/// `~/.cache/nexusquant/models`, as nq-candle's `model_dir`).
fn find_gguf(model: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("NQ_MODEL_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/nexusquant/models"),
    }
    .join(model);
    let found: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "model `{model}` is not installed (no .gguf file in {}): run `cargo xtask fetch-model {model}`",
            dir.display()
        ),
        many => bail!("{} holds {} .gguf files; expected one", dir.display(), many.len()),
    }
}

/// The environment's Python, after creating it and installing [`PINS`] where needed.
fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    if !python.is_file() {
        let ok = |args: &[&str]| {
            Command::new("python3").args(args).output().is_ok_and(|o| o.status.success())
        };
        if !ok(&["--version"]) {
            bail!("python3 not found on PATH: install Python 3 (3.9 or later) to run the original");
        }
        if !ok(&["-c", "import venv, ensurepip"]) {
            bail!(
                "python3 has no working `venv`/`ensurepip` module: install it (on Debian: apt-get install python3-venv)"
            );
        }
        eprintln!("creating the virtual environment {}", venv.display());
        run_checked(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    let stamp = venv.join("nq-pins.txt");
    let want = PINS.join("\n") + "\n";
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        eprintln!(
            "installing {} into {} (about 6 GiB with torch's CUDA libraries; pip shows progress)",
            PINS.join(" "),
            venv.display()
        );
        let pip = || {
            let mut c = Command::new(&python);
            c.args(["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on"]);
            c
        };
        run_checked(pip().args(PINS)).with_context(|| {
            format!("installing the original's environment failed: `{}`", show(&pip()))
        })?;
        fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(python)
}

/// Merge every `MODEL.json` of `dir` (default models first, in table order, then the others
/// by name) into one array at `out`.
fn merge(dir: &Path, out: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    let rank = |p: &PathBuf| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        (MODELS.iter().position(|m| *m == stem).unwrap_or(MODELS.len()), stem)
    };
    files.sort_by_key(rank);
    let mut records = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))? {
            Value::Array(items) => records.extend(items),
            _ => bail!("{} is not a JSON array", f.display()),
        }
    }
    fs::write(out, serde_json::to_string_pretty(&records)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {} ({} records from {} models)", out.display(), records.len(), files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse(&args(&["--model", "qwen05", "--quick", "--keep-venv"])).unwrap();
        assert_eq!(o.models, ["qwen05"]);
        assert_eq!((o.samples, o.keep_venv, o.threads), (Some(1), true, 2));
        let o = parse(&[]).unwrap();
        assert_eq!(o.models, MODELS);
        assert_eq!(o.samples, None);
        assert!(parse(&args(&["--samples", "0"])).is_err());
        assert!(parse(&args(&["--samples"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }
}
