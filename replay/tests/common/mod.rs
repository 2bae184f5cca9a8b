//! Captures made the honest way: the real vgt-device executes real request bytes against real
//! guest memory, and a recording host writes exactly the records vgt-capture writes (command
//! before execution, memory reads, frames from the shared framebuffers, fences, validation
//! errors, GPU-socket display info/EDID request and reply, response).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use vgt_device::display::{FRAME_FORMAT, Framebuffers};
use vgt_device::{
    Device, DeviceConfig, DeviceHost, DisplayEvent, DisplayInfoFromHost, FenceInfo, GuestMemory,
    MemoryError, Submission, ValidationError,
};
use vgt_format::record::{
    CaptureMode, CommandRecord, Cursor, CursorAction, Descriptor, Direction, FenceSignal, Frame,
    GpuSocketMessage, Lifecycle, LifecycleKind, MemoryRead, Payload, Record, RecordBody, RecordId,
    ResponseRecord, SessionStart, VhostUserMessage,
};
use vgt_format::wire::{
    Command, CtrlHeader, DisplayInfo, DisplayOne, Format, GpuSocketRequest, MemEntry, Rect,
    Request, ResourceAttachBacking, ResourceCreate2d, ResourceFlush, Response, ResponseBody,
    ResponseType, SetScanout, TransferToHost2d, VhostUserRequest,
};
use vgt_format::{CaptureReader, CaptureWriter, WriterOptions};

/// Guest-physical base of the test guest's RAM.
pub const RAM_BASE: u64 = 0x4000_0000;

/// A Write that several owners share (the capture bytes stay reachable after `finish`).
#[derive(Clone, Default)]
pub struct SharedBuf(pub Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Flat guest RAM at `RAM_BASE`.
pub struct GuestRam {
    pub bytes: Vec<u8>,
}

impl GuestMemory for GuestRam {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if !self.contains(addr, len) {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        let off = (addr - RAM_BASE) as usize;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
    fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= RAM_BASE
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= RAM_BASE + self.bytes.len() as u64)
    }
}

/// What the simulated QEMU answers on the GPU socket (None: no socket, as without
/// `vhost-user-gpu`'s display).
#[derive(Clone)]
pub struct SimulatedQemu {
    pub display: DisplayInfoFromHost,
    /// None: QEMU did not negotiate EDID on the socket (the device generates one).
    pub edid: Option<Vec<u8>>,
}

/// Records a session of the real device.
pub struct Recording {
    pub writer: CaptureWriter<SharedBuf>,
    buf: SharedBuf,
    pub device: Device,
    pub ram: GuestRam,
    fbs: Framebuffers,
    ts: u64,
    head: u16,
    qemu: Option<SimulatedQemu>,
    fences: HashMap<u64, RecordId>,
}

impl Recording {
    /// A recording of a device with `config`, guest RAM of `ram_bytes`.
    pub fn new(config: DeviceConfig, ram_bytes: usize, qemu: Option<SimulatedQemu>) -> Self {
        let buf = SharedBuf::default();
        let writer = CaptureWriter::new(buf.clone(), WriterOptions::default()).unwrap();
        let device = Device::new(config).unwrap();
        let mut r = Recording {
            writer,
            buf,
            device,
            ram: GuestRam {
                bytes: vec![0; ram_bytes],
            },
            fbs: Framebuffers::new(),
            ts: 0,
            head: 0,
            qemu,
            fences: HashMap::new(),
        };
        let device_config = r.writer.store(&r.device.config_space()).unwrap();
        let features = r.device.features() | (1 << 32);
        r.append(RecordBody::SessionStart(SessionStart {
            wall_clock_unix_ns: 1_795_615_952_000_000_000,
            tool: "vgt-replay-tests".to_owned(),
            tool_version: "0".to_owned(),
            mode: CaptureMode::BuiltIn,
            renderer: "rutabaga_gfx 0.1.85 2d".to_owned(),
            features_offered: features,
            features_acked: features,
            protocol_features: 0,
            num_queues: 2,
            queue_sizes: vec![1024, 1024],
            device_config,
        }));
        // SET_MEM_TABLE with the one RAM region, as QEMU sends it.
        let mut table = Vec::new();
        table.extend_from_slice(&1u32.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        for v in [RAM_BASE, ram_bytes as u64, 0x7f00_0000_0000, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        let payload = r.writer.store(&table).unwrap();
        r.append(RecordBody::VhostUser(VhostUserMessage {
            direction: Direction::FrontToBack,
            request: VhostUserRequest::SET_MEM_TABLE.0,
            flags: 1,
            fd_count: 1,
            payload,
        }));
        r
    }

    /// A one-scanout recording without a GPU socket.
    pub fn simple(width: u32, height: u32) -> Self {
        Self::new(
            DeviceConfig {
                scanouts: vec![(width, height)],
                ..DeviceConfig::default()
            },
            16 << 20,
            None,
        )
    }

    /// Appends a record, advancing the clock by 10 µs.
    pub fn append(&mut self, body: RecordBody) -> RecordId {
        self.ts += 10_000;
        self.writer
            .append(&Record {
                ts_ns: self.ts,
                body,
            })
            .unwrap()
    }

    /// Moves the capture clock forward (frame pacing in benchmarks).
    pub fn advance(&mut self, ns: u64) {
        self.ts += ns;
    }

    /// Guest writes `data` at `addr`.
    pub fn poke(&mut self, addr: u64, data: &[u8]) {
        let off = (addr - RAM_BASE) as usize;
        self.ram.bytes[off..off + data.len()].copy_from_slice(data);
    }

    /// Submits a request on the control queue (or the cursor queue for cursor commands).
    pub fn submit(&mut self, request: &Request) -> RecordId {
        let queue = u16::from(request.command_type().is_cursor());
        // Room for the largest response (OK_CAPSET aside): RESP_EDID is 1056 bytes.
        let writable = if queue == 1 { 0 } else { 4096 };
        self.submit_raw(queue, &request.encode(), writable)
    }

    /// Submits raw request bytes: records the command, runs the device, records what it did.
    pub fn submit_raw(&mut self, queue: u16, bytes: &[u8], writable_len: u32) -> RecordId {
        let head = self.head;
        self.head = self.head.wrapping_add(2) % 1024;
        let mut descriptors = vec![Descriptor {
            addr: RAM_BASE + 0x10_0000 + u64::from(head) * 0x1000,
            len: bytes.len() as u32,
            flags: if writable_len > 0 { 1 } else { 0 },
            next: head + 1,
        }];
        if writable_len > 0 {
            descriptors.push(Descriptor {
                addr: RAM_BASE + 0x10_0800 + u64::from(head) * 0x1000,
                len: writable_len,
                flags: 2,
                next: 0,
            });
        }
        let request = self.writer.store(bytes).unwrap();
        let command = self.append(RecordBody::Command(CommandRecord {
            queue,
            head,
            descriptors,
            writable_len,
            request,
        }));
        if let Ok(h) = CtrlHeader::decode(bytes)
            && h.is_fenced()
        {
            self.fences.insert(h.fence_id, command);
        }
        let mut host = Host {
            rec: RecHost {
                writer: &mut self.writer,
                ts: &mut self.ts,
            },
            command,
            queue,
            fbs: &mut self.fbs,
            qemu: self.qemu.as_ref(),
            fences: &self.fences,
        };
        let completions = self.device.submit(
            Submission {
                queue,
                token: command,
                request: bytes,
                writable_len,
            },
            &self.ram,
            &mut host,
        );
        for c in completions {
            let used_len = c.response.len() as u32;
            let stored = self.writer.store(&c.response).unwrap();
            self.append(RecordBody::Response(ResponseRecord {
                command: c.token,
                queue,
                head,
                used_len,
                bytes: stored,
            }));
        }
        command
    }

    /// Device reset, recorded as vgt-capture records it.
    pub fn reset(&mut self) {
        self.device.reset();
        self.fbs.clear();
        self.append(RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::Reset,
            queue: None,
            command: None,
            message: "device reset".to_owned(),
        }));
    }

    /// Finishes the capture and returns its bytes.
    pub fn finish(self) -> Vec<u8> {
        let buf = self.buf.clone();
        self.writer.finish().unwrap();
        buf.0.borrow().clone()
    }
}

struct RecHost<'a> {
    writer: &'a mut CaptureWriter<SharedBuf>,
    ts: &'a mut u64,
}

impl RecHost<'_> {
    fn append(&mut self, body: RecordBody) -> RecordId {
        *self.ts += 10_000;
        self.writer
            .append(&Record {
                ts_ns: *self.ts,
                body,
            })
            .unwrap()
    }
    fn socket(&mut self, direction: Direction, request: GpuSocketRequest, payload: &[u8]) {
        let payload = self.writer.store(payload).unwrap();
        self.append(RecordBody::GpuSocket(GpuSocketMessage {
            direction,
            request: request.0,
            flags: if direction == Direction::BackendReply {
                4
            } else {
                0
            },
            fd_count: 0,
            payload,
            data: None,
        }));
    }
}

struct Host<'a> {
    rec: RecHost<'a>,
    command: RecordId,
    queue: u16,
    fbs: &'a mut Framebuffers,
    qemu: Option<&'a SimulatedQemu>,
    fences: &'a HashMap<u64, RecordId>,
}

impl DeviceHost for Host<'_> {
    fn memory_read(&mut self, resource_id: u32, addr: u64, data: &[u8]) {
        let data = self.rec.writer.store(data).unwrap();
        self.rec.append(RecordBody::MemoryRead(MemoryRead {
            command: self.command,
            resource_id,
            addr,
            data,
        }));
    }

    fn display(&mut self, event: DisplayEvent) {
        let command = self.command;
        let cursor = move |action, scanout_id, x, y, hot: (u32, u32), resource_id, image| Cursor {
            command,
            action,
            scanout_id,
            x,
            y,
            hot_x: hot.0,
            hot_y: hot.1,
            resource_id,
            image,
        };
        let body = match &event {
            DisplayEvent::CursorUpdate {
                scanout_id,
                x,
                y,
                hot_x,
                hot_y,
                resource_id,
                image,
            } => {
                let image = self.rec.writer.store(&image[..]).unwrap();
                Some(cursor(
                    CursorAction::Update,
                    *scanout_id,
                    *x,
                    *y,
                    (*hot_x, *hot_y),
                    *resource_id,
                    Some(image),
                ))
            }
            DisplayEvent::CursorMove { scanout_id, x, y } => Some(cursor(
                CursorAction::Move,
                *scanout_id,
                *x,
                *y,
                (0, 0),
                0,
                None,
            )),
            DisplayEvent::CursorHide { scanout_id, x, y } => Some(cursor(
                CursorAction::Hide,
                *scanout_id,
                *x,
                *y,
                (0, 0),
                0,
                None,
            )),
            _ => None,
        };
        if let Some(c) = body {
            self.rec.append(RecordBody::Cursor(c));
            return;
        }
        if let Some(change) = self.fbs.apply(&event)
            && let Some(fb) = self.fbs.get(change.scanout_id)
        {
            let pixels = self.rec.writer.store(&fb.pixels).unwrap();
            let frame = Frame {
                command: self.command,
                scanout_id: change.scanout_id,
                resource_id: fb.resource_id,
                format: FRAME_FORMAT.0,
                width: fb.width,
                height: fb.height,
                stride: fb.stride(),
                rect: change.rect,
                pixels,
            };
            self.rec.append(RecordBody::Frame(frame));
        }
    }

    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        let qemu = self.qemu?;
        self.rec.socket(
            Direction::BackendRequest,
            GpuSocketRequest::GET_DISPLAY_INFO,
            &[],
        );
        let mut info = DisplayInfo::default();
        for (p, d) in info.pmodes.iter_mut().zip(&qemu.display.displays) {
            *p = DisplayOne {
                r: Rect {
                    x: d.x,
                    y: d.y,
                    width: d.width,
                    height: d.height,
                },
                enabled: u32::from(d.enabled),
                flags: d.flags,
            };
        }
        let reply = Response::new(
            CtrlHeader::new(ResponseType::OK_DISPLAY_INFO.0),
            ResponseBody::OkDisplayInfo(info),
        )
        .encode();
        self.rec.socket(
            Direction::BackendReply,
            GpuSocketRequest::GET_DISPLAY_INFO,
            &reply,
        );
        Some(qemu.display.clone())
    }

    fn edid(&mut self, scanout: u32) -> Option<Vec<u8>> {
        let edid = self.qemu?.edid.clone()?;
        self.rec.socket(
            Direction::BackendRequest,
            GpuSocketRequest::GET_EDID,
            &scanout.to_le_bytes(),
        );
        let reply = Response::new(
            CtrlHeader::new(ResponseType::OK_EDID.0),
            ResponseBody::OkEdid(vgt_format::wire::Edid::from_blob(&edid)),
        )
        .encode();
        self.rec
            .socket(Direction::BackendReply, GpuSocketRequest::GET_EDID, &reply);
        Some(edid)
    }

    fn fence_signalled(&mut self, fence: FenceInfo) {
        let command = self
            .fences
            .get(&fence.fence_id)
            .copied()
            .unwrap_or(u64::MAX);
        self.rec.append(RecordBody::Fence(FenceSignal {
            command,
            fence_id: fence.fence_id,
            ctx_id: fence.ctx_id,
            ring_idx: fence.ring_idx,
            context_ring: fence.flags & 2 != 0,
        }));
    }

    fn validation_error(&mut self, token: u64, err: &ValidationError) {
        self.rec.append(RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::ValidationError,
            queue: Some(self.queue),
            command: Some(token),
            message: err.to_string(),
        }));
    }
}

// ---- request helpers -------------------------------------------------------------------------

pub fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

pub fn create_2d(resource_id: u32, format: Format, width: u32, height: u32) -> Request {
    Request::new(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id,
        format,
        width,
        height,
    }))
}

pub fn attach(resource_id: u32, entries: &[(u64, u32)]) -> Request {
    Request::new(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id,
        nr_entries: entries.len() as u32,
        entries: entries
            .iter()
            .map(|&(addr, length)| MemEntry {
                addr,
                length,
                padding: 0,
            })
            .collect(),
    }))
}

pub fn set_scanout(scanout_id: u32, resource_id: u32, r: Rect) -> Request {
    Request::new(Command::SetScanout(SetScanout {
        r,
        scanout_id,
        resource_id,
    }))
}

pub fn transfer(resource_id: u32, r: Rect, offset: u64) -> Request {
    Request::new(Command::TransferToHost2d(TransferToHost2d {
        r,
        offset,
        resource_id,
        padding: 0,
    }))
}

pub fn flush(resource_id: u32, r: Rect) -> Request {
    Request::new(Command::ResourceFlush(ResourceFlush {
        r,
        resource_id,
        padding: 0,
    }))
}

pub fn fenced(mut r: Request, fence_id: u64) -> Request {
    r.header.flags |= vgt_format::wire::FLAG_FENCE;
    r.header.fence_id = fence_id;
    r
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A Linux-like session: display info, EDID, a `w`x`h` B8G8R8X8 framebuffer in two backing
/// pieces, `frames` full-screen transfer+flush pairs of new content (every third one fenced), a
/// partial update, a cursor, and an unref at the end.
pub fn linux_like(w: u32, h: u32, frames: u32) -> Recording {
    let mut r = Recording::simple(w, h);
    linux_like_on(&mut r, w, h, frames);
    r
}

pub fn linux_like_on(r: &mut Recording, w: u32, h: u32, frames: u32) {
    let size = w * h * 4;
    let half = (size / 2) & !3;
    let fb = RAM_BASE + 0x20_0000;
    r.submit(&Request::new(Command::GetDisplayInfo));
    r.submit(&Request::new(Command::GetEdid(vgt_format::wire::GetEdid {
        scanout: 0,
        padding: 0,
    })));
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, w, h));
    // Two pieces, the second not adjacent to the first.
    r.submit(&attach(
        1,
        &[(fb, half), (fb + 0x40_0000 + 0x1000, size - half)],
    ));
    r.submit(&set_scanout(0, 1, rect(0, 0, w, h)));
    for i in 0..frames {
        let px = pattern(size as usize, i + 1);
        r.poke(fb, &px[..half as usize]);
        r.poke(fb + 0x40_0000 + 0x1000, &px[half as usize..]);
        r.submit(&transfer(1, rect(0, 0, w, h), 0));
        let f = flush(1, rect(0, 0, w, h));
        if i % 3 == 2 {
            r.submit(&fenced(f, u64::from(i) + 1));
        } else {
            r.submit(&f);
        }
    }
    // A partial update of a 4x2 rectangle at (2, 1).
    let px = pattern(size as usize, 999);
    r.poke(fb, &px[..half as usize]);
    r.poke(fb + 0x40_0000 + 0x1000, &px[half as usize..]);
    r.submit(&transfer(1, rect(2, 1, 4, 2), u64::from(w * 4 + 8)));
    r.submit(&flush(1, rect(2, 1, 4, 2)));
    // A cursor from a 64x64 resource.
    r.submit(&create_2d(5, Format::B8G8R8A8_UNORM, 64, 64));
    let cur = RAM_BASE + 0x90_0000;
    r.poke(cur, &pattern(64 * 64 * 4, 77));
    r.submit(&attach(5, &[(cur, 64 * 64 * 4)]));
    r.submit(&transfer(5, rect(0, 0, 64, 64), 0));
    let pos = vgt_format::wire::CursorPos {
        scanout_id: 0,
        x: 3,
        y: 4,
        padding: 0,
    };
    r.submit(&Request::new(Command::UpdateCursor(
        vgt_format::wire::UpdateCursor {
            pos,
            resource_id: 5,
            hot_x: 1,
            hot_y: 2,
            padding: 0,
        },
    )));
    // An error the guest caused: transfer outside the resource.
    r.submit(&transfer(1, rect(w - 1, 0, 4, 1), 0));
    r.submit(&Request::new(Command::ResourceUnref(
        vgt_format::wire::ResourceUnref {
            resource_id: 5,
            padding: 0,
        },
    )));
}

// ---- capture editing -------------------------------------------------------------------------

/// Copies a capture record by record through a new writer, letting `edit` change (or drop,
/// by returning None) each record with its payloads already read back as inline bytes.
pub fn rewrite(bytes: &[u8], edit: impl FnMut(RecordId, Record) -> Option<Record>) -> Vec<u8> {
    rewrite_then(bytes, edit, Vec::new())
}

/// Like [`rewrite`], then appends `tail` (with inline payloads).
pub fn rewrite_then(
    bytes: &[u8],
    mut edit: impl FnMut(RecordId, Record) -> Option<Record>,
    tail: Vec<Record>,
) -> Vec<u8> {
    let reader = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    let buf = SharedBuf::default();
    let mut w = CaptureWriter::new(buf.clone(), WriterOptions::default()).unwrap();
    // Records refer to commands by record number: keep those references right when records
    // are dropped.
    let mut renumber = std::collections::HashMap::new();
    for item in reader.iter() {
        let (id, mut rec) = item.unwrap();
        inline_payloads(&reader, &mut rec.body);
        let Some(mut rec) = edit(id, rec) else {
            continue;
        };
        let map = |c: &mut RecordId| {
            if let Some(n) = renumber.get(c) {
                *c = *n;
            }
        };
        match &mut rec.body {
            RecordBody::MemoryRead(m) => map(&mut m.command),
            RecordBody::Response(r) => map(&mut r.command),
            RecordBody::Fence(f) => map(&mut f.command),
            RecordBody::Frame(f) => map(&mut f.command),
            RecordBody::Cursor(c) => map(&mut c.command),
            RecordBody::Lifecycle(l) => {
                if let Some(c) = l.command.as_mut() {
                    map(c);
                }
            }
            _ => {}
        }
        restore_payloads(&mut w, &mut rec.body);
        let new_id = w.append(&rec).unwrap();
        renumber.insert(id, new_id);
    }
    for mut rec in tail {
        restore_payloads(&mut w, &mut rec.body);
        w.append(&rec).unwrap();
    }
    w.finish().unwrap();
    buf.0.borrow().clone()
}

fn payloads_mut(body: &mut RecordBody) -> Vec<&mut Payload> {
    match body {
        RecordBody::SessionStart(s) => vec![&mut s.device_config],
        RecordBody::VhostUser(m) => vec![&mut m.payload],
        RecordBody::Command(c) => vec![&mut c.request],
        RecordBody::MemoryRead(m) => vec![&mut m.data],
        RecordBody::Response(r) => vec![&mut r.bytes],
        RecordBody::GpuSocket(g) => vec![&mut g.payload],
        RecordBody::Frame(f) => vec![&mut f.pixels],
        RecordBody::Cursor(c) => c.image.iter_mut().collect(),
        _ => Vec::new(),
    }
}

fn inline_payloads(reader: &CaptureReader, body: &mut RecordBody) {
    for p in payloads_mut(body) {
        let bytes = reader.read_payload(p).unwrap().into_owned();
        *p = Payload::Inline(bytes);
    }
}

fn restore_payloads(w: &mut CaptureWriter<SharedBuf>, body: &mut RecordBody) {
    for p in payloads_mut(body) {
        if let Payload::Inline(b) = p {
            let stored = w.store(b).unwrap();
            *p = stored;
        }
    }
}

/// The bytes of an inline payload (after `rewrite` every payload is inline).
pub fn bytes_mut(p: &mut Payload) -> &mut Vec<u8> {
    match p {
        Payload::Inline(b) => b,
        Payload::Blob(_) => panic!("payload not inline"),
    }
}

/// Every record of a capture.
pub fn records(bytes: &[u8]) -> Vec<(RecordId, Record)> {
    let reader = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    reader.iter().map(|r| r.unwrap()).collect()
}
