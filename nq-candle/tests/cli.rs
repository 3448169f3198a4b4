//! The `nq` program on bad input (issue 13, "Bad input"): options are checked before any
//! model is loaded, messages name the option or file at fault, and with `--json` stdout is
//! one JSON document, errors included.

use std::process::{Command, Output};

fn nq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nq"))
        .args(args)
        // No model is needed to reach these errors; an empty model folder proves it.
        .env("NQ_MODEL_DIR", std::env::temp_dir().join("nq-cli-tests-no-models"))
        .output()
        .unwrap()
}

/// Stdout parsed as exactly one JSON document.
fn json_error(out: &Output) -> String {
    assert!(!out.status.success(), "exit status {}", out.status);
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"));
    doc["error"].as_str().unwrap_or_else(|| panic!("no error field: {doc}")).to_owned()
}

fn stderr_error(out: &Output) -> String {
    assert!(!out.status.success(), "exit status {}", out.status);
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Bad input 9: `eval --json` errors were plain text.
#[test]
fn json_mode_errors_are_json() {
    let e = json_error(&nq(&["eval", "--json", "--prefix", "0"]));
    assert!(e.contains("--prefix") && !e.contains("corpus"), "{e}");
    let e = json_error(&nq(&["run", "--json", "--temperature", "NaN", "-p", "hi"]));
    assert!(e.contains("--temperature"), "{e}");
    let e = json_error(&nq(&["inspect", "--json", "/nonexistent/doc.nqkv"]));
    assert!(e.contains("/nonexistent/doc.nqkv"), "{e}");
}

/// Bad input 10: `--prefix 0` was blamed on the corpus; `--samples 0` and an empty `--preset`
/// exited 0 with an empty table; OS errors were printed twice.
#[test]
fn unclear_messages_are_clear() {
    let e = stderr_error(&nq(&["eval", "--prefix", "0"]));
    assert!(e.contains("--prefix = `0`"), "{e}");
    let e = stderr_error(&nq(&["eval", "--samples", "0"]));
    assert!(e.contains("--samples"), "{e}");
    let e = stderr_error(&nq(&["eval", "--preset", ""]));
    assert!(e.contains("--preset"), "{e}");
    let e = stderr_error(&nq(&["inspect", "/nonexistent/doc.nqkv"]));
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    let e = stderr_error(&nq(&["run", "--model", "gemma270m", "-p", "hi"]));
    assert!(e.contains("`nq fetch gemma270m`"), "{e}");
}

/// Bad input 5: `--variant balanced=high` silently merged with the preset of the same name;
/// an empty variant name was accepted.
#[test]
fn variant_names_must_be_new_and_non_empty() {
    for v in ["balanced=high", "=high", "a/b=max"] {
        let e = stderr_error(&nq(&["eval", "--variant", v]));
        assert!(e.contains("--variant"), "{v}: {e}");
    }
}

/// Bad input 8: a NaN, infinite or negative temperature was used as given.
#[test]
fn temperatures_are_checked_before_loading() {
    for t in ["nan", "inf", "-1"] {
        let e = stderr_error(&nq(&["run", &format!("--temperature={t}"), "-p", "hi"]));
        assert!(e.contains("--temperature"), "{t}: {e}");
    }
}

/// Bad input 6 and 13 as the issue found them: `nq save --prompt-file doc.txt -o doc.nqkv`,
/// then `nq run --resume doc.nqkv` gave other text than `nq run --prompt-file doc.txt`,
/// reported `prompt: 0 tokens`, and accepted `--preset` while ignoring it.
#[test]
fn save_then_resume_is_the_fresh_run() {
    if crate::common::model_or_skip("smollm2").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nq-cli-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = dir.join("doc.txt");
    let text = std::fs::read_to_string(crate::common::data("dpkg_triggers.txt")).unwrap();
    std::fs::write(&doc, text.chars().take(2500).collect::<String>()).unwrap();
    let archive = dir.join("doc.nqkv");
    let real = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_nq")).args(args).output().unwrap();
    let doc_s = doc.to_str().unwrap();
    let archive_s = archive.to_str().unwrap();
    let saved = real(&["save", "--prompt-file", doc_s, "-o", archive_s]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    let run = |args: &[&str]| {
        let out = real(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let fresh = run(&["run", "--prompt-file", doc_s, "--max-tokens", "12", "--json"]);
    let resumed = run(&["run", "--resume", archive_s, "--max-tokens", "12", "--json"]);
    assert_eq!(resumed["text"], fresh["text"]);
    assert_eq!(resumed["prompt_tokens"], fresh["prompt_tokens"]);
    assert_eq!(
        (resumed["preset"].as_str(), resumed["resumed"].as_bool()),
        (Some("balanced"), Some(true))
    );
    let other = real(&["run", "--resume", archive_s, "--preset", "max", "--max-tokens", "1"]);
    let e = stderr_error(&other);
    assert!(e.contains("compressed with preset `balanced`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `nq needle` refuses bad options before loading a model, naming the option.
#[test]
fn needle_options_are_checked_before_loading() {
    for (args, option) in [
        (&["--depths", "0.5,1.2"][..], "--depths"),
        (&["--depths", "0"], "--depths"),
        (&["--keys", "0"], "--keys"),
        (&["--preset", "fast"], "--preset"),
        (&["--preset", ""], "--preset"),
        (&["--variant", "none=high"], "--preset"),
    ] {
        let e = json_error(&nq(&[&["needle", "--json"][..], args].concat()));
        assert!(e.contains(option) && !e.contains("not installed"), "{args:?}: {e}");
    }
}

/// `--device` (issue 11): `cpu` or `cuda`, checked before a model is looked up; `cuda` in a
/// build without the `cuda` feature names the feature and how to build it, never a panic.
#[test]
fn devices_are_checked_before_loading() {
    let save = ["save", "-p", "hi", "-o", "/nonexistent/out.nqkv"];
    for cmd in [&["run", "-p", "hi"][..], &["demo"], &["eval"], &["needle"], &save] {
        let e = stderr_error(&nq(&[cmd, &["--device", "tpu"]].concat()));
        assert!(e.contains("--device = `tpu`") && e.contains("cpu or cuda"), "{cmd:?}: {e}");
        if !cfg!(feature = "cuda") {
            let e = stderr_error(&nq(&[cmd, &["--device", "cuda"]].concat()));
            assert!(
                e.contains("--device = `cuda`") && e.contains("`cuda` feature"),
                "{cmd:?}: {e}"
            );
        }
    }
    let e = json_error(&nq(&["run", "--json", "-p", "hi", "--device", "gpu"]));
    assert!(e.contains("--device"), "{e}");
}
