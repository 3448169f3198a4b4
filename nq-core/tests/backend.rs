//! The conformance harness nq-cuda runs: the CPU passes it, and a deliberately wrong backend
//! fails it, one way per perturbation (a harness that cannot fail would prove nothing).

use nq_core::testing::{Perturbation, Perturbed, check_backend, check_rope_free_storage};

nq_core::backend_tests!(nq_core::CpuBackend);

#[test]
fn every_perturbation_is_rejected() {
    for p in [
        Perturbation::SkipLastOutput,
        Perturbation::NudgeOutput,
        Perturbation::FlipCode,
        Perturbation::ForgetMass,
    ] {
        let verdict = check_backend(&Perturbed(p));
        assert!(verdict.is_err(), "{p:?} passed the conformance harness");
        eprintln!("{p:?} rejected: {:?}", verdict.err());
    }
}

#[test]
fn a_wrong_code_is_rejected_with_rope_free_keys() {
    let verdict = check_rope_free_storage(&Perturbed(Perturbation::FlipCode));
    assert!(verdict.is_err(), "a flipped code passed the RoPE-free storage check");
}
