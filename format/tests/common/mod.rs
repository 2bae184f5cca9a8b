//! Shared builders for the capture file tests: one record of every kind, seeded pseudo-random
//! data, and a chunk map of a capture's bytes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use vgt_format::file::{CaptureWriter, WriterOptions};
use vgt_format::record::*;

/// SplitMix64: small, seeded, good enough to pick test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A framebuffer-like image: flat colour with a band of text-like noise.
pub fn frame_pixels(width: usize, height: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut px = vec![0u8; width * height * 4];
    for p in px.chunks_exact_mut(4) {
        p.copy_from_slice(&[0x30, 0x50, 0x80, 0xff]);
    }
    // "Text": short runs of dark pixels in a few rows.
    for row in (height / 4..height / 4 + height / 8).step_by(2) {
        let mut x = 0;
        while x < width {
            let run = 1 + rng.below(6) as usize;
            if rng.below(3) == 0 {
                for xx in x..(x + run).min(width) {
                    let at = (row * width + xx) * 4;
                    px[at..at + 4].copy_from_slice(&[0x10, 0x10, 0x10, 0xff]);
                }
            }
            x += run + 1;
        }
    }
    px
}

/// Appends one record of every kind (plus blob payloads, a dedup hit and an unknown kind) and
/// returns `(records, raw payload bytes per record)`.
pub fn write_every_kind<W: Write>(w: &mut CaptureWriter<W>) -> Written {
    let mut out = Vec::new();
    let mut push = |w: &mut CaptureWriter<W>, ts: u64, body: RecordBody, raw: Vec<Vec<u8>>| {
        let rec = Record { ts_ns: ts, body };
        let id = w.append(&rec).unwrap();
        assert_eq!(id, out.len() as u64);
        out.push((rec, raw));
    };
    let config = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    let device_config = w.store(&config).unwrap();
    push(
        w,
        0,
        RecordBody::SessionStart(SessionStart {
            wall_clock_unix_ns: 1_764_000_000_000_000_000,
            tool: "vgt-test".into(),
            tool_version: "0.1.0".into(),
            mode: CaptureMode::Synthetic,
            renderer: "none (synthetic) é".into(),
            features_offered: 0x1_0000_0003,
            features_acked: 0x3,
            protocol_features: 0x8000,
            num_queues: 2,
            queue_sizes: vec![256, 16],
            device_config,
        }),
        vec![config],
    );
    let vu = vec![0u8; 8];
    let payload = w.store(&vu).unwrap();
    push(
        w,
        10,
        RecordBody::VhostUser(VhostUserMessage {
            direction: Direction::FrontToBack,
            request: 1,
            flags: 1,
            fd_count: 0,
            payload,
        }),
        vec![vu],
    );
    let req: Vec<u8> = (0..48u8).collect();
    let request = w.store(&req).unwrap();
    push(
        w,
        20,
        RecordBody::Command(CommandRecord {
            queue: 0,
            head: 3,
            descriptors: vec![
                Descriptor {
                    addr: 0x1000,
                    len: 48,
                    flags: 1,
                    next: 4,
                },
                Descriptor {
                    addr: 0x2000,
                    len: 24,
                    flags: 2,
                    next: 0,
                },
            ],
            writable_len: 24,
            request,
        }),
        vec![req],
    );
    let mem = frame_pixels(64, 64, 1);
    let data = w.store(&mem).unwrap();
    assert!(matches!(data, Payload::Blob(_)));
    push(
        w,
        30,
        RecordBody::MemoryRead(MemoryRead {
            command: 2,
            resource_id: 7,
            addr: 0x8000_0000,
            data,
        }),
        vec![mem.clone()],
    );
    let resp = vec![
        0x00, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let bytes = w.store(&resp).unwrap();
    push(
        w,
        40,
        RecordBody::Response(ResponseRecord {
            command: 2,
            queue: 0,
            head: 3,
            used_len: 24,
            bytes,
        }),
        vec![resp],
    );
    push(
        w,
        50,
        RecordBody::Fence(FenceSignal {
            command: 2,
            fence_id: 99,
            ctx_id: 5,
            ring_idx: 1,
            context_ring: true,
        }),
        vec![],
    );
    let sock = vec![9u8; 200];
    let payload = w.store(&sock).unwrap();
    push(
        w,
        60,
        RecordBody::GpuSocket(GpuSocketMessage {
            direction: Direction::BackendRequest,
            request: 6,
            flags: 0,
            fd_count: 1,
            payload,
            data: None,
        }),
        vec![sock],
    );
    // Same content as the memory read: a dedup hit.
    let pixels = w.store(&mem).unwrap();
    push(
        w,
        70,
        RecordBody::Frame(Frame {
            command: 2,
            scanout_id: 0,
            resource_id: 7,
            format: 1,
            width: 64,
            height: 64,
            stride: 256,
            rect: [0, 0, 64, 32],
            pixels,
        }),
        vec![mem],
    );
    let img = frame_pixels(64, 64, 2);
    let image = w.store(&img).unwrap();
    push(
        w,
        80,
        RecordBody::Cursor(Cursor {
            command: 2,
            action: CursorAction::Update,
            scanout_id: 0,
            x: 10,
            y: 20,
            hot_x: 1,
            hot_y: 2,
            resource_id: 8,
            image: Some(image),
        }),
        vec![img],
    );
    push(
        w,
        85,
        RecordBody::Cursor(Cursor {
            command: u64::MAX,
            action: CursorAction::Move,
            scanout_id: 0,
            x: 11,
            y: 21,
            hot_x: 0,
            hot_y: 0,
            resource_id: 0,
            image: None,
        }),
        vec![],
    );
    push(
        w,
        90,
        RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::QueueStart,
            queue: Some(1),
            command: None,
            message: "queue 1 started".into(),
        }),
        vec![],
    );
    push(
        w,
        95,
        RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::ValidationError,
            queue: None,
            command: Some(2),
            message: String::new(),
        }),
        vec![],
    );
    push(
        w,
        100,
        RecordBody::Marker(Marker {
            text: "hello".into(),
        }),
        vec![],
    );
    push(
        w,
        110,
        RecordBody::Unknown {
            kind: 0x00C0,
            body: vec![4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        },
        vec![],
    );
    out
}

/// Records as written, each with the raw bytes of its payloads.
pub type Written = Vec<(Record, Vec<Vec<u8>>)>;

/// A small finished capture of ~20 records with blobs, a dedup hit and an index.
pub fn small_capture(finish: bool) -> (Vec<u8>, Written) {
    let opts = WriterOptions {
        created_unix_ns: Some(1_764_000_000_000_000_000),
        ..WriterOptions::default()
    };
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, opts).unwrap();
    let mut recs = write_every_kind(&mut w);
    // A few more small commands to reach ~20 records.
    for i in 0..6u64 {
        let req = vec![i as u8; 24 + i as usize];
        let request = w.store(&req).unwrap();
        let rec = Record {
            ts_ns: 200 + i,
            body: RecordBody::Command(CommandRecord {
                queue: 0,
                head: i as u16,
                descriptors: vec![],
                writable_len: 24,
                request,
            }),
        };
        w.append(&rec).unwrap();
        recs.push((rec, vec![req]));
    }
    if finish {
        w.finish().unwrap();
    } else {
        drop(w);
    }
    (buf, recs)
}

/// `(start, end)` of every piece of a capture: header, each chunk, footer.
pub fn chunk_map(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut map = vec![(0, 64)];
    let mut pos = 64usize;
    while pos + 16 <= bytes.len() {
        if &bytes[pos..pos + 4] != b"VGTR" {
            break;
        }
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        map.push((pos as u64, (pos + 16 + len) as u64));
        pos += 16 + len;
    }
    if pos < bytes.len() {
        map.push((pos as u64, bytes.len() as u64));
    }
    map
}
