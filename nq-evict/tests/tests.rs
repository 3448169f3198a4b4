//! Integration tests for nq_evict.
