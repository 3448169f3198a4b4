//! Run-time compilation (NVRTC) and loading of the kernels, once per device and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::error::{CudaError, Result};

/// The kernel sources, embedded at build time (no CUDA toolkit needed to build).
const ROTATE_CU: &str = include_str!("../kernels/rotate.cu");
const DECODE_CU: &str = include_str!("../kernels/decode.cu");

/// The loaded kernels of one device and the codebook tables on it.
#[derive(Debug)]
pub(crate) struct Kernels {
    /// `rht_rows` of kernels/rotate.cu.
    pub(crate) rotate: CudaFunction,
    /// `decode_fixed` of kernels/decode.cu.
    pub(crate) decode: CudaFunction,
    /// [`nq_lattice::codebook::e8p_base`], 256 x 8 floats.
    pub(crate) e8p_base: CudaSlice<f32>,
    /// [`nq_lattice::codebook::e81b_words`], 256 x 8 floats.
    pub(crate) e81b_words: CudaSlice<f32>,
}

/// Kernels already loaded, by device ordinal.
static LOADED: OnceLock<Mutex<HashMap<usize, Arc<Kernels>>>> = OnceLock::new();

/// The kernels of the device of `ctx`, compiled and loaded on the first call for it.
pub(crate) fn load(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<Arc<Kernels>> {
    let map = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    // Held while compiling, so two threads never compile for the same device twice.
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = map.get(&ctx.ordinal()) {
        return Ok(Arc::clone(k));
    }
    let rotate = compile(ctx, "rotate.cu", ROTATE_CU, false)?.load_function("rht_rows")?;
    let decode = compile(ctx, "decode.cu", DECODE_CU, false)?.load_function("decode_fixed")?;
    let flat = |t: &[[f32; 8]; 256]| t.iter().flatten().copied().collect::<Vec<f32>>();
    let e8p_base = stream.clone_htod(&flat(nq_lattice::codebook::e8p_base()))?;
    let e81b_words = stream.clone_htod(&flat(nq_lattice::codebook::e81b_words()))?;
    let k = Arc::new(Kernels { rotate, decode, e8p_base, e81b_words });
    map.insert(ctx.ordinal(), Arc::clone(&k));
    Ok(k)
}

/// Compile one kernel file for the device of `ctx` with NVRTC and load it. Every kernel
/// family (rotation and decode here, `encode.rs`, `attend.rs`) compiles through this, so
/// the options are the same everywhere; each caches its loaded functions once per device.
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
    // SAFETY: only tries to dlopen NVRTC; cudarc's loader panics when it is missing, so
    // this check must come before the first NVRTC call.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
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
