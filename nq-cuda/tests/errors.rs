//! Every `CudaError` variant a caller can provoke with bad input is returned, not a panic.

use half::f16;
use nq_core::{Encoded, Rotation, RowOps, Rows};
use nq_cuda::CudaError;
use nq_lattice::{FixedBits, FixedCodec, ScaleMode};

use crate::gpu;

#[test]
fn shape_mismatches_are_len_errors() {
    let Some(gpu) = gpu() else { return };
    let rows = Rows::new(4, 64).unwrap();
    let mut buf = gpu.upload(&[0.0; 255]).unwrap();
    let rot = Rotation::new(64, 1).unwrap();
    let err = gpu.rotate(&mut buf, rows, &rot, false).unwrap_err();
    assert!(matches!(err, CudaError::Len { what: "buffer", got: 255, expected: 256, .. }), "{err}");
    let mut buf = gpu.upload(&[0.0; 256]).unwrap();
    let wrong = Rotation::new(128, 1).unwrap();
    let err = gpu.rotate(&mut buf, rows, &wrong, false).unwrap_err();
    assert!(
        matches!(err, CudaError::Len { what: "rotation", got: 128, expected: 64, .. }),
        "{err}"
    );

    let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap();
    let enc = Encoded { codes: vec![0; 63], scales: vec![f16::ONE; 4] };
    let err = gpu.decode(&enc, rows, &codec).unwrap_err();
    assert!(matches!(err, CudaError::Len { what: "codes", got: 63, expected: 64, .. }), "{err}");
    let enc = Encoded { codes: vec![0; 64], scales: vec![f16::ONE; 3] };
    let err = gpu.decode(&enc, rows, &codec).unwrap_err();
    assert!(matches!(err, CudaError::Len { what: "scales", got: 3, expected: 4, .. }), "{err}");
}

#[test]
fn corrupt_scales_are_rejected() {
    let Some(gpu) = gpu() else { return };
    let rows = Rows::new(3, 8).unwrap();
    let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap();
    for bad in [f16::NAN, f16::INFINITY, f16::from_f32(-1.0)] {
        let enc = Encoded { codes: vec![0; 6], scales: vec![f16::ONE, f16::ONE, bad] };
        let err = gpu.decode(&enc, rows, &codec).unwrap_err();
        assert!(matches!(err, CudaError::BadScale { row: 2, .. }), "{err}");
    }
}

#[test]
fn non_finite_input_to_encode_is_a_lattice_error() {
    let Some(gpu) = gpu() else { return };
    let rows = Rows::new(1, 8).unwrap();
    let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms).unwrap();
    let mut x = [1.0f32; 8];
    x[3] = f32::NAN;
    let buf = gpu.upload(&x).unwrap();
    let err = gpu.encode(&buf, rows, &codec).unwrap_err();
    assert!(matches!(err, CudaError::Lattice(_)), "{err}");
}

#[test]
fn oversized_hadamard_block_is_unsupported() {
    let Some(gpu) = gpu() else { return };
    let dim = 2 * nq_cuda::MAX_BLOCK;
    let rows = Rows::new(1, dim).unwrap();
    let rot = Rotation::new(dim, 1).unwrap();
    let mut buf = gpu.upload(&vec![1.0; dim]).unwrap();
    let err = gpu.rotate(&mut buf, rows, &rot, false).unwrap_err();
    assert!(matches!(err, CudaError::Unsupported { .. }), "{err}");
}

#[test]
fn empty_batches_are_fine() {
    let Some(gpu) = gpu() else { return };
    let rows = Rows::new(0, 64).unwrap();
    let rot = Rotation::new(64, 1).unwrap();
    let mut buf = gpu.upload(&[]).unwrap();
    gpu.rotate(&mut buf, rows, &rot, false).unwrap();
    assert!(gpu.download(&buf).unwrap().is_empty());
    let codec = FixedCodec::new(FixedBits::B3, ScaleMode::Rms).unwrap();
    let dec = gpu.decode(&Encoded::default(), rows, &codec).unwrap();
    assert!(gpu.download(&dec).unwrap().is_empty());
}
