//! Decode speed at a long context, f16 cache against compressed caches, in one run.
//!
//! `cargo run --release -p nq-candle --example decode_speed -- [MODEL] [CONTEXT] [DECODE]
//! [PRESET...]` (defaults: smollm2, 8000, 32, balanced max). The prompt is the shared corpus,
//! concatenated and cut at CONTEXT tokens. The same prompt is prefilled once into candle's dense
//! f16 cache ([`DenseCache`], the uncompressed baseline; also copied to f32, which needs no
//! widening per step) and once into a compressed cache, which is compressed once per preset; then DECODE tokens are generated greedily from each cache
//! and timed (wall clock; the first step is a warm-up and not timed). Writes a JSON array of
//! records (bench `cpu_decode`, fields `cache`, `context`, `tok_per_s`, `ms_per_token`,
//! `resident_bytes`) to stdout and `target/nq-bench/decode.json`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use nq_candle::{CompressedKvCache, DenseCache, GgufTokenizer, KvCache, LoadOptions, Model};
use nq_core::{CompressionConfig, Preset};

/// Greedy decoding of `n` tokens after `first` at `pos`; seconds per token after one warm-up.
fn decode(
    model: &Model,
    cache: &mut impl KvCache,
    first: u32,
    pos: usize,
    n: usize,
) -> Result<f64> {
    let mut step = |tok: u32, pos: usize| -> Result<u32> {
        let logits: Tensor = model.forward_last(&[tok], pos, &mut *cache)?;
        Ok(logits.argmax(0)?.to_scalar::<u32>()?)
    };
    let mut next = step(first, pos)?;
    let started = Instant::now();
    for i in 1..=n {
        next = step(next, pos + i)?;
    }
    Ok(started.elapsed().as_secs_f64() / n as f64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("smollm2", String::as_str);
    let context: usize = args.get(1).map_or(Ok(8000), |s| s.parse()).context("CONTEXT")?;
    let n: usize = args.get(2).map_or(Ok(32), |s| s.parse()).context("DECODE")?;
    let presets: Vec<Preset> = if args.len() > 3 {
        args[3..].iter().map(|s| s.parse()).collect::<nq_core::Result<_>>()?
    } else {
        vec![Preset::Balanced, Preset::Max]
    };
    let path = nq_candle::model_path(name)?;
    let model = Model::from_gguf(&path, &Device::Cpu, LoadOptions::default())?;
    let tok = GgufTokenizer::from_gguf(&path)?;
    let mut ids: Vec<u32> = nq_candle::eval::document_start(&tok).into_iter().collect();
    for sample in nq_candle::eval::builtin_corpus() {
        if ids.len() > context {
            break;
        }
        ids.extend(tok.encode(&sample.text)?);
    }
    anyhow::ensure!(ids.len() > context, "the corpus has only {} tokens", ids.len());
    anyhow::ensure!(
        context + n < model.config().max_context,
        "context {context} + {n} decoded tokens exceed the model's {}",
        model.config().max_context
    );
    let prompt = &ids[..context];
    let mut records = Vec::new();
    let mut record = |cache: String, s_per_tok: f64, resident_bytes: usize| {
        eprintln!(
            "{cache:>9}: {:.2} tok/s ({:.1} ms/token), resident {:.1} MiB",
            1.0 / s_per_tok,
            1e3 * s_per_tok,
            resident_bytes as f64 / (1 << 20) as f64
        );
        records.push(serde_json::json!({
            "bench": "cpu_decode", "model": name, "cache": cache, "context": context,
            "decode_tokens": n, "tok_per_s": 1.0 / s_per_tok, "ms_per_token": 1e3 * s_per_tok,
            "resident_bytes": resident_bytes,
        }));
    };

    eprintln!("prefill {context} tokens into the f16 cache...");
    let mut dense = DenseCache::with_dtype(DType::F16)?;
    let started = Instant::now();
    let last = model.forward_last(prompt, 0, &mut dense)?;
    eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
    let first = last.argmax(0)?.to_scalar::<u32>()?;
    // The same prompt in an f32 cache too: twice the memory, but no widening per step.
    let mut dense_f32 = dense.to_dtype(DType::F32)?;
    let dense_bytes = dense.used_bytes();
    let s = decode(&model, &mut dense, first, context, n)?;
    record("f16".into(), s, dense_bytes);
    drop(dense);
    let dense_bytes = dense_f32.used_bytes();
    let s = decode(&model, &mut dense_f32, first, context, n)?;
    record("f32".into(), s, dense_bytes);
    drop(dense_f32);

    eprintln!("prefill {context} tokens into the compressed cache...");
    let window = presets.iter().map(|p| p.config().evict.window).max().unwrap_or(1);
    let mut base_cfg: CompressionConfig = Preset::None.config();
    base_cfg.evict.window = window;
    let mut base = CompressedKvCache::new(model.config(), base_cfg)?;
    model.forward_last(prompt, 0, &mut base)?;
    for preset in presets {
        let mut cache = base.reconfigured(preset.config())?;
        let started = Instant::now();
        cache.compress()?;
        eprintln!("  {}: compressed in {:.3} s", preset.name(), started.elapsed().as_secs_f64());
        let bytes = cache.stats().resident_bytes;
        let s = decode(&model, &mut cache, first, context, n)?;
        record(preset.name().into(), s, bytes);
    }
    let json = serde_json::to_string_pretty(&records)?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nq-bench/decode.json");
    std::fs::create_dir_all(out.parent().context("no parent")?)?;
    std::fs::write(&out, &json)?;
    println!("{json}");
    Ok(())
}
