//! The compressed cache on a backend against the same cache on [`CpuBackend`].
//!
//! Each case fills both caches with the same prompt, compresses, decodes tokens one by one
//! (so decode-time blocks are compressed), and compares:
//! - storage: positions and dense rows exactly; means and smoothing factors to f32 rounding;
//!   codes and scales row by row, allowing rows on a decision boundary (at most one in a
//!   thousand, plus one);
//! - attention: the backend's output against exact (f64) attention over the backend's own
//!   storage (so boundary rows do not count twice), within the bound derived from the
//!   arithmetic by [`stored_attention`](crate::reference::stored_attention); output buffers
//!   are poisoned with NaN first, so an unwritten element fails;
//! - the eviction bookkeeping (dense attention mass) to `1e-4` of its largest value.
//!
//! [`check_rope_free_storage`] runs the storage half on caches that keep keys RoPE-free
//! (`remove_rope`: RoPE inverted before coding, in both layouts, with partial rotation and a
//! YaRN factor), without attention: a backend may encode such keys without attending over
//! them.

use std::borrow::Cow;

use nq_rope::{Rope, RopeConfig, RopeLayout, RopeScaling};

use super::{Mismatch, fail, filled_cache_with, test_rows};
use crate::backend::{Backend, DenseRows};
use crate::cache::{CompressedCache, KvShape, layer_spec};
use crate::config::{CompressionConfig, Preset};
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::reference::stored_attention;
use crate::store::{AttendQuery, CompressJob, HeadImage, LayerSpec, LayerUsage};

/// One conformance case: a shape, a configuration (and the RoPE of `remove_rope`), a prompt
/// length, decode steps, and whether attention is run and compared.
struct Case {
    shape: KvShape,
    cfg: CompressionConfig,
    rope: Option<Rope>,
    prompt: usize,
    decode: usize,
    attend: bool,
}

fn cases() -> Vec<Case> {
    let shape =
        |layers, q_heads, kv_heads, head_dim| KvShape { layers, q_heads, kv_heads, head_dim };
    let case =
        |shape, cfg, prompt, decode| Case { shape, cfg, rope: None, prompt, decode, attend: true };
    let mut short = Preset::Balanced.config();
    short.evict.window = 8;
    vec![
        case(shape(2, 8, 2, 128), Preset::Balanced.config(), 700, 90),
        case(shape(2, 4, 4, 64), Preset::High.config(), 300, 70),
        case(shape(1, 8, 1, 128), Preset::Max.config(), 1000, 70),
        case(shape(1, 6, 2, 64), Preset::Balanced.config(), 257, 66),
        // A prompt of only sinks and recent tokens: the first rows are compressed while
        // decoding, and centering and smoothing take their statistics then.
        case(shape(1, 4, 2, 64), short, 12, 100),
    ]
}

/// Keys stored RoPE-free: split-half over the whole head; interleaved (GGUF llama) over part
/// of it with a YaRN factor (so the inverse factor is applied too). Storage only.
fn rope_free_cases() -> Vec<Case> {
    let shape =
        |layers, q_heads, kv_heads, head_dim| KvShape { layers, q_heads, kv_heads, head_dim };
    let with_rope = |preset: Preset| CompressionConfig { remove_rope: true, ..preset.config() };
    let split = RopeConfig::new(128, 10_000.0);
    let interleaved = RopeConfig::new(64, 500_000.0)
        .with_layout(RopeLayout::Interleaved)
        .with_rotary_dim(48)
        .with_scaling(RopeScaling::yarn(4.0, 256));
    vec![
        Case {
            shape: shape(2, 8, 2, 128),
            cfg: with_rope(Preset::Balanced),
            rope: Rope::new(split).ok(),
            prompt: 600,
            decode: 80,
            attend: false,
        },
        Case {
            shape: shape(1, 4, 2, 64),
            cfg: with_rope(Preset::High),
            rope: Rope::new(interleaved).ok(),
            prompt: 300,
            decode: 70,
            attend: false,
        },
    ]
}

/// Run every case on `backend` and on the CPU and compare.
///
/// # Errors
/// The first [`Mismatch`], or a backend error rendered as one.
pub fn check_backend<B: Backend>(backend: &B) -> Result<(), Mismatch> {
    check_cases(backend, &cases())
}

/// The storage comparison of [`check_backend`] on caches that keep keys RoPE-free
/// (`remove_rope`), in both RoPE layouts: RoPE inversion, centering, smoothing and codes on
/// the backend against the CPU. No attention is run (a backend may refuse to attend over
/// RoPE-free keys).
///
/// # Errors
/// As [`check_backend`].
pub fn check_rope_free_storage<B: Backend>(backend: &B) -> Result<(), Mismatch> {
    check_cases(backend, &rope_free_cases())
}

fn check_cases<B: Backend>(backend: &B, cases: &[Case]) -> Result<(), Mismatch> {
    for (i, case) in cases.iter().enumerate() {
        run_case(backend, case).map_err(|m| Mismatch {
            op: m.op,
            detail: format!(
                "case {i} ({:?}, {} + {}): {}",
                case.shape, case.prompt, case.decode, m.detail
            ),
        })?;
    }
    Ok(())
}

fn run_case<B: Backend>(backend: &B, case: &Case) -> Result<(), Mismatch> {
    let err = |op: &'static str| move |e: Error| fail(op, e.to_string());
    let (shape, d) = (case.shape, case.shape.head_dim);
    let mut cpu = filled_cache_with(CpuBackend, shape, case.cfg, case.rope.clone(), case.prompt)
        .map_err(err("filled_cache"))?;
    let mut dev =
        filled_cache_with(backend.clone(), shape, case.cfg, case.rope.clone(), case.prompt)
            .map_err(err("filled_cache"))?;
    cpu.compress().map_err(err("compress"))?;
    dev.compress().map_err(err("compress"))?;
    compare_storage(&cpu, &dev)?;
    if case.attend {
        compare_attention(&mut cpu, &mut dev, case.prompt as u32, 11)?;
    }
    for step in 0..case.decode {
        let p = (case.prompt + step) as u32;
        for layer in 0..shape.layers {
            let seed = 7000 + 100 * step as u64 + layer as u64;
            let k = test_rows(shape.kv_heads, d, seed);
            let v = test_rows(shape.kv_heads, d, seed + 50);
            let q = test_rows(shape.q_heads, d, seed + 25);
            for cache_append in [cpu.append(layer, &k, &v, &[p]), dev.append(layer, &k, &v, &[p])] {
                cache_append.map_err(err("append"))?;
            }
            // Decode queries also record attention mass: run them on both caches.
            let mut out = vec![0f32; shape.q_heads * d];
            cpu.observe_queries(layer, &q, &[p]).map_err(err("observe_queries"))?;
            dev.observe_queries(layer, &q, &[p]).map_err(err("observe_queries"))?;
            if case.attend {
                cpu.attend(layer, &q, &[p], None, &mut out).map_err(err("attend"))?;
                dev.attend(layer, &q, &[p], None, &mut out).map_err(err("attend"))?;
            }
        }
        cpu.compress().map_err(err("compress"))?;
        dev.compress().map_err(err("compress"))?;
    }
    compare_storage(&cpu, &dev)?;
    if case.attend {
        compare_attention(&mut cpu, &mut dev, (case.prompt + case.decode) as u32, 12)?;
    }
    Ok(())
}

/// Storage of every layer and head: what must be equal is equal.
fn compare_storage<B: Backend>(
    cpu: &CompressedCache,
    dev: &CompressedCache<B>,
) -> Result<(), Mismatch> {
    let (cs, ds) = (cpu.stats(), dev.stats());
    // A device may hold more than the CPU (a copy of the dense positions, say), never less:
    // less would mean a buffer it does not count.
    if (cs.compressed_slots, cs.dense_slots, cs.evicted_slots)
        != (ds.compressed_slots, ds.dense_slots, ds.evicted_slots)
        || ds.resident_bytes < cs.resident_bytes
    {
        return Err(fail("stats", format!("cpu {cs:?}, backend {ds:?}")));
    }
    for (l, (cl, dl)) in cpu.layers.iter().zip(&dev.layers).enumerate() {
        let want = cpu.backend.export(&cl.store).map_err(|e| fail("export", e.to_string()))?;
        let got = dev.backend.export(&dl.store).map_err(|e| fail("export", e.to_string()))?;
        for (h, (w, g)) in want.iter().zip(got.iter()).enumerate() {
            let at = |what: &str| format!("layer {l} head {h} {what}");
            if w.pos != g.pos || w.dense_k != g.dense_k || w.dense_v != g.dense_v {
                return Err(fail("storage", at("positions or dense rows differ")));
            }
            let mass_max = w.dense_mass.iter().copied().fold(0f32, f32::max);
            if let Some(i) = (0..w.dense_mass.len()).find(|&i| {
                !within(
                    f64::from(w.dense_mass[i]),
                    f64::from(g.dense_mass[i]),
                    1e-4 * (1.0 + f64::from(mass_max)),
                )
            }) {
                return Err(fail(
                    "storage",
                    at(&format!("dense mass {i}: {} against {}", g.dense_mass[i], w.dense_mass[i])),
                ));
            }
            for (what, a, b) in [
                ("key mean", &w.k_mean, &g.k_mean),
                ("value mean", &w.v_mean, &g.v_mean),
                ("smoothing", &w.k_smooth, &g.k_smooth),
            ] {
                close(a, b, 1e-5).map_err(|e| fail("storage", at(&format!("{what}: {e}"))))?;
            }
            let (kb, vb) =
                (w.k_codes.len() / w.pos.len().max(1), w.v_codes.len() / w.pos.len().max(1));
            let differing = (0..w.pos.len())
                .filter(|&n| {
                    let scale = |s: &[half::f16]| s.get(n).copied();
                    w.k_codes[n * kb..][..kb] != g.k_codes[n * kb..][..kb]
                        || w.v_codes[n * vb..][..vb] != g.v_codes[n * vb..][..vb]
                        || scale(&w.k_scales) != scale(&g.k_scales)
                        || scale(&w.v_scales) != scale(&g.v_scales)
                })
                .count();
            if differing > w.pos.len() / 1000 + 1 {
                return Err(fail(
                    "encode",
                    at(&format!("{differing} of {} rows differ in codes or scales", w.pos.len())),
                ));
            }
        }
    }
    Ok(())
}

/// `|a - b| <= bound`, false when either is NaN.
fn within(a: f64, b: f64, bound: f64) -> bool {
    (a - b).abs() <= bound
}

/// Relative closeness of two f32 vectors of equal length.
fn close(a: &[f32], b: &[f32], rel: f32) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} values against {}", a.len(), b.len()));
    }
    match a.iter().zip(b).position(|(x, y)| (x - y).abs() > rel * x.abs().max(y.abs()).max(1e-30)) {
        Some(i) => Err(format!("element {i}: {} against {}", a[i], b[i])),
        None => Ok(()),
    }
}

/// The backend's attention against the exact attention over its own storage
/// ([`stored_attention`](crate::reference::stored_attention), with its derived bound): one
/// decode query at position `p` and three causal rows with a sliding window. The CPU cache
/// sees the same queries, so the eviction bookkeeping of both stays comparable.
fn compare_attention<B: Backend>(
    cpu: &mut CompressedCache,
    dev: &mut CompressedCache<B>,
    p: u32,
    seed: u64,
) -> Result<(), Mismatch> {
    let shape = dev.shape;
    let d = shape.head_dim;
    let err = |op: &'static str| move |e: Error| fail(op, e.to_string());
    for layer in 0..shape.layers {
        for (positions, window) in [(vec![p], None), (vec![p - 2, p - 1, p], Some(64u32))] {
            let q = test_rows(shape.q_heads * positions.len(), d, seed * 31 + layer as u64);
            let spec = layer_spec(shape, &dev.cfg, layer).map_err(err("layer_spec"))?;
            let heads = dev.backend.export(&dev.layers[layer].store).map_err(err("export"))?;
            let dense_pos = &dev.layers[layer].dense_pos;
            let (want, bound) =
                stored_attention(&spec, &heads, dense_pos, &q, &positions, window, None)
                    .map_err(err("stored_attention"))?;
            let w = window.map(|w| w as usize);
            let mut unused = vec![0f32; q.len()];
            cpu.attend(layer, &q, &positions, w, &mut unused).map_err(err("attend"))?;
            let mut got = vec![f32::NAN; q.len()];
            dev.attend(layer, &q, &positions, w, &mut got).map_err(err("attend"))?;
            let bad =
                (0..got.len()).find(|&i| !within(f64::from(got[i]), want[i], f64::from(bound[i])));
            if let Some(i) = bad {
                return Err(fail(
                    "attend",
                    format!(
                        "layer {layer}, {} query rows, element {i}: {} against exact {} (bound {:e})",
                        positions.len(),
                        got[i],
                        want[i],
                        bound[i]
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// How [`Perturbed`] breaks its inner backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perturbation {
    /// Leave the last element of every attention output unwritten.
    SkipLastOutput,
    /// Add 5% of the output's largest magnitude (plus 0.05) to its last element.
    NudgeOutput,
    /// Flip one bit of the last key code of head 0 after every compression.
    FlipCode,
    /// Drop the attention mass of dense rows (eviction bookkeeping).
    ForgetMass,
}

/// A deliberately wrong backend: the CPU with one [`Perturbation`]. The conformance harness
/// must reject every variant (tested in nq-core), or it could not catch a broken device.
#[derive(Clone, Copy, Debug)]
pub struct Perturbed(pub Perturbation);

impl Backend for Perturbed {
    type Layer = crate::cpu::CpuLayer;

    fn new_layer(&self, spec: &LayerSpec) -> Result<Self::Layer> {
        CpuBackend.new_layer(spec)
    }

    fn append(
        &self,
        layer: &mut Self::Layer,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> Result<()> {
        CpuBackend.append(layer, k, v, positions)
    }

    fn compress(&self, layer: &mut Self::Layer, job: &CompressJob<'_>) -> Result<()> {
        CpuBackend.compress(layer, job)?;
        if self.0 == Perturbation::FlipCode {
            layer.perturb_last_code();
        }
        Ok(())
    }

    fn attend(
        &self,
        layer: &mut Self::Layer,
        q: &[f32],
        query: &AttendQuery<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        let query = AttendQuery {
            record_mass: query.record_mass && self.0 != Perturbation::ForgetMass,
            ..*query
        };
        let last = out.last().copied();
        CpuBackend.attend(layer, q, &query, out)?;
        match (self.0, out.last_mut(), last) {
            (Perturbation::SkipLastOutput, Some(x), Some(before)) => *x = before,
            (Perturbation::NudgeOutput, Some(_), _) => {
                let max = out.iter().fold(0f32, |m, v| m.max(v.abs()));
                if let Some(x) = out.last_mut() {
                    *x += 0.05 * (1.0 + max);
                }
            }
            _ => {}
        }
        Ok(())
    }

    type Rows<'a> = [f32];
    type RowsMut<'a> = [f32];

    fn append_rows(
        &self,
        layer: &mut Self::Layer,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> Result<()> {
        CpuBackend.append_rows(layer, k, v, positions)
    }

    fn attend_rows(
        &self,
        layers: &mut [&mut Self::Layer],
        q: &[f32],
        queries: &[AttendQuery<'_>],
        out: &mut [f32],
    ) -> Result<()> {
        // Sequence by sequence through `attend`, so every perturbation applies here too.
        let mut at = 0;
        for (layer, query) in layers.iter_mut().zip(queries) {
            let n = q.len() / queries.len().max(1);
            self.attend(layer, &q[at..at + n], query, &mut out[at..at + n])?;
            at += n;
        }
        Ok(())
    }

    fn dense_rows<'a>(&self, layer: &'a Self::Layer, head: usize) -> Result<DenseRows<'a>> {
        CpuBackend.dense_rows(layer, head)
    }

    fn export<'a>(&self, layer: &'a Self::Layer) -> Result<Cow<'a, [HeadImage]>> {
        CpuBackend.export(layer)
    }

    fn import(
        &self,
        spec: &LayerSpec,
        heads: Vec<HeadImage>,
        dense_pos: &[u32],
    ) -> Result<Self::Layer> {
        CpuBackend.import(spec, heads, dense_pos)
    }

    fn usage(&self, layer: &Self::Layer) -> LayerUsage {
        CpuBackend.usage(layer)
    }
}
