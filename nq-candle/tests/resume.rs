//! Save and resume on the real model: a resumed run is the fresh run, token for token; files
//! are replaced atomically; generation stops cleanly at the context limit.

use candle_core::Device;
use nq_candle::archive::{self, Prefill, StopReason};
use nq_candle::{CompressedKvCache, Error, Generator, LoadOptions, Model, SamplingOptions};
use nq_core::Preset;

use crate::common::{data, model_or_skip, smollm2, tiny};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nq-candle-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn document(chars: usize) -> String {
    let text = std::fs::read_to_string(data("dpkg_triggers.txt")).unwrap();
    text.chars().take(chars).collect()
}

/// Issue 13, bad input 13: `nq save` then `nq run --resume` lost the first generated token
/// (save prefilled all but the last prompt token and fed that one against the compressed
/// cache, so the resumed run started from another state than the fresh run). Now the archive
/// holds the whole prompt's compressed cache and the logits of its next token: greedy and
/// sampled runs from disk give exactly the fresh run's tokens.
#[test]
fn resumed_run_equals_the_fresh_run() {
    let Some((model, tok)) = smollm2() else { return };
    let prompt = document(3000);
    let mut generator = Generator::new(model.clone(), tok.clone(), Preset::Balanced);
    for temperature in [0.0, 0.8] {
        let opts = SamplingOptions { temperature, ..SamplingOptions::default() };
        let fresh = generator.generate_with(&prompt, 12, opts, |_| {}).unwrap();
        assert_eq!(fresh.tokens.len(), 12);
        assert!(fresh.prompt_tokens > 600, "{}", fresh.prompt_tokens);
        // Measured, not computed: the balanced preset holds the prompt in well under a tenth
        // of its f16 size once windows are amortized.
        assert!(fresh.prompt_stats.ratio() > 5.0, "{:?}", fresh.prompt_stats);

        let path = tmp(&format!("doc-{temperature}.nqkv"));
        let start = generator.prefill(&prompt).unwrap();
        let bytes = archive::save(&path, &start, model.config(), "balanced").unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        // Smaller on disk than in memory, besides the next token's logits (f32) the archive
        // also carries.
        let logits = start.logits.len() as u64 * 4;
        let resident = start.cache.stats().resident_bytes as u64;
        assert!(bytes < resident + logits, "archive {bytes} bytes, resident {resident} + {logits}");
        let info = archive::inspect(&path).unwrap();
        assert_eq!((info.preset.as_str(), info.sections), ("balanced", 1 + model.config().layers));
        let (loaded, preset) = archive::load(&path, model.config()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((preset.as_str(), loaded.tokens), ("balanced", fresh.prompt_tokens));
        let resumed = generator.generate_from(loaded, 12, opts, |_| {}).unwrap();
        assert_eq!(resumed.prompt_tokens, fresh.prompt_tokens);
        assert_eq!(resumed.tokens, fresh.tokens, "temperature {temperature}");
    }
}

#[test]
fn archives_of_another_model_are_refused() {
    let Some((model, _)) = smollm2() else { return };
    let (tiny_model, tokens, _) = tiny("llama");
    let mut cache = CompressedKvCache::new(tiny_model.config(), Preset::Balanced.config()).unwrap();
    tiny_model.forward_last(&tokens, 0, &mut cache).unwrap();
    let start = Prefill {
        cache,
        logits: vec![0.0; tiny_model.config().vocab],
        tokens: tokens.len(),
        prefill_seconds: 0.0,
        compress_seconds: 0.0,
    };
    let path = tmp("foreign.nqkv");
    archive::save(&path, &start, tiny_model.config(), "balanced").unwrap();
    let err = archive::load(&path, model.config()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(&err, Error::Archive { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains("fingerprint"), "{err}");
}

/// Bad input 1: `nq save -o existing.nqkv` truncated the old archive before writing. The new
/// file is written beside it and renamed over it, so while it is written (and when writing
/// fails) the old file is intact, and no temporary file is left behind.
#[test]
fn a_failed_write_keeps_the_earlier_file() {
    let path = tmp("keep.nqkv");
    std::fs::write(&path, b"the earlier good archive").unwrap();
    let e = archive::write_atomically(&path, "save", |w| {
        w.write_all(b"half of a new arch").unwrap();
        // A kill here would leave the earlier file as it was.
        assert_eq!(std::fs::read(&path).unwrap(), b"the earlier good archive");
        Err(Error::EmptyInput { op: "simulated full disk" })
    });
    assert!(matches!(e, Err(Error::EmptyInput { .. })), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"the earlier good archive");
    let dir = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let n = archive::write_atomically(&path, "save", |w| {
        w.write_all(b"new").map_err(|source| Error::Io { op: "t", path: path.clone(), source })
    })
    .unwrap();
    assert_eq!((n, std::fs::read(&path).unwrap()), (3, b"new".to_vec()));
    // Bad input 12: a device is written in place and the size is the bytes written, not its
    // metadata length (which made `-o /dev/null` report 414720x on disk).
    let n = archive::write_atomically(std::path::Path::new("/dev/null"), "save", |w| {
        w.write_all(&[0; 1000]).map_err(|source| Error::Io { op: "t", path: path.clone(), source })
    })
    .unwrap();
    assert_eq!(n, 1000);
}

/// Bad input 7: reaching the context limit while generating was an error that discarded the
/// generated text. It now stops and says why, keeping every token.
#[test]
fn generation_stops_cleanly_at_the_context_limit() {
    let Some(path) = model_or_skip("smollm2") else { return };
    let Some((_, tok)) = smollm2() else { return };
    let prompt = "The three primary colors are";
    let n = tok.encode_document(prompt).unwrap().len();
    let opts = LoadOptions { max_context: Some(n + 5), ..LoadOptions::default() };
    let model = Model::from_gguf(&path, &Device::Cpu, opts).unwrap();
    let mut generator = Generator::new(model, tok.clone(), Preset::Balanced);
    let opts = SamplingOptions { stop_at_eos: false, ..SamplingOptions::default() };
    let g = generator.generate_with(prompt, 50, opts, |_| {}).unwrap();
    assert_eq!(g.stop, StopReason::ContextFull { max_context: n + 5 });
    // Positions n..n+4 are fed back; the token picked after the last of them is kept too.
    assert_eq!(g.tokens.len(), 6, "{:?}", g.text);
    assert_eq!(g.text, tok.decode(&g.tokens).unwrap());
}

/// Bad input 8: NaN, infinite and negative temperatures are refused before any work.
#[test]
fn bad_temperatures_are_refused() {
    let Some((model, tok)) = smollm2() else { return };
    let mut generator = Generator::new(model.clone(), tok.clone(), Preset::Balanced);
    for t in [f32::NAN, f32::INFINITY, -0.5] {
        let opts = SamplingOptions { temperature: t, ..SamplingOptions::default() };
        let e = generator.generate_with("Hello", 3, opts, |_| {}).unwrap_err();
        assert!(matches!(&e, Error::InvalidOption { option: "--temperature", .. }), "{t}: {e:?}");
    }
}
