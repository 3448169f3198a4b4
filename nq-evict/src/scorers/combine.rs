//! Scorer combinators: value-norm weighting and blends of two scorers.

use crate::kernel;
use crate::scorers::simple::norm;
use crate::{Error, Protect, Result, ScoreInput, Scorer};

/// Multiplies the scores of `inner` by the value norms: `s_i -> (s_i + epsilon) * ||v_i||`
/// (kvpress `use_vnorm`).
///
/// A token's contribution to the attention output is its attention weight times its value, so a
/// token with a tiny value changes little when evicted. `epsilon >= 0` keeps tokens with a zero
/// score but a large value from being ranked at exactly zero.
///
/// # Examples
///
/// ```
/// use nq_evict::{KeyNorm, ScoreInput, Scorer, ValueNorm};
/// let keys = [1.0f32, 0.0, 1.0, 0.0];
/// let values = [1.0f32, 0.0, 3.0, 4.0]; // norms 1 and 5
/// let input = ScoreInput {
///     keys: &keys,
///     values: Some(&values),
///     queries: &[],
///     query_positions: &[],
///     key_positions: &[0, 1],
///     d: 2,
/// };
/// let mut scores = [0.0f32; 2];
/// ValueNorm::new(KeyNorm).score(&input, &mut scores)?;
/// assert!((scores[1] / scores[0] - 5.0).abs() < 1e-5);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ValueNorm<S> {
    /// The scorer whose scores are weighted.
    pub inner: S,
    /// Added to each score before weighting (default 0, as kvpress).
    pub epsilon: f32,
}

impl<S> ValueNorm<S> {
    /// Weights `inner` by value norms, with `epsilon = 0`.
    pub fn new(inner: S) -> Self {
        ValueNorm { inner, epsilon: 0.0 }
    }
}

impl<S: Scorer> Scorer for ValueNorm<S> {
    /// # Errors
    ///
    /// The errors of `inner`, [`Error::NoValues`] without values, [`Error::Config`] for a
    /// negative or non-finite `epsilon`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ValueNorm::score";
        let dims = input.check(OP, out, false)?;
        let Some(values) = input.values else { return Err(Error::NoValues { op: OP }) };
        self.check_epsilon(OP)?;
        self.inner.score(input, out)?;
        self.weigh_valid(values, dims.d, out);
        Ok(())
    }
}

impl<S> ValueNorm<S> {
    /// Weights scores the caller already has (for example from
    /// [`ObservedAttention::score_mass`](crate::ObservedAttention::score_mass)) by the value
    /// norms, as [`Scorer::score`] does after the inner scorer: `scores[i] -> (scores[i] +
    /// epsilon) * ||values[i]||`, `values` being `[scores.len(), d]`.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroDim`] for `d == 0`, [`Error::Len`] when `values` is not `scores.len() * d`
    /// long, [`Error::Config`] for a negative or non-finite `epsilon`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nq_evict::{KeyNorm, ValueNorm};
    /// let mut scores = [1.0f32, 2.0];
    /// ValueNorm::new(KeyNorm).weigh(&[3.0, 4.0, 0.0, 1.0], 2, &mut scores)?;
    /// assert_eq!(scores, [5.0, 2.0]);
    /// # Ok::<(), nq_evict::Error>(())
    /// ```
    pub fn weigh(&self, values: &[f32], d: usize, scores: &mut [f32]) -> Result<()> {
        const OP: &str = "ValueNorm::weigh";
        if d == 0 {
            return Err(Error::ZeroDim { op: OP });
        }
        if Some(values.len()) != scores.len().checked_mul(d) {
            return Err(Error::Len {
                op: OP,
                what: "values",
                expected: scores.len().saturating_mul(d),
                got: values.len(),
            });
        }
        self.check_epsilon(OP)?;
        self.weigh_valid(values, d, scores);
        Ok(())
    }

    fn check_epsilon(&self, op: &'static str) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::Config {
                op,
                what: "epsilon",
                value: f64::from(self.epsilon),
                expected: "finite, >= 0",
            });
        }
        Ok(())
    }

    fn weigh_valid(&self, values: &[f32], d: usize, scores: &mut [f32]) {
        for (o, v) in scores.iter_mut().zip(values.chunks_exact(d)) {
            *o = (*o + self.epsilon) * norm(v);
        }
    }
}

/// A weighted mix of two scorers: `(1 - weight) * a / sum(a) + weight * b / sum(b)`.
///
/// Each part is normalized to sum 1 over the candidate tokens of `protect` (all tokens if there
/// are none; a part whose sum is zero or not finite is used as it is), so the weight is a
/// share of attention mass. The intended use is observed attention of the window
/// ([`ObservedAttention`](crate::ObservedAttention)) blended with the expected attention of
/// future queries ([`ExpectedAttention`](crate::ExpectedAttention)): the first knows what
/// the prompt's end looked at, the second extrapolates to the continuation.
///
/// # Examples
///
/// ```
/// use nq_evict::{Blend, ExpectedAttention, ObservedAttention, Protect, ScoreInput, Scorer};
/// let d = 2;
/// let keys = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5];
/// let queries = [1.0f32, 0.0, 0.9, 0.2];
/// let input = ScoreInput {
///     keys: &keys,
///     values: None,
///     queries: &queries,
///     query_positions: &[2, 3],
///     key_positions: &[0, 1, 2, 3],
///     d,
/// };
/// let none = Protect::NONE;
/// let blend = Blend::new(
///     ObservedAttention { kernel: 1, protect: none, ..Default::default() },
///     ExpectedAttention { protect: none, ..Default::default() },
///     0.5,
/// );
/// let blend = Blend { protect: none, ..blend };
/// let mut scores = [0.0f32; 4];
/// blend.score(&input, &mut scores)?;
/// assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-5);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Blend<A, B> {
    /// First scorer, weighted `1 - weight`.
    pub a: A,
    /// Second scorer, weighted `weight`.
    pub b: B,
    /// Share of `b`, in `[0, 1]`.
    pub weight: f32,
    /// Tokens left out of the normalizing sums: set to the policy's sinks and recent window.
    pub protect: Protect,
}

impl<A, B> Blend<A, B> {
    /// Blends `a` and `b` with `b`'s share `weight` and the default [`Protect`].
    pub fn new(a: A, b: B, weight: f32) -> Self {
        Blend { a, b, weight, protect: Protect::default() }
    }
}

impl<A: Scorer, B: Scorer> Scorer for Blend<A, B> {
    /// # Errors
    ///
    /// The errors of `a` and `b`, [`Error::Config`] if `weight` is not in `[0, 1]`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "Blend::score";
        let dims = input.check(OP, out, false)?;
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(Error::Config {
                op: OP,
                what: "weight",
                value: f64::from(self.weight),
                expected: "in [0, 1]",
            });
        }
        let range = self.protect.norm_range(dims.tokens);
        let mut other = vec![0.0f32; dims.tokens];
        self.a.score(input, out)?;
        self.b.score(input, &mut other)?;
        kernel::normalize(out, range.clone());
        kernel::normalize(&mut other, range);
        let wa = 1.0 - self.weight;
        for (o, &x) in out.iter_mut().zip(&other) {
            *o = wa * *o + self.weight * x;
        }
        Ok(())
    }
}
