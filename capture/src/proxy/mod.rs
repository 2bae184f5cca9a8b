//! Proxy mode: vgt-capture sits between QEMU and an existing vhost-user GPU backend, forwards
//! every message both ways (with its file descriptors) and records the same capture file as
//! built-in mode.
//!
//! The backend works on shadow virtqueues that the proxy owns (an extra memfd region appended
//! to the memory table it forwards); the proxy moves chains from the guest's available ring to
//! the shadow ring when the guest kicks and from the shadow used ring to the guest's used ring
//! when the backend calls, so every command is recorded before the backend can see it and every
//! response is recorded before the guest can see it. docs/PROXY.md explains the design.
//!
//! - [`rings`]: guest memory, shadow rings, command/response recording.
//! - [`gpu`]: the vhost-user-gpu display socket relay (GpuSocket, Frame and Cursor records).
//! - [`output`]: a started backend's stdout and stderr, shown and recorded line by line.
//! - [`causes`]: which guest command each display message came from.

pub mod barrier;
pub mod causes;
pub mod dmabuf;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod gpu;
pub mod memslots;
pub mod output;
pub mod rings;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use vgt_format::record::{
    CaptureMode, Direction, LifecycleKind, Payload, RecordBody, SessionStart,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::recorder::Recorder;
use crate::relay::{self, RawMessage};
use crate::server::SyncMode;
use rings::{ProxyState, Region};

/// Where the real backend is.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// Connect to a backend already listening on this socket.
    Socket(PathBuf),
    /// Start this shell command (every `%s` replaced by a socket path the proxy chooses), then
    /// connect to it.
    Command(String),
}

/// Options of `vgt-capture proxy`.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Socket QEMU connects to.
    pub socket: PathBuf,
    /// The real backend.
    pub backend: BackendSpec,
    /// Capture file.
    pub output: PathBuf,
    /// Sync policy.
    pub sync: SyncMode,
    /// Blob compression of the capture file (`--compression`).
    pub compression: vgt_format::file::Compression,
    /// No progress messages.
    pub quiet: bool,
    /// A command unanswered this long is recorded (an Error lifecycle record naming it) and
    /// printed as a stall, once per command (`--stall-warn`; None: never).
    pub stall_warn: Option<Duration>,
}

/// How a proxy run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// QEMU disconnected (or a signal arrived) and the backend ended normally.
    Clean,
    /// The backend crashed or closed the connection while QEMU was connected; the message
    /// names the commands in flight.
    BackendCrashed(String),
    /// QEMU disconnected but the backend then exited with a failure.
    BackendFailed(String),
}

/// vhost-user front-end requests the proxy rewrites.
mod req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_BACKEND_REQ_FD: u32 = 21;
    pub const GPU_SET_SOCKET: u32 = 33;
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    pub const ADD_MEM_REG: u32 = 37;
    pub const REM_MEM_REG: u32 = 38;
}

/// Protocol features the proxy removes, with the reason recorded for each.
pub const STRIPPED_PROTOCOL_FEATURES: &[(u32, &str, &str)] = &[
    (
        1,
        "LOG_SHMFD",
        "dirty logging for migration is not mediated",
    ),
    (8, "PAGEFAULT", "postcopy migration is not mediated"),
    (
        11,
        "HOST_NOTIFIER",
        "the backend would be notified directly by the guest, bypassing the shadow rings",
    ),
    (
        12,
        "INFLIGHT_SHMFD",
        "the inflight region would describe the shadow rings, not the guest's",
    ),
    (
        14,
        "INBAND_NOTIFICATIONS",
        "in-band kicks and calls are not interposed",
    ),
    (17, "XEN_MMAP", "Xen mappings are not supported"),
    (
        19,
        "DEVICE_STATE",
        "device state would hold shadow ring indices",
    ),
    (20, "GET_VRING_BASE_INFLIGHT", "not mediated"),
    (21, "SHMEM", "shared-memory mappings are not mediated"),
    (22, "bit 22", "unknown to the proxy"),
    (23, "bit 23", "unknown to the proxy"),
];

/// Virtio features the proxy removes: ACCESS_PLATFORM (33: IOTLB translation is not
/// mediated) and RING_PACKED (34: the shadow rings are split rings).
pub const STRIPPED_FEATURES: u64 = (1 << 33) | (1 << 34);

fn stripped_protocol_mask() -> u64 {
    STRIPPED_PROTOCOL_FEATURES
        .iter()
        .fold(0, |m, (bit, _, _)| m | (1u64 << bit))
}

/// What the threads of one proxied connection share.
pub struct Shared {
    /// The capture.
    pub recorder: Arc<Recorder>,
    /// Device state.
    pub state: Mutex<ProxyState>,
    /// QEMU closed its connection (a backend EOF after that is normal).
    pub front_closed: AtomicBool,
    /// The backend closed its connection while QEMU was still connected.
    pub backend_crashed: Mutex<Option<String>>,
    /// Session over: the threads stop.
    pub stopping: AtomicBool,
    /// Wakes the queue worker (fd changes, stop).
    pub worker_wake: EventFd,
    /// Wakes the main loop (session end).
    pub main_wake: EventFd,
    /// The backend process when the proxy started it.
    pub child: Mutex<Option<Child>>,
    /// Its stdout and stderr (shown and recorded), when the proxy started it.
    pub output: Option<output::BackendOutput>,
    /// Helper threads started on the fly (display socket, backend request channel).
    pub threads: Mutex<Vec<JoinHandle<()>>>,
    /// The sockets those threads read (shut down at the end so that they return).
    pub sockets: Mutex<Vec<UnixStream>>,
    /// The backend's memory table holds the shadow region (SET_MEM_TABLE rewritten, or the
    /// proxy's own ADD_MEM_REG sent): only then are rings moved to it.
    pub shadow_mapped: AtomicBool,
    /// Where the rings stopped, to tell a guest reset (rings set up again from 0) from a pause
    /// in the capture (the backend is told only what QEMU tells it).
    pub restarts: relay::RingRestarts,
}

impl Shared {
    /// Locks the state (a panic elsewhere does not make it unusable).
    pub fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep_socket(&self, s: &UnixStream) {
        if let Ok(c) = s.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c);
        }
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name.to_owned()).spawn(f) {
            Ok(h) => self
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(h),
            Err(e) => {
                let _ = self.recorder.lifecycle(
                    LifecycleKind::Error,
                    None,
                    None,
                    format!("cannot start thread {name}: {e}"),
                );
            }
        }
    }
}

fn payload_u32(p: &[u8], at: usize) -> u32 {
    p.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn payload_u64(p: &[u8], at: usize) -> u64 {
    p.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn set_payload(msg: &mut RawMessage, payload: Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    msg.header[8..12].copy_from_slice(&len.to_le_bytes());
    msg.payload = payload;
}

/// Rewrites one front-end request before it goes to the backend. Called after it was recorded
/// as QEMU sent it. A message the proxy itself must send first (the shadow region's
/// ADD_MEM_REG) lands in `before`.
fn rewrite_request(shared: &Arc<Shared>, msg: &mut RawMessage, before: &mut Option<RawMessage>) {
    let request = msg.request();
    match request {
        req::SET_FEATURES => {
            shared.lock().acked = payload_u64(&msg.payload, 0);
        }
        req::SET_MEM_TABLE => rewrite_mem_table(shared, msg),
        req::SET_VRING_NUM => {
            let q = payload_u32(&msg.payload, 0) as usize;
            shared.lock().set_num(q, payload_u32(&msg.payload, 4));
        }
        req::SET_VRING_BASE => {
            let q = payload_u32(&msg.payload, 0) as usize;
            shared.lock().set_base(q, payload_u32(&msg.payload, 4));
        }
        req::SET_VRING_ADDR if msg.payload.len() >= 40 => {
            let q = payload_u32(&msg.payload, 0) as usize;
            if !shared.shadow_mapped.load(Ordering::SeqCst) {
                shared.lock().stop_interposing(q);
                let _ = shared.recorder.lifecycle(
                    LifecycleKind::Error,
                    u16::try_from(q).ok(),
                    None,
                    format!("queue {q}: the backend has no shadow region; not interposed"),
                );
                return;
            }
            let desc = payload_u64(&msg.payload, 8);
            let used = payload_u64(&msg.payload, 16);
            let avail = payload_u64(&msg.payload, 24);
            let shadow = shared.lock().set_addr(q, desc, used, avail);
            if let Some((d, a, u)) = shadow {
                let mut p = msg.payload.clone();
                p[8..16].copy_from_slice(&d.to_le_bytes());
                p[16..24].copy_from_slice(&u.to_le_bytes());
                p[24..32].copy_from_slice(&a.to_le_bytes());
                set_payload(msg, p);
            }
        }
        req::GET_VRING_BASE => {
            let q = payload_u32(&msg.payload, 0) as usize;
            let mut st = shared.lock();
            // The ring is still the device's until the reply: leave it asking for kicks (the
            // worker may have turned them off while polling).
            st.arm_guest_kicks(q);
            if let Some(queue) = st.queues.get_mut(q) {
                queue.running = false;
            }
        }
        req::SET_VRING_KICK | req::SET_VRING_CALL => {
            let v = payload_u64(&msg.payload, 0);
            let q = (v & 0xff) as usize;
            let nofd = v & 0x100 != 0;
            let mut st = shared.lock();
            let Some(queue) = st.queues.get_mut(q) else {
                return;
            };
            let theirs = msg.fds.pop().map(File::from);
            let ours = if request == req::SET_VRING_KICK {
                queue.kick_back.try_clone()
            } else {
                queue.call_back.try_clone()
            };
            let ours = match ours {
                Ok(e) => e,
                Err(e) => {
                    drop(st);
                    let _ = shared.recorder.lifecycle(
                        LifecycleKind::Error,
                        Some(q as u16),
                        None,
                        format!("cannot duplicate an eventfd: {e}"),
                    );
                    return;
                }
            };
            if request == req::SET_VRING_KICK {
                if let Some(f) = &theirs {
                    rings::set_nonblocking(f);
                }
                queue.kick_front = theirs;
                queue.kick_gen += 1;
                queue.running = true;
                st.arm_guest_kicks(q);
            } else {
                queue.call_front = theirs;
            }
            // The backend always gets the proxy's eventfd (also for "no fd": the proxy then
            // simply does not signal QEMU, which polls).
            // SAFETY: dup(2) of a descriptor we own; the result is checked and owned below.
            let raw = unsafe { libc::dup(ours.as_raw_fd()) };
            drop(ours);
            if raw < 0 {
                return;
            }
            // SAFETY: `raw` is a fresh descriptor from dup that nothing else owns.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            msg.fds.clear();
            msg.fds.push(fd);
            if nofd {
                let mut p = msg.payload.clone();
                let cleared = v & !0x100;
                p[0..8].copy_from_slice(&cleared.to_le_bytes());
                set_payload(msg, p);
            }
            drop(st);
            let _ = shared.worker_wake.write(1);
        }
        req::SET_BACKEND_REQ_FD => {
            if let Some(qemu_end) = msg.fds.pop() {
                match UnixStream::pair() {
                    Ok((ours, theirs)) => {
                        msg.fds.push(OwnedFd::from(theirs));
                        start_backend_channel(shared, UnixStream::from(qemu_end), ours);
                    }
                    Err(e) => {
                        msg.fds.push(qemu_end);
                        let _ = shared.recorder.lifecycle(
                            LifecycleKind::Error,
                            None,
                            None,
                            format!("backend request channel not interposed: {e}"),
                        );
                    }
                }
            }
        }
        req::GPU_SET_SOCKET => {
            if let Some(qemu_end) = msg.fds.pop() {
                match UnixStream::pair() {
                    Ok((ours, theirs)) => {
                        msg.fds.push(OwnedFd::from(theirs));
                        gpu::start(shared, UnixStream::from(qemu_end), ours);
                    }
                    Err(e) => {
                        msg.fds.push(qemu_end);
                        let _ = shared.recorder.lifecycle(
                            LifecycleKind::Error,
                            None,
                            None,
                            format!("display socket not interposed: {e}"),
                        );
                    }
                }
            }
        }
        req::ADD_MEM_REG => add_mem_reg(shared, msg, before),
        req::REM_MEM_REG => {
            let r = memslots::parse_region(&msg.payload)
                .ok_or_else(|| format!("{}-byte payload", msg.payload.len()))
                .and_then(|r| shared.lock().remove_region(r));
            if let Err(e) = r {
                let _ = shared.recorder.lifecycle(
                    LifecycleKind::Error,
                    None,
                    None,
                    format!("REM_MEM_REG forwarded; the proxy's view is unchanged: {e}"),
                );
            }
        }
        _ => {}
    }
}

/// ADD_MEM_REG: the proxy maps the region too; before QEMU's first region the backend gets
/// the shadow region from the proxy's own ADD_MEM_REG (sent without NEED_REPLY, so no reply
/// comes back that QEMU would not expect). QEMU's message goes on unchanged.
fn add_mem_reg(shared: &Arc<Shared>, msg: &RawMessage, before: &mut Option<RawMessage>) {
    let Some(region) = memslots::parse_region(&msg.payload) else {
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Error,
            None,
            None,
            format!(
                "ADD_MEM_REG with a {}-byte payload forwarded unchanged",
                msg.payload.len()
            ),
        );
        return;
    };
    let mut st = shared.lock();
    let r = match msg.fds.first() {
        Some(fd) if msg.fds.len() == 1 => st.add_region(region, fd),
        _ => Err(format!("{} descriptors, 1 expected", msg.fds.len())),
    };
    if let Err(e) = r {
        drop(st);
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Error,
            None,
            None,
            format!("ADD_MEM_REG forwarded; the proxy cannot read this region: {e}"),
        );
        return;
    }
    if shared.shadow_mapped.load(Ordering::SeqCst) {
        return;
    }
    let shadow = st.shadow_region();
    let fd = st.shadow_file.try_clone();
    drop(st);
    let fd = match fd {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            let _ = shared.recorder.lifecycle(
                LifecycleKind::Error,
                None,
                None,
                format!("dup of the shadow memfd: {e}; queues not interposed"),
            );
            return;
        }
    };
    let mut header = [0u8; relay::HEADER_LEN];
    header[0..4].copy_from_slice(&req::ADD_MEM_REG.to_le_bytes());
    header[4..8].copy_from_slice(&1u32.to_le_bytes());
    let mut own = RawMessage {
        header,
        payload: Vec::new(),
        fds: vec![fd],
    };
    set_payload(&mut own, memslots::region_payload(&shadow));
    *before = Some(own);
    shared.shadow_mapped.store(true, Ordering::SeqCst);
    let _ = shared.recorder.lifecycle(
        LifecycleKind::Connect,
        None,
        None,
        format!(
            "proxy added the shadow-ring region to the backend (ADD_MEM_REG: guest-physical {:#x}, {:#x} bytes, front-end address {:#x})",
            shadow.gpa, shadow.size, shadow.uaddr
        ),
    );
}

fn rewrite_mem_table(shared: &Arc<Shared>, msg: &mut RawMessage) {
    // The table replaces the backend's whole view, the shadow region included.
    shared.shadow_mapped.store(false, Ordering::SeqCst);
    let n = payload_u32(&msg.payload, 0) as usize;
    if msg.payload.len() < 8 + 32 * n || msg.fds.len() != n || n >= 8 {
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Error,
            None,
            None,
            format!(
                "SET_MEM_TABLE with {n} regions, {} bytes and {} fds: forwarded unchanged, queues not interposed",
                msg.payload.len(),
                msg.fds.len()
            ),
        );
        return;
    }
    let regions: Vec<Region> = (0..n)
        .map(|i| {
            let o = 8 + 32 * i;
            Region {
                gpa: payload_u64(&msg.payload, o),
                size: payload_u64(&msg.payload, o + 8),
                uaddr: payload_u64(&msg.payload, o + 16),
                mmap_offset: payload_u64(&msg.payload, o + 24),
            }
        })
        .collect();
    let mut st = shared.lock();
    let extra = match st.set_memory(regions, &msg.fds) {
        Ok(r) => r,
        Err(e) => {
            drop(st);
            let _ = shared.recorder.lifecycle(
                LifecycleKind::Error,
                None,
                None,
                format!("{e}: forwarded unchanged, queues not interposed"),
            );
            return;
        }
    };
    let fd = match st.shadow_file.try_clone() {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            drop(st);
            let _ = shared.recorder.lifecycle(
                LifecycleKind::Error,
                None,
                None,
                format!("dup of the shadow memfd: {e}"),
            );
            return;
        }
    };
    drop(st);
    let mut p = msg.payload[..8 + 32 * n].to_vec();
    p[0..4].copy_from_slice(&((n + 1) as u32).to_le_bytes());
    for v in [extra.gpa, extra.size, extra.uaddr, extra.mmap_offset] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    set_payload(msg, p);
    msg.fds.push(fd);
    shared.shadow_mapped.store(true, Ordering::SeqCst);
}

/// Rewrites one backend reply before QEMU sees it (it is recorded as QEMU sees it).
fn rewrite_reply(shared: &Arc<Shared>, msg: &mut RawMessage) {
    match msg.request() {
        req::GET_PROTOCOL_FEATURES if msg.payload.len() == 8 => {
            let offered = payload_u64(&msg.payload, 0);
            let removed = offered & stripped_protocol_mask();
            if removed != 0 {
                let names: Vec<String> = STRIPPED_PROTOCOL_FEATURES
                    .iter()
                    .filter(|(bit, _, _)| removed & (1 << bit) != 0)
                    .map(|(bit, name, why)| format!("{name} (bit {bit}): {why}"))
                    .collect();
                let _ = shared.recorder.lifecycle(
                    LifecycleKind::Connect,
                    None,
                    None,
                    format!(
                        "proxy removed protocol features {removed:#x} from the backend's {offered:#x}: {}",
                        names.join("; ")
                    ),
                );
                set_payload(msg, (offered & !removed).to_le_bytes().to_vec());
            }
        }
        req::GET_FEATURES if msg.payload.len() == 8 => {
            let offered = payload_u64(&msg.payload, 0);
            let removed = offered & STRIPPED_FEATURES;
            if removed != 0 {
                let _ = shared.recorder.lifecycle(
                    LifecycleKind::Connect,
                    None,
                    None,
                    format!(
                        "proxy removed virtio features {removed:#x} from the backend's {offered:#x}: ACCESS_PLATFORM (IOTLB) and RING_PACKED are not mediated by the split shadow rings"
                    ),
                );
                set_payload(msg, (offered & !removed).to_le_bytes().to_vec());
            }
        }
        req::GET_MAX_MEM_SLOTS if msg.payload.len() == 8 => {
            // The shadow region takes one of the backend's slots.
            let slots = payload_u64(&msg.payload, 0);
            let _ = shared.recorder.lifecycle(
                LifecycleKind::Connect,
                None,
                None,
                format!(
                    "proxy reported {} memory slots for the backend's {slots}: the shadow-ring region uses one",
                    slots.saturating_sub(1)
                ),
            );
            set_payload(msg, slots.saturating_sub(1).to_le_bytes().to_vec());
        }
        req::GET_VRING_BASE => {
            // The backend stopped the ring: whatever it completed reaches the guest first.
            let q = payload_u32(&msg.payload, 0) as usize;
            let mut st = shared.lock();
            let moved = st.take_used(q);
            if moved && let Some(f) = st.queues.get(q).and_then(|x| x.call_front.as_ref()) {
                rings::signal_eventfd(f);
            }
            // From here the guest's rings are the front-end's: the worker leaves them alone.
            if let Some(queue) = st.queues.get_mut(q) {
                queue.handed_back = true;
            }
        }
        _ => {}
    }
}

fn start_backend_channel(shared: &Arc<Shared>, qemu: UnixStream, backend: UnixStream) {
    let (q2, b2) = match (qemu.try_clone(), backend.try_clone()) {
        (Ok(q), Ok(b)) => (q, b),
        _ => return,
    };
    shared.keep_socket(&qemu);
    shared.keep_socket(&backend);
    let s1 = shared.clone();
    shared.spawn("vgt-proxy-breq", move || {
        while let Ok(Some(m)) = relay::read_message(&backend) {
            relay::record(&s1.recorder, Direction::BackendRequest, &m);
            if relay::write_message(&qemu, &m).is_err() {
                break;
            }
        }
        let _ = qemu.shutdown(std::net::Shutdown::Write);
    });
    let s2 = shared.clone();
    shared.spawn("vgt-proxy-brep", move || {
        while let Ok(Some(m)) = relay::read_message(&q2) {
            relay::record(&s2.recorder, Direction::BackendReply, &m);
            if relay::write_message(&b2, &m).is_err() {
                break;
            }
        }
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
}

const TOKEN_WAKE: u64 = u64::MAX;

/// How long the queue worker keeps polling the rings after its last progress while commands
/// are in flight, before it sleeps on the eventfds again (`VGT_PROXY_POLL_US` overrides it; 0
/// turns polling off).
pub const DEFAULT_POLL: Duration = Duration::from_micros(50);

fn env_micros(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, Duration::from_micros)
}

/// Moves the guest's new chains of queue `q` to the shadow ring and kicks the backend if it
/// asked for it. Returns true when chains moved.
fn take_and_kick(st: &mut ProxyState, q: usize) -> bool {
    let Some(old) = st.queues.get(q).map(|x| x.shadow_avail) else {
        return false;
    };
    if !st.take_avail(q) {
        return false;
    }
    if st.needs_kick(q, old) {
        let _ = st.queues[q].kick_back.write(1);
    }
    true
}

/// Moves whatever queue `q` has: new guest chains to the shadow ring (then kicks the backend),
/// the transfers' guest memory into the capture, new completions to the guest (then interrupts
/// QEMU). Returns true when anything moved.
fn step(st: &mut ProxyState, q: usize) -> bool {
    // The backend's completions are recorded first and published after the guest's new chains
    // were taken: the barrier before the chains are published (take_avail's) then also covers
    // the responses, so a pass with work in both directions costs one write, not two.
    let staged = st.stage_used(q);
    let mut moved = staged;
    // take_avail stops after a transfer: record its memory, then take the rest.
    while take_and_kick(st, q) {
        st.record_reads();
        moved = true;
    }
    st.record_reads();
    // Publishes the staged entries too (its barrier has nothing left to write when
    // take_avail's covered them).
    if st.take_used(q) || staged {
        if st.needs_interrupt(q)
            && let Some(f) = &st.queues[q].call_front
        {
            rings::signal_eventfd(f);
        }
        moved = true;
    }
    moved
}

/// How long the queue worker keeps looking for the guest's next chain after the last
/// completion, when the guest has been submitting in bursts (`VGT_PROXY_POLL_IDLE_US`
/// overrides it, at most the poll window; 0 turns it off). A guest that answers its
/// completion with a new command within this time then costs no thread wake-up per command;
/// see [`IdlePoll`] for when it is skipped.
pub const DEFAULT_POLL_IDLE: Duration = Duration::from_micros(30);

/// Adaptive polling for the guest's next chain with nothing in flight. The worker polls for
/// `window` after the last completion only while it is *armed*: a poll that found nothing
/// disarms it (the worker then sleeps at once after each completion), and a guest kick that
/// comes within `window` of the last completion (one polling would have caught) arms it
/// again. A guest issuing bursts is served without wake-ups; an idle guest, or one that
/// submits a frame every 16 ms, pays at most one fruitless window per burst.
#[derive(Debug, Clone)]
pub struct IdlePoll {
    window: Duration,
    armed: bool,
    /// When the worker last went to sleep with nothing in flight: the time of its last
    /// progress.
    since: Option<Instant>,
}

impl IdlePoll {
    /// Idle polling for at most `window` (zero: never).
    pub fn new(window: Duration) -> Self {
        IdlePoll {
            window,
            armed: !window.is_zero(),
            since: None,
        }
    }

    /// How long to poll with nothing in flight now.
    pub fn budget(&self) -> Duration {
        if self.armed {
            self.window
        } else {
            Duration::ZERO
        }
    }

    /// Whether the next idle period will be polled.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// The worker goes to sleep with nothing in flight, `last_progress` being its last
    /// completion; `missed` when it polled its whole budget in vain.
    pub fn sleeping(&mut self, last_progress: Instant, missed: bool) {
        if missed {
            self.armed = false;
        }
        self.since = Some(last_progress);
    }

    /// A guest kick woke the sleeping worker at `now`.
    pub fn kicked(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.armed =
                !self.window.is_zero() && now.saturating_duration_since(since) <= self.window;
        }
    }

    /// The worker went to sleep with commands in flight (the next idle gap is unknown).
    pub fn sleeping_busy(&mut self) {
        self.since = None;
    }
}

/// Busy-polls the rings while commands are in flight, for at most `window` after the last
/// progress, so that a completion (or the guest's next chain) is taken without a thread
/// wake-up; meanwhile the backend's completion interrupts and the guest's kicks are off
/// ([`ProxyState::set_notifications`]: the backend need not make a system call per
/// completion, nor the guest a kick, under QEMU a VM exit, per command). With nothing in flight it polls for the guest's next chain only as
/// long as `idle` allows ([`IdlePoll`]). Yields the CPU between looks so that the backend and
/// the guest keep running on a machine with few cores.
fn busy_poll(shared: &Shared, window: Duration, idle: &mut IdlePoll) {
    let mut last_progress = Instant::now();
    let mut st = shared.lock();
    st.set_notifications(false);
    loop {
        let mut moved = false;
        for q in 0..rings::MAX_QUEUES {
            if st.has_work(q) {
                moved |= step(&mut st, q);
            }
        }
        let busy = !st.in_flight.is_empty();
        if moved {
            drop(st);
            last_progress = Instant::now();
            st = shared.lock();
            continue;
        }
        let elapsed = last_progress.elapsed();
        let budget = if busy { window } else { idle.budget() };
        let done = elapsed >= budget;
        if done || shared.stopping.load(Ordering::Relaxed) {
            // Notifications back on, then one more look: a completion or a chain may have
            // come just before.
            st.set_notifications(true);
            if (0..rings::MAX_QUEUES).any(|q| st.has_work(q))
                && !shared.stopping.load(Ordering::Relaxed)
            {
                st.set_notifications(false);
                last_progress = Instant::now();
                continue;
            }
            if busy {
                idle.sleeping_busy();
            } else {
                idle.sleeping(last_progress, !budget.is_zero());
            }
            return;
        }
        drop(st);
        std::thread::yield_now();
        st = shared.lock();
    }
}

/// The queue worker: waits for guest kicks and backend calls and moves chains. The thread
/// woken by a kick kicks the backend itself, and the one woken by a call interrupts QEMU itself
/// (both are this thread); while commands are in flight it polls the rings for a short while
/// before sleeping again, and after a burst's last completion it keeps looking for the guest's
/// next chain for a short while ([`IdlePoll`]).
fn worker(shared: Arc<Shared>) {
    // Crash-safe: this thread flushes at its barriers instead of after every record.
    barrier::defer_flushes_on_this_thread();
    let window = env_micros("VGT_PROXY_POLL_US", DEFAULT_POLL);
    let mut idle =
        IdlePoll::new(env_micros("VGT_PROXY_POLL_IDLE_US", DEFAULT_POLL_IDLE).min(window));
    let Ok(epoll) = Epoll::new() else {
        let _ = shared
            .recorder
            .lifecycle(LifecycleKind::Error, None, None, "epoll failed");
        return;
    };
    let _ = epoll.ctl(
        ControlOperation::Add,
        shared.worker_wake.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_WAKE),
    );
    let mut kick_registered: Vec<(u64, Option<i32>)> = vec![(0, None); rings::MAX_QUEUES];
    {
        let st = shared.lock();
        for (q, queue) in st.queues.iter().enumerate() {
            let _ = epoll.ctl(
                ControlOperation::Add,
                queue.call_back.as_raw_fd(),
                EpollEvent::new(EventSet::IN, (q * 2 + 1) as u64),
            );
        }
    }
    let mut events = vec![EpollEvent::default(); 32];
    while !shared.stopping.load(Ordering::SeqCst) {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut moved = false;
        let mut st = shared.lock();
        for ev in &events[..n] {
            let token = ev.data();
            if token == TOKEN_WAKE {
                let _ = shared.worker_wake.read();
                for (q, reg) in kick_registered.iter_mut().enumerate() {
                    let Some(queue) = st.queues.get(q) else {
                        continue;
                    };
                    if queue.kick_gen == reg.0 {
                        continue;
                    }
                    if let Some(old) = reg.1.take() {
                        let _ = epoll.ctl(ControlOperation::Delete, old, EpollEvent::default());
                    }
                    reg.0 = queue.kick_gen;
                    if let Some(f) = &queue.kick_front {
                        let fd = f.as_raw_fd();
                        if epoll
                            .ctl(
                                ControlOperation::Add,
                                fd,
                                EpollEvent::new(EventSet::IN, (q * 2) as u64),
                            )
                            .is_ok()
                        {
                            reg.1 = Some(fd);
                        }
                    }
                }
                // A (re)started queue may already hold work.
                for q in 0..rings::MAX_QUEUES {
                    while take_and_kick(&mut st, q) {
                        st.record_reads();
                        moved = true;
                    }
                }
                continue;
            }
            let q = (token / 2) as usize;
            if q >= rings::MAX_QUEUES {
                continue;
            }
            // Clear the eventfd, then take everything the queue holds (both directions: a
            // batch of kicks and calls is served in one pass).
            let kick = token % 2 == 0;
            if kick {
                idle.kicked(Instant::now());
                if let Some(f) = &st.queues[q].kick_front {
                    rings::drain_eventfd(f);
                }
            } else {
                let _ = st.queues[q].call_back.read();
            }
            // A queue the proxy could not interpose: the backend works on the guest's rings
            // and only the notification goes through the proxy's eventfds.
            if st.pass_notification(q, kick) {
                continue;
            }
            moved |= step(&mut st, q);
        }
        drop(st);
        if moved && !window.is_zero() {
            busy_poll(&shared, window, &mut idle);
        }
    }
}

/// How long the proxy waits for the backend's answer to its own GET_FEATURES.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the backend for its virtio features (GET_FEATURES, which any vhost-user back-end
/// answers before SET_OWNER) so that SessionStart can hold what the device offers. This is
/// the one message the proxy sends on its own; it is not recorded as a VhostUser record
/// (QEMU did not send it) and QEMU's own GET_FEATURES follows as usual.
fn query_features(back: &UnixStream) -> Result<u64, String> {
    back.set_read_timeout(Some(FEATURES_TIMEOUT))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let mut header = [0u8; relay::HEADER_LEN];
    header[0..4].copy_from_slice(&req::GET_FEATURES.to_le_bytes());
    header[4..8].copy_from_slice(&1u32.to_le_bytes());
    let ask = RawMessage {
        header,
        payload: Vec::new(),
        fds: Vec::new(),
    };
    let answer = relay::write_message(back, &ask)
        .map_err(|e| format!("sending: {e}"))
        .and_then(|()| relay::read_message(back).map_err(|e| format!("reading the reply: {e}")));
    let _ = back.set_read_timeout(None);
    match answer? {
        None => Err("the backend closed the connection".to_owned()),
        Some(m) if m.request() != req::GET_FEATURES || m.flags() & 0x4 == 0 => Err(format!(
            "the backend answered request {} with flags {:#x}",
            m.request(),
            m.flags()
        )),
        Some(m) => m
            .payload
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("{}-byte reply, 8 expected", m.payload.len())),
    }
}

/// Writes the session start record; `features_offered` is the backend's own GET_FEATURES
/// answer (before the proxy removes anything).
fn session_start(
    recorder: &Recorder,
    renderer: String,
    features_offered: u64,
) -> anyhow::Result<()> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    recorder.append(RecordBody::SessionStart(SessionStart {
        wall_clock_unix_ns: wall,
        tool: "vgt-capture".to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: CaptureMode::Proxy,
        renderer,
        features_offered,
        features_acked: 0,
        protocol_features: 0,
        num_queues: 2,
        queue_sizes: Vec::new(),
        device_config: Payload::empty(),
    }))?;
    Ok(())
}

/// Records (and prints) each command the backend has left unanswered for `limit`, once: a
/// backend that hangs leaves the guest waiting without a word otherwise.
fn warn_stalls(shared: &Arc<Shared>, limit: Duration) {
    let stalled = shared.lock().newly_stalled(Instant::now(), limit);
    if stalled.is_empty() {
        return;
    }
    let status = child_status(shared, Duration::ZERO);
    let answer = shared.lock().last_control_answer;
    let words = last_words(shared, answer);
    for (record, name, queue, head) in stalled {
        let message = format!(
            "the backend has not answered {name} (queue {queue}, head {head}) for {} s{status}{words}",
            limit.as_secs_f64()
        );
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Error,
            Some(queue),
            Some(record),
            message.clone(),
        );
        eprintln!("vgt-capture proxy: #{record}: {message}");
    }
}

/// Describes the in-flight commands and the last completed one, and records the crash.
fn record_backend_gone(shared: &Arc<Shared>, cause: &str) -> String {
    let (in_flight, last) = {
        let mut st = shared.lock();
        st.closed = true;
        // What the backend completed before it died is not in flight: take it first.
        for q in 0..rings::MAX_QUEUES {
            if st.take_used(q)
                && let Some(f) = st.queues.get(q).and_then(|x| x.call_front.as_ref())
            {
                rings::signal_eventfd(f);
            }
        }
        (st.in_flight_sorted(), st.last_completed.clone())
    };
    let status = child_status(shared, Duration::from_secs(2));
    // The backend's last words go in before the crash records.
    if let Some(o) = &shared.output {
        o.drain(OUTPUT_DRAIN);
    }
    let list: Vec<String> = in_flight
        .iter()
        .map(|p| {
            format!(
                "#{} {} (queue {}, head {})",
                p.record, p.name, p.queue, p.head
            )
        })
        .collect();
    let last_text = last
        .as_ref()
        .map_or("none".to_owned(), |(id, name)| format!("#{id} {name}"));
    let answer = shared.lock().last_control_answer;
    let words = last_words(shared, answer);
    let summary = format!(
        "backend {cause}{status}; {} command(s) in flight: {}; last completed: {last_text}{words}",
        in_flight.len(),
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    );
    let _ = shared.recorder.lifecycle(
        LifecycleKind::Crash,
        None,
        last.as_ref().map(|(id, _)| *id),
        summary.clone(),
    );
    for p in &in_flight {
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Crash,
            Some(p.queue),
            Some(p.record),
            format!(
                "in flight when the backend went away: {} (queue {}, head {})",
                p.name, p.queue, p.head
            ),
        );
    }
    summary
}

/// "; its stderr since its last control-queue answer: ..." for a started backend that said
/// something since `answer` (the last command it completed on the control queue); empty
/// otherwise.
fn last_words(shared: &Arc<Shared>, answer: Option<vgt_format::RecordId>) -> String {
    shared
        .output
        .as_ref()
        .and_then(|o| o.last_words(answer))
        .map_or_else(String::new, |w| format!("; {w}"))
}

/// How long the end of a session waits for a started backend's last output to be recorded
/// (it returns as soon as the pipes are empty).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// " (process killed by signal N)" / " (process exit status N)" once the started backend has
/// exited, waiting at most `wait` for it; " (process still running)" after that; empty when
/// the proxy did not start the backend.
fn child_status(shared: &Arc<Shared>, wait: Duration) -> String {
    let mut guard = shared.child.lock().unwrap_or_else(|p| p.into_inner());
    let Some(child) = guard.as_mut() else {
        return String::new();
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            return match (st.code(), st.signal()) {
                (_, Some(sig)) => format!(" (process killed by signal {sig})"),
                (Some(code), _) => format!(" (process exit status {code})"),
                _ => String::new(),
            };
        }
        if start.elapsed() >= wait {
            return " (process still running)".to_owned();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the backend (`--backend-cmd`, its stdout and stderr piped to `output`) or finds its
/// socket, and connects to it.
fn connect_backend(
    spec: &BackendSpec,
    shared_child: &Mutex<Option<Child>>,
    output: &mut Option<output::BackendOutput>,
    dir: &Path,
) -> anyhow::Result<(UnixStream, String)> {
    let (path, desc) = match spec {
        BackendSpec::Socket(p) => (p.clone(), format!("proxy to {}", p.display())),
        BackendSpec::Command(cmd) => {
            let path = dir.join("backend.sock");
            let line = cmd.replace("%s", &path.to_string_lossy());
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {line}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start backend {line:?}"))?;
            *output = Some(output::BackendOutput::start(&mut child));
            *shared_child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
            (path, format!("proxy to `{line}`"))
        }
    };
    let start = Instant::now();
    loop {
        match UnixStream::connect(&path) {
            Ok(s) => return Ok((s, desc)),
            Err(e) => {
                if let Some(child) = shared_child
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                    && let Ok(Some(st)) = child.try_wait()
                {
                    // Its last words first (they name the reason).
                    if let Some(o) = output.as_ref() {
                        o.drain(OUTPUT_DRAIN);
                    }
                    bail!(
                        "the backend exited ({st}) before listening on {}",
                        path.display()
                    );
                }
                if start.elapsed() > Duration::from_secs(20) {
                    bail!("cannot connect to the backend at {}: {e}", path.display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        } else {
            bail!("{} exists and is not a socket", path.display());
        }
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// Runs the proxy for one QEMU connection.
pub fn run(opts: &ProxyOptions) -> anyhow::Result<ProxyOutcome> {
    let (sig_read, sig_write) = UnixStream::pair().context("signal pipe")?;
    sig_read.set_nonblocking(true).context("signal pipe")?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, sig_write.try_clone().context("signal pipe")?)
            .context("cannot install signal handler")?;
    }
    let dir = std::env::temp_dir().join(format!("vgt-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let child: Mutex<Option<Child>> = Mutex::new(None);
    let result = run_inner(opts, &sig_read, &dir, child);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&opts.socket);
    result
}

fn run_inner(
    opts: &ProxyOptions,
    sig_read: &UnixStream,
    dir: &Path,
    child: Mutex<Option<Child>>,
) -> anyhow::Result<ProxyOutcome> {
    let mut output = None;
    let (back, renderer) = match connect_backend(&opts.backend, &child, &mut output, dir) {
        Ok(v) => v,
        Err(e) => {
            if let Some(mut c) = child.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(e);
        }
    };
    // Before QEMU can connect, so that nothing interleaves with QEMU's messages.
    let offered = query_features(&back);
    let listener = bind(&opts.socket)?;
    if !opts.quiet {
        eprintln!(
            "vgt-capture proxy: waiting for QEMU on {} ({renderer})",
            opts.socket.display()
        );
    }
    // Wait for QEMU or a signal.
    let epoll = Epoll::new().context("epoll")?;
    epoll
        .ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 1),
        )
        .context("epoll")?;
    epoll
        .ctl(
            ControlOperation::Add,
            sig_read.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 2),
        )
        .context("epoll")?;
    let mut events = vec![EpollEvent::default(); 4];
    let front = loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll wait"),
        };
        if events[..n].iter().any(|e| e.data() == 2) {
            stop_child(&child);
            return Ok(ProxyOutcome::Clean);
        }
        if events[..n].iter().any(|e| e.data() == 1) {
            break listener.accept().context("accept")?.0;
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&opts.socket);
    // Crash-safe: the mapped file, flushed by the barrier sink (per record on the relay
    // threads, per batch at the queue worker's barriers); each flush is a copy, no write(2).
    let sink = match opts.sync {
        SyncMode::CrashSafe => {
            crate::sink::open_file_flushed_by_caller(&opts.output, opts.compression).and_then(|s| {
                Ok(Box::new(barrier::BarrierSink::new(s)?) as Box<dyn crate::recorder::RecordSink>)
            })
        }
        SyncMode::Buffered => {
            crate::sink::open_file_with(&opts.output, SyncMode::Buffered, opts.compression)
        }
    }
    .with_context(|| format!("cannot create capture file {}", opts.output.display()))?;
    let recorder = Arc::new(Recorder::new(sink));
    session_start(&recorder, renderer, *offered.as_ref().unwrap_or(&0))?;
    if let Err(why) = &offered {
        recorder.lifecycle(
            LifecycleKind::Error,
            None,
            None,
            format!("SessionStart.features_offered is 0: the proxy's GET_FEATURES to the backend failed: {why}"),
        )?;
    }
    recorder.lifecycle(
        LifecycleKind::Connect,
        None,
        None,
        "front-end connected (proxy mode)",
    )?;
    let mut state = ProxyState::new(recorder.clone()).context("shadow rings")?;
    state.flush_at_barriers = opts.sync == SyncMode::CrashSafe;
    let shared = Arc::new(Shared {
        recorder: recorder.clone(),
        state: Mutex::new(state),
        front_closed: AtomicBool::new(false),
        backend_crashed: Mutex::new(None),
        stopping: AtomicBool::new(false),
        worker_wake: EventFd::new(EFD_NONBLOCK).context("eventfd")?,
        main_wake: EventFd::new(EFD_NONBLOCK).context("eventfd")?,
        child,
        output,
        threads: Mutex::new(Vec::new()),
        sockets: Mutex::new(Vec::new()),
        shadow_mapped: AtomicBool::new(false),
        restarts: relay::RingRestarts::default(),
    });
    if let Some(o) = &shared.output {
        let weak = Arc::downgrade(&shared);
        o.attach(
            recorder.clone(),
            Box::new(move || {
                weak.upgrade().map_or((None, None), |s| {
                    let st = s.lock();
                    (st.latest_command(), st.last_control_answer)
                })
            }),
        );
    }
    let outcome = serve(&shared, front, back, sig_read, opts.stall_warn);
    // Stop the helpers and finish the file.
    shared.stopping.store(true, Ordering::SeqCst);
    let _ = shared.worker_wake.write(1);
    shared.lock().record_reads();
    if let Some(o) = &shared.output {
        o.drain(OUTPUT_DRAIN);
    }
    let message = match &outcome {
        ProxyOutcome::Clean => "front-end disconnected",
        ProxyOutcome::BackendCrashed(_) => "backend crashed",
        ProxyOutcome::BackendFailed(_) => "backend failed after the front-end disconnected",
    };
    recorder
        .finish(message)
        .with_context(|| format!("cannot finish capture file {}", opts.output.display()))?;
    if !opts.quiet {
        let s = recorder.stats();
        eprintln!(
            "vgt-capture proxy: finished {}: {} commands, {} frames, {:.1} MB",
            opts.output.display(),
            s.commands,
            s.frames,
            s.file_bytes as f64 / 1e6
        );
    }
    Ok(outcome)
}

fn stop_child(child: &Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // SAFETY: kill(2) with the child's pid and SIGTERM; no memory is involved.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn serve(
    shared: &Arc<Shared>,
    front: UnixStream,
    back: UnixStream,
    sig_read: &UnixStream,
    stall_warn: Option<Duration>,
) -> ProxyOutcome {
    let clone = |s: &UnixStream| s.try_clone();
    let (Ok(f1), Ok(b1), Ok(f2), Ok(b2)) =
        (clone(&front), clone(&back), clone(&front), clone(&back))
    else {
        return ProxyOutcome::BackendCrashed("cannot clone sockets".to_owned());
    };
    let s = shared.clone();
    let worker_thread = std::thread::Builder::new()
        .name("vgt-proxy-queues".to_owned())
        .spawn(move || worker(s))
        .ok();
    // QEMU → backend.
    let s = shared.clone();
    let t_in = std::thread::Builder::new()
        .name("vgt-proxy-in".to_owned())
        .spawn(move || {
            let why = loop {
                match relay::read_message(&f1) {
                    Ok(Some(mut msg)) => {
                        relay::record(&s.recorder, Direction::FrontToBack, &msg);
                        relay::lifecycle_of(&s.recorder, &msg);
                        if let Some((queue, was)) = s.restarts.restarted(&msg) {
                            // Only a record: the backend gets QEMU's messages, nothing more.
                            let _ = s.recorder.lifecycle(
                                LifecycleKind::Reset,
                                Some(queue),
                                None,
                                format!(
                                    "queue {queue} set up again from index 0 after it stopped at {was}: \
                                     the driver reinitialized the device (a guest reset)"
                                ),
                            );
                        }
                        let mut before = None;
                        rewrite_request(&s, &mut msg, &mut before);
                        if let Some(own) = before
                            && let Err(e) = relay::write_message(&b1, &own)
                        {
                            break format!("forwarding to the backend failed: {e}");
                        }
                        if let Err(e) = relay::write_message(&b1, &msg) {
                            break format!("forwarding to the backend failed: {e}");
                        }
                    }
                    Ok(None) => break "front-end closed the connection".to_owned(),
                    Err(e) => break format!("front-end connection failed: {e}"),
                }
            };
            s.front_closed.store(true, Ordering::SeqCst);
            let _ = s
                .recorder
                .lifecycle(LifecycleKind::Disconnect, None, None, why);
            // The backend sees QEMU's disconnect as it would without the proxy.
            let _ = b1.shutdown(std::net::Shutdown::Both);
            let _ = s.main_wake.write(1);
        })
        .ok();
    // Backend → QEMU.
    let s = shared.clone();
    let t_out = std::thread::Builder::new()
        .name("vgt-proxy-out".to_owned())
        .spawn(move || {
            let why = loop {
                match relay::read_message(&b2) {
                    Ok(Some(mut msg)) => {
                        rewrite_reply(&s, &mut msg);
                        s.restarts.stopped(&msg);
                        relay::record(&s.recorder, Direction::BackToFront, &msg);
                        if let Err(e) = relay::write_message(&f2, &msg) {
                            break Some(format!("forwarding to the front-end failed: {e}"));
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(format!("{e}")),
                }
            };
            if !s.front_closed.load(Ordering::SeqCst) && !s.stopping.load(Ordering::SeqCst) {
                let cause = match why {
                    None => "closed the connection".to_owned(),
                    Some(e) => format!("connection failed ({e})"),
                };
                let summary = record_backend_gone(&s, &cause);
                *s.backend_crashed.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
                // QEMU sees the backend go away as it would without the proxy.
                let _ = f2.shutdown(std::net::Shutdown::Both);
            }
            let _ = s.main_wake.write(1);
        })
        .ok();

    let epoll = Epoll::new();
    let mut signalled = false;
    if let Ok(epoll) = &epoll {
        let _ = epoll.ctl(
            ControlOperation::Add,
            shared.main_wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 1),
        );
        let _ = epoll.ctl(
            ControlOperation::Add,
            sig_read.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 2),
        );
        let mut events = vec![EpollEvent::default(); 4];
        let mut front_closed_at: Option<Instant> = None;
        loop {
            let n = match epoll.wait(200, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if events[..n].iter().any(|e| e.data() == 2) {
                signalled = true;
                let _ = shared.recorder.lifecycle(
                    LifecycleKind::Disconnect,
                    None,
                    None,
                    "stopped by signal",
                );
                break;
            }
            let _ = shared.main_wake.read();
            if let Some(limit) = stall_warn {
                warn_stalls(shared, limit);
            }
            if shared
                .backend_crashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                break;
            }
            if t_out.as_ref().is_some_and(|t| t.is_finished())
                && t_in.as_ref().is_some_and(|t| t.is_finished())
            {
                break;
            }
            if shared.front_closed.load(Ordering::SeqCst) {
                // The backend should close its end now; do not wait for ever.
                let at = *front_closed_at.get_or_insert_with(Instant::now);
                if at.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
        }
    }
    shared.stopping.store(true, Ordering::SeqCst);
    let _ = shared.worker_wake.write(1);
    let _ = front.shutdown(std::net::Shutdown::Both);
    let _ = back.shutdown(std::net::Shutdown::Both);
    for t in [t_in, t_out, worker_thread].into_iter().flatten() {
        let _ = t.join();
    }
    let crashed = shared
        .backend_crashed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(summary) = crashed {
        // The display and backend-channel relays end when their sockets close.
        stop_helpers(shared);
        return ProxyOutcome::BackendCrashed(summary);
    }
    // Normal end: the backend exits by itself once QEMU is gone.
    let mut failed = None;
    if signalled {
        stop_child(&shared.child);
    } else if let Some(mut c) = shared
        .child
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        let start = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    if !st.success() {
                        failed = Some(format!(
                            "backend exited with {st} after the front-end disconnected"
                        ));
                    }
                    break;
                }
                Ok(None) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    stop_helpers(shared);
    match failed {
        Some(f) => {
            let _ = shared
                .recorder
                .lifecycle(LifecycleKind::Error, None, None, f.clone());
            ProxyOutcome::BackendFailed(f)
        }
        None => ProxyOutcome::Clean,
    }
}

fn stop_helpers(shared: &Arc<Shared>) {
    for s in shared
        .sockets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    let threads: Vec<JoinHandle<()>> = shared
        .threads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(30);

    #[test]
    fn idle_poll_starts_armed_and_a_fruitless_window_disarms_it() {
        let mut idle = IdlePoll::new(W);
        assert_eq!(idle.budget(), W);
        let t = Instant::now();
        idle.sleeping(t, true);
        assert!(!idle.armed());
        assert_eq!(idle.budget(), Duration::ZERO);
    }

    #[test]
    fn idle_poll_kick_within_the_window_arms_it_and_a_late_kick_does_not() {
        let mut idle = IdlePoll::new(W);
        let t = Instant::now();
        idle.sleeping(t, true);
        // The guest's next chain came 10 us after the last completion: polling would have
        // caught it.
        idle.kicked(t + Duration::from_micros(10));
        assert!(idle.armed());
        // A miss, then a kick 16 ms later (a 60 fps guest): it stays off.
        idle.sleeping(t, true);
        idle.kicked(t + Duration::from_millis(16));
        assert!(!idle.armed());
        // A kick while commands were in flight says nothing about the idle gap.
        idle.sleeping_busy();
        idle.kicked(t + Duration::from_micros(1));
        assert!(!idle.armed());
    }

    #[test]
    fn idle_poll_zero_window_never_polls() {
        let mut idle = IdlePoll::new(Duration::ZERO);
        assert_eq!(idle.budget(), Duration::ZERO);
        let t = Instant::now();
        idle.sleeping(t, false);
        idle.kicked(t);
        assert_eq!(idle.budget(), Duration::ZERO);
    }
}
