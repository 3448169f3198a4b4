//! Fused decode attention (`Attender::attend`) against an f64 reference written from the
//! semantics (codes decoded by `nq_lattice::FixedCodec`, rotations as explicit orthonormal
//! Hadamard matrices), on random shapes; and the device store against its host images.
//!
//! Tolerance, per output row, in the 2-norm (derived from the kernel's arithmetic; see
//! kernels/attend.cu):
//! - score `s_n`: the rotated query is rounded to f16 after a power-of-two scaling
//!   (relative error 2^-11 per element, plus 2^-24 max|q| for f16 subnormals), the codes
//!   decode exactly, products accumulate in f32 after an f32 Hadamard transform:
//!   `|ds_n| <= (2^-11 + (2d + 2 log2 d + 8) 2^-24) T_n + 2^-22 |s_n|` with `T_n` the sum of
//!   the magnitudes of the score's terms (the last term: base-2 conversion and `ex2.approx`);
//!   dense scores are f32 dot products: `(d + 4) 2^-24 T_m`. `Delta` = the largest bound.
//! - each softmax weight then moves by a relative `e^(2 Delta) - 1`; compressed weights
//!   times the value scale are rounded to f16 (2^-11); partial merges rescale with `ex2`
//!   (3 levels, 2^-22 each); f32 sums of `N` rows add `(2N + 2 log2 d + 8) 2^-24` (the
//!   tensor cores' f32 accumulation truncates: 2^-23 per addition).
//! - so `|o - o_ref|_2 <= sum_n p_n |v_n|_2 (e^(2 Delta) - 1 + 2^-11 + 3 2^-22 +
//!   (2N + 2 log2 d + 8) 2^-24)`, with `|v_n|_2` the norm of the token's value row (plus the
//!   value mean's norm for compressed tokens). The test allows twice that (second-order
//!   terms).
//! - dense mass: each recorded weight is within `p_m (e^(2 Delta) - 1 + 4 2^-22)` of the
//!   reference; f32 atomic sums add `2^-24` of the running sum per addition; twice that.

use cudarc::driver::CudaSlice;
use half::f16;
use nq_core::{HeadImage, LayerSpec, Positions, Rotation, Storage};
use nq_cuda::CudaBackend;
use nq_cuda::CudaError;
use nq_cuda::attend::{AttendTuning, Attender, BatchQuery};
use nq_cuda::store::{DeviceLayer, DeviceRows, HostRows};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::gpu;

const EPS24: f64 = 1.0 / 16_777_216.0;
const EPS11: f64 = 1.0 / 2048.0;
const EPS22: f64 = 1.0 / 4_194_304.0;

fn fixed(bits: u8) -> FixedBits {
    match bits {
        2 => FixedBits::B2,
        3 => FixedBits::B3,
        _ => FixedBits::B4,
    }
}

fn spec(hkv: usize, group: usize, d: usize, kb: u8, vb: u8, seed: u64) -> LayerSpec {
    LayerSpec {
        kv_heads: hkv,
        q_heads: hkv * group,
        head_dim: d,
        keys: Storage::E8 { bits: kb },
        values: Storage::E8 { bits: vb },
        scale_candidates: 1,
        key_rot: Rotation::new(d, seed).unwrap(),
        value_rot: Rotation::new(d, seed ^ 0xabc).unwrap(),
    }
}

fn gauss(rng: &mut StdRng) -> f32 {
    // Box-Muller.
    let u: f64 = rng.random_range(1e-12..1.0);
    let v: f64 = rng.random_range(0.0..1.0);
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// What one random sequence holds: the head images and the dense positions.
struct Content {
    heads: Vec<HeadImage>,
    dense_pos: Vec<u32>,
}

/// A sequence: `sinks` dense tokens at 0.., then compressed tokens (a random ascending
/// subset of the next `span` positions per head, `n[h]` of them), then `recent` dense.
fn random_content(
    rng: &mut StdRng,
    spec: &LayerSpec,
    n: &[usize],
    sinks: usize,
    span: usize,
    recent: usize,
    vectors: bool,
) -> Content {
    let d = spec.head_dim;
    let (kb, vb) = (spec.key_row_bytes(), spec.value_row_bytes());
    let mut dense_pos: Vec<u32> = (0..sinks as u32).collect();
    dense_pos.extend((0..recent as u32).map(|i| (sinks + span) as u32 + i));
    let m = dense_pos.len();
    let heads = n
        .iter()
        .map(|&nh| {
            let mut pos: Vec<u32> = Vec::with_capacity(nh);
            let mut avail = (sinks..sinks + span).map(|p| p as u32).collect::<Vec<_>>();
            for i in 0..nh {
                let j = rng.random_range(i..avail.len());
                avail.swap(i, j);
            }
            pos.extend_from_slice(&avail[..nh]);
            pos.sort_unstable();
            let scales = |rng: &mut StdRng, lo: f32, hi: f32| -> Vec<f16> {
                (0..nh).map(|_| f16::from_f32(rng.random_range(lo..hi))).collect()
            };
            let f16s = |rng: &mut StdRng, k: usize, s: f32| -> Vec<f16> {
                (0..k).map(|_| f16::from_f32(gauss(rng) * s)).collect()
            };
            let vec = |rng: &mut StdRng, lo: f32, hi: f32| -> Vec<f32> {
                if vectors {
                    (0..d).map(|_| rng.random_range(lo..hi)).collect()
                } else {
                    Vec::new()
                }
            };
            HeadImage {
                k_codes: (0..nh * kb).map(|_| rng.random()).collect(),
                k_scales: scales(rng, 0.0, 0.35),
                v_codes: (0..nh * vb).map(|_| rng.random()).collect(),
                v_scales: scales(rng, 0.0, 1.0),
                pos: Positions::from_ascending(&pos).unwrap(),
                dense_k: f16s(rng, m * d, 1.5),
                dense_v: f16s(rng, m * d, 1.0),
                dense_mass: (0..m).map(|_| rng.random_range(0.0..2.0)).collect(),
                k_mean: vec(rng, -0.5, 0.5),
                v_mean: vec(rng, -0.5, 0.5),
                k_smooth: vec(rng, 0.5, 2.0),
            }
        })
        .collect();
    Content { heads, dense_pos }
}

/// `y = H D x` (forward) or `D H x` (inverse) of one block, in f64.
fn rotate64(rot: &Rotation, x: &[f64], inverse: bool) -> Vec<f64> {
    let block = &rot.blocks()[0];
    let n = block.dim();
    let h = nq_hadamard::reference::hadamard_matrix(n).unwrap();
    let s: Vec<f64> = block.signs().iter().map(|&v| f64::from(v)).collect();
    let pre: Vec<f64> =
        if inverse { x.to_vec() } else { x.iter().zip(&s).map(|(a, b)| a * b).collect() };
    let y: Vec<f64> = (0..n).map(|i| (0..n).map(|j| h[i * n + j] * pre[j]).sum()).collect();
    if inverse { y.iter().zip(&s).map(|(a, b)| a * b).collect() } else { y }
}

/// Reference output rows `[B, hq, t, d]`, their error bounds (2-norm per row), the dense
/// mass after the call and its bounds.
struct Reference {
    out: Vec<f64>,
    bound: Vec<f64>,
    mass: Vec<Vec<Vec<f64>>>,
    mass_bound: Vec<Vec<Vec<f64>>>,
}

#[allow(clippy::too_many_lines)]
fn reference(
    spec: &LayerSpec,
    seqs: &[Content],
    q: &[f32],
    q_pos: &[u32],
    t: usize,
    window: Option<u32>,
) -> Reference {
    let (d, hkv, group) = (spec.head_dim, spec.kv_heads, spec.group());
    let hq = hkv * group;
    let scale = 1.0 / (d as f64).sqrt();
    let log_d = (d as f64).log2();
    let kcodec = FixedCodec::new(fixed(spec.keys.bits()), ScaleMode::Rms).unwrap();
    let vcodec = FixedCodec::new(fixed(spec.values.bits()), ScaleMode::Rms).unwrap();
    let mut out = vec![0f64; seqs.len() * hq * t * d];
    let mut bound = vec![0f64; seqs.len() * hq * t];
    let mut mass = Vec::new();
    let mut mass_bound = Vec::new();
    for (b, seq) in seqs.iter().enumerate() {
        let mut seq_mass = Vec::new();
        let mut seq_mb = Vec::new();
        for (h, head) in seq.heads.iter().enumerate() {
            let (n, pos) = (head.pos.len(), head.pos.to_vec());
            let mut kdec = vec![0f32; n * d];
            let mut vdec = vec![0f32; n * d];
            kcodec.decode_rows(&head.k_codes, &head.k_scales, d, &mut kdec).unwrap();
            vcodec.decode_rows(&head.v_codes, &head.v_scales, d, &mut vdec).unwrap();
            let m = seq.dense_pos.len();
            let mut hmass: Vec<f64> = head.dense_mass.iter().map(|&x| f64::from(x)).collect();
            let mut hmb = vec![0f64; m];
            let mut adds = 0usize;
            let vmean_norm = head.v_mean.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            for j in h * group..(h + 1) * group {
                for r in 0..t {
                    let p = q_pos[b * t + r];
                    let vis = |x: u32| x <= p && window.is_none_or(|w| x.saturating_add(w) > p);
                    let at = ((b * hq + j) * t + r) * d;
                    let qv: Vec<f64> = q[at..at + d].iter().map(|&x| f64::from(x)).collect();
                    let mut qs: Vec<f64> = qv.iter().map(|x| x * scale).collect();
                    if !head.k_smooth.is_empty() {
                        qs.iter_mut().zip(&head.k_smooth).for_each(|(x, &s)| *x /= f64::from(s));
                    }
                    let qr = rotate64(&spec.key_rot, &qs, false);
                    let qmax = qr.iter().fold(0f64, |a, x| a.max(x.abs()));
                    let shift: f64 =
                        head.k_mean.iter().zip(&qv).map(|(&a, b)| f64::from(a) * b).sum::<f64>()
                            * scale;
                    let shift_t: f64 = head
                        .k_mean
                        .iter()
                        .zip(&qv)
                        .map(|(&a, b)| (f64::from(a) * b).abs())
                        .sum::<f64>()
                        * scale;
                    // (score, error bound, value norm, value row or None for dense index)
                    let mut toks: Vec<(f64, f64, f64, usize, bool)> = Vec::new();
                    for i in 0..n {
                        if !vis(pos[i]) {
                            continue;
                        }
                        let k = &kdec[i * d..][..d];
                        let s: f64 =
                            k.iter().zip(&qr).map(|(&a, b)| f64::from(a) * b).sum::<f64>() + shift;
                        let tn: f64 =
                            k.iter().zip(&qr).map(|(&a, b)| (f64::from(a) * b).abs()).sum::<f64>();
                        let ksum: f64 = k.iter().map(|&a| f64::from(a).abs()).sum();
                        let err = (EPS11 + (2.0 * d as f64 + 2.0 * log_d + 8.0) * EPS24)
                            * (tn + shift_t)
                            + EPS24 * qmax * ksum
                            + EPS22 * s.abs();
                        let vn = vdec[i * d..][..d]
                            .iter()
                            .map(|&x| f64::from(x).powi(2))
                            .sum::<f64>()
                            .sqrt()
                            + vmean_norm;
                        toks.push((s, err, vn, i, true));
                    }
                    for (mi, &dp) in seq.dense_pos.iter().enumerate() {
                        if !vis(dp) {
                            continue;
                        }
                        let k = &head.dense_k[mi * d..][..d];
                        let s: f64 =
                            k.iter().zip(&qv).map(|(a, b)| f64::from(a.to_f32()) * b).sum::<f64>()
                                * scale;
                        let tm: f64 = k
                            .iter()
                            .zip(&qv)
                            .map(|(a, b)| (f64::from(a.to_f32()) * b).abs())
                            .sum::<f64>()
                            * scale;
                        let err = (d as f64 + 4.0) * EPS24 * tm + EPS22 * s.abs();
                        let vn = head.dense_v[mi * d..][..d]
                            .iter()
                            .map(|x| f64::from(x.to_f32()).powi(2))
                            .sum::<f64>()
                            .sqrt();
                        toks.push((s, err, vn, mi, false));
                    }
                    let row = (b * hq + j) * t + r;
                    if toks.is_empty() {
                        continue; // output 0, bound 0: must be exactly 0
                    }
                    let mx = toks.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = toks.iter().map(|x| (x.0 - mx).exp()).collect();
                    let l: f64 = w.iter().sum();
                    let delta = toks.iter().map(|x| x.1).fold(0f64, f64::max);
                    let rel_w = (2.0 * delta).exp_m1();
                    let mut acc_rot = vec![0f64; d];
                    let mut acc = vec![0f64; d];
                    let mut csum = 0f64;
                    let mut vnorm = 0f64;
                    for (tok, &wi) in toks.iter().zip(&w) {
                        let p = wi / l;
                        vnorm += p * tok.2;
                        if tok.4 {
                            csum += p;
                            acc_rot
                                .iter_mut()
                                .zip(&vdec[tok.3 * d..][..d])
                                .for_each(|(a, &v)| *a += p * f64::from(v));
                        } else {
                            acc.iter_mut()
                                .zip(&head.dense_v[tok.3 * d..][..d])
                                .for_each(|(a, v)| *a += p * f64::from(v.to_f32()));
                            hmass[tok.3] += p;
                            hmb[tok.3] += p * (rel_w + 4.0 * EPS22);
                            adds += 1;
                        }
                    }
                    let un = rotate64(&spec.value_rot, &acc_rot, true);
                    for c in 0..d {
                        let mean = head.v_mean.get(c).map_or(0.0, |&x| f64::from(x));
                        out[row * d + c] = un[c] + csum * mean + acc[c];
                    }
                    let big_n = toks.len() as f64;
                    bound[row] = 2.0
                        * vnorm
                        * (rel_w + EPS11 + 3.0 * EPS22 + (2.0 * big_n + 2.0 * log_d + 8.0) * EPS24);
                }
            }
            for (b_, mv) in hmb.iter_mut().zip(&hmass) {
                *b_ = 2.0 * (*b_ + (adds as f64 + 1.0) * EPS24 * mv.abs());
            }
            seq_mass.push(hmass);
            seq_mb.push(hmb);
        }
        mass.push(seq_mass);
        mass_bound.push(seq_mb);
    }
    Reference { out, bound, mass, mass_bound }
}

struct Case {
    b: usize,
    hkv: usize,
    group: usize,
    d: usize,
    kb: u8,
    vb: u8,
    t: usize,
    window: Option<u32>,
    n: Vec<usize>,
    sinks: usize,
    span: usize,
    recent: usize,
    vectors: bool,
    /// Query positions: after every token (true) or inside the compressed span.
    after: bool,
    tuning: AttendTuning,
}

fn run_case(gpu: &CudaBackend, case: &Case, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let spec = spec(case.hkv, case.group, case.d, case.kb, case.vb, seed);
    let seqs: Vec<Content> = (0..case.b)
        .map(|_| {
            random_content(
                &mut rng,
                &spec,
                &case.n,
                case.sinks,
                case.span,
                case.recent,
                case.vectors,
            )
        })
        .collect();
    let mut layers: Vec<DeviceLayer> = seqs
        .iter()
        .map(|s| DeviceLayer::import(gpu, &spec, &s.heads, &s.dense_pos).unwrap())
        .collect();
    let end = (case.sinks + case.span + case.recent) as u32;
    let mut q_pos = Vec::new();
    for _ in 0..case.b {
        let first = if case.after {
            end + rng.random_range(0..3)
        } else {
            rng.random_range(case.sinks as u32..end.max(case.sinks as u32 + 1))
        };
        q_pos.extend((0..case.t as u32).map(|i| first + 2 * i));
    }
    let hq = case.hkv * case.group;
    let q: Vec<f32> = (0..case.b * hq * case.t * case.d).map(|_| gauss(&mut rng)).collect();
    let reference = reference(&spec, &seqs, &q, &q_pos, case.t, case.window);
    let q_dev = gpu.stream().clone_htod(&q).unwrap();
    let mut out: CudaSlice<f32> = gpu.stream().clone_htod(&vec![f32::NAN; q.len()]).unwrap();
    let mut att = Attender::new();
    att.tuning = case.tuning;
    let mut refs: Vec<&mut DeviceLayer> = layers.iter_mut().collect();
    let query = BatchQuery { t: case.t, positions: &q_pos, window: case.window, record_mass: true };
    att.attend(gpu, &mut refs, &q_dev.slice(..), &query, &mut out.slice_mut(..)).unwrap();
    let got = gpu.stream().clone_dtoh(&out).unwrap();
    let d = case.d;
    let mut worst = 0f64;
    for (row, (g, w)) in got.chunks(d).zip(reference.out.chunks(d)).enumerate() {
        assert!(g.iter().all(|x| x.is_finite()), "row {row}: unwritten or non-finite output {g:?}");
        let err = g.iter().zip(w).map(|(&a, b)| (f64::from(a) - b).powi(2)).sum::<f64>().sqrt();
        let bound = reference.bound[row];
        assert!(err <= bound, "seed {seed} row {row}: |error| {err:e} > bound {bound:e}");
        if bound > 0.0 {
            worst = worst.max(err / bound);
        }
    }
    for (b, layer) in layers.iter().enumerate() {
        let (heads, _) = layer.export().unwrap();
        for (h, head) in heads.iter().enumerate() {
            for (k, &m) in head.dense_mass.iter().enumerate() {
                let (want, tol) = (reference.mass[b][h][k], reference.mass_bound[b][h][k]);
                assert!(
                    (f64::from(m) - want).abs() <= tol,
                    "seed {seed} seq {b} head {h} dense {k}: mass {m} vs {want} (tol {tol:e})"
                );
            }
        }
    }
    eprintln!("seed {seed}: worst error / bound = {worst:.3}");
}

fn default_case() -> Case {
    Case {
        b: 1,
        hkv: 2,
        group: 4,
        d: 128,
        kb: 4,
        vb: 2,
        t: 1,
        window: None,
        n: vec![300, 0],
        sinks: 4,
        span: 600,
        recent: 16,
        vectors: true,
        after: true,
        tuning: AttendTuning::default(),
    }
}

/// Random shapes: every code rate for keys and values, d 64/128/256, GQA groups 1-8,
/// t 1-4 (two query-row tiles), windows, queries inside the compressed span, empty heads,
/// no dense rows, only dense rows, few and many splits.
#[test]
fn attend_matches_the_f64_reference() {
    let Some(gpu) = gpu() else { return };
    let few = AttendTuning { target_ctas: 4, min_chunk: 64, min_blocks: 1, prefetch: false };
    let many = AttendTuning { target_ctas: 4096, min_chunk: 64, min_blocks: 3, prefetch: true };
    let cases = [
        default_case(),
        Case {
            b: 3,
            hkv: 1,
            group: 1,
            d: 64,
            kb: 2,
            vb: 3,
            t: 3,
            window: Some(50),
            n: vec![1000],
            span: 1500,
            recent: 40,
            after: false,
            ..default_case()
        },
        Case {
            b: 2,
            hkv: 2,
            group: 8,
            kb: 3,
            vb: 4,
            t: 2,
            n: vec![129, 700],
            recent: 0,
            sinks: 0,
            span: 900,
            vectors: false,
            tuning: few,
            ..default_case()
        },
        Case {
            b: 2,
            hkv: 4,
            group: 5,
            d: 64,
            kb: 4,
            vb: 4,
            t: 4,
            window: Some(7),
            n: vec![40, 0, 17, 64],
            span: 80,
            after: false,
            ..default_case()
        },
        Case {
            b: 1,
            hkv: 1,
            group: 2,
            d: 256,
            kb: 2,
            vb: 2,
            n: vec![5000],
            span: 6000,
            tuning: many,
            ..default_case()
        },
        Case {
            b: 2,
            hkv: 2,
            group: 3,
            d: 128,
            kb: 2,
            vb: 4,
            t: 2,
            n: vec![0, 0],
            span: 10,
            ..default_case()
        },
        Case {
            b: 4,
            hkv: 2,
            group: 4,
            d: 128,
            kb: 3,
            vb: 2,
            t: 1,
            window: Some(300),
            n: vec![2000, 1999],
            span: 2500,
            tuning: many,
            ..default_case()
        },
        Case {
            b: 1,
            hkv: 1,
            group: 16,
            d: 64,
            kb: 4,
            vb: 2,
            t: 1,
            n: vec![777],
            span: 800,
            recent: 200,
            ..default_case()
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        run_case(&gpu, case, 100 + i as u64);
    }
}

/// The store round-trips host images exactly, grows past its capacity, drains dense rows,
/// and appends from device buffers the same bytes as from host ones.
#[test]
fn store_round_trips_and_grows() {
    let Some(gpu) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    let spec = spec(3, 2, 64, 3, 2, 7);
    let c = random_content(&mut rng, &spec, &[150, 0, 70], 4, 300, 90, true);
    let layer = DeviceLayer::import(&gpu, &spec, &c.heads, &c.dense_pos).unwrap();
    let (heads, dpos) = layer.export().unwrap();
    assert_eq!(heads, c.heads);
    assert_eq!(dpos, c.dense_pos);
    // The device holds each compressed position as a u32, the host image a bitmap.
    let u32_positions = |h: &HeadImage| h.bytes() - h.pos.bytes() + 4 * h.pos.len();
    let expected: usize = c.heads.iter().map(u32_positions).sum::<usize>() + 4 * c.dense_pos.len();
    assert_eq!(layer.resident_bytes(), expected);
    assert!(layer.capacity_bytes() >= layer.resident_bytes());

    // Built piecewise: compressed rows in chunks (host and device), dense rows from host
    // and device f32, then a drain.
    let mut built = DeviceLayer::new(&gpu, &spec).unwrap();
    let (d, h) = (64, 3);
    let m = c.dense_pos.len();
    let widen = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let dk: Vec<Vec<f32>> = c.heads.iter().map(|hd| widen(&hd.dense_k)).collect();
    let dv: Vec<Vec<f32>> = c.heads.iter().map(|hd| widen(&hd.dense_v)).collect();
    let split = 50;
    let gather = |rows: &[Vec<f32>], r: std::ops::Range<usize>| -> Vec<f32> {
        rows.iter().flat_map(|x| x[r.start * d..r.end * d].iter().copied()).collect()
    };
    built
        .append_dense(&gpu, &gather(&dk, 0..split), &gather(&dv, 0..split), &c.dense_pos[..split])
        .unwrap();
    let kd = gpu.stream().clone_htod(&gather(&dk, split..m)).unwrap();
    let vd = gpu.stream().clone_htod(&gather(&dv, split..m)).unwrap();
    built.append_dense_device(&gpu, &kd.slice(..), &vd.slice(..), &c.dense_pos[split..]).unwrap();
    for (hi, head) in c.heads.iter().enumerate() {
        let (n, pos) = (head.pos.len(), head.pos.to_vec());
        let (kr, vr) = (spec.key_row_bytes(), spec.value_row_bytes());
        let cut = n / 3;
        built
            .append_compressed(
                hi,
                &HostRows {
                    k_codes: &head.k_codes[..cut * kr],
                    k_scales: &head.k_scales[..cut],
                    v_codes: &head.v_codes[..cut * vr],
                    v_scales: &head.v_scales[..cut],
                    positions: &pos[..cut],
                },
            )
            .unwrap();
        let bits = |x: &[f16]| x.iter().map(|v| v.to_bits()).collect::<Vec<u16>>();
        let (kc, ks) = (
            gpu.stream().clone_htod(&head.k_codes[cut * kr..]).unwrap(),
            gpu.stream().clone_htod(&bits(&head.k_scales[cut..])).unwrap(),
        );
        let (vc, vs) = (
            gpu.stream().clone_htod(&head.v_codes[cut * vr..]).unwrap(),
            gpu.stream().clone_htod(&bits(&head.v_scales[cut..])).unwrap(),
        );
        if n > cut {
            built
                .append_compressed_device(
                    hi,
                    &DeviceRows {
                        k_codes: kc.slice(..),
                        k_scales: ks.slice(..),
                        v_codes: vc.slice(..),
                        v_scales: vs.slice(..),
                        positions: &pos[cut..],
                    },
                )
                .unwrap();
        }
        fn opt(v: &[f32]) -> Option<&[f32]> {
            (!v.is_empty()).then_some(v)
        }
        built.set_vectors(hi, opt(&head.k_mean), opt(&head.v_mean), opt(&head.k_smooth)).unwrap();
    }
    let (heads2, dpos2) = built.export().unwrap();
    let mut want = c.heads.clone();
    want.iter_mut().for_each(|hd| hd.dense_mass.iter_mut().for_each(|x| *x = 0.0));
    assert_eq!(heads2, want);
    assert_eq!(dpos2, c.dense_pos);

    // Drain 30 rows after the 4 sinks.
    built.drain_dense(4, 30).unwrap();
    let (heads3, dpos3) = built.export().unwrap();
    let mut dp = c.dense_pos.clone();
    dp.drain(4..34);
    assert_eq!(dpos3, dp);
    for (a, b) in heads3.iter().zip(&want) {
        let mut k = b.dense_k.clone();
        k.drain(4 * d..34 * d);
        assert_eq!(a.dense_k, k);
        assert_eq!(a.dense_mass.len(), m - 30);
    }
    assert_eq!(heads3.len(), h);
}

/// Bad input is an error carrying the values, never a panic.
#[test]
fn attend_and_store_reject_bad_input() {
    let Some(gpu) = gpu() else { return };
    let sp = spec(1, 1, 96, 2, 2, 1);
    let mut layer = DeviceLayer::new(&gpu, &sp).unwrap();
    let q = gpu.stream().clone_htod(&[0f32; 96]).unwrap();
    let mut out = gpu.stream().clone_htod(&[0f32; 96]).unwrap();
    let query = BatchQuery { t: 1, positions: &[5], window: None, record_mass: false };
    let e = Attender::new()
        .attend(&gpu, &mut [&mut layer], &q.slice(..), &query, &mut out.slice_mut(..))
        .unwrap_err();
    assert!(matches!(e, CudaError::Unsupported { .. }) && e.to_string().contains("96"), "{e}");

    let sp = spec(2, 2, 64, 4, 2, 1);
    let mut layer = DeviceLayer::new(&gpu, &sp).unwrap();
    let q = gpu.stream().clone_htod(&[0f32; 4 * 64 - 1]).unwrap();
    let mut out = gpu.stream().clone_htod(&[0f32; 4 * 64]).unwrap();
    let e = Attender::new()
        .attend(&gpu, &mut [&mut layer], &q.slice(..), &query, &mut out.slice_mut(..))
        .unwrap_err();
    assert!(matches!(e, CudaError::Len { what: "q", got: 255, expected: 256, .. }), "{e}");
    let bad_pos = BatchQuery { positions: &[1, 2], ..query };
    let q = gpu.stream().clone_htod(&[0f32; 4 * 64]).unwrap();
    let e = Attender::new()
        .attend(&gpu, &mut [&mut layer], &q.slice(..), &bad_pos, &mut out.slice_mut(..))
        .unwrap_err();
    assert!(matches!(e, CudaError::Len { what: "positions", got: 2, expected: 1, .. }), "{e}");

    let mut other = DeviceLayer::new(&gpu, &spec(2, 2, 64, 4, 3, 1)).unwrap();
    let q2 = gpu.stream().clone_htod(&[0f32; 8 * 64]).unwrap();
    let mut out2 = gpu.stream().clone_htod(&[0f32; 8 * 64]).unwrap();
    let two = BatchQuery { positions: &[1, 2], ..query };
    let e = Attender::new()
        .attend(&gpu, &mut [&mut layer, &mut other], &q2.slice(..), &two, &mut out2.slice_mut(..))
        .unwrap_err();
    assert!(matches!(e, CudaError::Unsupported { .. }), "{e}");

    let f16_spec = LayerSpec { keys: Storage::F16, ..sp.clone() };
    assert!(matches!(DeviceLayer::new(&gpu, &f16_spec), Err(CudaError::Unsupported { .. })));

    layer.append_dense(&gpu, &[0.0; 2 * 64], &[0.0; 2 * 64], &[3]).unwrap();
    let e = layer.append_dense(&gpu, &[0.0; 2 * 64], &[0.0; 2 * 64], &[3]).unwrap_err();
    assert!(matches!(e, CudaError::Position { got: 3, last: 3, .. }), "{e}");
    let e = layer.drain_dense(1, 1).unwrap_err();
    assert!(matches!(e, CudaError::OutOfRange { got: 2, limit: 2, .. }), "{e}");
    let rows = HostRows {
        k_codes: &[0; 32],
        k_scales: &[f16::NAN],
        v_codes: &[0; 16],
        v_scales: &[f16::ONE],
        positions: &[9],
    };
    let e = layer.append_compressed(0, &rows).unwrap_err();
    assert!(matches!(e, CudaError::BadScale { row: 0, .. }), "{e}");
    let e = layer.append_compressed(2, &rows).unwrap_err();
    assert!(matches!(e, CudaError::OutOfRange { got: 2, limit: 2, .. }), "{e}");
    // Finite scales, so that the length is what is wrong (scales are checked first).
    let short = HostRows { k_codes: &[0; 31], k_scales: &[f16::ONE], ..rows };
    let e = layer.append_compressed(0, &short).unwrap_err();
    assert!(matches!(e, CudaError::Len { what: "key codes", got: 31, expected: 32, .. }), "{e}");
}
