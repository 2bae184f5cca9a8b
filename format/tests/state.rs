//! The state model folded over synthetic captures made of real wire bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use vgt_format::record::{LifecycleKind, Payload};
use vgt_format::state::{DeviceState, InlineOnly, PayloadSource, ResourceKind};
use vgt_format::testing::CaptureBuilder;
use vgt_format::wire::{
    Command, CtrlHeader, FLAG_FENCE, Format, MemEntry, Rect, Request, ResourceAttachBacking,
    ResourceCreate2d, ResourceUnref, Response, ResponseType, SetScanout,
};
use vgt_format::{CaptureReader, CaptureWriter, WriterOptions};

struct Reader<'a>(&'a CaptureReader);

impl PayloadSource for Reader<'_> {
    fn payload_bytes<'a>(&'a self, p: &'a Payload) -> Option<std::borrow::Cow<'a, [u8]>> {
        self.0.read_payload(p).ok()
    }
}

fn build(f: impl FnOnce(&mut CaptureBuilder<std::fs::File>)) -> CaptureReader {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    f(&mut b);
    b.finish().unwrap();
    CaptureReader::from_bytes(std::fs::read(&path).unwrap()).unwrap()
}

fn fold(reader: &CaptureReader, upto: u64) -> DeviceState {
    let mut s = DeviceState::new();
    let src = Reader(reader);
    for item in reader.iter_range(0..upto) {
        let (id, r) = item.unwrap();
        s.apply(id, &r, &src);
    }
    s
}

fn create(id: u32, w: u32, h: u32) -> Request {
    Request::new(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: id,
        format: Format::B8G8R8X8_UNORM,
        width: w,
        height: h,
    }))
}

fn fenced(mut req: Request, fence_id: u64) -> Request {
    req.header = CtrlHeader {
        flags: FLAG_FENCE,
        fence_id,
        ..CtrlHeader::new(req.header.type_)
    };
    req
}

#[test]
fn linux_boot_leaves_one_resource_on_scanout_zero() {
    let reader = build(|b| {
        b.linux_boot(64, 32, 3).unwrap();
    });
    let s = fold(&reader, reader.len());
    assert_eq!(s.num_scanouts, 1);
    let r = &s.resources[&2];
    assert_eq!(
        (r.width, r.height, r.format),
        (64, 32, Some(Format::B8G8R8X8_UNORM))
    );
    assert_eq!(r.kind, ResourceKind::TwoD);
    assert_eq!(r.backing.len(), 2);
    assert_eq!(r.backing_bytes(), 64 * 32 * 4);
    assert!(r.scanouts.contains(&0));
    assert_eq!(s.scanouts[0].resource_id, 2);
    assert_eq!(s.error_responses, 0);
    assert_eq!(s.undecodable, 0);
    assert_eq!(s.commands_in_flight().count(), 0);
}

#[test]
fn state_at_a_prefix_is_the_state_before_later_commands() {
    let reader = build(|b| {
        b.ok(create(5, 8, 8)).unwrap();
        b.ok(Request::new(Command::ResourceUnref(ResourceUnref {
            resource_id: 5,
            padding: 0,
        })))
        .unwrap();
    });
    // Records: 0 session, 1 create, 2 its response, 3 unref, 4 its response.
    assert!(fold(&reader, 3).resources.contains_key(&5));
    let after = fold(&reader, 5);
    assert!(!after.resources.contains_key(&5));
    assert_eq!(after.retired_resources.len(), 1);
    assert_eq!(after.retired_resources[0].created_at, 1);
    assert_eq!(after.retired_resources[0].destroyed_at, Some(3));
}

#[test]
fn command_answered_with_error_changes_nothing() {
    let reader = build(|b| {
        let req = create(7, 8, 8);
        let resp = Response::error(ResponseType::ERR_OUT_OF_MEMORY, &req.header);
        b.exchange(req, &resp).unwrap();
    });
    let s = fold(&reader, reader.len());
    assert!(s.resources.is_empty());
    assert_eq!(s.error_responses, 1);
}

#[test]
fn unanswered_fenced_command_is_in_flight_with_its_fence_pending() {
    let reader = build(|b| {
        b.command(0, &fenced(create(9, 8, 8), 42), 24).unwrap();
    });
    let s = fold(&reader, reader.len());
    assert_eq!(s.commands_in_flight().count(), 1);
    let fences: Vec<u64> = s.pending_fences.values().map(|f| f.fence_id).collect();
    assert_eq!(fences, vec![42]);
    assert!(s.resources.is_empty(), "not created until answered");
}

#[test]
fn fence_record_retires_every_fence_up_to_its_id() {
    let reader = build(|b| {
        for (i, fence) in [(1u32, 10u64), (2, 11), (3, 12)] {
            b.command(0, &fenced(create(i, 4, 4), fence), 24).unwrap();
        }
        b.fence(u64::MAX, 11).unwrap();
    });
    let s = fold(&reader, reader.len());
    let left: Vec<u64> = s.pending_fences.values().map(|f| f.fence_id).collect();
    assert_eq!(left, vec![12]);
}

#[test]
fn unref_of_a_scanned_out_resource_clears_the_scanout() {
    let reader = build(|b| {
        b.ok(create(3, 8, 8)).unwrap();
        b.ok(Request::new(Command::SetScanout(SetScanout {
            r: Rect {
                x: 0,
                y: 0,
                width: 8,
                height: 8,
            },
            scanout_id: 0,
            resource_id: 3,
        })))
        .unwrap();
        b.ok(Request::new(Command::ResourceUnref(ResourceUnref {
            resource_id: 3,
            padding: 0,
        })))
        .unwrap();
    });
    let s = fold(&reader, reader.len());
    assert_eq!(s.scanouts[0].resource_id, 0);
}

#[test]
fn reset_retires_every_resource() {
    let reader = build(|b| {
        b.ok(create(3, 8, 8)).unwrap();
        b.lifecycle(LifecycleKind::Reset, "guest reset").unwrap();
    });
    let s = fold(&reader, reader.len());
    assert!(s.resources.is_empty());
    assert_eq!(s.retired_resources[0].destroyed_at, Some(3));
}

#[test]
fn blob_request_without_payload_source_is_counted_not_guessed() {
    let reader = build(|b| {
        b.ok(create(3, 8, 8)).unwrap();
        let entries: Vec<MemEntry> = (0..64)
            .map(|i| MemEntry {
                addr: i * 4096,
                length: 4096,
                padding: 0,
            })
            .collect();
        b.ok(Request::new(Command::ResourceAttachBacking(
            ResourceAttachBacking {
                resource_id: 3,
                nr_entries: 64,
                entries,
            },
        )))
        .unwrap();
    });
    let mut inline_only = DeviceState::new();
    for item in reader.iter() {
        let (id, r) = item.unwrap();
        inline_only.apply(id, &r, &InlineOnly);
    }
    assert_eq!(inline_only.undecodable, 1);
    assert!(inline_only.resources[&3].backing.is_empty());
    assert_eq!(fold(&reader, reader.len()).resources[&3].backing.len(), 64);
}
