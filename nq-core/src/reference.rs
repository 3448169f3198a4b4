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
