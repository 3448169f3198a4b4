//! The evaluation protocol (shared DESIGN.md, "Measuring quality"): for each sample, prefill
//! `prefix` tokens, compress, then score the next `continuation` tokens teacher-forced against
//! the compressed cache; report perplexity change, KL divergence against the uncompressed run,
//! and measured compression ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use nq_core::{BudgetSplit, CompressionConfig, PoolKind, Preset, ScorerKind, Storage};
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

macro_rules! corpus_file {
    ($genre:literal, $name:literal) => {
        ($genre, $name, include_str!(concat!("../tests/data/corpus/", $genre, "/", $name, ".txt")))
    };
}

/// The project's corpus (`tests/data/corpus`, provenance and licenses in its PROVENANCE.md),
/// built into the program so an installed `nq` and every test find it, sorted by genre then
/// name as [`load_corpus`] sorts a folder.
const BUILTIN_CORPUS: [(&str, &str, &str); 12] = [
    corpus_file!("academic", "countreg_jss"),
    corpus_file!("academic", "lme4_jss"),
    corpus_file!("academic", "sandwich_jss"),
    corpus_file!("academic", "strucchange_jss"),
    corpus_file!("creative", "austen_mansfield_park"),
    corpus_file!("creative", "austen_northanger_abbey"),
    corpus_file!("creative", "austen_pride_and_prejudice"),
    corpus_file!("creative", "austen_sense_and_sensibility"),
    corpus_file!("technical", "py_descriptor_howto"),
    corpus_file!("technical", "py_functional_howto"),
    corpus_file!("technical", "py_logging_howto"),
    corpus_file!("technical", "py_regex_howto"),
];

/// The project's evaluation corpus (12 samples, 4 per genre: academic, creative, technical),
/// built into the program.
///
/// # Examples
/// ```
/// let samples = nq_candle::eval::builtin_corpus();
/// assert_eq!(samples.len(), 12);
/// assert_eq!((samples[0].genre.as_str(), samples[0].name.as_str()), ("academic", "countreg_jss"));
/// ```
pub fn builtin_corpus() -> Vec<Sample> {
    BUILTIN_CORPUS
        .iter()
        .map(|&(genre, name, text)| Sample {
            genre: genre.to_owned(),
            name: name.to_owned(),
            text: text.to_owned(),
        })
        .collect()
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
    /// Whether the continuation is compressed as it is scored.
    pub mode: EvalMode,
}

/// How the continuation meets the compressed cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalMode {
    /// As in generation: the continuation is fed in chunks of [`DECODE_CHUNK`] tokens,
    /// teacher-forced, and the cache compresses what is due after each chunk (a block of
    /// `block` tokens once it left the recent window), so later tokens attend to compressed
    /// continuation tokens. The default, and the README's table.
    #[default]
    Decode,
    /// Only the prompt is compressed; the continuation stays f16 (one forward pass).
    Prompt,
}

impl EvalMode {
    /// `decode` or `prompt`.
    pub fn name(self) -> &'static str {
        match self {
            EvalMode::Decode => "decode",
            EvalMode::Prompt => "prompt",
        }
    }
}

impl std::str::FromStr for EvalMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "decode" => Ok(EvalMode::Decode),
            "prompt" => Ok(EvalMode::Prompt),
            _ => Err(invalid(
                "--mode",
                s,
                "decode (compress the continuation as it is scored) or prompt",
            )),
        }
    }
}

/// Continuation tokens per forward pass in [`EvalMode::Decode`]: the cache compresses after
/// each chunk, so a block is compressed at most this many tokens later than in token-by-token
/// generation (16 is the recent window of every preset: a block leaves it within a chunk).
pub const DECODE_CHUNK: usize = 16;

impl EvalOptions {
    /// Checks that the protocol can score anything: a prefix and a continuation of at least
    /// one token each, and at least one configuration.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the option (`--prefix`, `--continuation`, `--preset`).
    pub fn validate(&self) -> Result<()> {
        let bad = |option, got: String, reason: &str| {
            Err(Error::InvalidOption { op: "eval", option, got, reason: reason.to_owned() })
        };
        if self.prefix == 0 {
            return bad("--prefix", "0".into(), "at least one token must be prefilled");
        }
        if self.continuation == 0 {
            return bad("--continuation", "0".into(), "at least one token must be scored");
        }
        if self.configs.is_empty() {
            return bad("--preset", String::new(), "name at least one preset or --variant");
        }
        Ok(())
    }
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            prefix: 1664,
            continuation: 512,
            configs: Preset::ALL.iter().map(|p| (p.name().to_owned(), p.config())).collect(),
            mode: EvalMode::Decode,
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
    /// fp16 bytes of every token the cache has seen at the end of the continuation / bytes
    /// the cache holds then, measured from its buffers as `ratio_resident` is. In
    /// [`EvalMode::Decode`] the cache then holds the prefix and the continuation, each
    /// compressed as generation would; in [`EvalMode::Prompt`] the same figure over that
    /// mode's final cache: the compressed prefix beside the continuation in f16.
    pub ratio_resident_final: f64,
    /// Bytes the cache holds at the end of the continuation (every buffer).
    pub resident_bytes_final: usize,
    /// fp16 bytes of every token the cache has seen at the end of the continuation:
    /// `2 * layers * kv_heads * (prefix + continuation - 1) * d * 2` (the last target is
    /// scored, never appended).
    pub fp16_bytes_final: usize,
    /// Seconds the compression of the prefix took.
    pub seconds: f64,
    /// The largest `ppl_delta_pct` of the pooled samples (aggregates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl_delta_pct_worst: Option<f64>,
    /// Bytes of the compressed prefix cache by component (`bytes_key_codes`,
    /// `bytes_value_codes`, ...; means over samples in aggregates).
    #[serde(flatten)]
    pub bytes: std::collections::BTreeMap<String, f64>,
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
/// [`Error::SampleTooShort`] for a sample shorter than `prefix + continuation` tokens (the
/// caller may skip it and go on), [`Error::InvalidOption`] for a protocol that
/// [`EvalOptions::validate`] refuses, model errors.
pub fn eval_sample(
    model: &Model,
    tok: &GgufTokenizer,
    sample: &Sample,
    opts: &EvalOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<SampleResult>> {
    let mut tokens: Vec<u32> = document_start(tok).into_iter().collect();
    tokens.extend(tok.encode(&sample.text)?);
    opts.validate()?;
    let (p, c) = (opts.prefix, opts.continuation);
    if tokens.len() < p + c {
        return Err(Error::SampleTooShort {
            sample: format!("{}/{}", sample.genre, sample.name),
            tokens: tokens.len(),
            needed: p + c,
        });
    }
    let targets = &tokens[p..p + c];
    let window = opts.configs.iter().map(|(_, c)| c.evict.window).max().unwrap_or(32);
    let mut base_cfg = Preset::None.config();
    base_cfg.evict.window = window;
    // The configurations are copies of this cache: it carries the model's RoPE when one of
    // them stores keys RoPE-free (the f16 cache itself never uses it).
    let rope = if opts.configs.iter().any(|(_, c)| c.remove_rope) {
        Some(crate::compressed::rope_of(model.config())?)
    } else {
        None
    };
    let mut base = CompressedKvCache::from_inner(
        nq_core::CompressedCache::new(crate::compressed::kv_shape(model.config()), base_cfg, rope)
            .map_err(candle_core::Error::wrap)?,
    );
    progress("prefill");
    let last = model.forward_last(&tokens[..p], 0, &mut base)?;
    let score = |cache: &mut CompressedKvCache| {
        score_continuation(model, &tokens[p..p + c - 1], p, &last, cache, opts.mode)
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
        let final_stats = cache.stats();
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
            ratio_resident_final: final_stats.ratio(),
            resident_bytes_final: final_stats.resident_bytes,
            fp16_bytes_final: final_stats.fp16_bytes,
            seconds,
            ppl_delta_pct_worst: None,
            bytes: stats
                .bytes
                .components()
                .into_iter()
                .map(|(k, v)| (format!("bytes_{k}"), v as f64))
                .collect(),
            nll_base: nll_base.clone(),
            nll,
            kl,
        });
    }
    Ok(out)
}

/// Teacher-forced logits of the continuation: `last` (the prefill's last logits) predicts
/// the first target, `inputs` (all but the last target, from position `at`) the rest. In
/// [`EvalMode::Decode`] they go through the cache in chunks of [`DECODE_CHUNK`], compressing
/// what is due after each.
fn score_continuation(
    model: &Model,
    inputs: &[u32],
    mut at: usize,
    last: &Tensor,
    cache: &mut CompressedKvCache,
    mode: EvalMode,
) -> Result<Tensor> {
    let mut rows = vec![last.reshape((1, ()))?];
    let chunk = match mode {
        EvalMode::Decode => DECODE_CHUNK,
        EvalMode::Prompt => inputs.len().max(1),
    };
    for part in inputs.chunks(chunk) {
        rows.push(model.forward(part, at, cache)?);
        if mode == EvalMode::Decode {
            cache.compress()?;
        }
        at += part.len();
    }
    Ok(Tensor::cat(&rows.iter().collect::<Vec<_>>(), 0)?)
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
                ratio_resident_final: avg(|r| r.ratio_resident_final),
                resident_bytes_final: (avg(|r| r.resident_bytes_final as f64)).round() as usize,
                fp16_bytes_final: (avg(|r| r.fp16_bytes_final as f64)).round() as usize,
                seconds: avg(|r| r.seconds),
                ppl_delta_pct_worst: rs.iter().map(|r| r.ppl_delta_pct).reduce(f64::max),
                bytes: rs[0]
                    .bytes
                    .keys()
                    .map(|k| {
                        let sum: f64 = rs.iter().filter_map(|r| r.bytes.get(k)).sum();
                        (k.clone(), sum / rs.len() as f64)
                    })
                    .collect(),
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

fn invalid(option: &'static str, got: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption { op: "eval", option, got: got.to_owned(), reason: reason.into() }
}

/// Apply one `KEY=VALUE` override (`nq eval --set`) to a configuration. Keys: keep, dkeep, sinks,
/// recent, window, block, cands, kbits, vbits, rope, center, vnorm, split, scorer, pool (the
/// observed scorer's pooling: `avgK` or `maxK`, `K` the odd kernel width, e.g. `max7`).
///
/// # Errors
/// [`Error::InvalidOption`] naming the key and the value for an unknown key or a value that
/// does not parse.
pub fn apply_override(cfg: &mut CompressionConfig, kv: &str) -> Result<()> {
    let (k, v) = kv.split_once('=').ok_or_else(|| invalid("--set", kv, "not KEY=VALUE"))?;
    let num = |v: &str| v.parse::<usize>().map_err(|_| invalid("--set", kv, "not a count"));
    let flag = |v: &str| v.parse::<bool>().map_err(|_| invalid("--set", kv, "not true/false"));
    let storage = |v: &str| match v.parse::<u8>() {
        Ok(16) => Ok(Storage::F16),
        Ok(bits @ 2..=4) => Ok(Storage::E8 { bits }),
        _ => Err(invalid("--set", kv, "bits must be 2, 3, 4 or 16")),
    };
    match k {
        "keep" => cfg.evict.keep = v.parse().map_err(|_| invalid("--set", kv, "not a number"))?,
        "dkeep" => {
            cfg.evict.decode_keep =
                Some(v.parse().map_err(|_| invalid("--set", kv, "not a number"))?);
        }
        "sinks" => cfg.evict.sinks = num(v)?,
        "recent" => cfg.evict.recent = num(v)?,
        "window" => cfg.evict.window = num(v)?,
        "block" => cfg.block = num(v)?,
        "cands" => {
            cfg.scale_candidates =
                u8::try_from(num(v)?).map_err(|_| invalid("--set", kv, "at most 255"))?
        }
        "kbits" => cfg.keys = storage(v)?,
        "vbits" => cfg.values = storage(v)?,
        "rope" => cfg.remove_rope = flag(v)?,
        "center" => cfg.center = flag(v)?,
        "vnorm" => cfg.evict.value_norm = flag(v)?,
        "split" => {
            cfg.evict.split = match v {
                "head" => BudgetSplit::PerHead,
                "layer" => BudgetSplit::PerLayer,
                "global" => BudgetSplit::Global,
                _ => return Err(invalid("--set", kv, "split is head, layer or global")),
            }
        }
        "pool" => {
            let (kind, kernel) = if let Some(k) = v.strip_prefix("avg") {
                (PoolKind::Avg, k)
            } else if let Some(k) = v.strip_prefix("max") {
                (PoolKind::Max, k)
            } else {
                return Err(invalid("--set", kv, "pool is avgK or maxK (K odd, e.g. max7)"));
            };
            let kernel = num(kernel)?;
            if kernel.is_multiple_of(2) {
                return Err(invalid("--set", kv, "the pooling kernel must be odd"));
            }
            (cfg.evict.pool, cfg.evict.pool_kernel) = (kind, kernel);
        }
        "scorer" => {
            cfg.evict.scorer = match v {
                "observed" => ScorerKind::Observed,
                "expected" => ScorerKind::Expected,
                "keykey" => ScorerKind::KeyKey,
                "keynorm" => ScorerKind::KeyNorm,
                m if m.starts_with("mixed:") => ScorerKind::Mixed {
                    mix: m[6..]
                        .parse()
                        .map_err(|_| invalid("--set", kv, "mixed:W needs a number"))?,
                },
                _ => {
                    return Err(invalid(
                        "--set",
                        kv,
                        "scorer is observed, expected, keykey, keynorm or mixed:W",
                    ));
                }
            }
        }
        _ => return Err(invalid("--set", kv, "unknown configuration key")),
    }
    Ok(())
}

/// The named configurations of `nq eval`: each preset of `presets` (with every `--set`
/// override applied, then named `PRESET-custom`), then each variant `NAME=PRESET[,KEY=VALUE...]`.
///
/// # Errors
/// [`Error::InvalidOption`] for an empty list, an unknown preset, a malformed or empty variant
/// name, a name given twice (a variant named like a preset would silently merge with it), or
/// a bad override; [`Error::Compression`] for a configuration nq-core refuses.
///
/// # Examples
/// ```
/// use nq_candle::eval::configs_from_args;
/// let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
/// let c = configs_from_args(&s(&["balanced"]), &[], &s(&["wide=max,recent=64"]))?;
/// assert_eq!((c[0].0.as_str(), c[1].0.as_str()), ("balanced", "wide"));
/// assert!(configs_from_args(&s(&["balanced"]), &[], &s(&["balanced=high"])).is_err());
/// # Ok::<(), nq_candle::Error>(())
/// ```
pub fn configs_from_args(
    presets: &[String],
    sets: &[String],
    variants: &[String],
) -> Result<Vec<(String, CompressionConfig)>> {
    let preset =
        |name: &str| name.parse::<Preset>().map_err(|e| invalid("--preset", name, e.to_string()));
    let mut configs: Vec<(String, CompressionConfig)> = Vec::new();
    let mut push = |name: String, cfg: CompressionConfig| {
        if configs.iter().any(|(n, _)| *n == name) {
            return Err(invalid(
                "--variant",
                &name,
                "this name is already taken by a preset or variant",
            ));
        }
        cfg.validate()?;
        configs.push((name, cfg));
        Ok(())
    };
    for p in presets.iter().filter(|p| !p.is_empty()) {
        let preset = preset(p)?;
        let mut cfg = preset.config();
        for kv in sets {
            apply_override(&mut cfg, kv)?;
        }
        let suffix = if sets.is_empty() { "" } else { "-custom" };
        push(format!("{}{suffix}", preset.name()), cfg)?;
    }
    for v in variants {
        let (name, rest) =
            v.split_once('=').ok_or_else(|| invalid("--variant", v, "not NAME=PRESET,..."))?;
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
        if !valid_name {
            return Err(invalid(
                "--variant",
                v,
                "the name must be non-empty ASCII letters, digits, - _ . +",
            ));
        }
        let mut parts = rest.split(',');
        let mut cfg = preset(parts.next().unwrap_or_default())?.config();
        for kv in sets.iter().map(String::as_str).chain(parts) {
            apply_override(&mut cfg, kv)?;
        }
        push(name.to_owned(), cfg)?;
    }
    if configs.is_empty() {
        return Err(invalid("--preset", "", "name at least one preset or --variant"));
    }
    Ok(configs)
}

/// What makes two evaluation results comparable: the same model, texts and lengths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protocol {
    /// The model's short name or GGUF file stem.
    pub model: String,
    /// `builtin` or the corpus folder given.
    pub corpus: String,
    /// Prefix tokens.
    pub prefix: usize,
    /// Continuation tokens.
    pub continuation: usize,
    /// Samples per genre, or `None` for all.
    pub samples_per_genre: Option<usize>,
    /// `decode` (the continuation compressed as it is scored) or `prompt`.
    pub mode: EvalMode,
}

impl Protocol {
    /// The protocol fields as a record carries them (`model`, `corpus`, `prefix`,
    /// `continuation`, `samples_per_genre`).
    fn of_record(v: &serde_json::Value) -> Option<Self> {
        Some(Protocol {
            model: v.get("model")?.as_str()?.to_owned(),
            corpus: v.get("corpus")?.as_str()?.to_owned(),
            prefix: usize::try_from(v.get("prefix")?.as_u64()?).ok()?,
            continuation: usize::try_from(v.get("continuation")?.as_u64()?).ok()?,
            samples_per_genre: match v.get("samples_per_genre")? {
                serde_json::Value::Null => None,
                n => Some(usize::try_from(n.as_u64()?).ok()?),
            },
            // Results written before the mode existed compressed the prompt only.
            mode: match v.get("mode").and_then(serde_json::Value::as_str) {
                Some("decode") => EvalMode::Decode,
                _ => EvalMode::Prompt,
            },
        })
    }

    fn describe(&self) -> String {
        let samples = self.samples_per_genre.map_or("all".to_owned(), |n| n.to_string());
        format!(
            "model {}, corpus {}, prefix {}, continuation {}, samples per genre {samples}, mode {}",
            self.model,
            self.corpus,
            self.prefix,
            self.continuation,
            self.mode.name()
        )
    }
}

/// Results of the evaluation of one model: records and the samples skipped as too short.
#[derive(Debug, Clone)]
pub struct EvalRun {
    /// How the results were measured.
    pub protocol: Protocol,
    /// Per-sample results.
    pub results: Vec<SampleResult>,
    /// Samples skipped: `(GENRE/NAME, tokens, tokens needed)`.
    pub skipped: Vec<(String, usize, usize)>,
}

impl EvalRun {
    /// The flat JSON records of configuration `name` (`"bench": "eval"`): per-sample results,
    /// then the per-genre and overall aggregates, each with the protocol's fields and
    /// `samples_skipped`; then one `"bench": "eval_skipped"` record per skipped sample.
    pub fn records(&self, name: &str) -> Vec<serde_json::Value> {
        let agg = aggregate(&self.results);
        let protocol = serde_json::to_value(&self.protocol).unwrap_or_default();
        let mut out: Vec<serde_json::Value> = self
            .results
            .iter()
            .chain(agg.iter())
            .filter(|r| r.preset == name)
            .filter_map(|r| serde_json::to_value(r).ok())
            .map(|mut v| {
                v["bench"] = "eval".into();
                v["samples_skipped"] = self.skipped.len().into();
                if let (Some(v), Some(p)) = (v.as_object_mut(), protocol.as_object()) {
                    v.extend(p.clone());
                }
                v
            })
            .collect();
        for (sample, tokens, needed) in &self.skipped {
            let mut v = serde_json::json!({
                "bench": "eval_skipped", "preset": name, "sample": sample,
                "tokens": tokens, "tokens_needed": needed,
            });
            if let (Some(v), Some(p)) = (v.as_object_mut(), protocol.as_object()) {
                v.extend(p.clone());
            }
            out.push(v);
        }
        out
    }

    /// Writes `DIR/eval-MODEL-NAME.json` for configuration `name` (write to a temporary file,
    /// then rename). A file there that holds results of another protocol is replaced only with
    /// `overwrite`.
    ///
    /// # Errors
    /// [`Error::ResultConflict`] naming the file and both protocols; [`Error::Io`] naming the
    /// file.
    pub fn write(&self, dir: &Path, name: &str, overwrite: bool) -> Result<PathBuf> {
        let suffix = match self.protocol.mode {
            EvalMode::Decode => "",
            EvalMode::Prompt => "-prompt",
        };
        let path = dir.join(format!("eval-{}-{name}{suffix}.json", self.protocol.model));
        if !overwrite && let Ok(text) = std::fs::read_to_string(&path) {
            let existing: Option<Protocol> = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.as_array()?.first().and_then(Protocol::of_record));
            if existing.as_ref() != Some(&self.protocol) {
                return Err(Error::ResultConflict {
                    path,
                    existing: existing
                        .map_or("unknown: not a result of this version".into(), |p| p.describe()),
                    wanted: self.protocol.describe(),
                });
            }
        }
        let text = serde_json::to_string_pretty(&self.records(name)).map_err(|e| Error::Io {
            op: "eval",
            path: path.clone(),
            source: std::io::Error::other(e),
        })? + "\n";
        crate::archive::write_atomically(&path, "eval", |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|source| Error::Io {
                op: "eval",
                path: path.clone(),
                source,
            })
        })?;
        Ok(path)
    }
}
