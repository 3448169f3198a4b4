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
