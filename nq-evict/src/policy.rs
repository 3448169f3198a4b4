//! Eviction policies: which tokens each (layer, kv head) keeps, given their scores.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Error, Protect, Result};

/// Shape of a score buffer: `layers x heads x tokens`, row-major (token fastest).
///
/// Every (layer, kv head) unit has the same number of tokens, as after a prefill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Layers.
    pub layers: usize,
    /// Kv heads per layer.
    pub heads: usize,
    /// Tokens per head.
    pub tokens: usize,
}

impl Shape {
    /// Number of scores, `layers * heads * tokens`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `layers` or `heads` is zero or the product overflows `usize`;
    /// [`Error::TooManyTokens`] if `tokens > u32::MAX` (kept indices are `u32`).
    pub fn elements(&self) -> Result<usize> {
        const OP: &str = "Shape::elements";
        let bad =
            Error::Shape { op: OP, layers: self.layers, heads: self.heads, tokens: self.tokens };
        if self.layers == 0 || self.heads == 0 {
            return Err(bad);
        }
        if u32::try_from(self.tokens).is_err() {
            return Err(Error::TooManyTokens { op: OP, tokens: self.tokens });
        }
        self.layers.checked_mul(self.heads).and_then(|u| u.checked_mul(self.tokens)).ok_or(bad)
    }
}

/// How many tokens each head keeps, before the [`Split`] shares them out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Keep `round(f * t)` of the `t` tokens of each head (round half away from zero),
    /// `f` in `[0, 1]`.
    KeepFraction(f32),
    /// Evict `round(f * t)` of the `t` tokens of each head, `f` in `[0, 1]`.
    EvictFraction(f32),
    /// Keep `min(n, t)` tokens per head.
    Tokens(usize),
}

impl Budget {
    /// Tokens kept per head out of `t`: always `<= t`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFraction`] for a fraction that is NaN or outside `[0, 1]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nq_evict::Budget;
    /// assert_eq!(Budget::KeepFraction(0.4).per_head(1664)?, 666); // 665.6 rounds up
    /// assert_eq!(Budget::EvictFraction(0.6).per_head(1664)?, 666); // evict 998
    /// assert_eq!(Budget::Tokens(5000).per_head(1664)?, 1664);
    /// # Ok::<(), nq_evict::Error>(())
    /// ```
    pub fn per_head(&self, t: usize) -> Result<usize> {
        const OP: &str = "Budget::per_head";
        let frac = |f: f32| -> Result<usize> {
            if !(0.0..=1.0).contains(&f) {
                return Err(Error::BadFraction { op: OP, value: f });
            }
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let n = (f64::from(f) * t as f64).round() as usize; // in [0, t]
            Ok(n.min(t))
        };
        match *self {
            Budget::KeepFraction(f) => frac(f),
            Budget::EvictFraction(f) => Ok(t - frac(f)?),
            Budget::Tokens(n) => Ok(n.min(t)),
        }
    }
}

/// How a budget is shared among the heads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// Every head keeps exactly its budget (of its layer, with a pyramid).
    PerHead,
    /// Ada-KV (Feng et al. 2024, arXiv:2407.11550): the heads of a layer share `heads x budget`
    /// tokens; each head's scores are normalized ([`HeadNorm`]) and the layer keeps the
    /// highest normalized scores across its heads, with a per-head minimum.
    PerLayer,
    /// Like `PerLayer`, but all heads of all layers share `layers x heads x budget` tokens, so
    /// layers with concentrated attention lend budget to the others. The default; needs the
    /// scores of all layers at once (called one layer at a time, it is `PerLayer`).
    #[default]
    Global,
}

/// How pooled splits ([`Split::PerLayer`], [`Split::Global`]) make the scores of different heads
/// comparable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeadNorm {
    /// Divide each head's scores by their sum over its candidate (evictable) tokens: every
    /// head's candidates form a distribution.
    Candidates,
    /// Divide each head's scores by their sum over all its tokens, protected ones included:
    /// a head that puts most of its attention on its sinks and recent window gets small
    /// candidate scores, and leaves budget to heads that attend to the middle (kvpress
    /// AdaKV compares raw attention weights this way). The default.
    #[default]
    All,
    /// Compare raw scores across heads.
    None,
}

/// What [`select`] does when a head's budget is smaller than its protected tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shortfall {
    /// Return [`Error::BudgetBelowProtected`].
    #[default]
    Error,
    /// Raise the budget to the protected count: the head keeps exactly its sinks and recent
    /// window (its whole sequence if that is shorter), so it keeps more than the budget.
    KeepProtected,
}

/// An eviction policy: protected tokens, budget, and how the budget is shared.
///
/// ## Guarantees of [`select`] (tested as properties)
///
/// Let `t` be the tokens per head, `p = min(sinks + recent, t)` the protected count and
/// `b = budget.per_head(t)` (raised to `p` under [`Shortfall::KeepProtected`]).
///
/// - **Exact budget.** `PerHead`: every head keeps exactly `b` (`b_l` with a pyramid).
///   `PerLayer`: the heads of layer `l` keep exactly `heads * b` (`heads * b_l`) together, each
///   between `m` and `t` (`m` below). `Global`: all heads keep exactly `layers * heads * b`.
///   Since `b <= t`, "budget larger than the sequence" keeps everything.
/// - **Protected tokens.** The first `sinks` and last `recent` tokens of every head are kept.
///   If `b < p`, [`Shortfall`] decides: an error (default) or keep exactly the protected tokens.
/// - **Ties.** Candidates are ranked by score, descending; NaN ranks below every number
///   (including `-inf`) and all NaNs are equal; `-0.0 == +0.0`. Equal scores keep the lower
///   (earlier) token index first; in pooled splits, equal normalized scores fall back to the raw
///   score, then the lower head (`layer * heads + head`), then the lower token index.
/// - **Monotone.** For the same scores and policy, a larger budget keeps a superset.
/// - **Output.** One list per head, at index `layer * heads + head`, sorted ascending, unique,
///   every entry `< t`. Indices are into the head's token axis; map them to positions with
///   the positions you scored with.
///
/// The scores of protected tokens are never read, except by [`HeadNorm::All`] sums.
///
/// ## Per-head minimum of pooled splits
///
/// In `PerLayer` and `Global`, every head keeps at least
/// `m = clamp(round(min_head_fraction * b), p, b)` tokens: its protected tokens and its best
/// `m - p` candidates (kvpress AdaKV's `alpha_safeguard`, default 0.2). The rest of the pooled
/// budget goes to the highest normalized scores `s_i / sum` across the pooled heads, the sum
/// of the head's scores being taken as [`HeadNorm`] says (over its candidates by default);
/// the summed scores must be finite and `>= 0` (NaN allowed, ranked lowest, left out of
/// sums). With [`HeadNorm::None`] raw scores are compared and any value is allowed.
///
/// ## Pyramid
///
/// `pyramid: Some(r)` gives layer `l` of `L` the per-head budget `b_l`, with `b_l` roughly
/// proportional to the weight `r + (1 - r) * l / (L - 1)` (so the first layer gets `r` times
/// the last one's share, PyramidKV, Cai et al. 2024, arXiv:2406.02069), `p <= b_l <= t` and
/// `sum_l b_l = L * b` exactly. Units are handed out one at a time to the layer with the highest
/// `weight / (b_l + 1)` (D'Hondt), starting from `b_l = p`, so a larger `b` never lowers a
/// layer's budget. Works with `PerHead` and `PerLayer`; not with `Global`.
///
/// # Examples
///
/// ```
/// use nq_evict::{Budget, Policy, Split};
/// let policy = Policy {
///     sinks: 4,
///     recent: 32,
///     budget: Budget::EvictFraction(0.6),
///     split: Split::PerLayer,
///     ..Policy::default()
/// };
/// assert_eq!(policy.layer_budgets(30, 1664)?, vec![666; 30]);
/// # Ok::<(), nq_evict::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Attention sinks: the first tokens of every head, always kept (default 4).
    pub sinks: usize,
    /// Recent window: the last tokens of every head, always kept (default 64).
    pub recent: usize,
    /// Tokens kept per head (default `KeepFraction(0.4)`, i.e. 60% eviction).
    pub budget: Budget,
    /// How the budget is shared among heads (default `Global`).
    pub split: Split,
    /// Per-head minimum of pooled splits, as a fraction of the per-head budget (default 0.2).
    pub min_head_fraction: f32,
    /// Pyramid ratio `r > 0`: first-layer over last-layer budget share; `None` is flat
    /// (default).
    pub pyramid: Option<f32>,
    /// What to do when the budget is below the protected tokens (default `Error`).
    pub shortfall: Shortfall,
    /// How pooled splits normalize each head's scores (default `All`).
    pub head_norm: HeadNorm,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            sinks: 4,
            recent: 64,
            budget: Budget::KeepFraction(0.4),
            split: Split::Global,
            min_head_fraction: 0.2,
            pyramid: None,
            shortfall: Shortfall::Error,
            head_norm: HeadNorm::All,
        }
    }
}

impl Policy {
    /// The protected tokens, for the `protect` field of scorers.
    pub fn protect(&self) -> Protect {
        Protect { sinks: self.sinks, recent: self.recent }
    }

    /// Per-head budget of each of `layers` layers for heads of `tokens` tokens (all equal
    /// without a pyramid).
    ///
    /// # Errors
    ///
    /// [`Error::BadFraction`] for a bad budget fraction, [`Error::BudgetBelowProtected`]
    /// (with [`Shortfall::Error`]), and [`Error::Config`] for a bad `min_head_fraction`,
    /// a pyramid ratio that is not finite and `> 0`, or a pyramid with [`Split::Global`].
    pub fn layer_budgets(&self, layers: usize, tokens: usize) -> Result<Vec<usize>> {
        self.layer_budgets_for("Policy::layer_budgets", layers, tokens)
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_head_fraction) {
            return Err(Error::Config {
                op,
                what: "min_head_fraction",
                value: f64::from(self.min_head_fraction),
                expected: "in [0, 1]",
            });
        }
        if let Some(r) = self.pyramid {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::Config {
                    op,
                    what: "pyramid",
                    value: f64::from(r),
                    expected: "finite, > 0",
                });
            }
            if self.split == Split::Global {
                return Err(Error::Config {
                    op,
                    what: "pyramid",
                    value: f64::from(r),
                    expected: "None with Split::Global",
                });
            }
        }
        Ok(())
    }

    fn layer_budgets_for(&self, op: &'static str, layers: usize, t: usize) -> Result<Vec<usize>> {
        self.check(op)?;
        let p = protected_count(self.protect(), t);
        let mut b = self.budget.per_head(t)?;
        if b < p {
            match self.shortfall {
                Shortfall::Error => {
                    return Err(Error::BudgetBelowProtected { op, budget: b, protected: p });
                }
                Shortfall::KeepProtected => b = p,
            }
        }
        Ok(match self.pyramid {
            None => vec![b; layers],
            Some(r) => pyramid(layers, r, p, b, t),
        })
    }
}

/// Tokens protected by `protect` in a head of `t` tokens.
fn protected_count(protect: Protect, t: usize) -> usize {
    t - protect.candidates(t).len()
}

/// D'Hondt allocation of `layers * (b - lo)` units over layers weighted linearly from `r`
/// (first) to 1 (last), starting from `lo`, capped at `hi`.
fn pyramid(layers: usize, r: f32, lo: usize, b: usize, hi: usize) -> Vec<usize> {
    #[derive(PartialEq)]
    struct Slot {
        weight: f64,
        alloc: usize,
        layer: usize,
    }
    impl Eq for Slot {}
    impl Ord for Slot {
        fn cmp(&self, o: &Self) -> Ordering {
            // priority weight / (alloc + 1), compared by cross-multiplication; ties: lower layer
            #[allow(clippy::cast_precision_loss)]
            let (x, y) =
                (self.weight * (o.alloc as f64 + 1.0), o.weight * (self.alloc as f64 + 1.0));
            x.total_cmp(&y).then_with(|| o.layer.cmp(&self.layer))
        }
    }
    impl PartialOrd for Slot {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let r = f64::from(r);
    let mut alloc = vec![lo; layers];
    let mut heap: BinaryHeap<Slot> = (0..layers)
        .filter(|_| lo < hi)
        .map(|layer| {
            #[allow(clippy::cast_precision_loss)]
            let x = if layers > 1 { layer as f64 / (layers - 1) as f64 } else { 0.0 };
            Slot { weight: r + (1.0 - r) * x, alloc: lo, layer }
        })
        .collect();
    let mut left = layers * (b - lo);
    while left > 0 {
        let Some(mut s) = heap.pop() else { break };
        s.alloc += 1;
        alloc[s.layer] = s.alloc;
        left -= 1;
        if s.alloc < hi {
            heap.push(s);
        }
    }
    debug_assert_eq!(left, 0);
    alloc
}

/// Chooses the tokens to keep in every (layer, kv head) unit of a cache, from their scores.
///
/// `scores` is `[layers, heads, tokens]` (higher = keep); see [`Policy`] for the exact
/// guarantees. Returns one sorted list of kept token indices per head, at index
/// `layer * heads + head`. An empty sequence (`tokens == 0`) gives empty lists.
///
/// # Errors
///
/// [`Error::Shape`] / [`Error::TooManyTokens`] from [`Shape::elements`], [`Error::Len`] if
/// `scores.len()` disagrees with the shape, the errors of [`Policy::layer_budgets`], and
/// [`Error::BadScore`] for a negative or infinite score in a normalizing sum of a pooled
/// split (see [`HeadNorm`]).
///
/// # Examples
///
/// ```
/// use nq_evict::{select, Budget, Policy, Shape, Split};
/// let scores = [9.0, 1.0, 5.0, 3.0, 7.0, 2.0, 0.0, 1.0];
/// let policy = Policy {
///     sinks: 1,
///     recent: 1,
///     budget: Budget::Tokens(4),
///     split: Split::PerHead,
///     ..Policy::default()
/// };
/// let kept = select(&scores, Shape { layers: 1, heads: 1, tokens: 8 }, &policy)?;
/// assert_eq!(kept, vec![vec![0, 2, 4, 7]]); // sink 0, best 4 and 2, recent 7
/// # Ok::<(), nq_evict::Error>(())
/// ```
pub fn select(scores: &[f32], shape: Shape, policy: &Policy) -> Result<Vec<Vec<u32>>> {
    const OP: &str = "select";
    let len = shape.elements()?;
    if scores.len() != len {
        return Err(Error::Len { op: OP, what: "scores", expected: len, got: scores.len() });
    }
    let Shape { layers, heads, tokens: t } = shape;
    let budgets = policy.layer_budgets_for(OP, layers, t)?;
    let cand = policy.protect().candidates(t);
    let p = t - cand.len();
    let unit = |u: usize| &scores[u * t..(u + 1) * t];
    let norm_range = match policy.head_norm {
        HeadNorm::Candidates => Some(cand.clone()),
        HeadNorm::All => Some(0..t),
        HeadNorm::None => None,
    };
    if let (true, Some(range)) = (policy.split != Split::PerHead, &norm_range) {
        for u in 0..layers * heads {
            let s = unit(u);
            if let Some(i) = range.clone().find(|&i| s[i] < 0.0 || s[i] == f32::INFINITY) {
                return Err(Error::BadScore { op: OP, index: u * t + i, value: s[i] });
            }
        }
    }
    let mut out = Vec::with_capacity(layers * heads);
    match policy.split {
        Split::PerHead => {
            for (l, &b) in budgets.iter().enumerate() {
                for h in 0..heads {
                    let (mut kept, _) = top_candidates(unit(l * heads + h), cand.clone(), b - p);
                    finish(&mut kept, cand.clone(), t);
                    out.push(kept);
                }
            }
        }
        Split::PerLayer => {
            for (l, &b) in budgets.iter().enumerate() {
                let units: Vec<&[f32]> = (0..heads).map(|h| unit(l * heads + h)).collect();
                let base = l * heads;
                let n = norm_range.clone();
                out.extend(pooled(&units, base, cand.clone(), n, t, b, policy.min_head_fraction));
            }
        }
        Split::Global => {
            let b = budgets.first().copied().unwrap_or(0);
            let units: Vec<&[f32]> = (0..layers * heads).map(unit).collect();
            let n = norm_range.clone();
            out.extend(pooled(&units, 0, cand.clone(), n, t, b, policy.min_head_fraction));
        }
    }
    Ok(out)
}

/// Descending order of scores as an integer: `desc_key(a) < desc_key(b)` exactly when `a`
/// ranks above `b`, equal keys exactly when they tie (the test's `cmp_desc` says it in
/// floats: NaN lowest, all NaNs equal, `-0.0 == +0.0`). Non-NaN scores map to their total order
/// reversed (-0.0 as +0.0), below every NaN, which all map to `u32::MAX`.
#[inline]
fn desc_key(a: f32) -> u32 {
    if a.is_nan() {
        return u32::MAX;
    }
    let bits = (a + 0.0).to_bits();
    // Ascending total order of the bits; reversed, -inf (the last non-NaN) is 0xff80_0000.
    let ascending = if bits >> 31 == 1 { !bits } else { bits | 1 << 31 };
    !ascending
}

/// [`desc_key`] for the `f64` normalized scores (NaN to `u64::MAX`; -0.0 is never stored).
#[inline]
fn desc_key64(a: f64) -> u64 {
    if a.is_nan() {
        return u64::MAX;
    }
    let bits = a.to_bits();
    let ascending = if bits >> 63 == 1 { !bits } else { bits | 1 << 63 };
    !ascending
}

/// Splits the candidates of one head into its best `k` (by score desc, index asc) and the
/// rest, in unspecified order.
fn top_candidates(s: &[f32], cand: std::ops::Range<usize>, k: usize) -> (Vec<u32>, Vec<u32>) {
    // One integer per candidate, score key above index: the selection compares plain
    // integers, not two scores read through their indices.
    #[allow(clippy::cast_possible_truncation)] // tokens <= u32::MAX checked by Shape::elements
    let mut keys: Vec<u64> =
        cand.map(|i| u64::from(desc_key(s[i])) << 32 | u64::from(i as u32)).collect();
    debug_assert!(k <= keys.len());
    if k > 0 && k < keys.len() {
        keys.select_nth_unstable(k - 1);
    }
    #[allow(clippy::cast_possible_truncation)] // the low half is the index
    let idx = |key: &u64| *key as u32;
    (keys[..k].iter().map(idx).collect(), keys[k..].iter().map(idx).collect())
}

/// Adds the protected tokens (outside `cand`) to `kept` and sorts it.
fn finish(kept: &mut Vec<u32>, cand: std::ops::Range<usize>, t: usize) {
    #[allow(clippy::cast_possible_truncation)] // tokens <= u32::MAX checked by Shape::elements
    kept.extend((0..cand.start).chain(cand.end..t).map(|i| i as u32));
    kept.sort_unstable();
}

/// Ada-KV selection over `units` heads sharing `units.len() * b` tokens; `base` is the flat
/// head index of the first unit (for tie-breaking); scores are divided by their sum over
/// `norm_range` (not at all for `None`).
fn pooled(
    units: &[&[f32]],
    base: usize,
    cand: std::ops::Range<usize>,
    norm_range: Option<std::ops::Range<usize>>,
    t: usize,
    b: usize,
    min_fraction: f32,
) -> Vec<Vec<u32>> {
    let p = t - cand.len();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = ((f64::from(min_fraction) * b as f64).round() as usize).clamp(p, b);
    let mut kept = Vec::with_capacity(units.len());
    // One entry per pooled candidate: (normalized score key, raw score key, unit) packed
    // in one integer, then the index. Their order is the one the naive oracle sorts by:
    // normalized score desc (NaN, exactly when the raw score is NaN, lowest), raw score
    // desc, unit asc, index asc.
    let mut pool: Vec<(u128, u32)> = Vec::new();
    for (u, s) in units.iter().enumerate() {
        let (head, rest) = top_candidates(s, cand.clone(), m - p);
        kept.push(head);
        // None: raw scores (a unit divisor keeps their order, -inf and +inf included)
        let sum: f64 = norm_range
            .clone()
            .map_or(1.0, |r| r.map(|i| s[i]).filter(|x| !x.is_nan()).map(f64::from).sum());
        #[allow(clippy::cast_possible_truncation)] // at most layers * heads units: usize
        let unit = (base + u) as u32;
        pool.extend(rest.into_iter().map(|i| {
            let raw = s[i as usize];
            // `+ 0.0` maps -0.0 to +0.0, as `desc_key` does
            let norm = if raw.is_nan() {
                f64::NAN
            } else if sum > 0.0 {
                f64::from(raw) / sum + 0.0
            } else {
                0.0
            };
            let key = u128::from(desc_key64(norm)) << 64
                | u128::from(desc_key(raw)) << 32
                | u128::from(unit);
            (key, i)
        }));
    }
    let k = units.len() * (b - m);
    if k > 0 && k < pool.len() {
        pool.select_nth_unstable(k - 1);
    }
    pool.truncate(k);
    for (key, idx) in pool {
        #[allow(clippy::cast_possible_truncation)] // the low 32 bits are the unit
        let unit = key as u32;
        kept[unit as usize - base].push(idx);
    }
    for list in &mut kept {
        finish(list, cand.clone(), t);
    }
    kept
}

/// Keeps the rows `kept` of `rows` (`[n, row_len]`): physically removes evicted tokens.
///
/// Use it on keys, values and positions (`row_len = 1`) alike, with one head's kept list.
///
/// # Errors
///
/// [`Error::ZeroDim`] if `row_len == 0`, [`Error::NotMultiple`] if `rows` is not whole rows,
/// [`Error::BadIndex`] if `kept` is not strictly increasing or points past the last row.
///
/// # Examples
///
/// ```
/// let positions = [10u32, 11, 12, 13];
/// assert_eq!(nq_evict::gather(&positions, 1, &[0, 2, 3])?, vec![10, 12, 13]);
/// # Ok::<(), nq_evict::Error>(())
/// ```
pub fn gather<T: Copy>(rows: &[T], row_len: usize, kept: &[u32]) -> Result<Vec<T>> {
    const OP: &str = "gather";
    if row_len == 0 {
        return Err(Error::ZeroDim { op: OP });
    }
    if !rows.len().is_multiple_of(row_len) {
        return Err(Error::NotMultiple { op: OP, what: "rows", row: row_len, got: rows.len() });
    }
    let n = rows.len() / row_len;
    let mut prev: Option<u32> = None;
    for (at, &i) in kept.iter().enumerate() {
        if i as usize >= n || prev.is_some_and(|q| i <= q) {
            return Err(Error::BadIndex { op: OP, at, index: i, len: n });
        }
        prev = Some(i);
    }
    let mut out = Vec::with_capacity(kept.len() * row_len);
    for &i in kept {
        let i = i as usize;
        out.extend_from_slice(&rows[i * row_len..(i + 1) * row_len]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::{desc_key, desc_key64};

    /// The order the integer keys stand for, in floats.
    fn cmp_desc(a: f32, b: f32) -> Ordering {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // `x + 0.0` maps -0.0 to +0.0
            (false, false) => (b + 0.0).total_cmp(&(a + 0.0)),
        }
    }

    fn samples() -> Vec<f32> {
        let mut v = vec![
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            1.0,
            -1.0,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            #[allow(clippy::cast_possible_truncation)]
            v.push(f32::from_bits(state as u32));
        }
        v
    }

    /// Every pair of special and random scores orders the same by key as by `cmp_desc`.
    #[test]
    fn desc_key_orders_as_cmp_desc() {
        let v = samples();
        for &a in &v {
            for &b in &v {
                assert_eq!(desc_key(a).cmp(&desc_key(b)), cmp_desc(a, b), "{a:e} vs {b:e}");
            }
        }
    }

    /// The `f64` key: descending total order, NaN lowest, on the same scores widened.
    #[test]
    fn desc_key64_orders_descending_with_nan_lowest() {
        let v: Vec<f64> = samples().into_iter().map(|x| f64::from(x) + 0.0).collect();
        for &a in &v {
            for &b in &v {
                let want = match (a.is_nan(), b.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => b.total_cmp(&a),
                };
                assert_eq!(desc_key64(a).cmp(&desc_key64(b)), want, "{a:e} vs {b:e}");
            }
        }
    }
}
