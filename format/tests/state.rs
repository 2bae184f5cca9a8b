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

/// A capture with resources created, shown, unreffed and a reset, long enough for several
/// checkpoints.
fn churn() -> CaptureReader {
    build(|b| {
        b.linux_boot(16, 8, 3).unwrap();
        for id in 10..40u32 {
            b.ok(create(id, 4, 4)).unwrap();
            if id % 3 == 0 {
                b.ok(Request::new(Command::ResourceUnref(ResourceUnref {
                    resource_id: id,
                    padding: 0,
                })))
                .unwrap();
            }
        }
        b.lifecycle(LifecycleKind::Reset, "reset").unwrap();
        b.ok(create(99, 8, 8)).unwrap();
    })
}

#[test]
fn state_index_gives_the_same_state_as_a_full_fold_at_every_record() {
    let reader = churn();
    for interval in [1, 7, 16, 1000] {
        let index = vgt_format::state::StateIndex::build(&reader, interval);
        assert_eq!(index.len(), reader.len());
        for id in 0..reader.len() {
            let fast = index.state_at(&reader, id).unwrap();
            let slow = fold(&reader, id + 1);
            assert_eq!(
                serde_json::to_value(&fast).unwrap(),
                serde_json::to_value(&slow).unwrap(),
                "interval {interval}, record {id}"
            );
            assert_eq!(
                fast.commands_in_flight().count(),
                slow.commands_in_flight().count()
            );
        }
        assert!(index.state_at(&reader, reader.len()).is_none());
    }
}

#[test]
fn summaries_link_commands_to_responses_and_flag_errors() {
    use vgt_format::record::RecordKind;
    use vgt_format::summary::{FLAG_ERROR, FLAG_FENCED, NO_RECORD, SummaryLinker, summarize};
    use vgt_format::wire::CommandType;
    let reader = build(|b| {
        b.linux_boot(16, 8, 1).unwrap();
        let bad = create(0, 1, 1);
        b.exchange(
            bad.clone(),
            &Response::error(ResponseType::ERR_INVALID_RESOURCE_ID, &bad.header),
        )
        .unwrap();
        b.ok(fenced(create(5, 2, 2), 77)).unwrap();
    });
    // Browsers keep one per record: 1M records must fit in 48 MB.
    assert_eq!(
        std::mem::size_of::<vgt_format::summary::RecordSummary>(),
        48
    );
    let mut table = Vec::new();
    let mut linker = SummaryLinker::new();
    for item in reader.iter() {
        let (id, r) = item.unwrap();
        table.push(summarize(&r, &reader));
        linker.link(&mut table, id);
    }
    let n = table.len();
    // The last two exchanges: the failed create and the fenced create.
    let (bad_cmd, bad_resp) = (&table[n - 4], &table[n - 3]);
    assert_eq!(bad_cmd.kind, RecordKind::COMMAND);
    assert_eq!(bad_cmd.code, CommandType::RESOURCE_CREATE_2D.0);
    assert_eq!(bad_cmd.link, (n - 3) as u64);
    assert_eq!(
        bad_cmd.response_code,
        ResponseType::ERR_INVALID_RESOURCE_ID.0
    );
    assert!(bad_cmd.flags & FLAG_ERROR != 0 && bad_resp.flags & FLAG_ERROR != 0);
    assert_eq!(bad_resp.link, (n - 4) as u64);
    let fenced_cmd = &table[n - 2];
    assert_eq!((fenced_cmd.resource, fenced_cmd.fence), (5, 77));
    assert!(fenced_cmd.flags & FLAG_FENCED != 0 && fenced_cmd.flags & FLAG_ERROR == 0);
    assert_eq!(fenced_cmd.ring, 0, "a global-timeline fence");
    assert_eq!(fenced_cmd.response_code, ResponseType::OK_NODATA.0);
    // Memory reads and frames point at their commands; the session links nowhere.
    assert_eq!(table[0].link, NO_RECORD);
    let read = table
        .iter()
        .find(|s| s.kind == RecordKind::MEMORY_READ)
        .unwrap();
    assert_eq!(
        table[read.link as usize].code,
        CommandType::TRANSFER_TO_HOST_2D.0
    );
    assert_eq!(read.resource, 2);
}
