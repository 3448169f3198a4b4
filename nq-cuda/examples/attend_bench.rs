//! Fused decode attention over the compressed storage against PyTorch bf16
//! `scaled_dot_product_attention` over every token, in one run on one GPU; plus device copy
//! bandwidth and the attention error on one realistic shape. Prints one JSON array of flat
//! records to stdout; progress goes to stderr.
//!
//! `cargo build --release -p nq-cuda --example attend_bench`; on the GPU machine, from the
//! repository root: `attend_bench [--quick] [--only B,L,STORAGE] [--sdpa PATH]` (`--quick`:
//! only B = 32 and 8 at L = 32K and B = 1 at L = 128K, the shapes of the targets; `--only`:
//! one shape and storage, no tuning or error record, for a profiler; runs `python3
//! nq-cuda/bench/sdpa.py` unless `--sdpa none`).
//!
//! Records:
//! - `cuda_copy`: device-to-device copy of 1 GiB, `gb_per_s` counting read + write bytes.
//! - `cuda_attend`: `b`, `l` (context tokens), `storage` (`quant`: every token kept, 4-bit
//!   keys / 2-bit values; `high`: 50% kept, 4/3; `balanced`: 35%, 4/2; `max`: 20%, 4/2; each
//!   with 4 sink + 16 recent f16 tokens), `us` per call (one query token, 32 query / 8 kv
//!   heads, d 128), `gb_per_s` (resident bytes of the B layers / time), `sdpa_cudnn_us`,
//!   `sdpa_flash_us`, `speedup_vs_sdpa` (against the faster of the two), `device`.
//!   Codes are random bytes and scales random (speed does not depend on the values):
//!   `codes: "random"`.
//! - `cuda_attend_tuning`: the same timing under other split settings.
//! - `cuda_attend_error`: B = 1, L = 8192, Gaussian K/V encoded by the CPU codec (every
//!   token kept, 4-bit keys / 2-bit values): max and rms error of the kernel against the
//!   f64 attention over the stored form (`nq_core::reference::stored_attention`: the
//!   kernel's arithmetic) and against f64 attention over the original K/V (compression).
//!
//! Timing: 3 warm-up calls, then n back-to-back calls (~0.1 s, 5..200) between two stream
//! synchronizations; `us` = wall time / n (host launch cost included, as in a decode loop).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use cudarc::driver::CudaSlice;
use half::f16;
use nq_core::{HeadImage, KvShape, LayerSpec, Positions, Rotation, Storage};
use nq_cuda::CudaBackend;
use nq_cuda::attend::{AttendTuning, Attender, BatchQuery};
use nq_cuda::store::{DeviceLayer, DeviceRows};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const HQ: usize = 32;
const HKV: usize = 8;
const D: usize = 128;
const SINKS: usize = 4;
const RECENT: usize = 16;

struct StorageCase {
    name: &'static str,
    keep: f64,
    kb: u8,
    vb: u8,
}

const STORAGES: [StorageCase; 4] = [
    StorageCase { name: "quant", keep: 1.0, kb: 4, vb: 2 },
    StorageCase { name: "high", keep: 0.5, kb: 4, vb: 3 },
    StorageCase { name: "balanced", keep: 0.35, kb: 4, vb: 2 },
    StorageCase { name: "max", keep: 0.2, kb: 4, vb: 2 },
];

fn spec(kb: u8, vb: u8) -> Result<LayerSpec> {
    Ok(LayerSpec {
        kv_heads: HKV,
        q_heads: HQ,
        head_dim: D,
        keys: Storage::E8 { bits: kb },
        values: Storage::E8 { bits: vb },
        scale_candidates: 1,
        key_rot: Rotation::new(D, 11)?,
        value_rot: Rotation::new(D, 12)?,
    })
}

/// Random bytes and valid f16 scales on the device, sliced into every layer's codes.
struct Pool {
    bytes: CudaSlice<u8>,
    scales: CudaSlice<u16>,
}

const POOL_BYTES: usize = 64 << 20;
const POOL_SCALES: usize = 1 << 20;

/// One sequence of context `l`: `keep` of the middle tokens compressed (evenly spaced,
/// the same count per head), 4 sinks and 16 recent tokens dense.
fn build_layer(
    gpu: &CudaBackend,
    sp: &LayerSpec,
    pool: &Pool,
    l: usize,
    keep: f64,
    rng: &mut StdRng,
) -> Result<DeviceLayer> {
    let mut layer = DeviceLayer::new(gpu, sp)?;
    let middle = l - SINKS - RECENT;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let n = ((keep * middle as f64).round() as usize).min(middle);
    #[allow(clippy::cast_possible_truncation)]
    let pos: Vec<u32> = (0..n).map(|i| (SINKS + i * middle / n.max(1)) as u32).collect();
    let (kr, vr) = (sp.key_row_bytes(), sp.value_row_bytes());
    let chunk = POOL_BYTES / kr.max(vr);
    for h in 0..HKV {
        let mut at = 0;
        while at < n {
            let t = chunk.min(n - at).min(POOL_SCALES);
            let ko = rng.random_range(0..=POOL_BYTES - t * kr);
            let vo = rng.random_range(0..=POOL_BYTES - t * vr);
            let so = rng.random_range(0..=POOL_SCALES - t);
            layer.append_compressed_device(
                h,
                &DeviceRows {
                    k_codes: pool.bytes.slice(ko..ko + t * kr),
                    k_scales: pool.scales.slice(so..so + t),
                    v_codes: pool.bytes.slice(vo..vo + t * vr),
                    v_scales: pool.scales.slice(so..so + t),
                    positions: &pos[at..at + t],
                },
            )?;
            at += t;
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let dpos: Vec<u32> = (0..SINKS as u32).chain((l - RECENT) as u32..l as u32).collect();
    let kv: Vec<f32> = (0..HKV * dpos.len() * D).map(|_| rng.random_range(-1.0..1.0)).collect();
    layer.append_dense(gpu, &kv, &kv, &dpos)?;
    Ok(layer)
}

/// Mean microseconds per call (see the crate docs of this example).
fn time_us(gpu: &CudaBackend, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    gpu.stream().synchronize()?;
    let t0 = Instant::now();
    f()?;
    gpu.stream().synchronize()?;
    let one = t0.elapsed().as_secs_f64();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = ((0.1 / one.max(1e-6)) as usize).clamp(5, 200);
    let t0 = Instant::now();
    for _ in 0..n {
        f()?;
    }
    gpu.stream().synchronize()?;
    #[allow(clippy::cast_precision_loss)]
    Ok(t0.elapsed().as_secs_f64() / n as f64 * 1e6)
}

fn copy_bandwidth(gpu: &CudaBackend) -> Result<f64> {
    let bytes = 1usize << 30;
    let src = gpu.stream().alloc_zeros::<u8>(bytes)?;
    let mut dst = gpu.stream().alloc_zeros::<u8>(bytes)?;
    let us = time_us(gpu, || Ok(gpu.stream().memcpy_dtod(&src, &mut dst)?))?;
    #[allow(clippy::cast_precision_loss)]
    Ok(2.0 * bytes as f64 / (us * 1e-6) / 1e9)
}

fn sdpa(path: &str, shapes: &[(usize, usize)]) -> Result<Vec<Value>> {
    let arg: Vec<String> = shapes.iter().map(|(b, l)| format!("{b}x{l}")).collect();
    eprintln!("running python3 {path} ...");
    let out = Command::new("python3").arg(path).arg(arg.join(",")).output().context("python3")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("[]");
    Ok(serde_json::from_str::<Vec<Value>>(line).unwrap_or_default())
}

fn sdpa_us(records: &[Value], b: usize, l: usize, backend: &str) -> Option<f64> {
    records
        .iter()
        .find(|r| r["b"] == json!(b) && r["l"] == json!(l) && r["backend"] == json!(backend))
        .and_then(|r| r["us"].as_f64())
}

fn gauss(rng: &mut StdRng) -> f32 {
    let u: f64 = rng.random_range(1e-12..1.0);
    let v: f64 = rng.random_range(0.0..1.0);
    #[allow(clippy::cast_possible_truncation)]
    let x = ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32;
    x
}

/// The error record: Gaussian K/V, every token kept at 4/2 bits, 4 + 16 dense.
fn error_record(gpu: &CudaBackend, device: &str) -> Result<Value> {
    let (l, kb, vb) = (8192usize, 4u8, 2u8);
    let sp = spec(kb, vb)?;
    let mut rng = StdRng::seed_from_u64(5);
    let k: Vec<f32> = (0..HKV * l * D).map(|_| gauss(&mut rng)).collect();
    let v: Vec<f32> = (0..HKV * l * D).map(|_| gauss(&mut rng)).collect();
    let q: Vec<f32> = (0..HQ * D).map(|_| gauss(&mut rng)).collect();
    #[allow(clippy::cast_possible_truncation)]
    let dense_pos: Vec<u32> = (0..SINKS as u32).chain((l - RECENT) as u32..l as u32).collect();
    let kcodec = FixedCodec::new(FixedBits::B4, ScaleMode::default())?;
    let vcodec = FixedCodec::new(FixedBits::B2, ScaleMode::default())?;
    let mut heads = Vec::new();
    let mid = SINKS..l - RECENT;
    for h in 0..HKV {
        let rows = |x: &[f32], r: std::ops::Range<usize>| {
            x[(h * l + r.start) * D..(h * l + r.end) * D].to_vec()
        };
        let mut kr = rows(&k, mid.clone());
        let mut vr = rows(&v, mid.clone());
        for row in kr.chunks_exact_mut(D) {
            sp.key_rot.blocks()[0].forward(row)?;
        }
        for row in vr.chunks_exact_mut(D) {
            sp.value_rot.blocks()[0].forward(row)?;
        }
        let n = mid.len();
        let mut img = HeadImage {
            #[allow(clippy::cast_possible_truncation)]
            pos: Positions::from_ascending(&mid.clone().map(|p| p as u32).collect::<Vec<_>>())
                .expect("ascending"),
            k_codes: vec![0; kcodec.code_len(n, D)],
            k_scales: vec![f16::ZERO; n],
            v_codes: vec![0; vcodec.code_len(n, D)],
            v_scales: vec![f16::ZERO; n],
            ..HeadImage::default()
        };
        kcodec.encode_rows(&kr, D, &mut img.k_codes, &mut img.k_scales)?;
        vcodec.encode_rows(&vr, D, &mut img.v_codes, &mut img.v_scales)?;
        let dense: Vec<usize> = (0..SINKS).chain(l - RECENT..l).collect();
        for x in &dense {
            img.dense_k.extend(k[(h * l + x) * D..][..D].iter().map(|&a| f16::from_f32(a)));
            img.dense_v.extend(v[(h * l + x) * D..][..D].iter().map(|&a| f16::from_f32(a)));
        }
        img.dense_mass = vec![0.0; dense.len()];
        heads.push(img);
    }
    let mut layer = DeviceLayer::import(gpu, &sp, &heads, &dense_pos)?;
    #[allow(clippy::cast_possible_truncation)]
    let qpos = [l as u32];
    let q_dev = gpu.stream().clone_htod(&q)?;
    let mut out = gpu.stream().clone_htod(&vec![f32::NAN; HQ * D])?;
    let query = BatchQuery { t: 1, positions: &qpos, window: None, record_mass: false };
    Attender::new().attend(
        gpu,
        &mut [&mut layer],
        &q_dev.slice(..),
        &query,
        &mut out.slice_mut(..),
    )?;
    let got = gpu.stream().clone_dtoh(&out)?;
    let (stored, _) =
        nq_core::reference::stored_attention(&sp, &heads, &dense_pos, &q, &qpos, None, None)?;
    let shape = KvShape { layers: 1, q_heads: HQ, kv_heads: HKV, head_dim: D };
    #[allow(clippy::cast_possible_truncation)]
    let key_pos: Vec<u32> = (0..l as u32).collect();
    let exact = nq_core::reference::attention(&q, &qpos, &k, &v, &key_pos, shape);
    let stats = |want: &mut dyn Iterator<Item = f64>| {
        let (mut mx, mut ss, mut n) = (0f64, 0f64, 0f64);
        for (g, w) in got.iter().zip(want) {
            let e = f64::from(*g) - w;
            mx = mx.max(e.abs());
            ss += e * e;
            n += 1.0;
        }
        (mx, (ss / n).sqrt())
    };
    let (smax, srms) = stats(&mut stored.iter().copied());
    let (emax, erms) = stats(&mut exact.iter().map(|&x| f64::from(x)));
    let out_rms =
        (exact.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / exact.len() as f64).sqrt();
    eprintln!(
        "error vs stored {smax:.3e}/{srms:.3e}, vs original {emax:.3e}/{erms:.3e} (output rms {out_rms:.3e})"
    );
    Ok(json!({
        "bench": "cuda_attend_error", "b": 1, "l": l, "storage": "quant", "kv": "gaussian",
        "max_abs_err_vs_stored": smax, "rms_err_vs_stored": srms,
        "max_abs_err_vs_original": emax, "rms_err_vs_original": erms, "output_rms": out_rms,
        "device": device,
    }))
}

/// `B,L,STORAGE` of `--only`.
fn parse_only(v: &str) -> Result<(usize, usize, String)> {
    let parts: Vec<&str> = v.split(',').collect();
    let [b, l, st] = parts[..] else { anyhow::bail!("--only takes B,L,STORAGE, got {v:?}") };
    if !STORAGES.iter().any(|s| s.name == st) {
        anyhow::bail!("--only: unknown storage {st:?} (quant, high, balanced, max)");
    }
    Ok((b.parse().context("--only B")?, l.parse().context("--only L")?, st.to_owned()))
}

#[allow(clippy::too_many_lines)]
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = match args.iter().position(|a| a == "--only").map(|i| args.get(i + 1)) {
        None => None,
        Some(v) => Some(parse_only(v.map(String::as_str).unwrap_or_default())?),
    };
    let sdpa_path = args
        .iter()
        .position(|a| a == "--sdpa")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "nq-cuda/bench/sdpa.py".into());
    let gpu = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIP: no CUDA device: {e}");
            println!("[]");
            return Ok(());
        }
    };
    let device = gpu.device_name()?;
    eprintln!("device: {device}");
    let mut records = Vec::new();

    // --quick: the shapes of issue 10's targets only.
    let shapes: Vec<(usize, usize)> = if let Some((b, l, _)) = &only {
        vec![(*b, *l)]
    } else if quick {
        vec![(32, 32768), (8, 32768), (1, 131_072)]
    } else {
        let ls = [8192, 32768, 131_072];
        ls.iter().flat_map(|&l| [1, 8, 32].map(move |b| (b, l))).collect()
    };
    let sdpa_records = if sdpa_path == "none" { Vec::new() } else { sdpa(&sdpa_path, &shapes)? };
    records.extend(sdpa_records.iter().map(|r| {
        let mut r = r.clone();
        r["bench"] = json!("sdpa_bf16");
        r
    }));

    let gbps = copy_bandwidth(&gpu)?;
    eprintln!("device copy: {gbps:.0} GB/s (read + write)");
    records.push(json!({ "bench": "cuda_copy", "bytes": 1u64 << 30, "gb_per_s": gbps, "counted": "read+write", "device": device }));

    if only.is_none() {
        records.push(error_record(&gpu, &device)?);
    }

    let mut rng = StdRng::seed_from_u64(1);
    let host_bytes: Vec<u8> = (0..POOL_BYTES).map(|_| rng.random()).collect();
    let host_scales: Vec<u16> =
        (0..POOL_SCALES).map(|_| f16::from_f32(rng.random_range(0.05..0.3)).to_bits()).collect();
    let pool = Pool {
        bytes: gpu.stream().clone_htod(&host_bytes)?,
        scales: gpu.stream().clone_htod(&host_scales)?,
    };
    let tunings = [
        AttendTuning { target_ctas: 512, min_chunk: 256, min_blocks: 1, prefetch: true },
        AttendTuning { target_ctas: 0, min_chunk: 256, min_blocks: 2, prefetch: true },
        AttendTuning { target_ctas: 0, min_chunk: 256, min_blocks: 3, prefetch: true },
        AttendTuning { target_ctas: 1024, min_chunk: 256, min_blocks: 1, prefetch: true },
        AttendTuning { target_ctas: 0, min_chunk: 128, min_blocks: 1, prefetch: false },
    ];
    for &(b, l) in &shapes {
        for st in STORAGES.iter().filter(|s| only.as_ref().is_none_or(|o| o.2 == s.name)) {
            let sp = spec(st.kb, st.vb)?;
            let per_seq = HKV * l * (sp.key_row_bytes() + sp.value_row_bytes() + 8);
            let (free, _) = gpu.stream().context().mem_get_info()?;
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let need = (b as f64 * per_seq as f64 * st.keep * 1.2) as usize + (256 << 20);
            if need > free {
                eprintln!("skip {} b={b} l={l}: needs {need} bytes, {free} free", st.name);
                records.push(json!({ "bench": "cuda_attend", "b": b, "l": l, "storage": st.name, "skipped": "does not fit device memory", "device": device }));
                continue;
            }
            let mut layers = (0..b)
                .map(|_| build_layer(&gpu, &sp, &pool, l, st.keep, &mut rng))
                .collect::<Result<Vec<_>>>()?;
            let resident: usize = layers.iter().map(DeviceLayer::resident_bytes).sum();
            let q: Vec<f32> = (0..b * HQ * D).map(|_| gauss(&mut rng)).collect();
            let q_dev = gpu.stream().clone_htod(&q)?;
            let mut out = gpu.stream().alloc_zeros::<f32>(b * HQ * D)?;
            #[allow(clippy::cast_possible_truncation)]
            let qpos = vec![l as u32; b];
            let query = BatchQuery { t: 1, positions: &qpos, window: None, record_mass: false };
            let mut att = Attender::new();
            let mut refs: Vec<&mut DeviceLayer> = layers.iter_mut().collect();
            let us = time_us(&gpu, || {
                Ok(att.attend(&gpu, &mut refs, &q_dev.slice(..), &query, &mut out.slice_mut(..))?)
            })?;
            let cudnn = sdpa_us(&sdpa_records, b, l, "cudnn");
            let flash = sdpa_us(&sdpa_records, b, l, "flash");
            let best = match (cudnn, flash) {
                (Some(a), Some(f)) => Some(a.min(f)),
                (a, f) => a.or(f),
            };
            #[allow(clippy::cast_precision_loss)]
            let gb = resident as f64 / (us * 1e-6) / 1e9;
            let speedup = best.map(|s| s / us);
            eprintln!(
                "{:8} b={b:2} l={l:6}: {us:9.1} us  {gb:7.0} GB/s  sdpa {best:?} us  x{speedup:?}",
                st.name
            );
            records.push(json!({
                "bench": "cuda_attend", "b": b, "l": l, "storage": st.name, "us": us,
                "sdpa_cudnn_us": cudnn, "sdpa_flash_us": flash, "speedup_vs_sdpa": speedup,
                "gb_per_s": gb, "resident_bytes": resident, "codes": "random",
                "tuning": format!("{:?}", att.tuning), "device": device,
            }));
            let tune_here = only.is_none()
                && (st.name == "balanced" || st.name == "quant")
                && (b, l) != (8, 8192);
            if tune_here {
                for tuning in tunings {
                    att.tuning = tuning;
                    let us_t = time_us(&gpu, || {
                        Ok(att.attend(
                            &gpu,
                            &mut refs,
                            &q_dev.slice(..),
                            &query,
                            &mut out.slice_mut(..),
                        )?)
                    })?;
                    eprintln!("    tuning {tuning:?}: {us_t:.1} us");
                    records.push(json!({
                            "bench": "cuda_attend_tuning", "b": b, "l": l, "storage": st.name, "us": us_t,
                            "target_ctas": tuning.target_ctas, "min_chunk": tuning.min_chunk,
                            "min_blocks": tuning.min_blocks, "device": device,
                        }));
                }
            }
        }
    }
    println!("{}", serde_json::to_string(&records)?);
    Ok(())
}
