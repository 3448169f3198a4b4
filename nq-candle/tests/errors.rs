//! Every `Error` variant is reachable from bad input, and is returned, never panicked.

use std::path::PathBuf;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use nq_candle::{
    Architecture, DenseCache, Error, GgufFile, GgufTokenizer, LoadOptions, Model, model_path,
    model_path_in,
};

use crate::common::{data, tiny};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nq-candle-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes a GGUF with `metadata` and one 4x4 f32 `token_embd.weight` (unless `no_tensors`).
fn write_gguf(name: &str, metadata: &[(&str, gguf_file::Value)], no_tensors: bool) -> PathBuf {
    let path = tmp(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let emb = QTensor::quantize(
        &Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let tensors: Vec<(&str, &QTensor)> =
        if no_tensors { vec![] } else { vec![("token_embd.weight", &emb)] };
    gguf_file::write(&mut f, &md, &tensors).unwrap();
    path
}

fn s(v: &str) -> gguf_file::Value {
    gguf_file::Value::String(v.to_string())
}

fn llama_meta() -> Vec<(&'static str, gguf_file::Value)> {
    use gguf_file::Value::U32;
    vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", U32(1)),
        ("llama.embedding_length", U32(4)),
        ("llama.feed_forward_length", U32(8)),
        ("llama.attention.head_count", U32(2)),
        ("llama.context_length", U32(16)),
    ]
}

#[test]
fn model_missing_names_the_fetch_command() {
    let dir = tmp("empty-model-dir");
    let e = model_path_in(&dir, "gemma270m").unwrap_err();
    assert!(matches!(e, Error::ModelMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("`nq fetch gemma270m`"), "{e}");
}

#[test]
fn unknown_model_lists_known_names() {
    let e = model_path("no-such-model.gguf").unwrap_err();
    assert!(matches!(e, Error::UnknownModel { .. }), "{e:?}");
    assert!(e.to_string().contains("smollm2, qwen05, gemma270m"), "{e}");
    // An existing file is accepted as a path.
    let p = data("tiny_llama.gguf");
    assert_eq!(model_path(p.to_str().unwrap()).unwrap(), p);
}

#[test]
fn io_error_for_missing_file() {
    let e = GgufFile::open(&tmp("does-not-exist.gguf")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn not_gguf_for_wrong_magic_truncation_and_garbage() {
    let p = tmp("not.gguf");
    std::fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::NotGguf { .. }), "{e:?}");
    std::fs::write(&p, b"GG").unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::NotGguf { .. })));
    // Right magic, header cut short.
    let good = std::fs::read(data("tiny_llama.gguf")).unwrap();
    std::fs::write(&p, &good[..40]).unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::NotGguf { .. })));
    // Right header, tensor data cut short: reading a tensor fails with a typed error.
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Tensor { .. } | Error::NotGguf { .. }), "{e:?}");
}

#[test]
fn unsupported_architecture_is_named() {
    let p = write_gguf("mamba.gguf", &[("general.architecture", s("mamba"))], false);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::UnsupportedArchitecture { .. }), "{e:?}");
    assert!(e.to_string().contains("`mamba`"), "{e}");
    assert!(Architecture::from_gguf_name("gpt2").is_err());
}

#[test]
fn metadata_errors() {
    // Missing block count.
    let mut md = llama_meta();
    md.retain(|(k, _)| *k != "llama.block_count");
    let p = write_gguf("no-blocks.gguf", &md, false);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Metadata { key, .. } if key == "llama.block_count"), "{e:?}");
    // kv heads that do not divide q heads.
    let mut md = llama_meta();
    md.push(("llama.attention.head_count_kv", gguf_file::Value::U32(3)));
    let p = write_gguf("bad-kv.gguf", &md, false);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Metadata { .. }), "{e:?}");
    // Wrong type.
    let mut md = llama_meta();
    md.push(("llama.rope.freq_base", s("ten thousand")));
    let p = write_gguf("bad-type.gguf", &md, false);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Metadata { .. }), "{e:?}");
}

#[test]
fn tensor_errors() {
    // Metadata complete, no token embedding.
    let p = write_gguf("no-tensors.gguf", &llama_meta(), true);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Tensor { name, .. } if name == "token_embd.weight"), "{e:?}");
    // Embedding present, layer weights absent.
    let p = write_gguf("no-layers.gguf", &llama_meta(), false);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Tensor { name, .. } if name.starts_with("blk.0.")), "{e:?}");
}

#[test]
fn rope_factor_tensors_are_refused() {
    // A complete tiny llama plus Llama-3.1-style `rope_freqs.weight`: loading must fail rather
    // than silently ignore the scaling.
    let mut file = GgufFile::open(&data("tiny_llama.gguf")).unwrap();
    let md: Vec<(String, gguf_file::Value)> =
        file.content().metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let names: Vec<String> = file.content().tensor_infos.keys().cloned().collect();
    let mut tensors: Vec<(String, QTensor)> =
        names.iter().map(|n| (n.clone(), file.tensor(n, &Device::Cpu).unwrap())).collect();
    let freqs = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    tensors.push(("rope_freqs.weight".into(), QTensor::quantize(&freqs, GgmlDType::F32).unwrap()));
    let p = tmp("rope-freqs.gguf");
    let mut f = std::fs::File::create(&p).unwrap();
    let md_ref: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_ref: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_ref, &t_ref).unwrap();
    drop(f);
    let e = Model::from_gguf(&p, &Device::Cpu, LoadOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Tensor { name, .. } if name == "rope_freqs.weight"), "{e:?}");
}

#[test]
fn forward_input_errors() {
    let (model, tokens, _) = tiny("llama");
    let mut cache = DenseCache::new();
    assert!(matches!(model.forward(&[], 0, &mut cache), Err(Error::EmptyInput { .. })));
    let vocab = u32::try_from(model.config().vocab).unwrap();
    assert!(matches!(
        model.forward(&[1, vocab], 0, &mut cache),
        Err(Error::TokenOutOfRange { token, .. }) if token == vocab
    ));
    let max = model.config().max_context;
    assert!(matches!(
        model.forward(&tokens[..2], max - 1, &mut cache),
        Err(Error::ContextTooLong { got, .. }) if got == max + 1
    ));
    // The override lifts the limit.
    let opts = LoadOptions { max_context: Some(max + 10), ..Default::default() };
    let big = Model::from_gguf(&data("tiny_llama.gguf"), &Device::Cpu, opts).unwrap();
    assert!(big.forward(&tokens[..2], max - 1, &mut DenseCache::new()).is_ok());
    // A cache error surfaces as Error::Candle: positions already stored.
    model.forward(&tokens[..3], 0, &mut cache).unwrap();
    let e = model.forward(&tokens[..3], 0, &mut cache).unwrap_err();
    assert!(matches!(e, Error::Candle(_)), "{e:?}");
}

#[test]
fn scoring_shape_errors() {
    let l = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(nq_candle::nll_from_logits(&l, &[0, 1]), Err(Error::Shape { .. })));
    assert!(matches!(
        nq_candle::nll_from_logits(&l, &[0, 1, 5]),
        Err(Error::TokenOutOfRange { .. })
    ));
    let m = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(nq_candle::kl_divergence_from_logits(&l, &m), Err(Error::Shape { .. })));
    let e = Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(nq_candle::perplexity_from_logits(&e, &[]), Err(Error::EmptyInput { .. })));
    assert!(nq_candle::DenseCache::with_dtype(DType::U32).is_err());
}

#[test]
fn tokenizer_errors() {
    let mut md = llama_meta();
    md.push(("tokenizer.ggml.model", s("wordpiece")));
    md.push(("tokenizer.ggml.tokens", gguf_file::Value::Array(vec![s("a"), s("b")])));
    let p = write_gguf("bad-tokenizer.gguf", &md, false);
    let e = GgufTokenizer::from_gguf(&p).unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e:?}");
    assert!(e.to_string().contains("wordpiece"), "{e}");
    // No tokenizer metadata at all.
    let e = GgufTokenizer::from_gguf(&data("tiny_llama.gguf")).unwrap_err();
    assert!(matches!(e, Error::Metadata { .. }), "{e:?}");
}

#[test]
fn attend_rejects_bad_shapes() {
    use nq_candle::KvCache;
    let z = |h, t, d| Tensor::zeros((h, t, d), DType::F32, &Device::Cpu).unwrap();
    let mut c = DenseCache::new();
    // kv heads not dividing q heads; mismatched t; wrong number of positions; not ascending.
    assert!(c.attend(0, &z(3, 2, 4), &z(2, 2, 4), &z(2, 2, 4), &[0, 1]).is_err());
    assert!(c.attend(0, &z(2, 2, 4), &z(1, 3, 4), &z(1, 3, 4), &[0, 1]).is_err());
    assert!(c.attend(0, &z(2, 2, 4), &z(1, 2, 4), &z(1, 2, 4), &[0]).is_err());
    assert!(c.attend(0, &z(2, 2, 4), &z(1, 2, 4), &z(1, 2, 4), &[1, 1]).is_err());
    // A layer's kv shape cannot change.
    c.attend(0, &z(2, 1, 4), &z(1, 1, 4), &z(1, 1, 4), &[0]).unwrap();
    assert!(c.attend(0, &z(2, 1, 8), &z(1, 1, 8), &z(1, 1, 8), &[1]).is_err());
    // An error mapped through into_candle keeps its message.
    let e = Error::EmptyInput { op: "x" }.into_candle();
    assert!(e.to_string().contains("x: empty input"));
}
