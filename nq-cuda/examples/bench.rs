//! Throughput of the GPU backend against `CpuBackend` (one CPU thread): rotate, decode,
//! encode, and the device encode pipeline against the device copy bandwidth. Prints one
//! JSON array of flat records to stdout; progress goes to stderr.
//!
//! `cargo run --release -p nq-cuda --example bench [encode]` (needs a CUDA device and NVRTC
//! on the library path; prints `[]` and a SKIP line without one). With `encode`, only the
//! copy and encode-pipeline records are measured.
//!
//! Encode pipeline records: `cuda_copy_dtod` (`gb_per_s` = bytes read + written per
//! second by a device-to-device copy of 256 MiB) and `cuda_encode_pipeline_f16` (8 kv heads
//! x 32768 tokens x d = 128 of f16, every token kept: gather + center + smooth + rotate +
//! scale + E8 codes by `Encoder::encode_head`, 10 x 8 heads queued per `finish`;
//! `gb_per_s` = f16 input bytes per second), with `bits`, `scale_mode`, `copy_gb_per_s`,
//! `fraction_of_copy` (issue 10's target: >= 0.5) and `device`.
//!
//! Records: `bench` = `{backend}_{op}_f32` (`cuda_rotate_f32`, `cpu_rotate_f32`,
//! `cuda_decode_kernel_f32` = device-resident codes to device rows, `cuda_decode_f32` =
//! `Backend::decode` including the host-to-device copy of the codes, `cpu_decode_f32`,
//! `cuda_encode_hostfallback_f32`, `cpu_encode_f32`), with `d`, `t` (rows), `bits`,
//! `seconds` per call and `melem_per_s` (f32 values per second).

use std::time::{Duration, Instant};

use anyhow::Result;
use cudarc::driver::CudaSlice;
use nq_core::{CpuBackend, Rotation, RowOps, Rows};
use nq_cuda::CudaBackend;
use nq_cuda::encode::{CodesOut, Encoder, HeadRows};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
use serde_json::{Value, json};

/// Mean seconds per call over at least `min` of wall time (and at least 3 calls), after
/// one warm-up call. `f` must finish its work before returning (GPU: synchronize).
fn time(min: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let start = Instant::now();
    let mut n = 0u32;
    while n < 3 || start.elapsed() < min {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(n))
}

fn record(bench: &str, d: usize, t: usize, bits: Option<u32>, secs: f64) -> Value {
    #[allow(clippy::cast_precision_loss)]
    let melem = (d * t) as f64 / secs / 1e6;
    eprintln!("{bench:32} d={d} t={t} bits={bits:?}: {:.3} ms, {melem:.1} Melem/s", secs * 1e3);
    let mut r = json!({ "bench": bench, "d": d, "t": t, "seconds": secs, "melem_per_s": melem });
    if let Some(b) = bits {
        r["bits"] = json!(b);
    }
    r
}

fn main() -> Result<()> {
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
    let mut out = encode_pipeline(&gpu, &device)?;
    if std::env::args().nth(1).as_deref() == Some("encode") {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let gpu_min = Duration::from_millis(300);
    let cpu_min = Duration::from_millis(500);
    for (d, t) in [(128usize, 32768usize), (128, 262_144), (64, 262_144)] {
        let rows = Rows::new(t, d)?;
        let host = nq_core::testing::test_rows(t, d, 1);
        let rot = Rotation::new(d, 42)?;
        let mut dev = gpu.upload(&host)?;
        let s = time(gpu_min, || {
            gpu.rotate(&mut dev, rows, &rot, false)?;
            gpu.stream().synchronize()?;
            Ok(())
        })?;
        out.push(record("cuda_rotate_f32", d, t, None, s));
        let mut cpu_buf = host.clone();
        let s = time(cpu_min, || Ok(CpuBackend.rotate(&mut cpu_buf, rows, &rot, false)?))?;
        out.push(record("cpu_rotate_f32", d, t, None, s));

        for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
            let b = Some(bits.bits_per_dim());
            let codec = FixedCodec::new(bits, ScaleMode::default())?;
            let enc = CpuBackend.encode(&host, rows, &codec)?;
            let resident = gpu.upload_codes(&enc, rows, &codec)?;
            let s = time(gpu_min, || {
                let y = gpu.decode_device(&resident)?;
                gpu.stream().synchronize()?;
                drop(y);
                Ok(())
            })?;
            out.push(record("cuda_decode_kernel_f32", d, t, b, s));
            let s = time(gpu_min, || {
                let y = gpu.decode(&enc, rows, &codec)?;
                gpu.stream().synchronize()?;
                drop(y);
                Ok(())
            })?;
            out.push(record("cuda_decode_f32", d, t, b, s));
            let s = time(cpu_min, || {
                std::hint::black_box(CpuBackend.decode(&enc, rows, &codec)?);
                Ok(())
            })?;
            out.push(record("cpu_decode_f32", d, t, b, s));
            if t == 32768 {
                let s = time(cpu_min, || {
                    std::hint::black_box(gpu.encode(&dev, rows, &codec)?);
                    Ok(())
                })?;
                out.push(record("cuda_encode_hostfallback_f32", d, t, b, s));
                let s = time(cpu_min, || {
                    std::hint::black_box(CpuBackend.encode(&host, rows, &codec)?);
                    Ok(())
                })?;
                out.push(record("cpu_encode_f32", d, t, b, s));
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Device copy bandwidth and the encode pipeline's throughput on 8 heads x 32K tokens x 128.
fn encode_pipeline(gpu: &CudaBackend, device: &str) -> Result<Vec<Value>> {
    const HEADS: usize = 8;
    const T: usize = 32768;
    const D: usize = 128;
    const REPS: usize = 10;
    let s = gpu.stream();
    let min = Duration::from_millis(300);

    let copy_bytes = 256usize << 20;
    let src = s.alloc_zeros::<u8>(copy_bytes)?;
    let mut dst = s.alloc_zeros::<u8>(copy_bytes)?;
    let secs = time(min, || {
        s.memcpy_dtod(&src, &mut dst)?;
        s.synchronize()?;
        Ok(())
    })?;
    #[allow(clippy::cast_precision_loss)]
    let copy_gb_per_s = 2.0 * copy_bytes as f64 / secs / 1e9;
    eprintln!("cuda_copy_dtod: {copy_gb_per_s:.0} GB/s (read + write)");
    let mut out = vec![json!({
        "bench": "cuda_copy_dtod", "bytes": copy_bytes, "seconds": secs,
        "gb_per_s": copy_gb_per_s, "device": device,
    })];
    drop((src, dst));

    let host: Vec<u16> = nq_core::testing::test_rows(HEADS * T, D, 7)
        .iter()
        .map(|v| half::f16::from_f32(*v).to_bits())
        .collect();
    let rows = s.clone_htod(&host)?;
    let keep: Vec<u32> = (0..T as u32).collect();
    let keep = s.clone_htod(&keep)?;
    let means = s.clone_htod(&vec![0.01f32; HEADS * D])?;
    let smooths = s.clone_htod(&vec![1.01f32; HEADS * D])?;
    let rot = Rotation::new(D, 42)?;
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for (mode, mode_name) in
            [(ScaleMode::Rms, "rms"), (ScaleMode::BestOf { candidates: 4 }, "best_of_4")]
        {
            let codec = FixedCodec::new(bits, mode)?;
            let enc = Encoder::new(gpu, &rot, codec)?;
            let mut codes: CudaSlice<u8> = s.alloc_zeros(codec.code_len(HEADS * T, D))?;
            let mut scales: CudaSlice<u16> = s.alloc_zeros(HEADS * T)?;
            let secs = time(min, || {
                for _ in 0..REPS {
                    for h in 0..HEADS {
                        let head = HeadRows {
                            rows: rows.slice(h * T * D..(h + 1) * T * D),
                            keep: keep.slice(..),
                            mean: Some(means.slice(h * D..(h + 1) * D)),
                            smooth: Some(smooths.slice(h * D..(h + 1) * D)),
                            remove_rope: false,
                        };
                        let sink = CodesOut {
                            codes: &mut codes.slice_mut(..),
                            scales: &mut scales.slice_mut(..),
                            row0: h * T,
                        };
                        enc.encode_head(&head, sink)?;
                    }
                }
                enc.finish()?;
                Ok(())
            })? / REPS as f64;
            #[allow(clippy::cast_precision_loss)]
            let gb_per_s = (HEADS * T * D * 2) as f64 / secs / 1e9;
            let fraction = gb_per_s / copy_gb_per_s;
            eprintln!(
                "cuda_encode_pipeline_f16 {bits:?} {mode_name}: {:.1} us per 8 heads, {gb_per_s:.0} GB/s, {:.3} of copy",
                secs * 1e6,
                fraction
            );
            out.push(json!({
                "bench": "cuda_encode_pipeline_f16", "bits": bits.bits_per_dim(),
                "scale_mode": mode_name, "heads": HEADS, "t": T, "d": D, "seconds": secs,
                "gb_per_s": gb_per_s, "copy_gb_per_s": copy_gb_per_s,
                "fraction_of_copy": fraction, "device": device,
            }));
        }
    }
    Ok(out)
}
