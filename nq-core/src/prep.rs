//! The small statistics the encode pipeline derives once per head, at its first compression:
//! the column mean used for centering and the per-channel key smoothing factor. Every backend
//! computes the column sums where its rows live and calls these for the arithmetic.

/// Per-column sums (f64) of rows of `d` values: `(sum x, sum x^2)`, as
/// [`column_sum`] and [`column_squares`] give them.
pub fn column_sums(rows: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    (column_sum(rows, d), column_squares(rows, d))
}

/// Per-column sums (f64) of rows of `d` values, added row by row in order.
pub fn column_sum(rows: &[f32], d: usize) -> Vec<f64> {
    columns(rows, d, |x| x)
}

/// Per-column sums of squares (f64) of rows of `d` values, added row by row in order.
pub fn column_squares(rows: &[f32], d: usize) -> Vec<f64> {
    columns(rows, d, |x| x * x)
}

/// Per-column sums (f64) of `f(x)` over rows of `d` values, added row by row in order; 8
/// columns at a time over all rows, so that their sums stay in registers.
#[inline]
fn columns(rows: &[f32], d: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
    const COLS: usize = 8;
    let mut out = vec![0f64; d];
    for (c, out) in out.chunks_mut(COLS).enumerate() {
        let at = c * COLS;
        let mut acc = [0f64; COLS];
        if out.len() == COLS {
            for row in rows.chunks_exact(d) {
                let x = &row[at..at + COLS];
                for i in 0..COLS {
                    acc[i] += f(f64::from(x[i]));
                }
            }
        } else {
            for row in rows.chunks_exact(d) {
                for (a, &x) in acc.iter_mut().zip(&row[at..at + out.len()]) {
                    *a += f(f64::from(x));
                }
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
    }
    out
}

/// Column mean from per-column sums over `n` rows (0 rows: zeros).
pub fn column_mean_from_sums(sum: &[f64], n: usize) -> Vec<f32> {
    sum.iter().map(|s| (s / n.max(1) as f64) as f32).collect()
}

/// SmoothQuant-style per-channel key scale with exponent 1/2: `s_c = sqrt(rms(q_c) /
/// rms(k_c))` from the per-column sums of squares of the window's queries (of the kv head's
/// group) and of the (centered) keys, normalized to geometric mean 1 so the codes' scales
/// stay where they were. Clamped to `[1e-3, 1e3]`.
pub fn key_smoothing_from_sums(query_squares: &[f64], key_squares: &[f64]) -> Vec<f32> {
    let d = key_squares.len();
    let raw: Vec<f64> = query_squares
        .iter()
        .zip(key_squares)
        // tiny floors keep all-zero channels finite; the counts cancel in the normalization
        .map(|(q, k)| ((q + 1e-30) / (k + 1e-30)).sqrt().sqrt())
        .collect();
    let log_mean = raw.iter().map(|x| x.ln()).sum::<f64>() / d as f64;
    raw.iter().map(|x| (x / log_mean.exp()).clamp(1e-3, 1e3) as f32).collect()
}

/// Per-column sums of squares of query rows `[..][w * d]` (f64).
pub fn query_squares(queries: &[Vec<f32>], d: usize) -> Vec<f64> {
    let mut acc = vec![0f64; d];
    for row in queries.iter().flat_map(|r| r.chunks_exact(d)) {
        acc.iter_mut().zip(row).for_each(|(a, &x)| *a += f64::from(x) * f64::from(x));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_column_sums_equal_row_by_row_sums() {
        for d in [3, 8, 12, 64, 100] {
            #[allow(clippy::cast_precision_loss)]
            let rows: Vec<f32> =
                (0..37 * d).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
            let (mut sum, mut squares) = (vec![0f64; d], vec![0f64; d]);
            for row in rows.chunks_exact(d) {
                for ((s, q), &x) in sum.iter_mut().zip(&mut squares).zip(row) {
                    *s += f64::from(x);
                    *q += f64::from(x) * f64::from(x);
                }
            }
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&column_sum(&rows, d)), bits(&sum), "d {d}");
            assert_eq!(bits(&column_squares(&rows, d)), bits(&squares), "d {d}");
        }
    }
}
