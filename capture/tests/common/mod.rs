//! A test front-end that plays QEMU: memfd guest memory shared with the backend, the vhost
//! crate's `Frontend` driving QEMU 10's handshake, split virtqueues laid out in guest memory, a
//! Linux-style command submitter, and QEMU's side of the vhost-user-gpu display socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

pub const MEM_SIZE: usize = 32 << 20;
pub const QUEUE_SIZE: u16 = 64;
/// Where the rings live in guest memory (queue q at RING_BASE + q * RING_STRIDE).
pub const RING_BASE: u64 = 0x1_0000;
pub const RING_STRIDE: u64 = 0x1_0000;
/// Where the bump allocator for buffers starts.
pub const HEAP_BASE: u64 = 0x10_0000;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Guest memory over a memfd.
pub fn guest_memory() -> GuestMemoryMmap<()> {
    let name = c"vgt-test-guest";
    // SAFETY: memfd_create with a valid C string; the returned fd is checked and owned below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(MEM_SIZE as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// One message seen on the display socket (QEMU's side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayMsg {
    pub request: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
}

/// A gate the fake display waits at before answering GET_DISPLAY_INFO (to hold the backend
/// inside a command).
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

/// What the fake QEMU display answers.
#[derive(Debug, Clone)]
pub struct DisplayAnswers {
    pub protocol_features: u64,
    pub width: u32,
    pub height: u32,
    pub edid: Vec<u8>,
    pub display_info_gate: Option<Arc<Gate>>,
    /// After a SCANOUT message, stop reading the socket until this opens (a stalled QEMU).
    pub stall_after_scanout: Option<Arc<Gate>>,
    /// Keep every message in the log (benchmarks turn it off: millions of UPDATEs).
    pub log: bool,
}

impl Default for DisplayAnswers {
    fn default() -> Self {
        DisplayAnswers {
            protocol_features: 1,
            width: 640,
            height: 480,
            edid: (0..128u32).map(|i| (i * 7 + 3) as u8).collect(),
            display_info_gate: None,
            stall_after_scanout: None,
            log: true,
        }
    }
}

fn read_exact_or_eof(s: &mut UnixStream, buf: &mut [u8]) -> bool {
    s.read_exact(buf).is_ok()
}

/// Plays QEMU's display side of the vhost-user-gpu socket in a thread.
pub fn spawn_display(
    mut sock: UnixStream,
    answers: DisplayAnswers,
) -> (Arc<Mutex<Vec<DisplayMsg>>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let h = std::thread::spawn(move || {
        // One receive buffer for every message, as QEMU's allocator effectively gives it
        // (a zeroed 8 MiB Vec per full-screen UPDATE cost this thread a memset and page faults
        // per frame, on the cores the benchmarks measure).
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let mut hdr = [0u8; 12];
            if !read_exact_or_eof(&mut sock, &mut hdr) {
                return;
            }
            let request = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
            let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
            let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap());
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            if !read_exact_or_eof(&mut sock, &mut buf[..size]) {
                return;
            }
            if answers.log {
                out.lock().unwrap().push(DisplayMsg {
                    request,
                    flags,
                    payload: buf[..size].to_vec(),
                });
            }
            if request == 7
                && let Some(g) = &answers.stall_after_scanout
            {
                g.wait();
            }
            let reply: Option<Vec<u8>> = match request {
                1 => Some(answers.protocol_features.to_le_bytes().to_vec()),
                3 => {
                    if let Some(g) = &answers.display_info_gate {
                        g.wait();
                    }
                    let mut r = vec![0u8; 408];
                    r[0..4].copy_from_slice(&0x1101u32.to_le_bytes());
                    r[24 + 8..24 + 12].copy_from_slice(&answers.width.to_le_bytes());
                    r[24 + 12..24 + 16].copy_from_slice(&answers.height.to_le_bytes());
                    r[24 + 16..24 + 20].copy_from_slice(&1u32.to_le_bytes());
                    Some(r)
                }
                11 => {
                    let mut r = vec![0u8; 1056];
                    r[0..4].copy_from_slice(&0x1104u32.to_le_bytes());
                    r[24..28].copy_from_slice(&(answers.edid.len() as u32).to_le_bytes());
                    r[32..32 + answers.edid.len()].copy_from_slice(&answers.edid);
                    Some(r)
                }
                _ => None,
            };
            if let Some(body) = reply {
                let mut msg = Vec::new();
                msg.extend_from_slice(&request.to_le_bytes());
                msg.extend_from_slice(&4u32.to_le_bytes());
                msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
                msg.extend_from_slice(&body);
                if sock.write_all(&msg).is_err() {
                    return;
                }
            }
        }
    });
    (log, h)
}

/// What the [`Ticker`] adds to a call eventfd: above any count of device signals (each adds 1).
const TICK: u64 = 1 << 32;

/// Sleeps in a blocking read of `call` until the device signals (true) or the ticker's tick
/// comes (false); either way the counter is cleared.
fn interrupted(call: &EventFd) -> bool {
    !call.read().unwrap().is_multiple_of(TICK)
}

/// The thread behind [`TestFrontend::ticker`].
pub struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Ticker {
    fn start(queues: &[DriverQueue]) -> Ticker {
        let calls: Vec<EventFd> = queues.iter().map(|q| q.call.try_clone().unwrap()).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                for c in &calls {
                    let _ = c.write(TICK);
                }
            }
        });
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The feature bits a Linux guest's virtio-gpu driver acks when the device offers them, as far
/// as this front-end implements them, with the bit QEMU's vhost-user front-end adds: the
/// driver's feature table (VIRGL 0, EDID 1, RESOURCE_UUID 2, RESOURCE_BLOB 3, CONTEXT_INIT 4),
/// the transport bits of split rings the virtio core keeps (INDIRECT_DESC 28, EVENT_IDX 29,
/// VERSION_1 32, RING_RESET 40) and PROTOCOL_FEATURES 30. (Linux would also keep
/// ACCESS_PLATFORM, RING_PACKED, ORDER_PLATFORM and NOTIFICATION_DATA, which no backend here
/// offers and this front-end does not implement.) Not NOTIFY_ON_EMPTY (24) or LOG_ALL (26),
/// which QEMU's own vhost-user-gpu offers: a real guest's SET_FEATURES through the proxy carried
/// 0x10170000002 against the offer 0x175000002 (docs/PROXY.md, "Features").
pub const LINUX_GUEST_ACKS: u64 = 0x1f | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 32 | 1 << 40;

/// QEMU's per-ring setup as it starts a ring: SET_VRING_NUM, SET_VRING_BASE at `base`,
/// SET_VRING_ADDR (front-end addresses: guest-physical plus `host_base`), SET_VRING_KICK.
fn set_up_ring(frontend: &mut Frontend, q: &DriverQueue, base: u16, host_base: u64) {
    let i = usize::from(q.index);
    frontend.set_vring_num(i, q.size).unwrap();
    frontend.set_vring_base(i, base).unwrap();
    frontend
        .set_vring_addr(
            i,
            &VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: host_base + q.desc,
                used_ring_addr: host_base + q.used,
                avail_ring_addr: host_base + q.avail,
                log_addr: None,
            },
        )
        .unwrap();
    frontend.set_vring_kick(i, &q.kick).unwrap();
}

/// A split virtqueue as the driver sees it.
pub struct DriverQueue {
    pub index: u16,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_desc: u16,
    pub avail_idx: u16,
    pub last_used: u16,
    pub kick: EventFd,
    pub call: EventFd,
    /// Kicks [`TestFrontend::publish`] made (the device asked for them).
    pub kicks: u64,
}

impl DriverQueue {
    /// Where the driver asks for an interrupt (EVENT_IDX): after the available ring.
    fn used_event(&self) -> GuestAddress {
        GuestAddress(self.avail + 4 + 2 * u64::from(self.size))
    }

    /// Where the device asks for a kick (EVENT_IDX): after the used ring.
    fn avail_event(&self) -> GuestAddress {
        GuestAddress(self.used + 4 + 8 * u64::from(self.size))
    }

    fn new(index: u16, size: u16) -> Self {
        let desc = RING_BASE + u64::from(index) * RING_STRIDE;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        DriverQueue {
            index,
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(0).unwrap(),
            kicks: 0,
        }
    }
}

/// A buffer of a chain to be pushed.
#[derive(Debug, Clone)]
pub enum Buf {
    /// Device-readable bytes.
    Out(Vec<u8>),
    /// Device-writable space of this many bytes.
    In(u32),
}

/// A pushed chain and where its writable buffers are.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub queue: u16,
    pub head: u16,
    pub writable: Vec<(u64, u32)>,
    /// The descriptors written (ring or indirect table), for checking the capture.
    pub descriptors: Vec<(u64, u32, u16, u16)>,
}

/// The QEMU stand-in: vhost-user front-end + guest driver + display.
pub struct TestFrontend {
    pub frontend: Frontend,
    pub raw: UnixStream,
    pub mem: GuestMemoryMmap<()>,
    pub queues: Vec<DriverQueue>,
    pub heap: u64,
    pub display_log: Arc<Mutex<Vec<DisplayMsg>>>,
    pub display_thread: Option<JoinHandle<()>>,
    /// QEMU's end of the display socket (a clone of what the display thread reads), for
    /// closing it as QEMU does at a stop or reset.
    pub display_sock: UnixStream,
    /// What the device offered (GET_FEATURES).
    pub features: u64,
    /// What the front-end acked (SET_FEATURES): [`LINUX_GUEST_ACKS`] of the offer.
    pub acked: u64,
    pub config: Vec<u8>,
    pub protocol: VhostUserProtocolFeatures,
    /// GET_MAX_MEM_SLOTS's answer when the memory went in with ADD_MEM_REG.
    pub max_mem_slots: Option<u64>,
    /// Adds [`TICK`] to every call eventfd once a second, so that `wait_used` can sleep in a
    /// plain blocking read and still give up on a missing interrupt (poll(2) with a timeout
    /// made every wait about 5 us slower on this project's VM). Stops when dropped.
    pub ticker: Ticker,
}

impl TestFrontend {
    /// Connects to the backend socket and runs QEMU 10's handshake order.
    pub fn connect(path: &Path, answers: DisplayAnswers) -> TestFrontend {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(20), "connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Self::handshake(stream, answers)
    }

    /// The handshake over an already connected stream.
    pub fn handshake(stream: UnixStream, answers: DisplayAnswers) -> TestFrontend {
        Self::handshake_with(stream, answers, false)
    }

    /// Like [`TestFrontend::connect`], giving the memory with GET_MAX_MEM_SLOTS + ADD_MEM_REG
    /// (CONFIGURE_MEM_SLOTS, which the backend must offer) instead of SET_MEM_TABLE.
    pub fn connect_mem_slots(path: &Path, answers: DisplayAnswers) -> TestFrontend {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(20), "connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        Self::handshake_with(stream, answers, true)
    }

    /// The handshake; `mem_slots` gives the memory with ADD_MEM_REG.
    pub fn handshake_with(
        stream: UnixStream,
        answers: DisplayAnswers,
        mem_slots: bool,
    ) -> TestFrontend {
        let raw = stream.try_clone().unwrap();
        let mut frontend = Frontend::from_stream(stream, 2);
        let mem = guest_memory();
        let features = frontend.get_features().unwrap();
        let offered = frontend.get_protocol_features().unwrap();
        let mut wanted = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK;
        if mem_slots {
            assert!(
                offered.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS),
                "CONFIGURE_MEM_SLOTS not offered: {offered:?}"
            );
            wanted |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        }
        let protocol = offered & wanted;
        frontend.set_protocol_features(protocol).unwrap();
        assert_eq!(frontend.get_queue_num().unwrap(), 2);
        frontend.set_owner().unwrap();
        assert_eq!(frontend.get_features().unwrap(), features);
        let queues: Vec<DriverQueue> = (0..2).map(|i| DriverQueue::new(i, QUEUE_SIZE)).collect();
        let ticker = Ticker::start(&queues);
        for q in &queues {
            frontend
                .set_vring_call(usize::from(q.index), &q.call)
                .unwrap();
            frontend
                .set_vring_err(usize::from(q.index), &q.call)
                .unwrap();
        }
        let mut config = Vec::new();
        for _ in 0..2 {
            let (_, c) = frontend
                .get_config(0, 16, VhostUserConfigFlags::WRITABLE, &[0u8; 16])
                .unwrap();
            config = c;
        }
        // GPU_SET_SOCKET (request 33) is not in the vhost crate's front-end: send it raw.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut hdr = Vec::new();
        hdr.extend_from_slice(&33u32.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        raw.send_with_fds(&[&hdr[..]], &[theirs.as_raw_fd()])
            .unwrap();
        drop(theirs);
        let display_sock = ours.try_clone().unwrap();
        let (display_log, display_thread) = spawn_display(ours, answers);
        for q in &queues {
            frontend
                .set_vring_call(usize::from(q.index), &q.call)
                .unwrap();
        }
        // Ack what a Linux guest under QEMU acks of the offer (LINUX_GUEST_ACKS).
        let acked = features & LINUX_GUEST_ACKS;
        frontend.set_features(acked).unwrap();
        let region = mem.find_region(GuestAddress(0)).unwrap();
        let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
        let mut max_mem_slots = None;
        if mem_slots {
            max_mem_slots = Some(frontend.get_max_mem_slots().unwrap());
            frontend.add_mem_region(&info).unwrap();
        } else {
            frontend.set_mem_table(&[info]).unwrap();
        }
        let host_base = info.userspace_addr;
        for q in &queues {
            set_up_ring(&mut frontend, q, 0, host_base);
        }
        for q in &queues {
            frontend
                .set_vring_enable(usize::from(q.index), true)
                .unwrap();
        }
        TestFrontend {
            frontend,
            raw,
            mem,
            queues,
            heap: HEAP_BASE,
            display_log,
            display_thread: Some(display_thread),
            display_sock,
            features,
            acked,
            config,
            protocol,
            max_mem_slots,
            ticker,
        }
    }

    /// QEMU's vhost stop (guest reset or power-off): disable both rings, read their bases back
    /// (which stops them) and re-point the call fds. Returns the bases.
    pub fn stop(&mut self) -> Vec<u32> {
        for q in &self.queues {
            self.frontend
                .set_vring_enable(usize::from(q.index), false)
                .unwrap();
        }
        let bases = self
            .queues
            .iter()
            .map(|q| self.frontend.get_vring_base(usize::from(q.index)).unwrap())
            .collect();
        for q in &self.queues {
            self.frontend
                .set_vring_call(usize::from(q.index), &q.call)
                .unwrap();
        }
        bases
    }

    /// QEMU's vhost start after [`TestFrontend::stop`] on the same rings (a `cont` after a
    /// `stop`): every ring set up again at the base `stop` returned, kicked and enabled.
    pub fn start(&mut self, bases: &[u32]) {
        let region = self.mem.find_region(GuestAddress(0)).unwrap();
        let host_base = VhostUserMemoryRegionInfo::from_guest_region(region)
            .unwrap()
            .userspace_addr;
        for (q, &base) in self.queues.iter().zip(bases) {
            set_up_ring(
                &mut self.frontend,
                q,
                u16::try_from(base).unwrap(),
                host_base,
            );
            self.frontend
                .set_vring_call(usize::from(q.index), &q.call)
                .unwrap();
        }
        for q in &self.queues {
            self.frontend
                .set_vring_enable(usize::from(q.index), true)
                .unwrap();
        }
    }

    /// A guest reset as the driver sees it, between [`TestFrontend::stop`] and
    /// [`TestFrontend::start`] at base 0: every ring's memory cleared and its indices back to 0
    /// (the driver sets the device up anew).
    pub fn reinit_rings(&mut self) {
        for q in &mut self.queues {
            let len = (q.used + 6 + 8 * u64::from(q.size) - q.desc) as usize;
            self.mem
                .write_slice(&vec![0u8; len], GuestAddress(q.desc))
                .unwrap();
            q.next_desc = 0;
            q.avail_idx = 0;
            q.last_used = 0;
        }
    }

    /// Allocates guest memory for a buffer (16-byte aligned).
    pub fn alloc(&mut self, len: usize) -> u64 {
        let at = self.heap;
        self.heap = (self.heap + len as u64 + 15) & !15;
        assert!(self.heap < MEM_SIZE as u64, "test heap exhausted");
        at
    }

    /// Writes bytes into fresh guest memory and returns the address.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.alloc(bytes.len().max(1));
        self.mem.write_slice(bytes, GuestAddress(at)).unwrap();
        at
    }

    pub fn write_desc(&self, table: u64, i: u16, d: (u64, u32, u16, u16)) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.0.to_le_bytes());
        b[8..12].copy_from_slice(&d.1.to_le_bytes());
        b[12..14].copy_from_slice(&d.2.to_le_bytes());
        b[14..16].copy_from_slice(&d.3.to_le_bytes());
        self.mem
            .write_slice(&b, GuestAddress(table + u64::from(i) * 16))
            .unwrap();
    }

    /// Places `head` in the available ring and kicks.
    ///
    /// Then it kicks only when the device asked for it, as Linux's `virtqueue_kick_prepare`
    /// decides: with EVENT_IDX when the new entry passes the device's `avail_event`, without it
    /// unless the used ring's flags say NO_NOTIFY. A device that fails to ask for a kick it
    /// needs then stalls here as it would under a real guest (the next `wait_used` fails).
    pub fn publish(&mut self, queue: u16, head: u16) {
        self.publish_all(queue, &[head]);
    }

    /// Places `heads` in the available ring with one index update, then kicks as
    /// [`TestFrontend::publish`] does: the device sees them all at once (a guest that queued
    /// several commands before the device ran).
    pub fn publish_all(&mut self, queue: u16, heads: &[u16]) {
        let event_idx = self.event_idx();
        let q = &mut self.queues[usize::from(queue)];
        let old = q.avail_idx;
        for &head in heads {
            let slot = q.avail + 4 + 2 * u64::from(q.avail_idx % q.size);
            self.mem.write_obj(head, GuestAddress(slot)).unwrap();
            q.avail_idx = q.avail_idx.wrapping_add(1);
        }
        fence(Ordering::SeqCst);
        self.mem
            .store(q.avail_idx, GuestAddress(q.avail + 2), Ordering::Release)
            .unwrap();
        // The device's view is read after the new index is visible (a full barrier, as
        // virtqueue_kick_prepare's virtio_mb).
        fence(Ordering::SeqCst);
        let kick = if event_idx {
            let event: u16 = self.mem.load(q.avail_event(), Ordering::Acquire).unwrap();
            q.avail_idx.wrapping_sub(event).wrapping_sub(1) < q.avail_idx.wrapping_sub(old)
        } else {
            let flags: u16 = self
                .mem
                .load(GuestAddress(q.used), Ordering::Acquire)
                .unwrap();
            flags & 1 == 0
        };
        if kick {
            q.kick.write(1).unwrap();
            q.kicks += 1;
        }
    }

    /// Pushes a chain the way the Linux driver does (readable parts, then writable ones),
    /// optionally as one indirect descriptor.
    pub fn push(&mut self, queue: u16, bufs: &[Buf], indirect: bool) -> Pushed {
        let pushed = self.place(queue, bufs, indirect);
        self.publish(queue, pushed.head);
        pushed
    }

    /// Pushes several chains (as [`TestFrontend::push`], direct descriptors) and publishes
    /// them together ([`TestFrontend::publish_all`]).
    pub fn push_all(&mut self, queue: u16, chains: &[Vec<Buf>]) -> Vec<Pushed> {
        let pushed: Vec<Pushed> = chains
            .iter()
            .map(|bufs| self.place(queue, bufs, false))
            .collect();
        let heads: Vec<u16> = pushed.iter().map(|p| p.head).collect();
        self.publish_all(queue, &heads);
        pushed
    }

    /// Writes a chain's buffers and descriptors; returns its head, not yet published.
    fn place(&mut self, queue: u16, bufs: &[Buf], indirect: bool) -> Pushed {
        let mut descs = Vec::new();
        let mut writable = Vec::new();
        for b in bufs {
            match b {
                Buf::Out(bytes) => {
                    let a = self.put(bytes);
                    descs.push((a, bytes.len() as u32, 0u16, 0u16));
                }
                Buf::In(len) => {
                    let a = self.alloc(*len as usize);
                    self.mem
                        .write_slice(&vec![0xEE; *len as usize], GuestAddress(a))
                        .unwrap();
                    descs.push((a, *len, F_WRITE, 0));
                    writable.push((a, *len));
                }
            }
        }
        let n = descs.len();
        let q = &mut self.queues[usize::from(queue)];
        let table_base = q.desc;
        let size = q.size;
        if indirect {
            let table = self.alloc(16 * n);
            for (i, d) in descs.iter_mut().enumerate() {
                if i + 1 < n {
                    d.2 |= F_NEXT;
                    d.3 = (i + 1) as u16;
                }
                self.write_desc(table, i as u16, *d);
            }
            let q = &mut self.queues[usize::from(queue)];
            let head = q.next_desc;
            q.next_desc = (q.next_desc + 1) % size;
            self.write_desc(table_base, head, (table, (16 * n) as u32, F_INDIRECT, 0));
            let mut all = vec![(table, (16 * n) as u32, F_INDIRECT, 0)];
            all.extend(descs);
            Pushed {
                queue,
                head,
                writable,
                descriptors: all,
            }
        } else {
            let q = &mut self.queues[usize::from(queue)];
            let ids: Vec<u16> = (0..n).map(|k| (q.next_desc + k as u16) % size).collect();
            q.next_desc = (q.next_desc + n as u16) % size;
            for (k, d) in descs.iter_mut().enumerate() {
                if k + 1 < n {
                    d.2 |= F_NEXT;
                    d.3 = ids[k + 1];
                }
                self.write_desc(table_base, ids[k], *d);
            }
            Pushed {
                queue,
                head: ids[0],
                writable,
                descriptors: descs,
            }
        }
    }

    /// The device's `avail_event` in the used ring of `queue` (EVENT_IDX: it wants a kick once
    /// the available index passes it).
    pub fn avail_event(&self, queue: u16) -> u16 {
        let q = &self.queues[usize::from(queue)];
        self.mem.load(q.avail_event(), Ordering::Acquire).unwrap()
    }

    /// True when the rings run with EVENT_IDX.
    pub fn event_idx_acked(&self) -> bool {
        self.event_idx()
    }

    /// True when the rings run with EVENT_IDX.
    fn event_idx(&self) -> bool {
        self.acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
    }

    /// Waits for the next used entry of `queue`: (id, len).
    ///
    /// It waits as a guest driver does (Linux's `virtqueue_enable_cb_prepare`, then sleeping
    /// until the interrupt): with EVENT_IDX it asks for an interrupt at the next entry
    /// (`used_event` = the last entry seen), looks at the used index again, then sleeps on the
    /// queue's call eventfd. So nothing spins (on a small machine a spinning front-end takes a
    /// core from the backend it measures), and a used entry that arrives without the interrupt
    /// the driver asked for fails the test: a real guest would never wake up for it.
    pub fn wait_used(&mut self, queue: u16) -> (u32, u32) {
        let start = Instant::now();
        let event_idx = self.event_idx();
        let q = &self.queues[usize::from(queue)];
        let used_idx = |mem: &GuestMemoryMmap<()>| -> u16 {
            mem.load(GuestAddress(q.used + 2), Ordering::Acquire)
                .unwrap()
        };
        while used_idx(&self.mem) == q.last_used {
            if event_idx {
                self.mem
                    .store(q.last_used, q.used_event(), Ordering::Release)
                    .unwrap();
                fence(Ordering::SeqCst);
                if used_idx(&self.mem) != q.last_used {
                    break;
                }
            }
            if interrupted(&q.call) {
                continue;
            }
            if used_idx(&self.mem) != q.last_used {
                // Published without the interrupt (yet): a device signals right after it
                // publishes, so one more tick is plenty.
                assert!(
                    interrupted(&q.call),
                    "queue {queue}: a used entry arrived without the interrupt the driver \
                     asked for"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no used entry on queue {queue}"
            );
        }
        let q = &mut self.queues[usize::from(queue)];
        let slot = q.used + 4 + 8 * u64::from(q.last_used % q.size);
        let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
        q.last_used = q.last_used.wrapping_add(1);
        (id, len)
    }

    /// True when no used entry arrives within `wait`.
    pub fn no_used_within(&self, queue: u16, wait: Duration) -> bool {
        let q = &self.queues[usize::from(queue)];
        std::thread::sleep(wait);
        let idx: u16 = self.mem.read_obj(GuestAddress(q.used + 2)).unwrap();
        idx == q.last_used
    }

    /// Pushes a command, waits for it, and returns (used_len, response bytes).
    pub fn command(&mut self, queue: u16, bufs: &[Buf], indirect: bool) -> (Pushed, u32, Vec<u8>) {
        let p = self.push(queue, bufs, indirect);
        let (id, len) = self.wait_used(queue);
        assert_eq!(id, u32::from(p.head), "used id is the chain head");
        let mut out = Vec::new();
        let mut left = len as usize;
        for &(a, l) in &p.writable {
            let n = (l as usize).min(left);
            let mut b = vec![0u8; n];
            self.mem.read_slice(&mut b, GuestAddress(a)).unwrap();
            out.extend(b);
            left -= n;
        }
        (p, len, out)
    }

    pub fn display_messages(&self) -> Vec<DisplayMsg> {
        self.display_log.lock().unwrap().clone()
    }

    /// Waits until the display side saw `n` messages.
    pub fn wait_display(&self, n: usize) -> Vec<DisplayMsg> {
        self.wait_display_until(|m| m.len() >= n)
    }

    /// The display messages once `done` holds for them (or after 5 s, whatever they are):
    /// for display traffic that is relayed apart from the queues (the proxy's display thread),
    /// which may arrive after the completion of the command that caused it.
    pub fn wait_display_until(&self, done: impl Fn(&[DisplayMsg]) -> bool) -> Vec<DisplayMsg> {
        let start = Instant::now();
        loop {
            let m = self.display_messages();
            if done(&m) || start.elapsed() > Duration::from_secs(5) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// virtio-gpu request builders (Linux driver layouts).
pub mod gpu {
    pub fn hdr(ty: u32, flags: u32, fence: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&fence.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&[0u8; 4]);
        v
    }

    pub fn with(mut h: Vec<u8>, fields: &[u32]) -> Vec<u8> {
        for f in fields {
            h.extend_from_slice(&f.to_le_bytes());
        }
        h
    }

    pub fn get_display_info() -> Vec<u8> {
        hdr(0x100, 0, 0)
    }
    pub fn get_edid(scanout: u32) -> Vec<u8> {
        with(hdr(0x10a, 0, 0), &[scanout, 0])
    }
    pub fn create_2d(id: u32, format: u32, w: u32, h: u32) -> Vec<u8> {
        with(hdr(0x101, 0, 0), &[id, format, w, h])
    }
    pub fn attach_backing(id: u32, n: u32) -> Vec<u8> {
        with(hdr(0x106, 0, 0), &[id, n])
    }
    pub fn mem_entries(entries: &[(u64, u32)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (a, l) in entries {
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&l.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
        }
        v
    }
    pub fn set_scanout(scanout: u32, id: u32, r: [u32; 4]) -> Vec<u8> {
        with(hdr(0x103, 0, 0), &[r[0], r[1], r[2], r[3], scanout, id])
    }
    pub fn transfer_2d(id: u32, r: [u32; 4], offset: u64, fence: Option<u64>) -> Vec<u8> {
        let (flags, f) = fence.map_or((0, 0), |f| (1, f));
        let mut v = with(hdr(0x105, flags, f), &r);
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }
    pub fn flush(id: u32, r: [u32; 4]) -> Vec<u8> {
        with(hdr(0x104, 0, 0), &[r[0], r[1], r[2], r[3], id, 0])
    }
    pub fn update_cursor(scanout: u32, x: u32, y: u32, id: u32, hx: u32, hy: u32) -> Vec<u8> {
        with(hdr(0x300, 0, 0), &[scanout, x, y, 0, id, hx, hy, 0])
    }
    pub fn move_cursor(scanout: u32, x: u32, y: u32) -> Vec<u8> {
        with(hdr(0x301, 0, 0), &[scanout, x, y, 0, 0, 0, 0, 0])
    }
    pub fn resp_type(resp: &[u8]) -> u32 {
        u32::from_le_bytes(resp[0..4].try_into().unwrap())
    }
}

/// An in-process capture session on a fresh socket, recording into `capture` (a file).
pub struct InProcess {
    pub fe: TestFrontend,
    pub session: vgt_capture::session::Session,
    pub capture: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

/// Starts a session writing `capture.vgt` in a temp dir, and connects the test front-end.
pub fn start_in_process(answers: DisplayAnswers) -> InProcess {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vgpu.sock");
    let capture = dir.path().join("capture.vgt");
    let listener = UnixListener::bind(&sock).unwrap();
    let client = UnixStream::connect(&sock).unwrap();
    let (server, _) = listener.accept().unwrap();
    let sink =
        vgt_capture::sink::open_file(&capture, vgt_capture::server::SyncMode::CrashSafe).unwrap();
    let recorder = Arc::new(vgt_capture::recorder::Recorder::new(sink));
    let config = vgt_capture::session::SessionConfig {
        device: vgt_device::DeviceConfig::default(),
    };
    let session = vgt_capture::session::Session::start(server, recorder, &config).unwrap();
    let fe = TestFrontend::handshake(client, answers);
    InProcess {
        fe,
        session,
        capture,
        dir,
    }
}

impl InProcess {
    /// Disconnects the front-end, ends the session as QEMU's disconnect does, and reads the
    /// finished capture back.
    pub fn finish(self) -> (vgt_format::file::CaptureReader, Vec<vgt_format::Record>) {
        let InProcess {
            fe,
            session,
            capture,
            dir: _dir,
        } = self;
        drop(fe);
        session
            .end(vgt_capture::session::EndReason::Disconnect)
            .unwrap();
        read_capture(&capture)
    }
}

/// Every record of a capture file with its payloads resolved.
pub fn read_capture(path: &Path) -> (vgt_format::file::CaptureReader, Vec<vgt_format::Record>) {
    let reader = vgt_format::file::CaptureReader::open(path).unwrap();
    let records: Vec<vgt_format::Record> = reader.iter().map(|r| r.unwrap().1).collect();
    (reader, records)
}

/// Waits (up to 10 s, else panics with `what`) for the session to say why it should end.
pub fn wait_end(
    session: &vgt_capture::session::Session,
    what: &str,
) -> vgt_capture::session::EndReason {
    let start = std::time::Instant::now();
    loop {
        if let Some(r) = session.signal().end_reason() {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
