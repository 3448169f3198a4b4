//! Lane abstraction: the encoders are written once over `L: Lanes` and run on one block at a
//! time (`f32`, the portable path) or on 8 blocks at once, one block per SIMD lane (`simd`).
//!
//! Every operation is a single IEEE operation with the same semantics in every
//! implementation (no fused multiply-add; `max`/`min` follow x86's `maxps`/`minps`:
//! `a > b ? a : b`), so all implementations make bit-identical decisions.

use std::ops::{Add, Mul, Sub};

/// A vector of `N` independent `f32` lanes with a lane mask type.
pub(crate) trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self>
{
    /// Lane mask (one boolean per lane).
    type M: Copy;
    /// Number of lanes.
    const N: usize;
    /// All lanes equal to `v`.
    fn splat(v: f32) -> Self;
    /// Lane-wise `self > o ? self : o`.
    fn max(self, o: Self) -> Self;
    /// Lane-wise `self < o ? self : o`.
    fn min(self, o: Self) -> Self;
    /// Lane-wise absolute value (clears the sign bit).
    fn abs(self) -> Self;
    /// Lane-wise rounding to the nearest integer, ties to even.
    fn round(self) -> Self;
    /// Lane-wise `self < o`.
    fn lt(self, o: Self) -> Self::M;
    /// Lane-wise `self == o`.
    fn eq(self, o: Self) -> Self::M;
    /// Lane-wise `m ? a : b`.
    fn select(m: Self::M, a: Self, b: Self) -> Self;
    /// Lane-wise `m ? a : +0.0`.
    fn mask_val(m: Self::M, a: Self) -> Self;
    /// Lane-wise negation where `m` is set.
    fn neg_if(self, m: Self::M) -> Self;
    /// Mask with every lane false.
    fn none() -> Self::M;
    /// Mask and.
    fn and(a: Self::M, b: Self::M) -> Self::M;
    /// Mask exclusive or.
    fn xor(a: Self::M, b: Self::M) -> Self::M;
    /// Mask not.
    fn not(a: Self::M) -> Self::M;
    /// Lane-wise mask select.
    fn mselect(m: Self::M, a: Self::M, b: Self::M) -> Self::M;
    /// Whether every lane of `m` is set.
    fn all(m: Self::M) -> bool;
    /// Lanes where an odd number of the 8 values have their sign bit set (for values other
    /// than -0 and NaN: are negative).
    fn odd_signs(x: &[Self; 8]) -> Self::M;
    /// Lanes `0..N` written to `out[..N]`.
    fn store(self, out: &mut [f32]);
    /// The E8P indices of lanes `0..N` holding indices packed by `e8p::pack`,
    /// written to `out[..N]` (see `e8p::index_of_packed`).
    fn e8p_indices(self, out: &mut [u32]);
    /// Lane-wise table look-up: lane `l` becomes `table[self_l]`, where every lane holds an
    /// exact integer in `0..16`.
    fn lookup(self, table: &[f32; 16]) -> Self;
    /// Lanes `0..N` read from `x[..N]`.
    fn load(x: &[f32]) -> Self;
    /// `N` blocks of 8 values (`x[8l..8l + 8]` for lane `l`), transposed: element `i` of
    /// the result holds coordinate `i` of every lane's block.
    fn load_blocks(x: &[f32]) -> [Self; 8];
}

impl Lanes for f32 {
    type M = bool;
    const N: usize = 1;

    #[inline(always)]
    fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        if self > o { self } else { o }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        if self < o { self } else { o }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn round(self) -> Self {
        self.round_ties_even()
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self < o
    }
    #[inline(always)]
    fn eq(self, o: Self) -> bool {
        self == o
    }
    #[inline(always)]
    fn select(m: bool, a: Self, b: Self) -> Self {
        if m { a } else { b }
    }
    #[inline(always)]
    fn mask_val(m: bool, a: Self) -> Self {
        if m { a } else { 0.0 }
    }
    #[inline(always)]
    fn neg_if(self, m: bool) -> Self {
        if m { -self } else { self }
    }
    #[inline(always)]
    fn none() -> bool {
        false
    }
    #[inline(always)]
    fn and(a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn xor(a: bool, b: bool) -> bool {
        a ^ b
    }
    #[inline(always)]
    fn not(a: bool) -> bool {
        !a
    }
    #[inline(always)]
    fn mselect(m: bool, a: bool, b: bool) -> bool {
        if m { a } else { b }
    }
    #[inline(always)]
    fn all(m: bool) -> bool {
        m
    }
    #[inline(always)]
    fn odd_signs(x: &[Self; 8]) -> bool {
        x.iter().fold(false, |odd, v| odd ^ v.is_sign_negative())
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        out[0] = self;
    }
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn e8p_indices(self, out: &mut [u32]) {
        out[0] = crate::e8p::index_of_packed(self as u32);
    }
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn lookup(self, table: &[f32; 16]) -> Self {
        table[self as usize & 15]
    }
    #[inline(always)]
    fn load(x: &[f32]) -> Self {
        x[0]
    }
    #[inline(always)]
    fn load_blocks(x: &[f32]) -> [Self; 8] {
        let mut out = [0.0f32; 8];
        out.copy_from_slice(&x[..8]);
        out
    }
}

/// Walks consecutive blocks of rows (`blocks_per_row` blocks each, starting at block
/// `first`) and loads them `L::N` at a time, each multiplied by its row's factor.
pub(crate) struct ScaledBlocks<'a> {
    inv: &'a [f32],
    blocks_per_row: usize,
    row: usize,
    col: usize,
}

impl<'a> ScaledBlocks<'a> {
    /// Starts at block `first`; `inv[row]` is the factor of row `row`.
    #[inline(always)]
    pub(crate) fn new(inv: &'a [f32], first: usize, blocks_per_row: usize) -> Self {
        ScaledBlocks {
            inv,
            blocks_per_row,
            row: first / blocks_per_row,
            col: first % blocks_per_row,
        }
    }

    /// The next `L::N` blocks (`x` holds exactly their `8 L::N` values), transposed (one
    /// block per lane) and scaled; rows advance without divisions.
    #[inline(always)]
    pub(crate) fn next<L: Lanes>(&mut self, x: &[f32]) -> [L; 8] {
        let mut scale = [0.0f32; crate::fixed::MAX_LANES];
        // One run of lanes per row (one or two runs when a row holds 8 blocks).
        let mut lane = 0;
        while lane < L::N {
            let run = (self.blocks_per_row - self.col).min(L::N - lane);
            scale[lane..lane + run].fill(self.inv[self.row]);
            lane += run;
            self.col += run;
            if self.col == self.blocks_per_row {
                self.col = 0;
                self.row += 1;
            }
        }
        let s = L::load(&scale);
        let mut v = L::load_blocks(x);
        for vi in &mut v {
            *vi = *vi * s;
        }
        v
    }
}
