//! `CaptureReader::read_payload_into`: the same bytes and the same errors as `read_payload`,
//! for stored and lz4 blobs and inline payloads, from memory and from a file, into reused
//! buffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{Rng, frame_pixels};
use vgt_format::file::{CaptureReader, CaptureWriter, CorruptionKind, Error, WriterOptions};
use vgt_format::record::*;

/// A finished capture holding a stored blob (incompressible), an lz4 blob (pixels) and an
/// inline payload, each in a memory-read record. Returns the file bytes, the payloads and
/// their raw bytes.
fn capture() -> (Vec<u8>, Vec<(Payload, Vec<u8>)>) {
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, WriterOptions::default()).unwrap();
    let stored = Rng(11).bytes(70_000);
    let pixels = frame_pixels(128, 96, 4);
    let small = vec![1u8, 2, 3];
    let mut payloads = Vec::new();
    for data in [stored, pixels, small] {
        let p = w.store(&data).unwrap();
        w.append_body(
            1,
            RecordBody::MemoryRead(MemoryRead {
                command: 0,
                resource_id: 1,
                addr: 0,
                data: p.clone(),
            }),
        )
        .unwrap();
        payloads.push((p, data));
    }
    w.finish().unwrap();
    (buf, payloads)
}

fn blob_offset(p: &Payload) -> usize {
    match p {
        Payload::Blob(r) => r.offset as usize,
        Payload::Inline(_) => panic!("expected a blob"),
    }
}

/// Rewrites the CRC of the chunk at `at` so that it matches its (altered) body.
fn fix_crc(file: &mut [u8], at: usize) {
    let kind = u16::from_le_bytes([file[at + 4], file[at + 5]]);
    let flags = u16::from_le_bytes([file[at + 6], file[at + 7]]);
    let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap());
    let mut pre = [0u8; 8];
    pre[0..2].copy_from_slice(&kind.to_le_bytes());
    pre[2..4].copy_from_slice(&flags.to_le_bytes());
    pre[4..8].copy_from_slice(&len.to_le_bytes());
    let body = &file[at + 16..at + 16 + len as usize];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&pre), body);
    file[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
}

fn readers(bytes: &[u8]) -> (CaptureReader, CaptureReader, tempfile::NamedTempFile) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    let from_file = CaptureReader::open(f.path()).unwrap();
    (
        CaptureReader::from_bytes(bytes.to_vec()).unwrap(),
        from_file,
        f,
    )
}

#[test]
fn read_payload_into_reused_buffer_gives_exact_bytes() {
    let (bytes, payloads) = capture();
    let (mem, file, _f) = readers(&bytes);
    assert!(matches!(payloads[0].0, Payload::Blob(_)));
    assert!(matches!(payloads[1].0, Payload::Blob(_)));
    for r in [&mem, &file] {
        // One buffer for everything, larger and smaller than each payload in turn.
        let mut out = vec![0xEEu8; 200_000];
        for _ in 0..2 {
            for (p, raw) in &payloads {
                r.read_payload_into(p, &mut out).unwrap();
                assert_eq!(out, *raw);
                assert_eq!(r.read_payload(p).unwrap().as_ref(), raw.as_slice());
            }
        }
    }
}

#[test]
fn read_payload_into_damaged_blob_same_error_as_read_payload() {
    let (bytes, payloads) = capture();
    for (p, _) in payloads.iter().take(2) {
        let at = blob_offset(p);
        // A flipped data byte: the chunk CRC catches it.
        let mut flipped = bytes.clone();
        flipped[at + 16 + 32 + 100] ^= 0x40;
        // The same with a CRC that matches again: the content hash catches it.
        let mut recrc = flipped.clone();
        fix_crc(&mut recrc, at);
        // A blob header whose length disagrees with the reference.
        let mut long = bytes.clone();
        long[at + 16 + 16] ^= 1;
        fix_crc(&mut long, at);
        for (damaged, kinds) in [
            (flipped, &[CorruptionKind::ChunkChecksum][..]),
            (
                recrc,
                &[CorruptionKind::BlobHash, CorruptionKind::BlobDecode][..],
            ),
            (
                long,
                &[CorruptionKind::BlobHash, CorruptionKind::BlobDecode][..],
            ),
        ] {
            let (mem, file, _f) = readers(&damaged);
            for r in [&mem, &file] {
                let want = r.read_payload(p).unwrap_err();
                let mut out = Vec::new();
                let got = r.read_payload_into(p, &mut out).unwrap_err();
                assert_eq!(got.to_string(), want.to_string());
                match got {
                    Error::Corrupt { offset, kind, .. } => {
                        assert_eq!(offset, at as u64);
                        assert!(kinds.contains(&kind), "{kind:?}");
                    }
                    other => panic!("expected corruption, got {other}"),
                }
            }
        }
    }
}

#[test]
fn read_payload_into_unhashed_checks_all_but_the_content_hash() {
    let (bytes, payloads) = capture();
    for (p, raw) in &payloads {
        let (mem, file, _f) = readers(&bytes);
        for r in [&mem, &file] {
            let mut out = vec![7u8; 5];
            r.read_payload_into_unhashed(p, &mut out).unwrap();
            assert_eq!(out, *raw);
        }
    }
    for (p, raw) in payloads.iter().take(2) {
        let Payload::Blob(blob) = p else {
            unreachable!()
        };
        let at = blob_offset(p);
        let mut flipped = bytes.clone();
        flipped[at + 16 + 32 + 100] ^= 0x40;
        let mut recrc = flipped.clone();
        fix_crc(&mut recrc, at);
        // CRC damage is still an error.
        let (mem, file, _f) = readers(&flipped);
        for r in [&mem, &file] {
            let mut out = Vec::new();
            assert!(matches!(
                r.read_payload_into_unhashed(p, &mut out),
                Err(Error::Corrupt {
                    kind: CorruptionKind::ChunkChecksum,
                    ..
                })
            ));
        }
        // Content that decodes but no longer matches its hash: an lz4 blob may still fail to
        // decode; a stored one comes back, and only the caller's hash check can tell.
        let (mem, file, _f) = readers(&recrc);
        for r in [&mem, &file] {
            let mut out = Vec::new();
            if r.read_payload_into_unhashed(p, &mut out).is_ok() {
                assert_ne!(out, *raw);
                assert_ne!(vgt_format::hash::content_hash(&out), blob.hash.0);
                assert!(r.read_payload(p).is_err());
            }
        }
    }
}
