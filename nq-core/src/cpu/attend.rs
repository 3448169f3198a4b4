//! Attention on the CPU over one layer's stored form: the query is rotated once, dotted with
//! the codes in place, values are accumulated in the rotated space and un-rotated once per
//! query row; the f16 rows are read as they are stored.

use nq_rope::Rope;

use super::CpuLayer;
use crate::attention::{axpy, dot, exp_normalize};
use half::slice::HalfFloatSliceExt;

use crate::codec::RowCodec;
use crate::error::Result;
use crate::rotation::Rotation;
use crate::store::{AttendQuery, HeadImage};

/// Attention of every query head of `layer`, one thread per kv head when the work pays.
pub(super) fn attend(
    layer: &mut CpuLayer,
    q: &[f32],
    query: &AttendQuery<'_>,
    out: &mut [f32],
) -> Result<()> {
    let d = layer.spec.head_dim;
    let t = query.positions.len();
    let per_head = layer.spec.group() * t * d;
    let ctx = HeadCtx {
        d,
        keys: &layer.keys,
        values: &layer.values,
        key_rot: &layer.spec.key_rot,
        value_rot: &layer.spec.value_rot,
        query,
    };
    let heads = layer.heads.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(heads);
    let work = t * (query.dense_pos.len() + layer.heads[0].pos.len());
    let mut jobs = layer.heads.iter_mut().zip(out.chunks_mut(per_head)).zip(q.chunks(per_head));
    if threads <= 1 || work < 8192 {
        return jobs.try_for_each(|((head, o), qh)| ctx.attend(head, qh, o));
    }
    std::thread::scope(|s| {
        let ctx = &ctx;
        let handles: Vec<_> =
            jobs.by_ref().map(|((head, o), qh)| s.spawn(move || ctx.attend(head, qh, o))).collect();
        handles
            .into_iter()
            .try_for_each(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// What the attention of one head reads besides the head itself.
struct HeadCtx<'a> {
    d: usize,
    keys: &'a RowCodec,
    values: &'a RowCodec,
    key_rot: &'a Rotation,
    value_rot: &'a Rotation,
    query: &'a AttendQuery<'a>,
}

impl HeadCtx<'_> {
    /// Attention of the query heads of one kv head: `q`, `out` are `[group, t, d]`.
    fn attend(&self, head: &mut HeadImage, q: &[f32], out: &mut [f32]) -> Result<()> {
        let d = self.d;
        let q_pos = self.query.positions;
        let dense_pos = self.query.dense_pos;
        let t = q_pos.len();
        let scale = 1.0 / (d as f32).sqrt();
        // One f16 row at a time is widened into this scratch: the dense rows are read as
        // they are stored, never copied whole to f32.
        let mut row = vec![0f32; d];
        let mut s_c = vec![0f32; head.pos.len()];
        let mut s_d = vec![0f32; dense_pos.len()];
        let mut qr = vec![0f32; d];
        let mut acc_rot = vec![0f32; d];
        for (qi, oi) in q.chunks_exact(t * d).zip(out.chunks_exact_mut(t * d)) {
            for (i, &p) in q_pos.iter().enumerate() {
                let qv = &qi[i * d..][..d];
                let o = &mut oi[i * d..][..d];
                // Visible tokens: positions in (p - window, p], so in [first, p + 1).
                let first = self
                    .query
                    .window
                    .map_or(0, |w| (u64::from(p) + 1).saturating_sub(u64::from(w)));
                let end = u64::from(p) + 1;
                let (c0, c1) = (head.pos.count_below(first), head.pos.count_below(end));
                let below = |x: u64| dense_pos.partition_point(|&y| u64::from(y) < x);
                let (d0, d1) = (below(first), below(end));
                let (c0, d0) = (c0.min(c1), d0.min(d1));
                let (sc, sd) = (&mut s_c[c0..c1], &mut s_d[d0..d1]);
                let kb = self.keys.bytes_per_row();
                if let Some(rope) = self.query.rope {
                    self.rope_scores(rope, head, qv, c0, sc, &mut qr)?;
                } else if c1 > c0 {
                    for (r, &x) in qr.iter_mut().zip(qv) {
                        *r = x * scale;
                    }
                    if !head.k_smooth.is_empty() {
                        qr.iter_mut().zip(&head.k_smooth).for_each(|(r, s)| *r /= s);
                    }
                    self.key_rot.forward(&mut qr)?;
                    let scales = if self.keys.has_scales() { &head.k_scales[c0..] } else { &[] };
                    self.keys.dot(&qr, &head.k_codes[c0 * kb..], scales, sc)?;
                    if !head.k_mean.is_empty() {
                        let shift = dot(qv, &head.k_mean) * scale;
                        sc.iter_mut().for_each(|s| *s += shift);
                    }
                }
                for (s, k) in sd.iter_mut().zip(head.dense_k[d0 * d..].chunks_exact(d)) {
                    k.convert_to_f32_slice(&mut row);
                    *s = dot(qv, &row) * scale;
                }
                let max = sc.iter().chain(sd.iter()).copied().fold(f32::NEG_INFINITY, f32::max);
                o.fill(0.0);
                if max == f32::NEG_INFINITY {
                    continue;
                }
                let sum = exp_normalize(sc, max) + exp_normalize(sd, max);
                let inv = 1.0 / sum;
                if c1 > c0 {
                    acc_rot.fill(0.0);
                    let vb = self.values.bytes_per_row();
                    let scales = if self.values.has_scales() { &head.v_scales[c0..] } else { &[] };
                    self.values.axpy(sc, &head.v_codes[c0 * vb..], scales, &mut acc_rot)?;
                    self.value_rot.inverse(&mut acc_rot)?;
                    o.copy_from_slice(&acc_rot);
                    if !head.v_mean.is_empty() {
                        axpy(sc.iter().sum(), &head.v_mean, o);
                    }
                }
                for (&w, v) in sd.iter().zip(head.dense_v[d0 * d..].chunks_exact(d)) {
                    v.convert_to_f32_slice(&mut row);
                    axpy(w, &row, o);
                }
                if self.query.record_mass {
                    let mass = &mut head.dense_mass[d0..d1];
                    mass.iter_mut().zip(sd.iter()).for_each(|(m, &w)| *m += w * inv);
                }
                o.iter_mut().for_each(|x| *x *= inv);
            }
        }
        Ok(())
    }

    /// Scores of keys stored RoPE-free, read in place: `RoPE_p(k) . q = k . RoPE_p^T(q)`, so
    /// the query is rotated back to each key's position `p` (`u = RoPE_{-p}(q)`), then
    /// treated as the plain path treats `q` (divided by the smoothing, rotated, dotted with
    /// the codes, the mean term added). No key is decoded; the cost is one RoPE and one
    /// Hadamard transform of the query per key.
    fn rope_scores(
        &self,
        rope: &Rope,
        head: &HeadImage,
        qv: &[f32],
        c0: usize,
        sc: &mut [f32],
        u: &mut [f32],
    ) -> Result<()> {
        let scale = 1.0 / (self.d as f32).sqrt();
        let kb = self.keys.bytes_per_row();
        for ((n, s), pos) in (c0..).zip(sc.iter_mut()).zip(head.pos.iter().skip(c0)) {
            u.copy_from_slice(qv);
            rope.invert_row(u, pos)?;
            let shift = if head.k_mean.is_empty() { 0.0 } else { dot(u, &head.k_mean) * scale };
            for (r, i) in u.iter_mut().zip(0..) {
                *r *= scale;
                if let Some(sm) = head.k_smooth.get(i) {
                    *r /= sm;
                }
            }
            self.key_rot.forward(u)?;
            let scales = if self.keys.has_scales() { &head.k_scales[n..=n] } else { &[] };
            self.keys.dot(
                u,
                &head.k_codes[n * kb..(n + 1) * kb],
                scales,
                std::slice::from_mut(s),
            )?;
            *s += shift;
        }
        Ok(())
    }
}
