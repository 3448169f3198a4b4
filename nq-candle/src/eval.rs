//! The evaluation protocol (shared DESIGN.md, "Measuring quality"): for each sample, prefill
//! `prefix` tokens, compress, then score the next `continuation` tokens teacher-forced against
//! the compressed cache; report perplexity change, KL divergence against the uncompressed run,
//! and measured compression ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use nq_core::{CompressionConfig, Preset};
use serde::Serialize;

use crate::compressed::CompressedKvCache;
use crate::model::{Model, kl_divergence_from_logits, nll_from_logits};
use crate::tokenizer::GgufTokenizer;
use crate::{Error, Result};

/// One text to evaluate on.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Genre (the name of its folder).
    pub genre: String,
    /// File stem.
    pub name: String,
    /// The text.
    pub text: String,
}

/// Read every `GENRE/*.txt` under `dir`, sorted by genre then name.
///
/// # Errors
/// [`Error::Corpus`] when the folder cannot be read or holds no sample.
pub fn load_corpus(dir: &Path) -> Result<Vec<Sample>> {
    let io = |e: std::io::Error| Error::Corpus { path: dir.to_path_buf(), reason: e.to_string() };
    let mut out = Vec::new();
    let mut genres: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    genres.sort();
    for g in genres {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&g)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(io)?;
            let stem = |p: &Path| {
                p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            };
            out.push(Sample { genre: stem(&g), name: stem(&f), text });
        }
    }
    if out.is_empty() {
        return Err(Error::Corpus {
            path: dir.to_path_buf(),
            reason: "no GENRE/*.txt files".into(),
        });
    }
    Ok(out)
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Prompt tokens prefilled before compression.
    pub prefix: usize,
    /// Tokens scored after compression.
    pub continuation: usize,
    /// Named configurations to compare with the uncompressed run.
    pub configs: Vec<(String, CompressionConfig)>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            prefix: 1664,
            continuation: 512,
            configs: Preset::ALL.iter().map(|p| (p.name().to_owned(), p.config())).collect(),
        }
    }
}

/// The figures of one sample under one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SampleResult {
    /// Genre.
    pub genre: String,
    /// Sample name.
    pub sample: String,
    /// Configuration name.
    pub preset: String,
    /// Perplexity of the uncompressed run.
    pub ppl_base: f64,
    /// Perplexity with the compressed cache.
    pub ppl: f64,
    /// `100 * (ppl / ppl_base - 1)`.
    pub ppl_delta_pct: f64,
    /// Mean KL divergence `KL(uncompressed || compressed)` of next-token distributions, nats.
    pub kld: f64,
    /// fp16 bytes of the prefix cache / bytes the compressed cache holds.
    pub ratio_resident: f64,
    /// fp16 bytes of the prefix cache / bytes of its `.nqkv` archive.
    pub ratio_archive: f64,
    /// Bytes the compressed cache holds after compressing the prefix.
    pub resident_bytes: usize,
    /// Bytes of the archive.
    pub archive_bytes: usize,
    /// fp16 bytes of the full prefix cache.
    pub fp16_bytes: usize,
    /// Seconds the compression of the prefix took.
    pub seconds: f64,
    /// Per-token negative log-likelihoods, uncompressed (for pooled aggregates; not serialized).
    #[serde(skip)]
    pub nll_base: Vec<f64>,
    /// Per-token negative log-likelihoods, compressed.
    #[serde(skip)]
    pub nll: Vec<f64>,
    /// Per-position KL divergences.
    #[serde(skip)]
    pub kl: Vec<f64>,
}

/// The token that starts a document for this tokenizer (`<|endoftext|>` where it exists,
/// as the corpus provenance asks, else BOS).
pub fn document_start(tok: &GgufTokenizer) -> Option<u32> {
    tok.token_to_id("<|endoftext|>").or(tok.bos_id())
}

/// Evaluate one sample under every configuration; `progress` is told after each step.
///
/// # Errors
/// A sample shorter than `prefix + continuation` tokens, or model errors.
pub fn eval_sample(
    model: &Model,
    tok: &GgufTokenizer,
    sample: &Sample,
    opts: &EvalOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<SampleResult>> {
    let mut tokens: Vec<u32> = document_start(tok).into_iter().collect();
    tokens.extend(tok.encode(&sample.text)?);
    let (p, c) = (opts.prefix, opts.continuation);
    if tokens.len() < p + c || p == 0 || c == 0 {
        return Err(Error::Corpus {
            path: PathBuf::from(format!("{}/{}", sample.genre, sample.name)),
            reason: format!("{} tokens, need prefix {p} + continuation {c}", tokens.len()),
        });
    }
    let targets = &tokens[p..p + c];
    let window = opts.configs.iter().map(|(_, c)| c.evict.window).max().unwrap_or(32);
    let mut base_cfg = Preset::None.config();
    base_cfg.evict.window = window;
    let mut base = CompressedKvCache::new(model.config(), base_cfg)?;
    progress("prefill");
    let last = model.forward_last(&tokens[..p], 0, &mut base)?;
    let score = |cache: &mut CompressedKvCache| -> Result<Tensor> {
        let cont = model.forward(&tokens[p..p + c - 1], p, cache)?;
        Ok(Tensor::cat(&[&last.reshape((1, ()))?, &cont], 0)?)
    };
    progress("uncompressed");
    let base_logits = score(&mut base.clone())?;
    let nll_base = nll_from_logits(&base_logits, targets)?;
    let mut out = Vec::new();
    for (name, cfg) in &opts.configs {
        progress(name);
        let mut cache = base.reconfigured(*cfg)?;
        let started = Instant::now();
        cache.compress()?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = cache.stats();
        let archive = crate::archive::to_bytes(&cache, model.config(), name)?;
        let logits = score(&mut cache)?;
        let nll = nll_from_logits(&logits, targets)?;
        let kl = kl_divergence_from_logits(&base_logits, &logits)?;
        let ppl_base = mean(&nll_base).exp();
        let ppl = mean(&nll).exp();
        out.push(SampleResult {
            genre: sample.genre.clone(),
            sample: sample.name.clone(),
            preset: name.clone(),
            ppl_base,
            ppl,
            ppl_delta_pct: 100.0 * (ppl / ppl_base - 1.0),
            kld: mean(&kl),
            ratio_resident: stats.ratio(),
            ratio_archive: stats.fp16_bytes as f64 / archive.len().max(1) as f64,
            resident_bytes: stats.resident_bytes,
            archive_bytes: archive.len(),
            fp16_bytes: stats.fp16_bytes,
            seconds,
            nll_base: nll_base.clone(),
            nll,
            kl,
        });
    }
    Ok(out)
}

/// Pool sample results into one aggregate per `(genre, preset)` and one per preset with
/// genre `"all"`: perplexities from pooled token NLLs, means of the other figures.
pub fn aggregate(results: &[SampleResult]) -> Vec<SampleResult> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in results {
        for g in [r.genre.clone(), "all".to_owned()] {
            let k = (g, r.preset.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys.into_iter()
        .map(|(genre, preset)| {
            let rs: Vec<&SampleResult> = results
                .iter()
                .filter(|r| r.preset == preset && (genre == "all" || r.genre == genre))
                .collect();
            let pooled = |f: fn(&SampleResult) -> &Vec<f64>| {
                rs.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f64>>()
            };
            let avg = |f: fn(&SampleResult) -> f64| {
                rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64
            };
            let ppl_base = mean(&pooled(|r| &r.nll_base)).exp();
            let ppl = mean(&pooled(|r| &r.nll)).exp();
            SampleResult {
                genre,
                sample: format!("{} samples", rs.len()),
                preset,
                ppl_base,
                ppl,
                ppl_delta_pct: 100.0 * (ppl / ppl_base - 1.0),
                kld: mean(&pooled(|r| &r.kl)),
                ratio_resident: avg(|r| r.ratio_resident),
                ratio_archive: avg(|r| r.ratio_archive),
                resident_bytes: (avg(|r| r.resident_bytes as f64)).round() as usize,
                archive_bytes: (avg(|r| r.archive_bytes as f64)).round() as usize,
                fp16_bytes: (avg(|r| r.fp16_bytes as f64)).round() as usize,
                seconds: avg(|r| r.seconds),
                nll_base: Vec::new(),
                nll: Vec::new(),
                kl: Vec::new(),
            }
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}
