//! Scorers that need no window queries: key-key attention (the Python original's) and key norm.

use crate::kernel::{self, KeyBlocks};
use crate::{Result, ScoreInput, Scorer};

/// Query rows processed per block by [`KeyKey`].
const ROWS: usize = 32;

/// The Python original's scorer, kept for comparison: the keys stand in for the queries.
///
/// `s_j = (1/t) sum_i softmax_j(k_i . k_j / sqrt(d))`: the column means of the full `t x t`
/// key-key attention matrix, **with no causal mask** and no query at all. Cost
/// `O(t^2 d)`: about 1000x the cost of [`ObservedAttention`](crate::ObservedAttention) at 32K
/// tokens. Queries and positions are not read.
///
/// # Examples
///
/// ```
/// use nq_evict::{KeyKey, ScoreInput, Scorer};
/// let keys = [1.0f32, 0.0, 0.0, 1.0, 1.0, 0.1];
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &[],
///     query_positions: &[],
///     key_positions: &[0, 1, 2],
///     d: 2,
/// };
/// let mut scores = [0.0f32; 3];
/// KeyKey.score(&input, &mut scores)?;
/// assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-6); // a mean of distributions
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyKey;

impl Scorer for KeyKey {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`] and [`Error::Len`](crate::Error::Len) for `out`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "KeyKey::score";
        let dims = input.check(OP, out, false)?;
        let (t, d) = (dims.tokens, dims.d);
        if t == 0 {
            return Ok(());
        }
        let kb = KeyBlocks::new(input.keys, d);
        let mut logits = vec![0.0f32; ROWS.min(t) * t];
        out.fill(0.0);
        let scale = kernel::inv_sqrt(d);
        for rows in input.keys.chunks(ROWS * d) {
            let m = rows.len() / d;
            let block = &mut logits[..m * t];
            kernel::logits(rows, &kb, scale, block);
            for row in block.chunks_exact_mut(t) {
                let s = kernel::exp_row(row);
                if s > 0.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    kernel::axpy(out, (1.0 / s) as f32, row);
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let inv_t = 1.0 / t as f32;
        for o in out.iter_mut() {
            *o *= inv_t;
        }
        Ok(())
    }
}

/// Key-norm scorer (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based Strategy for KV
/// Cache Compression", arXiv:2406.11430; kvpress `KnormPress`).
///
/// **Sign:** keys with a *low* L2 norm tend to receive *high* attention, so a low norm means
/// keep. The score is `exp(-||k_i|| / sqrt(d))`: positive (so pooled splits can normalize it),
/// and ranking tokens exactly as `-||k_i||` does (kvpress's score). Queries, values and
/// positions are not read.
///
/// # Examples
///
/// ```
/// use nq_evict::{KeyNorm, ScoreInput, Scorer};
/// let keys = [3.0f32, 4.0, 0.3, 0.4]; // norms 5 and 0.5
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &[],
///     query_positions: &[],
///     key_positions: &[0, 1],
///     d: 2,
/// };
/// let mut scores = [0.0f32; 2];
/// KeyNorm.score(&input, &mut scores)?;
/// assert!(scores[1] > scores[0]); // the small key is kept first
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyNorm;

impl Scorer for KeyNorm {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`] and [`Error::Len`](crate::Error::Len) for `out`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "KeyNorm::score";
        let dims = input.check(OP, out, false)?;
        let scale = kernel::inv_sqrt(dims.d);
        for (o, k) in out.iter_mut().zip(input.keys.chunks_exact(dims.d)) {
            *o = (-norm(k) * scale).exp();
        }
        Ok(())
    }
}

/// L2 norm, accumulated in `f64` in eight independent lanes (so that it vectorizes).
pub(crate) fn norm(x: &[f32]) -> f32 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let n = (acc.iter().sum::<f64>() + tail).sqrt() as f32;
    n
}

/// StreamingLLM's order (Xiao et al. 2024, arXiv:2309.17453), as a scorer for comparisons:
/// later tokens first, so with the sinks protected by the policy and [`Split::PerHead`] the
/// kept set is the sinks plus a sliding window of the most recent tokens.
///
/// The score is the key position as `f32` (exact below 2^24; beyond, neighbouring positions
/// tie and the earlier index wins). Only positions are read.
///
/// [`Split::PerHead`]: crate::Split::PerHead
///
/// # Examples
///
/// ```
/// use nq_evict::{select, Budget, Policy, Recency, ScoreInput, Scorer, Shape, Split};
/// let keys = [0.0f32; 8];
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &[],
///     query_positions: &[],
///     key_positions: &[0, 1, 2, 3, 4, 5, 6, 7],
///     d: 1,
/// };
/// let mut scores = [0.0f32; 8];
/// Recency.score(&input, &mut scores)?;
/// let policy = Policy {
///     sinks: 1,
///     recent: 1,
///     budget: Budget::Tokens(4),
///     split: Split::PerHead,
///     ..Policy::default()
/// };
/// let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: 8 }, &policy)?;
/// assert_eq!(kept[0], vec![0, 5, 6, 7]);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recency;

impl Scorer for Recency {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`] and [`Error::Len`](crate::Error::Len) for `out`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        input.check("Recency::score", out, false)?;
        for (o, &p) in out.iter_mut().zip(input.key_positions) {
            #[allow(clippy::cast_precision_loss)] // documented: exact below 2^24
            let s = p as f32;
            *o = s;
        }
        Ok(())
    }
}
