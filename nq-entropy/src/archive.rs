//! The `.nqkv` archive container: a header with the model fingerprint, then sections of named,
//! typed streams, then a trailer. Every part is length-prefixed and checksummed with xxh3-64.
//! FORMAT.md describes it byte by byte.

use std::io::{ErrorKind, Read, Write};

use xxhash_rust::xxh3::xxh3_64;

use crate::bytes::{Cursor, put_varint};
use crate::stream::{DecodeBudget, Stream, StreamRef, read_stream, write_stream};
use crate::{EncodeOptions, Error, Limits, Result};

/// First 8 bytes of every archive (PNG-style: a high byte, the name, CR LF, EOF, so transfers
/// that mangle line endings or high bits are caught at once).
pub const MAGIC: [u8; 8] = *b"\x89NQKV\r\n\x1a";
/// The format version this crate writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 1;

const TAG_SECTION: u8 = b'S';
const TAG_END: u8 = b'E';
/// Bytes read from the underlying reader at a time.
const CHUNK: usize = 1 << 20;
/// Longest string field of the fingerprint.
const MAX_STR: u64 = 1 << 16;

/// Identifies the model (and compression preset) an archive belongs to, so a cache is never
/// loaded into a model it was not made for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fingerprint {
    /// Architecture string, e.g. `"llama"`, `"qwen2"` (at most 65536 bytes).
    pub architecture: String,
    /// Number of transformer layers.
    pub layers: u32,
    /// Key/value heads per layer.
    pub kv_heads: u32,
    /// Dimension of one head.
    pub head_dim: u32,
    /// RoPE base frequency; compared by bit pattern.
    pub rope_theta: f64,
    /// RoPE layout (split-half, interleaved, ...), as nq-rope numbers it.
    pub rope_layout: u8,
    /// RoPE scaling parameters, opaque to this crate.
    pub rope_scaling: Vec<u8>,
    /// Preset name, e.g. `"balanced"` (at most 65536 bytes).
    pub preset: String,
    /// Full compression configuration, opaque to this crate.
    pub config: Vec<u8>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn get_str(cur: &mut Cursor<'_>, op: &'static str) -> Result<String> {
    let len = cur.varint_max(MAX_STR, op)?;
    let b = cur.take(len, op)?;
    std::str::from_utf8(b).map(str::to_owned).map_err(|e| Error::Corrupt {
        op,
        reason: "string is not UTF-8",
        value: e.valid_up_to() as u64,
    })
}

fn get_bytes(cur: &mut Cursor<'_>, op: &'static str) -> Result<Vec<u8>> {
    let len = cur.varint(op)?;
    Ok(cur.take(len, op)?.to_vec())
}

/// Short, comparable description of an opaque byte field for error messages.
fn describe_bytes(b: &[u8]) -> String {
    format!("{} bytes, xxh3 {:016x}", b.len(), xxh3_64(b))
}

impl Fingerprint {
    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        for (what, s) in
            [("architecture length", &self.architecture), ("preset length", &self.preset)]
        {
            if s.len() as u64 > MAX_STR {
                return Err(Error::Param {
                    op: "write fingerprint",
                    what,
                    got: s.len() as u64,
                    min: 0,
                    max: MAX_STR,
                });
            }
        }
        put_bytes(out, self.architecture.as_bytes());
        out.extend_from_slice(&self.layers.to_le_bytes());
        out.extend_from_slice(&self.kv_heads.to_le_bytes());
        out.extend_from_slice(&self.head_dim.to_le_bytes());
        out.extend_from_slice(&self.rope_theta.to_bits().to_le_bytes());
        out.push(self.rope_layout);
        put_bytes(out, &self.rope_scaling);
        put_bytes(out, self.preset.as_bytes());
        put_bytes(out, &self.config);
        Ok(())
    }

    fn read(cur: &mut Cursor<'_>) -> Result<Self> {
        const OP: &str = "read fingerprint";
        let architecture = get_str(cur, OP)?;
        let layers = cur.u32(OP)?;
        let kv_heads = cur.u32(OP)?;
        let head_dim = cur.u32(OP)?;
        let rope_theta = f64::from_bits(u64::from_le_bytes(cur.array(OP)?));
        let rope_layout = cur.u8(OP)?;
        let rope_scaling = get_bytes(cur, OP)?;
        let preset = get_str(cur, OP)?;
        let config = get_bytes(cur, OP)?;
        cur.finish(OP)?;
        Ok(Self {
            architecture,
            layers,
            kv_heads,
            head_dim,
            rope_theta,
            rope_layout,
            rope_scaling,
            preset,
            config,
        })
    }

    /// The first field in which `self` (found) differs from `expected`, as an error.
    fn compare(&self, expected: &Self) -> Result<()> {
        let mismatch = |field: &'static str, expected: String, found: String| {
            Err(Error::FingerprintMismatch { field, expected, found })
        };
        if self.architecture != expected.architecture {
            return mismatch(
                "architecture",
                format!("{:?}", expected.architecture),
                format!("{:?}", self.architecture),
            );
        }
        for (field, e, f) in [
            ("layers", expected.layers, self.layers),
            ("kv_heads", expected.kv_heads, self.kv_heads),
            ("head_dim", expected.head_dim, self.head_dim),
        ] {
            if e != f {
                return mismatch(field, e.to_string(), f.to_string());
            }
        }
        if self.rope_theta.to_bits() != expected.rope_theta.to_bits() {
            return mismatch(
                "rope_theta",
                format!("{:?}", expected.rope_theta),
                format!("{:?}", self.rope_theta),
            );
        }
        if self.rope_layout != expected.rope_layout {
            return mismatch(
                "rope_layout",
                expected.rope_layout.to_string(),
                self.rope_layout.to_string(),
            );
        }
        if self.rope_scaling != expected.rope_scaling {
            return mismatch(
                "rope_scaling",
                describe_bytes(&expected.rope_scaling),
                describe_bytes(&self.rope_scaling),
            );
        }
        if self.preset != expected.preset {
            return mismatch(
                "preset",
                format!("{:?}", expected.preset),
                format!("{:?}", self.preset),
            );
        }
        if self.config != expected.config {
            return mismatch(
                "config",
                describe_bytes(&expected.config),
                describe_bytes(&self.config),
            );
        }
        Ok(())
    }
}

/// Low 32 bits of xxh3-64, for the short header checks.
fn check32(b: &[u8]) -> u32 {
    xxh3_64(b) as u32
}

/// Writes an archive to any [`Write`]: the header at [`new`](Self::new), one section per
/// [`write_section`](Self::write_section), the trailer at [`finish`](Self::finish).
///
/// Only one section's encoded bytes are held in memory at a time.
#[derive(Debug)]
pub struct ArchiveWriter<W: Write> {
    w: W,
    opts: EncodeOptions,
    sections: u64,
    payload: Vec<u8>,
    scratch: Vec<u8>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Writes the header (magic, version, fingerprint) with default [`EncodeOptions`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if writing fails, [`Error::Param`] if a fingerprint string is longer than
    /// 65536 bytes.
    ///
    /// # Examples
    ///
    /// See the [crate docs](crate).
    pub fn new(w: W, fingerprint: &Fingerprint) -> Result<Self> {
        Self::with_options(w, fingerprint, EncodeOptions::default())
    }

    /// As [`new`](Self::new), with explicit encoder options.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_options(mut w: W, fingerprint: &Fingerprint, opts: EncodeOptions) -> Result<Self> {
        let mut fp = Vec::new();
        fingerprint.write(&mut fp)?;
        let mut h = Vec::with_capacity(fp.len() + 22);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        h.extend_from_slice(&(fp.len() as u32).to_le_bytes());
        h.extend_from_slice(&fp);
        let check = xxh3_64(&h);
        h.extend_from_slice(&check.to_le_bytes());
        w.write_all(&h).map_err(|source| Error::Io { op: "write archive header", source })?;
        Ok(Self { w, opts, sections: 0, payload: Vec::new(), scratch: Vec::new() })
    }

    /// Encodes `streams` and writes them as one section.
    ///
    /// `id` is the caller's (for example the layer index); the container keeps sections in
    /// the order written and does not interpret ids.
    ///
    /// # Errors
    ///
    /// Any encoder error of a stream ([`Error::Len`], [`Error::CosetNotBinary`],
    /// [`Error::Param`], ...) before anything of the section is written; [`Error::Io`] if
    /// writing fails.
    pub fn write_section(&mut self, id: u32, streams: &[StreamRef<'_>]) -> Result<()> {
        let count = u32::try_from(streams.len()).map_err(|_| Error::Param {
            op: "write section",
            what: "stream count",
            got: streams.len() as u64,
            min: 0,
            max: u64::from(u32::MAX),
        })?;
        self.payload.clear();
        for s in streams {
            write_stream(s, &self.opts, &mut self.payload, &mut self.scratch)?;
        }
        let mut head = [0u8; 21];
        head[0] = TAG_SECTION;
        head[1..5].copy_from_slice(&id.to_le_bytes());
        head[5..9].copy_from_slice(&count.to_le_bytes());
        head[9..17].copy_from_slice(&(self.payload.len() as u64).to_le_bytes());
        let hc = check32(&head[..17]);
        head[17..21].copy_from_slice(&hc.to_le_bytes());
        let pc = xxh3_64(&self.payload);
        let io = |source| Error::Io { op: "write section", source };
        self.w.write_all(&head).map_err(io)?;
        self.w.write_all(&self.payload).map_err(io)?;
        self.w.write_all(&pc.to_le_bytes()).map_err(io)?;
        self.sections += 1;
        Ok(())
    }

    /// Writes the trailer (section count), flushes, and returns the writer.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if writing or flushing fails.
    pub fn finish(mut self) -> Result<W> {
        let mut t = [0u8; 13];
        t[0] = TAG_END;
        t[1..9].copy_from_slice(&self.sections.to_le_bytes());
        let c = check32(&t[..9]);
        t[9..13].copy_from_slice(&c.to_le_bytes());
        let io = |source| Error::Io { op: "write archive trailer", source };
        self.w.write_all(&t).map_err(io)?;
        self.w.flush().map_err(io)?;
        Ok(self.w)
    }
}

/// A decoded section.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// The id given to [`ArchiveWriter::write_section`].
    pub id: u32,
    /// The streams, in the order written.
    pub streams: Vec<Stream>,
}

impl Section {
    /// The first stream called `name`.
    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// Fills `buf` from `r`, mapping an early end to [`Error::Truncated`].
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], op: &'static str) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::Truncated {
                    op,
                    needed: buf.len() as u64,
                    available: filled as u64,
                });
            }
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Io { op, source }),
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes in chunks of at most [`CHUNK`], so memory grows only with the
/// bytes that really arrive.
fn read_vec<R: Read>(r: &mut R, len: u64, op: &'static str) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(len.min(CHUNK as u64) as usize);
    while (v.len() as u64) < len {
        let k = (len - v.len() as u64).min(CHUNK as u64) as usize;
        let at = v.len();
        v.resize(at + k, 0);
        if let Err(e) = read_full(r, &mut v[at..], op) {
            return Err(match e {
                Error::Truncated { op, available, .. } => {
                    Error::Truncated { op, needed: len, available: at as u64 + available }
                }
                e => e,
            });
        }
    }
    Ok(v)
}

/// Reads an archive from any [`Read`], one section at a time.
#[derive(Debug)]
pub struct ArchiveReader<R: Read> {
    r: R,
    fingerprint: Fingerprint,
    limits: Limits,
    budget: DecodeBudget,
    sections: u64,
    done: bool,
}

impl<R: Read> ArchiveReader<R> {
    /// Reads and validates the header with default [`Limits`].
    ///
    /// # Errors
    ///
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Truncated`],
    /// [`Error::Limit`] (fingerprint longer than `max_header_bytes`), [`Error::Checksum`],
    /// [`Error::Corrupt`], [`Error::Io`].
    ///
    /// # Examples
    ///
    /// See the [crate docs](crate).
    pub fn open(r: R) -> Result<Self> {
        Self::with_limits(r, Limits::default())
    }

    /// As [`open`](Self::open), with explicit limits.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn with_limits(mut r: R, limits: Limits) -> Result<Self> {
        const OP: &str = "read archive header";
        let mut head = [0u8; 14];
        read_full(&mut r, &mut head[..8], OP)?;
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&head[..8]);
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        read_full(&mut r, &mut head[8..], OP)?;
        let version = u16::from_le_bytes([head[8], head[9]]);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
        }
        let fp_len = u64::from(u32::from_le_bytes([head[10], head[11], head[12], head[13]]));
        if fp_len > limits.max_header_bytes {
            return Err(Error::Limit {
                op: OP,
                what: "fingerprint bytes",
                requested: fp_len,
                limit: limits.max_header_bytes,
            });
        }
        let fp = read_vec(&mut r, fp_len, OP)?;
        let mut c = [0u8; 8];
        read_full(&mut r, &mut c, OP)?;
        let stored = u64::from_le_bytes(c);
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(&head);
        h.update(&fp);
        let computed = h.digest();
        if stored != computed {
            return Err(Error::Checksum { op: "archive header", stored, computed });
        }
        let fingerprint = Fingerprint::read(&mut Cursor::new(&fp))?;
        let budget = DecodeBudget { limit: limits.decoded_bytes(&fingerprint), used: 0 };
        Ok(Self { r, fingerprint, limits, budget, sections: 0, done: false })
    }

    /// The model fingerprint stored in the header.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Checks that the archive was written for `expected`.
    ///
    /// # Errors
    ///
    /// [`Error::FingerprintMismatch`] naming the first differing field (in declaration order).
    pub fn expect_fingerprint(&self, expected: &Fingerprint) -> Result<()> {
        self.fingerprint.compare(expected)
    }

    /// Reads, verifies and decodes the next section; `Ok(None)` after the trailer.
    ///
    /// The payload is verified against its checksum before any stream is decoded. After an
    /// error the reader's position in the input is unspecified: drop it.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the input ends early (including before the trailer),
    /// [`Error::Checksum`] if a section header, payload or the trailer does not match its
    /// checksum, [`Error::Limit`] if a section is larger than `max_section_bytes`, a stream
    /// decodes to more than `max_stream_elements`, or the streams of the archive together
    /// would decode to more than [`Limits::decoded_bytes`] (checked before each stream is
    /// allocated), [`Error::Corrupt`] on malformed contents,
    /// [`Error::Io`] if reading fails.
    pub fn next_section(&mut self) -> Result<Option<Section>> {
        const OP: &str = "read section";
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        read_full(&mut self.r, &mut tag, OP)?;
        match tag[0] {
            TAG_SECTION => {}
            TAG_END => {
                let mut t = [0u8; 13];
                t[0] = TAG_END;
                read_full(&mut self.r, &mut t[1..], "read archive trailer")?;
                let stored = u64::from(u32::from_le_bytes([t[9], t[10], t[11], t[12]]));
                let computed = u64::from(check32(&t[..9]));
                if stored != computed {
                    return Err(Error::Checksum { op: "archive trailer", stored, computed });
                }
                let count = u64::from_le_bytes([t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]]);
                if count != self.sections {
                    return Err(Error::Corrupt {
                        op: "read archive trailer",
                        reason: "section count disagrees with the sections read",
                        value: count,
                    });
                }
                self.done = true;
                return Ok(None);
            }
            t => {
                return Err(Error::Corrupt {
                    op: OP,
                    reason: "unknown record tag",
                    value: u64::from(t),
                });
            }
        }
        let mut head = [0u8; 21];
        head[0] = TAG_SECTION;
        read_full(&mut self.r, &mut head[1..], OP)?;
        let stored = u64::from(u32::from_le_bytes([head[17], head[18], head[19], head[20]]));
        let computed = u64::from(check32(&head[..17]));
        if stored != computed {
            return Err(Error::Checksum { op: "section header", stored, computed });
        }
        let id = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let count = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        let len = u64::from_le_bytes([
            head[9], head[10], head[11], head[12], head[13], head[14], head[15], head[16],
        ]);
        if len > self.limits.max_section_bytes {
            return Err(Error::Limit {
                op: OP,
                what: "section bytes",
                requested: len,
                limit: self.limits.max_section_bytes,
            });
        }
        let payload = read_vec(&mut self.r, len, OP)?;
        let mut c = [0u8; 8];
        read_full(&mut self.r, &mut c, OP)?;
        let stored = u64::from_le_bytes(c);
        let computed = xxh3_64(&payload);
        if stored != computed {
            return Err(Error::Checksum { op: "section payload", stored, computed });
        }
        // Each stream record takes at least 3 bytes, which bounds the Vec below.
        if u64::from(count) > len / 3 {
            return Err(Error::Corrupt {
                op: OP,
                reason: "more streams than the payload can hold",
                value: u64::from(count),
            });
        }
        let mut cur = Cursor::new(&payload);
        let mut streams = Vec::with_capacity(count as usize);
        for _ in 0..count {
            streams.push(read_stream(&mut cur, &self.limits, &mut self.budget)?);
        }
        cur.finish(OP)?;
        self.sections += 1;
        Ok(Some(Section { id, streams }))
    }

    /// Bytes the streams read so far decoded to, and the bound on them
    /// ([`Limits::decoded_bytes`] of the header).
    pub fn decoded_bytes(&self) -> (u64, u64) {
        (self.budget.used, self.budget.limit)
    }

    /// Returns the underlying reader (positioned after the last record read).
    pub fn into_inner(self) -> R {
        self.r
    }
}
