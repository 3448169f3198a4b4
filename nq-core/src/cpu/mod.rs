//! [`CpuBackend`]: the cache's storage in host memory, the stage crates called directly. The
//! reference every other backend is checked against.

mod attend;
mod encode;

use std::borrow::Cow;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::backend::{Backend, DenseRows};
use crate::codec::RowCodec;
use crate::error::{Error, Result};
use crate::store::{AttendQuery, ByteBreakdown, CompressJob, HeadImage, LayerSpec, LayerUsage};

/// The CPU backend: storage in host memory, attention threaded over kv heads.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// One layer on the CPU: every kv head's buffers, and the codecs and rotations that read
/// them.
#[derive(Clone, Debug)]
pub struct CpuLayer {
    spec: LayerSpec,
    keys: RowCodec,
    values: RowCodec,
    heads: Vec<HeadImage>,
}

impl CpuLayer {
    /// The buffers of one kv head.
    ///
    /// # Panics
    /// If `head` is out of range.
    pub fn head(&self, head: usize) -> &HeadImage {
        &self.heads[head]
    }

    /// Flip the lowest bit of the last key code byte of head 0 (for the deliberately wrong
    /// backend of the conformance harness).
    #[cfg(feature = "testing")]
    pub(crate) fn perturb_last_code(&mut self) {
        if let Some(b) = self.heads.first_mut().and_then(|h| h.k_codes.last_mut()) {
            *b ^= 1;
        }
    }
}

impl Backend for CpuBackend {
    type Layer = CpuLayer;

    fn new_layer(&self, spec: &LayerSpec) -> Result<CpuLayer> {
        self.import(spec, vec![HeadImage::default(); spec.kv_heads], &[])
    }

    fn append(&self, layer: &mut CpuLayer, k: &[f32], v: &[f32], positions: &[u32]) -> Result<()> {
        let (d, t) = (layer.spec.head_dim, positions.len());
        for (hi, head) in layer.heads.iter_mut().enumerate() {
            let (ks, vs) = (&k[hi * t * d..][..t * d], &v[hi * t * d..][..t * d]);
            let at = head.dense_k.len();
            head.dense_k.resize(at + t * d, f16::ZERO);
            head.dense_k[at..].convert_from_f32_slice(ks);
            head.dense_v.resize(at + t * d, f16::ZERO);
            head.dense_v[at..].convert_from_f32_slice(vs);
            head.dense_mass.resize(head.dense_mass.len() + t, 0.0);
        }
        Ok(())
    }

    fn compress(&self, layer: &mut CpuLayer, job: &CompressJob<'_>) -> Result<()> {
        encode::compress(layer, job)
    }

    fn attend(
        &self,
        layer: &mut CpuLayer,
        q: &[f32],
        query: &AttendQuery<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        attend::attend(layer, q, query, out)
    }

    type Rows<'a> = [f32];
    type RowsMut<'a> = [f32];

    fn append_rows(
        &self,
        layer: &mut CpuLayer,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> Result<()> {
        let expected = layer.spec.kv_heads * positions.len() * layer.spec.head_dim;
        for (what, got) in [("k", k.len()), ("v", v.len())] {
            if got != expected {
                let op = "CpuBackend::append_rows";
                return Err(Error::Len { op, what, got, expected });
            }
        }
        self.append(layer, k, v, positions)
    }

    fn attend_rows(
        &self,
        layers: &mut [&mut CpuLayer],
        q: &[f32],
        queries: &[AttendQuery<'_>],
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "CpuBackend::attend_rows";
        if queries.len() != layers.len() {
            let (got, expected) = (queries.len(), layers.len());
            return Err(Error::Len { op: OP, what: "queries", got, expected });
        }
        let per = |l: &CpuLayer, query: &AttendQuery<'_>| {
            l.spec.q_heads * query.positions.len() * l.spec.head_dim
        };
        let expected: usize = layers.iter().zip(queries).map(|(l, query)| per(l, query)).sum();
        for (what, got) in [("q", q.len()), ("out", out.len())] {
            if got != expected {
                return Err(Error::Len { op: OP, what, got, expected });
            }
        }
        let mut at = 0;
        for (layer, query) in layers.iter_mut().zip(queries) {
            let n = per(layer, query);
            attend::attend(layer, &q[at..at + n], query, &mut out[at..at + n])?;
            at += n;
        }
        Ok(())
    }

    fn dense_rows<'a>(&self, layer: &'a CpuLayer, head: usize) -> Result<DenseRows<'a>> {
        let h = &layer.heads[head];
        Ok(DenseRows {
            keys: Cow::Borrowed(&h.dense_k),
            values: Cow::Borrowed(&h.dense_v),
            mass: Cow::Borrowed(&h.dense_mass),
        })
    }

    fn export<'a>(&self, layer: &'a CpuLayer) -> Result<Cow<'a, [HeadImage]>> {
        Ok(Cow::Borrowed(&layer.heads))
    }

    fn import(
        &self,
        spec: &LayerSpec,
        heads: Vec<HeadImage>,
        _dense_pos: &[u32],
    ) -> Result<CpuLayer> {
        Ok(CpuLayer {
            keys: RowCodec::new(spec.keys, spec.head_dim, spec.scale_candidates)?,
            values: RowCodec::new(spec.values, spec.head_dim, spec.scale_candidates)?,
            spec: spec.clone(),
            heads,
        })
    }

    fn usage(&self, layer: &CpuLayer) -> LayerUsage {
        let d = layer.spec.head_dim;
        layer.heads.iter().fold(LayerUsage::default(), |u, h| LayerUsage {
            compressed: u.compressed + h.pos.len(),
            dense: u.dense + h.dense_k.len() / d,
            bytes: u.bytes + ByteBreakdown::of_head(h),
        })
    }
}
