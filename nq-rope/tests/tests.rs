//! Integration tests for nq_rope.
mod common;
mod errors;
mod kat;
mod oracle;
mod prop;
