//! The retrieval check (issue 12): a pass key hidden in prose, asked for at the end.
//!
//! Perplexity averages over every token, so it hides the worst damage a compressed cache can
//! do: losing the one token a later question needs. [`cases`] builds the prompts in code,
//! deterministically from a seed: prose of the built-in corpus's creative genre
//! ([`builtin_corpus`](crate::eval::builtin_corpus)) cut at sentence boundaries, the sentence
//! [`needle`] inserted at a depth (the fraction of the filler's tokens before it), and a
//! question at the end, all through the model's chat template. [`answer_case`] prefills a
//! prompt once, compresses that cache under each configuration as [`Generator::prefill`]
//! would, generates greedily through [`Generator::generate_from`] (decode-time blocks are
//! compressed as in `nq run`) and scores exact retrieval: the answer holds the key's digits.
//!
//! ```
//! use nq_candle::needle::{NeedleOptions, cases_with};
//! let opts = NeedleOptions { lengths: vec![400], depths: vec![0.5], keys: 2, ..Default::default() };
//! // Any token counter and chat template will do; `cases` uses the model's.
//! let words = |s: &str| Ok(s.split_whitespace().count());
//! let plain = |s: &str| Ok(s.to_owned());
//! let made = cases_with(&opts, words, plain)?;
//! assert_eq!(made.len(), 2);
//! assert_eq!(made[0].prompt.matches(&made[0].key_text()).count(), 1);
//! # Ok::<(), nq_candle::Error>(())
//! ```

use std::path::{Path, PathBuf};

use nq_core::{CompressionConfig, Preset};

use crate::generate::{Generator, SamplingOptions};
use crate::model::Model;
use crate::tokenizer::GgufTokenizer;
use crate::{Error, Result};

/// The sentence that hides `key`, with the space that joins it to the sentence before.
pub fn needle(key: u32) -> String {
    format!(" The pass key is {key}. Remember it.")
}

/// What the user's message says before the prose.
pub const INTRO: &str = "There is a pass key hidden in the text below. Find it and remember it: \
                     you will be asked for it at the end.\n\n";

/// The question after the prose.
pub const QUESTION: &str = "What is the pass key? Answer with the number only.";

/// How much prose a prompt must hold at least, in tokens: fewer cannot place the needle at
/// distinct depths.
pub const MIN_FILLER_TOKENS: usize = 128;

/// What to measure: every `(length, depth)` cell gets `keys` prompts with different keys and
/// prose.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleOptions {
    /// Prompt lengths in tokens (chat template, prose, needle and question together).
    pub lengths: Vec<usize>,
    /// Needle depths: the fraction of the prose's tokens before the needle, each in `(0, 1)`.
    pub depths: Vec<f64>,
    /// Prompts (keys) per cell, at least 1.
    pub keys: usize,
    /// Seed of the keys and of where the prose starts.
    pub seed: u64,
    /// Tokens generated for each answer (greedy; generation stops early at end of sequence).
    pub max_tokens: usize,
}

impl Default for NeedleOptions {
    fn default() -> Self {
        NeedleOptions {
            lengths: vec![1536, 2560, 4000],
            depths: vec![0.1, 0.25, 0.5, 0.75, 0.9],
            keys: 3,
            seed: 12,
            max_tokens: 12,
        }
    }
}

fn invalid(option: &'static str, got: impl ToString, reason: impl Into<String>) -> Error {
    Error::InvalidOption { op: "needle", option, got: got.to_string(), reason: reason.into() }
}

impl NeedleOptions {
    /// Checks every option that needs no tokenizer: at least one length and depth, each
    /// depth inside `(0, 1)`, at least one key and one generated token. Lengths too short
    /// for the needle are found by [`cases_with`], which knows the template's size.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the option (`--lengths`, `--depths`, `--keys`,
    /// `--max-tokens`) and the value.
    pub fn validate(&self) -> Result<()> {
        if self.lengths.is_empty() {
            return Err(invalid("--lengths", "", "name at least one prompt length"));
        }
        if self.depths.is_empty() {
            return Err(invalid("--depths", "", "name at least one depth"));
        }
        if let Some(d) = self.depths.iter().find(|d| !(**d > 0.0 && **d < 1.0)) {
            return Err(invalid("--depths", d, "a depth is a fraction strictly inside (0, 1)"));
        }
        if self.keys == 0 {
            return Err(invalid("--keys", 0, "at least one key (trial) per cell"));
        }
        if self.max_tokens == 0 {
            return Err(invalid("--max-tokens", 0, "at least one token must be generated"));
        }
        Ok(())
    }
}

/// One prompt: a key hidden at a depth of a prompt of a length.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleCase {
    /// The prompt length asked for, in tokens.
    pub length: usize,
    /// The depth asked for.
    pub depth: f64,
    /// Which of the cell's keys this is (0-based).
    pub trial: usize,
    /// The pass key, five digits.
    pub key: u32,
    /// The whole prompt, chat template applied.
    pub prompt: String,
    /// Tokens of `prompt`, as the counter measured it (document-start token excluded).
    pub prompt_tokens: usize,
    /// Tokens of the prose, needle excluded.
    pub filler_tokens: usize,
    /// Tokens of the prose before the needle: `needle_at / filler_tokens` is the depth
    /// reached, within half a sentence of the one asked for.
    pub needle_at: usize,
}

impl NeedleCase {
    /// The key as the answer must contain it.
    pub fn key_text(&self) -> String {
        self.key.to_string()
    }

    /// Exact retrieval: the answer contains the key's five digits in a row.
    pub fn found(&self, answer: &str) -> bool {
        answer.contains(&self.key_text())
    }
}

/// Where sentences end: after `.`, `!` or `?` (and any closing quote or bracket) followed by
/// whitespace, or at a blank line; not after a title such as `Mr.`.
fn sentence_end(text: &str, i: usize) -> bool {
    let b = text.as_bytes();
    match b[i - 1] {
        b'\n' => i >= 2 && b[i - 2] == b'\n',
        b'.' => {
            let word = text[..i - 1].rsplit(|c: char| !c.is_ascii_alphabetic()).next();
            !matches!(word, Some("Mr" | "Mrs" | "Ms" | "Dr" | "St" | "No"))
        }
        b'!' | b'?' => true,
        b'"' | b'\'' | b')' => i >= 2 && sentence_end(text, i - 1) && b[i - 2] != b'\n',
        _ => false,
    }
}

/// `text` cut into sentences, each starting with the whitespace before it, so that
/// tokenizers that split words at whitespace count the pieces as they count the whole.
fn sentences(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..b.len() {
        if b[i].is_ascii_whitespace() && !b[i - 1].is_ascii_whitespace() && sentence_end(text, i) {
            out.push(&text[start..i]);
            start = i;
        }
    }
    out.push(&text[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// The prose every prompt draws from: the creative genre's sentences, text after text (each
/// text's first sentence opens a paragraph), with their token counts.
struct Prose {
    pieces: Vec<(String, usize)>,
}

impl Prose {
    fn new(mut count: impl FnMut(&str) -> Result<usize>) -> Result<Prose> {
        let mut pieces = Vec::new();
        for sample in crate::eval::builtin_corpus().iter().filter(|s| s.genre == "creative") {
            for (i, s) in sentences(&sample.text).into_iter().enumerate() {
                let s = if i == 0 { format!("\n\n{s}") } else { s.to_owned() };
                let n = count(&s)?;
                pieces.push((s, n));
            }
        }
        Ok(Prose { pieces })
    }

    /// Sentences from `start` on (wrapping around) until their tokens reach about `budget`:
    /// the last one is kept if that lands closer to the budget. At most `budget + 1`
    /// sentences, so a counter that finds no token in a sentence cannot loop forever.
    fn take(&self, start: usize, budget: usize) -> Vec<(&str, usize)> {
        let mut out: Vec<(&str, usize)> = Vec::new();
        let mut total = 0;
        let from = start % self.pieces.len().max(1);
        for (s, n) in self.pieces.iter().cycle().skip(from).take(budget + 1) {
            if total >= budget {
                break;
            }
            if total + n > budget && total + n - budget > budget - total {
                break;
            }
            let s = if out.is_empty() { s.trim_start() } else { s.as_str() };
            out.push((s, *n));
            total += n;
        }
        out
    }
}

/// The user's message: the instruction, the prose holding the needle, the question.
fn frame(prose: &str) -> String {
    format!("{INTRO}{prose}\n\n{QUESTION}")
}

/// A per-cell random stream: a cell's prompts do not depend on which other cells are asked.
fn cell_rng(seed: u64, length: usize, depth: f64, trial: usize) -> u64 {
    let mut s = seed;
    for x in [length as u64, depth.to_bits(), trial as u64] {
        s = nq_core::splitmix64(&mut s) ^ x;
    }
    s
}

/// One prompt of `length` tokens with `key` at `depth`; the prose starts at sentence
/// `start`. `overhead` is what the frame and needle cost in tokens.
fn build(
    prose: &Prose,
    count: &mut impl FnMut(&str) -> Result<usize>,
    wrap: &impl Fn(&str) -> Result<String>,
    (length, depth, trial): (usize, f64, usize),
    key: u32,
    start: usize,
    overhead: usize,
) -> Result<NeedleCase> {
    let filler = prose.take(start, length - overhead);
    let filler_tokens: usize = filler.iter().map(|(_, n)| n).sum();
    let target = depth * filler_tokens as f64;
    let (mut at, mut before) = (0, 0);
    for (i, (_, n)) in filler.iter().enumerate() {
        if ((before + n) as f64 - target).abs() > (before as f64 - target).abs() {
            break;
        }
        (at, before) = (i + 1, before + n);
    }
    let mut text: String = filler[..at].iter().map(|(s, _)| *s).collect();
    text.push_str(&needle(key));
    text.extend(filler[at..].iter().map(|(s, _)| *s));
    let prompt = wrap(&frame(text.trim_start()))?;
    let prompt_tokens = count(&prompt)?;
    Ok(NeedleCase {
        length,
        depth,
        trial,
        key,
        prompt,
        prompt_tokens,
        filler_tokens,
        needle_at: before,
    })
}

/// Every prompt of `opts` with the model's tokenizer and chat template (a base model, which
/// has none, gets the prose and question followed by `The pass key is`).
///
/// # Errors
/// As [`cases_with`], and tokenizer errors.
pub fn cases(tok: &GgufTokenizer, opts: &NeedleOptions) -> Result<Vec<NeedleCase>> {
    let count = |s: &str| Ok(tok.encode(s)?.len());
    let wrap = |s: &str| Ok(tok.chat_prompt(s)?.unwrap_or_else(|| format!("{s}\nThe pass key is")));
    cases_with(opts, count, wrap)
}

/// Every prompt of `opts`, in order of length, depth, trial: `count` measures text in tokens
/// and `wrap` applies the chat template to the user's message. Keys are five digits that do
/// not occur in the prose; keys and prose start are drawn from `opts.seed` per cell.
///
/// # Errors
/// [`Error::InvalidOption`] for options [`NeedleOptions::validate`] refuses, or a length that
/// leaves fewer than [`MIN_FILLER_TOKENS`] tokens of prose after the template, needle and
/// question; errors of `count` and `wrap`.
pub fn cases_with(
    opts: &NeedleOptions,
    mut count: impl FnMut(&str) -> Result<usize>,
    wrap: impl Fn(&str) -> Result<String>,
) -> Result<Vec<NeedleCase>> {
    opts.validate()?;
    let overhead = count(&wrap(&frame(needle(10_000).trim_start()))?)?;
    if let Some(&short) = opts.lengths.iter().find(|&&l| l < overhead + MIN_FILLER_TOKENS) {
        return Err(invalid(
            "--lengths",
            short,
            format!(
                "the template, needle and question take {overhead} tokens and the prose at \
                 least {MIN_FILLER_TOKENS}: ask for {} or more",
                overhead + MIN_FILLER_TOKENS
            ),
        ));
    }
    let prose = Prose::new(&mut count)?;
    let mut out = Vec::new();
    for &length in &opts.lengths {
        for &depth in &opts.depths {
            for trial in 0..opts.keys {
                let mut rng = cell_rng(opts.seed, length, depth, trial);
                let start =
                    (nq_core::splitmix64(&mut rng) % prose.pieces.len().max(1) as u64) as usize;
                let mut case;
                loop {
                    let key = 10_000 + (nq_core::splitmix64(&mut rng) % 90_000) as u32;
                    let cell = (length, depth, trial);
                    case = build(&prose, &mut count, &wrap, cell, key, start, overhead)?;
                    if case.prompt.matches(&case.key_text()).count() == 1 {
                        break;
                    }
                }
                out.push(case);
            }
        }
    }
    Ok(out)
}

/// One configuration's answer to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The configuration's name.
    pub config: String,
    /// The generated text.
    pub text: String,
    /// Whether it holds the key ([`NeedleCase::found`]).
    pub found: bool,
    /// fp16 bytes of the prompt's cache / bytes the compressed cache holds at the question.
    pub ratio_resident: f64,
    /// Bytes the compressed cache holds at the question.
    pub resident_bytes: usize,
    /// Tokens the model saw (document-start token included).
    pub prompt_tokens: usize,
    /// Fraction of the key's tokens, over every (layer, kv head), still in the cache at the
    /// question (compressed or in an f16 window); 1 when nothing of the key was evicted, NaN
    /// (`null` in JSON) when [`key_positions`] could not locate the key.
    pub key_kept: f64,
    /// The same fraction for the key token kept least.
    pub key_kept_min: f64,
}

/// Positions of the key's tokens in the prompt as the model sees it (document-start token
/// included): the tokens of the needle, up to the key, that hold digits. The needle is
/// searched for up to its key only: what follows the key may merge with the next text.
///
/// # Errors
/// Tokenizer errors; [`Error::Shape`] if the needle's tokens are not found in the prompt's.
pub fn key_positions(tok: &GgufTokenizer, case: &NeedleCase) -> Result<Vec<u32>> {
    let ids = tok.encode_document(&case.prompt)?;
    let sentence = needle(case.key);
    let key_end = sentence.find(&case.key_text()).unwrap_or(0) + case.key_text().len();
    let sentence = tok.encode(&sentence[..key_end])?;
    let at =
        ids.windows(sentence.len()).position(|w| w == sentence).ok_or_else(|| Error::Shape {
            op: "needle::key_positions",
            reason: format!("the needle's {} tokens are not in the prompt's", sentence.len()),
        })?;
    let mut out = Vec::new();
    for (i, &id) in sentence.iter().enumerate() {
        if tok.decode(&[id])?.chars().any(|c| c.is_ascii_digit()) {
            out.push(u32::try_from(at + i).unwrap_or(u32::MAX));
        }
    }
    Ok(out)
}

/// Per key token, the fraction of (layer, kv head) whose cache still holds it.
fn kept(cache: &crate::CompressedKvCache, key: &[u32]) -> Vec<f64> {
    let c = cache.inner();
    let shape = c.shape();
    let slots = (shape.layers * shape.kv_heads).max(1) as f64;
    key.iter()
        .map(|p| {
            let mut n = 0;
            for l in 0..shape.layers {
                let dense = c.dense_positions(l).binary_search(p).is_ok();
                n += (0..shape.kv_heads)
                    .filter(|&h| dense || c.positions(l, h).contains(*p))
                    .count();
            }
            n as f64 / slots
        })
        .collect()
}

/// Answer `case` with each configuration: one uncompressed prefill (observation window the
/// largest of the configurations'), compressed under each configuration as
/// [`Generator::prefill`] would ([`Prefill::compressed_as`](crate::Prefill::compressed_as)),
/// then greedy generation of up to `max_tokens` tokens through
/// [`Generator::generate_from`], which compresses decode-time blocks as `nq run` does.
///
/// # Errors
/// Model errors, [`Error::ContextTooLong`] for a prompt past the model's context, invalid
/// configurations.
pub fn answer_case(
    model: &Model,
    tok: &GgufTokenizer,
    case: &NeedleCase,
    configs: &[(String, CompressionConfig)],
    max_tokens: usize,
) -> Result<Vec<Answer>> {
    let mut base = Preset::None.config();
    base.evict.window = configs.iter().map(|(_, c)| c.evict.window).max().unwrap_or(128);
    let mut generator = Generator::with_config(model.clone(), tok.clone(), base);
    let prefill = generator.prefill_uncompressed(&case.prompt)?;
    // A diagnostic: a prompt whose key cannot be located still gets its answers.
    let key = key_positions(tok, case).ok();
    let mut out = Vec::with_capacity(configs.len());
    for (name, cfg) in configs {
        let start = prefill.compressed_as(*cfg)?;
        let key_kept = key.as_ref().map(|k| kept(&start.cache, k)).unwrap_or_default();
        let nan_if_empty = |v: f64| if key_kept.is_empty() { f64::NAN } else { v };
        let g = generator.generate_from(start, max_tokens, SamplingOptions::default(), |_| {})?;
        out.push(Answer {
            config: name.clone(),
            found: case.found(&g.text),
            text: g.text,
            ratio_resident: g.prompt_stats.ratio(),
            resident_bytes: g.prompt_stats.resident_bytes,
            prompt_tokens: g.prompt_tokens,
            key_kept: nan_if_empty(key_kept.iter().sum::<f64>() / key_kept.len().max(1) as f64),
            key_kept_min: nan_if_empty(key_kept.iter().copied().fold(1.0, f64::min)),
        });
    }
    Ok(out)
}

/// Results of the retrieval check of one model.
#[derive(Debug, Clone)]
pub struct NeedleRun {
    /// The model's short name or GGUF file stem.
    pub model: String,
    /// What was asked.
    pub opts: NeedleOptions,
    /// Each prompt with its answers, the uncompressed reference (`none`) first.
    pub results: Vec<(NeedleCase, Vec<Answer>)>,
}

/// The name the uncompressed reference's answers carry; [`NeedleRun::records`] counts a
/// configuration's `lost_vs_none` against it.
pub const REFERENCE: &str = "none";

impl NeedleRun {
    /// The configurations answered, in the order they were run.
    pub fn configs(&self) -> Vec<&str> {
        self.results
            .first()
            .map(|(_, a)| a.iter().map(|a| a.config.as_str()).collect())
            .unwrap_or_default()
    }

    fn answers<'a>(
        &'a self,
        config: &'a str,
    ) -> impl Iterator<Item = (&'a NeedleCase, &'a Answer)> {
        self.results
            .iter()
            .filter_map(move |(c, a)| a.iter().find(|a| a.config == config).map(|a| (c, a)))
    }

    /// The flat JSON records: per configuration, one `"bench": "needle"` record per
    /// `(length, depth)` cell, one `"needle_trial"` record per prompt (key and answer), and
    /// one `"needle_summary"` with `lost_vs_none`, the prompts the uncompressed reference
    /// answered and this configuration did not (`gained_vs_none` the other way).
    pub fn records(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for config in self.configs() {
            out.extend(self.cell_records(config));
            out.extend(self.trial_records(config));
            out.push(self.summary_record(config));
        }
        out
    }

    fn cell_records(&self, config: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for &length in &self.opts.lengths {
            for &depth in &self.opts.depths {
                let cell: Vec<&Answer> = self
                    .answers(config)
                    .filter(|(c, _)| c.length == length && c.depth == depth)
                    .map(|(_, a)| a)
                    .collect();
                if cell.is_empty() {
                    continue;
                }
                let exact = cell.iter().filter(|a| a.found).count();
                let mean = |f: fn(&Answer) -> f64| {
                    cell.iter().map(|a| f(a)).sum::<f64>() / cell.len() as f64
                };
                out.push(serde_json::json!({
                    "bench": "needle", "model": self.model, "preset": config,
                    "context_tokens": length, "depth_pct": depth * 100.0,
                    "trials": cell.len(), "exact": exact,
                    "exact_rate": exact as f64 / cell.len() as f64,
                    "ratio_resident": mean(|a| a.ratio_resident),
                    "resident_bytes": mean(|a| a.resident_bytes as f64),
                    "prompt_tokens": mean(|a| a.prompt_tokens as f64),
                    "key_kept": mean(|a| a.key_kept),
                    "seed": self.opts.seed, "max_tokens": self.opts.max_tokens,
                }));
            }
        }
        out
    }

    fn trial_records(&self, config: &str) -> Vec<serde_json::Value> {
        self.answers(config)
            .map(|(c, a)| {
                serde_json::json!({
                    "bench": "needle_trial", "model": self.model, "preset": config,
                    "context_tokens": c.length, "depth_pct": c.depth * 100.0,
                    "trial": c.trial, "key": c.key, "found": a.found, "answer": a.text,
                    "prompt_tokens": a.prompt_tokens, "needle_at": c.needle_at,
                    "filler_tokens": c.filler_tokens, "ratio_resident": a.ratio_resident,
                    "resident_bytes": a.resident_bytes, "seed": self.opts.seed,
                    "key_kept": a.key_kept, "key_kept_min": a.key_kept_min,
                })
            })
            .collect()
    }

    fn summary_record(&self, config: &str) -> serde_json::Value {
        let (mut trials, mut exact, mut lost, mut gained) = (0, 0, 0, 0);
        let (mut ratio, mut key_kept) = (0.0, 0.0);
        for (_, answers) in &self.results {
            let of = |name: &str| answers.iter().find(|a| a.config == name);
            let (Some(a), reference) = (of(config), of(REFERENCE)) else { continue };
            let reference_found = reference.is_some_and(|r| r.found);
            trials += 1;
            exact += usize::from(a.found);
            lost += usize::from(reference_found && !a.found);
            gained += usize::from(!reference_found && a.found);
            ratio += a.ratio_resident;
            key_kept += a.key_kept;
        }
        let rate = |n: usize| n as f64 / trials.max(1) as f64;
        serde_json::json!({
            "bench": "needle_summary", "model": self.model, "preset": config,
            "trials": trials, "exact": exact, "exact_rate": rate(exact),
            "lost_vs_none": lost, "gained_vs_none": gained,
            "ratio_resident": ratio / trials.max(1) as f64,
            "key_kept": key_kept / trials.max(1) as f64,
            "keys": self.opts.keys, "seed": self.opts.seed, "max_tokens": self.opts.max_tokens,
        })
    }

    /// Writes `DIR/needle-MODEL.json` (to a temporary file, then renamed), replacing any
    /// earlier one.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("needle-{}.json", self.model));
        let io = |source| Error::Io { op: "needle", path: path.clone(), source };
        let text = serde_json::to_string_pretty(&self.records())
            .map_err(|e| io(std::io::Error::other(e)))?
            + "\n";
        crate::archive::write_atomically(&path, "needle", |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(io)
        })?;
        Ok(path)
    }
}
