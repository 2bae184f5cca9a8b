//! Crash-safe mode batches a command's output records (response, display messages, frame) into
//! the next write, but they must reach the OS before the guest's used-queue interrupt: a reader
//! of the unfinished file, right after each completion, finds them all.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Buf, DisplayAnswers, gpu, start_in_process};
use vgt_capture::session::EndReason;
use vgt_format::file::CaptureReader;
use vgt_format::record::{Direction, RecordBody};

const W: u32 = 16;
const H: u32 = 8;

#[test]
fn crash_safe_outputs_are_in_the_file_when_the_guest_is_signalled() {
    // `command` returns after the call eventfd fired, like a guest's interrupt.
    let mut t = start_in_process(DisplayAnswers::default());
    let len = (W * H * 4) as usize;
    let pixels: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
    let backing = t.fe.put(&pixels);
    let full = [0, 0, W, H];
    let commands = [
        vec![Buf::Out(gpu::create_2d(2, 2, W, H)), Buf::In(24)],
        vec![
            Buf::Out(gpu::attach_backing(2, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, len as u32)])),
            Buf::In(24),
        ],
        vec![Buf::Out(gpu::set_scanout(0, 2, full)), Buf::In(24)],
        vec![Buf::Out(gpu::transfer_2d(2, full, 0, None)), Buf::In(24)],
        vec![Buf::Out(gpu::flush(2, full)), Buf::In(24)],
    ];
    for (n, bufs) in commands.iter().enumerate() {
        let (_, _, r) = t.fe.command(0, bufs, true);
        assert_eq!(gpu::resp_type(&r), 0x1100);
        // The session is still running: read what reached the OS so far.
        let reader = CaptureReader::open_scanning(&t.capture).unwrap();
        let records: Vec<_> = reader.iter().map(|r| r.unwrap().1).collect();
        let commands_seen = records
            .iter()
            .filter(|r| matches!(r.body, RecordBody::Command(_)))
            .count();
        assert_eq!(
            commands_seen,
            n + 1,
            "command {n}: its record is in the file"
        );
        let last_command = records
            .iter()
            .rposition(|r| matches!(r.body, RecordBody::Command(_)))
            .unwrap() as u64;
        let after = &records[last_command as usize + 1..];
        assert!(
            after.iter().any(|r| matches!(&r.body,
                RecordBody::Response(x) if x.command == last_command)),
            "command {n}: its response is in the file before the interrupt"
        );
        if n == 4 {
            // The flush: the display UPDATE and the Frame too, with the guest's pixels.
            let update = after.iter().find_map(|r| match &r.body {
                RecordBody::GpuSocket(m)
                    if m.direction == Direction::BackendRequest && m.request == 8 =>
                {
                    Some(m)
                }
                _ => None,
            });
            let frame = after.iter().find_map(|r| match &r.body {
                RecordBody::Frame(f) => Some(f),
                _ => None,
            });
            let (update, frame) = (update.unwrap(), frame.unwrap());
            assert_eq!(&*reader.read_payload(&frame.pixels).unwrap(), &pixels[..]);
            assert_eq!(update.data.as_ref(), Some(&frame.pixels), "one blob");
        }
    }
    let common::InProcess { fe, session, .. } = t;
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();
}
