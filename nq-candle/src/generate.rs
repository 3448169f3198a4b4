//! Generation with a compressed cache: the one-line API.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use nq_core::{Backend, CacheStats, CompressionConfig, CpuBackend, Preset};

use crate::compressed::{CandleBackend, CompressedKvCache};
use crate::model::Model;
use crate::tokenizer::GgufTokenizer;
use crate::{Error, Result};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// 0 = greedy (argmax); otherwise the softmax temperature.
    pub temperature: f32,
    /// Seed of the sampler (unused when greedy).
    pub seed: u64,
    /// Stop at the tokenizer's end-of-sequence token.
    pub stop_at_eos: bool,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions { temperature: 0.0, seed: 299_792_458, stop_at_eos: true }
    }
}

/// Why a generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The model produced its end-of-sequence token.
    EndOfSequence,
    /// The next token would pass the model's context length.
    ContextFull {
        /// The limit (`ModelConfig::max_context`).
        max_context: usize,
    },
}

/// What a generation did, measured.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Why generation stopped.
    pub stop: StopReason,
    /// Tokens of the prompt (including any document-start token).
    pub prompt_tokens: usize,
    /// Seconds of the prompt's prefill (0 when resumed from an archive).
    pub prefill_seconds: f64,
    /// Seconds spent compressing (prefill compression and decode-time blocks).
    pub compress_seconds: f64,
    /// Seconds of the decode loop.
    pub decode_seconds: f64,
    /// The cache after the last token.
    pub stats: CacheStats,
    /// The cache right after the prompt was compressed.
    pub prompt_stats: CacheStats,
}

/// A prompt prefilled and compressed: the state generation starts from, and what `nq save`
/// stores so that `nq run --resume` continues exactly as the fresh run would.
#[derive(Debug)]
pub struct Prefill<B: Backend = CpuBackend> {
    /// The compressed cache of the whole prompt.
    pub cache: CompressedKvCache<B>,
    /// The logits of the token after the prompt (one f32 per vocabulary entry), computed by
    /// the prefill before compression.
    pub logits: Vec<f32>,
    /// Tokens of the prompt: the position of the next token.
    pub tokens: usize,
    /// Seconds of the prefill.
    pub prefill_seconds: f64,
    /// Seconds of the prompt's compression.
    pub compress_seconds: f64,
}

impl<B: Backend> Clone for Prefill<B>
where
    B::Layer: Clone,
{
    fn clone(&self) -> Self {
        Prefill {
            cache: self.cache.clone(),
            logits: self.logits.clone(),
            tokens: self.tokens,
            prefill_seconds: self.prefill_seconds,
            compress_seconds: self.compress_seconds,
        }
    }
}

impl<B: Backend> Prefill<B> {
    /// This still-uncompressed prefill (from [`Generator::prefill_uncompressed`]) compressed
    /// under `cfg`: the state [`Generator::prefill`] with `cfg` reaches, without a second
    /// forward pass, when `cfg`'s observation window is at most the prefill's (the scorer
    /// needs the attention mass of the same window).
    ///
    /// # Errors
    /// [`Error::Compression`] (wrapped by candle) when `cfg` is invalid or this cache was
    /// already compressed.
    pub fn compressed_as(&self, cfg: CompressionConfig) -> Result<Prefill<B>> {
        let mut cache = self.cache.reconfigured(cfg)?;
        let t = Instant::now();
        cache.compress()?;
        Ok(Prefill {
            cache,
            logits: self.logits.clone(),
            tokens: self.tokens,
            prefill_seconds: self.prefill_seconds,
            compress_seconds: t.elapsed().as_secs_f64(),
        })
    }
}

impl SamplingOptions {
    /// Checks the temperature: finite and not negative (0 means greedy).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming `--temperature` and the value.
    ///
    /// # Examples
    /// ```
    /// use nq_candle::SamplingOptions;
    /// assert!(SamplingOptions { temperature: 0.7, ..Default::default() }.validate().is_ok());
    /// for t in [f32::NAN, f32::INFINITY, -1.0] {
    ///     assert!(SamplingOptions { temperature: t, ..Default::default() }.validate().is_err());
    /// }
    /// ```
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if t.is_finite() && t >= 0.0 {
            return Ok(());
        }
        Err(Error::InvalidOption {
            op: "generate",
            option: "--temperature",
            got: t.to_string(),
            reason: "must be a finite number >= 0 (0 = greedy)".into(),
        })
    }
}

/// A model, its tokenizer and a compression configuration: generate with a compressed cache.
///
/// ```no_run
/// # fn main() -> nq_candle::Result<()> {
/// use nq_candle::{Generator, Model, GgufTokenizer, LoadOptions, model_path};
/// use nq_core::Preset;
/// let path = model_path("smollm2")?;
/// let model = Model::from_gguf(&path, &candle_core::Device::Cpu, LoadOptions::default())?;
/// let tok = GgufTokenizer::from_gguf(&path)?;
/// let mut generator = Generator::new(model, tok, Preset::Balanced);
/// let out = generator.generate("The capital of France is", 32)?;
/// println!("{} ({:.1}x smaller cache)", out.text, out.stats.ratio());
/// # Ok(()) }
/// ```
///
/// The cache lives where the backend `B` keeps it: host memory by default; with the `cuda`
/// feature, [`Generator::with_backend`] and `nq_candle::cuda_backend(model.device())` keep it
/// on the model's GPU.
pub struct Generator<B: Backend = CpuBackend> {
    model: Model,
    tok: GgufTokenizer,
    cfg: CompressionConfig,
    backend: B,
    cache: Option<CompressedKvCache<B>>,
}

impl Generator {
    /// A generator compressing with `preset`.
    pub fn new(model: Model, tok: GgufTokenizer, preset: Preset) -> Self {
        Self::with_config(model, tok, preset.config())
    }

    /// A generator compressing with an explicit configuration.
    pub fn with_config(model: Model, tok: GgufTokenizer, cfg: CompressionConfig) -> Self {
        Self::with_backend(model, tok, cfg, CpuBackend)
    }
}

impl<B: CandleBackend> Generator<B> {
    /// A generator whose caches keep their storage in `backend`.
    pub fn with_backend(
        model: Model,
        tok: GgufTokenizer,
        cfg: CompressionConfig,
        backend: B,
    ) -> Self {
        Generator { model, tok, cfg, backend, cache: None }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tok
    }

    /// The cache of the last generation, if any.
    pub fn cache(&self) -> Option<&CompressedKvCache<B>> {
        self.cache.as_ref()
    }

    /// Greedy generation of up to `max_tokens` tokens after `prompt`.
    ///
    /// # Errors
    /// An empty prompt, a prompt longer than the model's context, model errors.
    pub fn generate(&mut self, prompt: &str, max_tokens: usize) -> Result<Generation> {
        self.generate_with(prompt, max_tokens, SamplingOptions::default(), |_| {})
    }

    /// Generation with sampling options, calling `on_text` with each piece of decoded text:
    /// [`prefill`](Self::prefill), then [`generate_from`](Self::generate_from).
    ///
    /// # Errors
    /// As [`prefill`](Self::prefill) and [`generate_from`](Self::generate_from).
    pub fn generate_with(
        &mut self,
        prompt: &str,
        max_tokens: usize,
        sampling: SamplingOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        sampling.validate()?;
        let start = self.prefill(prompt)?;
        self.generate_from(start, max_tokens, sampling, on_text)
    }

    /// Prefill `prompt` (with its document-start token where the tokenizer adds one) and
    /// compress its cache.
    ///
    /// # Errors
    /// [`Error::EmptyInput`] for an empty prompt, [`Error::ContextTooLong`] for a prompt
    /// longer than the model's context, model errors.
    pub fn prefill(&self, prompt: &str) -> Result<Prefill<B>> {
        let mut start = self.prefill_uncompressed(prompt)?;
        let t = Instant::now();
        start.cache.compress()?;
        start.compress_seconds = t.elapsed().as_secs_f64();
        Ok(start)
    }

    /// [`prefill`](Self::prefill) without the compression: the prompt's cache holds every
    /// token in f16 with its observed queries, so [`Prefill::compressed_as`] can compress it
    /// under several configurations after one forward pass (`nq needle` does).
    ///
    /// # Errors
    /// As [`prefill`](Self::prefill).
    pub fn prefill_uncompressed(&self, prompt: &str) -> Result<Prefill<B>> {
        let ids = self.tok.encode_document(prompt)?;
        if ids.is_empty() {
            return Err(Error::EmptyInput { op: "Generator::prefill" });
        }
        let mut cache =
            CompressedKvCache::with_backend(self.backend.clone(), self.model.config(), self.cfg)?;
        let started = Instant::now();
        let logits = self.model.forward_last(&ids, 0, &mut cache)?;
        let logits = logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let prefill_seconds = started.elapsed().as_secs_f64();
        Ok(Prefill { cache, logits, tokens: ids.len(), prefill_seconds, compress_seconds: 0.0 })
    }

    /// Generate up to `max_tokens` tokens from a prefilled prompt (fresh from
    /// [`prefill`](Self::prefill) or loaded by [`archive::load`](crate::archive::load): the
    /// same state gives the same tokens). Stops cleanly, keeping what was generated, at the
    /// end-of-sequence token (if `sampling.stop_at_eos`) or when the next token would pass
    /// the model's context length ([`Generation::stop`] says which).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a temperature that is not finite or is negative; model
    /// errors.
    pub fn generate_from(
        &mut self,
        start: Prefill<B>,
        max_tokens: usize,
        sampling: SamplingOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        sampling.validate()?;
        let Prefill { mut cache, logits, tokens: prompt_tokens, .. } = start;
        let prompt_stats = cache.stats();
        let max_context = self.model.config().max_context;
        let vocab = logits.len();
        let mut logits = Tensor::from_vec(logits, vocab, &Device::Cpu)?;
        let mut rng = sampling.seed;
        let mut stream = self.tok.stream();
        let mut tokens = Vec::new();
        let mut compress_seconds = start.compress_seconds;
        let mut pos = prompt_tokens;
        let started = Instant::now();
        let stop = loop {
            if tokens.len() == max_tokens {
                break StopReason::MaxTokens;
            }
            let next = pick(&logits, sampling.temperature, &mut rng)?;
            if sampling.stop_at_eos && Some(next) == self.tok.eos_id() {
                break StopReason::EndOfSequence;
            }
            tokens.push(next);
            if let Some(text) = stream.push(next)? {
                on_text(&text);
            }
            if tokens.len() == max_tokens {
                break StopReason::MaxTokens;
            }
            if pos + 1 > max_context {
                break StopReason::ContextFull { max_context };
            }
            logits = self.model.forward_last(&[next], pos, &mut cache)?;
            pos += 1;
            let t = Instant::now();
            cache.compress()?;
            compress_seconds += t.elapsed().as_secs_f64();
        };
        let decode_seconds = started.elapsed().as_secs_f64();
        let text = self.tok.decode(&tokens)?;
        let stats = cache.stats();
        self.cache = Some(cache);
        Ok(Generation {
            text,
            tokens,
            stop,
            prompt_tokens,
            prefill_seconds: start.prefill_seconds,
            compress_seconds,
            decode_seconds,
            stats,
            prompt_stats,
        })
    }
}

/// Argmax, or a temperature sample driven by a splitmix64 stream.
fn pick(logits: &Tensor, temperature: f32, rng: &mut u64) -> Result<u32> {
    let logits = logits.flatten_all()?;
    if temperature <= 0.0 {
        return Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?);
    }
    let probs = candle_nn::ops::softmax_last_dim(&(logits / f64::from(temperature))?)?;
    let probs: Vec<f32> = probs.to_vec1()?;
    let z = nq_core::splitmix64(rng);
    let u = (z >> 40) as f32 / (1u64 << 24) as f32;
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return Ok(i as u32);
        }
    }
    Ok((probs.len() - 1) as u32)
}
