//! Where model files live: `$NQ_MODEL_DIR` else `$HOME/.cache/nexusquant/models`.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A checkpoint that `cargo xtask fetch-model NAME` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Short name (`smollm2`); also the folder under the model directory.
    pub name: &'static str,
    /// File name inside that folder.
    pub file: &'static str,
    /// What it is.
    pub description: &'static str,
}

/// The checkpoints this project evaluates on (see `shared/models.md`).
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama, 30 layers, 9/3 heads)",
    },
    KnownModel {
        name: "qwen05",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2, 24 layers, 14/2 heads)",
    },
    KnownModel {
        name: "gemma270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        description: "Gemma-3-270M, Q4_K_M (gemma3, 18 layers, 4/1 heads)",
    },
];

/// The model cache folder: `$NQ_MODEL_DIR` if set and non-empty, else
/// `$HOME/.cache/nexusquant/models` (relative `.cache/nexusquant/models` without `HOME`).
#[must_use]
pub fn model_dir() -> PathBuf {
    match std::env::var_os("NQ_MODEL_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            home.join(".cache").join("nexusquant").join("models")
        }
    }
}

/// Resolves a known model name (`smollm2`, `qwen05`, `gemma270m`) to
/// `model_dir()/<name>/<file>`, or accepts a path to an existing `.gguf` file.
///
/// # Errors
/// [`Error::ModelMissing`] (naming `cargo xtask fetch-model NAME`) when a known model is not
/// installed; [`Error::UnknownModel`] when the argument is neither a known name nor an
/// existing file.
///
/// # Examples
/// ```
/// let err = nq_candle::model_path("no-such-model").unwrap_err();
/// assert!(err.to_string().contains("smollm2"));
/// ```
pub fn model_path(name_or_path: &str) -> Result<PathBuf> {
    model_path_in(&model_dir(), name_or_path)
}

/// [`model_path`] with an explicit model directory instead of [`model_dir`].
///
/// # Errors
/// As [`model_path`].
///
/// # Examples
/// ```
/// let dir = std::env::temp_dir().join("nq-candle-doc-empty-models");
/// let err = nq_candle::model_path_in(&dir, "qwen05").unwrap_err();
/// assert!(err.to_string().contains("cargo xtask fetch-model qwen05"));
/// ```
pub fn model_path_in(dir: &Path, name_or_path: &str) -> Result<PathBuf> {
    const OP: &str = "model_path";
    if let Some(m) = KNOWN_MODELS.iter().find(|m| m.name == name_or_path) {
        let path = dir.join(m.name).join(m.file);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ModelMissing { op: OP, name: m.name.to_string(), path })
        };
    }
    let p = Path::new(name_or_path);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    Err(Error::UnknownModel {
        op: OP,
        given: name_or_path.to_string(),
        known: KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
    })
}
