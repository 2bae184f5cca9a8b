//! Damaged captures: cut at every byte, cut at random places, and single bit flips everywhere.
//! Nothing panics, the damage is reported at the right offset, and everything untouched reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Rng, Written, chunk_map, small_capture};
use vgt_format::file::{CaptureReader, CaptureWriter, Error, WriterOptions};
use vgt_format::record::*;

/// Chunk `(start, end)` of each record and each blob payload, from an undamaged reader.
struct Layout {
    records: Vec<(u64, u64)>,
    pieces: Vec<(u64, u64)>,
}

fn layout(bytes: &[u8]) -> Layout {
    let pieces = chunk_map(bytes);
    let r = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    let records = (0..r.len())
        .map(|id| {
            let off = r.record_offset(id).unwrap();
            *pieces.iter().find(|p| p.0 == off).unwrap()
        })
        .collect();
    Layout { records, pieces }
}

fn blob_offsets(rec: &Record) -> Vec<Option<u64>> {
    rec.body
        .payloads()
        .iter()
        .map(|p| match p {
            Payload::Blob(b) => Some(b.offset),
            Payload::Inline(_) => None,
        })
        .collect()
}

fn piece_end(l: &Layout, start: u64) -> u64 {
    l.pieces.iter().find(|p| p.0 == start).unwrap().1
}

/// Cuts the file at `cut` and checks that exactly the complete records read back.
fn check_cut(bytes: &[u8], l: &Layout, recs: &Written, cut: usize, deep: usize) {
    let r = CaptureReader::from_bytes(bytes[..cut].to_vec())
        .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
    let h = r.health();
    assert!(h.corrupt.is_empty(), "cut at {cut}: {:?}", h.corrupt);
    let complete = l
        .records
        .iter()
        .filter(|(_, end)| *end <= cut as u64)
        .count();
    if cut < bytes.len() {
        assert_eq!(r.len(), complete as u64, "cut at {cut}");
        // The cut is reported where the incomplete piece starts (none on a boundary).
        let expected = l
            .pieces
            .iter()
            .find(|(s, e)| (*s as usize) < cut && cut < *e as usize)
            .map(|p| p.0);
        let expected = if cut < 64 { Some(0) } else { expected };
        assert_eq!(h.truncated_at, expected, "cut at {cut}");
    } else {
        assert!(h.indexed && h.is_clean());
    }
    // Every complete record, sequentially; random access and payloads for the last few (the
    // ones nearest the cut) or for all of them.
    let seq: Vec<_> = r.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(seq.len(), complete.min(r.len() as usize), "cut at {cut}");
    for ((id, got), (want, _)) in seq.iter().zip(recs) {
        assert_eq!(got, want, "cut at {cut}, record {id}");
    }
    let first_checked = complete.saturating_sub(deep);
    for (id, (rec, raw)) in recs.iter().enumerate().take(complete).skip(first_checked) {
        assert_eq!(
            &r.record(id as u64).unwrap(),
            rec,
            "cut at {cut}, record {id}"
        );
        for ((p, want), blob) in rec.body.payloads().iter().zip(raw).zip(blob_offsets(rec)) {
            let complete_blob = blob.is_none_or(|b| piece_end(l, b) <= cut as u64);
            match r.read_payload(p) {
                Ok(got) => {
                    assert!(complete_blob, "cut at {cut}");
                    assert_eq!(got.as_ref(), want.as_slice());
                }
                Err(e) => {
                    assert!(!complete_blob, "cut at {cut}: {e}");
                    assert!(
                        matches!(e, Error::Truncated { .. } | Error::Corrupt { .. }),
                        "cut at {cut}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cut_at_every_byte_opens_and_keeps_every_complete_record() {
    let (bytes, recs) = small_capture(true);
    assert!(bytes.len() < 8192, "small sample is {} bytes", bytes.len());
    let l = layout(&bytes);
    for cut in 0..=bytes.len() {
        check_cut(&bytes, &l, &recs, cut, usize::MAX);
    }
}

#[test]
fn cut_inside_a_header_that_is_not_a_capture_is_refused() {
    let err = CaptureReader::from_bytes(b"\x89VGT\r\n\x1a\x0b".to_vec()).unwrap_err();
    assert!(matches!(err, Error::NotACapture { .. }), "{err}");
    let err = CaptureReader::from_bytes(b"PK".to_vec()).unwrap_err();
    assert!(matches!(err, Error::NotACapture { .. }), "{err}");
}

#[test]
fn large_capture_cut_at_random_offsets_keeps_every_complete_record() {
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, WriterOptions::default()).unwrap();
    let mut rng = Rng(42);
    let mut recs: Written = Vec::new();
    for i in 0..3000u64 {
        let raw = match rng.below(5) {
            0 => common::frame_pixels(128, 64 + rng.below(4) as usize, rng.below(3)),
            1 => {
                let n = 2000 + rng.below(6000) as usize;
                rng.bytes(n)
            }
            _ => {
                let n = 16 + rng.below(64) as usize;
                rng.bytes(n)
            }
        };
        let p = w.store(&raw).unwrap();
        let rec = Record {
            ts_ns: i * 1000,
            body: RecordBody::MemoryRead(MemoryRead {
                command: i,
                resource_id: 3,
                addr: rng.next(),
                data: p,
            }),
        };
        w.append(&rec).unwrap();
        recs.push((rec, vec![raw]));
    }
    w.finish().unwrap();
    assert!(buf.len() > 2_000_000, "{} bytes", buf.len());
    let l = layout(&buf);
    let mut rng = Rng(4242);
    for _ in 0..200 {
        let cut = rng.below(buf.len() as u64 + 1) as usize;
        check_cut(&buf, &l, &recs, cut, 20);
    }
}

/// Flips one bit and checks the report and every untouched record and blob.
fn check_flip(bytes: &[u8], l: &Layout, recs: &Written, at: usize, bit: u8, finished: bool) {
    let mut damaged = bytes.to_vec();
    damaged[at] ^= 1 << bit;
    let ctx = format!("flip bit {bit} of byte {at}");
    let r = CaptureReader::from_bytes(damaged).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let hit = l
        .pieces
        .iter()
        .find(|(s, e)| (*s as usize) <= at && at < *e as usize)
        .copied()
        .unwrap();
    // Reported: verify walks everything and must name the damaged piece.
    let report = r.verify().unwrap();
    let reported = report.corrupt.iter().any(|c| c.offset == hit.0)
        || report.truncated_at == Some(hit.0)
        || r.health().corrupt.iter().any(|c| c.offset == hit.0);
    assert!(reported, "{ctx}: piece {hit:?} not reported: {report:?}");
    for (id, (rec, raw)) in recs.iter().enumerate() {
        let touched = l.records[id] == hit;
        // Find the record: by id in indexed captures, by offset otherwise (a flip in a
        // record's framing can shift the numbering of a scanned capture).
        let found = if finished {
            Some(id as u64)
        } else {
            (0..r.len()).find(|i| r.record_offset(*i).ok() == Some(l.records[id].0))
        };
        if touched {
            if let Some(i) = found {
                match r.record(i) {
                    Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, hit.0, "{ctx}"),
                    other => panic!("{ctx}: damaged record {id} gave {other:?}"),
                }
            }
            continue;
        }
        let i = found.unwrap_or_else(|| panic!("{ctx}: untouched record {id} lost"));
        let got = r
            .record(i)
            .unwrap_or_else(|e| panic!("{ctx}: record {id}: {e}"));
        assert_eq!(&got, rec, "{ctx}");
        for ((p, want), blob) in rec.body.payloads().iter().zip(raw).zip(blob_offsets(rec)) {
            match r.read_payload(p) {
                Ok(bytes) => assert_eq!(bytes.as_ref(), want.as_slice(), "{ctx}"),
                Err(Error::Corrupt { offset, .. }) => {
                    assert_eq!(Some(offset), blob, "{ctx}");
                    assert_eq!(offset, hit.0, "{ctx}: blob error names another chunk");
                }
                Err(e) => panic!("{ctx}: payload of record {id}: {e}"),
            }
        }
    }
    // Sequential reading goes on past the damage.
    let n = r.iter().filter(|x| x.is_ok()).count() as u64;
    assert!(n + 1 >= r.len(), "{ctx}: only {n} of {} read", r.len());
}

#[test]
fn bit_flip_anywhere_in_a_finished_capture_is_reported_and_contained() {
    let (bytes, recs) = small_capture(true);
    let l = layout(&bytes);
    let mut rng = Rng(99);
    // Every byte, one seeded bit each, plus every bit of the header, first chunk and footer.
    let mut positions: Vec<(usize, u8)> =
        (0..bytes.len()).map(|i| (i, rng.below(8) as u8)).collect();
    for i in (0..96).chain(bytes.len() - 32..bytes.len()) {
        positions.extend((0..8).map(|b| (i, b)));
    }
    assert!(positions.len() >= 2000, "{}", positions.len());
    for (at, bit) in positions {
        check_flip(&bytes, &l, &recs, at, bit, true);
    }
}

#[test]
fn bit_flip_in_an_unfinished_capture_is_reported_and_contained() {
    let (bytes, recs) = small_capture(false);
    let l = layout(&bytes);
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let at = rng.below(bytes.len() as u64) as usize;
        check_flip(&bytes, &l, &recs, at, rng.below(8) as u8, false);
    }
}
