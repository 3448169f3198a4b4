//! `cargo xtask ci`: the CI command list, in order. `.ci/run` installs what a fresh machine
//! lacks (the three real models) and then calls this, so running it locally reproduces CI.
//! The tests run with `NQ_CI=1`: a test that needs a model fails instead of skipping, so run
//! `cargo xtask fetch-model NAME` for smollm2, qwen05 and gemma270m first.

use anyhow::{Result, bail};

use crate::{cargo, project_root, run_checked};

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("ci takes no arguments, got `{a}`");
    }
    let started = std::time::Instant::now();
    run_checked(cargo().args(["fmt", "--all", "--check"]))?;
    run_checked(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The README's test command; a missing model is a failure here, never a skip.
    run_checked(cargo().arg("test").env("NQ_CI", "1"))?;
    // The scalar fallbacks of the SIMD crates, in their own target dir so the main build's
    // fingerprints (which RUSTFLAGS would invalidate) stay warm.
    let scalar_dir = project_root().join("target").join("scalar");
    run_checked(
        cargo()
            .args(["test", "-p", "nq-hadamard", "-p", "nq-lattice"])
            .env("RUSTFLAGS", "--cfg nq_force_scalar")
            .env("CARGO_TARGET_DIR", scalar_dir),
    )?;
    run_checked(
        cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    eprintln!("ci: all steps passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
