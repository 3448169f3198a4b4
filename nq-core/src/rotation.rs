//! The per-layer orthogonal transform applied before quantization: a randomized Hadamard
//! transform, block-diagonal when the head dimension is not a power of two (96 = 64 + 32).

use nq_hadamard::RandomizedHadamard;

use crate::error::Result;

/// `x -> H D x` over the blocks of a head vector. Orthogonal, so `q . k = (Rq) . (Rk)`.
#[derive(Clone, Debug)]
pub struct Rotation {
    blocks: Vec<RandomizedHadamard>,
    dim: usize,
}

impl Rotation {
    /// A rotation of `dim`-vectors whose sign vectors derive from `seed`.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when `dim` is zero or not a multiple of 8.
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(8) {
            return Err(crate::Error::Shape {
                op: "Rotation::new",
                what: format!("head_dim {dim} is not a positive multiple of 8"),
            });
        }
        let blocks = nq_hadamard::blocks_for(dim)
            .into_iter()
            .enumerate()
            .map(|(i, n)| RandomizedHadamard::new(n, splitmix(seed ^ i as u64)))
            .collect::<Result<_, _>>()?;
        Ok(Rotation { blocks, dim })
    }

    /// Length of the vectors it rotates.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The diagonal blocks, in order along the row (their dimensions sum to
    /// [`dim`](Self::dim)): what a device kernel needs to reproduce the transform (each
    /// block's [`RandomizedHadamard::signs`] and dimension).
    pub fn blocks(&self) -> &[RandomizedHadamard] {
        &self.blocks
    }

    /// `rows <- R rows` for every row of `dim` values: one batched call when the rotation is
    /// a single block (the same bits as row by row).
    pub(crate) fn forward_rows(&self, rows: &mut [f32]) -> Result<()> {
        if let [block] = &self.blocks[..] {
            return Ok(block.forward_rows(rows)?);
        }
        for row in rows.chunks_exact_mut(self.dim) {
            self.forward(row)?;
        }
        Ok(())
    }

    /// `row <- R row`.
    pub(crate) fn forward(&self, row: &mut [f32]) -> Result<()> {
        let mut at = 0;
        for b in &self.blocks {
            b.forward(&mut row[at..at + b.dim()])?;
            at += b.dim();
        }
        Ok(())
    }

    /// `row <- R^T row`.
    pub(crate) fn inverse(&self, row: &mut [f32]) -> Result<()> {
        let mut at = 0;
        for b in &self.blocks {
            b.inverse(&mut row[at..at + b.dim()])?;
            at += b.dim();
        }
        Ok(())
    }
}

/// Derive independent seeds from one: one step of `nq_hadamard::splitmix64` from state `z`.
pub(crate) fn splitmix(z: u64) -> u64 {
    let mut state = z;
    nq_hadamard::splitmix64(&mut state)
}
