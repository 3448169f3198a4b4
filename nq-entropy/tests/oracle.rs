//! Fast coders against the naive oracles in `nq_entropy::reference`.

use nq_entropy::reference::{coords_context_entropy_bits, coords_entropy_bits, entropy_bits};
use nq_entropy::{
    Codec, Effort, EncodeOptions, Limits, decode_bytes, decode_coords, encode_bytes, encode_coords,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::e8;

fn fast() -> EncodeOptions {
    EncodeOptions { effort: Effort::Fast, ..EncodeOptions::default() }
}

/// The target: on Gaussian E8 output at ~2 bits/dim, the coded coords stream is within
/// 3% of the order-0 per-position empirical entropy of the coset-aware symbols.
#[test]
fn gaussian_e8_at_two_bits_is_within_three_percent_of_entropy() {
    let n = 100_000;
    let (cosets, coords) = e8::gaussian_e8(n, 1.14, 3);
    let h0 = coords_entropy_bits(&cosets, &coords);
    let bits_per_dim = h0 / (8 * n) as f64;
    assert!((1.9..2.1).contains(&bits_per_dim), "step 1.14 gives {bits_per_dim} bits/dim");
    let mut body = Vec::new();
    let s = encode_coords(&cosets, &coords, 16, &EncodeOptions::default(), &mut body).unwrap();
    assert_eq!(s.codec, Codec::Rans);
    assert!(!s.delta, "i.i.d. rows must not keep the delta");
    let coded = 8.0 * body.len() as f64;
    assert!(coded <= 1.03 * h0, "coded {coded} bits, order-0 entropy {h0}");
    let (c2, z2) = decode_coords(&body, &Limits::default()).unwrap();
    assert_eq!((c2, z2), (cosets, coords));
}

/// No static coder with the contexts the coords coder uses can go below the empirical
/// entropy under those contexts; the coder must come within 1% of it (plus table bytes) on
/// a large sample, at every rate.
#[test]
fn coords_coder_meets_its_context_entropy() {
    for (step, seed) in [(0.5, 1u64), (1.14, 2), (2.0, 3)] {
        let n = 50_000;
        let (cosets, coords) = e8::gaussian_e8(n, step, seed);
        let hctx = coords_context_entropy_bits(&cosets, &coords);
        let mut body = Vec::new();
        encode_coords(&cosets, &coords, 0, &fast(), &mut body).unwrap();
        let coded = 8.0 * body.len() as f64;
        assert!(coded >= hctx, "step {step}: coded {coded} below the context entropy {hctx}");
        // 6 tables of at most ~40 bytes and 4 final states.
        assert!(
            coded <= 1.01 * hctx + 8.0 * 300.0,
            "step {step}: coded {coded}, context entropy {hctx}"
        );
    }
}

/// Code length of `counts` under one feasible 12-bit model: every symbol but the most
/// frequent gets `max(1, floor(4096 p))` slots, the most frequent gets the rest. The coder's
/// normalization is optimal for the rounding, so it must do at least this well.
fn feasible_12bit_bits(counts: &[u64; 256]) -> f64 {
    let n: u64 = counts.iter().sum();
    let top = (0..256).max_by_key(|&s| counts[s]).expect("256 symbols");
    let mut used = 0u64;
    let mut bits = 0.0;
    for s in (0..256).filter(|&s| s != top && counts[s] > 0) {
        let f = (counts[s] * 4096 / n).max(1);
        used += f;
        bits += counts[s] as f64 * (4096.0 / f as f64).log2();
    }
    bits + counts[top] as f64 * (4096.0 / (4096 - used) as f64).log2()
}

/// Order-0 byte coding: never below the empirical entropy, within 0.5% of it for moderate
/// skew, and never worse than a feasible 12-bit model even at p = 0.999 (where 12-bit
/// precision itself costs: the top symbol cannot get more than 4096 - 39 of 4096 slots).
#[test]
fn byte_rans_is_near_order0_entropy() {
    let mut rng = StdRng::seed_from_u64(9);
    for p_top in [0.3, 0.6, 0.9, 0.999] {
        let data: Vec<u8> = (0..200_000)
            .map(|_| if rng.random::<f64>() < p_top { 7 } else { rng.random_range(0..40u8) })
            .collect();
        let mut counts = [0u64; 256];
        for &b in &data {
            counts[usize::from(b)] += 1;
        }
        let h = entropy_bits(counts);
        let mut body = Vec::new();
        let s = encode_bytes(&data, &fast(), &mut body).unwrap();
        assert_eq!(s.codec, Codec::Rans, "p_top {p_top}");
        let coded = 8.0 * body.len() as f64;
        assert!(coded >= h, "p_top {p_top}: coded {coded} below entropy {h}");
        // Table (<= ~100 bytes), 4 final states, headers.
        let overhead = 8.0 * 150.0;
        assert!(coded <= feasible_12bit_bits(&counts) + overhead, "p_top {p_top}: coded {coded}");
        if p_top <= 0.9 {
            assert!(coded <= 1.005 * h + overhead, "p_top {p_top}: coded {coded}, entropy {h}");
        }
        assert_eq!(decode_bytes(&body, &Limits::default()).unwrap(), data);
    }
}

/// Rows that resemble the previous row keep the delta, and it pays.
#[test]
fn correlated_rows_keep_the_delta_and_it_pays() {
    let (cosets, coords) = e8::correlated_e8(4000, 8, 0.95, 0.4, 5);
    let mut with = Vec::new();
    let s = encode_coords(&cosets, &coords, 8, &fast(), &mut with).unwrap();
    assert!(s.delta);
    let mut without = Vec::new();
    let s0 = encode_coords(&cosets, &coords, 0, &fast(), &mut without).unwrap();
    assert!(!s0.delta);
    assert!(with.len() * 10 < without.len() * 8, "delta {} vs plain {}", with.len(), without.len());
    assert_eq!(decode_coords(&with, &Limits::default()).unwrap(), (cosets, coords));
}

/// Effort changes only the search, never the decoded data, and more effort is never larger.
#[test]
fn more_effort_is_never_larger() {
    let (cosets, coords) = e8::gaussian_e8(5000, 1.14, 8);
    let mut sizes = Vec::new();
    for effort in [Effort::Fast, Effort::Default, Effort::Max] {
        let mut body = Vec::new();
        encode_coords(
            &cosets,
            &coords,
            4,
            &EncodeOptions { effort, ..Default::default() },
            &mut body,
        )
        .unwrap();
        assert_eq!(
            decode_coords(&body, &Limits::default()).unwrap(),
            (cosets.clone(), coords.clone())
        );
        sizes.push(body.len());
    }
    assert!(sizes[1] <= sizes[0] && sizes[2] <= sizes[1], "{sizes:?}");
}

/// Repeated content is what zstd finds and rANS cannot: at `Effort::Max` zstd is chosen.
#[test]
fn zstd_wins_on_repeated_rows_at_max_effort() {
    let (cosets, coords) = e8::gaussian_e8(64, 1.14, 4);
    let cosets: Vec<u8> = cosets.iter().copied().cycle().take(64 * 200).collect();
    let coords: Vec<i32> = coords.iter().copied().cycle().take(8 * 64 * 200).collect();
    let mut body = Vec::new();
    let s = encode_coords(
        &cosets,
        &coords,
        0,
        &EncodeOptions { effort: Effort::Max, ..Default::default() },
        &mut body,
    )
    .unwrap();
    assert_eq!(s.codec, Codec::Zstd);
    assert_eq!(decode_coords(&body, &Limits::default()).unwrap(), (cosets, coords));
}
