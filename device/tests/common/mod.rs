//! Shared test rig: a real Vec-backed guest memory, a recording host, and request helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use vgt_device::{
    CONTROL_QUEUE, CURSOR_QUEUE, Completion, Device, DeviceConfig, DeviceHost, DisplayEvent,
    DisplayInfoFromHost, FenceInfo, GuestMemory, MemoryError, Submission, ValidationError,
};
use vgt_format::wire::{
    Command, CtrlHeader, FLAG_FENCE, FLAG_INFO_RING_IDX, MemEntry, Rect, Request, Response,
    ResponseType,
};

/// Guest memory made of separate RAM regions.
pub struct VecMemory {
    pub regions: Vec<(u64, Vec<u8>)>,
}

impl VecMemory {
    pub fn new(regions: &[(u64, usize)]) -> Self {
        VecMemory {
            regions: regions.iter().map(|&(b, l)| (b, vec![0; l])).collect(),
        }
    }

    fn region(&self, addr: u64, len: u64) -> Option<(usize, usize)> {
        self.regions
            .iter()
            .enumerate()
            .find_map(|(i, (base, data))| {
                let end = addr.checked_add(len)?;
                (addr >= *base && end <= base + data.len() as u64)
                    .then(|| (i, (addr - base) as usize))
            })
    }

    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let (i, off) = self
            .region(addr, bytes.len() as u64)
            .expect("write inside memory");
        self.regions[i].1[off..off + bytes.len()].copy_from_slice(bytes);
    }

    pub fn byte(&self, addr: u64) -> u8 {
        let (i, off) = self.region(addr, 1).expect("byte inside memory");
        self.regions[i].1[off]
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let (i, off) = self
            .region(addr, buf.len() as u64)
            .ok_or(MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })?;
        buf.copy_from_slice(&self.regions[i].1[off..off + buf.len()]);
        Ok(())
    }
}

/// Everything the device told its host.
#[derive(Default)]
pub struct RecordingHost {
    pub reads: Vec<(u32, u64, Vec<u8>)>,
    /// The device's number for each entry of `reads`.
    pub read_numbers: Vec<u64>,
    pub events: Vec<DisplayEvent>,
    pub fences: Vec<FenceInfo>,
    pub errors: Vec<(u64, ResponseType, String)>,
    pub display_info: Option<DisplayInfoFromHost>,
    pub edid: Option<Vec<u8>>,
}

impl DeviceHost for RecordingHost {
    fn memory_read(&mut self, resource_id: u32, addr: u64, data: &[u8]) {
        self.reads.push((resource_id, addr, data.to_vec()));
    }
    fn numbered_memory_read(&mut self, read: u64, resource_id: u32, addr: u64, data: &[u8]) {
        self.read_numbers.push(read);
        self.memory_read(resource_id, addr, data);
    }
    fn display(&mut self, event: DisplayEvent) {
        self.events.push(event);
    }
    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        self.display_info.clone()
    }
    fn edid(&mut self, _scanout: u32) -> Option<Vec<u8>> {
        self.edid.clone()
    }
    fn fence_signalled(&mut self, fence: FenceInfo) {
        self.fences.push(fence);
    }
    fn validation_error(&mut self, token: u64, err: &ValidationError) {
        self.errors
            .push((token, err.response_type(), err.to_string()));
    }
}

impl RecordingHost {
    /// Every byte read, by guest address; panics if a byte was read twice.
    pub fn read_bytes(&self) -> BTreeMap<u64, u8> {
        let mut m = BTreeMap::new();
        for (_, addr, data) in &self.reads {
            for (i, b) in data.iter().enumerate() {
                assert!(
                    m.insert(addr + i as u64, *b).is_none(),
                    "byte {:#x} read twice",
                    addr + i as u64
                );
            }
        }
        m
    }

    pub fn take_events(&mut self) -> Vec<DisplayEvent> {
        std::mem::take(&mut self.events)
    }
}

pub struct Rig {
    pub dev: Device,
    pub mem: VecMemory,
    pub host: RecordingHost,
    pub token: u64,
}

impl Rig {
    pub fn new(config: DeviceConfig, mem: VecMemory) -> Rig {
        Rig {
            dev: Device::new(config).expect("device"),
            mem,
            host: RecordingHost::default(),
            token: 100,
        }
    }

    pub fn submit_raw(&mut self, queue: u16, bytes: &[u8], writable_len: u32) -> Vec<Completion> {
        self.token += 1;
        self.dev.submit(
            Submission {
                queue,
                token: self.token,
                request: bytes,
                writable_len,
            },
            &self.mem,
            &mut self.host,
        )
    }

    /// Submits on the control queue and returns the decoded single response.
    pub fn ctrl_req(&mut self, req: &Request) -> Response {
        let done = self.submit_raw(CONTROL_QUEUE, &req.encode(), 4096);
        assert_eq!(done.len(), 1, "one completion");
        assert_eq!(done[0].token, self.token);
        Response::decode(&done[0].response).expect("response decodes")
    }

    pub fn ctrl(&mut self, cmd: Command) -> Response {
        self.ctrl_req(&Request::new(cmd))
    }

    /// Asserts the command succeeds with `t`.
    pub fn ok(&mut self, cmd: Command) -> Response {
        let errors = self.host.errors.len();
        let r = self.ctrl(cmd);
        assert!(
            r.response_type().is_ok(),
            "got {}: {:?}",
            r.response_type(),
            self.host.errors.last()
        );
        assert_eq!(self.host.errors.len(), errors, "no validation error");
        r
    }

    /// Asserts the command fails with `t`, reported once with this submission's token.
    pub fn fails(&mut self, cmd: Command, t: ResponseType) {
        self.fails_req(&Request::new(cmd), t);
    }

    pub fn fails_req(&mut self, req: &Request, t: ResponseType) {
        let errors = self.host.errors.len();
        let r = self.ctrl_req(req);
        assert_eq!(r.response_type(), t, "{:?}", self.host.errors.last());
        assert_eq!(
            self.host.errors.len(),
            errors + 1,
            "one validation error reported"
        );
        let (token, rt, _) = self.host.errors.last().expect("error");
        assert_eq!((*token, *rt), (self.token, t));
    }

    pub fn cursor(&mut self, cmd: Command) -> Vec<Completion> {
        let req = Request::new(cmd);
        self.submit_raw(CURSOR_QUEUE, &req.encode(), 0)
    }
}

pub fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

pub fn entries(list: &[(u64, u32)]) -> Vec<MemEntry> {
    list.iter()
        .map(|&(addr, length)| MemEntry {
            addr,
            length,
            padding: 0,
        })
        .collect()
}

/// Guest address of backing offset `off` under a scatter list (independent of the device).
pub fn backing_addr(list: &[(u64, u32)], mut off: u64) -> u64 {
    for &(addr, len) in list {
        if off < u64::from(len) {
            return addr + off;
        }
        off -= u64::from(len);
    }
    panic!("offset beyond backing");
}

/// Fills the backing with a recognisable pattern (each byte a function of its offset).
pub fn fill_backing(mem: &mut VecMemory, list: &[(u64, u32)], seed: u8) {
    let total: u64 = list.iter().map(|e| u64::from(e.1)).sum();
    for off in 0..total {
        let v = (off as u8)
            .wrapping_mul(31)
            .wrapping_add((off >> 8) as u8)
            .wrapping_add(seed);
        mem.write(backing_addr(list, off), &[v]);
    }
}

/// The bytes of `r` as a guest transfer with `offset` and `stride` would read them, tightly
/// packed, straight from guest memory.
pub fn expected_rect(
    mem: &VecMemory,
    list: &[(u64, u32)],
    offset: u64,
    stride: u64,
    r: Rect,
) -> Vec<u8> {
    let mut out = Vec::new();
    for row in 0..u64::from(r.height) {
        for i in 0..u64::from(r.width) * 4 {
            out.push(mem.byte(backing_addr(list, offset + row * stride + i)));
        }
    }
    out
}

/// Guest addresses a transfer reads.
pub fn expected_addrs(list: &[(u64, u32)], offset: u64, stride: u64, r: Rect) -> Vec<u64> {
    let mut out = Vec::new();
    for row in 0..u64::from(r.height) {
        for i in 0..u64::from(r.width) * 4 {
            out.push(backing_addr(list, offset + row * stride + i));
        }
    }
    out.sort_unstable();
    out
}

pub fn fenced(cmd: Command, fence_id: u64) -> Request {
    let mut r = Request::new(cmd);
    r.header.flags = FLAG_FENCE;
    r.header.fence_id = fence_id;
    r
}

pub fn fenced_ring(cmd: Command, fence_id: u64, ctx_id: u32, ring_idx: u8) -> Request {
    let mut r = fenced(cmd, fence_id);
    r.header.flags |= FLAG_INFO_RING_IDX;
    r.header.ctx_id = ctx_id;
    r.header.ring_idx = ring_idx;
    r
}

pub fn header_of(bytes: &[u8]) -> CtrlHeader {
    CtrlHeader::decode(bytes).expect("header")
}

/// Pulls the single Update out of `events`.
pub fn only_update(events: &[DisplayEvent]) -> (u32, u32, u32, u32, u32, Vec<u8>) {
    let ups: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DisplayEvent::Update {
                scanout_id,
                x,
                y,
                width,
                height,
                pixels,
                stride,
                ..
            } => {
                assert_eq!(*stride, width * 4);
                assert_eq!(
                    pixels.len() as u64,
                    u64::from(*width) * u64::from(*height) * 4
                );
                Some((*scanout_id, *x, *y, *width, *height, pixels.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        ups.len(),
        1,
        "exactly one update in {} events",
        events.len()
    );
    ups.into_iter().next().expect("update")
}
