//! The device's promises on any guest input, checked on one input (shared by the `device_replay`
//! fuzz target and by `replay/tests/fuzz_inputs.rs`, which runs the kept inputs in CI).
//!
//! An input is a device configuration byte and a sequence of descriptor chains (layout in
//! [`decode`]). Each chain goes to device A, over guest memory with fixed content, and then to
//! device B, over a [`SparseMemory`] that holds only the bytes A reported reading so far (what
//! vgt-replay rebuilds from a capture). [`run`] panics, saying what broke, unless:
//!
//! - A answers every chain at once (the 2D renderer signals fences synchronously) with a
//!   response that fits the chain's writable bytes, empty on the cursor queue;
//! - a whole control-queue response decodes, carries an OK or ERR code, and echoes a fenced
//!   request's FLAG_FENCE, fence_id, ctx_id (and ring_idx with FLAG_INFO_RING_IDX);
//! - every read A reports is the guest's bytes at that address;
//! - B answers exactly as A (same completions, display output, fences, error codes and reads),
//!   and B misses exactly the reads that failed on A.

use std::cell::RefCell;

use vgt_device::{
    Completion, Device, DeviceConfig, DeviceHost, DisplayEvent, FenceInfo, GuestMemory,
    MemoryError, Submission, ValidationError,
};
use vgt_format::wire::vhost_user::MemoryRegion;
use vgt_format::wire::{
    BlobFlags, BlobMem, Command, CtrlHeader, CursorPos, FLAG_FENCE, FLAG_INFO_RING_IDX, Format,
    GetCapsetInfo, GetEdid, MemEntry, Rect, Request, ResourceAttachBacking, ResourceCreate2d,
    ResourceCreateBlob, ResourceDetachBacking, ResourceFlush, ResourceUnref, Response,
    ResponseType, SetScanout, SetScanoutBlob, TransferToHost2d, UpdateCursor,
};
use vgt_replay::SparseMemory;

/// Guest RAM of the harness: (guest-physical base, length).
pub const REGIONS: [(u64, usize); 2] = [(0x1000, 0x1_0000), (0x4_0000, 0x4_0000)];

/// Most chains one input runs (longer inputs are cut, so one run stays fast).
pub const MAX_STEPS: usize = 96;

/// The byte of guest memory at `addr` (fixed content, different at every nearby address).
pub fn guest_byte(addr: u64) -> u8 {
    let x = addr.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ addr as u8
}

/// One descriptor chain of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Queue index (0 control, 1 cursor; 2 and 3 name no queue).
    pub queue: u16,
    /// Total length of the chain's writable descriptors.
    pub writable: u32,
    /// The chain's readable bytes.
    pub request: Vec<u8>,
}

/// The device configuration chosen by the input's first byte: bits 0-3 give 1 to 16 scanouts
/// (scanout i is (64 + 16 i) x (48 + 8 i)), bit 4 turns EDID off. Resources are kept small
/// (4 MiB each, 16 MiB in all) so that one run stays fast.
pub fn config(byte: u8) -> DeviceConfig {
    let n = u32::from(byte & 15) + 1;
    DeviceConfig {
        scanouts: (0..n).map(|i| (64 + 16 * i, 48 + 8 * i)).collect(),
        edid: byte & 16 == 0,
        max_backing_entries: 256,
        max_resource_bytes: 4 << 20,
        max_total_bytes: 16 << 20,
        ..DeviceConfig::default()
    }
}

/// Splits an input into its configuration byte and chains. After the first byte, each chain is
/// `queue: u8` (low 2 bits), `writable: u16 LE`, `len: u16 LE`, then `len` request bytes (fewer
/// when the input ends first). `None` for an empty input.
pub fn decode(data: &[u8]) -> Option<(u8, Vec<Chain>)> {
    let (&cfg, mut rest) = data.split_first()?;
    let mut chains = Vec::new();
    while rest.len() >= 5 && chains.len() < MAX_STEPS {
        let queue = u16::from(rest[0] & 3);
        let writable = u32::from(u16::from_le_bytes([rest[1], rest[2]]));
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]]));
        let body = &rest[5..];
        let take = len.min(body.len());
        chains.push(Chain {
            queue,
            writable,
            request: body[..take].to_vec(),
        });
        rest = &body[take..];
    }
    Some((cfg, chains))
}

/// The inverse of [`decode`] (for building seeds and regression inputs).
pub fn encode(cfg: u8, chains: &[Chain]) -> Vec<u8> {
    let mut out = vec![cfg];
    for c in chains {
        out.push(c.queue as u8);
        out.extend_from_slice(&(c.writable.min(u32::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&(c.request.len() as u16).to_le_bytes());
        out.extend_from_slice(&c.request);
    }
    out
}

/// Guest memory with [`guest_byte`] content in [`REGIONS`]; notes the reads that failed.
struct FixedMemory {
    regions: Vec<(u64, Vec<u8>)>,
    failed: RefCell<Vec<(u64, u64)>>,
}

impl FixedMemory {
    fn new() -> Self {
        let regions = REGIONS
            .iter()
            .map(|&(base, len)| {
                (
                    base,
                    (0..len as u64).map(|i| guest_byte(base + i)).collect(),
                )
            })
            .collect();
        FixedMemory {
            regions,
            failed: RefCell::new(Vec::new()),
        }
    }
}

impl GuestMemory for FixedMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let found = self.regions.iter().find_map(|(base, bytes)| {
            let end = addr.checked_add(len)?;
            (addr >= *base && end <= base + bytes.len() as u64)
                .then(|| &bytes[(addr - base) as usize..(end - base) as usize])
        });
        match found {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => {
                self.failed.borrow_mut().push((addr, len));
                Err(MemoryError::OutOfRange { addr, len })
            }
        }
    }
}

/// Everything a device told its host during one chain.
#[derive(Debug, Default, PartialEq, Eq)]
struct Told {
    /// (read number, resource id, address, bytes).
    reads: Vec<(u64, u32, u64, Vec<u8>)>,
    display: Vec<DisplayEvent>,
    fences: Vec<FenceInfo>,
    /// (token, response code) of each validation error.
    errors: Vec<(u64, ResponseType)>,
}

impl DeviceHost for Told {
    fn numbered_memory_read(&mut self, read: u64, resource_id: u32, addr: u64, data: &[u8]) {
        self.reads.push((read, resource_id, addr, data.to_vec()));
    }
    fn display(&mut self, event: DisplayEvent) {
        self.display.push(event);
    }
    fn fence_signalled(&mut self, fence: FenceInfo) {
        self.fences.push(fence);
    }
    fn validation_error(&mut self, token: u64, err: &ValidationError) {
        self.errors.push((token, err.response_type()));
    }
}

/// Runs one input (see the module docs); panics on the first broken promise.
pub fn run(data: &[u8]) {
    let Some((cfg, chains)) = decode(data) else {
        return;
    };
    let config = config(cfg);
    let mut a = Device::new(config.clone()).expect("device A");
    let mut b = Device::new(config).expect("device B");
    let mem = FixedMemory::new();
    let mut replayed = SparseMemory::new();
    replayed.set_regions(
        &REGIONS
            .iter()
            .map(|&(base, len)| MemoryRegion {
                guest_phys_addr: base,
                memory_size: len as u64,
                user_addr: 0,
                mmap_offset: 0,
            })
            .collect::<Vec<_>>(),
    );
    for (step, chain) in chains.iter().enumerate() {
        let token = step as u64;
        let sub = Submission {
            queue: chain.queue,
            token,
            request: &chain.request,
            writable_len: chain.writable,
        };
        let mut told_a = Told::default();
        let done_a = a.submit(sub, &mem, &mut told_a);
        check_completion(step, chain, &done_a);
        assert_eq!(
            a.pending_fences(),
            0,
            "chain {step}: a fence was left pending"
        );
        for (_, _, addr, bytes) in &told_a.reads {
            for (i, &v) in bytes.iter().enumerate() {
                let at = addr + i as u64;
                assert_eq!(
                    v,
                    guest_byte(at),
                    "chain {step}: read of {at:#x} reported wrong"
                );
            }
            replayed.write(*addr, bytes);
        }
        let failed_a = std::mem::take(&mut *mem.failed.borrow_mut());

        let mut told_b = Told::default();
        let done_b = b.submit(sub, &replayed, &mut told_b);
        assert_eq!(done_a, done_b, "chain {step}: replay answered differently");
        assert_eq!(
            told_a, told_b,
            "chain {step}: replay told its host different things"
        );
        let missed_b: Vec<(u64, u64)> = replayed
            .take_misses()
            .into_iter()
            .map(|m| (m.addr, m.len))
            .collect();
        assert_eq!(
            failed_a, missed_b,
            "chain {step}: replay missed other reads than failed on A"
        );
    }
}

/// A's completion of one chain keeps the promises on responses.
fn check_completion(step: usize, chain: &Chain, done: &[Completion]) {
    assert_eq!(done.len(), 1, "chain {step}: {} completions", done.len());
    let c = &done[0];
    assert_eq!(
        c.token, step as u64,
        "chain {step}: another chain completed"
    );
    assert!(
        c.response.len() <= chain.writable as usize,
        "chain {step}: {} response bytes for {} writable",
        c.response.len(),
        chain.writable
    );
    if chain.queue == 1 {
        assert!(c.response.is_empty(), "chain {step}: cursor queue response");
        return;
    }
    let Ok(req) = CtrlHeader::decode(&chain.request) else {
        return;
    };
    // A response cut to the writable bytes cannot be decoded whole; a full one must.
    let Ok(resp) = Response::decode(&c.response) else {
        assert!(
            c.response.len() == chain.writable as usize,
            "chain {step}: a whole response does not decode: {:02x?}",
            c.response
        );
        return;
    };
    let t = resp.response_type();
    assert!(
        t.is_ok() || t.is_error(),
        "chain {step}: response code {:#x} is neither OK nor ERR",
        t.0
    );
    if req.is_fenced() {
        let h = &resp.header;
        assert!(h.is_fenced(), "chain {step}: FLAG_FENCE not echoed");
        assert_eq!(
            (h.fence_id, h.ctx_id),
            (req.fence_id, req.ctx_id),
            "chain {step}: fence fields not echoed"
        );
        if req.has_ring_idx() {
            assert!(
                h.has_ring_idx(),
                "chain {step}: FLAG_INFO_RING_IDX not echoed"
            );
            assert_eq!(
                h.ring_idx, req.ring_idx,
                "chain {step}: ring_idx not echoed"
            );
        }
    }
}

fn ctrl(req: Request) -> Chain {
    Chain {
        queue: 0,
        writable: 1024 + 24 + 8,
        request: req.encode(),
    }
}

fn cmd(c: Command) -> Chain {
    ctrl(Request::new(c))
}

fn fenced(c: Command, fence_id: u64, ring: Option<(u32, u8)>) -> Chain {
    let mut r = Request::new(c);
    r.header.flags = FLAG_FENCE;
    r.header.fence_id = fence_id;
    if let Some((ctx, idx)) = ring {
        r.header.flags |= FLAG_INFO_RING_IDX;
        r.header.ctx_id = ctx;
        r.header.ring_idx = idx;
    }
    ctrl(r)
}

fn cursor(c: Command) -> Chain {
    Chain {
        queue: 1,
        writable: 0,
        request: Request::new(c).encode(),
    }
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

fn entries(list: &[(u64, u32)]) -> Vec<MemEntry> {
    list.iter()
        .map(|&(addr, length)| MemEntry {
            addr,
            length,
            padding: 0,
        })
        .collect()
}

fn create_2d(resource_id: u32, format: Format, width: u32, height: u32) -> Command {
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

fn transfer(resource_id: u32, r: Rect, offset: u64) -> Command {
    Command::TransferToHost2d(TransferToHost2d {
        r,
        offset,
        resource_id,
        padding: 0,
    })
}

fn flush(resource_id: u32, r: Rect) -> Command {
    Command::ResourceFlush(ResourceFlush {
        r,
        resource_id,
        padding: 0,
    })
}

fn update_cursor(resource_id: u32, x: u32, y: u32) -> Command {
    Command::UpdateCursor(UpdateCursor {
        pos: CursorPos {
            scanout_id: 0,
            x,
            y,
            padding: 0,
        },
        resource_id,
        hot_x: 3,
        hot_y: 5,
        padding: 0,
    })
}

/// Seeds: what a booting Linux guest sends (framebuffer, cursor, fences, blobs, teardown), one
/// input per theme, each named. `fuzz/seeds/device_replay/` holds them as files.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // 64x48 B8G8R8X8 framebuffer (12 KiB) in pages spread over both regions.
    let fb_pages: &[(u64, u32)] = &[(0x5000, 0x1000), (0x4_1000, 0x1000), (0x2000, 0x1000)];
    let cursor_pages: &[(u64, u32)] = &[(0x4_8000, 0x4000)];
    let full = rect(0, 0, 64, 48);
    let boot = vec![
        cmd(Command::GetDisplayInfo),
        cmd(Command::GetEdid(GetEdid {
            scanout: 0,
            padding: 0,
        })),
        cmd(create_2d(1, Format::B8G8R8X8_UNORM, 64, 48)),
        cmd(attach(1, fb_pages)),
        cmd(Command::SetScanout(SetScanout {
            r: full,
            scanout_id: 0,
            resource_id: 1,
        })),
        cmd(transfer(1, full, 0)),
        cmd(flush(1, full)),
        cmd(transfer(1, rect(8, 4, 16, 8), 8 * 4 + 4 * 64 * 4)),
        cmd(flush(1, rect(8, 4, 16, 8))),
        cmd(create_2d(2, Format::B8G8R8A8_UNORM, 64, 64)),
        cmd(attach(2, cursor_pages)),
        cmd(transfer(2, rect(0, 0, 64, 64), 0)),
        cursor(update_cursor(2, 10, 20)),
        cursor(Command::MoveCursor(UpdateCursor {
            pos: CursorPos {
                scanout_id: 0,
                x: 30,
                y: 40,
                padding: 0,
            },
            ..UpdateCursor::default()
        })),
        cursor(update_cursor(0, 30, 40)),
    ];
    let fences = vec![
        fenced(create_2d(3, Format::R8G8B8A8_UNORM, 32, 32), 1, None),
        fenced(attach(3, &[(0x4_2000, 0x1000)]), 2, None),
        fenced(transfer(3, rect(0, 0, 32, 32), 0), 3, Some((0, 0))),
        fenced(flush(3, rect(0, 0, 32, 32)), 4, Some((7, 63))),
        fenced(transfer(3, rect(0, 0, 33, 32), 0), 5, None),
    ];
    let blob = vec![
        cmd(Command::ResourceCreateBlob(ResourceCreateBlob {
            resource_id: 9,
            blob_mem: BlobMem::GUEST,
            blob_flags: BlobFlags(0),
            nr_entries: 2,
            blob_id: 0,
            size: 0x3000,
            entries: entries(&[(0x6000, 0x2000), (0x4_4000, 0x1000)]),
        })),
        cmd(Command::SetScanoutBlob(SetScanoutBlob {
            r: rect(0, 0, 64, 48),
            scanout_id: 0,
            resource_id: 9,
            width: 64,
            height: 48,
            format: Format::X8R8G8B8_UNORM,
            padding: 0,
            strides: [256, 0, 0, 0],
            offsets: [0; 4],
        })),
        cmd(flush(9, rect(0, 0, 64, 48))),
        cmd(Command::GetCapsetInfo(GetCapsetInfo {
            capset_index: 0,
            padding: 0,
        })),
    ];
    let teardown = vec![
        cmd(create_2d(4, Format::A8B8G8R8_UNORM, 16, 16)),
        cmd(attach(4, &[(0x4_6000, 0x400)])),
        cmd(Command::SetScanout(SetScanout {
            r: rect(0, 0, 16, 16),
            scanout_id: 0,
            resource_id: 4,
        })),
        cmd(transfer(4, rect(0, 0, 16, 16), 0)),
        cmd(Command::ResourceDetachBacking(ResourceDetachBacking {
            resource_id: 4,
            padding: 0,
        })),
        cmd(transfer(4, rect(0, 0, 16, 16), 0)),
        cmd(Command::ResourceUnref(ResourceUnref {
            resource_id: 4,
            padding: 0,
        })),
        cmd(flush(4, rect(0, 0, 16, 16))),
    ];
    let mut everything = boot.clone();
    everything.extend(fences.iter().cloned());
    everything.extend(blob.iter().cloned());
    everything.extend(teardown.iter().cloned());
    vec![
        ("boot", encode(0, &boot)),
        ("fences", encode(1, &fences)),
        ("blob", encode(0, &blob)),
        ("teardown", encode(16 | 3, &teardown)),
        ("everything", encode(15, &everything)),
    ]
}
