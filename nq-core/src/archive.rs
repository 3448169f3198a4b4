//! The compressed cache as a `.nqkv` archive (nq-entropy's container): one section of cache
//! state, then one section per layer holding every buffer of its heads. Saving writes the
//! resident bytes as they are, entropy-coded; loading restores a cache that attends and keeps
//! compressing exactly as before.

use std::io::{Read, Write};

use half::f16;
use nq_entropy::{ArchiveReader, ArchiveWriter, Data, DataRef, Fingerprint, Section, StreamRef};
use nq_rope::Rope;

use crate::backend::Backend;
use crate::cache::{CompressedCache, KvShape, QueryWindow, layer_spec};
use crate::config::{CompressionConfig, Storage};
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::positions::Positions;
use crate::store::HeadImage;

/// What identifies the model a cache belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelId {
    /// Architecture name, e.g. `llama`.
    pub architecture: String,
    /// The cache shape.
    pub shape: KvShape,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE layout, as a number (0 split-half, 1 interleaved).
    pub rope_layout: u8,
    /// Other RoPE parameters, opaque bytes compared as they are.
    pub rope_scaling: Vec<u8>,
}

/// Extra named byte strings stored beside the cache (e.g. the next token to feed).
pub type Extras = Vec<(String, Vec<u8>)>;

const STATE: u32 = 0;

fn fingerprint(model: &ModelId, preset: &str, cfg: &CompressionConfig) -> Fingerprint {
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    Fingerprint {
        architecture: model.architecture.clone(),
        layers: n(model.shape.layers),
        kv_heads: n(model.shape.kv_heads),
        head_dim: n(model.shape.head_dim),
        rope_theta: model.rope_theta,
        rope_layout: model.rope_layout,
        rope_scaling: model.rope_scaling.clone(),
        preset: preset.to_owned(),
        config: cfg.to_bytes(),
    }
}

fn u64s(v: impl IntoIterator<Item = usize>) -> Vec<u8> {
    v.into_iter().flat_map(|x| (x as u64).to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl<B: Backend> CompressedCache<B> {
    /// Write the cache as an archive for `model`, named `preset`, with `extras` beside it.
    ///
    /// # Errors
    /// [`Error::Entropy`] for write failures.
    pub fn save<W: Write>(
        &self,
        w: W,
        model: &ModelId,
        preset: &str,
        extras: &Extras,
    ) -> Result<W> {
        let mut ar = ArchiveWriter::new(w, &fingerprint(model, preset, &self.cfg))?;
        let mut state = Vec::new();
        for l in &self.layers {
            state.extend(u64s([l.seen, l.sinks, l.evicted, usize::from(l.compressed_once)]));
        }
        let mut streams = vec![StreamRef { name: "state", data: DataRef::Raw(&state) }];
        for (name, bytes) in extras {
            streams.push(StreamRef { name, data: DataRef::Raw(bytes) });
        }
        ar.write_section(STATE, &streams)?;
        let d = self.shape.head_dim;
        for (li, l) in self.layers.iter().enumerate() {
            let heads = self.backend.export(&l.store)?;
            let names: Vec<[String; 11]> = (0..heads.len())
                .map(|h| {
                    ["pos", "k", "ks", "v", "vs", "dk", "dv", "mass", "km", "vm", "ksm"]
                        .map(|s| format!("h{h}.{s}"))
                })
                .collect();
            let pos: Vec<Vec<u32>> = heads.iter().map(|h| h.pos.to_vec()).collect();
            let masses: Vec<[Vec<u8>; 4]> = heads
                .iter()
                .map(|h| {
                    [h.dense_mass.as_slice(), &h.k_mean, &h.v_mean, &h.k_smooth].map(f32_bytes)
                })
                .collect();
            let queries: Vec<Vec<u8>> =
                l.queries.rows.iter().filter(|r| !r.is_empty()).map(|r| f32_bytes(r)).collect();
            let qnames: Vec<String> = (0..queries.len()).map(|h| format!("q{h}")).collect();
            let squares: Vec<u8> =
                l.query_squares.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
            let mut s = vec![
                StreamRef { name: "dense_pos", data: DataRef::Positions(&l.dense_pos) },
                StreamRef { name: "q.pos", data: DataRef::Positions(&l.queries.pos) },
                StreamRef { name: "q.squares", data: DataRef::Raw(&squares) },
            ];
            for (q, name) in queries.iter().zip(&qnames) {
                s.push(StreamRef { name, data: DataRef::Raw(q) });
            }
            for (((h, n), mass), pos) in heads.iter().zip(&names).zip(&masses).zip(&pos) {
                s.extend([
                    StreamRef { name: &n[0], data: DataRef::Positions(pos) },
                    StreamRef { name: &n[1], data: code_ref(self.cfg.keys, &h.k_codes, d) },
                    StreamRef {
                        name: &n[2],
                        data: DataRef::Scales { values: &h.k_scales, row_len: 1 },
                    },
                    StreamRef { name: &n[3], data: code_ref(self.cfg.values, &h.v_codes, d) },
                    StreamRef {
                        name: &n[4],
                        data: DataRef::Scales { values: &h.v_scales, row_len: 1 },
                    },
                    StreamRef {
                        name: &n[5],
                        data: DataRef::WindowF16 { values: &h.dense_k, row_len: d },
                    },
                    StreamRef {
                        name: &n[6],
                        data: DataRef::WindowF16 { values: &h.dense_v, row_len: d },
                    },
                    StreamRef { name: &n[7], data: DataRef::Raw(&mass[0]) },
                    StreamRef { name: &n[8], data: DataRef::Raw(&mass[1]) },
                    StreamRef { name: &n[9], data: DataRef::Raw(&mass[2]) },
                    StreamRef { name: &n[10], data: DataRef::Raw(&mass[3]) },
                ]);
            }
            ar.write_section(u32::try_from(li + 1).unwrap_or(u32::MAX), &s)?;
        }
        Ok(ar.finish()?)
    }

    /// Read an archive written by [`save`](Self::save) for `model` into storage of `backend`.
    /// Returns the cache, its preset name and the extras. `rope` is needed when the stored
    /// configuration keeps keys RoPE-free.
    ///
    /// # Errors
    /// [`Error::Entropy`] for a corrupt, truncated or foreign archive (a model mismatch names
    /// the differing field); [`Error::Archive`] for contents that do not fit the model.
    pub fn load_with<R: Read>(
        backend: B,
        r: R,
        model: &ModelId,
        rope: Option<Rope>,
    ) -> Result<(Self, String, Extras)> {
        let mut ar = ArchiveReader::open(r)?;
        let stored = ar.fingerprint().clone();
        let cfg = CompressionConfig::from_bytes(&stored.config)?;
        ar.expect_fingerprint(&fingerprint(model, &stored.preset, &cfg))?;
        let mut cache = CompressedCache::with_backend(backend, model.shape, cfg, rope)?;
        let bad = |what: String| Error::Archive(what);
        let first = ar.next_section()?.ok_or_else(|| bad("no state section".into()))?;
        if first.id != STATE {
            return Err(bad(format!("first section has id {}, expected {STATE}", first.id)));
        }
        let state = raw(&first, "state")?;
        let layers = model.shape.layers;
        if state.len() != layers * 4 * 8 {
            return Err(bad(format!("state holds {} bytes for {layers} layers", state.len())));
        }
        let word = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&state[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        let extras = first
            .streams
            .iter()
            .filter(|s| s.name != "state")
            .filter_map(|s| match &s.data {
                Data::Raw(b) => Some((s.name.clone(), b.clone())),
                _ => None,
            })
            .collect();
        let d = model.shape.head_dim;
        for li in 0..layers {
            let sec = ar.next_section()?.ok_or_else(|| bad(format!("layer {li} missing")))?;
            if sec.id as usize != li + 1 {
                return Err(bad(format!("section {} where layer {li} was expected", sec.id)));
            }
            let words = [0, 1, 2, 3].map(|i| word(li * 4 + i));
            let spec = layer_spec(model.shape, &cache.cfg, li)?;
            let l = &mut cache.layers[li];
            l.dense_pos = positions(&sec, "dense_pos")?;
            l.queries = query_window(&sec, model.shape.q_heads, d, li)?;
            let heads = (0..model.shape.kv_heads)
                .map(|h| head_image(&sec, h, cache.cfg.smooth_keys))
                .collect::<Result<Vec<_>>>()?;
            let n_dense = l.dense_pos.len();
            for (h, head) in heads.iter().enumerate() {
                head.validate(&spec, n_dense)
                    .map_err(|e| bad(format!("layer {li} head {h}: {e}")))?;
            }
            let held: usize = heads.iter().map(|h| h.pos.len() + n_dense).sum();
            (l.seen, l.sinks, l.evicted) = state_words(li, words, n_dense, held, model.shape)?;
            l.compressed_once = words[3] == 1;
            l.query_squares = query_squares(&sec, model.shape)?;
            l.heads_with_codes = heads.iter().map(|h| !h.pos.is_empty()).collect();
            l.store = cache.backend.import(&spec, heads, &l.dense_pos)?;
        }
        if ar.next_section()?.is_some() {
            return Err(bad("sections after the last layer".into()));
        }
        Ok((cache, stored.preset, extras))
    }
}

impl CompressedCache<CpuBackend> {
    /// [`load_with`](Self::load_with) into host memory ([`CpuBackend`]).
    ///
    /// # Errors
    /// As [`load_with`](Self::load_with).
    pub fn load<R: Read>(
        r: R,
        model: &ModelId,
        rope: Option<Rope>,
    ) -> Result<(Self, String, Extras)> {
        Self::load_with(CpuBackend, r, model, rope)
    }
}

/// The state words of layer `li` (`seen`, `sinks`, `evicted`, `compressed_once`), checked
/// against what its section holds: every token seen is dense, compressed or evicted in each
/// of the `kv_heads` heads, and positions are u32 so at most 2^32 tokens were seen.
fn state_words(
    li: usize,
    words: [u64; 4],
    n_dense: usize,
    held: usize,
    shape: KvShape,
) -> Result<(usize, usize, usize)> {
    let [seen, sinks, evicted, once] = words;
    let bad = |what: String| Err(Error::Archive(format!("layer {li}: {what}")));
    if seen > 1 << 32 || once > 1 {
        return bad(format!("state words {words:?} out of range"));
    }
    // In range now: seen <= 2^32, so the products below fit in u64.
    let (seen, sinks, evicted) = (seen as usize, sinks as usize, evicted as usize);
    if sinks > n_dense || n_dense > seen {
        return bad(format!("{sinks} sinks, {n_dense} dense of {seen} seen"));
    }
    if held as u64 + evicted as u64 != seen as u64 * shape.kv_heads as u64 {
        return bad(format!(
            "{held} token slots held and {evicted} evicted, but {seen} seen in {} heads",
            shape.kv_heads
        ));
    }
    Ok((seen, sinks, evicted))
}

/// The query window of a layer's section.
fn query_window(sec: &Section, q_heads: usize, d: usize, li: usize) -> Result<QueryWindow> {
    let pos = positions(sec, "q.pos")?;
    let mut rows = Vec::with_capacity(q_heads);
    for h in 0..q_heads {
        let q = if pos.is_empty() { Vec::new() } else { floats(&raw(sec, &format!("q{h}"))?)? };
        if q.len() != pos.len() * d {
            return Err(Error::Archive(format!(
                "layer {li} query window {h}: {} values for {} queries",
                q.len(),
                pos.len()
            )));
        }
        rows.push(q);
    }
    Ok(QueryWindow { rows, pos })
}

/// The window queries' sums of squares per kv head (absent from archives written before
/// they were kept: then none, and heads without codes get no smoothing).
fn query_squares(sec: &Section, shape: KvShape) -> Result<Vec<Vec<f64>>> {
    let Some(stream) = sec.stream("q.squares") else { return Ok(Vec::new()) };
    let Data::Raw(b) = &stream.data else { return Err(wrong(sec, "q.squares")) };
    let d = shape.head_dim;
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.len() != shape.kv_heads * d * 8 {
        return Err(Error::Archive(format!(
            "section {} q.squares: {} bytes, expected {} for {} heads of {d}",
            sec.id,
            b.len(),
            shape.kv_heads * d * 8,
            shape.kv_heads
        )));
    }
    let values: Vec<f64> =
        b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    if values.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(Error::Archive(format!(
            "section {} q.squares: negative or not finite",
            sec.id
        )));
    }
    Ok(values.chunks_exact(d).map(<[f64]>::to_vec).collect())
}

/// One head's buffers, as stored (checked by [`HeadImage::validate`] afterwards).
fn head_image(sec: &Section, h: usize, smooth_keys: bool) -> Result<HeadImage> {
    let name = |s: &str| format!("h{h}.{s}");
    Ok(HeadImage {
        pos: Positions::from_ascending(&positions(sec, &name("pos"))?)
            .map_err(|e| Error::Archive(format!("section {} {}: {e}", sec.id, name("pos"))))?,
        k_codes: code_bytes(sec, &name("k"))?,
        k_scales: scales(sec, &name("ks"))?,
        v_codes: code_bytes(sec, &name("v"))?,
        v_scales: scales(sec, &name("vs"))?,
        dense_k: window(sec, &name("dk"))?,
        dense_v: window(sec, &name("dv"))?,
        dense_mass: floats(&raw(sec, &name("mass"))?)?,
        k_mean: floats(&raw(sec, &name("km"))?)?,
        v_mean: floats(&raw(sec, &name("vm"))?)?,
        // Absent from archives of configurations without key smoothing.
        k_smooth: if smooth_keys { floats(&raw(sec, &name("ksm"))?)? } else { Vec::new() },
    })
}

/// Codes of a storage kind as a stream: E8 codes as fixed-size vectors, f16 rows as raw bytes.
fn code_ref(storage: Storage, codes: &[u8], d: usize) -> DataRef<'_> {
    match storage {
        Storage::F16 => DataRef::Raw(codes),
        Storage::E8 { bits } => {
            DataRef::FixedCodes { codes, bytes_per_vector: usize::from(bits), row_vectors: d / 8 }
        }
    }
}

fn stream<'a>(sec: &'a Section, name: &str) -> Result<&'a Data> {
    sec.stream(name)
        .map(|s| &s.data)
        .ok_or_else(|| Error::Archive(format!("section {} has no stream `{name}`", sec.id)))
}

fn wrong(sec: &Section, name: &str) -> Error {
    Error::Archive(format!("section {} stream `{name}` has the wrong kind", sec.id))
}

fn raw(sec: &Section, name: &str) -> Result<Vec<u8>> {
    match stream(sec, name)? {
        Data::Raw(b) => Ok(b.clone()),
        _ => Err(wrong(sec, name)),
    }
}

fn positions(sec: &Section, name: &str) -> Result<Vec<u32>> {
    match stream(sec, name)? {
        Data::Positions(p) => Ok(p.clone()),
        _ => Err(wrong(sec, name)),
    }
}

fn scales(sec: &Section, name: &str) -> Result<Vec<f16>> {
    match stream(sec, name)? {
        Data::Scales(v) => Ok(v.clone()),
        _ => Err(wrong(sec, name)),
    }
}

fn window(sec: &Section, name: &str) -> Result<Vec<f16>> {
    match stream(sec, name)? {
        Data::WindowF16(v) => Ok(v.clone()),
        _ => Err(wrong(sec, name)),
    }
}

fn code_bytes(sec: &Section, name: &str) -> Result<Vec<u8>> {
    match stream(sec, name)? {
        Data::FixedCodes { codes, .. } => Ok(codes.clone()),
        Data::Raw(b) => Ok(b.clone()),
        _ => Err(wrong(sec, name)),
    }
}

fn floats(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Archive(format!("{} bytes is not a whole number of f32", b.len())));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape { layers: 1, q_heads: 4, kv_heads: 2, head_dim: 64 };

    #[test]
    fn forged_state_words_are_errors() {
        // 10 seen, 4 dense, 3 + 3 compressed, 6 evicted over two heads: consistent.
        assert_eq!(state_words(0, [10, 4, 6, 1], 4, 2 * 4 + 6, SHAPE).ok(), Some((10, 4, 6)));
        for (words, why) in [
            ([1 << 60, 4, 6, 1], "2^60 tokens seen"),
            ([u64::MAX, 4, 6, 1], "u64::MAX tokens seen"),
            ([10, 4, 6, 2], "compressed_once not 0 or 1"),
            ([10, 5, 6, 1], "more sinks than dense tokens"),
            ([10, 4, 7, 1], "slots do not add up"),
            ([3, 4, 6, 1], "more dense tokens than seen"),
        ] {
            let got = state_words(0, words, 4, 2 * 4 + 6, SHAPE);
            assert!(matches!(got, Err(Error::Archive(_))), "{why}: {got:?}");
        }
    }
}

/// What an archive holds, read and checked without a model: the header, the token counts
/// and the decoded bytes by component (the resident form it restores to).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveSummary {
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
    /// The compression configuration.
    pub config: CompressionConfig,
    /// Compressed token slots, summed over layers and heads.
    pub compressed_slots: usize,
    /// f16 token slots, summed over layers and heads.
    pub dense_slots: usize,
    /// Sections read (state and layers), every checksum verified.
    pub sections: usize,
    /// Decoded bytes of the cache's buffers by component (rotations are rebuilt from the
    /// seed, so they cost nothing on disk).
    pub bytes: crate::ByteBreakdown,
}

/// Read and verify every section of an archive written by [`CompressedCache::save`], without
/// a model. Memory is bounded by one section (and the streams' decoded size by the header's
/// shape, see `nq_entropy::Limits`).
///
/// # Errors
/// [`Error::Entropy`] for a corrupt, truncated or oversized archive, [`Error::Config`] for a
/// configuration blob this version cannot read.
pub fn inspect<R: Read>(r: R) -> Result<ArchiveSummary> {
    let mut ar = ArchiveReader::open(r)?;
    let fp = ar.fingerprint().clone();
    let config = CompressionConfig::from_bytes(&fp.config)?;
    let mut s = ArchiveSummary {
        architecture: fp.architecture.clone(),
        layers: fp.layers,
        kv_heads: fp.kv_heads,
        head_dim: fp.head_dim,
        rope_theta: fp.rope_theta,
        preset: fp.preset.clone(),
        config,
        compressed_slots: 0,
        dense_slots: 0,
        sections: 0,
        bytes: crate::ByteBreakdown::default(),
    };
    let d = (fp.head_dim as usize).max(1);
    while let Some(sec) = ar.next_section()? {
        s.sections += 1;
        for stream in &sec.streams {
            let (suffix, bytes) =
                (stream.name.rsplit('.').next().unwrap_or(""), data_bytes(&stream.data));
            let head = stream.name.starts_with('h');
            let b = &mut s.bytes;
            match (head, suffix) {
                (true, "pos") => {
                    // Held as a bitmap, as the cache holds them.
                    let Data::Positions(p) = &stream.data else {
                        return Err(Error::Archive(format!("{}: not positions", stream.name)));
                    };
                    s.compressed_slots += p.len();
                    b.positions += Positions::from_ascending(p)
                        .map_err(|e| Error::Archive(format!("{}: {e}", stream.name)))?
                        .bytes();
                }
                (true, "k") => b.key_codes += bytes,
                (true, "v") => b.value_codes += bytes,
                (true, "ks" | "vs") => b.scales += bytes,
                (true, "dk") => {
                    s.dense_slots += bytes / 2 / d;
                    b.windows += bytes;
                }
                (true, "dv") => b.windows += bytes,
                (true, "mass") => b.mass += bytes,
                (true, "km" | "vm") => b.means += bytes,
                (true, "ksm") => b.smoothing += bytes,
                _ if stream.name == "dense_pos" => b.positions += bytes,
                _ if stream.name.starts_with('q') => b.queries += bytes,
                _ => {}
            }
        }
    }
    Ok(s)
}

/// Decoded size of a stream in bytes.
fn data_bytes(data: &Data) -> usize {
    match data {
        Data::Raw(b) => b.len(),
        Data::Positions(p) => p.len() * 4,
        Data::Scales(v) | Data::WindowF16(v) => v.len() * 2,
        Data::FixedCodes { codes, .. } => codes.len(),
        Data::Coords { cosets, coords } => cosets.len() + coords.len() * 4,
        // A stream kind this version does not know adds nothing it could name.
        _ => 0,
    }
}
