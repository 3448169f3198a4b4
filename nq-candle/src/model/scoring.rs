//! Scoring helpers over logits: log-softmax, per-token NLL, perplexity, KL divergence.
//!
//! Reductions run in f64 on the host so that a 512 x 49152 logit matrix loses nothing to
//! summation order.

use candle_core::{D, DType, Tensor};

use crate::{Error, Result};

/// Log-softmax over the last dimension (`x - logsumexp(x)`), same shape and dtype as `logits`.
///
/// # Errors
/// A candle error (for example a rank-0 input).
///
/// # Examples
/// ```
/// use candle_core::{Device, Tensor};
/// let l = Tensor::new(&[[0f32, 0.0], [1.0, 1.0]], &Device::Cpu)?;
/// let p = nq_candle::log_softmax(&l)?.exp()?.to_vec2::<f32>()?;
/// assert_eq!(p, vec![vec![0.5, 0.5], vec![0.5, 0.5]]);
/// # Ok::<(), nq_candle::Error>(())
/// ```
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}

fn rows(op: &'static str, logits: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let (t, vocab) = logits.dims2().map_err(|_| Error::Shape {
        op,
        reason: format!("logits {:?} are not [t, vocab]", logits.dims()),
    })?;
    if t == 0 || vocab == 0 {
        return Err(Error::EmptyInput { op });
    }
    let flat = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((flat, t, vocab))
}

/// `log(sum(exp(row)))` in f64, stable.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = f64::from(max);
    let s: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + s.ln()
}

/// Negative log-likelihood of each target: `-log softmax(logits[i])[targets[i]]`, in nats.
/// Row `i` of `logits` (`[t, vocab]`) is the prediction for `targets[i]`.
///
/// # Errors
/// [`Error::Shape`] when `logits` is not 2-D or has a row count other than `targets.len()`;
/// [`Error::EmptyInput`]; [`Error::TokenOutOfRange`] for a target `>= vocab`.
///
/// # Examples
/// ```
/// use candle_core::{Device, Tensor};
/// let l = Tensor::new(&[[0f32, 0.0, 0.0, 0.0]], &Device::Cpu)?;
/// let nll = nq_candle::nll_from_logits(&l, &[2])?;
/// assert!((nll[0] - 4f64.ln()).abs() < 1e-12);
/// # Ok::<(), nq_candle::Error>(())
/// ```
pub fn nll_from_logits(logits: &Tensor, targets: &[u32]) -> Result<Vec<f64>> {
    const OP: &str = "nll_from_logits";
    let (flat, t, vocab) = rows(OP, logits)?;
    if targets.len() != t {
        return Err(Error::Shape {
            op: OP,
            reason: format!("{t} logit rows for {} targets", targets.len()),
        });
    }
    flat.chunks_exact(vocab)
        .zip(targets)
        .map(|(row, &y)| {
            let x =
                row.get(y as usize).ok_or(Error::TokenOutOfRange { op: OP, token: y, vocab })?;
            Ok(log_sum_exp(row) - f64::from(*x))
        })
        .collect()
}

/// Perplexity `exp(mean NLL)` of `targets` under `logits` (`[t, vocab]`, row `i` predicting
/// `targets[i]`).
///
/// # Errors
/// As [`nll_from_logits`].
///
/// # Examples
/// ```
/// use candle_core::{Device, Tensor};
/// // Uniform over 4 tokens: perplexity 4.
/// let l = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let ppl = nq_candle::perplexity_from_logits(&l, &[0, 1, 3])?;
/// assert!((ppl - 4.0).abs() < 1e-12);
/// # Ok::<(), nq_candle::Error>(())
/// ```
#[allow(clippy::cast_precision_loss)]
pub fn perplexity_from_logits(logits: &Tensor, targets: &[u32]) -> Result<f64> {
    let nll = nll_from_logits(logits, targets)?;
    Ok((nll.iter().sum::<f64>() / nll.len() as f64).exp())
}

/// Per-row KL divergence `KL(P || Q) = sum_v p_v (log p_v - log q_v)` in nats, where `P` and
/// `Q` are the softmax of `p_logits` and `q_logits` (both `[t, vocab]`). With `P` the baseline
/// and `Q` the compressed run this is the protocol's KL figure.
///
/// # Errors
/// [`Error::Shape`] when the shapes differ or are not 2-D; [`Error::EmptyInput`].
///
/// # Examples
/// ```
/// use candle_core::{Device, Tensor};
/// let p = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu)?;
/// assert_eq!(nq_candle::kl_divergence_from_logits(&p, &p)?, vec![0.0]);
/// # Ok::<(), nq_candle::Error>(())
/// ```
pub fn kl_divergence_from_logits(p_logits: &Tensor, q_logits: &Tensor) -> Result<Vec<f64>> {
    const OP: &str = "kl_divergence_from_logits";
    if p_logits.dims() != q_logits.dims() {
        return Err(Error::Shape {
            op: OP,
            reason: format!("{:?} vs {:?}", p_logits.dims(), q_logits.dims()),
        });
    }
    let (p, _, vocab) = rows(OP, p_logits)?;
    let (q, _, _) = rows(OP, q_logits)?;
    Ok(p.chunks_exact(vocab)
        .zip(q.chunks_exact(vocab))
        .map(|(pr, qr)| {
            let (lp, lq) = (log_sum_exp(pr), log_sum_exp(qr));
            pr.iter()
                .zip(qr)
                .map(|(&a, &b)| {
                    let la = f64::from(a) - lp;
                    let lb = f64::from(b) - lq;
                    la.exp() * (la - lb)
                })
                .sum::<f64>()
                .max(0.0)
        })
        .collect())
}
