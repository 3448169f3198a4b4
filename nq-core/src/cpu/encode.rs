//! The encode pipeline on the CPU, one named step per stage. To change how a kept row is
//! encoded, change [`encode_part`] (the order) or one step.
//!
//! The steps run on [`CHUNK`] rows at a time, gathered, transformed, rotated and encoded
//! while they are in L1. Only what needs every kept row first runs on all of them before
//! that: RoPE inversion, and a head's first compression, whose mean and smoothing factor
//! come from the rows it compresses.

use half::f16;

use super::CpuLayer;
use crate::codec::RowCodec;
use crate::error::Result;
use crate::prep;
use crate::rotation::Rotation;
use crate::store::{CompressJob, HeadImage};

/// Rows gathered and encoded at a time (16 KiB of f32 at head dimension 64).
const CHUNK: usize = 64;

/// Which half of a head a row belongs to: keys get RoPE inversion and smoothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Keys,
    Values,
}

/// The buffers of one part of a head: its dense rows, its codes and scales, its mean and
/// (keys) smoothing factor.
struct PartBufs<'a> {
    dense: &'a [f16],
    codes: &'a mut Vec<u8>,
    scales: &'a mut Vec<f16>,
    mean: &'a mut Vec<f32>,
    smooth: Option<&'a mut Vec<f32>>,
}

impl<'a> PartBufs<'a> {
    fn of(head: &'a mut HeadImage, part: Part) -> Self {
        let HeadImage {
            dense_k,
            dense_v,
            k_codes,
            k_scales,
            v_codes,
            v_scales,
            k_mean,
            v_mean,
            k_smooth,
            ..
        } = head;
        match part {
            Part::Keys => PartBufs {
                dense: dense_k,
                codes: k_codes,
                scales: k_scales,
                mean: k_mean,
                smooth: Some(k_smooth),
            },
            Part::Values => PartBufs {
                dense: dense_v,
                codes: v_codes,
                scales: v_scales,
                mean: v_mean,
                smooth: None,
            },
        }
    }
}

/// Run one compression on every head of `layer`.
pub(super) fn compress(layer: &mut CpuLayer, job: &CompressJob<'_>) -> Result<()> {
    if job.count == 0 {
        return Ok(());
    }
    let d = layer.spec.head_dim;
    let range = job.start..job.start + job.count;
    let mut rows = Vec::new();
    for (hi, (head, idx)) in layer.heads.iter_mut().zip(job.keep).enumerate() {
        let squares = job.steps.query_squares.and_then(|q| q.get(hi)).map(Vec::as_slice);
        for part in [Part::Keys, Part::Values] {
            let (codec, rot) = match part {
                Part::Keys => (&layer.keys, &layer.spec.key_rot),
                Part::Values => (&layer.values, &layer.spec.value_rot),
            };
            let squares = if part == Part::Keys { squares } else { None };
            encode_part(PartBufs::of(head, part), part, job, idx, squares, codec, rot, &mut rows)?;
        }
        idx.iter().try_for_each(|&i| head.pos.push(job.positions[i as usize]))?;
        head.dense_k.drain(range.start * d..range.end * d);
        head.dense_v.drain(range.start * d..range.end * d);
        head.dense_mass.drain(range.clone());
        shrink(head);
    }
    Ok(())
}

/// Every step for the kept rows `idx` of one part of a head, appending their codes.
#[allow(clippy::too_many_arguments)]
fn encode_part(
    bufs: PartBufs<'_>,
    part: Part,
    job: &CompressJob<'_>,
    idx: &[u32],
    query_squares: Option<&[f64]>,
    codec: &RowCodec,
    rot: &Rotation,
    rows: &mut Vec<f32>,
) -> Result<()> {
    if idx.is_empty() {
        return Ok(());
    }
    let d = rot.dim();
    let PartBufs { dense, codes, scales, mean, smooth } = bufs;
    codes.reserve_exact(idx.len() * codec.bytes_per_row());
    if codec.has_scales() {
        scales.reserve_exact(idx.len());
    }
    let center = job.steps.center;
    let rope = if part == Part::Keys { job.steps.rope } else { None };
    let mean_due = center && mean.is_empty();
    let smooth = smooth.map(|s| (s.is_empty().then_some(query_squares).flatten(), s));
    let smooth_due = matches!(smooth, Some((Some(_), _)));
    if !mean_due && !smooth_due && rope.is_none() {
        // Mean and factor known: every step chunk by chunk.
        let mean: &[f32] = if center { mean } else { &[] };
        let factor: &[f32] = smooth.map_or(&[], |(_, s)| s);
        for idx in idx.chunks(CHUNK) {
            gather(dense, job.start, idx, d, rows)?;
            center_and_smooth(rows, mean, factor, d);
            rotate(rot, rows)?;
            quantize(codec, rows, codes, scales)?;
        }
        return Ok(());
    }
    // Step 1.
    gather(dense, job.start, idx, d, rows)?;
    // Step 2: RoPE inversion.
    if let Some(rope) = rope {
        let pos: Vec<u32> = idx.iter().map(|&i| job.positions[i as usize]).collect();
        rope.invert(rows, &pos)?;
    }
    // Step 3: the mean, from the first rows the head compresses.
    if mean_due {
        *mean = prep::column_mean_from_sums(&prep::column_sum(rows, d), idx.len());
    }
    let mean: &[f32] = if center { mean } else { &[] };
    // Step 4: the smoothing factor, from the queries' sums of squares and the centered keys':
    // center all rows (measuring them), then only scale.
    let (mean, factor): (&[f32], &[f32]) = match smooth {
        Some((Some(query_squares), factor)) => {
            subtract(rows, mean, d);
            *factor = prep::key_smoothing_from_sums(query_squares, &prep::column_squares(rows, d));
            (&[], factor)
        }
        Some((None, factor)) => (mean, factor),
        None => (mean, &[]),
    };
    for rows in rows.chunks_mut(CHUNK * d) {
        center_and_smooth(rows, mean, factor, d);
        rotate(rot, rows)?;
        quantize(codec, rows, codes, scales)?;
    }
    Ok(())
}

/// Step 1: the kept rows `idx` (into the range starting at dense row `start`) of `dense`,
/// widened to f32.
fn gather(dense: &[f16], start: usize, idx: &[u32], d: usize, rows: &mut Vec<f32>) -> Result<()> {
    rows.resize(idx.len() * d, 0.0);
    for (&i, row) in idx.iter().zip(rows.chunks_exact_mut(d)) {
        let at = (start + i as usize) * d;
        nq_lattice::widen_f16(&dense[at..at + d], row)?;
    }
    Ok(())
}

/// Steps 3 and 4, once the mean and factor are known: each value becomes
/// `(x - mean) * factor`, the two operations of the two steps in their order (either is
/// skipped when its slice is empty).
fn center_and_smooth(rows: &mut [f32], mean: &[f32], factor: &[f32], d: usize) {
    match (mean.is_empty(), factor.is_empty()) {
        (true, true) => {}
        (false, true) => {
            for row in rows.chunks_exact_mut(d) {
                row.iter_mut().zip(mean).for_each(|(x, m)| *x -= m);
            }
        }
        (true, false) => {
            for row in rows.chunks_exact_mut(d) {
                row.iter_mut().zip(factor).for_each(|(x, s)| *x *= s);
            }
        }
        (false, false) => {
            for row in rows.chunks_exact_mut(d) {
                for ((x, m), s) in row.iter_mut().zip(mean).zip(factor) {
                    *x = (*x - m) * s;
                }
            }
        }
    }
}

/// `row -= mean` for every row (nothing if `mean` is empty).
fn subtract(rows: &mut [f32], mean: &[f32], d: usize) {
    center_and_smooth(rows, mean, &[], d);
}

/// Step 5: the randomized Hadamard rotation of every row.
fn rotate(rot: &Rotation, rows: &mut [f32]) -> Result<()> {
    rot.forward_rows(rows)
}

/// Step 6: per-row scale and fixed-rate E8 codes (or f16), appended to the head's.
fn quantize(
    codec: &RowCodec,
    rows: &[f32],
    codes: &mut Vec<u8>,
    scales: &mut Vec<f16>,
) -> Result<()> {
    codec.encode(rows, codes, scales)
}

fn shrink(head: &mut HeadImage) {
    head.k_codes.shrink_to_fit();
    head.v_codes.shrink_to_fit();
    for b in [&mut head.k_scales, &mut head.v_scales, &mut head.dense_k, &mut head.dense_v] {
        b.shrink_to_fit();
    }
    head.pos.shrink_to_fit();
    head.dense_mass.shrink_to_fit();
}
