//! The conformance harness nq-cuda runs: the CPU passes it, and a deliberately wrong backend
//! fails it, one way per perturbation (a harness that cannot fail would prove nothing).

use nq_core::testing::{Perturbation, Perturbed, check_backend};

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
