//! Sessions one after another in one process leave no file descriptor behind: vgt-capture
//! `--keep-listening` serves one connection after another for as long as it runs, so a
//! descriptor lost per session ends, after about a thousand reconnections (the usual limit of
//! 1024), in EMFILE for the next one. Its own test binary: the other tests' threads open and
//! close descriptors meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use vgt_capture::recorder::Recorder;
use vgt_capture::session::{EndReason, Session, SessionConfig};
use vgt_device::DeviceConfig;

fn open_descriptors() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!("{:?} -> {}", e.file_name(), target.display()))
        })
        .collect();
    v.sort();
    v
}

/// One session: handshake, a command answered, the front-end gone, the file finished.
fn session(dir: &std::path::Path, n: usize) {
    let (client, server) = UnixStream::pair().unwrap();
    let path = dir.join(format!("s{n}.vgt"));
    let sink =
        vgt_capture::sink::open_file(&path, vgt_capture::server::SyncMode::CrashSafe).unwrap();
    let recorder = Arc::new(Recorder::new(sink));
    let config = SessionConfig {
        device: DeviceConfig::default(),
    };
    let session = Session::start(server, recorder, &config).unwrap();
    let mut fe = TestFrontend::handshake(client, DisplayAnswers::default());
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(1, 2, 8, 8)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    drop(fe);
    let reason = common::wait_end(&session, "session did not end");
    assert_eq!(reason, EndReason::Disconnect);
    session.end(reason).unwrap();
}

#[test]
fn sessions_one_after_another_leave_no_descriptor_open() {
    let dir = tempfile::tempdir().unwrap();
    // The first session opens what lives for the process (none expected, but not counted).
    session(dir.path(), 0);
    // The test front-end's ticker thread holds duplicates of the call eventfds for up to a
    // second after its session (it sleeps between ticks).
    std::thread::sleep(Duration::from_millis(1200));
    let before = open_descriptors();
    for n in 1..=5 {
        session(dir.path(), n);
    }
    let start = Instant::now();
    let mut after = open_descriptors();
    while after != before && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        after = open_descriptors();
    }
    assert_eq!(
        after, before,
        "descriptors left open by five sessions (before, then after)"
    );
}
