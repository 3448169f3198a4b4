//! Known answers. Inverse frequencies for `head_dim = rotary_dim = 8`, `theta = 10000`, where
//! the plain frequencies are `10000^(-2k/8) = 10^-k = [1, 0.1, 0.01, 0.001]`
//! (wavelengths `2π 10^k = 6.28, 62.8, 628.3, 6283`). Each scaled value below is derived by
//! hand from the HF formula (and checked with Python's `math`).
use nq_rope::{Rope, RopeConfig, RopeLayout, RopeScaling, reference};

fn freqs(scaling: RopeScaling) -> (Vec<f64>, f64) {
    let rope = Rope::new(RopeConfig::new(8, 10_000.0).with_scaling(scaling)).expect("valid");
    let fast = (rope.inv_freqs().to_vec(), rope.attention_factor());
    let naive = reference::inv_freqs(rope.config()).expect("valid");
    assert_close(&fast.0, &naive.0);
    assert!((fast.1 - naive.1).abs() <= 4.0 * f64::EPSILON * naive.1);
    fast
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        // A few f64 roundings of pow / division.
        assert!((g - w).abs() <= 8.0 * f64::EPSILON * w.abs(), "{got:?} != {want:?}");
    }
}

#[test]
fn plain_and_linear() {
    assert_close(&freqs(RopeScaling::None).0, &[1.0, 0.1, 0.01, 0.001]);
    // Linear: divided by the factor.
    let (f, af) = freqs(RopeScaling::Linear { factor: 4.0 });
    assert_close(&f, &[0.25, 0.025, 0.0025, 0.00025]);
    assert_eq!(af, 1.0);
}

/// llama3 with factor 8, low 1, high 4, original 1024: low-frequency cutoff wavelength
/// 1024, high-frequency cutoff 256. k = 0, 1 (6.28, 62.8 < 256) are kept; k = 3 (6283 > 1024)
/// is divided by 8; k = 2 (628.3) is smoothed with `s = (1024 / 628.3 - 1) / 3 = 0.2099155`:
/// `0.01 ((1 - s) / 8 + s) = 0.003086761`.
#[test]
fn llama3() {
    let (f, af) = freqs(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 1024,
    });
    assert_close(&f, &[1.0, 0.1, 0.003_086_760_967_011_274, 0.000_125]);
    assert_eq!(af, 1.0);
}

/// YaRN factor 4, original 4096: `corr(32) = 8 ln(4096 / 64π) / (2 ln 10^4) = 1.309 -> 1`,
/// `corr(1) = 8 ln(4096 / 2π) / (2 ln 10^4) = 2.814 -> 3`; ramp over k = 0..4 is
/// `[0, 0, 0.5, 1]`, so k = 0, 1 extrapolate, k = 3 interpolates (`/4`) and k = 2 is half way:
/// `0.5 (0.01 / 4) + 0.5 (0.01) = 0.00625`. Attention factor `0.1 ln 4 + 1 = 1.1386294`.
/// Without truncation the ramp is `(k - 1.30903) / 1.50515`, giving `0.006556971521129435`.
#[test]
fn yarn() {
    let (f, af) = freqs(RopeScaling::yarn(4.0, 4096));
    assert_close(&f, &[1.0, 0.1, 0.006_25, 0.000_25]);
    assert!((af - 1.138_629_436_111_989).abs() < 1e-15);

    let untruncated = RopeScaling::Yarn {
        factor: 4.0,
        original_max_position: 4096,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: None,
        mscale_all_dim: None,
        attention_factor: None,
        truncate: false,
    };
    assert_close(&freqs(untruncated).0, &[1.0, 0.1, 0.006_556_971_521_129_435, 0.000_25]);
}

/// Attention factor rules: explicit value wins; DeepSeek's `m(40, 1) / m(40, 0.5)` with
/// `m(s, k) = 0.1 k ln s + 1` is `1.36889 / 1.18444 = 1.1557220`; a zero mscale falls back to
/// `m(factor, 1)`; factor <= 1 gives 1.
#[test]
fn yarn_attention_factor() {
    let with = |factor: f64, mscale, mscale_all_dim, attention_factor| {
        freqs(RopeScaling::Yarn {
            factor,
            original_max_position: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate: true,
        })
        .1
    };
    assert_eq!(with(40.0, Some(1.0), Some(0.5), Some(0.75)), 0.75);
    assert!((with(40.0, Some(1.0), Some(0.5), None) - 1.155_721_990_196_260_8).abs() < 1e-15);
    assert!((with(4.0, Some(1.0), Some(0.0), None) - 1.138_629_436_111_989).abs() < 1e-15);
    assert_eq!(with(1.0, None, None, None), 1.0);
}

/// Dynamic NTK factor 2, original 1024, seq 2048: `theta' = 10^4 (2 * 2 - 1)^(8/6)
/// = 10^4 3^(4/3)`, so `inv_freq_k = theta'^(-k/4) = 10^-k 3^(-k/3)`. At or below the original
/// length nothing changes.
#[test]
fn dynamic_ntk() {
    let (f, _) =
        freqs(RopeScaling::DynamicNtk { factor: 2.0, original_max_position: 1024, seq_len: 2048 });
    assert_close(&f, &[1.0, 0.069_336_127_435_063_48, 0.004_807_498_567_691_362, 0.001 / 3.0]);
    let (f, _) =
        freqs(RopeScaling::DynamicNtk { factor: 2.0, original_max_position: 1024, seq_len: 512 });
    assert_close(&f, &[1.0, 0.1, 0.01, 0.001]);
}

/// Position 1 turns pair k by `inv_freq_k` radians; the unit vector on the first slot of pair
/// 0 lands on `(cos 1, sin 1)` in that pair's slots, per layout. Position 0 is the identity
/// and the partial-rotary tail never moves.
#[test]
fn rotation_by_hand() {
    let (c, s) = (1f64.cos() as f32, 1f64.sin() as f32);
    for (layout, partner) in [(RopeLayout::SplitHalf, 2), (RopeLayout::Interleaved, 1)] {
        let rope =
            Rope::new(RopeConfig::new(6, 10_000.0).with_rotary_dim(4).with_layout(layout)).unwrap();
        let mut x = [1.0f32, 0.0, 0.0, 0.0, 7.0, -7.0];
        rope.apply_row(&mut x, 1).unwrap();
        let mut want = [0.0f32, 0.0, 0.0, 0.0, 7.0, -7.0];
        want[0] = c;
        want[partner] = s;
        assert_eq!(x, want, "{layout:?}");
        let mut y = [0.3f32, -1.5, 2.5, 9.0, 7.0, -7.0];
        rope.apply_row(&mut y, 0).unwrap();
        assert_eq!(y, [0.3, -1.5, 2.5, 9.0, 7.0, -7.0]);
    }
}
