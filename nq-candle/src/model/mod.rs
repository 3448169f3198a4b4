//! Llama-family decoders over GGUF weights whose KV cache is a [`KvCache`].
//!
//! One implementation covers the families in [`Architecture`]: they differ in projections
//! (separate or fused, biases), norms (QK-norm, post-norms), RoPE layout and bases, MLP
//! activation and attention windows, all read from the GGUF file.

mod config;
pub(crate) mod gguf;
mod path;
mod rope;
mod scoring;
mod synthetic;

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, Device, Module, Tensor};

pub use config::{Architecture, ModelConfig, SUPPORTED_ARCHITECTURES};
pub use gguf::GgufFile;
pub use path::{KNOWN_MODELS, KnownModel, model_dir, model_path, model_path_in};
pub use rope::RopeTables;
pub use scoring::{
    kl_divergence_from_logits, log_softmax, nll_from_logits, perplexity_from_logits,
};
pub use synthetic::SyntheticWeights;

use crate::kv::{AttnSpec, KvCache};
use crate::{Error, Result};

/// How to load weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Dequantize every weight to f32 at load and multiply with f32 GEMM. On CPU this is much
    /// faster than candle 0.11's quantized kernels for prefill and scoring (Q4_1 has no SIMD
    /// path there), at 4 bytes per weight: right for small models. Default `true`.
    pub dequantize_to_f32: bool,
    /// Overrides the context limit that [`Model::forward`] enforces (default: the file's
    /// `context_length`).
    pub max_context: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dequantize_to_f32: true, max_context: None }
    }
}

/// A linear map `y = x W^T (+ b)` with `W` as stored in GGUF (`[out, in]`).
#[derive(Debug, Clone)]
struct Linear {
    w: QMatMul,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.w.forward(x)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Token embedding table `[vocab, hidden]`.
#[derive(Debug, Clone)]
enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

impl Embedding {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(w) => w.index_select(ids, 0),
            Self::Quant(q) => q.embedding(ids),
        }
    }

    fn as_lm_head(&self) -> candle_core::Result<QMatMul> {
        Ok(match self {
            Self::Dense(w) => QMatMul::Tensor(w.clone()),
            Self::Quant(q) => QMatMul::from_arc(Arc::clone(q))?,
        })
    }
}

#[derive(Debug, Clone)]
enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    qkv: Qkv,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o: Linear,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate_up: GateUp,
    down: Linear,
    post_ffn_norm: Option<Tensor>,
    spec: AttnSpec,
    /// Index of this layer's rotary embedding in [`Model::ropes`].
    rope: usize,
}

/// A decoder loaded from GGUF. It holds weights only; keys and values live in the
/// [`KvCache`] passed to each forward call.
///
/// # Examples
/// ```
/// use nq_candle::{DenseCache, LoadOptions, Model};
/// // A tiny random-weight llama shipped with the tests; real ones come from `model_path`.
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_llama.gguf");
/// let dev = candle_core::Device::Cpu;
/// let model = Model::from_gguf(path.as_ref(), &dev, LoadOptions::default())?;
/// let mut cache = DenseCache::new();
/// let logits = model.forward(&[5, 17, 3], 0, &mut cache)?; // every token's logits
/// assert_eq!(logits.dims(), &[3, model.config().vocab]);
/// let next = model.forward_last(&[42], 3, &mut cache)?; // only the last token's
/// assert_eq!(next.dims(), &[model.config().vocab]);
/// assert_eq!(cache.len(), 4);
/// # Ok::<(), nq_candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    /// The distinct rotary embeddings of the layers (Gemma-3: local and global).
    ropes: Vec<nq_rope::Rope>,
    out_norm: Tensor,
    lm_head: Linear,
    activation: Activation,
}

struct Loader<'a> {
    file: &'a mut GgufFile,
    device: &'a Device,
    dequantize: bool,
}

impl Loader<'_> {
    fn qtensor(&mut self, name: &str, dims: &[usize]) -> Result<QTensor> {
        let t = self.file.tensor(name, self.device)?;
        if t.shape().dims() != dims {
            return Err(Error::Tensor {
                op: "Model::from_gguf",
                name: name.to_string(),
                reason: format!("shape {:?}, expected {dims:?}", t.shape().dims()),
            });
        }
        Ok(t)
    }

    fn dense(&mut self, name: &str, dims: &[usize]) -> Result<Tensor> {
        Ok(self.qtensor(name, dims)?.dequantize(self.device)?)
    }

    fn matrix(&mut self, name: &str, out: usize, inp: usize) -> Result<QMatMul> {
        let t = self.qtensor(name, &[out, inp])?;
        let keep_quantized = !self.dequantize
            && !matches!(t.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        Ok(if keep_quantized {
            QMatMul::from_qtensor(t)?
        } else {
            QMatMul::Tensor(t.dequantize(self.device)?)
        })
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = self.matrix(&format!("{prefix}.weight"), out, inp)?;
        let bias_name = format!("{prefix}.bias");
        let b = if self.file.has_tensor(&bias_name) {
            Some(self.dense(&bias_name, &[out])?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }

    /// Block `i` of `c`'s model, whose rotary embedding is `Model::ropes[rope]`.
    fn block(&mut self, c: &ModelConfig, i: usize, rope: usize) -> Result<Block> {
        let (h, d, nq, nkv) = (c.hidden, c.head_dim, c.q_heads, c.kv_heads);
        let p = format!("blk.{i}");
        let qkv = if self.file.has_tensor(&format!("{p}.attn_qkv.weight")) {
            Qkv::Fused(self.linear(&format!("{p}.attn_qkv"), (nq + 2 * nkv) * d, h)?)
        } else {
            Qkv::Separate {
                q: self.linear(&format!("{p}.attn_q"), nq * d, h)?,
                k: self.linear(&format!("{p}.attn_k"), nkv * d, h)?,
                v: self.linear(&format!("{p}.attn_v"), nkv * d, h)?,
            }
        };
        let gate_up = if self.file.has_tensor(&format!("{p}.ffn_gate.weight")) {
            GateUp::Separate {
                gate: self.linear(&format!("{p}.ffn_gate"), c.ffn_hidden, h)?,
                up: self.linear(&format!("{p}.ffn_up"), c.ffn_hidden, h)?,
            }
        } else {
            GateUp::Fused(self.linear(&format!("{p}.ffn_up"), 2 * c.ffn_hidden, h)?)
        };
        Ok(Block {
            attn_norm: self.dense(&format!("{p}.attn_norm.weight"), &[h])?,
            qkv,
            q_norm: self.opt_norm(&format!("{p}.attn_q_norm.weight"), d)?,
            k_norm: self.opt_norm(&format!("{p}.attn_k_norm.weight"), d)?,
            o: self.linear(&format!("{p}.attn_output"), h, nq * d)?,
            post_attn_norm: self.opt_norm(&format!("{p}.post_attention_norm.weight"), h)?,
            ffn_norm: self.dense(&format!("{p}.ffn_norm.weight"), &[h])?,
            gate_up,
            down: self.linear(&format!("{p}.ffn_down"), h, c.ffn_hidden)?,
            post_ffn_norm: self.opt_norm(&format!("{p}.post_ffw_norm.weight"), h)?,
            spec: c.attn_spec(i),
            rope,
        })
    }

    fn opt_norm(&mut self, name: &str, dim: usize) -> Result<Option<Tensor>> {
        if self.file.has_tensor(name) { Ok(Some(self.dense(name, &[dim])?)) } else { Ok(None) }
    }
}

impl Model {
    /// Loads a GGUF checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::NotGguf`] for unreadable files,
    /// [`Error::UnsupportedArchitecture`] for families not implemented here,
    /// [`Error::Metadata`] / [`Error::Tensor`] for missing or ill-shaped entries.
    pub fn from_gguf(path: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        Self::from_gguf_file(&mut file, device, opts)
    }

    /// Loads from an already opened [`GgufFile`] (lets a caller build the tokenizer from the
    /// same header).
    ///
    /// # Errors
    /// As [`Model::from_gguf`].
    pub fn from_gguf_file(file: &mut GgufFile, device: &Device, opts: LoadOptions) -> Result<Self> {
        let mut config = ModelConfig::from_gguf(file)?;
        // Per-frequency RoPE factors (Llama-3.1 "llama3" scaling, Phi-3 LongRoPE) would be
        // silently ignored below: refuse them.
        for name in ["rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"] {
            if file.has_tensor(name) {
                return Err(Error::Tensor {
                    op: "Model::from_gguf",
                    name: name.to_string(),
                    reason: "per-frequency RoPE factors (Llama-3.1 / LongRoPE scaling) are not implemented".into(),
                });
            }
        }
        if let Some(m) = opts.max_context {
            config.max_context = m;
        }
        let c = &config;
        let mut ld = Loader { file, device, dequantize: opts.dequantize_to_f32 };
        let h = c.hidden;
        let embed_q = ld.qtensor("token_embd.weight", &[c.vocab, h])?;
        let embed = if opts.dequantize_to_f32 {
            Embedding::Dense(embed_q.dequantize(device)?)
        } else {
            Embedding::Quant(Arc::new(embed_q))
        };
        let mut blocks = Vec::with_capacity(c.layers);
        let mut ropes: Vec<nq_rope::Rope> = Vec::with_capacity(2);
        for i in 0..c.layers {
            let rope = c.rope(i)?;
            let rope = match ropes.iter().position(|r| *r == rope) {
                Some(idx) => idx,
                None => {
                    ropes.push(rope);
                    ropes.len() - 1
                }
            };
            blocks.push(ld.block(c, i, rope)?);
        }
        let out_norm = ld.dense("output_norm.weight", &[h])?;
        let lm_head = if ld.file.has_tensor("output.weight") {
            ld.linear("output", c.vocab, h)?
        } else {
            Linear { w: embed.as_lm_head()?, b: None }
        };
        let activation = match c.architecture {
            Architecture::Gemma3 => Activation::GeluTanh,
            _ => Activation::Silu,
        };
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            blocks,
            ropes,
            out_norm,
            lm_head,
            activation,
        })
    }

    /// The hyper-parameters.
    #[must_use]
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `tokens` at positions `start_pos..start_pos + tokens.len()` and returns the logits
    /// of every token, `[t, vocab]` f32 (teacher-forced scoring needs them all). Keys and values
    /// of the new tokens are handed to `cache`, which must already hold positions
    /// `..start_pos` as the caller arranged.
    ///
    /// # Errors
    /// [`Error::EmptyInput`], [`Error::TokenOutOfRange`], [`Error::ContextTooLong`], or a
    /// candle / cache error.
    pub fn forward(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let x = self.hidden_states(tokens, start_pos, cache)?;
        self.head(&x)
    }

    /// Like [`forward`](Model::forward) but returns only the last token's logits, `[vocab]`:
    /// the output projection runs on one row (generation).
    ///
    /// # Errors
    /// As [`forward`](Model::forward).
    pub fn forward_last(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let x = self.hidden_states(tokens, start_pos, cache)?;
        let t = x.dim(0)?;
        Ok(self.head(&x.narrow(0, t - 1, 1)?)?.squeeze(0)?)
    }

    /// One decode step of several sequences at once: `tokens[i]` at `positions[i]` of the
    /// sequence whose cache is `caches[i]`. The projections and the MLP run on all rows in
    /// one product (the weights are read once per step, not once per sequence); each row
    /// attends over its own cache. Returns the logits `[sequences, vocab]`.
    ///
    /// # Errors
    /// [`Error::EmptyInput`] without sequences, [`Error::Shape`] when the three lengths
    /// differ; as [`forward`](Model::forward) otherwise.
    ///
    /// # Examples
    /// ```
    /// use nq_candle::{DenseCache, Model, ModelConfig, SyntheticWeights};
    /// let c = ModelConfig::llama_shaped(2, 4, 2, 16, 64, 128, 100, 512);
    /// let model = Model::synthetic(c, &candle_core::Device::Cpu, SyntheticWeights::F16, 7)?;
    /// let (mut a, mut b) = (DenseCache::new(), DenseCache::new());
    /// model.forward(&[1, 2, 3], 0, &mut a)?;
    /// model.forward(&[4, 5], 0, &mut b)?;
    /// let logits = model.forward_batch_last(&[9, 8], &[3, 2], &mut [&mut a, &mut b])?;
    /// assert_eq!(logits.dims(), &[2, 100]);
    /// assert_eq!((a.len(), b.len()), (4, 3));
    /// # Ok::<(), nq_candle::Error>(())
    /// ```
    pub fn forward_batch_last(
        &self,
        tokens: &[u32],
        positions: &[usize],
        caches: &mut [&mut dyn KvCache],
    ) -> Result<Tensor> {
        const OP: &str = "Model::forward_batch_last";
        if tokens.is_empty() {
            return Err(Error::EmptyInput { op: OP });
        }
        if positions.len() != tokens.len() || caches.len() != tokens.len() {
            return Err(Error::Shape {
                op: OP,
                reason: format!(
                    "{} tokens, {} positions, {} caches",
                    tokens.len(),
                    positions.len(),
                    caches.len()
                ),
            });
        }
        let mut pos = Vec::with_capacity(tokens.len());
        for (&t, &p) in tokens.iter().zip(positions) {
            pos.extend(self.validate(&[t], p)?);
        }
        let x = self.run_blocks(tokens, &pos, caches)?;
        self.head(&x)
    }

    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.out_norm, self.config.rms_eps)?;
        let logits = self.lm_head.forward(&x)?;
        Ok(match self.config.final_softcap {
            Some(cap) => softcap(&logits, cap)?,
            None => logits,
        })
    }

    fn validate(&self, tokens: &[u32], start_pos: usize) -> Result<Vec<u32>> {
        const OP: &str = "Model::forward";
        if tokens.is_empty() {
            return Err(Error::EmptyInput { op: OP });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(Error::TokenOutOfRange { op: OP, token: bad, vocab: self.config.vocab });
        }
        let end = start_pos.saturating_add(tokens.len());
        let limit = self.config.max_context.min(u32::MAX as usize);
        if end > limit {
            return Err(Error::ContextTooLong { op: OP, got: end, max: limit });
        }
        Ok((start_pos..end).map(|p| u32::try_from(p).unwrap_or(u32::MAX)).collect())
    }

    /// Residual stream after the last block, `[t, hidden]` (before the final norm).
    fn hidden_states(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let positions = self.validate(tokens, start_pos)?;
        self.run_blocks(tokens, &positions, &mut [cache])
    }

    /// The blocks over rows `tokens` at `positions`: one sequence (`caches` of one) or one
    /// row per sequence (`caches` of `tokens.len()`).
    fn run_blocks(
        &self,
        tokens: &[u32],
        positions: &[u32],
        caches: &mut [&mut dyn KvCache],
    ) -> Result<Tensor> {
        let ids = Tensor::from_slice(tokens, tokens.len(), &self.device)?;
        let mut x = self.embed.forward(&ids)?;
        if let Some(s) = self.config.embed_scale {
            x = x.affine(f64::from(s), 0.0)?;
        }
        let tables = self
            .ropes
            .iter()
            .map(|r| RopeTables::new(r, positions, &self.device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (i, b) in self.blocks.iter().enumerate() {
            x = self.block(b, i, &x, &tables[b.rope], positions, caches)?;
        }
        Ok(x)
    }

    fn block(
        &self,
        b: &Block,
        layer: usize,
        x: &Tensor,
        rope: &RopeTables,
        positions: &[u32],
        caches: &mut [&mut dyn KvCache],
    ) -> Result<Tensor> {
        let c = &self.config;
        let eps = c.rms_eps;
        let (t, _) = x.dims2()?;
        let (nq, nkv, d) = (c.q_heads, c.kv_heads, c.head_dim);
        let h = candle_nn::ops::rms_norm(x, &b.attn_norm, eps)?;
        let (q, k, v) = match &b.qkv {
            Qkv::Separate { q, k, v } => (q.forward(&h)?, k.forward(&h)?, v.forward(&h)?),
            Qkv::Fused(w) => {
                let y = w.forward(&h)?;
                (
                    y.narrow(1, 0, nq * d)?,
                    y.narrow(1, nq * d, nkv * d)?,
                    y.narrow(1, (nq + nkv) * d, nkv * d)?,
                )
            }
        };
        let heads = |y: &Tensor, n: usize, norm: Option<&Tensor>| -> candle_core::Result<Tensor> {
            let mut y = y.reshape((t, n, d))?;
            if let Some(w) = norm {
                y = candle_nn::ops::rms_norm(&y, w, eps)?;
            }
            y.transpose(0, 1)?.contiguous()
        };
        let q = rope.apply(&heads(&q, nq, b.q_norm.as_ref())?)?;
        let k = rope.apply(&heads(&k, nkv, b.k_norm.as_ref())?)?;
        let v = heads(&v, nkv, None)?;
        #[cfg(feature = "cuda")]
        let batched = match caches {
            [_] => None,
            _ => crate::compressed::batch_on_device(caches, layer, &q, &k, &v, positions, &b.spec)?,
        };
        #[cfg(not(feature = "cuda"))]
        let batched: Option<Tensor> = None;
        let a = match (batched, caches) {
            (Some(a), _) => a,
            (None, [cache]) => cache.attend_with(layer, &q, &k, &v, positions, &b.spec)?,
            // One row per sequence: each attends over its own cache.
            (None, caches) => {
                let row = |x: &Tensor, i| x.narrow(1, i, 1)?.contiguous();
                let outs = caches
                    .iter_mut()
                    .enumerate()
                    .map(|(i, cache)| {
                        let (q, k, v) = (row(&q, i)?, row(&k, i)?, row(&v, i)?);
                        cache.attend_with(layer, &q, &k, &v, &positions[i..=i], &b.spec)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&outs, 1)?
            }
        };
        let a = a.transpose(0, 1)?.reshape((t, nq * d))?;
        let mut o = b.o.forward(&a)?;
        if let Some(w) = &b.post_attn_norm {
            o = candle_nn::ops::rms_norm(&o, w, eps)?;
        }
        let x = (x + o)?;
        let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, eps)?;
        let (gate, up) = match &b.gate_up {
            GateUp::Separate { gate, up } => (gate.forward(&h)?, up.forward(&h)?),
            GateUp::Fused(w) => {
                let y = w.forward(&h)?;
                let f = c.ffn_hidden;
                (y.narrow(D::Minus1, 0, f)?, y.narrow(D::Minus1, f, f)?)
            }
        };
        let act = match self.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        let mut m = b.down.forward(&(act * up)?)?;
        if let Some(w) = &b.post_ffn_norm {
            m = candle_nn::ops::rms_norm(&m, w, eps)?;
        }
        Ok((x + m)?)
    }
}

fn softcap(x: &Tensor, cap: f32) -> candle_core::Result<Tensor> {
    let cap = f64::from(cap);
    (x / cap)?.tanh()? * cap
}
