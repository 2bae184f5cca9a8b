//! The vhost-user backend: takes descriptor chains off the control and cursor queues, records
//! each command before the device runs it, executes it on vgt-device, writes and records the
//! response, and turns the device's display output into vhost-user-gpu messages for QEMU (and
//! into GpuSocket, Frame and Cursor records).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use vgt_device::display::{FRAME_FORMAT, Framebuffers};
use vgt_device::{
    Completion, Device, DeviceHost, DisplayEvent, DisplayInfoFromHost, FenceInfo, GuestMemory,
    HostDisplay, MemoryError, Submission, ValidationError,
};
use vgt_format::record::{
    CommandRecord, Cursor, CursorAction, Direction, FenceSignal, Frame, GpuSocketMessage,
    LifecycleKind, MemoryRead, Payload, RecordBody, RecordId, ResponseRecord,
};
use vhost::vhost_user::GpuBackend;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::chain::{self, WalkedChain};
use crate::display::{self, gpu_req};
use crate::gpu_socket::{GpuSlot, GpuSocket};
use crate::recorder::{RecordError, Recorder};
use crate::session::SessionSignal;

/// Control queue index.
pub const CONTROL_QUEUE: u16 = 0;
/// Cursor queue index.
pub const CURSOR_QUEUE: u16 = 1;
/// Number of virtqueues.
pub const NUM_QUEUES: usize = 2;
/// Largest queue size the backend accepts.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// `virtio_gpu_ctrl_hdr.flags` bit: the request carries a fence.
const FLAG_FENCE: u32 = 1;
/// `virtio_gpu_ctrl_hdr.flags` bit: the fence is on a per-context ring.
const FLAG_INFO_RING_IDX: u32 = 2;

/// Virtio feature bits the backend adds to the device's own.
///
/// RING_RESET is offered because QEMU 10's vhost-user-gpu acks it whether or not the back-end
/// offered it (seen in a real boot), and vhost-user-backend refuses SET_FEATURES with bits it did
/// not offer; the Linux driver never resets a single queue, and a reset arrives as
/// SET_VRING_ENABLE/GET_VRING_BASE, which the daemon handles.
pub fn transport_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_F_RING_RESET)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// vhost-user protocol features the backend offers.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// The exit eventfds [`CaptureBackend`] handed to vhost-user-backend, which never closes them:
/// 0.24's `VringEpollHandler::new` turns the consumer into a raw descriptor for its epoll set
/// and keeps only the number (still so upstream in 2026), so each session would leave one
/// eventfd open for the life of the process, and `--keep-listening` would run out of
/// descriptors after about a thousand connections. The session closes them after the daemon
/// and its worker threads are gone.
#[derive(Debug, Default)]
pub struct HandedOut(Mutex<Vec<RawFd>>);

impl HandedOut {
    fn push(&self, fd: RawFd) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
    }

    /// Closes the descriptors handed out. Call only when nothing can use them any more: after
    /// the daemon was dropped (which joins its worker threads and drops their epoll sets).
    /// Each number is closed only while it still names an eventfd, so that a vhost-user-backend
    /// that closed it itself, and a number since reused for something else, are left alone.
    pub fn close_all(&self) {
        for fd in self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
            if info.is_ok_and(|i| i.lines().any(|l| l.starts_with("eventfd-count:"))) {
                // SAFETY: `fd` was handed to vhost-user-backend, which dropped ownership of it
                // (into_raw_fd) and will never use or close it once the daemon is gone; it is
                // still an open eventfd, so no other owner's descriptor is closed here.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// The GPU socket QEMU handed over, and what was negotiated on it.
struct GpuConn {
    socket: GpuSocket,
    /// Protocol features QEMU answered (None until asked; asked lazily from the queue thread,
    /// never from the vhost-user request thread, which would deadlock against QEMU's main loop).
    protocol: Option<u64>,
}

struct PendingChain {
    queue: u16,
    head: u16,
    chain: WalkedChain,
}

/// Display state that outlives single commands.
#[derive(Default)]
struct DisplayState {
    framebuffers: Framebuffers,
    /// Per scanout, the payload of its last Frame record and the framebuffer version it holds:
    /// a flush that leaves the picture as it was reuses it instead of hashing the whole
    /// scanout again (what the store's dedup would find anyway).
    last_frame: HashMap<u32, (u64, Payload)>,
    /// Repacked UPDATE pixels (when the device's stride has padding), reused between updates.
    packed: Vec<u8>,
    /// UPDATE pixel buffers done with during a command, handed back to the device after it
    /// (`Device::recycle_pixels`) for its next updates.
    spare: Vec<Vec<u8>>,
    /// Per resource, its last large memory read: the device's number for it and the payload
    /// it was stored as. An UPDATE that the device says is a copy of that read
    /// (`copy_of_read`) is recorded with the same payload, without hashing its pixels again.
    reads: HashMap<u32, (u64, Payload)>,
}

/// Memory reads at least this long are remembered for [`DisplayState::reads`] (shorter ones
/// cost little to hash again).
const REUSED_READ_MIN: usize = 64 << 10;

/// The recording virtio-gpu backend (wrap it in `Arc<RwLock<_>>` for the daemon).
pub struct CaptureBackend {
    /// In a mutex only because `Device` is `Send` but not `Sync` and the vhost traits want
    /// `Sync`; the queue worker is the only thread that locks it.
    device: Mutex<Device>,
    recorder: Arc<Recorder>,
    signal: Arc<SessionSignal>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    gpu: Option<GpuConn>,
    gpu_slot: Arc<GpuSlot>,
    event_idx: bool,
    exit: (EventConsumer, EventNotifier),
    exit_handed_out: Arc<HandedOut>,
    display: DisplayState,
    pending: HashMap<u64, PendingChain>,
    fences: HashMap<u64, RecordId>,
    queue_error_reported: [bool; NUM_QUEUES],
    crashed: bool,
}

impl CaptureBackend {
    /// A backend around `device`, recording into `recorder`.
    pub fn new(
        device: Device,
        recorder: Arc<Recorder>,
        signal: Arc<SessionSignal>,
        gpu_slot: Arc<GpuSlot>,
    ) -> io::Result<Self> {
        Ok(CaptureBackend {
            device: Mutex::new(device),
            recorder,
            signal,
            mem: None,
            gpu: None,
            gpu_slot,
            event_idx: false,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            exit_handed_out: Arc::default(),
            display: DisplayState::default(),
            pending: HashMap::new(),
            fences: HashMap::new(),
            queue_error_reported: [false; NUM_QUEUES],
            crashed: false,
        })
    }

    /// The exit descriptors handed to vhost-user-backend, for the session to close once the
    /// daemon is gone (see [`HandedOut`]).
    pub fn exit_descriptors(&self) -> Arc<HandedOut> {
        self.exit_handed_out.clone()
    }

    /// All virtio feature bits offered: the device's plus the transport's.
    pub fn offered_features(device: &Device) -> u64 {
        device.features() | transport_features()
    }

    fn fail(&self, context: &str, e: impl std::fmt::Display) {
        eprintln!("vgt-capture: error: {context}: {e}");
        let _ =
            self.recorder
                .lifecycle(LifecycleKind::Error, None, None, format!("{context}: {e}"));
    }

    /// Serves every available chain of `queue`; returns how many were taken.
    fn process_queue(&mut self, queue: u16, vrings: &[VringRwLock]) -> io::Result<usize> {
        let Some(atomic) = self.mem.clone() else {
            return Err(io::Error::other("queue event before SET_MEM_TABLE"));
        };
        let vring = vrings
            .get(usize::from(queue))
            .ok_or_else(|| io::Error::other(format!("no vring {queue}")))?;
        if let Some(stream) = self.gpu_slot.take() {
            self.gpu = Some(GpuConn {
                socket: GpuSocket::new(stream),
                protocol: None,
            });
        }
        let mut signal = [false; NUM_QUEUES];
        let mut taken = 0;
        loop {
            if self.crashed || self.signal.is_stopping() {
                break;
            }
            let mem = atomic.memory();
            let popped = {
                let mut state = vring.get_mut();
                let q = state.get_queue_mut();
                if !q.ready() {
                    // Stopped (GET_VRING_BASE) or not yet set up: nothing may be taken.
                    break;
                }
                let table = q.desc_table();
                let size = q.size();
                match q.iter(mem.clone()) {
                    Ok(mut chains) => Ok(chains.next().map(|c| (c.head_index(), table, size))),
                    Err(e) => Err(e),
                }
            };
            let (head, table, size) = match popped {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    // A corrupt available ring (e.g. an index that ran ahead by more than the
                    // queue size): nothing on it can be trusted until the driver resets it.
                    if !self.queue_error_reported[usize::from(queue)] {
                        self.queue_error_reported[usize::from(queue)] = true;
                        self.fail(&format!("queue {queue}"), e);
                    }
                    break;
                }
            };
            taken += 1;
            self.process_chain(queue, head, table, size, &mem, vrings, &mut signal);
        }
        if !self.crashed {
            self.poll_fences(&atomic.memory(), vrings, &mut signal);
        }
        // Crash-safe mode keeps output records (responses, frames, display messages) in the
        // buffer until the next command's record; this hands the rest to the OS before the
        // used-queue interrupt (one write per queue pass instead of one per record).
        if let Err(e) = self.recorder.sync_outputs()
            && !self.recorder.is_finished()
        {
            self.fail("writing output records", e);
        }
        for (i, needed) in signal.iter().enumerate() {
            if let Some(v) = vrings.get(i).filter(|_| *needed)
                && v.needs_notification().unwrap_or(true)
            {
                v.signal_used_queue()?;
            }
        }
        Ok(taken)
    }

    #[allow(clippy::too_many_arguments)]
    fn process_chain(
        &mut self,
        queue: u16,
        head: u16,
        table: u64,
        size: u16,
        mem: &GuestMemoryMmap,
        vrings: &[VringRwLock],
        signal: &mut [bool; NUM_QUEUES],
    ) {
        let walked = chain::walk_chain(mem, table, size, head).and_then(|c| {
            chain::gather(mem, &c)
                .map(|r| (c.clone(), r))
                .map_err(|e| (c, e))
        });
        let (walked, request) = match walked {
            Ok(v) => v,
            Err((partial, err)) => {
                self.reject_chain(queue, head, size, partial, &err.to_string(), vrings, signal);
                return;
            }
        };
        let recorded = self.recorder.store(&request).and_then(|payload| {
            self.recorder.append(RecordBody::Command(CommandRecord {
                queue,
                head,
                descriptors: walked.descriptors.clone(),
                writable_len: walked.writable_len(),
                request: payload,
            }))
        });
        let command = match recorded {
            Ok(id) => id,
            Err(e) => {
                // Without the record the capture's promise is broken: stop serving.
                self.fail("recording a command", &e);
                self.signal.record_failed();
                self.crashed = true;
                return;
            }
        };
        if let Some((fence_id, _)) = fence_of(&request) {
            self.fences.insert(fence_id, command);
        }
        let writable_len = walked.writable_len();
        self.pending.insert(
            command,
            PendingChain {
                queue,
                head,
                chain: walked,
            },
        );
        let mut host = Host {
            recorder: &self.recorder,
            queue,
            command,
            gpu: &mut self.gpu,
            display: &mut self.display,
            fences: &self.fences,
        };
        let memory = Memory(mem);
        let device = self.device.get_mut().unwrap_or_else(|p| p.into_inner());
        let result = catch_unwind(AssertUnwindSafe(|| {
            device.submit(
                Submission {
                    queue,
                    token: command,
                    request: &request,
                    writable_len,
                },
                &memory,
                &mut host,
            )
        }));
        match result {
            Ok(completions) => {
                for c in completions {
                    self.complete(c, mem, vrings, signal);
                }
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                eprintln!("vgt-capture: the device crashed on command {command}: {message}");
                let _ = self.recorder.lifecycle(
                    LifecycleKind::Crash,
                    Some(queue),
                    Some(command),
                    format!("device panicked: {message}"),
                );
                self.crashed = true;
                self.signal.crashed();
            }
        }
        let device = self.device.get_mut().unwrap_or_else(|p| p.into_inner());
        for spare in self.display.spare.drain(..) {
            device.recycle_pixels(spare);
        }
    }

    /// Completions released by fences the renderer signalled asynchronously (rutabaga 2D
    /// signals inside submit, so this is normally empty).
    fn poll_fences(
        &mut self,
        mem: &GuestMemoryMmap,
        vrings: &[VringRwLock],
        signal: &mut [bool; NUM_QUEUES],
    ) {
        let mut host = Host {
            recorder: &self.recorder,
            queue: CONTROL_QUEUE,
            command: u64::MAX,
            gpu: &mut self.gpu,
            display: &mut self.display,
            fences: &self.fences,
        };
        let device = self.device.get_mut().unwrap_or_else(|p| p.into_inner());
        let result = catch_unwind(AssertUnwindSafe(|| device.poll(&mut host)));
        match result {
            Ok(completions) => {
                for c in completions {
                    self.complete(c, mem, vrings, signal);
                }
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                eprintln!("vgt-capture: the device crashed while polling fences: {message}");
                let _ = self.recorder.lifecycle(
                    LifecycleKind::Crash,
                    None,
                    None,
                    format!("device panicked while polling fences: {message}"),
                );
                self.crashed = true;
                self.signal.crashed();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject_chain(
        &mut self,
        queue: u16,
        head: u16,
        size: u16,
        partial: WalkedChain,
        why: &str,
        vrings: &[VringRwLock],
        signal: &mut [bool; NUM_QUEUES],
    ) {
        eprintln!("vgt-capture: malformed chain on queue {queue} (head {head}): {why}");
        let command = self
            .recorder
            .append(RecordBody::Command(CommandRecord {
                queue,
                head,
                descriptors: partial.descriptors.clone(),
                writable_len: partial.writable_len(),
                request: Payload::empty(),
            }))
            .ok();
        let _ = self.recorder.lifecycle(
            LifecycleKind::ValidationError,
            Some(queue),
            command,
            format!("malformed descriptor chain: {why}"),
        );
        if head >= size {
            // Nothing can be returned: the head is not a descriptor of this queue.
            return;
        }
        if let Some(command) = command {
            let _ = self
                .recorder
                .append_output(RecordBody::Response(ResponseRecord {
                    command,
                    queue,
                    head,
                    used_len: 0,
                    bytes: Payload::empty(),
                }));
        }
        if let Some(v) = vrings.get(usize::from(queue)) {
            match v.add_used(head, 0) {
                Ok(()) => signal[usize::from(queue)] = true,
                Err(e) => self.fail("returning a malformed chain", e),
            }
        }
    }

    fn complete(
        &mut self,
        c: Completion,
        mem: &GuestMemoryMmap,
        vrings: &[VringRwLock],
        signal: &mut [bool; NUM_QUEUES],
    ) {
        let Some(p) = self.pending.remove(&c.token) else {
            self.fail("device completion", format!("unknown token {}", c.token));
            return;
        };
        let used_len = chain::scatter(mem, &p.chain, &c.response);
        let written = &c.response[..used_len as usize];
        let recorded = self.recorder.store(written).and_then(|bytes| {
            self.recorder
                .append_output(RecordBody::Response(ResponseRecord {
                    command: c.token,
                    queue: p.queue,
                    head: p.head,
                    used_len,
                    bytes,
                }))
        });
        if let Err(e) = recorded {
            self.fail("recording a response", e);
        }
        if let Some(v) = vrings.get(usize::from(p.queue)) {
            match v.add_used(p.head, used_len) {
                Ok(()) => signal[usize::from(p.queue)] = true,
                Err(e) => self.fail("add_used", e),
            }
        }
    }
}

/// Locks the device; a poisoned lock (a panic inside the device, already recorded as a crash)
/// still yields the device so that shutdown can proceed.
fn lock(device: &Mutex<Device>) -> MutexGuard<'_, Device> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fence (id, flags) a request asks for, when its header has FLAG_FENCE.
fn fence_of(request: &[u8]) -> Option<(u64, u32)> {
    let flags = u32::from_le_bytes(request.get(4..8)?.try_into().ok()?);
    let id = u64::from_le_bytes(request.get(8..16)?.try_into().ok()?);
    (flags & FLAG_FENCE != 0).then_some((id, flags))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Guest memory as the device reads it.
struct Memory<'a>(&'a GuestMemoryMmap);

impl GuestMemory for Memory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if !self.contains(addr, len) {
            return Err(MemoryError::OutOfRange { addr, len });
        }
        self.0
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| MemoryError::Failed {
                addr,
                len,
                reason: e.to_string(),
            })
    }

    fn contains(&self, addr: u64, len: u64) -> bool {
        match u32::try_from(len) {
            Ok(l) => chain::range_in_memory(self.0, addr, l),
            // Longer than 4 GiB: check in 4 GiB steps.
            Err(_) => {
                let mut at = addr;
                let Some(end) = addr.checked_add(len) else {
                    return false;
                };
                while at < end {
                    let step = (end - at).min(u64::from(u32::MAX));
                    if !chain::range_in_memory(self.0, at, step as u32) {
                        return false;
                    }
                    at += step;
                }
                true
            }
        }
    }
}

/// The device's view of its surroundings during one submission.
struct Host<'a> {
    recorder: &'a Recorder,
    queue: u16,
    command: RecordId,
    gpu: &'a mut Option<GpuConn>,
    display: &'a mut DisplayState,
    fences: &'a HashMap<u64, RecordId>,
}

impl Host<'_> {
    fn error(&self, context: &str, e: impl std::fmt::Display) {
        eprintln!("vgt-capture: error: {context}: {e}");
        let _ = self.recorder.lifecycle(
            LifecycleKind::Error,
            None,
            Some(self.command),
            format!("{context}: {e}"),
        );
    }

    fn record_socket(&self, direction: Direction, request: u32, flags: u32, payload: &[u8]) {
        let (head, data) = GpuSocketMessage::split_wire_payload(direction, request, payload);
        self.record_socket_parts(direction, request, flags, head, data.map(Err));
    }

    /// Records a message already split as [`GpuSocketMessage::split_wire_payload`] splits it;
    /// the data part is given as bytes to store (`Err`) or as its payload, already stored
    /// (`Ok`).
    fn record_socket_parts(
        &self,
        direction: Direction,
        request: u32,
        flags: u32,
        head: &[u8],
        data: Option<Result<Payload, &[u8]>>,
    ) -> Option<Payload> {
        let r = self
            .recorder
            .store(head)
            .and_then(|payload| {
                let data = match data {
                    None => None,
                    // Already stored.
                    Some(Ok(known)) => Some(known),
                    Some(Err(bytes)) => Some(self.recorder.store(bytes)?),
                };
                Ok((payload, data))
            })
            .and_then(|(payload, data)| {
                let stored = data.clone();
                self.recorder
                    .append_output(RecordBody::GpuSocket(GpuSocketMessage {
                        direction,
                        request,
                        flags,
                        fd_count: 0,
                        payload,
                        data,
                    }))
                    .map(|_| stored)
            });
        match r {
            Ok(data) => data,
            Err(e) => {
                self.error("recording a gpu socket message", e);
                None
            }
        }
    }

    /// Records and sends an UPDATE: `head` (scanout, x, y, width, height) and its pixels, kept
    /// apart on the way to the socket (no joined copy). `known`: the pixels' payload when it is
    /// already stored. Returns the pixels' payload as recorded.
    fn send_update(
        &mut self,
        head: &[u8],
        pixels: &[u8],
        known: Option<Payload>,
    ) -> Option<Payload> {
        self.gpu.as_ref()?;
        // What `split_wire_payload` makes of the joined message: no data part when empty.
        let data = (!pixels.is_empty()).then_some(pixels);
        let stored = self.record_socket_parts(
            Direction::BackendRequest,
            gpu_req::UPDATE,
            0,
            head,
            data.map(|d| known.ok_or(d)),
        );
        let gpu = self.gpu.as_mut()?;
        if let Err(e) = gpu.socket.send_parts(gpu_req::UPDATE, head, pixels) {
            self.gpu_failed("gpu socket", e);
        }
        stored
    }

    /// Sends a message on the GPU socket after recording it. Returns false (and records the
    /// failure) when the socket is gone.
    fn send(&mut self, request: u32, payload: &[u8]) -> bool {
        if self.gpu.is_none() {
            return false;
        }
        self.record_socket(Direction::BackendRequest, request, 0, payload);
        let Some(gpu) = self.gpu.as_mut() else {
            return false;
        };
        match gpu.socket.send(request, payload) {
            Ok(()) => true,
            Err(e) => {
                self.gpu_failed("gpu socket", e);
                false
            }
        }
    }

    /// Sends a request and returns QEMU's reply payload, recording both.
    fn call(&mut self, request: u32, payload: &[u8]) -> Option<Vec<u8>> {
        self.gpu.as_ref()?;
        self.record_socket(Direction::BackendRequest, request, 0, payload);
        let gpu = self.gpu.as_mut()?;
        match gpu.socket.call(request, payload) {
            Ok(reply) => {
                self.record_socket(
                    Direction::BackendReply,
                    request,
                    reply.flags,
                    &reply.payload,
                );
                Some(reply.payload)
            }
            Err(e) => {
                self.gpu_failed(&format!("gpu socket request {request}"), e);
                None
            }
        }
    }

    /// The display socket failed: QEMU closed it (a reset tears it down), or it stopped
    /// reading for longer than the socket timeout (the stream is then out of step). Report it
    /// once and send nothing more until QEMU hands over a new socket.
    fn gpu_failed(&mut self, context: &str, e: impl std::fmt::Display) {
        self.error(&format!("{context} (display output stopped)"), e);
        *self.gpu = None;
    }

    /// Negotiates the GPU socket's protocol features once (GET then SET, both recorded).
    fn gpu_protocol(&mut self) -> u64 {
        let Some(gpu) = self.gpu.as_ref() else {
            return 0;
        };
        if let Some(p) = gpu.protocol {
            return p;
        }
        let offered = self
            .call(gpu_req::GET_PROTOCOL_FEATURES, &[])
            .and_then(|p| p.get(..8).and_then(|b| b.try_into().ok()))
            .map_or(0, u64::from_le_bytes);
        let chosen = offered & gpu_req::PROTOCOL_F_EDID;
        self.send(gpu_req::SET_PROTOCOL_FEATURES, &chosen.to_le_bytes());
        if let Some(gpu) = self.gpu.as_mut() {
            gpu.protocol = Some(chosen);
        }
        chosen
    }

    fn record_frame(&mut self, scanout_id: u32, rect: [u32; 4]) {
        let Some(fb) = self.display.framebuffers.get(scanout_id) else {
            return;
        };
        let stored = match self.display.last_frame.get(&scanout_id) {
            Some((version, payload)) if *version == fb.version => Ok(payload.clone()),
            _ => self.recorder.store(&fb.pixels).inspect(|p| {
                self.display
                    .last_frame
                    .insert(scanout_id, (fb.version, p.clone()));
            }),
        };
        let r = stored.and_then(|pixels| {
            self.recorder.append_output(RecordBody::Frame(Frame {
                command: self.command,
                scanout_id,
                resource_id: fb.resource_id,
                format: FRAME_FORMAT.0,
                width: fb.width,
                height: fb.height,
                stride: fb.stride(),
                rect,
                pixels,
            }))
        });
        if let Err(e) = r {
            self.error("recording a frame", e);
        }
    }

    /// Sends and records a display UPDATE and the Frame it makes.
    fn update(&mut self, event: DisplayEvent) {
        let DisplayEvent::Update {
            scanout_id,
            resource_id,
            x,
            y,
            width,
            height,
            stride,
            ref pixels,
            copy_of_read,
            ..
        } = event
        else {
            return;
        };
        let head = display::u32_payload(&[scanout_id, x, y, width, height]);
        // vgt-device hands over pixels already converted to x8r8g8b8 (what QEMU's UPDATE
        // wants); only the stride may need repacking.
        let row = width as usize * 4;
        let tight = stride as usize == row && pixels.len() == row * height as usize;
        // The pixels are a copy of a memory read already stored (a whole-resource transfer
        // then a whole-resource flush): its payload is theirs.
        let of_read = copy_of_read.filter(|_| tight).and_then(|n| {
            match self.display.reads.get(&resource_id) {
                Some((read, p)) if *read == n && p.len() == pixels.len() as u64 => Some(p.clone()),
                _ => None,
            }
        });
        let whole = tight
            && (x, y) == (0, 0)
            && self.display.framebuffers.get(scanout_id).is_some_and(|fb| {
                (fb.width, fb.height) == (width, height) && fb.pixels.len() == pixels.len()
            });
        if whole {
            // The update becomes the framebuffer (no copy), and is sent from there. Its data
            // payload is the Frame's; when the picture is unchanged since the last Frame, that
            // Frame's payload is the blob (what `store` would return, without hashing 8 MiB).
            let (change, spare) = self.display.framebuffers.apply_owned_exact_returning(event);
            self.display.spare.extend(spare);
            let fbs = std::mem::take(&mut self.display.framebuffers);
            if let Some(fb) = fbs.get(scanout_id) {
                let known = self
                    .display
                    .last_frame
                    .get(&scanout_id)
                    .filter(|(v, _)| *v == fb.version)
                    .map(|(_, p)| p.clone())
                    .or(of_read);
                if let Some(d) = self.send_update(&head, &fb.pixels, known) {
                    self.display.last_frame.insert(scanout_id, (fb.version, d));
                }
            }
            self.display.framebuffers = fbs;
            if let Some(c) = change {
                self.record_frame(c.scanout_id, c.rect);
            }
            return;
        }
        let change = self.display.framebuffers.apply(&event);
        let mut packed = std::mem::take(&mut self.display.packed);
        let sent: &[u8] = if tight {
            pixels
        } else {
            // Into a buffer kept for the next update.
            display::pack_update_into(
                &mut packed,
                width,
                height,
                display::FORMAT_B8G8R8X8,
                stride,
                pixels,
            );
            &packed
        };
        self.send_update(&head, sent, of_read);
        self.display.packed = packed;
        if let Some(c) = change {
            self.record_frame(c.scanout_id, c.rect);
        }
        if let DisplayEvent::Update { pixels, .. } = event {
            self.display.spare.push(pixels);
        }
    }

    /// Records a memory read; its data's payload, unless recording failed.
    fn record_memory_read(&mut self, resource_id: u32, addr: u64, data: &[u8]) -> Option<Payload> {
        let r = self.recorder.store(data).and_then(|payload| {
            self.recorder
                .append(RecordBody::MemoryRead(MemoryRead {
                    command: self.command,
                    resource_id,
                    addr,
                    data: payload.clone(),
                }))
                .map(|_| payload)
        });
        match r {
            Ok(p) => Some(p),
            Err(e) => {
                self.error("recording a memory read", e);
                None
            }
        }
    }

    fn record_cursor(
        &mut self,
        action: CursorAction,
        pos: (u32, u32, u32),
        hot: (u32, u32),
        resource_id: u32,
        image: Option<&[u8]>,
    ) {
        let image = match image.map(|i| self.recorder.store(i)).transpose() {
            Ok(i) => i,
            Err(e) => {
                self.error("recording a cursor image", e);
                None
            }
        };
        let r = self.recorder.append_output(RecordBody::Cursor(Cursor {
            command: self.command,
            action,
            scanout_id: pos.0,
            x: pos.1,
            y: pos.2,
            hot_x: hot.0,
            hot_y: hot.1,
            resource_id,
            image,
        }));
        if let Err(e) = r {
            self.error("recording a cursor", e);
        }
    }
}

impl DeviceHost for Host<'_> {
    fn memory_read(&mut self, resource_id: u32, addr: u64, data: &[u8]) {
        self.record_memory_read(resource_id, addr, data);
    }

    fn numbered_memory_read(&mut self, read: u64, resource_id: u32, addr: u64, data: &[u8]) {
        let stored = self.record_memory_read(resource_id, addr, data);
        match stored {
            Some(p) if data.len() >= REUSED_READ_MIN => {
                self.display.reads.insert(resource_id, (read, p));
            }
            // A failed or short read is never reused.
            _ => {
                self.display.reads.remove(&resource_id);
            }
        }
    }

    fn display(&mut self, event: DisplayEvent) {
        if !matches!(event, DisplayEvent::Update { .. }) {
            // Scanout changes; cursor events leave the framebuffers alone.
            self.display.framebuffers.apply(&event);
        }
        match event {
            DisplayEvent::Scanout {
                scanout_id,
                width,
                height,
            } => {
                self.send(
                    gpu_req::SCANOUT,
                    &display::u32_payload(&[scanout_id, width, height]),
                );
            }
            DisplayEvent::Update { .. } => self.update(event),
            DisplayEvent::CursorUpdate {
                scanout_id,
                x,
                y,
                hot_x,
                hot_y,
                resource_id,
                image,
            } => {
                let mut payload = display::u32_payload(&[scanout_id, x, y, hot_x, hot_y]);
                payload.extend_from_slice(&image[..]);
                self.send(gpu_req::CURSOR_UPDATE, &payload);
                self.record_cursor(
                    CursorAction::Update,
                    (scanout_id, x, y),
                    (hot_x, hot_y),
                    resource_id,
                    Some(&image[..]),
                );
            }
            DisplayEvent::CursorMove { scanout_id, x, y } => {
                self.send(
                    gpu_req::CURSOR_POS,
                    &display::u32_payload(&[scanout_id, x, y]),
                );
                self.record_cursor(CursorAction::Move, (scanout_id, x, y), (0, 0), 0, None);
            }
            DisplayEvent::CursorHide { scanout_id, x, y } => {
                self.send(
                    gpu_req::CURSOR_POS_HIDE,
                    &display::u32_payload(&[scanout_id, x, y]),
                );
                self.record_cursor(CursorAction::Hide, (scanout_id, x, y), (0, 0), 0, None);
            }
        }
    }

    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        // Without a GPU socket (or when QEMU does not answer) the device answers from its
        // configuration (--scanouts, --size).
        self.gpu.as_ref()?;
        self.gpu_protocol();
        let reply = self.call(gpu_req::GET_DISPLAY_INFO, &[])?;
        // struct virtio_gpu_resp_display_info: 24-byte header, 16 x {rect, enabled, flags}.
        let word = |o: usize| {
            reply
                .get(o..o + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(DisplayInfoFromHost {
            displays: (0..16)
                .map(|i| {
                    let o = 24 + 24 * i;
                    HostDisplay {
                        x: word(o),
                        y: word(o + 4),
                        width: word(o + 8),
                        height: word(o + 12),
                        enabled: word(o + 16) != 0,
                        flags: word(o + 20),
                    }
                })
                .collect(),
        })
    }

    fn edid(&mut self, scanout: u32) -> Option<Vec<u8>> {
        if self.gpu_protocol() & gpu_req::PROTOCOL_F_EDID == 0 {
            return None;
        }
        let reply = self.call(gpu_req::GET_EDID, &scanout.to_le_bytes())?;
        // struct virtio_gpu_resp_edid: header, size u32, padding u32, edid[1024].
        let size = reply
            .get(24..28)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            as usize;
        let blob = reply.get(32..32 + size.min(1024))?;
        (!blob.is_empty()).then(|| blob.to_vec())
    }

    fn fence_signalled(&mut self, fence: FenceInfo) {
        let command = self
            .fences
            .get(&fence.fence_id)
            .copied()
            .unwrap_or(u64::MAX);
        let r = self.recorder.append_output(RecordBody::Fence(FenceSignal {
            command,
            fence_id: fence.fence_id,
            ctx_id: fence.ctx_id,
            ring_idx: fence.ring_idx,
            context_ring: fence.flags & FLAG_INFO_RING_IDX != 0,
        }));
        if let Err(e) = r {
            self.error("recording a fence", e);
        }
    }

    fn validation_error(&mut self, token: u64, err: &ValidationError) {
        let r = self.recorder.lifecycle(
            LifecycleKind::ValidationError,
            Some(self.queue),
            Some(token),
            err.to_string(),
        );
        if let Err(e) = r {
            self.error("recording a validation error", e);
        }
    }
}

impl VhostUserBackendMut for CaptureBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        Self::offered_features(&lock(&self.device))
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&mut self) {
        self.device
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
        self.pending.clear();
        self.fences.clear();
        self.display = DisplayState::default();
        self.queue_error_reported = [false; NUM_QUEUES];
        // The Reset lifecycle record comes from the relay, which saw RESET_DEVICE.
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = lock(&self.device).config_space();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        config[start..end].to_vec()
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // The driver may only write events_clear (offset 4); the message itself is in the
        // capture as a VhostUser record.
        if offset == 4
            && let Ok(mask) = <[u8; 4]>::try_from(buf)
        {
            self.device
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .clear_events(u32::from_le_bytes(mask));
        }
        Ok(())
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> io::Result<()> {
        // The relay already left a duplicate of this socket (with timeouts) in the slot, which
        // `process_queue` picks up; the vhost crate's sender is not used (see gpu_socket).
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        self.exit_handed_out.push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        if usize::from(device_event) >= NUM_QUEUES {
            return Err(io::Error::other(format!(
                "event for unknown queue {device_event}"
            )));
        }
        if self.crashed {
            return Ok(());
        }
        let vring = &vrings[usize::from(device_event)];
        if self.event_idx {
            loop {
                vring
                    .disable_notification()
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let taken = self.process_queue(device_event, vrings)?;
                let more = vring
                    .enable_notification()
                    .map_err(|e| io::Error::other(e.to_string()))?;
                // `more` with nothing taken means the ring cannot be served now (stopped, or
                // corrupt): looping would spin with the backend lock held and block the
                // GET_VRING_BASE that stops it.
                if !more || taken == 0 || self.crashed {
                    break;
                }
            }
        } else {
            self.process_queue(device_event, vrings)?;
        }
        Ok(())
    }
}

/// Converts a recorder error into an io::Error for the vhost traits.
pub fn io_error(e: RecordError) -> io::Error {
    io::Error::other(e)
}
