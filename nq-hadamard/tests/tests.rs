//! Integration tests for nq_hadamard.
mod common;
mod errors;
mod kat;
mod oracle;
mod prop;
