//! Integration tests for nq_rope.
