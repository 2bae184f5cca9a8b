//! The design's promise: replaying the same requests against guest memory rebuilt only from the
//! reads the device reported gives identical responses and identical display output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::*;
use vgt_device::{
    CONTROL_QUEUE, CURSOR_QUEUE, Completion, Device, DeviceConfig, DisplayEvent, GuestMemory,
    MemoryError, Submission,
};
use vgt_format::wire::{
    BlobFlags, BlobMem, Command, CursorPos, Format, GetEdid, Request, ResourceAttachBacking,
    ResourceCreate2d, ResourceCreateBlob, ResourceFlush, SetScanout, SetScanoutBlob,
    TransferToHost2d, UpdateCursor,
};

/// Guest memory that holds only bytes it was given; everything else is outside memory.
#[derive(Default)]
struct RecordedMemory(HashMap<u64, u8>);

impl GuestMemory for RecordedMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *self
                .0
                .get(&(addr + i as u64))
                .ok_or(MemoryError::OutOfRange { addr, len: 1 })?;
        }
        Ok(())
    }
}

struct Step {
    queue: u16,
    bytes: Vec<u8>,
    writable: u32,
    reads: Vec<(u32, u64, Vec<u8>)>,
    done: Vec<Completion>,
    events: Vec<DisplayEvent>,
}

const PAGE_LIST: [(u64, u32); 3] = [(0x3000, 4096), (0x1000, 4096), (0x6000, 2048)];

fn session() -> Vec<(u16, Request)> {
    let mut s = vec![
        (
            CONTROL_QUEUE,
            Request::new(Command::GetEdid(GetEdid::default())),
        ),
        (CONTROL_QUEUE, Request::new(Command::GetDisplayInfo)),
        (
            CONTROL_QUEUE,
            Request::new(Command::ResourceCreate2d(ResourceCreate2d {
                resource_id: 2,
                format: Format::B8G8R8X8_UNORM,
                width: 64,
                height: 40,
            })),
        ),
        (
            CONTROL_QUEUE,
            Request::new(Command::ResourceAttachBacking(ResourceAttachBacking {
                resource_id: 2,
                nr_entries: 3,
                entries: entries(&PAGE_LIST),
            })),
        ),
    ];
    let tf = |r, offset| {
        [
            Request::new(Command::TransferToHost2d(TransferToHost2d {
                r,
                offset,
                resource_id: 2,
                padding: 0,
            })),
            Request::new(Command::ResourceFlush(ResourceFlush {
                r,
                resource_id: 2,
                padding: 0,
            })),
        ]
    };
    let [t, _] = tf(rect(0, 0, 64, 40), 0);
    s.push((CONTROL_QUEUE, t));
    s.push((
        CONTROL_QUEUE,
        Request::new(Command::SetScanout(SetScanout {
            r: rect(0, 0, 64, 40),
            scanout_id: 0,
            resource_id: 2,
        })),
    ));
    for [t, f] in [
        tf(rect(3, 4, 10, 5), 4 * 256 + 12),
        tf(rect(0, 30, 64, 10), 30 * 256),
    ] {
        s.push((CONTROL_QUEUE, t));
        s.push((CONTROL_QUEUE, f));
    }
    // A cursor from the same pages, a guest blob, and a transfer that runs outside memory.
    s.push((
        CONTROL_QUEUE,
        Request::new(Command::ResourceCreateBlob(ResourceCreateBlob {
            resource_id: 5,
            blob_mem: BlobMem::GUEST,
            blob_flags: BlobFlags(BlobFlags::USE_SHAREABLE),
            nr_entries: 2,
            blob_id: 0,
            size: 4096,
            entries: entries(&[(0x6800, 2048), (0x2000, 2048)]),
        })),
    ));
    s.push((
        CONTROL_QUEUE,
        Request::new(Command::SetScanoutBlob(SetScanoutBlob {
            r: rect(2, 1, 8, 6),
            scanout_id: 1,
            resource_id: 5,
            width: 16,
            height: 8,
            format: Format::R8G8B8A8_UNORM,
            strides: [128, 0, 0, 0],
            offsets: [100, 0, 0, 0],
            ..SetScanoutBlob::default()
        })),
    ));
    s.push((
        CONTROL_QUEUE,
        Request::new(Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: 3,
            format: Format::B8G8R8A8_UNORM,
            width: 64,
            height: 64,
        })),
    ));
    s.push((
        CONTROL_QUEUE,
        Request::new(Command::ResourceAttachBacking(ResourceAttachBacking {
            resource_id: 3,
            nr_entries: 2,
            entries: entries(&[(0x4000, 8192), (0xF000_0000, 8192)]),
        })),
    ));
    s.push((
        CONTROL_QUEUE,
        fenced(
            Command::TransferToHost2d(TransferToHost2d {
                r: rect(0, 0, 64, 64),
                offset: 0,
                resource_id: 3,
                padding: 0,
            }),
            1,
        ),
    ));
    s.push((
        CONTROL_QUEUE,
        fenced(
            Command::TransferToHost2d(TransferToHost2d {
                r: rect(0, 0, 64, 32),
                offset: 0,
                resource_id: 3,
                padding: 0,
            }),
            2,
        ),
    ));
    s.push((
        CURSOR_QUEUE,
        Request::new(Command::UpdateCursor(UpdateCursor {
            pos: CursorPos {
                scanout_id: 1,
                x: 5,
                y: 6,
                padding: 0,
            },
            resource_id: 3,
            hot_x: 1,
            hot_y: 2,
            padding: 0,
        })),
    ));
    s
}

fn config() -> DeviceConfig {
    DeviceConfig {
        scanouts: vec![(64, 40), (8, 6)],
        ..DeviceConfig::default()
    }
}

#[test]
fn replay_from_recorded_reads_alone_is_identical() {
    // Capture: real memory that the "guest" keeps changing between commands.
    let mut rig = Rig::new(config(), VecMemory::new(&[(0x1000, 0x7000)]));
    let mut steps = Vec::new();
    for (i, (queue, req)) in session().into_iter().enumerate() {
        let all: Vec<(u64, u32)> = vec![(0x1000, 0x7000)];
        fill_backing(&mut rig.mem, &all, i as u8);
        let bytes = req.encode();
        let before = rig.host.reads.len();
        let done = rig.submit_raw(queue, &bytes, 4096);
        steps.push(Step {
            queue,
            bytes,
            writable: 4096,
            reads: rig.host.reads[before..].to_vec(),
            done,
            events: rig.host.take_events(),
        });
    }
    assert!(steps.iter().any(|s| !s.reads.is_empty()));
    assert!(
        rig.host.errors.iter().any(|e| e.2.contains("guest memory")),
        "an out-of-memory read happened"
    );

    // Replay: fresh device, memory fed with each command's recorded reads just before it.
    let mut dev = Device::new(config()).unwrap();
    let mut mem = RecordedMemory::default();
    let mut host = RecordingHost::default();
    for (i, s) in steps.iter().enumerate() {
        for (_, addr, data) in &s.reads {
            for (k, b) in data.iter().enumerate() {
                mem.0.insert(addr + k as u64, *b);
            }
        }
        let done = dev.submit(
            Submission {
                queue: s.queue,
                token: rig.token - steps.len() as u64 + 1 + i as u64,
                request: &s.bytes,
                writable_len: s.writable,
            },
            &mem,
            &mut host,
        );
        assert_eq!(done, s.done, "completions of command {i}");
        assert_eq!(
            host.take_events(),
            s.events,
            "display output of command {i}"
        );
        assert_eq!(host.reads.len(), s.reads.len(), "reads of command {i}");
        assert_eq!(
            std::mem::take(&mut host.reads),
            s.reads,
            "reads of command {i}"
        );
    }
}
