//! `nq eval`'s result files: comparable results only replace comparable results, and skipped
//! samples are counted (issue 13, bad input 2 and 4).

use nq_candle::Error;
use nq_candle::eval::{EvalRun, Protocol, configs_from_args};
use nq_core::PoolKind;

fn protocol(samples_per_genre: Option<usize>) -> Protocol {
    Protocol {
        model: "smollm2".into(),
        corpus: "builtin".into(),
        prefix: 1664,
        continuation: 512,
        samples_per_genre,
        mode: nq_candle::eval::EvalMode::Decode,
    }
}

fn run(samples_per_genre: Option<usize>) -> EvalRun {
    EvalRun {
        protocol: protocol(samples_per_genre),
        results: Vec::new(),
        skipped: vec![("creative/short".into(), 900, 2176)],
    }
}

#[test]
fn another_protocol_is_not_overwritten() {
    let dir = std::env::temp_dir().join(format!("nq-candle-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full = run(None);
    let path = full.write(&dir, "balanced", false).unwrap();
    assert_eq!(path, dir.join("eval-smollm2-balanced.json"));
    // The same protocol again replaces it.
    full.write(&dir, "balanced", false).unwrap();
    // A quick run (one sample per genre) does not, unless told to.
    let quick = run(Some(1));
    let e = quick.write(&dir, "balanced", false).unwrap_err();
    assert!(matches!(&e, Error::ResultConflict { path: p, .. } if *p == path), "{e:?}");
    assert!(e.to_string().contains("samples per genre all"), "{e}");
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(before.contains("\"samples_per_genre\": null"), "{before}");
    quick.write(&dir, "balanced", true).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"samples_per_genre\": 1"));
    // A file that is not a result of this program is not replaced either.
    std::fs::write(dir.join("eval-smollm2-max.json"), "[]").unwrap();
    assert!(matches!(quick.write(&dir, "max", false), Err(Error::ResultConflict { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn skipped_samples_are_counted_in_the_records() {
    let records = run(None).records("balanced");
    let skipped: Vec<_> = records.iter().filter(|r| r["bench"] == "eval_skipped").collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["sample"], "creative/short");
    assert_eq!(
        (skipped[0]["tokens"].as_u64(), skipped[0]["tokens_needed"].as_u64()),
        (Some(900), Some(2176))
    );
    assert_eq!(skipped[0]["prefix"], 1664);
}

#[test]
fn configurations_from_arguments() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let c =
        configs_from_args(&s(&["high", "max"]), &s(&["recent=64"]), &s(&["w=balanced"])).unwrap();
    let names: Vec<&str> = c.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["high-custom", "max-custom", "w"]);
    assert!(c.iter().all(|(_, cfg)| cfg.evict.recent == 64));
    for bad in [&s(&["nope"])[..], &s(&[""])[..], &[]] {
        let e = configs_from_args(bad, &[], &[]).unwrap_err();
        assert!(matches!(e, Error::InvalidOption { option: "--preset", .. }), "{e:?}");
    }
    let e = configs_from_args(&s(&["max"]), &s(&["kbits=5"]), &[]).unwrap_err();
    assert!(matches!(&e, Error::InvalidOption { got, .. } if got == "kbits=5"), "{e:?}");
    let e = configs_from_args(&s(&["max"]), &[], &s(&["x=max", "x=high"])).unwrap_err();
    assert!(e.to_string().contains("already taken"), "{e}");
    // The observed scorer's pooling: the presets' (a maximum over 15 tokens for `high` and
    // `balanced`, an average over 5 for `max`), then overrides of kind and odd kernel.
    let presets = s(&["high", "balanced", "max"]);
    let c =
        configs_from_args(&presets, &[], &s(&["m7=high,pool=max7", "a1=max,pool=avg1"])).unwrap();
    let pools: Vec<_> = c.iter().map(|(_, cfg)| (cfg.evict.pool, cfg.evict.pool_kernel)).collect();
    let (max15, avg5) = ((PoolKind::Max, 15), (PoolKind::Avg, 5));
    assert_eq!(pools, [max15, max15, avg5, (PoolKind::Max, 7), (PoolKind::Avg, 1)]);
    for bad in ["pool=max6", "pool=max0", "pool=med5", "pool=max", "pool=avg-3"] {
        let e = configs_from_args(&s(&["high"]), &s(&[bad]), &[]).unwrap_err();
        assert!(matches!(&e, Error::InvalidOption { got, .. } if got == bad), "{e:?}");
    }
}

/// Decode mode compresses the continuation as it is scored: with the balanced preset the
/// scored continuation sees compressed continuation tokens, so its figures differ from the
/// prompt-only mode, while the uncompressed baseline agrees to rounding (same tokens, other
/// chunking of the forward passes).
#[test]
fn decode_mode_compresses_the_continuation() {
    let Some((model, tok)) = crate::common::smollm2() else { return };
    let sample = nq_candle::eval::builtin_corpus().into_iter().next().expect("a sample");
    let run = |mode| {
        let opts = nq_candle::eval::EvalOptions {
            prefix: 256,
            continuation: 160,
            configs: vec![("balanced".into(), nq_core::Preset::Balanced.config())],
            mode,
        };
        nq_candle::eval::eval_sample(model, tok, &sample, &opts, |_| {}).expect("evaluates")
    };
    let decode = run(nq_candle::eval::EvalMode::Decode);
    let prompt = run(nq_candle::eval::EvalMode::Prompt);
    let (d, p) = (&decode[0], &prompt[0]);
    assert!((d.ppl_base / p.ppl_base - 1.0).abs() < 1e-3, "{} vs {}", d.ppl_base, p.ppl_base);
    assert_ne!(d.ppl, p.ppl, "the continuation must meet a different cache");
    assert!(d.bytes["bytes_key_codes"] > 0.0);
    assert_eq!(d.resident_bytes, p.resident_bytes, "the prefix is compressed the same way");
}

/// The final ratio is measured from the cache at the end of the continuation (issue 12): f16
/// bytes of every token it has seen over the bytes it holds then. The preset keeps every
/// decode-time token, so it holds more bytes at the end than the same preset evicting them at
/// the prompt's fraction (`dkeep=0.35`), and its final ratio is lower, while the prompt cache,
/// and so `ratio_resident`, is the same; in prompt mode the continuation stays
/// f16, so the final ratio is below the prompt cache's.
#[test]
fn final_ratio_counts_the_continuation() {
    let Some((model, tok)) = crate::common::smollm2() else { return };
    let sample = nq_candle::eval::builtin_corpus().into_iter().next().expect("a sample");
    let (prefix, continuation) = (256, 160);
    let configs =
        configs_from_args(&["balanced".to_owned()], &[], &["dk35=balanced,dkeep=0.35".to_owned()])
            .unwrap();
    let run = |mode| {
        let opts =
            nq_candle::eval::EvalOptions { prefix, continuation, configs: configs.clone(), mode };
        nq_candle::eval::eval_sample(model, tok, &sample, &opts, |_| {}).expect("evaluates")
    };
    let decode = run(nq_candle::eval::EvalMode::Decode);
    for r in &decode {
        // The last target is scored, never appended: the cache has seen prefix + continuation - 1.
        assert_eq!(r.fp16_bytes_final * prefix, r.fp16_bytes * (prefix + continuation - 1));
        assert_eq!(
            r.ratio_resident_final,
            r.fp16_bytes_final as f64 / r.resident_bytes_final as f64,
            "{}",
            r.preset
        );
        assert!(
            r.resident_bytes_final > r.resident_bytes,
            "{}: the continuation adds bytes",
            r.preset
        );
    }
    let (preset, dk35) = (&decode[0], &decode[1]);
    assert_eq!(preset.resident_bytes, dk35.resident_bytes, "the prompt cache is the same");
    assert!(
        preset.resident_bytes_final > dk35.resident_bytes_final,
        "keeping every decode-time token holds more: {} vs {}",
        preset.resident_bytes_final,
        dk35.resident_bytes_final
    );
    assert!(preset.ratio_resident_final < dk35.ratio_resident_final);
    let prompt = run(nq_candle::eval::EvalMode::Prompt);
    assert!(
        prompt[0].ratio_resident_final < prompt[0].ratio_resident,
        "an f16 continuation lowers the ratio: {} vs {}",
        prompt[0].ratio_resident_final,
        prompt[0].ratio_resident
    );
    assert!(prompt[0].ratio_resident_final < preset.ratio_resident_final);
    let agg = nq_candle::eval::aggregate(&decode);
    let all = agg.iter().find(|r| r.genre == "all" && r.preset == "balanced").unwrap();
    assert_eq!(all.resident_bytes_final, preset.resident_bytes_final);
    assert_eq!(all.ratio_resident_final, preset.ratio_resident_final);
}

/// A configuration that stores keys RoPE-free (`rope=true`) evaluates: the uncompressed cache
/// every configuration is copied from carries the model's RoPE (before, `nq eval --set
/// rope=true` failed with "remove_rope = true, but no RoPE given").
#[test]
fn rope_free_keys_evaluate() {
    let Some((model, tok)) = crate::common::smollm2() else { return };
    let sample = nq_candle::eval::builtin_corpus().into_iter().next().expect("a sample");
    let configs =
        configs_from_args(&["balanced".to_owned()], &[], &["rf=balanced,rope=true".to_owned()])
            .unwrap();
    let opts = nq_candle::eval::EvalOptions {
        prefix: 128,
        continuation: 48,
        configs,
        mode: nq_candle::eval::EvalMode::Decode,
    };
    let r = nq_candle::eval::eval_sample(model, tok, &sample, &opts, |_| {}).expect("evaluates");
    assert_eq!(r.len(), 2);
    assert!(r[1].ppl.is_finite() && r[1].ratio_resident_final > 1.0, "{:?}", r[1].ppl);
}
