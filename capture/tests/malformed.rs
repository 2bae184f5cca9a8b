//! Malformed guest input: each case gets the right error response (or is dropped), is recorded
//! (command, validation error, response), and the backend goes on serving the next command.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{
    Buf, DisplayAnswers, F_INDIRECT, F_NEXT, F_WRITE, TestFrontend, gpu, start_in_process,
};
use vgt_capture::session::EndReason;
use vgt_format::record::{LifecycleKind, RecordBody};

/// What the guest saw for one command.
#[derive(Debug)]
struct Seen {
    queue: u16,
    head: u16,
    used_len: u32,
    response: Vec<u8>,
    /// Expect a validation-error record for it.
    invalid: bool,
}

/// Pushes raw descriptors already written into the ring at `head`, waits, and returns used len.
fn raw(fe: &mut TestFrontend, queue: u16, head: u16) -> u32 {
    fe.publish(queue, head);
    let (id, len) = fe.wait_used(queue);
    assert_eq!(id, u32::from(head));
    len
}

fn still_serving(fe: &mut TestFrontend, seen: &mut Vec<Seen>) {
    let (p, len, r) = fe.command(0, &[Buf::Out(gpu::get_display_info()), Buf::In(408)], false);
    assert_eq!(gpu::resp_type(&r), 0x1101, "the backend still serves");
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: false,
    });
}

#[test]
fn malformed_requests_are_answered_recorded_and_survived() {
    let mut t = start_in_process(DisplayAnswers::default());
    let fe = &mut t.fe;
    let mut seen = Vec::new();
    // Use ring slots well away from the ones `push` allocates from the start.
    let table = fe.queues[0].desc;

    // 1. A descriptor address outside guest memory: returned with used len 0.
    let resp = fe.alloc(24);
    fe.write_desc(table, 40, (0xdead_0000_0000, 24, F_NEXT, 41));
    fe.write_desc(table, 41, (resp, 24, F_WRITE, 0));
    let len = raw(fe, 0, 40);
    assert_eq!(len, 0);
    seen.push(Seen {
        queue: 0,
        head: 40,
        used_len: 0,
        response: vec![],
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 2. A chain too short for its command: RESOURCE_CREATE_2D cut to 30 bytes.
    let (p, len, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::create_2d(5, 2, 8, 8)[..30].to_vec()),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1205, "ERR_INVALID_PARAMETER");
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 3. No response buffer at all on the control queue.
    let (p, len, r) = fe.command(0, &[Buf::Out(gpu::create_2d(6, 2, 8, 8))], false);
    assert_eq!(len, 0);
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 4. A response buffer too small for the display info: truncated to what fits.
    let (p, len, r) = fe.command(0, &[Buf::Out(gpu::get_display_info()), Buf::In(8)], false);
    assert_eq!(len, 8);
    assert_eq!(gpu::resp_type(&r), 0x1101);
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 5. An indirect table whose entries point at each other.
    let ind = fe.alloc(32);
    let buf = fe.put(&gpu::get_display_info());
    fe.write_desc(ind, 0, (buf, 24, F_NEXT, 1));
    fe.write_desc(ind, 1, (buf, 24, F_NEXT, 0));
    fe.write_desc(table, 42, (ind, 32, F_INDIRECT, 0));
    let len = raw(fe, 0, 42);
    assert_eq!(len, 0);
    seen.push(Seen {
        queue: 0,
        head: 42,
        used_len: 0,
        response: vec![],
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 6. ATTACH_BACKING with nr_entries = 2^32 - 1 (and one real entry).
    let (p, len, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(20, 2, 8, 8)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: false,
    });
    let backing = fe.alloc(256);
    let (p, len, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(20, u32::MAX)),
            Buf::Out(gpu::mem_entries(&[(backing, 256)])),
            Buf::In(24),
        ],
        true,
    );
    assert!(
        gpu::resp_type(&r) >= 0x1200,
        "error response, got {:#x}",
        gpu::resp_type(&r)
    );
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 7. A transfer rectangle outside the resource.
    let (p, len, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(20, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, 256)])),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: false,
    });
    let (p, len, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::transfer_2d(20, [4, 4, 8, 8], 0, None)),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1205, "ERR_INVALID_PARAMETER");
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 8. An unknown command code.
    let (p, len, r) = fe.command(0, &[Buf::Out(gpu::hdr(0x0999, 0, 0)), Buf::In(24)], false);
    assert_eq!(gpu::resp_type(&r), 0x1200, "ERR_UNSPEC");
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);

    // 9. A cursor whose resource is not 64x64: dropped on the cursor queue.
    let (p, len, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(31, 1, 32, 32)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    seen.push(Seen {
        queue: 0,
        head: p.head,
        used_len: len,
        response: r,
        invalid: false,
    });
    let (p, len, r) = fe.command(1, &[Buf::Out(gpu::update_cursor(0, 1, 2, 31, 0, 0))], false);
    assert_eq!(len, 0);
    seen.push(Seen {
        queue: 1,
        head: p.head,
        used_len: len,
        response: r,
        invalid: true,
    });
    still_serving(fe, &mut seen);
    assert!(fe.no_used_within(0, Duration::from_millis(20)));

    let display = fe.display_messages();
    assert!(
        display.iter().all(|m| m.request != 6),
        "no CURSOR_UPDATE for the bad cursor"
    );
    let capture = t.capture.clone();
    let common::InProcess {
        fe,
        session,
        dir: _dir,
        ..
    } = t;
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();

    let (reader, records) = common::read_capture(&capture);
    assert!(reader.health().is_clean());
    let commands: Vec<(u64, &vgt_format::record::CommandRecord)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.body {
            RecordBody::Command(c) => Some((i as u64, c)),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands.len(),
        seen.len(),
        "every chain, good or bad, has a command record"
    );
    for ((id, c), s) in commands.iter().zip(&seen) {
        assert_eq!((c.queue, c.head), (s.queue, s.head));
        let errors: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Lifecycle(l)
                    if l.kind == LifecycleKind::ValidationError && l.command == Some(*id) =>
                {
                    Some(l)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            !errors.is_empty(),
            s.invalid,
            "validation error for {s:?}: {errors:?}"
        );
        for e in &errors {
            assert_eq!(e.queue, Some(s.queue));
            assert!(!e.message.is_empty());
        }
        let resp: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Response(x) if x.command == *id => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(resp.len(), 1, "one response record for {s:?}");
        assert_eq!(resp[0].used_len, s.used_len);
        assert_eq!(
            reader.read_payload(&resp[0].bytes).unwrap().as_ref(),
            &s.response[..]
        );
    }
    // The unparsable chains: descriptors as far as walked, the reason in words.
    let bad_addr = commands[0].1;
    assert_eq!(bad_addr.descriptors.len(), 1);
    assert_eq!(bad_addr.descriptors[0].addr, 0xdead_0000_0000);
    assert!(reader.read_payload(&bad_addr.request).unwrap().is_empty());
    let messages: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::ValidationError => {
                Some(l.message.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(
        messages[0].contains("outside guest memory"),
        "{}",
        messages[0]
    );
    assert!(
        messages.iter().any(|m| m.contains("longer than")),
        "{messages:?}"
    );
    // Nothing crashed.
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash))
    );
}

/// Sends one vhost-user message with a descriptor on the front-end's socket.
fn send_with_fd(fe: &TestFrontend, request: u32, flags: u32, payload: &[u8], fd: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    let mut msg = Vec::new();
    for v in [request, flags, payload.len() as u32] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(payload);
    let sent = fe.raw.send_with_fd(&msg[..], fd.as_raw_fd()).unwrap();
    assert_eq!(sent, msg.len());
}

#[test]
fn memory_regions_their_file_does_not_hold_are_refused_and_survived() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut t = start_in_process(DisplayAnswers::default());
    // A 4 KiB memfd announced as the whole of guest RAM: mapped, the device's next read of
    // guest memory past 4 KiB raised SIGBUS and took vgt-capture down.
    // SAFETY: memfd_create with a valid C string; checked, then owned by the File.
    let fd = unsafe { libc::memfd_create(c"short".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nothing else owns.
    let short = unsafe { std::fs::File::from_raw_fd(fd) };
    short.set_len(4096).unwrap();
    let ram = common::MEM_SIZE as u64;
    let mut table = Vec::new();
    for v in [1u64, 0, ram, 0x7f00_0000_0000, 0] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    // SET_MEM_TABLE with NEED_REPLY: refused with REPLY_ACK's failure value.
    send_with_fd(&t.fe, 5, 0x1 | 0x8, &table, &short);
    let mut reply = [0u8; 20];
    t.fe.raw
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (&t.fe.raw).read_exact(&mut reply).unwrap();
    assert_eq!(reply[0..4], 5u32.to_le_bytes(), "a SET_MEM_TABLE reply");
    assert_eq!(reply[4..8], 5u32.to_le_bytes(), "version 1, reply");
    assert_eq!(reply[8..12], 8u32.to_le_bytes());
    assert_ne!(reply[12..20], [0; 8], "REPLY_ACK says it failed");
    // ADD_MEM_REG without NEED_REPLY (file offset past the end): refused silently.
    let mut region = vec![0u8; 8];
    for v in [ram, 0x1000, 0x7f10_0000_0000, 0x1000] {
        region.extend_from_slice(&v.to_le_bytes());
    }
    send_with_fd(&t.fe, 37, 0x1, &region, &short);
    // The device still serves, from the memory it had.
    let mut seen = Vec::new();
    still_serving(&mut t.fe, &mut seen);
    still_serving(&mut t.fe, &mut seen);
    let (_reader, records) = t.finish();
    let refused: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error => Some(l.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("request 5 refused")
            && refused[0].contains("extend past the end of its 4096-byte file"),
        "{refused:?}"
    );
    assert!(refused[1].contains("request 37 refused"), "{refused:?}");
    // Both requests and the refusal are in the capture as they travelled.
    let vhost: Vec<(u8, u32, u32)> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::VhostUser(m) if m.request == 5 || m.request == 37 => {
                Some((m.direction as u8, m.request, m.flags))
            }
            _ => None,
        })
        .collect();
    let last = &vhost[vhost.len() - 3..];
    assert_eq!(last[0].1, 5);
    assert_eq!((last[1].1, last[1].2), (5, 0x5), "{vhost:?}");
    assert_eq!(last[2].1, 37);
}
