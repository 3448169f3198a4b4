//! `cargo xtask bench [STAGE...]`: run a stage's criterion benches and its `report` example,
//! and write every figure as a flat JSON record to `target/nq-bench/STAGE.json`
//! (record convention: shared DESIGN.md, "Machine-readable results").

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::{cargo, project_root, run_checked};

/// Stages whose crate has criterion benches and maybe an `examples/report.rs`.
const STAGES: &[&str] = &["hadamard", "rope", "lattice", "entropy", "evict"];

/// Stages beyond the stage crates, run on request: `core` (nq-core's compression and attention
/// benches and its `compress_time` example) and `decode` (nq-candle's `decode_speed` example:
/// decode tokens/s at 8K context, f16 cache against compressed caches, on the default model).
/// `attend` (nq-core's `attend_time`: decode-time attention at 8K, f16 cache through the same
/// code path against each preset, block compression in the loop).
const EXTRA: &[&str] = &["core", "decode", "attend"];

/// How a stage is run: package, cargo features, whether it has criterion benches, report example.
fn spec(stage: &str) -> (String, &'static [&'static str], bool, &'static str) {
    match stage {
        "core" => ("nq-core".into(), &["testing"], true, "compress_time"),
        "decode" => ("nq-candle".into(), &[], false, "decode_speed"),
        "attend" => ("nq-core".into(), &["testing"], false, "attend_time"),
        _ => (format!("nq-{stage}"), &[], true, "report"),
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.first().is_some_and(|a| a == "gpu-decode") {
        // Built here (cargo xtask build-cuda), run on a GPU machine (see gpu_decode.rs).
        return write_records("gpu-decode", &crate::gpu_decode::run(&args[1..])?);
    }
    if args.first().is_some_and(|a| a == "cuda") {
        // Built here, run on a GPU machine: its own options (see cuda.rs).
        let records = crate::cuda::run(&args[1..])?;
        print_summary("cuda", &records);
        return write_records("cuda", &records);
    }
    let mut stages = Vec::new();
    let mut criterion = true;
    let mut quick = false;
    let mut collect = false;
    for a in args {
        match a.as_str() {
            "--no-criterion" => criterion = false,
            "--quick" => quick = true,
            "--collect" => collect = true,
            s if s.starts_with('-') => bail!("bench: unknown option `{s}`"),
            s if STAGES.contains(&s) || EXTRA.contains(&s) || s == "quality" => {
                stages.push(s.to_owned());
            }
            s => bail!(
                "bench: unknown stage `{s}`; stages are {STAGES:?}, {EXTRA:?} and \"quality\""
            ),
        }
    }
    if stages.is_empty() {
        stages = STAGES.iter().map(|s| (*s).to_owned()).collect();
    }
    for stage in &stages {
        let (records, name) = if stage == "quality" {
            crate::quality::run(quick, collect)?
        } else {
            (stage_records(stage, criterion, quick)?, stage.clone())
        };
        print_summary(stage, &records);
        write_records(&name, &records)?;
    }
    Ok(())
}

/// `target/nq-bench/NAME.json` (NAME may name a subfolder): the records as one JSON array.
fn write_records(name: &str, records: &[Value]) -> Result<()> {
    let path = project_root().join("target").join("nq-bench").join(format!("{name}.json"));
    fs::create_dir_all(path.parent().expect("a file under target/nq-bench"))?;
    fs::write(&path, serde_json::to_string_pretty(records)? + "\n")?;
    eprintln!("wrote {} ({} records)", path.display(), records.len());
    Ok(())
}

fn stage_records(stage: &str, criterion: bool, quick: bool) -> Result<Vec<Value>> {
    let (package, features, has_criterion, report) = spec(stage);
    let mut records = Vec::new();
    if criterion && has_criterion {
        let started = SystemTime::now();
        let mut cmd = cargo();
        cmd.args(["bench", "-p", &package, "--bench", "bench_main"]);
        for f in features {
            cmd.args(["--features", f]);
        }
        cmd.arg("--");
        if quick {
            cmd.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
        }
        run_checked(&mut cmd)?;
        records.extend(criterion_records(&project_root().join("target/criterion"), started)?);
    }
    if project_root().join(&package).join(format!("examples/{report}.rs")).exists() {
        let first = report_records(&package, features, report, false)?;
        // Compression and encoder speed are reported on both instruction sets (issue 12): on
        // an AVX-512 machine, a second run takes the AVX2 path.
        let avx512 = first.iter().any(|r| r["isa"] == "avx512");
        records.extend(first);
        if matches!(stage, "core" | "lattice") && avx512 {
            // Only the records that name their instruction set (the others do not use it).
            let again = report_records(&package, features, report, true)?;
            records.extend(again.into_iter().filter(|r| r.get("isa").is_some()));
        }
    }
    Ok(records)
}

/// The JSON records a report example prints, with `NQ_FORCE_AVX2=1` when `force_avx2`.
fn report_records(
    package: &str,
    features: &[&str],
    report: &str,
    force_avx2: bool,
) -> Result<Vec<Value>> {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--quiet", "-p", package, "--example", report]);
    for f in features {
        cmd.args(["--features", f]);
    }
    if force_avx2 {
        cmd.env("NQ_FORCE_AVX2", "1");
    }
    let env = if force_avx2 { "NQ_FORCE_AVX2=1 " } else { "" };
    eprintln!("$ {env}cargo run --release -p {package} --example {report}");
    let out = cmd.output().context("could not run the report example")?;
    if !out.status.success() {
        bail!(
            "{report} example of {package} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parsed: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{report} example of {package} did not print a JSON array"))?;
    match parsed {
        Value::Array(items) => Ok(items),
        _ => bail!("{report} example of {package} printed JSON that is not an array"),
    }
}

/// Turn every criterion result written since `since` into a record: the group is the bench,
/// `k=v,k=v` parameters become fields, the mean time and throughput become figures.
fn criterion_records(root: &Path, since: SystemTime) -> Result<Vec<Value>> {
    let mut found = Vec::new();
    collect_new_dirs(root, since, &mut found)?;
    found.sort();
    let mut records = Vec::new();
    for dir in found {
        let bench: Value = read_json(&dir.join("benchmark.json"))?;
        let est: Value = read_json(&dir.join("estimates.json"))?;
        let Some(mean_ns) = est.pointer("/mean/point_estimate").and_then(Value::as_f64) else {
            continue;
        };
        let seconds = mean_ns * 1e-9;
        let mut rec = Map::new();
        let group = bench.get("group_id").and_then(Value::as_str).unwrap_or("?");
        rec.insert("bench".into(), json!(group));
        rec.insert("source".into(), json!("criterion"));
        if let Some(f) = bench.get("function_id").and_then(Value::as_str) {
            rec.insert("function".into(), json!(f));
        }
        let params = bench.get("value_str").and_then(Value::as_str).unwrap_or("");
        for kv in params.split(',').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) => rec.insert(k.trim().into(), parse_scalar(v.trim())),
                None => rec.insert("param".into(), parse_scalar(kv.trim())),
            };
        }
        rec.insert("seconds".into(), json!(seconds));
        let throughput = bench.get("throughput");
        if let Some(n) = throughput.and_then(|t| t.get("Elements")).and_then(Value::as_f64) {
            rec.insert("melem_per_s".into(), json!(n / seconds / 1e6));
            if let Some(d) = rec.get("d").and_then(Value::as_f64) {
                rec.insert("rows_per_s".into(), json!(n / d / seconds));
            }
        }
        if let Some(n) = throughput.and_then(|t| t.get("Bytes")).and_then(Value::as_f64) {
            rec.insert("gb_per_s".into(), json!(n / seconds / 1e9));
        }
        records.push(Value::Object(rec));
    }
    Ok(records)
}

fn collect_new_dirs(dir: &Path, since: SystemTime, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            let bench = p.join("benchmark.json");
            let fresh = fs::metadata(&bench).and_then(|m| m.modified()).is_ok_and(|t| t >= since);
            if fresh && p.join("estimates.json").exists() {
                out.push(p);
            }
        } else {
            collect_new_dirs(&p, since, out)?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn parse_scalar(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        json!(i)
    } else if let Ok(f) = s.parse::<f64>() {
        json!(f)
    } else {
        json!(s)
    }
}

fn print_summary(stage: &str, records: &[Value]) {
    println!("== {stage}: {} records", records.len());
    for r in records {
        let Some(obj) = r.as_object() else { continue };
        let line: Vec<String> = obj
            .iter()
            .map(|(k, v)| match v {
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{k}={f:.4}"),
                    _ => format!("{k}={n}"),
                },
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        println!("  {}", line.join(" "));
    }
}
