//! The real `vgt-capture` binary as a child process: SIGTERM, a front-end that disconnects
//! mid-stream, SIGKILL (crash-safe mode), and --keep-listening each leave capture files that
//! open and hold every command up to that point.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use vgt_format::record::{LifecycleKind, RecordBody};

fn spawn(dir: &Path, extra: &[&str]) -> (Child, PathBuf, PathBuf) {
    let sock = dir.join("vgpu.sock");
    let out = dir.join("trace.vgt");
    let child = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .arg("--socket")
        .arg(&sock)
        .arg("-o")
        .arg(&out)
        .arg("--quiet")
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock, out)
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "vgt-capture did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0);
}

/// Sends `n` distinct commands and waits for each; returns their request bytes.
fn traffic(fe: &mut TestFrontend, n: u32, first_id: u32) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for i in 0..n {
        let req = gpu::create_2d(first_id + i, 2, 16 + i, 16);
        let (_, _, r) = fe.command(0, &[Buf::Out(req.clone()), Buf::In(24)], i % 2 == 0);
        assert_eq!(gpu::resp_type(&r), 0x1100);
        sent.push(req);
    }
    sent
}

fn command_requests(
    path: &Path,
) -> (
    vgt_format::file::CaptureReader,
    Vec<Vec<u8>>,
    Vec<vgt_format::Record>,
) {
    let (reader, records) = common::read_capture(path);
    let reqs = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Command(c) => Some(reader.read_payload(&c.request).unwrap().into_owned()),
            _ => None,
        })
        .collect();
    (reader, reqs, records)
}

fn end_message(records: &[vgt_format::Record]) -> Option<String> {
    records.iter().rev().find_map(|r| match &r.body {
        RecordBody::Lifecycle(l) if l.kind == LifecycleKind::End => Some(l.message.clone()),
        _ => None,
    })
}

#[test]
fn sigterm_finishes_the_file_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &[]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let sent = traffic(&mut fe, 6, 100);
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    let (reader, reqs, records) = command_requests(&out);
    assert!(
        reader.health().is_clean() && reader.health().indexed,
        "{:?}",
        reader.health()
    );
    assert_eq!(reqs, sent);
    assert_eq!(end_message(&records).as_deref(), Some("stopped by signal"));
    assert!(!sock.exists(), "the socket is removed on exit");
}

#[test]
fn disconnect_mid_stream_keeps_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &["--sync", "crash-safe"]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let sent = traffic(&mut fe, 5, 200);
    // One more chain pushed, then the front-end vanishes without waiting for it.
    let last = gpu::create_2d(300, 2, 8, 8);
    fe.push(0, &[Buf::Out(last.clone()), Buf::In(24)], false);
    drop(fe);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    let (reader, reqs, records) = command_requests(&out);
    assert!(reader.health().is_clean(), "{:?}", reader.health());
    assert!(reqs.len() == sent.len() || reqs.len() == sent.len() + 1);
    assert_eq!(&reqs[..sent.len()], &sent[..]);
    if reqs.len() > sent.len() {
        assert_eq!(reqs[sent.len()], last);
    }
    assert_eq!(
        end_message(&records).as_deref(),
        Some("front-end disconnected")
    );
    assert!(records.iter().any(
        |r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Disconnect)
    ));
}

#[test]
fn sigkill_in_crash_safe_mode_loses_no_command() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &[]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let sent = traffic(&mut fe, 8, 400);
    // Read while it is being recorded: every answered command is there already. A read that
    // races the recording of some record (reading forward, it can meet the record's start
    // before the writer stored it and its end after) sees a gap there, once: read again until
    // one read meets no write in flight. Each read holds every answered command.
    let mut reads = 0;
    let live = loop {
        let (live, reqs, _) = command_requests(&out);
        assert_eq!(reqs, sent, "the file is readable while recording");
        reads += 1;
        if live.health().is_clean() || reads == 50 {
            break live;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(live.health().is_clean(), "{:?}", live.health());
    // One more command in flight, not waited for: it may or may not be recorded.
    let last = gpu::create_2d(499, 2, 8, 8);
    fe.push(0, &[Buf::Out(last.clone()), Buf::In(24)], false);
    signal(&child, libc::SIGKILL);
    let _ = wait_exit(&mut child);
    drop(fe);
    let (reader, reqs, _) = command_requests(&out);
    let h = reader.health();
    assert!(!h.indexed, "no index after a kill");
    // Unfinished, nothing else: the mapped file ends in the zeros of its reserved space.
    assert!(h.corrupt.is_empty(), "{h:?}");
    assert!(h.zero_tail > 0, "{h:?}");
    // (A record being copied at the moment of the kill may be cut: `truncated_at`.)
    assert_eq!(
        &reqs[..sent.len()],
        &sent[..],
        "every answered command is in the file"
    );
    assert!(reqs.len() <= sent.len() + 1);
    if reqs.len() > sent.len() {
        assert_eq!(reqs[sent.len()], last);
    }
}

#[test]
fn keep_listening_writes_one_numbered_file_per_connection() {
    keep_listening("buffered");
}

#[test]
fn keep_listening_in_crash_safe_mode_finishes_each_mapped_file_to_its_length() {
    keep_listening("crash-safe");
}

fn keep_listening(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &["--keep-listening", "--sync", sync]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let first = traffic(&mut fe, 3, 500);
    drop(fe);
    let second_path = dir.path().join("trace-1.vgt");
    // The second connection is accepted once the first file is finished.
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let second = traffic(&mut fe, 4, 600);
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    drop(fe);
    let (r1, reqs1, rec1) = command_requests(&out);
    // Indexed: the footer is at the very end, so no reserved space was left behind.
    assert!(r1.health().is_clean() && r1.health().indexed);
    assert_eq!(reqs1, first);
    assert_eq!(
        end_message(&rec1).as_deref(),
        Some("front-end disconnected")
    );
    let (r2, reqs2, rec2) = command_requests(&second_path);
    assert!(r2.health().is_clean() && r2.health().indexed);
    assert_eq!(reqs2, second);
    assert_eq!(end_message(&rec2).as_deref(), Some("stopped by signal"));
    assert!(matches!(rec2[0].body, RecordBody::SessionStart(_)));
}

#[test]
fn bad_arguments_are_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args([
            "--socket",
            "/nonexistent-dir/x.sock",
            "-o",
            "/tmp/x.vgt",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot listen on /nonexistent-dir/x.sock"),
        "{err}"
    );
}

#[test]
fn no_record_serves_without_writing_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &["--no-record"]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    traffic(&mut fe, 3, 700);
    drop(fe);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(!out.exists(), "--no-record writes nothing");
}

#[test]
fn compression_zstd_writes_a_1_2_file_whose_blobs_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, sock, out) = spawn(dir.path(), &["--compression", "zstd:5"]);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let mut sent = traffic(&mut fe, 2, 500);
    // A request long enough to be a blob: 64 backing pages for resource 500.
    let entries: Vec<(u64, u32)> = (0..64).map(|_| (fe.alloc(4096), 4096)).collect();
    let mut req = gpu::attach_backing(500, 64);
    req.extend_from_slice(&gpu::mem_entries(&entries));
    let (_, _, r) = fe.command(0, &[Buf::Out(req.clone()), Buf::In(24)], false);
    assert_eq!(gpu::resp_type(&r), 0x1100);
    sent.push(req);
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child).success());
    let (reader, reqs, records) = command_requests(&out);
    assert!(reader.health().is_clean(), "{:?}", reader.health());
    assert_eq!(reader.header().version_minor, 2);
    assert_eq!(reqs, sent);
    let bytes = std::fs::read(&out).unwrap();
    let zstd_blobs = records
        .iter()
        .flat_map(|r| r.body.payloads())
        .filter_map(|p| match p {
            vgt_format::record::Payload::Blob(b) => Some(bytes[b.offset as usize + 16 + 24]),
            _ => None,
        })
        .filter(|&codec| codec == 2)
        .count();
    assert!(zstd_blobs >= 1, "the backing request is a zstd blob");
}

#[test]
fn bad_compression_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["-o", "x.vgt", "--compression", "brotli"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown compression \"brotli\": expected none, lz4, zstd or zstd:LEVEL"),
        "{err}"
    );
    assert!(!dir.path().join("s.sock").exists());
    let o = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .arg("proxy")
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args([
            "--backend",
            "b.sock",
            "-o",
            "x.vgt",
            "--compression",
            "zstd:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("zstd level \"0\" is not a number from 1 to 22"),
        "{err}"
    );
}
