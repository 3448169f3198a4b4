//! Expected attention of future queries (kvpress `ExpectedAttentionPress`).

use crate::input::with_last_queries;
use crate::kernel::{self, KeyBlocks};
use crate::{Error, GroupReduce, Protect, Result, ScoreInput, Scorer};

/// Scores tokens by the attention that future queries are expected to pay them
/// (kvpress `ExpectedAttentionPress`, Devoto et al. 2025, arXiv:2510.00636).
///
/// Future queries of query head `h` are modelled as Gaussian, `q ~ N(mu, Sigma)`, with `mu` and
/// `Sigma` the mean and (biased, `1/w`) covariance of the head's `w` window queries. Since
/// `E[exp(q.k / sqrt d)] = exp(mu.k / sqrt d + k^T Sigma k / (2 d))` for Gaussian `q`, each token
/// gets the logit
///
/// ```text
/// z_i = mu . k_i / sqrt(d) + covariance * k_i^T Sigma k_i / (2 d)
/// ```
///
/// and the head's score is `softmax(z)` over the candidate tokens of `protect` (all tokens when
/// there are none); the protected tokens get the largest candidate score (kvpress pads its sinks
/// the same way). The group's heads are then combined by `reduce`. Multiply by value norms with
/// [`ValueNorm`](crate::ValueNorm), as kvpress does by default.
///
/// **RoPE.** The scorer takes the queries as they come and knows nothing of rotary
/// embeddings: the statistics are those of the rows it is given. Post-RoPE window queries
/// (what a model produces) already average their rotation over the `w` window positions,
/// which shrinks the fast-rotating pairs. kvpress instead estimates `mu` and `Sigma` before
/// RoPE and turns them by the mean rotation of the next `n` positions,
/// `A = mean_{f=1..=n} R(p_max + f)`: `mu -> A mu`, `Sigma -> A Sigma A^T`. Since `mu`, the
/// centred queries and so `Sigma` are linear in the rows, passing the rows `A R(p_j)^T q_j`
/// gives exactly kvpress's statistics. With nq-rope that is `rope.invert(queries, positions)`
/// then `rope.apply_mean(queries, p_max + 1, n)` on each head's window; the rotation math
/// lives in that crate only.
///
/// `k^T Sigma k` is evaluated as `(1/w) sum_j ((q_j - mu) . k)^2`, so the cost is that of [`ObservedAttention`](crate::ObservedAttention):
/// `O(group * w * t * d)`, and `O(group * t * d)` when `covariance == 0`.
///
/// # Examples
///
/// ```
/// use nq_evict::{ExpectedAttention, Protect, ScoreInput, Scorer};
/// let d = 2;
/// let keys = [1.0, 0.0, -1.0, 0.0, 3.0, 0.0];
/// let queries = [1.0f32, 0.0, 1.2, 0.1]; // one head, two queries pointing along +x
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &queries,
///     query_positions: &[1, 2],
///     key_positions: &[0, 1, 2],
///     d,
/// };
/// let scorer = ExpectedAttention { protect: Protect::NONE, ..Default::default() };
/// let mut scores = [0.0f32; 3];
/// scorer.score(&input, &mut scores)?;
/// assert!(scores[2] > scores[0] && scores[0] > scores[1]);
/// assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedAttention {
    /// Use only the last `window` queries of each head (by their order in the input); `None`
    /// uses all of them (default). More queries estimate `Sigma` better (kvpress uses the
    /// whole prompt).
    pub window: Option<usize>,
    /// Weight of the covariance term: 1 = kvpress, 0 = mean query only (default 1).
    pub covariance: f32,
    /// How the query heads of a kv head are combined (default mean).
    pub reduce: GroupReduce,
    /// Tokens left out of the softmax: set to the policy's sinks and recent window.
    pub protect: Protect,
}

impl Default for ExpectedAttention {
    fn default() -> Self {
        ExpectedAttention {
            window: None,
            covariance: 1.0,
            reduce: GroupReduce::Mean,
            protect: Protect::default(),
        }
    }
}

impl ExpectedAttention {
    fn check_config(&self, op: &'static str) -> Result<()> {
        if !(self.covariance.is_finite() && self.covariance >= 0.0) {
            return Err(Error::Config {
                op,
                what: "covariance",
                value: f64::from(self.covariance),
                expected: "finite, >= 0",
            });
        }
        Ok(())
    }
}

impl Scorer for ExpectedAttention {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`], [`Error::Len`] for `out`, [`Error::NoQueries`]
    /// without queries, [`Error::Config`] for a negative or non-finite `covariance` or
    /// `window == Some(0)`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ExpectedAttention::score";
        let dims = input.check(OP, out, true)?;
        self.check_config(OP)?;
        with_last_queries(OP, input, dims, self.window, |input| self.score_valid(input, out))
    }
}

impl ExpectedAttention {
    /// [`Scorer::score`] on a validated input.
    fn score_valid(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ExpectedAttention::score";
        let dims = input.dims_for(OP)?;
        let (t, w, d) = (dims.tokens, dims.window, dims.d);
        if t == 0 {
            return Ok(());
        }
        let use_cov = self.covariance > 0.0;
        let rows = if use_cov { w + 1 } else { 1 };
        let Some(rt) = rows.checked_mul(t) else {
            return Err(Error::Len {
                op: OP,
                what: "window x tokens",
                expected: usize::MAX,
                got: w,
            });
        };
        let kb = KeyBlocks::new(input.keys, d);
        let mut logits = vec![0.0f32; rt];
        let mut z = vec![0.0f32; t];
        let mut stats = vec![0.0f32; (w + 1) * d];
        let range = self.protect.norm_range(t);
        #[allow(clippy::cast_precision_loss)]
        let cov_w = self.covariance / (2.0 * d as f32 * w as f32);
        for h in 0..dims.group {
            let qs = &input.queries[h * w * d..(h + 1) * w * d];
            query_stats(qs, d, &mut stats);
            kernel::logits(&stats[..rows * d], &kb, 1.0, &mut logits);
            let inv_sqrt_d = kernel::inv_sqrt(d);
            for (zi, &m) in z.iter_mut().zip(&logits[..t]) {
                *zi = m * inv_sqrt_d;
            }
            if use_cov {
                for row in logits[t..].chunks_exact(t) {
                    for (zi, &c) in z.iter_mut().zip(row) {
                        *zi += cov_w * c * c;
                    }
                }
            }
            softmax_in_range(&mut z, range.clone());
            kernel::reduce_into(out, &z, self.reduce, dims.group, h == 0);
        }
        Ok(())
    }
}

/// Softmax of `z[range]` in place; entries outside `range` get the largest in-range value.
fn softmax_in_range(z: &mut [f32], range: std::ops::Range<usize>) {
    let s = kernel::exp_row(&mut z[range.clone()]);
    if s > 0.0 {
        #[allow(clippy::cast_possible_truncation)] // s >= 1
        let inv = (1.0 / s) as f32;
        for x in &mut z[range.clone()] {
            *x *= inv;
        }
    }
    let top = z[range.clone()].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let top = if top.is_finite() { top } else { 0.0 };
    let (start, end) = (range.start, range.end);
    z[..start].fill(top);
    z[end..].fill(top);
}

/// Writes `[mu; q_1 - mu; ...; q_w - mu]` (`(w + 1) x d`) into `stats` for the `w` rows of
/// `qs`.
fn query_stats(qs: &[f32], d: usize, stats: &mut [f32]) {
    let w = qs.len() / d;
    let (mu, cen) = stats.split_at_mut(d);
    cen.copy_from_slice(qs);
    let mut acc = vec![0.0f64; d];
    for q in cen.chunks_exact(d) {
        for (s, &x) in acc.iter_mut().zip(q) {
            *s += f64::from(x);
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let inv_w = 1.0 / w as f64;
    for (m, s) in mu.iter_mut().zip(&acc) {
        #[allow(clippy::cast_possible_truncation)]
        {
            *m = (s * inv_w) as f32;
        }
    }
    for q in cen.chunks_exact_mut(d) {
        for (x, &m) in q.iter_mut().zip(mu.iter()) {
            *x -= m;
        }
    }
}
