//! `cargo xtask bench gpu-decode`: greedy decode on a GPU with nq-candle's `cuda` feature,
//! candle's dense f16 cache against the compressed cache on the device
//! (`nq-candle/examples/gpu_decode.rs`).
//!
//! ```text
//! cargo xtask bench gpu-decode                 build (cargo xtask build-cuda) and package
//!                                              target/nq-gpu-candle/run.sh for a GPU machine
//! cargo xtask bench gpu-decode --collect OUT   merge OUT/gpu-decode.json (written there by
//!                                              `bash target/nq-gpu-candle/run.sh OUT`) into
//!                                              target/nq-bench/gpu-decode.json
//! ```

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::project_root;

pub(crate) fn run(args: &[String]) -> Result<Vec<Value>> {
    match args {
        [] => {
            crate::build_cuda::run(&[])?;
            eprintln!(
                "on a GPU machine, from the repository root: bash target/nq-gpu-candle/run.sh OUT \
                 (carry target/nq-gpu-candle/{{run.sh,*.xz}}), then cargo xtask bench gpu-decode \
                 --collect OUT"
            );
            let path = project_root().join("target/nq-bench/gpu-decode.json");
            Ok(fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default())
        }
        [flag, dir] if flag == "--collect" => collect(Path::new(dir)),
        _ => bail!("bench gpu-decode takes no arguments or `--collect DIR`, got {args:?}"),
    }
}

/// The records of a run, each tagged with the device line of `device.txt`.
fn collect(out: &Path) -> Result<Vec<Value>> {
    let device = fs::read_to_string(out.join("device.txt")).unwrap_or_default();
    let path = out.join("gpu-decode.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let Value::Array(mut records) =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    else {
        bail!("{} is not a JSON array of records", path.display());
    };
    for r in &mut records {
        r["device_line"] = Value::String(device.trim().to_owned());
    }
    Ok(records)
}
