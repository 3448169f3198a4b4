//! Model hyper-parameters read from GGUF metadata.

use std::fmt;

use candle_core::quantized::gguf_file;

use super::gguf::{GgufFile, Meta};
use crate::kv::AttnSpec;
use crate::{Error, Result};

/// The decoder families this crate implements (`general.architecture` in GGUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// Llama (also SmolLM2, and Mistral when the file sets a sliding window): GGUF Q/K weights
    /// are permuted by the converter, so RoPE is interleaved.
    Llama,
    /// Mistral under its own architecture name: Llama with a sliding window.
    Mistral,
    /// Qwen2: Q/K/V biases, split-half RoPE.
    Qwen2,
    /// Phi-3: fused QKV and gate/up projections, split-half RoPE (possibly partial).
    Phi3,
    /// Gemma-3: QK-norm, pre+post norms, local (sliding) / global layers with their own RoPE
    /// bases, GELU-tanh MLP, embeddings scaled by `sqrt(hidden)`.
    Gemma3,
}

/// Architecture names accepted in `general.architecture`.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, mistral, qwen2, phi3, gemma3";

impl Architecture {
    /// Parses a `general.architecture` value.
    ///
    /// # Errors
    /// [`Error::UnsupportedArchitecture`] naming `name` for anything not listed in
    /// [`SUPPORTED_ARCHITECTURES`].
    ///
    /// # Examples
    /// ```
    /// use nq_candle::Architecture;
    /// assert_eq!(Architecture::from_gguf_name("qwen2")?, Architecture::Qwen2);
    /// assert!(Architecture::from_gguf_name("mamba").is_err());
    /// # Ok::<(), nq_candle::Error>(())
    /// ```
    pub fn from_gguf_name(name: &str) -> Result<Self> {
        Ok(match name {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "phi3" => Self::Phi3,
            "gemma3" => Self::Gemma3,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    op: "Architecture::from_gguf_name",
                    arch: other.to_string(),
                    supported: SUPPORTED_ARCHITECTURES,
                });
            }
        })
    }

    /// The GGUF name, which is also the metadata key prefix (`llama.block_count`).
    #[must_use]
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.gguf_name())
    }
}

/// Hyper-parameters of a decoder, as read from GGUF metadata (`{arch}.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family.
    pub architecture: Architecture,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Query heads per layer.
    pub q_heads: usize,
    /// Key/value heads per layer (divides `q_heads`).
    pub kv_heads: usize,
    /// Per-head dimension of queries, keys and values.
    pub head_dim: usize,
    /// Residual-stream width.
    pub hidden: usize,
    /// MLP inner width.
    pub ffn_hidden: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// RoPE frequency base of global layers.
    pub rope_theta: f32,
    /// RoPE frequency base of sliding-window layers (Gemma-3: 10000), if it differs.
    pub rope_theta_local: Option<f32>,
    /// Leading head dimensions that RoPE rotates (`rope.dimension_count`, else `head_dim`).
    pub rope_dim: usize,
    /// Interleaved RoPE (GGUF llama/mistral) or split-half (qwen2, phi3, gemma3).
    pub rope_interleaved: bool,
    /// RoPE frequency scaling of global layers (`rope.scaling.*`: none, linear or yarn);
    /// sliding-window layers are never scaled.
    pub rope_scaling: nq_rope::RopeScaling,
    /// Context length the model was trained for (`context_length`); forward refuses positions
    /// beyond it unless [`LoadOptions::max_context`](crate::LoadOptions) overrides it.
    pub max_context: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Sliding window of each layer (`None`: global attention).
    pub layer_windows: Vec<Option<usize>>,
    /// Multiplier of `q . k` (`1/sqrt(head_dim)` for every family here).
    pub attn_scale: f32,
    /// Embedding multiplier (Gemma: `sqrt(hidden)`).
    pub embed_scale: Option<f32>,
    /// Final-logit soft cap, if the family uses one.
    pub final_softcap: Option<f32>,
    /// Attention-logit soft cap, if the family uses one.
    pub attn_softcap: Option<f32>,
    /// Whether to add a BOS token before a document (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
}

/// `1 / sqrt(head_dim)`, except Gemma-3 27B (62 layers), whose `query_pre_attn_scalar` is
/// `hidden / q_heads` (llama.cpp's rule; the GGUF does not store the scalar).
fn attn_scale(
    arch: Architecture,
    layers: usize,
    hidden: usize,
    q_heads: usize,
    head_dim: usize,
) -> f32 {
    if arch == Architecture::Gemma3 && layers == 62 {
        AttnSpec::standard(hidden / q_heads).scale
    } else {
        AttnSpec::standard(head_dim).scale
    }
}

/// RoPE base when the file gives none (llama.cpp's default).
const DEFAULT_ROPE_THETA: f32 = 10_000.0;

/// Head counts and the per-head dimension of the attention.
struct Heads {
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Heads {
    /// `attention.head_count(_kv)`, `key_length` (else `hidden / q_heads`), and a
    /// `value_length` that must equal it.
    fn from_meta(meta: &Meta<'_>, arch: &str, hidden: usize) -> Result<Self> {
        let key = |k: &str| format!("{arch}.attention.{k}");
        let bad = |k: &str, reason: String| Error::Metadata { op: meta.op, key: key(k), reason };
        let q_heads = meta.usize(&key("head_count"))?;
        let kv_heads = meta.opt_usize(&key("head_count_kv"))?.unwrap_or(q_heads);
        if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 {
            let reason = format!("kv heads {kv_heads} must divide q heads {q_heads}");
            return Err(bad("head_count_kv", reason));
        }
        let head_dim = match meta.opt_usize(&key("key_length"))? {
            Some(d) => d,
            None if hidden.is_multiple_of(q_heads) => hidden / q_heads,
            None => {
                let reason = format!("hidden {hidden} is not a multiple of {q_heads} heads");
                return Err(bad("head_count", reason));
            }
        };
        if let Some(dv) = meta.opt_usize(&key("value_length"))?
            && dv != head_dim
        {
            let reason = format!("{dv} differs from key_length {head_dim}: unsupported");
            return Err(bad("value_length", reason));
        }
        Ok(Self { q_heads, kv_heads, head_dim })
    }
}

/// Which layers attend through a sliding window, and the RoPE base of those layers when it
/// differs from the global one.
struct LocalLayers {
    windows: Vec<Option<usize>>,
    rope_theta: Option<f32>,
}

impl LocalLayers {
    /// Llama, Mistral and Phi-3 apply `attention.sliding_window` (if any) to every layer;
    /// Qwen2 to none. Gemma-3 (llama.cpp's rule) has sliding layers of
    /// `sliding_window` tokens (default 512) with RoPE base `rope.local_freq_base` (default
    /// 10000), and a global layer every `sliding_window_pattern` layers (default 6); the
    /// pattern may also be one bool per layer (true: sliding).
    fn from_meta(meta: &Meta<'_>, arch: Architecture, layers: usize) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let window = meta.opt_usize(&key("attention.sliding_window"))?;
        if arch != Architecture::Gemma3 {
            let uniform = if arch == Architecture::Qwen2 { None } else { window };
            return Ok(Self { windows: vec![uniform; layers], rope_theta: None });
        }
        let w = window.unwrap_or(512);
        let pattern_key = key("attention.sliding_window_pattern");
        let windows = match meta.md.get(&pattern_key) {
            Some(gguf_file::Value::Array(flags)) if flags.len() == layers => flags
                .iter()
                .map(|f| match f {
                    gguf_file::Value::Bool(sliding) => Ok(sliding.then_some(w)),
                    other => Err(Error::Metadata {
                        op: meta.op,
                        key: pattern_key.clone(),
                        reason: format!("expected one bool per layer, found {other:?}"),
                    }),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(gguf_file::Value::Array(flags)) => {
                return Err(Error::Metadata {
                    op: meta.op,
                    key: pattern_key,
                    reason: format!("{} flags for {layers} layers", flags.len()),
                });
            }
            _ => {
                let period = meta.opt_usize(&pattern_key)?.unwrap_or(6);
                (0..layers).map(|i| (period == 0 || i % period < period - 1).then_some(w)).collect()
            }
        };
        let theta = meta.opt_f32(&key("rope.local_freq_base"))?.unwrap_or(DEFAULT_ROPE_THETA);
        Ok(Self { windows, rope_theta: Some(theta) })
    }
}

/// The RoPE scaling of global layers from `{arch}.rope.scaling.*` (llama.cpp's keys).
///
/// `linear` divides frequencies by `factor`; `yarn` takes `factor`,
/// `original_context_length` and optionally `yarn_beta_fast` / `yarn_beta_slow` (defaults 32
/// and 1, as in llama.cpp and HF), with the HF attention factor `0.1 ln(factor) + 1`.
/// Llama-3.1-style per-frequency factors are a tensor (`rope_freqs.weight`), refused at load.
fn rope_scaling(meta: &Meta<'_>, arch: &str) -> Result<nq_rope::RopeScaling> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let bad = |k: &str, reason: String| Error::Metadata { op: meta.op, key: key(k), reason };
    let factor = meta.opt_f32(&key("factor"))?.map(f64::from);
    Ok(match meta.opt_str(&key("type"))? {
        None | Some("none") => nq_rope::RopeScaling::None,
        Some("linear") => match factor {
            None | Some(1.0) => nq_rope::RopeScaling::None,
            Some(factor) => nq_rope::RopeScaling::Linear { factor },
        },
        Some("yarn") => {
            let factor = factor.ok_or_else(|| bad("factor", "missing for yarn".into()))?;
            let original = meta
                .opt_usize(&key("original_context_length"))?
                .ok_or_else(|| bad("original_context_length", "missing for yarn".into()))?;
            // llama.cpp multiplies its YaRN magnitude by these; nq-rope has no such knob.
            for (k, neutral) in [("attn_factor", 1.0), ("yarn_log_multiplier", 0.0)] {
                if let Some(v) = meta.opt_f32(&key(k))?
                    && f64::from(v) != neutral
                {
                    return Err(bad(k, format!("{v} (only {neutral} is implemented)")));
                }
            }
            let beta = |k: &str, default: f64| -> Result<f64> {
                Ok(meta.opt_f32(&key(k))?.map_or(default, f64::from))
            };
            nq_rope::RopeScaling::Yarn {
                factor,
                original_max_position: original,
                beta_fast: beta("yarn_beta_fast", 32.0)?,
                beta_slow: beta("yarn_beta_slow", 1.0)?,
                mscale: None,
                mscale_all_dim: None,
                attention_factor: None,
                truncate: true,
            }
        }
        Some(other) => {
            return Err(bad("type", format!("rope scaling `{other}` is not implemented")));
        }
    })
}

impl ModelConfig {
    /// Reads the configuration of an open GGUF file.
    ///
    /// # Errors
    /// [`Error::UnsupportedArchitecture`] for an unknown `general.architecture`;
    /// [`Error::Metadata`] for missing or inconsistent keys; [`Error::Tensor`] when
    /// `token_embd.weight` is absent.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        const OP: &str = "ModelConfig::from_gguf";
        let meta = Meta { md: &file.content().metadata, op: OP };
        let arch_name = meta.str("general.architecture")?;
        let architecture = Architecture::from_gguf_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let layers = meta.usize(&key("block_count"))?;
        let hidden = meta.usize(&key("embedding_length"))?;
        let heads = Heads::from_meta(&meta, arch_name, hidden)?;
        let rope_dim = meta.opt_usize(&key("rope.dimension_count"))?.unwrap_or(heads.head_dim);
        if rope_dim > heads.head_dim || rope_dim % 2 != 0 || rope_dim == 0 {
            return Err(Error::Metadata {
                op: OP,
                key: key("rope.dimension_count"),
                reason: format!(
                    "{rope_dim} must be even, positive and <= head_dim {}",
                    heads.head_dim
                ),
            });
        }
        let rope_scaling = rope_scaling(&meta, arch_name)?;
        let local = LocalLayers::from_meta(&meta, architecture, layers)?;
        let vocab = file
            .content()
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| Error::Tensor {
                op: OP,
                name: "token_embd.weight".into(),
                reason: "not in the file".into(),
            })?;
        let config = Self {
            architecture,
            layers,
            q_heads: heads.q_heads,
            kv_heads: heads.kv_heads,
            head_dim: heads.head_dim,
            hidden,
            ffn_hidden: meta.usize(&key("feed_forward_length"))?,
            vocab,
            rope_theta: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(DEFAULT_ROPE_THETA),
            rope_theta_local: local.rope_theta,
            rope_dim,
            rope_interleaved: matches!(architecture, Architecture::Llama | Architecture::Mistral),
            rope_scaling,
            max_context: meta.usize(&key("context_length"))?,
            rms_eps: meta.opt_f32(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            layer_windows: local.windows,
            attn_scale: attn_scale(architecture, layers, hidden, heads.q_heads, heads.head_dim),
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            embed_scale: (architecture == Architecture::Gemma3)
                .then(|| (hidden as f64).sqrt() as f32),
            final_softcap: meta.opt_f32(&key("final_logit_softcapping"))?,
            attn_softcap: meta.opt_f32(&key("attn_logit_softcapping"))?,
            add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
        };
        // Every layer's RoPE is checked here, so no later use can meet an invalid one.
        for layer in 0..config.layers {
            config.rope(layer)?;
        }
        Ok(config)
    }

    /// Query heads that share one kv head.
    #[must_use]
    pub fn group_size(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// The attention spec of `layer` (scale, window, soft cap).
    ///
    /// # Panics
    /// When `layer >= self.layers`.
    #[must_use]
    #[track_caller]
    pub fn attn_spec(&self, layer: usize) -> AttnSpec {
        AttnSpec {
            scale: self.attn_scale,
            window: self.layer_windows[layer],
            softcap: self.attn_softcap,
        }
    }

    /// The rotary embedding of `layer`, as nq-rope takes it: the one place that maps this
    /// model's RoPE (base, rotary dimensions, pair layout, scaling) to [`nq_rope::RopeConfig`].
    /// Sliding-window layers of Gemma-3 use their own base and no scaling.
    ///
    /// # Panics
    /// When `layer >= self.layers`.
    #[must_use]
    #[track_caller]
    pub fn rope_spec(&self, layer: usize) -> nq_rope::RopeConfig {
        let local = self.layer_windows[layer].is_some() && self.rope_theta_local.is_some();
        let theta = if local { self.rope_theta_local } else { None }.unwrap_or(self.rope_theta);
        nq_rope::RopeConfig {
            head_dim: self.head_dim,
            rotary_dim: self.rope_dim,
            theta: f64::from(theta),
            layout: if self.rope_interleaved {
                nq_rope::RopeLayout::Interleaved
            } else {
                nq_rope::RopeLayout::SplitHalf
            },
            scaling: if local { nq_rope::RopeScaling::None } else { self.rope_scaling },
        }
    }

    /// The rotary embedding of `layer`, ready to apply or invert.
    ///
    /// # Errors
    /// [`Error::Metadata`] naming the RoPE keys when nq-rope rejects
    /// [`rope_spec(layer)`](Self::rope_spec) (a zero or odd rotary dimension, a non-positive
    /// base or scaling factor).
    ///
    /// # Panics
    /// When `layer >= self.layers`.
    #[track_caller]
    pub fn rope(&self, layer: usize) -> Result<nq_rope::Rope> {
        nq_rope::Rope::new(self.rope_spec(layer)).map_err(|e| Error::Metadata {
            op: "ModelConfig::rope",
            key: format!("{}.rope.*", self.architecture),
            reason: format!("layer {layer}: {e}"),
        })
    }

    /// Elements one token adds to the KV cache over all layers (`2 * layers * kv_heads *
    /// head_dim`).
    #[must_use]
    pub fn kv_elems_per_token(&self) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim
    }
}
