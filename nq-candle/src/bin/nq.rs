//! `nq`: generate with a compressed KV cache, evaluate, save and inspect compressed caches.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nq_candle::{
    CompressedKvCache, Generator, GgufTokenizer, LoadOptions, Model, SamplingOptions, archive,
    eval, fetch, model_path,
};
use nq_core::{CompressionConfig, Preset};
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
    /// Fetch the default model if missing, then generate with a compressed cache and report
    /// the measured memory saving.
    Demo(DemoArgs),
    /// Generate text with a compressed cache.
    Run(RunArgs),
    /// Measure quality and compression on a corpus (the project's evaluation protocol).
    Eval(EvalArgs),
    /// Prefill a prompt, compress its cache and save it as a .nqkv archive.
    Save(SaveArgs),
    /// Describe a .nqkv archive.
    Inspect(InspectArgs),
    /// Install a known model into the model cache (no-op when present and intact).
    Fetch(FetchArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A known model name (smollm2, qwen05, gemma270m) or a path to a GGUF file.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Compression preset: high, balanced, max, or none (uncompressed f16 cache).
    #[arg(long, default_value = "balanced")]
    preset: String,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Tokens to generate.
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
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Print process peak RSS next to the cache's resident bytes.
    #[arg(long)]
    stats: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A known model name or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Presets to evaluate (comma-separated), each against the uncompressed run.
    #[arg(long, default_value = "balanced", value_delimiter = ',', num_args = 0..)]
    preset: Vec<String>,
    /// Corpus folder of GENRE/*.txt files (default: the project's shared corpus).
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
    /// Write target/nq-bench/eval-MODEL-PRESET.json and print JSON.
    #[arg(long)]
    json: bool,
    /// Override configuration fields of every preset: KEY=VALUE, repeatable. Keys: keep, sinks,
    /// recent, window, scorer (observed|expected|mixed:W|keykey|keynorm), vnorm (weight scores
    /// by value norms: true|false), split (head|layer|global), kbits, vbits (2|3|4|16), rope
    /// (remove RoPE: true|false), center, cands, block.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Evaluate an extra named configuration: NAME=PRESET[,KEY=VALUE...], repeatable.
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FetchArgs {
    /// smollm2, qwen05 or gemma270m.
    name: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Demo(a) => demo(a),
        Command::Run(a) => run_cmd(a),
        Command::Eval(a) => eval_cmd(a),
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

fn load(name: &str) -> Result<(Model, GgufTokenizer)> {
    let path = model_path(name)?;
    let pb = spinner(&format!("loading {}", path.display()));
    let model = Model::from_gguf(&path, &Device::Cpu, LoadOptions::default())?;
    let tok = GgufTokenizer::from_gguf(&path)?;
    pb.finish_and_clear();
    Ok((model, tok))
}

fn preset(name: &str) -> Result<Preset> {
    Ok(name.parse::<Preset>()?)
}

/// A real document long enough for compression to matter (dpkg's trigger specification,
/// GPL-2, Debian; shipped as test data), cut at a paragraph, then a question about it.
fn demo_prompt() -> String {
    let doc = include_str!("../../tests/data/dpkg_triggers.txt");
    let cut = doc[..6000.min(doc.len())].rfind("\n\n").unwrap_or(doc.len().min(6000));
    format!("{}\n\nIn short, a dpkg trigger is", &doc[..cut])
}

fn demo(a: DemoArgs) -> Result<()> {
    if nq_candle::model::KNOWN_MODELS.iter().any(|m| m.name == a.m.model)
        && model_path(&a.m.model).is_err()
    {
        eprintln!("model `{}` is not installed; fetching it (one time)", a.m.model);
        fetch::fetch(&a.m.model, |msg| eprintln!("{msg}"))?;
    }
    run_cmd(RunArgs {
        m: a.m,
        prompt: Some(demo_prompt()),
        prompt_file: None,
        resume: None,
        max_tokens: a.max_tokens,
        temperature: 0.0,
        stats: true,
        json: false,
    })
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
    let (model, tok) = load(&a.m.model)?;
    let preset = preset(&a.m.preset)?;
    let sampling = SamplingOptions { temperature: a.temperature, ..SamplingOptions::default() };
    let mut generator = Generator::new(model, tok, preset);
    let stream = !a.json;
    let on_text = |s: &str| {
        if stream {
            print!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    let g = if let Some(file) = &a.resume {
        let (cache, next, pos) = archive::load(file, generator.model().config())?;
        generator.resume_with(cache, next, pos, a.max_tokens, sampling, on_text)?
    } else {
        let prompt = read_prompt(a.prompt, a.prompt_file)?;
        if stream {
            // Long prompts are shown by their last lines only.
            let tail: Vec<&str> = prompt.lines().rev().take(3).collect();
            if tail.len() < prompt.lines().count() {
                println!("[... {} characters of prompt ...]", prompt.len());
            }
            print!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        generator.generate_with(&prompt, a.max_tokens, sampling, on_text)?
    };
    let rss = peak_rss_bytes();
    let s = &g.stats;
    let p = &g.prompt_stats;
    if a.json {
        let v = json!({
            "model": a.m.model, "preset": preset.name(), "text": g.text,
            "prompt_tokens": g.prompt_tokens, "generated_tokens": g.tokens.len(),
            "prefill_seconds": g.prefill_seconds, "compress_seconds": g.compress_seconds,
            "decode_seconds": g.decode_seconds,
            "decode_tokens_per_s": g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
            "prompt_ratio_resident": p.ratio(), "prompt_resident_bytes": p.resident_bytes,
            "prompt_fp16_bytes": p.fp16_bytes,
            "ratio_resident": s.ratio(), "resident_bytes": s.resident_bytes, "fp16_bytes": s.fp16_bytes,
            "peak_rss_bytes": rss,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!();
    eprintln!("---");
    eprintln!(
        "prompt: {} tokens, prefill {:.2} s; generated {} tokens in {:.2} s ({:.1} tokens/s); compression {:.3} s",
        g.prompt_tokens,
        g.prefill_seconds,
        g.tokens.len(),
        g.decode_seconds,
        g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
        g.compress_seconds
    );
    eprintln!(
        "KV cache ({}): prompt {} -> {} ({:.1}x); now {} tokens, {} resident vs {} in f16 ({:.1}x)",
        preset.name(),
        human(p.fp16_bytes),
        human(p.resident_bytes),
        p.ratio(),
        s.tokens_seen,
        human(s.resident_bytes),
        human(s.fp16_bytes),
        s.ratio()
    );
    if a.stats {
        match rss {
            Some(r) => {
                eprintln!("process peak RSS: {} (model weights dominate at this size)", human(r))
            }
            None => eprintln!("process peak RSS: unavailable on this platform"),
        }
    }
    Ok(())
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

fn default_corpus() -> PathBuf {
    // The project's shared corpus sits beside the repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    root.canonicalize().unwrap_or(root)
}

/// Apply one `KEY=VALUE` override to a configuration.
fn apply_override(cfg: &mut CompressionConfig, kv: &str) -> Result<()> {
    let (k, v) = kv.split_once('=').with_context(|| format!("`{kv}` is not KEY=VALUE"))?;
    let num = |v: &str| v.parse::<usize>().with_context(|| format!("{k}: `{v}` is not a count"));
    let flag = |v: &str| v.parse::<bool>().with_context(|| format!("{k}: `{v}` is not true/false"));
    let storage = |v: &str| match v.parse::<u8>() {
        Ok(16) => Ok(nq_core::Storage::F16),
        Ok(bits @ 2..=4) => Ok(nq_core::Storage::E8 { bits }),
        _ => bail!("{k}: bits must be 2, 3, 4 or 16, got `{v}`"),
    };
    match k {
        "keep" => cfg.evict.keep = v.parse().with_context(|| format!("keep: `{v}`"))?,
        "sinks" => cfg.evict.sinks = num(v)?,
        "recent" => cfg.evict.recent = num(v)?,
        "window" => cfg.evict.window = num(v)?,
        "block" => cfg.block = num(v)?,
        "cands" => cfg.scale_candidates = u8::try_from(num(v)?).context("cands: too large")?,
        "kbits" => cfg.keys = storage(v)?,
        "vbits" => cfg.values = storage(v)?,
        "rope" => cfg.remove_rope = flag(v)?,
        "center" => cfg.center = flag(v)?,
        "vnorm" => cfg.evict.value_norm = flag(v)?,
        "split" => {
            cfg.evict.split = match v {
                "head" => nq_core::BudgetSplit::PerHead,
                "layer" => nq_core::BudgetSplit::PerLayer,
                "global" => nq_core::BudgetSplit::Global,
                _ => bail!("split: `{v}` is not head, layer or global"),
            }
        }
        "scorer" => {
            cfg.evict.scorer = match v {
                "observed" => nq_core::ScorerKind::Observed,
                "expected" => nq_core::ScorerKind::Expected,
                "keykey" => nq_core::ScorerKind::KeyKey,
                "keynorm" => nq_core::ScorerKind::KeyNorm,
                m if m.starts_with("mixed:") => nq_core::ScorerKind::Mixed {
                    mix: m[6..].parse().context("mixed:W needs a number")?,
                },
                other => bail!("unknown scorer `{other}`"),
            }
        }
        _ => bail!("unknown configuration key `{k}`"),
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let corpus = a.corpus.clone().unwrap_or_else(default_corpus);
    let mut samples = eval::load_corpus(&corpus)?;
    if let Some(n) = a.samples {
        let mut seen = std::collections::HashMap::new();
        samples.retain(|s| {
            let c = seen.entry(s.genre.clone()).or_insert(0);
            *c += 1;
            *c <= n
        });
    }
    let mut configs = Vec::new();
    for p in &a.preset {
        let preset = preset(p)?;
        let mut cfg = preset.config();
        for kv in &a.set {
            apply_override(&mut cfg, kv)?;
        }
        cfg.validate()?;
        let name = if a.set.is_empty() {
            preset.name().to_owned()
        } else {
            format!("{}-custom", preset.name())
        };
        configs.push((name, cfg));
    }
    for v in &a.variant {
        let (name, rest) =
            v.split_once('=').with_context(|| format!("`{v}` is not NAME=PRESET,..."))?;
        let mut parts = rest.split(',');
        let mut cfg = preset(parts.next().unwrap_or_default())?.config();
        for kv in a.set.iter().map(String::as_str).chain(parts) {
            apply_override(&mut cfg, kv)?;
        }
        cfg.validate()?;
        configs.push((name.to_owned(), cfg));
    }
    let (model, tok) = load(&a.model)?;
    let opts = eval::EvalOptions { prefix: a.prefix, continuation: a.continuation, configs };
    let steps = samples.len() as u64;
    let pb = ProgressBar::new(steps);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} samples [{elapsed}<{eta}] {msg}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    for s in &samples {
        let r = eval::eval_sample(&model, &tok, s, &opts, |step| {
            pb.set_message(format!("{}/{}: {step}", s.genre, s.name))
        })?;
        for x in &r {
            pb.suspend(|| {
                eprintln!(
                    "{:<10} {:<28} {:<14} ppl {:>8.3} -> {:>8.3} ({:+6.2}%)  KL {:.4}  ratio {:>5.1}x / archive {:>5.1}x  {:.3} s",
                    x.genre, x.sample, x.preset, x.ppl_base, x.ppl, x.ppl_delta_pct, x.kld, x.ratio_resident, x.ratio_archive, x.seconds
                );
            });
        }
        results.extend(r);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let agg = eval::aggregate(&results);
    println!(
        "{:<10} {:<14} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "genre", "preset", "ppl base", "ppl", "delta %", "KL", "ratio", "archive", "seconds"
    );
    for x in &agg {
        println!(
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
        );
    }
    if a.json {
        let model_name = Path::new(&a.model)
            .file_stem()
            .map_or(a.model.clone(), |s| s.to_string_lossy().into_owned());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nq-bench");
        std::fs::create_dir_all(&dir)?;
        for (name, _) in &opts.configs {
            let records: Vec<serde_json::Value> = results
                .iter()
                .chain(agg.iter())
                .filter(|r| &r.preset == name)
                .map(|r| {
                    let mut v = serde_json::to_value(r).expect("plain struct");
                    v["bench"] = json!("eval");
                    v["model"] = json!(model_name);
                    v["prefix"] = json!(a.prefix);
                    v["continuation"] = json!(a.continuation);
                    v
                })
                .collect();
            let path = dir.join(format!("eval-{model_name}-{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&records)? + "\n")?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn save(a: SaveArgs) -> Result<()> {
    let (model, tok) = load(&a.m.model)?;
    let preset = preset(&a.m.preset)?;
    let prompt = read_prompt(a.prompt, a.prompt_file)?;
    let ids = tok.encode_document(&prompt)?;
    if ids.len() < 2 {
        bail!("the prompt must have at least 2 tokens to save a cache (it has {})", ids.len());
    }
    let (head, last) = ids.split_at(ids.len() - 1);
    let mut cache = CompressedKvCache::new(model.config(), preset.config())?;
    let pb = spinner(&format!("prefill {} tokens", head.len()));
    model.forward_last(head, 0, &mut cache)?;
    pb.set_message("compress");
    cache.compress()?;
    pb.finish_and_clear();
    let bytes =
        archive::save(&a.output, &cache, model.config(), preset.name(), last[0], head.len())?;
    let s = cache.stats();
    eprintln!(
        "saved {} tokens to {}: {} on disk, {} resident, {} as f16 ({:.1}x on disk, {:.1}x resident)",
        head.len(),
        a.output.display(),
        human(bytes),
        human(s.resident_bytes),
        human(s.fp16_bytes),
        s.fp16_bytes as f64 / bytes.max(1) as f64,
        s.ratio()
    );
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let info = archive::inspect(&a.file)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{info:#?}");
    }
    Ok(())
}
