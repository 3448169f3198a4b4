//! Stable-toolchain fuzzing: proptest-driven mutations of real archives and stream bodies.
//! Decoding must return `Ok` or `Err`: never panic (proptest reports a panic as a failure)
//! and never allocate beyond the limits (the limits here are small, so an unbounded
//! allocation would abort the test binary).

use std::sync::OnceLock;

use nq_entropy::{Effort, Error, StreamKind};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::mutate::{
    Mutation, apply, archive, bodies, decode_archive, decode_body, fix_checksums, fuzz_limits,
    random_mutation,
};

fn archives() -> &'static [Vec<u8>] {
    static A: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    A.get_or_init(|| vec![archive(1, 300, Effort::Fast), archive(2, 40, Effort::Max)])
}

fn stream_bodies() -> &'static [(StreamKind, Vec<u8>)] {
    static B: OnceLock<Vec<(StreamKind, Vec<u8>)>> = OnceLock::new();
    B.get_or_init(|| bodies(3, 120))
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    (any::<u64>(), 1usize..5).prop_map(|(seed, k)| {
        let mut rng = StdRng::seed_from_u64(seed);
        // Lengths are resolved against the input at apply time (out-of-range ones are skipped).
        (0..k).map(|_| random_mutation(&mut rng, 4096)).collect()
    })
}

fn mutated(input: &[u8], ms: &[Mutation], fix: bool) -> Vec<u8> {
    let mut d = input.to_vec();
    for m in ms {
        apply(&mut d, m);
    }
    if fix {
        fix_checksums(&mut d);
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_archives_never_panic(which in 0usize..2, ms in mutations(), fix in any::<bool>()) {
        let d = mutated(&archives()[which], &ms, fix);
        let r = decode_archive(&d, &fuzz_limits());
        // Without fixing, any change the checksums cover must be reported; a mutation that
        // changed nothing (or only past the trailer) reads as the original.
        if !fix && r.is_ok() {
            prop_assert!(d.starts_with(&archives()[which]), "undetected corruption");
        }
    }

    #[test]
    fn mutated_stream_bodies_never_panic(which in 0usize..16, ms in mutations()) {
        let (kind, body) = &stream_bodies()[which];
        let d = mutated(body, &ms, false);
        match decode_body(*kind, &d, &fuzz_limits()) {
            Ok(_) | Err(Error::Truncated { .. } | Error::Corrupt { .. } | Error::Limit { .. } | Error::Zstd { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }
}
