//! Integration tests for nq_lattice.

mod common;
mod errors;
mod golden;
mod oracle;
mod prop;
