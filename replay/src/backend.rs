//! Replay against an external vhost-user GPU backend (`vgt-replay --backend-cmd` / `--backend`).
//!
//! Instead of running each recorded command on vgt-device, replay plays QEMU's part towards a
//! real backend binary (QEMU's `vhost-user-gpu`, rust-vmm's `vhost-device-gpu`, crosvm's, your
//! own): the vhost-user handshake QEMU 10 makes, guest memory in a memfd shared with the
//! backend, split virtqueues in that memory, and QEMU's side of the vhost-user-gpu display
//! socket. Each recorded command goes into the control or cursor queue exactly as the guest laid
//! it out (the recorded descriptors, at their recorded ring indices and guest addresses, indirect
//! tables included), after the guest bytes the capture recorded for it have been written at their
//! addresses. What the backend answers (used-ring entry and response bytes), the fences its
//! completions signal and what it shows on the display socket (SCANOUT, UPDATE pixels, cursor
//! messages) go through the same comparison as a replay on vgt-device. A backend that dies or
//! stops answering ends the replay with a divergence that names the command and quotes what a
//! started backend said on its stderr since its last answer (`backend/stderr.rs`); where the
//! capture recorded a crash on that command, the crash is reported as reproduced.
//!
//! One command is in the rings at a time: replay waits for its used entry (at most
//! [`BackendOptions::timeout`]) before it writes the next one's memory, so the backend never
//! reads a buffer that a later command has already overwritten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use vgt_device::{Completion, DeviceHost, DisplayEvent, FenceInfo};
use vgt_format::CaptureReader;
use vgt_format::record::{CommandRecord, Direction, RecordBody};
use vgt_format::wire::{
    self, CommandType, CtrlHeader, FLAG_FENCE, GpuSocketRequest as R, Request, VhostUserPayload,
    VhostUserRequest,
};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

mod stderr;
use stderr::StderrTail;

/// How long replay waits for the backend to answer one command, by default.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long replay waits for a backend started with a command to listen on its socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The most guest memory (sparse: only written pages cost) replay maps for a backend.
pub const MAX_GUEST_MEMORY: u64 = 1 << 40;

/// Guest memory above the highest recorded address that holds replay's own rings.
const RING_AREA: u64 = 2 << 20;

/// Space for one queue's rings in the ring area.
const RING_STRIDE: u64 = 256 << 10;

/// The largest queue replay lays out (its rings must fit in the 256 KiB it keeps per queue).
pub const MAX_QUEUE_SIZE: u16 = 8192;

/// Queue size used when the capture holds no SET_VRING_NUM (QEMU's virtio-gpu default).
const DEFAULT_QUEUE_SIZE: u16 = 256;

/// The vhost-user-gpu protocol features QEMU answers GET_PROTOCOL_FEATURES with (EDID, DMABUF2),
/// used when the capture recorded no answer.
const QEMU_GPU_PROTOCOL_FEATURES: u64 = 0x3;

/// The most response bytes read back from a chain (the largest response, a capset, is far
/// smaller; a backend may claim any used length).
const MAX_RESPONSE: usize = 16 << 20;

/// Display messages larger than this are a protocol error (an UPDATE of 16384x16384 pixels).
const MAX_DISPLAY_MESSAGE: usize = (16384 * 16384 * 4) + 20;

/// The feature bits a Linux guest under QEMU acks of an offer, when the capture recorded no
/// SET_FEATURES: VIRGL..CONTEXT_INIT, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES, VERSION_1,
/// RING_RESET.
const DEFAULT_ACKS: u64 = 0x1f | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 32 | 1 << 40;

/// vhost-user's PROTOCOL_FEATURES feature bit (rings start disabled; SET_VRING_ENABLE).
const F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Virtqueue descriptor flags.
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
const DESC_INDIRECT: u16 = 4;

/// The vhost-user front-end request that hands over the display socket.
const GPU_SET_SOCKET: u32 = 33;

/// Which backend to replay against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// Connect to a backend already listening on this socket (a backend serves one front-end,
    /// so `--loop` needs [`BackendSpec::Command`]).
    Socket(PathBuf),
    /// Start this shell command for every loop (`sh -c 'exec CMD'`, every `%s` replaced by a
    /// socket path replay chooses) and connect to it.
    Command(String),
}

/// Options of a replay against an external backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOptions {
    /// The backend.
    pub spec: BackendSpec,
    /// How long one command may take before the backend counts as stalled.
    pub timeout: Duration,
}

impl BackendOptions {
    /// Options for `spec` with [`DEFAULT_BACKEND_TIMEOUT`].
    pub fn new(spec: BackendSpec) -> Self {
        BackendOptions {
            spec,
            timeout: DEFAULT_BACKEND_TIMEOUT,
        }
    }
}

/// What replay needs to know about the capture before it connects: one pass over the records.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// One past the highest guest-physical byte a command, its descriptors or a recorded read
    /// touches.
    mem_end: u64,
    /// Queue sizes (recorded SET_VRING_NUM, grown to hold every recorded descriptor index).
    queue_sizes: [u16; 2],
    /// The recorded SET_FEATURES (the last one before the first command).
    acked: Option<u64>,
    /// Answers to display-socket requests a backend makes where the command's window has no
    /// recorded reply (during the handshake, or more often than the original).
    answers: Answers,
}

/// What replay answers a backend's display requests with when the command's window holds no
/// recorded reply: the capture's first reply to the same request (and, for GET_EDID, the same
/// scanout), else what QEMU would answer for the capture's displays.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answers {
    /// (request, scanout for GET_EDID else 0) -> reply payload.
    recorded: HashMap<(u32, u32), Vec<u8>>,
    /// The capture's scanout sizes ([`crate::device_config_for`]).
    scanouts: Vec<(u32, u32)>,
}

impl Answers {
    fn answer(&self, request: u32, scanout: u32) -> Vec<u8> {
        let key = (request, if request == R::GET_EDID.0 { scanout } else { 0 });
        if let Some(b) = self.recorded.get(&key) {
            return b.clone();
        }
        match R(request) {
            R::GET_PROTOCOL_FEATURES => QEMU_GPU_PROTOCOL_FEATURES.to_le_bytes().to_vec(),
            R::GET_DISPLAY_INFO => {
                let mut info = wire::DisplayInfo::default();
                for (m, &(width, height)) in info.pmodes.iter_mut().zip(&self.scanouts) {
                    m.r = wire::Rect {
                        x: 0,
                        y: 0,
                        width,
                        height,
                    };
                    m.enabled = 1;
                }
                wire::Response::new(
                    CtrlHeader::new(wire::ResponseType::OK_DISPLAY_INFO.0),
                    wire::ResponseBody::OkDisplayInfo(info),
                )
                .encode()
            }
            R::GET_EDID => {
                let (w, h) = self
                    .scanouts
                    .get(scanout as usize)
                    .copied()
                    .unwrap_or((0, 0));
                let block = wire::edid::edid_for_mode(w, h, 60, scanout);
                wire::Response::new(
                    CtrlHeader::new(wire::ResponseType::OK_EDID.0),
                    wire::ResponseBody::OkEdid(wire::Edid::from_blob(&block)),
                )
                .encode()
            }
            _ => Vec::new(),
        }
    }
}

impl Plan {
    /// Reads what the plan needs from the capture (stops at the first unreadable record: the
    /// replay reports that damage itself).
    pub(crate) fn scan(reader: &CaptureReader) -> Plan {
        let mut plan = Plan {
            mem_end: 0,
            queue_sizes: [0; 2],
            acked: None,
            answers: Answers {
                recorded: HashMap::new(),
                scanouts: crate::device_config_for(reader).scanouts,
            },
        };
        let mut edid_scanout = 0;
        let mut need = [0u32; 2];
        let mut commands = false;
        for item in reader.iter() {
            let Ok((_, record)) = item else { break };
            match record.body {
                RecordBody::Command(c) => {
                    commands = true;
                    for d in &c.descriptors {
                        plan.mem_end = plan.mem_end.max(d.addr.saturating_add(u64::from(d.len)));
                    }
                    if let Some(n) = need.get_mut(usize::from(c.queue)) {
                        *n = (*n).max(max_ring_index(&c) + 1);
                    }
                }
                RecordBody::MemoryRead(r) => {
                    plan.mem_end = plan.mem_end.max(r.addr.saturating_add(r.data.len()));
                }
                RecordBody::VhostUser(m) if m.direction == Direction::FrontToBack => {
                    let req = VhostUserRequest(m.request);
                    let Ok(bytes) = reader.read_payload(&m.payload) else {
                        continue;
                    };
                    match wire::decode_vhost_user_payload(req, false, &bytes) {
                        Ok(VhostUserPayload::VringState(s))
                            if req == VhostUserRequest::SET_VRING_NUM =>
                        {
                            if let Some(q) = plan.queue_sizes.get_mut(s.index as usize) {
                                *q = u16::try_from(s.num).unwrap_or(u16::MAX);
                            }
                        }
                        Ok(VhostUserPayload::Features(f))
                            if req == VhostUserRequest::SET_FEATURES && !commands =>
                        {
                            plan.acked = Some(f);
                        }
                        _ => {}
                    }
                }
                RecordBody::GpuSocket(g)
                    if g.direction == Direction::BackendRequest && g.request == R::GET_EDID.0 =>
                {
                    if let Ok(bytes) = reader.read_payload(&g.payload) {
                        edid_scanout = u32_at(&bytes, 0);
                    }
                }
                RecordBody::GpuSocket(g) if g.direction == Direction::BackendReply => {
                    let key = (
                        g.request,
                        if g.request == R::GET_EDID.0 {
                            edid_scanout
                        } else {
                            0
                        },
                    );
                    if !plan.answers.recorded.contains_key(&key)
                        && let Ok(bytes) = reader.read_payload(&g.payload)
                    {
                        plan.answers.recorded.insert(key, bytes.into_owned());
                    }
                }
                _ => {}
            }
        }
        for (size, need) in plan.queue_sizes.iter_mut().zip(need) {
            if *size == 0 {
                *size = DEFAULT_QUEUE_SIZE;
            }
            while u32::from(*size) < need && *size < MAX_QUEUE_SIZE {
                *size = size.saturating_mul(2).min(MAX_QUEUE_SIZE);
            }
        }
        plan
    }

    /// Where replay's rings start (above every recorded address) and how much memory it maps.
    fn memory_size(&self) -> Result<(u64, u64), String> {
        let ring_base = self
            .mem_end
            .checked_next_multiple_of(RING_AREA)
            .unwrap_or(u64::MAX);
        let size = ring_base.saturating_add(RING_AREA);
        if size > MAX_GUEST_MEMORY {
            return Err(format!(
                "the capture's guest addresses reach {:#x}: beyond the {} GiB of guest memory replay maps for a backend",
                self.mem_end,
                MAX_GUEST_MEMORY >> 30
            ));
        }
        if let Some(&size) = self.queue_sizes.iter().find(|&&s| s > MAX_QUEUE_SIZE) {
            return Err(format!(
                "queue size {size}: replay against a backend lays out at most {MAX_QUEUE_SIZE}"
            ));
        }
        Ok((ring_base, size))
    }
}

/// The highest ring (not indirect-table) index a recorded chain uses.
fn max_ring_index(c: &CommandRecord) -> u32 {
    let mut max = u32::from(c.head);
    for d in &c.descriptors {
        if d.flags & DESC_INDIRECT != 0 {
            break;
        }
        if d.flags & DESC_NEXT != 0 {
            max = max.max(u32::from(d.next));
        }
    }
    max
}

/// One split virtqueue as replay (the driver) lays it out.
#[derive(Debug)]
struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

impl Ring {
    fn new(base: u64, size: u16) -> std::io::Result<Ring> {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        Ok(Ring {
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The driver's `used_event` word (EVENT_IDX), after the available ring.
    fn used_event(&self) -> GuestAddress {
        GuestAddress(self.avail + 4 + 2 * u64::from(self.size))
    }
}

/// A chain in the rings, waiting for its used entry.
#[derive(Debug)]
struct InFlight {
    token: u64,
    writable: Vec<(u64, u32)>,
    writable_len: u32,
    fence: Option<FenceInfo>,
}

/// Why replay on the backend cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendFailure(pub(crate) String);

/// A connected backend with replay's guest memory, rings and display socket.
pub(crate) struct ExternalBackend {
    /// How it was started or reached, for messages.
    desc: String,
    /// The process replay started (`--backend-cmd`); dropped after the connection closes.
    process: Started,
    frontend: Frontend,
    /// The same connection as `frontend`'s, for GPU_SET_SOCKET and for noticing a hang-up.
    raw: UnixStream,
    mem: GuestMemoryMmap<()>,
    rings: [Ring; 2],
    display: Display,
    answers: Answers,
    in_flight: HashMap<(u16, u16), InFlight>,
    /// Scanout -> resource last set on it (UPDATE messages carry no resource id).
    scanout_resource: HashMap<u32, u32>,
    timeout: Duration,
    /// Display events the backend sent outside any command (during the handshake).
    early: Vec<DisplayEvent>,
    acked: u64,
}

/// QEMU's end of the vhost-user-gpu display socket.
struct Display {
    sock: UnixStream,
    buf: Vec<u8>,
    open: bool,
}

/// One whole display-socket message.
struct DisplayMessage {
    request: u32,
    payload: Vec<u8>,
}

impl Display {
    fn new(sock: UnixStream) -> std::io::Result<Display> {
        sock.set_nonblocking(true)?;
        Ok(Display {
            sock,
            buf: Vec::new(),
            open: true,
        })
    }

    /// Reads everything the socket holds now; false when the backend closed it.
    fn fill(&mut self) -> Result<(), BackendFailure> {
        const CHUNK: usize = 256 << 10;
        while self.open {
            let start = self.buf.len();
            self.buf.resize(start + CHUNK, 0);
            let r = self.sock.read(&mut self.buf[start..]);
            let n = match &r {
                Ok(n) => *n,
                Err(_) => 0,
            };
            self.buf.truncate(start + n);
            match r {
                Ok(0) => self.open = false,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(BackendFailure(format!(
                        "reading the display socket failed: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The next whole message in the buffer.
    fn next(&mut self) -> Result<Option<DisplayMessage>, BackendFailure> {
        let Some(hdr) = self.buf.get(..12) else {
            return Ok(None);
        };
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (request, size) = (word(0), word(8) as usize);
        if size > MAX_DISPLAY_MESSAGE {
            return Err(BackendFailure(format!(
                "the backend sent a display message (request {request}) of {size} bytes, more than any the protocol has"
            )));
        }
        if self.buf.len() < 12 + size {
            return Ok(None);
        }
        let payload = self.buf[12..12 + size].to_vec();
        self.buf.drain(..12 + size);
        Ok(Some(DisplayMessage { request, payload }))
    }

    fn reply(&mut self, request: u32, body: &[u8]) -> Result<(), BackendFailure> {
        let mut msg = Vec::with_capacity(12 + body.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&vgt_format::wire::gpu_socket::FLAG_REPLY.to_le_bytes());
        msg.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        msg.extend_from_slice(body);
        let mut at = 0;
        let start = Instant::now();
        while at < msg.len() {
            match self.sock.write(&msg[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if start.elapsed() > Duration::from_secs(5) {
                        return Err(BackendFailure(
                            "the backend does not read its display socket (a reply could not be written for 5 s)"
                                .to_owned(),
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    return Err(BackendFailure(format!(
                        "writing a display reply failed: {e}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn u32_at(p: &[u8], i: usize) -> u32 {
    p.get(4 * i..4 * i + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// A guest memory of `size` bytes from address 0 in a fresh memfd.
fn guest_memory(size: u64) -> Result<GuestMemoryMmap<()>, String> {
    let name = c"vgt-replay-guest";
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|e| format!("sizing guest memory to {size} bytes: {e}"))?;
    let len = usize::try_from(size).map_err(|_| format!("guest memory of {size} bytes"))?;
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        len,
        Some(FileOffset::new(file, 0)),
    )])
    .map_err(|e| format!("mapping guest memory: {e}"))
}

/// Polls `fds` for input for at most `wait`; returns each one's `revents`.
fn poll_in(fds: &[RawFd], wait: Duration) -> Vec<i16> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs that outlives the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![0; fds.len()];
    }
    p.iter().map(|p| p.revents).collect()
}

impl ExternalBackend {
    /// Starts (or reaches) the backend and makes QEMU 10's handshake with it.
    pub(crate) fn start(opts: &BackendOptions, plan: &Plan) -> Result<ExternalBackend, String> {
        let (ring_base, size) = plan.memory_size()?;
        let mem = guest_memory(size)?;
        // From here an error drops `process`, which ends a started backend and removes its
        // directory.
        let (stream, process, desc) = connect(&opts.spec)?;
        // A backend that stops answering fails the vhost-user call instead of hanging it.
        stream
            .set_read_timeout(Some(opts.timeout))
            .map_err(|e| format!("setting a read timeout: {e}"))?;
        let raw = stream
            .try_clone()
            .map_err(|e| format!("duplicating the backend connection: {e}"))?;
        let frontend = Frontend::from_stream(stream, 2);
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("display socket pair: {e}"))?;
        let ring = |base, size| {
            Ring::new(base, size).map_err(|e| format!("creating eventfds for the rings: {e}"))
        };
        let rings = [
            ring(ring_base, plan.queue_sizes[0])?,
            ring(ring_base + RING_STRIDE, plan.queue_sizes[1])?,
        ];
        let mut b = ExternalBackend {
            desc,
            process,
            frontend,
            raw,
            mem,
            rings,
            display: Display::new(ours).map_err(|e| format!("display socket: {e}"))?,
            answers: plan.answers.clone(),
            in_flight: HashMap::new(),
            scanout_resource: HashMap::new(),
            timeout: opts.timeout,
            early: Vec::new(),
            acked: 0,
        };
        let acked = plan.acked;
        let handshake = b.with_display(|b| b.handshake(acked, &theirs));
        drop(theirs);
        match handshake {
            Ok(()) => Ok(b),
            Err(e) => {
                let why = b.exit_reason();
                Err(format!("{}: handshake: {e}{why}", b.desc))
            }
        }
    }

    /// The backend as the report names it.
    pub(crate) fn describe(&self) -> &str {
        &self.desc
    }

    /// Runs `work` on a thread of its own while this thread serves the display socket (a
    /// backend may ask QEMU for its display, and wait for the answer, while it handles a
    /// vhost-user message).
    fn with_display<T: Send>(
        &mut self,
        work: impl FnOnce(&mut Core<'_>) -> Result<T, String> + Send,
    ) -> Result<T, String> {
        let Self {
            frontend,
            raw,
            mem,
            rings,
            display,
            answers,
            early,
            acked,
            scanout_resource,
            ..
        } = self;
        let mut core = Core {
            frontend,
            raw,
            mem,
            rings,
            acked,
        };
        std::thread::scope(|s| {
            let worker = s.spawn(move || work(&mut core));
            let mut replies = VecDeque::new();
            let mut sink = EarlyEvents { events: early };
            let mut failure = None;
            while !worker.is_finished() {
                let r = poll_in(&[display.sock.as_raw_fd()], Duration::from_millis(5));
                if r.first().is_some_and(|&r| r != 0) && failure.is_none() {
                    failure = serve_display(
                        display,
                        answers,
                        scanout_resource,
                        &mut replies,
                        &mut sink,
                        0,
                    )
                    .err();
                }
            }
            let result = worker
                .join()
                .unwrap_or_else(|_| Err("the handshake thread panicked".to_owned()));
            match (result, failure) {
                (_, Some(BackendFailure(f))) => Err(f),
                (result, None) => result,
            }
        })
    }

    /// Runs one recorded command on the backend: writes its recorded guest bytes, lays its chain
    /// out as recorded, publishes and kicks it, and serves the display socket until its used
    /// entry comes. Returns the completions (this command's, with its response bytes).
    pub(crate) fn submit(
        &mut self,
        token: u64,
        cmd: &CommandRecord,
        request: &[u8],
        reads: &[(u64, Vec<u8>)],
        replies: &mut VecDeque<(u32, Vec<u8>)>,
        host: &mut dyn DeviceHost,
    ) -> Result<Vec<Completion>, BackendFailure> {
        for e in self.early.drain(..) {
            host.display(e);
        }
        let q = usize::from(cmd.queue);
        if q >= self.rings.len() {
            return Err(BackendFailure(format!(
                "queue {} does not exist (virtio-gpu has 2)",
                cmd.queue
            )));
        }
        for (addr, bytes) in reads {
            self.mem
                .write_slice(bytes, GuestAddress(*addr))
                .map_err(|e| BackendFailure(format!("writing recorded guest memory: {e}")))?;
        }
        let (writable, readable) = self.lay_out(cmd)?;
        let mut rest = request;
        for (addr, len) in readable {
            let n = rest.len().min(len as usize);
            let (now, later) = rest.split_at(n);
            self.write(addr, now)?;
            rest = later;
        }
        // Zeroed as far as a response is read back (a recorded writable descriptor may claim
        // up to 4 GiB, which the memfd would have to allocate).
        let mut budget = MAX_RESPONSE as u64;
        for &(addr, len) in &writable {
            let n = u64::from(len).min(budget);
            self.zero(addr, n)?;
            budget -= n;
        }
        let hdr = CtrlHeader::decode(request).ok();
        let fence = hdr
            .filter(|h| h.flags & FLAG_FENCE != 0)
            .map(|h| FenceInfo {
                flags: h.flags,
                fence_id: h.fence_id,
                ctx_id: h.ctx_id,
                ring_idx: h.ring_idx,
            });
        // The display socket names no resource: remember what the command shows.
        let cursor_resource = match Request::decode(request).map(|r| r.command) {
            Ok(wire::Command::SetScanout(s)) => {
                self.scanout_resource.insert(s.scanout_id, s.resource_id);
                0
            }
            Ok(wire::Command::UpdateCursor(c)) => c.resource_id,
            _ => 0,
        };
        if self.in_flight.contains_key(&(cmd.queue, cmd.head)) {
            return Err(BackendFailure(format!(
                "descriptor {} of queue {} is still in flight from an earlier command",
                cmd.head, cmd.queue
            )));
        }
        self.in_flight.insert(
            (cmd.queue, cmd.head),
            InFlight {
                token,
                writable,
                writable_len: cmd.writable_len,
                fence,
            },
        );
        self.publish(q, cmd.head)?;
        let mut done = Vec::new();
        let deadline = Instant::now() + self.timeout;
        loop {
            self.collect_used(&mut done, host)?;
            if done.iter().any(|c: &Completion| c.token == token) {
                break;
            }
            if Instant::now() > deadline {
                let name = hdr.map_or_else(
                    || "a command".to_owned(),
                    |h| {
                        CommandType(h.type_)
                            .name()
                            .unwrap_or("a command")
                            .to_owned()
                    },
                );
                return Err(BackendFailure(format!(
                    "the backend did not complete {name} within {} ms{}",
                    self.timeout.as_millis(),
                    self.exit_reason()
                )));
            }
            // A closed display socket is polled as -1, which poll(2) skips.
            let fds = [
                if self.display.open {
                    self.display.sock.as_raw_fd()
                } else {
                    -1
                },
                self.rings[0].call.as_raw_fd(),
                self.rings[1].call.as_raw_fd(),
                self.raw.as_raw_fd(),
            ];
            let ready = poll_in(&fds, Duration::from_millis(10));
            if ready.first().is_some_and(|&r| r != 0) {
                serve_display(
                    &mut self.display,
                    &self.answers,
                    &mut self.scanout_resource,
                    replies,
                    host,
                    cursor_resource,
                )?;
            }
            for r in &self.rings {
                let _ = r.call.read();
            }
            let main = ready.get(3).copied().unwrap_or(0);
            if main & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 || self.child_exited()
            {
                return Err(BackendFailure(format!(
                    "the backend closed its connection{}",
                    self.exit_reason()
                )));
            }
            if main & libc::POLLIN != 0 {
                // Nothing was asked: a backend speaks on this socket only to answer.
                return Err(BackendFailure(
                    "the backend sent a message nobody asked for on its vhost-user socket"
                        .to_owned(),
                ));
            }
        }
        // Everything the backend sent before it published the entry is in the socket now.
        serve_display(
            &mut self.display,
            &self.answers,
            &mut self.scanout_resource,
            replies,
            host,
            cursor_resource,
        )?;
        if let Some(t) = &self.process.stderr {
            t.answered();
        }
        Ok(done)
    }

    /// The recorded chain written into the rings (ring descriptors at their recorded indices,
    /// an indirect table at its recorded address): (writable, readable) buffers in chain order.
    #[allow(clippy::type_complexity)]
    fn lay_out(
        &mut self,
        cmd: &CommandRecord,
    ) -> Result<(Vec<(u64, u32)>, Vec<(u64, u32)>), BackendFailure> {
        let ring = &self.rings[usize::from(cmd.queue)];
        let (ring_desc, size) = (ring.desc, ring.size);
        let mut writable = Vec::new();
        let mut readable = Vec::new();
        let mut table: Option<(u64, u32)> = None;
        let mut index = cmd.head;
        let mut seen = HashSet::new();
        for d in &cmd.descriptors {
            let at = match table {
                None if index < size => ring_desc + 16 * u64::from(index),
                Some((base, len)) if u64::from(index) * 16 + 16 <= u64::from(len) => {
                    base + 16 * u64::from(index)
                }
                _ => {
                    return Err(BackendFailure(format!(
                        "the recorded chain uses descriptor {index}, outside its {}",
                        if table.is_some() {
                            "indirect table"
                        } else {
                            "queue"
                        }
                    )));
                }
            };
            if !seen.insert(at) {
                return Err(BackendFailure(
                    "the recorded chain uses one descriptor twice".to_owned(),
                ));
            }
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&d.addr.to_le_bytes());
            b[8..12].copy_from_slice(&d.len.to_le_bytes());
            b[12..14].copy_from_slice(&d.flags.to_le_bytes());
            b[14..16].copy_from_slice(&d.next.to_le_bytes());
            self.write(at, &b)?;
            if d.flags & DESC_INDIRECT != 0 && table.is_none() {
                table = Some((d.addr, d.len));
                index = 0;
                continue;
            }
            if d.flags & DESC_WRITE != 0 {
                writable.push((d.addr, d.len));
            } else {
                readable.push((d.addr, d.len));
            }
            index = d.next;
        }
        Ok((writable, readable))
    }

    /// Zeroes `len` bytes at `addr` (a recorded writable descriptor may claim up to 4 GiB).
    fn zero(&self, addr: u64, len: u64) -> Result<(), BackendFailure> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            let at = addr.checked_add(done).ok_or_else(|| {
                BackendFailure(format!("a recorded descriptor at {addr:#x} wraps around"))
            })?;
            // n <= 4096: the cast cannot truncate.
            self.write(at, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), BackendFailure> {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|e| BackendFailure(format!("writing guest memory at {addr:#x}: {e}")))
    }

    /// Puts `head` in the available ring, asks for an interrupt at the next used entry and kicks.
    fn publish(&mut self, q: usize, head: u16) -> Result<(), BackendFailure> {
        let ring = &mut self.rings[q];
        let err = |e: vm_memory::GuestMemoryError| BackendFailure(format!("ring memory: {e}"));
        let slot = ring.avail + 4 + 2 * u64::from(ring.avail_idx % ring.size);
        self.mem.write_obj(head, GuestAddress(slot)).map_err(err)?;
        self.mem
            .store(ring.last_used, ring.used_event(), Ordering::Release)
            .map_err(err)?;
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        fence(Ordering::SeqCst);
        self.mem
            .store(
                ring.avail_idx,
                GuestAddress(ring.avail + 2),
                Ordering::Release,
            )
            .map_err(err)?;
        fence(Ordering::SeqCst);
        ring.kick
            .write(1)
            .map_err(|e| BackendFailure(format!("kicking queue {q}: {e}")))
    }

    /// Takes every new used entry of both queues.
    fn collect_used(
        &mut self,
        done: &mut Vec<Completion>,
        host: &mut dyn DeviceHost,
    ) -> Result<(), BackendFailure> {
        let err = |e: vm_memory::GuestMemoryError| BackendFailure(format!("ring memory: {e}"));
        for q in 0..self.rings.len() {
            loop {
                let ring = &self.rings[q];
                let idx: u16 = self
                    .mem
                    .load(GuestAddress(ring.used + 2), Ordering::Acquire)
                    .map_err(err)?;
                if idx == ring.last_used {
                    break;
                }
                let slot = ring.used + 4 + 8 * u64::from(ring.last_used % ring.size);
                let id: u32 = self.mem.read_obj(GuestAddress(slot)).map_err(err)?;
                let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).map_err(err)?;
                self.rings[q].last_used = self.rings[q].last_used.wrapping_add(1);
                let key = (q as u16, u16::try_from(id).unwrap_or(u16::MAX));
                let Some(f) = self.in_flight.remove(&key) else {
                    return Err(BackendFailure(format!(
                        "the backend put descriptor {id} in the used ring of queue {q}, which starts no chain in flight"
                    )));
                };
                let mut response = Vec::new();
                // The backend's used length, within the chain's writable bytes and what any
                // response can be.
                let mut left = (len.min(f.writable_len) as usize).min(MAX_RESPONSE);
                for (addr, dlen) in &f.writable {
                    let n = left.min(*dlen as usize);
                    let mut part = vec![0u8; n];
                    self.mem
                        .read_slice(&mut part, GuestAddress(*addr))
                        .map_err(err)?;
                    response.extend_from_slice(&part);
                    left -= n;
                }
                if let Some(fence) = f.fence {
                    host.fence_signalled(fence);
                }
                done.push(Completion {
                    token: f.token,
                    response,
                });
            }
        }
        Ok(())
    }

    /// QEMU's vhost stop and start around a guest reset: rings disabled and stopped
    /// (GET_VRING_BASE), a new display socket, the rings set up again from index 0.
    pub(crate) fn reset(&mut self) -> Result<(), BackendFailure> {
        self.in_flight.clear();
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| BackendFailure(format!("display socket pair: {e}")))?;
        // QEMU tears the display socket down at a reset (a backend takes a new one only once
        // it has seen the old one close), then hands over a fresh one at DRIVER_OK.
        let _ = self.display.sock.shutdown(std::net::Shutdown::Both);
        self.display =
            Display::new(ours).map_err(|e| BackendFailure(format!("display socket: {e}")))?;
        let r = self.with_display(move |c| c.restart(&theirs));
        r.map_err(|e| BackendFailure(format!("resetting the backend: {e}")))
    }

    fn child_exited(&mut self) -> bool {
        self.process
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// " (process killed by signal N)" and the like, for a started backend that ended (waits up
    /// to 2 s for it to), with what it said on stderr since its last answer.
    fn exit_reason(&mut self) -> String {
        let Some(child) = self.process.child.as_mut() else {
            return String::new();
        };
        let start = Instant::now();
        let mut status = None;
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(st)) = child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                status = Some(match (st.code(), st.signal()) {
                    (_, Some(sig)) => format!("process killed by signal {sig}{}", signal_name(sig)),
                    (Some(code), _) => format!("process exit status {code}"),
                    _ => "process ended".to_owned(),
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let exited = status.is_some();
        let status = status.unwrap_or_else(|| "process still running".to_owned());
        match self
            .process
            .stderr
            .as_ref()
            .and_then(|t| t.last_words(exited))
        {
            Some(words) => format!(" ({status}; {words})"),
            None => format!(" ({status})"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => ", SIGABRT",
        libc::SIGSEGV => ", SIGSEGV",
        libc::SIGBUS => ", SIGBUS",
        libc::SIGKILL => ", SIGKILL",
        libc::SIGILL => ", SIGILL",
        libc::SIGFPE => ", SIGFPE",
        libc::SIGTERM => ", SIGTERM",
        _ => "",
    }
}

impl Drop for ExternalBackend {
    fn drop(&mut self) {
        // Closing the connection ends the backend (the ones above exit when their front-end
        // goes); `process`, dropped next, kills one that does not.
        let _ = self.raw.shutdown(std::net::Shutdown::Both);
        let _ = self.display.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// A backend process replay started and the directory of its socket. Dropping it gives the
/// process 2 s to end by itself, kills it if it has not, and removes the directory.
#[derive(Debug, Default)]
struct Started {
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// Its stderr, copied through and kept for failure messages.
    stderr: Option<StderrTail>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(2) {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The parts of an [`ExternalBackend`] the vhost-user side needs, lent to a worker thread.
struct Core<'a> {
    frontend: &'a mut Frontend,
    raw: &'a mut UnixStream,
    mem: &'a mut GuestMemoryMmap<()>,
    rings: &'a mut [Ring; 2],
    acked: &'a mut u64,
}

impl Core<'_> {
    /// QEMU 10's handshake (the order in the samples' vhost-user records).
    fn handshake(&mut self, acked: Option<u64>, display: &UnixStream) -> Result<(), String> {
        let e = |what: &str| {
            let what = what.to_owned();
            move |err: vhost::Error| format!("{what}: {err}")
        };
        let f = &mut *self.frontend;
        let offered = f.get_features().map_err(e("GET_FEATURES"))?;
        let mut protocol = VhostUserProtocolFeatures::empty();
        if offered & F_PROTOCOL_FEATURES != 0 {
            let pf = f
                .get_protocol_features()
                .map_err(e("GET_PROTOCOL_FEATURES"))?;
            protocol = pf
                & (VhostUserProtocolFeatures::MQ
                    | VhostUserProtocolFeatures::CONFIG
                    | VhostUserProtocolFeatures::REPLY_ACK);
            f.set_protocol_features(protocol)
                .map_err(e("SET_PROTOCOL_FEATURES"))?;
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                let n = f.get_queue_num().map_err(e("GET_QUEUE_NUM"))?;
                if n < 2 {
                    return Err(format!("the backend has {n} queue(s); virtio-gpu needs 2"));
                }
            }
        }
        f.set_owner().map_err(e("SET_OWNER"))?;
        f.get_features().map_err(e("GET_FEATURES"))?;
        for (i, r) in self.rings.iter().enumerate() {
            f.set_vring_call(i, &r.call).map_err(e("SET_VRING_CALL"))?;
            f.set_vring_err(i, &r.call).map_err(e("SET_VRING_ERR"))?;
        }
        if protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            f.get_config(0, 16, VhostUserConfigFlags::WRITABLE, &[0u8; 16])
                .map_err(e("GET_CONFIG"))?;
        }
        send_gpu_socket(self.raw, display)?;
        for (i, r) in self.rings.iter().enumerate() {
            f.set_vring_call(i, &r.call).map_err(e("SET_VRING_CALL"))?;
        }
        let acked = acked.unwrap_or(DEFAULT_ACKS) & offered;
        *self.acked = acked;
        f.set_features(acked).map_err(e("SET_FEATURES"))?;
        let region = self
            .mem
            .find_region(GuestAddress(0))
            .ok_or("guest memory has no region at 0")?;
        let info = VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(|err| format!("describing guest memory: {err}"))?;
        f.set_mem_table(&[info]).map_err(e("SET_MEM_TABLE"))?;
        let host = info.userspace_addr;
        for (i, r) in self.rings.iter().enumerate() {
            set_up_ring(f, i, r, host)?;
        }
        if acked & F_PROTOCOL_FEATURES != 0 {
            for i in 0..self.rings.len() {
                f.set_vring_enable(i, true).map_err(e("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// The restart of [`ExternalBackend::reset`].
    fn restart(&mut self, display: &UnixStream) -> Result<(), String> {
        let e = |what: &'static str| move |err: vhost::Error| format!("{what}: {err}");
        let f = &mut *self.frontend;
        let enable = *self.acked & F_PROTOCOL_FEATURES != 0;
        for i in 0..self.rings.len() {
            if enable {
                f.set_vring_enable(i, false)
                    .map_err(e("SET_VRING_ENABLE"))?;
            }
        }
        for i in 0..self.rings.len() {
            f.get_vring_base(i).map_err(e("GET_VRING_BASE"))?;
        }
        send_gpu_socket(self.raw, display)?;
        let region = self
            .mem
            .find_region(GuestAddress(0))
            .ok_or("guest memory has no region at 0")?;
        let info = VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(|err| format!("describing guest memory: {err}"))?;
        let host = info.userspace_addr;
        for (i, r) in self.rings.iter_mut().enumerate() {
            let len = usize::try_from(r.used + 6 + 8 * u64::from(r.size) - r.desc).unwrap_or(0);
            self.mem
                .write_slice(&vec![0u8; len], GuestAddress(r.desc))
                .map_err(|err| format!("clearing ring {i}: {err}"))?;
            r.avail_idx = 0;
            r.last_used = 0;
            f.set_vring_call(i, &r.call).map_err(e("SET_VRING_CALL"))?;
            set_up_ring(f, i, r, host)?;
        }
        if enable {
            for i in 0..self.rings.len() {
                f.set_vring_enable(i, true).map_err(e("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }
}

/// QEMU's per-ring start: SET_VRING_NUM, SET_VRING_BASE 0, SET_VRING_ADDR (front-end
/// addresses), SET_VRING_KICK.
fn set_up_ring(f: &mut Frontend, i: usize, r: &Ring, host: u64) -> Result<(), String> {
    let e = |what: &'static str| move |err: vhost::Error| format!("{what}: {err}");
    f.set_vring_num(i, r.size).map_err(e("SET_VRING_NUM"))?;
    f.set_vring_base(i, 0).map_err(e("SET_VRING_BASE"))?;
    f.set_vring_addr(
        i,
        &VringConfigData {
            queue_max_size: r.size,
            queue_size: r.size,
            flags: 0,
            desc_table_addr: host + r.desc,
            used_ring_addr: host + r.used,
            avail_ring_addr: host + r.avail,
            log_addr: None,
        },
    )
    .map_err(e("SET_VRING_ADDR"))?;
    f.set_vring_kick(i, &r.kick).map_err(e("SET_VRING_KICK"))
}

/// GPU_SET_SOCKET (not in the vhost crate's front-end): the header and the backend's end of
/// the display socket.
fn send_gpu_socket(raw: &UnixStream, display: &UnixStream) -> Result<(), String> {
    let mut hdr = [0u8; 12];
    hdr[0..4].copy_from_slice(&GPU_SET_SOCKET.to_le_bytes());
    hdr[4..8].copy_from_slice(&1u32.to_le_bytes());
    raw.send_with_fds(&[&hdr[..]], &[display.as_raw_fd()])
        .map(|_| ())
        .map_err(|e| format!("GPU_SET_SOCKET: {e}"))
}

/// Display events that come outside any command, kept for the first command.
struct EarlyEvents<'a> {
    events: &'a mut Vec<DisplayEvent>,
}

impl DeviceHost for EarlyEvents<'_> {
    fn display(&mut self, event: DisplayEvent) {
        self.events.push(event);
    }
}

/// Reads what the display socket holds, answers the backend's requests (the command's recorded
/// replies first, then the capture's first reply to the same request, then QEMU's defaults) and
/// hands the display output to `host` as the device's display events.
fn serve_display(
    display: &mut Display,
    answers: &Answers,
    scanout_resource: &mut HashMap<u32, u32>,
    replies: &mut VecDeque<(u32, Vec<u8>)>,
    host: &mut dyn DeviceHost,
    cursor_resource: u32,
) -> Result<(), BackendFailure> {
    display.fill()?;
    while let Some(m) = display.next()? {
        let p = &m.payload;
        match R(m.request) {
            R::GET_PROTOCOL_FEATURES | R::GET_DISPLAY_INFO | R::GET_EDID => {
                let body = replies
                    .iter()
                    .position(|(r, _)| *r == m.request)
                    .and_then(|i| replies.remove(i))
                    .map_or_else(|| answers.answer(m.request, u32_at(p, 0)), |(_, b)| b);
                display.reply(m.request, &body)?;
            }
            R::DMABUF_UPDATE => {
                // QEMU answers once its console has flushed; the pixels of a dmabuf are not
                // read here.
                display.reply(m.request, &[])?;
            }
            R::SCANOUT if p.len() >= 12 => host.display(DisplayEvent::Scanout {
                scanout_id: u32_at(p, 0),
                width: u32_at(p, 1),
                height: u32_at(p, 2),
            }),
            R::DMABUF_SCANOUT | R::DMABUF_SCANOUT2 if p.len() >= 20 => {
                host.display(DisplayEvent::Scanout {
                    scanout_id: u32_at(p, 0),
                    width: u32_at(p, 3),
                    height: u32_at(p, 4),
                });
            }
            R::UPDATE if p.len() >= 20 => {
                let (id, x, y, w, h) = (
                    u32_at(p, 0),
                    u32_at(p, 1),
                    u32_at(p, 2),
                    u32_at(p, 3),
                    u32_at(p, 4),
                );
                let need = (w as usize).saturating_mul(h as usize).saturating_mul(4);
                let Some(pixels) = p.get(20..20usize.saturating_add(need)) else {
                    continue;
                };
                host.display(DisplayEvent::Update {
                    scanout_id: id,
                    resource_id: scanout_resource.get(&id).copied().unwrap_or(0),
                    x,
                    y,
                    width: w,
                    height: h,
                    format: vgt_device::display::FRAME_FORMAT,
                    stride: w.saturating_mul(4),
                    pixels: pixels.to_vec(),
                    copy_of_read: None,
                });
            }
            R::CURSOR_POS if p.len() >= 12 => host.display(DisplayEvent::CursorMove {
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 1),
                y: u32_at(p, 2),
            }),
            R::CURSOR_POS_HIDE if p.len() >= 12 => host.display(DisplayEvent::CursorHide {
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 1),
                y: u32_at(p, 2),
            }),
            R::CURSOR_UPDATE => {
                let Some(image) = p
                    .get(20..20 + vgt_device::CURSOR_IMAGE_BYTES)
                    .and_then(|i| {
                        Box::<[u8; vgt_device::CURSOR_IMAGE_BYTES]>::try_from(
                            i.to_vec().into_boxed_slice(),
                        )
                        .ok()
                    })
                else {
                    continue;
                };
                host.display(DisplayEvent::CursorUpdate {
                    scanout_id: u32_at(p, 0),
                    x: u32_at(p, 1),
                    y: u32_at(p, 2),
                    hot_x: u32_at(p, 3),
                    hot_y: u32_at(p, 4),
                    resource_id: cursor_resource,
                    image,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reaches the backend: (connection, the process replay started, description).
fn connect(spec: &BackendSpec) -> Result<(UnixStream, Started, String), String> {
    match spec {
        BackendSpec::Socket(path) => UnixStream::connect(path)
            .map(|s| {
                (
                    s,
                    Started::default(),
                    format!("backend at {}", path.display()),
                )
            })
            .map_err(|e| format!("cannot connect to the backend at {}: {e}", path.display())),
        BackendSpec::Command(cmd) => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vgt-replay-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let path = dir.join("backend.sock");
            let line = cmd.replace("%s", &path.to_string_lossy());
            let mut started = Started {
                child: None,
                dir: Some(dir),
                stderr: None,
            };
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {line}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start backend `{line}`: {e}"))?;
            let (out, err) = (child.stdout.take(), child.stderr.take());
            // Owned by the guard first, so an error below still ends it.
            let child = started.child.insert(child);
            if let Some(pipe) = out {
                stderr::forward(pipe)
                    .map_err(|e| format!("cannot read the backend's stdout: {e}"))?;
            }
            if let Some(pipe) = err {
                started.stderr = Some(
                    StderrTail::spawn(pipe)
                        .map_err(|e| format!("cannot read the backend's stderr: {e}"))?,
                );
            }
            let start = Instant::now();
            loop {
                match UnixStream::connect(&path) {
                    Ok(s) => return Ok((s, started, format!("backend `{line}`"))),
                    Err(e) => {
                        if let Ok(Some(st)) = child.try_wait() {
                            let words = started
                                .stderr
                                .as_ref()
                                .and_then(|t| t.last_words(true))
                                .map_or_else(String::new, |w| format!("; {w}"));
                            return Err(format!(
                                "the backend `{line}` exited ({st}) before listening on {}{words}",
                                path.display()
                            ));
                        }
                        if start.elapsed() > CONNECT_TIMEOUT {
                            return Err(format!(
                                "the backend `{line}` did not listen on {} within {} s: {e}",
                                path.display(),
                                CONNECT_TIMEOUT.as_secs()
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

/// What a backend sends replay, driven by arbitrary bytes (the `replay_backend` fuzz target and
/// its seeds in the tests): display-socket messages (any code, size and payload, split anywhere),
/// used-ring entries (any descriptor id, length and index), chains in flight with their
/// writable buffers, and recorded chains laid out into the rings. A backend is the thing under
/// suspicion: nothing it does may make replay panic or allocate without bound, a completion is
/// only ever one of a chain in flight, and its response never exceeds the chain's writable
/// bytes.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use super::*;
    use vgt_device::display::Framebuffers;
    use vgt_format::record::Descriptor;

    /// Guest memory of the harness (rings at `RING_BASE`).
    const MEM: u64 = 4 << 20;
    const RING_BASE: u64 = 2 << 20;

    /// Op codes (`op % 4`).
    const OP_DISPLAY: u8 = 0;
    const OP_IN_FLIGHT: u8 = 1;
    const OP_USED: u8 = 2;
    const OP_LAY_OUT: u8 = 3;

    /// The display output, composed as the verifier composes it.
    struct Sink {
        fbs: Framebuffers,
    }

    impl DeviceHost for Sink {
        fn display(&mut self, event: DisplayEvent) {
            if !matches!(
                event,
                DisplayEvent::CursorUpdate { .. }
                    | DisplayEvent::CursorMove { .. }
                    | DisplayEvent::CursorHide { .. }
            ) {
                let _ = self.fbs.apply_owned_returning(event);
            }
        }
    }

    struct Input<'a> {
        data: &'a [u8],
    }

    impl Input<'_> {
        fn bytes(&mut self, n: usize) -> &[u8] {
            let n = n.min(self.data.len());
            let (a, b) = self.data.split_at(n);
            self.data = b;
            a
        }
        fn u8(&mut self) -> u8 {
            self.bytes(1).first().copied().unwrap_or(0)
        }
        fn u16(&mut self) -> u16 {
            u16::from(self.u8()) | u16::from(self.u8()) << 8
        }
        fn u32(&mut self) -> u32 {
            u32::from(self.u16()) | u32::from(self.u16()) << 16
        }
    }

    /// A backend without a process: replay's memory, rings and display socket, a vhost-user
    /// connection nobody answers (`_peer` keeps it open).
    fn harness(sizes: [u16; 2]) -> Option<(ExternalBackend, UnixStream, UnixStream)> {
        let mem = guest_memory(MEM).ok()?;
        let (main, peer) = UnixStream::pair().ok()?;
        let raw = main.try_clone().ok()?;
        let (ours, theirs) = UnixStream::pair().ok()?;
        theirs.set_nonblocking(true).ok()?;
        let r0 = Ring::new(RING_BASE, sizes[0]).ok()?;
        let r1 = Ring::new(RING_BASE + RING_STRIDE, sizes[1]).ok()?;
        let b = ExternalBackend {
            desc: "fuzzed backend".to_owned(),
            process: Started::default(),
            frontend: Frontend::from_stream(main, 2),
            raw,
            mem,
            rings: [r0, r1],
            display: Display::new(ours).ok()?,
            answers: Answers::default(),
            in_flight: HashMap::new(),
            scanout_resource: HashMap::new(),
            timeout: Duration::from_millis(1),
            early: Vec::new(),
            acked: 0,
        };
        Some((b, peer, theirs))
    }

    /// What one input did (for the seeds' tests).
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Outcome {
        /// Completions taken from the used rings.
        pub completions: usize,
        /// Scanouts holding a picture at the end.
        pub pictures: usize,
        /// Chains laid out.
        pub laid_out: usize,
        /// Why the input ended early: replay's failure for the backend.
        pub failure: Option<String>,
    }

    /// Runs one input (see the module docs); panics when an invariant breaks.
    pub fn run(data: &[u8]) {
        let _ = run_counting(data);
    }

    /// [`run`], saying what happened.
    pub fn run_counting(data: &[u8]) -> Outcome {
        let mut out = Outcome::default();
        let mut input = Input { data };
        let size = |v: u8| 1u16 << (v % 9); // 1 .. 256
        let sizes = [size(input.u8()), size(input.u8())];
        let Some((mut b, _peer, mut backend_end)) = harness(sizes) else {
            return out;
        };
        let mut sink = Sink {
            fbs: Framebuffers::new(),
        };
        let mut replies = VecDeque::new();
        // token -> (writable bytes, writable_len) of the chains registered in flight.
        let mut registered: HashMap<u64, u64> = HashMap::new();
        let mut steps = 0;
        while !input.data.is_empty() && steps < 256 {
            steps += 1;
            match input.u8() % 4 {
                OP_DISPLAY => {
                    let len = usize::from(input.u16());
                    let bytes = input.bytes(len).to_vec();
                    let _ = backend_end.write(&bytes);
                    let r = serve_display(
                        &mut b.display,
                        &b.answers,
                        &mut b.scanout_resource,
                        &mut replies,
                        &mut sink,
                        0,
                    );
                    // Replay's answers, read as the backend would (and so the socket never
                    // fills).
                    let mut buf = [0u8; 4096];
                    while matches!(backend_end.read(&mut buf), Ok(n) if n > 0) {}
                    if let Err(BackendFailure(f)) = r {
                        out.failure = Some(f);
                        break;
                    }
                }
                OP_IN_FLIGHT => {
                    let q = input.u8() % 2;
                    let head = input.u16() % b.rings[usize::from(q)].size;
                    let token = u64::from(input.u32());
                    let n = input.u8() % 4;
                    let writable: Vec<(u64, u32)> = (0..n)
                        .map(|_| (u64::from(input.u32()) % MEM, u32::from(input.u16())))
                        .collect();
                    let writable_len = input.u32();
                    if b.in_flight.len() < 64 && !registered.contains_key(&token) {
                        let total: u64 = writable.iter().map(|w| u64::from(w.1)).sum();
                        registered.insert(token, total.min(u64::from(writable_len)));
                        b.in_flight.insert(
                            (u16::from(q), head),
                            InFlight {
                                token,
                                writable,
                                writable_len,
                                fence: None,
                            },
                        );
                    }
                }
                OP_USED => {
                    let q = usize::from(input.u8() % 2);
                    let (id, len, step) = (input.u32(), input.u32(), input.u16());
                    let ring = &b.rings[q];
                    let idx: u16 = b
                        .mem
                        .load(GuestAddress(ring.used + 2), Ordering::Acquire)
                        .unwrap_or(0);
                    let slot = ring.used + 4 + 8 * u64::from(idx % ring.size);
                    let _ = b.mem.write_obj(id, GuestAddress(slot));
                    let _ = b.mem.write_obj(len, GuestAddress(slot + 4));
                    // Mostly one entry; sometimes the backend jumps its index.
                    let next = idx.wrapping_add(if step < 0xf000 { 1 } else { step });
                    let _ = b
                        .mem
                        .store(next, GuestAddress(ring.used + 2), Ordering::Release);
                    let mut done = Vec::new();
                    let r = b.collect_used(&mut done, &mut sink);
                    out.completions += done.len();
                    for c in &done {
                        let Some(limit) = registered.remove(&c.token) else {
                            panic!("completion of token {} that was not in flight", c.token);
                        };
                        assert!(
                            c.response.len() as u64 <= limit,
                            "a response of {} bytes from a chain with {limit} writable",
                            c.response.len()
                        );
                    }
                    if let Err(BackendFailure(f)) = r {
                        out.failure = Some(f);
                        break;
                    }
                }
                OP_LAY_OUT => {
                    let queue = u16::from(input.u8() % 2);
                    let head = input.u16();
                    let n = input.u8() % 9;
                    let descriptors: Vec<Descriptor> = (0..n)
                        .map(|_| Descriptor {
                            addr: u64::from(input.u32()) % (MEM + (64 << 10)),
                            len: input.u32(),
                            flags: input.u16() & 7,
                            next: input.u16(),
                        })
                        .collect();
                    let cmd = CommandRecord {
                        queue,
                        head,
                        descriptors: descriptors.clone(),
                        writable_len: 0,
                        request: vgt_format::record::Payload::empty(),
                    };
                    if let Ok((w, r)) = b.lay_out(&cmd) {
                        out.laid_out += 1;
                        assert!(w.len() + r.len() <= descriptors.len());
                        for (addr, len) in w.iter().chain(&r) {
                            assert!(
                                descriptors.iter().any(|d| d.addr == *addr && d.len == *len),
                                "a buffer the chain does not have"
                            );
                        }
                    }
                    let _ = b.zero(u64::from(input.u32()) % MEM, u64::from(input.u16()));
                }
                _ => {}
            }
        }
        out.pictures = (0..16).filter(|&i| sink.fbs.get(i).is_some()).count();
        out
    }

    /// Inputs that reach each operation: display requests, frames and cursors, a completion,
    /// an unknown used entry, chains direct and indirect.
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        fn msg(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
            let mut m = Vec::new();
            m.extend_from_slice(&request.to_le_bytes());
            m.extend_from_slice(&flags.to_le_bytes());
            m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            m.extend_from_slice(payload);
            m
        }
        fn display(bytes: &[u8]) -> Vec<u8> {
            let mut v = vec![OP_DISPLAY];
            v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            v.extend_from_slice(bytes);
            v
        }
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut update = words(&[0, 1, 1, 2, 2]);
        update.extend(std::iter::repeat_n(0xab, 16));
        let mut cursor = words(&[0, 3, 4, 1, 1]);
        cursor.extend(std::iter::repeat_n(0x7f, vgt_device::CURSOR_IMAGE_BYTES));

        let mut frames = vec![6, 4];
        frames.extend(display(&msg(R::GET_PROTOCOL_FEATURES.0, 0, &[])));
        frames.extend(display(&msg(R::GET_DISPLAY_INFO.0, 0, &[])));
        frames.extend(display(&msg(R::GET_EDID.0, 0, &words(&[0]))));
        frames.extend(display(&msg(R::SCANOUT.0, 0, &words(&[0, 4, 4]))));
        // An UPDATE split across two writes.
        let u = msg(R::UPDATE.0, 0, &update);
        frames.extend(display(&u[..15]));
        frames.extend(display(&u[15..]));
        frames.extend(display(&msg(
            R::DMABUF_UPDATE.0,
            0,
            &words(&[0, 0, 0, 4, 4]),
        )));
        frames.extend(display(&msg(99, 0, b"unknown")));

        let mut cursors = vec![0, 0];
        let c = msg(R::CURSOR_UPDATE.0, 0, &cursor);
        for part in c.chunks(4000) {
            cursors.extend(display(part));
        }
        cursors.extend(display(&msg(R::CURSOR_POS.0, 0, &words(&[0, 9, 9]))));
        cursors.extend(display(&msg(R::CURSOR_POS_HIDE.0, 0, &words(&[0, 9, 9]))));

        let mut huge = vec![0, 0];
        huge.extend(display(&[8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]));

        // A chain in flight on queue 0 at head 3, answered with a 24-byte response; then an
        // entry for a head nobody submitted.
        let mut used = vec![6, 4, OP_IN_FLIGHT, 0, 3, 0];
        used.extend_from_slice(&7u32.to_le_bytes());
        used.push(2);
        used.extend_from_slice(&0x1000u32.to_le_bytes());
        used.extend_from_slice(&16u16.to_le_bytes());
        used.extend_from_slice(&0x2000u32.to_le_bytes());
        used.extend_from_slice(&16u16.to_le_bytes());
        used.extend_from_slice(&4096u32.to_le_bytes());
        used.push(OP_USED);
        used.push(0);
        used.extend_from_slice(&3u32.to_le_bytes());
        used.extend_from_slice(&24u32.to_le_bytes());
        used.extend_from_slice(&1u16.to_le_bytes());
        used.push(OP_USED);
        used.push(0);
        used.extend_from_slice(&9u32.to_le_bytes());
        used.extend_from_slice(&24u32.to_le_bytes());
        used.extend_from_slice(&1u16.to_le_bytes());

        let desc = |addr: u32, len: u32, flags: u16, next: u16| {
            let mut d = addr.to_le_bytes().to_vec();
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            d
        };
        let mut chains = vec![6, 4, OP_LAY_OUT, 0];
        chains.extend_from_slice(&5u16.to_le_bytes());
        chains.push(2);
        chains.extend(desc(0x1000, 64, DESC_NEXT, 6));
        chains.extend(desc(0x2000, 24, DESC_WRITE, 0));
        chains.extend_from_slice(&[0; 6]);
        chains.push(OP_LAY_OUT);
        chains.push(1);
        chains.extend_from_slice(&0u16.to_le_bytes());
        chains.push(3);
        chains.extend(desc(0x3000, 32, DESC_INDIRECT, 0));
        chains.extend(desc(0x1000, 64, DESC_NEXT, 1));
        chains.extend(desc(0x2000, 0xffff_ffff, DESC_WRITE, 0));
        chains.extend_from_slice(&0x2000u32.to_le_bytes());
        chains.extend_from_slice(&0xffffu16.to_le_bytes());
        vec![
            ("display", frames),
            ("cursors", cursors),
            ("huge_message", huge),
            ("used", used),
            ("chains", chains),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn backend_seeds_reach_what_they_are_for_and_run_with_cuts() {
        let seeds: HashMap<&str, Vec<u8>> = fuzzing::seeds().into_iter().collect();
        let run = |name: &str| fuzzing::run_counting(&seeds[name]);
        let display = run("display");
        assert_eq!((display.pictures, display.failure), (1, None));
        assert_eq!(run("cursors").failure, None);
        let huge = run("huge_message").failure.unwrap();
        assert!(huge.contains("more than any the protocol has"), "{huge}");
        let used = run("used");
        assert_eq!(used.completions, 1);
        assert!(
            used.failure
                .as_deref()
                .is_some_and(|f| f.contains("descriptor 9") && f.contains("no chain in flight")),
            "{used:?}"
        );
        assert_eq!(run("chains").laid_out, 2);
        // Cuts: every one for the short seeds, every 97th for the long cursor image.
        for (name, seed) in &seeds {
            let step = if seed.len() > 4096 { 97 } else { 1 };
            for cut in (0..=seed.len()).step_by(step) {
                let r = std::panic::catch_unwind(|| fuzzing::run(&seed[..cut]));
                assert!(r.is_ok(), "{name} cut at {cut}");
            }
        }
    }

    #[test]
    fn backend_seeds_on_disk_are_the_generated_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/replay_backend");
        vgt_format::testing::check_seed_files(&dir, &fuzzing::seeds());
    }

    #[test]
    fn plans_refuse_guest_memory_beyond_the_limit_and_grow_queues_to_their_indices() {
        let plan = Plan {
            mem_end: MAX_GUEST_MEMORY,
            queue_sizes: [64, 16],
            acked: None,
            answers: Answers::default(),
        };
        let e = plan.memory_size().unwrap_err();
        assert!(e.contains("beyond the 1024 GiB"), "{e}");
        let plan = Plan {
            mem_end: 0x1234_5678,
            ..plan
        };
        let (rings, size) = plan.memory_size().unwrap();
        assert_eq!(rings, 0x1240_0000);
        assert_eq!(size, 0x1260_0000);
        let c = CommandRecord {
            queue: 0,
            head: 70,
            descriptors: vec![
                vgt_format::record::Descriptor {
                    addr: 0,
                    len: 24,
                    flags: DESC_NEXT,
                    next: 200,
                },
                vgt_format::record::Descriptor {
                    addr: 0,
                    len: 24,
                    flags: DESC_WRITE,
                    next: 0,
                },
            ],
            writable_len: 24,
            request: vgt_format::record::Payload::empty(),
        };
        assert_eq!(max_ring_index(&c), 200);
    }

    #[test]
    fn missing_display_answers_are_what_qemu_gives_for_the_captures_displays() {
        let a = Answers {
            recorded: HashMap::new(),
            scanouts: vec![(1280, 800), (1024, 768)],
        };
        let info = wire::Response::decode(&a.answer(R::GET_DISPLAY_INFO.0, 0)).unwrap();
        let wire::ResponseBody::OkDisplayInfo(info) = info.body else {
            panic!("{info:?}")
        };
        assert_eq!(
            (info.pmodes[1].r.width, info.pmodes[1].r.height),
            (1024, 768)
        );
        assert_eq!(info.pmodes[1].enabled, 1);
        assert_eq!(info.pmodes[2].enabled, 0);
        let edid = wire::Response::decode(&a.answer(R::GET_EDID.0, 1)).unwrap();
        let wire::ResponseBody::OkEdid(e) = edid.body else {
            panic!("{edid:?}")
        };
        let t = wire::edid::parse_detailed_timing(&e.edid[wire::edid::DTD_OFFSET..]).unwrap();
        assert_eq!((t.h_active, t.v_active), (1024, 768));
        assert_eq!(
            a.answer(R::GET_PROTOCOL_FEATURES.0, 0),
            QEMU_GPU_PROTOCOL_FEATURES.to_le_bytes()
        );
        let recorded = Answers {
            recorded: HashMap::from([((R::GET_EDID.0, 1), vec![1, 2, 3])]),
            ..a
        };
        assert_eq!(recorded.answer(R::GET_EDID.0, 1), [1, 2, 3]);
        assert_ne!(recorded.answer(R::GET_EDID.0, 0), [1, 2, 3]);
    }
}
