//! What a scorer sees: one (layer, kv head) unit of the cache, and the trait scorers implement.

use std::ops::Range;

use crate::{Error, Result};

/// The data of one (layer, kv head) unit that a [`Scorer`] ranks.
///
/// All buffers are row-major `f32`:
///
/// | field | shape | meaning |
/// |---|---|---|
/// | `keys` | `[t, d]` | cached keys, post-RoPE, as the model produced them |
/// | `values` | `[t, d]` or absent | cached values (only value-norm weighting reads them) |
/// | `queries` | `[group, w, d]` | the last `w` prompt queries of each of the `group` query heads that share this kv head, post-RoPE |
/// | `query_positions` | `[w]` | absolute position of each window query |
/// | `key_positions` | `[t]` | absolute position of each cached token |
///
/// With the usual GQA layout (Llama, Qwen: `repeat_kv`), the query heads of kv head `h` are
/// `h * group .. (h + 1) * group`.
///
/// `t` is `keys.len() / d`, `w` is `query_positions.len()` and `group` is
/// `queries.len() / (w * d)`. The causal mask is positional: a query at position `p` sees the
/// keys whose position is `<= p`. Positions need not be sorted or contiguous, so a cache that
/// was already compacted can be scored again with its original positions.
///
/// # Examples
///
/// ```
/// use nq_evict::ScoreInput;
/// let (t, d) = (6, 2);
/// let keys = vec![0.5f32; t * d];
/// let key_positions: Vec<u32> = (0..t as u32).collect();
/// let queries = vec![1.0f32; 2 * d]; // group 1, window of 2 queries
/// let query_positions = [4u32, 5];
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &queries,
///     query_positions: &query_positions,
///     key_positions: &key_positions,
///     d,
/// };
/// let dims = input.dims()?;
/// assert_eq!((dims.tokens, dims.window, dims.group, dims.d), (6, 2, 1, 2));
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ScoreInput<'a> {
    /// Keys `[t, d]`, post-RoPE.
    pub keys: &'a [f32],
    /// Values `[t, d]`, if available.
    pub values: Option<&'a [f32]>,
    /// Observation-window queries `[group, w, d]`, post-RoPE; may be empty for scorers that
    /// do not read queries ([`KeyKey`](crate::KeyKey), [`KeyNorm`](crate::KeyNorm)).
    pub queries: &'a [f32],
    /// Positions of the `w` window queries.
    pub query_positions: &'a [u32],
    /// Positions of the `t` cached tokens.
    pub key_positions: &'a [u32],
    /// Head dimension.
    pub d: usize,
}

/// Sizes of a validated [`ScoreInput`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Cached tokens `t`.
    pub tokens: usize,
    /// Window queries per query head `w`.
    pub window: usize,
    /// Query heads sharing this kv head (0 when no queries are given).
    pub group: usize,
    /// Head dimension `d`.
    pub d: usize,
}

impl ScoreInput<'_> {
    /// Checks every buffer length against the others and returns the sizes.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroDim`] if `d == 0`; [`Error::NotMultiple`] if `keys` is not `t` rows of `d`
    /// or `queries` is not `group` blocks of `w * d`; [`Error::Len`] if `key_positions`,
    /// `values` or `queries` disagree with `t`, `w` and `d`.
    pub fn dims(&self) -> Result<Dims> {
        self.dims_for("ScoreInput::dims")
    }

    pub(crate) fn dims_for(&self, op: &'static str) -> Result<Dims> {
        let d = self.d;
        if d == 0 {
            return Err(Error::ZeroDim { op });
        }
        if !self.keys.len().is_multiple_of(d) {
            return Err(Error::NotMultiple { op, what: "keys", row: d, got: self.keys.len() });
        }
        let tokens = self.keys.len() / d;
        if self.key_positions.len() != tokens {
            return Err(Error::Len {
                op,
                what: "key_positions",
                expected: tokens,
                got: self.key_positions.len(),
            });
        }
        if let Some(v) = self.values
            && v.len() != self.keys.len()
        {
            return Err(Error::Len { op, what: "values", expected: self.keys.len(), got: v.len() });
        }
        let window = self.query_positions.len();
        let group = if window == 0 {
            if !self.queries.is_empty() {
                return Err(Error::Len {
                    op,
                    what: "queries",
                    expected: 0,
                    got: self.queries.len(),
                });
            }
            0
        } else {
            // w * d cannot overflow: w * d <= queries.len() is checked by the division below
            // only when it does not overflow, so check it explicitly.
            let row = window.checked_mul(d).ok_or(Error::NotMultiple {
                op,
                what: "queries",
                row: usize::MAX,
                got: self.queries.len(),
            })?;
            if !self.queries.len().is_multiple_of(row) {
                return Err(Error::NotMultiple {
                    op,
                    what: "queries",
                    row,
                    got: self.queries.len(),
                });
            }
            self.queries.len() / row
        };
        Ok(Dims { tokens, window, group, d })
    }

    /// Like [`dims`](Self::dims), and also checks that `out` has `t` elements and that there is
    /// at least one query when `need_queries`.
    pub(crate) fn check(&self, op: &'static str, out: &[f32], need_queries: bool) -> Result<Dims> {
        let dims = self.dims_for(op)?;
        if out.len() != dims.tokens {
            return Err(Error::Len { op, what: "out", expected: dims.tokens, got: out.len() });
        }
        if need_queries && dims.group == 0 {
            return Err(Error::NoQueries { op });
        }
        Ok(dims)
    }
}

/// Runs `f` on `input` restricted to the last `n` window queries of each query head (all of
/// them when `n` is `None` or at least `w`).
///
/// # Errors
///
/// [`Error::Config`] for `n == Some(0)`; otherwise what `f` returns.
pub(crate) fn with_last_queries<R>(
    op: &'static str,
    input: &ScoreInput<'_>,
    dims: Dims,
    n: Option<usize>,
    f: impl FnOnce(&ScoreInput<'_>) -> Result<R>,
) -> Result<R> {
    match n {
        Some(0) => {
            Err(Error::Config { op, what: "window", value: 0.0, expected: "None or >= 1 query" })
        }
        Some(n) if n < dims.window => {
            let (w, d) = (dims.window, dims.d);
            let mut queries = Vec::with_capacity(dims.group * n * d);
            for h in 0..dims.group {
                queries.extend_from_slice(&input.queries[(h * w + w - n) * d..(h + 1) * w * d]);
            }
            let sub = ScoreInput {
                queries: &queries,
                query_positions: &input.query_positions[w - n..],
                ..*input
            };
            f(&sub)
        }
        _ => f(input),
    }
}

/// Scores the tokens of one (layer, kv head) unit: a higher score means "more worth keeping".
///
/// Implementations must write exactly one score per cached token into `out` (`out.len() == t`),
/// must be deterministic, and must not panic on any input: malformed shapes are
/// [`Error`]s. Non-finite inputs give NaN scores, which [`select`](crate::select) ranks lowest.
pub trait Scorer {
    /// Writes one importance score per token of `input` into `out`.
    ///
    /// # Errors
    ///
    /// Shape errors from [`ScoreInput::dims`], [`Error::Len`] if `out.len() != t`, and the
    /// scorer's own requirements (queries, values, configuration).
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()>;
}

impl<S: Scorer + ?Sized> Scorer for &S {
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        (**self).score(input, out)
    }
}

impl<S: Scorer + ?Sized> Scorer for Box<S> {
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        (**self).score(input, out)
    }
}

/// How the scores of the `group` query heads that share a kv head are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupReduce {
    /// Mean over the query heads (kvpress, SnapKV with GQA).
    #[default]
    Mean,
    /// Maximum over the query heads: keep a token if any query head needs it.
    Max,
}

/// The tokens a policy always keeps, as scorers see them: the first `sinks` and the last
/// `recent` tokens of the unit.
///
/// Scorers use it to leave these tokens out of normalizations and pooling (their attention mass,
/// typically large, says nothing about the other tokens). Set it to the same values as the
/// [`Policy`](crate::Policy) that will select from the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protect {
    /// Attention sinks: the first tokens.
    pub sinks: usize,
    /// Recent window: the last tokens.
    pub recent: usize,
}

impl Default for Protect {
    /// 4 sinks (StreamingLLM) and a 64-token recent window, as [`Policy::default`].
    ///
    /// [`Policy::default`]: crate::Policy
    fn default() -> Self {
        Protect { sinks: 4, recent: 64 }
    }
}

impl Protect {
    /// No protected tokens.
    pub const NONE: Protect = Protect { sinks: 0, recent: 0 };

    /// Index range of the evictable (candidate) tokens of a unit of `t` tokens:
    /// `min(sinks, t) .. max(t - recent, min(sinks, t))`; empty when the protected tokens
    /// cover the unit.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = nq_evict::Protect { sinks: 4, recent: 8 };
    /// assert_eq!(p.candidates(100), 4..92);
    /// assert!(p.candidates(10).is_empty());
    /// ```
    pub fn candidates(&self, t: usize) -> Range<usize> {
        let start = self.sinks.min(t);
        let end = t.saturating_sub(self.recent).max(start);
        start..end
    }

    /// The candidate range, or all of `0..t` when it is empty: the tokens a scorer normalizes
    /// and pools over.
    pub(crate) fn norm_range(&self, t: usize) -> Range<usize> {
        let r = self.candidates(t);
        if r.is_empty() { 0..t } else { r }
    }
}
