//! Generation with a compressed cache: the one-line API.

use std::time::Instant;

use candle_core::{D, Tensor};
use nq_core::{CacheStats, CompressionConfig, Preset};

use crate::compressed::CompressedKvCache;
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

/// What a generation did, measured.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt (including any document-start token).
    pub prompt_tokens: usize,
    /// Seconds of the prompt's prefill.
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
pub struct Generator {
    model: Model,
    tok: GgufTokenizer,
    cfg: CompressionConfig,
    cache: Option<CompressedKvCache>,
}

impl Generator {
    /// A generator compressing with `preset`.
    pub fn new(model: Model, tok: GgufTokenizer, preset: Preset) -> Self {
        Self::with_config(model, tok, preset.config())
    }

    /// A generator compressing with an explicit configuration.
    pub fn with_config(model: Model, tok: GgufTokenizer, cfg: CompressionConfig) -> Self {
        Generator { model, tok, cfg, cache: None }
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
    pub fn cache(&self) -> Option<&CompressedKvCache> {
        self.cache.as_ref()
    }

    /// Greedy generation of up to `max_tokens` tokens after `prompt`.
    ///
    /// # Errors
    /// An empty prompt, a prompt longer than the model's context, model errors.
    pub fn generate(&mut self, prompt: &str, max_tokens: usize) -> Result<Generation> {
        self.generate_with(prompt, max_tokens, SamplingOptions::default(), |_| {})
    }

    /// Generation with sampling options, calling `on_text` with each piece of decoded text.
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    pub fn generate_with(
        &mut self,
        prompt: &str,
        max_tokens: usize,
        sampling: SamplingOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let ids = self.tok.encode_document(prompt)?;
        if ids.is_empty() {
            return Err(Error::EmptyInput { op: "Generator::generate" });
        }
        let mut cache = CompressedKvCache::new(self.model.config(), self.cfg)?;
        let started = Instant::now();
        let logits = self.model.forward_last(&ids, 0, &mut cache)?;
        let prefill_seconds = started.elapsed().as_secs_f64();
        let t = Instant::now();
        cache.compress()?;
        let compress_seconds = t.elapsed().as_secs_f64();
        let prompt_stats = cache.stats();
        let mut g = self.decode_from(cache, logits, ids.len(), max_tokens, sampling, on_text)?;
        g.prompt_tokens = ids.len();
        g.prefill_seconds = prefill_seconds;
        g.compress_seconds += compress_seconds;
        g.prompt_stats = prompt_stats;
        Ok(g)
    }

    /// Continue from a restored cache: feed `next` at position `pos`, then decode.
    ///
    /// # Errors
    /// Model errors.
    pub fn resume_with(
        &mut self,
        mut cache: CompressedKvCache,
        next: u32,
        pos: usize,
        max_tokens: usize,
        sampling: SamplingOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let prompt_stats = cache.stats();
        let logits = self.model.forward_last(&[next], pos, &mut cache)?;
        let mut g = self.decode_from(cache, logits, pos + 1, max_tokens, sampling, on_text)?;
        g.prompt_stats = prompt_stats;
        Ok(g)
    }

    fn decode_from(
        &mut self,
        mut cache: CompressedKvCache,
        mut logits: Tensor,
        mut pos: usize,
        max_tokens: usize,
        sampling: SamplingOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let mut rng = sampling.seed;
        let mut stream = self.tok.stream();
        let mut tokens = Vec::new();
        let mut compress_seconds = 0.0;
        let started = Instant::now();
        for _ in 0..max_tokens {
            let next = pick(&logits, sampling.temperature, &mut rng)?;
            if sampling.stop_at_eos && Some(next) == self.tok.eos_id() {
                break;
            }
            tokens.push(next);
            if let Some(text) = stream.push(next)? {
                on_text(&text);
            }
            if tokens.len() == max_tokens {
                break;
            }
            logits = self.model.forward_last(&[next], pos, &mut cache)?;
            pos += 1;
            let t = Instant::now();
            cache.compress()?;
            compress_seconds += t.elapsed().as_secs_f64();
        }
        let decode_seconds = started.elapsed().as_secs_f64();
        let text = self.tok.decode(&tokens)?;
        let stats = cache.stats();
        self.cache = Some(cache);
        Ok(Generation {
            text,
            tokens,
            prompt_tokens: 0,
            prefill_seconds: 0.0,
            compress_seconds,
            decode_seconds,
            stats,
            prompt_stats: stats,
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
    *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
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
