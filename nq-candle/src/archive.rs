//! Compressed prompt caches on disk: `nq save` writes one, `nq run --resume` continues from it.
//! The container is nq-entropy's `.nqkv` format; the layout is `nq-core`'s.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use nq_core::{CompressedCache, ModelId};
use nq_entropy::{ArchiveReader, Data};
use serde::Serialize;

use crate::compressed::{CompressedKvCache, kv_shape, rope_of};
use crate::model::ModelConfig;
use crate::{Error, Result};

/// The identity of `config`'s model as archives record it.
pub fn model_id(config: &ModelConfig) -> ModelId {
    let mut scaling = Vec::new();
    scaling.extend_from_slice(&config.rope_linear_scale.unwrap_or(1.0).to_le_bytes());
    scaling.extend_from_slice(&(config.rope_dim as u32).to_le_bytes());
    scaling.extend_from_slice(&config.rope_theta_local.unwrap_or(0.0).to_le_bytes());
    ModelId {
        architecture: config.architecture.to_string(),
        shape: kv_shape(config),
        rope_theta: f64::from(config.rope_theta),
        rope_layout: u8::from(config.rope_interleaved),
        rope_scaling: scaling,
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { op: "archive", path: path.to_path_buf(), source: e }
}

/// The archive of `cache` in memory (for measuring its size).
///
/// # Errors
/// Archive write errors.
pub fn to_bytes(cache: &CompressedKvCache, config: &ModelConfig, preset: &str) -> Result<Vec<u8>> {
    Ok(cache.inner().save(Vec::new(), &model_id(config), preset, &Vec::new())?)
}

/// Write `cache` to `path`, with the token to feed next and its position; returns the bytes
/// written.
///
/// # Errors
/// I/O and archive errors.
pub fn save(
    path: &Path,
    cache: &CompressedKvCache,
    config: &ModelConfig,
    preset: &str,
    next_token: u32,
    next_pos: usize,
) -> Result<usize> {
    let f = File::create(path).map_err(|e| io(path, e))?;
    let extras = vec![
        ("next_token".to_owned(), next_token.to_le_bytes().to_vec()),
        ("next_pos".to_owned(), (next_pos as u64).to_le_bytes().to_vec()),
    ];
    let w = cache.inner().save(BufWriter::new(f), &model_id(config), preset, &extras)?;
    let f = w.into_inner().map_err(|e| io(path, e.into_error()))?;
    let len = f.metadata().map_err(|e| io(path, e))?.len();
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// Read a cache saved by [`save`] for `config`'s model: the cache, the next token and its
/// position.
///
/// # Errors
/// I/O errors; a corrupt, truncated or foreign archive (a model mismatch names the field).
pub fn load(path: &Path, config: &ModelConfig) -> Result<(CompressedKvCache, u32, usize)> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let rope = rope_of(config).ok();
    let (cache, _, extras) = CompressedCache::load(BufReader::new(f), &model_id(config), rope)?;
    let extra = |name: &str| {
        extras.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| {
            Error::Compression(nq_core::Error::Archive(format!(
                "{}: no `{name}` entry",
                path.display()
            )))
        })
    };
    let token = extra("next_token")?;
    let pos = extra("next_pos")?;
    let (Ok(token), Ok(pos)) =
        (<[u8; 4]>::try_from(token.as_slice()), <[u8; 8]>::try_from(pos.as_slice()))
    else {
        return Err(Error::Compression(nq_core::Error::Archive(format!(
            "{}: malformed resume entries",
            path.display()
        ))));
    };
    let pos = usize::try_from(u64::from_le_bytes(pos)).unwrap_or(usize::MAX);
    Ok((CompressedKvCache::from_inner(cache), u32::from_le_bytes(token), pos))
}

/// What `nq inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    /// File size in bytes.
    pub file_bytes: u64,
    /// Architecture of the model it belongs to.
    pub architecture: String,
    /// Layers, kv heads, head_dim.
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
}

/// Read and verify every section of an archive, without a model.
///
/// # Errors
/// I/O errors, corrupt or truncated archives.
pub fn inspect(path: &Path) -> Result<ArchiveInfo> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let file_bytes = f.metadata().map_err(|e| io(path, e))?.len();
    let mut ar = ArchiveReader::open(BufReader::new(f)).map_err(nq_core::Error::from)?;
    let fp = ar.fingerprint().clone();
    let cfg = nq_core::CompressionConfig::from_bytes(&fp.config)?;
    let (mut compressed_slots, mut dense_slots, mut sections) = (0, 0, 0);
    while let Some(sec) = ar.next_section().map_err(nq_core::Error::from)? {
        sections += 1;
        for s in &sec.streams {
            match (&s.data, s.name.rsplit('.').next()) {
                (Data::Positions(p), Some("pos")) if s.name.starts_with('h') => {
                    compressed_slots += p.len()
                }
                (Data::WindowF16(v), Some("dk")) => {
                    dense_slots += v.len() / fp.head_dim.max(1) as usize
                }
                _ => {}
            }
        }
    }
    Ok(ArchiveInfo {
        file_bytes,
        architecture: fp.architecture,
        layers: fp.layers,
        kv_heads: fp.kv_heads,
        head_dim: fp.head_dim,
        rope_theta: fp.rope_theta,
        preset: fp.preset,
        config: format!("{cfg:?}"),
        compressed_slots,
        dense_slots,
        sections,
    })
}
