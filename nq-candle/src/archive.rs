//! Compressed prompt caches on disk: `nq save` writes one, `nq run --resume` continues from it.
//! The container is nq-entropy's `.nqkv` format; the layout is `nq-core`'s.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use nq_core::{CompressedCache, ModelId};
use serde::Serialize;

use crate::compressed::{CompressedKvCache, kv_shape, rope_of};
pub use crate::generate::{Prefill, StopReason};
use crate::model::ModelConfig;
use crate::{Error, Result};

/// The identity of `config`'s model as archives record it.
pub fn model_id(config: &ModelConfig) -> ModelId {
    let mut scaling = Vec::new();
    // Archives of unscaled and linearly scaled models keep the fingerprint of earlier
    // versions (the linear factor as f32, 1 without scaling); every other scaling adds all its
    // parameters, so a cache never loads into a model whose RoPE differs.
    #[allow(clippy::cast_possible_truncation)] // the factor was read from an f32 key
    let linear = match config.rope_scaling {
        nq_rope::RopeScaling::Linear { factor } => factor as f32,
        _ => 1.0,
    };
    scaling.extend_from_slice(&linear.to_le_bytes());
    scaling.extend_from_slice(&(config.rope_dim as u32).to_le_bytes());
    scaling.extend_from_slice(&config.rope_theta_local.unwrap_or(0.0).to_le_bytes());
    if !matches!(
        config.rope_scaling,
        nq_rope::RopeScaling::None | nq_rope::RopeScaling::Linear { .. }
    ) {
        scaling.extend_from_slice(format!("{:?}", config.rope_scaling).as_bytes());
    }
    ModelId {
        architecture: config.architecture.to_string(),
        shape: kv_shape(config),
        rope_theta: f64::from(config.rope_theta),
        rope_layout: u8::from(config.rope_interleaved),
        rope_scaling: scaling,
    }
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io { op, path: path.to_path_buf(), source: e }
}

/// A writer that counts the bytes it passes on.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a file so that a crash, a kill or a full disk never leaves `path` half written: the
/// bytes go to a temporary file in the same folder, which is synced to disk and then renamed
/// over `path` (the earlier file stays intact until the rename). A `path` that exists and is
/// not a regular file (`/dev/null`, a pipe) is written in place. Returns the bytes written.
///
/// # Errors
/// [`Error::Io`] naming `path` (or the temporary file) when a step fails; the temporary file
/// is removed. Errors of `write` pass through.
pub fn write_atomically(
    path: &Path,
    op: &'static str,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<u64> {
    if std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        let f = OpenOptions::new().write(true).open(path).map_err(|e| io(op, path, e))?;
        let mut w = Counted { inner: BufWriter::new(f), bytes: 0 };
        write(&mut w)?;
        w.flush().map_err(|e| io(op, path, e))?;
        return Ok(w.bytes);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written: Result<u64> = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(op, &tmp, e))?;
        let mut w = Counted { inner: BufWriter::new(f), bytes: 0 };
        write(&mut w)?;
        let f = w.inner.into_inner().map_err(|e| io(op, &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io(op, &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(op, path, e))?;
        Ok(w.bytes)
    })();
    if written.is_err() {
        // Best effort: the error being returned matters more than a leftover temporary file.
        let _ = std::fs::remove_file(&tmp);
    }
    let written = written?;
    // The rename is durable once the folder's entry is on disk.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io(op, &dir, e))?;
    Ok(written)
}

/// The archive of `cache` in memory (for measuring its size).
///
/// # Errors
/// Archive write errors.
pub fn to_bytes(cache: &CompressedKvCache, config: &ModelConfig, preset: &str) -> Result<Vec<u8>> {
    Ok(cache.inner().save(Vec::new(), &model_id(config), preset, &Vec::new())?)
}

/// Resume entries of an archive: the logits of the token after the prompt (f32 LE), so a
/// resumed run picks its first token from exactly what the fresh run picked it from.
const NEXT_LOGITS: &str = "next_logits";
/// The position of the next token (u64 LE): the prompt's length.
const NEXT_POS: &str = "next_pos";

/// Write a prefilled prompt (its compressed cache and the logits of its next token) to
/// `path` without ever leaving a partial file there (see `nq save`); returns the bytes
/// written.
///
/// # Errors
/// [`Error::Io`] and [`Error::Archive`] naming `path`.
pub fn save(path: &Path, start: &Prefill, config: &ModelConfig, preset: &str) -> Result<u64> {
    let logits: Vec<u8> = start.logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let extras = vec![
        (NEXT_LOGITS.to_owned(), logits),
        (NEXT_POS.to_owned(), (start.tokens as u64).to_le_bytes().to_vec()),
    ];
    write_atomically(path, "save", |w| {
        start
            .cache
            .inner()
            .save(w, &model_id(config), preset, &extras)
            .map(|_| ())
            .map_err(|source| Error::Archive { op: "save", path: path.to_path_buf(), source })
    })
}

/// Read a prompt saved by [`save`] for `config`'s model: the state to generate from, and the
/// preset it was compressed with.
///
/// # Errors
/// [`Error::Io`] naming `path`; [`Error::Archive`] naming `path` for a corrupt, truncated or
/// foreign archive (a model mismatch names the field); [`Error::Resume`] for an archive
/// without valid resume entries.
pub fn load(path: &Path, config: &ModelConfig) -> Result<(Prefill, String)> {
    let f = File::open(path).map_err(|e| io("resume", path, e))?;
    let archive = |source| Error::Archive { op: "resume from", path: path.to_path_buf(), source };
    // Only configurations that keep keys RoPE-free need the model's RoPE; for the others a
    // model whose layers differ in RoPE (Gemma-3) loads fine, so the error is kept for the
    // message of a load that fails.
    let (rope, rope_error) = match rope_of(config) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let (cache, preset, extras) = CompressedCache::load(BufReader::new(f), &model_id(config), rope)
        .map_err(|e| match &rope_error {
            Some(r) => archive(nq_core::Error::Archive(format!(
                "{e} (the model's RoPE could not be given to the loader: {r})"
            ))),
            None => archive(e),
        })?;
    let resume = |reason: String| Error::Resume { path: path.to_path_buf(), reason };
    let extra = |name: &str| {
        extras.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice()).ok_or_else(|| {
            let old = extras.iter().any(|(n, _)| n == "next_token");
            resume(if old {
                "written by an older nq (it stores the next token, not its logits); save it again"
                    .into()
            } else {
                format!("no `{name}` entry: not written by `nq save`")
            })
        })
    };
    let logits = extra(NEXT_LOGITS)?;
    if logits.len() != config.vocab * 4 {
        return Err(resume(format!(
            "{} bytes of next-token logits, the model's vocabulary of {} needs {}",
            logits.len(),
            config.vocab,
            config.vocab * 4
        )));
    }
    let logits =
        logits.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let pos = <[u8; 8]>::try_from(extra(NEXT_POS)?)
        .map_err(|_| resume(format!("`{NEXT_POS}` is not 8 bytes")))?;
    let pos = u64::from_le_bytes(pos);
    let tokens_seen = cache.stats().tokens_seen as u64;
    if pos != tokens_seen {
        return Err(resume(format!(
            "`{NEXT_POS}` = {pos} but the cache has seen {tokens_seen} tokens"
        )));
    }
    let start = Prefill {
        cache: CompressedKvCache::from_inner(cache),
        logits,
        tokens: usize::try_from(pos).unwrap_or(usize::MAX),
        prefill_seconds: 0.0,
        compress_seconds: 0.0,
    };
    Ok((start, preset))
}

/// What `nq inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    /// File size in bytes.
    pub file_bytes: u64,
    /// Architecture of the model it belongs to.
    pub architecture: String,
    /// Decoder layers.
    pub layers: u32,
    /// Key/value heads per layer.
    pub kv_heads: u32,
    /// Values per head vector.
    pub head_dim: u32,
    /// RoPE base.
    pub rope_theta: f64,
    /// Preset name.
    pub preset: String,
    /// The compression configuration, in words.
    pub config: String,
    /// Tokens compressed (summed over layers and heads).
    pub compressed_slots: usize,
    /// Tokens held in f16 (summed over layers and heads).
    pub dense_slots: usize,
    /// Sections read (state + layers), all checksums verified.
    pub sections: usize,
    /// Decoded bytes of the cache by component (`key_codes`, `value_codes`, `scales`,
    /// `positions`, `windows`, `mass`, `means`, `smoothing`, `rotation`, `queries`), and
    /// their `total`.
    pub bytes: std::collections::BTreeMap<&'static str, usize>,
}

/// The components of a byte breakdown as a map, with their total.
pub fn byte_map(b: &nq_core::ByteBreakdown) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m: std::collections::BTreeMap<_, _> = b.components().into_iter().collect();
    m.insert("total", b.total());
    m
}

/// Read and verify every section of an archive, without a model ([`nq_core::inspect`]).
/// Memory is bounded by one section, and the streams' decoded size by the header's shape.
///
/// # Errors
/// [`Error::Io`] and [`Error::Archive`] naming `path`: corrupt, truncated or oversized
/// archives.
pub fn inspect(path: &Path) -> Result<ArchiveInfo> {
    let f = File::open(path).map_err(|e| io("inspect", path, e))?;
    let file_bytes = f.metadata().map_err(|e| io("inspect", path, e))?.len();
    let s = nq_core::inspect(BufReader::new(f)).map_err(|source| Error::Archive {
        op: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ArchiveInfo {
        file_bytes,
        architecture: s.architecture,
        layers: s.layers,
        kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        rope_theta: s.rope_theta,
        preset: s.preset,
        config: format!("{:?}", s.config),
        compressed_slots: s.compressed_slots,
        dense_slots: s.dense_slots,
        sections: s.sections,
        bytes: byte_map(&s.bytes),
    })
}
