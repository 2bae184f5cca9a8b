//! The Linux boot sequence (virtio-gpu.md §5.3) end to end on real rutabaga and real memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use vgt_device::{DeviceConfig, DisplayEvent};
use vgt_format::wire::{
    Command, Format, GetEdid, ResourceAttachBacking, ResourceCreate2d, ResourceFlush, ResponseBody,
    ResponseType, SetScanout, TransferToHost2d,
};

const W: u32 = 40;
const H: u32 = 30;
const STRIDE: u64 = W as u64 * 4;
/// Three entries, out of address order, none a multiple of the 160-byte row.
const BACKING: [(u64, u32); 3] = [(0x1_0000, 1000), (0x3_0000, 2500), (0x2_0000, 1300)];

fn boot_rig() -> Rig {
    let mem = VecMemory::new(&[(0x1_0000, 0x1000), (0x2_0000, 0x1000), (0x3_0000, 0x1000)]);
    let config = DeviceConfig {
        scanouts: vec![(W, H)],
        ..DeviceConfig::default()
    };
    let mut rig = Rig::new(config, mem);
    fill_backing(&mut rig.mem, &BACKING, 7);
    rig
}

fn create_and_attach(rig: &mut Rig) {
    rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: 2,
        format: Format::B8G8R8X8_UNORM,
        width: W,
        height: H,
    }));
    rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id: 2,
        nr_entries: 3,
        entries: entries(&BACKING),
    }));
}

fn transfer(rig: &mut Rig, r: vgt_format::wire::Rect, offset: u64) {
    rig.ok(Command::TransferToHost2d(TransferToHost2d {
        r,
        offset,
        resource_id: 2,
        padding: 0,
    }));
}

#[test]
fn linux_boot_sequence_update_pixels_equal_guest_memory() {
    let mut rig = boot_rig();
    let edid = rig.ok(Command::GetEdid(GetEdid::default()));
    assert!(matches!(edid.body, ResponseBody::OkEdid(_)));
    let info = rig.ok(Command::GetDisplayInfo);
    let ResponseBody::OkDisplayInfo(info) = info.body else {
        panic!("display info body");
    };
    assert_eq!(info.pmodes[0].r, rect(0, 0, W, H));
    assert_eq!(info.pmodes[0].enabled, 1);
    assert_eq!(info.pmodes[1].enabled, 0);

    create_and_attach(&mut rig);
    assert!(rig.host.reads.is_empty(), "attach reads no pixels");
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, 0, 0),
        scanout_id: 0,
        resource_id: 0,
    }));
    assert_eq!(
        rig.host.take_events(),
        vec![DisplayEvent::Scanout {
            scanout_id: 0,
            width: 0,
            height: 0
        }]
    );
    transfer(&mut rig, rect(0, 0, W, H), 0);
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, W, H),
        scanout_id: 0,
        resource_id: 2,
    }));
    let events = rig.host.take_events();
    assert_eq!(
        events[0],
        DisplayEvent::Scanout {
            scanout_id: 0,
            width: W,
            height: H
        }
    );
    let want = expected_rect(&rig.mem, &BACKING, 0, STRIDE, rect(0, 0, W, H));
    assert_eq!(only_update(&events), (0, 0, 0, W, H, want.clone()));

    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: rect(0, 0, W, H),
        resource_id: 2,
        padding: 0,
    }));
    assert_eq!(only_update(&rig.host.take_events()), (0, 0, 0, W, H, want));

    // Steady state: the guest draws into a damaged rectangle, then TRANSFER + FLUSH it with
    // Linux's offset = x * 4 + y * pitch.
    let damage = rect(5, 7, 10, 4);
    for row in 0..4u64 {
        for i in 0..40u64 {
            let off = (7 + row) * STRIDE + 5 * 4 + i;
            rig.mem
                .write(backing_addr(&BACKING, off), &[0xA0 ^ (row * 40 + i) as u8]);
        }
    }
    rig.host.reads.clear();
    let offset = 7 * STRIDE + 5 * 4;
    transfer(&mut rig, damage, offset);
    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: damage,
        resource_id: 2,
        padding: 0,
    }));
    let want = expected_rect(&rig.mem, &BACKING, offset, STRIDE, damage);
    assert_eq!(want[0], 0xA0);
    assert_eq!(only_update(&rig.host.take_events()), (0, 5, 7, 10, 4, want));
}

#[test]
fn transfer_reports_exactly_the_bytes_it_uses() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    // A rectangle whose rows straddle entry boundaries (offset 1000 and 3500).
    let r = rect(3, 5, 17, 20);
    let offset = 5 * STRIDE + 3 * 4;
    transfer(&mut rig, r, offset);
    let got = rig.host.read_bytes();
    let want = expected_addrs(&BACKING, offset, STRIDE, r);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), want);
    for (addr, v) in &got {
        assert_eq!(*v, rig.mem.byte(*addr), "reported value at {addr:#x}");
    }
    assert!(rig.host.reads.iter().all(|(id, _, _)| *id == 2));
    // Rows are separated by unread bytes, so every read is at most one row long.
    assert!(rig.host.reads.iter().all(|(_, _, d)| d.len() <= 17 * 4));
}

#[test]
fn full_width_transfer_coalesces_into_one_read_per_entry() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    transfer(&mut rig, rect(0, 0, W, H), 0);
    let ranges: Vec<(u64, usize)> = rig
        .host
        .reads
        .iter()
        .map(|(_, a, d)| (*a, d.len()))
        .collect();
    assert_eq!(
        ranges,
        vec![(0x1_0000, 1000), (0x3_0000, 2500), (0x2_0000, 1300)]
    );
}

#[test]
fn transfer_offset_below_rect_start_reads_rows_from_offset() {
    // virtio/QEMU semantics: row r comes from backing[offset + r * stride], whatever x, y are.
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    let r = rect(4, 3, 5, 2);
    transfer(&mut rig, r, 8);
    rig.ok(Command::SetScanout(SetScanout {
        r,
        scanout_id: 0,
        resource_id: 2,
    }));
    let want = expected_rect(&rig.mem, &BACKING, 8, STRIDE, rect(0, 0, 5, 2));
    assert_eq!(only_update(&rig.host.take_events()), (0, 0, 0, 5, 2, want));
    assert_eq!(
        rig.host.read_bytes().keys().copied().collect::<Vec<_>>(),
        expected_addrs(&BACKING, 8, STRIDE, r)
    );
}

#[test]
fn flush_updates_every_scanout_showing_the_resource_relative_to_it() {
    let mem = VecMemory::new(&[(0x1_0000, 0x1000), (0x2_0000, 0x1000), (0x3_0000, 0x1000)]);
    let config = DeviceConfig {
        scanouts: vec![(W, H), (20, 10)],
        ..DeviceConfig::default()
    };
    let mut rig = Rig::new(config, mem);
    fill_backing(&mut rig.mem, &BACKING, 3);
    create_and_attach(&mut rig);
    transfer(&mut rig, rect(0, 0, W, H), 0);
    for (scanout_id, r) in [(0, rect(0, 0, W, H)), (1, rect(10, 10, 20, 10))] {
        rig.ok(Command::SetScanout(SetScanout {
            r,
            scanout_id,
            resource_id: 2,
        }));
    }
    rig.host.take_events();
    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: rect(5, 5, 10, 10),
        resource_id: 2,
        padding: 0,
    }));
    let events = rig.host.take_events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        only_update(&events[..1]),
        (
            0,
            5,
            5,
            10,
            10,
            expected_rect(
                &rig.mem,
                &BACKING,
                5 * STRIDE + 20,
                STRIDE,
                rect(0, 0, 10, 10)
            )
        )
    );
    let part = expected_rect(
        &rig.mem,
        &BACKING,
        10 * STRIDE + 40,
        STRIDE,
        rect(0, 0, 5, 5),
    );
    assert_eq!(only_update(&events[1..]), (1, 0, 0, 5, 5, part));
}

#[test]
fn unref_of_resource_on_scanout_disables_the_scanout_first() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, W, H),
        scanout_id: 0,
        resource_id: 2,
    }));
    rig.host.take_events();
    rig.ok(Command::ResourceUnref(vgt_format::wire::ResourceUnref {
        resource_id: 2,
        padding: 0,
    }));
    assert_eq!(
        rig.host.take_events(),
        vec![DisplayEvent::Scanout {
            scanout_id: 0,
            width: 0,
            height: 0
        }]
    );
    // The id is free again, and flushing the old one is refused.
    rig.fails(
        Command::ResourceFlush(ResourceFlush {
            r: rect(0, 0, 1, 1),
            resource_id: 2,
            padding: 0,
        }),
        ResponseType::ERR_INVALID_RESOURCE_ID,
    );
    create_and_attach(&mut rig);
}

#[test]
fn non_bgrx_formats_are_converted_for_the_display() {
    let mut rig = boot_rig();
    rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: 2,
        format: Format::R8G8B8A8_UNORM,
        width: W,
        height: H,
    }));
    rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id: 2,
        nr_entries: 3,
        entries: entries(&BACKING),
    }));
    transfer(&mut rig, rect(0, 0, 2, 1), 0);
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, 2, 1),
        scanout_id: 0,
        resource_id: 2,
    }));
    let raw = expected_rect(&rig.mem, &BACKING, 0, STRIDE, rect(0, 0, 2, 1));
    let want: Vec<u8> = raw
        .chunks(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .collect();
    assert_eq!(only_update(&rig.host.take_events()).5, want);
}

#[test]
fn reset_drops_resources_and_scanouts() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    rig.dev.reset();
    rig.fails(
        Command::ResourceFlush(ResourceFlush {
            r: rect(0, 0, 1, 1),
            resource_id: 2,
            padding: 0,
        }),
        ResponseType::ERR_INVALID_RESOURCE_ID,
    );
    create_and_attach(&mut rig);
}

/// The pixel buffer of the single Update in `events`.
fn update_pixels(events: Vec<DisplayEvent>) -> Vec<u8> {
    events
        .into_iter()
        .find_map(|e| match e {
            DisplayEvent::Update { pixels, .. } => Some(pixels),
            _ => None,
        })
        .expect("an update")
}

#[test]
fn recycled_buffer_with_stale_bytes_yields_exactly_the_frame() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    transfer(&mut rig, rect(0, 0, W, H), 0);
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, W, H),
        scanout_id: 0,
        resource_id: 2,
    }));
    let full = expected_rect(&rig.mem, &BACKING, 0, STRIDE, rect(0, 0, W, H));
    let first = update_pixels(rig.host.take_events());
    assert_eq!(first, full);

    // Hand back a buffer full of garbage, longer than any picture: a full flush must come
    // out of that very buffer (no new allocation) and show none of the garbage.
    let mut stale = first;
    stale.clear();
    stale.resize((W * H * 4) as usize + 999, 0xAA);
    let ptr = stale.as_ptr();
    rig.dev.recycle_pixels(stale);
    let flush = |rig: &mut Rig, r| {
        rig.ok(Command::ResourceFlush(ResourceFlush {
            r,
            resource_id: 2,
            padding: 0,
        }));
        update_pixels(rig.host.take_events())
    };
    let again = flush(&mut rig, rect(0, 0, W, H));
    assert_eq!(again.as_ptr(), ptr, "the recycled buffer is reused");
    assert_eq!(again, full);

    // A smaller damage rectangle into the same stale buffer (now longer than needed, refilled
    // with garbage): only the rectangle's bytes, truncated to its size.
    let mut stale = again;
    stale.fill(0x55);
    rig.dev.recycle_pixels(stale);
    let part = flush(&mut rig, rect(3, 4, 7, 5));
    assert_eq!(part.as_ptr(), ptr);
    assert_eq!(
        part,
        expected_rect(
            &rig.mem,
            &BACKING,
            4 * STRIDE + 12,
            STRIDE,
            rect(0, 0, 7, 5)
        )
    );

    // A buffer shorter than the picture (but with room) grows: stale head, zero-filled tail,
    // all overwritten.
    let mut short = Vec::with_capacity((W * H * 4) as usize);
    short.resize(16, 0xEE);
    rig.dev.recycle_pixels(short);
    assert_eq!(flush(&mut rig, rect(0, 0, W, H)), full);
}

#[test]
fn transfers_through_the_reused_staging_buffer_copy_only_their_rows() {
    let mut rig = boot_rig();
    create_and_attach(&mut rig);
    transfer(&mut rig, rect(0, 0, W, H), 0);
    rig.ok(Command::SetScanout(SetScanout {
        r: rect(0, 0, W, H),
        scanout_id: 0,
        resource_id: 2,
    }));
    rig.host.take_events();
    // The guest redraws everything; only a 6x3 rectangle at (5, 7) is transferred. The
    // staging buffer still holds the first transfer's bytes: none of the new guest bytes
    // outside the rectangle may reach the resource, and all of those inside must.
    let before = expected_rect(&rig.mem, &BACKING, 0, STRIDE, rect(0, 0, W, H));
    fill_backing(&mut rig.mem, &BACKING, 99);
    let off = 7 * STRIDE + 5 * 4;
    transfer(&mut rig, rect(5, 7, 6, 3), off);
    let after = expected_rect(&rig.mem, &BACKING, 0, STRIDE, rect(0, 0, W, H));
    rig.ok(Command::ResourceFlush(ResourceFlush {
        r: rect(0, 0, W, H),
        resource_id: 2,
        padding: 0,
    }));
    let shown = update_pixels(rig.host.take_events());
    let mut want = before;
    for row in 7..10 {
        let a = (row * W as usize + 5) * 4;
        want[a..a + 24].copy_from_slice(&after[a..a + 24]);
    }
    assert_ne!(
        want, after,
        "the redraw changed pixels outside the rectangle"
    );
    assert_eq!(shown, want);
}
