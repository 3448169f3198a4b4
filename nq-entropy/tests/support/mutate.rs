//! Corruption machinery shared by the proptest corruption tests and `examples/fuzz.rs`: a
//! corpus of real archives and stream bodies, byte-level mutations, a checksum fixer (so
//! mutations reach the stream decoders behind the checksums), and decode drivers.
#![allow(dead_code, unreachable_pub)]

use half::f16;
use nq_entropy::{
    ArchiveReader, ArchiveWriter, Data, DataRef, Effort, EncodeOptions, Error, Fingerprint, Limits,
    StreamKind, StreamRef,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xxhash_rust::xxh3::xxh3_64;

use super::e8;

/// Limits small enough that no mutated input can use much memory.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_stream_elements: 1 << 22,
        max_section_bytes: 1 << 26,
        max_header_bytes: 1 << 16,
        max_tokens: 1 << 12,
    }
}

pub fn fingerprint() -> Fingerprint {
    Fingerprint {
        architecture: "llama".into(),
        layers: 2,
        kv_heads: 2,
        head_dim: 64,
        rope_theta: 500000.0,
        rope_layout: 1,
        rope_scaling: vec![1, 2, 3],
        preset: "balanced".into(),
        config: b"{\"k_bits\":2}".to_vec(),
    }
}

/// Typed test data for one archive: every stream kind, with escapes, repeats and empties.
pub struct Corpus {
    pub cosets: Vec<u8>,
    pub coords: Vec<i32>,
    pub corr_cosets: Vec<u8>,
    pub corr_coords: Vec<i32>,
    pub codes: Vec<u8>,
    pub scales: Vec<f16>,
    pub window: Vec<f16>,
    pub positions: Vec<u32>,
    pub raw: Vec<u8>,
}

pub fn corpus(seed: u64, vectors: usize) -> Corpus {
    let mut rng = StdRng::seed_from_u64(seed);
    let (cosets, mut coords) = e8::gaussian_e8(vectors, 0.9, seed);
    // A few heavy-tail values force escapes.
    let len = coords.len();
    for k in 0..len.min(5) {
        coords[k * 7 % len] = [300, -1000, i32::MAX, i32::MIN, 128][k];
    }
    let (corr_cosets, corr_coords) = e8::correlated_e8(vectors / 4 + 1, 4, 0.97, 0.5, seed + 1);
    let codes: Vec<u8> = (0..vectors * 2)
        .map(|i| if i % 2 == 0 { rng.random::<u8>() % 9 } else { rng.random() })
        .collect();
    let scales: Vec<f16> =
        (0..vectors / 2).map(|i| f16::from_f32(0.1 + (i % 17) as f32 * 0.01)).collect();
    let window: Vec<f16> = (0..vectors).map(|_| f16::from_f64(e8::gauss(&mut rng))).collect();
    let positions: Vec<u32> =
        (0..vectors as u32 * 2).filter(|_| rng.random::<f32>() < 0.4).collect();
    let raw: Vec<u8> = b"opaque metadata ".iter().copied().cycle().take(300).collect();
    Corpus { cosets, coords, corr_cosets, corr_coords, codes, scales, window, positions, raw }
}

impl Corpus {
    pub fn streams(&self) -> Vec<StreamRef<'_>> {
        vec![
            StreamRef {
                name: "k.coords",
                data: DataRef::Coords {
                    cosets: &self.cosets,
                    coords: &self.coords,
                    row_vectors: 8,
                },
            },
            StreamRef {
                name: "v.coords",
                data: DataRef::Coords {
                    cosets: &self.corr_cosets,
                    coords: &self.corr_coords,
                    row_vectors: 4,
                },
            },
            StreamRef {
                name: "k.codes",
                data: DataRef::FixedCodes {
                    codes: &self.codes,
                    bytes_per_vector: 2,
                    row_vectors: 8,
                },
            },
            StreamRef {
                name: "k.scales",
                data: DataRef::Scales { values: &self.scales, row_len: 2 },
            },
            StreamRef {
                name: "window",
                data: DataRef::WindowF16 { values: &self.window, row_len: 16 },
            },
            StreamRef { name: "positions", data: DataRef::Positions(&self.positions) },
            StreamRef { name: "meta", data: DataRef::Raw(&self.raw) },
            StreamRef {
                name: "empty",
                data: DataRef::Coords { cosets: &[], coords: &[], row_vectors: 0 },
            },
        ]
    }
}

/// A real archive of two sections holding every stream kind.
pub fn archive(seed: u64, vectors: usize, effort: Effort) -> Vec<u8> {
    let c = corpus(seed, vectors);
    let opts = EncodeOptions { effort, ..EncodeOptions::default() };
    let mut w = ArchiveWriter::with_options(Vec::new(), &fingerprint(), opts).expect("header");
    let streams = c.streams();
    w.write_section(0, &streams[..4]).expect("section 0");
    w.write_section(1, &streams[4..]).expect("section 1");
    w.finish().expect("finish")
}

/// Encoded stream bodies of every kind, for direct decoder fuzzing.
pub fn bodies(seed: u64, vectors: usize) -> Vec<(StreamKind, Vec<u8>)> {
    let c = corpus(seed, vectors);
    let mut out = Vec::new();
    for effort in [Effort::Fast, Effort::Max] {
        let opts = EncodeOptions { effort, ..EncodeOptions::default() };
        for s in c.streams() {
            let mut b = Vec::new();
            s.data.encode(&opts, &mut b).expect("encode");
            out.push((s.data.kind(), b));
        }
    }
    out
}

/// Reads a whole archive; `Ok(number of sections)` or the first error.
pub fn decode_archive(bytes: &[u8], limits: &Limits) -> Result<usize, Error> {
    let mut r = ArchiveReader::with_limits(bytes, *limits)?;
    r.expect_fingerprint(&fingerprint())?;
    let mut n = 0;
    while let Some(s) = r.next_section()? {
        n += 1;
        assert!(s.streams.len() < 1000);
    }
    Ok(n)
}

/// Decodes a stream body as `kind`.
pub fn decode_body(kind: StreamKind, body: &[u8], limits: &Limits) -> Result<Data, Error> {
    Data::decode(kind, body, limits)
}

/// One byte-level mutation.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Overwrite 1, 2, 4 or 8 bytes with a little-endian "interesting" integer, as a length
    /// or count field would be.
    Field {
        at: usize,
        width: usize,
        value: u64,
    },
    /// Copy `len` bytes from `from` to `to` (within the same input).
    Splice {
        from: usize,
        to: usize,
        len: usize,
    },
}

const INTERESTING: [u64; 12] =
    [0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff, 1 << 60, u64::MAX];

pub fn random_mutation(rng: &mut StdRng, len: usize) -> Mutation {
    let len1 = len.max(1);
    match rng.random_range(0..7) {
        0 => Mutation::FlipBit { at: rng.random_range(0..len1), bit: rng.random_range(0..8) },
        1 => Mutation::SetByte { at: rng.random_range(0..len1), value: rng.random() },
        2 => Mutation::Truncate { len: rng.random_range(0..len1) },
        3 => {
            let k = rng.random_range(1..16);
            Mutation::Insert {
                at: rng.random_range(0..=len),
                bytes: (0..k).map(|_| rng.random()).collect(),
            }
        }
        4 => Mutation::Remove { at: rng.random_range(0..len1), len: rng.random_range(1..32) },
        5 => Mutation::Field {
            at: rng.random_range(0..len1),
            width: [1, 2, 4, 8][rng.random_range(0..4)],
            value: if rng.random() {
                INTERESTING[rng.random_range(0..INTERESTING.len())]
            } else {
                rng.random()
            },
        },
        _ => Mutation::Splice {
            from: rng.random_range(0..len1),
            to: rng.random_range(0..len1),
            len: rng.random_range(1..64),
        },
    }
}

pub fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let n = data.len();
    match *m {
        Mutation::FlipBit { at, bit } if at < n => data[at] ^= 1 << (bit % 8),
        Mutation::SetByte { at, value } if at < n => data[at] = value,
        Mutation::Truncate { len } => data.truncate(len),
        Mutation::Insert { at, ref bytes } => {
            let at = at.min(n);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } if at < n => {
            data.drain(at..(at + len).min(n));
        }
        Mutation::Field { at, width, value } => {
            for k in 0..width {
                if let Some(b) = data.get_mut(at + k) {
                    *b = (value >> (8 * k)) as u8;
                }
            }
        }
        Mutation::Splice { from, to, len } if from < n && to < n => {
            let len = len.min(n - from).min(n - to);
            let chunk = data[from..from + len].to_vec();
            data[to..to + len].copy_from_slice(&chunk);
        }
        _ => {}
    }
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Recomputes every checksum along the (possibly corrupted) structure, so the mutation
/// reaches the parsers and decoders behind the checksums.
pub fn fix_checksums(d: &mut [u8]) {
    let Some(fp_len) = d.get(10..14).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return;
    };
    let hend = 14 + fp_len;
    if d.len() < hend + 8 {
        return;
    }
    let c = xxh3_64(&d[..hend]);
    d[hend..hend + 8].copy_from_slice(&c.to_le_bytes());
    let mut pos = hend + 8;
    while pos < d.len() {
        match d[pos] {
            b'S' if pos + 21 <= d.len() => {
                let c = xxh3_64(&d[pos..pos + 17]) as u32;
                d[pos + 17..pos + 21].copy_from_slice(&c.to_le_bytes());
                let Some(len) = u64_at(d, pos + 9) else { return };
                let start = pos + 21;
                let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
                    return;
                };
                if end.checked_add(8).is_none_or(|e| e > d.len()) {
                    return;
                }
                let c = xxh3_64(&d[start..end]);
                d[end..end + 8].copy_from_slice(&c.to_le_bytes());
                pos = end + 8;
            }
            b'E' if pos + 13 <= d.len() => {
                let c = xxh3_64(&d[pos..pos + 9]) as u32;
                d[pos + 9..pos + 13].copy_from_slice(&c.to_le_bytes());
                return;
            }
            _ => return,
        }
    }
}
