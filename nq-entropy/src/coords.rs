//! Coset-aware coding of E8 lattice points from nq-lattice's variable-rate mode.
//!
//! Input layout (the contract with nq-lattice): a point `y = z + c/2` with coset bit
//! `c ∈ {0, 1}` and `z ∈ D8` is given as `cosets[i] = c` and
//! `coords[8i..8i+8] = [z0, .., z6, h]` with `h = (z7 - p) / 2`, `p = (z0 + .. + z6) mod 2`.
//!
//! Stream body (all integers little-endian, varints LEB128; see FORMAT.md):
//!
//! ```text
//! flags u8      bit 0 delta along rows, bit 1 ordinary tables by coset,
//!               bits 2-3 context of the h tables (0 none, 1 coset, 2 coset and parity)
//! n     varint  number of 8-vectors
//! row   varint  vectors per row (only with the delta flag)
//! cosets block  ceil(n/8) bytes, bit i%8 of byte i/8 is cosets[i]
//! escapes       count varint, byte length varint, zigzag varints
//! symbols       codec u8; rans: the tables then the coder; raw/zstd: a block of 8n bytes
//! ```
//!
//! Each coordinate becomes one symbol byte: `v as i8` for `|v| <= 127`, else the escape
//! byte `0x80` with `v` appended to the escape list. With rANS, the 7 ordinary coordinates
//! share one table and the halved 8th (`h`) has its own; either may be split by context:
//! ordinary coordinates by the coset bit, `h` by the coset bit and by the parity `p` of the
//! vector's first 7 coordinates (known to the decoder when it reaches `h`). The encoder
//! picks each split, and delta or not, by the exact ideal code length of the histograms plus
//! the table bytes.

use crate::block::{read_block, read_block_with, try_zstd, write_block};
use crate::bytes::{Cursor, check_elements, put_varint, unzigzag, zigzag};
use crate::rans::{self, EncTable, Freqs, Hist, PROB_SCALE};
use crate::{Codec, Effort, EncodeOptions, Error, Limits, Result, Summary};

/// Escape symbol byte (`-128 as u8`): the value is in the escape list.
const ESC: u8 = 0x80;
const F_DELTA: u8 = 1;
const F_ORD_COSET: u8 = 2;
const H_CTX_SHIFT: u32 = 2;
const F_KNOWN: u8 = 0b1111;

#[inline(always)]
fn sym(v: i32) -> u8 {
    if (-127..=127).contains(&v) { v as i8 as u8 } else { ESC }
}

/// Parity of `z0 + .. + z6` (of the low bits, which wrapping sums preserve).
#[inline(always)]
fn parity7(z: &[i32]) -> i32 {
    (z[0] ^ z[1] ^ z[2] ^ z[3] ^ z[4] ^ z[5] ^ z[6]) & 1
}

/// Histograms of one candidate layout: ordinary coordinates by coset, `h` by `2c + p`.
struct Analysis {
    ord: [Hist; 2],
    h: [Hist; 4],
    escapes: Vec<i32>,
}

fn analyze(cosets: &[u8], coords: &[i32]) -> Analysis {
    // u32 sub-counters flushed every 2^28 vectors keep the hot loop on 32-bit adds.
    let mut ord = [[0u64; 256]; 2];
    let mut h = [[0u64; 256]; 4];
    let mut escapes = Vec::new();
    for (cb, zb) in cosets.chunks(1 << 28).zip(coords.chunks(8 << 28)) {
        let mut o32 = vec![[0u32; 256]; 2];
        let mut h32 = [[0u32; 256]; 4];
        for (&c, z) in cb.iter().zip(zb.chunks_exact(8)) {
            let c = usize::from(c & 1);
            let o = &mut o32[c];
            let mut any_esc = false;
            for &v in &z[..7] {
                let s = sym(v);
                any_esc |= s == ESC;
                o[usize::from(s)] += 1;
            }
            let s7 = sym(z[7]);
            h32[2 * c + parity7(z) as usize][usize::from(s7)] += 1;
            if any_esc || s7 == ESC {
                escapes.extend(z.iter().copied().filter(|&v| sym(v) == ESC));
            }
        }
        for (a, b) in ord.iter_mut().zip(&o32) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x += u64::from(y);
            }
        }
        for (a, b) in h.iter_mut().zip(&h32) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x += u64::from(y);
            }
        }
    }
    Analysis { ord, h, escapes }
}

fn add(a: &Hist, b: &Hist) -> Hist {
    std::array::from_fn(|s| a[s] + b[s])
}

/// Cost in bits of coding `hists` with one table each (ideal code length plus table bytes).
fn cost(hists: &[Hist]) -> (f64, Vec<Freqs>) {
    let mut bits = 0.0;
    let mut fs = Vec::with_capacity(hists.len());
    for h in hists {
        let f = Freqs::normalize(h);
        bits += f.cost_bits(h) + 8.0 * f.written_len() as f64;
        fs.push(f);
    }
    (bits, fs)
}

/// The cheapest context split of one candidate layout.
struct Plan {
    ord_by_coset: bool,
    h_ctx: u8,
    ord: Vec<Freqs>,
    h: Vec<Freqs>,
    /// Estimated bytes of the rANS symbol section (tables, coded bits, final states).
    sym_bytes: f64,
    /// Bytes of the escape list.
    esc_bytes: f64,
}

fn escapes_bytes(esc: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(esc.len() * 2);
    for &v in esc {
        put_varint(&mut out, u64::from(zigzag(v)));
    }
    out
}

fn plan(a: &Analysis) -> Plan {
    let (shared_bits, shared) = cost(&[add(&a.ord[0], &a.ord[1])]);
    let (split_bits, split) = cost(&a.ord);
    let (ord_by_coset, ord_bits, ord) = if split_bits < shared_bits {
        (true, split_bits, split)
    } else {
        (false, shared_bits, shared)
    };
    let by_c = [add(&a.h[0], &a.h[1]), add(&a.h[2], &a.h[3])];
    let options = [(0u8, cost(&[add(&by_c[0], &by_c[1])])), (1u8, cost(&by_c)), (2u8, cost(&a.h))];
    let (h_ctx, (h_bits, h)) = options
        .into_iter()
        .min_by(|x, y| x.1.0.total_cmp(&y.1.0))
        .unwrap_or((0, (f64::INFINITY, Vec::new())));
    let esc = escapes_bytes(&a.escapes).len() as f64;
    Plan {
        ord_by_coset,
        h_ctx,
        ord,
        h,
        sym_bytes: (ord_bits + h_bits) / 8.0 + 24.0,
        esc_bytes: esc,
    }
}

/// `y_i - y_{i-stride}` for every vector with a predecessor, in the coset-aware layout (the
/// difference of two E8 points is an E8 point). Wrapping arithmetic keeps it a bijection on
/// arbitrary `i32` input; see [`undelta`].
fn delta(cosets: &[u8], coords: &[i32], stride: usize) -> (Vec<u8>, Vec<i32>) {
    let mut dc = cosets.to_vec();
    let mut dz = coords.to_vec();
    for i in stride..cosets.len() {
        let (c, cp) = (i32::from(cosets[i]), i32::from(cosets[i - stride]));
        let z = &coords[8 * i..8 * i + 8];
        let zp = &coords[8 * (i - stride)..8 * (i - stride) + 8];
        let d = cp & (c ^ 1);
        let out = &mut dz[8 * i..8 * i + 8];
        for j in 0..7 {
            out[j] = z[j].wrapping_sub(zp[j]).wrapping_sub(d);
        }
        let (p, pp) = (parity7(z), parity7(zp));
        let pd = p ^ pp ^ d;
        out[7] = z[7].wrapping_sub(zp[7]).wrapping_add((p - pp - d - pd) >> 1);
        dc[i] = (c ^ cp) as u8;
    }
    (dc, dz)
}

/// Inverse of [`delta`], in place, in increasing order so each predecessor is already restored.
fn undelta(cosets: &mut [u8], coords: &mut [i32], stride: usize) {
    for i in stride..cosets.len() {
        let cp = i32::from(cosets[i - stride]);
        let c = i32::from(cosets[i]) ^ cp;
        let d = cp & (c ^ 1);
        let (head, tail) = coords.split_at_mut(8 * i);
        let zp = &head[8 * (i - stride)..8 * (i - stride) + 8];
        let z = &mut tail[..8];
        let pd = parity7(z);
        for j in 0..7 {
            z[j] = z[j].wrapping_add(zp[j]).wrapping_add(d);
        }
        let (p, pp) = (parity7(z), parity7(zp));
        z[7] = z[7].wrapping_add(zp[7]).wrapping_sub((p - pp - d - pd) >> 1);
        cosets[i] = c as u8;
    }
}

fn pack_bits(cosets: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; cosets.len().div_ceil(8)];
    for (o, chunk) in out.iter_mut().zip(cosets.chunks(8)) {
        *o = chunk.iter().enumerate().fold(0u8, |acc, (k, &c)| acc | ((c & 1) << k));
    }
    out
}

fn validate(cosets: &[u8], coords: &[i32], op: &'static str) -> Result<()> {
    if coords.len() != 8 * cosets.len() {
        return Err(Error::Len {
            op,
            what: "coords",
            expected: 8 * cosets.len(),
            got: coords.len(),
        });
    }
    if let Some(index) = cosets.iter().position(|&c| c > 1) {
        return Err(Error::CosetNotBinary { op, index, value: cosets[index] });
    }
    Ok(())
}

/// Encodes E8 points in the coset-aware layout and appends the stream body to `out`.
///
/// `cosets[i] ∈ {0, 1}` is vector `i`'s coset bit and `coords[8i..8i+8]` its
/// `[z0, .., z6, h]`, for the point `y = z + c/2` with `z ∈ D8`, `h = (z7 - p) / 2` and
/// `p = (z0 + .. + z6) mod 2` (nq-lattice's variable-rate layout). Any `i32` values are
/// accepted and round-trip bit-exactly; small ones code compactly, values outside
/// `-127..=127` cost an escape.
///
/// `row_vectors` is the number of 8-vectors per row (token): when nonzero, the delta along
/// rows (`y_t - y_{t-1}`, per vector) is tried too and kept only if its estimated size is
/// smaller. Pass 0 to skip the trial.
///
/// The coset bits are packed 8 per byte; the coordinates are coded with rANS (contexts as
/// chosen), or stored as raw or zstd symbol bytes when that measures smaller.
///
/// # Errors
///
/// [`Error::Len`] if `coords.len() != 8 * cosets.len()`, [`Error::CosetNotBinary`] if a coset
/// is not 0 or 1, [`Error::Zstd`] if the zstd library fails.
///
/// # Examples
///
/// ```
/// use nq_entropy::{EncodeOptions, Limits, decode_coords, encode_coords};
/// let cosets = [0u8, 1];
/// let coords = [0, 1, -1, 0, 0, 2, 0, 0, /**/ 0, 0, -1, 0, 1, 0, 0, -1];
/// let mut body = Vec::new();
/// encode_coords(&cosets, &coords, 0, &EncodeOptions::default(), &mut body)?;
/// let (c2, z2) = decode_coords(&body, &Limits::default())?;
/// assert_eq!((&c2[..], &z2[..]), (&cosets[..], &coords[..]));
/// # Ok::<(), nq_entropy::Error>(())
/// ```
pub fn encode_coords(
    cosets: &[u8],
    coords: &[i32],
    row_vectors: usize,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<Summary> {
    const OP: &str = "encode_coords";
    validate(cosets, coords, OP)?;
    let n = cosets.len();
    let start = out.len();
    let plain = analyze(cosets, coords);
    let mut best = plan(&plain);
    let mut analysis = plain;
    let mut delta_data = None;
    if row_vectors > 0 && row_vectors < n {
        let (dc, dz) = delta(cosets, coords, row_vectors);
        let da = analyze(&dc, &dz);
        let dp = plan(&da);
        if dp.sym_bytes + dp.esc_bytes < best.sym_bytes + best.esc_bytes {
            best = dp;
            analysis = da;
            delta_data = Some((dc, dz));
        }
    }
    let (cs, zs) = match &delta_data {
        Some((dc, dz)) => (&dc[..], &dz[..]),
        None => (cosets, coords),
    };
    let mut flags = (best.h_ctx << H_CTX_SHIFT) | if best.ord_by_coset { F_ORD_COSET } else { 0 };
    if delta_data.is_some() {
        flags |= F_DELTA;
    }
    out.push(flags);
    put_varint(out, n as u64);
    if delta_data.is_some() {
        put_varint(out, row_vectors as u64);
    }
    write_block(out, &pack_bits(cs), opts)?;
    let esc = escapes_bytes(&analysis.escapes);
    put_varint(out, analysis.escapes.len() as u64);
    put_varint(out, esc.len() as u64);
    out.extend_from_slice(&esc);

    // Symbols: rANS unless a zstd frame (measured) or the raw bytes are smaller.
    let alt = match zstd_symbols(zs, best.sym_bytes, opts)? {
        Some(z) if (z.len() as f64) + 10.0 < best.sym_bytes => Some((Codec::Zstd, z)),
        _ if ((8 * n + 10) as f64) < best.sym_bytes => {
            Some((Codec::Raw, zs.iter().map(|&v| sym(v)).collect()))
        }
        _ => None,
    };
    let codec = match alt {
        Some((codec, bytes)) => {
            out.push(codec as u8);
            put_varint(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
            codec
        }
        None => {
            out.push(Codec::Rans as u8);
            encode_rans(cs, zs, &best, out);
            Codec::Rans
        }
    };
    Ok(Summary { bytes: out.len() - start, delta: delta_data.is_some(), codec })
}

/// A zstd frame of the symbol bytes when [`Effort`] asks for a trial: always at
/// `Effort::Max`; at `Effort::Default` only when zstd level 1 on a 16 KiB sample from the
/// middle of the stream beats the rANS estimate for the sample by 10% (repeats that an
/// order-0 model cannot see), since on i.i.d.-like symbols zstd below level 19 codes 20-30%
/// above the entropy and level 19 runs at a few MB/s.
fn zstd_symbols(zs: &[i32], rans_bytes: f64, opts: &EncodeOptions) -> Result<Option<Vec<u8>>> {
    let Some(level) = opts.zstd_level(zs.len()) else { return Ok(None) };
    if opts.effort == Effort::Default {
        let k = zs.len().min(16 << 10);
        let at = (zs.len() - k) / 2;
        let sample: Vec<u8> = zs[at..at + k].iter().map(|&v| sym(v)).collect();
        let share = rans_bytes * k as f64 / zs.len().max(1) as f64;
        match try_zstd(&sample, 1)? {
            Some(z) if (z.len() as f64) < 0.9 * share => {}
            _ => return Ok(None),
        }
    }
    let bytes: Vec<u8> = zs.iter().map(|&v| sym(v)).collect();
    try_zstd(&bytes, level)
}

fn encode_rans(cosets: &[u8], coords: &[i32], plan: &Plan, out: &mut Vec<u8>) {
    for f in plan.ord.iter().chain(&plan.h) {
        f.write(out);
    }
    let ord: Vec<EncTable> = plan.ord.iter().map(EncTable::new).collect();
    let h: Vec<EncTable> = plan.h.iter().map(EncTable::new).collect();
    let ti = TableIndex::new(plan.ord_by_coset, plan.h_ctx);
    let ord = [&ord[0], &ord[ti.oc]];
    let h: [&EncTable; 4] = std::array::from_fn(|k| &h[(k >> 1) * ti.hc + (k & 1) * ti.hp]);
    let mut enc = rans::Encoder::with_capacity(coords.len() / 6 + 16);
    for (&c, z) in cosets.iter().zip(coords.chunks_exact(8)).rev() {
        let c = usize::from(c);
        let p = parity7(z) as usize;
        enc.put(3, h[2 * c + p].0[usize::from(sym(z[7]))]);
        let t = &ord[c].0;
        enc.put(2, t[usize::from(sym(z[6]))]);
        enc.put(1, t[usize::from(sym(z[5]))]);
        enc.put(0, t[usize::from(sym(z[4]))]);
        enc.put(3, t[usize::from(sym(z[3]))]);
        enc.put(2, t[usize::from(sym(z[2]))]);
        enc.put(1, t[usize::from(sym(z[1]))]);
        enc.put(0, t[usize::from(sym(z[0]))]);
    }
    enc.finish(out);
}

/// Decodes a stream body written by [`encode_coords`], returning `(cosets, coords)`.
///
/// The whole of `input` must be one body.
///
/// # Errors
///
/// [`Error::Truncated`] or [`Error::Corrupt`] on malformed input, [`Error::Limit`] if the
/// body claims more than `limits.max_stream_elements` coordinates, [`Error::Zstd`] if a zstd
/// frame is invalid.
///
/// # Examples
///
/// See [`encode_coords`].
pub fn decode_coords(input: &[u8], limits: &Limits) -> Result<(Vec<u8>, Vec<i32>)> {
    const OP: &str = "decode_coords";
    let mut cur = Cursor::new(input);
    let flags = cur.u8(OP)?;
    if flags & !F_KNOWN != 0 || (flags >> H_CTX_SHIFT) & 3 == 3 {
        return Err(Error::Corrupt {
            op: OP,
            reason: "unknown coords flags",
            value: u64::from(flags),
        });
    }
    let n = cur.varint(OP)?;
    check_elements(n.saturating_mul(8), limits.max_stream_elements, OP)?;
    let n = n as usize;
    let stride = if flags & F_DELTA != 0 { cur.varint_max(n as u64, OP)? as usize } else { 0 };
    if flags & F_DELTA != 0 && stride == 0 {
        return Err(Error::Corrupt { op: OP, reason: "delta stride is zero", value: 0 });
    }
    let packed = read_block(&mut cur, n.div_ceil(8), OP)?;
    if !n.is_multiple_of(8) && packed.last().is_some_and(|&b| b >> (n % 8) != 0) {
        return Err(Error::Corrupt {
            op: OP,
            reason: "nonzero padding bits after the last coset",
            value: 0,
        });
    }
    let n_esc = cur.varint_max(8 * n as u64, OP)? as usize;
    let esc_len = cur.varint(OP)?;
    let mut esc_cur = Cursor::new(cur.take(esc_len, OP)?);
    let mut escapes = Vec::with_capacity(n_esc.min(esc_cur.remaining()));
    for _ in 0..n_esc {
        let u = esc_cur.varint_max(u64::from(u32::MAX), OP)?;
        escapes.push(unzigzag(u as u32));
    }
    esc_cur.finish(OP)?;

    let mut coords = Vec::new();
    let codec = Codec::from_id(cur.u8(OP)?, OP)?;
    let used = if codec == Codec::Rans {
        decode_rans(&mut cur, flags, &packed, &escapes, n, &mut coords, OP)?
    } else {
        let bytes = read_block_with(codec, &mut cur, 8 * n, OP)?;
        let mut ei = 0usize;
        coords.reserve_exact(8 * n);
        for &s in &bytes {
            coords.push(if s == ESC {
                next_escape(&escapes, &mut ei, OP)?
            } else {
                i32::from(s as i8)
            });
        }
        ei
    };
    if used != escapes.len() {
        return Err(Error::Corrupt {
            op: OP,
            reason: "escape list longer than the escapes coded",
            value: used as u64,
        });
    }
    cur.finish(OP)?;
    let mut cosets: Vec<u8> = (0..n).map(|i| (packed[i >> 3] >> (i & 7)) & 1).collect();
    if stride > 0 {
        undelta(&mut cosets, &mut coords, stride);
    }
    Ok((cosets, coords))
}

#[inline]
fn next_escape(escapes: &[i32], ei: &mut usize, op: &'static str) -> Result<i32> {
    let v = escapes.get(*ei).copied().ok_or(Error::Corrupt {
        op,
        reason: "more escape symbols than escape values",
        value: *ei as u64,
    })?;
    *ei += 1;
    Ok(v)
}

/// All decode tables of one stream side by side: table `t` occupies entries
/// `t * 4096 .. (t + 1) * 4096`; the power-of-two size lets indices be masked instead of
/// bounds-checked.
type FlatTables = [u32; 8 * PROB_SCALE as usize];
const FLAT_MASK: usize = 8 * PROB_SCALE as usize - 1;

/// Table index multipliers: ordinary table `c * oc`, `h` table `n_ord + c * hc + p * hp`.
#[derive(Clone, Copy)]
struct TableIndex {
    oc: usize,
    n_ord: usize,
    hc: usize,
    hp: usize,
    n_h: usize,
}

impl TableIndex {
    fn new(ord_by_coset: bool, h_ctx: u8) -> Self {
        let (hc, hp, n_h) = match h_ctx {
            0 => (0, 0, 1),
            1 => (1, 0, 2),
            _ => (2, 1, 4),
        };
        let oc = usize::from(ord_by_coset);
        Self { oc, n_ord: 1 + oc, hc, hp, n_h }
    }

    fn tables(&self) -> usize {
        self.n_ord + self.n_h
    }
}

fn decode_rans(
    cur: &mut Cursor<'_>,
    flags: u8,
    packed: &[u8],
    escapes: &[i32],
    n: usize,
    out: &mut Vec<i32>,
    op: &'static str,
) -> Result<usize> {
    let ti = TableIndex::new(flags & F_ORD_COSET != 0, (flags >> H_CTX_SHIFT) & 3);
    let mut freqs = Vec::with_capacity(ti.tables());
    for _ in 0..ti.tables() {
        freqs.push(Freqs::read(cur, op)?);
    }
    let mut dec = rans::Decoder::read(cur, op)?;
    let max_freq = freqs.iter().map(Freqs::max).max().unwrap_or(rans::MAX_FREQ);
    dec.check_count(8 * n as u64, max_freq, op)?;
    let mut flat: Box<FlatTables> = vec![0u32; FLAT_MASK + 1]
        .into_boxed_slice()
        .try_into()
        .map_err(|_| Error::Corrupt { op, reason: "table allocation", value: 0 })?;
    for (t, f) in flat.chunks_exact_mut(PROB_SCALE as usize).zip(&freqs) {
        rans::fill_dec_table(f, t);
    }
    let used = decode_loop(&mut dec, packed, &flat, ti, escapes, n, out, op)?;
    dec.finish(op)?;
    Ok(used)
}

/// One decode step against table `base` (a multiple of 4096) of the flat tables.
#[inline(always)]
fn step(x: &mut u32, t: &FlatTables, base: usize, words: &[u16], pos: &mut usize) -> u8 {
    let e = t[(base | (*x & (PROB_SCALE - 1)) as usize) & FLAT_MASK];
    rans::apply(x, e, words, pos)
}

/// The hot loop: 8 symbols per vector on 4 lanes, `h`'s table chosen after the first 7.
#[allow(clippy::too_many_arguments)]
fn decode_loop(
    dec: &mut rans::Decoder,
    packed: &[u8],
    t: &FlatTables,
    ti: TableIndex,
    escapes: &[i32],
    n: usize,
    out: &mut Vec<i32>,
    op: &'static str,
) -> Result<usize> {
    const SHIFT: u32 = rans::PROB_BITS;
    let words = &dec.words[..];
    let mut pos = dec.pos;
    let [mut x0, mut x1, mut x2, mut x3] = dec.x;
    let mut ei = 0usize;
    out.reserve_exact(8 * n);
    for i in 0..n {
        let c = usize::from((packed[i >> 3] >> (i & 7)) & 1);
        let ob = (c * ti.oc) << SHIFT;
        let s = [
            step(&mut x0, t, ob, words, &mut pos),
            step(&mut x1, t, ob, words, &mut pos),
            step(&mut x2, t, ob, words, &mut pos),
            step(&mut x3, t, ob, words, &mut pos),
            step(&mut x0, t, ob, words, &mut pos),
            step(&mut x1, t, ob, words, &mut pos),
            step(&mut x2, t, ob, words, &mut pos),
        ];
        let mut v = [0i32; 8];
        let any_esc = s.iter().fold(false, |a, &b| a | (b == ESC));
        let p = if any_esc {
            for (oj, &sj) in v.iter_mut().zip(&s) {
                *oj = if sj == ESC {
                    next_escape(escapes, &mut ei, op)?
                } else {
                    i32::from(sj as i8)
                };
            }
            parity7(&v) as usize
        } else {
            for (oj, &sj) in v.iter_mut().zip(&s) {
                *oj = i32::from(sj as i8);
            }
            usize::from((s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6]) & 1)
        };
        let hb = (ti.n_ord + c * ti.hc + p * ti.hp) << SHIFT;
        let s7 = step(&mut x3, t, hb, words, &mut pos);
        v[7] = if s7 == ESC { next_escape(escapes, &mut ei, op)? } else { i32::from(s7 as i8) };
        out.extend_from_slice(&v);
    }
    dec.x = [x0, x1, x2, x3];
    dec.pos = pos;
    Ok(ei)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast delta is the E8 difference `y_i - y_{i-stride}` computed the slow way, from
    /// doubled coordinates (`reference::e8_difference`).
    #[test]
    fn delta_is_the_e8_difference() {
        let mut x = 7u64;
        let mut rnd = |m: i64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as i64).rem_euclid(2 * m + 1) - m
        };
        let n = 64;
        let mut cosets = Vec::new();
        let mut coords = Vec::new();
        for _ in 0..n {
            // A random point: coset bit, z in D8 (even sum), then the layout's h.
            let c = rnd(1).rem_euclid(2) as u8;
            let mut z: [i64; 8] = std::array::from_fn(|_| rnd(5));
            z[7] += z.iter().sum::<i64>().rem_euclid(2);
            let p = z[..7].iter().sum::<i64>().rem_euclid(2);
            cosets.push(c);
            coords.extend(z[..7].iter().map(|&v| v as i32));
            coords.push(((z[7] - p) / 2) as i32);
        }
        for stride in [1, 3] {
            let (dc, dz) = delta(&cosets, &coords, stride);
            for i in stride..n {
                let a: [i32; 8] = coords[8 * i..8 * i + 8].try_into().unwrap();
                let b: [i32; 8] =
                    coords[8 * (i - stride)..8 * (i - stride) + 8].try_into().unwrap();
                let (c, z) = crate::reference::e8_difference(cosets[i], &a, cosets[i - stride], &b);
                assert_eq!(
                    (dc[i], &dz[8 * i..8 * i + 8]),
                    (c, &z[..]),
                    "vector {i}, stride {stride}"
                );
            }
        }
    }

    #[test]
    fn delta_inverts_on_extremes() {
        let cosets = vec![1u8, 0, 1, 1, 0, 0];
        let mut coords = Vec::new();
        for i in 0..6i32 {
            coords.extend_from_slice(&[i32::MAX, i32::MIN, i, -i, 0, 1, -1, i32::MIN + i]);
        }
        for stride in 1..6 {
            let (mut dc, mut dz) = delta(&cosets, &coords, stride);
            undelta(&mut dc, &mut dz, stride);
            assert_eq!((dc, dz), (cosets.clone(), coords.clone()), "stride {stride}");
        }
    }
}
