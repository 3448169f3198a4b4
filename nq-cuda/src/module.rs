//! Run-time compilation (NVRTC) and loading of the kernels, once per device and process.

use std::sync::Arc;

use cudarc::driver::CudaContext;
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::error::{CudaError, Result};

/// Compile one kernel file for the device of `ctx` with NVRTC and load it. Both kernel
/// families (`encode.rs`, `attend.rs`) compile through this, so the options are the same
/// everywhere; each caches its loaded functions once per device.
/// `fmad` allows contracting `a * b + c` into one FMA: off for code that must equal the
/// CPU bit for bit (encoders, decoders), on where only speed and a derived tolerance
/// matter (attention).
///
/// # Errors
/// [`CudaError::NoLibrary`] without NVRTC, [`CudaError::Compile`] with the NVRTC log,
/// driver failures.
pub(crate) fn compile(
    ctx: &Arc<CudaContext>,
    file: &'static str,
    src: &str,
    fmad: bool,
) -> Result<Arc<cudarc::driver::CudaModule>> {
    if !crate::error::nvrtc_present() {
        return Err(CudaError::NoLibrary { op: "nq_cuda kernels", library: "libnvrtc" });
    }
    let (major, minor) = ctx.compute_capability()?;
    let opts = CompileOptions {
        fmad: Some(fmad),
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        name: Some(file.to_owned()),
        ..CompileOptions::default()
    };
    let ptx =
        compile_ptx_with_opts(src, opts).map_err(|source| CudaError::Compile { file, source })?;
    Ok(ctx.load_module(ptx)?)
}
