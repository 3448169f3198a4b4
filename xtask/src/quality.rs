//! `cargo xtask bench quality`: `nq eval --json` for every preset on every real model, merged
//! into `target/nq-bench/quality.json`, plus a ratio-vs-perplexity Pareto plot.

use anyhow::{Result, bail};
use serde_json::Value;

pub(crate) fn run(_quick: bool) -> Result<Vec<Value>> {
    bail!("bench quality needs the `nq` program of nq-candle, which does not exist yet")
}
