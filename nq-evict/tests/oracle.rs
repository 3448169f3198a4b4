//! Fast paths against the naive oracles of `nq_evict::reference`, at sizes that straddle the
//! kernel's 8-key blocks and 4-query tiles.
//!
//! Tolerances are relative, per score, derived from the rounding of each step (eps = f32 eps):
//! a logit `q.k / sqrt d` summed in f32 is off by at most `(d + 2) eps ||q|| ||k|| / sqrt d`;
//! exponentials double that (numerator and normalizer); the window sum adds `w eps`, pooling
//! `kernel eps`, the group mean `group eps`; normalizing by a sum of such values doubles the
//! relative error. The bounds below are those sums with a factor 2 of slack.

use nq_evict::reference;
use nq_evict::{
    Blend, ExpectedAttention, GroupReduce, KeyKey, KeyNorm, ObservedAttention, Pool, Protect,
    Scorer, ValueNorm,
};

use crate::common::{Case, assert_close, prefill};

const EPS: f32 = f32::EPSILON;

/// (t, w, group, d): t around multiples of 8, w around multiples of 4, odd and real head dims.
const SIZES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (7, 3, 1, 2),
    (8, 4, 3, 7),
    (9, 5, 2, 8),
    (33, 8, 3, 16),
    (100, 13, 3, 64),
    (130, 32, 1, 128),
];

pub(crate) fn observed_bound(c: &Case, cfg: &ObservedAttention) -> f32 {
    let d = c.d as f32;
    let l = Case::max_norm(&c.queries, c.d) * Case::max_norm(&c.keys, c.d) / d.sqrt();
    let rho = (2.0 * (d + 2.0) * l + (c.w() + cfg.kernel + c.group()) as f32 + 12.0) * EPS;
    let rho = if cfg.normalize { 2.0 * rho } else { rho };
    2.0 * rho
}

#[test]
fn observed_matches_full_attention_matrix() {
    let configs = [
        ObservedAttention {
            kernel: 1,
            normalize: false,
            protect: Protect::NONE,
            ..Default::default()
        },
        ObservedAttention { pool: Pool::Avg, kernel: 5, ..Default::default() },
        ObservedAttention {
            pool: Pool::Max,
            kernel: 7,
            reduce: GroupReduce::Max,
            ..Default::default()
        },
        ObservedAttention { window: Some(5), kernel: 3, ..Default::default() },
        ObservedAttention { decay: Some(3.0), kernel: 1, normalize: false, ..Default::default() },
        ObservedAttention {
            pool: Pool::Max,
            kernel: 3,
            normalize: false,
            protect: Protect { sinks: 1, recent: 2 },
            ..Default::default()
        },
    ];
    for (n, &(t, w, group, d)) in SIZES.iter().enumerate() {
        let c = prefill(100 + n as u64, t, w, group, d);
        for cfg in &configs {
            let mut fast = vec![f32::NAN; t];
            cfg.score(&c.input(), &mut fast).unwrap();
            let slow = reference::observed_attention(&c.input(), cfg).unwrap();
            assert_close(&fast, &slow, observed_bound(&c, cfg), &format!("{cfg:?} t={t} w={w}"));
        }
    }
}

#[test]
fn observed_with_scattered_positions_matches_reference() {
    // A compacted cache: positions with gaps, window queries between cached tokens, so the
    // causal mask cuts through the middle of the key axis.
    let mut c = prefill(7, 40, 6, 3, 16);
    c.key_positions = (0..40).map(|i| i * 3 + (i % 2)).collect();
    c.query_positions = vec![30, 100, 61, 200, 2, 119];
    let cfg = ObservedAttention { kernel: 3, ..Default::default() };
    let mut fast = vec![0.0; 40];
    cfg.score(&c.input(), &mut fast).unwrap();
    let slow = reference::observed_attention(&c.input(), &cfg).unwrap();
    assert_close(&fast, &slow, observed_bound(&c, &cfg), "scattered positions");
}

pub(crate) fn expected_bound(c: &Case, cfg: &ExpectedAttention) -> f32 {
    let d = c.d as f32;
    let (q, k) = (Case::max_norm(&c.queries, c.d), Case::max_norm(&c.keys, c.d));
    // ||mu|| <= max ||q||, ||q_j - mu|| <= 2 max ||q||
    let b = q * k / d.sqrt() + cfg.covariance * 4.0 * q * q * k * k / (2.0 * d);
    let rho = (4.0 * (d + 8.0) * b + c.group() as f32 + 8.0) * EPS;
    2.0 * rho
}

#[test]
fn expected_matches_direct_formula() {
    for (n, &(t, w, group, d)) in SIZES.iter().enumerate() {
        let c = prefill(200 + n as u64, t, w, group, d);
        let configs = [
            ExpectedAttention { protect: Protect::NONE, ..Default::default() },
            ExpectedAttention { covariance: 0.0, reduce: GroupReduce::Max, ..Default::default() },
            ExpectedAttention { window: Some(3), ..Default::default() },
            ExpectedAttention { covariance: 0.5, window: Some(1), ..Default::default() },
        ];
        for cfg in &configs {
            let mut fast = vec![f32::NAN; t];
            cfg.score(&c.input(), &mut fast).unwrap();
            let slow = reference::expected_attention(&c.input(), cfg).unwrap();
            assert_close(
                &fast,
                &slow,
                expected_bound(&c, cfg),
                &format!("{cfg:?} t={t} w={w} d={d}"),
            );
        }
    }
}

#[test]
fn key_key_matches_full_matrix() {
    for (n, &(t, _, _, d)) in SIZES.iter().enumerate() {
        let c = prefill(300 + n as u64, t, 1, 1, d);
        let k = Case::max_norm(&c.keys, d);
        let rho = (2.0 * (d as f32 + 2.0) * k * k / (d as f32).sqrt() + t as f32 + 8.0) * EPS;
        let mut fast = vec![f32::NAN; t];
        KeyKey.score(&c.input(), &mut fast).unwrap();
        let slow = reference::key_key(&c.input()).unwrap();
        assert_close(&fast, &slow, 2.0 * rho, &format!("key-key t={t} d={d}"));
    }
}

#[test]
fn key_norm_and_value_norm_match_reference() {
    for (n, &(t, w, group, d)) in SIZES.iter().enumerate() {
        let c = prefill(400 + n as u64, t, w, group, d);
        let k = Case::max_norm(&c.keys, d);
        let rho = ((d as f32 + 2.0) * k / (d as f32).sqrt() + 2.0) * EPS;
        let mut fast = vec![f32::NAN; t];
        KeyNorm.score(&c.input(), &mut fast).unwrap();
        let slow = reference::key_norm(&c.input()).unwrap();
        assert_close(&fast, &slow, 2.0 * rho, "key norm");
        // value norm on top: (s + eps) * ||v||, one more norm of d terms
        let vn = ValueNorm { inner: KeyNorm, epsilon: 0.25 };
        vn.score(&c.input(), &mut fast).unwrap();
        let weighted: Vec<f32> = slow
            .iter()
            .zip(c.values.chunks_exact(d))
            .map(|(s, v)| {
                let n: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                ((f64::from(*s) + 0.25) * n) as f32
            })
            .collect();
        assert_close(&fast, &weighted, 2.0 * rho + 2.0 * (d as f32 + 4.0) * EPS, "value norm");
    }
}

#[test]
fn blend_is_the_weighted_mix_of_normalized_parts() {
    let c = prefill(11, 100, 13, 3, 64);
    let protect = Protect { sinks: 2, recent: 13 };
    let obs = ObservedAttention { protect, ..Default::default() };
    let exp = ExpectedAttention { protect, ..Default::default() };
    let blend = Blend { a: obs, b: exp.clone(), weight: 0.3, protect };
    let mut fast = vec![0.0; 100];
    blend.score(&c.input(), &mut fast).unwrap();
    let a = reference::observed_attention(&c.input(), &obs).unwrap();
    let b = reference::expected_attention(&c.input(), &exp).unwrap();
    let range = protect.candidates(100);
    let sa: f64 = a[range.clone()].iter().map(|&x| f64::from(x)).sum();
    let sb: f64 = b[range].iter().map(|&x| f64::from(x)).sum();
    let mix: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (0.7 * f64::from(x) / sa + 0.3 * f64::from(y) / sb) as f32)
        .collect();
    let rho = 2.0 * observed_bound(&c, &obs) + 2.0 * expected_bound(&c, &exp);
    assert_close(&fast, &mix, rho, "blend");
}

/// The RoPE recipe of [`ExpectedAttention`]'s docs: scoring the rows `A q_j` (here `A` is a
/// scaled rotation per interleaved pair, the shape `nq_rope::Rope::apply_mean` gives) equals
/// kvpress's formula with `mu -> A mu` and `Sigma -> A Sigma A^T` taken from the untransformed
/// queries, written out below with explicit `d x d` matrices in f64.
#[test]
fn expected_on_transformed_queries_has_the_transformed_statistics() {
    let (t, w, group, d) = (40, 6, 2, 16);
    let c = prefill(31, t, w, group, d);
    let mut a = vec![vec![0.0f64; d]; d];
    for k in 0..d / 2 {
        let (r, th) = (1.0 / (1.0 + k as f64), 0.3 * k as f64 + 0.1);
        let (s, cs) = th.sin_cos();
        let (i, j) = (2 * k, 2 * k + 1);
        (a[i][i], a[i][j], a[j][i], a[j][j]) = (r * cs, -r * s, r * s, r * cs);
    }
    let mat_vec = |m: &[Vec<f64>], x: &[f64]| -> Vec<f64> {
        m.iter().map(|r| r.iter().zip(x).map(|(p, q)| p * q).sum()).collect()
    };
    let mut moved = c.clone();
    for (row, q) in moved.queries.chunks_exact_mut(d).zip(c.queries.chunks_exact(d)) {
        let q: Vec<f64> = q.iter().map(|&v| f64::from(v)).collect();
        for (dst, v) in row.iter_mut().zip(mat_vec(&a, &q)) {
            *dst = v as f32;
        }
    }
    let cfg = ExpectedAttention { protect: Protect::NONE, ..Default::default() };
    let mut fast = vec![f32::NAN; t];
    cfg.score(&moved.input(), &mut fast).unwrap();

    let mut want = vec![0.0f64; t];
    for h in 0..group {
        let qs: Vec<Vec<f64>> = (0..w)
            .map(|j| c.queries[(h * w + j) * d..][..d].iter().map(|&v| f64::from(v)).collect())
            .collect();
        let mu: Vec<f64> =
            (0..d).map(|i| qs.iter().map(|q| q[i]).sum::<f64>() / w as f64).collect();
        let sigma: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| {
                        qs.iter().map(|q| (q[i] - mu[i]) * (q[j] - mu[j])).sum::<f64>() / w as f64
                    })
                    .collect()
            })
            .collect();
        let a_mu = mat_vec(&a, &mu);
        // A Sigma A^T, entry (i, j) = sum_kl A_ik Sigma_kl A_jl
        let a_sigma_at: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| {
                        (0..d)
                            .map(|k| (0..d).map(|l| a[i][k] * sigma[k][l] * a[j][l]).sum::<f64>())
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let z: Vec<f64> = c
            .keys
            .chunks_exact(d)
            .map(|k| {
                let k: Vec<f64> = k.iter().map(|&v| f64::from(v)).collect();
                let quad: f64 = mat_vec(&a_sigma_at, &k).iter().zip(&k).map(|(p, q)| p * q).sum();
                a_mu.iter().zip(&k).map(|(p, q)| p * q).sum::<f64>() / (d as f64).sqrt()
                    + quad / (2.0 * d as f64)
            })
            .collect();
        let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (o, v) in want.iter_mut().zip(e) {
            *o += v / sum / group as f64;
        }
    }
    let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    assert_close(&fast, &want, expected_bound(&moved, &cfg), "A-transformed queries");
}
