//! nq-candle integration tests: one binary, one module per kind of check.

// Helpers outside #[test] functions are test code too (clippy only exempts the latter).
#![allow(clippy::unwrap_used)]

mod cli;
mod common;
mod compressed;
mod errors;
mod evaluation;
#[cfg(feature = "cuda")]
mod gpu;
mod kat;
mod needle;
mod oracle;
mod prop;
mod resume;
