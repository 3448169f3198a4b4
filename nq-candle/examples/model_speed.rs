//! Prefill and decode speed of a GGUF model on the CPU, with and without dequantizing the
//! weights to f32 at load.
//!
//! `cargo run --release -p nq-candle --example model_speed -- [MODEL] [PREFILL] [DECODE] [both]`
//! (MODEL: a known name or a .gguf path, default smollm2; PREFILL default 2048; DECODE default
//! 32; `both` also times the quantized weights, which is slow: minutes for Q4_1). MODEL
//! `synthetic` writes a random-weight f32 GGUF with SmolLM2-135M's shapes to the temp dir and
//! times that (for machines without the checkpoint; speed does not depend on the weights). Prints one JSON array of records to stdout; progress to stderr. Wall-clock seconds and
//! this process's CPU seconds are both reported because the machine may be shared.

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use nq_candle::{DenseCache, LoadOptions, Model, model_path};

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64)> {
    let (w, c) = (Instant::now(), cpu_seconds());
    let out = f()?;
    Ok((out, w.elapsed().as_secs_f64(), cpu_seconds() - c))
}

/// A llama GGUF with SmolLM2-135M's shapes and random f32 weights.
fn synthetic_smollm2() -> Result<std::path::PathBuf> {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file::Value};
    let path = std::env::temp_dir().join("nq-synthetic-smollm2.gguf");
    let (h, f, nq, nkv, d, layers, vocab) =
        (576usize, 1536usize, 9usize, 3usize, 64usize, 30u32, 49152usize);
    let md = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(layers)),
        ("llama.context_length", Value::U32(8192)),
        ("llama.embedding_length", Value::U32(h as u32)),
        ("llama.feed_forward_length", Value::U32(f as u32)),
        ("llama.attention.head_count", Value::U32(nq as u32)),
        ("llama.attention.head_count_kv", Value::U32(nkv as u32)),
        ("llama.rope.freq_base", Value::F32(100_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ];
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, dims: &[usize]| -> Result<()> {
        let t = candle_core::Tensor::randn(0f32, 0.02, dims, &Device::Cpu)?;
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
        Ok(())
    };
    add("token_embd.weight".into(), &[vocab, h])?;
    add("output_norm.weight".into(), &[h])?;
    for l in 0..layers {
        for (n, dims) in [
            ("attn_norm", vec![h]),
            ("ffn_norm", vec![h]),
            ("attn_q", vec![nq * d, h]),
            ("attn_k", vec![nkv * d, h]),
            ("attn_v", vec![nkv * d, h]),
            ("attn_output", vec![h, nq * d]),
            ("ffn_gate", vec![f, h]),
            ("ffn_up", vec![f, h]),
            ("ffn_down", vec![h, f]),
        ] {
            add(format!("blk.{l}.{n}.weight"), &dims)?;
        }
    }
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
    candle_core::quantized::gguf_file::write(&mut w, &md, &ts)?;
    Ok(path)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("smollm2", String::as_str);
    let prefill: usize = args.get(2).map_or(Ok(2048), |s| s.parse())?;
    let decode: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let path = if name == "synthetic" { synthetic_smollm2()? } else { model_path(name)? };
    let mut records = Vec::new();
    let modes: &[bool] =
        if args.get(4).is_some_and(|s| s == "both") { &[true, false] } else { &[true] };
    for &dequantize in modes {
        let opts = LoadOptions { dequantize_to_f32: dequantize, ..Default::default() };
        let (model, load_s, _) = timed(|| Ok(Model::from_gguf(&path, &Device::Cpu, opts)?))?;
        let vocab = u32::try_from(model.config().vocab)?;
        // Deterministic pseudo-text: speed does not depend on the ids.
        let ids: Vec<u32> = (0..prefill as u64 + 1)
            .map(|i| ((i * 2_654_435_761) % u64::from(vocab)) as u32)
            .collect();
        let mut cache = DenseCache::new();
        let (_, pre_all_s, pre_all_cpu) =
            timed(|| Ok(model.forward(&ids[..prefill], 0, &mut cache)?))?;
        let mut cache = DenseCache::new();
        let (_, pre_last_s, pre_last_cpu) =
            timed(|| Ok(model.forward_last(&ids[..prefill], 0, &mut cache)?))?;
        let (_, dec_s, dec_cpu) = timed(|| {
            let mut next = ids[prefill];
            for i in 0..decode {
                let l = model.forward_last(&[next], prefill + i, &mut cache)?;
                next = l.argmax(0)?.to_scalar::<u32>()?;
            }
            Ok(())
        })?;
        eprintln!(
            "{name} dequantize={dequantize}: load {load_s:.1}s; prefill {prefill} all logits {pre_all_s:.1}s ({:.1} tok/s, cpu {pre_all_cpu:.1}s), last logits only {pre_last_s:.1}s ({:.1} tok/s); decode {:.2} tok/s at context {prefill}",
            prefill as f64 / pre_all_s,
            prefill as f64 / pre_last_s,
            decode as f64 / dec_s
        );
        records.push(serde_json::json!({
            "bench": "cpu_model_speed", "model": name, "dequantize_f32": dequantize, "prefill": prefill,
            "prefill_all_logits_seconds": pre_all_s, "prefill_all_logits_cpu_seconds": pre_all_cpu,
            "prefill_all_logits_tok_per_s": prefill as f64 / pre_all_s,
            "prefill_last_logits_seconds": pre_last_s, "prefill_last_logits_cpu_seconds": pre_last_cpu,
            "prefill_last_logits_tok_per_s": prefill as f64 / pre_last_s,
            "decode_tokens": decode, "decode_seconds": dec_s, "decode_cpu_seconds": dec_cpu,
            "decode_tok_per_s": decode as f64 / dec_s,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}
