//! [`CudaBackend`]: the [`Backend`] implementation on one CUDA device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use half::f16;
use nq_core::{Encoded, Rotation, RowOps, Rows};
use nq_lattice::{FixedBits, FixedCodec};

use crate::error::{CudaError, Result, check_len, to_i64, to_u32};
use crate::module::{self, Kernels};

/// Largest power-of-two Hadamard block the rotation kernel takes: one row block of it
/// fills 32 KiB of shared memory (the default limit is 48 KiB).
pub const MAX_BLOCK: usize = 8192;

/// Threads per CUDA block of the decode kernel.
const DECODE_THREADS: u32 = 256;

/// Most CUDA blocks of the decode kernel (it loops over the rest, grid-stride).
const DECODE_MAX_GRID: u32 = 1 << 20;

/// The compression stages on one NVIDIA GPU, with kernels compiled at run time by NVRTC.
///
/// - `rotate`: a CUDA kernel (`kernels/rotate.cu`), one row per group of threads, the
///   butterflies in shared memory, one launch per power-of-two block of the
///   block-diagonal [`Rotation`].
/// - `decode`: a CUDA kernel (`kernels/decode.cu`), one thread per block of 8 values,
///   table lookups in the E8P base points and the 3-bit residual words of
///   [`nq_lattice::codebook`] (uploaded once per device). Bit-identical to the CPU.
/// - `encode`: **host fallback**: the rows are downloaded and encoded by the CPU codec
///   ([`FixedCodec::encode_rows`]); there is no GPU encoder yet.
///
/// The kernels are compiled and loaded lazily, once per device and process, on the first
/// call that needs them.
///
/// # Examples
/// ```no_run
/// use nq_core::{RowOps, Rotation, Rows};
/// use nq_cuda::CudaBackend;
/// let gpu = CudaBackend::new(0)?;
/// let rows = Rows::new(2, 128).expect("valid shape");
/// let rot = Rotation::new(128, 7).expect("valid rotation");
/// let mut buf = gpu.upload(&vec![1.0f32; 256])?;
/// gpu.rotate(&mut buf, rows, &rot, false)?;
/// gpu.rotate(&mut buf, rows, &rot, true)?;
/// let back = gpu.download(&buf)?;
/// assert!(back.iter().all(|v| (v - 1.0).abs() < 1e-5));
/// # Ok::<(), nq_cuda::CudaError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    kernels: OnceLock<Arc<Kernels>>,
    /// Scaled sign vectors `D / sqrt(n)` on the device, by (block dim, seed).
    signs: Arc<Mutex<SignCache>>,
}

/// Device copies of `D / sqrt(n)`, by (Hadamard block dim, seed).
type SignCache = HashMap<(usize, u64), Arc<CudaSlice<f32>>>;

/// Fixed-rate codes and scales resident on the device, ready for [`CudaBackend::decode_device`].
#[derive(Debug)]
pub struct DeviceCodes {
    codes: CudaSlice<u8>,
    scales: CudaSlice<f32>,
    rows: Rows,
    bits: FixedBits,
}

impl DeviceCodes {
    /// The shape the codes decode to.
    pub fn rows(&self) -> Rows {
        self.rows
    }

    /// The code rate.
    pub fn bits(&self) -> FixedBits {
        self.bits
    }

    /// Bytes held on the device (codes plus one `f32` scale per row).
    pub fn device_bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }
}

impl CudaBackend {
    /// A backend on device `ordinal` (its primary context and default stream).
    ///
    /// # Errors
    /// [`CudaError::NoLibrary`] when the CUDA driver library cannot be loaded (no NVIDIA
    /// driver here), [`CudaError::Driver`] when there is no device `ordinal` or the driver
    /// fails.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen the driver library; cudarc's loader panics when the
        // library is missing, so this check must come before any driver call.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoLibrary { op: "CudaBackend::new", library: "libcuda" });
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        Ok(CudaBackend {
            ctx,
            stream,
            kernels: OnceLock::new(),
            signs: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// A backend that queues its work on an existing `stream` (and its context): share
    /// another library's stream, such as candle's `CudaDevice::cuda_stream()` (candle-core
    /// 0.11 uses the same cudarc 0.19), so the cache's work is ordered with the model's and
    /// their buffers are usable by both without copies.
    pub fn from_stream(stream: Arc<CudaStream>) -> Self {
        CudaBackend {
            ctx: Arc::clone(stream.context()),
            stream,
            kernels: OnceLock::new(),
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

    /// The compiled kernels and device tables, compiling them on first use.
    pub(crate) fn kernels(&self) -> Result<&Kernels> {
        if let Some(k) = self.kernels.get() {
            return Ok(k);
        }
        let k = module::load(&self.ctx, &self.stream)?;
        Ok(self.kernels.get_or_init(|| k).as_ref())
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

    /// Upload codes and scales for decoding on the device (validated here, once).
    ///
    /// # Errors
    /// [`CudaError::Len`] when the codes or scales disagree with `rows` and `codec`,
    /// [`CudaError::BadScale`] for a negative or non-finite scale, driver failures.
    pub fn upload_codes(
        &self,
        enc: &Encoded,
        rows: Rows,
        codec: &FixedCodec,
    ) -> Result<DeviceCodes> {
        const OP: &str = "CudaBackend::upload_codes";
        check_len(OP, "scales", enc.scales.len(), rows.n())?;
        check_len(OP, "codes", enc.codes.len(), codec.code_len(rows.n(), rows.dim()))?;
        let scales = scales_f32(OP, &enc.scales)?;
        Ok(DeviceCodes {
            codes: self.clone_htod(&enc.codes)?,
            scales: self.clone_htod(&scales)?,
            rows,
            bits: codec.bits(),
        })
    }

    /// Decode device-resident codes into a new device buffer of `rows.len()` values:
    /// `out[n * dim + i] = scale_n * c_n[i]`, bit-identical to [`FixedCodec::decode_rows`].
    ///
    /// # Errors
    /// NVRTC compile failure on first use, driver failures.
    pub fn decode_device(&self, codes: &DeviceCodes) -> Result<CudaSlice<f32>> {
        let rows = codes.rows;
        if rows.is_empty() {
            return Ok(self.stream.null()?);
        }
        let k = self.kernels()?;
        let n_blocks = rows.len() / 8;
        let blocks_per_row = rows.dim() / 8;
        // SAFETY: the decode kernel below writes every one of the `rows.len()` values
        // (thread b writes values 8b..8b+8 for every b < n_blocks = rows.len() / 8) before
        // the buffer is returned, so no uninitialized value is ever read.
        let mut out = unsafe { self.stream.alloc::<f32>(rows.len()) }?;
        let grid = u32::try_from(n_blocks.div_ceil(DECODE_THREADS as usize))
            .unwrap_or(DECODE_MAX_GRID)
            .min(DECODE_MAX_GRID);
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (DECODE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let n_blocks_i64 = to_i64("CudaBackend::decode_device", n_blocks)?;
        let bpr_i64 = to_i64("CudaBackend::decode_device", blocks_per_row)?;
        let bits = i32::from(match codes.bits {
            FixedBits::B2 => 2u8,
            FixedBits::B3 => 3,
            FixedBits::B4 => 4,
        });
        let mut launch = self.stream.launch_builder(&k.decode);
        launch.arg(&codes.codes);
        launch.arg(&codes.scales);
        launch.arg(&k.e8p_base);
        launch.arg(&k.e81b_words);
        launch.arg(&mut out);
        launch.arg(&n_blocks_i64);
        launch.arg(&bpr_i64);
        launch.arg(&bits);
        // SAFETY: the arguments match `decode_fixed(const u8*, const float*, const float*,
        // const float*, float*, long long, long long, int)` in kernels/decode.cu. `codes`
        // holds n_blocks * bits bytes and `scales` rows.n() values (checked in
        // `upload_codes`), the tables hold 256 * 8 floats each, `out` holds 8 * n_blocks
        // floats; the kernel reads and writes nothing beyond these (grid-stride loop
        // bounded by n_blocks, pattern and word indices are bytes < 256).
        unsafe { launch.launch(cfg) }?;
        Ok(out)
    }

    /// One launch of the rotation kernel over one power-of-two block of every row.
    fn rotate_block(
        &self,
        f: &CudaFunction,
        buf: &mut CudaSlice<f32>,
        rows: Rows,
        offset: usize,
        block: &nq_hadamard::RandomizedHadamard,
        inverse: bool,
    ) -> Result<()> {
        const OP: &str = "CudaBackend::rotate";
        let size = block.dim();
        if !(2..=MAX_BLOCK).contains(&size) {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!("Hadamard block of {size} (the kernel takes 2..={MAX_BLOCK})"),
            });
        }
        let signs = self.scaled_signs(block)?;
        let per_row = (size / 2).min(256);
        let rows_per_block = (256 / per_row).max(1);
        let grid = u32::try_from(rows.n().div_ceil(rows_per_block)).map_err(|_| {
            CudaError::Unsupported { op: OP, what: format!("{} rows exceed the grid", rows.n()) }
        })?;
        let shared = u32::try_from(rows_per_block * size * 4)
            .map_err(|_| CudaError::Unsupported { op: OP, what: format!("block {size}") })?;
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (to_u32(OP, per_row)?, to_u32(OP, rows_per_block)?, 1),
            shared_mem_bytes: shared,
        };
        let n_rows = to_i64(OP, rows.n())?;
        let stride = to_i64(OP, rows.dim())?;
        let offset = i32::try_from(offset)
            .map_err(|_| CudaError::Unsupported { op: OP, what: format!("offset {offset}") })?;
        let size_i32 = i32::try_from(size)
            .map_err(|_| CudaError::Unsupported { op: OP, what: format!("block {size}") })?;
        let inverse = i32::from(inverse);
        let mut launch = self.stream.launch_builder(f);
        launch.arg(buf);
        launch.arg(&n_rows);
        launch.arg(&stride);
        launch.arg(&offset);
        launch.arg(&size_i32);
        launch.arg(signs.as_ref());
        launch.arg(&inverse);
        // SAFETY: the arguments match `rht_rows(float*, long long, long long, int, int,
        // const float*, int)` in kernels/rotate.cu. `buf` holds n_rows * stride floats
        // (checked by `rotate`), every row touches [offset, offset + size) with
        // offset + size <= stride (the blocks of `rot` sum to its dim == stride), `signs`
        // holds `size` floats, and the shared memory is rows_per_block * size floats,
        // exactly what blockDim.y rows of `size` need.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    fn clone_htod<T: cudarc::driver::DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return Ok(self.stream.null()?);
        }
        Ok(self.stream.clone_htod(host)?)
    }
}

impl RowOps for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Error = CudaError;

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.clone_htod(host)
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.stream.clone_dtoh(buf)?)
    }

    fn rotate(
        &self,
        buf: &mut CudaSlice<f32>,
        rows: Rows,
        rot: &Rotation,
        inverse: bool,
    ) -> Result<()> {
        const OP: &str = "CudaBackend::rotate";
        check_len(OP, "buffer", buf.len(), rows.len())?;
        check_len(OP, "rotation", rot.dim(), rows.dim())?;
        if rows.is_empty() {
            return Ok(());
        }
        let f = &self.kernels()?.rotate;
        let mut offset = 0;
        for block in rot.blocks() {
            self.rotate_block(f, buf, rows, offset, block, inverse)?;
            offset += block.dim();
        }
        Ok(())
    }

    /// Host fallback: downloads the rows and encodes them with the CPU codec.
    fn encode(&self, buf: &CudaSlice<f32>, rows: Rows, codec: &FixedCodec) -> Result<Encoded> {
        check_len("CudaBackend::encode", "buffer", buf.len(), rows.len())?;
        let host = self.download(buf)?;
        let mut enc = Encoded {
            codes: vec![0; codec.code_len(rows.n(), rows.dim())],
            scales: vec![f16::ZERO; rows.n()],
        };
        codec.encode_rows(&host, rows.dim(), &mut enc.codes, &mut enc.scales)?;
        Ok(enc)
    }

    fn decode(&self, enc: &Encoded, rows: Rows, codec: &FixedCodec) -> Result<CudaSlice<f32>> {
        let dev = self.upload_codes(enc, rows, codec)?;
        self.decode_device(&dev)
    }
}

/// Scales as `f32` (exact), rejecting negative and non-finite ones as the CPU decoder does.
fn scales_f32(op: &'static str, scales: &[f16]) -> Result<Vec<f32>> {
    scales
        .iter()
        .enumerate()
        .map(|(row, s)| {
            let v = s.to_f32();
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(CudaError::BadScale { op, row, value: v })
            }
        })
        .collect()
}
