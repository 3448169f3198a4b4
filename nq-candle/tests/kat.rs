//! Known answers: tiny models vs an independent NumPy implementation, tokenizers vs Python
//! builds of the same metadata, corpus token counts, and llama.cpp's SmolLM2 perplexity.

use candle_core::Tensor;
use nq_candle::{Architecture, DenseCache, GgufTokenizer, perplexity_from_logits};

use crate::common::{data, max_diff, model_or_skip, rows, smollm2, tiny};

fn check_tiny(family: &str, arch: Architecture) {
    let (model, tokens, want) = tiny(family);
    assert_eq!(model.config().architecture, arch);
    let got = rows(&model.forward(&tokens, 0, &mut DenseCache::new()).unwrap());
    let want: Vec<Vec<f32>> = want.iter().map(|r| r.iter().map(|&x| x as f32).collect()).collect();
    let (diff, mag) = max_diff(&got, &want);
    let c = model.config();
    // f32 forward vs f64 reference: each layer adds O(eps * sqrt(width)) relative error to the
    // residual stream; the logits inherit it times their magnitude.
    let width = c.hidden.max(c.ffn_hidden).max(c.q_heads * c.head_dim) as f32;
    let tol = 64.0 * f32::EPSILON * width.sqrt() * c.layers as f32 * mag;
    assert!(diff <= tol, "{family}: max |logit diff| {diff} > {tol} (max |logit| {mag})");
}

#[test]
fn tiny_llama_matches_reference() {
    check_tiny("llama", Architecture::Llama);
}

#[test]
fn tiny_mistral_sliding_window_matches_reference() {
    let (model, _, _) = tiny("mistral");
    assert_eq!(model.config().layer_windows, vec![Some(7); 2]);
    check_tiny("mistral", Architecture::Llama);
}

#[test]
fn tiny_qwen2_matches_reference() {
    check_tiny("qwen2", Architecture::Qwen2);
}

#[test]
fn tiny_phi3_partial_rotary_head_dim_24_matches_reference() {
    let (model, _, _) = tiny("phi3");
    assert_eq!((model.config().head_dim, model.config().rope_dim), (24, 16));
    check_tiny("phi3", Architecture::Phi3);
}

#[test]
fn tiny_gemma3_matches_reference() {
    let (model, _, _) = tiny("gemma3");
    let c = model.config();
    assert_eq!(c.layer_windows, vec![Some(5), Some(5), Some(5), Some(5), Some(5), None]);
    assert_eq!(c.rope_spec(0).theta, 10_000.0);
    assert_eq!(c.rope_spec(5).theta, 1_000_000.0);
    check_tiny("gemma3", Architecture::Gemma3);
}

fn check_token_fixtures(model: &str) {
    let Some(path) = model_or_skip(model) else { return };
    let tok = GgufTokenizer::from_gguf(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data(&format!("tokens_{model}.json"))).unwrap(),
    )
    .unwrap();
    let cases = json.as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{model}: {:?}", &text[..text.len().min(60)]);
        assert_eq!(tok.decode(&got).unwrap(), text, "{model}: decode round trip");
        // Streaming decode yields the same text.
        let mut stream = tok.stream();
        let mut out = String::new();
        for &id in &got {
            out.push_str(&stream.push(id).unwrap().unwrap_or_default());
        }
        assert_eq!(out, text, "{model}: streaming decode");
    }
}

#[test]
fn smollm2_tokenizer_matches_fixtures() {
    check_token_fixtures("smollm2");
}

#[test]
fn qwen05_tokenizer_matches_fixtures() {
    check_token_fixtures("qwen05");
}

#[test]
fn gemma270m_tokenizer_matches_fixtures() {
    check_token_fixtures("gemma270m");
}

#[test]
fn smollm2_special_ids() {
    let Some((_, tok)) = smollm2() else { return };
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.add_bos()), (Some(1), Some(2), false));
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![0]);
    assert_eq!(tok.vocab_size(), 49152);
}

/// tests/data/corpus/PROVENANCE.md: every sample is 3,600-3,820 SmolLM2 tokens without
/// special tokens; and every model's count equals llama.cpp's (`llama-tokenize`, see
/// tests/data/make_corpus_token_counts.py), for the corpus built into `nq` and for
/// dpkg_triggers.txt.
#[test]
fn corpus_token_counts_match_llama_cpp() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("corpus_token_counts.json")).unwrap())
            .unwrap();
    let corpus = nq_candle::eval::builtin_corpus();
    for model in ["smollm2", "qwen05", "gemma270m"] {
        let Some(path) = model_or_skip(model) else { continue };
        let tok = GgufTokenizer::from_gguf(&path).unwrap();
        let counts = want[model].as_object().unwrap();
        assert_eq!(counts.len(), corpus.len() + 1);
        for (file, n) in counts {
            let text = if file == "dpkg_triggers.txt" {
                std::fs::read_to_string(data(file)).unwrap()
            } else {
                let s = corpus.iter().find(|s| format!("{}/{}.txt", s.genre, s.name) == *file);
                s.unwrap_or_else(|| panic!("{file} is not in the built-in corpus")).text.clone()
            };
            let got = tok.encode(&text).unwrap().len();
            assert_eq!(got as u64, n.as_u64().unwrap(), "{model}: {file}");
            if model == "smollm2" && file != "dpkg_triggers.txt" {
                assert!((3600..=3820).contains(&got), "{file}: {got} tokens");
            }
        }
    }
}

/// The corpus built into `nq` is the one in tests/data/corpus, file for file.
#[test]
fn builtin_corpus_equals_the_corpus_folder() {
    let dir = data("corpus");
    let on_disk = nq_candle::eval::load_corpus(&dir).unwrap();
    let built_in = nq_candle::eval::builtin_corpus();
    let key = |s: &nq_candle::eval::Sample| (s.genre.clone(), s.name.clone(), s.text.clone());
    assert_eq!(
        on_disk.iter().map(key).collect::<Vec<_>>(),
        built_in.iter().map(key).collect::<Vec<_>>()
    );
}

/// llama.cpp: SmolLM2 Q4_1 dequantized to f32, first 2,560 tokens of dpkg's triggers.txt
/// (no BOS: `tokenizer.ggml.add_bos_token` is false), prefill 2,048, perplexity of the next
/// 512 tokens = 21.9349.
#[test]
fn smollm2_triggers_perplexity_matches_llama_cpp() {
    let Some((model, tok)) = smollm2() else { return };
    let text = std::fs::read_to_string(data("dpkg_triggers.txt")).unwrap();
    let ids = tok.encode_document(&text).unwrap();
    assert!(!tok.add_bos() && ids.len() >= 2560);
    let ids = &ids[..2560];
    let mut cache = DenseCache::new();
    // Prefill 2,047 tokens (only the last row of logits is computed), then one call for the
    // 512 inputs whose logits predict tokens 2,048..2,559.
    model.forward_last(&ids[..2047], 0, &mut cache).unwrap();
    let scored: Tensor = model.forward(&ids[2047..2559], 2047, &mut cache).unwrap();
    let ppl = perplexity_from_logits(&scored, &ids[2048..2560]).unwrap();
    eprintln!("SmolLM2 triggers.txt perplexity: {ppl:.4} (llama.cpp 21.9349)");
    // Measured 21.9350: f32 summation order is all that differs from llama.cpp's f32 path.
    assert!((ppl / 21.9349 - 1.0).abs() < 1e-4, "perplexity {ppl}");
}

/// llama-perplexity's measurement on the first `n_ctx` tokens of triggers.txt (BOS first when
/// the model asks for it): logits of positions `n_ctx/2 ..= n_ctx - 2` score the next tokens.
/// The prefix goes through `forward_last` so the output projection runs on scored rows only.
fn llama_cpp_style_perplexity(name: &str, n_ctx: usize) -> Option<f64> {
    let path = model_or_skip(name)?;
    let tok = GgufTokenizer::from_gguf(&path).unwrap();
    let model =
        nq_candle::Model::from_gguf(&path, &candle_core::Device::Cpu, Default::default()).unwrap();
    let text = std::fs::read_to_string(data("dpkg_triggers.txt")).unwrap();
    let ids = tok.encode_document(&text).unwrap();
    let chunk = &ids[..n_ctx];
    let first = n_ctx / 2;
    let mut cache = DenseCache::new();
    model.forward_last(&chunk[..first], 0, &mut cache).unwrap();
    let logits = model.forward(&chunk[first..n_ctx - 1], first, &mut cache).unwrap();
    let ppl = perplexity_from_logits(&logits, &chunk[first + 1..]).unwrap();
    eprintln!("{name} n_ctx {n_ctx}: perplexity {ppl:.4}");
    Some(ppl)
}

/// Qwen2 family against llama.cpp (commit 0c1e570, the model requantized to F32 with
/// llama-quantize, `llama-perplexity -c 512 --chunks 1`: 19.0610; see
/// tests/data/llama_cpp_perplexity.sh).
#[test]
fn qwen05_perplexity_matches_llama_cpp() {
    let Some(ppl) = llama_cpp_style_perplexity("qwen05", 512) else { return };
    // Measured 19.0614.
    assert!((ppl / 19.0610 - 1.0).abs() < 1e-4, "perplexity {ppl}");
}

/// Gemma-3 family against llama.cpp (as above, `-c 1024`: 14.7180). 1,024 tokens so that the
/// 512-token sliding window of the local layers binds.
#[test]
fn gemma270m_perplexity_matches_llama_cpp() {
    let Some(ppl) = llama_cpp_style_perplexity("gemma270m", 1024) else { return };
    // Measured 14.7195 (1.0e-4 relative): Gemma-3's 262K-entry vocabulary and its scaled
    // embeddings leave more rounding than the other two.
    assert!((ppl / 14.7180 - 1.0).abs() < 3e-4, "perplexity {ppl}");
}

/// candle's quantized kernels (activations rounded to 8 bits) stay close to the f32 path.
#[test]
fn smollm2_quantized_path_close_to_dequantized() {
    let Some(path) = model_or_skip("smollm2") else { return };
    let Some((model, tok)) = smollm2() else { return };
    let opts = nq_candle::LoadOptions { dequantize_to_f32: false, ..Default::default() };
    let q = nq_candle::Model::from_gguf(&path, &candle_core::Device::Cpu, opts).unwrap();
    let ids = tok
        .encode(
            "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
        )
        .unwrap();
    let a = model.forward(&ids[..ids.len() - 1], 0, &mut DenseCache::new()).unwrap();
    let b = q.forward(&ids[..ids.len() - 1], 0, &mut DenseCache::new()).unwrap();
    let pa = perplexity_from_logits(&a, &ids[1..]).unwrap();
    let pb = perplexity_from_logits(&b, &ids[1..]).unwrap();
    // 8-bit activations: about 2^-7 relative error per dot product; perplexity moves a few %.
    assert!((pa / pb - 1.0).abs() < 0.05, "f32 {pa} vs quantized {pb}");
}

/// The chat prompt follows each model's template: ChatML with the template's own default
/// system message for SmolLM2 and Qwen2.5; Gemma-3-270M is a base model with no template.
#[test]
fn chat_prompts_follow_the_gguf_templates() {
    let want = [
        ("smollm2", Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")),
        ("qwen05", Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")),
        ("gemma270m", None),
    ];
    for (model, system) in want {
        let Some(path) = model_or_skip(model) else { continue };
        let tok = GgufTokenizer::from_gguf(&path).unwrap();
        let got = tok.chat_prompt("Why?").unwrap();
        let want = system.map(|s| {
            format!("<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n")
        });
        assert_eq!(got, want, "{model}");
        assert_eq!(tok.chat_template().is_some(), system.is_some(), "{model}");
    }
}
