//! The CPU backend passes its own conformance harness (the harness nq-cuda runs).
nq_core::backend_tests!(nq_core::CpuBackend);
