//! Every `Error` variant is reachable, each from the bad input it names.

use std::io::{self, Read, Write};

use nq_entropy::{
    ArchiveReader, ArchiveWriter, DataRef, EncodeOptions, Error, FORMAT_VERSION, Fingerprint,
    Limits, MAGIC, StreamRef, decode_bytes, decode_coords, decode_f16, decode_positions,
    encode_bytes, encode_coords, encode_f16, encode_fixed_codes,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::mutate::{archive, fingerprint, fix_checksums};

fn small_archive() -> Vec<u8> {
    archive(1, 200, nq_entropy::Effort::Default)
}

fn open_all(bytes: &[u8]) -> Result<usize, Error> {
    crate::mutate::decode_archive(bytes, &Limits::default())
}

/// Offset of the first section record (after the header and its checksum).
fn first_section(bytes: &[u8]) -> usize {
    14 + u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes")) as usize + 8
}

#[test]
fn intact_archive_reads() {
    assert_eq!(open_all(&small_archive()).unwrap(), 2);
}

#[test]
fn len_mismatch() {
    let e = encode_coords(&[0, 1], &[0; 15], 0, &EncodeOptions::default(), &mut Vec::new());
    assert!(matches!(e, Err(Error::Len { expected: 16, got: 15, .. })), "{e:?}");
    let e = encode_fixed_codes(&[1, 2, 3], 2, 0, &EncodeOptions::default(), &mut Vec::new());
    assert!(matches!(e, Err(Error::Len { got: 3, .. })), "{e:?}");
}

#[test]
fn coset_not_binary() {
    let e = encode_coords(&[0, 2], &[0; 16], 0, &EncodeOptions::default(), &mut Vec::new());
    assert!(matches!(e, Err(Error::CosetNotBinary { index: 1, value: 2, .. })), "{e:?}");
}

#[test]
fn param_out_of_range() {
    for w in [0, 9] {
        let e = encode_fixed_codes(&[], w, 0, &EncodeOptions::default(), &mut Vec::new());
        assert!(matches!(e, Err(Error::Param { what: "bytes per element", .. })), "{e:?}");
    }
    let name = "n".repeat(70_000);
    let mut w = ArchiveWriter::new(Vec::new(), &fingerprint()).unwrap();
    let e = w.write_section(0, &[StreamRef { name: &name, data: DataRef::Raw(b"x") }]);
    assert!(matches!(e, Err(Error::Param { what: "name length", .. })), "{e:?}");
}

#[test]
fn truncated_at_every_length_is_an_error() {
    let a = small_archive();
    for len in 0..a.len() {
        match open_all(&a[..len]) {
            Err(Error::Truncated { .. }) => {}
            other => panic!("truncated to {len} of {}: {other:?}", a.len()),
        }
    }
}

#[test]
fn bad_magic() {
    let mut a = small_archive();
    a[1] = b'X';
    assert!(matches!(open_all(&a), Err(Error::BadMagic { .. })));
    assert!(matches!(open_all(b"PK\x03\x04 not an archive"), Err(Error::BadMagic { .. })));
}

#[test]
fn newer_version() {
    let mut a = small_archive();
    a[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = open_all(&a);
    assert!(matches!(e, Err(Error::UnsupportedVersion { found: 2, supported: 1 })), "{e:?}");
    assert!(e.unwrap_err().to_string().contains("version 2"));
}

#[test]
fn flipped_bits_fail_a_checksum() {
    let a = small_archive();
    let s = first_section(&a);
    // One flip in the fingerprint, one in a section header field, one in a payload, one in the trailer.
    for (at, what) in [
        (20, "archive header"),
        (s + 2, "section header"),
        (s + 40, "section payload"),
        (a.len() - 3, "archive trailer"),
    ] {
        let mut b = a.clone();
        b[at] ^= 0x10;
        match open_all(&b) {
            Err(Error::Checksum { op, stored, computed }) => {
                assert_eq!(op, what);
                assert_ne!(stored, computed);
            }
            other => panic!("flip at {at}: {other:?}"),
        }
    }
}

/// A section length of 2^60 with a valid header checksum: rejected by the limit before any
/// allocation, and with the limit lifted, reported as truncation after reading only the
/// bytes present.
#[test]
fn huge_length_field() {
    let mut a = small_archive();
    let s = first_section(&a);
    a[s + 9..s + 17].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let c = xxh3_64(&a[s..s + 17]) as u32;
    a[s + 17..s + 21].copy_from_slice(&c.to_le_bytes());
    let e = open_all(&a);
    assert!(
        matches!(e, Err(Error::Limit { what: "section bytes", requested, .. }) if requested == 1 << 60),
        "{e:?}"
    );
    let lifted = Limits { max_section_bytes: u64::MAX, ..Limits::default() };
    let e = crate::mutate::decode_archive(&a, &lifted);
    assert!(matches!(e, Err(Error::Truncated { needed, .. }) if needed == 1 << 60), "{e:?}");
    // A fingerprint length over the header limit.
    let mut b = small_archive();
    b[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(open_all(&b), Err(Error::Limit { what: "fingerprint bytes", .. })));
}

#[test]
fn stream_element_limit() {
    let mut body = Vec::new();
    encode_bytes(&[5u8; 1000], &EncodeOptions::default(), &mut body).unwrap();
    let tight = Limits { max_stream_elements: 999, ..Limits::default() };
    let e = decode_bytes(&body, &tight);
    assert!(matches!(e, Err(Error::Limit { requested: 1000, limit: 999, .. })), "{e:?}");
    // A forged count of 2^62 vectors is refused before allocating.
    let forged = [0u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    assert!(matches!(decode_coords(&forged, &Limits::default()), Err(Error::Limit { .. })));
}

/// A body whose vector count is raised to 2^26 (under the element limit), with a matching
/// cosets block, is refused by the bound on what its coded bits can hold, before the 2^29
/// coordinates are allocated.
#[test]
fn forged_count_is_bounded_by_the_coded_bits() {
    // Fast: no zstd trials, so the symbols are rANS-coded.
    let opts = EncodeOptions { effort: nq_entropy::Effort::Fast, ..EncodeOptions::default() };
    let zeros = vec![0i32; 8 * 1000];
    let mut body = Vec::new();
    encode_coords(&[0; 1000], &zeros, 0, &opts, &mut body).unwrap();
    assert!(body.len() < 100, "1000 zero vectors take {} bytes", body.len());
    assert_eq!(decode_coords(&body, &Limits::default()).unwrap().1, zeros);
    // The block of a byte-plane body starts after flags, width and the varint count.
    let block_of = |n: usize| {
        let mut b = Vec::new();
        encode_bytes(&vec![0u8; n], &opts, &mut b).unwrap();
        let varint_len = (usize::BITS - n.leading_zeros()).div_ceil(7).max(1) as usize;
        b[2 + varint_len..].to_vec()
    };
    // body = flags | varint 1000 (2 bytes) | cosets block of 125 bytes | 0 escapes | symbols
    let symbols = &body[3 + block_of(125).len() + 2..];
    let mut forged = vec![body[0], 0x80, 0x80, 0x80, 0x20]; // 2^26 vectors
    forged.extend(block_of(1 << 23));
    forged.extend([0, 0]);
    forged.extend_from_slice(symbols);
    let e = decode_coords(&forged, &Limits::default());
    assert!(
        matches!(
            e,
            Err(Error::Corrupt { reason: "symbol count exceeds what the coded bits can hold", .. })
        ),
        "{e:?}"
    );
}

#[test]
fn fingerprint_mismatch_names_the_field() {
    let a = small_archive();
    let r = ArchiveReader::open(&a[..]).unwrap();
    r.expect_fingerprint(&fingerprint()).unwrap();
    type Change = Box<dyn Fn(&mut Fingerprint)>;
    let cases: [(&str, Change); 9] = [
        ("architecture", Box::new(|f| f.architecture = "qwen2".into())),
        ("layers", Box::new(|f| f.layers += 1)),
        ("kv_heads", Box::new(|f| f.kv_heads = 8)),
        ("head_dim", Box::new(|f| f.head_dim = 128)),
        ("rope_theta", Box::new(|f| f.rope_theta = 10000.0)),
        ("rope_layout", Box::new(|f| f.rope_layout = 0)),
        ("rope_scaling", Box::new(|f| f.rope_scaling.push(0))),
        ("preset", Box::new(|f| f.preset = "max".into())),
        ("config", Box::new(|f| f.config.clear())),
    ];
    for (name, change) in cases {
        let mut fp = fingerprint();
        change(&mut fp);
        match r.expect_fingerprint(&fp) {
            Err(e @ Error::FingerprintMismatch { field, .. }) => {
                assert_eq!(field, name);
                assert!(e.to_string().contains(name));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_structure() {
    // Unknown codec id in a block.
    let mut body = Vec::new();
    encode_bytes(b"abc", &EncodeOptions::default(), &mut body).unwrap();
    let at = body.len() - 5; // flags, width, n, then the codec byte
    assert_eq!(at, 3);
    body[at] = 9;
    assert!(matches!(
        decode_bytes(&body, &Limits::default()),
        Err(Error::Corrupt { reason: "unknown codec id", .. })
    ));
    // An unknown record tag behind valid checksums.
    let mut a = small_archive();
    let s = first_section(&a);
    a[s] = b'Z';
    assert!(matches!(open_all(&a), Err(Error::Corrupt { reason: "unknown record tag", .. })));
    // A trailer whose section count disagrees.
    let mut a = small_archive();
    let t = a.len() - 13;
    a[t + 1] = 7;
    fix_checksums(&mut a);
    assert!(matches!(open_all(&a), Err(Error::Corrupt { .. })));
    // Trailing bytes after a body.
    let mut body = Vec::new();
    encode_positions_body(&mut body);
    body.push(0);
    assert!(matches!(
        decode_positions(&body, &Limits::default()),
        Err(Error::Corrupt { reason: "trailing bytes", .. })
    ));
}

fn encode_positions_body(out: &mut Vec<u8>) {
    nq_entropy::encode_positions(&[1, 2, 3], &EncodeOptions::default(), out).expect("encode");
}

#[test]
fn bad_zstd_frame() {
    // An f16 body whose first plane claims to be a zstd frame of garbage.
    let body = [0u8, 2, 4, 1, 6, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01];
    let e = decode_f16(&body, &Limits::default());
    assert!(matches!(e, Err(Error::Zstd { .. })), "{e:?}");
}

#[derive(Debug)]
struct FailingWriter;
impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct FailingReader;
impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("device gone"))
    }
}

#[test]
fn io_errors_propagate() {
    let e = ArchiveWriter::new(FailingWriter, &fingerprint());
    assert!(matches!(e, Err(Error::Io { .. })), "{e:?}");
    let e = ArchiveReader::open(FailingReader);
    assert!(matches!(e, Err(Error::Io { .. })), "{e:?}");
    assert_eq!(&MAGIC[1..5], b"NQKV");
    let mut body = Vec::new();
    encode_f16(&[], 0, &EncodeOptions::default(), &mut body).unwrap();
    assert!(decode_f16(&body, &Limits::default()).unwrap().is_empty());
}

/// A decompression bomb: two streams of 8 MiB of zeros that code to a few hundred bytes, in
/// an archive whose header declares 2 layers of one 8-dimensional head. With at most 1024
/// tokens per head, that shape allows 2 * 1024 * (4 * 8 + 16) bytes of tokens plus three
/// section allowances (12.68 MB): the second stream would pass it, and is refused before it
/// is decoded. With 2^16 tokens per head (18.9 MB) the same archive reads.
#[test]
fn decoded_size_is_bound_by_the_header_shape() {
    let fp = Fingerprint { layers: 2, kv_heads: 1, head_dim: 8, ..fingerprint() };
    let zeros = vec![0u8; 8 << 20];
    let mut w = ArchiveWriter::new(Vec::new(), &fp).unwrap();
    w.write_section(
        0,
        &[
            StreamRef { name: "a", data: DataRef::Raw(&zeros) },
            StreamRef { name: "b", data: DataRef::Raw(&zeros) },
        ],
    )
    .unwrap();
    let bomb = w.finish().unwrap();
    assert!(bomb.len() < 64 << 10, "the bomb takes {} bytes", bomb.len());
    let read = |max_tokens: u64| {
        let mut r =
            ArchiveReader::with_limits(&bomb[..], Limits { max_tokens, ..Limits::default() })?;
        let mut decoded = 0;
        while let Some(s) = r.next_section()? {
            decoded += s.streams.len();
        }
        Ok::<_, Error>((decoded, r.decoded_bytes()))
    };
    let tight = Limits { max_tokens: 1024, ..Limits::default() };
    assert_eq!(tight.decoded_bytes(&fp), 2 * 1024 * 48 + 3 * nq_entropy::SECTION_ALLOWANCE_BYTES);
    let e = read(1024);
    assert!(
        matches!(
            e,
            Err(Error::Limit { requested, limit, .. })
                if requested == 2 * (8 << 20) && limit == tight.decoded_bytes(&fp)
        ),
        "{e:?}"
    );
    let (streams, (used, limit)) = read(1 << 16).unwrap();
    assert_eq!((streams, used), (2, 2 * (8 << 20)));
    assert!(used <= limit);
}
