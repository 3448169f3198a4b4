//! The device encode pipeline against the device copy bandwidth. Prints one JSON array of
//! flat records to stdout; progress goes to stderr.
//!
//! `cargo run --release -p nq-cuda --example bench` (needs a CUDA device and NVRTC on the
//! library path; prints `[]` and a SKIP line without one).
//!
//! Records: `cuda_copy_dtod` (`gb_per_s` = bytes read + written per
//! second by a device-to-device copy of 256 MiB) and `cuda_encode_pipeline_f16` (8 kv heads
//! x 32768 tokens x d = 128 of f16, every token kept: gather + center + smooth + rotate +
//! scale + E8 codes by `Encoder::encode_head`, 10 x 8 heads queued per `finish`;
//! `gb_per_s` = f16 input bytes per second), with `bits`, `scale_mode`, `copy_gb_per_s`,
//! `fraction_of_copy` (issue 10's target: >= 0.5) and `device`.

use std::time::{Duration, Instant};

use anyhow::Result;
use cudarc::driver::CudaSlice;
use nq_core::Rotation;
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
    let out = encode_pipeline(&gpu, &device)?;
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
                            rope: None,
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
