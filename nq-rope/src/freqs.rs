//! Inverse frequencies and the attention factor of a validated config, in f64.

use std::f64::consts::PI;

use crate::{RopeConfig, RopeScaling};

/// `(inv_freq, attention_factor)` for a config that passed [`RopeConfig::validate`].
pub(crate) fn inv_freqs(cfg: &RopeConfig) -> (Vec<f64>, f64) {
    let dim = cfg.rotary_dim as f64;
    let base = |theta: f64| -> Vec<f64> {
        (0..cfg.rotary_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / dim)).collect()
    };
    match cfg.scaling {
        RopeScaling::None => (base(cfg.theta), 1.0),
        RopeScaling::Linear { factor } => {
            (base(cfg.theta).into_iter().map(|f| f / factor).collect(), 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let old = original_max_position as f64;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let scaled = base(cfg.theta)
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let s = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - s) * f / factor + s * f
                    }
                })
                .collect();
            (scaled, 1.0)
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
            let ln_base = cfg.theta.ln();
            let corr = |rot: f64| {
                dim * (original_max_position as f64 / (rot * 2.0 * PI)).ln() / (2.0 * ln_base)
            };
            let (mut low, mut high) = (corr(beta_fast), corr(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001;
            }
            let scaled = base(cfg.theta)
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    (f / factor) * (1.0 - extrapolation) + f * extrapolation
                })
                .collect();
            let m =
                |scale: f64, k: f64| if scale <= 1.0 { 1.0 } else { 0.1 * k * scale.ln() + 1.0 };
            let af = match (attention_factor, mscale, mscale_all_dim) {
                (Some(a), _, _) => a,
                (None, Some(a), Some(b)) if a != 0.0 && b != 0.0 => m(factor, a) / m(factor, b),
                _ => m(factor, 1.0),
            };
            (scaled, af)
        }
        RopeScaling::DynamicNtk { factor, original_max_position, seq_len } => {
            let max = original_max_position as f64;
            let seq = (seq_len as f64).max(max);
            let theta = cfg.theta * (factor * seq / max - (factor - 1.0)).powf(dim / (dim - 2.0));
            (base(theta), 1.0)
        }
    }
}
