//! Greedy decode speed and cache size on a GPU, candle's dense f16 cache against the
//! compressed cache on the device, in one run (issue 11's `gpu-decode` table).
//!
//! `gpu_decode [--device cuda|cpu] [--shape llama8b|smollm2|tiny] [--weights f16,q4_0]
//! [--batch 1,8] [--contexts 8192,32768,131072] [--caches dense,high,balanced,max] [--steps N]`
//! (a cache `PRESET@host` sends every step through the host, as before the in-place GPU
//! path, for comparison)
//! (the GPU needs the `cuda` feature: `cargo xtask build-cuda` builds it; `--device cpu --shape
//! tiny` is a smoke test without it). Prints a JSON array of records (bench `gpu_decode`).
//!
//! The model has random weights built in code ([`Model::synthetic`]: no checkpoint reaches
//! the GPU machine; speed depends on shapes and storage, not on values). The context is
//! written straight into each cache, not prefilled: keys and values are random rows, and the
//! compressed cache also gets random observation-window queries and attention mass, then
//! compresses as after a prompt. Decode then runs `steps` greedy tokens through the whole
//! model (one warm-up step not timed); `attend_share` is the share of a step spent in the
//! cache's attention calls, from a second pass that synchronizes the device around each
//! call (for a batch of compressed caches on the GPU, which the timed pass attends in one
//! launch, the timing pass calls them one by one: `attend_share_of` says so). `fits_tokens` is how many tokens of this cache the free device memory left after
//! the fill would hold on top of the context (free bytes / resident bytes per token).
//! A batch of B sequences decodes one token of each per step (`Model::forward_batch_last`:
//! the weights read once per step, each sequence attending over its own cache); `tok_per_s`
//! counts the tokens of all B.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use nq_candle::{
    AttnSpec, CompressedKvCache, DenseCache, KvCache, Model, ModelConfig, SyntheticWeights,
};
use nq_core::{CompressionConfig, Preset};
use serde_json::{Value, json};

/// A [`KvCache`] that times its inner cache's attention calls, synchronizing the device
/// before and after each.
struct Timed<'a, C: KvCache> {
    inner: &'a mut C,
    device: Device,
    seconds: f64,
}

impl<C: KvCache> KvCache for Timed<'_, C> {
    fn attend_with(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
    ) -> candle_core::Result<Tensor> {
        self.device.synchronize()?;
        let t = Instant::now();
        let out = self.inner.attend_with(layer, q, k, v, positions, spec)?;
        self.device.synchronize()?;
        self.seconds += t.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// Greedy steps of every sequence from `pos`: seconds per step over `n` steps after one
/// warm-up (one step decodes one token of each sequence).
fn decode(model: &Model, caches: &mut [&mut dyn KvCache], pos: usize, n: usize) -> Result<f64> {
    let b = caches.len();
    let mut step = |toks: &[u32], pos: usize| -> Result<Vec<u32>> {
        let logits = if b == 1 {
            model.forward_last(toks, pos, &mut *caches[0])?.unsqueeze(0)?
        } else {
            model.forward_batch_last(toks, &vec![pos; b], caches)?
        };
        Ok(logits.argmax(1)?.to_vec1::<u32>()?)
    };
    let mut next = step(&vec![1; b], pos)?;
    let started = Instant::now();
    for i in 1..=n {
        next = step(&next, pos + i)?;
    }
    Ok(started.elapsed().as_secs_f64() / n as f64)
}

/// The share of a step spent in the caches' attention calls, synchronizing around each.
fn attention_share<C: KvCache>(
    model: &Model,
    caches: &mut [C],
    pos: usize,
    n: usize,
) -> Result<f64> {
    let device = model.device().clone();
    let mut timed: Vec<Timed<'_, C>> = caches
        .iter_mut()
        .map(|c| Timed { inner: c, device: device.clone(), seconds: 0.0 })
        .collect();
    let started = Instant::now();
    let mut dyns: Vec<&mut dyn KvCache> = timed.iter_mut().map(|t| t as &mut dyn KvCache).collect();
    decode(model, &mut dyns, pos, n)?;
    let total = started.elapsed().as_secs_f64();
    drop(dyns);
    Ok(timed.iter().map(|t| t.seconds).sum::<f64>() / total)
}

/// Random rows `[n, d]` of a unit-variance-ish distribution (sum of uniforms).
fn host_rows(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..3 {
                let z = nq_core::splitmix64(&mut s);
                acc += (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * 2.0
        })
        .collect()
}

/// Free device memory in bytes (0 on the CPU: no limit is reported there).
fn free_bytes(device: &Device) -> Result<usize> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => Ok(d.cuda_stream().context().mem_get_info()?.0),
        _ => Ok(0),
    }
}

/// An empty compressed cache where `device` computes: on its GPU (nq-cuda, candle's stream)
/// or in host memory.
#[cfg(feature = "cuda")]
fn compressed_cache(
    device: &Device,
    c: &ModelConfig,
    cfg: CompressionConfig,
    host_steps: bool,
) -> Result<Box<dyn CompressedSlot>> {
    Ok(if device.is_cuda() {
        Box::new(CompressedKvCache::on_device(device, c, cfg)?.host_steps(host_steps))
    } else {
        Box::new(CompressedKvCache::new(c, cfg)?.host_steps(host_steps))
    })
}

#[cfg(not(feature = "cuda"))]
fn compressed_cache(
    _: &Device,
    c: &ModelConfig,
    cfg: CompressionConfig,
    host_steps: bool,
) -> Result<Box<dyn CompressedSlot>> {
    Ok(Box::new(CompressedKvCache::new(c, cfg)?.host_steps(host_steps)))
}

/// A synthetic context for one layer of a compressed cache: rows, observation-window queries
/// and their attention mass.
struct SyntheticContext<'a> {
    k: &'a [f32],
    v: &'a [f32],
    queries: &'a [f32],
    mass: &'a [f32],
    positions: &'a [u32],
    window: usize,
}

/// What the run needs of a compressed cache, whatever its backend.
trait CompressedSlot: KvCache {
    fn fill(&mut self, layer: usize, ctx: &SyntheticContext<'_>) -> Result<()>;
    fn compress(&mut self) -> Result<()>;
    fn stats(&self) -> nq_core::CacheStats;
}

impl<B: nq_candle::CandleBackend> CompressedSlot for CompressedKvCache<B> {
    fn fill(&mut self, layer: usize, ctx: &SyntheticContext<'_>) -> Result<()> {
        let inner = self.inner_mut();
        let recent = &ctx.positions[ctx.positions.len() - ctx.window..];
        inner.observe_queries(layer, ctx.queries, recent)?;
        inner.append(layer, ctx.k, ctx.v, ctx.positions)?;
        inner.observe_attention(layer, ctx.mass)?;
        Ok(())
    }

    fn compress(&mut self) -> Result<()> {
        Ok(CompressedKvCache::compress(self)?)
    }

    fn stats(&self) -> nq_core::CacheStats {
        CompressedKvCache::stats(self)
    }
}

impl KvCache for Box<dyn CompressedSlot> {
    #[cfg(feature = "cuda")]
    fn as_cuda(&mut self) -> Option<&mut nq_core::CompressedCache<nq_cuda::CudaBackend>> {
        (**self).as_cuda()
    }

    fn attend_with(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
    ) -> candle_core::Result<Tensor> {
        (**self).attend_with(layer, q, k, v, positions, spec)
    }
}

struct Run<'a> {
    model: &'a Model,
    shape: &'a str,
    weights: SyntheticWeights,
    batch: usize,
    steps: usize,
}

impl Run<'_> {
    /// One record; `held` is the tokens the caches hold at the end (context and decoded),
    /// all sequences together, whose f16 bytes the ratio divides by the resident ones.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        cache: &str,
        context: usize,
        sec: f64,
        share: f64,
        bytes: usize,
        held: usize,
    ) -> Value {
        let c = self.model.config();
        let fp16 = 2 * c.kv_elems_per_token() * held;
        json!({
            "bench": "gpu_decode",
            "shape": self.shape,
            "weights": self.weights.name(),
            "batch": self.batch,
            "cache": cache,
            "context": context,
            "context_fill": "synthetic K/V written into the cache",
            "steps": self.steps,
            "tok_per_s": self.batch as f64 / sec,
            "ms_per_step": sec * 1e3,
            "attend_share": share,
            "resident_bytes": bytes,
            "fp16_bytes": fp16,
            "ratio": fp16 as f64 / bytes.max(1) as f64,
        })
    }

    /// The dense f16 baseline at `context` tokens per sequence.
    fn dense(&self, context: usize) -> Result<Value> {
        let (c, dev) = (self.model.config(), self.model.device());
        let positions: Vec<u32> = (0..context as u32).collect();
        let mut caches = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let mut cache = DenseCache::f16_native().with_capacity(context + 2 * self.steps + 8);
            for layer in 0..c.layers {
                let k = Tensor::randn(0f32, 1.0, (c.kv_heads, context, c.head_dim), dev)?;
                let v = Tensor::randn(0f32, 1.0, (c.kv_heads, context, c.head_dim), dev)?;
                let (k, v) = (k.to_dtype(DType::F16)?, v.to_dtype(DType::F16)?);
                cache.fill(layer, &k, &v, &positions)?;
            }
            caches.push(cache);
        }
        dev.synchronize()?;
        let free = free_bytes(dev)?;
        let mut dyns: Vec<&mut dyn KvCache> =
            caches.iter_mut().map(|c| c as &mut dyn KvCache).collect();
        let sec = decode(self.model, &mut dyns, context, self.steps)?;
        drop(dyns);
        let share = attention_share(self.model, &mut caches, context + self.steps + 1, self.steps)?;
        let bytes: usize = caches.iter().map(DenseCache::resident_bytes).sum();
        let held: usize = caches.iter().map(DenseCache::len).sum();
        let mut r = self.record("dense_f16", context, sec, share, bytes, held);
        r["fits_tokens"] =
            json!(context + free / (bytes / (context * self.batch)).max(1) / self.batch);
        Ok(r)
    }

    /// The compressed cache of `preset` on the device, at `context` tokens per sequence.
    fn compressed(
        &self,
        preset: Preset,
        host_steps: bool,
        context: usize,
        rows: &(Vec<f32>, Vec<f32>),
    ) -> Result<Value> {
        let (c, dev) = (self.model.config(), self.model.device());
        let cfg = preset.config();
        let positions: Vec<u32> = (0..context as u32).collect();
        let n = c.kv_heads * context * c.head_dim;
        let w = cfg.evict.window.min(context);
        let queries = host_rows(c.q_heads * w * c.head_dim, 99);
        let mass: Vec<f32> = host_rows(c.q_heads * context, 98).iter().map(|x| x.abs()).collect();
        let (mut fill, mut compress) = (0.0, 0.0);
        let mut caches = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let mut cache = compressed_cache(dev, c, cfg, host_steps)?;
            let started = Instant::now();
            let ctx = SyntheticContext {
                k: &rows.0[..n],
                v: &rows.1[..n],
                queries: &queries,
                mass: &mass,
                positions: &positions,
                window: w,
            };
            for layer in 0..c.layers {
                cache.fill(layer, &ctx)?;
            }
            fill += started.elapsed().as_secs_f64();
            let started = Instant::now();
            cache.compress()?;
            dev.synchronize()?;
            compress += started.elapsed().as_secs_f64();
            caches.push(cache);
        }
        let free = free_bytes(dev)?;
        let mut dyns: Vec<&mut dyn KvCache> =
            caches.iter_mut().map(|c| c as &mut dyn KvCache).collect();
        let sec = decode(self.model, &mut dyns, context, self.steps)?;
        drop(dyns);
        let share = attention_share(self.model, &mut caches, context + self.steps + 1, self.steps)?;
        let bytes: usize = caches.iter().map(|c| c.stats().resident_bytes).sum();
        let seen: usize = caches.iter().map(|c| c.stats().tokens_seen).sum();
        let name =
            if host_steps { format!("{}@host", preset.name()) } else { preset.name().into() };
        let mut r = self.record(&name, context, sec, share, bytes, seen);
        if self.batch > 1 && dev.is_cuda() && !host_steps {
            // The timed decode attends the batch in one launch; the timing pass cannot see
            // inside it, so its share comes from one call per sequence (an upper bound).
            r["attend_share_of"] = json!("one call per sequence");
        }
        let per_token = bytes as f64 / seen.max(1) as f64;
        r["fits_tokens"] = json!(context + (free as f64 / per_token / self.batch as f64) as usize);
        r["fill_s"] = json!(fill);
        r["compress_s"] = json!(compress);
        Ok(r)
    }
}

fn list(args: &[String], flag: &str, default: &str) -> Vec<String> {
    let v = args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    v.map_or(default, String::as_str).split(',').map(str::to_owned).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shape = list(&args, "--shape", "llama8b").remove(0);
    let weights = list(&args, "--weights", "f16,q4_0");
    let contexts: Vec<usize> = list(&args, "--contexts", "8192,32768,131072")
        .iter()
        .map(|s| s.parse().with_context(|| format!("--contexts: `{s}`")))
        .collect::<Result<_>>()?;
    let caches = list(&args, "--caches", "dense,high,balanced,max");
    let steps: usize = list(&args, "--steps", "16")[0].parse().context("--steps")?;
    let batches: Vec<usize> = list(&args, "--batch", "1,8")
        .iter()
        .map(|s| s.parse().with_context(|| format!("--batch: `{s}`")))
        .collect::<Result<_>>()?;
    let max = contexts.iter().max().copied().unwrap_or(0) + 4 * steps + 64;
    let config = match shape.as_str() {
        "llama8b" => ModelConfig::llama_shaped(32, 32, 8, 128, 4096, 14336, 128_256, max),
        "smollm2" => ModelConfig::llama_shaped(30, 9, 3, 64, 576, 1536, 49_152, max),
        // A smoke test of the run itself (`--device cpu`).
        "tiny" => ModelConfig::llama_shaped(2, 8, 2, 64, 128, 256, 300, max),
        s => bail!("--shape: `{s}` (llama8b or smollm2)"),
    };
    let device = match list(&args, "--device", "cuda")[0].as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => Device::new_cuda(0)?,
        "cpu" => Device::Cpu,
        d => bail!("--device: `{d}` (cuda needs the `cuda` feature; or cpu)"),
    };
    let name = match &device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.cuda_stream().context().name()?,
        _ => "cpu".to_owned(),
    };
    let kv = config.kv_heads * config.head_dim;
    let longest = contexts.iter().max().copied().unwrap_or(0);
    let rows = (host_rows(kv * longest, 1), host_rows(kv * longest, 2));
    let mut records = Vec::new();
    for w in &weights {
        let weights = match w.as_str() {
            "f16" => SyntheticWeights::F16,
            "q4_0" => SyntheticWeights::Q4_0,
            s => bail!("--weights: `{s}` (f16 or q4_0)"),
        };
        let t = Instant::now();
        let model = Model::synthetic(config.clone(), &device, weights, 11)?;
        eprintln!("{shape} {w}: built in {:.1} s", t.elapsed().as_secs_f64());
        for (&batch, &context) in batches.iter().flat_map(|b| contexts.iter().map(move |c| (b, c)))
        {
            let run = Run { model: &model, shape: &shape, weights, batch, steps };
            for cache in &caches {
                let r = match cache.as_str() {
                    "dense" => run.dense(context),
                    // PRESET@host: every step through the host, as before the in-place path.
                    p => match p.split_once('@') {
                        Some((p, "host")) => run.compressed(p.parse()?, true, context, &rows),
                        Some(_) => bail!("--caches: `{p}` (PRESET or PRESET@host)"),
                        None => run.compressed(p.parse()?, false, context, &rows),
                    },
                };
                let mut r = match r {
                    Ok(r) => r,
                    Err(e) => json!({"bench": "gpu_decode", "shape": shape, "weights": w,
                        "batch": batch, "cache": cache, "context": context,
                        "error": format!("{e:#}")}),
                };
                r["device"] = json!(name);
                eprintln!("{r}");
                records.push(r);
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}
