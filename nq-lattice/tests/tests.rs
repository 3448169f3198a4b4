//! Integration tests for nq_lattice.
