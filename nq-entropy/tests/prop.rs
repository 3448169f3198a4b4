//! Bit-exact round trips of everything stored (proptest).

use half::f16;
use nq_entropy::{
    ArchiveReader, ArchiveWriter, Data, DataRef, Effort, EncodeOptions, Fingerprint, Limits,
    StreamRef, decode_bytes, decode_coords, decode_f16, decode_fixed_codes, decode_positions,
    encode_bytes, encode_coords, encode_f16, encode_fixed_codes, encode_positions,
};
use proptest::prelude::*;

fn effort() -> impl Strategy<Value = EncodeOptions> {
    prop_oneof![Just(Effort::Fast), Just(Effort::Default), Just(Effort::Max)]
        .prop_map(|effort| EncodeOptions { effort, ..EncodeOptions::default() })
}

/// Mostly small lattice coordinates, with extremes and escapes mixed in.
fn coord() -> impl Strategy<Value = i32> {
    prop_oneof![
        8 => -3i32..=3,
        2 => -130i32..=130,
        1 => any::<i32>(),
        1 => prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(-128), Just(127), Just(-127)],
    ]
}

fn coords_input() -> impl Strategy<Value = (Vec<u8>, Vec<i32>)> {
    (0usize..70).prop_flat_map(|n| {
        (prop::collection::vec(0u8..=1, n), prop::collection::vec(coord(), 8 * n))
    })
}

/// f16 bit patterns, weighted toward the special ones: NaN payloads (quiet and signalling,
/// both signs), +-0, +-inf, subnormals, the extremes of the normals.
fn f16_bits() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => any::<u16>(),
        1 => prop_oneof![
            Just(0x0000u16), Just(0x8000), Just(0x7c00), Just(0xfc00), Just(0x7e00), Just(0x7c01),
            Just(0xfd55), Just(0x7fff), Just(0x0001), Just(0x83ff), Just(0x7bff), Just(0x0400),
        ],
        2 => 0x3800u16..0x3c00,
    ]
}

fn f16_bit_vec(v: &[f16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn coords_round_trip((cosets, coords) in coords_input(), row in 0usize..5, opts in effort()) {
        let mut body = Vec::new();
        let s = encode_coords(&cosets, &coords, row, &opts, &mut body)?;
        prop_assert_eq!(s.bytes, body.len());
        let (c2, z2) = decode_coords(&body, &Limits::default())?;
        prop_assert_eq!(c2, cosets);
        prop_assert_eq!(z2, coords);
    }

    #[test]
    fn fixed_codes_round_trip(width in 1usize..=8, n in 0usize..300, seed in any::<u64>(), row in 0usize..6, opts in effort()) {
        let codes: Vec<u8> = (0..n * width).map(|i| (seed.rotate_left((i % 61) as u32) ^ (i as u64 * 0x9e37)) as u8).collect();
        let mut body = Vec::new();
        encode_fixed_codes(&codes, width, row, &opts, &mut body)?;
        prop_assert_eq!(decode_fixed_codes(&body, &Limits::default())?, (codes, width));
    }

    #[test]
    fn f16_round_trip_is_bit_exact(bits in prop::collection::vec(f16_bits(), 0..400), row in 0usize..9, opts in effort()) {
        let values: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let mut body = Vec::new();
        encode_f16(&values, row, &opts, &mut body)?;
        let back = decode_f16(&body, &Limits::default())?;
        // Compare bit patterns: NaN != NaN as floats.
        prop_assert_eq!(f16_bit_vec(&back), bits);
    }

    #[test]
    fn positions_round_trip(mut p in prop::collection::vec(any::<u32>(), 0..300), sorted in any::<bool>(), opts in effort()) {
        if sorted {
            p.sort_unstable();
        }
        let mut body = Vec::new();
        encode_positions(&p, &opts, &mut body)?;
        prop_assert_eq!(decode_positions(&body, &Limits::default())?, p);
    }

    #[test]
    fn bytes_round_trip(data in prop::collection::vec(any::<u8>(), 0..2000), opts in effort()) {
        let mut body = Vec::new();
        encode_bytes(&data, &opts, &mut body)?;
        prop_assert_eq!(decode_bytes(&body, &Limits::default())?, data);
    }

    #[test]
    fn archive_round_trip(
        (cosets, coords) in coords_input(),
        scales in prop::collection::vec(f16_bits(), 0..50),
        positions in prop::collection::vec(any::<u32>(), 0..50),
        raw in prop::collection::vec(any::<u8>(), 0..100),
        theta_bits in any::<u64>(),
        arch in "\\PC{0,12}",
        sections in 0u32..4,
        opts in effort(),
    ) {
        let fp = Fingerprint {
            architecture: arch,
            layers: sections,
            kv_heads: 3,
            head_dim: 128,
            rope_theta: f64::from_bits(theta_bits),
            rope_layout: 2,
            rope_scaling: raw.clone(),
            preset: "max".into(),
            config: raw.iter().rev().copied().collect(),
        };
        let scales: Vec<f16> = scales.iter().map(|&b| f16::from_bits(b)).collect();
        let streams = [
            StreamRef { name: "coords", data: DataRef::Coords { cosets: &cosets, coords: &coords, row_vectors: 2 } },
            StreamRef { name: "scales", data: DataRef::Scales { values: &scales, row_len: 1 } },
            StreamRef { name: "", data: DataRef::Positions(&positions) },
            StreamRef { name: "raw é", data: DataRef::Raw(&raw) },
        ];
        let mut w = ArchiveWriter::with_options(Vec::new(), &fp, opts)?;
        for id in 0..sections {
            w.write_section(id * 7, &streams[..(id as usize + 1).min(streams.len())])?;
        }
        let bytes = w.finish()?;
        let mut r = ArchiveReader::open(&bytes[..])?;
        prop_assert_eq!(r.fingerprint().rope_theta.to_bits(), theta_bits);
        r.expect_fingerprint(&fp)?;
        for id in 0..sections {
            let s = r.next_section()?.expect("section");
            prop_assert_eq!(s.id, id * 7);
            for (got, want) in s.streams.iter().zip(&streams) {
                prop_assert_eq!(&got.name, want.name);
                prop_assert_eq!(got.data.kind(), want.data.kind());
                match (&got.data, want.data) {
                    (Data::Scales(v), DataRef::Scales { values, .. }) => prop_assert_eq!(f16_bit_vec(v), f16_bit_vec(values)),
                    (got, _) => prop_assert_eq!(got.as_ref(), strip_rows(want.data)),
                }
            }
        }
        prop_assert!(r.next_section()?.is_none());
        prop_assert!(r.next_section()?.is_none());
    }
}

/// The row parameters are encoder hints that are not read back.
fn strip_rows(d: DataRef<'_>) -> DataRef<'_> {
    match d {
        DataRef::Coords { cosets, coords, .. } => {
            DataRef::Coords { cosets, coords, row_vectors: 0 }
        }
        DataRef::FixedCodes { codes, bytes_per_vector, .. } => {
            DataRef::FixedCodes { codes, bytes_per_vector, row_vectors: 0 }
        }
        DataRef::Scales { values, .. } => DataRef::Scales { values, row_len: 0 },
        DataRef::WindowF16 { values, .. } => DataRef::WindowF16 { values, row_len: 0 },
        other => other,
    }
}
