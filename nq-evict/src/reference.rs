//! Naive oracles for every scorer and for [`select`](crate::select), written for clarity, not
//! speed: full attention matrices, explicit covariance and rotation matrices, `f64` arithmetic,
//! full sorts. The tests check the fast paths against them.

use crate::{
    Budget, Error, ExpectedAttention, GroupReduce, HeadNorm, ObservedAttention, Policy, Pool,
    Protect, Result, ScoreInput, Shape, Shortfall, Split,
};

fn row(x: &[f32], i: usize, d: usize) -> Vec<f64> {
    x[i * d..(i + 1) * d].iter().map(|&v| f64::from(v)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return vec![0.0; z.len()];
    }
    let e: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn reduce(heads: &[Vec<f64>], how: GroupReduce) -> Vec<f32> {
    let t = heads[0].len();
    (0..t)
        .map(|i| {
            let v = heads.iter().map(|h| h[i]);
            #[allow(clippy::cast_precision_loss)]
            let r = match how {
                GroupReduce::Mean => v.sum::<f64>() / heads.len() as f64,
                GroupReduce::Max => v.fold(f64::NEG_INFINITY, f64::max),
            };
            #[allow(clippy::cast_possible_truncation)]
            let r = r as f32;
            r
        })
        .collect()
}

/// Owned copy of the last `n` window queries of each head and their positions.
fn last_queries(input: &ScoreInput<'_>, n: Option<usize>) -> Result<(Vec<f32>, Vec<u32>)> {
    let dims = input.dims()?;
    let (w, d) = (dims.window, dims.d);
    let n = n.unwrap_or(w).min(w);
    let mut q = Vec::new();
    for h in 0..dims.group {
        for j in w - n..w {
            q.extend_from_slice(&input.queries[(h * w + j) * d..(h * w + j + 1) * d]);
        }
    }
    Ok((q, input.query_positions[w - n..].to_vec()))
}

fn norm_range(p: Protect, t: usize) -> std::ops::Range<usize> {
    let start = p.sinks.min(t);
    let end = t.saturating_sub(p.recent).max(start);
    if start < end { start..end } else { 0..t }
}

/// The full causal attention matrix `[w, t]` of query head `h`, `softmax(Q K^T / sqrt d)`
/// masked by positions.
///
/// # Errors
///
/// Shape errors of [`ScoreInput::dims`].
pub fn attention_matrix(input: &ScoreInput<'_>, h: usize) -> Result<Vec<Vec<f64>>> {
    let dims = input.dims()?;
    let (t, w, d) = (dims.tokens, dims.window, dims.d);
    #[allow(clippy::cast_precision_loss)]
    let scale = 1.0 / (d as f64).sqrt();
    Ok((0..w)
        .map(|j| {
            let q = row(input.queries, h * w + j, d);
            let z: Vec<f64> = (0..t)
                .map(|i| {
                    if input.key_positions[i] <= input.query_positions[j] {
                        dot(&q, &row(input.keys, i, d)) * scale
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            softmax(&z)
        })
        .collect())
}

/// [`ObservedAttention`] by its definition: full attention matrices, column sums, pooling,
/// normalization, group reduction.
///
/// # Errors
///
/// Shape errors of [`ScoreInput::dims`] and [`Error::NoQueries`].
pub fn observed_attention(input: &ScoreInput<'_>, cfg: &ObservedAttention) -> Result<Vec<f32>> {
    let (q, qp) = last_queries(input, cfg.window)?;
    let input = &ScoreInput { queries: &q, query_positions: &qp, ..*input };
    let dims = input.dims()?;
    if dims.group == 0 {
        return Err(Error::NoQueries { op: "reference::observed_attention" });
    }
    let t = dims.tokens;
    if t == 0 {
        return Ok(Vec::new());
    }
    let range = norm_range(cfg.protect, t);
    let r = cfg.kernel / 2;
    let mut heads = Vec::new();
    for h in 0..dims.group {
        let a = attention_matrix(input, h)?;
        let p_max = input.query_positions.iter().copied().max().unwrap_or(0);
        let c: Vec<f64> = input
            .query_positions
            .iter()
            .map(|&p| cfg.decay.map_or(1.0, |tau| (-f64::from(p_max - p) / f64::from(tau)).exp()))
            .collect();
        let s: Vec<f64> =
            (0..t).map(|i| a.iter().zip(&c).map(|(qrow, cj)| cj * qrow[i]).sum()).collect();
        let mut pooled = s.clone();
        for i in range.clone() {
            let nb: Vec<f64> =
                (i.saturating_sub(r)..=i + r).filter(|k| range.contains(k)).map(|k| s[k]).collect();
            #[allow(clippy::cast_precision_loss)]
            let v = match cfg.pool {
                Pool::Max => nb.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Pool::Avg => nb.iter().sum::<f64>() / nb.len() as f64,
            };
            pooled[i] = v;
        }
        if cfg.normalize {
            let sum: f64 = pooled[range.clone()].iter().sum();
            if sum > 0.0 {
                pooled.iter_mut().for_each(|x| *x /= sum);
            }
        }
        heads.push(pooled);
    }
    Ok(reduce(&heads, cfg.reduce))
}

/// [`ExpectedAttention`] by its formula: explicit `mu`, explicit `d x d` covariance
/// `Sigma`, then
/// `softmax(mu.k / sqrt d + c k^T Sigma k / 2d)` over the candidates.
///
/// # Errors
///
/// Shape errors of [`ScoreInput::dims`] and [`Error::NoQueries`].
pub fn expected_attention(input: &ScoreInput<'_>, cfg: &ExpectedAttention) -> Result<Vec<f32>> {
    let (q, qp) = last_queries(input, cfg.window)?;
    let input = &ScoreInput { queries: &q, query_positions: &qp, ..*input };
    let dims = input.dims()?;
    if dims.group == 0 {
        return Err(Error::NoQueries { op: "reference::expected_attention" });
    }
    let (t, w, d) = (dims.tokens, dims.window, dims.d);
    if t == 0 {
        return Ok(Vec::new());
    }
    let range = norm_range(cfg.protect, t);
    #[allow(clippy::cast_precision_loss)]
    let (wf, df) = (w as f64, d as f64);
    let mut heads = Vec::new();
    for h in 0..dims.group {
        let qs: Vec<Vec<f64>> = (0..w).map(|j| row(input.queries, h * w + j, d)).collect();
        let mut mu = vec![0.0; d];
        for q in &qs {
            for (m, x) in mu.iter_mut().zip(q) {
                *m += x / wf;
            }
        }
        let mut sigma = vec![vec![0.0; d]; d];
        for q in &qs {
            for a in 0..d {
                for b in 0..d {
                    sigma[a][b] += (q[a] - mu[a]) * (q[b] - mu[b]) / wf;
                }
            }
        }
        let z: Vec<f64> = (0..t)
            .map(|i| {
                let k = row(input.keys, i, d);
                let quad: f64 = (0..d).map(|a| k[a] * dot(&sigma[a], &k)).sum();
                dot(&mu, &k) / df.sqrt() + f64::from(cfg.covariance) * quad / (2.0 * df)
            })
            .collect();
        let p = softmax(&z[range.clone()]);
        let top = p.iter().copied().fold(0.0, f64::max);
        let mut s = vec![top; t];
        s[range.clone()].copy_from_slice(&p);
        heads.push(s);
    }
    Ok(reduce(&heads, cfg.reduce))
}

/// [`KeyKey`](crate::KeyKey): column means of the full `t x t` softmax of `K K^T / sqrt d`.
///
/// # Errors
///
/// Shape errors of [`ScoreInput::dims`].
pub fn key_key(input: &ScoreInput<'_>) -> Result<Vec<f32>> {
    let dims = input.dims()?;
    let (t, d) = (dims.tokens, dims.d);
    #[allow(clippy::cast_precision_loss)]
    let (scale, tf) = (1.0 / (d as f64).sqrt(), t as f64);
    let mut s = vec![0.0f64; t];
    for i in 0..t {
        let q = row(input.keys, i, d);
        let z: Vec<f64> = (0..t).map(|j| dot(&q, &row(input.keys, j, d)) * scale).collect();
        for (acc, a) in s.iter_mut().zip(softmax(&z)) {
            *acc += a / tf;
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(s.into_iter().map(|x| x as f32).collect())
}

/// [`KeyNorm`](crate::KeyNorm): `exp(-||k|| / sqrt d)`.
///
/// # Errors
///
/// Shape errors of [`ScoreInput::dims`].
pub fn key_norm(input: &ScoreInput<'_>) -> Result<Vec<f32>> {
    let dims = input.dims()?;
    #[allow(clippy::cast_precision_loss)]
    let df = dims.d as f64;
    #[allow(clippy::cast_possible_truncation)]
    Ok((0..dims.tokens)
        .map(|i| {
            let k = row(input.keys, i, dims.d);
            (-dot(&k, &k).sqrt() / df.sqrt()).exp() as f32
        })
        .collect())
}

/// Sort key of a score: NaN below everything, `-0.0 == +0.0`.
fn rank(x: f32) -> (bool, f64) {
    (!x.is_nan(), if x.is_nan() { 0.0 } else { f64::from(x) + 0.0 })
}

fn desc(a: (bool, f64), b: (bool, f64)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(b.1.total_cmp(&a.1))
}

/// [`select`](crate::select) by full sorts, and the pyramid by a linear scan per unit.
///
/// # Errors
///
/// As [`select`](crate::select), except that bad candidate scores under pooled splits are
/// not checked (the fast path's check is tested separately).
pub fn select(scores: &[f32], shape: Shape, policy: &Policy) -> Result<Vec<Vec<u32>>> {
    let n = shape.elements()?;
    if scores.len() != n {
        return Err(Error::Len {
            op: "reference::select",
            what: "scores",
            expected: n,
            got: scores.len(),
        });
    }
    let Shape { layers, heads, tokens: t } = shape;
    let start = policy.sinks.min(t);
    let end = t.saturating_sub(policy.recent).max(start);
    let p = t - (end - start);
    let mut b = match policy.budget {
        Budget::KeepFraction(f) | Budget::EvictFraction(f) if !(0.0..=1.0).contains(&f) => {
            return Err(Error::BadFraction { op: "reference::select", value: f });
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        Budget::KeepFraction(f) => (f64::from(f) * t as f64).round() as usize,
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        Budget::EvictFraction(f) => t - (f64::from(f) * t as f64).round() as usize,
        Budget::Tokens(k) => k.min(t),
    };
    if b < p {
        if policy.shortfall == Shortfall::Error {
            return Err(Error::BudgetBelowProtected {
                op: "reference::select",
                budget: b,
                protected: p,
            });
        }
        b = p;
    }
    let mut per_layer = vec![b; layers];
    if let Some(r) = policy.pyramid {
        per_layer = vec![p; layers];
        #[allow(clippy::cast_precision_loss)]
        let weight = |l: usize| {
            let x = if layers > 1 { l as f64 / (layers - 1) as f64 } else { 0.0 };
            f64::from(r) + (1.0 - f64::from(r)) * x
        };
        for _ in 0..layers * (b - p) {
            let mut best: Option<usize> = None;
            for l in (0..layers).filter(|&l| per_layer[l] < t) {
                #[allow(clippy::cast_precision_loss)]
                let better = best.is_none_or(|k| {
                    weight(l) * (per_layer[k] as f64 + 1.0)
                        > weight(k) * (per_layer[l] as f64 + 1.0)
                });
                if better {
                    best = Some(l);
                }
            }
            if let Some(l) = best {
                per_layer[l] += 1;
            }
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let protected: Vec<u32> = (0..start).chain(end..t).map(|i| i as u32).collect();
    // candidates of unit u sorted best first
    let sorted = |u: usize| -> Vec<usize> {
        let s = &scores[u * t..(u + 1) * t];
        let mut c: Vec<usize> = (start..end).collect();
        c.sort_by(|&x, &y| desc(rank(s[x]), rank(s[y])).then(x.cmp(&y)));
        c
    };
    let pooled = |units: Vec<usize>, b: usize| -> Vec<Vec<u32>> {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let m = ((f64::from(policy.min_head_fraction) * b as f64).round() as usize).clamp(p, b);
        let mut kept: Vec<Vec<u32>> = vec![protected.clone(); units.len()];
        let mut rest = Vec::new();
        for (k, &u) in units.iter().enumerate() {
            let s = &scores[u * t..(u + 1) * t];
            let sum: f64 = match policy.head_norm {
                HeadNorm::Candidates => {
                    (start..end).map(|i| s[i]).filter(|x| !x.is_nan()).map(f64::from).sum()
                }
                HeadNorm::All => s.iter().filter(|x| !x.is_nan()).map(|&x| f64::from(x)).sum(),
                HeadNorm::None => 1.0,
            };
            for (r, i) in sorted(u).into_iter().enumerate() {
                if r < m - p {
                    #[allow(clippy::cast_possible_truncation)]
                    kept[k].push(i as u32);
                } else {
                    let norm = if s[i].is_nan() {
                        f64::NAN
                    } else if sum > 0.0 {
                        f64::from(s[i]) / sum
                    } else {
                        0.0
                    };
                    rest.push((rank(norm as f32).0, norm + 0.0, rank(s[i]), k, i));
                }
            }
        }
        rest.sort_by(|x, y| {
            desc((x.0, if x.0 { x.1 } else { 0.0 }), (y.0, if y.0 { y.1 } else { 0.0 }))
                .then(desc(x.2, y.2))
                .then(x.3.cmp(&y.3))
                .then(x.4.cmp(&y.4))
        });
        for e in rest.into_iter().take(units.len() * (b - m)) {
            #[allow(clippy::cast_possible_truncation)]
            kept[e.3].push(e.4 as u32);
        }
        kept.iter_mut().for_each(|k| k.sort_unstable());
        kept
    };
    let mut out = Vec::new();
    match policy.split {
        Split::PerHead => {
            for (l, &bl) in per_layer.iter().enumerate() {
                for h in 0..heads {
                    let mut k = protected.clone();
                    #[allow(clippy::cast_possible_truncation)]
                    k.extend(sorted(l * heads + h).into_iter().take(bl - p).map(|i| i as u32));
                    k.sort_unstable();
                    out.push(k);
                }
            }
        }
        Split::PerLayer => {
            for (l, &bl) in per_layer.iter().enumerate() {
                out.extend(pooled((l * heads..(l + 1) * heads).collect(), bl));
            }
        }
        Split::Global => out.extend(pooled((0..layers * heads).collect(), b)),
    }
    Ok(out)
}
