//! A QEMU whose main loop stops reading the display socket (it does while it waits for a
//! vhost-user reply) must not wedge the backend: the UPDATE send times out, the failure is
//! recorded, display output stops, and the guest keeps being served.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, Gate, gpu, start_in_process};
use vgt_capture::session::EndReason;
use vgt_format::record::{LifecycleKind, RecordBody};

#[test]
fn stalled_display_socket_times_out_and_serving_continues() {
    let gate = Arc::new(Gate::default());
    let answers = DisplayAnswers {
        stall_after_scanout: Some(gate.clone()),
        ..DisplayAnswers::default()
    };
    let mut t = start_in_process(answers);
    let (w, h) = (1024u32, 768u32);
    let len = (w * h * 4) as usize;
    let backing = t.fe.alloc(len);
    let mut run = |bufs: Vec<Buf>| {
        let (_, _, r) = t.fe.command(0, &bufs, true);
        gpu::resp_type(&r)
    };
    assert_eq!(
        run(vec![Buf::Out(gpu::create_2d(2, 2, w, h)), Buf::In(24)]),
        0x1100
    );
    assert_eq!(
        run(vec![
            Buf::Out(gpu::attach_backing(2, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, len as u32)])),
            Buf::In(24),
        ]),
        0x1100
    );
    // SET_SCANOUT sends SCANOUT then a 3 MiB UPDATE, which no longer fits while QEMU stalls.
    let start = Instant::now();
    assert_eq!(
        run(vec![
            Buf::Out(gpu::set_scanout(0, 2, [0, 0, w, h])),
            Buf::In(24)
        ]),
        0x1100
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "the send waited for the timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(30), "but not forever ({took:?})");
    // Still serving, without display output.
    assert_eq!(
        run(vec![Buf::Out(gpu::flush(2, [0, 0, w, h])), Buf::In(24)]),
        0x1100
    );
    gate.open();
    let capture = t.capture.clone();
    let common::InProcess { fe, session, .. } = t;
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();
    let (_, records) = common::read_capture(&capture);
    let errors: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error => Some(l.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors
            .iter()
            .filter(|m| m.contains("display output stopped"))
            .count(),
        1,
        "{errors:?}"
    );
    // Frames are still recorded for the flush even though QEMU got nothing.
    let frames = records
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Frame(_)))
        .count();
    assert_eq!(frames, 2);
}
