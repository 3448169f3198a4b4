//! Naive, slow oracles for the fast coders: empirical entropies, the exact code length of a
//! static model, a single-state rANS with a 64-bit state, and the E8 difference computed from
//! doubled coordinates. Tests and the report compare the fast paths against these.

use std::collections::BTreeMap;

/// Order-0 empirical entropy in bits of a sample with these symbol counts:
/// `sum c * log2(N / c)`.
pub fn entropy_bits(counts: impl IntoIterator<Item = u64>) -> f64 {
    let counts: Vec<u64> = counts.into_iter().filter(|&c| c > 0).collect();
    let n: u64 = counts.iter().sum();
    counts.iter().map(|&c| c as f64 * (n as f64 / c as f64).log2()).sum()
}

fn counts<T: Ord + Copy>(it: impl Iterator<Item = T>) -> Vec<u64> {
    let mut m = BTreeMap::new();
    for v in it {
        *m.entry(v).or_insert(0u64) += 1;
    }
    m.into_values().collect()
}

/// The target's yardstick: order-0 empirical entropy in bits of the coset-aware symbols,
/// with the coset bits as one distribution and each of the 8 coordinate positions
/// (`z0..z6`, `h`) as its own.
///
/// # Panics
///
/// If `coords.len() != 8 * cosets.len()`.
#[track_caller]
pub fn coords_entropy_bits(cosets: &[u8], coords: &[i32]) -> f64 {
    assert_eq!(coords.len(), 8 * cosets.len(), "8 coordinates per coset bit");
    let mut bits = entropy_bits(counts(cosets.iter().copied()));
    for j in 0..8 {
        bits += entropy_bits(counts(coords.iter().skip(j).step_by(8).copied()));
    }
    bits
}

/// Empirical entropy in bits under the contexts the rANS coder can use: the coset bits, the
/// 7 ordinary coordinates pooled and conditioned on the coset, and `h` conditioned on the
/// coset and the parity of `z0 + .. + z6`. The coder reaches this up to table precision.
///
/// # Panics
///
/// If `coords.len() != 8 * cosets.len()`.
#[track_caller]
pub fn coords_context_entropy_bits(cosets: &[u8], coords: &[i32]) -> f64 {
    assert_eq!(coords.len(), 8 * cosets.len(), "8 coordinates per coset bit");
    let mut bits = entropy_bits(counts(cosets.iter().copied()));
    for c in 0..2u8 {
        let vecs: Vec<&[i32]> = cosets
            .iter()
            .zip(coords.chunks_exact(8))
            .filter(|(k, _)| **k == c)
            .map(|(_, z)| z)
            .collect();
        bits += entropy_bits(counts(vecs.iter().flat_map(|z| z[..7].iter().copied())));
        for p in 0..2i64 {
            let parity =
                |z: &[i32]| z[..7].iter().map(|&v| i64::from(v)).sum::<i64>().rem_euclid(2);
            bits += entropy_bits(counts(vecs.iter().filter(|z| parity(z) == p).map(|z| z[7])));
        }
    }
    bits
}

/// Exact code length in bits of `symbols` under a static model with frequencies `freqs`
/// summing to `2^prob_bits`: `sum -log2(f_s / 2^prob_bits)`. Infinite if a symbol has
/// frequency 0.
pub fn model_bits(symbols: &[u8], freqs: &[u32; 256], prob_bits: u32) -> f64 {
    symbols.iter().map(|&s| f64::from(prob_bits) - f64::from(freqs[usize::from(s)]).log2()).sum()
}

/// Single-state rANS with a 64-bit state in `[2^31, 2^63)` and 32-bit renormalization, the
/// textbook form (Duda 2013), as an oracle for the interleaved 32-bit coder.
///
/// Returns the coded bytes: the final state (8 bytes LE), then the 32-bit words in decoding
/// order.
///
/// # Panics
///
/// If a symbol has frequency 0 or `freqs` does not sum to `2^prob_bits` (`prob_bits <= 31`).
#[track_caller]
pub fn slow_rans_encode(symbols: &[u8], freqs: &[u32; 256], prob_bits: u32) -> Vec<u8> {
    assert!(prob_bits <= 31);
    assert_eq!(freqs.iter().map(|&f| u64::from(f)).sum::<u64>(), 1u64 << prob_bits);
    let mut cum = [0u64; 257];
    for s in 0..256 {
        cum[s + 1] = cum[s] + u64::from(freqs[s]);
    }
    let l = 1u64 << 31;
    let mut x = l;
    let mut words = Vec::new();
    for &s in symbols.iter().rev() {
        let f = u64::from(freqs[usize::from(s)]);
        assert!(f > 0, "symbol {s} has frequency 0");
        let x_max = ((l >> prob_bits) << 32) * f;
        if x >= x_max {
            words.push(x as u32);
            x >>= 32;
        }
        x = ((x / f) << prob_bits) + x % f + cum[usize::from(s)];
    }
    let mut out = x.to_le_bytes().to_vec();
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Decodes `n` symbols written by [`slow_rans_encode`]; `None` if the bytes are inconsistent.
pub fn slow_rans_decode(
    bytes: &[u8],
    freqs: &[u32; 256],
    prob_bits: u32,
    n: usize,
) -> Option<Vec<u8>> {
    let mut cum = [0u64; 257];
    for s in 0..256 {
        cum[s + 1] = cum[s] + u64::from(freqs[s]);
    }
    let l = 1u64 << 31;
    let mut x = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let mut words =
        bytes[8..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let mask = (1u64 << prob_bits) - 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let slot = x & mask;
        let s = (0..256).find(|&s| cum[s] <= slot && slot < cum[s + 1])?;
        out.push(s as u8);
        x = u64::from(freqs[s]) * (x >> prob_bits) + slot - cum[s];
        if x < l {
            x = (x << 32) | u64::from(words.next()?);
        }
    }
    (x == l && words.next().is_none()).then_some(out)
}

/// `y_a - y_b` for two E8 points in the coset-aware layout, computed the slow way: rebuild the
/// doubled coordinates `2y = 2z + c` (with `z7 = 2h + p`), subtract, and convert back.
///
/// Only meaningful for valid E8 points with small coordinates.
pub fn e8_difference(ca: u8, a: &[i32; 8], cb: u8, b: &[i32; 8]) -> (u8, [i32; 8]) {
    fn doubled(c: u8, v: &[i32; 8]) -> [i64; 8] {
        let mut z: [i64; 8] = v.map(i64::from);
        let p = z[..7].iter().sum::<i64>().rem_euclid(2);
        z[7] = 2 * z[7] + p;
        z.map(|zi| 2 * zi + i64::from(c))
    }
    let (ya, yb) = (doubled(ca, a), doubled(cb, b));
    let d: [i64; 8] = std::array::from_fn(|i| ya[i] - yb[i]);
    let c = d[0].rem_euclid(2);
    let z: [i64; 8] = d.map(|v| (v - c) / 2);
    let p = z[..7].iter().sum::<i64>().rem_euclid(2);
    let mut out = [0i32; 8];
    for i in 0..7 {
        out[i] = z[i] as i32;
    }
    out[7] = ((z[7] - p) / 2) as i32;
    (c as u8, out)
}
