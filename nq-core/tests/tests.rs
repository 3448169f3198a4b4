//! Integration tests for nq-core.
// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]
mod archive;
mod attention;
mod backend;
mod cache;
mod errors;
mod oracle;
