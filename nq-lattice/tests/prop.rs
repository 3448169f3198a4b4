//! Property tests: the nearest-point decoder against brute force, including ties and
//! large magnitudes, and codec round trips on arbitrary input.

use std::sync::LazyLock;

use half::f16;
use nq_lattice::reference::{self, dist2, is_e8};
use nq_lattice::{FixedBits, FixedCodec, ScaleMode, VariableCodec, nearest_e8};
use proptest::prelude::*;

const EPS: f64 = f32::EPSILON as f64;

static ROOTS: LazyLock<Vec<[f64; 8]>> = LazyLock::new(reference::e8_roots);

static E8P: LazyLock<Vec<[f64; 8]>> = LazyLock::new(reference::e8p_words);

/// A lattice point from integers: `z (+ ½)`, with `z_0` adjusted for an even sum.
fn lattice_point(mut z: [i32; 8], half: bool) -> [f64; 8] {
    if z.iter().map(|&v| i64::from(v)).sum::<i64>() % 2 != 0 {
        z[0] += 1;
    }
    z.map(|v| f64::from(v) + if half { 0.5 } else { 0.0 })
}

/// Checks the decoder's output for `x`: in E8, idempotent, nearest (against brute force
/// and against the 240 root neighbours), within the covering radius.
fn check_nearest(x: [f32; 8]) -> Result<(), TestCaseError> {
    let y = nearest_e8(&x);
    let yd = y.map(f64::from);
    let xd = x.map(f64::from);
    prop_assert!(is_e8(&yd), "{y:?} not in E8");
    prop_assert_eq!(nearest_e8(&y), y);
    let d = dist2(&xd, &yd);
    let (_, best) = reference::nearest_e8_brute(&x);
    // Each candidate distance is a sum of 8 rounded squares (relative error 8ε) of errors
    // that are exact, except `x − ½` for |x_i| < ½ (absolute error 2^-25): 16ε(d + 1).
    let tol = 16.0 * EPS * (best + 1.0);
    prop_assert!(d <= best + tol, "x {x:?}: got {d}, brute force {best}");
    prop_assert!(d <= 1.0 + tol, "beyond the covering radius: {d}");
    for r in ROOTS.iter() {
        let n: [f64; 8] = std::array::from_fn(|i| yd[i] + r[i]);
        prop_assert!(dist2(&xd, &n) >= d - tol, "root neighbour {n:?} is closer");
    }
    Ok(())
}

fn coords() -> impl Strategy<Value = [i32; 8]> {
    prop::array::uniform8(-6i32..=6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nearest_e8_random(x in prop::array::uniform8(-8.0f32..8.0)) {
        check_nearest(x)?;
    }

    #[test]
    fn nearest_e8_large_magnitudes(
        z in prop::array::uniform8(-1_000_000i32..=1_000_000),
        half in any::<bool>(),
        e in prop::array::uniform8(-1.0f32..1.0),
    ) {
        let y = lattice_point(z, half);
        let x: [f32; 8] = std::array::from_fn(|i| (y[i] + f64::from(e[i])) as f32);
        check_nearest(x)?;
    }

    /// Midpoints between a lattice point and a root neighbour: exact ties at distance ½.
    #[test]
    fn nearest_e8_ties_between_neighbours(z in coords(), half in any::<bool>(), k in 0usize..240) {
        let y = lattice_point(z, half);
        let r = ROOTS[k];
        let x: [f32; 8] = std::array::from_fn(|i| (y[i] + r[i] / 2.0) as f32);
        check_nearest(x)?;
        let q = nearest_e8(&x).map(f64::from);
        prop_assert_eq!(dist2(&x.map(f64::from), &q), 0.5);
    }

    /// Deep holes (half of a norm-4 vector): many lattice points at distance exactly 1.
    #[test]
    fn nearest_e8_deep_holes(z in coords(), half in any::<bool>(), k in 0usize..240, j in 0usize..240) {
        let v: [f64; 8] = std::array::from_fn(|i| ROOTS[k][i] + ROOTS[j][i]);
        prop_assume!(dist2(&v, &[0.0; 8]) == 4.0);
        let y = lattice_point(z, half);
        let x: [f32; 8] = std::array::from_fn(|i| (y[i] + v[i] / 2.0) as f32);
        check_nearest(x)?;
        let q = nearest_e8(&x).map(f64::from);
        prop_assert_eq!(dist2(&x.map(f64::from), &q), 1.0);
    }

    /// The fast block encoder follows `reference::fixed_encode_brute`'s rule: its first
    /// stage is a nearest E8P word and its codeword is as close as the reference's, up to
    /// f32 rounding (for equal first stages: a different first stage is a near tie, after
    /// which the greedy second stages are not comparable).
    #[test]
    fn block_encoder_follows_the_brute_force_rule(
        x in prop::array::uniform8(-4.0f32..4.0),
        b in 0usize..3,
    ) {
        let bits = [FixedBits::B2, FixedBits::B3, FixedBits::B4][b];
        let xd = x.map(f64::from);
        // Distances are 8-term f32 sums of terms below (|x| + 4)²: 16 ε (|x| + 4)² each.
        let n = dist2(&xd, &[0.0; 8]).sqrt();
        let tol = 32.0 * EPS * (n + 4.0).powi(2);
        let (code, c) = bits.encode_block(&x);
        let cd = c.map(f64::from);
        prop_assert_eq!(reference::fixed_word(bits, &code), cd);
        let (ref_code, ref_c) = reference::fixed_encode_brute(bits, &E8P, &xd);
        let c1 = reference::e8p_word(u16::from_le_bytes([code[0], code[1]]));
        let r1 = E8P[usize::from(u16::from_le_bytes([ref_code[0], ref_code[1]]))];
        prop_assert!(dist2(&xd, &c1) <= dist2(&xd, &r1) + tol);
        if code[..2] == ref_code[..2] {
            prop_assert!(dist2(&xd, &cd) <= dist2(&xd, &ref_c) + tol, "{:?} vs {:?}", code, ref_code);
        }
    }

    /// Any finite input (tiny, huge, constant, sparse rows): never an error other than a
    /// scale overflow, never a non-finite output, zero rows exactly zero.
    #[test]
    fn fixed_codecs_never_emit_non_finite(
        raw in prop::collection::vec(prop_oneof![
            Just(0.0f32), -1.0f32..1.0, -3e4f32..3e4, -1e-20f32..1e-20, Just(7.0f32)
        ], 32..=96),
        b in 0usize..3,
        m in 0usize..3,
    ) {
        let dim = 16;
        let n = raw.len() / dim * dim;
        let x = &raw[..n];
        let bits = [FixedBits::B2, FixedBits::B3, FixedBits::B4][b];
        let mode = [ScaleMode::AbsMax, ScaleMode::Rms, ScaleMode::BestOf { candidates: 2 }][m];
        let codec = FixedCodec::new(bits, mode).unwrap();
        let rows = n / dim;
        let mut codes = vec![0u8; codec.code_len(rows, dim)];
        let mut scales = vec![f16::ZERO; rows];
        codec.encode_rows(x, dim, &mut codes, &mut scales).unwrap();
        let mut y = vec![f32::NAN; n];
        codec.decode_rows(&codes, &scales, dim, &mut y).unwrap();
        prop_assert!(y.iter().all(|v| v.is_finite()));
        for (r, row) in x.chunks_exact(dim).enumerate() {
            if row.iter().all(|&v| v == 0.0) {
                prop_assert_eq!(scales[r], f16::ZERO);
                prop_assert!(y[r * dim..(r + 1) * dim].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn variable_codec_round_trips_finitely(
        raw in prop::collection::vec(prop_oneof![Just(0.0f32), -1.0f32..1.0, -3e4f32..3e4], 16..=64),
        step in 0.05f32..4.0,
    ) {
        let dim = 8;
        let codec = VariableCodec::new(step, ScaleMode::Rms).unwrap();
        let (mut c, mut z, mut s) = (vec![], vec![], vec![]);
        let n = raw.len() / dim * dim;
        codec.encode_rows(&raw[..n], dim, &mut c, &mut z, &mut s).unwrap();
        let mut y = vec![f32::NAN; n];
        codec.decode_rows(&c, &z, &s, dim, &mut y).unwrap();
        prop_assert!(y.iter().all(|v| v.is_finite()));
        for (r, row) in raw[..n].chunks_exact(dim).enumerate() {
            if row.iter().all(|&v| v == 0.0) {
                prop_assert!(y[r * dim..(r + 1) * dim].iter().all(|&v| v == 0.0));
            }
        }
    }
}
