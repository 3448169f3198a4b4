//! `cargo xtask bench quality`: `nq eval --json` for every preset on every real model, merged
//! into `target/nq-bench/quality.json` (`--quick`: `target/nq-bench/quick/quality.json`), plus
//! `pareto.svg` beside it (resident ratio vs perplexity change, the uncompressed point and each
//! preset).

use std::fmt::Write as _;
use std::fs;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, project_root, run_checked};

const MODELS: &[&str] = &["smollm2", "qwen05"];
const PRESETS: &[&str] = &["high", "balanced", "max"];

/// The evaluation modes, each with its result-file suffix: the continuation compressed as it
/// is scored (as in generation), and the prompt-only protocol.
const MODES: &[(&str, &str)] = &[("decode", ""), ("prompt", "-prompt")];

/// Run the evaluations in both modes (`collect`: only merge the `eval-MODEL-PRESET[-prompt].json`
/// files already written by `nq eval --json`, skipping those missing) and merge them. Returns
/// the records and their name under `target/nq-bench`: a quick run writes to `quick/`, so
/// it never replaces the 12-sample records the README's table is made from.
pub(crate) fn run(quick: bool, collect: bool) -> Result<(Vec<Value>, String)> {
    let sub = if quick { "quick/" } else { "" };
    let out = project_root().join("target/nq-bench").join(sub);
    let mut records = Vec::new();
    for model in MODELS {
        for (mode, suffix) in MODES {
            if !collect {
                evaluate(model, mode, quick, &out)?;
            }
            for preset in PRESETS {
                let path = out.join(format!("eval-{model}-{preset}{suffix}.json"));
                let text = match fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(_) if collect => continue,
                    Err(e) => return Err(e).with_context(|| format!("{} missing", path.display())),
                };
                let Value::Array(items) = serde_json::from_str(&text)? else {
                    bail!("{} is not a JSON array", path.display());
                };
                records.extend(aggregates(items, quick).map(|mut r| {
                    r["mode"] = json!(mode);
                    r
                }));
            }
        }
    }
    fs::write(out.join("pareto.svg"), pareto_svg(&records))?;
    eprintln!("wrote {}", out.join("pareto.svg").display());
    Ok((records, format!("{sub}quality")))
}

/// `nq eval --json` of every preset on `model` in `mode`, results under `out`.
fn evaluate(model: &str, mode: &str, quick: bool, out: &std::path::Path) -> Result<()> {
    let nq = || {
        let mut cmd = cargo();
        cmd.args(["run", "--release", "--quiet", "-p", "nq-candle", "--bin", "nq", "--"]);
        cmd
    };
    run_checked(nq().args(["fetch", model]))?;
    let mut cmd = nq();
    cmd.args(["eval", "--model", model, "--preset", &PRESETS.join(","), "--json", "--mode", mode]);
    if quick {
        cmd.args(["--samples", "1"]);
    }
    run_checked(cmd.arg("--out").arg(out))
}

/// The per-genre and overall aggregates of an eval file; per-sample records stay there.
fn aggregates(items: Vec<Value>, quick: bool) -> impl Iterator<Item = Value> {
    items.into_iter().filter(|r| r["sample"].as_str().is_some_and(|s| s.ends_with("samples"))).map(
        move |mut r| {
            r["bench"] = json!("quality");
            r["quick"] = json!(quick);
            r
        },
    )
}

/// Resident ratio (log x) against perplexity change (y), one series per model.
fn pareto_svg(records: &[Value]) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let pts: Vec<(String, String, f64, f64)> = records
        .iter()
        .filter(|r| r["genre"] == "all")
        .filter_map(|r| {
            Some((
                r["model"].as_str()?.to_owned(),
                r["preset"].as_str()?.to_owned(),
                r["ratio_resident"].as_f64()?,
                r["ppl_delta_pct"].as_f64()?,
            ))
        })
        .collect();
    let xmax = pts.iter().map(|p| p.2).fold(2.0, f64::max) * 1.2;
    let ymax = pts.iter().map(|p| p.3).fold(1.0, f64::max) * 1.15;
    let x = |r: f64| m + (r.ln() / xmax.ln()) * (w - 2.0 * m);
    let y = |d: f64| h - m - (d.max(0.0) / ymax) * (h - 2.0 * m);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">KV cache compression ratio (resident, measured; log scale)</text>"#,
        w / 2.0,
        h - 20.0
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">perplexity change, % (lower is better)</text>"#,
        h / 2.0,
        h / 2.0
    );
    for r in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0].into_iter().filter(|r| *r <= xmax) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{r}x</text>"#,
            x(r),
            h - m + 16.0
        );
    }
    for i in 0..=4 {
        let d = ymax * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{d:.1}</text>"#,
            m - 6.0,
            y(d) + 4.0
        );
    }
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    let _ = write!(
        s,
        r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="black"/><text x="{:.1}" y="{:.1}">uncompressed</text>"#,
        x(1.0),
        y(0.0),
        x(1.0) + 8.0,
        y(0.0) - 8.0
    );
    let mut models: Vec<&str> = pts.iter().map(|p| p.0.as_str()).collect();
    models.dedup();
    for (i, model) in models.iter().enumerate() {
        let c = colors[i % colors.len()];
        let mut series: Vec<&(String, String, f64, f64)> =
            pts.iter().filter(|p| p.0 == *model).collect();
        series.sort_by(|a, b| a.2.total_cmp(&b.2));
        let path: Vec<String> = std::iter::once(format!("{:.1},{:.1}", x(1.0), y(0.0)))
            .chain(series.iter().map(|p| format!("{:.1},{:.1}", x(p.2), y(p.3))))
            .collect();
        let _ = write!(s, r#"<polyline points="{}" fill="none" stroke="{c}"/>"#, path.join(" "));
        for p in &series {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="{c}">{} {:.1}x {:+.1}%</text>"#,
                x(p.2),
                y(p.3),
                x(p.2) + 6.0,
                y(p.3) - 6.0,
                p.1,
                p.2,
                p.3
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" fill="{c}">{model}</text>"#,
            w - m - 80.0,
            m + 16.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s
}
