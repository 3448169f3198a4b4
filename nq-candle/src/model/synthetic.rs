//! Decoders with random weights built in code: the shape of a real model without its file,
//! for speed runs where no checkpoint can be copied (decode speed does not depend on the
//! weights' values, only on their shapes and storage type).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, ModelConfig};
use super::{Activation, Block, Embedding, GateUp, Linear, Model, Qkv};
use crate::kv::AttnSpec;
use crate::{Error, Result};

/// How the matrices of a synthetic model are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticWeights {
    /// f16 matrices, multiplied in f16 (candle's `QMatMul::TensorF16`; the bytes of bf16).
    F16,
    /// GGML `Q4_0` (4.5 bits per weight), candle's quantized matmuls.
    Q4_0,
}

impl SyntheticWeights {
    /// The name used in result files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SyntheticWeights::F16 => "f16",
            SyntheticWeights::Q4_0 => "q4_0",
        }
    }
}

impl ModelConfig {
    /// A Llama-architecture configuration of the given shape (split-half RoPE with base
    /// 500000, RMSNorm epsilon 1e-5, no window, no soft cap), for [`Model::synthetic`].
    ///
    /// # Examples
    /// ```
    /// use nq_candle::ModelConfig;
    /// // Llama-3-8B's shape.
    /// let c = ModelConfig::llama_shaped(32, 32, 8, 128, 4096, 14336, 128_256, 131_072);
    /// assert_eq!(c.kv_elems_per_token(), 2 * 32 * 8 * 128);
    /// ```
    #[allow(clippy::too_many_arguments)] // one per dimension of the shape
    #[must_use]
    pub fn llama_shaped(
        layers: usize,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
        hidden: usize,
        ffn_hidden: usize,
        vocab: usize,
        max_context: usize,
    ) -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            layers,
            q_heads,
            kv_heads,
            head_dim,
            hidden,
            ffn_hidden,
            vocab,
            rope_theta: 500_000.0,
            rope_theta_local: None,
            rope_dim: head_dim,
            rope_interleaved: false,
            rope_scaling: nq_rope::RopeScaling::None,
            max_context,
            rms_eps: 1e-5,
            layer_windows: vec![None; layers],
            attn_scale: AttnSpec::standard(head_dim).scale,
            embed_scale: None,
            final_softcap: None,
            attn_softcap: None,
            add_bos: false,
        }
    }
}

/// Random matrices: on the device for f16; quantized on the host once per shape and copied
/// up per layer for `Q4_0` (candle quantizes on the host: one draw per shape keeps an 8B
/// model's build to seconds; the values repeat across layers, the bytes read do not).
struct MatrixSource {
    weights: SyntheticWeights,
    device: Device,
    quantized: RefCell<HashMap<(usize, usize), Vec<u8>>>,
}

/// `N(0, std^2)` values of `shape` from `seed` on `device`: candle's generator on a GPU (it
/// cannot seed the CPU's), a splitmix64 stream summed to a near-Gaussian on the CPU.
fn randn(
    device: &Device,
    shape: (usize, usize),
    std: f64,
    seed: u64,
) -> candle_core::Result<Tensor> {
    if device.is_cpu() {
        let mut state = seed;
        // A sum of 4 uniforms on [-1/2, 1/2) has variance 1/3.
        let k = (3.0f64).sqrt() * std;
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                let sum: f64 = (0..4)
                    .map(|_| {
                        (nq_core::splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                    })
                    .sum();
                (sum * k) as f32
            })
            .collect();
        return Tensor::from_vec(v, shape, device);
    }
    device.set_seed(seed)?;
    Tensor::randn(0f32, std as f32, shape, device)
}

impl MatrixSource {
    /// A `[out, inp]` matrix with entries ~ N(0, 1/inp) (activations keep their scale) from
    /// `seed`.
    fn matrix(&self, out: usize, inp: usize, seed: u64) -> Result<QMatMul> {
        let std = (1.0 / inp as f64).sqrt();
        match self.weights {
            SyntheticWeights::F16 => {
                let w = randn(&self.device, (out, inp), std, seed)?;
                Ok(QMatMul::TensorF16(w.to_dtype(DType::F16)?))
            }
            SyntheticWeights::Q4_0 => {
                let mut cache = self.quantized.borrow_mut();
                let bytes = match cache.entry((out, inp)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let w =
                            randn(&self.device, (out, inp), std, seed)?.to_device(&Device::Cpu)?;
                        e.insert(QTensor::quantize(&w, GgmlDType::Q4_0)?.data()?.into_owned())
                    }
                };
                let data = Cow::Borrowed(bytes.as_slice());
                let storage = QStorage::from_data(data, &self.device, GgmlDType::Q4_0)?;
                Ok(QMatMul::from_arc(Arc::new(QTensor::new(storage, (out, inp))?))?)
            }
        }
    }
}

impl Model {
    /// A decoder of `config`'s shape with random weights from `seed`, on `device`: norms of
    /// ones, an f32 embedding table, every matrix (the output head included) stored as
    /// `weights` says. Only [`Architecture::Llama`]-style blocks are built (separate Q/K/V
    /// without biases, SiLU MLP).
    ///
    /// # Errors
    /// [`Error::UnsupportedArchitecture`] for another architecture; a `hidden` or `ffn_hidden`
    /// not divisible by 32 with `Q4_0`; candle failures (out of device memory).
    ///
    /// # Examples
    /// ```
    /// use nq_candle::{DenseCache, Model, ModelConfig, SyntheticWeights};
    /// let c = ModelConfig::llama_shaped(2, 4, 2, 16, 64, 128, 100, 512);
    /// let model = Model::synthetic(c, &candle_core::Device::Cpu, SyntheticWeights::F16, 7)?;
    /// let logits = model.forward_last(&[1, 2, 3], 0, &mut DenseCache::new())?;
    /// assert_eq!(logits.dims(), &[100]);
    /// # Ok::<(), nq_candle::Error>(())
    /// ```
    pub fn synthetic(
        config: ModelConfig,
        device: &Device,
        weights: SyntheticWeights,
        seed: u64,
    ) -> Result<Model> {
        if config.architecture != Architecture::Llama {
            return Err(Error::UnsupportedArchitecture {
                op: "Model::synthetic",
                arch: config.architecture.to_string(),
                supported: "llama (synthetic weights)",
            });
        }
        let c = &config;
        let (h, d, nq, nkv, f) = (c.hidden, c.head_dim, c.q_heads, c.kv_heads, c.ffn_hidden);
        let src = MatrixSource {
            weights,
            device: device.clone(),
            quantized: RefCell::new(HashMap::new()),
        };
        let linear = |out, inp, seed| -> Result<Linear> {
            Ok(Linear { w: src.matrix(out, inp, seed)?, b: None })
        };
        let ones = Tensor::ones(h, DType::F32, device)?;
        let rope = c.rope(0)?;
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let s = seed.wrapping_add(16 * i as u64);
            blocks.push(Block {
                attn_norm: ones.clone(),
                qkv: Qkv::Separate {
                    q: linear(nq * d, h, s)?,
                    k: linear(nkv * d, h, s + 1)?,
                    v: linear(nkv * d, h, s + 2)?,
                },
                q_norm: None,
                k_norm: None,
                o: linear(h, nq * d, s + 3)?,
                post_attn_norm: None,
                ffn_norm: ones.clone(),
                gate_up: GateUp::Separate { gate: linear(f, h, s + 4)?, up: linear(f, h, s + 5)? },
                down: linear(h, f, s + 6)?,
                post_ffn_norm: None,
                spec: c.attn_spec(i),
                rope: 0,
            });
        }
        let embed = Embedding::Dense(randn(device, (c.vocab, h), 1.0, seed.wrapping_sub(1))?);
        let lm_head = linear(c.vocab, h, seed.wrapping_sub(2))?;
        Ok(Model {
            config,
            device: device.clone(),
            embed,
            blocks,
            ropes: vec![rope],
            out_norm: ones,
            lm_head,
            activation: Activation::Silu,
        })
    }
}
