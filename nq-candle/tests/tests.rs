//! nq-candle integration tests: one binary, one module per kind of check.

// Helpers outside #[test] functions are test code too (clippy only exempts the latter).
#![allow(clippy::unwrap_used)]

mod common;
mod compressed;
mod errors;
mod kat;
mod oracle;
mod prop;
