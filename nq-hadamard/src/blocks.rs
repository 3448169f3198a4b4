//! Helpers for lengths that are not a power of two.

/// Splits `dim` into the power-of-two block sizes of a block-diagonal Hadamard transform,
/// largest first (the binary digits of `dim`).
///
/// A head dimension of 96 becomes `[64, 32]`: transform `x[..64]` and `x[64..]` separately
/// (e.g. with [`fwht`](crate::fwht) on each sub-slice, or two [`RandomizedHadamard`]s). The
/// block-diagonal transform is still orthogonal, so dot products are preserved, but energy
/// is only spread within each block. `dim == 0` gives an empty list.
///
/// # Examples
/// ```
/// assert_eq!(nq_hadamard::blocks_for(96), vec![64, 32]);
/// assert_eq!(nq_hadamard::blocks_for(80), vec![64, 16]);
/// assert_eq!(nq_hadamard::blocks_for(128), vec![128]);
/// ```
///
/// [`RandomizedHadamard`]: crate::RandomizedHadamard
#[must_use]
pub fn blocks_for(dim: usize) -> Vec<usize> {
    (0..usize::BITS).rev().map(|b| 1usize << b).filter(|&p| dim & p != 0).collect()
}

/// The zero-padded length for a full-width transform: the next power of two (`96 -> 128`),
/// or `None` if it overflows `usize`.
///
/// Zero-padding keeps dot products (`(Hx') . (Hy') = x . y` for the padded `x', y'`) and
/// spreads energy over all `padded_len` coordinates, at the cost of storing the extra ones.
///
/// # Examples
/// ```
/// assert_eq!(nq_hadamard::padded_len(96), Some(128));
/// assert_eq!(nq_hadamard::padded_len(128), Some(128));
/// ```
#[must_use]
pub fn padded_len(dim: usize) -> Option<usize> {
    dim.checked_next_power_of_two()
}
