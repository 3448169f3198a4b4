//! Shared helpers: test data paths, real-model lookup with visible skips, a naive attention.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use nq_candle::{GgufTokenizer, LoadOptions, Model};

/// `tests/data/<name>`.
pub(crate) fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("data").join(name)
}

/// True when `NQ_CI` is set to anything but `0` (`.ci/run` and `cargo xtask ci` set it):
/// a test that needs a model or the corpus then fails instead of skipping.
pub(crate) fn in_ci() -> bool {
    std::env::var_os("NQ_CI").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The installed checkpoint `name`, or `None` after printing why the test is skipped; under
/// `NQ_CI` a missing model fails the test.
pub(crate) fn model_or_skip(name: &str) -> Option<PathBuf> {
    match nq_candle::model_path(name) {
        Ok(p) => Some(p),
        Err(e) => {
            assert!(!in_ci(), "NQ_CI is set, so a missing model fails the test: {e}");
            eprintln!("SKIP: {e}");
            None
        }
    }
}

/// SmolLM2 (dequantized to f32) and its tokenizer, loaded once for all tests.
pub(crate) fn smollm2() -> Option<&'static (Model, GgufTokenizer)> {
    static CELL: OnceLock<Option<(Model, GgufTokenizer)>> = OnceLock::new();
    CELL.get_or_init(|| {
        let path = model_or_skip("smollm2")?;
        let model = Model::from_gguf(&path, &Device::Cpu, LoadOptions::default()).unwrap();
        let tok = GgufTokenizer::from_gguf(&path).unwrap();
        Some((model, tok))
    })
    .as_ref()
}

/// Tiny random-weight model of `family` and its reference (tokens, logits [t][vocab]).
pub(crate) fn tiny(family: &str) -> (Model, Vec<u32>, Vec<Vec<f64>>) {
    let model = Model::from_gguf(
        &data(&format!("tiny_{family}.gguf")),
        &Device::Cpu,
        LoadOptions::default(),
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data(&format!("tiny_{family}.json"))).unwrap(),
    )
    .unwrap();
    let tokens = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect();
    let logits = json["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    (model, tokens, logits)
}

/// Row-major f32 contents of a 2-D tensor.
pub(crate) fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

/// Largest absolute difference between two equally shaped matrices, and the largest |a|.
pub(crate) fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut d = 0f32;
    let mut m = 0f32;
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (&x, &y) in ra.iter().zip(rb) {
            d = d.max((x - y).abs());
            m = m.max(x.abs());
        }
    }
    (d, m)
}

/// Naive attention in f64: q [hq][t][d] over keys/values [hkv][n][d] whose positions are
/// `key_pos`; query i sits at `q_pos[i]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn naive_attention(
    q: &[Vec<Vec<f32>>],
    k: &[Vec<Vec<f32>>],
    v: &[Vec<Vec<f32>>],
    q_pos: &[u32],
    key_pos: &[u32],
    scale: f64,
    window: Option<usize>,
    softcap: Option<f64>,
) -> Vec<Vec<Vec<f64>>> {
    let group = q.len() / k.len();
    q.iter()
        .enumerate()
        .map(|(h, qh)| {
            let (kh, vh) = (&k[h / group], &v[h / group]);
            qh.iter()
                .zip(q_pos)
                .map(|(qi, &p)| {
                    let scores: Vec<Option<f64>> = kh
                        .iter()
                        .zip(key_pos)
                        .map(|(kj, &kp)| {
                            let visible = kp <= p && window.is_none_or(|w| ((p - kp) as usize) < w);
                            visible.then(|| {
                                let s = qi
                                    .iter()
                                    .zip(kj)
                                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                    .sum::<f64>()
                                    * scale;
                                softcap.map_or(s, |c| c * (s / c).tanh())
                            })
                        })
                        .collect();
                    let max = scores.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> =
                        scores.iter().map(|s| s.map_or(0.0, |s| (s - max).exp())).collect();
                    let z: f64 = w.iter().sum();
                    let d = vh[0].len();
                    (0..d)
                        .map(|c| {
                            w.iter().zip(vh).map(|(&wj, vj)| wj * f64::from(vj[c])).sum::<f64>() / z
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}
