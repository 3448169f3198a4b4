//! [`CudaBackend`] as an [`nq_core::Backend`]: the compressed cache's storage on the GPU.
//!
//! `nq_core::CompressedCache::with_backend(CudaBackend::new(0)?, ..)` keeps every buffer of
//! every layer on the device ([`DeviceLayer`]) and runs there:
//! - `append`: the new rows are copied up once and stored as f16;
//! - `compress`: the encode pipeline ([`Encoder`]: gather, RoPE inversion when keys are
//!   stored RoPE-free, center, smooth, rotate, scale, E8 codes), the codes appended on the
//!   device; the per-head mean and smoothing factor are
//!   computed from column sums taken on the device (`d` values come back to the host for the
//!   arithmetic of `nq_core::prep`, once per head);
//! - `attend`: the fused decode attention ([`Attender`]); the query goes up and the output
//!   comes back (`q_heads * t * d` values each), never the cache.
//! - `append_rows` / `attend_rows` (`Backend::Rows` is a `CudaView<f32>`): the same from
//!   rows already in device memory, such as a GPU model's projections, with a batch of
//!   sequences attended in one launch. Nothing is copied to the host and nothing waits for
//!   the device (the step's positions and the kernel's descriptor table go up, a few hundred
//!   bytes). The store kernel records the first non-finite value it converts; the next
//!   compression or export reads that word and fails with [`CudaError::NonFinite`].
//!
//! Not on the device: attention over keys stored RoPE-free (`remove_rope`, which no preset
//! uses) returns [`CudaError::Unsupported`]. Such a key's score is `q . RoPE_p(k)`, so the
//! query has to be rotated back to every key's position and through the Hadamard transform
//! once per key (as the CPU does, `d log d` per key and query row) instead of once per
//! query; the fused kernel reads scores from the codes with one rotated query per tile.
//!
//! What stays on the host, and why: the bookkeeping of `CompressedCache` (positions, the
//! query window, budgets) and eviction scoring. Scoring reads the dense rows and their
//! attention mass (`dense_rows`: after the prompt, the sinks, recent window and one block,
//! about 100 rows per head), a few kilobytes per compression, and returns a short list; on the
//! device it would be a top-k over a few hundred values per layer.

use std::borrow::Cow;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::f16;
use nq_core::{
    AttendQuery, Backend, ByteBreakdown, CompressJob, DenseRows, Error, HeadImage, LayerSpec,
    LayerUsage,
};

use crate::CudaBackend;
use crate::attend::{Attender, BatchQuery};
use crate::encode::{CodesOut, DeviceRope, Encoder, HeadRows};
use crate::error::CudaError;
use crate::store::{DeviceLayer, DeviceRows};

/// One layer of a compressed cache on the GPU: its storage, the encoders of its keys and
/// values, and the attention's scratch buffers.
#[derive(Debug)]
pub struct CudaLayer {
    store: DeviceLayer,
    keys: Encoder,
    values: Encoder,
    attender: Attender,
    /// Host copies of each head's mean and smoothing vectors (`d` values or empty).
    vectors: Vec<HeadVectors>,
}

#[derive(Clone, Debug, Default)]
struct HeadVectors {
    k_mean: Vec<f32>,
    v_mean: Vec<f32>,
    k_smooth: Vec<f32>,
}

impl CudaLayer {
    /// The device storage.
    pub fn store(&self) -> &DeviceLayer {
        &self.store
    }

    /// Mutable device storage, for batched attention over several sequences
    /// ([`Attender::attend`]).
    pub fn store_mut(&mut self) -> &mut DeviceLayer {
        &mut self.store
    }
}

/// A device error as a core error, naming the backend operation.
fn core(op: &'static str) -> impl Fn(CudaError) -> Error {
    move |e| Error::Backend { op, source: Box::new(e) }
}

fn encoder(gpu: &CudaBackend, spec: &LayerSpec, keys: bool) -> nq_core::Result<Encoder> {
    const OP: &str = "CudaBackend::new_layer";
    let (codec, rot) = if keys {
        (spec.key_codec()?, &spec.key_rot)
    } else {
        (spec.value_codec()?, &spec.value_rot)
    };
    let codec = codec.ok_or_else(|| {
        core(OP)(CudaError::Unsupported {
            op: OP,
            what: "f16 storage of compressed rows (the device holds E8 codes)".into(),
        })
    })?;
    Encoder::new(gpu, rot, codec).map_err(core(OP))
}

impl CudaBackend {
    fn layer_from(&self, spec: &LayerSpec, store: DeviceLayer) -> nq_core::Result<CudaLayer> {
        Ok(CudaLayer {
            keys: encoder(self, spec, true)?,
            values: encoder(self, spec, false)?,
            attender: Attender::new(),
            vectors: vec![HeadVectors::default(); spec.kv_heads],
            store,
        })
    }

    /// Which rows of one head's dense buffer to encode, on the device.
    fn upload_keep(&self, job: &CompressJob<'_>, head: usize) -> Result<CudaSlice<u32>, CudaError> {
        let start = u32::try_from(job.start).map_err(|_| CudaError::Unsupported {
            op: "CudaBackend::compress",
            what: format!("dense row {} past u32", job.start),
        })?;
        let idx: Vec<u32> = job.keep[head].iter().map(|&i| start + i).collect();
        Ok(self.stream.clone_htod(&idx)?)
    }

    /// Compress one head's kept rows: statistics first (once per head), then the codes.
    fn compress_head(
        &self,
        layer: &mut CudaLayer,
        job: &CompressJob<'_>,
        head: usize,
    ) -> nq_core::Result<()> {
        const OP: &str = "CudaBackend::compress";
        let err = core(OP);
        let n = job.keep[head].len();
        if n == 0 {
            return Ok(());
        }
        let spec = layer.store.spec().clone();
        let keep = self.upload_keep(job, head).map_err(&err)?;
        let dense = dense_range(&layer.store, head);
        let positions: Vec<u32> =
            job.keep[head].iter().map(|&i| job.positions[i as usize]).collect();
        // Keys stored RoPE-free: every key pass (mean, smoothing, codes) inverts RoPE first.
        let rope = match job.steps.rope {
            Some(rope) => Some(DeviceRope::new(self, rope, &positions).map_err(&err)?),
            None => None,
        };
        let rows = |keys: bool, which: Which| RowsOf {
            head,
            keys,
            keep: &keep,
            dense: dense.clone(),
            which,
            rope: if keys { rope.as_ref() } else { None },
        };
        if job.steps.center {
            for keys in [true, false] {
                let vectors = &layer.vectors[head];
                let unset = if keys { &vectors.k_mean } else { &vectors.v_mean }.is_empty();
                if unset {
                    let enc = if keys { &layer.keys } else { &layer.values };
                    let sums = enc.column_sums(&rows(keys, Which::None).of(layer)).map_err(&err)?;
                    set_mean(layer, head, keys, &sums.sum, n).map_err(&err)?;
                }
            }
        }
        if let Some(squares) = job.steps.query_squares.and_then(|q| q.get(head))
            && layer.vectors[head].k_smooth.is_empty()
        {
            let sums = layer.keys.column_sums(&rows(true, Which::Mean).of(layer)).map_err(&err)?;
            let smooth = nq_core::prep::key_smoothing_from_sums(squares, &sums.squares);
            layer.store.set_vectors(head, None, None, Some(&smooth)).map_err(&err)?;
            layer.vectors[head].k_smooth = smooth;
        }
        let mut out = Vec::with_capacity(2);
        for keys in [true, false] {
            let (enc, row) = if keys {
                (&layer.keys, spec.key_row_bytes())
            } else {
                (&layer.values, spec.value_row_bytes())
            };
            // SAFETY: the encoder writes every code byte and scale of rows 0..n (checked by
            // its tests with poisoned buffers), and they are read only after it ran.
            let mut codes =
                unsafe { self.stream.alloc::<u8>(n * row) }.map_err(|e| err(e.into()))?;
            // SAFETY: as above, one scale per row.
            let mut scales = unsafe { self.stream.alloc::<u16>(n) }.map_err(|e| err(e.into()))?;
            let target = CodesOut {
                codes: &mut codes.slice_mut(..),
                scales: &mut scales.slice_mut(..),
                row0: 0,
            };
            enc.encode_head(&rows(keys, Which::All).of(layer), target).map_err(&err)?;
            out.push((codes, scales));
        }
        layer.keys.finish().map_err(&err)?;
        layer.values.finish().map_err(&err)?;
        let rows = DeviceRows {
            k_codes: out[0].0.slice(..),
            k_scales: out[0].1.slice(..),
            v_codes: out[1].0.slice(..),
            v_scales: out[1].1.slice(..),
            positions: &positions,
        };
        layer.store.append_compressed_device(head, &rows).map_err(&err)
    }
}

/// The head's key (or value) mean, from the column sums of its first `n` compressed rows; set
/// once.
fn set_mean(
    layer: &mut CudaLayer,
    head: usize,
    keys: bool,
    sums: &[f64],
    n: usize,
) -> Result<(), CudaError> {
    let mean = nq_core::prep::column_mean_from_sums(sums, n);
    let (k, v) = if keys { (Some(mean.as_slice()), None) } else { (None, Some(mean.as_slice())) };
    layer.store.set_vectors(head, k, v, None)?;
    let vectors = &mut layer.vectors[head];
    if keys {
        vectors.k_mean = mean
    } else {
        vectors.v_mean = mean
    }
    Ok(())
}

/// Attention over keys stored RoPE-free is not on the device (see the module docs).
fn rope_free_unsupported(op: &'static str) -> CudaError {
    CudaError::Unsupported {
        op,
        what: "attention over keys stored RoPE-free (remove_rope): the fused kernel rotates \
               the query once, these keys need it rotated per key position"
            .into(),
    }
}

/// Which of a head's vectors an encoder pass applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    /// Neither (column sums for the mean).
    None,
    /// The mean only (column sums for the smoothing factor).
    Mean,
    /// Every vector the head has (the codes).
    All,
}

/// Element range of one head's dense rows in the store's f16 buffers.
fn dense_range(store: &DeviceLayer, head: usize) -> std::ops::Range<usize> {
    let d = store.spec().head_dim;
    let at = head * store.dense_capacity() * d;
    at..at + store.dense_len() * d
}

/// Which rows of a layer an encoder pass reads: one head's kept dense rows, keys or
/// values, with the vectors `which` names and the RoPE table of keys stored RoPE-free.
struct RowsOf<'a> {
    head: usize,
    keys: bool,
    keep: &'a CudaSlice<u32>,
    dense: std::ops::Range<usize>,
    which: Which,
    rope: Option<&'a DeviceRope>,
}

impl<'a> RowsOf<'a> {
    /// The encoder's view of those rows in `layer`.
    fn of(self, layer: &'a CudaLayer) -> HeadRows<'a> {
        let (store, vectors, head) = (&layer.store, &layer.vectors[self.head], self.head);
        let d = store.spec().head_dim;
        let vector = |buf: &'a CudaSlice<f32>, has: bool| -> Option<CudaView<'a, f32>> {
            has.then(|| buf.slice(head * d..(head + 1) * d))
        };
        let (rows, mean_buf, has_mean) = if self.keys {
            (&store.dense_k, &store.k_mean, !vectors.k_mean.is_empty())
        } else {
            (&store.dense_v, &store.v_mean, !vectors.v_mean.is_empty())
        };
        let smooth = self.keys && self.which == Which::All && !vectors.k_smooth.is_empty();
        HeadRows {
            rows: rows.slice(self.dense),
            keep: self.keep.slice(..),
            mean: vector(mean_buf, has_mean && self.which != Which::None),
            smooth: vector(&store.k_smooth, smooth),
            rope: self.rope,
        }
    }
}

impl Backend for CudaBackend {
    type Layer = CudaLayer;

    fn new_layer(&self, spec: &LayerSpec) -> nq_core::Result<CudaLayer> {
        let store = DeviceLayer::new(self, spec).map_err(core("CudaBackend::new_layer"))?;
        self.layer_from(spec, store)
    }

    fn append(
        &self,
        layer: &mut CudaLayer,
        k: &[f32],
        v: &[f32],
        positions: &[u32],
    ) -> nq_core::Result<()> {
        layer.store.append_dense(self, k, v, positions).map_err(core("CudaBackend::append"))
    }

    fn compress(&self, layer: &mut CudaLayer, job: &CompressJob<'_>) -> nq_core::Result<()> {
        if job.count == 0 {
            return Ok(());
        }
        layer.store.check_finite("CudaBackend::compress").map_err(core("CudaBackend::compress"))?;
        for head in 0..layer.store.spec().kv_heads {
            self.compress_head(layer, job, head)?;
        }
        layer.store.drain_dense(job.start, job.count).map_err(core("CudaBackend::compress"))
    }

    fn attend(
        &self,
        layer: &mut CudaLayer,
        q: &[f32],
        query: &AttendQuery<'_>,
        out: &mut [f32],
    ) -> nq_core::Result<()> {
        // The device path with the query uploaded and the output brought back.
        let err = core("CudaBackend::attend");
        let q_dev = self.stream.clone_htod(q).map_err(|e| err(e.into()))?;
        let mut out_dev = self.stream.alloc_zeros::<f32>(out.len()).map_err(|e| err(e.into()))?;
        self.attend_rows(&mut [layer], &q_dev.slice(..), &[*query], &mut out_dev.slice_mut(..))?;
        self.stream.memcpy_dtoh(&out_dev, out).map_err(|e| err(e.into()))
    }

    type Rows<'a> = CudaView<'a, f32>;
    type RowsMut<'a> = CudaViewMut<'a, f32>;

    fn append_rows(
        &self,
        layer: &mut CudaLayer,
        k: &CudaView<'_, f32>,
        v: &CudaView<'_, f32>,
        positions: &[u32],
    ) -> nq_core::Result<()> {
        layer
            .store
            .append_dense_device(self, k, v, positions)
            .map_err(core("CudaBackend::append_rows"))
    }

    fn attend_rows(
        &self,
        layers: &mut [&mut CudaLayer],
        q: &CudaView<'_, f32>,
        queries: &[AttendQuery<'_>],
        out: &mut CudaViewMut<'_, f32>,
    ) -> nq_core::Result<()> {
        const OP: &str = "CudaBackend::attend_rows";
        let err = core(OP);
        let Some(first) = queries.first() else {
            return Err(err(CudaError::Len { op: OP, what: "queries", got: 0, expected: 1 }));
        };
        if queries.len() != layers.len() {
            let (got, expected) = (queries.len(), layers.len());
            return Err(err(CudaError::Len { op: OP, what: "queries", got, expected }));
        }
        if first.rope.is_some() {
            return Err(err(rope_free_unsupported(OP)));
        }
        let t = first.positions.len();
        if let Some(odd) = queries.iter().find(|x| {
            x.positions.len() != t || x.window != first.window || x.record_mass != first.record_mass
        }) {
            return Err(err(CudaError::Unsupported {
                op: OP,
                what: format!(
                    "one batch of different queries: {} rows, window {:?}, mass {} against {t}, \
                     {:?}, {}",
                    odd.positions.len(),
                    odd.window,
                    odd.record_mass,
                    first.window,
                    first.record_mass
                ),
            }));
        }
        let positions: Vec<u32> =
            queries.iter().flat_map(|x| x.positions.iter().copied()).collect();
        let batch = BatchQuery {
            t,
            positions: &positions,
            window: first.window,
            record_mass: first.record_mass,
        };
        let Some((head, rest)) = layers.split_first_mut() else {
            unreachable!("as many layers as queries, at least one");
        };
        let CudaLayer { store, attender, .. } = &mut **head;
        let mut stores: Vec<&mut DeviceLayer> = Vec::with_capacity(1 + rest.len());
        stores.push(store);
        stores.extend(rest.iter_mut().map(|l| &mut l.store));
        attender.attend(self, &mut stores, q, &batch, out).map_err(err)
    }

    fn dense_rows<'a>(&self, layer: &'a CudaLayer, head: usize) -> nq_core::Result<DenseRows<'a>> {
        let err = core("CudaBackend::dense_rows");
        let (store, m) = (&layer.store, layer.store.dense_len());
        if m == 0 {
            return Ok(DenseRows {
                keys: Cow::Owned(Vec::new()),
                values: Cow::Owned(Vec::new()),
                mass: Cow::Owned(Vec::new()),
            });
        }
        let range = dense_range(store, head);
        let at = head * store.dense_capacity();
        let down16 = |buf: &CudaSlice<u16>| -> nq_core::Result<Vec<f16>> {
            let bits =
                self.stream.clone_dtoh(&buf.slice(range.clone())).map_err(|e| err(e.into()))?;
            Ok(bits.into_iter().map(f16::from_bits).collect())
        };
        let mass = self
            .stream
            .clone_dtoh(&store.dense_mass.slice(at..at + m))
            .map_err(|e| err(e.into()))?;
        Ok(DenseRows {
            keys: Cow::Owned(down16(&store.dense_k)?),
            values: Cow::Owned(down16(&store.dense_v)?),
            mass: Cow::Owned(mass),
        })
    }

    fn export<'a>(&self, layer: &'a CudaLayer) -> nq_core::Result<Cow<'a, [HeadImage]>> {
        let (heads, _) = layer.store.export().map_err(core("CudaBackend::export"))?;
        Ok(Cow::Owned(heads))
    }

    fn import(
        &self,
        spec: &LayerSpec,
        heads: Vec<HeadImage>,
        dense_pos: &[u32],
    ) -> nq_core::Result<CudaLayer> {
        let store = DeviceLayer::import(self, spec, &heads, dense_pos)
            .map_err(core("CudaBackend::import"))?;
        let mut layer = self.layer_from(spec, store)?;
        for (v, h) in layer.vectors.iter_mut().zip(heads) {
            *v = HeadVectors { k_mean: h.k_mean, v_mean: h.v_mean, k_smooth: h.k_smooth };
        }
        Ok(layer)
    }

    fn usage(&self, layer: &CudaLayer) -> LayerUsage {
        let store = &layer.store;
        let spec = store.spec();
        let (heads, m, d) = (spec.kv_heads, store.dense_len(), spec.head_dim);
        let n: usize = (0..heads).map(|h| store.compressed(h)).sum();
        let vectors = |f: fn(&HeadVectors) -> usize| layer.vectors.iter().map(f).sum::<usize>() * 4;
        let bytes = ByteBreakdown {
            key_codes: n * spec.key_row_bytes(),
            value_codes: n * spec.value_row_bytes(),
            scales: n * 2 * 2,
            // The device keeps its own copy of the dense positions.
            positions: n * 4 + m * 4,
            windows: heads * m * d * 2 * 2,
            mass: heads * m * 4,
            means: vectors(|v| v.k_mean.len() + v.v_mean.len()),
            smoothing: vectors(|v| v.k_smooth.len()),
            rotation: 0,
            queries: 0,
        };
        debug_assert_eq!(bytes.total(), store.resident_bytes());
        LayerUsage { compressed: n, dense: heads * m, bytes }
    }
}
