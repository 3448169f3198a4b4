//! Fast kernels against the O(n²) reference, at every power of two up to 4096 and across
//! the SIMD thresholds (8 lanes, 16-vector register blocks, radix passes beyond 128).
use crate::common::{assert_rows_close, isas, random};
use nq_hadamard::{Isa, RandomizedHadamard, fwht_rows_with, fwht_with, reference};

/// All power-of-two dims 1..=4096 with a row count that exercises batching where cheap.
fn cases() -> impl Iterator<Item = (usize, usize)> {
    (0..=12).map(|k| 1usize << k).map(|d| (d, if d <= 256 { 5 } else { 1 }))
}

#[test]
fn fwht_matches_reference() {
    for isa in isas() {
        for (dim, rows) in cases() {
            let x = random(dim as u64, dim * rows);
            let mut want = x.clone();
            reference::fwht_rows(&mut want, dim).unwrap();
            let mut got = x.clone();
            fwht_rows_with(isa, &mut got, dim).unwrap();
            assert_rows_close(&got, &want, dim, 1, isa.name());
            // The single-row entry point agrees bit for bit with the batch one.
            let mut one = x[..dim].to_vec();
            fwht_with(isa, &mut one).unwrap();
            assert_eq!(one, got[..dim]);
        }
    }
}

#[test]
fn randomized_matches_reference() {
    for isa in isas() {
        for (dim, rows) in cases() {
            let seed = 0x5EED ^ dim as u64;
            let rh = RandomizedHadamard::new(dim, seed).unwrap().with_isa(isa).unwrap();
            let x = random(7 + dim as u64, dim * rows);
            let mut want = x.clone();
            reference::randomized_forward_rows(&mut want, dim, seed).unwrap();
            let mut got = x.clone();
            rh.forward_rows(&mut got).unwrap();
            assert_rows_close(&got, &want, dim, 1, "forward");

            let mut want = x.clone();
            reference::randomized_inverse_rows(&mut want, dim, seed).unwrap();
            let mut got = x.clone();
            rh.inverse_rows(&mut got).unwrap();
            assert_rows_close(&got, &want, dim, 1, "inverse");
        }
    }
}

/// The scalar and SIMD kernels perform the same IEEE operations in the same order.
#[test]
fn instruction_sets_are_bit_identical() {
    let all = isas();
    for (dim, rows) in cases() {
        let x = random(99 + dim as u64, dim * rows);
        let mut outs = Vec::new();
        for &isa in &all {
            let rh = RandomizedHadamard::new(dim, 11).unwrap().with_isa(isa).unwrap();
            let (mut a, mut b, mut c) = (x.clone(), x.clone(), x.clone());
            fwht_rows_with(isa, &mut a, dim).unwrap();
            rh.forward_rows(&mut b).unwrap();
            rh.inverse_rows(&mut c).unwrap();
            outs.push((a, b, c));
        }
        for (o, isa) in outs.iter().zip(&all).skip(1) {
            assert!(o == &outs[0], "dim {dim}: {} differs from scalar", isa.name());
        }
    }
}

/// Unaligned starts and odd row counts (the AVX2 kernel uses unaligned loads).
#[test]
fn unaligned_and_odd_batches() {
    for isa in isas() {
        for dim in [8, 16, 64, 128, 256, 1024] {
            for rows in 1..=3 {
                let buf = random(3 * dim as u64 + rows as u64, dim * rows + 1);
                let mut got = buf.clone();
                fwht_rows_with(isa, &mut got[1..], dim).unwrap();
                let mut want = buf[1..].to_vec();
                reference::fwht_rows(&mut want, dim).unwrap();
                assert_rows_close(&got[1..], &want, dim, 1, "unaligned");
                assert_eq!(got[0], buf[0], "element before the slice was touched");
            }
        }
    }
    assert!(Isa::Scalar.is_available());
}
