//! Integration tests for nq-core.
mod attention;
mod backend;
mod cache;
mod errors;
