//! The resident compressed KV cache: per layer and kv head, E8 codes + f16 scales + u32
//! positions for compressed tokens, and f16 rows for the sink and recent windows.

use nq_rope::Rope;

use crate::backend::Backend;
use crate::config::{BudgetSplit, CompressionConfig, Preset};
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::evict::{Scoring, choose};
use crate::rotation::{Rotation, splitmix};
use crate::store::{AttendQuery, ByteBreakdown, CompressJob, EncodeSteps, LayerSpec};

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
    /// query window, rotation signs): the sum of their lengths, `bytes.total()`.
    pub resident_bytes: usize,
    /// The same bytes by component.
    pub bytes: ByteBreakdown,
    /// Bytes an f16 cache of every token seen would hold: `2 * layers * kv_heads * tokens * d * 2`.
    pub fp16_bytes: usize,
}

impl CacheStats {
    /// `fp16_bytes / resident_bytes`.
    pub fn ratio(&self) -> f64 {
        self.fp16_bytes as f64 / self.resident_bytes.max(1) as f64
    }
}

/// The last `window` queries of a layer, `[q_heads][<= window][d]`, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueryWindow {
    pub(crate) rows: Vec<Vec<f32>>,
    pub(crate) pos: Vec<u32>,
}

/// One layer: the backend's storage and the bookkeeping the cache keeps on the host.
#[derive(Clone, Debug)]
pub(crate) struct Layer<S> {
    /// Every buffer of every kv head, where the backend keeps them.
    pub(crate) store: S,
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
    /// Per kv head, the per-channel sums of squares of the observation window's queries of
    /// its group, kept when the window is dropped at the first compression: key smoothing
    /// needs nothing else, and a head whose first rows come later (a prompt of only sinks
    /// and recent tokens, or a head the budget gave nothing) still gets its factor.
    /// Dropped once every head holds compressed rows.
    pub(crate) query_squares: Vec<Vec<f64>>,
    /// Which kv heads hold compressed rows (and so have their smoothing factor).
    pub(crate) heads_with_codes: Vec<bool>,
}

/// A KV cache whose resident form is compressed.
///
/// Tokens are appended in f16. [`compress`](Self::compress) then scores the tokens between
/// the sink and recent windows, evicts the least important, and stores the rest as E8 codes
/// of their randomized-Hadamard rotation. The first call (after prefill) handles the whole
/// prompt at once; later calls, during decoding, handle full blocks of `block` tokens that
/// left the recent window, so the budget keeps holding and no token is quantized twice.
/// [`attend`](Self::attend) reads codes in place.
///
/// The storage lives in a [`Backend`]: [`CpuBackend`] by default (host memory), or a device
/// backend (`nq-cuda`) through [`with_backend`](Self::with_backend).
#[derive(Debug)]
pub struct CompressedCache<B: Backend = CpuBackend> {
    pub(crate) backend: B,
    pub(crate) shape: KvShape,
    pub(crate) cfg: CompressionConfig,
    pub(crate) rope: Option<Rope>,
    pub(crate) layers: Vec<Layer<B::Layer>>,
    identity: bool,
}

impl<B: Backend> Clone for CompressedCache<B>
where
    B::Layer: Clone,
{
    fn clone(&self) -> Self {
        CompressedCache {
            backend: self.backend.clone(),
            shape: self.shape,
            cfg: self.cfg,
            rope: self.rope.clone(),
            layers: self.layers.clone(),
            identity: self.identity,
        }
    }
}

impl CompressedCache<CpuBackend> {
    /// An empty cache for a model of `shape`.
    ///
    /// `rope` is the model's rotary embedding; it is required when `cfg.remove_rope` is set
    /// (keys are stored RoPE-free and RoPE is re-applied per key at attention time).
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::Config`] for a bad shape or configuration.
    pub fn new(shape: KvShape, cfg: CompressionConfig, rope: Option<Rope>) -> Result<Self> {
        Self::with_backend(CpuBackend, shape, cfg, rope)
    }
}

/// The rotations and codecs of layer `l` under `cfg`: the same seeds on every backend.
pub(crate) fn layer_spec(shape: KvShape, cfg: &CompressionConfig, l: usize) -> Result<LayerSpec> {
    let seed = splitmix(cfg.seed ^ (l as u64).wrapping_mul(0x100_0000_01b3));
    Ok(LayerSpec {
        kv_heads: shape.kv_heads,
        q_heads: shape.q_heads,
        head_dim: shape.head_dim,
        keys: cfg.keys,
        values: cfg.values,
        scale_candidates: cfg.scale_candidates,
        key_rot: Rotation::new(shape.head_dim, seed)?,
        value_rot: Rotation::new(shape.head_dim, splitmix(seed))?,
    })
}

impl<B: Backend> CompressedCache<B> {
    /// An empty cache for a model of `shape` whose storage lives in `backend`.
    ///
    /// `rope` is the model's rotary embedding; it is required when `cfg.remove_rope` is set
    /// (keys are stored RoPE-free and RoPE is re-applied per key at attention time).
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::Config`] for a bad shape or configuration,
    /// [`Error::Backend`] when the backend cannot hold it.
    pub fn with_backend(
        backend: B,
        shape: KvShape,
        cfg: CompressionConfig,
        rope: Option<Rope>,
    ) -> Result<Self> {
        shape.validate()?;
        cfg.validate()?;
        if cfg.remove_rope && rope.is_none() {
            return Err(Error::Config {
                field: "remove_rope",
                value: "true, but no RoPE given".into(),
            });
        }
        let layers = (0..shape.layers)
            .map(|l| {
                Ok(Layer {
                    store: backend.new_layer(&layer_spec(shape, &cfg, l)?)?,
                    dense_pos: Vec::new(),
                    sinks: 0,
                    seen: 0,
                    evicted: 0,
                    compressed_once: false,
                    queries: QueryWindow { rows: vec![Vec::new(); shape.q_heads], pos: Vec::new() },
                    window_mass: None,
                    query_squares: Vec::new(),
                    heads_with_codes: vec![false; shape.kv_heads],
                })
            })
            .collect::<Result<_>>()?;
        let identity = cfg == Preset::None.config();
        Ok(CompressedCache { backend, shape, cfg, rope, layers, identity })
    }

    /// The backend holding the storage.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What the backend was asked to store for `layer`: shape, codecs, rotations.
    ///
    /// # Errors
    /// [`Error::Layer`] for a layer out of range.
    pub fn layer_spec(&self, layer: usize) -> Result<LayerSpec> {
        self.layer_index("CompressedCache::layer_spec", layer)?;
        layer_spec(self.shape, &self.cfg, layer)
    }

    /// Positions of the dense (f16) tokens of `layer`, ascending; the first are the sinks.
    ///
    /// # Panics
    /// If `layer` is out of range.
    pub fn dense_positions(&self, layer: usize) -> &[u32] {
        &self.layers[layer].dense_pos
    }

    /// A copy of this still-uncompressed cache under another configuration: the same tokens
    /// and observed queries, ready to be compressed differently. Lets one prefill serve several
    /// presets.
    ///
    /// # Errors
    /// [`Error::Config`] if `cfg` is invalid or a layer was already compressed (its evicted
    /// tokens cannot come back).
    pub fn reconfigured(&self, cfg: CompressionConfig) -> Result<Self> {
        if self.layers.iter().any(|l| self.backend.usage(&l.store).compressed > 0) {
            return Err(Error::Config {
                field: "reconfigured",
                value: "the cache was already compressed".into(),
            });
        }
        let mut out = CompressedCache::with_backend(
            self.backend.clone(),
            self.shape,
            cfg,
            self.rope.clone(),
        )?;
        for (l, (new, old)) in out.layers.iter_mut().zip(&self.layers).enumerate() {
            let heads = self.backend.export(&old.store)?.into_owned();
            let spec = layer_spec(self.shape, &cfg, l)?;
            new.store = self.backend.import(&spec, heads, &old.dense_pos)?;
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
        self.check_positions(OP, layer, positions)?;
        self.backend.append(&mut self.layers[layer].store, k, v, positions)?;
        self.record_append(layer, positions);
        Ok(())
    }

    /// [`append`](Self::append) from rows in the backend's memory (device memory on a GPU:
    /// a model's key and value projections, without a trip through the host). The backend
    /// checks the lengths; finiteness is checked where the rows are, by the backend (on a
    /// GPU, at the next compression).
    ///
    /// # Errors
    /// [`Error::Layer`], [`Error::Position`], or the backend's errors (nothing is appended
    /// then).
    pub fn append_rows(
        &mut self,
        layer: usize,
        k: &B::Rows<'_>,
        v: &B::Rows<'_>,
        positions: &[u32],
    ) -> Result<()> {
        const OP: &str = "CompressedCache::append_rows";
        self.layer_index(OP, layer)?;
        self.check_positions(OP, layer, positions)?;
        self.backend.append_rows(&mut self.layers[layer].store, k, v, positions)?;
        self.record_append(layer, positions);
        Ok(())
    }

    /// `positions` strictly ascend past every position `layer` holds.
    fn check_positions(&self, op: &'static str, layer: usize, positions: &[u32]) -> Result<()> {
        let mut last = self.layers[layer].dense_pos.last().copied();
        for &p in positions {
            if let Some(l) = last
                && p <= l
            {
                return Err(Error::Position { op, got: p, last: l });
            }
            last = Some(p);
        }
        Ok(())
    }

    /// The bookkeeping of an append the backend has done.
    fn record_append(&mut self, layer: usize, positions: &[u32]) {
        let t = positions.len();
        let lay = &mut self.layers[layer];
        lay.dense_pos.extend_from_slice(positions);
        lay.window_mass = None;
        let new_sinks = self.cfg.evict.sinks.saturating_sub(lay.seen).min(t);
        lay.sinks += new_sinks;
        lay.seen += t;
    }

    /// Whether [`observe_queries`](Self::observe_queries) still keeps the queries of
    /// `layer` (until its prompt is compressed): a caller whose queries live on a device
    /// passes them through the host only while this holds.
    ///
    /// # Panics
    /// If `layer` is out of range.
    pub fn observes_queries(&self, layer: usize) -> bool {
        !self.layers[layer].compressed_once
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
            // received (the dense mass); no queries need to be kept.
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
        let (recent, block) = (self.cfg.evict.recent, self.cfg.block);
        let keep = self.cfg.evict.decode_keep.unwrap_or(self.cfg.evict.keep);
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
                    let scores = (0..self.shape.kv_heads)
                        .map(|h| Ok(self.backend.dense_rows(&lay.store, h)?.mass.into_owned()))
                        .collect::<Result<Vec<_>>>()?;
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
        let plan = |lay: &Layer<B::Layer>| {
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
                    scores.extend(scoring.score_layer(
                        &self.backend,
                        &self.layers[l],
                        range.clone(),
                    )?);
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
                    let scores = Scoring::new(&self.cfg.evict, self.shape).score_layer(
                        &self.backend,
                        lay,
                        range.clone(),
                    )?;
                    choose(&scores, 1, range, kept, &self.cfg.evict)?
                });
            }
        }
        for (&l, idx) in due.iter().zip(&keep_idx) {
            let (range, _) = plan(&self.layers[l]);
            // Key smoothing needs only the window's sums of squares: taken once here, kept
            // by `compress_range` until every head holds codes.
            if self.cfg.smooth_keys {
                self.layers[l].query_squares = window_squares(&self.layers[l].queries, self.shape);
            }
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
        let lay = &mut self.layers[layer];
        let range = lay.sinks..lay.sinks + count;
        let squares = &lay.query_squares;
        let job = CompressJob {
            start: range.start,
            count,
            keep: keep_idx,
            positions: &lay.dense_pos[range.clone()],
            steps: EncodeSteps {
                rope: if self.cfg.remove_rope { self.rope.as_ref() } else { None },
                center: self.cfg.center,
                query_squares: (self.cfg.smooth_keys && !squares.is_empty())
                    .then_some(squares.as_slice()),
            },
        };
        self.backend.compress(&mut lay.store, &job)?;
        let kept: usize = keep_idx.iter().map(Vec::len).sum();
        lay.evicted += count * keep_idx.len() - kept;
        for (has, idx) in lay.heads_with_codes.iter_mut().zip(keep_idx) {
            *has |= !idx.is_empty();
        }
        if lay.heads_with_codes.iter().all(|&h| h) {
            lay.query_squares = Vec::new();
        }
        lay.dense_pos.drain(range);
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
    /// This is the generation path, so it also does the eviction bookkeeping of decode-time
    /// blocks: each dense token's attention probability is added to its mass
    /// ([`AttendQuery::record_mass`]), which later decides which tokens of its block are kept.
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
        let CompressedCache { backend, cfg, rope, layers, .. } = self;
        let lay = &mut layers[layer];
        let query = attend_query(cfg, rope.as_ref(), &lay.dense_pos, positions, window);
        backend.attend(&mut lay.store, q, &query, out)
    }

    /// [`attend`](Self::attend) for `B = caches.len()` sequences at once, each over its own
    /// cache, with `q` and `out` `[B, q_heads, t, head_dim]` in the backend's memory and
    /// `positions` the `B * t` positions, sequence by sequence. The caches share one
    /// backend (the first one's runs the call) and one configuration; a GPU attends the
    /// whole batch in one launch, without synchronizing with the host.
    ///
    /// # Errors
    /// [`Error::Len`] without caches or with `positions` not `B * t`, [`Error::Config`]
    /// for caches of different shapes or configurations, [`Error::Layer`], or the
    /// backend's errors.
    pub fn attend_rows(
        caches: &mut [&mut Self],
        layer: usize,
        q: &B::Rows<'_>,
        positions: &[u32],
        window: Option<usize>,
        out: &mut B::RowsMut<'_>,
    ) -> Result<()> {
        const OP: &str = "CompressedCache::attend_rows";
        let Some(first) = caches.first() else {
            return Err(Error::Len { op: OP, what: "caches", got: 0, expected: 1 });
        };
        let (shape, cfg, backend) = (first.shape, first.cfg, first.backend.clone());
        first.layer_index(OP, layer)?;
        if let Some(other) = caches.iter().find(|c| c.shape != shape || c.cfg != cfg) {
            let value = format!("{:?} / {:?} in one batch with {shape:?}", other.shape, other.cfg);
            return Err(Error::Config { field: "attend_rows", value });
        }
        let b = caches.len();
        if !positions.len().is_multiple_of(b) || positions.is_empty() {
            let (got, expected) = (positions.len(), b * positions.len().div_ceil(b).max(1));
            return Err(Error::Len { op: OP, what: "positions", got, expected });
        }
        let t = positions.len() / b;
        let mut layers = Vec::with_capacity(b);
        let mut queries = Vec::with_capacity(b);
        for (cache, positions) in caches.iter_mut().zip(positions.chunks(t)) {
            let CompressedCache { cfg, rope, layers: held, .. } = &mut **cache;
            let lay = &mut held[layer];
            layers.push(&mut lay.store);
            queries.push(attend_query(cfg, rope.as_ref(), &lay.dense_pos, positions, window));
        }
        backend.attend_rows(&mut layers, q, &queries, out)
    }

    /// What the cache holds, measured from its buffers' lengths.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        let d = self.shape.head_dim;
        for lay in &self.layers {
            s.tokens_seen = s.tokens_seen.max(lay.seen);
            s.evicted_slots += lay.evicted;
            let host = ByteBreakdown {
                positions: lay.dense_pos.len() * 4,
                rotation: 2 * d * 4, // the two rotations' sign vectors
                queries: lay.queries.pos.len() * 4
                    + lay.queries.rows.iter().map(|r| r.len() * 4).sum::<usize>()
                    + lay.window_mass.as_ref().map_or(0, |m| m.len() * 4)
                    + lay.query_squares.iter().map(|q| q.len() * 8).sum::<usize>(),
                ..ByteBreakdown::default()
            };
            let usage = self.backend.usage(&lay.store);
            s.compressed_slots += usage.compressed;
            s.dense_slots += usage.dense;
            s.bytes = s.bytes + host + usage.bytes;
            s.fp16_bytes += 2 * self.shape.kv_heads * lay.seen * d * 2;
        }
        s.resident_bytes = s.bytes.total();
        s
    }
}

impl CompressedCache<CpuBackend> {
    /// The buffers of one (layer, kv head): codes, scales, positions, f16 windows.
    ///
    /// # Panics
    /// If `layer` or `head` is out of range.
    pub fn head(&self, layer: usize, head: usize) -> &crate::store::HeadImage {
        self.layers[layer].store.head(head)
    }

    /// Positions of the compressed tokens of one (layer, kv head).
    ///
    /// # Panics
    /// If `layer` or `head` is out of range.
    pub fn positions(&self, layer: usize, head: usize) -> &crate::Positions {
        &self.head(layer, head).pos
    }

    /// The key code bytes of one (layer, kv head), in token order.
    ///
    /// # Panics
    /// If `layer` or `head` is out of range.
    pub fn key_codes(&self, layer: usize, head: usize) -> &[u8] {
        &self.head(layer, head).k_codes
    }
}

/// What one attention call of the generation path reads besides the queries: the layer's
/// dense positions, the window in tokens, RoPE when keys are stored RoPE-free, and the mass
/// recording of decode-time eviction.
fn attend_query<'a>(
    cfg: &CompressionConfig,
    rope: Option<&'a Rope>,
    dense_pos: &'a [u32],
    positions: &'a [u32],
    window: Option<usize>,
) -> AttendQuery<'a> {
    AttendQuery {
        positions,
        dense_pos,
        window: window.map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
        rope: if cfg.remove_rope { rope } else { None },
        record_mass: true,
    }
}

/// Per kv head, the per-channel sums of squares of the window's queries of its group (empty
/// when the window is).
fn window_squares(window: &QueryWindow, shape: KvShape) -> Vec<Vec<f64>> {
    if window.pos.is_empty() {
        return Vec::new();
    }
    let group = shape.group();
    window.rows.chunks(group).map(|rows| crate::prep::query_squares(rows, shape.head_dim)).collect()
}
