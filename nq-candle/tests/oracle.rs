//! Fast paths against naive references: DenseCache vs f64 attention, chunked vs one-shot
//! forwards, scoring helpers vs direct sums.

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use nq_candle::{AttnSpec, DenseCache, KvCache};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{data, max_diff, model_or_skip, naive_attention, rows, smollm2, tiny};

fn randn(rng: &mut StdRng, h: usize, t: usize, d: usize) -> Vec<Vec<Vec<f32>>> {
    (0..h)
        .map(|_| (0..t).map(|_| (0..d).map(|_| rng.random_range(-2.0f32..2.0)).collect()).collect())
        .collect()
}

fn tensor(x: &[Vec<Vec<f32>>]) -> Tensor {
    let (h, t, d) = (x.len(), x[0].len(), x[0][0].len());
    let flat: Vec<f32> = x.iter().flatten().flatten().copied().collect();
    Tensor::from_vec(flat, (h, t, d), &Device::Cpu).unwrap()
}

fn slice(x: &[Vec<Vec<f32>>], a: usize, b: usize) -> Vec<Vec<Vec<f32>>> {
    x.iter().map(|h| h[a..b].to_vec()).collect()
}

fn round_f16(x: &[Vec<Vec<f32>>]) -> Vec<Vec<Vec<f32>>> {
    x.iter()
        .map(|h| {
            h.iter().map(|r| r.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()).collect()
        })
        .collect()
}

struct Case {
    hq: usize,
    hkv: usize,
    d: usize,
    chunks: &'static [usize],
    spec: fn(usize) -> AttnSpec,
    dtype: DType,
    query_chunk: usize,
}

/// Feeds `chunks` of new tokens through a DenseCache and checks every call's output against
/// the f64 naive attention over all tokens so far.
fn check_case(c: &Case, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let t: usize = c.chunks.iter().sum();
    let (q, k, v) = (
        randn(&mut rng, c.hq, t, c.d),
        randn(&mut rng, c.hkv, t, c.d),
        randn(&mut rng, c.hkv, t, c.d),
    );
    // Positions with a gap, as after a skipped block: the mask must follow positions.
    let pos: Vec<u32> = (0..t as u32).map(|i| if i < 3 { i } else { i + 5 }).collect();
    let spec = (c.spec)(c.d);
    let mut cache = DenseCache::with_dtype(c.dtype).unwrap().with_query_chunk(c.query_chunk);
    let (kr, vr) =
        if c.dtype == DType::F16 { (round_f16(&k), round_f16(&v)) } else { (k.clone(), v.clone()) };
    let mut start = 0;
    for &n in c.chunks {
        let end = start + n;
        let out = cache
            .attend_with(
                3,
                &tensor(&slice(&q, start, end)),
                &tensor(&slice(&k, start, end)),
                &tensor(&slice(&v, start, end)),
                &pos[start..end],
                &spec,
            )
            .unwrap();
        assert_eq!(out.dims(), &[c.hq, n, c.d]);
        let want = naive_attention(
            &slice(&q, start, end),
            &slice(&kr, 0, end),
            &slice(&vr, 0, end),
            &pos[start..end],
            &pos[..end],
            f64::from(spec.scale),
            spec.window,
            spec.softcap.map(f64::from),
        );
        let got = out.to_vec3::<f32>().unwrap();
        // Scores carry ~d roundings, the weighted sum ~end more, all of magnitude <= |v|max = 2.
        let tol = 16.0 * f64::from(f32::EPSILON) * (c.d + end) as f64 * 2.0;
        for (gh, wh) in got.iter().zip(&want) {
            for (gr, wr) in gh.iter().zip(wh) {
                for (&g, &w) in gr.iter().zip(wr) {
                    assert!((f64::from(g) - w).abs() <= tol, "got {g}, want {w}, tol {tol}");
                }
            }
        }
        start = end;
    }
    assert_eq!(cache.layer_len(3), t);
    assert_eq!(cache.positions(3), &pos[..]);
}

#[test]
fn dense_cache_matches_naive_attention() {
    let standard: fn(usize) -> AttnSpec = AttnSpec::standard;
    let windowed: fn(usize) -> AttnSpec = |d| AttnSpec { window: Some(6), ..AttnSpec::standard(d) };
    let capped: fn(usize) -> AttnSpec =
        |_| AttnSpec { scale: 0.3, window: None, softcap: Some(5.0) };
    let cases = [
        Case {
            hq: 9,
            hkv: 3,
            d: 64,
            chunks: &[13, 1, 1, 7],
            spec: standard,
            dtype: DType::F32,
            query_chunk: 4,
        },
        Case {
            hq: 4,
            hkv: 4,
            d: 96,
            chunks: &[20, 3, 1],
            spec: standard,
            dtype: DType::F32,
            query_chunk: 256,
        },
        Case {
            hq: 14,
            hkv: 2,
            d: 64,
            chunks: &[1, 1, 17],
            spec: windowed,
            dtype: DType::F32,
            query_chunk: 5,
        },
        Case {
            hq: 4,
            hkv: 1,
            d: 256,
            chunks: &[11, 2, 1],
            spec: windowed,
            dtype: DType::F32,
            query_chunk: 3,
        },
        Case {
            hq: 2,
            hkv: 1,
            d: 32,
            chunks: &[9, 4],
            spec: capped,
            dtype: DType::F32,
            query_chunk: 256,
        },
        Case {
            hq: 6,
            hkv: 2,
            d: 64,
            chunks: &[10, 1, 5],
            spec: standard,
            dtype: DType::F16,
            query_chunk: 4,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        check_case(c, 1000 + i as u64);
    }
}

/// The protocol's shape: prefill 1664, then 512 in one call, then token by token; the outputs
/// equal one attend over all tokens (only summation order differs).
#[test]
fn chunked_prefill_equals_one_shot_attention() {
    let (hq, hkv, d) = (9, 3, 64);
    let chunks = [1664usize, 512, 1, 1, 1, 1];
    let t: usize = chunks.iter().sum();
    let mut rng = StdRng::seed_from_u64(7);
    let (q, k, v) =
        (randn(&mut rng, hq, t, d), randn(&mut rng, hkv, t, d), randn(&mut rng, hkv, t, d));
    let pos: Vec<u32> = (0..t as u32).collect();
    let mut one = DenseCache::new();
    let full = one
        .attend(0, &tensor(&q), &tensor(&k), &tensor(&v), &pos)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let mut cache = DenseCache::new();
    let mut start = 0;
    let mut worst = 0f32;
    for n in chunks {
        let end = start + n;
        let out = cache
            .attend(
                0,
                &tensor(&slice(&q, start, end)),
                &tensor(&slice(&k, start, end)),
                &tensor(&slice(&v, start, end)),
                &pos[start..end],
            )
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for (oh, fh) in out.iter().zip(&full) {
            for (i, orow) in oh.iter().enumerate() {
                for (&a, &b) in orow.iter().zip(&fh[start + i]) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        start = end;
    }
    // Both sides round ~(d + t) times on values of magnitude <= 2.
    let tol = 8.0 * f32::EPSILON * (d + t) as f32 * 2.0;
    assert!(worst <= tol, "max diff {worst} > {tol}");
    assert_eq!(cache.len(), t);
}

/// Whole model, every family: one forward of all tokens vs prefix + rest + singles, with a
/// small query chunk so DenseCache's chunking is exercised too.
#[test]
fn chunked_forward_equals_one_shot_tiny_models() {
    for family in ["llama", "mistral", "qwen2", "phi3", "gemma3"] {
        let (model, tokens, _) = tiny(family);
        let mut one = DenseCache::new();
        let full = rows(&model.forward(&tokens, 0, &mut one).unwrap());
        let mut cache = DenseCache::new().with_query_chunk(4);
        let mut got = Vec::new();
        let mut start = 0;
        for n in [23usize, 9, 1, 1, 1, 1, 1, 1, 1, 1] {
            got.extend(rows(&model.forward(&tokens[start..start + n], start, &mut cache).unwrap()));
            start += n;
        }
        assert_eq!(start, tokens.len());
        let (diff, mag) = max_diff(&got, &full);
        let c = model.config();
        // Summation-order differences only: a few roundings per layer on every path.
        let tol = 64.0 * f32::EPSILON * c.layers as f32 * (c.hidden as f32).sqrt() * mag.max(1.0);
        assert!(diff <= tol, "{family}: max diff {diff} > {tol}");
        // forward_last gives the last row of forward.
        let mut c2 = DenseCache::new();
        let last = model.forward_last(&tokens, 0, &mut c2).unwrap().to_vec1::<f32>().unwrap();
        let (diff, _) = max_diff(&[last], &[full[full.len() - 1].clone()]);
        assert!(diff <= tol, "{family}: forward_last differs by {diff}");
    }
}

#[test]
fn chunked_forward_equals_one_shot_smollm2() {
    let Some((model, tok)) = smollm2() else { return };
    let text = std::fs::read_to_string(crate::common::data("dpkg_triggers.txt")).unwrap();
    let ids = tok.encode(&text).unwrap();
    let ids = &ids[..300];
    let full = rows(&model.forward(ids, 0, &mut DenseCache::new()).unwrap());
    let mut cache = DenseCache::new().with_query_chunk(64);
    let mut got = Vec::new();
    let mut start = 0;
    for n in [200usize, 96, 1, 1, 1, 1] {
        got.extend(rows(&model.forward(&ids[start..start + n], start, &mut cache).unwrap()));
        start += n;
    }
    let (diff, mag) = max_diff(&got, &full);
    let c = model.config();
    let tol = 64.0 * f32::EPSILON * c.layers as f32 * (c.hidden as f32).sqrt() * mag;
    assert!(diff <= tol, "max diff {diff} > {tol} (|logit| max {mag})");
    assert_eq!(cache.len(), 300);
}

#[test]
fn scoring_matches_direct_sums() {
    let mut rng = StdRng::seed_from_u64(3);
    let (t, vocab) = (5, 1000);
    let a: Vec<f32> = (0..t * vocab).map(|_| rng.random_range(-30.0f32..30.0)).collect();
    let b: Vec<f32> = (0..t * vocab).map(|_| rng.random_range(-30.0f32..30.0)).collect();
    let targets: Vec<u32> = (0..t).map(|_| rng.random_range(0..vocab as u32)).collect();
    let ta = Tensor::from_vec(a.clone(), (t, vocab), &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(b.clone(), (t, vocab), &Device::Cpu).unwrap();
    let nll = nq_candle::nll_from_logits(&ta, &targets).unwrap();
    let kl = nq_candle::kl_divergence_from_logits(&ta, &tb).unwrap();
    let ls = rows(&nq_candle::log_softmax(&ta).unwrap());
    let mut sum = 0.0;
    for i in 0..t {
        let ra = &a[i * vocab..(i + 1) * vocab];
        let rb = &b[i * vocab..(i + 1) * vocab];
        // Direct definitions, no max shift (values are small enough for f64 exp).
        let za: f64 = ra.iter().map(|&x| f64::from(x).exp()).sum();
        let zb: f64 = rb.iter().map(|&x| f64::from(x).exp()).sum();
        let want_nll = -(f64::from(ra[targets[i] as usize]).exp() / za).ln();
        let want_kl: f64 = ra
            .iter()
            .zip(rb)
            .map(|(&x, &y)| {
                let p = f64::from(x).exp() / za;
                let q = f64::from(y).exp() / zb;
                p * (p / q).ln()
            })
            .sum();
        assert!((nll[i] - want_nll).abs() <= 1e3 * f64::EPSILON * want_nll.abs().max(1.0));
        assert!((kl[i] - want_kl).abs() <= 1e3 * f64::EPSILON * want_kl.abs().max(1.0));
        // log_softmax in f32: a few roundings on values of magnitude <= 60 + ln(vocab).
        let ln_za = za.ln();
        for (j, &x) in ra.iter().enumerate() {
            let want = f64::from(x) - ln_za;
            assert!((f64::from(ls[i][j]) - want).abs() <= 8.0 * f64::from(f32::EPSILON) * 70.0);
        }
        sum += want_nll;
    }
    let ppl = nq_candle::perplexity_from_logits(&ta, &targets).unwrap();
    let want = (sum / t as f64).exp();
    assert!((ppl - want).abs() <= 1e3 * f64::EPSILON * want);
}

/// RoPE makes attention depend on relative positions only, so shifting every position by a
/// large offset (far past candle-transformers' 4096-entry tables) leaves the logits unchanged up
/// to the rounding of larger angles.
#[test]
fn rope_works_at_any_position_tiny_models() {
    for family in ["llama", "qwen2", "phi3"] {
        let (model, tokens, _) = tiny(family);
        let base = rows(&model.forward(&tokens, 0, &mut DenseCache::new()).unwrap());
        let offset = 1_000_000;
        let opts = nq_candle::LoadOptions { max_context: Some(offset + 100), ..Default::default() };
        let far = nq_candle::Model::from_gguf(
            &crate::common::data(&format!("tiny_{family}.gguf")),
            &Device::Cpu,
            opts,
        )
        .unwrap();
        let shifted = rows(&far.forward(&tokens, offset, &mut DenseCache::new()).unwrap());
        let (diff, mag) = max_diff(&shifted, &base);
        // Angles up to 1e6 rad: cos/sin are computed in f64 and rounded once to f32, so the
        // rotation itself is as exact as at position 0; what changes is rounding order.
        let c = model.config();
        let tol = 64.0 * f32::EPSILON * c.layers as f32 * (c.hidden as f32).sqrt() * mag.max(1.0);
        assert!(diff <= tol, "{family}: shift changed logits by {diff} > {tol}");
    }
}

/// Rows `[heads, positions.len(), head_dim]` through the model's rotation (candle's kernels
/// with nq-rope's tables) against `nq_rope::Rope::apply`, for every distinct rope of `config`.
fn check_model_rope(config: &nq_candle::ModelConfig, label: &str) {
    let positions = [0u32, 1, 2, 511, 4_095, 70_000, 1_000_000];
    let (heads, t, d) = (3, positions.len(), config.head_dim);
    let mut seen: Vec<nq_rope::RopeConfig> = Vec::new();
    for layer in 0..config.layers {
        let spec = config.rope_spec(layer);
        if seen.contains(&spec) {
            continue;
        }
        seen.push(spec);
        let rope = config.rope(layer).unwrap();
        let mut rng = StdRng::seed_from_u64(layer as u64);
        let x: Vec<f32> = (0..heads * t * d).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let tables = nq_candle::RopeTables::new(&rope, &positions, &Device::Cpu).unwrap();
        let got = tables
            .apply(&Tensor::from_vec(x.clone(), (heads, t, d), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut want = x.clone();
        for head in want.chunks_mut(t * d) {
            rope.apply(head, &positions).unwrap();
        }
        let af = rope.attention_factor();
        for (r, ((g, w), xr)) in got.chunks(d).zip(want.chunks(d)).zip(x.chunks(d)).enumerate() {
            // Same f32 tables and the same products on both sides; the attention factor may
            // round once more in candle's affine: 2 ulps of the row's norm times the factor.
            let norm = xr.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            let err = g.iter().zip(w).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
            let bound = 2.0 * f64::from(f32::EPSILON) * norm * af.max(1.0);
            assert!(
                err <= bound,
                "{label} layer {layer} ({spec:?}) row {r} pos {}: {err:e} > {bound:e}",
                positions[r % t]
            );
            assert_eq!(g[spec.rotary_dim..], xr[spec.rotary_dim..], "{label}: tail passes");
        }
    }
    assert!(!seen.is_empty());
}

fn config_of(path: &std::path::Path) -> nq_candle::ModelConfig {
    nq_candle::ModelConfig::from_gguf(&nq_candle::GgufFile::open(path).unwrap()).unwrap()
}

/// A copy of tiny model `family` with `extra` metadata entries added (or replaced).
fn tiny_with(family: &str, name: &str, extra: &[(&str, gguf_file::Value)]) -> std::path::PathBuf {
    let mut file = nq_candle::GgufFile::open(&data(&format!("tiny_{family}.gguf"))).unwrap();
    let mut md: Vec<(String, gguf_file::Value)> = file
        .content()
        .metadata
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let names: Vec<String> = file.content().tensor_infos.keys().cloned().collect();
    let tensors: Vec<(String, QTensor)> =
        names.iter().map(|n| (n.clone(), file.tensor(n, &Device::Cpu).unwrap())).collect();
    let dir = std::env::temp_dir().join(format!("nq-candle-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let md_ref: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_ref: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_ref, &t_ref).unwrap();
    path
}

/// The model's RoPE is nq-rope's on every model config: each tiny family (interleaved, split
/// half, partial rotary, Gemma-3's local and global bases), each installed checkpoint, and each
/// scaling kind a GGUF can state.
#[test]
fn model_rope_agrees_with_nq_rope() {
    for family in ["llama", "mistral", "qwen2", "phi3", "gemma3"] {
        check_model_rope(&config_of(&data(&format!("tiny_{family}.gguf"))), family);
    }
    for name in ["smollm2", "qwen05", "gemma270m"] {
        if let Some(path) = model_or_skip(name) {
            check_model_rope(&config_of(&path), name);
        }
    }
    let f = gguf_file::Value::F32;
    let s = |v: &str| gguf_file::Value::String(v.to_owned());
    let linear = [("qwen2.rope.scaling.type", s("linear")), ("qwen2.rope.scaling.factor", f(4.0))];
    let c = config_of(&tiny_with("qwen2", "linear.gguf", &linear));
    assert_eq!(c.rope_spec(0).scaling, nq_rope::RopeScaling::Linear { factor: 4.0 });
    assert_eq!(c.rope_scaling, nq_rope::RopeScaling::Linear { factor: 4.0 });
    check_model_rope(&c, "qwen2 linear");
    let yarn = [
        ("llama.rope.scaling.type", s("yarn")),
        ("llama.rope.scaling.factor", f(4.0)),
        ("llama.rope.scaling.original_context_length", gguf_file::Value::U32(32_768)),
        ("llama.rope.scaling.yarn_beta_fast", f(16.0)),
    ];
    let c = config_of(&tiny_with("llama", "yarn.gguf", &yarn));
    let want = match nq_rope::RopeScaling::yarn(4.0, 32_768) {
        nq_rope::RopeScaling::Yarn {
            beta_slow, mscale, mscale_all_dim, attention_factor, ..
        } => nq_rope::RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 32_768,
            beta_fast: 16.0,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate: true,
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(c.rope_spec(0).scaling, want);
    assert!(!matches!(c.rope_scaling, nq_rope::RopeScaling::Linear { .. }));
    assert!(c.rope(0).unwrap().attention_factor() > 1.0, "yarn scales q and k");
    check_model_rope(&c, "llama yarn");
    // Gemma-3: only the global layers are scaled.
    let gemma = [("gemma3.rope.scaling.type", s("linear")), ("gemma3.rope.scaling.factor", f(8.0))];
    let c = config_of(&tiny_with("gemma3", "gemma-linear.gguf", &gemma));
    let scalings: Vec<_> = (0..c.layers).map(|l| c.rope_spec(l).scaling).collect();
    assert!(scalings.contains(&nq_rope::RopeScaling::None), "{scalings:?}");
    assert!(scalings.contains(&nq_rope::RopeScaling::Linear { factor: 8.0 }), "{scalings:?}");
    check_model_rope(&c, "gemma3 linear");
}

/// GGUF metadata entries to add to a tiny model.
type Entries = Vec<(&'static str, gguf_file::Value)>;

/// Scaling metadata this crate cannot honour is refused at load with the key that says so.
#[test]
fn unsupported_rope_scaling_is_refused() {
    let f = gguf_file::Value::F32;
    let s = |v: &str| gguf_file::Value::String(v.to_owned());
    let cases: [(&str, Entries, &str); 3] = [
        (
            "yarn-no-ctx.gguf",
            vec![("qwen2.rope.scaling.type", s("yarn")), ("qwen2.rope.scaling.factor", f(4.0))],
            "qwen2.rope.scaling.original_context_length",
        ),
        (
            "yarn-attn.gguf",
            vec![
                ("qwen2.rope.scaling.type", s("yarn")),
                ("qwen2.rope.scaling.factor", f(4.0)),
                ("qwen2.rope.scaling.original_context_length", gguf_file::Value::U32(4096)),
                ("qwen2.rope.scaling.attn_factor", f(0.5)),
            ],
            "qwen2.rope.scaling.attn_factor",
        ),
        (
            "longrope.gguf",
            vec![("qwen2.rope.scaling.type", s("longrope"))],
            "qwen2.rope.scaling.type",
        ),
    ];
    for (name, extra, key) in cases {
        let path = tiny_with("qwen2", name, &extra);
        let e = nq_candle::ModelConfig::from_gguf(&nq_candle::GgufFile::open(&path).unwrap())
            .unwrap_err();
        assert!(matches!(&e, nq_candle::Error::Metadata { key: k, .. } if k == key), "{e:?}");
    }
    // A scaling factor nq-rope refuses (negative) is caught by ModelConfig::rope at load.
    let negative =
        [("qwen2.rope.scaling.type", s("linear")), ("qwen2.rope.scaling.factor", f(-2.0))];
    let e = nq_candle::ModelConfig::from_gguf(
        &nq_candle::GgufFile::open(&tiny_with("qwen2", "negative.gguf", &negative)).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(&e, nq_candle::Error::Metadata { key, .. } if key == "qwen2.rope.*"), "{e:?}");
}

/// Keys can be stored RoPE-free only when every layer shares one rope.
#[test]
fn shared_rope_follows_the_layers() {
    use nq_candle::compressed::{rope_of, shared_rope};
    let llama = config_of(&data("tiny_llama.gguf"));
    let rope = shared_rope(&llama).unwrap().expect("llama layers share one rope");
    assert_eq!(rope.config().layout, nq_rope::RopeLayout::Interleaved);
    assert_eq!(rope, rope_of(&llama).unwrap());
    let gemma = config_of(&data("tiny_gemma3.gguf"));
    assert_eq!(shared_rope(&gemma).unwrap(), None);
    assert!(rope_of(&gemma).is_err());
    let cfg = nq_core::CompressionConfig { remove_rope: true, ..Default::default() };
    assert!(nq_candle::CompressedKvCache::new(&gemma, cfg).is_err());
}

/// Gemma-3's sliding layers: a period (default 6: five sliding, one global) or one flag per
/// layer; the sliding layers take the local RoPE base. Anything else is refused by key.
#[test]
fn gemma3_sliding_layers_follow_the_metadata() {
    use gguf_file::Value::{Array, Bool, U32};
    let key = "gemma3.attention.sliding_window_pattern";
    let windows = |extra: &[(&str, gguf_file::Value)], name: &str| {
        let c = config_of(&tiny_with("gemma3", name, extra));
        let thetas: Vec<f64> = (0..c.layers).map(|l| c.rope_spec(l).theta).collect();
        (c.layer_windows, thetas)
    };
    let (w, theta) = windows(&[], "gemma-default.gguf");
    assert_eq!(w, [Some(5), Some(5), Some(5), Some(5), Some(5), None]);
    assert_eq!(theta, [10_000.0, 10_000.0, 10_000.0, 10_000.0, 10_000.0, 1_000_000.0]);
    let (w, _) = windows(&[(key, U32(2))], "gemma-period.gguf");
    assert_eq!(w, [Some(5), None, Some(5), None, Some(5), None]);
    let flags = Array([true, false, false, true, true, false].map(Bool).to_vec());
    let (w, theta) = windows(&[(key, flags)], "gemma-flags.gguf");
    assert_eq!(w, [Some(5), None, None, Some(5), Some(5), None]);
    assert_eq!(theta[..2], [10_000.0, 1_000_000.0]);
    for (name, bad) in [
        ("gemma-short.gguf", Array(vec![Bool(true); 4])),
        ("gemma-ints.gguf", Array(vec![U32(1); 6])),
        ("gemma-string.gguf", gguf_file::Value::String("6".into())),
    ] {
        let path = tiny_with("gemma3", name, &[(key, bad)]);
        let e = nq_candle::ModelConfig::from_gguf(&nq_candle::GgufFile::open(&path).unwrap())
            .unwrap_err();
        assert!(matches!(&e, nq_candle::Error::Metadata { key: k, .. } if k == key), "{e:?}");
    }
}
