//! Integration tests for nq_lattice.

mod common;
mod errors;
mod oracle;
mod prop;
