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
            if job.steps.center {
                center(head, part, &mut rows, d);
            }
            if part == Part::Keys {
                smooth(head, squares, &mut rows, d);
            }
            let (codec, rot) = match part {
                Part::Keys => (&layer.keys, &layer.spec.key_rot),
                Part::Values => (&layer.values, &layer.spec.value_rot),
            };
            rotate(rot, &mut rows)?;
            quantize(head, part, codec, &rows)?;
        }
        head.pos.extend(idx.iter().map(|&i| job.positions[i as usize]));
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

/// Step 3: subtract the head's mean, computed from the first rows it compresses.
fn center(head: &mut HeadImage, part: Part, rows: &mut [f32], d: usize) {
    if rows.is_empty() {
        return;
    }
    let mean = match part {
        Part::Keys => &mut head.k_mean,
        Part::Values => &mut head.v_mean,
    };
    if mean.is_empty() {
        let (sum, _) = prep::column_sums(rows, d);
        *mean = prep::column_mean_from_sums(&sum, rows.len() / d);
    }
    for row in rows.chunks_exact_mut(d) {
        row.iter_mut().zip(mean.iter()).for_each(|(x, m)| *x -= m);
    }
}

/// Step 4 (keys): multiply by the head's smoothing factor, if it has one; computed from the
/// queries' sums of squares (when smoothing is on) and the first rows the head compresses.
fn smooth(head: &mut HeadImage, query_squares: Option<&[f64]>, rows: &mut [f32], d: usize) {
    if let Some(query_squares) = query_squares
        && head.k_smooth.is_empty()
        && !rows.is_empty()
    {
        let (_, key_squares) = prep::column_sums(rows, d);
        head.k_smooth = prep::key_smoothing_from_sums(query_squares, &key_squares);
    }
    if !head.k_smooth.is_empty() {
        for row in rows.chunks_exact_mut(d) {
            row.iter_mut().zip(&head.k_smooth).for_each(|(x, s)| *x *= s);
        }
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
