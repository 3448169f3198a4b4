//! Integration tests for nq_hadamard.
