//! An nq-rope rotary embedding applied to candle tensors with candle's rope kernels.

use candle_core::{D, Device, Tensor};
use nq_rope::{Rope, RopeLayout};

/// The cosines and sines of one [`Rope`] at given positions, on a candle device.
///
/// The tables are nq-rope's own ([`Rope::table`]: f64 angles rounded to f32), so every
/// frequency scaling nq-rope knows reaches the model unchanged; candle's `rope` (split-half)
/// or `rope_i` (interleaved) kernels do the rotation, on the CPU or the GPU. The
/// attention factor (YaRN) multiplies the rotated dimensions afterwards, as [`Rope::apply`]
/// does; dimensions past `rotary_dim` pass through.
///
/// # Examples
/// ```
/// use candle_core::{Device, Tensor};
/// use nq_candle::RopeTables;
/// use nq_rope::{Rope, RopeConfig};
/// let rope = Rope::new(RopeConfig::new(8, 10_000.0))?;
/// let positions = [0u32, 5, 9];
/// let x: Vec<f32> = (0..2 * 3 * 8).map(|i| i as f32 * 0.1).collect();
/// let tables = RopeTables::new(&rope, &positions, &Device::Cpu)?;
/// let y = tables.apply(&Tensor::from_vec(x.clone(), (2, 3, 8), &Device::Cpu)?)?;
/// let mut want = x;
/// for head in want.chunks_mut(3 * 8) {
///     rope.apply(head, &positions)?;
/// }
/// let got = y.flatten_all()?.to_vec1::<f32>()?;
/// assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    positions: usize,
    rotary_dim: usize,
    layout: RopeLayout,
    attention_factor: Option<f64>,
}

impl RopeTables {
    /// Tables `[positions.len(), rotary_dim / 2]` of `rope` on `device`.
    ///
    /// # Errors
    /// A candle error from creating the tensors.
    pub fn new(rope: &Rope, positions: &[u32], device: &Device) -> candle_core::Result<Self> {
        let table = rope.table(positions);
        let shape = (positions.len(), table.pairs());
        let factor = rope.attention_factor();
        Ok(Self {
            cos: Tensor::from_slice(table.cos(), shape, device)?,
            sin: Tensor::from_slice(table.sin(), shape, device)?,
            positions: positions.len(),
            rotary_dim: rope.config().rotary_dim,
            layout: rope.config().layout,
            attention_factor: (factor != 1.0).then_some(factor),
        })
    }

    /// Rotates `x` (`[heads, positions, head_dim]`, f32, contiguous): row `t` of every head to
    /// position `t` of the table.
    ///
    /// # Errors
    /// A shape that does not match the tables, or a candle error.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, t, head_dim) = x.dims3()?;
        if t != self.positions || head_dim < self.rotary_dim {
            candle_core::bail!(
                "RopeTables::apply: x {:?} does not fit {} positions x rotary_dim {}",
                x.dims(),
                self.positions,
                self.rotary_dim
            );
        }
        let rotate = |x: &Tensor| -> candle_core::Result<Tensor> {
            let x = x.unsqueeze(0)?;
            let y = match self.layout {
                RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?,
                RopeLayout::SplitHalf => candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?,
            };
            let y = y.squeeze(0)?;
            match self.attention_factor {
                Some(f) => y.affine(f, 0.0),
                None => Ok(y),
            }
        };
        if self.rotary_dim == head_dim {
            rotate(x)
        } else {
            let head = x.narrow(D::Minus1, 0, self.rotary_dim)?.contiguous()?;
            let tail = x.narrow(D::Minus1, self.rotary_dim, head_dim - self.rotary_dim)?;
            Tensor::cat(&[&rotate(&head)?, &tail], D::Minus1)?.contiguous()
        }
    }
}
