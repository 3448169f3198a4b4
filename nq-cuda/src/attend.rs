//! Fused decode attention over the compressed storage of [`DeviceLayer`]s, on the GPU
//! (`kernels/attend.cu`), for a batch of `B` sequences of one layer at once.
//!
//! For a query row `q` (post-RoPE, f32) of query head `j` at position `p`, kv head
//! `h = j / group`, with `scale = 1/sqrt(d)` and `R_k`, `R_v` the layer's key and value
//! rotations:
//! - compressed token `n`: `s_n = <R_k(q * scale / k_smooth), k_scale_n * decode(kcode_n)>
//!   + <q, k_mean> * scale`;
//! - dense row `m`: `s_m = <q, dense_k_m> * scale`;
//! - `p` = softmax over the visible tokens (positions in `(p - w, p]` with a sliding window
//!   `w`, else `<= p`);
//! - `out = R_v^T(sum_n p_n v_scale_n decode(vcode_n)) + (sum_n p_n) v_mean +
//!   sum_m p_m dense_v_m`, and with `record_mass`, `dense_mass[h][m] += p_m` for every
//!   query head of the group and every query row.
//!
//! How (flash-decoding): the compressed tokens of each (sequence, kv head) are split into
//! chunks, one CTA each, so that one sequence fills the GPU; the dense rows get CTAs of
//! their own. A CTA rotates its query rows itself (a Hadamard transform in shared memory),
//! then each warp takes 16 tokens at a time: key codes are decoded to exact f16 pairs in
//! registers (codebook selectors in shared memory, replicated 16 times so lanes never
//! conflict) and multiplied with the queries of the whole GQA group on the tensor cores,
//! an online softmax follows, and the value codes, decoded the same way, are accumulated
//! in the rotated space. `attend_combine` merges the partials, un-rotates the value sum
//! once per output row, adds the mean and the dense part, and turns the dense scores into
//! weights, which `attend_mass` sums into the dense mass in a fixed order (deterministic).
//! Positions are read only when a window is set or a query is older than the newest
//! compressed token of its head (the host knows both).
//!
//! Supported: key and value codes of 2, 3 and 4 bits, `d` in {64, 128, 256} (one
//! Hadamard block), any GQA group and any `t` (query rows tiles of 16). Other shapes are
//! [`CudaError::Unsupported`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
#[cfg(test)]
use half::f16;
use nq_core::{LayerSpec, Storage};

use crate::backend::CudaBackend;
use crate::error::{CudaError, Result, to_i32, to_u32};
use crate::module::compile;
use crate::store::DeviceLayer;

/// The kernel source, embedded at build time.
const ATTEND_CU: &str = include_str!("../kernels/attend.cu");

/// Threads per CTA of `attend_split` (`NTHREADS` in kernels/attend.cu).
const SPLIT_THREADS: u32 = 128;

/// Fixed fields of a sequence's descriptor (`DESC_FIXED` in kernels/attend.cu).
const DESC_FIXED: usize = 16;

/// Dense rows per dense CTA.
const DENSE_CHUNK: usize = 128;

/// The fixed setup of a compressed CTA (tables, query rotation, merge), in tokens' worth of
/// its main loop, for the automatic split.
pub const SETUP_TOKENS: usize = 128;

/// Splits of `n` compressed tokens for each of `groups` (sequence, kv head, row tile)
/// groups when `slots` CTAs run at once: the count whose waves finish first, each CTA
/// costing its chunk (a multiple of 64 tokens, at least `min_chunk`) plus
/// [`SETUP_TOKENS`]; the fewest splits among equals.
fn auto_splits(n: usize, groups: usize, slots: usize, min_chunk: usize) -> usize {
    let most = n.div_ceil(min_chunk).max(1);
    (1..=most)
        .min_by_key(|&s| {
            let chunk = n.div_ceil(s).next_multiple_of(64);
            (groups * s).div_ceil(slots.max(1)) * (chunk + SETUP_TOKENS)
        })
        .unwrap_or(1)
}

/// How the work is split. Each CTA pays a fixed setup (query rotation, codebook tables
/// replicated into shared memory), so fewer, longer CTAs win, as long as they fill the
/// GPU: by default (`target_ctas: 0`) the split count is the one whose waves of resident
/// CTAs (multiprocessors x CTAs per multiprocessor, from the driver's occupancy) finish
/// first, counting each CTA's setup as [`SETUP_TOKENS`] tokens. `attend_bench` times the
/// alternatives (`cuda_attend_tuning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttendTuning {
    /// CTAs to aim for over the whole batch (splits per head are chosen to reach it); 0
    /// picks the split by occupancy (see above).
    pub target_ctas: usize,
    /// Fewest compressed tokens per CTA (a multiple of 64).
    pub min_chunk: usize,
    /// `minBlocksPerMultiprocessor` of `__launch_bounds__`: 1 lets the compiler use every
    /// register it wants; 2-3 cap the registers for more CTAs per SM. On an H100, 1 (2 CTAs
    /// per SM for the decode kernel at d 128) beat 3 at all tuned shapes but one (B = 32,
    /// 32K, balanced: 348 against 357 us; balanced at B = 1, 128K: 70.5 against 66.9 us).
    pub min_blocks: u32,
    /// Issue the next tile's loads before the current tile's arithmetic (costs registers).
    pub prefetch: bool,
}

impl Default for AttendTuning {
    fn default() -> Self {
        AttendTuning { target_ctas: 0, min_chunk: 256, min_blocks: 1, prefetch: true }
    }
}

/// The query side of one attention call over `B` sequences of one layer.
#[derive(Clone, Copy, Debug)]
pub struct BatchQuery<'a> {
    /// Query rows per sequence and query head.
    pub t: usize,
    /// Positions of the query rows, `[B, t]`.
    pub positions: &'a [u32],
    /// Sliding window in tokens: a query at `p` sees positions in `(p - w, p]`.
    pub window: Option<u32>,
    /// Add each dense row's softmax weight to its head's dense mass.
    pub record_mass: bool,
}

/// The compiled attention kernels of one (device, d, key bits, value bits, min blocks).
#[derive(Debug)]
struct AttendKernels {
    split: CudaFunction,
    combine: CudaFunction,
    mass: CudaFunction,
    /// Codebook selector tables (see [`tables`]), on the device.
    tables: CudaSlice<u64>,
    /// Dynamic shared memory of `attend_split`, as the kernel computes it.
    smem: u32,
    /// CTAs of `attend_split` resident at once on the device (multiprocessors x occupancy).
    slots: usize,
}

type KernelKey = (usize, usize, usize, usize, u32, bool, bool);

static LOADED: OnceLock<Mutex<HashMap<KernelKey, Arc<AttendKernels>>>> = OnceLock::new();
static STORE: OnceLock<Mutex<HashMap<usize, CudaFunction>>> = OnceLock::new();

/// `f32_to_f16_rows` of kernels/attend.cu on the device of `gpu`, compiled once.
pub(crate) fn store_kernel(gpu: &CudaBackend) -> Result<CudaFunction> {
    let map = STORE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(f) = map.get(&gpu.ctx.ordinal()) {
        return Ok(f.clone());
    }
    let src = format!("#define NQ_STORE_ONLY\n{ATTEND_CU}");
    let f = compile(&gpu.ctx, "attend.cu", &src, true)?.load_function("f32_to_f16_rows")?;
    map.insert(gpu.ctx.ordinal(), f.clone());
    Ok(f)
}

fn kernels(
    gpu: &CudaBackend,
    d: usize,
    kb: usize,
    vb: usize,
    tuning: AttendTuning,
    rows8: bool,
) -> Result<Arc<AttendKernels>> {
    let min_blocks = tuning.min_blocks;
    let prefetch = u8::from(tuning.prefetch);
    let key = (gpu.ctx.ordinal(), d, kb, vb, min_blocks, tuning.prefetch, rows8);
    let map = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = map.get(&key) {
        return Ok(Arc::clone(k));
    }
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let src = format!(
        "#define NQ_D {d}\n#define NQ_KB {kb}\n#define NQ_VB {vb}\n#define NQ_MINB {min_blocks}\n#define NQ_PREFETCH {prefetch}\n#define NQ_ROWS8 {}\n\
         #define E8_LO {:#x}u\n#define E8_HI {:#x}u\n#define RW_LO {:#x}u\n#define RW_HI {:#x}u\n{ATTEND_CU}",
        u8::from(rows8),
        word(&E8_BYTES[..4]),
        word(&E8_BYTES[4..]),
        word(&RW_BYTES[..4]),
        word(&RW_BYTES[4..]),
    );
    let module = compile(&gpu.ctx, "attend.cu", &src, true)?;
    let split = module.load_function("attend_split")?;
    let combine = module.load_function("attend_combine")?;
    let mass = module.load_function("attend_mass")?;
    let probe = module.load_function("attend_smem_bytes")?;
    let stream = &gpu.stream;
    let mut out = stream.alloc_zeros::<i32>(1)?;
    let mut launch = stream.launch_builder(&probe);
    launch.arg(&mut out);
    let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: matches `attend_smem_bytes(int*)`, which writes one int; `out` holds one.
    unsafe { launch.launch(one) }?;
    let smem_i32 = stream.clone_dtoh(&out)?[0];
    let smem = u32::try_from(smem_i32).map_err(|_| CudaError::Unsupported {
        op: "attend",
        what: format!("shared memory {smem_i32}"),
    })?;
    split.set_attribute(
        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem_i32,
    )?;
    let tables = stream.clone_htod(&tables()?)?;
    let per_sm =
        split.occupancy_max_active_blocks_per_multiprocessor(SPLIT_THREADS, smem as usize, None)?;
    let sms = gpu.ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let slots = (per_sm as usize).max(1) * usize::try_from(sms).unwrap_or(1).max(1);
    let k = Arc::new(AttendKernels { split, combine, mass, tables, smem, slots });
    map.insert(key, Arc::clone(&k));
    Ok(k)
}

/// f16 high bytes that the kernel's byte permutation picks from (`E8_LO`/`E8_HI`): index
/// `a + 4 * negative` for the magnitude `a + 1/2`, 3 and 7 a zero byte.
const E8_BYTES: [u8; 8] = [0x38, 0x3E, 0x41, 0x00, 0xB8, 0xBE, 0xC1, 0x00];
/// The same for half a residual word coordinate (`RW_LO`/`RW_HI`): 0, 1/4, 1/2, 1.
const RW_BYTES: [u8; 8] = [0x00, 0x34, 0x38, 0x3C, 0x00, 0xB4, 0xB8, 0xBC];

/// Byte-permutation selectors of one word: for each coordinate pair `k`, 16 bits
/// `zero | x_{2k} << 4 | zero << 8 | x_{2k+1} << 12`, pair `k` at bit `16 k`.
fn selectors(idx: [u64; 8], zero: u64) -> u64 {
    (0..4).map(|k| (zero | idx[2 * k] << 4 | zero << 8 | idx[2 * k + 1] << 12) << (16 * k)).sum()
}

/// The kernel's tables, 640 words: 256 E8P pattern selectors (magnitude and base sign per
/// coordinate), 128 sign words (the 7 stored sign bits and their parity, as XOR masks on
/// the selectors), 256 residual-word selectors of the 3-bit code.
///
/// # Errors
/// [`CudaError::Unsupported`] if a codebook value is not one the byte tables can express
/// (E8P magnitudes in {1/2, 3/2, 5/2}; residual coordinates in {0, 1/2, 1, 2} in
/// magnitude): a guard against a codebook change in `nq-lattice`.
pub(crate) fn tables() -> Result<Vec<u64>> {
    let bad = |what: String| CudaError::Unsupported { op: "attend tables", what };
    let mut out = Vec::with_capacity(640);
    for (p, base) in nq_lattice::codebook::e8p_base().iter().enumerate() {
        let mut idx = [0u64; 8];
        for (i, &b) in base.iter().enumerate() {
            let a = b.abs() - 0.5;
            if !(a == 0.0 || a == 1.0 || a == 2.0) {
                return Err(bad(format!("E8P pattern {p} coordinate {i} is {b}")));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let a = a as u64;
            idx[i] = a + if b < 0.0 { 4 } else { 0 };
        }
        out.push(selectors(idx, 3));
    }
    for f7 in 0u64..128 {
        let f = f7 | u64::from(f7.count_ones() & 1) << 7;
        out.push(
            (0..8)
                .filter(|i| f >> i & 1 == 1)
                .map(|i| 1u64 << (16 * (i / 2) + 6 + 8 * (i % 2)))
                .sum(),
        );
    }
    for (wi, word) in nq_lattice::codebook::e81b_words().iter().enumerate() {
        let mut idx = [0u64; 8];
        for (i, &w) in word.iter().enumerate() {
            let half = (w * 0.5).abs();
            let mag = [0.0, 0.25, 0.5, 1.0].iter().position(|&x| x == half);
            let Some(mag) = mag else {
                return Err(bad(format!("residual word {wi} coordinate {i} is {w}")));
            };
            idx[i] = mag as u64 + if w < 0.0 { 4 } else { 0 };
        }
        out.push(selectors(idx, 0));
    }
    Ok(out)
}

/// The kernel's decode of one block, on the host (the test of the tables): `f16` pairs
/// from the byte permutation of [`E8_BYTES`]/[`RW_BYTES`] and the same f16 additions.
#[cfg(test)]
fn decode_like_kernel(tabs: &[u64], bits: usize, code: [u8; 4]) -> [f32; 8] {
    let prmt = |bytes: &[u8; 8], sel: u64| -> [f16; 2] {
        let pick = |k: u64| bytes[usize::try_from(sel >> (4 * k) & 7).unwrap_or(0)];
        [
            f16::from_bits(u16::from_le_bytes([pick(0), pick(1)])),
            f16::from_bits(u16::from_le_bytes([pick(2), pick(3)])),
        ]
    };
    let e8p = |idx: u16| -> [f16; 8] {
        let sel = tabs[usize::from(idx & 0xff)] ^ tabs[256 + usize::from(idx >> 8 & 0x7f)];
        let shift = f16::from_f32(if idx & 0x8000 != 0 { 0.25 } else { -0.25 });
        let mut c = [f16::ZERO; 8];
        for k in 0..4 {
            let pair = prmt(&E8_BYTES, sel >> (16 * k));
            c[2 * k] = pair[0] + shift;
            c[2 * k + 1] = pair[1] + shift;
        }
        c
    };
    let mut c = e8p(u16::from_le_bytes([code[0], code[1]]));
    if bits == 4 {
        let c2 = e8p(u16::from_le_bytes([code[2], code[3]]));
        c.iter_mut().zip(c2).for_each(|(a, b)| *a += b * f16::from_f32(0.25));
    } else if bits == 3 {
        let sel = tabs[384 + usize::from(code[2])];
        for k in 0..4 {
            let pair = prmt(&RW_BYTES, sel >> (16 * k));
            c[2 * k] += pair[0];
            c[2 * k + 1] += pair[1];
        }
    }
    c.map(f16::to_f32)
}

/// Bytes per 8 values of an E8 storage.
fn code_bytes(op: &'static str, s: Storage) -> Result<usize> {
    match s {
        Storage::E8 { bits: bits @ 2..=4 } => Ok(usize::from(bits)),
        other => Err(CudaError::Unsupported { op, what: format!("storage {other:?}") }),
    }
}

/// Reusable device buffers of [`attend`](Attender::attend) (descriptors, partials), grown
/// as needed, and the tuning of the split.
#[derive(Debug, Default)]
pub struct Attender {
    /// How the work is split.
    pub tuning: AttendTuning,
    desc: Option<CudaSlice<u64>>,
    part_acc: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
    scores: Option<CudaSlice<f32>>,
}

/// A buffer of at least `len` elements (at least 1), reused when large enough.
fn ensure<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    gpu: &CudaBackend,
    slot: &mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<()> {
    let len = len.max(1);
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(gpu.stream.alloc_zeros::<T>(len)?);
    }
    Ok(())
}

/// The shape every layer of a batch must share, checked once.
struct Shape {
    d: usize,
    hkv: usize,
    group: usize,
    kb: usize,
    vb: usize,
}

fn check_batch(layers: &[&mut DeviceLayer]) -> Result<Shape> {
    const OP: &str = "Attender::attend";
    let Some(first) = layers.first() else {
        return Err(CudaError::Unsupported { op: OP, what: "an empty batch".into() });
    };
    let spec: &LayerSpec = first.spec();
    let d = spec.head_dim;
    if !matches!(d, 64 | 128 | 256) {
        return Err(CudaError::Unsupported {
            op: OP,
            what: format!("head_dim {d} (64, 128 or 256)"),
        });
    }
    if spec.q_heads == 0 || !spec.q_heads.is_multiple_of(spec.kv_heads) {
        return Err(CudaError::Unsupported {
            op: OP,
            what: format!("q_heads {} for kv_heads {}", spec.q_heads, spec.kv_heads),
        });
    }
    let same_rot = |a: &nq_core::Rotation, b: &nq_core::Rotation| {
        a.blocks()
            .iter()
            .map(|x| (x.dim(), x.seed()))
            .eq(b.blocks().iter().map(|x| (x.dim(), x.seed())))
    };
    for (i, l) in layers.iter().enumerate() {
        let s = l.spec();
        if (s.kv_heads, s.q_heads, s.head_dim, s.keys, s.values)
            != (spec.kv_heads, spec.q_heads, d, spec.keys, spec.values)
            || !same_rot(&s.key_rot, &spec.key_rot)
            || !same_rot(&s.value_rot, &spec.value_rot)
        {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!("sequence {i} has another layer spec than sequence 0"),
            });
        }
    }
    for rot in [&spec.key_rot, &spec.value_rot] {
        if rot.blocks().len() != 1 {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!(
                    "a rotation of {} Hadamard blocks (one is supported)",
                    rot.blocks().len()
                ),
            });
        }
    }
    Ok(Shape {
        d,
        hkv: spec.kv_heads,
        group: spec.q_heads / spec.kv_heads,
        kb: code_bytes(OP, spec.keys)?,
        vb: code_bytes(OP, spec.values)?,
    })
}

impl Attender {
    /// Buffers allocated on first use, with the default tuning.
    pub fn new() -> Self {
        Attender::default()
    }

    /// Decode attention of `B = layers.len()` sequences of one layer: `q` and `out` are
    /// `[B, q_heads, t, d]` f32 on the device; `out` is overwritten entirely (rows that see
    /// no token are 0). With `query.record_mass`, each layer's dense mass grows by the
    /// dense rows' softmax weights.
    ///
    /// # Errors
    /// [`CudaError::Unsupported`] for shapes the kernels do not take (see the module docs)
    /// or sequences whose layer specs differ, [`CudaError::Len`] for buffers that disagree
    /// with the shapes, NVRTC compile failures on first use of a shape, driver failures.
    pub fn attend(
        &mut self,
        gpu: &CudaBackend,
        layers: &mut [&mut DeviceLayer],
        q: &CudaView<'_, f32>,
        query: &BatchQuery<'_>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "Attender::attend";
        let Shape { d, hkv, group, kb, vb } = check_batch(layers)?;
        let (b, t) = (layers.len(), query.t);
        let hq = hkv * group;
        let rows_total = b * hq * t;
        if t == 0 {
            return Err(CudaError::Unsupported { op: OP, what: "t = 0 query rows".into() });
        }
        if query.window == Some(0) {
            return Err(CudaError::Unsupported { op: OP, what: "a window of 0 tokens".into() });
        }
        if query.positions.len() != b * t {
            return Err(CudaError::Len {
                op: OP,
                what: "positions",
                got: query.positions.len(),
                expected: b * t,
            });
        }
        for (what, got) in [("q", q.len()), ("out", out.len())] {
            if got != rows_total * d {
                return Err(CudaError::Len { op: OP, what, got, expected: rows_total * d });
            }
        }
        // At most 8 query rows per kv head (decode with GQA up to 8): the NQ_ROWS8 kernel.
        let k = kernels(gpu, d, kb, vb, self.tuning, group * t <= 8)?;
        let spec = layers[0].spec().clone();
        let ksigns = gpu.scaled_signs(&spec.key_rot.blocks()[0])?;
        let vsigns = gpu.scaled_signs(&spec.value_rot.blocks()[0])?;

        // The split: chunks of `chunk` compressed tokens (a multiple of 64), dense chunks.
        let mtiles = (group * t).div_ceil(16);
        let n_max = layers.iter().map(|l| l.max_compressed()).max().unwrap_or(0);
        let m_max = layers.iter().map(|l| l.dense_len()).max().unwrap_or(0);
        let (splits_c, chunk) = if n_max == 0 {
            (0, 64)
        } else {
            let min_chunk = self.tuning.min_chunk.max(64).next_multiple_of(64);
            let groups = b * hkv * mtiles;
            let splits = match self.tuning.target_ctas {
                0 => auto_splits(n_max, groups, k.slots, min_chunk),
                ctas => ctas.div_ceil(groups).max(1).min(n_max.div_ceil(min_chunk)),
            };
            let chunk = n_max.div_ceil(splits).next_multiple_of(64);
            (n_max.div_ceil(chunk), chunk)
        };
        let splits = splits_c + m_max.div_ceil(DENSE_CHUNK);

        // Descriptors: addresses and counts of each sequence, then the query positions.
        let stride = DESC_FIXED + 2 * hkv + t;
        let mut desc = vec![0u64; b * stride];
        for (i, layer) in layers.iter_mut().enumerate() {
            let row = &mut desc[i * stride..(i + 1) * stride];
            row[..12].copy_from_slice(&layer.device_addresses());
            row[12] = layer.capacity() as u64;
            row[13] = layer.dense_capacity() as u64;
            row[14] = layer.dense_len() as u64;
            for h in 0..hkv {
                row[DESC_FIXED + h] = layer.compressed(h) as u64;
                row[DESC_FIXED + hkv + h] =
                    layer.last_positions()[h].map_or(0, |p| u64::from(p) + 1);
            }
            for (r, &p) in query.positions[i * t..(i + 1) * t].iter().enumerate() {
                row[DESC_FIXED + 2 * hkv + r] = u64::from(p);
            }
        }
        ensure(gpu, &mut self.desc, desc.len())?;
        ensure(gpu, &mut self.part_acc, rows_total * splits * d)?;
        ensure(gpu, &mut self.part_ml, rows_total * splits * 2)?;
        let mass = query.record_mass && m_max > 0;
        if mass {
            ensure(gpu, &mut self.scores, rows_total * m_max)?;
        }
        let (Some(desc_dev), Some(part_acc), Some(part_ml)) =
            (self.desc.as_mut(), self.part_acc.as_mut(), self.part_ml.as_mut())
        else {
            unreachable!("allocated by `ensure` above");
        };
        gpu.stream.memcpy_htod(&desc, &mut desc_dev.slice_mut(..desc.len()))?;
        let null: u64 = 0;

        let (t_i, hkv_i, group_i) = (to_i32(OP, t)?, to_i32(OP, hkv)?, to_i32(OP, group)?);
        let (sc_i, s_i, m_i) = (to_i32(OP, splits_c)?, to_i32(OP, splits)?, to_i32(OP, m_max)?);
        let stride_i = to_i32(OP, stride)?;
        #[allow(clippy::cast_precision_loss)]
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        if splits > 0 {
            let (chunk_i, dchunk_i) = (to_i32(OP, chunk)?, to_i32(OP, DENSE_CHUNK)?);
            let window = query.window.unwrap_or(0);
            let cfg = LaunchConfig {
                grid_dim: (to_u32(OP, splits)?, to_u32(OP, hkv * mtiles)?, to_u32(OP, b)?),
                block_dim: (SPLIT_THREADS, 1, 1),
                shared_mem_bytes: k.smem,
            };
            let mut launch = gpu.stream.launch_builder(&k.split);
            launch.arg(&*desc_dev);
            launch.arg(&stride_i);
            launch.arg(q);
            launch.arg(ksigns.as_ref());
            launch.arg(&k.tables);
            launch.arg(&mut *part_acc);
            launch.arg(&mut *part_ml);
            match (mass, self.scores.as_mut()) {
                (true, Some(s)) => launch.arg(s),
                _ => launch.arg(&null),
            };
            launch.arg(&t_i);
            launch.arg(&hkv_i);
            launch.arg(&group_i);
            launch.arg(&sc_i);
            launch.arg(&s_i);
            launch.arg(&chunk_i);
            launch.arg(&dchunk_i);
            launch.arg(&m_i);
            launch.arg(&window);
            launch.arg(&scale);
            // SAFETY: the arguments match `attend_split` in kernels/attend.cu. The
            // descriptor rows hold the addresses of each layer's live buffers (borrowed
            // mutably for the call) with their capacities and counts, so every read of
            // codes, scales, positions and dense rows is below n[h] <= cap or m <= dcap;
            // `q` holds B * hq * t * d floats (checked), `ksigns` d, `tables` 640 words;
            // the partial buffers hold rows_total * splits * (d | 2) floats and the score
            // buffer rows_total * m_max (allocated above; null only without mass
            // recording, where the kernel never touches it); the grid covers splits x
            // (hkv * mtiles) x B CTAs with the shared memory the kernel reported.
            unsafe { launch.launch(cfg) }?;
        }
        let record = i32::from(mass);
        let cfg = LaunchConfig {
            grid_dim: (to_u32(OP, rows_total)?, 1, 1),
            block_dim: (to_u32(OP, d)?, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = gpu.stream.launch_builder(&k.combine);
        launch.arg(&*desc_dev);
        launch.arg(&stride_i);
        launch.arg(&*part_acc);
        launch.arg(&*part_ml);
        match (mass, self.scores.as_mut()) {
            (true, Some(s)) => launch.arg(s),
            _ => launch.arg(&null),
        };
        launch.arg(vsigns.as_ref());
        launch.arg(out);
        launch.arg(&t_i);
        launch.arg(&hkv_i);
        launch.arg(&group_i);
        launch.arg(&sc_i);
        launch.arg(&s_i);
        launch.arg(&m_i);
        launch.arg(&record);
        // SAFETY: matches `attend_combine` in kernels/attend.cu: one CTA of d threads per
        // output row (rows_total of them; `out` holds rows_total * d floats, checked); it
        // reads the splits partials of its row written by `attend_split` above (every CTA
        // writes every valid row of its split, empty ones included), `vsigns` d floats,
        // the value mean through the descriptor (kv_heads * d floats per layer), and with
        // mass recording it overwrites the dense scores (rows_total * m_max) of its row,
        // below its layer's m, with their weights.
        unsafe { launch.launch(cfg) }?;
        if let (true, Some(weights)) = (mass, self.scores.as_ref()) {
            const THREADS: u32 = 256;
            let cfg = LaunchConfig {
                grid_dim: (to_u32(OP, m_max)?.div_ceil(THREADS), to_u32(OP, hkv)?, to_u32(OP, b)?),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = gpu.stream.launch_builder(&k.mass);
            launch.arg(&*desc_dev);
            launch.arg(&stride_i);
            launch.arg(weights);
            launch.arg(&t_i);
            launch.arg(&hkv_i);
            launch.arg(&group_i);
            launch.arg(&m_i);
            // SAFETY: matches `attend_mass` in kernels/attend.cu: one thread per (token
            // below m_max, kv head, sequence); a thread past its layer's m returns, the
            // others read the weights `attend_combine` wrote above (rows_total * m_max,
            // every row of the sequence's group below m) and add to dense_mass[h][tok],
            // tok < m <= dcap, which no other thread of the launch touches.
            unsafe { launch.launch(cfg) }?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nq_lattice::FixedBits;

    /// The kernel's table decode equals nq-lattice's decoder on every 2-bit code and on
    /// random 3- and 4-bit codes (bit for bit: every value is exact in f16).
    #[test]
    fn table_decode_equals_the_codec() {
        let tabs = tables().unwrap();
        for idx in 0..=u16::MAX {
            let code = [idx.to_le_bytes()[0], idx.to_le_bytes()[1], 0, 0];
            assert_eq!(
                decode_like_kernel(&tabs, 2, code),
                FixedBits::B2.decode_block(code),
                "code {idx}"
            );
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let code = (state as u32).to_le_bytes();
            assert_eq!(
                decode_like_kernel(&tabs, 3, code),
                FixedBits::B3.decode_block(code),
                "{code:?}"
            );
            assert_eq!(
                decode_like_kernel(&tabs, 4, code),
                FixedBits::B4.decode_block(code),
                "{code:?}"
            );
        }
    }

    #[test]
    fn auto_splits_fill_whole_waves() {
        // B = 1, 8 kv heads, 45,900 tokens, 396 slots (an H100 at 3 CTAs per SM): 48
        // splits are 384 CTAs of 960 tokens, one wave (49 give the same 64-aligned chunk,
        // 50 would start a second wave).
        assert_eq!(auto_splits(45_900, 8, 396, 256), 48);
        // B = 32: 256 groups. One split leaves 140 slots idle, two need a second wave of
        // half chunks; three (768 CTAs, 2 waves of 3,840-token chunks) finish first.
        assert_eq!(auto_splits(11_469, 256, 396, 256), 3);
        // Short sequences: never below the minimum chunk.
        assert_eq!(auto_splits(300, 1, 396, 256), 2);
        assert_eq!(auto_splits(100, 1, 396, 256), 1);
    }

    #[test]
    fn tables_have_the_kernel_layout() {
        let tabs = tables().unwrap();
        assert_eq!(tabs.len(), 640);
        // Sign word of f7 = 1: coordinate 0 flips (bit 6) and so does the parity bit f7
        // (coordinate 7: pair 3, high half, bit 16 * 3 + 14).
        assert_eq!(tabs[256 + 1], 1 << 6 | 1 << 62);
        // The kernel permutes bytes with PTX prmt, where a selector nibble with bit 3 set
        // would replicate a sign instead of copying a byte: no table nibble, and no pattern
        // selector XOR a sign selector, may have it.
        let bit3 = |w: u64| w & 0x8888_8888_8888_8888 != 0;
        assert!(!tabs.iter().copied().any(bit3));
        for &p in &tabs[..256] {
            assert!(!tabs[256..384].iter().any(|&s| bit3(p ^ s)));
        }
    }
}
