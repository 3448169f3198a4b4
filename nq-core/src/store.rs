//! What a backend stores for one layer, and the requests the cache sends it: plain data,
//! shared by every [`Backend`](crate::Backend).

use half::f16;
use nq_rope::Rope;

use crate::config::Storage;
use crate::error::{Error, Result};
use crate::positions::Positions;
use crate::rotation::Rotation;

/// Everything a backend needs to create the storage of one layer.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// Key/value heads of the layer.
    pub kv_heads: usize,
    /// Query heads of the layer (a multiple of `kv_heads`).
    pub q_heads: usize,
    /// Values per head vector (a multiple of 8).
    pub head_dim: usize,
    /// How compressed keys are stored.
    pub keys: Storage,
    /// How compressed values are stored.
    pub values: Storage,
    /// Candidates of the per-vector scale search (1 = RMS rule).
    pub scale_candidates: u8,
    /// The rotation applied to keys before quantization.
    pub key_rot: Rotation,
    /// The rotation applied to values before quantization.
    pub value_rot: Rotation,
}

impl LayerSpec {
    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// The fixed-rate codec of compressed keys (`None` for f16 storage).
    ///
    /// # Errors
    /// [`Error::Config`] for bits outside 2-4.
    pub fn key_codec(&self) -> Result<Option<nq_lattice::FixedCodec>> {
        codec(self.keys, self.scale_candidates)
    }

    /// The fixed-rate codec of compressed values (`None` for f16 storage).
    ///
    /// # Errors
    /// [`Error::Config`] for bits outside 2-4.
    pub fn value_codec(&self) -> Result<Option<nq_lattice::FixedCodec>> {
        codec(self.values, self.scale_candidates)
    }

    /// Payload bytes of one compressed key row (scale excluded).
    pub fn key_row_bytes(&self) -> usize {
        row_bytes(self.keys, self.head_dim)
    }

    /// Payload bytes of one compressed value row (scale excluded).
    pub fn value_row_bytes(&self) -> usize {
        row_bytes(self.values, self.head_dim)
    }
}

fn codec(storage: Storage, candidates: u8) -> Result<Option<nq_lattice::FixedCodec>> {
    match storage {
        Storage::F16 => Ok(None),
        Storage::E8 { bits } => crate::lattice::fixed_codec(bits, candidates).map(Some),
    }
}

fn row_bytes(storage: Storage, d: usize) -> usize {
    match storage {
        Storage::F16 => d * 2,
        Storage::E8 { bits } => d / 8 * usize::from(bits),
    }
}

/// One kv head's storage as host buffers: what [`CpuBackend`](crate::CpuBackend) holds, what
/// any backend exports for archives and conformance checks, and imports back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeadImage {
    /// Positions of the compressed tokens (a bitmap: 1 bit per token of the span).
    pub pos: Positions,
    /// Key codes, `pos.len() * key_row_bytes` bytes in token order.
    pub k_codes: Vec<u8>,
    /// One f16 scale per compressed key (empty for f16 storage).
    pub k_scales: Vec<f16>,
    /// Value codes, `pos.len() * value_row_bytes` bytes.
    pub v_codes: Vec<u8>,
    /// One f16 scale per compressed value (empty for f16 storage).
    pub v_scales: Vec<f16>,
    /// f16 rows `[dense, d]` of the tokens still dense (sinks, recent, not yet compressed).
    pub dense_k: Vec<f16>,
    /// f16 value rows `[dense, d]`.
    pub dense_v: Vec<f16>,
    /// Attention mass each dense token received since it was appended (H2O-style), which
    /// scores decode-time blocks without keeping queries around.
    pub dense_mass: Vec<f32>,
    /// Mean of the head's first compressed keys (empty until then, or when centering is off).
    /// Compressed rows store `x - mean`; attention adds the mean back exactly.
    pub k_mean: Vec<f32>,
    /// Mean of the head's first compressed values.
    pub v_mean: Vec<f32>,
    /// Per-channel key smoothing factor `s` (empty when off or before the first compression):
    /// compressed keys store `(k - mean) * s`, queries are divided by `s`.
    pub k_smooth: Vec<f32>,
}

impl HeadImage {
    /// Compressed tokens held.
    pub fn compressed(&self) -> usize {
        self.pos.len()
    }

    /// Bytes of every buffer, from their lengths.
    pub fn bytes(&self) -> usize {
        ByteBreakdown::of_head(self).total()
    }

    /// Check every buffer against the layer's spec and `n_dense` dense tokens.
    ///
    /// # Errors
    /// [`Error::Archive`] naming the first buffer that disagrees.
    pub fn validate(&self, spec: &LayerSpec, n_dense: usize) -> Result<()> {
        let (n, d) = (self.pos.len(), spec.head_dim);
        let scaled = |s: Storage| if matches!(s, Storage::F16) { 0 } else { n };
        let checks = [
            ("key codes", self.k_codes.len(), n * spec.key_row_bytes()),
            ("value codes", self.v_codes.len(), n * spec.value_row_bytes()),
            ("key scales", self.k_scales.len(), scaled(spec.keys)),
            ("value scales", self.v_scales.len(), scaled(spec.values)),
            ("dense keys", self.dense_k.len(), n_dense * d),
            ("dense values", self.dense_v.len(), n_dense * d),
            ("dense mass", self.dense_mass.len(), n_dense),
        ];
        for (what, got, expected) in checks {
            if got != expected {
                return Err(Error::Archive(format!(
                    "{what}: {got} elements for {n} compressed and {n_dense} dense tokens, expected {expected}"
                )));
            }
        }
        for (what, v) in [("key mean", &self.k_mean), ("value mean", &self.v_mean)] {
            if !(v.is_empty() || v.len() == d) || v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Archive(format!("{what}: {} values, or not finite", v.len())));
            }
        }
        if !(self.k_smooth.is_empty() || self.k_smooth.len() == d)
            || self.k_smooth.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::Archive("key smoothing: wrong length or not positive".into()));
        }
        Ok(())
    }
}

/// The encode steps every kept row goes through, in order (see
/// [`CpuBackend`](crate::CpuBackend)'s `encode` module for the reference implementation):
/// widen f16 to f32, invert RoPE (keys, when `rope` is set), subtract the head's mean
/// (computed at its first compression), multiply by the key smoothing (computed at the first
/// compression from `query_squares`), rotate, then scale and quantize.
#[derive(Clone, Copy, Debug)]
pub struct EncodeSteps<'a> {
    /// Invert this RoPE on keys before coding them (keys then stay RoPE-free).
    pub rope: Option<&'a Rope>,
    /// Center rows on the head's mean.
    pub center: bool,
    /// Smooth keys against queries: per kv head, the per-channel sums of squares of the
    /// observation window's queries of its group ([`prep::query_squares`](crate::prep::query_squares)),
    /// from which a head's factor is computed at its first compression with rows. `None`:
    /// off (or no queries were observed).
    pub query_squares: Option<&'a [Vec<f64>]>,
}

/// One compression: move `count` dense rows starting at `start` out of the dense part,
/// storing the rows `keep[head]` of each head in compressed form and dropping the others.
#[derive(Clone, Copy, Debug)]
pub struct CompressJob<'a> {
    /// First dense row of the range (the sinks before it stay dense).
    pub start: usize,
    /// Rows in the range.
    pub count: usize,
    /// Kept rows of each kv head, indices into `0..count`, strictly ascending.
    pub keep: &'a [Vec<u32>],
    /// Positions of the `count` rows.
    pub positions: &'a [u32],
    /// How kept rows are encoded.
    pub steps: EncodeSteps<'a>,
}

/// What one attention call reads besides the queries.
#[derive(Clone, Copy, Debug)]
pub struct AttendQuery<'a> {
    /// Positions of the `t` query rows; a query at `p` sees tokens at positions `<= p`.
    pub positions: &'a [u32],
    /// Positions of the layer's dense rows, ascending.
    pub dense_pos: &'a [u32],
    /// Sliding window in tokens: a query at `p` sees positions in `(p - w, p]`.
    pub window: Option<u32>,
    /// Set when keys are stored RoPE-free: re-applied at attention time.
    pub rope: Option<&'a Rope>,
    /// Add each query's attention probabilities of the dense rows to their
    /// [`HeadImage::dense_mass`] (the eviction bookkeeping of decode-time blocks).
    pub record_mass: bool,
}

/// Counts of one layer's storage, from its buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Compressed token slots, summed over heads.
    pub compressed: usize,
    /// Dense token slots, summed over heads.
    pub dense: usize,
    /// Bytes of every buffer the backend holds for the layer, by component.
    pub bytes: ByteBreakdown,
}

/// Where the bytes of a cache go, one field per component, so every design choice can be
/// argued in bytes. Every field is a sum of buffer lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteBreakdown {
    /// Key codes of compressed tokens.
    pub key_codes: usize,
    /// Value codes of compressed tokens.
    pub value_codes: usize,
    /// Per-vector f16 scales of keys and values.
    pub scales: usize,
    /// Positions of compressed tokens (a bitmap per head, [`Positions`]), and of dense
    /// tokens (u32).
    pub positions: usize,
    /// f16 rows of the sink and recent windows and of tokens not compressed yet.
    pub windows: usize,
    /// Attention mass per dense token (eviction bookkeeping).
    pub mass: usize,
    /// Per-head key and value means (centering).
    pub means: usize,
    /// Per-head key smoothing factors.
    pub smoothing: usize,
    /// The rotations' sign vectors.
    pub rotation: usize,
    /// Kept for the first compression only: the query window, its attention mass and sums
    /// of squares.
    pub queries: usize,
}

impl ByteBreakdown {
    /// Every component.
    pub fn total(&self) -> usize {
        self.key_codes
            + self.value_codes
            + self.scales
            + self.positions
            + self.windows
            + self.mass
            + self.means
            + self.smoothing
            + self.rotation
            + self.queries
    }

    /// The components as `(name, bytes)` pairs, in a fixed order (for JSON records:
    /// `bytes_key_codes`, ...).
    pub fn components(&self) -> [(&'static str, usize); 10] {
        [
            ("key_codes", self.key_codes),
            ("value_codes", self.value_codes),
            ("scales", self.scales),
            ("positions", self.positions),
            ("windows", self.windows),
            ("mass", self.mass),
            ("means", self.means),
            ("smoothing", self.smoothing),
            ("rotation", self.rotation),
            ("queries", self.queries),
        ]
    }

    /// One head's buffers.
    pub fn of_head(h: &HeadImage) -> Self {
        ByteBreakdown {
            key_codes: h.k_codes.len(),
            value_codes: h.v_codes.len(),
            scales: (h.k_scales.len() + h.v_scales.len()) * 2,
            positions: h.pos.bytes(),
            windows: (h.dense_k.len() + h.dense_v.len()) * 2,
            mass: h.dense_mass.len() * 4,
            means: (h.k_mean.len() + h.v_mean.len()) * 4,
            smoothing: h.k_smooth.len() * 4,
            rotation: 0,
            queries: 0,
        }
    }
}

impl std::ops::Add for ByteBreakdown {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        ByteBreakdown {
            key_codes: self.key_codes + o.key_codes,
            value_codes: self.value_codes + o.value_codes,
            scales: self.scales + o.scales,
            positions: self.positions + o.positions,
            windows: self.windows + o.windows,
            mass: self.mass + o.mass,
            means: self.means + o.means,
            smoothing: self.smoothing + o.smoothing,
            rotation: self.rotation + o.rotation,
            queries: self.queries + o.queries,
        }
    }
}
