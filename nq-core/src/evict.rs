//! The bridge to `nq-evict`: score the tokens of one layer, choose the kept ones.

use std::ops::Range;

use nq_evict::{
    Blend, Budget, ExpectedAttention, HeadNorm, KeyKey, KeyNorm, ObservedAttention, Policy,
    Protect, ScoreInput, Scorer, Shape, Split, select,
};

use crate::cache::{KvShape, Layer};
use crate::codec::widen;
use crate::config::{BudgetSplit, EvictConfig, ScorerKind};
use crate::error::Result;

/// Scores every token of a layer's `range` (indices into its dense tokens), per kv head.
pub(crate) struct Scoring {
    kind: ScorerKind,
    shape: KvShape,
}

impl Scoring {
    pub(crate) fn new(cfg: &EvictConfig, shape: KvShape) -> Self {
        Scoring { kind: cfg.scorer, shape }
    }

    /// One score vector of `range.len()` per kv head; higher is more worth keeping.
    pub(crate) fn score_layer(&self, lay: &Layer, range: Range<usize>) -> Result<Vec<Vec<f32>>> {
        let d = self.shape.head_dim;
        let group = self.shape.group();
        let n = lay.dense_pos.len();
        // Normalise and pool over the candidates only; the tokens around them stay in the
        // softmax, as in the model's attention.
        let protect = Protect { sinks: range.start, recent: n - range.end };
        let w = lay.queries.pos.len();
        let kind = if w == 0
            && matches!(
                self.kind,
                ScorerKind::Observed | ScorerKind::Expected | ScorerKind::Mixed { .. }
            ) {
            // No queries were observed (the caller never called `observe_queries`): fall back
            // to the one scorer that needs neither queries nor values.
            ScorerKind::KeyNorm
        } else {
            self.kind
        };
        let scorer: Box<dyn Scorer> = match kind {
            // Per-query-head normalization before the group mean: the setting the presets were
            // measured with (nq-evict's own default changed to raw attention later).
            ScorerKind::Observed => {
                Box::new(ObservedAttention { protect, normalize: true, ..Default::default() })
            }
            ScorerKind::Expected => Box::new(ExpectedAttention { protect, ..Default::default() }),
            ScorerKind::Mixed { mix } => Box::new(Blend {
                protect,
                ..Blend::new(
                    ObservedAttention { protect, normalize: true, ..Default::default() },
                    ExpectedAttention { protect, ..Default::default() },
                    1.0 - mix,
                )
            }),
            ScorerKind::KeyKey => Box::new(KeyKey),
            ScorerKind::KeyNorm => Box::new(KeyNorm),
        };
        let mut keys = Vec::new();
        let mut queries = Vec::with_capacity(group * w * d);
        let mut scores = vec![0f32; n];
        let mut out = Vec::with_capacity(lay.heads.len());
        for (h, head) in lay.heads.iter().enumerate() {
            widen(&head.dense_k, &mut keys);
            queries.clear();
            if w > 0 {
                for rows in &lay.queries.rows[h * group..(h + 1) * group] {
                    queries.extend_from_slice(rows);
                }
            }
            let input = ScoreInput {
                keys: &keys,
                values: None,
                queries: &queries,
                query_positions: if w > 0 { &lay.queries.pos } else { &[] },
                key_positions: &lay.dense_pos,
                d,
            };
            scorer.score(&input, &mut scores)?;
            out.push(scores[range.clone()].to_vec());
        }
        Ok(out)
    }
}

/// Kept indices (into `0..count`) per head: `kept` per head on average, shared among the
/// heads of the layer as the configuration says.
pub(crate) fn choose(
    scores: &[Vec<f32>],
    count: usize,
    kept: usize,
    cfg: &EvictConfig,
) -> Result<Vec<Vec<u32>>> {
    let flat: Vec<f32> = scores.iter().flatten().copied().collect();
    let policy = Policy {
        sinks: 0,
        recent: 0,
        budget: Budget::Tokens(kept),
        split: match cfg.split {
            BudgetSplit::PerHead => Split::PerHead,
            BudgetSplit::PerLayer => Split::PerLayer,
        },
        head_norm: HeadNorm::Candidates,
        ..Policy::default()
    };
    Ok(select(&flat, Shape { layers: 1, heads: scores.len(), tokens: count }, &policy)?)
}
