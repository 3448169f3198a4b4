//! The retrieval check (issue 12): prompts are built as asked, bad options are typed errors,
//! one prefill compressed per configuration is the product's prefill, and the uncompressed
//! cache finds the key (so the harness can succeed).

use nq_candle::needle::{
    INTRO, MIN_FILLER_TOKENS, NeedleCase, NeedleOptions, NeedleRun, QUESTION, answer_case,
    cases_with, needle,
};
use nq_candle::{Error, Generator, SamplingOptions};
use nq_core::Preset;

/// Whitespace-separated words stand in for tokens: counting is additive, as the prose's
/// pieces are cut before whitespace.
fn words(s: &str) -> nq_candle::Result<usize> {
    Ok(s.split_whitespace().count())
}

/// A chat template of fixed size around the message.
fn chat(s: &str) -> nq_candle::Result<String> {
    Ok(format!("<user> {s} <assistant>"))
}

/// Words of the longest run between words that end a sentence (`.`, `!`, `?`, closing quote;
/// not a title such as `Mr.`).
fn longest_sentence(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for w in text.split_whitespace() {
        run += 1;
        let title = ["Mr.", "Mrs.", "Ms.", "Dr.", "St.", "No."].iter().any(|t| w.ends_with(t));
        if w.ends_with(['.', '!', '?', '"', '\'']) && !title {
            longest = longest.max(run);
            run = 0;
        }
    }
    longest.max(run)
}

fn opts(lengths: Vec<usize>, depths: Vec<f64>, keys: usize, seed: u64) -> NeedleOptions {
    NeedleOptions { lengths, depths, keys, seed, ..NeedleOptions::default() }
}

fn make(o: &NeedleOptions) -> Vec<NeedleCase> {
    cases_with(o, words, chat).unwrap()
}

#[test]
fn prompts_hide_one_key_at_the_asked_depth_and_length() {
    let (lengths, depths) = (vec![600, 1500, 4000], vec![0.1, 0.25, 0.5, 0.75, 0.9]);
    let cases = make(&opts(lengths.clone(), depths.clone(), 3, 7));
    assert_eq!(cases.len(), lengths.len() * depths.len() * 3);
    for c in &cases {
        let key = c.key_text();
        assert!((10_000..100_000).contains(&c.key), "{}", c.key);
        assert_eq!(c.prompt.matches(&key).count(), 1, "key {key} once");
        assert_eq!(c.prompt.matches(needle(c.key).trim()).count(), 1);
        assert!(c.prompt.starts_with("<user> ") && c.prompt.ends_with(" <assistant>"));
        assert!(c.prompt.contains(QUESTION));
        // The needle follows a sentence's end.
        let at = c.prompt.find(needle(c.key).trim()).unwrap();
        let before = c.prompt[..at].trim_end();
        assert!(before.ends_with(['.', '!', '?', '"', '\'', ')']), "{:?}", &before[at - 40..]);
        // Depth: prose words before the needle, counted on the prompt itself.
        let prose_start = c.prompt.find(INTRO).unwrap() + INTRO.len();
        let prose_before = words(&c.prompt[prose_start..at]).unwrap();
        assert_eq!(prose_before, c.needle_at);
        // The needle sits at the sentence end closest to the depth: within half a sentence.
        let off = prose_before.abs_diff((c.depth * c.filler_tokens as f64).round() as usize);
        let longest = longest_sentence(&c.prompt[prose_start..]);
        assert!(off <= longest / 2 + 1, "depth {}: {off} words off, longest {longest}", c.depth);
        // Length: the prose ends at the sentence end closest to the length asked for.
        assert_eq!(words(&c.prompt).unwrap(), c.prompt_tokens);
        let off = c.prompt_tokens.abs_diff(c.length);
        assert!(off <= longest / 2 + 1, "asked {}, got {}", c.length, c.prompt_tokens);
    }
    // Several keys per cell differ, and so does the prose.
    let cell: Vec<&NeedleCase> =
        cases.iter().filter(|c| c.length == 1500 && c.depth == 0.5).collect();
    assert!(cell[0].key != cell[1].key && cell[1].key != cell[2].key);
    assert_ne!(
        cell[0].prompt.replace(&cell[0].key_text(), ""),
        cell[1].prompt.replace(&cell[1].key_text(), "")
    );
}

#[test]
fn prompts_are_deterministic_per_seed_and_cell() {
    let a = make(&opts(vec![500, 900], vec![0.25, 0.75], 2, 1));
    assert_eq!(a, make(&opts(vec![500, 900], vec![0.25, 0.75], 2, 1)));
    let other = make(&opts(vec![500, 900], vec![0.25, 0.75], 2, 2));
    assert!(a.iter().zip(&other).all(|(x, y)| x.key != y.key || x.prompt != y.prompt));
    // A cell's prompts do not depend on which other cells are asked for.
    let alone = make(&opts(vec![900], vec![0.75], 2, 1));
    let same: Vec<&NeedleCase> = a.iter().filter(|c| c.length == 900 && c.depth == 0.75).collect();
    assert_eq!(alone.iter().collect::<Vec<_>>(), same);
}

#[test]
fn bad_options_are_typed_errors() {
    let option = |o: NeedleOptions| match cases_with(&o, words, chat) {
        Err(Error::InvalidOption { option, .. }) => option,
        other => panic!("{other:?}"),
    };
    for d in [0.0, 1.0, -0.2, 1.5, f64::NAN] {
        assert_eq!(option(opts(vec![1000], vec![d], 1, 0)), "--depths", "{d}");
    }
    assert_eq!(option(opts(vec![1000], vec![], 1, 0)), "--depths");
    assert_eq!(option(opts(vec![1000], vec![0.5], 0, 0)), "--keys");
    assert_eq!(option(opts(vec![], vec![0.5], 1, 0)), "--lengths");
    assert_eq!(option(NeedleOptions { max_tokens: 0, ..NeedleOptions::default() }), "--max-tokens");
    // Too short for template, needle, question and the least prose: the message says how long.
    let e =
        cases_with(&opts(vec![2000, MIN_FILLER_TOKENS], vec![0.5], 1, 0), words, chat).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidOption { option: "--lengths", got, .. } if *got == MIN_FILLER_TOKENS.to_string()),
        "{e:?}"
    );
    assert!(e.to_string().contains("or more"), "{e}");
}

/// The summary counts a key the reference found and a configuration missed as lost.
#[test]
fn summary_counts_keys_lost_against_the_reference() {
    let cases = make(&opts(vec![500], vec![0.25, 0.75], 1, 3));
    let answer = |config: &str, found: bool| nq_candle::needle::Answer {
        config: config.into(),
        text: String::new(),
        found,
        ratio_resident: 2.0,
        resident_bytes: 10,
        prompt_tokens: 500,
        key_kept: 1.0,
        key_kept_min: 1.0,
    };
    let run = NeedleRun {
        model: "m".into(),
        opts: opts(vec![500], vec![0.25, 0.75], 1, 3),
        results: vec![
            (cases[0].clone(), vec![answer("none", true), answer("high", false)]),
            (cases[1].clone(), vec![answer("none", false), answer("high", true)]),
        ],
    };
    let records = run.records();
    let summary = |p: &str| {
        records.iter().find(|r| r["bench"] == "needle_summary" && r["preset"] == p).unwrap().clone()
    };
    let high = summary("high");
    assert_eq!((high["exact"].as_u64(), high["trials"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        (high["lost_vs_none"].as_u64(), high["gained_vs_none"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary("none")["lost_vs_none"].as_u64(), Some(0));
    let cells = records.iter().filter(|r| r["bench"] == "needle").count();
    assert_eq!(cells, 2 * 2, "one record per preset and (length, depth) cell");
    let cell = records.iter().find(|r| r["bench"] == "needle" && r["preset"] == "high").unwrap();
    assert_eq!(
        (cell["context_tokens"].as_u64(), cell["depth_pct"].as_f64()),
        (Some(500), Some(25.0))
    );
    assert_eq!(cell["exact_rate"].as_f64(), Some(0.0));
}

/// One uncompressed prefill compressed as each preset is what `Generator::prefill` with
/// that preset reaches: the same cache figures and the same generated tokens.
#[test]
fn one_prefill_serves_every_preset() {
    let Some((model, tok)) = crate::common::smollm2() else { return };
    let prompt: String = nq_candle::eval::builtin_corpus()[4].text.chars().take(1800).collect();
    let base = Generator::new(model.clone(), tok.clone(), Preset::None);
    let shared = base.prefill_uncompressed(&prompt).unwrap();
    for preset in [Preset::High, Preset::Max] {
        let mut g = Generator::new(model.clone(), tok.clone(), preset);
        let fresh = g.prefill(&prompt).unwrap();
        let reused = shared.compressed_as(preset.config()).unwrap();
        assert_eq!(fresh.cache.stats(), reused.cache.stats(), "{}", preset.name());
        let run = |g: &mut Generator, p| g.generate_from(p, 8, SamplingOptions::default(), |_| {});
        let (a, b) = (run(&mut g, fresh).unwrap(), run(&mut g, reused).unwrap());
        assert_eq!(a.tokens, b.tokens, "{}", preset.name());
    }
}

/// The harness can succeed: with the uncompressed cache SmolLM2 answers both keys of a
/// 1.5K-token prompt. `high` runs too, to exercise the compressed path; its answers are
/// measured by `nq needle`, not asserted here.
#[test]
fn uncompressed_cache_finds_the_key() {
    let Some((model, tok)) = crate::common::smollm2() else { return };
    let o = opts(vec![1536], vec![0.25, 0.75], 1, 12);
    let cases = nq_candle::needle::cases(tok, &o).unwrap();
    let configs =
        [("none".to_owned(), Preset::None.config()), ("high".to_owned(), Preset::High.config())];
    for case in &cases {
        assert!(case.prompt_tokens.abs_diff(1536) < 60, "{} tokens", case.prompt_tokens);
        let answers = answer_case(model, tok, case, &configs, o.max_tokens).unwrap();
        assert_eq!(answers.len(), 2);
        assert!(answers[0].found, "none answered {:?} for key {}", answers[0].text, case.key);
        assert!(answers[1].ratio_resident > 2.0, "high compresses: {}", answers[1].ratio_resident);
        assert_eq!(
            (answers[0].key_kept, answers[0].key_kept_min),
            (1.0, 1.0),
            "none evicts nothing"
        );
        let key = nq_candle::needle::key_positions(tok, case).unwrap();
        assert_eq!(key.len(), 5, "SmolLM2 writes digits one token each");
    }
}
