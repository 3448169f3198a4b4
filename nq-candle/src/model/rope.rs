//! Rotary position embeddings for arbitrary positions (no precomputed cap).

use candle_core::{D, Device, Tensor};

use super::config::RopeSpec;

/// cos and sin tables `[t, dim/2]` for one [`RopeSpec`] at given positions.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    pub(crate) spec: RopeSpec,
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    /// Angles `pos / scale * theta^(-2i/dim)` computed in f64, stored as f32.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    pub(crate) fn new(
        spec: RopeSpec,
        positions: &[u32],
        device: &Device,
    ) -> candle_core::Result<Self> {
        let half = spec.dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| {
                f64::from(spec.theta).powf(-2.0 * i as f64 / spec.dim as f64)
                    / f64::from(spec.scale)
            })
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &inv_freq {
                let a = f64::from(p) * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Self {
            spec,
            cos: Tensor::from_vec(cos, (positions.len(), half), device)?,
            sin: Tensor::from_vec(sin, (positions.len(), half), device)?,
        })
    }

    /// Rotates `x` (`[heads, t, head_dim]`, contiguous); dimensions past `spec.dim` pass
    /// through unchanged.
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let head_dim = x.dim(D::Minus1)?;
        let rot = |x: &Tensor| -> candle_core::Result<Tensor> {
            let x = x.unsqueeze(0)?;
            let y = if self.spec.interleaved {
                candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?
            } else {
                candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?
            };
            y.squeeze(0)
        };
        if self.spec.dim == head_dim {
            rot(x)
        } else {
            let head = x.narrow(D::Minus1, 0, self.spec.dim)?.contiguous()?;
            let tail = x.narrow(D::Minus1, self.spec.dim, head_dim - self.spec.dim)?;
            Tensor::cat(&[&rot(&head)?, &tail], D::Minus1)?.contiguous()
        }
    }
}
