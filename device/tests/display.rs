//! Cursor, guest blobs, EDID, display changes, fences and the config space.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vgt_device::{
    CURSOR_QUEUE, Device, DeviceConfig, DisplayEvent, DisplayInfoFromHost, EVENT_DISPLAY,
    F_CONTEXT_INIT, F_EDID, F_RESOURCE_BLOB, F_RESOURCE_UUID, F_VIRGL, FenceInfo, HostDisplay,
    resource_uuid,
};
use vgt_format::wire::{
    BlobFlags, BlobMem, Command, CursorPos, Format, GetEdid, Rect, Request, ResourceAssignUuid,
    ResourceAttachBacking, ResourceCreate2d, ResourceCreateBlob, ResourceFlush, ResponseBody,
    ResponseType, SetScanout, SetScanoutBlob, TransferToHost2d, UpdateCursor,
    edid::parse_detailed_timing,
};

fn mem() -> VecMemory {
    VecMemory::new(&[(0x1_0000, 0x8000), (0x4_0000, 0x8000)])
}

fn rig_with(scanouts: Vec<(u32, u32)>) -> Rig {
    Rig::new(
        DeviceConfig {
            scanouts,
            ..DeviceConfig::default()
        },
        mem(),
    )
}

const CURSOR_BACKING: [(u64, u32); 2] = [(0x4_1000, 10_000), (0x1_2000, 6384)];

fn cursor_resource(rig: &mut Rig, resource_id: u32) {
    fill_backing(&mut rig.mem, &CURSOR_BACKING, 9);
    rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id,
        format: Format::B8G8R8A8_UNORM,
        width: 64,
        height: 64,
    }));
    rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id,
        nr_entries: 2,
        entries: entries(&CURSOR_BACKING),
    }));
    // Linux fences the cursor transfer and waits for it.
    let done = rig.submit_raw(
        0,
        &fenced(
            Command::TransferToHost2d(TransferToHost2d {
                r: rect(0, 0, 64, 64),
                offset: 0,
                resource_id,
                padding: 0,
            }),
            11,
        )
        .encode(),
        24,
    );
    assert_eq!(done.len(), 1);
}

#[test]
fn cursor_update_move_and_hide_reach_the_display() {
    let mut rig = rig_with(vec![(640, 480)]);
    cursor_resource(&mut rig, 5);
    let pos = CursorPos {
        scanout_id: 0,
        x: 100,
        y: 50,
        padding: 0,
    };
    let done = rig.cursor(Command::UpdateCursor(UpdateCursor {
        pos,
        resource_id: 5,
        hot_x: 3,
        hot_y: 4,
        padding: 0,
    }));
    assert_eq!(done.len(), 1);
    assert!(done[0].response.is_empty(), "cursor queue has no response");
    let events = rig.host.take_events();
    let [
        DisplayEvent::CursorUpdate {
            scanout_id: 0,
            x: 100,
            y: 50,
            hot_x: 3,
            hot_y: 4,
            resource_id: 5,
            image,
        },
    ] = &events[..]
    else {
        panic!("cursor update expected, got {events:?}");
    };
    let want = expected_rect(&rig.mem, &CURSOR_BACKING, 0, 256, rect(0, 0, 64, 64));
    assert_eq!(&image[..], &want[..]);

    rig.cursor(Command::MoveCursor(UpdateCursor {
        pos: CursorPos { x: 7, y: 8, ..pos },
        resource_id: 5,
        ..UpdateCursor::default()
    }));
    rig.cursor(Command::UpdateCursor(UpdateCursor {
        pos: CursorPos { x: 9, y: 10, ..pos },
        resource_id: 0,
        ..UpdateCursor::default()
    }));
    assert_eq!(
        rig.host.take_events(),
        vec![
            DisplayEvent::CursorMove {
                scanout_id: 0,
                x: 7,
                y: 8
            },
            DisplayEvent::CursorHide {
                scanout_id: 0,
                x: 9,
                y: 10
            },
        ]
    );
    assert!(rig.host.errors.is_empty());
}

#[test]
fn move_cursor_is_allocation_light_and_answers_nothing() {
    let mut rig = rig_with(vec![(640, 480)]);
    let bytes = Request::new(Command::MoveCursor(UpdateCursor::default())).encode();
    for _ in 0..3 {
        let done = rig.submit_raw(CURSOR_QUEUE, &bytes, 0);
        assert_eq!(done[0].response.capacity(), 0);
    }
}

#[test]
fn fenced_command_echoes_fence_fields_and_signals() {
    let mut rig = rig_with(vec![(640, 480)]);
    let r = rig.ctrl_req(&fenced(Command::GetDisplayInfo, 77));
    assert_eq!(r.response_type(), ResponseType::OK_DISPLAY_INFO);
    assert_eq!(
        (
            r.header.flags,
            r.header.fence_id,
            r.header.ctx_id,
            r.header.ring_idx
        ),
        (1, 77, 0, 0)
    );
    assert_eq!(
        rig.host.fences,
        vec![FenceInfo {
            flags: 1,
            fence_id: 77,
            ctx_id: 0,
            ring_idx: 0
        }]
    );

    let r = rig.ctrl_req(&fenced_ring(
        Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: 1,
            format: Format::B8G8R8X8_UNORM,
            width: 4,
            height: 4,
        }),
        78,
        3,
        5,
    ));
    assert_eq!(r.response_type(), ResponseType::OK_NODATA);
    assert_eq!(
        (
            r.header.flags,
            r.header.fence_id,
            r.header.ctx_id,
            r.header.ring_idx
        ),
        (3, 78, 3, 5)
    );
    assert_eq!(
        rig.host.fences.last(),
        Some(&FenceInfo {
            flags: 3,
            fence_id: 78,
            ctx_id: 3,
            ring_idx: 5
        })
    );
    assert_eq!(rig.dev.pending_fences(), 0);

    // A failed fenced command is answered at once, still echoing the fence.
    let errors = rig.host.fences.len();
    let r = rig.ctrl_req(&fenced(
        Command::ResourceFlush(ResourceFlush {
            r: rect(0, 0, 1, 1),
            resource_id: 99,
            padding: 0,
        }),
        79,
    ));
    assert_eq!(r.response_type(), ResponseType::ERR_INVALID_RESOURCE_ID);
    assert_eq!((r.header.flags, r.header.fence_id), (1, 79));
    assert_eq!(
        rig.host.fences.len(),
        errors,
        "no renderer fence for a failed command"
    );
}

#[test]
fn guest_blob_scanout_and_flush_read_exactly_the_shown_bytes() {
    // A 16x8 framebuffer with a 80-byte stride at offset 40, in a blob of two scattered entries.
    const LIST: [(u64, u32); 2] = [(0x4_2000, 333), (0x1_0100, 400)];
    let mut rig = rig_with(vec![(16, 8)]);
    fill_backing(&mut rig.mem, &LIST, 5);
    rig.ok(Command::ResourceCreateBlob(ResourceCreateBlob {
        resource_id: 9,
        blob_mem: BlobMem::GUEST,
        blob_flags: BlobFlags(BlobFlags::USE_SHAREABLE),
        nr_entries: 2,
        blob_id: 0,
        size: 700,
        entries: entries(&LIST),
    }));
    assert!(rig.host.reads.is_empty());
    // TRANSFER_TO_HOST_2D on a guest blob is accepted and reads nothing (QEMU does the same).
    rig.ok(Command::TransferToHost2d(TransferToHost2d {
        r: rect(0, 0, 16, 8),
        offset: 0,
        resource_id: 9,
        padding: 0,
    }));
    assert!(rig.host.reads.is_empty());
    let fb = SetScanoutBlob {
        r: rect(0, 0, 16, 8),
        scanout_id: 0,
        resource_id: 9,
        width: 16,
        height: 8,
        format: Format::B8G8R8X8_UNORM,
        padding: 0,
        strides: [80, 0, 0, 0],
        offsets: [40, 0, 0, 0],
    };
    rig.ok(Command::SetScanoutBlob(fb));
    let events = rig.host.take_events();
    assert_eq!(
        events[0],
        DisplayEvent::Scanout {
            scanout_id: 0,
            width: 16,
            height: 8
        }
    );
    let want = expected_rect(&rig.mem, &LIST, 40, 80, rect(0, 0, 16, 8));
    assert_eq!(only_update(&events), (0, 0, 0, 16, 8, want));
    assert_eq!(
        rig.host.read_bytes().keys().copied().collect::<Vec<_>>(),
        expected_addrs(&LIST, 40, 80, rect(0, 0, 16, 8))
    );

    // The guest draws; a flush of a sub-rectangle reads just that part again.
    rig.mem
        .write(backing_addr(&LIST, 40 + 2 * 80 + 3 * 4), &[1, 2, 3, 4]);
    rig.host.reads.clear();
    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: rect(3, 2, 4, 3),
        resource_id: 9,
        padding: 0,
    }));
    let off = 40 + 2 * 80 + 3 * 4;
    let want = expected_rect(&rig.mem, &LIST, off, 80, rect(0, 0, 4, 3));
    assert_eq!(&want[..4], &[1, 2, 3, 4]);
    assert_eq!(only_update(&rig.host.take_events()), (0, 3, 2, 4, 3, want));
    assert_eq!(
        rig.host.read_bytes().keys().copied().collect::<Vec<_>>(),
        expected_addrs(&LIST, off, 80, rect(0, 0, 4, 3))
    );
    assert!(rig.host.reads.iter().all(|r| r.0 == 9));

    // A layout that does not fit the blob is refused.
    rig.fails(
        Command::SetScanoutBlob(SetScanoutBlob {
            offsets: [100, 0, 0, 0],
            ..fb
        }),
        ResponseType::ERR_INVALID_PARAMETER,
    );
    rig.fails(
        Command::SetScanoutBlob(SetScanoutBlob {
            strides: [60, 0, 0, 0],
            ..fb
        }),
        ResponseType::ERR_INVALID_PARAMETER,
    );
}

#[test]
fn blob_created_without_entries_takes_backing_later() {
    let mut rig = rig_with(vec![(16, 8)]);
    let list = [(0x1_0000u64, 512u32)];
    fill_backing(&mut rig.mem, &list, 2);
    rig.ok(Command::ResourceCreateBlob(ResourceCreateBlob {
        resource_id: 4,
        blob_mem: BlobMem::GUEST,
        blob_flags: BlobFlags(0),
        nr_entries: 0,
        blob_id: 0,
        size: 512,
        entries: vec![],
    }));
    let fb = SetScanoutBlob {
        r: rect(0, 0, 16, 8),
        scanout_id: 0,
        resource_id: 4,
        width: 16,
        height: 8,
        format: Format::X8R8G8B8_UNORM,
        padding: 0,
        strides: [64, 0, 0, 0],
        offsets: [0; 4],
    };
    rig.fails(Command::SetScanoutBlob(fb), ResponseType::ERR_UNSPEC);
    rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id: 4,
        nr_entries: 1,
        entries: entries(&list),
    }));
    rig.ok(Command::SetScanoutBlob(fb));
    // X8R8G8B8 memory bytes X, R, G, B become B, G, R, X.
    let raw = expected_rect(&rig.mem, &list, 0, 64, rect(0, 0, 16, 8));
    let want: Vec<u8> = raw
        .chunks(4)
        .flat_map(|p| [p[3], p[2], p[1], p[0]])
        .collect();
    assert_eq!(only_update(&rig.host.take_events()).5, want);
}

#[test]
fn generated_edid_has_valid_checksum_and_the_configured_mode() {
    let mut rig = rig_with(vec![(1024, 768), (800, 600)]);
    for (scanout, (w, h)) in [(0u32, (1024u32, 768u32)), (1, (800, 600))] {
        let r = rig.ok(Command::GetEdid(GetEdid {
            scanout,
            padding: 0,
        }));
        let ResponseBody::OkEdid(edid) = &r.body else {
            panic!("edid body");
        };
        let bytes = edid.bytes();
        assert_eq!(bytes.len(), 128);
        assert_eq!(&bytes[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(
            bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "checksum"
        );
        let t = parse_detailed_timing(&bytes[54..72]).expect("preferred timing");
        assert_eq!((t.h_active, t.v_active), (w, h));
    }
}

#[test]
fn host_edid_and_display_info_are_used_when_the_host_has_them() {
    let mut rig = rig_with(vec![(1024, 768)]);
    rig.host.edid = Some(vec![0xAB; 256]);
    let r = rig.ok(Command::GetEdid(GetEdid::default()));
    let ResponseBody::OkEdid(edid) = &r.body else {
        panic!("edid body");
    };
    assert_eq!(edid.bytes(), &[0xAB; 256][..]);

    rig.host.display_info = Some(DisplayInfoFromHost {
        displays: vec![HostDisplay {
            x: 0,
            y: 0,
            width: 1920,
            height: 1080,
            enabled: true,
            flags: 0,
        }],
    });
    let r = rig.ok(Command::GetDisplayInfo);
    let ResponseBody::OkDisplayInfo(info) = r.body else {
        panic!("display info body");
    };
    assert_eq!(info.pmodes[0].r, rect(0, 0, 1920, 1080));
}

#[test]
fn display_change_raises_config_event_until_cleared() {
    let mut rig = rig_with(vec![(1024, 768), (800, 600)]);
    let cfg = rig.dev.config_space();
    assert_eq!(u32::from_le_bytes(cfg[0..4].try_into().unwrap()), 0);
    assert_eq!(u32::from_le_bytes(cfg[8..12].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(cfg[12..16].try_into().unwrap()), 0);

    rig.dev.set_scanout_size(1, 1280, 720, true);
    let cfg = rig.dev.config_space();
    assert_eq!(
        u32::from_le_bytes(cfg[0..4].try_into().unwrap()),
        EVENT_DISPLAY
    );
    // The driver re-reads display info and EDID, then clears the event.
    let r = rig.ok(Command::GetDisplayInfo);
    let ResponseBody::OkDisplayInfo(info) = r.body else {
        panic!("display info body");
    };
    assert_eq!(info.pmodes[1].r, rect(0, 0, 1280, 720));
    let r = rig.ok(Command::GetEdid(GetEdid {
        scanout: 1,
        padding: 0,
    }));
    let ResponseBody::OkEdid(edid) = &r.body else {
        panic!("edid body");
    };
    let t = parse_detailed_timing(&edid.bytes()[54..72]).expect("timing");
    assert_eq!((t.h_active, t.v_active), (1280, 720));
    rig.dev.clear_events(EVENT_DISPLAY);
    assert_eq!(rig.dev.config_space()[0..4], [0, 0, 0, 0]);

    rig.dev.set_scanout_size(0, 0, 0, false);
    let r = rig.ok(Command::GetDisplayInfo);
    let ResponseBody::OkDisplayInfo(info) = r.body else {
        panic!("display info body");
    };
    assert_eq!(info.pmodes[0].enabled, 0);
}

#[test]
fn features_offer_edid_uuid_blob_but_not_3d_on_the_2d_renderer() {
    let dev = Device::new(DeviceConfig::default()).expect("device");
    let f = dev.features();
    assert_eq!(
        f & (F_EDID | F_RESOURCE_UUID | F_RESOURCE_BLOB),
        F_EDID | F_RESOURCE_UUID | F_RESOURCE_BLOB
    );
    assert_eq!(f & (F_VIRGL | F_CONTEXT_INIT), 0);
    let dev = Device::new(DeviceConfig {
        edid: false,
        ..DeviceConfig::default()
    })
    .expect("device");
    assert_eq!(dev.features() & F_EDID, 0);
}

#[test]
fn edid_disabled_refuses_get_edid() {
    let mut rig = Rig::new(
        DeviceConfig {
            edid: false,
            ..DeviceConfig::default()
        },
        mem(),
    );
    rig.fails(
        Command::GetEdid(GetEdid::default()),
        ResponseType::ERR_UNSPEC,
    );
}

#[test]
fn assign_uuid_is_deterministic_per_resource() {
    let mut rig = rig_with(vec![(64, 64)]);
    for id in [1, 2] {
        rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: id,
            format: Format::B8G8R8X8_UNORM,
            width: 4,
            height: 4,
        }));
    }
    let uuid = |rig: &mut Rig, resource_id| match rig
        .ok(Command::ResourceAssignUuid(ResourceAssignUuid {
            resource_id,
            padding: 0,
        }))
        .body
    {
        ResponseBody::OkResourceUuid(u) => u,
        other => panic!("uuid body, got {other:?}"),
    };
    let a = uuid(&mut rig, 1);
    assert_eq!(a, uuid(&mut rig, 1));
    assert_eq!(a, resource_uuid(1));
    assert_ne!(a, uuid(&mut rig, 2));
    assert_eq!(a[6] >> 4, 8, "version 8");
}

#[test]
fn device_rejects_bad_scanout_configs() {
    assert!(
        Device::new(DeviceConfig {
            scanouts: vec![],
            ..DeviceConfig::default()
        })
        .is_err()
    );
    assert!(
        Device::new(DeviceConfig {
            scanouts: vec![(1, 1); 17],
            ..DeviceConfig::default()
        })
        .is_err()
    );
    assert!(
        Device::new(DeviceConfig {
            scanouts: vec![(0, 1)],
            ..DeviceConfig::default()
        })
        .is_err()
    );
}

#[test]
fn device_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Device>();
}

#[test]
fn guest_blob_flush_into_recycled_buffer_shows_no_stale_bytes() {
    const LIST: [(u64, u32); 2] = [(0x4_2000, 333), (0x1_0100, 400)];
    let mut rig = rig_with(vec![(16, 8)]);
    fill_backing(&mut rig.mem, &LIST, 9);
    rig.ok(Command::ResourceCreateBlob(ResourceCreateBlob {
        resource_id: 9,
        blob_mem: BlobMem::GUEST,
        blob_flags: BlobFlags(BlobFlags::USE_SHAREABLE),
        nr_entries: 2,
        blob_id: 0,
        size: 700,
        entries: entries(&LIST),
    }));
    rig.ok(Command::SetScanoutBlob(SetScanoutBlob {
        r: rect(0, 0, 16, 8),
        scanout_id: 0,
        resource_id: 9,
        width: 16,
        height: 8,
        format: Format::B8G8R8X8_UNORM,
        padding: 0,
        strides: [80, 0, 0, 0],
        offsets: [40, 0, 0, 0],
    }));
    rig.host.take_events();
    rig.dev.recycle_pixels(vec![0xAB; 16 * 8 * 4]);
    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: rect(0, 0, 16, 8),
        resource_id: 9,
        padding: 0,
    }));
    let want = expected_rect(&rig.mem, &LIST, 40, 80, rect(0, 0, 16, 8));
    assert_eq!(only_update(&rig.host.take_events()), (0, 0, 0, 16, 8, want));
}

/// Whole-resource transfer then flush: the update says it is a copy of the transfer's read,
/// and is; anything that breaks the copy (a partial transfer, a format the device converts, a
/// partial flush, a read split in two) takes the claim away.
#[test]
fn update_names_the_memory_read_it_copies_only_when_it_is_one() {
    const W: u32 = 32;
    const H: u32 = 16;
    let len = W * H * 4;
    let one_run = [(0x1_0000u64, len)];
    let two_runs = [(0x1_0000u64, len / 2), (0x4_0000u64, len / 2)];
    let check =
        |format: Format, backing: &[(u64, u32)], transfers: &[Rect], flush: Rect, claimed: bool| {
            let mut rig = rig_with(vec![(W, H)]);
            fill_backing(&mut rig.mem, backing, 5);
            rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
                resource_id: 3,
                format,
                width: W,
                height: H,
            }));
            rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
                resource_id: 3,
                nr_entries: backing.len() as u32,
                entries: entries(backing),
            }));
            rig.ok(Command::SetScanout(SetScanout {
                r: rect(0, 0, W, H),
                scanout_id: 0,
                resource_id: 3,
            }));
            for t in transfers {
                rig.ok(Command::TransferToHost2d(TransferToHost2d {
                    r: *t,
                    offset: u64::from(t.y) * u64::from(W) * 4 + u64::from(t.x) * 4,
                    resource_id: 3,
                    padding: 0,
                }));
            }
            rig.host.take_events();
            rig.ok(Command::ResourceFlush(ResourceFlush {
                r: flush,
                resource_id: 3,
                padding: 0,
            }));
            let events = rig.host.take_events();
            let copy = events.iter().find_map(|e| match e {
                DisplayEvent::Update {
                    copy_of_read,
                    pixels,
                    ..
                } => Some((*copy_of_read, pixels.clone())),
                _ => None,
            });
            let (copy, pixels) = copy.expect("an update");
            let what = format!("{format:?} {backing:?} {transfers:?} flush {flush:?}");
            assert_eq!(copy.is_some(), claimed, "{what}: {copy:?}");
            if let Some(n) = copy {
                let k = rig
                    .host
                    .read_numbers
                    .iter()
                    .position(|&x| x == n)
                    .expect("the named read was reported");
                assert_eq!(
                    pixels, rig.host.reads[k].2,
                    "{what}: pixels are the read's bytes"
                );
            }
            // Reads are numbered in order from 0.
            let numbers: Vec<u64> = (0..rig.host.read_numbers.len() as u64).collect();
            assert_eq!(rig.host.read_numbers, numbers, "{what}");
        };
    let full = rect(0, 0, W, H);
    check(Format::B8G8R8X8_UNORM, &one_run, &[full], full, true);
    check(Format::B8G8R8A8_UNORM, &one_run, &[full], full, true);
    // A second whole transfer: the claim names the latest read.
    check(Format::B8G8R8X8_UNORM, &one_run, &[full, full], full, true);
    // The device swaps bytes for these: the update is not the read's bytes.
    check(Format::R8G8B8X8_UNORM, &one_run, &[full], full, false);
    check(Format::X8R8G8B8_UNORM, &one_run, &[full], full, false);
    // A later partial transfer changed part of the resource.
    check(
        Format::B8G8R8X8_UNORM,
        &one_run,
        &[full, rect(1, 1, 4, 4)],
        full,
        false,
    );
    // Only part of the resource was ever transferred.
    check(
        Format::B8G8R8X8_UNORM,
        &one_run,
        &[rect(0, 0, W, H - 1)],
        full,
        false,
    );
    // A flush of part of it.
    check(
        Format::B8G8R8X8_UNORM,
        &one_run,
        &[full],
        rect(0, 0, W, 8),
        false,
    );
    // The backing is in two pieces: two reads, neither of them the whole picture.
    check(Format::B8G8R8X8_UNORM, &two_runs, &[full], full, false);
}
