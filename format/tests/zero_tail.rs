//! Captures that end in zero bytes: what a crash-safe writer that reserves file space ahead
//! (vgt-capture's mapped file) leaves when it is killed. The zeros are the end of an unfinished
//! capture, never damage; non-zero bytes after the last chunk still are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{chunk_map, small_capture};
use vgt_format::file::{CaptureReader, CorruptionKind};

/// `bytes[..cut]` followed by `pad` zero bytes.
fn stopped_at(bytes: &[u8], cut: usize, pad: usize) -> Vec<u8> {
    let mut file = bytes[..cut].to_vec();
    file.resize(cut + pad, 0);
    file
}

#[test]
fn capture_stopped_at_any_byte_before_reserved_zeros_keeps_every_complete_record() {
    for finish in [false, true] {
        let (bytes, recs) = small_capture(finish);
        let pieces = chunk_map(&bytes);
        let whole = CaptureReader::from_bytes(bytes.clone()).unwrap();
        let record_ends: Vec<usize> = (0..whole.len())
            .map(|id| {
                let start = whole.record_offset(id).unwrap();
                pieces.iter().find(|p| p.0 == start).unwrap().1 as usize
            })
            .collect();
        let pad = bytes.len() + 4096;
        // From the first chunk on: the header is copied in before anything else.
        for cut in 64..=bytes.len() {
            let ctx = format!("finished {finish}, stopped at {cut}");
            let r = CaptureReader::from_bytes(stopped_at(&bytes, cut, pad))
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let h = r.health();
            assert!(h.corrupt.is_empty(), "{ctx}: {:?}", h.corrupt);
            assert!(!h.indexed, "{ctx}: the footer is not at the end");
            assert!(h.zero_tail > 0, "{ctx}");
            // A piece the stop falls into is whole anyway when the bytes it lacks are zeros.
            let zeros = |end: usize| bytes[cut.min(end)..end].iter().all(|b| *b == 0);
            let cut_piece = pieces
                .iter()
                .find(|(s, e)| (*s as usize) < cut && cut < *e as usize && !zeros(*e as usize));
            assert_eq!(h.truncated_at, cut_piece.map(|p| p.0), "{ctx}");
            let complete = record_ends.iter().filter(|end| zeros(**end)).count();
            assert_eq!(r.len(), complete as u64, "{ctx}");
            for (id, got) in r.iter().enumerate() {
                assert_eq!(&got.unwrap().1, &recs[id].0, "{ctx}, record {id}");
            }
            let report = r.verify().unwrap();
            assert!(report.corrupt.is_empty(), "{ctx}: {:?}", report.corrupt);
            assert_eq!(report.truncated_at, h.truncated_at, "{ctx}");
        }
    }
}

#[test]
fn unfinished_capture_with_a_zero_tail_opens_clean_from_a_file() {
    let (bytes, recs) = small_capture(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.vgt");
    std::fs::write(&path, stopped_at(&bytes, bytes.len(), 3 << 20)).unwrap();
    let r = CaptureReader::open(&path).unwrap();
    let h = r.health();
    assert!(h.is_clean() && !h.indexed, "{h:?}");
    assert_eq!(h.zero_tail, 3 << 20);
    assert_eq!(h.file_len, bytes.len() as u64 + (3 << 20));
    let got: Vec<_> = r.iter().map(|x| x.unwrap().1).collect();
    let want: Vec<_> = recs.iter().map(|(rec, _)| rec.clone()).collect();
    assert_eq!(got, want);
    for (rec, raw) in &recs {
        for (p, want) in rec.body.payloads().iter().zip(raw) {
            assert_eq!(r.read_payload(p).unwrap().as_ref(), want.as_slice());
        }
    }
    assert!(r.verify().unwrap().is_clean());
}

#[test]
fn zero_tail_shorter_than_a_chunk_header_is_the_end_too() {
    let (bytes, recs) = small_capture(false);
    for pad in 1..40 {
        let r = CaptureReader::from_bytes(stopped_at(&bytes, bytes.len(), pad)).unwrap();
        assert!(r.health().is_clean(), "pad {pad}: {:?}", r.health());
        assert_eq!(r.health().zero_tail, pad as u64);
        assert_eq!(r.len(), recs.len() as u64);
    }
}

#[test]
fn file_of_reserved_zeros_only_is_an_empty_cut_capture() {
    let r = CaptureReader::from_bytes(vec![0; 8192]).unwrap();
    assert_eq!(r.health().truncated_at, Some(0));
    assert_eq!(r.health().zero_tail, 8192);
    assert!(r.is_empty());
}

#[test]
fn non_zero_bytes_after_the_last_chunk_are_damage_at_their_offset() {
    let (bytes, recs) = small_capture(false);
    let end = bytes.len() as u64;
    let garbage = [0xABu8; 100].to_vec();
    let garbage_then_zeros = [&[0xAB; 10][..], &[0; 5000][..]].concat();
    let zeros_with_one_byte = [&[0; 10][..], &[0xAB][..], &[0; 5000][..]].concat();
    let short_garbage = [0xABu8; 5].to_vec();
    for (name, tail, kind) in [
        ("garbage", garbage, CorruptionKind::BadFraming),
        (
            "garbage, then zeros",
            garbage_then_zeros,
            CorruptionKind::BadFraming,
        ),
        (
            "zeros with one byte",
            zeros_with_one_byte,
            CorruptionKind::BadFraming,
        ),
        (
            "5 bytes of garbage",
            short_garbage,
            CorruptionKind::BadFraming,
        ),
    ] {
        let r = CaptureReader::from_bytes([&bytes[..], &tail[..]].concat()).unwrap();
        let h = r.health();
        assert_eq!(h.corrupt.len(), 1, "{name}: {h:?}");
        assert_eq!(h.corrupt[0].offset, end, "{name}");
        assert_eq!(h.corrupt[0].kind, kind, "{name}");
        assert_eq!(h.truncated_at, None, "{name}");
        assert_eq!(h.zero_tail, 0, "{name}");
        assert_eq!(r.len(), recs.len() as u64, "{name}");
        let report = r.verify().unwrap();
        assert_eq!(report.corrupt.len(), 1, "{name}: {report:?}");
        assert_eq!(report.corrupt[0].offset, end, "{name}");
    }
}
