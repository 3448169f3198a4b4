//! `nq`: generate with a compressed KV cache, evaluate, save and inspect compressed caches.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nq_candle::{
    Error, Generation, Generator, GgufTokenizer, LoadOptions, Model, Prefill, SamplingOptions,
    StopReason, archive, eval, fetch, model_path, needle,
};
use nq_core::{CacheStats, Preset};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "nq",
    version,
    about = "Training-free KV-cache compression: generate, evaluate, save, inspect"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the default model if missing, then ask it a question about a document through
    /// its chat template, with an uncompressed and a compressed cache, and compare the answers.
    Demo(DemoArgs),
    /// Generate text with a compressed cache.
    Run(RunArgs),
    /// Measure quality and compression on a corpus (the project's evaluation protocol).
    Eval(EvalArgs),
    /// Retrieval check: hide a pass key in prose at several lengths and depths, ask for it,
    /// and count exact answers per preset against the uncompressed cache.
    Needle(NeedleArgs),
    /// Prefill a prompt, compress its cache and save it as a .nqkv archive.
    Save(SaveArgs),
    /// Describe a .nqkv archive.
    Inspect(InspectArgs),
    /// Install a known model into the model cache (no-op when present and intact).
    Fetch(FetchArgs),
}

/// `--device`: where the model runs.
#[derive(Args, Clone)]
struct DeviceArgs {
    /// Where the model runs: cpu, or cuda (GPU 0; needs an nq built with nq-candle's `cuda`
    /// feature, as `cargo xtask build-cuda` builds it). With cuda, `run` and `demo` keep the
    /// compressed cache on the GPU too; `eval`, `needle` and `save` keep it in host memory.
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl DeviceArgs {
    /// The candle device, checked before any model is loaded.
    fn device(&self) -> Result<Device> {
        let bad = |reason: &str| Error::InvalidOption {
            op: "nq",
            option: "--device",
            got: self.device.clone(),
            reason: reason.to_owned(),
        };
        match self.device.as_str() {
            "cpu" => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(Device::new_cuda(0)?),
            #[cfg(not(feature = "cuda"))]
            "cuda" => Err(bad(
                "this nq was built without the `cuda` feature: build it with `cargo xtask build-cuda`",
            )
            .into()),
            _ => Err(bad("cpu or cuda").into()),
        }
    }
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A known model name (smollm2, qwen05, gemma270m) or a path to a GGUF file.
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[command(flatten)]
    d: DeviceArgs,
    /// Compression preset: high, balanced, max, or none (uncompressed f16 cache). Default
    /// balanced; with --resume, the archive's preset (another one is refused).
    #[arg(long)]
    preset: Option<String>,
}

impl ModelArgs {
    fn preset(&self) -> Result<Preset> {
        preset(self.preset.as_deref().unwrap_or("balanced"))
    }
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Most tokens of each answer.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// The prompt (or `-` to read it from standard input).
    #[arg(long, short, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Resume from a cache saved by `nq save` instead of a prompt.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_file"])]
    resume: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature: a finite number >= 0 (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Print process peak RSS next to the cache's resident bytes.
    #[arg(long)]
    stats: bool,
    /// Print one JSON object on stdout instead of streaming text (errors too).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A known model name or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[command(flatten)]
    d: DeviceArgs,
    /// Presets to evaluate (comma-separated), each against the uncompressed run.
    #[arg(long, default_value = "balanced", value_delimiter = ',', num_args = 0..)]
    preset: Vec<String>,
    /// Corpus folder of GENRE/*.txt files (default: $NQ_CORPUS_DIR if set, else the
    /// project's 12-sample corpus built into this program).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Prefix tokens prefilled before compression.
    #[arg(long, default_value_t = 1664)]
    prefix: usize,
    /// Continuation tokens scored after compression.
    #[arg(long, default_value_t = 512)]
    continuation: usize,
    /// Evaluate only the first N samples of each genre.
    #[arg(long)]
    samples: Option<usize>,
    /// `decode`: the continuation is appended and compressed in blocks as it is scored, as in
    /// generation (teacher-forced); `prompt`: only the prompt is compressed.
    #[arg(long, default_value = "decode")]
    mode: eval::EvalMode,
    /// Write OUT/eval-MODEL-PRESET.json and print one JSON document on stdout (errors too);
    /// the table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Folder for --json result files, relative to the working directory.
    #[arg(long, default_value = "target/nq-bench")]
    out: PathBuf,
    /// Replace result files that hold results of another protocol (model, corpus, prefix,
    /// continuation, samples).
    #[arg(long)]
    overwrite: bool,
    /// Override configuration fields of every preset: KEY=VALUE, repeatable. Keys: keep, dkeep
    /// (kept fraction of decode-time blocks), sinks, recent, window, scorer (observed|expected|mixed:W|keykey|keynorm), vnorm (weight scores
    /// by value norms: true|false), split (head|layer|global), kbits, vbits (2|3|4|16), rope
    /// (remove RoPE: true|false), center, cands, block, pool (observed scorer's pooling: avgK
    /// or maxK, K odd, e.g. max7).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Evaluate an extra named configuration: NAME=PRESET[,KEY=VALUE...], repeatable.
    #[arg(long, value_name = "NAME=PRESET,KEY=VALUE")]
    variant: Vec<String>,
}

#[derive(Args)]
struct NeedleArgs {
    /// A known model name or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[command(flatten)]
    d: DeviceArgs,
    /// Presets to check (comma-separated). The uncompressed cache (`none`) always runs too:
    /// it is the reference `lost_vs_none` counts against.
    #[arg(long, default_value = "none,high,balanced,max", value_delimiter = ',', num_args = 0..)]
    preset: Vec<String>,
    /// Prompt lengths in tokens (comma-separated): chat template, prose, needle and question.
    #[arg(long, default_value = "1536,2560,4000", value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Needle depths (comma-separated): the fraction of the prose before the needle, in (0, 1).
    #[arg(long, default_value = "0.1,0.25,0.5,0.75,0.9", value_delimiter = ',')]
    depths: Vec<f64>,
    /// Prompts (different keys and prose) per length and depth.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Seed of the keys and of where the prose starts.
    #[arg(long, default_value_t = 12)]
    seed: u64,
    /// Tokens generated for each answer (greedy).
    #[arg(long, default_value_t = 12)]
    max_tokens: usize,
    /// Write OUT/needle-MODEL.json and print one JSON document on stdout (errors too); the
    /// table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Folder for --json result files, relative to the working directory.
    #[arg(long, default_value = "target/nq-bench")]
    out: PathBuf,
    /// Override configuration fields of every compressed preset: KEY=VALUE, repeatable (the
    /// keys of `nq eval --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Check an extra named configuration: NAME=PRESET[,KEY=VALUE...], repeatable.
    #[arg(long, value_name = "NAME=PRESET,KEY=VALUE")]
    variant: Vec<String>,
}

#[derive(Args)]
struct SaveArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// The prompt.
    #[arg(long, short, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Output archive.
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    /// The archive.
    file: PathBuf,
    /// Print JSON on stdout (errors too).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FetchArgs {
    /// smollm2, qwen05 or gemma270m.
    name: String,
}

fn main() {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Run(a) => a.json,
        Command::Eval(a) => a.json,
        Command::Needle(a) => a.json,
        Command::Inspect(a) => a.json,
        _ => false,
    };
    if let Err(e) = run(cli) {
        let msg = message(&e);
        if json {
            print_json(&json!({ "error": msg }));
        } else {
            eprintln!("error: {msg}");
        }
        std::process::exit(1);
    }
}

/// Prints one JSON document on stdout. A closed stdout (`nq ... --json | head`) ends the
/// program quietly instead of panicking as `println!` does.
fn print_json(v: &serde_json::Value) {
    let text =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause whose text the message already holds
/// (an OS error our error names) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo(a),
        Command::Run(a) => run_cmd(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Needle(a) => needle_cmd(a),
        Command::Save(a) => save(a),
        Command::Inspect(a) => inspect(a),
        Command::Fetch(a) => {
            let path = fetch::fetch(&a.name, |msg| eprintln!("{msg}"))?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// A progress bar over `len` items called `unit`.
fn progress(len: usize, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed}}<{{eta}}] {{msg}}"
        ))
        .expect("valid template"),
    );
    pb
}

fn load(name: &str, device: &DeviceArgs) -> Result<(Model, GgufTokenizer)> {
    let device = device.device()?;
    let path = model_path(name)?;
    let pb = spinner(&format!("loading {}", path.display()));
    let model = Model::from_gguf(&path, &device, LoadOptions::default())?;
    let tok = GgufTokenizer::from_gguf(&path)?;
    pb.finish_and_clear();
    Ok((model, tok))
}

fn preset(name: &str) -> Result<Preset> {
    Ok(name.parse::<Preset>()?)
}

/// A real document long enough for compression to matter (dpkg's trigger specification,
/// GPL-2, Debian; shipped as test data), cut at a paragraph.
fn demo_document() -> &'static str {
    let doc = include_str!("../../tests/data/dpkg_triggers.txt");
    let cut = doc[..6000.min(doc.len())].rfind("\n\n").unwrap_or(doc.len().min(6000));
    &doc[..cut]
}

const DEMO_QUESTION: &str =
    "Answer in two sentences: what is a dpkg trigger, and when does dpkg run it?";

fn demo(a: DemoArgs) -> Result<()> {
    if nq_candle::model::KNOWN_MODELS.iter().any(|m| m.name == a.m.model)
        && model_path(&a.m.model).is_err()
    {
        eprintln!("model `{}` is not installed; fetching it (one time)", a.m.model);
        fetch::fetch(&a.m.model, |msg| eprintln!("{msg}"))?;
    }
    let preset = a.m.preset()?;
    let (model, tok) = load(&a.m.model, &a.m.d)?;
    let doc = demo_document();
    let prompt = match tok.chat_prompt(&format!("{doc}\n\n{DEMO_QUESTION}"))? {
        Some(p) => {
            eprintln!("document: {} characters of dpkg's trigger specification", doc.len());
            eprintln!("question (through the model's chat template): {DEMO_QUESTION}");
            p
        }
        None => {
            eprintln!(
                "`{}` has no chat template (a base model): it continues the document instead",
                a.m.model
            );
            format!("{doc}\n\nIn short, a dpkg trigger is")
        }
    };
    let sampling = SamplingOptions::default();
    let pb = spinner("answering with the uncompressed f16 cache");
    let mut reference = Generator::new(model.clone(), tok.clone(), Preset::None);
    let base = reference.generate_with(&prompt, a.max_tokens, sampling, |_| {})?;
    pb.set_message(format!("answering with the {} cache", preset.name()));
    let g = generate_where_model_runs(model, tok, preset.config(), &prompt, a.max_tokens)?;
    pb.finish_and_clear();
    let same = base.tokens.iter().zip(&g.tokens).take_while(|(x, y)| x == y).count();
    let longest = base.tokens.len().max(g.tokens.len());
    println!("--- uncompressed f16 cache:\n{}\n", base.text.trim());
    println!(
        "--- {} cache, {:.1}x smaller ({} instead of {}):\n{}\n",
        preset.name(),
        g.prompt_stats.ratio(),
        human(g.prompt_stats.resident_bytes),
        human(g.prompt_stats.fp16_bytes),
        g.text.trim()
    );
    println!(
        "{same} of {longest} tokens identical (the answers agree on their first {same} tokens)"
    );
    eprintln!(
        "prompt: {} tokens; prefill {:.2} s; decode {:.1} tokens/s compressed vs {:.1} uncompressed",
        g.prompt_tokens,
        g.prefill_seconds,
        g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
        base.tokens.len() as f64 / base.decode_seconds.max(1e-9)
    );
    Ok(())
}

/// Greedy generation with the compressed cache where the model runs: on its GPU with the
/// `cuda` feature and `--device cuda`, in host memory otherwise.
fn generate_where_model_runs(
    model: Model,
    tok: GgufTokenizer,
    cfg: nq_core::CompressionConfig,
    prompt: &str,
    max_tokens: usize,
) -> Result<Generation> {
    let sampling = SamplingOptions::default();
    #[cfg(feature = "cuda")]
    if model.device().is_cuda() {
        let backend = nq_candle::cuda_backend(model.device())?;
        let mut generator = Generator::with_backend(model, tok, cfg, backend);
        return Ok(generator.generate_with(prompt, max_tokens, sampling, |_| {})?);
    }
    Ok(Generator::with_config(model, tok, cfg).generate_with(
        prompt,
        max_tokens,
        sampling,
        |_| {},
    )?)
}

fn read_prompt(prompt: Option<String>, file: Option<PathBuf>) -> Result<String> {
    match (prompt, file) {
        (Some(p), _) if p == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            Ok(s)
        }
        (Some(p), _) => Ok(p),
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))
        }
        (None, None) => {
            bail!("give a prompt with --prompt TEXT, --prompt-file FILE, or --resume FILE")
        }
    }
}

fn run_cmd(a: RunArgs) -> Result<()> {
    let sampling = SamplingOptions { temperature: a.temperature, ..SamplingOptions::default() };
    sampling.validate()?;
    let (model, tok) = load(&a.m.model, &a.m.d)?;
    let cfg = a.m.preset()?.config();
    #[cfg(feature = "cuda")]
    if model.device().is_cuda() {
        // The compressed cache on the model's GPU, on candle's stream.
        if a.resume.is_some() {
            bail!("--resume reads the archive into host memory: run it with --device cpu");
        }
        let backend = nq_candle::cuda_backend(model.device())?;
        let mut generator = Generator::with_backend(model, tok, cfg, backend);
        let start = generator.prefill(&run_prompt(&a)?)?;
        return run_from(&a, &mut generator, start, a.m.preset()?.name(), sampling);
    }
    // A resumed cache carries its own configuration; the generator's is used by prefill only.
    let mut generator = Generator::with_config(model, tok, cfg);
    let (start, preset_name) = run_start(&a, &mut generator)?;
    run_from(&a, &mut generator, start, &preset_name, sampling)
}

/// Generation from `start` with `generator`'s cache backend, reported as `a` asks.
fn run_from<B: nq_candle::CandleBackend>(
    a: &RunArgs,
    generator: &mut Generator<B>,
    start: Prefill<B>,
    preset_name: &str,
    sampling: SamplingOptions,
) -> Result<()> {
    let stream = !a.json;
    let on_text = |s: &str| {
        if stream {
            print!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    let g = generator.generate_from(start, a.max_tokens, sampling, on_text)?;
    if a.json {
        print_json(&run_json(a, preset_name, &g));
    } else {
        run_report(a, preset_name, &g);
    }
    Ok(())
}

/// The state a run starts from: the archive's (`--resume`, whose preset is kept), or the
/// prompt prefilled and compressed with the preset asked for.
fn run_start(a: &RunArgs, generator: &mut Generator) -> Result<(Prefill, String)> {
    if let Some(file) = &a.resume {
        let (start, stored) = archive::load(file, generator.model().config())?;
        if let Some(asked) = &a.m.preset
            && preset(asked)?.name() != stored
        {
            bail!(
                "{} was compressed with preset `{stored}`; a resumed cache keeps it (drop --preset {asked})",
                file.display()
            );
        }
        return Ok((start, stored));
    }
    Ok((generator.prefill(&run_prompt(a)?)?, a.m.preset()?.name().to_owned()))
}

/// The prompt of `nq run`, its last lines echoed unless `--json`.
fn run_prompt(a: &RunArgs) -> Result<String> {
    let prompt = read_prompt(a.prompt.clone(), a.prompt_file.clone())?;
    if !a.json {
        // Long prompts are shown by their last lines only.
        let tail: Vec<&str> = prompt.lines().rev().take(3).collect();
        if tail.len() < prompt.lines().count() {
            println!("[... {} characters of prompt ...]", prompt.len());
        }
        print!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(prompt)
}

fn stop_reason(stop: StopReason) -> String {
    match stop {
        StopReason::MaxTokens => "max_tokens".to_owned(),
        StopReason::EndOfSequence => "end_of_sequence".to_owned(),
        StopReason::ContextFull { max_context } => format!("context_full ({max_context} tokens)"),
    }
}

/// `nq run --json`: one document with the text and every figure.
fn run_json(a: &RunArgs, preset_name: &str, g: &Generation) -> serde_json::Value {
    let (s, p) = (&g.stats, &g.prompt_stats);
    json!({
        "model": a.m.model, "preset": preset_name, "text": g.text, "stop": stop_reason(g.stop),
        "resumed": a.resume.is_some(),
        "prompt_tokens": g.prompt_tokens, "generated_tokens": g.tokens.len(),
        "prefill_seconds": g.prefill_seconds, "compress_seconds": g.compress_seconds,
        "decode_seconds": g.decode_seconds,
        "decode_tokens_per_s": g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
        "prompt_ratio_resident": p.ratio(), "prompt_resident_bytes": p.resident_bytes,
        "prompt_fp16_bytes": p.fp16_bytes,
        "ratio_resident": s.ratio(), "resident_bytes": s.resident_bytes, "fp16_bytes": s.fp16_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

/// `nq run` without `--json`: the figures on stderr after the streamed text.
fn run_report(a: &RunArgs, preset_name: &str, g: &Generation) {
    let (s, p) = (&g.stats, &g.prompt_stats);
    println!();
    eprintln!("---");
    if let StopReason::ContextFull { max_context } = g.stop {
        eprintln!("stopped: the model's context of {max_context} tokens is full");
    }
    let prefill = match &a.resume {
        Some(f) => format!("resumed from {}", f.display()),
        None => format!("prefill {:.2} s", g.prefill_seconds),
    };
    eprintln!(
        "prompt: {} tokens, {prefill}; generated {} tokens in {:.2} s ({:.1} tokens/s); compression {:.3} s",
        g.prompt_tokens,
        g.tokens.len(),
        g.decode_seconds,
        g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
        g.compress_seconds
    );
    eprintln!(
        "KV cache ({preset_name}): prompt {} -> {} ({:.1}x); now {} tokens, {} resident vs {} in f16 ({:.1}x)",
        human(p.fp16_bytes),
        human(p.resident_bytes),
        p.ratio(),
        s.tokens_seen,
        human(s.resident_bytes),
        human(s.fp16_bytes),
        s.ratio()
    );
    if let Some(note) = ratio_note(preset_name, s) {
        eprintln!("{note}");
    }
    if a.stats {
        match peak_rss_bytes() {
            Some(r) => {
                eprintln!("process peak RSS: {} (model weights dominate at this size)", human(r))
            }
            None => eprintln!("process peak RSS: unavailable on this platform"),
        }
    }
}

/// Why a ratio is below 1x, where it is.
fn ratio_note(preset: &str, s: &CacheStats) -> Option<String> {
    if preset == "none" {
        return Some(
            "preset none keeps every token in f16, plus the eviction bookkeeping (query window \
             in f32, attention masses): it is the uncompressed reference, not a compression"
                .into(),
        );
    }
    (s.ratio() < 1.0).then(|| {
        format!(
            "below 1x: with {} tokens the fixed per-layer data (query window in f32, per-head \
             means, f16 sink and recent windows) outweighs what compression saves; the ratio \
             grows with the prompt",
            s.tokens_seen
        )
    })
}

fn human(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else {
        format!("{:.1} KB", b / 1e3)
    }
}

/// Peak resident set size from /proc (Linux), in bytes.
fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The name result files carry: a known model's, or a GGUF path's file stem.
fn model_name(model: &str) -> String {
    Path::new(model).file_stem().map_or(model.to_owned(), |s| s.to_string_lossy().into_owned())
}

/// The corpus: `--corpus`, else `$NQ_CORPUS_DIR`, else the one built into this program.
fn corpus(given: Option<PathBuf>) -> Result<(Vec<eval::Sample>, String)> {
    let dir = given.or_else(|| std::env::var_os("NQ_CORPUS_DIR").map(PathBuf::from));
    Ok(match dir {
        Some(d) => (eval::load_corpus(&d)?, d.display().to_string()),
        None => (eval::builtin_corpus(), "builtin".to_owned()),
    })
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let configs = eval::configs_from_args(&a.preset, &a.set, &a.variant)?;
    let opts =
        eval::EvalOptions { prefix: a.prefix, continuation: a.continuation, configs, mode: a.mode };
    opts.validate()?;
    if a.samples == Some(0) {
        return Err(Error::InvalidOption {
            op: "eval",
            option: "--samples",
            got: "0".into(),
            reason: "at least one sample per genre".into(),
        }
        .into());
    }
    let (samples, corpus_name) = eval_samples(&a)?;
    let (model, tok) = load(&a.model, &a.d)?;
    let mut run = eval::EvalRun {
        protocol: eval::Protocol {
            model: model_name(&a.model),
            corpus: corpus_name,
            prefix: a.prefix,
            continuation: a.continuation,
            samples_per_genre: a.samples,
            mode: a.mode,
        },
        results: Vec::new(),
        skipped: Vec::new(),
    };
    eval_all(&model, &tok, &samples, &opts, &mut run)?;
    print_eval_table(&run, a.json);
    if !a.json {
        if run.results.is_empty() {
            bail!(
                "no sample was long enough for prefix {} + continuation {}",
                a.prefix,
                a.continuation
            );
        }
        return Ok(());
    }
    write_eval(&a, &opts, &run)
}

/// The corpus samples `nq eval` runs on: the first `--samples` of each genre.
fn eval_samples(a: &EvalArgs) -> Result<(Vec<eval::Sample>, String)> {
    let (mut samples, corpus_name) = corpus(a.corpus.clone())?;
    if let Some(n) = a.samples {
        let mut seen = std::collections::HashMap::new();
        samples.retain(|s| {
            let c = seen.entry(s.genre.clone()).or_insert(0);
            *c += 1;
            *c <= n
        });
    }
    Ok((samples, corpus_name))
}

/// Evaluate every sample (too-short ones are skipped with a warning and counted).
fn eval_all(
    model: &Model,
    tok: &GgufTokenizer,
    samples: &[eval::Sample],
    opts: &eval::EvalOptions,
    run: &mut eval::EvalRun,
) -> Result<()> {
    let pb = progress(samples.len(), "samples");
    for s in samples {
        let r = eval::eval_sample(model, tok, s, opts, |step| {
            pb.set_message(format!("{}/{}: {step}", s.genre, s.name))
        });
        let r = match r {
            Err(Error::SampleTooShort { sample, tokens, needed }) => {
                pb.suspend(|| {
                    eprintln!(
                        "warning: skipping {sample}: {tokens} tokens, the protocol needs {needed}"
                    )
                });
                run.skipped.push((sample, tokens, needed));
                pb.inc(1);
                continue;
            }
            r => r?,
        };
        for x in &r {
            pb.suspend(|| {
                eprintln!(
                    "{:<10} {:<28} {:<14} ppl {:>8.3} -> {:>8.3} ({:+6.2}%)  KL {:.4}  ratio {:>5.1}x / archive {:>5.1}x  {:.3} s",
                    x.genre, x.sample, x.preset, x.ppl_base, x.ppl, x.ppl_delta_pct, x.kld, x.ratio_resident, x.ratio_archive, x.seconds
                );
            });
        }
        run.results.extend(r);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

/// `nq eval --json`: write each configuration's file and print one document.
fn write_eval(a: &EvalArgs, opts: &eval::EvalOptions, run: &eval::EvalRun) -> Result<()> {
    // Every configuration's file is attempted; the document names what was written and what
    // failed, and carries the records either way.
    let mut written = Vec::new();
    let mut errors = Vec::new();
    if run.results.is_empty() {
        errors.push(format!(
            "no sample was long enough for prefix {} + continuation {}; nothing written",
            a.prefix, a.continuation
        ));
    } else {
        std::fs::create_dir_all(&a.out)
            .with_context(|| format!("cannot create {}", a.out.display()))?;
        for (name, _) in &opts.configs {
            match run.write(&a.out, name, a.overwrite) {
                Ok(path) => {
                    eprintln!("wrote {}", path.display());
                    written.push(path.display().to_string());
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    let records: Vec<serde_json::Value> =
        opts.configs.iter().flat_map(|(name, _)| run.records(name)).collect();
    let mut doc = json!({ "records": records, "written": written });
    if !errors.is_empty() {
        doc["error"] = json!(errors.join("; "));
    }
    print_json(&doc);
    if !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The per-genre and overall table: on stdout, or on stderr when stdout carries JSON.
fn print_eval_table(run: &eval::EvalRun, json: bool) {
    let mut lines = vec![format!(
        "{:<10} {:<14} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "genre", "preset", "ppl base", "ppl", "delta %", "KL", "ratio", "archive", "seconds"
    )];
    for x in &eval::aggregate(&run.results) {
        lines.push(format!(
            "{:<10} {:<14} {:>9.3} {:>9.3} {:>+9.2} {:>8.4} {:>7.1}x {:>7.1}x {:>8.3}",
            x.genre,
            x.preset,
            x.ppl_base,
            x.ppl,
            x.ppl_delta_pct,
            x.kld,
            x.ratio_resident,
            x.ratio_archive,
            x.seconds
        ));
    }
    if !run.skipped.is_empty() {
        lines.push(format!("{} sample(s) skipped as too short", run.skipped.len()));
    }
    for l in lines {
        if json {
            eprintln!("{l}");
        } else {
            println!("{l}");
        }
    }
}

fn needle_cmd(a: NeedleArgs) -> Result<()> {
    let opts = needle::NeedleOptions {
        lengths: a.lengths.clone(),
        depths: a.depths.clone(),
        keys: a.keys,
        seed: a.seed,
        max_tokens: a.max_tokens,
    };
    opts.validate()?;
    let configs = needle_configs(&a)?;
    let (model, tok) = load(&a.model, &a.d)?;
    let cases = needle::cases(&tok, &opts)?;
    let mut run = needle::NeedleRun { model: model_name(&a.model), opts, results: Vec::new() };
    needle_all(&model, &tok, &cases, &configs, &mut run)?;
    print_needle_table(&run, a.json);
    if !a.json {
        return Ok(());
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let path = run.write(&a.out)?;
    eprintln!("wrote {}", path.display());
    print_json(&json!({ "records": run.records(), "written": [path.display().to_string()] }));
    Ok(())
}

/// The uncompressed reference, then the presets and variants asked for (`none` is the
/// reference, so it is not repeated).
fn needle_configs(a: &NeedleArgs) -> Result<Vec<(String, nq_core::CompressionConfig)>> {
    let bad = |got: &str, reason: &str| Error::InvalidOption {
        op: "needle",
        option: "--preset",
        got: got.to_owned(),
        reason: reason.to_owned(),
    };
    if a.preset.iter().all(String::is_empty) && a.variant.is_empty() {
        return Err(bad("", "name at least one preset (none, high, balanced, max)").into());
    }
    let compressed: Vec<String> =
        a.preset.iter().filter(|p| !p.is_empty() && *p != needle::REFERENCE).cloned().collect();
    let mut configs = vec![(needle::REFERENCE.to_owned(), Preset::None.config())];
    if !compressed.is_empty() || !a.variant.is_empty() {
        let more = eval::configs_from_args(&compressed, &a.set, &a.variant)?;
        if let Some((name, _)) = more.iter().find(|(n, _)| n == needle::REFERENCE) {
            return Err(bad(name, "`none` names the uncompressed reference").into());
        }
        configs.extend(more);
    }
    Ok(configs)
}

/// Answer every prompt with every configuration; each prompt's outcome goes to stderr.
fn needle_all(
    model: &Model,
    tok: &GgufTokenizer,
    cases: &[needle::NeedleCase],
    configs: &[(String, nq_core::CompressionConfig)],
    run: &mut needle::NeedleRun,
) -> Result<()> {
    let pb = progress(cases.len(), "prompts");
    for case in cases {
        pb.set_message(format!("{} tokens, depth {}", case.length, case.depth));
        let answers = needle::answer_case(model, tok, case, configs, run.opts.max_tokens)?;
        let outcome: Vec<String> = answers
            .iter()
            .map(|a| match a.found {
                true => format!("{} ok", a.config),
                false => format!("{} MISS {:?}", a.config, a.text.trim()),
            })
            .collect();
        pb.suspend(|| {
            eprintln!(
                "{:>5} tokens ({:>5}), depth {:>4.2}, key {}: {}",
                case.length,
                answers.first().map_or(0, |a| a.prompt_tokens),
                case.depth,
                case.key,
                outcome.join(", ")
            )
        });
        run.results.push((case.clone(), answers));
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Exact answers per configuration, length and depth, then each configuration's total: on
/// stdout, or on stderr when stdout carries JSON.
fn print_needle_table(run: &needle::NeedleRun, json: bool) {
    let records = run.records();
    let depths: Vec<String> =
        run.opts.depths.iter().map(|d| format!("{:.0}%", d * 100.0)).collect();
    let mut lines = vec![format!(
        "{:<16} {:>7} {}  {:>6} {:>9}",
        "preset",
        "tokens",
        depths.iter().map(|d| format!("{d:>6}")).collect::<String>(),
        "ratio",
        "key kept"
    )];
    let get = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in records.iter().filter(|r| r["bench"] == "needle_summary") {
        let preset = r["preset"].as_str().unwrap_or_default();
        for &length in &run.opts.lengths {
            let cells: Vec<&serde_json::Value> = records
                .iter()
                .filter(|c| {
                    c["bench"] == "needle" && c["preset"] == preset && c["context_tokens"] == length
                })
                .collect();
            let row: String = cells
                .iter()
                .map(|c| format!("{:>6}", format!("{}/{}", c["exact"], c["trials"])))
                .collect();
            let mean =
                |k: &str| cells.iter().map(|c| get(c, k)).sum::<f64>() / cells.len().max(1) as f64;
            let (ratio, kept) = (mean("ratio_resident"), 100.0 * mean("key_kept"));
            lines.push(format!("{preset:<16} {length:>7} {row}  {ratio:>5.1}x {kept:>8.1}%"));
        }
        lines.push(format!(
            "{preset:<16} total: {}/{} exact ({:.1}%), lost vs none {}, gained {}",
            r["exact"],
            r["trials"],
            100.0 * get(r, "exact_rate"),
            r["lost_vs_none"],
            r["gained_vs_none"]
        ));
    }
    for l in lines {
        if json {
            eprintln!("{l}");
        } else {
            println!("{l}");
        }
    }
}

fn save(a: SaveArgs) -> Result<()> {
    let preset = a.m.preset()?;
    let (model, tok) = load(&a.m.model, &a.m.d)?;
    let prompt = read_prompt(a.prompt, a.prompt_file)?;
    let generator = Generator::new(model, tok, preset);
    let pb = spinner("prefill and compress");
    let start = generator.prefill(&prompt)?;
    pb.finish_and_clear();
    let bytes = archive::save(&a.output, &start, generator.model().config(), preset.name())?;
    let s = start.cache.stats();
    let logits_bytes = 4 * start.logits.len();
    eprintln!(
        "saved {} tokens to {}: {} on disk ({} of them the next token's logits), {} resident, {} as f16 ({:.1}x on disk, {:.1}x resident)",
        start.tokens,
        a.output.display(),
        human(usize::try_from(bytes).unwrap_or(usize::MAX)),
        human(logits_bytes),
        human(s.resident_bytes),
        human(s.fp16_bytes),
        s.fp16_bytes as f64 / bytes.max(1) as f64,
        s.ratio()
    );
    if std::fs::metadata(&a.output).is_ok_and(|m| !m.is_file()) {
        eprintln!(
            "{} is not a regular file: the size above is the bytes written to it",
            a.output.display()
        );
    }
    if let Some(note) = ratio_note(preset.name(), &s) {
        eprintln!("{note}");
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let info = archive::inspect(&a.file)?;
    if a.json {
        print_json(&serde_json::to_value(&info)?);
    } else {
        println!("{info:#?}");
    }
    Ok(())
}
