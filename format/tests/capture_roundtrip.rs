//! Round trips through the capture writer and reader: every kind, random sequences, both sync
//! policies, finished and unfinished, the index, and the error cases of open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{Rng, small_capture, write_every_kind};
use proptest::prelude::*;
use vgt_format::file::{CaptureReader, CaptureWriter, Error, SyncPolicy, WriterOptions};
use vgt_format::record::*;

fn check_reads_back(reader: &CaptureReader, expected: &[(Record, Vec<Vec<u8>>)]) {
    assert_eq!(reader.len(), expected.len() as u64);
    for (id, (rec, raw)) in expected.iter().enumerate() {
        let got = reader.record(id as u64).unwrap();
        assert_eq!(&got, rec, "record {id}");
        let payloads = got.body.payloads();
        assert_eq!(payloads.len(), raw.len(), "record {id} payload count");
        for (p, bytes) in payloads.iter().zip(raw) {
            assert_eq!(reader.read_payload(p).unwrap().as_ref(), bytes.as_slice());
        }
    }
    let seq: Vec<_> = reader.iter().map(|r| r.unwrap()).collect();
    assert_eq!(seq.len(), expected.len());
    for ((id, rec), (i, (want, _))) in seq.iter().zip(expected.iter().enumerate()) {
        assert_eq!(*id, i as u64);
        assert_eq!(rec, want);
    }
}

#[test]
fn every_kind_round_trips_in_all_modes() {
    for sync in [SyncPolicy::Buffered, SyncPolicy::CrashSafe] {
        for finish in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.vgt");
            let mut w =
                CaptureWriter::create(&path, WriterOptions::default().with_sync(sync)).unwrap();
            let recs = write_every_kind(&mut w);
            let stats = w.stats();
            assert_eq!(stats.records, recs.len() as u64);
            assert_eq!(stats.dedup_hits, 1);
            assert_eq!(stats.blobs, 3);
            if finish {
                w.finish().unwrap();
            } else {
                drop(w);
            }
            let reader = CaptureReader::open(&path).unwrap();
            assert_eq!(reader.health().indexed, finish, "{sync:?}");
            assert!(reader.health().is_clean(), "{:?}", reader.health());
            check_reads_back(&reader, &recs);
            assert_eq!(reader.frames().unwrap(), vec![7]);
            let report = reader.verify().unwrap();
            assert!(report.is_clean(), "{report:?}");
            assert_eq!(report.records, recs.len() as u64);
            assert_eq!(report.blobs, 3);
            assert_eq!(report.index_ok, finish);
            let from_mem = CaptureReader::from_bytes(std::fs::read(&path).unwrap()).unwrap();
            check_reads_back(&from_mem, &recs);
        }
    }
}

#[test]
fn index_stats_match_what_was_written() {
    let (bytes, recs) = small_capture(true);
    let reader = CaptureReader::from_bytes(bytes).unwrap();
    let stats = reader.index_stats().unwrap();
    assert_eq!(stats.records, recs.len() as u64);
    assert_eq!(stats.frames, 1);
    let mut want: HashMap<RecordKind, u64> = HashMap::new();
    for (r, _) in &recs {
        *want.entry(r.body.kind()).or_default() += 1;
    }
    let got: HashMap<RecordKind, u64> = stats.per_kind.iter().copied().collect();
    assert_eq!(got, want);
    assert_eq!(stats.payloads.blobs, 3);
    assert_eq!(stats.payloads.dedup_hits, 1);
    let raw: u64 = recs
        .iter()
        .flat_map(|(_, r)| r)
        .map(|b| b.len() as u64)
        .sum();
    assert_eq!(stats.payloads.raw_payload_bytes, raw);
    assert!(stats.payloads.stored_bytes < raw);
}

#[test]
fn unfinished_capture_has_no_index_stats_but_same_records() {
    let (bytes, recs) = small_capture(false);
    let reader = CaptureReader::from_bytes(bytes).unwrap();
    assert!(!reader.health().indexed);
    assert!(reader.index_stats().is_none());
    check_reads_back(&reader, &recs);
}

#[test]
fn dedup_hit_points_at_the_first_blob_and_costs_no_bytes() {
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, WriterOptions::default()).unwrap();
    let data = common::frame_pixels(100, 100, 3);
    let a = w.store(&data).unwrap();
    let before = w.stats().file_bytes;
    let b = w.store(&data).unwrap();
    assert_eq!(a, b);
    assert_eq!(w.stats().file_bytes, before);
    assert_eq!(w.stats().dedup_hits, 1);
}

#[test]
fn incompressible_blob_is_stored_raw_and_reads_back() {
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, WriterOptions::default()).unwrap();
    let data = Rng(5).bytes(10_000);
    let p = w.store(&data).unwrap();
    assert_eq!(w.stats().stored_bytes, 10_000);
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
    w.finish().unwrap();
    let r = CaptureReader::from_bytes(buf).unwrap();
    assert_eq!(r.read_payload(&p).unwrap().as_ref(), data.as_slice());
}

#[test]
fn append_with_foreign_blob_ref_is_refused() {
    let mut w = CaptureWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let bogus = Payload::Blob(BlobRef {
        hash: ContentHash(1),
        len: 1000,
        offset: 64,
    });
    let err = w
        .append_body(
            0,
            RecordBody::MemoryRead(MemoryRead {
                command: 0,
                resource_id: 0,
                addr: 0,
                data: bogus,
            }),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownBlob {
                hash: 1,
                offset: 64
            }
        ),
        "{err}"
    );
    // The writer is still usable.
    assert_eq!(
        w.append_body(1, RecordBody::Marker(Marker { text: "ok".into() }))
            .unwrap(),
        0
    );
}

#[test]
fn unknown_kind_written_as_known_code_is_refused() {
    let mut w = CaptureWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for kind in [0x0003u16, 0x0100, 0xffff] {
        let err = w
            .append_body(0, RecordBody::Unknown { kind, body: vec![] })
            .unwrap_err();
        assert!(matches!(err, Error::InvalidRecord { .. }), "{err}");
    }
}

#[test]
fn crash_safe_append_is_in_the_file_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vgt");
    let mut w = CaptureWriter::create(
        &path,
        WriterOptions::default().with_sync(SyncPolicy::CrashSafe),
    )
    .unwrap();
    let mut expected = Vec::new();
    for i in 0..50u64 {
        let raw = common::frame_pixels(32, 32 + i as usize % 3, i % 5);
        let p = w.store(&raw).unwrap();
        let rec = Record {
            ts_ns: i,
            body: RecordBody::MemoryRead(MemoryRead {
                command: i,
                resource_id: 1,
                addr: i * 4096,
                data: p,
            }),
        };
        w.append(&rec).unwrap();
        expected.push((rec, vec![raw]));
        // Another handle sees every appended record and its blob, with the writer still open.
        let snapshot = std::fs::read(&path).unwrap();
        assert_eq!(snapshot.len() as u64, w.stats().file_bytes);
        let r = CaptureReader::from_bytes(snapshot).unwrap();
        assert!(r.health().is_clean());
        check_reads_back(&r, &expected);
    }
    drop(w);
}

#[test]
fn open_reads_no_index_chunk_until_a_record_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vgt");
    let mut w = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let n = 20_000u64;
    for i in 0..n {
        let request = w.store(&i.to_le_bytes()).unwrap();
        w.append_body(
            i,
            RecordBody::Command(CommandRecord {
                queue: 0,
                head: (i % 64) as u16,
                descriptors: vec![],
                writable_len: 24,
                request,
            }),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let r = CaptureReader::open(&path).unwrap();
    assert!(r.health().indexed);
    let io = r.io_stats();
    assert_eq!(io.index_chunks_loaded, 0);
    assert!(io.reads <= 4, "open issued {} reads", io.reads);
    assert!(io.bytes < 4096, "open read {} bytes", io.bytes);
    assert_eq!(r.len(), n);
    let rec = r.record(12_345).unwrap();
    assert_eq!(rec.ts_ns, 12_345);
    assert_eq!(r.io_stats().index_chunks_loaded, 1);
    r.record(12_346).unwrap();
    assert_eq!(r.io_stats().index_chunks_loaded, 1, "cached");

    let seq: Vec<Record> = r.iter().map(|x| x.unwrap().1).collect();
    let mut rng = Rng(7);
    for _ in 0..300 {
        let id = rng.below(n);
        assert_eq!(r.record(id).unwrap(), seq[id as usize]);
    }
    let part: Vec<_> = r.iter_range(8190..8195).map(|x| x.unwrap()).collect();
    assert_eq!(part.len(), 5);
    assert_eq!(part[0].0, 8190);
    assert_eq!(part[4].1, seq[8194]);
    assert!(matches!(
        r.record(n),
        Err(Error::NoSuchRecord { id, len }) if id == n && len == n
    ));
}

#[test]
fn open_rejects_a_file_that_is_not_a_capture() {
    let err =
        CaptureReader::from_bytes(b"GIF89a this is not a capture at all, really not".to_vec())
            .unwrap_err();
    match err {
        Error::NotACapture { found, .. } => assert_eq!(found, b"GIF89a t"),
        other => panic!("{other}"),
    }
    let err = CaptureReader::from_bytes(b"\x89VGX".to_vec()).unwrap_err();
    assert!(matches!(err, Error::NotACapture { .. }));
}

#[test]
fn open_rejects_a_newer_major_version() {
    let (mut bytes, _) = small_capture(true);
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    let err = CaptureReader::from_bytes(bytes).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found_major: 2,
                found_minor: 1,
                supported_major: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn newer_minor_version_with_unknown_chunks_opens() {
    // Minor 1 with an unknown internal chunk kind inserted after the header.
    let (bytes, recs) = small_capture(false);
    let mut out = bytes[..64].to_vec();
    out[10..12].copy_from_slice(&1u16.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    let body = b"future";
    let mut pre = Vec::new();
    pre.extend_from_slice(&0x0150u16.to_le_bytes());
    pre.extend_from_slice(&0u16.to_le_bytes());
    pre.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&pre), body);
    out.extend_from_slice(b"VGTR");
    out.extend_from_slice(&pre);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    // Blob references hold absolute offsets that the insertion shifts, so only the records
    // themselves are compared here.
    out.extend_from_slice(&bytes[64..]);
    let r = CaptureReader::from_bytes(out).unwrap();
    assert_eq!(r.header().version_minor, 1);
    assert!(r.health().is_clean(), "{:?}", r.health());
    assert_eq!(r.len(), recs.len() as u64);
    for (id, (rec, _)) in recs.iter().enumerate() {
        assert_eq!(&r.record(id as u64).unwrap(), rec);
    }
    assert_eq!(r.verify().unwrap().unknown_chunks, 1);
}

#[test]
fn empty_capture_round_trips() {
    for finish in [true, false] {
        let mut buf = Vec::new();
        let w = CaptureWriter::new(&mut buf, WriterOptions::default()).unwrap();
        if finish {
            w.finish().unwrap();
        } else {
            drop(w);
        }
        let r = CaptureReader::from_bytes(buf).unwrap();
        assert_eq!(r.len(), 0);
        assert_eq!(r.health().indexed, finish);
        assert!(r.health().is_clean());
        assert_eq!(r.iter().count(), 0);
    }
}

// ---- proptest: random record sequences ----

/// A record to build, with its payload given as bytes (stored through the writer).
#[derive(Debug, Clone)]
struct Spec {
    kind: u8,
    ts: u64,
    n: [u64; 6],
    s: String,
    descs: Vec<(u64, u32, u16, u16)>,
    payload: Vec<u8>,
    some: bool,
}

fn payload_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..160),
        // A small pool of large contents, so that repeats (dedup hits) happen.
        3 => (0u8..4).prop_map(|i| common::frame_pixels(40 + i as usize * 7, 30, u64::from(i))),
        1 => proptest::collection::vec(any::<u8>(), 129..3000),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..13,
        any::<u64>(),
        any::<[u64; 6]>(),
        "\\PC{0,20}",
        proptest::collection::vec(any::<(u64, u32, u16, u16)>(), 0..5),
        payload_bytes(),
        any::<bool>(),
    )
        .prop_map(|(kind, ts, n, s, descs, payload, some)| Spec {
            kind,
            ts,
            n,
            s,
            descs,
            payload,
            some,
        })
}

fn build<W: std::io::Write>(w: &mut CaptureWriter<W>, s: &Spec) -> (Record, Vec<Vec<u8>>) {
    let p = w.store(&s.payload).unwrap();
    let n = s.n;
    let raw = vec![s.payload.clone()];
    let (body, raw) = match s.kind {
        0 => (
            RecordBody::SessionStart(SessionStart {
                wall_clock_unix_ns: n[0],
                tool: s.s.clone(),
                tool_version: s.s.chars().rev().collect(),
                mode: [
                    CaptureMode::BuiltIn,
                    CaptureMode::Proxy,
                    CaptureMode::Synthetic,
                    CaptureMode::Other,
                ][n[1] as usize % 4],
                renderer: String::new(),
                features_offered: n[2],
                features_acked: n[3],
                protocol_features: n[4],
                num_queues: n[5] as u16,
                queue_sizes: s.descs.iter().map(|d| d.2).collect(),
                device_config: p,
            }),
            raw,
        ),
        1 | 6 => {
            let direction = [
                Direction::FrontToBack,
                Direction::BackToFront,
                Direction::BackendRequest,
                Direction::BackendReply,
                Direction::Other,
            ][n[0] as usize % 5];
            if s.kind == 1 {
                (
                    RecordBody::VhostUser(VhostUserMessage {
                        direction,
                        request: n[1] as u32,
                        flags: n[2] as u32,
                        fd_count: n[3] as u8,
                        payload: p,
                    }),
                    raw,
                )
            } else {
                (
                    RecordBody::GpuSocket(GpuSocketMessage {
                        direction,
                        request: n[1] as u32,
                        flags: n[2] as u32,
                        fd_count: n[3] as u8,
                        payload: p,
                        data: None,
                    }),
                    raw,
                )
            }
        }
        2 => (
            RecordBody::Command(CommandRecord {
                queue: n[0] as u16,
                head: n[1] as u16,
                descriptors: s
                    .descs
                    .iter()
                    .map(|&(addr, len, flags, next)| Descriptor {
                        addr,
                        len,
                        flags,
                        next,
                    })
                    .collect(),
                writable_len: n[2] as u32,
                request: p,
            }),
            raw,
        ),
        3 => (
            RecordBody::MemoryRead(MemoryRead {
                command: n[0],
                resource_id: n[1] as u32,
                addr: n[2],
                data: p,
            }),
            raw,
        ),
        4 => (
            RecordBody::Response(ResponseRecord {
                command: n[0],
                queue: n[1] as u16,
                head: n[2] as u16,
                used_len: n[3] as u32,
                bytes: p,
            }),
            raw,
        ),
        5 => (
            RecordBody::Fence(FenceSignal {
                command: n[0],
                fence_id: n[1],
                ctx_id: n[2] as u32,
                ring_idx: n[3] as u8,
                context_ring: s.some,
            }),
            vec![],
        ),
        7 => (
            RecordBody::Frame(Frame {
                command: n[0],
                scanout_id: n[1] as u32,
                resource_id: (n[1] >> 32) as u32,
                format: n[2] as u32,
                width: (n[2] >> 32) as u32,
                height: n[3] as u32,
                stride: (n[3] >> 32) as u32,
                rect: [
                    n[4] as u32,
                    (n[4] >> 32) as u32,
                    n[5] as u32,
                    (n[5] >> 32) as u32,
                ],
                pixels: p,
            }),
            raw,
        ),
        8 => (
            RecordBody::Cursor(Cursor {
                command: n[0],
                action: [
                    CursorAction::Update,
                    CursorAction::Move,
                    CursorAction::Hide,
                    CursorAction::Other,
                ][n[1] as usize % 4],
                scanout_id: n[2] as u32,
                x: (n[2] >> 32) as u32,
                y: n[3] as u32,
                hot_x: (n[3] >> 32) as u32,
                hot_y: n[4] as u32,
                resource_id: (n[4] >> 32) as u32,
                image: s.some.then_some(p),
            }),
            if s.some { raw } else { vec![] },
        ),
        9 => (
            RecordBody::Lifecycle(Lifecycle {
                // Every known kind (the newest included) and one this version does not know.
                kind: LifecycleKind::ALL
                    .get(n[0] as usize % (LifecycleKind::ALL.len() + 1))
                    .copied()
                    .unwrap_or(LifecycleKind::Other),
                queue: n[1].is_multiple_of(2).then_some(n[2] as u16),
                command: s.some.then_some(n[3]),
                message: s.s.clone(),
            }),
            vec![],
        ),
        10 => (RecordBody::Marker(Marker { text: s.s.clone() }), vec![]),
        _ => (
            RecordBody::Unknown {
                kind: 0x0C + (n[0] % 0xF0) as u16,
                body: s.payload.iter().take(40).copied().collect(),
            },
            vec![],
        ),
    };
    let rec = Record { ts_ns: s.ts, body };
    w.append(&rec).unwrap();
    (rec, raw)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_round_trip(
        specs in proptest::collection::vec(spec(), 0..40),
        crash_safe in any::<bool>(),
        finish in any::<bool>(),
    ) {
        let sync = if crash_safe { SyncPolicy::CrashSafe } else { SyncPolicy::Buffered };
        let mut buf = Vec::new();
        let mut w = CaptureWriter::new(&mut buf, WriterOptions::default().with_sync(sync)).unwrap();
        let expected: Vec<_> = specs.iter().map(|s| build(&mut w, s)).collect();
        if finish { w.finish().unwrap(); } else { drop(w); }
        let reader = CaptureReader::from_bytes(buf).unwrap();
        prop_assert_eq!(reader.health().indexed, finish);
        prop_assert!(reader.health().is_clean());
        check_reads_back(&reader, &expected);
        prop_assert!(reader.verify().unwrap().is_clean());
    }
}

// ---- writer I/O failure ----

/// A sink that accepts `left` bytes and then fails every write.
struct FailAfter {
    left: usize,
}

impl std::io::Write for FailAfter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = b.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_failure_is_reported_with_offset_then_writer_refuses_to_continue() {
    let opts = WriterOptions::default().with_sync(SyncPolicy::CrashSafe);
    let mut w = CaptureWriter::new(FailAfter { left: 200 }, opts).unwrap();
    let marker = |i: u64| {
        RecordBody::Marker(Marker {
            text: format!("marker number {i}"),
        })
    };
    let mut failed_at = None;
    for i in 0..20 {
        match w.append_body(i, marker(i)) {
            Ok(_) => {}
            Err(Error::Io { offset, .. }) => {
                failed_at = Some(offset);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let offset = failed_at.expect("the sink fills up");
    // The error carries the writer's end of data: the append that no longer fitted.
    assert!((201..300).contains(&offset), "{offset}");
    assert!(matches!(
        w.append_body(99, marker(99)),
        Err(Error::WriterFailed)
    ));
    assert!(matches!(w.store(&[0u8; 1000]), Err(Error::WriterFailed)));
    assert!(matches!(w.finish(), Err(Error::WriterFailed)));
}

// ---- no panics on arbitrary bytes ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_body_of_arbitrary_bytes_never_panics(
        kind in 0u16..0x100,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = vgt_format::file::codec::decode_body(kind, &body);
    }

    #[test]
    fn capture_with_arbitrary_chunks_opens_without_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..1500),
        syncs in proptest::collection::vec(0usize..1500, 0..8),
    ) {
        let (sample, _) = small_capture(false);
        let mut bytes = sample[..64].to_vec();
        let mut tail = tail;
        // Sprinkle sync markers so that the scanner's resync paths run.
        for at in syncs {
            if at + 4 <= tail.len() {
                tail[at..at + 4].copy_from_slice(b"VGTR");
            }
        }
        bytes.extend_from_slice(&tail);
        let r = CaptureReader::from_bytes(bytes).unwrap();
        for item in r.iter() {
            let _ = item;
        }
        let _ = r.verify().unwrap();
    }
}

#[test]
fn scanning_open_steps_over_blob_bodies_and_agrees_with_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vgt");
    let mut w = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut rng = Rng(17);
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let raw = rng.bytes(100_000);
        let data = w.store(&raw).unwrap();
        let rec = Record {
            ts_ns: i,
            body: RecordBody::MemoryRead(MemoryRead {
                command: i,
                resource_id: 2,
                addr: 0,
                data,
            }),
        };
        w.append(&rec).unwrap();
        expected.push((rec, vec![raw]));
    }
    w.finish().unwrap();
    let scanned = CaptureReader::open_scanning(&path).unwrap();
    assert!(!scanned.health().indexed);
    assert!(scanned.health().is_clean());
    let file_len = scanned.health().file_len;
    let read = scanned.io_stats().bytes;
    assert!(read * 10 < file_len, "open read {read} of {file_len} bytes");
    check_reads_back(&scanned, &expected);
    let indexed = CaptureReader::open(&path).unwrap();
    assert!(indexed.health().indexed);
    for id in 0..indexed.len() {
        assert_eq!(
            indexed.record_offset(id).unwrap(),
            scanned.record_offset(id).unwrap()
        );
    }
    assert!(scanned.verify().unwrap().is_clean());
}

#[test]
fn reader_is_shared_across_threads() {
    let (bytes, recs) = small_capture(true);
    let r = CaptureReader::from_bytes(bytes).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (r, recs) = (&r, &recs);
            s.spawn(move || {
                for i in 0..200u64 {
                    let id = (i * 7 + t) % r.len();
                    assert_eq!(r.record(id).unwrap(), recs[id as usize].0);
                }
            });
        }
    });
}
