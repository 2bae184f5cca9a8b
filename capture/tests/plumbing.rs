//! Smoke test of the vhost-user path: handshake, a command through the relay and daemon, a
//! response, and the records that come out.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use vgt_capture::recorder::Recorder;
use vgt_capture::session::{EndReason, Session, SessionConfig};
use vgt_capture::sink::MemorySink;
use vgt_format::record::{Direction, RecordBody};

#[test]
fn handshake_and_command_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sock");
    let listener = UnixListener::bind(&path).unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let (server, _) = listener.accept().unwrap();
    let sink = MemorySink::default();
    let recorder = Arc::new(Recorder::new(Box::new(sink.clone())));
    let config = SessionConfig {
        device: vgt_device::DeviceConfig::default(),
    };
    let session = Session::start(server, recorder, &config).unwrap();
    let mut fe = TestFrontend::handshake(client, DisplayAnswers::default());
    let (_, len, resp) = fe.command(0, &[Buf::Out(gpu::get_display_info()), Buf::In(408)], false);
    assert!(len >= 24);
    assert!(gpu::resp_type(&resp) >= 0x1100);
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();
    let records = sink.records.lock().unwrap().clone();
    assert!(matches!(records[0].body, RecordBody::SessionStart(_)));
    let reqs: Vec<u32> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::VhostUser(m) if m.direction == Direction::FrontToBack => Some(m.request),
            _ => None,
        })
        .collect();
    assert_eq!(&reqs[..8], &[1, 15, 16, 17, 3, 1, 13, 14]);
    for r in &records {
        eprintln!("{:?}", r.body.kind().name());
    }
    assert!(
        records
            .iter()
            .any(|r| matches!(r.body, RecordBody::Command(_)))
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.body, RecordBody::Response(_)))
    );
    assert!(*sink.finished.lock().unwrap());
}
