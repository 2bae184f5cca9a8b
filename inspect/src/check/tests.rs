//! Each check triggered by a crafted capture made of real wire bytes, and a clean boot that
//! triggers none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use vgt_format::record::{Direction, Lifecycle, LifecycleKind, RecordBody, VhostUserMessage};
use vgt_format::testing::{CaptureBuilder, FRAMEBUFFER_GPA};
use vgt_format::wire::{
    BlobFlags, BlobMem, Box3d, CapsetId, CapsetInfo, Command, CtrlHeader, CtxCreate, CtxResource,
    FLAG_FENCE, FLAG_INFO_RING_IDX, Format, GetCapset, GetCapsetInfo, MemEntry, Rect, Request,
    ResourceAttachBacking, ResourceCreate2d, ResourceCreate3d, ResourceCreateBlob,
    ResourceDetachBacking, ResourceFlush, ResourceMapBlob, ResourceUnmapBlob, ResourceUnref,
    Response, ResponseBody, ResponseType, SetScanout, SetScanoutBlob, TransferHost3d,
    TransferToHost2d,
};
use vgt_format::{CaptureReader, CaptureWriter, WriterOptions};

use super::{CheckId, Finding, Report, Severity, check_capture};

/// A `Write` whose bytes stay readable after the writer is consumed.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type B = CaptureBuilder<Shared>;

/// Builds a capture (1 scanout) with `f` and runs every check on it.
fn check(f: impl FnOnce(&mut B)) -> Report {
    let buf = Shared::default();
    let writer = CaptureWriter::new(buf.clone(), WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    f(&mut b);
    b.finish().unwrap();
    let bytes = buf.0.borrow().clone();
    check_capture(&CaptureReader::from_bytes(bytes).unwrap())
}

fn only(report: &Report, check: CheckId) -> Vec<String> {
    report.of(check).map(|f| f.message.clone()).collect()
}

fn assert_found(report: &Report, check: CheckId, needle: &str) {
    let found = only(report, check);
    assert!(
        found.iter().any(|m| m.contains(needle)),
        "no {} finding containing {needle:?}; findings: {:#?}",
        check.name(),
        report.findings
    );
}

fn req(c: Command) -> Request {
    Request::new(c)
}

fn fenced(c: Command, fence: u64) -> Request {
    let mut r = Request::new(c);
    r.header.flags = FLAG_FENCE;
    r.header.fence_id = fence;
    r
}

fn on_ctx(c: Command, ctx: u32) -> Request {
    let mut r = Request::new(c);
    r.header.ctx_id = ctx;
    r
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

fn create(b: &mut B, res: u32, w: u32, h: u32) -> u64 {
    b.ok(req(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: res,
        format: Format::B8G8R8X8_UNORM,
        width: w,
        height: h,
    })))
    .unwrap()
}

fn attach(b: &mut B, res: u32, len: u32) -> u64 {
    b.ok(req(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id: res,
        nr_entries: 1,
        entries: vec![MemEntry {
            addr: FRAMEBUFFER_GPA,
            length: len,
            padding: 0,
        }],
    })))
    .unwrap()
}

fn show(b: &mut B, scanout: u32, res: u32, r: Rect) -> u64 {
    b.ok(req(Command::SetScanout(SetScanout {
        r,
        scanout_id: scanout,
        resource_id: res,
    })))
    .unwrap()
}

fn unref(b: &mut B, res: u32) -> u64 {
    b.ok(req(Command::ResourceUnref(ResourceUnref {
        resource_id: res,
        padding: 0,
    })))
    .unwrap()
}

fn transfer(b: &mut B, res: u32, r: Rect, offset: u64) -> u64 {
    b.ok(req(Command::TransferToHost2d(TransferToHost2d {
        r,
        offset,
        resource_id: res,
        padding: 0,
    })))
    .unwrap()
}

fn flush(b: &mut B, res: u32, r: Rect) -> u64 {
    b.ok(req(Command::ResourceFlush(ResourceFlush {
        r,
        resource_id: res,
        padding: 0,
    })))
    .unwrap()
}

/// A shown 64x32 resource 7 with exactly enough backing.
fn shown_resource(b: &mut B) {
    create(b, 7, 64, 32);
    attach(b, 7, 64 * 32 * 4);
    show(b, 0, 7, rect(0, 0, 64, 32));
}

fn blob(b: &mut B, res: u32, mem: BlobMem, flags: u32, size: u64) -> u64 {
    b.ok(on_ctx(
        Command::ResourceCreateBlob(ResourceCreateBlob {
            resource_id: res,
            blob_mem: mem,
            blob_flags: BlobFlags(flags),
            nr_entries: 0,
            blob_id: 1,
            size,
            entries: Vec::new(),
        }),
        1,
    ))
    .unwrap()
}

/// A B8G8R8A8 2D-texture 3D resource on context 1: width, height, depth, array size.
fn create_3d(b: &mut B, res: u32, [width, height, depth, array_size]: [u32; 4]) -> u64 {
    b.ok(on_ctx(
        Command::ResourceCreate3d(ResourceCreate3d {
            resource_id: res,
            target: 2,
            format: Format::B8G8R8A8_UNORM,
            width,
            height,
            depth,
            array_size,
            ..Default::default()
        }),
        1,
    ))
    .unwrap()
}

fn ctx_create(b: &mut B, ctx: u32) -> u64 {
    b.ok(on_ctx(Command::CtxCreate(CtxCreate::default()), ctx))
        .unwrap()
}

fn map(b: &mut B, res: u32, offset: u64) -> u64 {
    b.exchange(
        req(Command::ResourceMapBlob(ResourceMapBlob {
            resource_id: res,
            padding: 0,
            offset,
        })),
        &Response::ok_nodata(&CtrlHeader::new(0)),
    )
    .unwrap()
}

fn vring_enable(b: &mut B, queue: u32) {
    let mut payload = queue.to_le_bytes().to_vec();
    payload.extend_from_slice(&1u32.to_le_bytes());
    let payload = b.writer().store(&payload).unwrap();
    b.append(RecordBody::VhostUser(VhostUserMessage {
        direction: Direction::FrontToBack,
        request: 18,
        flags: 1,
        fd_count: 0,
        payload,
    }))
    .unwrap();
}

// ---- clean captures ------------------------------------------------------------------------

#[test]
fn linux_boot_has_no_finding() {
    let report = check(|b| {
        b.linux_boot(32, 16, 5).unwrap();
    });
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.total(), 0);
    assert_eq!(report.peak_live_resources, 1);
    assert_eq!(report.peak_live_bytes, 32 * 16 * 4);
}

#[test]
fn boot_after_driver_ok_and_ring_enable_has_no_finding() {
    let report = check(|b| {
        vring_enable(b, 0);
        vring_enable(b, 1);
        b.lifecycle(LifecycleKind::DriverOk, "driver ok").unwrap();
        b.linux_boot(16, 16, 2).unwrap();
        b.lifecycle(LifecycleKind::End, "end").unwrap();
    });
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

// ---- 1. lifecycle --------------------------------------------------------------------------

#[test]
fn backing_attached_twice_is_a_lifecycle_error() {
    let report = check(|b| {
        shown_resource(b);
        attach(b, 7, 4096);
    });
    assert_found(&report, CheckId::Lifecycle, "was never detached");
    let f = report.of(CheckId::Lifecycle).next().unwrap();
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.records.len(), 2);
}

#[test]
fn resource_never_unreferenced_and_not_shown_is_a_leak() {
    let report = check(|b| {
        shown_resource(b);
        create(b, 9, 8, 8);
        attach(b, 9, 256);
        // A second resource used until the end, and a flip-chain buffer shown once: not leaks.
        create(b, 10, 8, 8);
        create(b, 11, 8, 8);
        show(b, 0, 11, rect(0, 0, 8, 8));
        show(b, 0, 7, rect(0, 0, 64, 32));
        for _ in 0..10 {
            flush(b, 7, rect(0, 0, 64, 32));
            flush(b, 10, rect(0, 0, 1, 1));
        }
    });
    assert_found(
        &report,
        CheckId::Lifecycle,
        "resource 9 (256 host bytes, 256 bytes of backing) created at #7 is never unreferenced, never shown, and unused after #9",
    );
    assert_eq!(
        only(&report, CheckId::Lifecycle).len(),
        1,
        "{:#?}",
        report.findings
    );
}

#[test]
fn detach_without_backing_is_a_lifecycle_warning() {
    let report = check(|b| {
        shown_resource(b);
        b.ok(req(Command::ResourceDetachBacking(ResourceDetachBacking {
            resource_id: 7,
            padding: 0,
        })))
        .unwrap();
        b.ok(req(Command::ResourceDetachBacking(ResourceDetachBacking {
            resource_id: 7,
            padding: 0,
        })))
        .unwrap();
    });
    assert_eq!(only(&report, CheckId::Lifecycle).len(), 1);
    assert_found(&report, CheckId::Lifecycle, "which has no backing");
}

// ---- 2. transfer bounds --------------------------------------------------------------------

#[test]
fn transfer_rect_outside_resource_is_found() {
    let report = check(|b| {
        shown_resource(b);
        transfer(b, 7, rect(60, 0, 8, 1), 240);
    });
    assert_found(
        &report,
        CheckId::TransferBounds,
        "rect 60,0 8x1 lies outside",
    );
}

#[test]
fn transfer_reading_past_backing_is_found() {
    let report = check(|b| {
        create(b, 7, 64, 32);
        attach(b, 7, 64 * 31 * 4);
        show(b, 0, 7, rect(0, 0, 64, 32));
        transfer(b, 7, rect(0, 0, 64, 32), 0);
    });
    assert_found(
        &report,
        CheckId::TransferBounds,
        "up to 8192 (offset 0, stride 256, 32 rows of 256) but resource 7 has 7936",
    );
}

#[test]
fn transfer_offset_overflowing_64_bits_is_found() {
    let report = check(|b| {
        shown_resource(b);
        transfer(b, 7, rect(0, 0, 64, 2), u64::MAX - 8);
    });
    assert_found(&report, CheckId::TransferBounds, "overflows 64 bits");
}

#[test]
fn transfer_without_backing_is_found() {
    let report = check(|b| {
        create(b, 7, 8, 8);
        show(b, 0, 7, rect(0, 0, 8, 8));
        transfer(b, 7, rect(0, 0, 8, 8), 0);
    });
    assert_found(&report, CheckId::TransferBounds, "has no backing attached");
}

#[test]
fn transfer_3d_box_deeper_than_resource_and_short_stride_are_found() {
    let report = check(|b| {
        ctx_create(b, 1);
        create_3d(b, 5, [16, 16, 1, 1]);
        attach(b, 5, 16 * 16 * 4);
        let t = |box_: Box3d, stride: u32| {
            on_ctx(
                Command::TransferToHost3d(TransferHost3d {
                    box_,
                    offset: 0,
                    resource_id: 5,
                    level: 0,
                    stride,
                    layer_stride: 0,
                }),
                1,
            )
        };
        b.ok(t(
            Box3d {
                x: 0,
                y: 0,
                z: 0,
                w: 16,
                h: 16,
                d: 2,
            },
            64,
        ))
        .unwrap();
        b.ok(t(
            Box3d {
                x: 0,
                y: 0,
                z: 0,
                w: 16,
                h: 1,
                d: 1,
            },
            32,
        ))
        .unwrap();
        b.ok(t(
            Box3d {
                x: 0,
                y: 0,
                z: 0,
                w: 16,
                h: 16,
                d: 1,
            },
            64,
        ))
        .unwrap();
    });
    assert_found(
        &report,
        CheckId::TransferBounds,
        "box 0,0,0 16x16x2 lies outside",
    );
    assert_found(
        &report,
        CheckId::TransferBounds,
        "stride 32 is less than box width 16",
    );
    assert_eq!(
        only(&report, CheckId::TransferBounds).len(),
        2,
        "{:#?}",
        report.findings
    );
}

// ---- 3. ids and ranges ---------------------------------------------------------------------

#[test]
fn scanout_beyond_num_scanouts_is_found() {
    let report = check(|b| {
        create(b, 7, 8, 8);
        show(b, 3, 7, rect(0, 0, 8, 8));
    });
    assert_found(
        &report,
        CheckId::Ids,
        "names scanout 3, but the device has 1 scanouts",
    );
}

#[test]
fn capset_index_beyond_num_capsets_and_empty_capset_are_found() {
    let report = check(|b| {
        let info = Response::new(
            CtrlHeader::new(ResponseType::OK_CAPSET_INFO.0),
            ResponseBody::OkCapsetInfo(CapsetInfo {
                capset_id: CapsetId::VIRGL2,
                capset_max_version: 2,
                capset_max_size: 0,
                padding: 0,
            }),
        );
        b.exchange(
            req(Command::GetCapsetInfo(GetCapsetInfo {
                capset_index: 0,
                padding: 0,
            })),
            &info,
        )
        .unwrap();
        b.ok(req(Command::GetCapset(GetCapset {
            capset_id: CapsetId::VENUS,
            capset_version: 0,
        })))
        .unwrap();
    });
    assert_found(&report, CheckId::Ids, "index 0 is not below num_capsets 0");
    assert_found(&report, CheckId::Ids, "with max size 0");
    assert_found(&report, CheckId::Ids, "which no GET_CAPSET_INFO reported");
    assert_found(
        &report,
        CheckId::InitOrder,
        "answered GET_CAPSET_INFO index 0",
    );
}

#[test]
fn unknown_resource_duplicate_id_and_context_zero_are_found() {
    let report = check(|b| {
        shown_resource(b);
        flush(b, 11, rect(0, 0, 1, 1));
        create(b, 7, 4, 4);
        b.ok(req(Command::CtxCreate(CtxCreate::default()))).unwrap();
        b.ok(req(Command::Submit3d(Default::default()))).unwrap();
    });
    assert_found(
        &report,
        CheckId::Ids,
        "names resource 11, which was never created",
    );
    assert_found(&report, CheckId::Ids, "reuses resource id 7");
    assert_found(&report, CheckId::Ids, "CTX_CREATE with context id 0");
    assert_found(&report, CheckId::Ids, "SUBMIT_3D is sent on context 0");
}

// ---- 4. fences -----------------------------------------------------------------------------

#[test]
fn fence_ids_not_increasing_are_found() {
    let report = check(|b| {
        shown_resource(b);
        b.ok(fenced(
            Command::ResourceFlush(ResourceFlush {
                r: rect(0, 0, 1, 1),
                resource_id: 7,
                padding: 0,
            }),
            5,
        ))
        .unwrap();
        b.ok(fenced(
            Command::ResourceFlush(ResourceFlush {
                r: rect(0, 0, 1, 1),
                resource_id: 7,
                padding: 0,
            }),
            5,
        ))
        .unwrap();
    });
    assert_found(
        &report,
        CheckId::Fences,
        "fence 5 does not increase on the global timeline",
    );
}

#[test]
fn fence_never_signalled_is_found() {
    let report = check(|b| {
        shown_resource(b);
        let r = fenced(
            Command::ResourceFlush(ResourceFlush {
                r: rect(0, 0, 1, 1),
                resource_id: 7,
                padding: 0,
            }),
            9,
        );
        b.command(0, &r, 24).unwrap();
    });
    assert_found(
        &report,
        CheckId::Fences,
        "fence 9 on the global timeline was never signalled",
    );
}

#[test]
fn out_of_order_fence_signal_is_found() {
    let report = check(|b| {
        ctx_create(b, 1);
        let mut ids = Vec::new();
        for f in [1, 2] {
            let mut r = fenced(Command::Submit3d(Default::default()), f);
            r.header.ctx_id = 1;
            r.header.flags |= FLAG_INFO_RING_IDX;
            r.header.ring_idx = 1;
            ids.push(b.command(0, &r, 24).unwrap());
        }
        for (cmd, fence) in [(ids[1], 2), (ids[0], 1)] {
            b.append(RecordBody::Fence(vgt_format::record::FenceSignal {
                command: cmd,
                fence_id: fence,
                ctx_id: 1,
                ring_idx: 1,
                context_ring: true,
            }))
            .unwrap();
        }
    });
    assert_found(
        &report,
        CheckId::Fences,
        "fence 1 on ctx 1 ring 1 signalled after fence 2",
    );
}

#[test]
fn fence_latency_outlier_is_found() {
    let report = check(|b| {
        shown_resource(b);
        for i in 1..=20u64 {
            let r = fenced(
                Command::ResourceFlush(ResourceFlush {
                    r: rect(0, 0, 1, 1),
                    resource_id: 7,
                    padding: 0,
                }),
                i,
            );
            let cmd = b.command(0, &r, 24).unwrap();
            if i == 20 {
                // 3 ms of other traffic before the answer.
                for _ in 0..3000 {
                    b.marker("busy").unwrap();
                }
            }
            b.respond(cmd, &Response::ok_nodata(&r.header)).unwrap();
        }
    });
    let found = only(&report, CheckId::Fences);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("fence took 3001 us"), "{found:?}");
}

// ---- 5. errors -----------------------------------------------------------------------------

#[test]
fn error_response_is_reported_with_the_commands_around_it() {
    let report = check(|b| {
        shown_resource(b);
        b.exchange(
            req(Command::ResourceFlush(ResourceFlush {
                r: rect(0, 0, 1, 1),
                resource_id: 7,
                padding: 0,
            })),
            &Response::error(ResponseType::ERR_INVALID_PARAMETER, &CtrlHeader::new(0)),
        )
        .unwrap();
    });
    let f = report.of(CheckId::Errors).next().expect("an error finding");
    assert!(
        f.message
            .contains("RESOURCE_FLUSH (#7) was answered ERR_INVALID_PARAMETER; commands around it: #1 RESOURCE_CREATE_2D, #3 RESOURCE_ATTACH_BACKING, #5 SET_SCANOUT"),
        "{}",
        f.message
    );
    assert_eq!(f.records[..2], [7, 8]);
}

#[test]
fn crash_lifecycle_event_is_an_error_finding() {
    let report = check(|b| {
        b.lifecycle(LifecycleKind::Crash, "renderer died").unwrap();
    });
    assert_found(
        &report,
        CheckId::Errors,
        "the renderer crashed: renderer died",
    );
}

// ---- 6. initialisation order ---------------------------------------------------------------

#[test]
fn commands_before_driver_ok_are_found() {
    let report = check(|b| {
        create(b, 7, 8, 8);
        b.lifecycle(LifecycleKind::DriverOk, "ok").unwrap();
        show(b, 0, 7, rect(0, 0, 8, 8));
    });
    assert_found(
        &report,
        CheckId::InitOrder,
        "1 commands arrived before the driver set DRIVER_OK (#3)",
    );
}

#[test]
fn commands_before_ring_enable_are_found() {
    let report = check(|b| {
        create(b, 7, 8, 8);
        create(b, 8, 8, 8);
        vring_enable(b, 0);
        show(b, 0, 7, rect(0, 0, 8, 8));
    });
    assert_found(
        &report,
        CheckId::InitOrder,
        "2 commands arrived on queue 0 before the ring was enabled (#5)",
    );
}

// ---- 7. mode changes -----------------------------------------------------------------------

#[test]
fn scanout_rect_outside_resource_is_found() {
    let report = check(|b| {
        create(b, 7, 64, 32);
        show(b, 0, 7, rect(0, 0, 64, 48));
    });
    assert_found(
        &report,
        CheckId::ModeChanges,
        "rect 0,0 64x48 lies outside resource 7 (64x32)",
    );
}

#[test]
fn unref_of_shown_resource_and_flush_of_hidden_one_are_found() {
    let report = check(|b| {
        shown_resource(b);
        create(b, 8, 8, 8);
        flush(b, 8, rect(0, 0, 8, 8));
        unref(b, 8);
        unref(b, 7);
    });
    assert_found(
        &report,
        CheckId::ModeChanges,
        "RESOURCE_FLUSH of resource 8 which no scanout shows",
    );
    assert_found(
        &report,
        CheckId::ModeChanges,
        "RESOURCE_UNREF of resource 7 that scanout 0 still shows",
    );
    assert_eq!(only(&report, CheckId::ModeChanges).len(), 2);
}

#[test]
fn scanout_reported_disabled_by_display_info_is_found() {
    let report = check(|b| {
        let none_enabled = Response::new(
            CtrlHeader::new(ResponseType::OK_DISPLAY_INFO.0),
            ResponseBody::OkDisplayInfo(vgt_format::wire::DisplayInfo::default()),
        );
        b.exchange(req(Command::GetDisplayInfo), &none_enabled)
            .unwrap();
        create(b, 7, 8, 8);
        show(b, 0, 7, rect(0, 0, 8, 8));
    });
    assert_found(
        &report,
        CheckId::ModeChanges,
        "shows resource 7 on scanout 0, which GET_DISPLAY_INFO (#2) reported disabled",
    );
}

// ---- 8. blob maps --------------------------------------------------------------------------

#[test]
fn misaligned_double_and_overlapping_maps_are_found() {
    let report = check(|b| {
        ctx_create(b, 1);
        blob(b, 20, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 8192);
        blob(b, 21, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 8192);
        blob(b, 22, BlobMem::HOST3D, 0, 4096);
        map(b, 20, 0x1000);
        map(b, 20, 0x8000);
        map(b, 21, 0x2000);
        map(b, 22, 0x10010);
    });
    assert_found(
        &report,
        CheckId::BlobMaps,
        "already mapped at offset 0x1000",
    );
    assert_found(
        &report,
        CheckId::BlobMaps,
        "overlaps blob 20 mapped at 0x1000..0x3000",
    );
    assert_found(&report, CheckId::BlobMaps, "created without USE_MAPPABLE");
    assert_found(
        &report,
        CheckId::BlobMaps,
        "offset 0x10010 is not page aligned",
    );
}

#[test]
fn unmap_of_unmapped_and_unref_of_mapped_blob_are_found() {
    let report = check(|b| {
        ctx_create(b, 1);
        blob(b, 20, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 4096);
        b.ok(req(Command::ResourceUnmapBlob(ResourceUnmapBlob {
            resource_id: 20,
            padding: 0,
        })))
        .unwrap();
        map(b, 20, 0);
        unref(b, 20);
    });
    assert_found(
        &report,
        CheckId::BlobMaps,
        "RESOURCE_UNMAP_BLOB of resource 20, which is not mapped",
    );
    assert_found(
        &report,
        CheckId::BlobMaps,
        "RESOURCE_UNREF of blob 20 still mapped at offset 0x0",
    );
}

/// The device's GET_SHMEM_CONFIG reply declaring `sizes` (region id -> size).
fn shmem_config(b: &mut B, sizes: &[(usize, u64)]) -> u64 {
    let mut mem = [0u64; 256];
    for &(i, size) in sizes {
        mem[i] = size;
    }
    let mut payload = (sizes.len() as u32).to_le_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_le_bytes());
    for m in mem {
        payload.extend_from_slice(&m.to_le_bytes());
    }
    let payload = b.writer().store(&payload).unwrap();
    b.append(RecordBody::VhostUser(VhostUserMessage {
        direction: Direction::BackToFront,
        request: 44,
        flags: 0x5,
        fd_count: 0,
        payload,
    }))
    .unwrap()
}

#[test]
fn map_inside_declared_region_is_not_found() {
    let report = check(|b| {
        shmem_config(b, &[(1, 0x10000)]);
        ctx_create(b, 1);
        blob(b, 20, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 0x4000);
        map(b, 20, 0xc000);
    });
    assert_eq!(only(&report, CheckId::BlobMaps), Vec::<String>::new());
}

#[test]
fn map_past_declared_region_end_is_found() {
    let mut ids = (0, 0, 0);
    let report = check(|b| {
        let cfg = shmem_config(b, &[(1, 0x10000)]);
        ctx_create(b, 1);
        let created = blob(b, 20, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 0x4000);
        let mapped = map(b, 20, 0xd000);
        ids = (cfg, created, mapped);
    });
    assert_found(
        &report,
        CheckId::BlobMaps,
        "at 0xd000..0x11000 lies outside the region: the host-visible region is 0x10000 bytes",
    );
    let f = report.of(CheckId::BlobMaps).next().unwrap();
    let (cfg, created, mapped) = ids;
    for id in [cfg, created, mapped] {
        assert!(f.records.contains(&id), "{id} not named: {f:?}");
    }
}

#[test]
fn map_without_declared_region_is_found() {
    let report = check(|b| {
        ctx_create(b, 1);
        blob(b, 20, BlobMem::HOST3D, BlobFlags::USE_MAPPABLE, 0x1000);
        map(b, 20, 0);
    });
    assert_found(
        &report,
        CheckId::BlobMaps,
        "the device exposes no host-visible region",
    );
}

// ---- 9. redundant copies -------------------------------------------------------------------

#[test]
fn identical_uploads_are_found() {
    let report = check(|b| {
        shown_resource(b);
        let pixels = vec![0x5a; 64 * 32 * 4];
        for _ in 0..2 {
            let t = transfer(b, 7, rect(0, 0, 64, 32), 0);
            let (a, c) = pixels.split_at(4096);
            b.memory_read(t, 7, FRAMEBUFFER_GPA, a).unwrap();
            b.memory_read(t, 7, FRAMEBUFFER_GPA + 4096, c).unwrap();
            flush(b, 7, rect(0, 0, 64, 32));
        }
    });
    assert_eq!(
        only(&report, CheckId::RedundantCopies),
        vec!["identical upload: all 8192 bytes (2 reads) that #13 read for resource 7 equal what #7 read there".to_string()],
    );
    assert_eq!(report.unchanged_upload_bytes, 8192);
}

#[test]
fn partly_unchanged_uploads_are_counted_not_reported() {
    let report = check(|b| {
        shown_resource(b);
        for i in 0..2u8 {
            let t = transfer(b, 7, rect(0, 0, 64, 32), 0);
            b.memory_read(t, 7, FRAMEBUFFER_GPA, &[0x11; 4096]).unwrap();
            b.memory_read(t, 7, FRAMEBUFFER_GPA + 4096, &[i; 4096])
                .unwrap();
            flush(b, 7, rect(0, 0, 64, 32));
        }
    });
    assert!(
        only(&report, CheckId::RedundantCopies).is_empty(),
        "{:#?}",
        report.findings
    );
    assert_eq!(report.unchanged_upload_bytes, 4096);
}

#[test]
fn transfers_larger_than_the_flushed_area_are_found() {
    let report = check(|b| {
        create(b, 7, 256, 256);
        attach(b, 7, 256 * 256 * 4);
        show(b, 0, 7, rect(0, 0, 256, 256));
        let t = transfer(b, 7, rect(0, 0, 256, 256), 0);
        let pixels: Vec<u8> = (0..256 * 256 * 4).map(|i: u32| i as u8).collect();
        b.memory_read(t, 7, FRAMEBUFFER_GPA, &pixels).unwrap();
        flush(b, 7, rect(0, 0, 16, 16));
    });
    assert_found(
        &report,
        CheckId::RedundantCopies,
        "262144 bytes were transferred to resource 7 since its last flush, but this flush covers only 1024 bytes",
    );
}

// ---- 10. use after teardown ----------------------------------------------------------------

#[test]
fn transfer_after_unref_is_use_after_teardown() {
    let report = check(|b| {
        shown_resource(b);
        show(b, 0, 0, rect(0, 0, 0, 0));
        unref(b, 7);
        transfer(b, 7, rect(0, 0, 1, 1), 0);
    });
    assert_found(
        &report,
        CheckId::UseAfterTeardown,
        "TRANSFER_TO_HOST_2D names resource 7, destroyed by RESOURCE_UNREF at #9",
    );
    assert!(only(&report, CheckId::Ids).is_empty());
}

#[test]
fn commands_after_reset_and_context_destroy_are_use_after_teardown() {
    let report = check(|b| {
        shown_resource(b);
        ctx_create(b, 3);
        b.ok(on_ctx(Command::CtxDestroy, 3)).unwrap();
        b.ok(on_ctx(
            Command::CtxAttachResource(CtxResource {
                resource_id: 7,
                padding: 0,
            }),
            3,
        ))
        .unwrap();
        b.lifecycle(LifecycleKind::Reset, "reset").unwrap();
        flush(b, 7, rect(0, 0, 1, 1));
    });
    assert_found(
        &report,
        CheckId::UseAfterTeardown,
        "names context 3, destroyed by CTX_DESTROY",
    );
    assert_found(
        &report,
        CheckId::UseAfterTeardown,
        "RESOURCE_FLUSH names resource 7, destroyed by device reset",
    );
}

#[test]
fn findings_beyond_the_cap_are_counted_not_kept() {
    let report = check(|b| {
        create(b, 7, 8, 8);
        for _ in 0..(super::MAX_FINDINGS_PER_CHECK + 20) {
            flush(b, 7, rect(0, 0, 8, 8));
        }
    });
    assert_eq!(
        only(&report, CheckId::ModeChanges).len(),
        super::MAX_FINDINGS_PER_CHECK
    );
    assert_eq!(report.suppressed.get(&CheckId::ModeChanges), Some(&20));
    // Resource 7 is used until the end: no leak.
    assert_eq!(report.total(), super::MAX_FINDINGS_PER_CHECK as u64 + 20);
}

#[test]
fn guest_sizes_past_64_bits_are_findings_not_overflows() {
    // Sizes a guest may send whose products do not fit 64 bits: a 3D resource of 2^32-1 cubed
    // texels, a flush of a 2^32-1 square, a blob scanout of 2^32-1 rows of 2^32-1 bytes. The
    // checks multiplied them out unchecked (found by the inspect_capture fuzz target).
    let report = check(|b| {
        ctx_create(b, 1);
        create_3d(b, 5, [u32::MAX; 4]);
        create(b, 6, u32::MAX, u32::MAX);
        flush(b, 6, rect(0, 0, u32::MAX, u32::MAX));
        blob(b, 9, BlobMem::GUEST, 0, 4096);
        b.ok(req(Command::SetScanoutBlob(SetScanoutBlob {
            r: rect(0, 0, 64, 64),
            scanout_id: 0,
            resource_id: 9,
            width: u32::MAX,
            height: u32::MAX,
            format: Format::B8G8R8X8_UNORM,
            padding: 0,
            strides: [u32::MAX, 0, 0, 0],
            offsets: [u32::MAX, 0, 0, 0],
        })))
        .unwrap();
    });
    assert_found(
        &report,
        CheckId::TransferBounds,
        "stride 4294967295 is less than width 4294967295 x 4 bytes",
    );
    assert!(
        report.findings.iter().any(|f| f
            .message
            .contains(&format!("resource 5 ({} host bytes", u64::MAX))),
        "{:#?}",
        report.findings
    );
}

// ---- 11. in-flight writes ------------------------------------------------------------------

#[test]
fn in_flight_write_event_is_a_driver_race_warning_naming_the_command() {
    let message = "the guest changed the memory TRANSFER_TO_HOST_2D #5 read while it was in flight";
    let mut ids = (0, 0);
    let report = check(|b| {
        create(b, 7, 8, 8);
        let cmd = b
            .command(
                0,
                &req(Command::TransferToHost2d(TransferToHost2d {
                    r: rect(0, 0, 8, 8),
                    offset: 0,
                    resource_id: 7,
                    padding: 0,
                })),
                24,
            )
            .unwrap();
        let event = b
            .append(RecordBody::Lifecycle(Lifecycle {
                kind: LifecycleKind::InFlightWrite,
                queue: Some(0),
                command: Some(cmd),
                message: message.to_owned(),
            }))
            .unwrap();
        ids = (event, cmd);
    });
    let found: Vec<&Finding> = report.of(CheckId::InFlightWrites).collect();
    assert_eq!(found.len(), 1, "{:#?}", report.findings);
    assert_eq!(found[0].severity, Severity::Warning);
    assert_eq!(found[0].records, vec![ids.0, ids.1]);
    assert_eq!(found[0].message, format!("driver race: {message}"));
    // Not an error event: the errors check leaves it alone.
    assert!(
        only(&report, CheckId::Errors).is_empty(),
        "{:#?}",
        report.findings
    );
}

#[test]
fn unanswered_commands_are_errors_when_the_capture_went_on_and_warnings_at_its_end() {
    let flush = |res| {
        Command::ResourceFlush(ResourceFlush {
            r: rect(0, 0, 8, 8),
            resource_id: res,
            padding: 0,
        })
    };
    let mut ids = (0, 0, 0, 0);
    let report = check(|b| {
        create(b, 7, 8, 8);
        // Hung on: the capture goes on 2 s after it.
        let hung = b.command(0, &req(flush(7)), 24).unwrap();
        // Fenced: the fence check's (its answer is the signal).
        let fenced_cmd = b.command(0, &fenced(flush(7), 1), 24).unwrap();
        // In flight when the backend died: the crash record says so already.
        let crashed = b.command(0, &req(flush(7)), 24).unwrap();
        b.append(RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::Crash,
            queue: Some(0),
            command: Some(crashed),
            message: "in flight when the backend went away".to_owned(),
        }))
        .unwrap();
        // No response wanted (no writable bytes).
        b.command(0, &req(flush(7)), 0).unwrap();
        b.advance(2_000_000_000);
        b.marker("later").unwrap();
        // Cut: the capture ends right after it.
        let cut = b.command(0, &req(flush(7)), 24).unwrap();
        ids = (hung, fenced_cmd, crashed, cut);
    });
    let found: Vec<&Finding> = report.of(CheckId::Unanswered).collect();
    assert_eq!(found.len(), 2, "{:#?}", report.findings);
    assert_eq!(found[0].records, vec![ids.0]);
    assert_eq!(found[0].severity, Severity::Error);
    assert!(
        found[0]
            .message
            .starts_with("RESOURCE_FLUSH was never answered: the capture goes on 2.0"),
        "{}",
        found[0].message
    );
    assert_eq!(found[1].records, vec![ids.3]);
    assert_eq!(found[1].severity, Severity::Warning);
    assert!(
        found[1]
            .message
            .contains("was not answered before the capture ended 0.000 s after it"),
        "{}",
        found[1].message
    );
    // The fenced one is the fence check's finding, the crashed one the errors check's.
    assert!(
        report
            .of(CheckId::Fences)
            .any(|f| f.records == vec![ids.1] && f.message.contains("never signalled")),
        "{:#?}",
        report.findings
    );
    assert!(
        report
            .of(CheckId::Errors)
            .any(|f| f.records.contains(&ids.2)),
        "{:#?}",
        report.findings
    );
}
