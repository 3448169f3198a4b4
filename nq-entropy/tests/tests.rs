//! Integration tests for nq_entropy.
