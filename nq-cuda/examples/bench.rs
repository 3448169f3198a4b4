//! Throughput of the GPU backend against `CpuBackend` (one CPU thread): rotate, decode,
//! encode. Prints one JSON array of flat records to stdout; progress goes to stderr.
//!
//! `cargo run --release -p nq-cuda --example bench` (needs a CUDA device and NVRTC on the
//! library path; prints `[]` and a SKIP line without one).
//!
//! Records: `bench` = `{backend}_{op}_f32` (`cuda_rotate_f32`, `cpu_rotate_f32`,
//! `cuda_decode_kernel_f32` = device-resident codes to device rows, `cuda_decode_f32` =
//! `Backend::decode` including the host-to-device copy of the codes, `cpu_decode_f32`,
//! `cuda_encode_hostfallback_f32`, `cpu_encode_f32`), with `d`, `t` (rows), `bits`,
//! `seconds` per call and `melem_per_s` (f32 values per second).

use std::time::{Duration, Instant};

use anyhow::Result;
use nq_core::{Backend, CpuBackend, Rotation, Rows};
use nq_cuda::CudaBackend;
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
    eprintln!("device: {}", gpu.device_name()?);
    let gpu_min = Duration::from_millis(300);
    let cpu_min = Duration::from_millis(500);
    let mut out = Vec::new();
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
