//! The positions of one head's compressed tokens, held as a bitmap.
//!
//! Each kv head keeps its own subset of the tokens, so the cache must know, per head, which
//! positions its codes belong to (for sliding windows, RoPE-free keys, archives). As `u32`
//! that was 4 bytes per kept token and head, 6-7% of a preset's resident bytes; a bitmap over
//! the positions seen costs one bit per token whatever is kept, `ceil((last + 1) / 64) * 8`
//! bytes: cheaper than `u32` while more than one token in 32 is kept (every preset keeps at
//! least a fifth of the prompt and every generated token).

use crate::error::{Error, Result};

/// A strictly ascending set of token positions: a bitmap over the span from the first
/// position's 64-token word to the last one, or a plain `u32` list while that is smaller
/// (positions far apart: a bitmap costs its span, a list its length).
///
/// # Examples
/// ```
/// use nq_core::Positions;
/// let mut p = Positions::from_ascending(&[0, 3, 64, 200])?;
/// p.push(201)?;
/// assert_eq!(p.to_vec(), [0, 3, 64, 200, 201]);
/// assert_eq!((p.len(), p.last(), p.count_below(64)), (5, Some(201), 2));
/// assert!(p.contains(64) && !p.contains(65));
/// assert_eq!(p.bytes(), 32 + 4); // 4 words cover positions 0..256, and their first word
/// assert!(p.push(201).is_err()); // not past the last one
/// # Ok::<(), nq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Positions {
    repr: Repr,
    len: usize,
}

#[derive(Clone, Debug)]
enum Repr {
    /// Bit `i` of `words[j]` is position `(first_word + j) * 64 + i`; the last word is non-zero
    /// whenever there are words.
    Bits { first_word: u32, words: Vec<u64> },
    /// The positions themselves.
    List(Vec<u32>),
}

impl Default for Positions {
    fn default() -> Self {
        Positions { repr: Repr::Bits { first_word: 0, words: Vec::new() }, len: 0 }
    }
}

/// Equal when they hold the same positions, whatever their form.
impl PartialEq for Positions {
    fn eq(&self, o: &Self) -> bool {
        self.len == o.len && self.iter().eq(o.iter())
    }
}

impl Eq for Positions {}

impl Positions {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `p`, which must be strictly ascending.
    ///
    /// # Errors
    /// [`Error::Position`] naming the first position that does not follow its predecessor.
    pub fn from_ascending(p: &[u32]) -> Result<Self> {
        let mut set = Positions::new();
        p.iter().try_for_each(|&x| set.push(x))?;
        set.shrink_to_fit();
        Ok(set)
    }

    /// Add `p`, past every position held.
    ///
    /// # Errors
    /// [`Error::Position`] when `p` is not greater than [`last`](Self::last).
    pub fn push(&mut self, p: u32) -> Result<()> {
        if let Some(last) = self.last()
            && p <= last
        {
            return Err(Error::Position { op: "Positions::push", got: p, last });
        }
        let word = p / 64;
        match &mut self.repr {
            Repr::Bits { words, .. } if words.is_empty() => {
                self.repr = Repr::Bits { first_word: word, words: vec![1 << (p % 64)] };
            }
            Repr::Bits { first_word, words } => {
                let at = (word - *first_word) as usize;
                // A list once the bitmap costs a cache line more (positions far apart).
                if bitmap_bytes(at + 1) > list_bytes(self.len + 1) + 64 {
                    let mut list: Vec<u32> = self.iter().collect();
                    list.push(p);
                    self.repr = Repr::List(list);
                } else {
                    if at >= words.len() {
                        words.resize(at + 1, 0);
                    }
                    words[at] |= 1 << (p % 64);
                }
            }
            Repr::List(list) => {
                list.push(p);
                // Back to a bitmap once it costs half the list (positions close again).
                let span = (word - list[0] / 64) as usize + 1;
                if 2 * bitmap_bytes(span) <= list_bytes(list.len()) {
                    let first_word = list[0] / 64;
                    let mut words = vec![0u64; span];
                    for &x in list.iter() {
                        words[(x / 64 - first_word) as usize] |= 1 << (x % 64);
                    }
                    self.repr = Repr::Bits { first_word, words };
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The greatest position held.
    pub fn last(&self) -> Option<u32> {
        match &self.repr {
            Repr::Bits { first_word, words } => {
                let w = words.last()?;
                Some((first_word + words.len() as u32 - 1) * 64 + (63 - w.leading_zeros()))
            }
            Repr::List(list) => list.last().copied(),
        }
    }

    /// How many positions are below `p` (`p` may be `u32::MAX + 1`): the index of the first
    /// position `>= p`, as `partition_point` gives it on a sorted slice.
    pub fn count_below(&self, p: u64) -> usize {
        match &self.repr {
            Repr::Bits { first_word, words } => {
                let Some(word) = (p / 64).checked_sub(u64::from(*first_word)) else {
                    return 0;
                };
                let word = usize::try_from(word).unwrap_or(usize::MAX);
                let whole: usize = words.iter().take(word).map(|w| w.count_ones() as usize).sum();
                let below = |w: &u64| (w & ((1u64 << (p % 64)) - 1)).count_ones() as usize;
                whole + words.get(word).map_or(0, below)
            }
            Repr::List(list) => list.partition_point(|&x| u64::from(x) < p),
        }
    }

    /// Whether `p` is held.
    pub fn contains(&self, p: u32) -> bool {
        match &self.repr {
            Repr::Bits { first_word, words } => (p / 64)
                .checked_sub(*first_word)
                .and_then(|w| words.get(w as usize))
                .is_some_and(|w| w >> (p % 64) & 1 == 1),
            Repr::List(list) => list.binary_search(&p).is_ok(),
        }
    }

    /// The positions, ascending.
    pub fn iter(&self) -> Iter<'_> {
        let (words, list, base) = match &self.repr {
            Repr::Bits { first_word, words } => (&words[..], &[][..], *first_word),
            Repr::List(list) => (&[][..], &list[..], 0),
        };
        Iter { words, list, next_word: 0, current: 0, base, left: self.len }
    }

    /// The positions as a vector, ascending.
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }

    /// Bytes held: the bitmap and its first word's index, or the list.
    pub fn bytes(&self) -> usize {
        match &self.repr {
            Repr::Bits { words, .. } if words.is_empty() => 0,
            Repr::Bits { words, .. } => bitmap_bytes(words.len()),
            Repr::List(list) => list_bytes(list.len()),
        }
    }

    /// Release spare capacity.
    pub fn shrink_to_fit(&mut self) {
        match &mut self.repr {
            Repr::Bits { words, .. } => words.shrink_to_fit(),
            Repr::List(list) => list.shrink_to_fit(),
        }
    }
}

fn bitmap_bytes(words: usize) -> usize {
    words * 8 + 4
}

fn list_bytes(len: usize) -> usize {
    len * 4
}

/// The positions of a [`Positions`], ascending.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    words: &'a [u64],
    list: &'a [u32],
    next_word: usize,
    /// Bits of the current word not yet returned.
    current: u64,
    /// First position of the current word (of the first word before any).
    base: u32,
    left: usize,
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        if let Some((&x, rest)) = self.list.split_first() {
            self.list = rest;
            self.left -= 1;
            return Some(x);
        }
        while self.current == 0 {
            let &w = self.words.get(self.next_word)?;
            self.current = w;
            self.next_word += 1;
        }
        let bit = self.current.trailing_zeros();
        self.current &= self.current - 1;
        self.left -= 1;
        Some((self.base + self.next_word as u32 - 1) * 64 + bit)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Positions {
    type Item = u32;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strictly ascending positions: sorted, deduplicated draws.
    fn ascending() -> impl Strategy<Value = Vec<u32>> {
        prop::collection::btree_set(
            prop_oneof![0u32..300, 0u32..5000, Just(u32::MAX), Just(u32::MAX - 64)],
            0..200,
        )
        .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// Every query against the sorted slice it was built from (the naive reference).
        #[test]
        fn matches_the_sorted_slice(p in ascending(), probes in prop::collection::vec(any::<u32>(), 8)) {
            let set = Positions::from_ascending(&p).unwrap();
            prop_assert_eq!(set.to_vec(), p.clone());
            prop_assert_eq!(set.len(), p.len());
            prop_assert_eq!(set.iter().len(), p.len());
            prop_assert_eq!(set.last(), p.last().copied());
            let small = probes.iter().map(|&x| x % 6000);
            for x in probes.iter().copied().chain(small).chain(p.iter().copied()) {
                prop_assert_eq!(set.count_below(u64::from(x)), p.partition_point(|&y| y < x));
                prop_assert_eq!(set.count_below(u64::from(x) + 1), p.partition_point(|&y| y <= x));
                prop_assert_eq!(set.contains(x), p.binary_search(&x).is_ok());
            }
            prop_assert_eq!(set.count_below(1 << 32), p.len());
            prop_assert!(set.bytes() <= p.len() * 4 + 64, "{} bytes", set.bytes());
        }

        /// Built by pushes or at once: the same set.
        #[test]
        fn pushes_equal_one_build(p in ascending()) {
            let mut set = Positions::new();
            p.iter().for_each(|&x| set.push(x).unwrap());
            prop_assert_eq!(set, Positions::from_ascending(&p).unwrap());
        }
    }

    #[test]
    fn dense_positions_cost_a_bit_each() {
        let p: Vec<u32> = (4..2175).filter(|x| x % 3 != 0).collect();
        let set = Positions::from_ascending(&p).unwrap();
        assert_eq!(set.bytes(), 2175usize.div_ceil(64) * 8 + 4);
        // Far apart, a list; dense enough again, a bitmap.
        let mut far = Positions::from_ascending(&[0, 1 << 20, 1 << 30]).unwrap();
        assert_eq!(far.bytes(), 12);
        let tail = (1 << 16) + 1..(1 << 16) + 20_000;
        let mut near = Positions::from_ascending(&[0, 1 << 16]).unwrap();
        assert_eq!(near.bytes(), 8);
        tail.clone().for_each(|x| near.push(x).unwrap());
        assert_eq!(near.bytes(), ((1 << 16) + 20_000 - 1) / 64 * 8 + 8 + 4);
        tail.for_each(|x| far.push(x + (1 << 30)).unwrap());
        assert_eq!((far.len(), far.bytes()), (20_002, 20_002 * 4));
    }

    #[test]
    fn rejects_positions_that_do_not_ascend() {
        for bad in [&[3u32, 3][..], &[5, 2], &[0, 70, 64]] {
            let err = Positions::from_ascending(bad).unwrap_err();
            let (got, last) = (bad[bad.len() - 1], bad[bad.len() - 2]);
            assert!(
                matches!(err, Error::Position { got: g, last: l, .. } if g == got && l == last),
                "{bad:?}: {err}"
            );
        }
    }
}
