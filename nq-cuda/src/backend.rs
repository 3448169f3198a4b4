//! [`CudaBackend`]: the [`Backend`] implementation on one CUDA device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};

use crate::error::{CudaError, Result};

/// One NVIDIA GPU as an [`nq_core::Backend`]: the compressed cache's storage, its encode
/// pipeline and its decode attention run there, with kernels compiled at run time by NVRTC
/// (once per device and process, on first use).
///
/// # Examples
/// ```no_run
/// use nq_core::{CompressedCache, KvShape, Preset};
/// use nq_cuda::CudaBackend;
/// let gpu = CudaBackend::new(0)?;
/// let shape = KvShape { layers: 2, q_heads: 8, kv_heads: 2, head_dim: 64 };
/// let cache = CompressedCache::with_backend(gpu, shape, Preset::Balanced.config(), None)
///     .expect("valid configuration");
/// assert_eq!(cache.stats().tokens_seen, 0);
/// # Ok::<(), nq_cuda::CudaError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    /// Scaled sign vectors `D / sqrt(n)` on the device, by (block dim, seed).
    signs: Arc<Mutex<SignCache>>,
}

/// Device copies of `D / sqrt(n)`, by (Hadamard block dim, seed).
type SignCache = HashMap<(usize, u64), Arc<CudaSlice<f32>>>;

impl CudaBackend {
    /// A backend on device `ordinal` (its primary context and default stream).
    ///
    /// # Errors
    /// [`CudaError::NoLibrary`] when the CUDA driver library cannot be loaded (no NVIDIA
    /// driver here), [`CudaError::Driver`] when there is no device `ordinal` or the driver
    /// fails.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !crate::error::driver_present() {
            return Err(CudaError::NoLibrary { op: "CudaBackend::new", library: "libcuda" });
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        Ok(CudaBackend { ctx, stream, signs: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// A backend that queues its work on an existing `stream` (and its context): share
    /// another library's stream, such as candle's `CudaDevice::cuda_stream()` (candle-core
    /// 0.11 uses the same cudarc 0.19), so the cache's work is ordered with the model's and
    /// their buffers are usable by both without copies.
    pub fn from_stream(stream: Arc<CudaStream>) -> Self {
        CudaBackend {
            ctx: Arc::clone(stream.context()),
            stream,
            signs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The device's name, as the driver reports it.
    ///
    /// # Errors
    /// Driver failures.
    pub fn device_name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// The stream every operation of this backend is queued on (synchronize it before
    /// reading a clock).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `D / sqrt(n)` of one Hadamard block on the device, uploaded once per (dim, seed).
    pub(crate) fn scaled_signs(
        &self,
        block: &nq_hadamard::RandomizedHadamard,
    ) -> Result<Arc<CudaSlice<f32>>> {
        let key = (block.dim(), block.seed());
        let mut cache = self.signs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = cache.get(&key) {
            return Ok(Arc::clone(s));
        }
        #[allow(clippy::cast_precision_loss)]
        let scale = ((block.dim() as f64).sqrt().recip()) as f32;
        let host: Vec<f32> = block.signs().iter().map(|s| s * scale).collect();
        let dev = Arc::new(self.stream.clone_htod(&host)?);
        cache.insert(key, Arc::clone(&dev));
        Ok(dev)
    }
}
