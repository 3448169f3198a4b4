//! The rotary embedding: precomputed frequencies, apply and invert.

use crate::freqs::inv_freqs;
use crate::trig;
use crate::{Error, Result, RopeConfig, RopeLayout};

/// Direction of the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// `R(θ) x`, times the attention factor.
    Apply,
    /// `R(θ)ᵀ x`, divided by the attention factor.
    Invert,
}

/// A rotary position embedding ready to apply or invert.
///
/// For position `p` and pair `k` (see [`RopeLayout`]) with inverse frequency `f_k`, the pair
/// `(a, b)` becomes `(a cos θ - b sin θ, a sin θ + b cos θ)` with `θ = p f_k`; values
/// `rotary_dim..head_dim` pass through. The angle is `f64(p) * f_k` in f64 and
/// `sin θ`, `cos θ` are computed in f64 and then rounded to f32, so angles stay exact to f32
/// rounding at any `u32` position. [`invert`](Rope::invert) applies the transpose
/// `R(θ)ᵀ = R(-θ)` with the very same f32 cosines and sines (the sine negated, which is
/// exact), so `invert(apply(x, p), p)` equals `x` to within a few f32 ulps of `‖x‖` at every
/// position (tested up to 1 000 000).
///
/// Compatibility: HF and candle compute `p * inv_freq` in f32, which loses about
/// `p * 2^-24` radians at position `p`; keys rotated by those implementations differ from
/// this one by that angle error (~0.06 rad at p = 1M), not by anything in this crate.
///
/// # Examples
/// ```
/// use nq_rope::{Rope, RopeConfig};
/// let rope = Rope::new(RopeConfig::new(8, 10_000.0))?;
/// let x: Vec<f32> = (0..3 * 8).map(|i| i as f32 * 0.1).collect();
/// let positions = [0, 17, 1_000_000];
/// let mut y = x.clone();
/// rope.apply(&mut y, &positions)?;
/// assert_eq!(y[..8], x[..8]); // position 0 is the identity
/// rope.invert(&mut y, &positions)?;
/// assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 4.0 * f32::EPSILON * 4.0));
/// # Ok::<(), nq_rope::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    cfg: RopeConfig,
    inv_freq: Vec<f64>,
    /// The largest inverse frequency: angles up to `u32::MAX * max_inv_freq`.
    max_inv_freq: f64,
    attention_factor: f64,
    /// `attention_factor` and its inverse rounded to f32; `None` when the factor is 1.
    scale: Option<(f32, f32)>,
}

/// Cosines and sines for a list of positions, to reuse across heads and layers.
///
/// Built by [`Rope::table`]; entry `i` holds `cos(p_i f_k)` and `sin(p_i f_k)` for every pair
/// `k`, rounded to f32 exactly as [`Rope::apply`] computes them, so [`Rope::apply_table`]
/// gives bit-identical results to [`Rope::apply`] at a fraction of the cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    pairs: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Number of positions in the table.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cos.len().checked_div(self.pairs).unwrap_or(0)
    }

    /// Whether the table holds no position.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }

    /// Rotary pairs per position (`rotary_dim / 2`).
    #[must_use]
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Every entry's cosines, row-major `[len, pairs]`: entry `i` holds `cos(p_i f_k)` at
    /// `i * pairs + k` (what a GPU rotation kernel takes as its cos table).
    #[must_use]
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// Every entry's sines, laid out as [`cos`](RopeTable::cos).
    #[must_use]
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }

    /// `(cos, sin)` of entry `i` (one value per pair), or `None` past the end.
    #[must_use]
    pub fn entry(&self, i: usize) -> Option<(&[f32], &[f32])> {
        let r = i.checked_mul(self.pairs)?..(i + 1).checked_mul(self.pairs)?;
        Some((self.cos.get(r.clone())?, self.sin.get(r)?))
    }
}

impl Rope {
    /// Validates `cfg` and precomputes the inverse frequencies and attention factor.
    ///
    /// # Errors
    /// Whatever [`RopeConfig::validate`] reports: [`Error::HeadDim`], [`Error::RotaryDim`],
    /// [`Error::Param`].
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{Rope, RopeConfig};
    /// let rope = Rope::new(RopeConfig::new(8, 10_000.0))?;
    /// assert_eq!(rope.inv_freqs(), &[1.0, 0.1, 0.01, 0.001]); // 10000^(-2k/8) = 10^-k
    /// assert!(Rope::new(RopeConfig::new(8, 10_000.0).with_rotary_dim(7)).is_err());
    /// # Ok::<(), nq_rope::Error>(())
    /// ```
    pub fn new(cfg: RopeConfig) -> Result<Rope> {
        cfg.validate()?;
        let (inv_freq, attention_factor) = inv_freqs(&cfg);
        let scale = (attention_factor != 1.0)
            .then(|| (attention_factor as f32, (1.0 / attention_factor) as f32));
        let max_inv_freq = inv_freq.iter().copied().fold(0.0, f64::max);
        Ok(Rope { cfg, inv_freq, max_inv_freq, attention_factor, scale })
    }

    /// The configuration this rope was built from.
    #[must_use]
    pub fn config(&self) -> &RopeConfig {
        &self.cfg
    }

    /// Values per head vector.
    #[must_use]
    pub fn head_dim(&self) -> usize {
        self.cfg.head_dim
    }

    /// The inverse frequency of each rotary pair (`rotary_dim / 2` values, after scaling), f64.
    #[must_use]
    pub fn inv_freqs(&self) -> &[f64] {
        &self.inv_freq
    }

    /// The f32 factors [`apply`](Rope::apply) and [`invert`](Rope::invert) multiply the rotated
    /// values by, `(attention_factor, 1 / attention_factor)` rounded to f32, or `None` when the
    /// factor is 1 (nothing is multiplied): what another implementation of the rotation (a GPU
    /// kernel) needs to give the same bits.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{Rope, RopeConfig, RopeScaling};
    /// assert_eq!(Rope::new(RopeConfig::new(8, 10_000.0))?.factors(), None);
    /// let yarn = RopeConfig::new(8, 10_000.0).with_scaling(RopeScaling::yarn(4.0, 4096));
    /// let (up, down) = Rope::new(yarn)?.factors().expect("YaRN scales");
    /// assert!(up > 1.0 && (up * down - 1.0).abs() < 1e-6);
    /// # Ok::<(), nq_rope::Error>(())
    /// ```
    #[must_use]
    pub fn factors(&self) -> Option<(f32, f32)> {
        self.scale
    }

    /// The factor the rotated values are multiplied by (YaRN's `attention_factor`; 1 for the
    /// other kinds).
    #[must_use]
    pub fn attention_factor(&self) -> f64 {
        self.attention_factor
    }

    /// Rotates every row of a row-major `[positions.len(), head_dim]` buffer to its position.
    ///
    /// Positions are explicit per row (an evicted cache is not contiguous) and may repeat.
    ///
    /// # Errors
    /// [`Error::Len`] if `rows.len() != positions.len() * head_dim`.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{Rope, RopeConfig};
    /// let rope = Rope::new(RopeConfig::new(4, 10_000.0))?;
    /// let mut k = vec![1.0f32, 0.0, 0.0, 0.0];
    /// rope.apply(&mut k, &[1])?; // pair (0, 2) turns by 1 rad
    /// assert_eq!(k, [1f64.cos() as f32, 0.0, 1f64.sin() as f32, 0.0]);
    /// # Ok::<(), nq_rope::Error>(())
    /// ```
    pub fn apply(&self, rows: &mut [f32], positions: &[u32]) -> Result<()> {
        self.check_len("Rope::apply", rows.len(), positions.len())?;
        self.run(Dir::Apply, rows, positions.iter().copied());
        Ok(())
    }

    /// Undoes [`apply`](Rope::apply): rotates every row back from its position.
    ///
    /// # Errors
    /// [`Error::Len`] if `rows.len() != positions.len() * head_dim`.
    pub fn invert(&self, rows: &mut [f32], positions: &[u32]) -> Result<()> {
        self.check_len("Rope::invert", rows.len(), positions.len())?;
        self.run(Dir::Invert, rows, positions.iter().copied());
        Ok(())
    }

    /// [`apply`](Rope::apply) with contiguous positions `start, start + 1, ...` (a prefill).
    ///
    /// # Errors
    /// [`Error::Len`] if `rows.len()` is not a multiple of `head_dim`;
    /// [`Error::PositionOverflow`] if the last position exceeds `u32::MAX`.
    pub fn apply_from(&self, rows: &mut [f32], start: u32) -> Result<()> {
        let n = self.contiguous("Rope::apply_from", rows.len(), start)?;
        self.run(Dir::Apply, rows, (0..n).map(|i| start + i));
        Ok(())
    }

    /// [`invert`](Rope::invert) with contiguous positions `start, start + 1, ...`.
    ///
    /// # Errors
    /// As [`apply_from`](Rope::apply_from).
    pub fn invert_from(&self, rows: &mut [f32], start: u32) -> Result<()> {
        let n = self.contiguous("Rope::invert_from", rows.len(), start)?;
        self.run(Dir::Invert, rows, (0..n).map(|i| start + i));
        Ok(())
    }

    /// [`apply`](Rope::apply) on one row of `head_dim` values.
    ///
    /// # Errors
    /// [`Error::RowLen`] if `row.len() != head_dim`.
    pub fn apply_row(&self, row: &mut [f32], pos: u32) -> Result<()> {
        self.check_row("Rope::apply_row", row.len())?;
        self.run(Dir::Apply, row, std::iter::once(pos));
        Ok(())
    }

    /// [`invert`](Rope::invert) on one row of `head_dim` values.
    ///
    /// # Errors
    /// [`Error::RowLen`] if `row.len() != head_dim`.
    pub fn invert_row(&self, row: &mut [f32], pos: u32) -> Result<()> {
        self.check_row("Rope::invert_row", row.len())?;
        self.run(Dir::Invert, row, std::iter::once(pos));
        Ok(())
    }

    /// Multiplies every row by the mean of the rotations at positions
    /// `first, first + 1, ..., first + count - 1`: `A = (1/n) sum_f R(first + f)`, the average
    /// [`apply`](Rope::apply) (attention factor included).
    ///
    /// Per pair `A` is `[[C, -S], [S, C]]` with `(C, S)` the mean `(cos, sin)` of the angles
    /// `(first + f) f_k`, which the Dirichlet kernel gives in closed form:
    /// `sum_{f<n} e^{i(a + f)w} = e^{i(a + (n-1)/2)w} sin(n w / 2) / sin(w / 2)`, evaluated in
    /// f64 (cost independent of `count`). `A` shrinks the fast-rotating pairs, which average
    /// out over the range, and turns the slow ones to the middle of the range: it is how
    /// kvpress's Expected Attention moves window queries to the next `count` positions
    /// (`first = last_position + 1`) after [`invert`](Rope::invert) took them back to position
    /// 0. Positions past `u32::MAX` are fine: they are only numbers in the formula.
    ///
    /// # Errors
    /// [`Error::NoPositions`] if `count == 0`; [`Error::Len`] if `rows.len()` is not a multiple
    /// of `head_dim`.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{Rope, RopeConfig};
    /// let rope = Rope::new(RopeConfig::new(4, 10_000.0))?;
    /// // Pair (0, 2) turns by 1 rad per position: the mean of R(10) and R(11) is R(10.5)
    /// // shrunk by cos(0.5).
    /// let mut q = vec![1.0f32, 0.0, 0.0, 0.0];
    /// rope.apply_mean(&mut q, 10, 2)?;
    /// let (s, c) = 10.5f64.sin_cos();
    /// assert!((f64::from(q[0]) - c * 0.5f64.cos()).abs() < 1e-6);
    /// assert!((f64::from(q[2]) - s * 0.5f64.cos()).abs() < 1e-6);
    /// # Ok::<(), nq_rope::Error>(())
    /// ```
    pub fn apply_mean(&self, rows: &mut [f32], first: u32, count: u32) -> Result<()> {
        const OP: &str = "Rope::apply_mean";
        if count == 0 {
            return Err(Error::NoPositions { op: OP });
        }
        let head_dim = self.cfg.head_dim;
        self.check_len(OP, rows.len(), rows.len() / head_dim)?;
        let n = f64::from(count);
        let mid = f64::from(first) + (n - 1.0) / 2.0;
        let (cos, sin): (Vec<f32>, Vec<f32>) = self
            .inv_freq
            .iter()
            .map(|&w| {
                let half = (w / 2.0).sin();
                // sin(n w / 2) / (n sin(w / 2)) -> 1 as w -> 0 (f64 sin is exact-relative there).
                let shrink = if half == 0.0 { 1.0 } else { (n * w / 2.0).sin() / (n * half) };
                let (s, c) = (mid * w).sin_cos();
                ((c * shrink) as f32, (s * shrink) as f32)
            })
            .unzip();
        for row in rows.chunks_exact_mut(head_dim) {
            self.rotate(Dir::Apply, row, &cos, &sin);
        }
        Ok(())
    }

    /// Precomputes cosines and sines for `positions` (the expensive part of a rotation:
    /// `rotary_dim / 2` f64 `sin_cos` per position), to reuse across heads and layers that
    /// share this rope.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{Rope, RopeConfig};
    /// let rope = Rope::new(RopeConfig::new(8, 10_000.0))?;
    /// let positions = [3, 9];
    /// let table = rope.table(&positions);
    /// // Two heads of a [heads, tokens, head_dim] buffer share the table.
    /// let mut a = vec![0.5f32; 2 * 2 * 8];
    /// let mut b = a.clone();
    /// rope.apply_table(&mut a, &table)?;
    /// for head in b.chunks_mut(2 * 8) {
    ///     rope.apply(head, &positions)?;
    /// }
    /// assert_eq!(a, b);
    /// # Ok::<(), nq_rope::Error>(())
    /// ```
    #[must_use]
    pub fn table(&self, positions: &[u32]) -> RopeTable {
        let pairs = self.inv_freq.len();
        let mut cos = vec![0.0; positions.len() * pairs];
        let mut sin = vec![0.0; positions.len() * pairs];
        for ((c, s), &p) in
            cos.chunks_exact_mut(pairs).zip(sin.chunks_exact_mut(pairs)).zip(positions)
        {
            self.cos_sin(p, c, s);
        }
        RopeTable { pairs, cos, sin }
    }

    /// Rotates rows with a precomputed table: row `r` uses entry `r % table.len()`, so one
    /// table of `T` positions serves a `[heads, T, head_dim]` buffer.
    ///
    /// # Errors
    /// [`Error::Table`] if the table was built for another `rotary_dim`, or `rows.len()` is not
    /// a multiple of `table.len() * head_dim` (an empty table only fits an empty buffer).
    pub fn apply_table(&self, rows: &mut [f32], table: &RopeTable) -> Result<()> {
        self.check_table("Rope::apply_table", rows.len(), table)?;
        self.run_table(Dir::Apply, rows, table);
        Ok(())
    }

    /// [`invert`](Rope::invert) with a precomputed table, laid out as in
    /// [`apply_table`](Rope::apply_table).
    ///
    /// # Errors
    /// As [`apply_table`](Rope::apply_table).
    pub fn invert_table(&self, rows: &mut [f32], table: &RopeTable) -> Result<()> {
        self.check_table("Rope::invert_table", rows.len(), table)?;
        self.run_table(Dir::Invert, rows, table);
        Ok(())
    }

    fn check_len(&self, op: &'static str, got: usize, positions: usize) -> Result<()> {
        let head_dim = self.cfg.head_dim;
        if positions.checked_mul(head_dim) == Some(got) {
            Ok(())
        } else {
            Err(Error::Len { op, got, positions, head_dim })
        }
    }

    fn check_row(&self, op: &'static str, got: usize) -> Result<()> {
        let head_dim = self.cfg.head_dim;
        if got == head_dim { Ok(()) } else { Err(Error::RowLen { op, got, head_dim }) }
    }

    /// Number of rows for contiguous positions from `start`, checked against `u32` overflow.
    fn contiguous(&self, op: &'static str, got: usize, start: u32) -> Result<u32> {
        let count = got / self.cfg.head_dim;
        self.check_len(op, got, count)?;
        // Last position is start + count - 1.
        match u32::try_from(count) {
            Ok(n) if n == 0 || start.checked_add(n - 1).is_some() => Ok(n),
            _ => Err(Error::PositionOverflow { op, start, count }),
        }
    }

    fn check_table(&self, op: &'static str, got: usize, table: &RopeTable) -> Result<()> {
        let head_dim = self.cfg.head_dim;
        let pairs = self.inv_freq.len();
        let fits = match table.len().checked_mul(head_dim) {
            _ if table.pairs != pairs => false,
            Some(0) => got == 0,
            Some(block) => got.is_multiple_of(block),
            None => false,
        };
        if fits {
            Ok(())
        } else {
            let (entries, table_pairs) = (table.len(), table.pairs);
            Err(Error::Table { op, entries, table_pairs, pairs, head_dim, got })
        }
    }

    /// `cos`, `sin` of `pos * f_k` for every pair, f64 then rounded to f32.
    fn cos_sin(&self, pos: u32, cos: &mut [f32], sin: &mut [f32]) {
        let p = f64::from(pos);
        let pairs = cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq);
        if p * self.max_inv_freq <= trig::LIMIT {
            for ((c, s), &f) in pairs {
                let (sn, cs) = trig::sin_cos(p * f);
                *c = cs as f32;
                *s = sn as f32;
            }
        } else {
            for ((c, s), &f) in pairs {
                let (sn, cs) = (p * f).sin_cos();
                *c = cs as f32;
                *s = sn as f32;
            }
        }
    }

    fn run(&self, dir: Dir, rows: &mut [f32], positions: impl Iterator<Item = u32>) {
        let pairs = self.inv_freq.len();
        let (mut cos, mut sin) = (vec![0.0f32; pairs], vec![0.0f32; pairs]);
        for (row, p) in rows.chunks_exact_mut(self.cfg.head_dim).zip(positions) {
            self.cos_sin(p, &mut cos, &mut sin);
            self.rotate(dir, row, &cos, &sin);
        }
    }

    fn run_table(&self, dir: Dir, rows: &mut [f32], table: &RopeTable) {
        let pairs = table.pairs;
        let entries = table.cos.chunks_exact(pairs).zip(table.sin.chunks_exact(pairs)).cycle();
        for (row, (cos, sin)) in rows.chunks_exact_mut(self.cfg.head_dim).zip(entries) {
            self.rotate(dir, row, cos, sin);
        }
    }

    /// Rotates the pairs of one row by `(cos, sin)`, then applies the attention factor.
    fn rotate(&self, dir: Dir, row: &mut [f32], cos: &[f32], sin: &[f32]) {
        let rot = &mut row[..self.cfg.rotary_dim];
        match (self.cfg.layout, dir) {
            (RopeLayout::SplitHalf, Dir::Apply) => split_half::<false>(rot, cos, sin),
            (RopeLayout::SplitHalf, Dir::Invert) => split_half::<true>(rot, cos, sin),
            (RopeLayout::Interleaved, Dir::Apply) => interleaved::<false>(rot, cos, sin),
            (RopeLayout::Interleaved, Dir::Invert) => interleaved::<true>(rot, cos, sin),
        }
        if let Some((up, down)) = self.scale {
            let m = if dir == Dir::Apply { up } else { down };
            rot.iter_mut().for_each(|v| *v *= m);
        }
    }
}

/// Pairs `(i, i + h)`: `a' = a c - b s`, `b' = b c + a s` (`s` negated when inverting).
fn split_half<const INV: bool>(rot: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (lo, hi) = rot.split_at_mut(rot.len() / 2);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let s = if INV { -s } else { s };
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = y * c + x * s;
    }
}

/// Pairs `(2i, 2i + 1)`, same arithmetic as [`split_half`].
fn interleaved<const INV: bool>(rot: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in rot.chunks_exact_mut(2).zip(cos).zip(sin) {
        let s = if INV { -s } else { s };
        let (x, y) = (pair[0], pair[1]);
        pair[0] = x * c - y * s;
        pair[1] = y * c + x * s;
    }
}
