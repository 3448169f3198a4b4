//! Static, 4-way interleaved rANS over byte symbols (Duda 2013; layout after ryg_rans).
//!
//! - Probabilities are quantized to [`PROB_BITS`] = 12 bits: every table's frequencies sum to
//!   4096 and every symbol that occurs gets at least 1.
//! - The state is 32 bits, kept in `[2^16, 2^32)`, renormalized 16 bits at a time, so a
//!   decode step reads at most one 16-bit word.
//! - Four states code symbols `k` with `k mod 4 == lane` into one shared word stream. The
//!   encoder runs backwards over the symbols; the decoder reads forwards.
//! - The decoder ends every stream by checking that all words were consumed and every state
//!   is back at its initial value `2^16`, which catches nearly every corruption the
//!   container's checksums did not.

use crate::bytes::{Cursor, put_varint};
use crate::{Error, Result};

/// Bits of probability precision.
pub(crate) const PROB_BITS: u32 = 12;
/// Sum of every normalized frequency table.
pub(crate) const PROB_SCALE: u32 = 1 << PROB_BITS;
const PROB_MASK: u32 = PROB_SCALE - 1;
/// Largest frequency of one symbol: a table always has at least two symbols, so its
/// frequencies fit 12 bits and every coded symbol costs at least `log2(4096/4095)` bits,
/// which bounds the symbol count of a stream by its size.
pub(crate) const MAX_FREQ: u32 = PROB_SCALE - 1;

/// Lower bound of the coder state (and its initial value).
pub(crate) const RANS_L: u32 = 1 << 16;
/// Number of interleaved states.
pub(crate) const LANES: usize = 4;

/// Symbol counts of one stream or context, indexed by symbol byte.
pub(crate) type Hist = [u64; 256];

/// A normalized frequency table: sums to [`PROB_SCALE`], nonzero exactly where the histogram
/// it came from is nonzero (or only at symbol 0 for an empty histogram).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Freqs(pub(crate) [u32; 256]);

/// `log2(f)` for `f` in `0..=PROB_SCALE` (entry 0 unused).
fn log2_table() -> &'static [f64; PROB_SCALE as usize + 1] {
    static T: std::sync::OnceLock<Box<[f64; PROB_SCALE as usize + 1]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([0.0; PROB_SCALE as usize + 1]);
        for (f, v) in t.iter_mut().enumerate().skip(1) {
            *v = (f as f64).log2();
        }
        t
    })
}

impl Freqs {
    /// Quantizes `hist` to 12-bit frequencies (each at most [`MAX_FREQ`]) minimizing the coded size `sum c_s * -log2 f_s`:
    /// proportional rounding, then a greedy fix of the sum by the cheapest unit steps (the cost
    /// is convex in each `f_s`, so unit greedy steps reach the optimum of the rounding).
    pub(crate) fn normalize(hist: &Hist) -> Self {
        let total: u64 = hist.iter().sum();
        let mut f = [0u32; 256];
        let mut nonzero = hist.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(s, _)| s);
        if let (first, None) = (nonzero.next(), nonzero.next()) {
            // Zero or one symbol: give it 4095 and a never-coded neighbour 1.
            let s = first.unwrap_or(0);
            f[s] = MAX_FREQ;
            f[(s + 1) % 256] = 1;
            return Self(f);
        }
        let scale = f64::from(PROB_SCALE) / total as f64;
        let mut sum = 0u32;
        for (fs, &c) in f.iter_mut().zip(hist) {
            if c > 0 {
                // Clamp keeps the sum bounded by 256 * 4096 even before the fix below.
                *fs = ((c as f64 * scale).round() as u32).clamp(1, PROB_SCALE);
                sum += *fs;
            }
        }
        let lg = log2_table();
        while sum > PROB_SCALE {
            // Remove one unit where it costs least: c * (log2 f - log2 (f-1)).
            let mut best = usize::MAX;
            let mut best_cost = f64::INFINITY;
            for s in 0..256 {
                if f[s] > 1 {
                    let cost = hist[s] as f64 * (lg[f[s] as usize] - lg[f[s] as usize - 1]);
                    if cost < best_cost {
                        best_cost = cost;
                        best = s;
                    }
                }
            }
            // Some symbol has f > 1 because sum > 4096 >= 256 symbols of 1.
            f[best] -= 1;
            sum -= 1;
        }
        while sum < PROB_SCALE {
            // Add one unit where it gains most: c * (log2 (f+1) - log2 f).
            let mut best = 0usize;
            let mut best_gain = -1.0;
            for s in 0..256 {
                if hist[s] > 0 {
                    let gain = hist[s] as f64 * (lg[f[s] as usize + 1] - lg[f[s] as usize]);
                    if gain > best_gain {
                        best_gain = gain;
                        best = s;
                    }
                }
            }
            f[best] += 1;
            sum += 1;
        }
        Self(f)
    }

    /// Exact ideal code length in bits of `hist` under these frequencies (the rANS output is
    /// this plus at most the final-state flush, 16 bytes).
    pub(crate) fn cost_bits(&self, hist: &Hist) -> f64 {
        let lg = log2_table();
        let mut bits = 0.0;
        for (&c, &f) in hist.iter().zip(&self.0) {
            if c > 0 {
                bits += c as f64 * (f64::from(PROB_BITS) - lg[f as usize]);
            }
        }
        bits
    }

    /// Serializes the table: for each symbol 0..=255 its frequency as a varint; a zero is
    /// followed by one byte counting the further zeros that follow it (a run of up to 256).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let mut s = 0usize;
        while s < 256 {
            let f = self.0[s];
            put_varint(out, u64::from(f));
            s += 1;
            if f == 0 {
                let mut run = 0usize;
                while s < 256 && self.0[s] == 0 && run < 255 {
                    run += 1;
                    s += 1;
                }
                out.push(run as u8);
            }
        }
    }

    /// Size in bytes of [`Freqs::write`]'s output.
    pub(crate) fn written_len(&self) -> usize {
        let mut v = Vec::with_capacity(64);
        self.write(&mut v);
        v.len()
    }

    /// Parses and validates a table written by [`Freqs::write`].
    pub(crate) fn read(cur: &mut Cursor<'_>, op: &'static str) -> Result<Self> {
        let mut f = [0u32; 256];
        let mut s = 0usize;
        let mut sum = 0u64;
        while s < 256 {
            let v = cur.varint_max(u64::from(MAX_FREQ), op)?;
            f[s] = v as u32;
            sum += v;
            s += 1;
            if v == 0 {
                let run = usize::from(cur.u8(op)?);
                if s + run > 256 {
                    return Err(Error::Corrupt {
                        op,
                        reason: "frequency table runs past symbol 255",
                        value: (s + run) as u64,
                    });
                }
                s += run;
            }
        }
        if sum != u64::from(PROB_SCALE) {
            return Err(Error::Corrupt {
                op,
                reason: "frequency table does not sum to 4096",
                value: sum,
            });
        }
        Ok(Self(f))
    }

    /// Largest frequency (the most probable symbol).
    pub(crate) fn max(&self) -> u32 {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

/// Encoder view of one symbol.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EncSym {
    start: u32,
    freq: u32,
    /// States at or above this must be renormalized before coding the symbol.
    x_max: u64,
}

/// Encoder table: one entry per symbol byte.
#[derive(Clone, Debug)]
pub(crate) struct EncTable(pub(crate) [EncSym; 256]);

impl EncTable {
    pub(crate) fn new(f: &Freqs) -> Self {
        let mut t = [EncSym::default(); 256];
        let mut start = 0u32;
        for (e, &freq) in t.iter_mut().zip(&f.0) {
            *e = EncSym { start, freq, x_max: u64::from(freq) << (32 - PROB_BITS) };
            start += freq;
        }
        Self(t)
    }
}

/// Decoder table: for each of the 4096 slots, `sym | (slot - start) << 8 | freq << 20`.
#[derive(Clone, Debug)]
pub(crate) struct DecTable(pub(crate) Box<[u32; PROB_SCALE as usize]>);

impl DecTable {
    pub(crate) fn new(f: &Freqs) -> Self {
        let mut t: Box<[u32; PROB_SCALE as usize]> = Box::new([0u32; PROB_SCALE as usize]);
        fill_dec_table(f, &mut t[..]);
        Self(t)
    }
}

/// Writes the decoder entries of `f` into `t` (4096 entries).
pub(crate) fn fill_dec_table(f: &Freqs, t: &mut [u32]) {
    let mut slots = t.iter_mut();
    for (sym, &freq) in f.0.iter().enumerate() {
        for (off, e) in (0..freq).zip(&mut slots) {
            *e = sym as u32 | (off << 8) | (freq << 20);
        }
    }
}

/// Interleaved encoder. Symbols must be fed in reverse order.
#[derive(Debug)]
pub(crate) struct Encoder {
    x: [u32; LANES],
    words: Vec<u16>,
}

impl Encoder {
    pub(crate) fn with_capacity(words: usize) -> Self {
        Self { x: [RANS_L; LANES], words: Vec::with_capacity(words) }
    }

    /// Codes one symbol on `lane`. The symbol must have nonzero frequency.
    #[inline(always)]
    pub(crate) fn put(&mut self, lane: usize, s: EncSym) {
        debug_assert!(s.freq > 0, "coding a symbol of frequency 0");
        let mut x = self.x[lane];
        if u64::from(x) >= s.x_max {
            self.words.push(x as u16);
            x >>= 16;
        }
        self.x[lane] = ((x / s.freq) << PROB_BITS) + (x % s.freq) + s.start;
    }

    /// Writes the states (lane 0 first, u32 LE), the word count (varint) and the words in
    /// decoding order (u16 LE).
    pub(crate) fn finish(mut self, out: &mut Vec<u8>) {
        for x in self.x {
            out.extend_from_slice(&x.to_le_bytes());
        }
        put_varint(out, self.words.len() as u64);
        self.words.reverse();
        out.reserve(2 * self.words.len());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Interleaved decoder over an in-memory word stream.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) x: [u32; LANES],
    pub(crate) words: Vec<u16>,
    pub(crate) pos: usize,
}

impl Decoder {
    /// Reads the states and the word stream written by [`Encoder::finish`].
    pub(crate) fn read(cur: &mut Cursor<'_>, op: &'static str) -> Result<Self> {
        let mut x = [0u32; LANES];
        for xi in &mut x {
            *xi = cur.u32(op)?;
            if *xi < RANS_L {
                return Err(Error::Corrupt {
                    op,
                    reason: "rANS state below 2^16",
                    value: u64::from(*xi),
                });
            }
        }
        let n = cur.varint(op)?;
        let bytes = cur.take(n.saturating_mul(2), op)?;
        let words = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Ok(Self { x, words, pos: 0 })
    }

    /// Upper bound on how many symbols the stream can hold when no table gives a symbol more
    /// than `max_freq` (<= [`MAX_FREQ`]).
    ///
    /// Coding a symbol of frequency `f` multiplies the state by at least
    /// `(4096 / f) * (1 - (4096 - f) f / (4096 x))` with `x >= 2^16`, which is at least
    /// `(4096 / f)^(15/16)`; so `n` symbols need at least `(15/16) n log2(4096 / max_freq)`
    /// bits of the `16 * LANES` bits of final-state headroom plus `16 * words` bits present.
    /// The bound below uses 8/7 instead of 16/15 for margin.
    pub(crate) fn max_symbols(&self, max_freq: u32) -> u64 {
        let bits = 16.0 * LANES as f64 + 16.0 * self.words.len() as f64;
        let per = f64::from(PROB_BITS) - f64::from(max_freq.clamp(1, MAX_FREQ)).log2();
        (bits * 8.0 / 7.0 / per).ceil() as u64 + LANES as u64
    }

    /// Fails unless `n` symbols fit [`Decoder::max_symbols`].
    pub(crate) fn check_count(&self, n: u64, max_freq: u32, op: &'static str) -> Result<()> {
        if n > self.max_symbols(max_freq) {
            return Err(Error::Corrupt {
                op,
                reason: "symbol count exceeds what the coded bits can hold",
                value: n,
            });
        }
        Ok(())
    }

    /// Fails unless every word was consumed and every state is back at `2^16`.
    pub(crate) fn finish(&self, op: &'static str) -> Result<()> {
        if self.pos != self.words.len() {
            return Err(Error::Corrupt {
                op,
                reason: "rANS word stream not consumed exactly",
                value: self.pos as u64,
            });
        }
        for &x in &self.x {
            if x != RANS_L {
                return Err(Error::Corrupt {
                    op,
                    reason: "rANS final state is not 2^16",
                    value: u64::from(x),
                });
            }
        }
        Ok(())
    }
}

/// One decode step on state `x` with table `t`: returns the symbol byte.
#[inline(always)]
pub(crate) fn step(
    x: &mut u32,
    t: &[u32; PROB_SCALE as usize],
    words: &[u16],
    pos: &mut usize,
) -> u8 {
    apply(x, t[(*x & PROB_MASK) as usize], words, pos)
}

/// The state update of [`step`] for the table entry `e` of the state's slot. Reads past the
/// end of `words` yield zeros and still advance `pos`, so a truncated stream is reported by
/// [`Decoder::finish`] instead of panicking here (the count of steps is bounded by the
/// caller's checked symbol count).
#[inline(always)]
pub(crate) fn apply(x: &mut u32, e: u32, words: &[u16], pos: &mut usize) -> u8 {
    let nx = (e >> 20) * (*x >> PROB_BITS) + ((e >> 8) & PROB_MASK);
    let word = u32::from(words.get(*pos).copied().unwrap_or(0));
    let need = nx < RANS_L;
    *x = if need { (nx << 16) | word } else { nx };
    *pos += usize::from(need);
    e as u8
}

/// Histogram of a byte slice (four sub-histograms to avoid store-to-load stalls on runs).
pub(crate) fn histogram(data: &[u8]) -> Hist {
    let mut h = [[0u32; 256]; 4];
    let mut total = [0u64; 256];
    for big in data.chunks(1 << 30) {
        let mut chunks = big.chunks_exact(4);
        for c in &mut chunks {
            h[0][usize::from(c[0])] += 1;
            h[1][usize::from(c[1])] += 1;
            h[2][usize::from(c[2])] += 1;
            h[3][usize::from(c[3])] += 1;
        }
        for &b in chunks.remainder() {
            h[0][usize::from(b)] += 1;
        }
        for (s, t) in total.iter_mut().enumerate() {
            *t += u64::from(h[0][s]) + u64::from(h[1][s]) + u64::from(h[2][s]) + u64::from(h[3][s]);
        }
        h = [[0u32; 256]; 4];
    }
    total
}

/// Estimated size in bytes of [`encode_bytes`]' output for data with histogram `hist`.
pub(crate) fn estimate_bytes(hist: &Hist) -> (Freqs, u64) {
    let f = Freqs::normalize(hist);
    let bits = f.cost_bits(hist);
    let est = (bits / 8.0).ceil() as u64 + f.written_len() as u64 + 4 * LANES as u64 + 4;
    (f, est)
}

/// Codes `data` with the order-0 table `f` (which must cover every byte of `data`): the table,
/// then the coder (see [`Encoder::finish`]).
pub(crate) fn encode_bytes(data: &[u8], f: &Freqs, out: &mut Vec<u8>) {
    f.write(out);
    let t = EncTable::new(f);
    let mut enc = Encoder::with_capacity(data.len() / 4 + 16);
    let n = data.len();
    // Symbol k goes to lane k % 4; feed in reverse.
    for k in (0..n).rev() {
        enc.put(k % LANES, t.0[usize::from(data[k])]);
    }
    enc.finish(out);
}

/// Decodes `n` bytes coded by [`encode_bytes`].
///
/// `n` must already be checked against the caller's limits.
pub(crate) fn decode_bytes(cur: &mut Cursor<'_>, n: usize, op: &'static str) -> Result<Vec<u8>> {
    let f = Freqs::read(cur, op)?;
    let t = DecTable::new(&f);
    let mut d = Decoder::read(cur, op)?;
    d.check_count(n as u64, f.max(), op)?;
    let mut out = vec![0u8; n];
    let tb = &*t.0;
    let mut chunks = out.chunks_exact_mut(LANES);
    let [mut x0, mut x1, mut x2, mut x3] = d.x;
    let words = &d.words[..];
    let mut pos = 0usize;
    for c in &mut chunks {
        c[0] = step(&mut x0, tb, words, &mut pos);
        c[1] = step(&mut x1, tb, words, &mut pos);
        c[2] = step(&mut x2, tb, words, &mut pos);
        c[3] = step(&mut x3, tb, words, &mut pos);
    }
    let mut xs = [x0, x1, x2, x3];
    for (lane, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b = step(&mut xs[lane], tb, words, &mut pos);
    }
    d.x = xs;
    d.pos = pos;
    d.finish(op)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sums_and_keeps_every_symbol() {
        let mut h = [0u64; 256];
        for (s, c) in h.iter_mut().enumerate() {
            *c = (s as u64 * 7919) % 13; // many symbols, some zero
        }
        h[3] = 1_000_000;
        let f = Freqs::normalize(&h);
        assert_eq!(f.0.iter().sum::<u32>(), PROB_SCALE);
        for (s, (&fs, &hs)) in f.0.iter().zip(&h).enumerate() {
            assert_eq!(fs > 0, hs > 0, "symbol {s}");
        }
    }

    #[test]
    fn table_serialization_round_trips() {
        let mut h = [0u64; 256];
        h[0] = 5;
        h[255] = 9;
        h[128] = 1;
        let f = Freqs::normalize(&h);
        let mut out = Vec::new();
        f.write(&mut out);
        assert_eq!(out.len(), f.written_len());
        let mut c = Cursor::new(&out);
        assert_eq!(Freqs::read(&mut c, "t").unwrap(), f);
        assert_eq!(c.remaining(), 0);
    }

    /// The interleaved 32-bit coder against the textbook single-state 64-bit coder of
    /// `reference`, with the same frequencies: both decode, both are within their flush
    /// overhead of the exact model cost.
    #[test]
    fn matches_the_slow_reference_coder() {
        let mut x = 99u32;
        for skew in [1u32, 3, 6] {
            let data: Vec<u8> = (0..30_000)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((x >> 16) as u8 >> (8 - skew)).leading_zeros() as u8
                })
                .collect();
            let f = Freqs::normalize(&histogram(&data));
            let exact = crate::reference::model_bits(&data, &f.0, PROB_BITS);
            let slow = crate::reference::slow_rans_encode(&data, &f.0, PROB_BITS);
            assert_eq!(
                crate::reference::slow_rans_decode(&slow, &f.0, PROB_BITS, data.len()).unwrap(),
                data
            );
            let mut fast = Vec::new();
            encode_bytes(&data, &f, &mut fast);
            let table = f.written_len();
            let fast_bits = 8.0 * (fast.len() - table) as f64;
            // Fast: 4 states of 32 bits, a varint word count, one partly filled word per lane.
            assert!(
                fast_bits >= exact && fast_bits <= exact + 8.0 * (16.0 + 4.0 + 8.0),
                "skew {skew}"
            );
            // Slow: one 64-bit state, one partly filled 32-bit word.
            let slow_bits = 8.0 * slow.len() as f64;
            assert!(slow_bits >= exact && slow_bits <= exact + 64.0 + 32.0, "skew {skew}");
            let mut c = Cursor::new(&fast);
            assert_eq!(decode_bytes(&mut c, data.len(), "t").unwrap(), data);
        }
    }

    #[test]
    fn bytes_round_trip_all_lengths() {
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| (i * i % 7) as u8).collect();
            let (f, _) = estimate_bytes(&histogram(&data));
            let mut out = Vec::new();
            encode_bytes(&data, &f, &mut out);
            let mut c = Cursor::new(&out);
            assert_eq!(decode_bytes(&mut c, n, "t").unwrap(), data);
            assert_eq!(c.remaining(), 0);
        }
    }
}
