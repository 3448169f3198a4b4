//! Every `Error` variant is reachable, carries its operation and offending values, and
//! nothing is modified on error.
use nq_hadamard::{Error, Isa, RandomizedHadamard, fwht, fwht_rows, fwht_with, reference};

#[test]
fn not_power_of_two() {
    let mut x = vec![1.0f32; 96];
    let e = fwht(&mut x).unwrap_err();
    assert_eq!(e, Error::NotPowerOfTwo { op: "fwht", got: 96, padded: 128 });
    assert!(e.to_string().contains("96") && e.to_string().contains("128"));
    assert!(x.iter().all(|&v| v == 1.0), "input untouched on error");
    assert!(matches!(fwht(&mut []), Err(Error::NotPowerOfTwo { got: 0, .. })));
    assert!(matches!(
        fwht_rows(&mut x, 0),
        Err(Error::NotPowerOfTwo { op: "fwht_rows", got: 0, .. })
    ));
    assert!(matches!(fwht_rows(&mut x, 48), Err(Error::NotPowerOfTwo { got: 48, .. })));
    assert!(matches!(RandomizedHadamard::new(96, 1), Err(Error::NotPowerOfTwo { got: 96, .. })));
    assert!(matches!(reference::fwht(&mut x), Err(Error::NotPowerOfTwo { .. })));
    assert!(matches!(reference::hadamard_matrix(3), Err(Error::NotPowerOfTwo { got: 3, .. })));
}

#[test]
fn len_not_multiple_of_dim() {
    let mut x = vec![1.0f32; 100];
    let e = fwht_rows(&mut x, 64).unwrap_err();
    assert_eq!(e, Error::Len { op: "fwht_rows", dim: 64, got: 100 });
    assert!(x.iter().all(|&v| v == 1.0));
    let rh = RandomizedHadamard::new(64, 1).unwrap();
    assert!(matches!(rh.forward_rows(&mut x), Err(Error::Len { dim: 64, got: 100, .. })));
    assert!(matches!(rh.inverse_rows(&mut x), Err(Error::Len { dim: 64, got: 100, .. })));
    assert!(matches!(reference::fwht_rows(&mut x, 64), Err(Error::Len { .. })));
    assert!(matches!(reference::randomized_forward_rows(&mut x, 64, 1), Err(Error::Len { .. })));
    assert!(matches!(reference::randomized_inverse_rows(&mut x, 64, 1), Err(Error::Len { .. })));
    // An empty batch is zero rows, not an error.
    assert_eq!(fwht_rows(&mut [], 64), Ok(()));
}

#[test]
fn row_len_mismatch() {
    let rh = RandomizedHadamard::new(64, 1).unwrap();
    let mut x = vec![1.0f32; 128];
    let e = rh.forward(&mut x).unwrap_err();
    assert_eq!(e, Error::RowLen { op: "RandomizedHadamard::forward", dim: 64, got: 128 });
    assert!(matches!(rh.inverse(&mut x), Err(Error::RowLen { dim: 64, got: 128, .. })));
    assert!(x.iter().all(|&v| v == 1.0));
}

#[test]
fn isa_unavailable() {
    // Only reachable where AVX2 is missing or forced off (`--cfg nq_force_scalar`).
    let mut x = vec![1.0f32; 8];
    let got = fwht_with(Isa::Avx2, &mut x);
    let rh = RandomizedHadamard::new(8, 1).unwrap().with_isa(Isa::Avx2);
    if Isa::Avx2.is_available() {
        assert_eq!(got, Ok(()));
        assert!(rh.is_ok());
    } else {
        assert_eq!(got, Err(Error::IsaUnavailable { op: "fwht", isa: Isa::Avx2 }));
        assert!(matches!(rh, Err(Error::IsaUnavailable { isa: Isa::Avx2, .. })));
        assert_eq!(Isa::detect(), Isa::Scalar);
    }
}
