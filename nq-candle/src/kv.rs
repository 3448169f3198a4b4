//! The KV-cache seam between a decoder and the place its keys and values live.
//!
//! A decoder hands each layer's post-RoPE queries, keys and values for the new tokens to a
//! [`KvCache`]; the cache stores K/V in whatever form it likes and returns the attention
//! output. [`DenseCache`] keeps plain f32 or f16 tensors; the compressed resident cache of
//! nexusquant implements the same trait.

use candle_core::{D, DType, Device, Tensor};

/// How one layer's attention scores are formed, beyond the common case.
///
/// Scores are `softcap(scale * q . k)` (with `softcap(x) = c * tanh(x / c)` when `softcap` is
/// `Some(c)`), masked causally by absolute position and, when `window` is `Some(w)`, also to
/// keys with `query_pos - key_pos < w` (a sliding window of `w` tokens including the query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnSpec {
    /// Multiplier of `q . k` before the softmax (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding-window length in tokens (Mistral, Gemma-3 local layers), `None` for global.
    pub window: Option<usize>,
    /// Attention-logit soft cap (Gemma-2 style), `None` for none.
    pub softcap: Option<f32>,
}

impl AttnSpec {
    /// The common case: scale `1 / sqrt(head_dim)`, no window, no soft cap.
    ///
    /// # Examples
    /// ```
    /// let s = nq_candle::AttnSpec::standard(64);
    /// assert_eq!(s.scale, 0.125);
    /// assert!(s.is_standard(64));
    /// ```
    #[must_use]
    pub fn standard(head_dim: usize) -> Self {
        Self { scale: standard_scale(head_dim), window: None, softcap: None }
    }

    /// True when this spec equals [`AttnSpec::standard`] for `head_dim`.
    #[must_use]
    pub fn is_standard(&self, head_dim: usize) -> bool {
        *self == Self::standard(head_dim)
    }
}

#[allow(clippy::cast_precision_loss)]
fn standard_scale(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}

/// Where a decoder's keys and values live. The model hands each layer's post-RoPE queries,
/// keys and values for the new tokens; the cache stores K/V and returns the attention output.
///
/// One method is required, [`attend_with`](KvCache::attend_with), the one the model calls for
/// every layer; [`attend`](KvCache::attend) is a shorthand for the standard [`AttnSpec`].
pub trait KvCache {
    /// Stores the new tokens' keys and values and returns their attention output.
    ///
    /// q: `[q_heads, t_new, head_dim]`, k and v: `[kv_heads, t_new, head_dim]`, all f32
    /// contiguous, post-RoPE; positions: the absolute positions of the t_new tokens (strictly
    /// ascending, after every stored position). Returns `[q_heads, t_new, head_dim]`: causal
    /// `softmax(softcap(scale * q k^T)) v` over every stored token plus the new ones (new
    /// token i sees stored tokens and new tokens <= i), restricted to `spec.window` when set.
    /// GQA: q head h uses kv head `h / (q_heads / kv_heads)`.
    ///
    /// A cache must honour every field of `spec` or refuse the call; it never ignores one.
    ///
    /// # Errors
    /// Shapes that disagree, positions that are not ascending, a `spec` the cache cannot
    /// honour, or a backend failure.
    fn attend_with(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
    ) -> candle_core::Result<Tensor>;

    /// This cache as a compressed cache on nq-cuda's backend, so that a batch of sequences
    /// whose caches all are attends in one launch; `None` (the default) for any other.
    #[cfg(feature = "cuda")]
    fn as_cuda(&mut self) -> Option<&mut nq_core::CompressedCache<nq_cuda::CudaBackend>> {
        None
    }

    /// [`attend_with`](KvCache::attend_with) with [`AttnSpec::standard`]: scale
    /// `1 / sqrt(head_dim)`, no window, no soft cap.
    ///
    /// # Errors
    /// As [`attend_with`](KvCache::attend_with).
    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
    ) -> candle_core::Result<Tensor> {
        let head_dim = q.dim(D::Minus1)?;
        self.attend_with(layer, q, k, v, positions, &AttnSpec::standard(head_dim))
    }
}

/// The validated shape of one [`KvCache::attend`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendShape {
    /// Number of query heads.
    pub q_heads: usize,
    /// Number of key/value heads (divides `q_heads`).
    pub kv_heads: usize,
    /// Number of new tokens.
    pub t_new: usize,
    /// Per-head dimension.
    pub head_dim: usize,
}

impl AttendShape {
    /// Checks the arguments of [`KvCache::attend`]: ranks and dims agree, `kv_heads` divides
    /// `q_heads`, dtypes are f32, tensors contiguous, `positions.len() == t_new`, and positions
    /// strictly ascending. Cache implementations call it first.
    ///
    /// # Errors
    /// A `candle_core::Error` naming the first violated condition.
    ///
    /// # Examples
    /// ```
    /// use candle_core::{Device, Tensor};
    /// let q = Tensor::zeros((4, 3, 8), candle_core::DType::F32, &Device::Cpu)?;
    /// let kv = Tensor::zeros((2, 3, 8), candle_core::DType::F32, &Device::Cpu)?;
    /// let s = nq_candle::AttendShape::check(&q, &kv, &kv, &[5, 6, 7])?;
    /// assert_eq!((s.q_heads, s.kv_heads, s.t_new, s.head_dim), (4, 2, 3, 8));
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn check(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
    ) -> candle_core::Result<Self> {
        let (q_heads, t_new, head_dim) = q.dims3()?;
        let (kv_heads, tk, dk) = k.dims3()?;
        if k.dims() != v.dims() {
            candle_core::bail!("attend: k {:?} and v {:?} differ", k.dims(), v.dims());
        }
        if tk != t_new || dk != head_dim {
            candle_core::bail!("attend: q {:?} and k {:?} disagree", q.dims(), k.dims());
        }
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            candle_core::bail!("attend: kv_heads {kv_heads} does not divide q_heads {q_heads}");
        }
        if t_new == 0 || head_dim == 0 {
            candle_core::bail!("attend: empty input {:?}", q.dims());
        }
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            if t.dtype() != DType::F32 {
                candle_core::bail!("attend: {name} has dtype {:?}, expected f32", t.dtype());
            }
            if !t.is_contiguous() {
                candle_core::bail!("attend: {name} is not contiguous");
            }
        }
        if positions.len() != t_new {
            candle_core::bail!("attend: {} positions for {t_new} new tokens", positions.len());
        }
        if positions.windows(2).any(|w| w[0] >= w[1]) {
            candle_core::bail!("attend: positions are not strictly ascending");
        }
        Ok(Self { q_heads, kv_heads, t_new, head_dim })
    }
}

/// One layer's stored keys and values: `[kv_heads, capacity, head_dim]` buffers, the first
/// `len` rows along dim 1 in use.
#[derive(Debug)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
    positions: Vec<u32>,
}

impl LayerKv {
    fn capacity(&self) -> usize {
        self.k.dims()[1]
    }

    /// Appends `k`, `v` (`[kv, t, d]`, already in the storage dtype), growing by doubling to
    /// at least `min_capacity` rows.
    fn append(
        &mut self,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        min_capacity: usize,
    ) -> candle_core::Result<()> {
        let (kv, t, d) = k.dims3()?;
        let need = self.len + t;
        if need > self.capacity() {
            let cap = need.max(2 * self.capacity()).max(min_capacity);
            let grow = |old: &Tensor| -> candle_core::Result<Tensor> {
                let new = Tensor::zeros((kv, cap, d), old.dtype(), old.device())?;
                new.slice_set(old, 1, 0)?;
                Ok(new)
            };
            self.k = grow(&self.k)?;
            self.v = grow(&self.v)?;
        }
        self.k.slice_set(k, 1, self.len)?;
        self.v.slice_set(v, 1, self.len)?;
        self.len = need;
        self.positions.extend_from_slice(positions);
        Ok(())
    }
}

const MIN_CAPACITY: usize = 64;

/// Query rows attended per step: bounds the score matrix and lets later chunks skip keys that
/// the causal mask would hide anyway.
const DEFAULT_QUERY_CHUNK: usize = 256;

/// An uncompressed KV cache: per-layer f32 or f16 tensors that grow by doubling.
///
/// Attention runs with candle matmuls. GQA is handled without materializing repeated K/V:
/// the queries of one kv head's group are stacked as `[kv_heads, group * t, head_dim]` and
/// multiplied by that head's keys in one batched matmul. Long prefills are processed in query
/// chunks, each seeing only the keys its causal mask (and window) can reach.
///
/// With f16 storage, every call widens the keys and values it reads to f32 before the
/// matmuls: a decode step converts the layer's whole K/V. The f16 cache is therefore a memory
/// baseline, not a speed one; decode speed is fairly compared against the f32 cache.
///
/// # Examples
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use nq_candle::{DenseCache, KvCache};
/// let dev = Device::Cpu;
/// let mut cache = DenseCache::new();
/// let q = Tensor::ones((2, 3, 4), DType::F32, &dev)?;
/// let k = Tensor::ones((1, 3, 4), DType::F32, &dev)?;
/// let v = Tensor::arange(0f32, 12.0, &dev)?.reshape((1, 3, 4))?;
/// let out = cache.attend(0, &q, &k, &v, &[0, 1, 2])?;
/// assert_eq!(out.dims(), &[2, 3, 4]);
/// // Token 0 sees only itself; equal keys make later tokens average all rows they see.
/// assert_eq!(out.get(0)?.get(0)?.to_vec1::<f32>()?, vec![0.0, 1.0, 2.0, 3.0]);
/// assert_eq!(out.get(1)?.get(1)?.to_vec1::<f32>()?, vec![2.0, 3.0, 4.0, 5.0]);
/// assert_eq!(cache.len(), 3);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct DenseCache {
    dtype: DType,
    /// Multiply in the storage dtype (f16 matmuls) instead of widening to f32.
    native: bool,
    /// Rows a layer's buffers start with.
    capacity: usize,
    query_chunk: usize,
    layers: Vec<Option<LayerKv>>,
}

impl Default for DenseCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DenseCache {
    /// An empty f32 cache. Layers are created on first use.
    #[must_use]
    pub fn new() -> Self {
        Self {
            dtype: DType::F32,
            native: false,
            capacity: MIN_CAPACITY,
            query_chunk: DEFAULT_QUERY_CHUNK,
            layers: Vec::new(),
        }
    }

    /// An empty cache storing K/V as `dtype` (f32 or f16; f16 halves memory, attention still
    /// runs in f32, on K/V widened at every call).
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) for any other dtype.
    ///
    /// # Examples
    /// ```
    /// let c = nq_candle::DenseCache::with_dtype(candle_core::DType::F16)?;
    /// assert!(c.is_empty());
    /// assert!(nq_candle::DenseCache::with_dtype(candle_core::DType::U8).is_err());
    /// # Ok::<(), nq_candle::Error>(())
    /// ```
    pub fn with_dtype(dtype: DType) -> crate::Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(crate::Error::Shape {
                op: "DenseCache::with_dtype",
                reason: format!("storage dtype {dtype:?} is not f32 or f16"),
            });
        }
        Ok(Self { dtype, ..Self::new() })
    }

    /// An f16 cache whose attention multiplies in f16 (candle's f16 matmuls: tensor cores on
    /// a GPU) with the softmax in f32: each decode step reads the layer's keys and values once,
    /// in f16. The speed baseline on a GPU; on the CPU candle's f16 matmuls are slow.
    #[must_use]
    pub fn f16_native() -> Self {
        Self { dtype: DType::F16, native: true, ..Self::new() }
    }

    /// Starts every layer's buffers with room for `tokens` rows (they grow by doubling past
    /// it): a long context filled at once then holds no unused half.
    #[must_use]
    pub fn with_capacity(mut self, tokens: usize) -> Self {
        self.capacity = tokens.max(MIN_CAPACITY);
        self
    }

    /// Stores keys and values (`[kv_heads, t, head_dim]`, any float dtype) at `positions`
    /// without attending: a context written straight into the cache (speed runs).
    ///
    /// # Errors
    /// Shapes that disagree with the layer's, positions not after the stored ones.
    pub fn fill(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
    ) -> candle_core::Result<()> {
        let (kv_heads, t, head_dim) = k.dims3()?;
        if v.dims3()? != (kv_heads, t, head_dim) || positions.len() != t {
            candle_core::bail!(
                "fill: k {:?}, v {:?}, {} positions",
                k.dims(),
                v.dims(),
                positions.len()
            );
        }
        let shape = AttendShape { q_heads: kv_heads, kv_heads, t_new: t, head_dim };
        let (dtype, capacity) = (self.dtype, self.capacity);
        let l = self.layer_mut(layer, &shape, k.device())?;
        if let (Some(&last), Some(&first)) = (l.positions.last(), positions.first())
            && first <= last
        {
            candle_core::bail!("fill: layer {layer}: position {first} is not after {last}");
        }
        l.append(&k.to_dtype(dtype)?, &v.to_dtype(dtype)?, positions, capacity)
    }

    /// Sets how many query rows one attention step handles (default 256; at least 1).
    #[must_use]
    pub fn with_query_chunk(mut self, rows: usize) -> Self {
        self.query_chunk = rows.max(1);
        self
    }

    /// The storage dtype.
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Tokens stored in layer 0 (every layer holds the same count after a full forward).
    #[must_use]
    pub fn len(&self) -> usize {
        self.layer_len(0)
    }

    /// True when nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the key and value buffers every layer holds (their allocated rows, used or
    /// not).
    #[must_use]
    pub fn resident_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// Number of layers that hold a buffer.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Tokens stored in `layer` (0 for a layer never used).
    #[must_use]
    pub fn layer_len(&self, layer: usize) -> usize {
        self.layer(layer).map_or(0, |l| l.len)
    }

    fn layer(&self, layer: usize) -> Option<&LayerKv> {
        self.layers.get(layer).and_then(Option::as_ref)
    }

    /// The stored keys of `layer`, `[kv_heads, len, head_dim]` in the storage dtype (a view of
    /// the buffer, not a copy), or `None` for an unused layer.
    ///
    /// # Errors
    /// A candle error from narrowing (not expected).
    pub fn keys(&self, layer: usize) -> candle_core::Result<Option<Tensor>> {
        self.layer(layer).map(|l| l.k.narrow(1, 0, l.len)).transpose()
    }

    /// The stored values of `layer`, like [`keys`](DenseCache::keys).
    ///
    /// # Errors
    /// A candle error from narrowing (not expected).
    pub fn values(&self, layer: usize) -> candle_core::Result<Option<Tensor>> {
        self.layer(layer).map(|l| l.v.narrow(1, 0, l.len)).transpose()
    }

    /// Absolute positions of the tokens stored in `layer` (empty for an unused layer).
    #[must_use]
    pub fn positions(&self, layer: usize) -> &[u32] {
        self.layer(layer).map_or(&[], |l| l.positions.as_slice())
    }

    /// Keeps the first `len` tokens of every layer (no-op for layers already shorter).
    /// Buffers keep their capacity.
    pub fn truncate(&mut self, len: usize) {
        for l in self.layers.iter_mut().flatten() {
            if l.len > len {
                l.len = len;
                l.positions.truncate(len);
            }
        }
    }

    /// Drops every layer's buffers.
    pub fn clear(&mut self) {
        self.layers.clear();
    }

    /// Bytes held by the buffers in use (`2 * kv_heads * len * head_dim * dtype size` summed
    /// over layers; capacity slack not counted).
    #[must_use]
    pub fn used_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| {
                let (kv, _, d) = l.k.dims3().unwrap_or((0, 0, 0));
                2 * kv * l.len * d * self.dtype.size_in_bytes()
            })
            .sum()
    }

    /// A deep copy: the copy's buffers share no storage with `self`, so later appends to one
    /// never show in the other.
    ///
    /// # Errors
    /// A candle error from copying.
    pub fn deep_clone(&self) -> candle_core::Result<Self> {
        self.copy_as(self.dtype)
    }

    /// A deep copy storing K/V as `dtype` (f32 or f16), e.g. to compare storage types on one
    /// prefill.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) for a dtype other than f32 or f16, a candle error
    /// from converting.
    ///
    /// # Examples
    /// ```
    /// use candle_core::DType;
    /// let c = nq_candle::DenseCache::with_dtype(DType::F16)?;
    /// assert_eq!(c.to_dtype(DType::F32)?.dtype(), DType::F32);
    /// assert!(c.to_dtype(DType::BF16).is_err());
    /// # Ok::<(), nq_candle::Error>(())
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> crate::Result<Self> {
        Self::with_dtype(dtype)?;
        Ok(self.copy_as(dtype)?)
    }

    fn copy_as(&self, dtype: DType) -> candle_core::Result<Self> {
        let convert = |t: &Tensor| if t.dtype() == dtype { t.copy() } else { t.to_dtype(dtype) };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|l| {
                        Ok::<_, candle_core::Error>(LayerKv {
                            k: convert(&l.k)?,
                            v: convert(&l.v)?,
                            len: l.len,
                            positions: l.positions.clone(),
                        })
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { dtype, layers, native: self.native && dtype != DType::F32, ..*self })
    }

    fn layer_mut(
        &mut self,
        layer: usize,
        shape: &AttendShape,
        device: &Device,
    ) -> candle_core::Result<&mut LayerKv> {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let dtype = self.dtype;
        let slot = &mut self.layers[layer];
        if let Some(l) = slot.as_ref() {
            let (kv, _, d) = l.k.dims3()?;
            if kv != shape.kv_heads || d != shape.head_dim {
                candle_core::bail!(
                    "attend: layer {layer} stores kv_heads {kv}, head_dim {d}; got {}, {}",
                    shape.kv_heads,
                    shape.head_dim
                );
            }
        }
        if slot.is_none() {
            let empty = Tensor::zeros((shape.kv_heads, 0, shape.head_dim), dtype, device)?;
            *slot = Some(LayerKv { k: empty.clone(), v: empty, len: 0, positions: Vec::new() });
        }
        match slot {
            Some(l) => Ok(l),
            None => unreachable!("slot was filled above"),
        }
    }
}

impl KvCache for DenseCache {
    fn attend_with(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
    ) -> candle_core::Result<Tensor> {
        Ok(self.attend_with_mass(layer, q, k, v, positions, spec, 0)?.0)
    }
}

impl DenseCache {
    /// [`KvCache::attend_with`], also returning (with `window > 0`) the attention mass that
    /// the last `window` queries paid every key of the layer: `[q_heads, keys]` f32, row `h` the sum of
    /// query head `h`'s attention probabilities over those queries (SnapKV's observation
    /// window, taken from the attention the model computes anyway).
    #[allow(clippy::too_many_arguments)] // the trait method's arguments, plus the window
    pub(crate) fn attend_with_mass(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &[u32],
        spec: &AttnSpec,
        window: usize,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let shape = AttendShape::check(q, k, v, positions)?;
        let (chunk, dtype, capacity) = (self.query_chunk, self.dtype, self.capacity);
        let compute = if self.native { dtype } else { DType::F32 };
        let l = self.layer_mut(layer, &shape, q.device())?;
        if let (Some(&last), Some(&first)) = (l.positions.last(), positions.first())
            && first <= last
        {
            candle_core::bail!(
                "attend: layer {layer}: new position {first} is not after stored position {last}"
            );
        }
        l.append(&k.to_dtype(dtype)?, &v.to_dtype(dtype)?, positions, capacity)?;
        dense_attention(l, q, &shape, positions, spec, chunk, window, compute)
    }
}

/// Attention of `q` (`[q_heads, t, d]`, the newest `t` tokens of `l`) over the buffers of `l`,
/// and with `window > 0` the attention mass the last `window` queries paid each key
/// (`[q_heads, keys]`). The two products run in `compute` (f32, or the storage dtype), the
/// softmax in f32.
#[allow(clippy::too_many_arguments)]
fn dense_attention(
    l: &LayerKv,
    q: &Tensor,
    s: &AttendShape,
    positions: &[u32],
    spec: &AttnSpec,
    chunk: usize,
    window: usize,
    compute: DType,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let group = s.q_heads / s.kv_heads;
    let past = l.len - s.t_new;
    let q4 = q.reshape((s.kv_heads, group, s.t_new, s.head_dim))?;
    let mut outs = Vec::with_capacity(s.t_new.div_ceil(chunk));
    // Queries from this index on are in the observation window.
    let w0 = s.t_new - window.min(s.t_new);
    let mut mass: Option<Tensor> = None;
    let mut c0 = 0;
    while c0 < s.t_new {
        let c = chunk.min(s.t_new - c0);
        let first_pos = positions[c0];
        let last_pos = positions[c0 + c - 1];
        // Keys [lo, hi): hi is the last query's own index; lo the first key the window allows.
        let hi = past + c0 + c;
        let lo = match spec.window {
            Some(w) => l.positions[..hi]
                .partition_point(|&p| u64::from(p) + w as u64 <= u64::from(first_pos)),
            None => 0,
        };
        let n_keys = hi - lo;
        let qc = q4.narrow(2, c0, c)?.affine(f64::from(spec.scale), 0.0)?.reshape((
            s.kv_heads,
            group * c,
            s.head_dim,
        ))?;
        let kc = l.k.narrow(1, lo, n_keys)?.to_dtype(compute)?;
        let vc = l.v.narrow(1, lo, n_keys)?.to_dtype(compute)?;
        let mut scores = qc.to_dtype(compute)?.matmul(&kc.t()?)?.to_dtype(DType::F32)?;
        if let Some(cap) = spec.softcap {
            let cap = f64::from(cap);
            scores = (scores / cap)?.tanh()?.affine(cap, 0.0)?;
        }
        let key_pos = &l.positions[lo..hi];
        let needs_mask = key_pos[n_keys - 1] > first_pos
            || spec.window.is_some_and(|w| u64::from(last_pos) - u64::from(key_pos[0]) >= w as u64);
        if needs_mask {
            let mask = build_mask(&positions[c0..c0 + c], key_pos, spec.window);
            let mask = Tensor::from_vec(mask, (c, n_keys), q.device())?;
            scores = scores
                .reshape((s.kv_heads, group, c, n_keys))?
                .broadcast_add(&mask)?
                .reshape((s.kv_heads, group * c, n_keys))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        if window > 0 && c0 + c > w0 {
            let from = w0.max(c0);
            let part = probs
                .reshape((s.kv_heads, group, c, n_keys))?
                .narrow(2, from - c0, c0 + c - from)?
                .sum(2)?
                .reshape((s.q_heads, n_keys))?
                .pad_with_zeros(1, lo, l.len - hi)?;
            mass = Some(match mass {
                Some(m) => (m + part)?,
                None => part,
            });
        }
        let out = probs.to_dtype(compute)?.matmul(&vc)?.to_dtype(DType::F32)?;
        outs.push(out.reshape((s.kv_heads, group, c, s.head_dim))?);
        c0 += c;
    }
    let out = if outs.len() == 1 { outs.swap_remove(0) } else { Tensor::cat(&outs, 2)? };
    Ok((out.reshape((s.q_heads, s.t_new, s.head_dim))?, mass))
}

/// Additive mask `[queries, keys]`: 0 where key position <= query position (and inside the
/// window), `-inf` elsewhere.
fn build_mask(query_pos: &[u32], key_pos: &[u32], window: Option<usize>) -> Vec<f32> {
    let mut mask = Vec::with_capacity(query_pos.len() * key_pos.len());
    for &qp in query_pos {
        for &kp in key_pos {
            let visible = kp <= qp && window.is_none_or(|w| u64::from(qp - kp) < w as u64);
            mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_follows_positions_and_window() {
        let inf = f32::NEG_INFINITY;
        // Query 4 sees keys 3, 4 (window 2); query 5 sees 4, 5.
        let mask = build_mask(&[4, 5], &[3, 4, 5, 6], Some(2));
        assert_eq!(mask, vec![0.0, 0.0, inf, inf, inf, 0.0, 0.0, inf]);
        let mask = build_mask(&[4], &[0, 4, 9], None);
        assert_eq!(mask, vec![0.0, 0.0, inf]);
    }
}
