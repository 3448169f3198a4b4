//! Every `Error` variant is reachable, and reported before anything is written.

use half::f16;
use nq_lattice::{Error, FixedBits, FixedCodec, ScaleMode, VariableCodec};

fn codec() -> FixedCodec {
    FixedCodec::new(FixedBits::B2, ScaleMode::Rms).expect("valid codec")
}

#[test]
fn dim_not_a_multiple_of_8() {
    let c = codec();
    let mut codes = vec![0u8; 2];
    let mut scales = vec![f16::ZERO; 1];
    for dim in [0usize, 12] {
        let r = c.encode_rows(&[1.0; 12], dim, &mut codes, &mut scales);
        assert!(matches!(r, Err(Error::Dim { dim: d, .. }) if d == dim), "{r:?}");
    }
    let mut out = vec![0.0; 4];
    assert!(matches!(
        c.dot_rows(&[1.0; 12], &codes, &scales, &mut out),
        Err(Error::Dim { dim: 12, .. })
    ));
    assert!(matches!(
        c.axpy_rows(&[1.0], &codes, &scales, &mut out),
        Err(Error::Dim { dim: 4, .. })
    ));
    assert!(matches!(c.decode_rows(&codes, &scales, 9, &mut out), Err(Error::Dim { dim: 9, .. })));
    let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
    let r = v.encode_rows(&[1.0; 8], 4, &mut vec![], &mut vec![], &mut vec![]);
    assert!(matches!(r, Err(Error::Dim { dim: 4, .. })));
}

#[test]
fn input_not_a_whole_number_of_rows() {
    let mut codes = vec![0u8; 4];
    let mut scales = vec![f16::ZERO; 1];
    let r = codec().encode_rows(&[1.0; 24], 16, &mut codes, &mut scales);
    assert!(matches!(r, Err(Error::NotMultiple { len: 24, dim: 16, .. })), "{r:?}");
}

#[test]
fn buffer_lengths_must_match_the_shape() {
    let c = codec();
    let x = [1.0f32; 16];
    let mut scales = vec![f16::ZERO; 2];
    let r = c.encode_rows(&x, 8, &mut [0u8; 3], &mut scales);
    assert!(matches!(r, Err(Error::Len { what: "codes", expected: 4, got: 3, .. })), "{r:?}");
    let r = c.encode_rows(&x, 8, &mut [0u8; 4], &mut scales[..1]);
    assert!(matches!(r, Err(Error::Len { what: "scales", expected: 2, got: 1, .. })), "{r:?}");
    let r = c.decode_rows(&[0u8; 4], &scales, 8, &mut [0.0; 15]);
    assert!(matches!(r, Err(Error::Len { what: "out", expected: 16, got: 15, .. })), "{r:?}");
    let r = c.dot_rows(&[0.0; 8], &[0u8; 4], &scales, &mut [0.0; 3]);
    assert!(matches!(r, Err(Error::Len { what: "out", expected: 2, got: 3, .. })), "{r:?}");
    let r = c.axpy_rows(&[1.0; 2], &[0u8; 4], &scales[..1], &mut [0.0; 8]);
    assert!(matches!(r, Err(Error::Len { what: "scales", expected: 2, got: 1, .. })), "{r:?}");
    let r = c.axpy_rows(&[1.0; 2], &[0u8; 5], &scales, &mut [0.0; 8]);
    assert!(matches!(r, Err(Error::Len { what: "codes", expected: 4, got: 5, .. })), "{r:?}");
    let r = nq_lattice::widen_f16(&scales, &mut [0.0; 3]);
    assert!(matches!(r, Err(Error::Len { what: "dst", expected: 2, got: 3, .. })), "{r:?}");
    let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
    let r = v.decode_rows(&[0u8; 1], &[0; 8], &[f16::ONE; 1], 8, &mut [0.0; 7]);
    assert!(matches!(r, Err(Error::Len { what: "out", .. })), "{r:?}");
    let r = v.decode_rows(&[0u8; 2], &[0; 8], &[f16::ONE; 1], 8, &mut [0.0; 8]);
    assert!(matches!(r, Err(Error::Len { what: "cosets", .. })), "{r:?}");
    let r = v.decode_rows(&[0u8; 1], &[0; 9], &[f16::ONE; 1], 8, &mut [0.0; 8]);
    assert!(matches!(r, Err(Error::Len { what: "coords", .. })), "{r:?}");
}

#[test]
fn non_finite_inputs_are_rejected_before_writing() {
    let c = codec();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = [0.5f32; 16];
        x[11] = bad;
        let mut codes = [7u8; 4];
        let mut scales = [f16::ONE; 2];
        let r = c.encode_rows(&x, 8, &mut codes, &mut scales);
        assert!(matches!(r, Err(Error::NonFinite { what: "x", index: 11, .. })), "{r:?}");
        assert_eq!((codes, scales), ([7u8; 4], [f16::ONE; 2]));
        let mut out = [3.0f32; 1];
        let r = c.dot_rows(&x[8..], &[0u8; 2], &[f16::ONE], &mut out);
        assert!(matches!(r, Err(Error::NonFinite { what: "query", index: 3, .. })), "{r:?}");
        assert_eq!(out, [3.0]);
        let r = c.axpy_rows(&[bad], &[0u8; 2], &[f16::ONE], &mut [0.0; 8]);
        assert!(matches!(r, Err(Error::NonFinite { what: "weights", index: 0, .. })), "{r:?}");
        let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
        let (mut a, mut b, mut s) = (vec![9u8], vec![], vec![]);
        let r = v.encode_rows(&x, 8, &mut a, &mut b, &mut s);
        assert!(matches!(r, Err(Error::NonFinite { index: 11, .. })), "{r:?}");
        assert_eq!(a, [9]);
    }
}

#[test]
fn scales_above_f16_range_overflow() {
    let x = [3e5f32; 8];
    for mode in [ScaleMode::AbsMax, ScaleMode::Rms, ScaleMode::BestOf { candidates: 2 }] {
        let c = FixedCodec::new(FixedBits::B2, mode).unwrap();
        let r = c.encode_rows(&x, 8, &mut [0u8; 2], &mut [f16::ZERO; 1]);
        assert!(matches!(r, Err(Error::ScaleOverflow { row: 0, .. })), "{mode:?}: {r:?}");
    }
    let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
    let (mut a, mut b, mut s) = (vec![], vec![], vec![]);
    let mut x2 = [0.0f32; 16];
    x2[8..].fill(1e5);
    let r = v.encode_rows(&x2, 8, &mut a, &mut b, &mut s);
    assert!(matches!(r, Err(Error::ScaleOverflow { row: 1, .. })), "{r:?}");
    assert!(a.is_empty() && b.is_empty() && s.is_empty(), "partial output left behind");
}

#[test]
fn corrupt_scales_are_rejected() {
    let c = codec();
    for bad in [f16::NAN, f16::INFINITY, f16::from_f32(-1.0)] {
        let scales = [f16::ONE, bad];
        let r = c.decode_rows(&[0u8; 4], &scales, 8, &mut [0.0; 16]);
        assert!(matches!(r, Err(Error::BadScale { row: 1, .. })), "{r:?}");
        let r = c.dot_rows(&[0.0; 8], &[0u8; 4], &scales, &mut [0.0; 2]);
        assert!(matches!(r, Err(Error::BadScale { row: 1, .. })), "{r:?}");
        let r = c.axpy_rows(&[1.0; 2], &[0u8; 4], &scales, &mut [0.0; 8]);
        assert!(matches!(r, Err(Error::BadScale { row: 1, .. })), "{r:?}");
        let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
        let r = v.decode_rows(&[0u8; 2], &[0; 16], &scales, 8, &mut [0.0; 16]);
        assert!(matches!(r, Err(Error::BadScale { row: 1, .. })), "{r:?}");
    }
}

#[test]
fn parameters_out_of_range() {
    for candidates in [0u8, 17] {
        let r = FixedCodec::new(FixedBits::B3, ScaleMode::BestOf { candidates });
        assert!(matches!(r, Err(Error::Param { what: "BestOf candidates", .. })), "{r:?}");
    }
    for step in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-6, 1e6] {
        let r = VariableCodec::new(step, ScaleMode::Rms);
        assert!(matches!(r, Err(Error::Param { what: "step", .. })), "{step}: {r:?}");
    }
    let r = VariableCodec::new(1.0, ScaleMode::BestOf { candidates: 4 });
    assert!(matches!(r, Err(Error::Param { what: "BestOf candidates", .. })), "{r:?}");
}

#[test]
fn lattice_coordinates_beyond_exact_range() {
    // A spike in an otherwise tiny row: |x| / (step * rms) exceeds 2^21.
    let v = VariableCodec::new(1.0 / 65536.0, ScaleMode::Rms).unwrap();
    let mut x = vec![0.0f32; 4096];
    x[5] = 1.0;
    let r = v.encode_rows(&x, 4096, &mut vec![], &mut vec![], &mut vec![]);
    assert!(matches!(r, Err(Error::CoordOverflow { row: 0, .. })), "{r:?}");
}

#[test]
fn coset_symbols_must_be_bits() {
    let v = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
    let r = v.decode_rows(&[0, 2], &[0; 16], &[f16::ONE], 16, &mut [0.0; 16]);
    assert!(matches!(r, Err(Error::Coset { index: 1, value: 2, .. })), "{r:?}");
}
