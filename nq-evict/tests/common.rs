//! Test data: random (layer, kv head) units shaped like real prefills.

use nq_evict::ScoreInput;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One (layer, kv head) unit with owned buffers.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
    pub queries: Vec<f32>,
    pub query_positions: Vec<u32>,
    pub key_positions: Vec<u32>,
    pub d: usize,
}

impl Case {
    pub(crate) fn input(&self) -> ScoreInput<'_> {
        ScoreInput {
            keys: &self.keys,
            values: Some(&self.values),
            queries: &self.queries,
            query_positions: &self.query_positions,
            key_positions: &self.key_positions,
            d: self.d,
        }
    }

    pub(crate) fn t(&self) -> usize {
        self.key_positions.len()
    }

    pub(crate) fn w(&self) -> usize {
        self.query_positions.len()
    }

    pub(crate) fn group(&self) -> usize {
        self.queries.len() / (self.w() * self.d)
    }

    /// Largest L2 norm of a row of `x` (rows of `d`).
    pub(crate) fn max_norm(x: &[f32], d: usize) -> f32 {
        x.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).fold(0.0, f32::max)
    }

    /// The same unit with its tokens reordered: new token `i` is old token `perm[i]`.
    pub(crate) fn permuted(&self, perm: &[usize]) -> Case {
        let d = self.d;
        let rows = |x: &[f32]| perm.iter().flat_map(|&p| x[p * d..(p + 1) * d].to_vec()).collect();
        Case {
            keys: rows(&self.keys),
            values: rows(&self.values),
            key_positions: perm.iter().map(|&p| self.key_positions[p]).collect(),
            ..self.clone()
        }
    }

    /// The same unit with its window queries reordered (with their positions), in every head.
    pub(crate) fn queries_permuted(&self, perm: &[usize]) -> Case {
        let (d, w) = (self.d, self.w());
        let mut queries = Vec::with_capacity(self.queries.len());
        for h in 0..self.group() {
            for &p in perm {
                let j = h * w + p;
                queries.extend_from_slice(&self.queries[j * d..(j + 1) * d]);
            }
        }
        Case {
            queries,
            query_positions: perm.iter().map(|&p| self.query_positions[p]).collect(),
            ..self.clone()
        }
    }
}

/// Standard normal by Box-Muller.
pub(crate) fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A prefill-like unit: `t` tokens at positions `0..t`, the last `w` of them as the window
/// queries of `group` query heads. Keys have a shared offset direction (as real keys do) and
/// token 0 is a large-norm "sink"; queries correlate with that direction.
pub(crate) fn prefill(seed: u64, t: usize, w: usize, group: usize, d: usize) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let bias: Vec<f32> = (0..d).map(|_| normal(&mut rng)).collect();
    let mut keys: Vec<f32> = (0..t * d).map(|i| normal(&mut rng) + 0.5 * bias[i % d]).collect();
    if t > 0 {
        for (k, b) in keys[..d].iter_mut().zip(&bias) {
            *k = 2.0 * b;
        }
    }
    let values = (0..t * d).map(|_| normal(&mut rng)).collect();
    let queries = (0..group * w * d).map(|i| normal(&mut rng) + 0.3 * bias[i % d]).collect();
    let key_positions = (0..t as u32).collect();
    let query_positions = (t.saturating_sub(w)..t).map(|p| p as u32).collect();
    Case { keys, values, queries, query_positions, key_positions, d }
}

/// `|a - b| <= rel * |b|` elementwise, with a message naming the first offender.
pub(crate) fn assert_close(fast: &[f32], reference: &[f32], rel: f32, what: &str) {
    assert_eq!(fast.len(), reference.len(), "{what}: lengths");
    for (i, (&a, &b)) in fast.iter().zip(reference).enumerate() {
        let err = (a - b).abs();
        assert!(
            err <= rel * b.abs(),
            "{what}: token {i}: fast {a}, reference {b}, err {err}, bound {}",
            rel * b.abs()
        );
    }
}

/// A random permutation of `0..n`.
pub(crate) fn permutation(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}
