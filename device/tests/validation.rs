//! Every rule the guest can break: the right ERR_* code, one report, and the device serves on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vgt_device::{CONTROL_QUEUE, CURSOR_QUEUE, DeviceConfig};
use vgt_format::wire::{
    BlobFlags, BlobMem, CapsetId, CmdSubmit, Command, CtrlHeader, CtxCreate, CursorPos, Format,
    GetCapset, GetCapsetInfo, GetEdid, Request, ResourceAssignUuid, ResourceAttachBacking,
    ResourceCreate2d, ResourceCreate3d, ResourceCreateBlob, ResourceDetachBacking, ResourceFlush,
    ResourceMapBlob, ResourceUnref, ResponseType, SetScanout, SetScanoutBlob, TransferToHost2d,
    UpdateCursor,
};

const W: u32 = 40;
const H: u32 = 30;
const BACKING: [(u64, u32); 2] = [(0x1_0000, 2000), (0x2_0000, 2800)];

/// Resource 2: 40x30 with backing. Resource 3: 64x64 without backing.
fn rig() -> Rig {
    let mem = VecMemory::new(&[(0x1_0000, 0x4000), (0x2_0000, 0x4000)]);
    let config = DeviceConfig {
        scanouts: vec![(W, H)],
        max_backing_entries: 4,
        max_resource_bytes: 1 << 20,
        ..DeviceConfig::default()
    };
    let mut rig = Rig::new(config, mem);
    fill_backing(&mut rig.mem, &BACKING, 1);
    rig.ok(create(2, Format::B8G8R8X8_UNORM, W, H));
    rig.ok(attach(2, &BACKING));
    rig.ok(create(3, Format::B8G8R8A8_UNORM, 64, 64));
    rig.ok(blob(5, BlobMem::GUEST, 4096, &[(0x1_0000, 4096)]));
    rig
}

fn create(resource_id: u32, format: Format, width: u32, height: u32) -> Command {
    Command::ResourceCreate2d(ResourceCreate2d {
        resource_id,
        format,
        width,
        height,
    })
}

fn attach(resource_id: u32, list: &[(u64, u32)]) -> Command {
    Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id,
        nr_entries: list.len() as u32,
        entries: entries(list),
    })
}

fn transfer(resource_id: u32, r: vgt_format::wire::Rect, offset: u64) -> Command {
    Command::TransferToHost2d(TransferToHost2d {
        r,
        offset,
        resource_id,
        padding: 0,
    })
}

fn blob(resource_id: u32, blob_mem: BlobMem, size: u64, list: &[(u64, u32)]) -> Command {
    Command::ResourceCreateBlob(ResourceCreateBlob {
        resource_id,
        blob_mem,
        blob_flags: BlobFlags(BlobFlags::USE_SHAREABLE),
        nr_entries: list.len() as u32,
        blob_id: 0,
        size,
        entries: entries(list),
    })
}

/// The device still works: a valid transfer of resource 2 succeeds.
fn still_serves(rig: &mut Rig) {
    rig.ok(transfer(2, rect(0, 0, W, 1), 0));
}

#[test]
fn each_violation_gets_its_error_and_the_device_keeps_serving() {
    use ResponseType as T;
    let cases: Vec<(&str, Command, ResponseType)> = vec![
        (
            "create duplicate id",
            create(2, Format::B8G8R8X8_UNORM, 4, 4),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "create id 0",
            create(0, Format::B8G8R8X8_UNORM, 4, 4),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "create unknown format",
            create(7, Format(99), 4, 4),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "create zero width",
            create(7, Format::B8G8R8X8_UNORM, 0, 4),
            T::ERR_OUT_OF_MEMORY,
        ),
        (
            "create zero height",
            create(7, Format::B8G8R8X8_UNORM, 4, 0),
            T::ERR_OUT_OF_MEMORY,
        ),
        (
            "create too large",
            create(7, Format::B8G8R8X8_UNORM, 1024, 257),
            T::ERR_OUT_OF_MEMORY,
        ),
        (
            "create u32 overflow",
            create(7, Format::B8G8R8X8_UNORM, u32::MAX, u32::MAX),
            T::ERR_OUT_OF_MEMORY,
        ),
        (
            "unref unknown",
            Command::ResourceUnref(ResourceUnref {
                resource_id: 99,
                padding: 0,
            }),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "scanout index",
            Command::SetScanout(SetScanout {
                r: rect(0, 0, W, H),
                scanout_id: 1,
                resource_id: 2,
            }),
            T::ERR_INVALID_SCANOUT_ID,
        ),
        (
            "scanout index huge",
            Command::SetScanout(SetScanout {
                r: rect(0, 0, W, H),
                scanout_id: u32::MAX,
                resource_id: 0,
            }),
            T::ERR_INVALID_SCANOUT_ID,
        ),
        (
            "scanout unknown resource",
            Command::SetScanout(SetScanout {
                r: rect(0, 0, W, H),
                scanout_id: 0,
                resource_id: 99,
            }),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "scanout rect outside",
            Command::SetScanout(SetScanout {
                r: rect(1, 0, W, H),
                scanout_id: 0,
                resource_id: 2,
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "scanout rect wraps",
            Command::SetScanout(SetScanout {
                r: rect(u32::MAX, 0, 2, 1),
                scanout_id: 0,
                resource_id: 2,
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "flush unknown",
            Command::ResourceFlush(ResourceFlush {
                r: rect(0, 0, 1, 1),
                resource_id: 99,
                padding: 0,
            }),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "flush outside",
            Command::ResourceFlush(ResourceFlush {
                r: rect(0, H, 1, 1),
                resource_id: 2,
                padding: 0,
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "transfer unknown",
            transfer(99, rect(0, 0, 1, 1), 0),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "transfer rect outside",
            transfer(2, rect(0, 0, W + 1, 1), 0),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "transfer rect y wraps",
            transfer(2, rect(0, u32::MAX, 1, 2), 0),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "transfer past backing",
            transfer(2, rect(0, 0, W, H), 4),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "transfer offset overflows",
            transfer(2, rect(0, 1, 1, 2), u64::MAX - 100),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "transfer without backing",
            transfer(3, rect(0, 0, 1, 1), 0),
            T::ERR_UNSPEC,
        ),
        (
            "attach zero entries",
            attach(3, &[]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "attach too many entries",
            attach(3, &[(0x1_0000, 16); 5]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "attach entry wraps",
            attach(3, &[(u64::MAX - 8, 16)]),
            T::ERR_UNSPEC,
        ),
        ("attach twice", attach(2, &[(0x1_0000, 16)]), T::ERR_UNSPEC),
        (
            "attach unknown",
            attach(99, &[(0x1_0000, 16)]),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "detach without backing",
            Command::ResourceDetachBacking(ResourceDetachBacking {
                resource_id: 3,
                padding: 0,
            }),
            T::ERR_UNSPEC,
        ),
        (
            "capset index",
            Command::GetCapsetInfo(GetCapsetInfo {
                capset_index: 0,
                padding: 0,
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "capset unknown",
            Command::GetCapset(GetCapset {
                capset_id: CapsetId::VIRGL2,
                capset_version: 0,
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "edid scanout",
            Command::GetEdid(GetEdid {
                scanout: 3,
                padding: 0,
            }),
            T::ERR_INVALID_SCANOUT_ID,
        ),
        (
            "uuid unknown",
            Command::ResourceAssignUuid(ResourceAssignUuid {
                resource_id: 99,
                padding: 0,
            }),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "blob host3d",
            blob(7, BlobMem::HOST3D, 4096, &[]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "blob mem 0",
            blob(7, BlobMem(0), 4096, &[]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "blob size 0",
            blob(7, BlobMem::GUEST, 0, &[(0x1_0000, 16)]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "blob larger than backing",
            blob(7, BlobMem::GUEST, 4096, &[(0x1_0000, 16)]),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "blob too large",
            blob(7, BlobMem::GUEST, 2 << 20, &[]),
            T::ERR_OUT_OF_MEMORY,
        ),
        (
            "blob duplicate id",
            blob(2, BlobMem::GUEST, 16, &[(0x1_0000, 16)]),
            T::ERR_INVALID_RESOURCE_ID,
        ),
        (
            "scanout blob on 2d",
            Command::SetScanoutBlob(SetScanoutBlob {
                r: rect(0, 0, 4, 4),
                scanout_id: 0,
                resource_id: 2,
                width: 4,
                height: 4,
                format: Format::B8G8R8X8_UNORM,
                strides: [16, 0, 0, 0],
                ..SetScanoutBlob::default()
            }),
            T::ERR_INVALID_PARAMETER,
        ),
        (
            "ctx create",
            Command::CtxCreate(CtxCreate::default()),
            T::ERR_UNSPEC,
        ),
        ("ctx destroy", Command::CtxDestroy, T::ERR_UNSPEC),
        (
            "create 3d",
            Command::ResourceCreate3d(ResourceCreate3d {
                resource_id: 7,
                ..ResourceCreate3d::default()
            }),
            T::ERR_UNSPEC,
        ),
        (
            "submit 3d",
            Command::Submit3d(CmdSubmit {
                size: 4,
                padding: 0,
                data: vec![0; 4],
            }),
            T::ERR_UNSPEC,
        ),
        (
            "map blob",
            Command::ResourceMapBlob(ResourceMapBlob {
                resource_id: 2,
                padding: 0,
                offset: 0,
            }),
            T::ERR_UNSPEC,
        ),
        (
            "cursor command on control queue",
            Command::MoveCursor(UpdateCursor::default()),
            T::ERR_UNSPEC,
        ),
    ];
    let mut rig = rig();
    for (name, cmd, want) in cases {
        let errors = rig.host.errors.len();
        let r = rig.ctrl(cmd);
        assert_eq!(
            r.response_type(),
            want,
            "{name}: {:?}",
            rig.host.errors.last()
        );
        assert_eq!(rig.host.errors.len(), errors + 1, "{name}: reported once");
        assert_eq!(
            rig.host.errors.last().map(|e| (e.0, e.1)),
            Some((rig.token, want)),
            "{name}"
        );
        still_serves(&mut rig);
    }
    // No half-built resources: every id that failed to be created is free.
    rig.ok(create(7, Format::B8G8R8X8_UNORM, 4, 4));
    // And the failed attaches left resource 3 without backing: a real attach works.
    rig.ok(attach(
        3,
        &[(0x1_0000, 64 * 64 * 4 / 2), (0x2_0000, 64 * 64 * 4 / 2)],
    ));
}

#[test]
fn queue_other_than_control_or_cursor_gets_err_unspec() {
    let mut rig = rig();
    let done = rig.submit_raw(2, &Request::new(Command::GetDisplayInfo).encode(), 408);
    assert_eq!(
        header_of(&done[0].response).type_,
        ResponseType::ERR_UNSPEC.0
    );
    assert_eq!(rig.host.errors.len(), 1);
    still_serves(&mut rig);
}

#[test]
fn unknown_command_code_gets_err_unspec() {
    let mut rig = rig();
    let mut req = Request::new(Command::GetDisplayInfo);
    req.header.type_ = 0x0150;
    rig.fails_req(&req, ResponseType::ERR_UNSPEC);
    still_serves(&mut rig);
}

#[test]
fn ring_idx_of_64_or_more_is_invalid() {
    let mut rig = rig();
    let req = fenced_ring(Command::GetDisplayInfo, 1, 0, 64);
    rig.fails_req(&req, ResponseType::ERR_INVALID_PARAMETER);
    still_serves(&mut rig);
}

#[test]
fn short_request_with_header_gets_invalid_parameter_with_fence_echo() {
    let mut rig = rig();
    let mut bytes = fenced(transfer(2, rect(0, 0, 1, 1), 0), 42).encode();
    bytes.truncate(30);
    let done = rig.submit_raw(CONTROL_QUEUE, &bytes, 64);
    assert_eq!(done.len(), 1);
    let h = header_of(&done[0].response);
    assert_eq!(h.type_, ResponseType::ERR_INVALID_PARAMETER.0);
    assert_eq!((h.flags, h.fence_id), (1, 42));
    assert_eq!(rig.host.errors.len(), 1);
    still_serves(&mut rig);
}

#[test]
fn request_shorter_than_header_gets_err_unspec_with_empty_header() {
    let mut rig = rig();
    let done = rig.submit_raw(CONTROL_QUEUE, &[0x05, 0x01, 0, 0, 1, 0, 0], 64);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].response.len(), CtrlHeader::SIZE);
    assert_eq!(
        header_of(&done[0].response),
        CtrlHeader::new(ResponseType::ERR_UNSPEC.0)
    );
    assert_eq!(rig.host.errors.len(), 1);
    still_serves(&mut rig);
}

#[test]
fn attach_with_count_beyond_bytes_gets_invalid_parameter() {
    let mut rig = rig();
    let mut bytes = Request::new(attach(3, &[(0x1_0000, 16)])).encode();
    bytes[28..32].copy_from_slice(&1000u32.to_le_bytes());
    let done = rig.submit_raw(CONTROL_QUEUE, &bytes, 24);
    assert_eq!(
        header_of(&done[0].response).type_,
        ResponseType::ERR_INVALID_PARAMETER.0
    );
    still_serves(&mut rig);
}

#[test]
fn response_longer_than_writable_len_is_truncated_and_reported() {
    let mut rig = rig();
    let full = rig.ok(Command::GetDisplayInfo).encode();
    let done = rig.submit_raw(
        CONTROL_QUEUE,
        &Request::new(Command::GetDisplayInfo).encode(),
        100,
    );
    assert_eq!(done[0].response, full[..100].to_vec());
    assert_eq!(rig.host.errors.len(), 1);
    assert!(
        rig.host.errors[0].2.contains("truncated"),
        "{}",
        rig.host.errors[0].2
    );
}

#[test]
fn entry_outside_memory_is_accepted_at_attach_and_fails_the_read() {
    let mut rig = rig();
    rig.ok(attach(
        3,
        &[(0x1_0000, 8192), (0x7_0000, 64 * 64 * 4 - 8192)],
    ));
    // The first rows are in memory, the last are not.
    rig.fails(transfer(3, rect(0, 0, 64, 64), 0), ResponseType::ERR_UNSPEC);
    assert!(
        rig.host
            .errors
            .last()
            .is_some_and(|e| e.2.contains("guest memory"))
    );
    // Only what was really read is reported, all of it inside memory.
    assert!(!rig.host.reads.is_empty());
    for (_, addr, data) in &rig.host.reads {
        assert!(*addr >= 0x1_0000 && addr + data.len() as u64 <= 0x1_0000 + 8192);
    }
    rig.ok(transfer(3, rect(0, 0, 64, 8), 0));

    // The same for a guest blob: created fine, refused when shown.
    rig.ok(blob(7, BlobMem::GUEST, 4096, &[(0x9_0000, 4096)]));
    rig.fails(
        Command::SetScanoutBlob(SetScanoutBlob {
            r: rect(0, 0, 4, 4),
            scanout_id: 0,
            resource_id: 7,
            width: 4,
            height: 4,
            format: Format::B8G8R8X8_UNORM,
            strides: [16, 0, 0, 0],
            ..SetScanoutBlob::default()
        }),
        ResponseType::ERR_UNSPEC,
    );
    still_serves(&mut rig);
}

#[test]
fn cursor_violations_are_reported_without_response_bytes() {
    let mut rig = rig();
    for (cmd, want) in [
        // Resource 2 is 40x30: not a cursor.
        (
            Command::UpdateCursor(UpdateCursor {
                resource_id: 2,
                ..UpdateCursor::default()
            }),
            ResponseType::ERR_INVALID_PARAMETER,
        ),
        (
            Command::UpdateCursor(UpdateCursor {
                resource_id: 99,
                ..UpdateCursor::default()
            }),
            ResponseType::ERR_INVALID_RESOURCE_ID,
        ),
        (
            Command::MoveCursor(UpdateCursor {
                pos: CursorPos {
                    scanout_id: 4,
                    ..CursorPos::default()
                },
                ..UpdateCursor::default()
            }),
            ResponseType::ERR_INVALID_SCANOUT_ID,
        ),
        (Command::GetDisplayInfo, ResponseType::ERR_UNSPEC),
    ] {
        let done = rig.cursor(cmd);
        assert_eq!(done.len(), 1);
        assert!(done[0].response.is_empty());
        assert_eq!(
            rig.host.errors.last().map(|e| (e.0, e.1)),
            Some((rig.token, want))
        );
    }
    assert!(rig.host.events.is_empty());
    let done = rig.submit_raw(CURSOR_QUEUE, &[1, 2, 3], 0);
    assert!(done[0].response.is_empty());
    still_serves(&mut rig);
}

#[test]
fn host_memory_budget_refuses_then_frees_on_unref_and_detach() {
    let mem = VecMemory::new(&[(0x1_0000, 0x8000)]);
    let config = DeviceConfig {
        scanouts: vec![(64, 64)],
        max_total_bytes: 64 << 10,
        ..DeviceConfig::default()
    };
    let mut rig = Rig::new(config, mem);
    // Four 16 KiB resources fill the 64 KiB budget exactly; a fifth does not fit.
    for id in 1..=4 {
        rig.ok(create(id, Format::B8G8R8X8_UNORM, 64, 64));
    }
    rig.fails(
        create(5, Format::B8G8R8X8_UNORM, 1, 1),
        ResponseType::ERR_OUT_OF_MEMORY,
    );
    rig.fails(
        attach(1, &[(0x1_0000, 16)]),
        ResponseType::ERR_OUT_OF_MEMORY,
    );
    // Unref gives its pixels back: now a backing shadow (the remaining room) fits.
    rig.ok(Command::ResourceUnref(ResourceUnref {
        resource_id: 4,
        padding: 0,
    }));
    rig.ok(attach(1, &[(0x1_0000, 16 << 10)]));
    rig.fails(
        create(5, Format::B8G8R8X8_UNORM, 1, 1),
        ResponseType::ERR_OUT_OF_MEMORY,
    );
    // Detach gives the shadow back.
    rig.ok(Command::ResourceDetachBacking(ResourceDetachBacking {
        resource_id: 1,
        padding: 0,
    }));
    rig.ok(create(5, Format::B8G8R8X8_UNORM, 64, 64));
    // Reset gives everything back.
    rig.dev.reset();
    for id in 1..=4 {
        rig.ok(create(id, Format::B8G8R8X8_UNORM, 64, 64));
    }
}
