//! Rotary embedding configuration: layout, scaling kind, dimensions, base.

use crate::{Error, Result};

/// How rotation pairs are laid out in a head vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RopeLayout {
    /// Pair `(i, i + rotary_dim/2)` with frequency `i`: HF `rotate_half`, GPT-NeoX style,
    /// used by Llama (HF/safetensors), Qwen, Mistral, Gemma, Phi.
    #[default]
    SplitHalf,
    /// Pair `(2i, 2i + 1)` with frequency `i`: GPT-J style, candle's `rope_i`, and what
    /// llama-architecture GGUF checkpoints need (their Q/K weights are stored permuted).
    Interleaved,
}

/// Frequency scaling of a checkpoint (`rope_scaling` in an HF `config.json`).
///
/// All formulas follow `transformers.modeling_rope_utils` with `dim = rotary_dim` and
/// `inv_freq_i = 1 / theta^(2i / dim)`, evaluated in f64. Only YaRN has an attention factor
/// other than 1 (see [`RopeScaling::Yarn`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain RoPE.
    #[default]
    None,
    /// Position interpolation (`"linear"`): `inv_freq_i / factor`.
    Linear {
        /// Interpolation factor, finite and `> 0`.
        factor: f64,
    },
    /// Llama 3.x (`"llama3"`): wavelengths above `original_max_position / low_freq_factor` are
    /// divided by `factor`, those below `original_max_position / high_freq_factor` are kept,
    /// and the band in between is interpolated smoothly:
    /// `s = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)`,
    /// `inv_freq = (1 - s) inv_freq / factor + s inv_freq`.
    Llama3 {
        /// Scale of the low frequencies (8 for Llama 3.1, 32 for Llama 3.2), finite and `> 0`.
        factor: f64,
        /// `low_freq_factor` (1 in Llama 3.x), finite and `> 0`.
        low_freq_factor: f64,
        /// `high_freq_factor` (4 in Llama 3.x), finite and `> low_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings` (8192 in Llama 3.x), `> 0`.
        original_max_position: usize,
    },
    /// YaRN (`"yarn"`, Peng et al. 2023): NTK-by-parts interpolation plus an attention factor.
    ///
    /// Frequencies: with `corr(r) = dim ln(original_max_position / (2π r)) / (2 ln theta)`,
    /// `low = max(floor(corr(beta_fast)), 0)`, `high = min(ceil(corr(beta_slow)), dim - 1)`
    /// (no floor/ceil if `truncate` is false), the ramp
    /// `ramp_i = clamp((i - low) / (high - low), 0, 1)` (`high += 0.001` if equal) and
    /// `e_i = 1 - ramp_i`: `inv_freq_i = (1 - e_i) inv_freq_i / factor + e_i inv_freq_i`.
    ///
    /// Attention factor: `attention_factor` if given; else with
    /// `m(s, k) = 1 if s <= 1 else 0.1 k ln(s) + 1`, `m(factor, mscale) / m(factor, mscale_all_dim)`
    /// when both `mscale` and `mscale_all_dim` are given and non-zero (DeepSeek), else
    /// `m(factor, 1)`. HF multiplies **both cos and sin** by it, so it scales the rotated
    /// part of **both q and k** (logits by its square), and the pass-through tail of a
    /// partial rotary head is not scaled; llama.cpp's `attn_factor` does the same.
    /// [`Rope::apply`](crate::Rope::apply) multiplies the rotated dimensions by it and
    /// [`Rope::invert`](crate::Rope::invert) divides it back out.
    ///
    /// `factor` is the value the checkpoint's frequencies were built with: some HF versions
    /// derive it as `max_position_embeddings / original_max_position_embeddings` when the
    /// latter is inside `rope_scaling`; resolve that before building the config.
    Yarn {
        /// Context extension factor, finite and `> 0`.
        factor: f64,
        /// `original_max_position_embeddings` (pre-training context), `> 0`.
        original_max_position: usize,
        /// `beta_fast` (HF default 32), finite and `> 0`.
        beta_fast: f64,
        /// `beta_slow` (HF default 1), finite and `> 0`.
        beta_slow: f64,
        /// `mscale` (DeepSeek), finite if given.
        mscale: Option<f64>,
        /// `mscale_all_dim` (DeepSeek), finite if given.
        mscale_all_dim: Option<f64>,
        /// Explicit `attention_factor`, finite and `> 0` if given; overrides the mscale rule.
        attention_factor: Option<f64>,
        /// `truncate` (HF default true): floor/ceil the correction range.
        truncate: bool,
    },
    /// Dynamic NTK (`"dynamic"`): the base grows with the sequence length,
    /// `theta' = theta ((factor seq / original_max_position) - (factor - 1))^(dim / (dim - 2))`
    /// with `seq = max(seq_len, original_max_position)`.
    ///
    /// The frequencies depend on the sequence length in effect when a key was rotated (HF
    /// recomputes them when `max(position) + 1` exceeds `original_max_position`), so the
    /// caller states it: one [`Rope`](crate::Rope) per `seq_len`.
    DynamicNtk {
        /// Scaling factor, finite and `> 0`.
        factor: f64,
        /// `max_position_embeddings` of the checkpoint, `> 0`.
        original_max_position: usize,
        /// The sequence length the frequencies are computed for (`<= original_max_position`
        /// means no scaling).
        seq_len: usize,
    },
}

impl RopeScaling {
    /// YaRN with the HF defaults: `beta_fast = 32`, `beta_slow = 1`, no DeepSeek mscale, no
    /// explicit attention factor, `truncate = true`.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::RopeScaling;
    /// let s = RopeScaling::yarn(4.0, 32768); // Qwen2.5 long-context recipe
    /// assert!(matches!(s, RopeScaling::Yarn { beta_fast: 32.0, truncate: true, .. }));
    /// ```
    #[must_use]
    pub fn yarn(factor: f64, original_max_position: usize) -> RopeScaling {
        RopeScaling::Yarn {
            factor,
            original_max_position,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            attention_factor: None,
            truncate: true,
        }
    }

    /// Llama 3.1 defaults: `factor = 8`, `low_freq_factor = 1`, `high_freq_factor = 4`,
    /// `original_max_position = 8192`.
    #[must_use]
    pub fn llama31() -> RopeScaling {
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        }
    }
}

/// Everything that defines a rotary embedding for one attention head.
///
/// `Default` is Llama-7B-like: `head_dim = rotary_dim = 128`, `theta = 10000`, split-half,
/// no scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Values per head vector (`hidden_size / num_attention_heads` or `head_dim`).
    pub head_dim: usize,
    /// Leading values that are rotated (`head_dim * partial_rotary_factor`); the tail
    /// `rotary_dim..head_dim` passes through unchanged. Even, `2 <= rotary_dim <= head_dim`.
    pub rotary_dim: usize,
    /// The base `rope_theta`, finite and `> 0`.
    pub theta: f64,
    /// Pair layout.
    pub layout: RopeLayout,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl Default for RopeConfig {
    fn default() -> Self {
        RopeConfig::new(128, 10_000.0)
    }
}

impl RopeConfig {
    /// Full-width rotation (`rotary_dim = head_dim`), split-half, no scaling.
    ///
    /// # Examples
    /// ```
    /// use nq_rope::{RopeConfig, RopeLayout, RopeScaling};
    /// // SmolLM2 / Llama-style head, then a GGUF (interleaved) Llama 3.1 variant.
    /// let cfg = RopeConfig::new(64, 100_000.0);
    /// let gguf = RopeConfig::new(128, 500_000.0)
    ///     .with_layout(RopeLayout::Interleaved)
    ///     .with_scaling(RopeScaling::llama31());
    /// assert_eq!((cfg.rotary_dim, gguf.layout), (64, RopeLayout::Interleaved));
    /// ```
    #[must_use]
    pub fn new(head_dim: usize, theta: f64) -> Self {
        RopeConfig {
            head_dim,
            rotary_dim: head_dim,
            theta,
            layout: RopeLayout::SplitHalf,
            scaling: RopeScaling::None,
        }
    }

    /// The same config with another pair layout.
    #[must_use]
    pub fn with_layout(self, layout: RopeLayout) -> Self {
        RopeConfig { layout, ..self }
    }

    /// The same config with another scaling kind.
    #[must_use]
    pub fn with_scaling(self, scaling: RopeScaling) -> Self {
        RopeConfig { scaling, ..self }
    }

    /// The same config rotating only the first `rotary_dim` values (Phi-style partial rotary).
    #[must_use]
    pub fn with_rotary_dim(self, rotary_dim: usize) -> Self {
        RopeConfig { rotary_dim, ..self }
    }

    /// Checks every field; [`Rope::new`](crate::Rope::new) calls it.
    ///
    /// # Errors
    /// [`Error::HeadDim`], [`Error::RotaryDim`] or [`Error::Param`] naming the first invalid
    /// field.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "RopeConfig::validate";
        if self.head_dim == 0 {
            return Err(Error::HeadDim { op: OP, got: 0 });
        }
        // dynamic NTK raises the base to dim / (dim - 2): dim = 2 divides by zero.
        let min = if matches!(self.scaling, RopeScaling::DynamicNtk { .. }) { 4 } else { 2 };
        let r = self.rotary_dim;
        if !r.is_multiple_of(2) || r < min || r > self.head_dim {
            return Err(Error::RotaryDim { op: OP, rotary_dim: r, min, head_dim: self.head_dim });
        }
        positive(OP, "rope_theta", self.theta)?;
        match self.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => positive(OP, "factor", factor)?,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                positive(OP, "factor", factor)?;
                positive(OP, "low_freq_factor", low_freq_factor)?;
                check(
                    OP,
                    "high_freq_factor",
                    high_freq_factor,
                    high_freq_factor.is_finite() && high_freq_factor > low_freq_factor,
                    "finite and > low_freq_factor",
                )?;
                max_pos(OP, original_max_position)?;
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                attention_factor,
                truncate: _,
            } => {
                positive(OP, "factor", factor)?;
                max_pos(OP, original_max_position)?;
                positive(OP, "beta_fast", beta_fast)?;
                positive(OP, "beta_slow", beta_slow)?;
                // The correction range divides by ln(theta).
                check(OP, "rope_theta", self.theta, self.theta != 1.0, "!= 1 for yarn")?;
                for (name, v) in [("mscale", mscale), ("mscale_all_dim", mscale_all_dim)] {
                    if let Some(v) = v {
                        check(OP, name, v, v.is_finite(), "finite")?;
                    }
                }
                if let Some(a) = attention_factor {
                    positive(OP, "attention_factor", a)?;
                }
            }
            RopeScaling::DynamicNtk { factor, original_max_position, seq_len: _ } => {
                positive(OP, "factor", factor)?;
                max_pos(OP, original_max_position)?;
            }
        }
        Ok(())
    }
}

fn check(
    op: &'static str,
    name: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Param { op, name, value, expected }) }
}

fn positive(op: &'static str, name: &'static str, value: f64) -> Result<()> {
    check(op, name, value, value.is_finite() && value > 0.0, "finite and > 0")
}

fn max_pos(op: &'static str, value: usize) -> Result<()> {
    check(op, "original_max_position_embeddings", value as f64, value > 0, "> 0")
}
