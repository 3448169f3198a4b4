//! The GPU decode step: candle's CUDA tensors handed to nq-cuda's storage in place.
//!
//! A candle [`CustomOp3`] over `(q, k, v)` reads the three tensors' device memory, appends
//! `k` and `v` to each sequence's cache (`Backend::append_rows`), attends the whole batch in
//! one launch (`CompressedCache::attend_rows`) into a new device buffer, and returns it as a
//! candle tensor. Everything is queued on candle's own stream (the cache was made with
//! [`cuda_backend`](crate::cuda_backend)): nothing is copied to the host and nothing waits
//! for the GPU. The eviction bookkeeping of decode-time blocks (each dense row's attention
//! mass) stays on the device too; only a block's compression, every `block` steps, reads
//! it back.

use std::cell::RefCell;

use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor};
use nq_core::CompressedCache;
use nq_cuda::CudaBackend;

use crate::compressed::CandleBackend;

impl CandleBackend for CudaBackend {
    fn decode_in_place(
        caches: &mut [&mut CompressedCache<Self>],
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        window: Option<usize>,
    ) -> candle_core::Result<Option<Tensor>> {
        let on_gpu = [q, k, v].iter().all(|x| x.device().is_cuda());
        let past_prompt = caches
            .iter()
            .all(|c| layer < c.shape().layers && c.len(layer) > 0 && !c.observes_queries(layer));
        if !on_gpu || !past_prompt || caches.is_empty() {
            return Ok(None);
        }
        let (hq, n, d) = q.dims3()?;
        let hkv = k.dim(0)?;
        let b = caches.len();
        if n % b != 0 || positions.len() != n {
            candle_core::bail!("{n} rows, {} positions for {b} sequences", positions.len());
        }
        let t = n / b;
        // [heads, B * t, d] -> [B, heads, t, d], the layout of one sequence after another.
        let by_sequence = |x: &Tensor, heads: usize| -> candle_core::Result<Tensor> {
            let x = x.to_dtype(candle_core::DType::F32)?;
            if b == 1 {
                return x.contiguous();
            }
            x.reshape((heads, b, t, d))?.transpose(0, 1)?.contiguous()
        };
        let (q, k, v) = (by_sequence(q, hq)?, by_sequence(k, hkv)?, by_sequence(v, hkv)?);
        let step = DecodeStep { caches: RefCell::new(caches), layer, positions, window };
        let out = q.apply_op3_no_bwd(&k, &v, &step)?;
        let out = if b == 1 { out } else { out.transpose(0, 1)?.reshape((hq, n, d))? };
        Ok(Some(out))
    }

    fn as_cuda(cache: &mut CompressedCache<Self>) -> Option<&mut CompressedCache<CudaBackend>> {
        Some(cache)
    }
}

/// The op: `q` `[B, q_heads, t, d]`, `k` and `v` `[B, kv_heads, t, d]`, all f32 and
/// contiguous on the caches' device; the output is shaped like `q`.
struct DecodeStep<'a, 'c> {
    caches: RefCell<&'a mut [&'c mut CompressedCache<CudaBackend>]>,
    layer: usize,
    positions: &'a [u32],
    window: Option<usize>,
}

/// The device memory of one contiguous f32 tensor.
fn view<'s>(
    s: &'s CudaStorage,
    l: &Layout,
) -> candle_core::Result<cudarc::driver::CudaView<'s, f32>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("decode step: a non-contiguous input {:?}", l.shape());
    };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

impl CustomOp3 for DecodeStep<'_, '_> {
    fn name(&self) -> &'static str {
        "nq-decode-step"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("nq-decode-step runs on the GPU only (host tensors take the host path)")
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let wrap = candle_core::Error::wrap;
        let (q, k, v) = (view(qs, ql)?, view(ks, kl)?, view(vs, vl)?);
        let mut caches = self.caches.borrow_mut();
        let b = caches.len();
        let t = self.positions.len() / b;
        let per_seq = k.len() / b;
        for (i, cache) in caches.iter_mut().enumerate() {
            let rows = i * per_seq..(i + 1) * per_seq;
            let positions = &self.positions[i * t..(i + 1) * t];
            let (k, v) = (k.slice(rows.clone()), v.slice(rows));
            cache.append_rows(self.layer, &k, &v, positions).map_err(wrap)?;
        }
        let stream = caches[0].backend().stream().clone();
        let mut out = stream.alloc_zeros::<f32>(q.len()).map_err(candle_core::Error::wrap)?;
        CompressedCache::attend_rows(
            &mut caches,
            self.layer,
            &q,
            self.positions,
            self.window,
            &mut out.slice_mut(..),
        )
        .map_err(wrap)?;
        Ok((CudaStorage::wrap_cuda_slice(out, qs.device.clone()), ql.shape().clone()))
    }
}
