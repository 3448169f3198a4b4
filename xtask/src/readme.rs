//! `cargo xtask readme`: regenerate the README's result tables from `target/nq-bench/*.json`
//! (between `<!-- nq-bench:NAME -->` and `<!-- /nq-bench -->` markers). Tables are never
//! typed by hand; a table whose results file is missing is left as it is.

use std::fmt::Write as _;
use std::fs;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::project_root;

/// Every table, or only those named in `args`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let root = project_root();
    let path = root.join("README.md");
    let mut text = fs::read_to_string(&path).context("README.md")?;
    let tables = [
        ("quality", quality as fn(&[Value]) -> String),
        ("speed", speed),
        ("attention", attention),
        ("cuda", cuda),
        ("cuda-attend", cuda_attend),
        ("gpu-decode", gpu_decode),
        ("original", original),
        ("needle", needle),
        ("stages", stages),
    ];
    if let Some(bad) = args.iter().find(|a| !tables.iter().any(|(n, _)| n == a)) {
        let names: Vec<&str> = tables.iter().map(|(n, _)| *n).collect();
        bail!("readme: no table `{bad}`; tables are {names:?}");
    }
    for (name, render) in tables {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        let records = load(name)?;
        let Some(records) = records else {
            eprintln!("readme: no results for `{name}`, table left as it is");
            continue;
        };
        let open = format!("<!-- nq-bench:{name} -->");
        let close = "<!-- /nq-bench -->";
        let Some(a) = text.find(&open) else { continue };
        let b = text[a..]
            .find(close)
            .map(|i| a + i)
            .with_context(|| format!("{open} has no {close}"))?;
        text = format!("{}{open}\n{}{}", &text[..a], render(&records), &text[b..]);
    }
    fs::write(&path, text)?;
    eprintln!("readme: updated {}", path.display());
    Ok(())
}

fn load(name: &str) -> Result<Option<Vec<Value>>> {
    let dir = project_root().join("target/nq-bench");
    let files: Vec<&str> = match name {
        "quality" => vec!["quality"],
        "speed" => vec!["core", "decode"],
        "attention" => vec!["attend"],
        "cuda" | "cuda-attend" => vec!["cuda"],
        "gpu-decode" => vec!["gpu-decode"],
        "needle" => vec!["needle-smollm2", "needle-qwen05"],
        "original" => return load_original(&dir),
        _ => vec!["hadamard", "lattice", "entropy", "evict", "rope"],
    };
    let mut out = Vec::new();
    for f in files {
        let p = dir.join(format!("{f}.json"));
        let Ok(t) = fs::read_to_string(&p) else { continue };
        if let Value::Array(items) =
            serde_json::from_str(&t).with_context(|| format!("{}", p.display()))?
        {
            out.extend(items.into_iter().map(|mut r| {
                r["stage"] = Value::from(f);
                r
            }));
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// `original.json` (`cargo xtask compare-original`), then every `eval-*.json` of ours (the
/// `nq eval --json` files of `cargo xtask bench quality`, and of its `--quick` run in
/// `quick/`), each record tagged with its file stem.
fn load_original(dir: &std::path::Path) -> Result<Option<Vec<Value>>> {
    let read = |p: &std::path::Path| -> Result<Vec<Value>> {
        let t = fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(match serde_json::from_str(&t).with_context(|| format!("{}", p.display()))? {
            Value::Array(items) => items
                .into_iter()
                .map(|mut r| {
                    r["stage"] = Value::from(stem.as_str());
                    r
                })
                .collect(),
            _ => Vec::new(),
        })
    };
    let original = dir.join("original.json");
    if !original.is_file() {
        return Ok(None);
    }
    let mut out = read(&original)?;
    let mut ours: Vec<_> = [dir.to_path_buf(), dir.join("quick")]
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("eval-"))
        })
        .collect();
    ours.sort();
    for p in ours {
        out.extend(read(&p)?);
    }
    Ok(Some(out))
}

fn num(r: &Value, k: &str) -> String {
    r.get(k).and_then(Value::as_f64).map_or_else(
        || "".into(),
        |v| {
            if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
        },
    )
}

fn quality(records: &[Value]) -> String {
    let mut s = String::from(
        "| model | mode | preset | samples | ppl change % | worst sample % | KL (nats) | ratio, resident | ratio, final | ratio, archive | compress s |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records.iter().filter(|r| r["genre"] == "all") {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:+.2} | {:+.2} | {} | {}x | {} | {}x | {} |",
            r["model"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("prompt"),
            r["preset"].as_str().unwrap_or("?"),
            r["sample"].as_str().unwrap_or("?"),
            r["ppl_delta_pct"].as_f64().unwrap_or(f64::NAN),
            r["ppl_delta_pct_worst"].as_f64().unwrap_or(f64::NAN),
            num(r, "kld"),
            num(r, "ratio_resident"),
            // Prompt mode holds the continuation in f16 on purpose: no final ratio there.
            if r["mode"] == "decode" { num(r, "ratio_resident_final") + "x" } else { "–".into() },
            num(r, "ratio_archive"),
            num(r, "seconds"),
        );
    }
    s
}

/// Compression time (nq-core's `compress_time`) and decode speed at long context
/// (nq-candle's `decode_speed`).
fn speed(records: &[Value]) -> String {
    let mut s = String::from("| measurement | setting | figures |\n|---|---|---|\n");
    let ms = |r: &Value, k: &str| r.get(k).and_then(Value::as_f64).map_or(f64::NAN, |v| v * 1e3);
    for r in records.iter().filter(|r| r["bench"] == "cpu_compress_once") {
        let _ = writeln!(
            s,
            "| compress a {}-token SmolLM2-shaped cache, one core | preset={} scores={} isa={} | CPU {:.1} ms, wall {:.1} ms |",
            r["t"],
            r["preset"].as_str().unwrap_or("?"),
            r["scores"].as_str().unwrap_or("?"),
            r["isa"].as_str().unwrap_or("?"),
            ms(r, "cpu_seconds"),
            ms(r, "seconds"),
        );
    }
    for r in records.iter().filter(|r| r["bench"] == "cpu_decode") {
        let mib = r["resident_bytes"].as_f64().unwrap_or(f64::NAN) / f64::from(1u32 << 20);
        let _ = writeln!(
            s,
            "| decode at {} tokens of context, {} | cache={} | {} tok/s, cache {mib:.1} MiB |",
            r["context"],
            r["model"].as_str().unwrap_or("?"),
            r["cache"].as_str().unwrap_or("?"),
            num(r, "tok_per_s"),
        );
    }
    s
}

/// Decode-time attention on the CPU (`attend_time`): one line per preset.
fn attention(records: &[Value]) -> String {
    let mut s = String::from(
        "| cache | context | ms per decode step (30 layers) | vs the f16 cache | resident | ISA |\n|---|---|---|---|---|---|\n",
    );
    for r in records.iter().filter(|r| r["bench"] == "cpu_decode_attention") {
        let mib = r["resident_bytes"].as_f64().unwrap_or(f64::NAN) / f64::from(1u32 << 20);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}x | {mib:.1} MiB | {} |",
            r["preset"].as_str().unwrap_or("?"),
            r["t"],
            num(r, "ms_per_step"),
            num(r, "speedup_vs_f16"),
            r["isa"].as_str().unwrap_or("?"),
        );
    }
    s
}

/// The GPU run's decode attention (`cuda_attend` records of `cargo xtask bench cuda`): one
/// row per (B, context), each storage's time and speedup over the faster bf16 SDPA backend.
fn cuda_attend(records: &[Value]) -> String {
    const STORAGES: [&str; 4] = ["quant", "high", "balanced", "max"];
    let attend: Vec<&Value> = records.iter().filter(|r| r["bench"] == "cuda_attend").collect();
    let mut shapes: Vec<(u64, u64)> =
        attend.iter().filter_map(|r| Some((r["b"].as_u64()?, r["l"].as_u64()?))).collect();
    shapes.sort_by_key(|&(b, l)| (l, b));
    shapes.dedup();
    let mut s = String::from(
        "| B | context | bf16 SDPA (cuDNN / flash) | quant | high | balanced | max | card |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (b, l) in shapes {
        let at = |st: &str| {
            attend.iter().find(|r| r["b"] == b && r["l"] == l && r["storage"] == st).copied()
        };
        let Some(first) = STORAGES.iter().find_map(|st| at(st)) else { continue };
        let us = |r: &Value, k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.0} us"));
        let cells: Vec<String> = STORAGES
            .iter()
            .map(|st| match at(st) {
                Some(r) if r["us"].is_f64() => match r["speedup_vs_sdpa"].as_f64() {
                    Some(x) => format!("{} ({x:.2}x)", us(r, "us")),
                    None => us(r, "us"),
                },
                Some(r) => r["skipped"].as_str().unwrap_or("-").to_owned(),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(
            s,
            "| {b} | {}K | {} / {} | {} | {} |",
            l / 1024,
            us(first, "sdpa_cudnn_us"),
            us(first, "sdpa_flash_us"),
            cells.join(" | "),
            first["device"].as_str().unwrap_or("?")
        );
    }
    s
}

/// The GPU run (`cargo xtask bench cuda`): encode, copy bandwidth, the attention error (the
/// attention times are [`cuda_attend`]'s table).
/// `gpu-decode.json`: per model shape, weights and context, each cache's decode speed (and
/// against the dense f16 cache of the same run), size and attention share.
fn gpu_decode(records: &[Value]) -> String {
    let mut s = String::from(
        "| run | shape | weights | B | context | cache | tok/s | vs dense | cache MiB | ratio | attention share | fits tokens | card |\n\
         |---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let key = |r: &Value| {
        ["run", "device", "shape", "weights", "batch", "context"].map(|k| r[k].to_string())
    };
    // Rows in order of run, card, shape, weights, batch, context, then dense before the presets,
    // each preset before its host-path run (`PRESET@host`).
    let order = |r: &Value| {
        let name = r["cache"].as_str().unwrap_or("");
        let (preset, host) = name.split_once('@').map_or((name, false), |(p, _)| (p, true));
        let cache = ["dense_f16", "high", "balanced", "max"].iter().position(|c| preset == *c);
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let text = |k: &str| r[k].to_string();
        let place = (text("run"), text("device"), text("shape"), text("weights"));
        (place, n("batch"), n("context"), cache, host)
    };
    let mut sorted: Vec<&Value> = records.iter().collect();
    sorted.sort_by_key(|r| order(r));
    for r in sorted {
        let dense = records.iter().find(|d| key(d) == key(r) && d["cache"] == "dense_f16");
        let vs = match (dense.and_then(|d| d["tok_per_s"].as_f64()), r["tok_per_s"].as_f64()) {
            (Some(d), Some(c)) => format!("{:.2}x", c / d),
            _ => "-".into(),
        };
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
        let f =
            |k: &str, digits: usize| r[k].as_f64().map_or("-".into(), |v| format!("{v:.digits$}"));
        let mib =
            r["resident_bytes"].as_f64().map_or("-".into(), |b| format!("{:.0}", b / 1048576.0));
        let share = r["attend_share"].as_f64().map_or("-".into(), |v| format!("{:.0}%", 100.0 * v));
        let tok = match r["error"].as_str() {
            Some(e) => format!("error: {}", e.lines().next().unwrap_or("")),
            None => f("tok_per_s", 1),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {tok} | {vs} | {mib} | {} | {share} | {} | {} |",
            text("run"),
            text("shape"),
            text("weights"),
            r["batch"],
            r["context"],
            text("cache"),
            r["ratio"].as_f64().map_or("-".into(), |v| format!("{v:.1}x")),
            r["fits_tokens"].as_u64().map_or("-".into(), |v| v.to_string()),
            text("device"),
        );
    }
    s
}

fn cuda(records: &[Value]) -> String {
    let mut s = String::from("| measurement | setting | figures | card |\n|---|---|---|---|\n");
    // The figures the targets are about; the row-level kernels' records stay in cuda.json.
    const SHOWN: &[&str] = &["cuda_copy", "cuda_attend_error", "cuda_encode_pipeline_f16"];
    for r in records.iter().filter(|r| r["bench"].as_str().is_some_and(|b| SHOWN.contains(&b))) {
        let bench = r["bench"].as_str().unwrap_or("?");
        let setting: Vec<String> = ["storage", "b", "l", "bits", "scale_mode"]
            .iter()
            .filter_map(|k| {
                r.get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
            })
            .collect();
        let figures: Vec<String> = [
            "us",
            "sdpa_cudnn_us",
            "sdpa_flash_us",
            "speedup_vs_sdpa",
            "gb_per_s",
            "fraction_of_copy",
            "max_abs_err_vs_stored",
            "rms_err_vs_stored",
            "max_abs_err_vs_original",
            "rms_err_vs_original",
            "output_rms",
        ]
        .iter()
        .filter_map(|k| Some((k, r.get(*k)?.as_f64()?)))
        .map(|(k, v)| {
            if v != 0.0 && v.abs() < 0.01 {
                format!("{k} {v:.2e}")
            } else {
                format!("{k} {}", num(r, k))
            }
        })
        .collect();
        if figures.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {bench} | {} | {} | {} |",
            setting.join(" "),
            figures.join(", "),
            r["device"].as_str().unwrap_or("?")
        );
    }
    s
}

/// The retrieval check (`needle_summary` records of `nq needle --json`): per model and cache,
/// pass keys answered exactly, those the uncompressed cache found and this one lost, the
/// share of the key's tokens still cached, and the measured ratio.
fn needle(records: &[Value]) -> String {
    let mut s = String::from(
        "| model | cache | exact | lost vs uncompressed | key tokens kept | ratio, resident |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in records.iter().filter(|r| r["bench"] == "needle_summary") {
        let pct = r["key_kept"].as_f64().map_or("-".into(), |k| format!("{:.0}%", k * 100.0));
        let count = |k: &str| r[k].as_u64().map_or("-".into(), |v| v.to_string());
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} | {pct} | {}x |",
            r["model"].as_str().unwrap_or("?"),
            r["preset"].as_str().unwrap_or("?"),
            count("exact"),
            count("trials"),
            count("lost_vs_none"),
            num(r, "ratio_resident"),
        );
    }
    s
}

/// The Python original (`original_eval` records) beside our own evaluation of the same model,
/// preset and protocol (`eval` aggregates over all samples, prompt and decode mode), on the
/// same samples per genre where that run exists (the samples column says how many).
fn original(records: &[Value]) -> String {
    let mut s = String::from(
        "| model | preset | samples, original / ours | original: ppl change % | original: KL | original: ratio claimed | original: ratio on paper | original: ratio, real bytes | ours: ppl change %, prompt | ours: ppl change %, decode | ours: KL, prompt | ours: ratio, resident |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let same = |a: &Value, b: &Value, k: &str| a.get(k).is_some() && a.get(k) == b.get(k);
    for o in records.iter().filter(|r| r["bench"] == "original_eval") {
        // Ours on the same samples where such a run exists, else on any number of samples.
        let ours = |mode: &str| {
            let candidates = records.iter().filter(|r| {
                r["bench"] == "eval"
                    && r["genre"] == "all"
                    && r["mode"] == mode
                    && ["model", "preset", "prefix", "continuation"].iter().all(|k| same(r, o, k))
            });
            let mut fallback = None;
            for r in candidates {
                if r.get("samples_per_genre") == o.get("samples_per_genre") {
                    return Some(r);
                }
                fallback = fallback.or(Some(r));
            }
            fallback
        };
        let (prompt, decode) = (ours("prompt"), ours("decode"));
        let pct = |r: Option<&Value>| {
            r.and_then(|r| r["ppl_delta_pct"].as_f64()).map_or("–".into(), |v| format!("{v:+.2}"))
        };
        let ratio = |r: &Value, k: &str| {
            r.get(k).and_then(Value::as_f64).map_or("–".into(), |_| format!("{}x", num(r, k)))
        };
        let ours_samples = prompt
            .or(decode)
            .and_then(|r| r["sample"].as_str())
            .and_then(|s| s.strip_suffix(" samples"))
            .unwrap_or("–");
        let _ = writeln!(
            s,
            "| {} | {} | {} / {ours_samples} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o["model"].as_str().unwrap_or("?"),
            o["preset"].as_str().unwrap_or("?"),
            o["samples"],
            pct(Some(o)),
            num(o, "kld"),
            ratio(o, "ratio_claimed"),
            ratio(o, "ratio_paper"),
            ratio(o, "ratio_resident"),
            pct(prompt),
            pct(decode),
            prompt.map_or("–".into(), |r| num(r, "kld")),
            prompt.or(decode).map_or("–".into(), |r| ratio(r, "ratio_resident")),
        );
    }
    s
}

/// One line per report record of the stage crates, with the figures each carries.
fn stages(records: &[Value]) -> String {
    const FIGS: &[&str] = &[
        "rows_per_s",
        "melem_per_s",
        "sqnr_db",
        "bits_per_dim",
        "encode_melem_per_s",
        "decode_melem_per_s",
        "entropy_bits_per_dim",
        "coded_bits_per_dim",
        "encode_gb_per_s",
        "decode_gb_per_s",
        "tokens_per_s",
    ];
    let mut s = String::from("| stage | record | figures |\n|---|---|---|\n");
    // The headline records: report examples (not raw criterion groups), no parameter sweeps,
    // head_dim 128 where a record has one (64 for eviction scoring, SmolLM2's).
    let headline = |r: &&Value| {
        let bench = r["bench"].as_str().unwrap_or("");
        let d = r.get("d").and_then(Value::as_u64);
        r.get("source").is_none()
            && !bench.contains("sweep")
            && !bench.contains("voronoi")
            && !bench.contains("roundtrip")
            && match bench {
                "evict_score" => d == Some(64) && r["t"].as_u64() == Some(8192),
                _ => d.is_none_or(|d| d == 128),
            }
    };
    for r in records.iter().filter(headline) {
        let Some(obj) = r.as_object() else { continue };
        let params: Vec<String> = obj
            .iter()
            .filter(|(k, v)| {
                !FIGS.contains(&k.as_str())
                    && k.as_str() != "stage"
                    && (v.is_string() || v.is_i64() || v.is_u64())
            })
            .map(|(k, v)| {
                format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            })
            .collect();
        let figs: Vec<String> = FIGS
            .iter()
            .filter(|k| obj.contains_key(**k))
            .map(|k| format!("{k} {}", num(r, k)))
            .collect();
        if figs.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            r["stage"].as_str().unwrap_or("?"),
            params.join(" "),
            figs.join(", ")
        );
    }
    s
}
