//! Observed attention of the observation window (SnapKV, kvpress `SnapKVPress`).

use crate::input::with_last_queries;
use crate::kernel::{self, KeyBlocks, Pool};
use crate::{Error, GroupReduce, Protect, Result, ScoreInput, Scorer};

/// Scores tokens by the attention the real last-`w` prompt queries paid them (SnapKV,
/// Li et al. 2024, arXiv:2404.14469).
///
/// For each query head `h` of the group, with `a_h[j, i] = softmax_i(q_{h,j} . k_i / sqrt(d))`
/// under the positional causal mask (query `j` sees key `i` iff `pos(k_i) <= pos(q_j)`):
///
/// 1. `s_h[i] = sum_j c_j a_h[j, i]` (summed over the window's queries, with `c_j = 1`, or
///    `exp(-(p_max - p_j) / decay)` with `decay`; a query that sees no key adds nothing);
/// 2. `s_h` is pooled along the token axis with a centred window of `kernel` tokens
///    ([`Pool::Max`] or [`Pool::Avg`]), inside the candidate range of `protect` only: the
///    large attention mass of sinks and of the window's own keys does not leak into their
///    neighbours, and protected tokens keep their unpooled score;
/// 3. if `normalize`, `s_h` is divided by its sum over the candidate range (all tokens when
///    that range is empty), so that every query head weighs the same whatever mass its sinks
///    absorb;
/// 4. the group's heads are combined by `reduce` (mean or max).
///
/// The window's own keys get scores too (they attend to themselves), but a policy keeps them
/// anyway as part of the recent window, which should be at least `w` tokens long.
///
/// Cost: `O(group * w * t * d)` multiply-adds in a register-blocked kernel, plus
/// `group * w * t` exponentials; scratch memory `w * t + (t + 7) * d` floats per call, no
/// allocation per token.
///
/// # Examples
///
/// ```
/// use nq_evict::{ObservedAttention, Protect, ScoreInput, Scorer};
/// let d = 2;
/// // Four tokens; the query looks along the first axis, so token 2 matters most.
/// let keys = [0.0, 1.0, 0.5, 0.0, 4.0, 0.0, 0.0, 0.0];
/// let key_positions = [0u32, 1, 2, 3];
/// let queries = [1.0f32, 0.0]; // one query head, window of one query at position 3
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &queries,
///     query_positions: &[3],
///     key_positions: &key_positions,
///     d,
/// };
/// let scorer = ObservedAttention { kernel: 1, protect: Protect::NONE, ..Default::default() };
/// let mut scores = [0.0f32; 4];
/// scorer.score(&input, &mut scores)?;
/// assert!(scores[2] > scores[1] && scores[1] > scores[0]);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObservedAttention {
    /// Use only the last `window` queries of each head (by their order in the input); `None`
    /// uses all of them (default). Lets one input carry a long window for
    /// [`ExpectedAttention`](crate::ExpectedAttention) and a short one for this scorer.
    pub window: Option<usize>,
    /// Recency weighting of the window's queries: query `j` counts
    /// `exp(-(p_max - p_j) / decay)` (`p_max` the last query position), so a long window still
    /// favours what the last queries look at. `None` weighs all queries 1 (default).
    pub decay: Option<f32>,
    /// Pooling kind (default [`Pool::Avg`]).
    pub pool: Pool,
    /// Pooling kernel in tokens: odd, 1 = no pooling (default 5).
    pub kernel: usize,
    /// How the query heads of a kv head are combined (default mean).
    pub reduce: GroupReduce,
    /// Normalize each query head's scores to sum 1 over the candidates (default false: the
    /// raw attention mass, which sums to the number of window queries over all tokens, keeps
    /// the information of how much of it a head spends on evictable tokens, which
    /// [`HeadNorm::All`](crate::HeadNorm::All) uses to share the budget across heads).
    pub normalize: bool,
    /// Tokens left out of pooling and normalization: set to the policy's sinks and recent
    /// window.
    pub protect: Protect,
}

impl Default for ObservedAttention {
    fn default() -> Self {
        ObservedAttention {
            window: None,
            decay: None,
            pool: Pool::Avg,
            kernel: 5,
            reduce: GroupReduce::Mean,
            normalize: false,
            protect: Protect::default(),
        }
    }
}

impl ObservedAttention {
    pub(crate) fn check_config(&self, op: &'static str) -> Result<()> {
        if let Some(tau) = self.decay
            && !(tau.is_finite() && tau > 0.0)
        {
            return Err(Error::Config {
                op,
                what: "decay",
                value: f64::from(tau),
                expected: "finite, > 0 positions",
            });
        }
        if self.kernel.is_multiple_of(2) {
            #[allow(clippy::cast_precision_loss)]
            return Err(Error::Config {
                op,
                what: "kernel",
                value: self.kernel as f64,
                expected: "an odd number of tokens >= 1",
            });
        }
        Ok(())
    }
}

impl Scorer for ObservedAttention {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`], [`Error::Len`] for `out`, [`Error::NoQueries`]
    /// without queries, [`Error::Config`] for an even `kernel`, `window == Some(0)`
    /// or a `decay` that is not finite and `> 0`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ObservedAttention::score";
        let dims = input.check(OP, out, true)?;
        self.check_config(OP)?;
        with_last_queries(OP, input, dims, self.window, |input| self.score_valid(input, out))
    }
}

impl ObservedAttention {
    /// Scores from attention mass the caller already has, typically from the model's own
    /// prefill attention: `mass` is `[group, t]`, row `h` holding step 1 of the definition
    /// above, `sum_j c_j a_h[j, i]`, for query head `h` of the kv head. Applies steps 2 to 4
    /// (pooling, normalization, group reduction) into `out` (`t` values), which gives what
    /// [`Scorer::score`] gives on the input the mass came from. `window` and `decay` are the
    /// caller's business here (they shape the mass).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for `group == 0`, [`Error::Len`] when `mass` is not `group * t`
    /// long, [`Error::Config`] as for [`Scorer::score`].
    ///
    /// # Examples
    ///
    /// ```
    /// use nq_evict::{ObservedAttention, Protect};
    /// let scorer = ObservedAttention { kernel: 1, protect: Protect::NONE, ..Default::default() };
    /// // Two query heads over three tokens; mean over the group.
    /// let mass = [0.5f32, 0.25, 0.25, 0.0, 0.5, 0.5];
    /// let mut scores = [0.0f32; 3];
    /// scorer.score_mass(&mass, 2, &mut scores)?;
    /// assert_eq!(scores, [0.25, 0.375, 0.375]);
    /// # Ok::<(), nq_evict::Error>(())
    /// ```
    pub fn score_mass(&self, mass: &[f32], group: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ObservedAttention::score_mass";
        self.check_config(OP)?;
        let t = out.len();
        if group == 0 {
            return Err(Error::Shape { op: OP, layers: 1, heads: 0, tokens: t });
        }
        if Some(mass.len()) != group.checked_mul(t) {
            return Err(Error::Len {
                op: OP,
                what: "mass",
                expected: group.saturating_mul(t),
                got: mass.len(),
            });
        }
        let mut pooled = vec![0.0f32; t];
        for (h, head) in mass.chunks_exact(t.max(1)).take(group).enumerate() {
            self.finish_head(head, &mut pooled, out, group, h);
        }
        Ok(())
    }

    /// Steps 2 to 4 for query head `h` of `group`: pool `head` into `pooled`, normalize, and
    /// reduce into `out`.
    fn finish_head(
        &self,
        head: &[f32],
        pooled: &mut [f32],
        out: &mut [f32],
        group: usize,
        h: usize,
    ) {
        let range = self.protect.norm_range(head.len());
        kernel::pool(head, range.clone(), self.kernel, self.pool, pooled);
        if self.normalize {
            kernel::normalize(pooled, range);
        }
        kernel::reduce_into(out, pooled, self.reduce, group, h == 0);
    }

    /// [`Scorer::score`] on a validated input.
    fn score_valid(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ObservedAttention::score";
        let dims = input.dims_for(OP)?;
        let (t, w, d) = (dims.tokens, dims.window, dims.d);
        if t == 0 {
            return Ok(());
        }
        let Some(wt) = w.checked_mul(t) else {
            return Err(Error::Len {
                op: OP,
                what: "window x tokens",
                expected: usize::MAX,
                got: w,
            });
        };
        let kb = KeyBlocks::new(input.keys, d);
        let mut logits = vec![0.0f32; wt];
        let mut head = vec![0.0f32; t];
        let mut pooled = vec![0.0f32; t];
        let weights = query_weights(input.query_positions, self.decay);
        for h in 0..dims.group {
            observed_head(input, &kb, h, &weights, &mut logits, &mut head);
            self.finish_head(&head, &mut pooled, out, dims.group, h);
        }
        Ok(())
    }
}

/// `head[i] = sum_j softmax_i(q_{h,j} . k_i / sqrt(d))` under the causal mask, for query head
/// `h` of a validated input. `logits` is `[w, t]` scratch.
pub(crate) fn observed_head(
    input: &ScoreInput<'_>,
    kb: &KeyBlocks,
    h: usize,
    weights: &[f32],
    logits: &mut [f32],
    head: &mut [f32],
) {
    let (t, d) = (kb.tokens(), input.d);
    let w = input.query_positions.len();
    let qs = &input.queries[h * w * d..(h + 1) * w * d];
    kernel::logits(qs, kb, kernel::inv_sqrt(d), logits);
    causal_mask(input.key_positions, input.query_positions, logits);
    head.fill(0.0);
    for (row, &wj) in logits.chunks_exact_mut(t).zip(weights) {
        let s = kernel::exp_row(row);
        if s > 0.0 {
            #[allow(clippy::cast_possible_truncation)] // s >= 1 (the max term is 1)
            kernel::axpy(head, (f64::from(wj) / s) as f32, row);
        }
    }
}

/// Weight of each window query: `exp(-(p_max - p_j) / decay)`, or 1 without decay.
pub(crate) fn query_weights(positions: &[u32], decay: Option<f32>) -> Vec<f32> {
    let p_max = positions.iter().copied().max().unwrap_or(0);
    positions
        .iter()
        .map(|&p| match decay {
            #[allow(clippy::cast_possible_truncation)]
            Some(tau) => (-f64::from(p_max - p) / f64::from(tau)).exp() as f32,
            None => 1.0,
        })
        .collect()
}

/// Sets `logits[j, i] = -inf` where key `i` is in the future of query `j`.
pub(crate) fn causal_mask(key_positions: &[u32], query_positions: &[u32], logits: &mut [f32]) {
    let t = key_positions.len();
    let Some(&min_q) = query_positions.iter().min() else { return };
    for (i, &kp) in key_positions.iter().enumerate() {
        if kp > min_q {
            for (j, &qp) in query_positions.iter().enumerate() {
                if kp > qp {
                    logits[j * t + i] = f32::NEG_INFINITY;
                }
            }
        }
    }
}
