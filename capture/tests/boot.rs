//! The Linux boot sequence through the real vhost-user path into a capture file, read back and
//! checked field by field against what the test front-end sent and received.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Buf, DisplayAnswers, F_WRITE, Pushed, gpu, start_in_process};
use vgt_capture::session::EndReason;
use vgt_format::record::{CursorAction, Direction, LifecycleKind, RecordBody};
use vm_memory::Bytes;

const W: u32 = 64;
const H: u32 = 48;

/// Guest framebuffer pixels (B, G, R, X), deterministic.
fn pixels(seed: u32) -> Vec<u8> {
    (0..W * H)
        .flat_map(|i| {
            let v = i.wrapping_mul(2654435761).wrapping_add(seed);
            [v as u8, (v >> 8) as u8, (v >> 16) as u8, 0]
        })
        .collect()
}

/// The bytes a command record's request must hold: the out-buffers concatenated.
fn request_of(bufs: &[Buf]) -> Vec<u8> {
    bufs.iter()
        .filter_map(|b| match b {
            Buf::Out(v) => Some(v.clone()),
            Buf::In(_) => None,
        })
        .flatten()
        .collect()
}

struct Sent {
    pushed: Pushed,
    request: Vec<u8>,
    used_len: u32,
    response: Vec<u8>,
}

#[test]
fn linux_boot_sequence_is_captured_field_by_field() {
    let answers = DisplayAnswers::default();
    let mut t = start_in_process(answers.clone());
    let mut sent: Vec<Sent> = Vec::new();
    let mut run = |t: &mut common::InProcess, q: u16, bufs: Vec<Buf>, indirect: bool| {
        let (pushed, used_len, response) = t.fe.command(q, &bufs, indirect);
        sent.push(Sent {
            pushed,
            request: request_of(&bufs),
            used_len,
            response: response.clone(),
        });
        response
    };

    // Probe: EDID then display info (what virtio_gpu_init sends).
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::get_edid(0)), Buf::In(1056)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1104);
    let size = u32::from_le_bytes(r[24..28].try_into().unwrap()) as usize;
    assert_eq!(&r[32..32 + size], &answers.edid[..], "EDID comes from QEMU");
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::get_display_info()), Buf::In(408)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1101);
    assert_eq!(
        u32::from_le_bytes(r[32..36].try_into().unwrap()),
        answers.width
    );

    // fbdev: dumb buffer as a 2D resource with a two-piece scatter list.
    let fb = pixels(1);
    let split = 5000usize;
    let a = t.fe.put(&fb[..split]);
    let b = t.fe.put(&fb[split..]);
    let entries = [(a, split as u32), (b, (fb.len() - split) as u32)];
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::create_2d(2, 2, W, H)), Buf::In(24)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let r = run(
        &mut t,
        0,
        vec![
            Buf::Out(gpu::attach_backing(2, 2)),
            Buf::Out(gpu::mem_entries(&entries)),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let full = [0, 0, W, H];
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::transfer_2d(2, full, 0, None)), Buf::In(24)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::set_scanout(0, 2, full)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::flush(2, full)), Buf::In(24)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);

    // Console damage: rewrite a rectangle in guest memory, transfer and flush it.
    let fb2 = {
        let mut v = fb.clone();
        let new = pixels(99);
        for y in 10..20u32 {
            for x in 8..40u32 {
                let o = ((y * W + x) * 4) as usize;
                v[o..o + 4].copy_from_slice(&new[o..o + 4]);
            }
        }
        v
    };
    t.fe.mem
        .write_slice(&fb2[..split], vm_memory::GuestAddress(a))
        .unwrap();
    t.fe.mem
        .write_slice(&fb2[split..], vm_memory::GuestAddress(b))
        .unwrap();
    let damage = [8, 10, 32, 10];
    let offset = u64::from(8 * 4 + 10 * W * 4);
    let r = run(
        &mut t,
        0,
        vec![
            Buf::Out(gpu::transfer_2d(2, damage, offset, None)),
            Buf::In(24),
        ],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let r = run(
        &mut t,
        0,
        vec![Buf::Out(gpu::flush(2, damage)), Buf::In(24)],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);

    // Cursor: 64x64 ARGB resource, fenced transfer, UPDATE_CURSOR then MOVE_CURSOR.
    let cursor: Vec<u8> = (0..64 * 64 * 4u32).map(|i| (i * 31 + 5) as u8).collect();
    let c = t.fe.put(&cursor);
    run(
        &mut t,
        0,
        vec![Buf::Out(gpu::create_2d(3, 1, 64, 64)), Buf::In(24)],
        true,
    );
    run(
        &mut t,
        0,
        vec![
            Buf::Out(gpu::attach_backing(3, 1)),
            Buf::Out(gpu::mem_entries(&[(c, cursor.len() as u32)])),
            Buf::In(24),
        ],
        true,
    );
    let r = run(
        &mut t,
        0,
        vec![
            Buf::Out(gpu::transfer_2d(3, [0, 0, 64, 64], 0, Some(7))),
            Buf::In(24),
        ],
        true,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    assert_eq!(
        u32::from_le_bytes(r[4..8].try_into().unwrap()) & 1,
        1,
        "fence echoed"
    );
    let r = run(
        &mut t,
        1,
        vec![Buf::Out(gpu::update_cursor(0, 100, 50, 3, 4, 5))],
        false,
    );
    assert!(r.is_empty());
    run(
        &mut t,
        1,
        vec![Buf::Out(gpu::move_cursor(0, 120, 60))],
        false,
    );

    let display = t.fe.wait_display(10);
    // Power-off: QEMU stops the rings; the bases it reads back are where the guest is.
    let avail: Vec<u32> = t.fe.queues.iter().map(|q| u32::from(q.avail_idx)).collect();
    assert_eq!(t.fe.stop(), avail);
    let features = t.fe.features;
    let config = t.fe.config.clone();
    let capture = t.capture.clone();
    let common::InProcess {
        fe,
        session,
        dir: _dir,
        ..
    } = t;
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();

    // ---- read it back ----
    let (reader, records) = common::read_capture(&capture);
    assert!(reader.health().is_clean(), "{:?}", reader.health());
    let bytes = |p: &vgt_format::Payload| reader.read_payload(p).unwrap().into_owned();

    // Session start.
    let RecordBody::SessionStart(s) = &records[0].body else {
        panic!("first record is {:?}", records[0].body.kind())
    };
    assert_eq!(s.tool, "vgt-capture");
    assert_eq!(s.mode, vgt_format::record::CaptureMode::BuiltIn);
    assert_eq!(s.renderer, "rutabaga_gfx 0.1.85 2d");
    assert_eq!(s.features_offered, features);
    assert_eq!(
        bytes(&s.device_config),
        config,
        "config space as GET_CONFIG returned it"
    );
    assert_eq!(s.num_queues, 2);

    // vhost-user: QEMU 10's order, fds, raw payloads, replies.
    let front: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::VhostUser(m) if m.direction == Direction::FrontToBack => Some(m),
            _ => None,
        })
        .collect();
    let codes: Vec<u32> = front.iter().map(|m| m.request).collect();
    // QEMU 10's order as recorded from a real boot (start, then power-off).
    assert_eq!(
        codes,
        [
            1, 15, 16, 17, 3, 1, 13, 14, 13, 14, 24, 24, 33, 13, 13, 2, 5, 8, 10, 9, 12, 8, 10, 9,
            12, 18, 18, 18, 18, 11, 11, 13, 13
        ]
    );
    let fds: Vec<u8> = front.iter().map(|m| m.fd_count).collect();
    assert_eq!(
        fds,
        [
            0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
            0, 0, 1, 1
        ]
    );
    assert_eq!(
        bytes(&front[15].payload),
        features.to_le_bytes(),
        "SET_FEATURES payload"
    );
    let table = bytes(&front[16].payload);
    assert_eq!(
        u32::from_le_bytes(table[0..4].try_into().unwrap()),
        1,
        "one region"
    );
    assert_eq!(
        u64::from_le_bytes(table[8..16].try_into().unwrap()),
        0,
        "region gpa"
    );
    assert_eq!(
        u64::from_le_bytes(table[16..24].try_into().unwrap()),
        common::MEM_SIZE as u64
    );
    assert!(front.iter().all(|m| m.flags & 3 == 1), "version bits");
    let replies: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::VhostUser(m) if m.direction == Direction::BackToFront => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(replies[0].request, 1);
    assert_eq!(replies[0].flags & 4, 4, "REPLY flag");
    assert_eq!(bytes(&replies[0].payload), features.to_le_bytes());

    // Commands and responses, in order, byte for byte.
    let commands: Vec<(u64, &vgt_format::record::CommandRecord)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.body {
            RecordBody::Command(c) => Some((i as u64, c)),
            _ => None,
        })
        .collect();
    assert_eq!(commands.len(), sent.len());
    for ((id, c), s) in commands.iter().zip(&sent) {
        assert_eq!(c.queue, s.pushed.queue);
        assert_eq!(c.head, s.pushed.head);
        assert_eq!(bytes(&c.request), s.request);
        let walked: Vec<_> = c
            .descriptors
            .iter()
            .map(|d| (d.addr, d.len, d.flags, d.next))
            .collect();
        assert_eq!(walked, s.pushed.descriptors);
        let wl: u32 = s.pushed.writable.iter().map(|w| w.1).sum();
        assert_eq!(c.writable_len, wl);
        let resp: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Response(x) if x.command == *id => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(resp.len(), 1, "one response for command {id}");
        assert_eq!(resp[0].used_len, s.used_len);
        assert_eq!(bytes(&resp[0].bytes), s.response);
        assert_eq!(resp[0].head, s.pushed.head);
        assert!(
            s.pushed.descriptors.iter().any(|d| d.2 & F_WRITE != 0) || s.used_len == 0,
            "no writable, no bytes"
        );
    }

    // Memory reads: the full transfer read exactly the backing, the damage transfer the new
    // pixels of its rectangle.
    let backing_at = |fbv: &[u8], addr: u64, len: usize| -> Vec<u8> {
        let off = if addr >= b {
            split as u64 + (addr - b)
        } else {
            addr - a
        } as usize;
        fbv[off..off + len].to_vec()
    };
    let reads_of = |cmd: u64| -> Vec<(u64, Vec<u8>)> {
        records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::MemoryRead(m) if m.command == cmd => Some((m.addr, bytes(&m.data))),
                _ => None,
            })
            .collect()
    };
    let full_transfer = commands[4].0;
    let reads = reads_of(full_transfer);
    let total: usize = reads.iter().map(|r| r.1.len()).sum();
    assert_eq!(total, fb.len(), "the full transfer read the whole backing");
    for (addr, data) in &reads {
        assert_eq!(data, &backing_at(&fb, *addr, data.len()));
    }
    let damage_transfer = commands[7].0;
    let reads = reads_of(damage_transfer);
    assert!(!reads.is_empty());
    for (addr, data) in &reads {
        assert_eq!(data, &backing_at(&fb2, *addr, data.len()));
    }

    // Frames: the whole scanout, equal to the guest's pixels after each flush.
    let frames: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(frames.len() >= 2);
    let last_full = frames
        .iter()
        .rev()
        .find(|f| f.command == commands[6].0 || f.command == commands[5].0)
        .expect("a frame from SET_SCANOUT or the first flush");
    assert_eq!(
        (last_full.width, last_full.height, last_full.stride),
        (W, H, W * 4)
    );
    assert_eq!(bytes(&last_full.pixels), fb);
    let after_damage = frames.last().unwrap();
    assert_eq!(after_damage.command, commands[8].0);
    assert_eq!(after_damage.rect, damage);
    assert_eq!(bytes(&after_damage.pixels), fb2);
    assert_eq!(after_damage.resource_id, 2);

    // Display socket: what QEMU received equals the GpuSocket records, in order.
    let sock: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::GpuSocket(g) if g.direction == Direction::BackendRequest => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(sock.len(), display.len());
    for (g, d) in sock.iter().zip(&display) {
        assert_eq!(g.request, d.request);
        let wire = g
            .wire_payload(|p| Ok::<_, std::convert::Infallible>(bytes(p)))
            .unwrap();
        assert_eq!(wire, d.payload);
        // Only an UPDATE with pixels keeps them apart, after its 20-byte header.
        assert_eq!(g.data.is_some(), d.request == 8 && d.payload.len() > 20);
        if g.data.is_some() {
            assert_eq!(g.payload.len(), 20);
        }
    }
    // A full-screen UPDATE's pixels are stored once: its `data` is the blob of the Frame
    // showing the same pixels.
    let full_update = sock
        .iter()
        .find(|g| {
            g.data
                .as_ref()
                .is_some_and(|d| d.len() == u64::from(W * H * 4))
        })
        .expect("a full-screen UPDATE");
    let (Some(vgt_format::Payload::Blob(data)), vgt_format::Payload::Blob(pixels)) =
        (&full_update.data, &last_full.pixels)
    else {
        panic!("full-screen pixels are stored as blobs");
    };
    assert_eq!((data.hash, data.offset), (pixels.hash, pixels.offset));
    let codes: Vec<u32> = display.iter().map(|d| d.request).collect();
    // GET/SET_PROTOCOL_FEATURES, GET_EDID, GET_DISPLAY_INFO, SCANOUT + UPDATE (SET_SCANOUT),
    // UPDATE (flush), UPDATE (damage flush), CURSOR_UPDATE, CURSOR_POS.
    assert_eq!(codes, [1, 2, 11, 3, 7, 8, 8, 8, 6, 4]);
    let scanout = display.iter().find(|d| d.request == 7).unwrap();
    assert_eq!(
        scanout.payload,
        [0, 0, 0, 0, W as u8, 0, 0, 0, H as u8, 0, 0, 0]
    );
    let update = display.iter().rev().find(|d| d.request == 8).unwrap();
    let mut expect = Vec::new();
    for v in [0u32, 8, 10, 32, 10] {
        expect.extend_from_slice(&v.to_le_bytes());
    }
    for y in 10..20u32 {
        let o = ((y * W + 8) * 4) as usize;
        expect.extend_from_slice(&fb2[o..o + 32 * 4]);
    }
    assert_eq!(update.payload, expect, "UPDATE carries the damaged pixels");
    let replies: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::GpuSocket(g) if g.direction == Direction::BackendReply => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies.iter().map(|g| g.request).collect::<Vec<_>>(),
        [1, 11, 3]
    );
    assert_eq!(
        bytes(&replies[0].payload),
        answers.protocol_features.to_le_bytes()
    );

    // Cursor and fence.
    let cursors: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Cursor(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(cursors.len(), 2);
    assert_eq!(cursors[0].action, CursorAction::Update);
    assert_eq!(
        (
            cursors[0].x,
            cursors[0].y,
            cursors[0].hot_x,
            cursors[0].hot_y
        ),
        (100, 50, 4, 5)
    );
    assert_eq!(bytes(cursors[0].image.as_ref().unwrap()), cursor);
    assert_eq!(cursors[1].action, CursorAction::Move);
    assert_eq!((cursors[1].x, cursors[1].y), (120, 60));
    let fence = records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Fence(f) => Some(*f),
            _ => None,
        })
        .expect("fence record");
    assert_eq!(fence.fence_id, 7);
    assert_eq!(fence.command, commands[11].0);

    // Lifecycle: connect first, queues started, disconnect and end last.
    let life: Vec<LifecycleKind> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) => Some(l.kind),
            _ => None,
        })
        .collect();
    assert_eq!(life.first(), Some(&LifecycleKind::Connect));
    assert!(life.contains(&LifecycleKind::QueueStart));
    assert!(life.contains(&LifecycleKind::DriverOk));
    assert!(!life.contains(&LifecycleKind::ValidationError), "{life:?}");
    assert_eq!(life.last(), Some(&LifecycleKind::End));
    let mut ts = 0;
    for r in &records {
        assert!(r.ts_ns >= ts, "timestamps are monotonic");
        ts = r.ts_ns;
    }
}
