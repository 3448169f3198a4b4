//! Naive oracles straight from the HF formulas, everything in f64.
//!
//! Written element by element the way `transformers` writes them (`rotate_half`,
//! `rotate_every_two`, `cat(freqs, freqs)`), sharing no code with the fast path, so the
//! tests can compare the two.

use std::f64::consts::PI;

use crate::{Error, Result, RopeConfig, RopeLayout, RopeScaling};

/// `(inv_freq, attention_factor)` for `cfg`, transliterated from
/// `transformers.modeling_rope_utils` (`_compute_*_parameters`), in f64.
///
/// # Errors
/// As [`RopeConfig::validate`].
///
/// # Examples
/// ```
/// use nq_rope::{RopeConfig, RopeScaling, reference};
/// let cfg = RopeConfig::new(8, 10_000.0).with_scaling(RopeScaling::Linear { factor: 2.0 });
/// let (f, af) = reference::inv_freqs(&cfg)?;
/// assert_eq!((f[0], af), (0.5, 1.0));
/// # Ok::<(), nq_rope::Error>(())
/// ```
pub fn inv_freqs(cfg: &RopeConfig) -> Result<(Vec<f64>, f64)> {
    cfg.validate()?;
    let dim = cfg.rotary_dim;
    let d = dim as f64;
    // inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2) / dim))
    let default = |base: f64| -> Vec<f64> {
        (0..dim).step_by(2).map(|j| 1.0 / base.powf(j as f64 / d)).collect()
    };
    Ok(match cfg.scaling {
        RopeScaling::None => (default(cfg.theta), 1.0),
        RopeScaling::Linear { factor } => {
            let mut inv = default(cfg.theta);
            for f in &mut inv {
                *f /= factor;
            }
            (inv, 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let inv_freq = default(cfg.theta);
            let old_context_len = original_max_position as f64;
            let low_freq_wavelen = old_context_len / low_freq_factor;
            let high_freq_wavelen = old_context_len / high_freq_factor;
            let wavelen: Vec<f64> = inv_freq.iter().map(|f| 2.0 * PI / f).collect();
            // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
            let inv_freq_llama: Vec<f64> =
                (0..inv_freq.len())
                    .map(|k| {
                        if wavelen[k] > low_freq_wavelen {
                            inv_freq[k] / factor
                        } else {
                            inv_freq[k]
                        }
                    })
                    .collect();
            let out = (0..inv_freq.len())
                .map(|k| {
                    let smooth_factor = (old_context_len / wavelen[k] - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    let smoothed = (1.0 - smooth_factor) * inv_freq_llama[k] / factor
                        + smooth_factor * inv_freq_llama[k];
                    // is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
                    // (wavelengths are finite: validated inputs)
                    let is_medium =
                        wavelen[k] >= high_freq_wavelen && wavelen[k] <= low_freq_wavelen;
                    if is_medium { smoothed } else { inv_freq_llama[k] }
                })
                .collect();
            (out, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max_position,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate,
        } => {
            let get_mscale =
                |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attention_factor = match attention_factor {
                Some(a) => a,
                None => match (mscale, mscale_all_dim) {
                    (Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => {
                        get_mscale(factor, m) / get_mscale(factor, ma)
                    }
                    _ => get_mscale(factor, 1.0),
                },
            };
            let find_correction_dim = |num_rotations: f64| {
                (d * (original_max_position as f64 / (num_rotations * 2.0 * PI)).ln())
                    / (2.0 * cfg.theta.ln())
            };
            let (mut low, mut high) =
                (find_correction_dim(beta_fast), find_correction_dim(beta_slow));
            if truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
            if low == high {
                high += 0.001;
            }
            let pos_freqs: Vec<f64> =
                (0..dim).step_by(2).map(|j| cfg.theta.powf(j as f64 / d)).collect();
            let out = pos_freqs
                .iter()
                .enumerate()
                .map(|(k, pf)| {
                    let inv_freq_extrapolation = 1.0 / pf;
                    let inv_freq_interpolation = 1.0 / (factor * pf);
                    let ramp = ((k as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation_factor = 1.0 - ramp;
                    inv_freq_interpolation * (1.0 - extrapolation_factor)
                        + inv_freq_extrapolation * extrapolation_factor
                })
                .collect();
            (out, attention_factor)
        }
        RopeScaling::DynamicNtk { factor, original_max_position, seq_len } => {
            let max_position_embeddings = original_max_position as f64;
            let seq_len = if (seq_len as f64) > max_position_embeddings {
                seq_len as f64
            } else {
                max_position_embeddings
            };
            let base = cfg.theta
                * ((factor * seq_len / max_position_embeddings) - (factor - 1.0))
                    .powf(d / (d - 2.0));
            (default(base), 1.0)
        }
    })
}

/// `q * cos + rotate(q) * sin` for every row, all in f64, rounded once to f32.
///
/// # Errors
/// As [`RopeConfig::validate`]; [`Error::Len`] if `rows.len() != positions.len() * head_dim`.
pub fn apply(cfg: &RopeConfig, rows: &mut [f32], positions: &[u32]) -> Result<()> {
    embed(cfg, rows, positions, false)
}

/// The exact inverse in f64: `(y * cos - rotate(y) * sin) / attention_factor`.
///
/// # Errors
/// As [`apply`].
pub fn invert(cfg: &RopeConfig, rows: &mut [f32], positions: &[u32]) -> Result<()> {
    embed(cfg, rows, positions, true)
}

/// The mean of [`apply`] over positions `first .. first + count`, all in f64: every rotated
/// row summed position by position, divided by `count`, rounded once to f32. Cost
/// `O(count)` per row (the fast path's closed form is `O(1)`).
///
/// # Errors
/// As [`RopeConfig::validate`]; [`Error::NoPositions`] if `count == 0`; [`Error::Len`] if
/// `rows.len()` is not a multiple of `head_dim`.
pub fn apply_mean(cfg: &RopeConfig, rows: &mut [f32], first: u32, count: u32) -> Result<()> {
    const OP: &str = "reference::apply_mean";
    let (inv_freq, attention_factor) = inv_freqs(cfg)?;
    let hd = cfg.head_dim;
    if count == 0 {
        return Err(Error::NoPositions { op: OP });
    }
    if !rows.len().is_multiple_of(hd) {
        return Err(Error::Len {
            op: OP,
            got: rows.len(),
            positions: rows.len() / hd,
            head_dim: hd,
        });
    }
    for row in rows.chunks_exact_mut(hd) {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let mut sum = vec![0.0f64; cfg.rotary_dim];
        for f in 0..count {
            let p = f64::from(first) + f64::from(f);
            let y = rotate(cfg, &inv_freq, &x, p, false);
            for (s, v) in sum.iter_mut().zip(y) {
                *s += v;
            }
        }
        for (r, s) in row.iter_mut().zip(sum) {
            *r = (s / f64::from(count) * attention_factor) as f32;
        }
    }
    Ok(())
}

fn embed(cfg: &RopeConfig, rows: &mut [f32], positions: &[u32], inverse: bool) -> Result<()> {
    let (inv_freq, attention_factor) = inv_freqs(cfg)?;
    let hd = cfg.head_dim;
    if positions.len().checked_mul(hd) != Some(rows.len()) {
        let op = if inverse { "reference::invert" } else { "reference::apply" };
        return Err(Error::Len { op, got: rows.len(), positions: positions.len(), head_dim: hd });
    }
    for (row, &p) in rows.chunks_exact_mut(hd).zip(positions) {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let y = rotate(cfg, &inv_freq, &x, f64::from(p), inverse);
        for (r, v) in row.iter_mut().zip(y) {
            *r =
                if inverse { (v / attention_factor) as f32 } else { (v * attention_factor) as f32 };
        }
    }
    Ok(())
}

/// The first `rotary_dim` values of `x` rotated to position `p` (`R(p) x`, or `R(p)^T x` when
/// `inverse`), in f64, without the attention factor.
fn rotate(cfg: &RopeConfig, inv_freq: &[f64], x: &[f64], p: f64, inverse: bool) -> Vec<f64> {
    let rd = cfg.rotary_dim;
    // Per element j: its frequency index and its rotate_half / rotate_every_two partner.
    let (freq_of, rotated): (Vec<usize>, Vec<f64>) = (0..rd)
        .map(|j| match cfg.layout {
            // emb = cat(freqs, freqs); rotate_half(x) = cat(-x2, x1)
            RopeLayout::SplitHalf => {
                let h = rd / 2;
                if j < h { (j, -x[j + h]) } else { (j - h, x[j - h]) }
            }
            // repeat_interleave(freqs, 2); rotate_every_two(x) = stack(-x[1::2], x[::2])
            RopeLayout::Interleaved => {
                if j % 2 == 0 {
                    (j / 2, -x[j + 1])
                } else {
                    (j / 2, x[j - 1])
                }
            }
        })
        .unzip();
    (0..rd)
        .map(|j| {
            let theta = p * inv_freq[freq_of[j]];
            let (sin, cos) = theta.sin_cos();
            if inverse { x[j] * cos - rotated[j] * sin } else { x[j] * cos + rotated[j] * sin }
        })
        .collect()
}
