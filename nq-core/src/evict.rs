//! The bridge to `nq-evict`: score the tokens of one layer, choose the kept ones.

use std::ops::Range;

use nq_evict::{
    Blend, Budget, ExpectedAttention, HeadNorm, KeyKey, KeyNorm, ObservedAttention, Policy,
    Protect, ScoreInput, Scorer, Shape, ValueNorm, select,
};

use crate::backend::Backend;
use crate::cache::{KvShape, Layer};
use crate::codec::widen;
use crate::config::{EvictConfig, ScorerKind};
use crate::error::Result;

/// Rows of values widened to f32 at a time for their norms.
const WEIGH_ROWS: usize = 64;

/// Scores the dense tokens of a layer, per kv head.
pub(crate) struct Scoring {
    cfg: EvictConfig,
    shape: KvShape,
}

impl Scoring {
    pub(crate) fn new(cfg: &EvictConfig, shape: KvShape) -> Self {
        Scoring { cfg: *cfg, shape }
    }

    /// One score vector per kv head over all `n` dense tokens of the layer; higher is more
    /// worth keeping. `range` (the candidates) is what pooling and normalization look at; the
    /// tokens around it stay in the softmax, as in the model's attention.
    pub(crate) fn score_layer<B: Backend>(
        &self,
        backend: &B,
        lay: &Layer<B::Layer>,
        range: Range<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let d = self.shape.head_dim;
        let group = self.shape.group();
        let n = lay.dense_pos.len();
        let protect = Protect { sinks: range.start, recent: n - range.end };
        let w = lay.queries.pos.len();
        let kind = if w == 0
            && matches!(
                self.cfg.scorer,
                ScorerKind::Observed | ScorerKind::Expected | ScorerKind::Mixed { .. }
            ) {
            // No queries were observed (the caller never called `observe_queries`): fall back
            // to the one scorer that needs neither queries nor values.
            ScorerKind::KeyNorm
        } else {
            self.cfg.scorer
        };
        let observed = ObservedAttention {
            protect,
            pool: self.cfg.pool,
            kernel: self.cfg.pool_kernel,
            ..Default::default()
        };
        let expected = ExpectedAttention { protect, ..Default::default() };
        let scorer: Box<dyn Scorer> = match kind {
            ScorerKind::Observed => Box::new(observed),
            ScorerKind::Expected => Box::new(expected),
            ScorerKind::Mixed { mix } => {
                Box::new(Blend { protect, ..Blend::new(observed, expected, 1.0 - mix) })
            }
            ScorerKind::KeyKey => Box::new(KeyKey),
            ScorerKind::KeyNorm => Box::new(KeyNorm),
        };
        let scorer = if self.cfg.value_norm { Box::new(ValueNorm::new(scorer)) } else { scorer };
        if let (ScorerKind::Observed, Some(mass)) = (kind, &lay.window_mass) {
            // The window's attention came with the prompt's own attention: finish it.
            return self.score_mass(backend, lay, mass, observed);
        }
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let mut queries = Vec::with_capacity(group * w * d);
        let heads = self.shape.kv_heads;
        let mut out = Vec::with_capacity(heads);
        for h in 0..heads {
            let rows = backend.dense_rows(&lay.store, h)?;
            widen(&rows.keys, &mut keys)?;
            if self.cfg.value_norm {
                widen(&rows.values, &mut values)?;
            }
            queries.clear();
            if w > 0 {
                for rows in &lay.queries.rows[h * group..(h + 1) * group] {
                    queries.extend_from_slice(rows);
                }
            }
            let input = ScoreInput {
                keys: &keys,
                values: self.cfg.value_norm.then_some(values.as_slice()),
                queries: &queries,
                query_positions: if w > 0 { &lay.queries.pos } else { &[] },
                key_positions: &lay.dense_pos,
                d,
            };
            let mut scores = vec![0f32; n];
            scorer.score(&input, &mut scores)?;
            out.push(scores);
        }
        Ok(out)
    }
}

impl Scoring {
    /// Observed-attention scores from the window's attention mass `[q_heads, n]`, value-norm
    /// weighted when configured.
    fn score_mass<B: Backend>(
        &self,
        backend: &B,
        lay: &Layer<B::Layer>,
        mass: &[f32],
        observed: ObservedAttention,
    ) -> Result<Vec<Vec<f32>>> {
        let (d, group, n) = (self.shape.head_dim, self.shape.group(), lay.dense_pos.len());
        let mut values = vec![0f32; WEIGH_ROWS * d];
        let mut out = Vec::with_capacity(self.shape.kv_heads);
        for h in 0..self.shape.kv_heads {
            let mut scores = vec![0f32; n];
            observed.score_mass(&mass[h * group * n..(h + 1) * group * n], group, &mut scores)?;
            if self.cfg.value_norm {
                // Widened a few rows at a time, so they are weighed while still in L1 (each
                // row's weight depends on that row alone).
                let rows = backend.dense_rows(&lay.store, h)?;
                let weigh = ValueNorm::new(observed);
                for (src, s) in
                    rows.values.chunks(WEIGH_ROWS * d).zip(scores.chunks_mut(WEIGH_ROWS))
                {
                    let values = &mut values[..src.len()];
                    nq_lattice::widen_f16(src, values)?;
                    weigh.weigh(values, d, s)?;
                }
            }
            out.push(scores);
        }
        Ok(out)
    }
}

/// Kept indices per unit (into `range`, i.e. `0..range.len()`), from `scores[unit][n]`: the
/// units are the heads of `layers` layers of `n` dense tokens each, whose candidates are
/// `range` (the tokens before and after it are protected, and kept elsewhere). Every unit
/// keeps `kept` candidates on average, shared among units as the configuration's split says.
pub(crate) fn choose(
    scores: &[Vec<f32>],
    layers: usize,
    range: Range<usize>,
    kept: usize,
    cfg: &EvictConfig,
) -> Result<Vec<Vec<u32>>> {
    let n = scores.first().map_or(0, Vec::len);
    let flat: Vec<f32> = scores.iter().flatten().copied().collect();
    let protected = n - range.len();
    let policy = Policy {
        sinks: range.start,
        recent: n - range.end,
        budget: Budget::Tokens(kept + protected),
        split: cfg.split,
        // Normalizing over all tokens, protected ones included, leaves more budget to the
        // heads that attend to the middle of the sequence.
        head_norm: HeadNorm::All,
        ..Policy::default()
    };
    let shape = Shape { layers, heads: scores.len() / layers.max(1), tokens: n };
    let kept = select(&flat, shape, &policy)?;
    Ok(kept
        .into_iter()
        .map(|unit| {
            unit.into_iter()
                .filter(|&i| range.contains(&(i as usize)))
                .map(|i| i - range.start as u32)
                .collect()
        })
        .collect())
}
