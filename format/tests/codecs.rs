//! Blob codecs: every `Compression` writes a capture that reads back byte for byte, the header
//! names the version the file needs (1.2 only with zstd), and damaged zstd data is reported as
//! damage of its blob, precisely, without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Rng, Written, frame_pixels, write_every_kind};
use vgt_format::file::{
    CaptureReader, CaptureWriter, Compression, CorruptionKind, Error, FileHeader,
    ParseCompressionError, WriterOptions,
};
use vgt_format::record::*;

/// A finished capture written with `compression`: every record kind, a compressible frame, an
/// incompressible memory read and a dedup hit. Returns the bytes, what was written and the
/// writer's stored byte count.
fn capture_with(compression: Compression) -> (Vec<u8>, Written, u64) {
    let opts = WriterOptions::default().with_compression(compression);
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, opts).unwrap();
    let mut recs = write_every_kind(&mut w);
    let noise = Rng(9).bytes(20_000);
    let pixels = frame_pixels(320, 200, 4);
    for (i, data) in [&noise, &pixels, &pixels].into_iter().enumerate() {
        let p = w.store(data).unwrap();
        let rec = Record {
            ts_ns: 1000 + i as u64,
            body: RecordBody::MemoryRead(MemoryRead {
                command: 0,
                resource_id: 1,
                addr: 0x1000 * i as u64,
                data: p,
            }),
        };
        w.append(&rec).unwrap();
        recs.push((rec, vec![data.clone()]));
    }
    let stats = w.finish().unwrap();
    (buf, recs, stats.stored_bytes)
}

/// The codec byte of every blob chunk in `bytes`, in file order.
fn blob_codecs(bytes: &[u8]) -> Vec<u8> {
    common::chunk_map(bytes)
        .into_iter()
        .filter(|&(start, _)| {
            let s = start as usize;
            bytes.get(s + 4..s + 6) == Some(&0x0100u16.to_le_bytes()[..])
        })
        .map(|(start, _)| bytes[start as usize + 16 + 24])
        .collect()
}

fn reads_back(bytes: Vec<u8>, recs: &Written) {
    let r = CaptureReader::from_bytes(bytes).unwrap();
    assert!(r.health().is_clean(), "{:?}", r.health());
    assert_eq!(r.len(), recs.len() as u64);
    for (id, (rec, raw)) in recs.iter().enumerate() {
        let got = r.record(id as u64).unwrap();
        assert_eq!(&got, rec, "record {id}");
        for (p, want) in got.body.payloads().into_iter().zip(raw) {
            assert_eq!(r.read_payload(p).unwrap().as_ref(), want.as_slice(), "{id}");
            let mut out = vec![0xAA; 3];
            r.read_payload_into_unhashed(p, &mut out).unwrap();
            assert_eq!(&out, want, "record {id} unhashed");
        }
    }
    let report = r.verify().unwrap();
    assert!(report.is_clean() && report.index_ok, "{report:?}");
}

#[test]
fn every_codec_round_trips_every_record_and_payload() {
    for compression in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd(1),
        Compression::Zstd(19),
    ] {
        let (bytes, recs, _) = capture_with(compression);
        let minor = CaptureReader::from_bytes(bytes.clone())
            .unwrap()
            .header()
            .version_minor;
        let codecs = blob_codecs(&bytes);
        // The noise blob never saves 1/8, so every codec stores it raw.
        assert!(codecs.contains(&0), "{compression}: {codecs:?}");
        let expected = match compression {
            Compression::None => (1, None),
            Compression::Lz4 => (1, Some(1)),
            Compression::Zstd(_) => (2, Some(2)),
        };
        assert_eq!(minor, expected.0, "{compression}");
        match expected.1 {
            None => assert!(codecs.iter().all(|&c| c == 0), "{codecs:?}"),
            Some(c) => assert!(codecs.contains(&c), "{compression}: {codecs:?}"),
        }
        reads_back(bytes, &recs);
    }
}

#[test]
fn zstd_stores_frames_smaller_than_lz4() {
    let (_, _, lz4) = capture_with(Compression::Lz4);
    let (_, _, zstd) = capture_with(Compression::Zstd(3));
    assert!(zstd < lz4, "zstd {zstd} bytes vs lz4 {lz4}");
}

#[test]
fn compression_spec_parses_and_prints_back() {
    for (spec, c) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd(Compression::ZSTD_DEFAULT_LEVEL)),
        ("zstd:19", Compression::Zstd(19)),
        ("zstd:1", Compression::Zstd(1)),
    ] {
        assert_eq!(spec.parse::<Compression>().unwrap(), c, "{spec}");
        assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
    }
    assert!(matches!(
        "gzip".parse::<Compression>(),
        Err(ParseCompressionError::Unknown { .. })
    ));
    for bad in ["zstd:0", "zstd:23", "zstd:x", "zstd:"] {
        let e = bad.parse::<Compression>().unwrap_err();
        assert!(
            matches!(
                e,
                ParseCompressionError::BadLevel {
                    min: 1,
                    max: 22,
                    ..
                }
            ),
            "{bad}: {e:?}"
        );
    }
}

/// A file made of a header and one blob chunk with `codec`, `raw_len`, `hash` and `data` as
/// given (the chunk CRC is right, so the damage is in what the blob says).
fn one_blob_file(codec: u8, raw_len: u64, hash: u128, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&hash.to_le_bytes());
    body.extend_from_slice(&raw_len.to_le_bytes());
    body.push(codec);
    body.extend_from_slice(&[0; 7]);
    body.extend_from_slice(data);
    let mut crc_input = Vec::new();
    crc_input.extend_from_slice(&0x0100u16.to_le_bytes());
    crc_input.extend_from_slice(&0u16.to_le_bytes());
    crc_input.extend_from_slice(&(body.len() as u32).to_le_bytes());
    crc_input.extend_from_slice(&body);
    let mut file = FileHeader::new(0).encode().to_vec();
    file.extend_from_slice(b"VGTR");
    file.extend_from_slice(&crc_input[..8]);
    file.extend_from_slice(&crc32c::crc32c(&crc_input).to_le_bytes());
    file.extend_from_slice(&body);
    file
}

/// The one damage `verify` reports for a file made by [`one_blob_file`].
fn blob_damage(file: Vec<u8>) -> (CorruptionKind, String) {
    let r = CaptureReader::from_bytes(file).unwrap();
    let report = r.verify().unwrap();
    assert_eq!(report.blobs, 1, "{report:?}");
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let c = &report.corrupt[0];
    assert_eq!(c.offset, 64);
    (c.kind, c.detail.clone())
}

#[test]
fn zstd_blob_that_decodes_to_more_than_raw_len_is_blob_decode_damage() {
    let raw = frame_pixels(64, 64, 1);
    let hash = vgt_format::hash::content_hash(&raw);
    // A frame without a content size, so only decoding finds out it is too long.
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .unwrap();
    let data = c.compress(&raw).unwrap();
    let short = raw.len() as u64 - 100;
    let (kind, detail) = blob_damage(one_blob_file(2, short, hash, &data));
    assert_eq!(kind, CorruptionKind::BlobDecode);
    assert!(
        detail.contains("decodes to more than") && detail.contains(&short.to_string()),
        "{detail}"
    );
}

#[test]
fn zstd_blob_that_decodes_to_less_than_raw_len_is_damage() {
    let raw = frame_pixels(64, 64, 1);
    let hash = vgt_format::hash::content_hash(&raw);
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .unwrap();
    let data = c.compress(&raw).unwrap();
    let long = raw.len() as u64 + 100;
    let (kind, detail) = blob_damage(one_blob_file(2, long, hash, &data));
    assert_eq!(kind, CorruptionKind::BlobHash);
    assert!(
        detail.contains(&format!(
            "decoded to {} bytes, header says {long}",
            raw.len()
        )),
        "{detail}"
    );
}

#[test]
fn zstd_frame_size_that_disagrees_with_raw_len_is_damage_before_decoding() {
    let raw = frame_pixels(64, 64, 1);
    let hash = vgt_format::hash::content_hash(&raw);
    let data = zstd::bulk::compress(&raw, 3).unwrap();
    let claimed = raw.len() as u64 * 2;
    let (kind, detail) = blob_damage(one_blob_file(2, claimed, hash, &data));
    assert_eq!(kind, CorruptionKind::BlobDecode);
    assert_eq!(
        detail,
        format!(
            "zstd frame says it holds {} bytes, the blob header says {claimed}",
            raw.len()
        )
    );
}

#[test]
fn zstd_raw_len_beyond_the_largest_ratio_is_refused_without_allocating() {
    let data = zstd::bulk::compress(&[7u8; 1000], 3).unwrap();
    let (kind, detail) = blob_damage(one_blob_file(2, u64::MAX / 2, 0, &data));
    assert_eq!(kind, CorruptionKind::BlobDecode);
    assert!(detail.contains("is impossible"), "{detail}");
}

#[test]
fn unknown_codec_names_the_codecs_this_reader_knows() {
    let (kind, detail) = blob_damage(one_blob_file(3, 10, 0, &[0; 10]));
    assert_eq!(kind, CorruptionKind::BlobDecode);
    assert!(detail.contains("unknown blob codec 3"), "{detail}");
}

#[test]
fn garbled_zstd_data_reads_as_damage_of_that_blob_and_nothing_else() {
    let (bytes, recs, _) = capture_with(Compression::Zstd(3));
    let r = CaptureReader::from_bytes(bytes.clone()).unwrap();
    let pixels_id = recs.len() as u64 - 2;
    let Payload::Blob(b) = r.record(pixels_id).unwrap().body.payloads()[0].clone() else {
        panic!("pixels are a blob");
    };
    let at = b.offset as usize;
    assert_eq!(bytes[at + 16 + 24], 2, "the pixels blob is zstd");
    let body_len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    // Garble zstd data bytes past the frame header, in every way, and give the chunk a
    // matching CRC so the damage reaches the decoder (or the hash check) rather than the CRC.
    for step in [40usize, 60, 90, 130] {
        let mut bad = bytes.clone();
        let data_start = at + 16 + 32;
        let pos = data_start + (step % (body_len - 32 - 8)) + 8;
        bad[pos] ^= 0x5A;
        let mut crc_input = bad[at + 4..at + 12].to_vec();
        crc_input.extend_from_slice(&bad[at + 16..at + 16 + body_len]);
        let crc = crc32c::crc32c(&crc_input);
        bad[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
        let r = CaptureReader::from_bytes(bad).unwrap();
        let rec = r.record(pixels_id).unwrap();
        match r.read_payload(rec.body.payloads()[0]) {
            Err(Error::Corrupt { offset, kind, .. }) => {
                assert_eq!(offset, b.offset);
                assert!(
                    matches!(kind, CorruptionKind::BlobDecode | CorruptionKind::BlobHash),
                    "{kind:?}"
                );
            }
            other => panic!("byte {pos} flipped: {other:?}"),
        }
        // The other records and the noise blob still read.
        for (id, (rec, raw)) in recs.iter().enumerate().take(recs.len() - 2) {
            let got = r.record(id as u64).unwrap();
            assert_eq!(&got, rec);
            for (p, want) in got.body.payloads().into_iter().zip(raw) {
                assert_eq!(r.read_payload(p).unwrap().as_ref(), want.as_slice());
            }
        }
        let report = r.verify().unwrap();
        assert_eq!(report.corrupt.len(), 1, "{report:?}");
    }
}

#[test]
fn zstd_capture_cut_anywhere_reads_the_complete_records() {
    let (bytes, recs, _) = capture_with(Compression::Zstd(3));
    let mut rng = Rng(77);
    for _ in 0..200 {
        let cut = rng.below(bytes.len() as u64) as usize;
        let r = CaptureReader::from_bytes(bytes[..cut].to_vec()).unwrap();
        assert!(r.health().corrupt.is_empty(), "cut {cut}: {:?}", r.health());
        for id in 0..r.len() {
            let got = r.record(id).unwrap();
            assert_eq!(&got, &recs[id as usize].0, "cut {cut}");
            for (p, want) in got.body.payloads().into_iter().zip(&recs[id as usize].1) {
                assert_eq!(r.read_payload(p).unwrap().as_ref(), want.as_slice());
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any damage to a zstd frame behind a valid CRC (bytes changed, frame cut or extended,
    /// another raw length claimed) is reported as damage of that blob, never a panic, and a
    /// blob that verifies reads back its original bytes.
    #[test]
    fn damaged_zstd_frame_is_blob_damage_never_a_panic(
        seed in 0u64..1000,
        flips in proptest::collection::vec((0usize..4096, 1u8..=255), 0..4),
        cut in 0usize..64,
        extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        len_delta in -3i64..=3,
    ) {
        let raw = frame_pixels(48, 40, seed);
        let hash = vgt_format::hash::content_hash(&raw);
        let mut data = zstd::bulk::compress(&raw, 3).unwrap();
        for (at, x) in &flips {
            let i = at % data.len();
            data[i] ^= x;
        }
        data.truncate(data.len().saturating_sub(cut));
        data.extend_from_slice(&extra);
        let raw_len = (raw.len() as i64 + len_delta) as u64;
        let file = one_blob_file(2, raw_len, hash, &data);
        let r = CaptureReader::from_bytes(file).unwrap();
        let report = r.verify().unwrap();
        proptest::prop_assert_eq!(report.blobs, 1);
        for c in &report.corrupt {
            proptest::prop_assert!(
                matches!(c.kind, CorruptionKind::BlobDecode | CorruptionKind::BlobHash),
                "{:?}", c
            );
            proptest::prop_assert_eq!(c.offset, 64);
        }
        let untouched = flips.is_empty() && cut == 0 && extra.is_empty() && len_delta == 0;
        if untouched {
            proptest::prop_assert!(report.is_clean(), "{:?}", report);
        }
    }
}
