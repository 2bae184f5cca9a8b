//! Replays captures recorded from the real device and checks what replay finds: nothing on an
//! honest capture, the right divergence at the right record on an edited one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use vgt_device::{DeviceConfig, DisplayInfoFromHost, HostDisplay};
use vgt_format::CaptureReader;
use vgt_format::record::{BlobRef, ContentHash, Payload, RecordBody, RecordKind};
use vgt_format::wire::{
    CmdSubmit, Command, CommandType, CtrlHeader, CtxCreate, Format, Request, ResourceCreate3d,
    Response, ResponseType,
};
use vgt_replay::{DivergenceKind, Quiet, ReplayOptions, ReplayReport, Replayer};

fn replay_with(bytes: &[u8], options: ReplayOptions) -> ReplayReport {
    let reader = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    Replayer::new(&reader, options).run(&mut Quiet).unwrap()
}

fn replay(bytes: &[u8]) -> ReplayReport {
    replay_with(bytes, ReplayOptions::default())
}

fn count(bytes: &[u8], kind: RecordKind) -> u64 {
    records(bytes)
        .iter()
        .filter(|(_, r)| r.body.kind() == kind)
        .count() as u64
}

fn assert_clean(report: &ReplayReport) {
    assert!(
        report.divergences.is_empty(),
        "divergences: {:#?}",
        report.divergences
    );
    assert!(report.unsupported.is_empty(), "{:#?}", report.unsupported);
}

#[test]
fn recorded_session_replays_with_zero_divergences() {
    let bytes = linux_like(16, 8, 7).finish();
    let report = replay(&bytes);
    assert_clean(&report);
    assert!(report.is_identical());
    let commands = count(&bytes, RecordKind::COMMAND);
    assert_eq!(report.commands, commands);
    // Every control-queue command has a response record; cursor ones have an empty one.
    assert_eq!(report.responses, count(&bytes, RecordKind::RESPONSE));
    assert_eq!(report.frames, count(&bytes, RecordKind::FRAME));
    // SET_SCANOUT shows the (black) resource, then 7 full and one partial flush.
    assert_eq!(report.frames, 9);
    assert_eq!(report.frame_digests.len(), 9);
    assert!(report.capture_span_ns > 0);
}

#[test]
fn gpu_socket_replies_answer_display_info_and_edid() {
    let edid = vgt_format::wire::edid::edid_for_mode(640, 480, 75, 0);
    let qemu = SimulatedQemu {
        display: DisplayInfoFromHost {
            displays: vec![HostDisplay {
                x: 0,
                y: 0,
                width: 32,
                height: 16,
                enabled: true,
                flags: 0,
            }],
        },
        edid: Some(edid.to_vec()),
    };
    let config = DeviceConfig {
        scanouts: vec![(1024, 768)],
        ..DeviceConfig::default()
    };
    let mut r = Recording::new(config, 16 << 20, Some(qemu));
    linux_like_on(&mut r, 32, 16, 2);
    // The display changes size later: the second GET_DISPLAY_INFO reply must be the one used.
    r.submit(&Request::new(Command::GetDisplayInfo));
    let bytes = r.finish();
    let report = replay(&bytes);
    assert_clean(&report);
    // Without the replies the device would answer from its configuration: prove they matter.
    let other = vgt_replay::ReplayOptions {
        device_config: Some(DeviceConfig {
            scanouts: vec![(32, 16)],
            ..DeviceConfig::default()
        }),
        ..ReplayOptions::default()
    };
    let stripped = rewrite(&bytes, |_, rec| match rec.body {
        RecordBody::GpuSocket(_) => None,
        _ => Some(rec),
    });
    let report = replay_with(&stripped, other);
    let d = &report.divergences[0];
    assert_eq!(d.command_name, "GET_EDID", "{d}");
    assert!(matches!(d.kind, DivergenceKind::Response { .. }), "{d}");
}

#[test]
fn changed_memory_byte_reports_frame_divergence_at_that_frame() {
    let bytes = linux_like(16, 8, 5).finish();
    let recs = records(&bytes);
    // The third full-screen transfer's first memory read: change byte 4*(16*2+3) (pixel (3, 2)).
    let transfers: Vec<u64> = recs
        .iter()
        .filter_map(|(id, r)| match &r.body {
            RecordBody::MemoryRead(m) if m.resource_id == 1 => Some(*id),
            _ => None,
        })
        .collect();
    let target = transfers[4]; // two reads per transfer: transfer #2, first piece
    let second = transfers[7]; // transfer #3, second piece
    let offset = 4 * (16 * 2 + 3) + 1;
    let mut transfer_cmd = None;
    let edited = rewrite(&bytes, |id, mut rec| {
        if id == target
            && let RecordBody::MemoryRead(m) = &mut rec.body
        {
            transfer_cmd = Some(m.command);
            let b = bytes_mut(&mut m.data);
            b[offset] ^= 0x5a;
        }
        if id == second
            && let RecordBody::MemoryRead(m) = &mut rec.body
        {
            bytes_mut(&mut m.data)[0] ^= 1;
        }
        Some(rec)
    });
    let transfer_cmd = transfer_cmd.unwrap();
    // The frame shown by the flush that follows that transfer.
    let frame_record = recs
        .iter()
        .find_map(|(id, r)| match &r.body {
            RecordBody::Frame(f) if f.command > transfer_cmd => Some(*id),
            _ => None,
        })
        .unwrap();
    let report = replay(&edited);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    assert!(report.stopped_early);
    let d = &report.divergences[0];
    assert_eq!(d.record, frame_record);
    assert_eq!(d.command_name, "RESOURCE_FLUSH");
    let DivergenceKind::Frame {
        first_difference, ..
    } = &d.kind
    else {
        panic!("not a frame divergence: {d}");
    };
    let p = first_difference.unwrap();
    assert_eq!((p.x, p.y), (3, 2));
    assert_eq!(p.expected[1] ^ p.found[1], 0x5a);
    assert!(d.to_string().contains("frame differs"), "{d}");

    // With --keep-going the second changed transfer's frame is reported too.
    let all = replay_with(
        &edited,
        ReplayOptions {
            keep_going: true,
            ..ReplayOptions::default()
        },
    );
    assert!(!all.stopped_early);
    assert_eq!(all.divergences[0], report.divergences[0]);
    assert_eq!(all.divergences.len(), 2, "{:#?}", all.divergences);
    assert_eq!(all.divergences[1].command_name, "RESOURCE_FLUSH");
    assert!(all.commands > report.commands);
}

#[test]
fn changed_response_reports_response_divergence() {
    let bytes = linux_like(16, 8, 2).finish();
    let mut target = None;
    let edited = rewrite(&bytes, |id, mut rec| {
        if let RecordBody::Response(r) = &mut rec.body
            && target.is_none()
            && id > 8
        {
            // OK_NODATA -> ERR_UNSPEC
            let b = bytes_mut(&mut r.bytes);
            b[0..4].copy_from_slice(&ResponseType::ERR_UNSPEC.0.to_le_bytes());
            target = Some((id, r.command));
        }
        Some(rec)
    });
    let (rid, cmd) = target.unwrap();
    let report = replay(&edited);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    let d = &report.divergences[0];
    assert_eq!((d.record, d.command), (rid, cmd));
    let DivergenceKind::Response {
        expected,
        found,
        first_difference,
    } = &d.kind
    else {
        panic!("{d}")
    };
    assert_eq!(expected.type_name, "ERR_UNSPEC");
    assert_eq!(found.type_name, "OK_NODATA");
    // 0x1200 vs 0x1100: the second byte.
    assert_eq!(*first_difference, Some(1));
}

#[test]
fn removed_memory_read_reports_unrecorded_guest_memory() {
    let bytes = linux_like(16, 8, 2).finish();
    let mut removed = None;
    let edited = rewrite(&bytes, |id, rec| {
        if let RecordBody::MemoryRead(m) = &rec.body
            && removed.is_none()
        {
            removed = Some((id, m.command, m.addr, m.data.len()));
            return None;
        }
        Some(rec)
    });
    let (_, cmd, addr, len) = removed.unwrap();
    let report = replay(&edited);
    let d = &report.divergences[0];
    // Record numbers after the removed one shift by one; the command came before it.
    assert_eq!(d.command, cmd);
    assert_eq!(d.kind, DivergenceKind::UnrecordedMemory { addr, len });
    assert!(
        d.to_string().contains(&format!(
            "device read unrecorded guest memory at {addr:#x}+{len:#x}"
        )),
        "{d}"
    );
}

#[test]
fn replaying_twice_gives_identical_frames_and_responses() {
    let bytes = linux_like(24, 10, 6).finish();
    let a = replay(&bytes);
    let b = replay(&bytes);
    assert_clean(&a);
    assert!(!a.frame_digests.is_empty());
    assert_eq!(a.frame_digests, b.frame_digests);
    assert_eq!(a.response_digests, b.response_digests);
    // Loops inside one replay are checked against the first loop too.
    let looped = replay_with(
        &bytes,
        ReplayOptions {
            loops: 3,
            ..ReplayOptions::default()
        },
    );
    assert_clean(&looped);
    assert_eq!(looped.loops, 3);
    assert_eq!(looped.commands, 3 * a.commands);
    assert_eq!(looped.frame_digests, a.frame_digests);
    // Frames verified on the executing thread and on their own thread: the same digests.
    for verify_thread in [Some(false), Some(true)] {
        let r = replay_with(
            &bytes,
            ReplayOptions {
                loops: 2,
                verify_thread,
                ..ReplayOptions::default()
            },
        );
        assert_clean(&r);
        assert_eq!(r.frame_digests, a.frame_digests);
        assert_eq!(r.response_digests, a.response_digests);
    }
}

#[test]
fn truncated_capture_replays_up_to_the_cut() {
    let bytes = linux_like(16, 8, 6).finish();
    let full = replay(&bytes);
    // Cut in the middle of the file: the index is gone and the last chunk is incomplete.
    let cut = &bytes[..bytes.len() / 2];
    let report = replay(cut);
    assert!(report.truncated_at.is_some());
    assert!(report.divergences.is_empty(), "{:#?}", report.divergences);
    assert!(report.commands > 0 && report.commands < full.commands);
    assert!(report.last_record.unwrap() + 1 < full.records);
    let mut summary = Vec::new();
    report.write_summary(&mut summary).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(summary.contains("cut off at byte"), "{summary}");
}

#[test]
fn capture_ending_between_command_and_response_marks_it_unanswered() {
    let bytes = linux_like(16, 8, 1).finish();
    let recs = records(&bytes);
    let last_cmd = recs
        .iter()
        .rev()
        .find(|(_, r)| r.body.kind() == RecordKind::COMMAND)
        .unwrap()
        .0;
    let edited = rewrite(&bytes, |id, rec| (id <= last_cmd).then_some(rec));
    // A complete file whose last command has no response: the original never completed it,
    // replay did.
    let report = replay(&edited);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    assert!(matches!(
        report.divergences[0].kind,
        DivergenceKind::ExtraResponse { .. }
    ));
    assert!(report.unanswered.is_empty());
    // Cut the same file's bytes right after that command record: now it is "unanswered".
    let reader = CaptureReader::from_bytes(edited.clone()).unwrap();
    // Cut where the index starts: every record is complete, the writer never finished.
    let end = reader.index_stats().unwrap().payloads.file_bytes as usize;
    let cut = &edited[..end];
    let report = replay(cut);
    assert!(report.unfinished);
    assert!(report.divergences.is_empty(), "{:#?}", report.divergences);
    assert_eq!(report.unanswered, vec![last_cmd]);
    assert_eq!(report.incomplete_command, Some(last_cmd));
}

fn recorded_3d_session(record_ok: bool) -> (Vec<u8>, Vec<u64>) {
    let mut r = Recording::simple(16, 8);
    r.submit(&Request::new(Command::GetDisplayInfo));
    let mut ctx = Request::new(Command::CtxCreate(CtxCreate {
        nlen: 4,
        context_init: 0,
        debug_name: [0; 64],
    }));
    ctx.header.ctx_id = 1;
    let c1 = r.submit(&ctx);
    let mut res = Request::new(Command::ResourceCreate3d(ResourceCreate3d {
        resource_id: 9,
        target: 2,
        format: Format::B8G8R8X8_UNORM,
        bind: 2,
        width: 16,
        height: 8,
        depth: 1,
        array_size: 1,
        ..ResourceCreate3d::default()
    }));
    res.header.ctx_id = 1;
    let c2 = r.submit(&res);
    let c3 = r.submit(&attach(9, &[(RAM_BASE + 0x20_0000, 16 * 8 * 4)]));
    let mut submit = Request::new(Command::Submit3d(CmdSubmit {
        size: 8,
        padding: 0,
        data: vec![1, 0, 0, 0, 2, 0, 0, 0],
    }));
    submit.header.ctx_id = 1;
    let c4 = r.submit(&submit);
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, 16, 8));
    let bytes = r.finish();
    let cmds = vec![c1, c2, c3, c4];
    if !record_ok {
        return (bytes, cmds);
    }
    // What a 3D renderer answered: OK_NODATA for each of them.
    let edited = rewrite(&bytes, |_, mut rec| {
        if let RecordBody::Response(resp) = &mut rec.body
            && cmds.contains(&resp.command)
        {
            let hdr = CtrlHeader::new(0);
            *bytes_mut(&mut resp.bytes) = Response::ok_nodata(&hdr).encode();
        }
        Some(rec)
    });
    (edited, cmds)
}

#[test]
fn capture_with_3d_commands_reports_them_unsupported_not_diverged() {
    let (bytes, cmds) = recorded_3d_session(true);
    let report = replay(&bytes);
    assert!(report.divergences.is_empty(), "{:#?}", report.divergences);
    let got: Vec<(u64, &str)> = report
        .unsupported
        .iter()
        .map(|u| (u.record, u.command_name.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (cmds[0], "CTX_CREATE"),
            (cmds[1], "RESOURCE_CREATE_3D"),
            (cmds[2], "RESOURCE_ATTACH_BACKING"),
            (cmds[3], "SUBMIT_3D"),
        ]
    );
    assert!(
        report.unsupported[0].reason.contains("3D"),
        "{}",
        report.unsupported[0]
    );
    assert!(
        report.unsupported[2].reason.contains("resource 9"),
        "{}",
        report.unsupported[2]
    );
    assert!(!report.is_identical());
    // The same commands recorded with this device's own error answers match: nothing to say.
    let (bytes, _) = recorded_3d_session(false);
    let report = replay(&bytes);
    assert_clean(&report);
    assert!(report.is_identical());
}

#[test]
fn png_frames_of_every_format_have_the_right_colours() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Recording::simple(4, 2);
    r.submit(&Request::new(Command::GetDisplayInfo));
    // Pixel (0,0) is red 0x11 green 0x22 blue 0x33 alpha 0x44 in each format's byte order;
    // pixel (1,1) is pure blue 0xff with alpha 0x80.
    let layouts: [(Format, [usize; 4]); 8] = [
        // byte positions of R, G, B, A in memory
        (Format::B8G8R8A8_UNORM, [2, 1, 0, 3]),
        (Format::B8G8R8X8_UNORM, [2, 1, 0, 3]),
        (Format::A8R8G8B8_UNORM, [1, 2, 3, 0]),
        (Format::X8R8G8B8_UNORM, [1, 2, 3, 0]),
        (Format::R8G8B8A8_UNORM, [0, 1, 2, 3]),
        (Format::X8B8G8R8_UNORM, [3, 2, 1, 0]),
        (Format::A8B8G8R8_UNORM, [3, 2, 1, 0]),
        (Format::R8G8B8X8_UNORM, [0, 1, 2, 3]),
    ];
    let mut flushes = Vec::new();
    for (i, (format, [ri, gi, bi, ai])) in layouts.iter().enumerate() {
        let id = 10 + i as u32;
        let base = RAM_BASE + 0x20_0000 + i as u64 * 0x1000;
        let mut px = vec![0u8; 4 * 2 * 4];
        let put = |px: &mut Vec<u8>, x: usize, y: usize, rgba: [u8; 4]| {
            let o = (y * 4 + x) * 4;
            px[o + ri] = rgba[0];
            px[o + gi] = rgba[1];
            px[o + bi] = rgba[2];
            px[o + ai] = rgba[3];
        };
        put(&mut px, 0, 0, [0x11, 0x22, 0x33, 0x44]);
        put(&mut px, 1, 1, [0, 0, 0xff, 0x80]);
        r.poke(base, &px);
        r.submit(&create_2d(id, *format, 4, 2));
        r.submit(&attach(id, &[(base, 32)]));
        r.submit(&set_scanout(0, id, rect(0, 0, 4, 2)));
        r.submit(&transfer(id, rect(0, 0, 4, 2), 0));
        flushes.push((*format, r.submit(&flush(id, rect(0, 0, 4, 2)))));
    }
    let bytes = r.finish();
    let report = replay_with(
        &bytes,
        ReplayOptions {
            frames_dir: Some(dir.path().to_owned()),
            ..ReplayOptions::default()
        },
    );
    assert_clean(&report);
    assert_eq!(report.frames_written, report.frames);
    let recs = records(&bytes);
    for (format, flush_cmd) in flushes {
        let frame_rec = recs
            .iter()
            .find_map(|(id, r)| match &r.body {
                RecordBody::Frame(f) if f.command == flush_cmd => Some(*id),
                _ => None,
            })
            .unwrap();
        let path = dir.path().join(format!("frame-{frame_rec:06}-s0.png"));
        let file = std::fs::File::open(&path).unwrap();
        let mut dec = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 2));
        assert_eq!(
            &buf[0..4],
            &[0x11, 0x22, 0x33, 0xff],
            "{format} pixel (0,0)"
        );
        assert_eq!(
            &buf[(4 + 1) * 4..(4 + 1) * 4 + 4],
            &[0, 0, 0xff, 0xff],
            "{format} (1,1)"
        );
        assert_eq!(&buf[4..8], &[0, 0, 0, 0xff], "{format} black pixel");
    }
}

#[test]
fn until_stops_after_the_command_and_range_verifies_only_its_part() {
    let bytes = linux_like(16, 8, 6).finish();
    let recs = records(&bytes);
    let cmds: Vec<u64> = recs
        .iter()
        .filter(|(_, r)| r.body.kind() == RecordKind::COMMAND)
        .map(|(id, _)| *id)
        .collect();
    let until = replay_with(
        &bytes,
        ReplayOptions {
            end: Some(cmds[6] + 1),
            ..ReplayOptions::default()
        },
    );
    assert_clean(&until);
    assert_eq!(until.commands, 7);
    // Verify from the 8th command on: earlier ones run silently to rebuild the state.
    let range = replay_with(
        &bytes,
        ReplayOptions {
            start: cmds[7],
            end: Some(cmds[10]),
            ..ReplayOptions::default()
        },
    );
    assert_clean(&range);
    assert_eq!(range.commands, 10);
    assert_eq!(range.verified_commands, 3);
    assert_eq!(range.responses, 3);
}

#[test]
fn malformed_chain_rejected_by_transport_is_not_replayed() {
    let mut r = Recording::simple(16, 8);
    r.submit(&Request::new(Command::GetDisplayInfo));
    // What vgt-capture records for a chain it cannot walk: an empty request, a validation
    // lifecycle naming it, and an empty response.
    let cmd = r.append(RecordBody::Command(vgt_format::record::CommandRecord {
        queue: 0,
        head: 7,
        descriptors: Vec::new(),
        writable_len: 0,
        request: Payload::empty(),
    }));
    r.append(RecordBody::Lifecycle(vgt_format::record::Lifecycle {
        kind: vgt_format::record::LifecycleKind::ValidationError,
        queue: Some(0),
        command: Some(cmd),
        message: "malformed descriptor chain: descriptor loop".to_owned(),
    }));
    r.append(RecordBody::Response(vgt_format::record::ResponseRecord {
        command: cmd,
        queue: 0,
        head: 7,
        used_len: 0,
        bytes: Payload::empty(),
    }));
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, 4, 4));
    let bytes = r.finish();
    let report = replay(&bytes);
    assert_clean(&report);
    assert_eq!(report.transport_rejected, vec![cmd]);
    assert_eq!(report.commands, 2);
}

#[test]
fn device_reset_in_capture_is_replayed() {
    let mut r = linux_like(8, 4, 2);
    r.reset();
    // The same ids again after the reset: only valid if replay reset its device too.
    linux_like_on(&mut r, 8, 4, 2);
    let bytes = r.finish();
    let report = replay(&bytes);
    assert_clean(&report);
    assert_eq!(report.frames, 2 * 4);
}

#[test]
fn fenced_flush_fence_order_is_compared() {
    let bytes = linux_like(8, 4, 6).finish();
    assert!(count(&bytes, RecordKind::FENCE) >= 2);
    // Change the recorded fence id of the first fence: a fence divergence on that record.
    let mut fence_rec = None;
    let edited = rewrite(&bytes, |id, mut rec| {
        if let RecordBody::Fence(f) = &mut rec.body
            && fence_rec.is_none()
        {
            f.fence_id += 100;
            fence_rec = Some(id);
        }
        Some(rec)
    });
    let report = replay(&edited);
    let d = &report.divergences[0];
    assert_eq!(d.record, fence_rec.unwrap());
    assert!(matches!(d.kind, DivergenceKind::Fence { .. }), "{d}");
    let _ = CommandType::RESOURCE_FLUSH;
}

#[test]
fn identical_reuploads_and_overlapping_partial_uploads_replay_identically() {
    let (w, h) = (16u32, 8u32);
    let size = (w * h * 4) as usize;
    let fb = RAM_BASE + 0x20_0000;
    let mut r = Recording::simple(w, h);
    r.submit(&Request::new(Command::GetDisplayInfo));
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, w, h));
    r.submit(&attach(1, &[(fb, size as u32)]));
    r.submit(&set_scanout(0, 1, rect(0, 0, w, h)));
    let a = pattern(size, 1);
    let b = pattern(size, 2);
    let full = rect(0, 0, w, h);
    let show = |r: &mut Recording, px: &[u8], area| {
        r.poke(fb, px);
        r.submit(&transfer(1, area, 0));
        r.submit(&flush(1, full));
    };
    show(&mut r, &a, full);
    show(&mut r, &a, full); // identical re-upload: stored once, replayed without re-reading
    // Rows 2..4 of B over the same memory (a sub-range of the full upload) …
    show(&mut r, &b, rect(0, 2, w, 2));
    // … then A again: same blob as before, but the range was overwritten meanwhile.
    show(&mut r, &a, full);
    show(&mut r, &b, full);
    show(&mut r, &a, full);
    let bytes = r.finish();
    let report = replay(&bytes);
    assert_clean(&report);
    assert_eq!(report.frames, 7);
    // The frames differ where they should: A, A, A with B rows, A, B, A.
    let h: Vec<u128> = report.frame_digests.iter().map(|d| d.hash).collect();
    assert_eq!(h[1], h[2]);
    assert_ne!(h[2], h[3]);
    assert_eq!(h[4], h[6]);
    assert_ne!(h[5], h[6]);
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

#[test]
fn vgt_capture_boot_capture_replays_identically() {
    let bytes = data("capture-boot.vgt");
    let report = replay(&bytes);
    assert_clean(&report);
    assert_eq!(report.commands, count(&bytes, RecordKind::COMMAND));
    assert_eq!(report.frames, count(&bytes, RecordKind::FRAME));
    assert!(report.frames > 0);
    // Its GET_DISPLAY_INFO/GET_EDID were answered by QEMU: the replies were used.
    assert!(count(&bytes, RecordKind::GPU_SOCKET) > 0);
    // One transferred byte changed: the next frame of that resource diverges.
    let mut done = false;
    let edited = rewrite(&bytes, |_, mut rec| {
        if let RecordBody::MemoryRead(m) = &mut rec.body
            && !done
            && m.data.len() >= 64 * 4
        {
            bytes_mut(&mut m.data)[1] ^= 0x80;
            done = true;
        }
        Some(rec)
    });
    assert!(done);
    let report = replay(&edited);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    assert!(
        matches!(report.divergences[0].kind, DivergenceKind::Frame { .. }),
        "{}",
        report.divergences[0]
    );
}

#[test]
fn vgt_capture_malformed_capture_replays_identically() {
    let bytes = data("capture-malformed.vgt");
    let report = replay(&bytes);
    assert_clean(&report);
    assert!(!report.transport_rejected.is_empty());
    assert_eq!(
        report.commands + report.transport_rejected.len() as u64,
        count(&bytes, RecordKind::COMMAND)
    );
}

#[test]
fn changed_cursor_image_reports_cursor_divergence() {
    let bytes = linux_like(16, 8, 1).finish();
    assert_eq!(count(&bytes, RecordKind::CURSOR), 1);
    let mut cursor_rec = None;
    let edited = rewrite(&bytes, |id, mut rec| {
        if let RecordBody::Cursor(c) = &mut rec.body {
            bytes_mut(c.image.as_mut().unwrap())[7] ^= 1;
            cursor_rec = Some(id);
        }
        Some(rec)
    });
    assert_clean(&replay(&bytes));
    let report = replay(&edited);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    let d = &report.divergences[0];
    assert_eq!(d.record, cursor_rec.unwrap());
    assert_eq!(d.command_name, "UPDATE_CURSOR");
    assert!(d.to_string().contains("cursor differs"), "{d}");
}

#[test]
fn capture_with_host_blobs_reports_them_unsupported_with_the_reason() {
    use vgt_format::wire::{BlobFlags, BlobMem, ResourceCreateBlob, ResourceMapBlob};
    let mut r = Recording::simple(16, 8);
    r.submit(&Request::new(Command::GetDisplayInfo));
    let create = r.submit(&Request::new(Command::ResourceCreateBlob(
        ResourceCreateBlob {
            resource_id: 3,
            blob_mem: BlobMem::HOST3D,
            blob_flags: BlobFlags(BlobFlags::USE_MAPPABLE),
            nr_entries: 0,
            blob_id: 1,
            size: 4096,
            entries: Vec::new(),
        },
    )));
    let map = r.submit(&Request::new(Command::ResourceMapBlob(ResourceMapBlob {
        resource_id: 3,
        padding: 0,
        offset: 0,
    })));
    let bytes = r.finish();
    // What a host with host-visible memory answered: OK_NODATA and OK_MAP_INFO.
    let edited = rewrite(&bytes, |_, mut rec| {
        if let RecordBody::Response(resp) = &mut rec.body {
            let b = bytes_mut(&mut resp.bytes);
            if resp.command == create {
                *b = Response::ok_nodata(&CtrlHeader::new(0)).encode();
            } else if resp.command == map {
                let mut m = Response::ok_nodata(&CtrlHeader::new(0)).encode();
                m[0..4].copy_from_slice(&ResponseType::OK_MAP_INFO.0.to_le_bytes());
                m.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
                *b = m;
            }
        }
        Some(rec)
    });
    let report = replay(&edited);
    assert!(report.divergences.is_empty(), "{:#?}", report.divergences);
    assert_eq!(report.unsupported.len(), 2, "{:#?}", report.unsupported);
    let u = &report.unsupported[0];
    assert_eq!(
        (u.record, u.command_name.as_str()),
        (create, "RESOURCE_CREATE_BLOB")
    );
    assert!(u.reason.contains("blob_mem 2"), "{u}");
    assert_eq!(u.recorded.as_ref().unwrap().type_name, "OK_NODATA");
    let u = &report.unsupported[1];
    assert_eq!(
        (u.record, u.command_name.as_str()),
        (map, "RESOURCE_MAP_BLOB")
    );
    assert!(u.reason.contains("host-visible"), "{u}");
}

#[test]
fn recorded_crash_that_replay_does_not_reproduce_is_reported_at_that_command() {
    let bytes = linux_like(16, 8, 3).finish();
    let recs = records(&bytes);
    // The renderer "crashed" on the third flush: the capture ends with the command, its crash
    // lifecycle record and nothing else (what vgt-capture writes when the device panics).
    let flush = CommandType::RESOURCE_FLUSH.0.to_le_bytes();
    let crashed = recs
        .iter()
        .filter(|(_, r)| {
            matches!(&r.body, RecordBody::Command(c)
                if c.request.inline().is_some_and(|b| b[0..4] == flush))
        })
        .nth(2)
        .unwrap()
        .0;
    let crash = vgt_format::Record {
        ts_ns: 1 << 40,
        body: RecordBody::Lifecycle(vgt_format::record::Lifecycle {
            kind: vgt_format::record::LifecycleKind::Crash,
            queue: Some(0),
            command: Some(crashed),
            message: "device panicked: renderer blew up".to_owned(),
        }),
    };
    let crash_added = rewrite_then(
        &bytes,
        |id, rec| (id <= crashed).then_some(rec),
        vec![crash],
    );
    let report = replay(&crash_added);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    let d = &report.divergences[0];
    assert_eq!((d.record, d.command), (crashed, crashed));
    let DivergenceKind::CrashNotReproduced { recorded } = &d.kind else {
        panic!("{d}")
    };
    assert!(recorded.contains("renderer blew up"));
    // The crashed command has no recorded response: not an extra response, unanswered.
    assert!(report.reproduced_crash.is_none());
    let all = replay_with(
        &crash_added,
        ReplayOptions {
            keep_going: true,
            ..ReplayOptions::default()
        },
    );
    assert_eq!(all.divergences, report.divergences);
    assert_eq!(all.unanswered, vec![crashed]);
}

#[test]
fn configured_scanout_size_is_derived_from_a_generated_edid() {
    // QEMU answers display info (32x16) but not EDID; the device is configured 64x40 and the
    // guest asks for the EDID first (as Linux does): that EDID is generated from 64x40.
    let qemu = SimulatedQemu {
        display: DisplayInfoFromHost {
            displays: vec![HostDisplay {
                x: 0,
                y: 0,
                width: 32,
                height: 16,
                enabled: true,
                flags: 0,
            }],
        },
        edid: None,
    };
    let config = DeviceConfig {
        scanouts: vec![(64, 40)],
        ..DeviceConfig::default()
    };
    let mut r = Recording::new(config.clone(), 16 << 20, Some(qemu));
    r.submit(&Request::new(Command::GetEdid(vgt_format::wire::GetEdid {
        scanout: 0,
        padding: 0,
    })));
    linux_like_on(&mut r, 32, 16, 2);
    let bytes = r.finish();
    let reader = CaptureReader::from_bytes(bytes.clone()).unwrap();
    assert_eq!(
        vgt_replay::device_config_for(&reader).scanouts,
        vec![(64, 40)]
    );
    assert_clean(&replay(&bytes));
}

#[test]
fn capture_opened_by_scanning_with_its_end_record_is_complete() {
    let mut r = linux_like(8, 4, 2);
    r.append(RecordBody::Lifecycle(vgt_format::record::Lifecycle {
        kind: vgt_format::record::LifecycleKind::End,
        queue: None,
        command: None,
        message: "front-end disconnected".to_owned(),
    }));
    let bytes = r.finish();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.vgt");
    std::fs::write(&path, &bytes).unwrap();
    let reader = CaptureReader::open_scanning(&path).unwrap();
    assert!(!reader.health().indexed);
    let report = Replayer::new(&reader, ReplayOptions::default())
        .run(&mut Quiet)
        .unwrap();
    assert_clean(&report);
    assert!(!report.unfinished);
    assert_eq!(report.incomplete_command, None);
    // The same records without the End record and without the index: the writer never
    // finished, so the last command is not verified.
    let end = CaptureReader::from_bytes(bytes.clone())
        .unwrap()
        .record_offset(records(&bytes).len() as u64 - 1)
        .unwrap() as usize;
    let report = replay(&bytes[..end]);
    assert!(report.unfinished);
    assert!(report.incomplete_command.is_some());
    assert_clean(&report);
}

/// A memory-read blob whose content no longer matches its hash although its chunk CRC does
/// (the check that the reading thread may leave to the executing thread): replay stops at that
/// record with the reader's own error, having executed only the commands before it.
#[test]
fn blob_failing_its_content_hash_stops_replay_at_that_record() {
    // Small blobs are decoded on the reading thread (or hashed on the executing one).
    check_damaged_blob(64, 48, &[None, Some(0)]);
}

#[test]
fn large_blob_failing_its_content_hash_stops_replay_at_that_record_on_decoding_threads() {
    // Halves of a 320x200 frame (128,000 bytes) go to the decoding threads: the damage is found
    // there and reported exactly as when the reading thread decodes them.
    check_damaged_blob(320, 200, &[Some(0), Some(1), Some(3), None]);
}

/// Damages the first use of the third blob memory read of a `w`x`h` capture and checks that
/// replay stops at that record with the reader's own error, with each decoding-thread count.
fn check_damaged_blob(w: u32, h: u32, decode_threads: &[Option<usize>]) {
    let bytes = linux_like(w, h, 6).finish();
    let recs = records(&bytes);
    // The third memory read that carries a blob (its first use in the file).
    let (rid, payload) = recs
        .iter()
        .filter_map(|(id, r)| match &r.body {
            RecordBody::MemoryRead(m) if matches!(m.data, Payload::Blob(_)) => {
                Some((*id, m.data.clone()))
            }
            _ => None,
        })
        .nth(2)
        .expect("blob memory reads");
    let Payload::Blob(blob) = &payload else {
        unreachable!()
    };
    assert!(
        !recs
            .iter()
            .any(|(id, r)| *id < rid && r.body.payloads().iter().any(|p| **p == payload)),
        "the blob is first used by record {rid}"
    );
    let mut damaged = bytes.clone();
    break_blob_hash(&mut damaged, blob.offset);

    let reader = CaptureReader::from_bytes(damaged.clone()).unwrap();
    let want = reader.read_payload(&payload).unwrap_err().to_string();
    assert!(want.contains("hash"), "{want}");
    // Every command before the damaged read's command ran; that one did not.
    let command_of_read = recs
        .iter()
        .filter(|(id, r)| *id < rid && r.body.kind() == RecordKind::COMMAND)
        .count() as u64;
    for &threads in decode_threads {
        let report = replay_with(
            &damaged,
            ReplayOptions {
                decode_threads: threads,
                ..ReplayOptions::default()
            },
        );
        assert_eq!(report.damaged, Some((rid, want.clone())), "{threads:?}");
        assert_eq!(report.last_record, Some(rid), "{threads:?}");
        assert_eq!(report.commands, command_of_read - 1, "{threads:?}");
        assert!(report.divergences.is_empty(), "{:#?}", report.divergences);
    }
}

/// Changes one data byte of the blob chunk at `offset` and makes the chunk CRC match again:
/// only the blob's content hash tells.
fn break_blob_hash(bytes: &mut [u8], offset: u64) {
    let at = offset as usize;
    bytes[at + 16 + 32 + 7] ^= 0x01;
    let body_len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    let mut crc = crc32c::crc32c(&bytes[at + 4..at + 12]);
    crc = crc32c::crc32c_append(crc, &bytes[at + 16..at + 16 + body_len]);
    bytes[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
}

/// The first two large blob memory reads (each its blob's first use) that follow each other in
/// one command's window of a 320x200 capture: the capture and the two (record, blob offset).
fn two_large_reads_in_one_window() -> (Vec<u8>, [(u64, u64); 2]) {
    let bytes = linux_like(320, 200, 6).finish();
    let recs = records(&bytes);
    let mut seen = std::collections::HashSet::new();
    let mut first_use = Vec::new();
    for (id, r) in &recs {
        for p in r.body.payloads() {
            if let Payload::Blob(b) = p
                && seen.insert(b.offset)
                && let RecordBody::MemoryRead(m) = &r.body
                && m.data.len() >= vgt_replay::DECODE_APART_MIN
            {
                first_use.push((*id, b.offset));
            }
        }
    }
    let pair = first_use
        .windows(2)
        .find(|w| w[1].0 == w[0].0 + 1)
        .expect("two large reads in a row");
    (bytes, [pair[0], pair[1]])
}

/// The reader's own error for the first payload of record `id` of the capture `bytes`.
fn payload_error(bytes: &[u8], id: u64) -> String {
    let recs = records(bytes);
    CaptureReader::from_bytes(bytes.to_vec())
        .unwrap()
        .read_payload(&recs[id as usize].1.body.payloads()[0].clone())
        .unwrap_err()
        .to_string()
}

/// Every decoding-thread count reports the damage at record `rid` with the error `want`,
/// having stopped there without divergences.
fn assert_damaged_at(bytes: &[u8], rid: u64, want: &str) {
    for r in reports_on_every_thread_count(bytes) {
        assert_eq!(r.damaged, Some((rid, want.to_owned())));
        assert_eq!(r.last_record, Some(rid));
        assert!(r.divergences.is_empty(), "{:#?}", r.divergences);
    }
}

/// The report of a damaged capture with each decoding-thread count: the same every time.
fn reports_on_every_thread_count(bytes: &[u8]) -> Vec<ReplayReport> {
    [Some(0), Some(1), Some(3), None]
        .into_iter()
        .map(|threads| {
            let mut r = replay_with(
                bytes,
                ReplayOptions {
                    decode_threads: threads,
                    keep_going: true,
                    ..ReplayOptions::default()
                },
            );
            r.wall_ns = 0;
            r
        })
        .collect()
}

#[test]
fn damaged_large_blob_then_unreadable_record_in_its_window_is_reported_at_the_blob() {
    // The blob's read may be decoded on a decoding thread while the reading thread goes on and
    // meets the broken record right after it: the report must still name the blob's record,
    // the first damage in the file, as decoding on the reading thread does (found by the
    // replay_capture fuzz target: the later damage used to win).
    let (mut bytes, [(rid, blob), (next, _)]) = two_large_reads_in_one_window();
    let next_at = CaptureReader::from_bytes(bytes.clone())
        .unwrap()
        .record_offset(next)
        .unwrap() as usize;
    break_blob_hash(&mut bytes, blob);
    let want = payload_error(&bytes, rid);
    bytes[next_at..next_at + 4].copy_from_slice(b"XXXX");
    assert_damaged_at(&bytes, rid, &want);
}

#[test]
fn damaged_large_blob_then_unreadable_blob_in_its_window_is_reported_at_the_first() {
    // The first read's hash may be left to the executing thread (or its blob decoded on a
    // decoding thread) while the reading thread fails to read the second one: the first damage
    // in record order is still the one reported (the window used to be dropped with its
    // pending check, and the second blob named).
    let (mut bytes, [(rid, blob), (next, next_blob)]) = two_large_reads_in_one_window();
    break_blob_hash(&mut bytes, blob);
    let want = payload_error(&bytes, rid);
    let at = next_blob as usize;
    bytes[at..at + 4].copy_from_slice(b"XXXX");
    assert_ne!(want, payload_error(&bytes, next));
    assert_damaged_at(&bytes, rid, &want);
}

#[test]
fn damaged_small_and_large_reads_of_one_transfer_are_reported_at_the_small_one() {
    // One transfer reads a 4 KiB page (its hash check may be left to the executing thread)
    // and then 252 KiB (decoded on a decoding thread when there is one). With both damaged,
    // the page's record is the first damage; the decoded one used to be named whenever its
    // thread reported first (found by replay_capture).
    let (w, h) = (320, 200);
    let size = w * h * 4;
    let fb = RAM_BASE + 0x20_0000;
    let mut r = Recording::simple(w, h);
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, w, h));
    r.submit(&attach(1, &[(fb, 4096), (fb + 0x40_0000, size - 4096)]));
    r.submit(&set_scanout(0, 1, rect(0, 0, w, h)));
    let px = pattern(size as usize, 5);
    r.poke(fb, &px[..4096]);
    r.poke(fb + 0x40_0000, &px[4096..]);
    r.submit(&transfer(1, rect(0, 0, w, h), 0));
    r.submit(&flush(1, rect(0, 0, w, h)));
    let mut bytes = r.finish();
    let recs = records(&bytes);
    let reads: Vec<(u64, u64, u64)> = recs
        .iter()
        .filter_map(|(id, r)| match &r.body {
            RecordBody::MemoryRead(m) => match &m.data {
                Payload::Blob(b) => Some((*id, b.offset, b.len)),
                Payload::Inline(_) => None,
            },
            _ => None,
        })
        .collect();
    let [(small, small_blob, 4096), (large, large_blob, large_len)] = reads[..] else {
        panic!("reads: {reads:?}");
    };
    assert_eq!(large, small + 1);
    assert!(large_len >= vgt_replay::DECODE_APART_MIN);
    break_blob_hash(&mut bytes, small_blob);
    break_blob_hash(&mut bytes, large_blob);
    let want = payload_error(&bytes, small);
    // Which read goes where depends on timing: a few rounds.
    for _ in 0..5 {
        assert_damaged_at(&bytes, small, &want);
    }
}

#[test]
fn blob_references_claiming_absurd_lengths_are_damage_not_an_overflow() {
    // Two reads of one transfer whose blob references claim 2^63 bytes each (and point at the
    // file header): the reading thread added the claimed lengths up for its batches and
    // overflowed (found by replay_capture). They are damage at the first of them.
    // (The writer refuses such references, so the record chunks are patched in place.)
    let (mut bytes, [(first, _), (second, _)]) = two_large_reads_in_one_window();
    let absurd = BlobRef {
        hash: ContentHash(7),
        len: 1 << 63,
        offset: 0,
    };
    for id in [first, second] {
        vgt_format::testing::patch_blob_ref(&mut bytes, id, &absurd).unwrap();
    }
    let reread = records(&bytes);
    assert_eq!(
        reread[first as usize].1.body.payloads()[0].clone(),
        Payload::Blob(absurd)
    );
    for r in reports_on_every_thread_count(&bytes) {
        let (at, why) = r.damaged.expect("damage reported");
        assert_eq!(at, first, "{why}");
        assert_eq!(r.last_record, Some(first));
    }
}

#[test]
fn timestamps_at_the_ends_of_the_clock_replay_twice_without_overflow() {
    // The first command at 0 and the rest at the end of the u64 clock: each loop spans almost
    // 2^64 ns, and adding the second loop's span used to overflow (found by replay_capture).
    let bytes = linux_like(16, 8, 3).finish();
    let first_command = records(&bytes)
        .iter()
        .find(|(_, r)| r.body.kind() == RecordKind::COMMAND)
        .map(|(id, _)| *id)
        .unwrap();
    let edited = rewrite(&bytes, |id, mut rec| {
        rec.ts_ns = if id <= first_command {
            0
        } else {
            u64::MAX - 1_000_000 + id
        };
        Some(rec)
    });
    let report = replay_with(
        &edited,
        ReplayOptions {
            loops: 2,
            ..ReplayOptions::default()
        },
    );
    assert_clean(&report);
    assert_eq!(report.loops, 2);
    assert_eq!(report.capture_span_ns, u64::MAX);
}

#[test]
fn decoding_threads_give_the_same_report_as_decoding_on_the_reading_thread() {
    // 320x200: every transfer's two pieces are large enough for the decoding threads; a byte
    // changed in a late transfer must diverge at the same frame whoever decoded it.
    let bytes = linux_like(320, 200, 30).finish();
    let recs = records(&bytes);
    let reads: Vec<u64> = recs
        .iter()
        .filter_map(|(id, r)| match &r.body {
            RecordBody::MemoryRead(m) if m.data.len() >= vgt_replay::DECODE_APART_MIN => Some(*id),
            _ => None,
        })
        .collect();
    assert!(reads.len() > 40, "{} large reads", reads.len());
    let target = reads[41];
    let edited = rewrite(&bytes, |id, mut rec| {
        if let RecordBody::MemoryRead(m) = &mut rec.body
            && id == target
        {
            bytes_mut(&mut m.data)[9] ^= 0x20;
        }
        Some(rec)
    });
    let run = |b: &[u8], threads: Option<usize>| {
        replay_with(
            b,
            ReplayOptions {
                decode_threads: threads,
                keep_going: true,
                loops: 2,
                ..ReplayOptions::default()
            },
        )
    };
    let clean = run(&bytes, Some(0));
    assert_clean(&clean);
    let inline = run(&edited, Some(0));
    assert!(!inline.divergences.is_empty());
    for threads in [Some(1), Some(2), Some(4), None] {
        let r = run(&bytes, threads);
        assert_clean(&r);
        assert_eq!(r.frame_digests, clean.frame_digests, "{threads:?}");
        assert_eq!(r.response_digests, clean.response_digests, "{threads:?}");
        let e = run(&edited, threads);
        assert_eq!(e.divergences, inline.divergences, "{threads:?}");
        assert_eq!(e.frame_digests, inline.frame_digests, "{threads:?}");
        assert_eq!(e.commands, inline.commands, "{threads:?}");
        assert_eq!(e.last_record, inline.last_record, "{threads:?}");
    }
}

#[test]
fn frame_divergence_late_in_a_long_replay_is_reported_at_its_frame_with_the_state_at_that_command()
{
    // Frames are verified on their own thread while later commands already run: the report
    // must still be the one of a replay that stops right after the diverging command.
    let bytes = linux_like(16, 8, 120).finish();
    let recs = records(&bytes);
    let code = |r: &vgt_format::record::Record| match &r.body {
        RecordBody::Command(c) => match &c.request {
            Payload::Inline(b) => b
                .get(0..4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap())),
            Payload::Blob(_) => None,
        },
        _ => None,
    };
    let flushes: Vec<u64> = recs
        .iter()
        .filter(|(_, r)| code(r) == Some(CommandType::RESOURCE_FLUSH.0))
        .map(|(id, _)| *id)
        .collect();
    let transfers: Vec<u64> = recs
        .iter()
        .filter_map(|(id, r)| match &r.body {
            RecordBody::MemoryRead(m) if m.resource_id == 1 => Some(*id),
            _ => None,
        })
        .collect();
    // Transfer #100's first piece (two reads per transfer), and the response of flush #110.
    let target = transfers[200];
    let late_flush = flushes[110];
    let late_response = recs
        .iter()
        .find_map(|(id, r)| match &r.body {
            RecordBody::Response(resp) if resp.command == late_flush => Some(*id),
            _ => None,
        })
        .unwrap();
    let edited = rewrite(&bytes, |id, mut rec| {
        match &mut rec.body {
            RecordBody::MemoryRead(m) if id == target => bytes_mut(&mut m.data)[5] ^= 0x40,
            RecordBody::Response(r) if id == late_response => bytes_mut(&mut r.bytes)[0] ^= 1,
            _ => {}
        }
        Some(rec)
    });
    let flush = flushes[100];
    let frame_record = recs
        .iter()
        .find_map(|(id, r)| match &r.body {
            RecordBody::Frame(f) if f.command == flush => Some(*id),
            _ => None,
        })
        .unwrap();
    // Verified on their own thread whatever the machine's cores.
    let threaded = ReplayOptions {
        verify_thread: Some(true),
        ..ReplayOptions::default()
    };
    let report = replay_with(&edited, threaded.clone());
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    let d = &report.divergences[0];
    assert_eq!((d.record, d.command), (frame_record, flush), "{d}");
    assert_eq!(d.command_name, "RESOURCE_FLUSH");
    assert!(matches!(d.kind, DivergenceKind::Frame { .. }), "{d}");
    assert!(report.stopped_early);
    // Nothing after the diverging command is counted.
    let commands_to_flush = recs
        .iter()
        .filter(|(id, r)| *id <= flush && code(r).is_some())
        .count() as u64;
    assert_eq!(report.commands, commands_to_flush);
    let frames_to_it = recs
        .iter()
        .filter(|(id, r)| *id <= frame_record && r.body.kind() == RecordKind::FRAME)
        .count();
    assert_eq!(report.frame_digests.len(), frames_to_it);
    assert_eq!(report.frames, frames_to_it as u64);

    // The same replay verifying on the executing thread, and verifying each command's frames
    // on the thread before running the next (as it does when writing PNGs), reports exactly
    // the same.
    let dir = tempfile::tempdir().unwrap();
    let inline = replay_with(
        &edited,
        ReplayOptions {
            verify_thread: Some(false),
            ..ReplayOptions::default()
        },
    );
    let serial = replay_with(
        &edited,
        ReplayOptions {
            frames_dir: Some(dir.path().to_owned()),
            ..threaded.clone()
        },
    );
    for other in [&inline, &serial] {
        assert_eq!(other.divergences, report.divergences);
        assert_eq!(other.commands, report.commands);
        assert_eq!(other.responses, report.responses);
        assert_eq!(other.frames, report.frames);
        assert_eq!(other.frame_digests, report.frame_digests);
        assert_eq!(other.response_digests, report.response_digests);
        assert_eq!(other.last_record, report.last_record);
        assert_eq!(other.capture_span_ns, report.capture_span_ns);
    }
    assert_eq!(serial.frames_written, frames_to_it as u64);

    // Going on, the response divergence ten frames later follows, in record order.
    let all = replay_with(
        &edited,
        ReplayOptions {
            keep_going: true,
            ..threaded
        },
    );
    assert_eq!(all.divergences.len(), 2, "{:#?}", all.divergences);
    assert_eq!(all.divergences[0], report.divergences[0]);
    assert_eq!(all.divergences[1].record, late_response);
    assert!(matches!(
        all.divergences[1].kind,
        DivergenceKind::Response { .. }
    ));
    assert_eq!(all.frames, count(&bytes, RecordKind::FRAME));
}
