//! Naive dense attention, the oracle the compressed cache is checked against.

use crate::KvShape;

/// Causal softmax attention of `q` (`[q_heads, t, d]`) over keys/values `[kv_heads, n, d]`
/// at `key_pos`, for queries at `q_pos`; returns `[q_heads, t, d]`. Sums in f64.
///
/// # Panics
/// If a buffer is shorter than the shape implies (a test oracle: callers pass valid shapes).
pub fn attention(
    q: &[f32],
    q_pos: &[u32],
    k: &[f32],
    v: &[f32],
    key_pos: &[u32],
    shape: KvShape,
) -> Vec<f32> {
    let KvShape { q_heads, kv_heads, head_dim: d, .. } = shape;
    let t = q_pos.len();
    let n = key_pos.len();
    let group = q_heads / kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; q_heads * t * d];
    for hq in 0..q_heads {
        let hk = hq / group;
        for i in 0..t {
            let qi = &q[(hq * t + i) * d..][..d];
            let mut s: Vec<f64> = (0..n)
                .map(|j| {
                    if key_pos[j] > q_pos[i] {
                        f64::NEG_INFINITY
                    } else {
                        let kj = &k[(hk * n + j) * d..][..d];
                        qi.iter().zip(kj).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>()
                            * scale
                    }
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut l = 0.0;
            for x in &mut s {
                *x = (*x - m).exp();
                l += *x;
            }
            let o = &mut out[(hq * t + i) * d..][..d];
            for (j, &p) in s.iter().enumerate() {
                let vj = &v[(hk * n + j) * d..][..d];
                for (o, &x) in o.iter_mut().zip(vj) {
                    *o += (p / l * f64::from(x)) as f32;
                }
            }
        }
    }
    out
}

/// Exact attention over what a layer stores, and how far a correct f32 implementation may be
/// from it: the oracle of the backend conformance harness.
///
/// Every stored row is reconstructed in f64 in the model's basis (codes decoded with their
/// scales, un-rotated, smoothing undone, mean added; dense rows widened), then `q`
/// (`[q_heads, t, d]` at `q_pos`) attends causally (and within `window`) in f64. Returns the
/// output `[q_heads, t, d]` and a per-element bound on the error of an f32 implementation
/// that follows the stored form (rotated query dotted with codes, values accumulated rotated
/// and un-rotated once):
/// - each score `s_n` is an f32 dot product of `d` terms after an f32 Hadamard transform, so
///   `|δs_n| <= γ T_n` with `T_n` the sum of the terms' magnitudes and
///   `γ = (d + 2 log2 d + 4) eps` (Higham's `γ_n`, the transform's depth added);
/// - the softmax then moves each probability by at most `2 max|δs| p_n` (first order), so an
///   output element moves by at most `2 max|δs| A_i` with `A_i = sum_n p_n |v_ni|`;
/// - the weighted sum of `N` rows adds `(N + 4) eps A_i`, and un-rotating the accumulator
///   `2 log2 d eps |acc|` (the transform's normwise bound).
///
/// The bound returned is twice the sum, for second-order terms and `exp`'s own rounding.
///
/// With `rope` (keys stored RoPE-free), compressed keys are reconstructed in the model's
/// basis with RoPE re-applied at their positions, and scores are plain dot products with `q`.
///
/// # Errors
/// [`crate::Error`] when a head's codes do not decode.
///
/// # Panics
/// If a buffer is shorter than the shapes imply (a test oracle: callers pass valid shapes).
pub fn stored_attention(
    spec: &crate::LayerSpec,
    heads: &[crate::HeadImage],
    dense_pos: &[u32],
    q: &[f32],
    q_pos: &[u32],
    window: Option<u32>,
    rope: Option<&crate::Rope>,
) -> crate::Result<(Vec<f64>, Vec<f32>)> {
    let d = spec.head_dim;
    let (t, group) = (q_pos.len(), spec.group());
    let scale = 1.0 / (d as f64).sqrt();
    let eps = f64::from(f32::EPSILON);
    let log_d = (d as f64).log2();
    let gamma = (d as f64 + 2.0 * log_d + 4.0) * eps;
    let mut out = vec![0f64; spec.q_heads * t * d];
    let mut bound = vec![0f32; spec.q_heads * t * d];
    for (hk, head) in heads.iter().enumerate() {
        let rows = StoredRows::new(spec, head, rope)?;
        for hq in hk * group..(hk + 1) * group {
            for (i, &p) in q_pos.iter().enumerate() {
                let at = (hq * t + i) * d;
                let qv = &q[at..at + d];
                let visible =
                    |pos: u32| pos <= p && window.is_none_or(|w| pos.saturating_add(w) > p);
                let Visible { scores, terms, values } =
                    rows.visible(spec, head, dense_pos, qv, &visible, scale)?;
                if scores.is_empty() {
                    continue;
                }
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let l: f64 = w.iter().sum();
                let ds = gamma * terms.iter().copied().fold(0.0, f64::max);
                let mut acc_norm = 0f64;
                for c in 0..d {
                    let (mut o, mut a) = (0f64, 0f64);
                    for (&wn, v) in w.iter().zip(&values) {
                        o += wn / l * v[c];
                        a += wn / l * v[c].abs();
                    }
                    out[at + c] = o;
                    acc_norm += o * o;
                    bound[at + c] = (2.0 * ds * a + (values.len() as f64 + 4.0) * eps * a) as f32;
                }
                let rot = (2.0 * log_d * eps * acc_norm.sqrt()) as f32;
                bound[at..at + d]
                    .iter_mut()
                    .for_each(|b| *b = 2.0 * (*b + rot) + f32::MIN_POSITIVE);
            }
        }
    }
    Ok((out, bound))
}

/// One head's compressed rows decoded in the stored basis (keys) and in the model's basis
/// (values), in f64.
struct StoredRows {
    /// Decoded key rows `scale_n * c_n`, rotated and smoothed as stored.
    keys: Vec<f64>,
    /// With RoPE removed: the keys in the model's basis, RoPE re-applied.
    keys_model: Option<Vec<f64>>,
    /// Value rows in the model's basis, mean added.
    values: Vec<Vec<f64>>,
}

impl StoredRows {
    fn new(
        spec: &crate::LayerSpec,
        head: &crate::HeadImage,
        rope: Option<&crate::Rope>,
    ) -> crate::Result<Self> {
        let d = spec.head_dim;
        let n = head.pos.len();
        let codec = |s| crate::codec::RowCodec::new(s, d, spec.scale_candidates);
        let (mut k, mut v) = (vec![0f32; n * d], vec![0f32; n * d]);
        codec(spec.keys)?.decode(&head.k_codes, &head.k_scales, &mut k)?;
        codec(spec.values)?.decode(&head.v_codes, &head.v_scales, &mut v)?;
        let mut values = Vec::with_capacity(n);
        for row in v.chunks_exact_mut(d) {
            spec.value_rot.inverse(row)?;
            let mean = |c: usize| head.v_mean.get(c).copied().map_or(0.0, f64::from);
            values.push(row.iter().enumerate().map(|(c, &x)| f64::from(x) + mean(c)).collect());
        }
        let keys_model = match rope {
            Some(rope) => {
                let mut plain = k.clone();
                for row in plain.chunks_exact_mut(d) {
                    spec.key_rot.inverse(row)?;
                    for (c, x) in row.iter_mut().enumerate() {
                        let s = head.k_smooth.get(c).copied().unwrap_or(1.0);
                        *x = *x / s + head.k_mean.get(c).copied().unwrap_or(0.0);
                    }
                }
                rope.apply(&mut plain, &head.pos.to_vec())?;
                Some(plain.iter().map(|&x| f64::from(x)).collect())
            }
            None => None,
        };
        Ok(StoredRows { keys: k.iter().map(|&x| f64::from(x)).collect(), keys_model, values })
    }

    /// Scores, score term magnitudes and value rows of the tokens `visible` to query `qv`:
    /// compressed tokens first, then dense ones.
    fn visible(
        &self,
        spec: &crate::LayerSpec,
        head: &crate::HeadImage,
        dense_pos: &[u32],
        qv: &[f32],
        visible: &dyn Fn(u32) -> bool,
        scale: f64,
    ) -> crate::Result<Visible> {
        let d = spec.head_dim;
        // The query as the stored keys see it: scaled, divided by the smoothing, rotated.
        let mut qr: Vec<f32> = qv.iter().map(|&x| (f64::from(x) * scale) as f32).collect();
        if !head.k_smooth.is_empty() {
            qr.iter_mut().zip(&head.k_smooth).for_each(|(r, s)| *r /= s);
        }
        spec.key_rot.forward(&mut qr)?;
        let shift: f64 =
            head.k_mean.iter().zip(qv).map(|(&m, &x)| f64::from(m) * f64::from(x)).sum::<f64>()
                * scale;
        let shift_terms: f64 =
            head.k_mean.iter().zip(qv).map(|(&m, &x)| f64::from((m * x).abs())).sum::<f64>()
                * scale;
        let (mut s, mut terms, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (n, pos) in head.pos.iter().enumerate() {
            if !visible(pos) {
                continue;
            }
            if let Some(plain) = &self.keys_model {
                let k = &plain[n * d..][..d];
                s.push(k.iter().zip(qv).map(|(&a, &b)| a * f64::from(b)).sum::<f64>() * scale);
                terms.push(
                    k.iter().zip(qv).map(|(&a, &b)| (a * f64::from(b)).abs()).sum::<f64>() * scale,
                );
                values.push(self.values[n].clone());
                continue;
            }
            let k = &self.keys[n * d..][..d];
            s.push(k.iter().zip(&qr).map(|(&a, &b)| a * f64::from(b)).sum::<f64>() + shift);
            terms.push(
                k.iter().zip(&qr).map(|(&a, &b)| (a * f64::from(b)).abs()).sum::<f64>()
                    + shift_terms,
            );
            values.push(self.values[n].clone());
        }
        for (m, &pos) in dense_pos.iter().enumerate() {
            if !visible(pos) {
                continue;
            }
            let widen = |rows: &[half::f16]| -> Vec<f64> {
                rows[m * d..][..d].iter().map(|x| f64::from(x.to_f32())).collect()
            };
            let k = widen(&head.dense_k);
            s.push(k.iter().zip(qv).map(|(&a, &b)| a * f64::from(b)).sum::<f64>() * scale);
            terms.push(
                k.iter().zip(qv).map(|(&a, &b)| (a * f64::from(b)).abs()).sum::<f64>() * scale,
            );
            values.push(widen(&head.dense_v));
        }
        Ok(Visible { scores: s, terms, values })
    }
}

/// What one query sees: a score, the magnitude sum of its terms, and a value row per token.
struct Visible {
    scores: Vec<f64>,
    terms: Vec<f64>,
    values: Vec<Vec<f64>>,
}
