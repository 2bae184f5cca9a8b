//! `vgt-inspect repack` run as a user runs it, on the real samples and on synthetic captures: the
//! copy holds the same records (ids, timestamps, fields), the same payload bytes and hashes and
//! the same blob sharing, in the codec asked for; it refuses to overwrite its input and reports a
//! bad file in one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vgt_format::record::{LifecycleKind, Payload, Record};
use vgt_format::testing::CaptureBuilder;
use vgt_format::{CaptureReader, CaptureWriter, WriterOptions};

fn inspect(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgt-inspect"))
        .args(args)
        .output()
        .expect("run vgt-inspect")
}

fn repack(input: &Path, output: &Path, compression: &str) -> Output {
    let o = inspect(&[
        Path::new("repack"),
        input,
        output,
        Path::new("--compression"),
        Path::new(compression),
    ]);
    assert!(
        o.status.success(),
        "repack {} -> {}: {}",
        input.display(),
        output.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// The record's debug form with every blob reference's file offset removed.
fn without_offsets(rec: &Record) -> String {
    let text = format!("{rec:?}");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(", offset: ") {
        out.push_str(&rest[..at]);
        rest = rest[at + ", offset: ".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Every record of `b` equals the one of `a` with the same id, except for blob offsets; every
/// payload resolves to the same bytes; blobs shared in `a` are shared in `b` and no others.
fn same_capture(a: &Path, b: &Path) {
    let ra = CaptureReader::open(a).unwrap();
    let rb = CaptureReader::open(b).unwrap();
    assert!(
        rb.health().is_clean() && rb.health().indexed,
        "{:?}",
        rb.health()
    );
    assert_eq!(ra.len(), rb.len());
    assert_eq!(ra.frames().unwrap(), rb.frames().unwrap());
    assert_eq!(ra.header().created_unix_ns, rb.header().created_unix_ns);
    let mut a_to_b: HashMap<u64, u64> = HashMap::new();
    let mut b_to_a: HashMap<u64, u64> = HashMap::new();
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    for id in 0..ra.len() {
        let (x, y) = (ra.record(id).unwrap(), rb.record(id).unwrap());
        assert_eq!(without_offsets(&x), without_offsets(&y), "record {id}");
        for (p, q) in x.body.payloads().into_iter().zip(y.body.payloads()) {
            match (p, q) {
                (Payload::Inline(s), Payload::Inline(t)) => assert_eq!(s, t),
                (Payload::Blob(s), Payload::Blob(t)) => {
                    assert_eq!((s.hash, s.len), (t.hash, t.len), "record {id}");
                    assert_eq!(*a_to_b.entry(s.offset).or_insert(t.offset), t.offset);
                    assert_eq!(*b_to_a.entry(t.offset).or_insert(s.offset), s.offset);
                }
                other => panic!("record {id}: payload form changed: {other:?}"),
            }
            ra.read_payload_into(p, &mut pa).unwrap();
            rb.read_payload_into(q, &mut pb).unwrap();
            assert!(pa == pb, "record {id}: payload bytes differ");
        }
    }
    let sb = rb.index_stats().unwrap();
    if let Some(sa) = ra.index_stats() {
        assert_eq!(sa.per_kind, sb.per_kind);
        // Distinct contents; the writers' dedup_hits and raw_payload_bytes count `store`
        // calls, and a recorder may reuse one stored payload in two records without a second
        // call (the sharing itself is compared above, offset by offset).
        assert_eq!(sa.payloads.blobs, sb.payloads.blobs);
    }
    assert!(rb.verify().unwrap().is_clean());
}

fn blob_codecs(path: &Path) -> Vec<u8> {
    let r = CaptureReader::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut codecs = Vec::new();
    for id in 0..r.len() {
        for p in r.record(id).unwrap().body.payloads() {
            if let Payload::Blob(b) = p {
                codecs.push(bytes[b.offset as usize + 16 + 24]);
            }
        }
    }
    codecs.sort_unstable();
    codecs.dedup();
    codecs
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn real_samples_repack_to_lz4_and_zstd_with_identical_records_and_payloads() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["boot", "fb", "modes", "cursor"] {
        let sample = samples_dir().join(format!("{name}.vgt"));
        let lz4 = dir.path().join(format!("{name}-lz4.vgt"));
        let zstd = dir.path().join(format!("{name}-zstd.vgt"));
        repack(&sample, &lz4, "lz4");
        same_capture(&sample, &lz4);
        let o = repack(&lz4, &zstd, "zstd:19");
        same_capture(&lz4, &zstd);
        assert!(
            len(&zstd) < len(&lz4),
            "{name}: zstd {} vs lz4 {}",
            len(&zstd),
            len(&lz4)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(&format!("{} bytes", len(&lz4)))
                && text.contains(&format!("{} bytes", len(&zstd))),
            "{text}"
        );
        let minor = |p: &Path| CaptureReader::open(p).unwrap().header().version_minor;
        assert_eq!((minor(&lz4), minor(&zstd)), (1, 2), "{name}");
        assert!(!blob_codecs(&lz4).contains(&2), "{name}");
        assert!(blob_codecs(&zstd).contains(&2), "{name}");
        assert!(!blob_codecs(&zstd).contains(&1), "{name}");
    }
}

fn synthetic(dir: &Path) -> PathBuf {
    let path = dir.join("boot.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(64, 48, 12).unwrap();
    b.lifecycle(LifecycleKind::End, "capture finished").unwrap();
    b.finish().unwrap();
    path
}

#[test]
fn repack_refuses_to_overwrite_its_input_by_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path());
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link.vgt");
    std::fs::hard_link(&input, &link).unwrap();
    for out in [input.clone(), link, dir.path().join(".").join("boot.vgt")] {
        let o = inspect(&[Path::new("repack"), &input, &out]);
        assert_eq!(o.status.code(), Some(1), "{}", out.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("refusing to overwrite the input"), "{err}");
    }
    assert!(std::fs::read(&input).unwrap() == before);
}

#[test]
fn repack_of_a_file_that_is_not_a_capture_is_one_error_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(
        &input,
        b"these are not the bytes you are looking for\n".repeat(10),
    )
    .unwrap();
    let out = dir.path().join("out.vgt");
    let o = inspect(&[Path::new("repack"), &input, &out]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot open") && err.contains("not a vgt capture"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "nothing written"
    );
}

#[test]
fn repack_of_a_damaged_capture_names_the_damage_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path());
    let mut bytes = std::fs::read(&input).unwrap();
    let r = CaptureReader::open(&input).unwrap();
    let at = r.record_offset(3).unwrap() as usize + 20;
    bytes[at] ^= 0xFF;
    // Without the index the reader scans and meets the damage while opening.
    let cut = r.index_stats().unwrap().payloads.file_bytes as usize;
    std::fs::write(&input, &bytes[..cut]).unwrap();
    let out = dir.path().join("out.vgt");
    let o = inspect(&[Path::new("repack"), &input, &out]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is damaged at byte") && err.contains("repack copies only intact"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn repack_of_a_cut_capture_writes_its_complete_records_as_a_finished_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = synthetic(dir.path());
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.vgt");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = dir.path().join("out.vgt");
    let o = repack(&cut, &out, "zstd");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("the input was cut at byte"), "{text}");
    same_capture(&cut, &out);
    let r = CaptureReader::open(&out).unwrap();
    assert!(r.health().indexed && r.health().is_clean());
    assert!(!r.is_empty() && r.len() < CaptureReader::open(&full).unwrap().len());
}

#[test]
fn bad_compression_spec_is_refused_by_the_argument_parser() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path());
    let out = dir.path().join("out.vgt");
    let o = inspect(&[
        Path::new("repack"),
        &input,
        &out,
        Path::new("--compression"),
        Path::new("zstd:99"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("zstd level \"99\" is not a number from 1 to 22"),
        "{err}"
    );
    assert!(!out.exists());
}
