//! The device encode pipeline (`nq_cuda::encode`) against the CPU: `FixedCodec::encode_rows`
//! on CPU-prepared rows (must be bit-identical) and the whole pipeline (gather, center,
//! smooth, rotate, code) against nq-core's CPU formula, at every rate and scale mode,
//! d = 40, 64, 96, 128, odd row counts, rows of zeros, huge and tiny rows. Outputs are
//! poisoned first, and written at a row offset so rows outside the range must stay poisoned.

use cudarc::driver::{CudaSlice, CudaStream};
use half::f16;
use nq_core::Rotation;
use nq_cuda::CudaError;
use nq_cuda::encode::{CodesOut, DeviceRope, Encoder, HeadRows};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
use nq_rope::{Rope, RopeConfig, RopeLayout, RopeScaling};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gpu;

const POISON_CODE: u8 = 0xab;
/// f16 bits of -1.73: a scale the encoder never writes (scales are >= 0).
const POISON_SCALE: u16 = 0xbeef;
/// Rows written at this offset of the output buffers.
const ROW0: usize = 3;

const MODES: [ScaleMode; 4] = [
    ScaleMode::Rms,
    ScaleMode::BestOf { candidates: 4 },
    ScaleMode::BestOf { candidates: 1 },
    ScaleMode::AbsMax,
];
const RATES: [FixedBits; 3] = [FixedBits::B2, FixedBits::B3, FixedBits::B4];

/// `m` f16 rows of `d` values: Gaussian-like rows at varied scales, every 11th row zero,
/// others huge (x100), tiny (1e-5: f16 subnormals), small (1e-3), some with an offset.
fn head_rows(rng: &mut StdRng, m: usize, d: usize) -> Vec<f16> {
    (0..m * d)
        .map(|i| {
            let r = i / d;
            let g: f32 = (0..3).map(|_| rng.random_range(-1.0f32..1.0)).sum();
            let scale = match r % 11 {
                0 => 0.0,
                1 => 100.0,
                2 => 1e-5,
                3 => 1e-3,
                k => 1.0 + k as f32,
            };
            let offset = if r % 13 == 4 { 0.5 } else { 0.0 };
            f16::from_f32(g * scale + offset)
        })
        .collect()
}

/// The CPU pipeline of nq-core's `compress_range` for the rows `keep` of `rows`:
/// f16 -> f32, minus `mean`, times `smooth`, then the rotation block by block.
fn cpu_prepare(
    rows: &[f16],
    keep: &[u32],
    d: usize,
    mean: Option<&[f32]>,
    smooth: Option<&[f32]>,
    rot: &Rotation,
) -> Vec<f32> {
    let mut x = vec![0.0f32; keep.len() * d];
    for (&i, row) in keep.iter().zip(x.chunks_exact_mut(d)) {
        let src = &rows[i as usize * d..(i as usize + 1) * d];
        for c in 0..d {
            row[c] = src[c].to_f32();
        }
        if let Some(mean) = mean {
            row.iter_mut().zip(mean).for_each(|(x, m)| *x -= m);
        }
        if let Some(smooth) = smooth {
            row.iter_mut().zip(smooth).for_each(|(x, s)| *x *= s);
        }
        let mut at = 0;
        for block in rot.blocks() {
            block.forward(&mut row[at..at + block.dim()]).unwrap();
            at += block.dim();
        }
    }
    x
}

/// RoPE inversion on the device (keys stored RoPE-free) against `nq_rope::Rope::invert` on
/// the CPU, then the rest of the pipeline: the prepared rows (inverted, centered, rotated)
/// and the column sums the mean comes from, in both layouts, with partial rotation and a
/// YaRN factor. The arithmetic is the CPU's operation for operation (the same f32 cosines
/// and sines, no fused multiply-adds), so the prepared rows must be bit-identical.
#[test]
fn rope_inversion_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let s = gpu.stream();
    let mut rng = StdRng::seed_from_u64(41);
    let configs = [
        RopeConfig::new(128, 10_000.0),
        RopeConfig::new(64, 100_000.0).with_layout(RopeLayout::Interleaved),
        RopeConfig::new(96, 1_000_000.0).with_rotary_dim(48),
        RopeConfig::new(64, 500_000.0)
            .with_layout(RopeLayout::Interleaved)
            .with_rotary_dim(32)
            .with_scaling(RopeScaling::yarn(4.0, 4096)),
    ];
    for cfg in configs {
        let d = cfg.head_dim;
        let rope = Rope::new(cfg).unwrap();
        let m = 777;
        let rows = head_rows(&mut rng, m, d);
        let keep: Vec<u32> = (0..m as u32).filter(|_| rng.random_bool(0.5)).collect();
        // Positions far apart, as an evicted cache's are, up to ~10^6.
        let positions: Vec<u32> = keep.iter().map(|&i| i * 1297 + 3).collect();
        let n = keep.len();
        let rot = Rotation::new(d, 5).unwrap();
        let bits_rows: Vec<u16> = rows.iter().map(|h| h.to_bits()).collect();
        let dev_rows = s.clone_htod(&bits_rows).unwrap();
        let dev_keep = s.clone_htod(&keep).unwrap();
        let table = DeviceRope::new(&gpu, &rope, &positions).unwrap();
        let enc = Encoder::new(&gpu, &rot, FixedCodec::new(FixedBits::B3, ScaleMode::Rms).unwrap())
            .unwrap();

        // CPU: widen, invert, (center), rotate.
        let mut raw: Vec<f32> = keep
            .iter()
            .flat_map(|&i| rows[i as usize * d..(i as usize + 1) * d].iter().map(|h| h.to_f32()))
            .collect();
        rope.invert(&mut raw, &positions).unwrap();
        let (cpu_sum, _) = nq_core::prep::column_sums(&raw, d);
        let head = HeadRows {
            rows: dev_rows.slice(..),
            keep: dev_keep.slice(..),
            mean: None,
            smooth: None,
            rope: Some(&table),
        };
        let sums = enc.column_sums(&head).unwrap();
        for (c, (g, w)) in sums.sum.iter().zip(&cpu_sum).enumerate() {
            // n f32 terms summed in f64 in two orders.
            let bound =
                2.0 * n as f64 * f64::EPSILON * raw.iter().map(|x| f64::from(x.abs())).sum::<f64>();
            assert!((g - w).abs() <= bound, "{cfg:?} column {c}: sum {g} vs {w}");
        }
        let mean = nq_core::prep::column_mean_from_sums(&cpu_sum, n);
        let dev_mean = s.clone_htod(&mean).unwrap();
        let head = HeadRows { mean: Some(dev_mean.slice(..)), ..head };
        let mut want = raw.clone();
        for row in want.chunks_exact_mut(d) {
            row.iter_mut().zip(&mean).for_each(|(x, m)| *x -= m);
            let mut at = 0;
            for block in rot.blocks() {
                block.forward(&mut row[at..at + block.dim()]).unwrap();
                at += block.dim();
            }
        }
        let mut dev_prep = s.clone_htod(&vec![f32::NAN; n * d]).unwrap();
        enc.prepare(&head, &mut dev_prep.slice_mut(..)).unwrap();
        enc.finish().unwrap();
        let got = s.clone_dtoh(&dev_prep).unwrap();
        let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{cfg:?}: {differ} of {} prepared values differ", n * d);
    }
}

/// Output buffers for `n` rows at [`ROW0`] plus two more rows, poisoned.
struct Out {
    codes: CudaSlice<u8>,
    scales: CudaSlice<u16>,
    row_bytes: usize,
    n: usize,
}

impl Out {
    fn new(stream: &std::sync::Arc<CudaStream>, codec: &FixedCodec, n: usize, d: usize) -> Out {
        let rows = ROW0 + n + 2;
        let row_bytes = codec.code_len(1, d);
        Out {
            codes: stream.clone_htod(&vec![POISON_CODE; rows * row_bytes]).unwrap(),
            scales: stream.clone_htod(&vec![POISON_SCALE; rows]).unwrap(),
            row_bytes,
            n,
        }
    }

    fn sink(
        &mut self,
    ) -> (cudarc::driver::CudaViewMut<'_, u8>, cudarc::driver::CudaViewMut<'_, u16>) {
        (self.codes.slice_mut(..), self.scales.slice_mut(..))
    }

    /// The rows written, after checking the rows around them kept their poison.
    fn written(&self, stream: &std::sync::Arc<CudaStream>) -> (Vec<u8>, Vec<f16>) {
        let codes = stream.clone_dtoh(&self.codes).unwrap();
        let scales = stream.clone_dtoh(&self.scales).unwrap();
        let (lo, hi) = (ROW0, ROW0 + self.n);
        assert!(
            codes[..lo * self.row_bytes].iter().all(|&b| b == POISON_CODE),
            "codes before row0"
        );
        assert!(
            codes[hi * self.row_bytes..].iter().all(|&b| b == POISON_CODE),
            "codes after the rows"
        );
        assert!(
            scales[..lo].iter().chain(&scales[hi..]).all(|&s| s == POISON_SCALE),
            "scales outside"
        );
        let written = scales[lo..hi].iter().map(|&s| f16::from_bits(s)).collect();
        (codes[lo * self.row_bytes..hi * self.row_bytes].to_vec(), written)
    }
}

/// Rows whose code bytes or scale differ.
fn differing_rows(
    row_bytes: usize,
    got: &(Vec<u8>, Vec<f16>),
    want: &(Vec<u8>, Vec<f16>),
) -> Vec<usize> {
    (0..want.1.len())
        .filter(|&r| {
            let span = r * row_bytes..(r + 1) * row_bytes;
            got.0[span.clone()] != want.0[span] || got.1[r].to_bits() != want.1[r].to_bits()
        })
        .collect()
}

/// Codes `x.len() / dim` rows by `launch` into poisoned buffers at [`ROW0`], then codes the
/// CPU-prepared rows `x` with the CPU codec: the rows that differ, the device's codes and
/// scales, the CPU's.
#[allow(clippy::type_complexity)]
fn code_and_compare(
    gpu: &nq_cuda::CudaBackend,
    rot: &Rotation,
    codec: FixedCodec,
    x: &[f32],
    launch: impl FnOnce(&Encoder, CodesOut<'_, '_>),
) -> (Vec<usize>, (Vec<u8>, Vec<f16>), (Vec<u8>, Vec<f16>)) {
    let s = gpu.stream();
    let d = rot.dim();
    let n = x.len() / d;
    let enc = Encoder::new(gpu, rot, codec).unwrap();
    let mut out = Out::new(s, &codec, n, d);
    {
        let (mut codes, mut scales) = out.sink();
        launch(&enc, CodesOut { codes: &mut codes, scales: &mut scales, row0: ROW0 });
    }
    enc.finish().unwrap();
    let got = out.written(s);
    let want = cpu_codes(&codec, x, d);
    let bad = differing_rows(out.row_bytes, &got, &want);
    (bad, got, want)
}

fn cpu_codes(codec: &FixedCodec, x: &[f32], d: usize) -> (Vec<u8>, Vec<f16>) {
    let n = x.len() / d;
    let mut codes = vec![0u8; codec.code_len(n, d)];
    let mut scales = vec![f16::ZERO; n];
    codec.encode_rows(x, d, &mut codes, &mut scales).unwrap();
    (codes, scales)
}

/// Rows of f32 already prepared on the CPU: the device encoder must equal
/// `FixedCodec::encode_rows` bit for bit (no rotation difference is possible).
#[test]
fn encode_rows_equals_cpu_codec_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let s = gpu.stream();
    let mut rng = StdRng::seed_from_u64(17);
    for d in [40usize, 64, 96, 128, 256] {
        let n = 201 + d % 7; // odd counts: partial CUDA blocks
        let rows = head_rows(&mut rng, n + 5, d);
        let keep: Vec<u32> = (0..n as u32).map(|k| (k * 5 + 2) % (n as u32 + 5)).collect();
        let rot = Rotation::new(d, 3 + d as u64).unwrap();
        let x = cpu_prepare(&rows, &keep, d, None, None, &rot);
        let dev_x = s.clone_htod(&x).unwrap();
        for bits in RATES {
            for mode in MODES {
                let codec = FixedCodec::new(bits, mode).unwrap();
                let (bad, _, _) = code_and_compare(&gpu, &rot, codec, &x, |enc, sink| {
                    enc.encode_rows(&dev_x.slice(..), sink).unwrap();
                });
                assert!(bad.is_empty(), "d {d} {bits:?} {mode:?}: rows {bad:?} differ");
            }
        }
    }
}

/// The whole pipeline from f16 rows and a keep list, with the mean and smoothing factor
/// derived from the device's column sums, against the CPU formula. Codes are expected to be
/// identical (same operations, same butterfly order); any differing row is counted and
/// reported, their count must stay below 1e-3 of the rows, and each must code its row no
/// worse than the CPU's code, up to rounding.
#[test]
fn encode_head_matches_cpu_pipeline() {
    let Some(gpu) = gpu() else { return };
    let s = gpu.stream();
    let mut rng = StdRng::seed_from_u64(29);
    let (mut total_rows, mut total_differing) = (0usize, 0usize);
    for (case, d) in [64usize, 96, 128, 64, 96, 128].into_iter().enumerate() {
        let m = 1001 + 2 * case; // odd
        let rows = head_rows(&mut rng, m, d);
        let mut keep: Vec<u32> = (0..m as u32).filter(|_| rng.random_bool(0.6)).collect();
        if case % 2 == 1 {
            keep.reverse(); // any order
        }
        let n = keep.len();
        let rot = Rotation::new(d, 100 + case as u64).unwrap();
        let bits_rows: Vec<u16> = rows.iter().map(|h| h.to_bits()).collect();
        let dev_rows = s.clone_htod(&bits_rows).unwrap();
        let dev_keep = s.clone_htod(&keep).unwrap();

        // Column sums on the device against nq_core::prep on the CPU.
        let enc0 =
            Encoder::new(&gpu, &rot, FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap())
                .unwrap();
        let plain = HeadRows {
            rows: dev_rows.slice(..),
            keep: dev_keep.slice(..),
            mean: None,
            smooth: None,
            rope: None,
        };
        let sums = enc0.column_sums(&plain).unwrap();
        let raw: Vec<f32> = keep
            .iter()
            .flat_map(|&i| rows[i as usize * d..(i as usize + 1) * d].iter().map(|h| h.to_f32()))
            .collect();
        let (cpu_sum, _) = nq_core::prep::column_sums(&raw, d);
        // f16 values summed in f64 are exact here (n * max|x| < 2^29): any order agrees.
        assert_eq!(sums.sum, cpu_sum, "d {d}: column sums");
        let mean = nq_core::prep::column_mean_from_sums(&sums.sum, n);
        let dev_mean = s.clone_htod(&mean).unwrap();
        let centered_head = HeadRows {
            rows: dev_rows.slice(..),
            keep: dev_keep.slice(..),
            mean: Some(dev_mean.slice(..)),
            smooth: None,
            rope: None,
        };
        let centered_sums = enc0.column_sums(&centered_head).unwrap();
        let centered: Vec<f32> =
            raw.chunks_exact(d).flat_map(|r| r.iter().zip(&mean).map(|(x, m)| x - m)).collect();
        let (_, cpu_squares) = nq_core::prep::column_sums(&centered, d);
        for (c, (g, w)) in centered_sums.squares.iter().zip(&cpu_squares).enumerate() {
            // Sums of n non-negative f64 terms in two orders: |diff| <= 2 n eps64 sum.
            let tol = 2.0 * n as f64 * f64::EPSILON * w;
            assert!((g - w).abs() <= tol, "d {d} column {c}: squares {g} vs {w}");
        }
        let queries: Vec<f64> = (0..d).map(|c| 1.0 + (c % 7) as f64 * 3.0).collect();
        let smooth = nq_core::prep::key_smoothing_from_sums(&queries, &centered_sums.squares);
        let dev_smooth = s.clone_htod(&smooth).unwrap();
        let head = HeadRows {
            rows: dev_rows.slice(..),
            keep: dev_keep.slice(..),
            mean: Some(dev_mean.slice(..)),
            smooth: Some(dev_smooth.slice(..)),
            rope: None,
        };
        let x = cpu_prepare(&rows, &keep, d, Some(&mean), Some(&smooth), &rot);

        // prepare: the rotated rows, expected bit-identical (same butterfly order).
        let mut dev_prep = s.clone_htod(&vec![f32::NAN; n * d]).unwrap();
        enc0.prepare(&head, &mut dev_prep.slice_mut(..)).unwrap();
        enc0.finish().unwrap();
        let prep = s.clone_dtoh(&dev_prep).unwrap();
        let prep_differ = prep.iter().zip(&x).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        for (r, (g, w)) in prep.chunks_exact(d).zip(x.chunks_exact(d)).enumerate() {
            let norm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
            // 8 eps log2(d) |row|: the rotation's rounding bound, as the rotate tests use.
            let tol = 8.0 * f32::EPSILON * (d as f32).log2() * norm;
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= tol, "d {d} row {r}: prepared {a} vs {b}");
            }
        }
        eprintln!("d {d}: {prep_differ} of {} prepared values differ in their bits", n * d);

        for bits in RATES {
            for mode in MODES {
                let codec = FixedCodec::new(bits, mode).unwrap();
                let (bad, got, want) = code_and_compare(&gpu, &rot, codec, &x, |enc, sink| {
                    enc.encode_head(&head, sink).unwrap();
                });
                total_rows += n;
                total_differing += bad.len();
                if !bad.is_empty() {
                    eprintln!("d {d} {bits:?} {mode:?}: {} of {n} rows differ: {bad:?}", bad.len());
                }
                assert!(
                    bad.len() * 1000 <= n,
                    "d {d} {bits:?} {mode:?}: {} rows differ",
                    bad.len()
                );
                check_no_worse(&codec, d, &x, &got, &want, &bad);
            }
        }
    }
    eprintln!("encode_head: {total_differing} of {total_rows} rows differ from the CPU");
}

/// Each differing row's device code reconstructs its row no worse than the CPU code, up to
/// the rounding that can flip a decision: the rotation's (8 eps log2 d |x|, relative) and
/// the cost comparisons' (a few eps of |x|^2), bounded together by 64 eps log2(d) |x|^2.
fn check_no_worse(
    codec: &FixedCodec,
    d: usize,
    x: &[f32],
    got: &(Vec<u8>, Vec<f16>),
    want: &(Vec<u8>, Vec<f16>),
    rows: &[usize],
) {
    let rb = codec.code_len(1, d);
    for &r in rows {
        let row = &x[r * d..(r + 1) * d];
        let err = |codes: &[u8], scale: f16| {
            let mut y = vec![0.0f32; d];
            codec.decode_rows(&codes[r * rb..(r + 1) * rb], &[scale], d, &mut y).unwrap();
            row.iter().zip(&y).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>()
        };
        let (e_gpu, e_cpu) = (err(&got.0, got.1[r]), err(&want.0, want.1[r]));
        let norm2: f64 = row.iter().map(|v| f64::from(*v).powi(2)).sum();
        let tol = 64.0 * f64::from(f32::EPSILON) * (d as f64).log2() * norm2;
        assert!(e_gpu <= e_cpu + tol, "row {r}: device error {e_gpu} vs CPU {e_cpu} (tol {tol})");
    }
}

/// Errors found on the device come back from `finish` as the CPU codec reports them, and
/// are cleared; errors of shape come back before anything is queued.
#[test]
fn encode_errors() {
    let Some(gpu) = gpu() else { return };
    let s = gpu.stream();
    let d = 64;
    let rot = Rotation::new(d, 1).unwrap();
    let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap();
    let enc = Encoder::new(&gpu, &rot, codec).unwrap();
    let mut codes = s.alloc_zeros::<u8>(codec.code_len(4, d)).unwrap();
    let mut scales = s.alloc_zeros::<u16>(4).unwrap();

    // A NaN in prepared rows: NonFinite at its index.
    let mut x = vec![0.5f32; 4 * d];
    x[2 * d + 5] = f32::NAN;
    let dev_x = s.clone_htod(&x).unwrap();
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
    enc.encode_rows(&dev_x.slice(..), sink).unwrap();
    match enc.finish() {
        Err(CudaError::Lattice(nq_lattice::Error::NonFinite { index, .. })) => {
            assert_eq!(index, 2 * d + 5);
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    enc.finish().unwrap(); // cleared

    // f16 rows times a huge smoothing factor: the scale overflows f16.
    let rows = s.clone_htod(&vec![f16::from_f32(60000.0).to_bits(); 4 * d]).unwrap();
    let keep = s.clone_htod(&[0u32, 1, 2, 3]).unwrap();
    let big = s.clone_htod(&vec![1000.0f32; d]).unwrap();
    let head = HeadRows {
        rows: rows.slice(..),
        keep: keep.slice(..),
        mean: None,
        smooth: Some(big.slice(..)),
        rope: None,
    };
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
    enc.encode_head(&head, sink).unwrap();
    assert!(matches!(
        enc.finish(),
        Err(CudaError::Lattice(nq_lattice::Error::ScaleOverflow { row: 0, .. }))
    ));

    // A kept index past the head's rows.
    let bad_keep = s.clone_htod(&[0u32, 9]).unwrap();
    let head = HeadRows {
        rows: rows.slice(..),
        keep: bad_keep.slice(..),
        mean: None,
        smooth: None,
        rope: None,
    };
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
    enc.encode_head(&head, sink).unwrap();
    let index_error = |r: nq_cuda::Result<_>| {
        matches!(r, Err(CudaError::OutOfRange { what: "kept row index", got: 9, limit: 4, .. }))
    };
    assert!(index_error(enc.finish()));
    assert!(index_error(enc.column_sums(&head).map(|_| ())));
    enc.finish().unwrap();

    // Refused before launch: a RoPE table of another length, short outputs, mean of the
    // wrong length, dims.
    let rope = Rope::new(RopeConfig::new(d, 10_000.0)).unwrap();
    let table = DeviceRope::new(&gpu, &rope, &[5, 6, 7]).unwrap();
    let head = HeadRows {
        rows: rows.slice(..),
        keep: keep.slice(..),
        mean: None,
        smooth: None,
        rope: Some(&table),
    };
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
    assert!(matches!(
        enc.encode_head(&head, sink),
        Err(CudaError::Len { what: "RoPE positions", got: 3, expected: 4, .. })
    ));
    let head = HeadRows {
        rows: rows.slice(..),
        keep: keep.slice(..),
        mean: Some(big.slice(..d - 8)),
        smooth: None,
        rope: None,
    };
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
    assert!(matches!(enc.encode_head(&head, sink), Err(CudaError::Len { what: "mean", .. })));
    let head = HeadRows {
        rows: rows.slice(..),
        keep: keep.slice(..),
        mean: None,
        smooth: None,
        rope: None,
    };
    let sink =
        CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 1 };
    assert!(matches!(enc.encode_head(&head, sink), Err(CudaError::Len { what: "codes", .. })));
    let wide = Rotation::new(512, 1).unwrap();
    assert!(matches!(Encoder::new(&gpu, &wide, codec), Err(CudaError::Unsupported { .. })));
}
