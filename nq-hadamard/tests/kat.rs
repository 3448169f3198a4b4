//! Known answers: SplitMix64 published vectors, the sign layout, small Hadamard matrices.
use nq_hadamard::{
    RandomizedHadamard, blocks_for, fwht, padded_len, reference, sign_bits, splitmix64,
};

/// Vigna's reference splitmix64.c seeded with 0 (published test vectors).
#[test]
fn splitmix64_reference_vectors() {
    let mut state = 0u64;
    let got: Vec<u64> = (0..4).map(|_| splitmix64(&mut state)).collect();
    assert_eq!(
        got,
        [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, 0xf88bb8a8724c81ec]
    );
}

/// The frozen sign layout: word w = (w+1)-th SplitMix64 output, bit b -> coordinate 64w+b,
/// 1 = negative, bits past `dim` cleared.
#[test]
fn sign_layout_is_frozen() {
    assert_eq!(sign_bits(128, 0), vec![0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4]);
    assert_eq!(sign_bits(72, 0), vec![0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4 & 0xff]);
    assert_eq!(sign_bits(0, 5), Vec::<u64>::new());
    let rh = RandomizedHadamard::new(8, 0).unwrap();
    // 0xaf = 0b1010_1111: coordinates 0..4 negative, 4 positive, 5 negative, 6 positive, 7 negative.
    assert_eq!(rh.signs(), [-1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
    assert_eq!(rh.sign_bits(), [0xaf]);
    assert_eq!(rh.seed(), 0);
    let other = RandomizedHadamard::new(8, 1).unwrap();
    assert_ne!(rh.signs(), other.signs(), "different seeds give different diagonals");
}

/// H_4 / 2 written out: rows (++++), (+-+-), (++--), (+--+).
#[test]
fn h4_by_hand() {
    let h = reference::hadamard_matrix(4).unwrap();
    #[rustfmt::skip]
    let want = [1., 1., 1., 1., 1., -1., 1., -1., 1., 1., -1., -1., 1., -1., -1., 1.];
    assert!(h.iter().zip(want).all(|(a, b)| *a == b / 2.0));
    // Columns of H_4 / 2 are the transforms of the unit vectors; exact in f32 (scale 1/2).
    for j in 0..4 {
        let mut e = [0.0f32; 4];
        e[j] = 1.0;
        fwht(&mut e).unwrap();
        let col: Vec<f32> = (0..4).map(|i| (want[4 * i + j] / 2.0) as f32).collect();
        assert_eq!(e.as_slice(), col.as_slice());
    }
}

/// Length 1 is the identity; randomized length 1 is a sign flip at most.
#[test]
fn length_one() {
    let mut x = [3.5f32];
    fwht(&mut x).unwrap();
    assert_eq!(x, [3.5]);
    let rh = RandomizedHadamard::new(1, 0).unwrap();
    rh.forward(&mut x).unwrap();
    assert_eq!(x, [-3.5]); // bit 0 of 0xe220a8397b1dcdaf is 1
}

#[test]
fn padding_helpers() {
    assert_eq!(blocks_for(96), vec![64, 32]);
    assert_eq!(blocks_for(112), vec![64, 32, 16]);
    assert_eq!(blocks_for(1), vec![1]);
    assert_eq!(blocks_for(0), Vec::<usize>::new());
    assert_eq!(blocks_for(96).iter().sum::<usize>(), 96);
    assert_eq!(padded_len(96), Some(128));
    assert_eq!(padded_len(usize::MAX), None);
}
