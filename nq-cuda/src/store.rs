//! Device-resident storage of one layer of the compressed cache, for one sequence: every
//! kv head's compressed tokens (E8 codes, f16 scales, positions), the f16 dense rows
//! (attention sinks, the recent window, tokens not compressed yet) with their attention
//! mass, and the per-head mean and key smoothing vectors.
//!
//! Layout on the device (`H` kv heads, `d` head dim, capacities in tokens):
//! - compressed, head-major with one capacity `cap` for every head (a multiple of 64):
//!   `k_codes [H][cap][d/8 * key_bits]`, `k_scales [H][cap]` (f16 bits), likewise values,
//!   `pos [H][cap]` (u32, ascending per head); head `h` holds `n[h]` tokens;
//! - dense, `dcap` rows per head: `dense_k`, `dense_v [H][dcap][d]` (f16 bits),
//!   `dense_mass [H][dcap]` (f32), `dense_pos [dcap]` (u32, shared by the heads);
//! - `k_mean`, `v_mean`, `k_smooth [H][d]` (f32): zeros, zeros and ones while a head has
//!   none, which leaves attention unchanged exactly (`q / 1`, `+ 0`).
//!
//! Buffers grow by doubling, with device-to-device copies; [`DeviceLayer::resident_bytes`]
//! counts what is in use (the same sum as [`HeadImage::bytes`] plus the dense positions),
//! [`DeviceLayer::capacity_bytes`] what is allocated.

use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use half::f16;
use nq_core::{HeadImage, LayerSpec, Positions, Storage};
use nq_lattice::FixedBits;

use crate::attend::store_kernel;
use crate::backend::CudaBackend;
use crate::error::{CudaError, Result, check_len, to_i64};

/// Token capacities are multiples of this (keeps every head's rows 16-byte aligned and
/// f16 scale pairs 4-byte aligned, as the attention kernel loads them).
const CAP_ALIGN: usize = 64;

/// Compressed rows of one head on the host, to append to a [`DeviceLayer`].
#[derive(Clone, Copy, Debug)]
pub struct HostRows<'a> {
    /// Key codes, `positions.len() * d / 8 * key_bits` bytes.
    pub k_codes: &'a [u8],
    /// One f16 scale per key.
    pub k_scales: &'a [f16],
    /// Value codes, `positions.len() * d / 8 * value_bits` bytes.
    pub v_codes: &'a [u8],
    /// One f16 scale per value.
    pub v_scales: &'a [f16],
    /// Token positions, strictly ascending, past the head's last compressed position.
    pub positions: &'a [u32],
}

/// Compressed rows of one head already on the device (an encoder's output), to append to a
/// [`DeviceLayer`] with device-to-device copies. Scales are the f16 bit patterns; they are
/// not checked (the encoder produces finite, non-negative scales).
#[derive(Debug)]
pub struct DeviceRows<'a> {
    /// Key codes, `positions.len() * d / 8 * key_bits` bytes.
    pub k_codes: CudaView<'a, u8>,
    /// One f16 scale (bits) per key.
    pub k_scales: CudaView<'a, u16>,
    /// Value codes.
    pub v_codes: CudaView<'a, u8>,
    /// One f16 scale (bits) per value.
    pub v_scales: CudaView<'a, u16>,
    /// Token positions on the host (they are small, and the host keeps the last one),
    /// strictly ascending, past the head's last compressed position.
    pub positions: &'a [u32],
}

/// One layer's storage for one sequence, every kv head of it, on one CUDA device.
///
/// # Examples
/// ```no_run
/// use nq_core::{LayerSpec, Rotation, Storage};
/// use nq_cuda::{CudaBackend, store::DeviceLayer};
/// let gpu = CudaBackend::new(0)?;
/// let spec = LayerSpec {
///     kv_heads: 2, q_heads: 4, head_dim: 64,
///     keys: Storage::E8 { bits: 4 }, values: Storage::E8 { bits: 2 }, scale_candidates: 1,
///     key_rot: Rotation::new(64, 1)?, value_rot: Rotation::new(64, 2)?,
/// };
/// let mut layer = DeviceLayer::new(&gpu, &spec)?;
/// layer.append_dense(&gpu, &vec![0.5; 2 * 3 * 64], &vec![1.0; 2 * 3 * 64], &[0, 1, 2])?;
/// assert_eq!(layer.dense_len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DeviceLayer {
    spec: LayerSpec,
    stream: Arc<CudaStream>,
    key_row: usize,
    value_row: usize,
    cap: usize,
    n: Vec<usize>,
    last_pos: Vec<Option<u32>>,
    pub(crate) k_codes: CudaSlice<u8>,
    pub(crate) k_scales: CudaSlice<u16>,
    pub(crate) v_codes: CudaSlice<u8>,
    pub(crate) v_scales: CudaSlice<u16>,
    pub(crate) pos: CudaSlice<u32>,
    dcap: usize,
    dense_pos_host: Vec<u32>,
    pub(crate) dense_pos: CudaSlice<u32>,
    pub(crate) dense_k: CudaSlice<u16>,
    pub(crate) dense_v: CudaSlice<u16>,
    pub(crate) dense_mass: CudaSlice<f32>,
    pub(crate) k_mean: CudaSlice<f32>,
    pub(crate) v_mean: CudaSlice<f32>,
    pub(crate) k_smooth: CudaSlice<f32>,
    has_k_mean: Vec<bool>,
    has_v_mean: Vec<bool>,
    has_k_smooth: Vec<bool>,
    /// The element index of the first non-finite value appended from device memory since
    /// the layer was made, `u64::MAX` when none: a status word, not storage (not counted in
    /// [`resident_bytes`](Self::resident_bytes)).
    nonfinite: CudaSlice<u64>,
}

/// The code rate of an E8 storage, or `Unsupported` for f16 storage.
fn e8_bits(op: &'static str, what: &'static str, s: Storage) -> Result<FixedBits> {
    match s {
        Storage::E8 { bits: 2 } => Ok(FixedBits::B2),
        Storage::E8 { bits: 3 } => Ok(FixedBits::B3),
        Storage::E8 { bits: 4 } => Ok(FixedBits::B4),
        other => Err(CudaError::Unsupported {
            op,
            what: format!("{what} storage {other:?} (the device store holds E8 codes of 2-4 bits)"),
        }),
    }
}

/// Positions strictly ascending and after `last`.
fn check_positions(op: &'static str, positions: &[u32], last: Option<u32>) -> Result<()> {
    let mut prev = last;
    for &p in positions {
        if let Some(l) = prev
            && p <= l
        {
            return Err(CudaError::Position { op, got: p, last: l });
        }
        prev = Some(p);
    }
    Ok(())
}

fn round_cap(needed: usize, current: usize) -> usize {
    needed.max(current.saturating_mul(2)).max(CAP_ALIGN).next_multiple_of(CAP_ALIGN)
}

fn f16_bits(x: &[f16]) -> Vec<u16> {
    x.iter().map(|v| v.to_bits()).collect()
}

impl DeviceLayer {
    /// Empty storage for a layer of `spec` on `gpu`.
    ///
    /// # Errors
    /// [`CudaError::Unsupported`] for f16 key or value storage, or a rotation whose
    /// dimension is not `head_dim`; driver failures.
    pub fn new(gpu: &CudaBackend, spec: &LayerSpec) -> Result<Self> {
        const OP: &str = "DeviceLayer::new";
        let kbits = e8_bits(OP, "key", spec.keys)?;
        let vbits = e8_bits(OP, "value", spec.values)?;
        let d = spec.head_dim;
        if d == 0 || !d.is_multiple_of(8) || spec.kv_heads == 0 {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!("head_dim {d}, kv_heads {}", spec.kv_heads),
            });
        }
        for (what, rot) in [("key", &spec.key_rot), ("value", &spec.value_rot)] {
            if rot.dim() != d {
                return Err(CudaError::Unsupported {
                    op: OP,
                    what: format!("{what} rotation of dim {} for head_dim {d}", rot.dim()),
                });
            }
        }
        let h = spec.kv_heads;
        let stream = Arc::clone(gpu.stream());
        let (cap, dcap) = (CAP_ALIGN, CAP_ALIGN);
        let key_row = d / 8 * kbits.bytes_per_block();
        let value_row = d / 8 * vbits.bytes_per_block();
        Ok(DeviceLayer {
            spec: spec.clone(),
            key_row,
            value_row,
            cap,
            n: vec![0; h],
            last_pos: vec![None; h],
            k_codes: stream.alloc_zeros(h * cap * key_row)?,
            k_scales: stream.alloc_zeros(h * cap)?,
            v_codes: stream.alloc_zeros(h * cap * value_row)?,
            v_scales: stream.alloc_zeros(h * cap)?,
            pos: stream.alloc_zeros(h * cap)?,
            dcap,
            dense_pos_host: Vec::new(),
            dense_pos: stream.alloc_zeros(dcap)?,
            dense_k: stream.alloc_zeros(h * dcap * d)?,
            dense_v: stream.alloc_zeros(h * dcap * d)?,
            dense_mass: stream.alloc_zeros(h * dcap)?,
            k_mean: stream.alloc_zeros(h * d)?,
            v_mean: stream.alloc_zeros(h * d)?,
            k_smooth: stream.clone_htod(&vec![1.0f32; h * d])?,
            has_k_mean: vec![false; h],
            has_v_mean: vec![false; h],
            has_k_smooth: vec![false; h],
            nonfinite: stream.clone_htod(&[u64::MAX])?,
            stream,
        })
    }

    /// The layer's spec.
    pub fn spec(&self) -> &LayerSpec {
        &self.spec
    }

    /// Compressed tokens of kv head `head` (0 for a head out of range).
    pub fn compressed(&self, head: usize) -> usize {
        self.n.get(head).copied().unwrap_or(0)
    }

    /// The largest compressed token count over the heads.
    pub fn max_compressed(&self) -> usize {
        self.n.iter().copied().max().unwrap_or(0)
    }

    /// Dense rows (per head; every head holds the same dense tokens).
    pub fn dense_len(&self) -> usize {
        self.dense_pos_host.len()
    }

    /// Positions of the dense rows, ascending (a host mirror of the device buffer).
    pub fn dense_positions(&self) -> &[u32] {
        &self.dense_pos_host
    }

    /// The last compressed position of each head, if any (host mirror).
    pub(crate) fn last_positions(&self) -> &[Option<u32>] {
        &self.last_pos
    }

    /// Token capacity of the compressed buffers, per head.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Row capacity of the dense buffers, per head.
    pub(crate) fn dense_capacity(&self) -> usize {
        self.dcap
    }

    /// Bytes of storage in use: codes, scales and positions of the compressed tokens, f16
    /// dense rows, their mass and positions, and the means and smoothing vectors that are
    /// set. The same sum as [`HeadImage::bytes`] over the heads, except that positions are
    /// u32 here (4 bytes per compressed token, where the host holds a bitmap: the kernels
    /// read each token's position for masks and RoPE), plus 4 bytes per dense position.
    pub fn resident_bytes(&self) -> usize {
        let d = self.spec.head_dim;
        let m = self.dense_len();
        let per_token = self.key_row + self.value_row + 2 + 2 + 4;
        let compressed: usize = self.n.iter().map(|&n| n * per_token).sum();
        let dense = self.spec.kv_heads * m * (2 * d * 2 + 4) + m * 4;
        let vectors = [&self.has_k_mean, &self.has_v_mean, &self.has_k_smooth]
            .iter()
            .map(|f| f.iter().filter(|&&x| x).count() * d * 4)
            .sum::<usize>();
        compressed + dense + vectors
    }

    /// Bytes allocated on the device (capacities, not lengths).
    pub fn capacity_bytes(&self) -> usize {
        self.k_codes.num_bytes()
            + self.k_scales.num_bytes()
            + self.v_codes.num_bytes()
            + self.v_scales.num_bytes()
            + self.pos.num_bytes()
            + self.dense_pos.num_bytes()
            + self.dense_k.num_bytes()
            + self.dense_v.num_bytes()
            + self.dense_mass.num_bytes()
            + self.k_mean.num_bytes()
            + self.v_mean.num_bytes()
            + self.k_smooth.num_bytes()
    }

    fn head_index(&self, op: &'static str, head: usize) -> Result<()> {
        if head < self.spec.kv_heads {
            Ok(())
        } else {
            Err(CudaError::OutOfRange { op, what: "kv head", got: head, limit: self.spec.kv_heads })
        }
    }

    /// Grow the compressed buffers to hold `needed` tokens per head (capacity doubling,
    /// each head's tokens copied device to device).
    fn reserve_compressed(&mut self, needed: usize) -> Result<()> {
        if needed <= self.cap {
            return Ok(());
        }
        let cap = round_cap(needed, self.cap);
        let h = self.spec.kv_heads;
        let s = &self.stream;
        let mut kc = s.alloc_zeros::<u8>(h * cap * self.key_row)?;
        let mut ks = s.alloc_zeros::<u16>(h * cap)?;
        let mut vc = s.alloc_zeros::<u8>(h * cap * self.value_row)?;
        let mut vs = s.alloc_zeros::<u16>(h * cap)?;
        let mut pos = s.alloc_zeros::<u32>(h * cap)?;
        for (head, &n) in self.n.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (old, new) = (head * self.cap, head * cap);
            let (kr, vr) = (self.key_row, self.value_row);
            s.memcpy_dtod(
                &self.k_codes.slice(old * kr..(old + n) * kr),
                &mut kc.slice_mut(new * kr..(new + n) * kr),
            )?;
            s.memcpy_dtod(
                &self.v_codes.slice(old * vr..(old + n) * vr),
                &mut vc.slice_mut(new * vr..(new + n) * vr),
            )?;
            s.memcpy_dtod(&self.k_scales.slice(old..old + n), &mut ks.slice_mut(new..new + n))?;
            s.memcpy_dtod(&self.v_scales.slice(old..old + n), &mut vs.slice_mut(new..new + n))?;
            s.memcpy_dtod(&self.pos.slice(old..old + n), &mut pos.slice_mut(new..new + n))?;
        }
        (self.k_codes, self.k_scales, self.v_codes, self.v_scales, self.pos) =
            (kc, ks, vc, vs, pos);
        self.cap = cap;
        Ok(())
    }

    /// Reallocate the dense buffers with `dcap` rows per head, copying rows `keep` of the
    /// old ones (ranges of row indices, in order) to the front of each head.
    fn rebuild_dense(&mut self, dcap: usize, keep: &[std::ops::Range<usize>]) -> Result<()> {
        let (h, d) = (self.spec.kv_heads, self.spec.head_dim);
        let s = &self.stream;
        let mut dk = s.alloc_zeros::<u16>(h * dcap * d)?;
        let mut dv = s.alloc_zeros::<u16>(h * dcap * d)?;
        let mut mass = s.alloc_zeros::<f32>(h * dcap)?;
        let mut dpos = s.alloc_zeros::<u32>(dcap)?;
        let mut at = 0;
        for r in keep.iter().filter(|r| !r.is_empty()) {
            let len = r.len();
            for head in 0..h {
                let (old, new) = (head * self.dcap + r.start, head * dcap + at);
                s.memcpy_dtod(
                    &self.dense_k.slice(old * d..(old + len) * d),
                    &mut dk.slice_mut(new * d..(new + len) * d),
                )?;
                s.memcpy_dtod(
                    &self.dense_v.slice(old * d..(old + len) * d),
                    &mut dv.slice_mut(new * d..(new + len) * d),
                )?;
                s.memcpy_dtod(
                    &self.dense_mass.slice(old..old + len),
                    &mut mass.slice_mut(new..new + len),
                )?;
            }
            s.memcpy_dtod(&self.dense_pos.slice(r.clone()), &mut dpos.slice_mut(at..at + len))?;
            at += len;
        }
        (self.dense_k, self.dense_v, self.dense_mass, self.dense_pos) = (dk, dv, mass, dpos);
        self.dcap = dcap;
        Ok(())
    }

    fn reserve_dense(&mut self, needed: usize) -> Result<()> {
        if needed <= self.dcap {
            return Ok(());
        }
        let m = self.dense_len();
        let all = std::iter::once(0..m).collect::<Vec<_>>();
        self.rebuild_dense(round_cap(needed, self.dcap), &all)
    }

    /// Check `t` new dense positions and make room for them; returns the first new row.
    fn start_dense_append(&mut self, op: &'static str, positions: &[u32]) -> Result<usize> {
        check_positions(op, positions, self.dense_pos_host.last().copied())?;
        let m = self.dense_len();
        self.reserve_dense(m + positions.len())?;
        Ok(m)
    }

    /// Record `positions` as appended at row `m` (host mirror and device buffer).
    fn finish_dense_append(&mut self, m: usize, positions: &[u32]) -> Result<()> {
        let t = positions.len();
        self.stream.memcpy_htod(positions, &mut self.dense_pos.slice_mut(m..m + t))?;
        self.dense_pos_host.extend_from_slice(positions);
        Ok(())
    }

    /// Append `t = positions.len()` dense rows to every head: `k`, `v` are host
    /// `[kv_heads, t, d]` f32, stored as f16 (round to nearest even, as the CPU cache);
    /// their dense mass starts at 0.
    ///
    /// # Errors
    /// [`CudaError::Len`] for buffers that disagree with the shape, [`CudaError::Position`]
    /// for positions not strictly ascending after the last dense one; driver failures.
    /// Nothing is appended on error.
    pub fn append_dense(
        &mut self,
        _gpu: &CudaBackend,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> Result<()> {
        const OP: &str = "DeviceLayer::append_dense";
        let (h, d, t) = (self.spec.kv_heads, self.spec.head_dim, positions.len());
        check_len(OP, "k", k.len(), h * t * d)?;
        check_len(OP, "v", v.len(), h * t * d)?;
        if t == 0 {
            return Ok(());
        }
        let m = self.start_dense_append(OP, positions)?;
        let (kh, vh): (Vec<u16>, Vec<u16>) = (
            k.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
            v.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
        );
        for head in 0..h {
            let at = (head * self.dcap + m) * d;
            let src = head * t * d..(head + 1) * t * d;
            self.stream
                .memcpy_htod(&kh[src.clone()], &mut self.dense_k.slice_mut(at..at + t * d))?;
            self.stream.memcpy_htod(&vh[src], &mut self.dense_v.slice_mut(at..at + t * d))?;
        }
        self.finish_dense_append(m, positions)
    }

    /// [`append_dense`](Self::append_dense) from device buffers `[kv_heads, t, d]` f32 (a
    /// model's key and value projections), converted to f16 on the device, without
    /// synchronizing with the host. A non-finite value is stored as it is and reported by
    /// the next [`check_finite`](Self::check_finite).
    ///
    /// # Errors
    /// As [`append_dense`](Self::append_dense); NVRTC compile failure on first use.
    pub fn append_dense_device(
        &mut self,
        gpu: &CudaBackend,
        k: &CudaView<'_, f32>,
        v: &CudaView<'_, f32>,
        positions: &[u32],
    ) -> Result<()> {
        const OP: &str = "DeviceLayer::append_dense_device";
        let (h, d, t) = (self.spec.kv_heads, self.spec.head_dim, positions.len());
        check_len(OP, "k", k.len(), h * t * d)?;
        check_len(OP, "v", v.len(), h * t * d)?;
        if t == 0 {
            return Ok(());
        }
        let f = store_kernel(gpu)?;
        let m = self.start_dense_append(OP, positions)?;
        let per_head = to_i64(OP, t * d)?;
        let heads = i32::try_from(h)
            .map_err(|_| CudaError::Unsupported { op: OP, what: format!("{h} heads") })?;
        let head_stride = to_i64(OP, self.dcap * d)?;
        let offset = to_i64(OP, m * d)?;
        let blocks = u32::try_from((h * t * d).div_ceil(256).min(65_535)).unwrap_or(65_535);
        let cfg =
            LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        for (src, dst) in [(k, &mut self.dense_k), (v, &mut self.dense_v)] {
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(src);
            launch.arg(dst);
            launch.arg(&per_head);
            launch.arg(&heads);
            launch.arg(&head_stride);
            launch.arg(&offset);
            launch.arg(&mut self.nonfinite);
            // SAFETY: matches `f32_to_f16_rows(const float*, u16*, long long, int, long long,
            // long long, unsigned long long*)` in kernels/attend.cu; `nonfinite` holds the
            // one word it lowers. `src` holds heads * per_head floats (checked
            // above); the kernel writes dst[h * head_stride + offset + i] for i < per_head,
            // and offset + per_head = (m + t) * d <= dcap * d = head_stride after
            // `start_dense_append` reserved m + t rows, so every write is inside `dst`
            // (heads * dcap * d elements).
            unsafe { launch.launch(cfg) }?;
        }
        self.finish_dense_append(m, positions)
    }

    /// Fail if a value appended from device memory was not finite (one 8-byte read, which
    /// waits for the stream). The record stays: the rows are still held, so every later
    /// check fails too and such a layer is never compressed or exported.
    ///
    /// # Errors
    /// [`CudaError::NonFinite`] with the value's index in its append's `[kv_heads, t, d]`
    /// buffer (keys or values); driver failures.
    pub fn check_finite(&self, op: &'static str) -> Result<()> {
        let [index] = self.stream.clone_dtoh(&self.nonfinite)?[..] else {
            unreachable!("the status word is one u64");
        };
        if index == u64::MAX {
            return Ok(());
        }
        Err(CudaError::NonFinite { op, index })
    }

    /// Remove the dense rows `sinks..sinks + count` of every head (after they were
    /// compressed or evicted); the rows after them move up, the sinks stay.
    ///
    /// # Errors
    /// [`CudaError::OutOfRange`] when `sinks + count` exceeds the dense rows; driver failures.
    pub fn drain_dense(&mut self, sinks: usize, count: usize) -> Result<()> {
        const OP: &str = "DeviceLayer::drain_dense";
        let m = self.dense_len();
        let end = sinks.saturating_add(count);
        if end > m {
            return Err(CudaError::OutOfRange {
                op: OP,
                what: "sinks + count",
                got: end,
                limit: m + 1,
            });
        }
        if count == 0 {
            return Ok(());
        }
        self.rebuild_dense(self.dcap, &[0..sinks, end..m])?;
        self.dense_pos_host.drain(sinks..end);
        Ok(())
    }

    /// Append compressed tokens to kv head `head` from host buffers.
    ///
    /// # Errors
    /// [`CudaError::OutOfRange`] for a bad head, [`CudaError::Len`] for buffers that
    /// disagree with the token count, [`CudaError::BadScale`] for a negative or non-finite
    /// scale, [`CudaError::Position`] for positions not strictly ascending after the head's
    /// last; driver failures. Nothing is appended on error.
    pub fn append_compressed(&mut self, head: usize, rows: &HostRows<'_>) -> Result<()> {
        const OP: &str = "DeviceLayer::append_compressed";
        self.head_index(OP, head)?;
        let lens =
            [rows.k_codes.len(), rows.k_scales.len(), rows.v_codes.len(), rows.v_scales.len()];
        for s in [rows.k_scales, rows.v_scales] {
            if let Some((row, v)) =
                s.iter().enumerate().find(|(_, v)| !(v.is_finite() && v.to_f32() >= 0.0))
            {
                return Err(CudaError::BadScale { op: OP, row, value: v.to_f32() });
            }
        }
        let Some(at) = self.start_compressed(OP, head, lens, rows.positions)? else {
            return Ok(());
        };
        let t = rows.positions.len();
        let (kr, vr) = (self.key_row, self.value_row);
        let s = &self.stream;
        s.memcpy_htod(rows.k_codes, &mut self.k_codes.slice_mut(at * kr..(at + t) * kr))?;
        s.memcpy_htod(rows.v_codes, &mut self.v_codes.slice_mut(at * vr..(at + t) * vr))?;
        s.memcpy_htod(&f16_bits(rows.k_scales), &mut self.k_scales.slice_mut(at..at + t))?;
        s.memcpy_htod(&f16_bits(rows.v_scales), &mut self.v_scales.slice_mut(at..at + t))?;
        self.finish_compressed(head, at, rows.positions)
    }

    /// Append compressed tokens to kv head `head` from device buffers (device-to-device
    /// copies; the positions are uploaded).
    ///
    /// # Errors
    /// As [`append_compressed`](Self::append_compressed), except that scales are not
    /// checked.
    pub fn append_compressed_device(&mut self, head: usize, rows: &DeviceRows<'_>) -> Result<()> {
        const OP: &str = "DeviceLayer::append_compressed_device";
        let lens =
            [rows.k_codes.len(), rows.k_scales.len(), rows.v_codes.len(), rows.v_scales.len()];
        let Some(at) = self.start_compressed(OP, head, lens, rows.positions)? else {
            return Ok(());
        };
        let t = rows.positions.len();
        let (kr, vr) = (self.key_row, self.value_row);
        let s = &self.stream;
        s.memcpy_dtod(&rows.k_codes, &mut self.k_codes.slice_mut(at * kr..(at + t) * kr))?;
        s.memcpy_dtod(&rows.v_codes, &mut self.v_codes.slice_mut(at * vr..(at + t) * vr))?;
        s.memcpy_dtod(&rows.k_scales, &mut self.k_scales.slice_mut(at..at + t))?;
        s.memcpy_dtod(&rows.v_scales, &mut self.v_scales.slice_mut(at..at + t))?;
        self.finish_compressed(head, at, rows.positions)
    }

    /// Check an append of compressed tokens (head, buffer lengths `[key codes, key scales,
    /// value codes, value scales]`, positions) and make room; the first new slot of the
    /// head's rows, or `None` for no tokens.
    fn start_compressed(
        &mut self,
        op: &'static str,
        head: usize,
        lens: [usize; 4],
        positions: &[u32],
    ) -> Result<Option<usize>> {
        self.head_index(op, head)?;
        let t = positions.len();
        check_len(op, "key codes", lens[0], t * self.key_row)?;
        check_len(op, "key scales", lens[1], t)?;
        check_len(op, "value codes", lens[2], t * self.value_row)?;
        check_len(op, "value scales", lens[3], t)?;
        check_positions(op, positions, self.last_pos[head])?;
        if t == 0 {
            return Ok(None);
        }
        self.reserve_compressed(self.n[head] + t)?;
        Ok(Some(head * self.cap + self.n[head]))
    }

    /// Upload the positions of an append that starts at slot `at` and count the tokens.
    fn finish_compressed(&mut self, head: usize, at: usize, positions: &[u32]) -> Result<()> {
        let t = positions.len();
        self.stream.memcpy_htod(positions, &mut self.pos.slice_mut(at..at + t))?;
        self.n[head] += t;
        self.last_pos[head] = positions.last().copied();
        Ok(())
    }

    /// Set the key mean, value mean and key smoothing of kv head `head` (each `d` values;
    /// `None` leaves that vector as it is).
    ///
    /// # Errors
    /// [`CudaError::OutOfRange`], [`CudaError::Len`]; [`CudaError::Unsupported`] for a
    /// non-finite value or a smoothing factor that is not positive; driver failures.
    pub fn set_vectors(
        &mut self,
        head: usize,
        k_mean: Option<&[f32]>,
        v_mean: Option<&[f32]>,
        k_smooth: Option<&[f32]>,
    ) -> Result<()> {
        const OP: &str = "DeviceLayer::set_vectors";
        self.head_index(OP, head)?;
        let d = self.spec.head_dim;
        for (what, v) in [("k_mean", k_mean), ("v_mean", v_mean), ("k_smooth", k_smooth)] {
            let Some(v) = v else { continue };
            check_len(OP, what, v.len(), d)?;
            let ok = |x: &f32| x.is_finite() && (what != "k_smooth" || *x > 0.0);
            if let Some(bad) = v.iter().find(|x| !ok(x)) {
                return Err(CudaError::Unsupported { op: OP, what: format!("{what} value {bad}") });
            }
        }
        let at = head * d..(head + 1) * d;
        let s = &self.stream;
        if let Some(v) = k_mean {
            s.memcpy_htod(v, &mut self.k_mean.slice_mut(at.clone()))?;
            self.has_k_mean[head] = true;
        }
        if let Some(v) = v_mean {
            s.memcpy_htod(v, &mut self.v_mean.slice_mut(at.clone()))?;
            self.has_v_mean[head] = true;
        }
        if let Some(v) = k_smooth {
            s.memcpy_htod(v, &mut self.k_smooth.slice_mut(at))?;
            self.has_k_smooth[head] = true;
        }
        Ok(())
    }

    /// Every head's storage as host buffers, and the dense positions.
    ///
    /// # Errors
    /// [`CudaError::NonFinite`] when a non-finite value was appended; driver failures.
    pub fn export(&self) -> Result<(Vec<HeadImage>, Vec<u32>)> {
        self.check_finite("DeviceLayer::export")?;
        let (d, m) = (self.spec.head_dim, self.dense_len());
        let s = &self.stream;
        let down = |buf: &CudaSlice<f32>, range: std::ops::Range<usize>| -> Result<Vec<f32>> {
            Ok(if range.is_empty() { Vec::new() } else { s.clone_dtoh(&buf.slice(range))? })
        };
        let down16 = |buf: &CudaSlice<u16>, range: std::ops::Range<usize>| -> Result<Vec<f16>> {
            Ok(if range.is_empty() {
                Vec::new()
            } else {
                s.clone_dtoh(&buf.slice(range))?.into_iter().map(f16::from_bits).collect()
            })
        };
        let down8 = |buf: &CudaSlice<u8>, range: std::ops::Range<usize>| -> Result<Vec<u8>> {
            Ok(if range.is_empty() { Vec::new() } else { s.clone_dtoh(&buf.slice(range))? })
        };
        let mut heads = Vec::with_capacity(self.spec.kv_heads);
        for (head, &n) in self.n.iter().enumerate() {
            let c = head * self.cap;
            let dd = head * self.dcap;
            let vector = |set: bool, buf: &CudaSlice<f32>| -> Result<Vec<f32>> {
                if set { down(buf, head * d..(head + 1) * d) } else { Ok(Vec::new()) }
            };
            heads.push(HeadImage {
                pos: if n == 0 {
                    Positions::new()
                } else {
                    Positions::from_ascending(&s.clone_dtoh(&self.pos.slice(c..c + n))?)?
                },
                k_codes: down8(&self.k_codes, c * self.key_row..(c + n) * self.key_row)?,
                k_scales: down16(&self.k_scales, c..c + n)?,
                v_codes: down8(&self.v_codes, c * self.value_row..(c + n) * self.value_row)?,
                v_scales: down16(&self.v_scales, c..c + n)?,
                dense_k: down16(&self.dense_k, dd * d..(dd + m) * d)?,
                dense_v: down16(&self.dense_v, dd * d..(dd + m) * d)?,
                dense_mass: down(&self.dense_mass, dd..dd + m)?,
                k_mean: vector(self.has_k_mean[head], &self.k_mean)?,
                v_mean: vector(self.has_v_mean[head], &self.v_mean)?,
                k_smooth: vector(self.has_k_smooth[head], &self.k_smooth)?,
            });
        }
        Ok((heads, self.dense_pos_host.clone()))
    }

    /// Storage built from host buffers (one [`HeadImage`] per kv head and the dense
    /// positions), each head checked by [`HeadImage::validate`] first.
    ///
    /// # Errors
    /// [`CudaError::Core`] for a head that does not validate, [`CudaError::Len`] for a head
    /// count other than `spec.kv_heads`, [`CudaError::Position`] for dense positions not
    /// ascending; the errors of [`new`](Self::new) and of the appends; driver failures.
    pub fn import(
        gpu: &CudaBackend,
        spec: &LayerSpec,
        heads: &[HeadImage],
        dense_pos: &[u32],
    ) -> Result<Self> {
        const OP: &str = "DeviceLayer::import";
        check_len(OP, "heads", heads.len(), spec.kv_heads)?;
        for head in heads {
            head.validate(spec, dense_pos.len())?;
        }
        check_positions(OP, dense_pos, None)?;
        let mut layer = DeviceLayer::new(gpu, spec)?;
        let (d, m) = (spec.head_dim, dense_pos.len());
        layer.reserve_dense(m)?;
        layer.reserve_compressed(heads.iter().map(HeadImage::compressed).max().unwrap_or(0))?;
        for (h, head) in heads.iter().enumerate() {
            let positions = head.pos.to_vec();
            layer.append_compressed(
                h,
                &HostRows {
                    k_codes: &head.k_codes,
                    k_scales: &head.k_scales,
                    v_codes: &head.v_codes,
                    v_scales: &head.v_scales,
                    positions: &positions,
                },
            )?;
            fn opt(v: &[f32]) -> Option<&[f32]> {
                if v.is_empty() { None } else { Some(v) }
            }
            layer.set_vectors(h, opt(&head.k_mean), opt(&head.v_mean), opt(&head.k_smooth))?;
            if m > 0 {
                let at = h * layer.dcap * d;
                let s = &layer.stream;
                s.memcpy_htod(
                    &f16_bits(&head.dense_k),
                    &mut layer.dense_k.slice_mut(at..at + m * d),
                )?;
                s.memcpy_htod(
                    &f16_bits(&head.dense_v),
                    &mut layer.dense_v.slice_mut(at..at + m * d),
                )?;
                let at = h * layer.dcap;
                s.memcpy_htod(&head.dense_mass, &mut layer.dense_mass.slice_mut(at..at + m))?;
            }
        }
        if m > 0 {
            layer.finish_dense_append(0, dense_pos)?;
        }
        Ok(layer)
    }

    /// Raw device addresses of the buffers, for the attention kernel's descriptor table
    /// (the order of `F_*` in kernels/attend.cu). `mass` is taken mutably: the kernel may
    /// add to the dense mass.
    pub(crate) fn device_addresses(&mut self) -> [u64; 12] {
        let s = Arc::clone(&self.stream);
        let a = |p: (cudarc::driver::sys::CUdeviceptr, _)| p.0;
        [
            a(self.k_codes.device_ptr(&s)),
            a(self.k_scales.device_ptr(&s)),
            a(self.v_codes.device_ptr(&s)),
            a(self.v_scales.device_ptr(&s)),
            a(self.pos.device_ptr(&s)),
            a(self.dense_k.device_ptr(&s)),
            a(self.dense_v.device_ptr(&s)),
            a(self.dense_pos.device_ptr(&s)),
            a(self.dense_mass.device_ptr_mut(&s)),
            a(self.k_mean.device_ptr(&s)),
            a(self.v_mean.device_ptr(&s)),
            a(self.k_smooth.device_ptr(&s)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_double_and_stay_aligned() {
        assert_eq!(round_cap(1, 0), CAP_ALIGN);
        assert_eq!(round_cap(65, 64), 128);
        assert_eq!(round_cap(300, 64), 320);
        assert_eq!(round_cap(129, 128), 256);
        for (n, c) in [(1, 64), (1000, 512), (70_000, 65_536)] {
            assert_eq!(round_cap(n, c) % CAP_ALIGN, 0);
            assert!(round_cap(n, c) >= n);
        }
    }

    #[test]
    fn positions_must_ascend_past_the_last() {
        assert!(check_positions("t", &[1, 2, 5], None).is_ok());
        assert!(check_positions("t", &[6], Some(5)).is_ok());
        let e = check_positions("t", &[5], Some(5)).unwrap_err();
        assert!(matches!(e, CudaError::Position { got: 5, last: 5, .. }), "{e}");
        let e = check_positions("t", &[1, 3, 3], None).unwrap_err();
        assert!(matches!(e, CudaError::Position { got: 3, last: 3, .. }), "{e}");
    }

    #[test]
    fn f16_storage_is_unsupported() {
        let e = e8_bits("t", "key", Storage::F16).unwrap_err();
        assert!(matches!(e, CudaError::Unsupported { .. }), "{e}");
        assert!(matches!(e8_bits("t", "key", Storage::E8 { bits: 3 }), Ok(FixedBits::B3)));
    }
}
