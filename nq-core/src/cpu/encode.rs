//! The encode pipeline on the CPU, one named step per stage. To change how a kept row is
//! encoded, change [`encode_rows`] (the order) or one step.

use half::slice::HalfFloatSliceExt;

use super::CpuLayer;
use crate::codec::RowCodec;
use crate::error::Result;
use crate::prep;
use crate::rotation::Rotation;
use crate::store::{CompressJob, HeadImage};

/// Which half of a head a row belongs to: keys get RoPE inversion and smoothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Keys,
    Values,
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
            gather(head, part, job.start, idx, d, &mut rows);
            if part == Part::Keys
                && let Some(rope) = job.steps.rope
            {
                let pos: Vec<u32> = idx.iter().map(|&i| job.positions[i as usize]).collect();
                rope.invert(&mut rows, &pos)?;
            }
            center_and_smooth(head, part, job.steps.center, squares, &mut rows, d);
            let (codec, rot) = match part {
                Part::Keys => (&layer.keys, &layer.spec.key_rot),
                Part::Values => (&layer.values, &layer.spec.value_rot),
            };
            rotate(rot, &mut rows)?;
            quantize(head, part, codec, &rows)?;
        }
        idx.iter().try_for_each(|&i| head.pos.push(job.positions[i as usize]))?;
        head.dense_k.drain(range.start * d..range.end * d);
        head.dense_v.drain(range.start * d..range.end * d);
        head.dense_mass.drain(range.clone());
        shrink(head);
    }
    Ok(())
}

/// Step 1: the kept rows `idx` (into the range starting at dense row `start`), widened to f32.
fn gather(head: &HeadImage, part: Part, start: usize, idx: &[u32], d: usize, rows: &mut Vec<f32>) {
    let src = match part {
        Part::Keys => &head.dense_k,
        Part::Values => &head.dense_v,
    };
    rows.clear();
    rows.resize(idx.len() * d, 0.0);
    for (&i, row) in idx.iter().zip(rows.chunks_exact_mut(d)) {
        let at = (start + i as usize) * d;
        src[at..at + d].convert_to_f32_slice(row);
    }
}

/// Steps 3 and 4: subtract the head's mean (if `center`), then, for keys, multiply by the
/// head's smoothing factor, if it has one. The mean is computed from the first rows the head
/// compresses; the smoothing factor (when smoothing is on) from the queries' sums of squares
/// and the first (centered) keys. Each value becomes `(x - mean) * factor`, the two
/// operations of the two steps in their order, fused into one pass once both are known.
fn center_and_smooth(
    head: &mut HeadImage,
    part: Part,
    center: bool,
    query_squares: Option<&[f64]>,
    rows: &mut [f32],
    d: usize,
) {
    if rows.is_empty() {
        return;
    }
    let (mean, smooth) = match part {
        Part::Keys => (&mut head.k_mean, Some(&mut head.k_smooth)),
        Part::Values => (&mut head.v_mean, None),
    };
    if center && mean.is_empty() {
        *mean = prep::column_mean_from_sums(&prep::column_sum(rows, d), rows.len() / d);
    }
    let mean: &[f32] = if center { mean } else { &[] };
    let Some(smooth) = smooth else {
        subtract(rows, mean, d);
        return;
    };
    if let Some(query_squares) = query_squares
        && smooth.is_empty()
    {
        // The factor needs the centered keys' sums of squares: center first, measure, scale.
        subtract(rows, mean, d);
        *smooth = prep::key_smoothing_from_sums(query_squares, &prep::column_squares(rows, d));
        scale(rows, smooth, d);
        return;
    }
    match (mean.is_empty(), smooth.is_empty()) {
        (_, true) => subtract(rows, mean, d),
        (true, false) => scale(rows, smooth, d),
        (false, false) => {
            for row in rows.chunks_exact_mut(d) {
                for ((x, m), s) in row.iter_mut().zip(mean).zip(smooth.iter()) {
                    *x = (*x - m) * s;
                }
            }
        }
    }
}

/// `row -= mean` for every row (nothing if `mean` is empty).
fn subtract(rows: &mut [f32], mean: &[f32], d: usize) {
    if mean.is_empty() {
        return;
    }
    for row in rows.chunks_exact_mut(d) {
        row.iter_mut().zip(mean).for_each(|(x, m)| *x -= m);
    }
}

/// `row *= factor` for every row.
fn scale(rows: &mut [f32], factor: &[f32], d: usize) {
    for row in rows.chunks_exact_mut(d) {
        row.iter_mut().zip(factor).for_each(|(x, s)| *x *= s);
    }
}

/// Step 5: the randomized Hadamard rotation of every row.
fn rotate(rot: &Rotation, rows: &mut [f32]) -> Result<()> {
    rot.forward_rows(rows)
}

/// Step 6: per-row scale and fixed-rate E8 codes (or f16), appended to the head.
fn quantize(head: &mut HeadImage, part: Part, codec: &RowCodec, rows: &[f32]) -> Result<()> {
    let (codes, scales) = match part {
        Part::Keys => (&mut head.k_codes, &mut head.k_scales),
        Part::Values => (&mut head.v_codes, &mut head.v_scales),
    };
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
