//! The resident compressed KV cache: per layer and kv head, E8 codes + f16 scales + u32
//! positions for compressed tokens, and f16 rows for the sink and recent windows.

use half::f16;
use half::slice::HalfFloatSliceExt;
use nq_rope::Rope;

use crate::attention::{axpy, dot, exp_normalize};
use crate::codec::{RowCodec, widen};
use crate::config::{BudgetSplit, CompressionConfig, Preset};
use crate::error::{Error, Result};
use crate::evict::{Scoring, choose};
use crate::rotation::{Rotation, splitmix};

/// Shape of a model's KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Decoder layers.
    pub layers: usize,
    /// Query heads per layer.
    pub q_heads: usize,
    /// Key/value heads per layer (GQA: divides `q_heads`).
    pub kv_heads: usize,
    /// Values per head vector (a multiple of 8).
    pub head_dim: usize,
}

impl KvShape {
    /// Validate the shape.
    ///
    /// # Errors
    /// [`Error::Shape`] when a count is zero, `kv_heads` does not divide `q_heads`, or
    /// `head_dim` is not a multiple of 8.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Shape { op: "KvShape::validate", what });
        if self.layers == 0 || self.q_heads == 0 || self.kv_heads == 0 {
            return bad(format!("{self:?} has a zero count"));
        }
        if !self.q_heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "kv_heads {} does not divide q_heads {}",
                self.kv_heads, self.q_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(8) {
            return bad(format!("head_dim {} is not a positive multiple of 8", self.head_dim));
        }
        Ok(())
    }

    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }
}

/// What the cache holds, measured from its buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tokens appended so far (per layer and head).
    pub tokens_seen: usize,
    /// Token slots held in compressed form, summed over layers and heads.
    pub compressed_slots: usize,
    /// Token slots held in f16, summed over layers and heads.
    pub dense_slots: usize,
    /// Token slots evicted, summed over layers and heads.
    pub evicted_slots: usize,
    /// Bytes of every buffer the cache holds (codes, scales, positions, f16 windows,
    /// query window, rotation signs): the sum of their lengths.
    pub resident_bytes: usize,
    /// Bytes an f16 cache of every token seen would hold: `2 * layers * kv_heads * tokens * d * 2`.
    pub fp16_bytes: usize,
}

impl CacheStats {
    /// `fp16_bytes / resident_bytes`.
    pub fn ratio(&self) -> f64 {
        self.fp16_bytes as f64 / self.resident_bytes.max(1) as f64
    }
}

/// One kv head of one layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head {
    /// Positions of compressed tokens, ascending.
    pub(crate) pos: Vec<u32>,
    pub(crate) k_codes: Vec<u8>,
    pub(crate) k_scales: Vec<f16>,
    pub(crate) v_codes: Vec<u8>,
    pub(crate) v_scales: Vec<f16>,
    /// f16 rows `[dense, d]` of the tokens still dense (positions in [`Layer::dense_pos`]).
    pub(crate) dense_k: Vec<f16>,
    pub(crate) dense_v: Vec<f16>,
    /// Attention mass each dense token received from the queries seen since it was appended
    /// (H2O-style), used to score decode-time blocks without keeping queries around.
    pub(crate) dense_mass: Vec<f32>,
    /// Mean of the head's first compressed keys and values (empty until then, or when
    /// centering is off). Compressed rows store `x - mean`; attention adds the mean back
    /// exactly (`q . mean` per query, `sum p * mean` per output).
    pub(crate) k_mean: Vec<f32>,
    pub(crate) v_mean: Vec<f32>,
    /// Per-channel key scale `s` (`CompressionConfig::smooth_keys`; empty when off or before
    /// the first compression): compressed keys store `(k - mean) * s`, queries are divided by
    /// `s`.
    pub(crate) k_smooth: Vec<f32>,
}

/// The last `window` queries of a layer, `[q_heads][<= window][d]`, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueryWindow {
    pub(crate) rows: Vec<Vec<f32>>,
    pub(crate) pos: Vec<u32>,
}

#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub(crate) key_rot: Rotation,
    pub(crate) value_rot: Rotation,
    pub(crate) heads: Vec<Head>,
    /// Positions of the dense tokens, ascending; the first `sinks` are attention sinks.
    pub(crate) dense_pos: Vec<u32>,
    pub(crate) sinks: usize,
    pub(crate) seen: usize,
    pub(crate) evicted: usize,
    pub(crate) compressed_once: bool,
    pub(crate) queries: QueryWindow,
    /// Attention mass the observation window paid each dense token, `[q_heads][dense]`, when
    /// the caller computed it with the prompt's attention ([`CompressedCache::observe_attention`]);
    /// dropped by any later append, and with the queries at the first compression.
    pub(crate) window_mass: Option<Vec<f32>>,
}

/// A KV cache whose resident form is compressed.
///
/// Tokens are appended in f16. [`compress`](Self::compress) then scores the tokens between
/// the sink and recent windows, evicts the least important, and stores the rest as E8 codes
/// of their randomized-Hadamard rotation. The first call (after prefill) handles the whole
/// prompt at once; later calls, during decoding, handle full blocks of `block` tokens that
/// left the recent window, so the budget keeps holding and no token is quantized twice.
/// [`attend`](Self::attend) reads codes in place.
#[derive(Clone, Debug)]
pub struct CompressedCache {
    pub(crate) shape: KvShape,
    pub(crate) cfg: CompressionConfig,
    pub(crate) keys: RowCodec,
    pub(crate) values: RowCodec,
    pub(crate) rope: Option<Rope>,
    pub(crate) layers: Vec<Layer>,
    identity: bool,
}

impl CompressedCache {
    /// An empty cache for a model of `shape`.
    ///
    /// `rope` is the model's rotary embedding; it is required when `cfg.remove_rope` is set
    /// (keys are stored RoPE-free and RoPE is re-applied per key at attention time).
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::Config`] for a bad shape or configuration.
    pub fn new(shape: KvShape, cfg: CompressionConfig, rope: Option<Rope>) -> Result<Self> {
        shape.validate()?;
        cfg.validate()?;
        if cfg.remove_rope && rope.is_none() {
            return Err(Error::Config {
                field: "remove_rope",
                value: "true, but no RoPE given".into(),
            });
        }
        let keys = RowCodec::new(cfg.keys, shape.head_dim, cfg.scale_candidates)?;
        let values = RowCodec::new(cfg.values, shape.head_dim, cfg.scale_candidates)?;
        let layers = (0..shape.layers)
            .map(|l| {
                let seed = splitmix(cfg.seed ^ (l as u64).wrapping_mul(0x100_0000_01b3));
                Ok(Layer {
                    key_rot: Rotation::new(shape.head_dim, seed)?,
                    value_rot: Rotation::new(shape.head_dim, splitmix(seed))?,
                    heads: vec![Head::default(); shape.kv_heads],
                    dense_pos: Vec::new(),
                    sinks: 0,
                    seen: 0,
                    evicted: 0,
                    compressed_once: false,
                    queries: QueryWindow { rows: vec![Vec::new(); shape.q_heads], pos: Vec::new() },
                    window_mass: None,
                })
            })
            .collect::<Result<_>>()?;
        let identity = cfg == Preset::None.config();
        Ok(CompressedCache { shape, cfg, keys, values, rope, layers, identity })
    }

    /// A copy of this still-uncompressed cache under another configuration: the same tokens
    /// and observed queries, ready to be compressed differently. Lets one prefill serve several
    /// presets.
    ///
    /// # Errors
    /// [`Error::Config`] if `cfg` is invalid or a layer was already compressed (its evicted
    /// tokens cannot come back).
    pub fn reconfigured(&self, cfg: CompressionConfig) -> Result<Self> {
        if self
            .layers
            .iter()
            .any(|l| l.compressed_once && !l.heads.iter().all(|h| h.pos.is_empty()))
        {
            return Err(Error::Config {
                field: "reconfigured",
                value: "the cache was already compressed".into(),
            });
        }
        let mut out = CompressedCache::new(self.shape, cfg, self.rope.clone())?;
        for (new, old) in out.layers.iter_mut().zip(&self.layers) {
            new.heads.clone_from(&old.heads);
            new.dense_pos.clone_from(&old.dense_pos);
            new.seen = old.seen;
            new.sinks = cfg.evict.sinks.min(old.seen);
            let w = cfg.evict.window.min(old.queries.pos.len());
            let d = self.shape.head_dim;
            new.queries.pos = old.queries.pos[old.queries.pos.len() - w..].to_vec();
            new.queries.rows =
                old.queries.rows.iter().map(|r| r[r.len() - w * d..].to_vec()).collect();
            // The mass is a sum over the window's queries: valid for the same window only.
            if w == old.queries.pos.len() {
                new.window_mass.clone_from(&old.window_mass);
            }
        }
        Ok(out)
    }

    /// The cache's shape.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// The cache's configuration.
    pub fn config(&self) -> &CompressionConfig {
        &self.cfg
    }

    /// Tokens appended to `layer` so far.
    ///
    /// # Panics
    /// If `layer` is out of range.
    pub fn len(&self, layer: usize) -> usize {
        self.layers[layer].seen
    }

    /// Whether nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.layers.iter().all(|l| l.seen == 0)
    }

    fn layer_index(&self, op: &'static str, layer: usize) -> Result<()> {
        if layer >= self.layers.len() {
            return Err(Error::Layer { op, layer, layers: self.layers.len() });
        }
        Ok(())
    }

    /// Append the keys and values of new tokens to `layer`, in f16.
    ///
    /// `k` and `v` are `[kv_heads, t, head_dim]` (post-RoPE, as the model produces them);
    /// `positions` holds the `t` absolute positions, strictly increasing and past every
    /// position already held.
    ///
    /// # Errors
    /// [`Error::Layer`], [`Error::Len`], [`Error::Position`], or [`Error::NonFinite`] (nothing
    /// is appended then).
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32], positions: &[u32]) -> Result<()> {
        const OP: &str = "CompressedCache::append";
        self.layer_index(OP, layer)?;
        let (h, d, t) = (self.shape.kv_heads, self.shape.head_dim, positions.len());
        for (what, buf) in [("k", k), ("v", v)] {
            if buf.len() != h * t * d {
                return Err(Error::Len { op: OP, what, got: buf.len(), expected: h * t * d });
            }
            if let Some((index, &value)) = buf.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite { op: OP, index, value });
            }
        }
        let lay = &mut self.layers[layer];
        let mut last = lay.dense_pos.last().copied();
        for &p in positions {
            if let Some(l) = last
                && p <= l
            {
                return Err(Error::Position { op: OP, got: p, last: l });
            }
            last = Some(p);
        }
        for (hi, head) in lay.heads.iter_mut().enumerate() {
            let (ks, vs) = (&k[hi * t * d..][..t * d], &v[hi * t * d..][..t * d]);
            let at = head.dense_k.len();
            head.dense_k.resize(at + t * d, f16::ZERO);
            head.dense_k[at..].convert_from_f32_slice(ks);
            head.dense_v.resize(at + t * d, f16::ZERO);
            head.dense_v[at..].convert_from_f32_slice(vs);
            head.dense_mass.resize(head.dense_mass.len() + t, 0.0);
        }
        lay.dense_pos.extend_from_slice(positions);
        lay.window_mass = None;
        let new_sinks = self.cfg.evict.sinks.saturating_sub(lay.seen).min(t);
        lay.sinks += new_sinks;
        lay.seen += t;
        Ok(())
    }

    /// Remember the last queries of `layer` (`[q_heads, t, head_dim]`, post-RoPE) for scoring.
    ///
    /// # Errors
    /// [`Error::Layer`] or [`Error::Len`].
    pub fn observe_queries(&mut self, layer: usize, q: &[f32], positions: &[u32]) -> Result<()> {
        const OP: &str = "CompressedCache::observe_queries";
        self.layer_index(OP, layer)?;
        let (hq, d, t) = (self.shape.q_heads, self.shape.head_dim, positions.len());
        if q.len() != hq * t * d {
            return Err(Error::Len { op: OP, what: "q", got: q.len(), expected: hq * t * d });
        }
        if self.layers[layer].compressed_once {
            // After the prompt is compressed, blocks are scored by the attention mass they
            // received (`Head::dense_mass`); no queries need to be kept.
            return Ok(());
        }
        let w = self.cfg.evict.window;
        let take = t.min(w);
        // The window changes: attention mass recorded for the old one no longer applies.
        self.layers[layer].window_mass = None;
        let win = &mut self.layers[layer].queries;
        for (h, rows) in win.rows.iter_mut().enumerate() {
            rows.extend_from_slice(&q[(h * t + t - take) * d..(h + 1) * t * d]);
            let excess = rows.len().saturating_sub(w * d);
            rows.drain(..excess);
        }
        win.pos.extend_from_slice(&positions[t - take..]);
        let excess = win.pos.len().saturating_sub(w);
        win.pos.drain(..excess);
        Ok(())
    }

    /// Record the attention mass that the observation window (the last `window` queries passed
    /// to [`observe_queries`](Self::observe_queries)) paid every token `layer` holds:
    /// `mass` is `[q_heads, len]`, row `h` holding `sum_j softmax_i(q_{h,j} . k_i)` over those
    /// queries under the causal mask. A model computes this for free during prefill; with it,
    /// [`ScorerKind::Observed`](crate::ScorerKind::Observed) does not recompute the window's
    /// attention at [`compress`](Self::compress) time. Call it after the last append of the
    /// prompt; any later append discards it.
    ///
    /// # Errors
    /// [`Error::Layer`], [`Error::Len`], or [`Error::NonFinite`] (nothing is recorded then).
    pub fn observe_attention(&mut self, layer: usize, mass: &[f32]) -> Result<()> {
        const OP: &str = "CompressedCache::observe_attention";
        self.layer_index(OP, layer)?;
        let lay = &mut self.layers[layer];
        let expected = self.shape.q_heads * lay.dense_pos.len();
        if mass.len() != expected {
            return Err(Error::Len { op: OP, what: "mass", got: mass.len(), expected });
        }
        if let Some((index, &value)) = mass.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite { op: OP, index, value });
        }
        if !lay.compressed_once {
            lay.window_mass = Some(mass.to_vec());
        }
        Ok(())
    }

    /// Compress what is due: after prefill, every token between the sink and recent windows;
    /// later, each full block of `block` tokens that left the recent window.
    ///
    /// # Errors
    /// Errors of the stages (which validated shapes make unreachable in practice).
    pub fn compress(&mut self) -> Result<()> {
        if self.identity {
            return Ok(());
        }
        self.compress_prompt()?;
        let (recent, block, keep) = (self.cfg.evict.recent, self.cfg.block, self.cfg.evict.keep);
        let kept = ((keep as f64 * block as f64).round() as usize).min(block);
        for layer in 0..self.layers.len() {
            loop {
                let lay = &self.layers[layer];
                if !lay.compressed_once
                    || lay.dense_pos.len().saturating_sub(lay.sinks + recent) < block
                {
                    break;
                }
                let range = lay.sinks..lay.sinks + block;
                let keep_idx = if kept >= block {
                    vec![(0..block as u32).collect(); self.shape.kv_heads]
                } else {
                    // Blocks are scored by the attention mass they received while dense.
                    let scores: Vec<Vec<f32>> =
                        lay.heads.iter().map(|h| h.dense_mass.clone()).collect();
                    let mut evict = self.cfg.evict;
                    if evict.split == BudgetSplit::Global {
                        evict.split = BudgetSplit::PerLayer;
                    }
                    choose(&scores, 1, range, kept, &evict)?
                };
                self.compress_range(layer, block, &keep_idx)?;
            }
        }
        Ok(())
    }

    /// The first compression of every layer that has not had it: all tokens between the sink
    /// and recent windows, `keep` of everything seen kept. With [`BudgetSplit::Global`] and
    /// layers of equal length, all layers share one selection.
    fn compress_prompt(&mut self) -> Result<()> {
        let (recent, keep) = (self.cfg.evict.recent, self.cfg.evict.keep);
        let due: Vec<usize> =
            (0..self.layers.len()).filter(|&l| !self.layers[l].compressed_once).collect();
        let plan = |lay: &Layer| {
            let count = lay.dense_pos.len().saturating_sub(lay.sinks + recent);
            let budget = (keep as f64 * lay.seen as f64).round() as usize;
            let kept = budget.saturating_sub(lay.dense_pos.len() - count).min(count);
            (lay.sinks..lay.sinks + count, kept)
        };
        let all_keep = |count: usize| vec![(0..count as u32).collect(); self.shape.kv_heads];
        let global = self.cfg.evict.split == BudgetSplit::Global
            && due.windows(2).all(|w| {
                let (a, b) = (&self.layers[w[0]], &self.layers[w[1]]);
                a.dense_pos.len() == b.dense_pos.len() && a.sinks == b.sinks
            });
        let mut keep_idx: Vec<Vec<Vec<u32>>> = Vec::with_capacity(due.len());
        if global && let Some(&first) = due.first() {
            let (range, kept) = plan(&self.layers[first]);
            if kept >= range.len() {
                keep_idx = vec![all_keep(range.len()); due.len()];
            } else {
                let mut scores = Vec::with_capacity(due.len() * self.shape.kv_heads);
                for &l in &due {
                    let scoring = Scoring::new(&self.cfg.evict, self.shape);
                    scores.extend(scoring.score_layer(&self.layers[l], range.clone())?);
                }
                let mut units = choose(&scores, due.len(), range, kept, &self.cfg.evict)?;
                while !units.is_empty() {
                    let rest = units.split_off(self.shape.kv_heads);
                    keep_idx.push(units);
                    units = rest;
                }
            }
        } else {
            for &l in &due {
                let lay = &self.layers[l];
                let (range, kept) = plan(lay);
                keep_idx.push(if kept >= range.len() {
                    all_keep(range.len())
                } else {
                    let scores = Scoring::new(&self.cfg.evict, self.shape)
                        .score_layer(lay, range.clone())?;
                    choose(&scores, 1, range, kept, &self.cfg.evict)?
                });
            }
        }
        for (&l, idx) in due.iter().zip(&keep_idx) {
            let (range, _) = plan(&self.layers[l]);
            self.compress_range(l, range.len(), idx)?;
            // From now on blocks are scored by the attention mass they receive.
            let lay = &mut self.layers[l];
            lay.compressed_once = true;
            lay.queries =
                QueryWindow { rows: vec![Vec::new(); self.shape.q_heads], pos: Vec::new() };
            lay.window_mass = None;
        }
        Ok(())
    }

    /// Move the `count` oldest non-sink dense tokens of `layer` to compressed form, keeping
    /// the tokens `keep_idx[head]` (indices into `0..count`) of each head.
    fn compress_range(&mut self, layer: usize, count: usize, keep_idx: &[Vec<u32>]) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let d = self.shape.head_dim;
        let start = self.layers[layer].sinks;
        let range = start..start + count;
        let lay = &mut self.layers[layer];
        let positions: Vec<u32> = lay.dense_pos[range.clone()].to_vec();
        let mut rows = Vec::new();
        let group = self.shape.group();
        for (hi, (head, idx)) in lay.heads.iter_mut().zip(keep_idx).enumerate() {
            for (src, codec, rot, codes, scales, mean, is_key) in [
                (
                    &head.dense_k,
                    &self.keys,
                    &lay.key_rot,
                    &mut head.k_codes,
                    &mut head.k_scales,
                    &mut head.k_mean,
                    true,
                ),
                (
                    &head.dense_v,
                    &self.values,
                    &lay.value_rot,
                    &mut head.v_codes,
                    &mut head.v_scales,
                    &mut head.v_mean,
                    false,
                ),
            ] {
                rows.clear();
                rows.resize(idx.len() * d, 0.0);
                for (&i, row) in idx.iter().zip(rows.chunks_exact_mut(d)) {
                    let at = (start + i as usize) * d;
                    src[at..at + d].convert_to_f32_slice(row);
                }
                if is_key
                    && let Some(rope) = &self.rope
                    && self.cfg.remove_rope
                {
                    let pos: Vec<u32> = idx.iter().map(|&i| positions[i as usize]).collect();
                    rope.invert(&mut rows, &pos)?;
                }
                if self.cfg.center && !idx.is_empty() {
                    if mean.is_empty() {
                        *mean = column_mean(&rows, d);
                    }
                    for row in rows.chunks_exact_mut(d) {
                        row.iter_mut().zip(mean.iter()).for_each(|(x, m)| *x -= m);
                    }
                }
                if is_key && self.cfg.smooth_keys {
                    if head.k_smooth.is_empty() && !idx.is_empty() && !lay.queries.pos.is_empty() {
                        let queries = &lay.queries.rows[hi * group..(hi + 1) * group];
                        head.k_smooth = key_smoothing(queries, &rows, d);
                    }
                    if !head.k_smooth.is_empty() {
                        for row in rows.chunks_exact_mut(d) {
                            row.iter_mut().zip(&head.k_smooth).for_each(|(x, s)| *x *= s);
                        }
                    }
                }
                rot.forward_rows(&mut rows)?;
                codec.encode(&rows, codes, scales)?;
            }
            head.pos.extend(idx.iter().map(|&i| positions[i as usize]));
            head.dense_k.drain(range.start * d..range.end * d);
            head.dense_v.drain(range.start * d..range.end * d);
            head.dense_mass.drain(range.clone());
            lay.evicted += count - idx.len();
        }
        lay.dense_pos.drain(range);
        for head in &mut lay.heads {
            for b in [&mut head.k_codes, &mut head.v_codes] {
                b.shrink_to_fit();
            }
            for b in [&mut head.k_scales, &mut head.v_scales, &mut head.dense_k, &mut head.dense_v]
            {
                b.shrink_to_fit();
            }
            head.pos.shrink_to_fit();
            head.dense_mass.shrink_to_fit();
        }
        lay.dense_pos.shrink_to_fit();
        Ok(())
    }

    /// Causal attention of new queries over every token `layer` holds.
    ///
    /// `q` is `[q_heads, t, head_dim]` post-RoPE at `positions`; a query at position `p` sees
    /// the held tokens at positions `<= p` (and `> p - w` with a sliding `window` of `w`).
    /// Scores are `q . k / sqrt(head_dim)`. Writes `[q_heads, t, head_dim]` into `out`.
    /// Compressed rows are read in place (no dequantized copy of the layer is made).
    ///
    /// # Errors
    /// [`Error::Layer`] or [`Error::Len`].
    pub fn attend(
        &mut self,
        layer: usize,
        q: &[f32],
        positions: &[u32],
        window: Option<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "CompressedCache::attend";
        self.layer_index(OP, layer)?;
        let (hq, d, t) = (self.shape.q_heads, self.shape.head_dim, positions.len());
        for (what, got) in [("q", q.len()), ("out", out.len())] {
            if got != hq * t * d {
                return Err(Error::Len { op: OP, what, got, expected: hq * t * d });
            }
        }
        let per_head = self.shape.group() * t * d;
        let lay = &mut self.layers[layer];
        let ctx = HeadCtx {
            d,
            keys: &self.keys,
            values: &self.values,
            key_rot: &lay.key_rot,
            value_rot: &lay.value_rot,
            dense_pos: &lay.dense_pos,
            window: window.map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
            rope: if self.cfg.remove_rope { self.rope.as_ref() } else { None },
        };
        let heads = lay.heads.len();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(heads);
        let work = t * (ctx.dense_pos.len() + lay.heads[0].pos.len());
        let mut jobs = lay.heads.iter_mut().zip(out.chunks_mut(per_head)).zip(q.chunks(per_head));
        if threads <= 1 || work < 8192 {
            return jobs.try_for_each(|((head, o), qh)| ctx.attend(head, qh, positions, o));
        }
        std::thread::scope(|s| {
            let ctx = &ctx;
            let handles: Vec<_> = jobs
                .by_ref()
                .map(|((head, o), qh)| s.spawn(move || ctx.attend(head, qh, positions, o)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    }

    /// Positions of the compressed tokens of one (layer, kv head), ascending.
    ///
    /// # Panics
    /// If `layer` or `head` is out of range.
    pub fn positions(&self, layer: usize, head: usize) -> &[u32] {
        &self.layers[layer].heads[head].pos
    }

    /// The key code bytes of one (layer, kv head), in token order.
    ///
    /// # Panics
    /// If `layer` or `head` is out of range.
    pub fn key_codes(&self, layer: usize, head: usize) -> &[u8] {
        &self.layers[layer].heads[head].k_codes
    }

    /// What the cache holds, measured from its buffers' lengths.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        let d = self.shape.head_dim;
        for lay in &self.layers {
            s.tokens_seen = s.tokens_seen.max(lay.seen);
            s.evicted_slots += lay.evicted;
            s.resident_bytes += lay.dense_pos.len() * 4
                + lay.queries.pos.len() * 4
                + lay.queries.rows.iter().map(|r| r.len() * 4).sum::<usize>()
                + lay.window_mass.as_ref().map_or(0, |m| m.len() * 4)
                + 2 * d * 4; // the two rotations' sign vectors
            for head in &lay.heads {
                s.compressed_slots += head.pos.len();
                s.dense_slots += head.dense_k.len() / d;
                s.resident_bytes += head.pos.len() * 4
                    + head.k_codes.len()
                    + head.v_codes.len()
                    + (head.k_scales.len() + head.v_scales.len()) * 2
                    + (head.dense_k.len() + head.dense_v.len()) * 2
                    + head.dense_mass.len() * 4
                    + (head.k_mean.len() + head.v_mean.len() + head.k_smooth.len()) * 4;
            }
            s.fp16_bytes += 2 * self.shape.kv_heads * lay.seen * d * 2;
        }
        s
    }
}

/// What the attention of one head reads besides the head itself.
struct HeadCtx<'a> {
    d: usize,
    keys: &'a RowCodec,
    values: &'a RowCodec,
    key_rot: &'a Rotation,
    value_rot: &'a Rotation,
    dense_pos: &'a [u32],
    /// Sliding window in tokens, if any.
    window: Option<u32>,
    /// Set when keys are stored RoPE-free.
    rope: Option<&'a Rope>,
}

impl HeadCtx<'_> {
    /// Attention of the query heads of one kv head: `q`, `out` are `[group, t, d]`.
    fn attend(&self, head: &mut Head, q: &[f32], q_pos: &[u32], out: &mut [f32]) -> Result<()> {
        let d = self.d;
        let t = q_pos.len();
        let scale = 1.0 / (d as f32).sqrt();
        let (mut dense_k, mut dense_v) = (Vec::new(), Vec::new());
        widen(&head.dense_k, &mut dense_k);
        widen(&head.dense_v, &mut dense_v);
        let keys_plain = match self.rope {
            Some(rope) if !head.pos.is_empty() => self.decode_rope_keys(rope, head)?,
            _ => Vec::new(),
        };
        let mut s_c = vec![0f32; head.pos.len()];
        let mut s_d = vec![0f32; self.dense_pos.len()];
        let mut qr = vec![0f32; d];
        let mut acc_rot = vec![0f32; d];
        for (qi, oi) in q.chunks_exact(t * d).zip(out.chunks_exact_mut(t * d)) {
            for (i, &p) in q_pos.iter().enumerate() {
                let qv = &qi[i * d..][..d];
                let o = &mut oi[i * d..][..d];
                // Visible tokens: positions in (p - window, p].
                let lo = |pos: &[u32]| match self.window {
                    Some(w) => pos.partition_point(|&x| x.saturating_add(w) <= p),
                    None => 0,
                };
                let (c0, c1) = (lo(&head.pos), head.pos.partition_point(|&x| x <= p));
                let (d0, d1) = (lo(self.dense_pos), self.dense_pos.partition_point(|&x| x <= p));
                let (c0, d0) = (c0.min(c1), d0.min(d1));
                let (sc, sd) = (&mut s_c[c0..c1], &mut s_d[d0..d1]);
                let kb = self.keys.bytes_per_row();
                if !keys_plain.is_empty() {
                    for (s, k) in sc.iter_mut().zip(keys_plain[c0 * d..].chunks_exact(d)) {
                        *s = dot(qv, k) * scale;
                    }
                } else if c1 > c0 {
                    for (r, &x) in qr.iter_mut().zip(qv) {
                        *r = x * scale;
                    }
                    if !head.k_smooth.is_empty() {
                        qr.iter_mut().zip(&head.k_smooth).for_each(|(r, s)| *r /= s);
                    }
                    self.key_rot.forward(&mut qr)?;
                    let scales = if self.keys.has_scales() { &head.k_scales[c0..] } else { &[] };
                    self.keys.dot(&qr, &head.k_codes[c0 * kb..], scales, sc)?;
                    if !head.k_mean.is_empty() {
                        let shift = dot(qv, &head.k_mean) * scale;
                        sc.iter_mut().for_each(|s| *s += shift);
                    }
                }
                for (s, k) in sd.iter_mut().zip(dense_k[d0 * d..].chunks_exact(d)) {
                    *s = dot(qv, k) * scale;
                }
                let max = sc.iter().chain(sd.iter()).copied().fold(f32::NEG_INFINITY, f32::max);
                o.fill(0.0);
                if max == f32::NEG_INFINITY {
                    continue;
                }
                let sum = exp_normalize(sc, max) + exp_normalize(sd, max);
                let inv = 1.0 / sum;
                if c1 > c0 {
                    acc_rot.fill(0.0);
                    let vb = self.values.bytes_per_row();
                    let scales = if self.values.has_scales() { &head.v_scales[c0..] } else { &[] };
                    self.values.axpy(sc, &head.v_codes[c0 * vb..], scales, &mut acc_rot)?;
                    self.value_rot.inverse(&mut acc_rot)?;
                    o.copy_from_slice(&acc_rot);
                    if !head.v_mean.is_empty() {
                        axpy(sc.iter().sum(), &head.v_mean, o);
                    }
                }
                let mass = &mut head.dense_mass[d0..d1];
                for ((&w, v), m) in sd.iter().zip(dense_v[d0 * d..].chunks_exact(d)).zip(mass) {
                    axpy(w, v, o);
                    *m += w * inv;
                }
                o.iter_mut().for_each(|x| *x *= inv);
            }
        }
        Ok(())
    }

    /// Keys stored RoPE-free: decoded, un-rotated, RoPE re-applied at their positions.
    fn decode_rope_keys(&self, rope: &Rope, head: &Head) -> Result<Vec<f32>> {
        let d = self.d;
        let mut keys = vec![0f32; head.pos.len() * d];
        self.keys.decode(&head.k_codes, &head.k_scales, &mut keys)?;
        for row in keys.chunks_exact_mut(d) {
            self.key_rot.inverse(row)?;
            if !head.k_smooth.is_empty() {
                row.iter_mut().zip(&head.k_smooth).for_each(|(x, s)| *x /= s);
            }
            row.iter_mut().zip(&head.k_mean).for_each(|(x, m)| *x += m);
        }
        rope.apply(&mut keys, &head.pos)?;
        Ok(keys)
    }
}

/// SmoothQuant-style per-channel key scale with exponent 1/2: `s_c = sqrt(rms(q_c) /
/// rms(k_c))` over the window's queries of the kv head's group and the (centered) keys,
/// normalized to geometric mean 1 so the codes' scales stay where they were.
fn key_smoothing(queries: &[Vec<f32>], keys: &[f32], d: usize) -> Vec<f32> {
    let sum_squares = |rows: &mut dyn Iterator<Item = &[f32]>| {
        let mut acc = vec![0f64; d];
        for row in rows {
            acc.iter_mut().zip(row).for_each(|(a, &x)| *a += f64::from(x) * f64::from(x));
        }
        acc
    };
    let q = sum_squares(&mut queries.iter().flat_map(|r| r.chunks_exact(d)));
    let k = sum_squares(&mut keys.chunks_exact(d));
    let raw: Vec<f64> = q
        .iter()
        .zip(&k)
        // tiny floors keep all-zero channels finite; the counts cancel in the normalization
        .map(|(q, k)| ((q + 1e-30) / (k + 1e-30)).sqrt().sqrt())
        .collect();
    let log_mean = raw.iter().map(|x| x.ln()).sum::<f64>() / d as f64;
    raw.iter().map(|x| (x / log_mean.exp()).clamp(1e-3, 1e3) as f32).collect()
}

/// Mean of the rows of `d` values, per column, summed in f64.
fn column_mean(rows: &[f32], d: usize) -> Vec<f32> {
    let mut sum = vec![0f64; d];
    let n = rows.len() / d;
    for row in rows.chunks_exact(d) {
        sum.iter_mut().zip(row).for_each(|(s, &x)| *s += f64::from(x));
    }
    sum.into_iter().map(|s| (s / n.max(1) as f64) as f32).collect()
}
