//! Fast paths against the naive oracles of `nq_lattice::reference`.

use half::f16;
use nq_lattice::reference::{self, e8p_word, e8p_words, e81b_words, nearest_word};
use nq_lattice::{FixedBits, FixedCodec, Isa, ScaleMode, VariableCodec, codebook};

use crate::common::{block, dist2, gauss, sqnr_db, widen};

const EPS: f64 = f32::EPSILON as f64;

/// Bound on the error of an `f32` squared-distance comparison between two codewords `a`
/// of norm ≤ 4 (every codeword here) for a block `x`: each distance is an 8-term sum of
/// terms below `(|x| + 4)²`, so each is off by at most `16 ε (|x| + 4)²` and the
/// comparison by twice that.
fn cmp_tol(x: &[f32; 8]) -> f64 {
    let n = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    32.0 * EPS * (n + 4.0).powi(2)
}

fn all_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.is_available()).collect()
}

#[test]
fn e8p_index_point_bijection_over_all_indices() {
    let mut seen: Vec<[u32; 8]> = Vec::with_capacity(1 << 16);
    for idx in 0..=u16::MAX {
        let code = idx.to_le_bytes();
        let c = FixedBits::B2.decode_block([code[0], code[1], 0, 0]);
        let r = e8p_word(idx);
        assert_eq!(widen(&c), r, "index {idx}");
        // c − ¼ is a point of E8.
        assert!(reference::is_e8(&r.map(|v| v - 0.25)), "index {idx}: {r:?}");
        // The nearest codeword of a codeword is itself: encode inverts decode.
        let (back, c2) = FixedBits::B2.encode_block(&c);
        assert_eq!(u16::from_le_bytes([back[0], back[1]]), idx);
        assert_eq!(c2, c);
        seen.push(c.map(f32::to_bits));
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1 << 16, "codewords are not distinct");
}

#[test]
fn e8p_encoder_is_exact_nearest() {
    let words = e8p_words();
    let g = gauss(8 * 300, 11);
    for b in 0..300 {
        // Typical scale, overload (×3) and small vectors.
        let f = [1.0 / 0.956, 3.0, 0.1][b % 3];
        let x: [f32; 8] = block(&g, b).map(|v| v * f);
        let (code, c) = FixedBits::B2.encode_block(&x);
        let (_, best) = reference::e8p_encode_brute(&words, &widen(&x));
        let got = dist2(&x, &widen(&c));
        assert!(got <= best + cmp_tol(&x), "block {b}: {got} vs brute force {best}");
        assert_eq!(FixedBits::B2.decode_block(code), c);
    }
}

/// The two-stage encoders (greedy): the exact nearest E8P word `c1`, then the nearest
/// residual word to `k (x − c1)` for that `c1`. Checked stage by stage against brute force
/// and against `reference::fixed_encode_brute`.
#[test]
fn two_stage_encoders_match_brute_force_stages() {
    let words = e8p_words();
    let e81b = e81b_words();
    let g = gauss(8 * 60, 12);
    for bits in [FixedBits::B3, FixedBits::B4] {
        for b in 0..60 {
            let f = [1.0, 2.5, 0.3][b % 3];
            let x: [f32; 8] = block(&g, b).map(|v| v * f);
            let xd = widen(&x);
            let tol = cmp_tol(&x);
            let (code, c) = bits.encode_block(&x);
            assert_eq!(widen(&c), reference::fixed_word(bits, &code));
            let c1 = e8p_word(u16::from_le_bytes([code[0], code[1]]));
            let (_, best1) = reference::e8p_encode_brute(&words, &xd);
            assert!(dist2(&x, &c1) <= best1 + tol, "{bits:?} block {b}: first stage");
            // |x − (c1 + w/k)|² = |k (x − c1) − w|² / k².
            let (k, second): (f64, &[[f64; 8]]) = match bits {
                FixedBits::B3 => (2.0, &e81b),
                _ => (4.0, &words),
            };
            let r: [f64; 8] = std::array::from_fn(|i| k * (xd[i] - c1[i]));
            let best2 = nearest_word(second, &r).1 / (k * k);
            let got = dist2(&x, &widen(&c));
            assert!(got <= best2 + tol, "{bits:?} block {b}: {got} vs {best2}");
            let (ref_code, ref_c) = reference::fixed_encode_brute(bits, &words, &xd);
            if ref_code[..2] == code[..2] {
                assert!(got <= reference::dist2(&xd, &ref_c) + tol, "{bits:?} block {b}");
            }
        }
    }
}

#[test]
fn residual_codebook_matches_reference_enumeration() {
    let words = e81b_words();
    for (k, w) in codebook::e81b_words().iter().enumerate() {
        assert_eq!(widen(w), words[k], "word {k}");
    }
    for (p, base) in codebook::e8p_base().iter().enumerate() {
        assert_eq!(widen(base), e8p_word((p as u16) | 0x8000).map(|v| v - 0.25));
    }
}

#[test]
fn decode_matches_reference_for_random_codes() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for isa in all_isas() {
            let codec = FixedCodec::new(bits, ScaleMode::Rms).unwrap().with_isa(isa).unwrap();
            for &dim in &[8usize, 24, 64, 136] {
                let rows = 5;
                let codes: Vec<u8> =
                    (0..codec.code_len(rows, dim)).map(|_| (next() >> 24) as u8).collect();
                let scales: Vec<f16> =
                    (0..rows).map(|r| f16::from_f32([0.0, 1e-7, 0.37, 3.0, 65504.0][r])).collect();
                let mut out = vec![f32::NAN; rows * dim];
                codec.decode_rows(&codes, &scales, dim, &mut out).unwrap();
                let want = reference::fixed_decode_rows(bits, &codes, &scales, dim);
                assert_eq!(out, want, "{bits:?} {isa:?} dim {dim}");
            }
        }
    }
}

fn encode(codec: &FixedCodec, x: &[f32], dim: usize) -> (Vec<u8>, Vec<f16>) {
    let rows = x.len() / dim;
    let mut codes = vec![0u8; codec.code_len(rows, dim)];
    let mut scales = vec![f16::ZERO; rows];
    codec.encode_rows(x, dim, &mut codes, &mut scales).expect("finite input");
    (codes, scales)
}

#[test]
fn simd_encoder_gives_the_scalar_codes() {
    let x = gauss(40 * 136, 13);
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for mode in [ScaleMode::AbsMax, ScaleMode::Rms, ScaleMode::BestOf { candidates: 3 }] {
            for &dim in &[8usize, 64, 136] {
                let n = x.len() / dim * dim;
                let scalar = FixedCodec::new(bits, mode).unwrap().with_isa(Isa::Scalar).unwrap();
                let want = encode(&scalar, &x[..n], dim);
                for isa in all_isas() {
                    let codec = scalar.with_isa(isa).unwrap();
                    assert_eq!(
                        encode(&codec, &x[..n], dim),
                        want,
                        "{bits:?} {mode:?} {isa:?} {dim}"
                    );
                }
            }
        }
    }
}

/// Blocks with tied magnitudes (grid values, constant blocks) take the encoder's rank
/// fallback; SIMD groups mixing them with tie-free blocks must still give the scalar codes,
/// and every codeword must be as close as the brute-force rule's.
#[test]
fn simd_encoder_gives_the_scalar_codes_on_ties() {
    let g = gauss(48 * 64, 24);
    let x: Vec<f32> = g
        .chunks_exact(8)
        .enumerate()
        .flat_map(|(b, blk)| {
            let blk: [f32; 8] = blk.try_into().unwrap();
            let out: [f32; 8] = match b % 4 {
                0 => blk.map(|v| (v * 4.0).round() / 4.0),
                1 => [blk[0]; 8],
                2 => blk.map(|v| (v * 2.0).round() / 2.0 + 0.25),
                _ => blk,
            };
            out
        })
        .collect();
    let words = e8p_words();
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for mode in [ScaleMode::AbsMax, ScaleMode::Rms] {
            for &dim in &[8usize, 64] {
                let scalar = FixedCodec::new(bits, mode).unwrap().with_isa(Isa::Scalar).unwrap();
                let want = encode(&scalar, &x, dim);
                for isa in all_isas() {
                    let codec = scalar.with_isa(isa).unwrap();
                    assert_eq!(encode(&codec, &x, dim), want, "{bits:?} {mode:?} {isa:?} {dim}");
                }
                if dim != 64 || mode != ScaleMode::Rms {
                    continue;
                }
                let (codes, scales) = want;
                let bpb = bits.bytes_per_block();
                for (b, code) in codes.chunks_exact(bpb).enumerate().step_by(5) {
                    let s = scales[b / 8].to_f32();
                    let v: [f32; 8] = block(&x, b).map(|t| t * (1.0 / s));
                    let c1 = e8p_word(u16::from_le_bytes([code[0], code[1]]));
                    let best1 = reference::e8p_encode_brute(&words, &widen(&v)).1;
                    assert!(dist2(&v, &c1) <= best1 + cmp_tol(&v), "{bits:?} block {b}");
                    let (ref_code, ref_c) = reference::fixed_encode_brute(bits, &words, &widen(&v));
                    if ref_code[..2] == code[..2] {
                        let got = dist2(&v, &reference::fixed_word(bits, code));
                        let best = reference::dist2(&widen(&v), &ref_c);
                        assert!(got <= best + cmp_tol(&v), "{bits:?} block {b}: {got} vs {best}");
                    }
                }
            }
        }
    }
}

/// With `Rms`/`AbsMax` the stored scale is the decision scale: every block's codeword is
/// the nearest one (B2: exact nearest) to `x / s`, and decoding gives exactly `s * c`.
#[test]
fn fixed_rows_decode_to_the_chosen_scaled_codewords() {
    let x = gauss(32 * 64, 14);
    let dim = 64;
    let words = e8p_words();
    for mode in [ScaleMode::Rms, ScaleMode::AbsMax] {
        let codec = FixedCodec::new(FixedBits::B2, mode).unwrap();
        let (codes, scales) = encode(&codec, &x, dim);
        let mut out = vec![0.0; x.len()];
        codec.decode_rows(&codes, &scales, dim, &mut out).unwrap();
        for (b, code) in codes.chunks_exact(2).enumerate() {
            let s = scales[b / 8].to_f32();
            let c = reference::fixed_word(FixedBits::B2, code);
            for i in 0..8 {
                assert_eq!(f64::from(out[8 * b + i]), f64::from(s) * c[i]);
            }
            let v: [f32; 8] = block(&x, b).map(|t| t * (1.0 / s));
            let best = reference::e8p_encode_brute(&words, &widen(&v)).1;
            assert!(dist2(&v, &c) <= best + cmp_tol(&v), "{mode:?} block {b}");
        }
    }
}

/// With `BestOf` the stored scale is the least-squares scale of the chosen codewords,
/// rounded to f16.
#[test]
fn best_of_scale_is_the_rounded_least_squares_fit() {
    let x = gauss(16 * 128, 15);
    let dim = 128;
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        let codec = FixedCodec::new(bits, ScaleMode::BestOf { candidates: 4 }).unwrap();
        let (codes, scales) = encode(&codec, &x, dim);
        let row_bytes = dim / 8 * bits.bytes_per_block();
        for (r, row_codes) in codes.chunks_exact(row_bytes).enumerate() {
            let (mut xc, mut cc) = (0.0f64, 0.0f64);
            for (b, code) in row_codes.chunks_exact(bits.bytes_per_block()).enumerate() {
                let c = reference::fixed_word(bits, code);
                for i in 0..8 {
                    xc += f64::from(x[r * dim + 8 * b + i]) * c[i];
                    cc += c[i] * c[i];
                }
            }
            let fit = xc / cc;
            let s = f64::from(scales[r].to_f32());
            // f16 has 11 significant bits: rounding error ≤ 2^-11 relative (plus the f32
            // accumulation of the fit, far smaller).
            assert!((s - fit).abs() <= fit * (2f64.powi(-11) + 64.0 * EPS), "{bits:?} row {r}");
        }
    }
}

#[test]
fn fused_dot_and_axpy_match_decode_then_dot() {
    let x = gauss(50 * 128, 16);
    let q = gauss(128, 17);
    let w = gauss(50, 18);
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for &dim in &[8usize, 64, 128] {
            let rows = x.len() / dim;
            let base = FixedCodec::new(bits, ScaleMode::Rms).unwrap();
            let (codes, scales) = encode(&base, &x, dim);
            let want_dot = reference::fixed_dot_rows(bits, &q[..dim], &codes, &scales);
            let want_axpy = reference::fixed_axpy_rows(
                bits,
                &w[..rows.min(50)],
                &codes[..base.code_len(rows.min(50), dim)],
                &scales[..rows.min(50)],
                dim,
            );
            let decoded = reference::fixed_decode_rows(bits, &codes, &scales, dim);
            for isa in all_isas() {
                let codec = base.with_isa(isa).unwrap();
                let mut out = vec![0.0f32; rows];
                codec.dot_rows(&q[..dim], &codes, &scales, &mut out).unwrap();
                for (n, (got, want)) in out.iter().zip(&want_dot).enumerate() {
                    // Summation-order bound: dim ε Σ|q_i y_i| (plus one rounding of the scale product).
                    let mag: f64 = decoded[n * dim..(n + 1) * dim]
                        .iter()
                        .zip(&q[..dim])
                        .map(|(a, b)| f64::from(*a * *b).abs())
                        .sum();
                    let tol = (dim as f64 + 2.0) * EPS * mag;
                    assert!(
                        (f64::from(*got) - want).abs() <= tol,
                        "{bits:?} {isa:?} dim {dim} row {n}"
                    );
                }
                let m = rows.min(50);
                let mut acc = vec![1.0f32; dim];
                codec
                    .axpy_rows(&w[..m], &codes[..codec.code_len(m, dim)], &scales[..m], &mut acc)
                    .unwrap();
                for (i, (got, want)) in acc.iter().zip(&want_axpy).enumerate() {
                    let mag: f64 = 1.0
                        + (0..m).map(|n| f64::from(w[n] * decoded[n * dim + i]).abs()).sum::<f64>();
                    let tol = (m as f64 + 2.0) * EPS * mag;
                    assert!(
                        (f64::from(*got) - (1.0 + want)).abs() <= tol,
                        "{bits:?} {isa:?} dim {dim} i {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn zero_and_tiny_rows_decode_to_exact_zeros() {
    let dim = 16;
    let mut x = vec![0.0f32; 3 * dim];
    x[dim..2 * dim].fill(1e-12);
    x[2 * dim] = 2.0;
    for bits in [FixedBits::B2, FixedBits::B3, FixedBits::B4] {
        for mode in [ScaleMode::AbsMax, ScaleMode::Rms, ScaleMode::default()] {
            let codec = FixedCodec::new(bits, mode).unwrap();
            let (codes, scales) = encode(&codec, &x, dim);
            assert_eq!(scales[0], f16::ZERO);
            assert_eq!(scales[1], f16::ZERO);
            let mut out = vec![f32::NAN; x.len()];
            codec.decode_rows(&codes, &scales, dim, &mut out).unwrap();
            assert!(out[..2 * dim].iter().all(|&v| v == 0.0));
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn quality_on_gaussian_rows_is_at_least_the_measured_floor() {
    // Regression guard well below the measured figures (README: 10.5 / 15.5 / 21.2 dB).
    let dim = 128;
    let x = gauss(512 * dim, 19);
    for (bits, floor) in [(FixedBits::B2, 10.2), (FixedBits::B3, 15.0), (FixedBits::B4, 20.5)] {
        let codec = FixedCodec::new(bits, ScaleMode::default()).unwrap();
        let (codes, scales) = encode(&codec, &x, dim);
        let mut y = vec![0.0; x.len()];
        codec.decode_rows(&codes, &scales, dim, &mut y).unwrap();
        let q = sqnr_db(&x, &y);
        assert!(q >= floor, "{bits:?}: {q:.3} dB < {floor}");
    }
}

#[test]
fn variable_symbols_are_the_nearest_lattice_points() {
    let dim = 32;
    let x = gauss(20 * dim, 20);
    let step = 0.7;
    let codec = VariableCodec::new(step, ScaleMode::AbsMax).unwrap();
    let (mut cosets, mut coords, mut scales) = (vec![], vec![], vec![]);
    codec.encode_rows(&x, dim, &mut cosets, &mut coords, &mut scales).unwrap();
    let mut out = vec![0.0; x.len()];
    codec.decode_rows(&cosets, &coords, &scales, dim, &mut out).unwrap();
    for (b, c) in cosets.iter().enumerate() {
        let row = &x[(b / 4) * dim..(b / 4 + 1) * dim];
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = 1.0 / (step * amax);
        let v: [f32; 8] = block(&x, b).map(|t| t * inv);
        let (y, best) = reference::nearest_e8_brute(&v);
        let z: [i32; 8] = std::array::from_fn(|i| coords[8 * b + i]);
        let (rc, rz) = reference::symbols_of(&y);
        // Equal distance (ties may pick another nearest point; Gaussian data has none).
        assert_eq!((*c, z), (rc, rz), "block {b}: distance {best}");
        let eff = step * scales[b / 4].to_f32();
        for i in 0..8 {
            assert_eq!(out[8 * b + i], eff * y[i] as f32);
        }
    }
}

#[test]
fn variable_symbols_round_trip_any_lattice_point() {
    // Decoding with step 1 and scale 1 returns the lattice point itself.
    let codec = VariableCodec::new(1.0, ScaleMode::Rms).unwrap();
    let g = gauss(8 * 200, 21);
    for b in 0..200 {
        let f = [3.0f32, 1000.0, 1e6][b % 3];
        let y = nq_lattice::nearest_e8(&block(&g, b).map(|v| v * f));
        let (c, s) = reference::symbols_of(&widen(&y));
        let mut out = [0.0f32; 8];
        codec.decode_rows(&[c], &s, &[f16::ONE], 8, &mut out).unwrap();
        assert_eq!(out, y, "block {b}");
    }
}

#[test]
fn entropy_matches_reference_histograms() {
    let dim = 64;
    let x = gauss(300 * dim, 22);
    for step in [0.5f32, 1.0, 2.0] {
        let codec = VariableCodec::new(step, ScaleMode::Rms).unwrap();
        let (mut cosets, mut coords, mut scales) = (vec![], vec![], vec![]);
        codec.encode_rows(&x, dim, &mut cosets, &mut coords, &mut scales).unwrap();
        let h = nq_lattice::empirical_entropy_bits_per_dim(&cosets, &coords);
        let r = reference::entropy_bits_per_dim(&cosets, &coords);
        assert!((h - r).abs() <= 1e-12 * r.max(1.0), "step {step}: {h} vs {r}");
        let hc = nq_lattice::coset_context_entropy_bits_per_dim(&cosets, &coords);
        // Conditioning never increases entropy.
        assert!(hc <= h + 1e-12, "step {step}: {hc} > {h}");
    }
}

#[test]
fn variable_simd_gives_the_scalar_symbols() {
    let dim = 40;
    let x = gauss(37 * dim, 23);
    for mode in [ScaleMode::Rms, ScaleMode::AbsMax] {
        let scalar = VariableCodec::new(0.8, mode).unwrap().with_isa(Isa::Scalar).unwrap();
        let run = |c: &VariableCodec| {
            let (mut a, mut b, mut s) = (vec![], vec![], vec![]);
            c.encode_rows(&x, dim, &mut a, &mut b, &mut s).unwrap();
            (a, b, s)
        };
        let want = run(&scalar);
        for isa in all_isas() {
            assert_eq!(run(&scalar.with_isa(isa).unwrap()), want, "{mode:?} {isa:?}");
        }
    }
}

#[test]
fn widen_f16_equals_half_on_every_bit_pattern() {
    // Every f16 (NaN payloads, subnormals, ±0, ±inf), at lengths around the 8-value chunks.
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    for len in [all.len(), 1, 7, 8, 9, 15, 17, 64] {
        for start in [0, 3, 31_741, all.len() - len].into_iter().filter(|s| s + len <= all.len()) {
            let src = &all[start..start + len];
            let mut got = vec![0.0f32; len];
            nq_lattice::widen_f16(src, &mut got).unwrap();
            let mut want = vec![0.0f32; len];
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, &mut want);
            for ((s, g), w) in src.iter().zip(&got).zip(&want) {
                assert_eq!(g.to_bits(), w.to_bits(), "{:#06x}", s.to_bits());
                assert_eq!(g.to_bits(), s.to_f32().to_bits(), "{:#06x}", s.to_bits());
            }
        }
    }
}
