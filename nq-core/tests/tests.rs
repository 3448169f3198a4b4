//! Integration tests for nq_core.
