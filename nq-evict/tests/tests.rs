//! Integration tests for nq_evict: one binary, one module per concern.

mod common;
mod errors;
mod oracle;
mod prop;
mod scorers;
