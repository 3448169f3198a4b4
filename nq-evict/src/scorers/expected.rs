//! Expected attention of future queries (kvpress `ExpectedAttentionPress`).

use crate::input::with_last_queries;
use crate::kernel::{self, KeyBlocks};
use crate::{Error, GroupReduce, Protect, Result, ScoreInput, Scorer};

/// How a model lays out the rotary pairs of a head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pair `i` is `(x[i], x[i + d/2])` (Hugging Face Llama, candle `rope`).
    #[default]
    SplitHalf,
    /// Pair `i` is `(x[2i], x[2i + 1])` (GGUF llama checkpoints, candle `rope_i`).
    Interleaved,
}

/// The rotary embedding of a model, as [`ExpectedAttention`] needs it to undo the rotation of
/// the window queries and apply the average rotation of future positions.
///
/// Pair `i` at position `p` is rotated by the angle `theta_i(p) = f32(p) * inv_freq[i]`, the
/// product rounded to `f32` as models compute it, then
/// `(x, y) -> (x cos - y sin, x sin + y cos)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSpec {
    /// Angular frequency of each of the `d / 2` pairs (radians per position); any rope scaling
    /// (Llama 3, linear, NTK) is already folded in.
    pub inv_freq: Vec<f32>,
    /// Pair layout.
    pub layout: RopeLayout,
}

impl RopeSpec {
    /// Standard RoPE frequencies `inv_freq[i] = base^(-2i/d)`, `i < d/2`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `d` is zero or odd, or `base` is not finite and `> 1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nq_evict::{RopeLayout, RopeSpec};
    /// let rope = RopeSpec::standard(100_000.0, 64, RopeLayout::Interleaved)?; // SmolLM2
    /// assert_eq!(rope.inv_freq.len(), 32);
    /// assert_eq!(rope.inv_freq[0], 1.0);
    /// # Ok::<(), nq_evict::Error>(())
    /// ```
    pub fn standard(base: f32, d: usize, layout: RopeLayout) -> Result<Self> {
        const OP: &str = "RopeSpec::standard";
        if d == 0 || !d.is_multiple_of(2) {
            #[allow(clippy::cast_precision_loss)]
            return Err(Error::Config {
                op: OP,
                what: "d",
                value: d as f64,
                expected: "even, > 0",
            });
        }
        if !(base.is_finite() && base > 1.0) {
            return Err(Error::Config {
                op: OP,
                what: "base",
                value: f64::from(base),
                expected: "finite, > 1",
            });
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let inv_freq =
            (0..d / 2).map(|i| (f64::from(base).powf(-2.0 * i as f64 / d as f64)) as f32).collect();
        Ok(RopeSpec { inv_freq, layout })
    }

    /// Index pairs `(a, b)` of rotary pair `i` for head dimension `d`.
    #[inline]
    pub(crate) fn pair(&self, i: usize, d: usize) -> (usize, usize) {
        match self.layout {
            RopeLayout::SplitHalf => (i, i + d / 2),
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        }
    }

    /// The rotation angle of pair `i` at position `p`, as a model computes it (`f32` product).
    #[inline]
    pub(crate) fn angle(&self, i: usize, p: u32) -> f64 {
        #[allow(clippy::cast_precision_loss)] // positions < 2^24 are exact; models do the same
        let a = p as f32 * self.inv_freq[i];
        f64::from(a)
    }
}

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
/// **RoPE.** The queries arrive post-RoPE, at the window's positions. kvpress computes `mu` and
/// `Sigma` before RoPE and rotates them by the average rotation matrix of the next
/// `future` positions, `A = mean_f R(p + f)`: `mu -> A mu`, `Sigma -> A Sigma A^T`.
///
/// - With `rope: Some(spec)` this scorer does exactly that: each query is rotated back by its
///   own position (`R(p_j)^T q_j`), `mu` and `Sigma` are estimated pre-RoPE, and `A` averages
///   positions `p_max + 1 ..= p_max + future` (`p_max` the last window position, `A` in closed
///   form per rotary pair).
/// - With `rope: None` the post-RoPE queries are used as they are: their mean already averages
///   the rotation over the `w` window positions (shrinking fast-rotating pairs, as `A` does,
///   but less), and no extrapolation to future positions is made.
///
/// `k^T Sigma k` is evaluated as `(1/w) sum_j ((q_j - mu) . k)^2` (with `A` applied to
/// `q_j - mu`), so the cost is that of [`ObservedAttention`](crate::ObservedAttention):
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
    /// The model's rotary embedding, to estimate the statistics pre-RoPE and rotate them to
    /// future positions; `None` uses the post-RoPE window queries as they are (default).
    pub rope: Option<RopeSpec>,
    /// Future positions averaged by the rotation (kvpress `n_future_positions`, default 512);
    /// read only with `rope`.
    pub future: usize,
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
            rope: None,
            future: 512,
            reduce: GroupReduce::Mean,
            protect: Protect::default(),
        }
    }
}

impl ExpectedAttention {
    fn check_config(&self, op: &'static str, d: usize) -> Result<()> {
        if !(self.covariance.is_finite() && self.covariance >= 0.0) {
            return Err(Error::Config {
                op,
                what: "covariance",
                value: f64::from(self.covariance),
                expected: "finite, >= 0",
            });
        }
        if let Some(rope) = &self.rope {
            if !d.is_multiple_of(2) || rope.inv_freq.len() != d / 2 {
                #[allow(clippy::cast_precision_loss)]
                return Err(Error::Config {
                    op,
                    what: "rope.inv_freq.len()",
                    value: rope.inv_freq.len() as f64,
                    expected: "d / 2 with d even",
                });
            }
            if let Some(&f) = rope.inv_freq.iter().find(|f| !f.is_finite()) {
                return Err(Error::Config {
                    op,
                    what: "rope.inv_freq",
                    value: f64::from(f),
                    expected: "finite",
                });
            }
            if self.future == 0 {
                return Err(Error::Config {
                    op,
                    what: "future",
                    value: 0.0,
                    expected: ">= 1 position",
                });
            }
        }
        Ok(())
    }
}

impl Scorer for ExpectedAttention {
    /// # Errors
    ///
    /// Shape errors of [`ScoreInput::dims`], [`Error::Len`] for `out`, [`Error::NoQueries`]
    /// without queries, [`Error::Config`] for a negative or non-finite `covariance`, a `rope`
    /// whose `inv_freq` is not `d / 2` finite values, `future == 0` with `rope`, or
    /// `window == Some(0)`.
    fn score(&self, input: &ScoreInput<'_>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ExpectedAttention::score";
        let dims = input.check(OP, out, true)?;
        self.check_config(OP, dims.d)?;
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
        let rot = self.rope.as_ref().map(|rope| FutureRotation::new(rope, input, self.future));
        #[allow(clippy::cast_precision_loss)]
        let cov_w = self.covariance / (2.0 * d as f32 * w as f32);
        for h in 0..dims.group {
            let qs = &input.queries[h * w * d..(h + 1) * w * d];
            query_stats(qs, d, self.rope.as_ref(), input.query_positions, rot.as_ref(), &mut stats);
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

/// The average rotation `A = mean_{f=1..=future} R(p_max + f)` per rotary pair, as
/// `(mean cos, mean sin)`.
pub(crate) struct FutureRotation {
    cs: Vec<(f32, f32)>,
}

impl FutureRotation {
    fn new(rope: &RopeSpec, input: &ScoreInput<'_>, future: usize) -> Self {
        let p_max = input.query_positions.iter().copied().max().unwrap_or(0);
        let cs = (0..rope.inv_freq.len()).map(|i| mean_rotation(rope, i, p_max, future)).collect();
        FutureRotation { cs }
    }
}

/// `mean_{f=1..=n} (cos, sin)(theta_i(p + f))`, by the Dirichlet kernel
/// `sum_{k=0}^{n-1} e^{i(a + k)w} = e^{i(a + (n-1)/2)w} sin(n w / 2) / sin(w / 2)`, or by direct
/// summation when `sin(w / 2)` is tiny.
///
/// The angle is extrapolated linearly from `theta_i(p + 1)` with step `inv_freq[i]` in `f64`,
/// so it differs from the model's `f32` products by their rounding only.
fn mean_rotation(rope: &RopeSpec, i: usize, p: u32, n: usize) -> (f32, f32) {
    let w = f64::from(rope.inv_freq[i]);
    #[allow(clippy::cast_precision_loss)]
    let nf = n as f64;
    let a = f64::from(p) + 1.0;
    let half = (w / 2.0).sin();
    let (c, s) = if half.abs() > 1e-6 {
        let ratio = (nf * w / 2.0).sin() / half / nf;
        let mid = (a + (nf - 1.0) / 2.0) * w;
        (mid.cos() * ratio, mid.sin() * ratio)
    } else {
        let (mut c, mut s) = (0.0f64, 0.0f64);
        for k in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let ang = (a + k as f64) * w;
            c += ang.cos();
            s += ang.sin();
        }
        (c / nf, s / nf)
    };
    #[allow(clippy::cast_possible_truncation)]
    let r = (c as f32, s as f32);
    r
}

/// Writes `[mu; q_1 - mu; ...; q_w - mu]` (`(w + 1) x d`) into `stats`, computed pre-RoPE and
/// rotated by the future rotation when `rope` is given.
fn query_stats(
    qs: &[f32],
    d: usize,
    rope: Option<&RopeSpec>,
    positions: &[u32],
    rot: Option<&FutureRotation>,
    stats: &mut [f32],
) {
    let w = positions.len();
    let (mu, cen) = stats.split_at_mut(d);
    cen.copy_from_slice(qs);
    if let Some(rope) = rope {
        for (q, &p) in cen.chunks_exact_mut(d).zip(positions) {
            for i in 0..d / 2 {
                let (a, b) = rope.pair(i, d);
                let th = rope.angle(i, p);
                let (s, c) = th.sin_cos();
                let (x, y) = (f64::from(q[a]), f64::from(q[b]));
                // R(-th): (x cos + y sin, -x sin + y cos)
                #[allow(clippy::cast_possible_truncation)]
                {
                    q[a] = (x * c + y * s) as f32;
                    q[b] = (y * c - x * s) as f32;
                }
            }
        }
    }
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
    if let (Some(rope), Some(rot)) = (rope, rot) {
        for v in stats.chunks_exact_mut(d) {
            for (i, &(c, s)) in rot.cs.iter().enumerate() {
                let (a, b) = rope.pair(i, d);
                let (x, y) = (v[a], v[b]);
                v[a] = x * c - y * s;
                v[b] = x * s + y * c;
            }
        }
    }
}
