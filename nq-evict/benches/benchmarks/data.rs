//! Deterministic bench inputs shaped like a prefill unit.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub(crate) const WINDOW: usize = 32;
pub(crate) const GROUP: usize = 3;

pub(crate) struct Unit {
    pub(crate) keys: Vec<f32>,
    pub(crate) values: Vec<f32>,
    pub(crate) queries: Vec<f32>,
    pub(crate) query_positions: Vec<u32>,
    pub(crate) key_positions: Vec<u32>,
    pub(crate) d: usize,
}

impl Unit {
    pub(crate) fn new(t: usize, d: usize) -> Unit {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut gen_vec =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let keys = gen_vec(t * d);
        let values = gen_vec(t * d);
        let queries = gen_vec(GROUP * WINDOW * d);
        let t32 = u32::try_from(t).expect("t fits u32");
        Unit {
            keys,
            values,
            queries,
            query_positions: (t32 - WINDOW as u32..t32).collect(),
            key_positions: (0..t32).collect(),
            d,
        }
    }

    pub(crate) fn input(&self) -> nq_evict::ScoreInput<'_> {
        nq_evict::ScoreInput {
            keys: &self.keys,
            values: Some(&self.values),
            queries: &self.queries,
            query_positions: &self.query_positions,
            key_positions: &self.key_positions,
            d: self.d,
        }
    }
}
