//! The encode pipeline on the device: f16 rows of one kv head in, fixed-rate E8 codes and
//! f16 scales out, without a trip through the host.
//!
//! The CPU pipeline (`nq-core`'s `compress_range`) is, per kept row of a head: f16 -> f32,
//! subtract the head's column mean, multiply keys by the per-channel smoothing factor,
//! rotate by `R = H D / sqrt(n)` per Hadamard block, then [`FixedCodec::encode_rows`]
//! (per-row f16 scale by the codec's [`ScaleMode`], E8P / e81b / E8P-residual codes). The
//! kernels of `kernels/encode.cu` run all of it in one launch per head ([`Encoder::encode_head`]),
//! or in parts ([`Encoder::prepare`], [`Encoder::encode_rows`]), plus the column sums the
//! mean and the smoothing factor are derived from ([`Encoder::column_sums`]).
//!
//! The kernels are an operation-for-operation port of the CPU code compiled without fused
//! multiply-adds, and the rotation runs its butterflies in the same ascending-stride order
//! as `nq-hadamard` (whose kernels are bit-identical to each other for that reason), so the
//! codes and scales are expected to equal the CPU's bit for bit; the tests count and report
//! any row that differs.
//!
//! With [`HeadRows::rope`] set (keys stored RoPE-free, `CompressionConfig::remove_rope`),
//! every gathered row is first rotated back from its position, as `nq_rope::Rope::invert`
//! does, with the cosines and sines the host computes once per compression
//! ([`DeviceRope::new`]: `rotary_dim / 2` pairs per kept row, the same f32 values
//! `Rope::invert` uses), so the codes still equal the CPU's.
//!
//! Work is queued on the backend's stream; errors found by a kernel (a non-finite value, a
//! scale that overflows f16, a row index out of range) are recorded on the device and
//! returned by the next [`Encoder::finish`] (which synchronizes), so several heads can be
//! queued before one synchronization.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use nq_core::Rotation;
use nq_lattice::{BEST_OF_SPREAD, FixedBits, FixedCodec, ScaleMode};
use nq_rope::{Rope, RopeLayout};

use crate::backend::CudaBackend;
use crate::error::{CudaError, Result, check_len, to_i32, to_i64, to_u32};
use crate::module;

/// The kernel source, embedded at build time.
const ENCODE_CU: &str = include_str!("../kernels/encode.cu");

/// Threads per CUDA block of the encode kernels (`THREADS` in kernels/encode.cu).
const THREADS: usize = 256;

/// Largest row length the encode kernels take: one row is one group of at most 32 lanes of
/// one warp, each lane owning 8 values.
pub const MAX_ENCODE_DIM: usize = 256;

/// Rows per chunk of the column-sum kernel (each chunk's partial sums are added in order).
const SUM_CHUNK_ROWS: usize = 256;

/// Threads per CUDA block of the column-sum kernels (one column each).
const SUM_THREADS: usize = 128;

/// The status words' "no error" value (the kernels take the minimum of error records).
const NO_ERROR: u64 = u64::MAX;

/// The loaded encode kernels of one device and the E8P key table on it.
#[derive(Debug)]
struct EncodeKernels {
    b2: CudaFunction,
    b3: CudaFunction,
    b4: CudaFunction,
    sums_partial: CudaFunction,
    sums_finish: CudaFunction,
    /// Base-3 key of an E8P pattern (digit i = |a_i| - 1/2) -> pattern id; 0xffff for keys
    /// of no pattern. 8193 entries.
    key_to_id: CudaSlice<u16>,
}

/// Encode kernels already loaded, by device ordinal.
static LOADED: OnceLock<Mutex<HashMap<usize, Arc<EncodeKernels>>>> = OnceLock::new();

/// The encode kernels of the device of `ctx`, compiled and loaded on the first call for it.
fn load(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<Arc<EncodeKernels>> {
    let map = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    // Held while compiling, so two threads never compile for the same device twice.
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = map.get(&ctx.ordinal()) {
        return Ok(Arc::clone(k));
    }
    let m = module::compile(ctx, "encode.cu", ENCODE_CU, false)?;
    let k = Arc::new(EncodeKernels {
        b2: m.load_function("encode_b2")?,
        b3: m.load_function("encode_b3")?,
        b4: m.load_function("encode_b4")?,
        sums_partial: m.load_function("column_sums_partial")?,
        sums_finish: m.load_function("column_sums_finish")?,
        key_to_id: stream.clone_htod(&key_to_id_table())?,
    });
    map.insert(ctx.ordinal(), Arc::clone(&k));
    Ok(k)
}

/// The E8P pattern id of each base-3 key (digit `i` = `|b_i| - 1/2` of the pattern's base
/// point [`nq_lattice::codebook::e8p_base`]), `0xffff` where no pattern has the key.
fn key_to_id_table() -> Vec<u16> {
    let mut table = vec![u16::MAX; 8193];
    for (id, base) in (0u16..).zip(nq_lattice::codebook::e8p_base()) {
        let key = base.iter().rev().fold(0usize, |key, b| {
            // |b| is 1/2, 3/2 or 5/2: the digit is its integer part.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let digit = b.abs() as usize;
            key * 3 + digit
        });
        table[key] = id;
    }
    table
}

/// The decision-scale gains of [`ScaleMode::BestOf`], as `nq-lattice`'s `encode_fixed`
/// computes them: `2^((k - (n - 1) / 2) * BEST_OF_SPREAD)` in `f32` (host `exp2`, so the
/// device uses the very same values).
fn best_of_gains(candidates: u8) -> Vec<f32> {
    let n = usize::from(candidates);
    #[allow(clippy::cast_precision_loss)]
    (0..n).map(|k| ((k as f32 - (n - 1) as f32 / 2.0) * BEST_OF_SPREAD).exp2()).collect()
}

/// The f16 rows of one kv head and what to apply to them before coding.
#[derive(Debug)]
pub struct HeadRows<'a> {
    /// The head's dense rows as f16 bits, `[m, dim]` row-major.
    pub rows: CudaView<'a, u16>,
    /// Indices of the rows to encode (each `< m`), in output order.
    pub keep: CudaView<'a, u32>,
    /// Column mean to subtract (`dim` values), or `None` (no centering).
    pub mean: Option<CudaView<'a, f32>>,
    /// Per-channel factor to multiply by after centering (`dim` values), or `None`.
    pub smooth: Option<CudaView<'a, f32>>,
    /// RoPE inversion before centering (keys stored RoPE-free): the kept rows' positions,
    /// one per `keep` entry, or `None`.
    pub rope: Option<&'a DeviceRope>,
}

/// The cosines and sines of a list of positions on the device: what the encoder needs to
/// rotate rows back from those positions ([`HeadRows::rope`]), as `nq_rope::Rope::invert`
/// does. Computed on the host by [`Rope::table`] (f64 angles, rounded to f32), which the CPU
/// pipeline uses too.
#[derive(Debug)]
pub struct DeviceRope {
    /// `[positions, rotary_dim / 2]`.
    cos: CudaSlice<f32>,
    /// `[positions, rotary_dim / 2]`.
    sin: CudaSlice<f32>,
    positions: usize,
    head_dim: usize,
    rotary_dim: usize,
    interleaved: bool,
    /// The factor on the rotated values after inversion (1 when the rope has none).
    down: f32,
}

impl DeviceRope {
    /// The table of `rope` for `positions`, uploaded on the encoder's stream.
    ///
    /// # Errors
    /// Driver failures.
    pub fn new(gpu: &CudaBackend, rope: &Rope, positions: &[u32]) -> Result<Self> {
        let table = rope.table(positions);
        let cfg = rope.config();
        Ok(DeviceRope {
            cos: gpu.stream.clone_htod(table.cos())?,
            sin: gpu.stream.clone_htod(table.sin())?,
            positions: positions.len(),
            head_dim: cfg.head_dim,
            rotary_dim: cfg.rotary_dim,
            interleaved: cfg.layout == RopeLayout::Interleaved,
            down: rope.factors().map_or(1.0, |(_, down)| down),
        })
    }

    /// How many positions the table holds.
    pub fn len(&self) -> usize {
        self.positions
    }

    /// Whether the table holds no position.
    pub fn is_empty(&self) -> bool {
        self.positions == 0
    }
}

/// Where codes and scales go: rows `row0..row0 + n` of growable device buffers in the
/// [`FixedCodec`] layout (`dim / 8 * bytes_per_block` code bytes per row, one f16 scale as
/// its bits per row).
#[derive(Debug)]
pub struct CodesOut<'a, 'b> {
    /// Code bytes of every row of the buffer (row `r` at `r * dim / 8 * bytes_per_block`).
    pub codes: &'b mut CudaViewMut<'a, u8>,
    /// f16 bits of the scales, one per row of the buffer.
    pub scales: &'b mut CudaViewMut<'a, u16>,
    /// The first row written.
    pub row0: usize,
}

/// Per-column sums over a set of rows, in f64: what the column mean and the key smoothing
/// factor are computed from (on the host: `nq_core::prep`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSums {
    /// `sum_r x[r][c]` per column `c`.
    pub sum: Vec<f64>,
    /// `sum_r x[r][c]^2` per column `c`.
    pub squares: Vec<f64>,
}

/// The encode pipeline of one rotation and one codec on one device.
///
/// Holds the rotation's scaled sign vector `D / sqrt(n)` (all Hadamard blocks, in order)
/// and the codec's best-of gains on the device, and a status buffer the kernels record
/// errors in. Cheap to keep per (layer, keys or values).
///
/// # Examples
/// ```no_run
/// use nq_cuda::CudaBackend;
/// use nq_cuda::encode::{CodesOut, Encoder, HeadRows};
/// use nq_lattice::{FixedBits, FixedCodec, ScaleMode};
/// let gpu = CudaBackend::new(0)?;
/// let rot = nq_core::Rotation::new(128, 7).expect("valid rotation");
/// let codec = FixedCodec::new(FixedBits::B2, ScaleMode::Rms)?;
/// let enc = Encoder::new(&gpu, &rot, codec)?;
/// let s = gpu.stream();
/// let rows = s.clone_htod(&vec![0x3c00u16; 10 * 128])?; // ten rows of 1.0
/// let keep = s.clone_htod(&[0u32, 3, 9])?;
/// let mut codes = s.alloc_zeros::<u8>(codec.code_len(3, 128))?;
/// let mut scales = s.alloc_zeros::<u16>(3)?;
/// let head = HeadRows { rows: rows.slice(..), keep: keep.slice(..), mean: None, smooth: None, rope: None };
/// let out = CodesOut { codes: &mut codes.slice_mut(..), scales: &mut scales.slice_mut(..), row0: 0 };
/// enc.encode_head(&head, out)?;
/// enc.finish()?;
/// # Ok::<(), nq_cuda::CudaError>(())
/// ```
#[derive(Debug)]
pub struct Encoder {
    stream: Arc<CudaStream>,
    kernels: Arc<EncodeKernels>,
    codec: FixedCodec,
    dim: usize,
    /// `D / sqrt(n)` of every Hadamard block of the rotation, concatenated (`dim` values).
    signs: CudaSlice<f32>,
    /// [`best_of_gains`] of the codec (one unused 1.0 for the other scale modes).
    gains: CudaSlice<f32>,
    /// Three error words (see kernels/encode.cu), reset by [`Encoder::finish`].
    status: Mutex<CudaSlice<u64>>,
}

/// Where the pipeline of one head writes.
enum HeadTarget<'a, 'b> {
    /// Codes and scales.
    Codes(CodesOut<'a, 'b>),
    /// The prepared (rotated) f32 rows.
    Prepared(&'b mut CudaViewMut<'a, f32>),
}

/// Device pointers (0 for none) and sizes of one launch of the encode kernel.
#[derive(Debug, Clone, Copy)]
struct Ptrs {
    rows: u64,
    keep: u64,
    m_rows: usize,
    src32: u64,
    n_rows: usize,
    rope_cos: u64,
    rope_sin: u64,
    rope_rotary: i32,
    rope_interleaved: i32,
    rope_down: f32,
    mean: u64,
    smooth: u64,
    rotate: bool,
    prepared: u64,
    codes: u64,
    scales: u64,
    row0: usize,
}

impl Default for Ptrs {
    fn default() -> Self {
        Ptrs {
            rows: 0,
            keep: 0,
            m_rows: 0,
            src32: 0,
            n_rows: 0,
            rope_cos: 0,
            rope_sin: 0,
            rope_rotary: 0,
            rope_interleaved: 0,
            rope_down: 1.0,
            mean: 0,
            smooth: 0,
            rotate: false,
            prepared: 0,
            codes: 0,
            scales: 0,
            row0: 0,
        }
    }
}

/// The RoPE arguments of a launch: table pointers (0 without a table), rotary values, layout
/// and factor, and the guards that keep the table's pointers valid until the launch is queued.
struct RopeArgs<'g> {
    cos: u64,
    sin: u64,
    rotary: i32,
    interleaved: i32,
    down: f32,
    _guards: Option<(SyncOnDrop<'g>, SyncOnDrop<'g>)>,
}

impl<'g> RopeArgs<'g> {
    fn new(op: &'static str, rope: Option<&'g DeviceRope>, s: &'g Arc<CudaStream>) -> Result<Self> {
        let Some(r) = rope else {
            return Ok(RopeArgs {
                cos: 0,
                sin: 0,
                rotary: 0,
                interleaved: 0,
                down: 1.0,
                _guards: None,
            });
        };
        let (cos, gc) = r.cos.device_ptr(s);
        let (sin, gs) = r.sin.device_ptr(s);
        Ok(RopeArgs {
            cos,
            sin,
            rotary: to_i32(op, r.rotary_dim)?,
            interleaved: i32::from(r.interleaved),
            down: r.down,
            _guards: Some((gc, gs)),
        })
    }
}

impl Encoder {
    /// The pipeline for rows of `rot.dim()` values, rotated by `rot` and coded by `codec`.
    ///
    /// # Errors
    /// [`CudaError::Unsupported`] when `rot.dim()` is above [`MAX_ENCODE_DIM`] or the codec
    /// uses [`ScaleMode::BestOf`] with 0 candidates; NVRTC compile failure on the first
    /// use on a device; driver failures.
    pub fn new(gpu: &CudaBackend, rot: &Rotation, codec: FixedCodec) -> Result<Self> {
        const OP: &str = "Encoder::new";
        let dim = rot.dim();
        if dim == 0 || dim > MAX_ENCODE_DIM || !dim.is_multiple_of(8) {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!(
                    "row length {dim} (the encoder takes multiples of 8 up to {MAX_ENCODE_DIM})"
                ),
            });
        }
        let gains = match codec.scale_mode() {
            ScaleMode::BestOf { candidates: 0 } => {
                return Err(CudaError::Unsupported {
                    op: OP,
                    what: "BestOf with 0 candidates".into(),
                });
            }
            ScaleMode::BestOf { candidates } => best_of_gains(candidates),
            ScaleMode::AbsMax | ScaleMode::Rms => vec![1.0],
        };
        let stream = Arc::clone(&gpu.stream);
        let kernels = load(&gpu.ctx, &stream)?;
        // SAFETY: every element is written by the block copies below before any kernel
        // reads it (the blocks' dimensions sum to `dim`).
        let mut signs = unsafe { stream.alloc::<f32>(dim) }?;
        let mut at = 0;
        for block in rot.blocks() {
            let src = gpu.scaled_signs(block)?;
            stream.memcpy_dtod(src.as_ref(), &mut signs.slice_mut(at..at + block.dim()))?;
            at += block.dim();
        }
        let gains = stream.clone_htod(&gains)?;
        let status = Mutex::new(stream.clone_htod(&[NO_ERROR; 3])?);
        Ok(Encoder { stream, kernels, codec, dim, signs, gains, status })
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The codec the rows are coded with.
    pub fn codec(&self) -> FixedCodec {
        self.codec
    }

    /// The whole pipeline for one head: gather `head.keep` rows of `head.rows`, f16 -> f32,
    /// subtract the mean, multiply by the smoothing factor, rotate, and code them into rows
    /// `out.row0..out.row0 + keep.len()` of `out`. Queued on the stream; call
    /// [`finish`](Self::finish) for errors found on the device.
    ///
    /// # Errors
    /// [`CudaError::Unsupported`] for more than 2^32 values; [`CudaError::Len`] when a buffer
    /// disagrees with the shape ([`HeadRows`] and its RoPE table, [`CodesOut`]); driver
    /// failures.
    pub fn encode_head(&self, head: &HeadRows<'_>, out: CodesOut<'_, '_>) -> Result<()> {
        self.run_head("Encoder::encode_head", head, HeadTarget::Codes(out))
    }

    /// The pipeline up to the codes: gathered, centered, smoothed and rotated rows written
    /// as f32 into `out` (`keep.len() * dim` values). Queued on the stream.
    ///
    /// # Errors
    /// As [`encode_head`](Self::encode_head).
    pub fn prepare(&self, head: &HeadRows<'_>, out: &mut CudaViewMut<'_, f32>) -> Result<()> {
        self.run_head("Encoder::prepare", head, HeadTarget::Prepared(out))
    }

    /// [`encode_head`](Self::encode_head) or [`prepare`](Self::prepare): validates, then
    /// launches with the head's pointers (their guards live until the launch is queued).
    fn run_head(
        &self,
        op: &'static str,
        head: &HeadRows<'_>,
        target: HeadTarget<'_, '_>,
    ) -> Result<()> {
        let m_rows = self.check_head(op, head)?;
        let n_rows = head.keep.len();
        match &target {
            HeadTarget::Codes(out) => self.check_out(op, out, n_rows)?,
            HeadTarget::Prepared(out) => {
                check_len(op, "prepared rows", out.len(), n_rows * self.dim)?
            }
        }
        let s = &self.stream;
        let (rows, _rows) = head.rows.device_ptr(s);
        let (keep, _keep) = head.keep.device_ptr(s);
        let mean = head.mean.as_ref().map(|v| v.device_ptr(s));
        let smooth = head.smooth.as_ref().map(|v| v.device_ptr(s));
        let rope = RopeArgs::new(op, head.rope, s)?;
        let ptrs = Ptrs {
            rows,
            keep,
            m_rows,
            n_rows,
            rope_cos: rope.cos,
            rope_sin: rope.sin,
            rope_rotary: rope.rotary,
            rope_interleaved: rope.interleaved,
            rope_down: rope.down,
            mean: mean.as_ref().map_or(0, |p| p.0),
            smooth: smooth.as_ref().map_or(0, |p| p.0),
            rotate: true,
            ..Ptrs::default()
        };
        match target {
            HeadTarget::Codes(out) => {
                let (codes, _codes) = out.codes.device_ptr_mut(s);
                let (scales, _scales) = out.scales.device_ptr_mut(s);
                self.run(Ptrs { codes, scales, row0: out.row0, ..ptrs })
            }
            HeadTarget::Prepared(out) => {
                let (prepared, _prepared) = out.device_ptr_mut(s);
                self.run(Ptrs { prepared, ..ptrs })
            }
        }
    }

    /// [`FixedCodec::encode_rows`] on the device: rows of f32 (already prepared: nothing is
    /// centered or rotated) coded into rows `out.row0..` of `out`. Queued on the stream;
    /// call [`finish`](Self::finish) for errors found on the device.
    ///
    /// # Errors
    /// [`CudaError::Len`] when `x.len()` is not a multiple of `dim` or `out` is too short;
    /// [`CudaError::Unsupported`] for more than 2^32 values; driver failures.
    pub fn encode_rows(&self, x: &CudaView<'_, f32>, out: CodesOut<'_, '_>) -> Result<()> {
        const OP: &str = "Encoder::encode_rows";
        let n_rows = x.len() / self.dim;
        check_len(OP, "rows", x.len(), n_rows * self.dim)?;
        check_indexable(OP, n_rows, self.dim)?;
        self.check_out(OP, &out, n_rows)?;
        let s = &self.stream;
        let (src32, _src32) = x.device_ptr(s);
        let (codes, _codes) = out.codes.device_ptr_mut(s);
        let (scales, _scales) = out.scales.device_ptr_mut(s);
        self.run(Ptrs { src32, n_rows, codes, scales, row0: out.row0, ..Ptrs::default() })
    }

    /// Per-column f64 sums and sums of squares of the gathered rows `head.keep` of
    /// `head.rows`, centered by `head.mean` when given (`head.smooth` is ignored): what
    /// `nq_core::prep` derives the mean (from the uncentered sums) and the key smoothing
    /// factor (from the centered sums of squares) from. Synchronizes.
    ///
    /// Each column is summed in row order within chunks of 256 rows, then over the chunks
    /// in order: deterministic. The sums of the f16 values themselves are exact (hence equal
    /// to the CPU's in any order) while `n * max|x| < 2^29`; the sums of squares of centered
    /// values can differ from a CPU row-order sum in the last bits.
    ///
    /// # Errors
    /// As [`encode_head`](Self::encode_head), plus a kept index past the head's rows
    /// ([`CudaError::OutOfRange`]).
    pub fn column_sums(&self, head: &HeadRows<'_>) -> Result<ColumnSums> {
        const OP: &str = "Encoder::column_sums";
        let m_rows = self.check_head(OP, head)?;
        let n = head.keep.len();
        let d = self.dim;
        let chunks = n.div_ceil(SUM_CHUNK_ROWS).max(1);
        let s = &self.stream;
        let mut part_sum = s.alloc_zeros::<f64>(chunks * d)?;
        let mut part_sq = s.alloc_zeros::<f64>(chunks * d)?;
        let mut sum = s.alloc_zeros::<f64>(d)?;
        let mut sq = s.alloc_zeros::<f64>(d)?;
        let (m_i64, n_i64, d_i32) = (to_i64(OP, m_rows)?, to_i64(OP, n)?, to_i32(OP, d)?);
        let (chunk_rows, chunks_i64) = (to_i64(OP, SUM_CHUNK_ROWS)?, to_i64(OP, chunks)?);
        let mean = head.mean.as_ref().map(|v| v.device_ptr(s));
        let mean_ptr = mean.as_ref().map_or(0u64, |p| p.0);
        let rope = RopeArgs::new(OP, head.rope, s)?;
        if n > 0 {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let cfg = LaunchConfig {
                grid_dim: (to_u32(OP, chunks)?, to_u32(OP, d.div_ceil(SUM_THREADS))?, 1),
                block_dim: (to_u32(OP, SUM_THREADS)?, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = s.launch_builder(&self.kernels.sums_partial);
            launch.arg(&head.rows);
            launch.arg(&head.keep);
            launch.arg(&m_i64);
            launch.arg(&n_i64);
            launch.arg(&d_i32);
            launch.arg(&rope.cos);
            launch.arg(&rope.sin);
            launch.arg(&rope.rotary);
            launch.arg(&rope.interleaved);
            launch.arg(&rope.down);
            launch.arg(&mean_ptr);
            launch.arg(&chunk_rows);
            launch.arg(&mut part_sum);
            launch.arg(&mut part_sq);
            launch.arg(&mut *status);
            // SAFETY: the arguments match `column_sums_partial(const u16*, const u32*,
            // long long, long long, int, const float*, const float*, int, int, float,
            // const float*, long long, double*, double*, u64*)` in kernels/encode.cu. `rows`
            // holds m_rows * d f16 (checked by `check_head`), `keep` n indices, each checked
            // against m_rows in the kernel before use; the RoPE tables are null or hold n *
            // rotary / 2 f32 each with rotary <= d (checked by `check_head`), `mean` is null
            // or a live buffer of d f32 (their guards are held until after the launch); the
            // partial buffers hold chunks * d values and the grid covers
            // chunks x d threads that write (threads with col >= d return); status holds 3
            // words.
            unsafe { launch.launch(cfg) }?;
        }
        let cfg = LaunchConfig {
            grid_dim: (to_u32(OP, d.div_ceil(SUM_THREADS))?, 1, 1),
            block_dim: (to_u32(OP, SUM_THREADS)?, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&self.kernels.sums_finish);
        launch.arg(&part_sum);
        launch.arg(&part_sq);
        launch.arg(&chunks_i64);
        launch.arg(&d_i32);
        launch.arg(&mut sum);
        launch.arg(&mut sq);
        // SAFETY: the arguments match `column_sums_finish(const double*, const double*,
        // long long, int, double*, double*)`; the partial buffers hold chunks * d values
        // (zeroed when there are no rows), `sum` and `sq` d values; threads with col >= d
        // return.
        unsafe { launch.launch(cfg) }?;
        drop((mean, rope));
        self.finish()?;
        Ok(ColumnSums { sum: s.clone_dtoh(&sum)?, squares: s.clone_dtoh(&sq)? })
    }

    /// Waits for the queued work and returns the first error the kernels recorded since
    /// the last `finish` (then clears them).
    ///
    /// # Errors
    /// [`CudaError::Lattice`] with [`nq_lattice::Error::NonFinite`] (a prepared value is
    /// NaN or infinite; `index` is its position in the rows of that launch) or
    /// [`nq_lattice::Error::ScaleOverflow`] (a row needs a scale above 65504), as the CPU
    /// codec reports them; [`CudaError::OutOfRange`] for a kept index past the head's rows
    /// (that row is coded as zeros); driver failures.
    pub fn finish(&self) -> Result<()> {
        const OP: &str = "Encoder::finish";
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let words = self.stream.clone_dtoh(&*status)?;
        if words.iter().all(|&w| w == NO_ERROR) {
            return Ok(());
        }
        self.stream.memcpy_htod(&[NO_ERROR; 3], &mut *status)?;
        let high = |w: u64| usize::try_from(w >> 32).unwrap_or(usize::MAX);
        let low = |w: u64| u32::try_from(w & 0xffff_ffff).unwrap_or(u32::MAX);
        if words[2] != NO_ERROR {
            return Err(CudaError::OutOfRange {
                op: OP,
                what: "kept row index",
                got: high(words[2]),
                limit: usize::try_from(low(words[2])).unwrap_or(usize::MAX),
            });
        }
        if words[0] != NO_ERROR {
            return Err(CudaError::Lattice(nq_lattice::Error::NonFinite {
                op: OP,
                what: "x",
                index: high(words[0]),
                value: f32::from_bits(low(words[0])),
            }));
        }
        Err(CudaError::Lattice(nq_lattice::Error::ScaleOverflow {
            op: OP,
            row: high(words[1]),
            scale: f32::from_bits(low(words[1])),
        }))
    }

    /// Validates a head's buffers; returns its row count `m`.
    fn check_head(&self, op: &'static str, head: &HeadRows<'_>) -> Result<usize> {
        if let Some(rope) = head.rope {
            check_len(op, "RoPE positions", rope.len(), head.keep.len())?;
            check_len(op, "RoPE head_dim", rope.head_dim, self.dim)?;
        }
        let m = head.rows.len() / self.dim;
        check_len(op, "rows", head.rows.len(), m * self.dim)?;
        for (what, v) in [("mean", &head.mean), ("smooth", &head.smooth)] {
            if let Some(v) = v {
                check_len(op, what, v.len(), self.dim)?;
            }
        }
        check_indexable(op, head.keep.len(), self.dim)?;
        if u32::try_from(m).is_err() {
            return Err(CudaError::Unsupported {
                op,
                what: format!("{m} rows exceed u32 indices"),
            });
        }
        Ok(m)
    }

    /// Validates an output's room for `n` rows from `out.row0`.
    fn check_out(&self, op: &'static str, out: &CodesOut<'_, '_>, n: usize) -> Result<()> {
        let end = out.row0.checked_add(n).ok_or_else(|| CudaError::Unsupported {
            op,
            what: format!("row0 {} + {n} rows overflows", out.row0),
        })?;
        let row_bytes = self.codec.code_len(1, self.dim);
        let need = end.checked_mul(row_bytes).ok_or_else(|| CudaError::Unsupported {
            op,
            what: format!("{end} rows of {row_bytes} code bytes overflow"),
        })?;
        if out.codes.len() < need {
            return Err(CudaError::Len { op, what: "codes", got: out.codes.len(), expected: need });
        }
        if out.scales.len() < end {
            return Err(CudaError::Len {
                op,
                what: "scales",
                got: out.scales.len(),
                expected: end,
            });
        }
        Ok(())
    }

    /// One launch of the encode kernel of the codec's rate over validated buffers.
    fn run(&self, p: Ptrs) -> Result<()> {
        const OP: &str = "Encoder::run";
        if p.n_rows == 0 {
            return Ok(());
        }
        let f = match self.codec.bits() {
            FixedBits::B2 => &self.kernels.b2,
            FixedBits::B3 => &self.kernels.b3,
            FixedBits::B4 => &self.kernels.b4,
        };
        let (mode, n_cand) = match self.codec.scale_mode() {
            ScaleMode::AbsMax => (0i32, 1i32),
            ScaleMode::Rms => (1, 1),
            ScaleMode::BestOf { candidates } => (2, i32::from(candidates)),
        };
        // Lanes per row: the next power of two >= dim / 8, at least 8 (`group_lanes`).
        let lanes = (self.dim / 8).next_power_of_two().max(8);
        let cfg = LaunchConfig {
            grid_dim: (to_u32(OP, p.n_rows.div_ceil(THREADS / lanes))?, 1, 1),
            block_dim: (to_u32(OP, THREADS)?, 1, 1),
            shared_mem_bytes: 0,
        };
        let m_rows = to_i64(OP, p.m_rows)?;
        let n_rows = to_i64(OP, p.n_rows)?;
        let d = to_i32(OP, self.dim)?;
        let row0 = to_i64(OP, p.row0)?;
        let rms_factor = nq_lattice::rms_factor(self.codec.bits());
        let max_coord = self.codec.bits().max_coordinate();
        let s = &self.stream;
        let signs = p.rotate.then(|| self.signs.device_ptr(s));
        let signs_ptr = signs.as_ref().map_or(0u64, |g| g.0);
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let mut launch = s.launch_builder(f);
        launch.arg(&p.rows);
        launch.arg(&p.keep);
        launch.arg(&m_rows);
        launch.arg(&p.src32);
        launch.arg(&n_rows);
        launch.arg(&d);
        launch.arg(&p.rope_cos);
        launch.arg(&p.rope_sin);
        launch.arg(&p.rope_rotary);
        launch.arg(&p.rope_interleaved);
        launch.arg(&p.rope_down);
        launch.arg(&p.mean);
        launch.arg(&p.smooth);
        launch.arg(&signs_ptr);
        launch.arg(&p.prepared);
        launch.arg(&p.codes);
        launch.arg(&p.scales);
        launch.arg(&row0);
        launch.arg(&mode);
        launch.arg(&n_cand);
        launch.arg(&self.gains);
        launch.arg(&rms_factor);
        launch.arg(&max_coord);
        launch.arg(&self.kernels.key_to_id);
        launch.arg(&mut *status);
        // SAFETY: the arguments match `encode_bN(const u16*, const u32*, long long, const
        // float*, long long, int, const float*, const float*, int, int, float, const float*,
        // const float*, const float*, float*, u8*, u16*, long long, int, int, const float*,
        // float, float, const u16*, u64*)` in
        // kernels/encode.cu. Every pointer is 0 (the kernel tests each optional one for
        // null before use; `codes`/`scales` are 0 only with `prepared` set, when the
        // kernel returns before coding) or a device pointer of a buffer whose guard the
        // caller holds until after this launch. The callers checked the lengths: `rows`
        // m_rows * d f16 and `keep` n_rows indices (each compared with m_rows in the kernel
        // before the gather), or `src32` n_rows * d f32; the RoPE tables n_rows * rotary / 2
        // f32 each (rotary <= d, both checked by `check_head`) or null, read only with a gather
        // (`rows`); `mean`, `smooth` and `signs` d f32;
        // `prepared` n_rows * d f32; `codes` and `scales` at least row0 + n_rows rows;
        // `gains` n_cand f32; `key_to_id` 8193 entries (keys are masked to 13 bits);
        // `status` 3 words. The grid covers n_rows rows; threads of rows past n_rows or
        // lanes past d / 8 write nothing. n_rows * d < 2^32 (checked), so flat indices fit
        // the status words.
        unsafe { launch.launch(cfg) }?;
        drop(signs);
        Ok(())
    }
}

/// Rows whose flat value indices fit the kernels' 32-bit error records.
fn check_indexable(op: &'static str, n: usize, dim: usize) -> Result<()> {
    match n.checked_mul(dim) {
        Some(v) if u32::try_from(v).is_ok() => Ok(()),
        _ => Err(CudaError::Unsupported {
            op,
            what: format!("{n} rows of {dim} values exceed 2^32 values per launch"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table_covers_every_pattern_once() {
        let table = key_to_id_table();
        assert_eq!(table.len(), 8193);
        let mut seen = [false; 256];
        for &id in table.iter().filter(|&&id| id != u16::MAX) {
            assert!(!seen[usize::from(id)], "pattern {id} twice");
            seen[usize::from(id)] = true;
        }
        assert!(seen.iter().all(|&s| s), "a pattern has no key");
        // Pattern 0 is all 1/2 (key 0); the last is (3/2)^8 (every digit 1).
        assert_eq!(table[0], 0);
        assert_eq!(table[(0..8).fold(0, |k, _| k * 3 + 1)], 255);
    }

    #[test]
    fn best_of_gains_are_centred_powers_of_two() {
        let g = best_of_gains(4);
        assert_eq!(g.len(), 4);
        // Symmetric around 1 in the exponent: g[k] * g[n-1-k] = 1 within rounding.
        for k in 0..4 {
            assert!((g[k] * g[3 - k] - 1.0).abs() <= 4.0 * f32::EPSILON, "{g:?}");
        }
        assert!(g.windows(2).all(|w| w[0] < w[1]), "{g:?}");
        assert_eq!(best_of_gains(1), vec![1.0]);
    }
}
