//! Attention of one kv head's query rows over its stored tokens, reading the compressed rows
//! in place: queries are rotated once, dotted with the codes, values are accumulated in the
//! rotated space and un-rotated once per query row.

/// `<a, b>` with four independent accumulators (vectorizes; error bound as a pairwise sum).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc += w * x`.
#[inline]
pub(crate) fn axpy(w: f32, x: &[f32], acc: &mut [f32]) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a += w * x;
    }
}

/// In-place softmax numerators: `s <- exp(s - max)`; returns `(max, sum)`.
pub(crate) fn exp_normalize(scores: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
}
