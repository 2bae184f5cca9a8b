//! The shadow virtqueues of proxy mode: guest memory as the proxy maps it, the proxy-owned
//! shadow rings the backend works on, and moving chains between the two (guest avail → shadow
//! avail on a guest kick, shadow used → guest used on a backend call), recording each command
//! when it is taken and each response before the guest can see it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use vgt_format::hash::content_hash;
use vgt_format::record::{
    CommandRecord, FenceSignal, LifecycleKind, MemoryRead, Payload, RecordBody, RecordId,
    ResponseRecord,
};
use vgt_format::wire::{Command, CommandType, Rect, Request};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::causes::{Cause, DisplayCauses};
use crate::chain::{self, WalkedChain};
use crate::recorder::Recorder;

/// Most queues the proxy interposes (virtio-gpu has 2).
pub const MAX_QUEUES: usize = 8;
/// Largest queue size the shadow rings hold.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Bytes of shadow memory per queue: descriptor table, available ring, used ring.
const QUEUE_STRIDE: u64 = 32 << 10;
/// Offset of the available ring within a queue's shadow area.
const AVAIL_OFF: u64 = 16 * MAX_QUEUE_SIZE as u64;
/// Offset of the used ring within a queue's shadow area.
const USED_OFF: u64 = AVAIL_OFF + 4096;
/// Size of the shadow region.
pub const SHADOW_SIZE: u64 = QUEUE_STRIDE * MAX_QUEUES as u64;
/// Guest-physical address the shadow region gets in the table forwarded to the backend (far
/// above any RAM a guest of this machine has; moved up if a region reaches it).
pub const SHADOW_GPA: u64 = 1 << 46;
/// Front-end virtual address the shadow region gets in that table (only used to translate the
/// ring addresses the proxy sends; never dereferenced by anyone).
pub const SHADOW_UADDR: u64 = 0x4000_0000_0000;

/// virtio feature bit RING_EVENT_IDX.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// virtio feature bit NOTIFY_ON_EMPTY.
pub const F_NOTIFY_ON_EMPTY: u64 = 1 << 24;
/// Used ring flag: the device does not need kicks.
const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// Available ring flag: the driver does not need interrupts.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `virtio_gpu_ctrl_hdr.flags`: fenced.
const FLAG_FENCE: u32 = 1;
/// `virtio_gpu_ctrl_hdr.flags`: per-context ring index.
const FLAG_INFO_RING_IDX: u32 = 2;

/// One region of the front-end's memory table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Front-end virtual address.
    pub uaddr: u64,
    /// Offset into the region's fd.
    pub mmap_offset: u64,
}

/// A command taken from a guest ring and not yet answered.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Its Command record.
    pub record: RecordId,
    /// Queue.
    pub queue: u16,
    /// Head index.
    pub head: u16,
    /// Command name (or code) for messages.
    pub name: Cow<'static, str>,
    /// The chain's writable buffers (address, length) in order: they hold the response.
    pub writable: Vec<(u64, u32)>,
    /// Fence id when the request asked for one.
    pub fence: Option<u64>,
    /// The guest memory recorded for it, checked again when its response comes.
    pub reads: Vec<ReadSum>,
}

/// Per-queue state.
pub struct Queue {
    /// Queue size from SET_VRING_NUM.
    pub size: u16,
    /// Guest ring addresses (guest-physical), once translated.
    pub guest: Option<(u64, u64, u64)>,
    /// QEMU's kick eventfd (the proxy waits on it).
    pub kick_front: Option<File>,
    /// Bumped whenever `kick_front` changes (the worker re-registers it).
    pub kick_gen: u64,
    /// The kick eventfd the backend got.
    pub kick_back: EventFd,
    /// QEMU's call eventfd (the proxy signals it).
    pub call_front: Option<File>,
    /// The call eventfd the backend got (the proxy waits on it).
    pub call_back: EventFd,
    /// True between SET_VRING_KICK and GET_VRING_BASE.
    pub running: bool,
    /// The GET_VRING_BASE reply went to the front-end: the guest's rings are the driver's
    /// again (a rebooted driver clears them) until the next SET_VRING_ADDR.
    pub handed_back: bool,
    /// Next guest available index to take.
    pub last_avail: u16,
    /// Next shadow available index to fill.
    pub shadow_avail: u16,
    /// Next shadow used index to read.
    pub last_used: u16,
    /// Next guest used index to fill.
    pub guest_used: u16,
    /// A corrupt available index was reported.
    pub reported: bool,
    /// A corrupt used index (the backend's) was reported.
    pub used_reported: bool,
    /// Guest used index at the last interrupt, when one was sent since the ring (re)started.
    signalled_used: Option<u16>,
}

impl Queue {
    fn new() -> std::io::Result<Self> {
        Ok(Queue {
            size: 0,
            guest: None,
            kick_front: None,
            kick_gen: 0,
            kick_back: EventFd::new(EFD_NONBLOCK)?,
            call_front: None,
            call_back: EventFd::new(EFD_NONBLOCK)?,
            running: false,
            handed_back: false,
            last_avail: 0,
            shadow_avail: 0,
            last_used: 0,
            guest_used: 0,
            reported: false,
            used_reported: false,
            signalled_used: None,
        })
    }
}

/// A resource's guest backing and size, from CREATE_2D / ATTACH_BACKING / CREATE_BLOB.
#[derive(Debug, Clone, Default)]
struct Resource {
    width: u32,
    height: u32,
    entries: Vec<(u64, u32)>,
}

/// A transfer's guest memory still to be recorded: (command, its (queue, head), resource,
/// (address, length) runs).
type PendingRead = (RecordId, (u16, u16), u32, Vec<(u64, u64)>);

/// A run of guest memory a command in flight had read, as recorded: (address, length, content
/// hash). Checked again when the response comes ([`LifecycleKind::InFlightWrite`]).
type ReadSum = (u64, u64, u128);

/// Everything the proxy knows about the device, behind one mutex.
pub struct ProxyState {
    recorder: Arc<Recorder>,
    /// Guest RAM as the proxy maps it (shared, so that the hot paths hold it without copying
    /// its region list).
    pub guest: Option<Arc<GuestMemoryMmap>>,
    /// The memory table's regions.
    pub regions: Vec<Region>,
    /// The shadow memfd.
    pub shadow_file: File,
    shadow: GuestMemoryMmap,
    /// Where the shadow region sits in the forwarded table.
    pub shadow_gpa: u64,
    /// Its front-end virtual address in the forwarded table.
    pub shadow_uaddr: u64,
    /// Queues.
    pub queues: Vec<Queue>,
    /// Acked virtio features.
    pub acked: u64,
    /// Commands in flight by (queue, head).
    pub in_flight: HashMap<(u16, u16), InFlight>,
    /// For [`ProxyState::newly_stalled`]: when it first saw each command in flight, and
    /// whether it reported it.
    stall_watch: HashMap<RecordId, (Instant, bool)>,
    /// The last command answered (record id, name).
    pub last_completed: Option<(RecordId, Cow<'static, str>)>,
    /// The last command answered on the control queue: what the backend wrote on stderr after
    /// it is quoted by a crash summary or stall warning (a cursor queue that goes on answering
    /// while the control queue hangs does not make the backend's panic message old news).
    pub last_control_answer: Option<RecordId>,
    /// Last command taken per queue (display records name it as their cause).
    pub last_command: [Option<RecordId>; 2],
    /// Resource shown per scanout (from SET_SCANOUT).
    pub scanout_resource: BTreeMap<u32, u32>,
    /// The commands taken that can still explain a display message ([`DisplayCauses`]).
    pub display_causes: DisplayCauses,
    /// The resource of the last UPDATE_CURSOR taken (a CURSOR_UPDATE message names none).
    pub cursor_resource: u32,
    resources: HashMap<u32, Resource>,
    /// The backend is gone: no further chains are taken (so the crash record's in-flight list
    /// is final).
    pub closed: bool,
    /// Transfers whose guest memory is still to be recorded: (command, resource, runs).
    pending_reads: Vec<PendingRead>,
    /// Crash-safe sync: hand the records to the operating system at each barrier (before the
    /// backend can see a new chain, before the guest can see a used entry). The queue worker
    /// defers per-record flushes (see `barrier.rs`), so this is one write per batch.
    pub flush_at_barriers: bool,
    /// The worker is polling: the backend's completion interrupts and the guest's kicks are
    /// off ([`ProxyState::set_notifications`]).
    polling: bool,
    /// Buffer for the guest memory of transfers (reused).
    scratch: Vec<u8>,
    /// Buffer for the response bytes being recorded (reused).
    response: Vec<u8>,
}

/// The file behind a memory region, checked to hold the whole region
/// ([`crate::relay::region_file`]: a mapping past the end of a file raises SIGBUS at the
/// proxy's first read).
pub fn region_file(fd: &OwnedFd, r: &Region) -> Result<File, String> {
    crate::relay::region_file(fd, r.mmap_offset, r.size)
        .map_err(|e| format!("the region at guest-physical {:#x}: {e}", r.gpa))
}

/// Creates an anonymous shared-memory file of `size` bytes.
pub(crate) fn memfd(name: &std::ffi::CStr, size: u64) -> std::io::Result<File> {
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// Where the device's `avail_event` sits: after the used ring of `size` entries at `used`.
fn avail_event_at(used: u64, size: u16) -> GuestAddress {
    GuestAddress(used + 4 + 8 * u64::from(size))
}

/// Where the driver's `used_event` sits: after the available ring of `size` entries at `avail`.
fn used_event_at(avail: u64, size: u16) -> GuestAddress {
    GuestAddress(avail + 4 + 2 * u64::from(size))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Name of a request for messages: the command name or its code (allocates only for an
/// unknown code).
pub fn command_name(request: &[u8]) -> Cow<'static, str> {
    let ty = le32(request, 0);
    CommandType(ty)
        .name()
        .map_or_else(|| Cow::Owned(format!("{ty:#x}")), Cow::Borrowed)
}

impl ProxyState {
    /// Fresh state with the shadow region allocated.
    pub fn new(recorder: Arc<Recorder>) -> std::io::Result<Self> {
        let shadow_file = memfd(c"vgt-proxy-shadow", SHADOW_SIZE)?;
        let shadow = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(SHADOW_GPA),
            SHADOW_SIZE as usize,
            Some(FileOffset::new(shadow_file.try_clone()?, 0)),
        )])
        .map_err(|e| std::io::Error::other(format!("mapping the shadow rings: {e}")))?;
        let mut queues = Vec::new();
        for _ in 0..MAX_QUEUES {
            queues.push(Queue::new()?);
        }
        Ok(ProxyState {
            recorder,
            guest: None,
            regions: Vec::new(),
            shadow_file,
            shadow,
            shadow_gpa: SHADOW_GPA,
            shadow_uaddr: SHADOW_UADDR,
            queues,
            acked: 0,
            in_flight: HashMap::new(),
            stall_watch: HashMap::new(),
            last_completed: None,
            last_control_answer: None,
            last_command: [None; 2],
            scanout_resource: BTreeMap::new(),
            display_causes: DisplayCauses::default(),
            cursor_resource: 0,
            resources: HashMap::new(),
            closed: false,
            pending_reads: Vec::new(),
            flush_at_barriers: false,
            polling: false,
            scratch: Vec::new(),
            response: Vec::new(),
        })
    }

    /// In crash-safe mode, hands every record so far to the operating system.
    fn barrier(&self) {
        if self.flush_at_barriers
            && let Err(e) = self.recorder.flush()
        {
            eprintln!("vgt-capture proxy: writing the capture file: {e}");
        }
    }

    /// Whether queue `q` has new guest chains or new backend completions (reads the indices
    /// only; the busy-polling worker calls this between wake-ups).
    pub fn has_work(&self, q: usize) -> bool {
        let Some(queue) = self.queues.get(q) else {
            return false;
        };
        let (Some((_, ga, _)), Some(guest)) = (queue.guest, self.guest.as_ref()) else {
            return false;
        };
        let (_, _, su) = self.shadow_rings(q);
        let avail = queue.running
            && !self.closed
            && guest
                .load::<u16>(GuestAddress(ga + 2), Ordering::Acquire)
                .is_ok_and(|i| i != queue.last_avail);
        avail
            || self
                .shadow
                .load::<u16>(GuestAddress(su + 2), Ordering::Acquire)
                .is_ok_and(|i| i != queue.last_used)
    }

    fn error(&self, queue: Option<u16>, command: Option<RecordId>, message: String) {
        eprintln!("vgt-capture proxy: {message}");
        let _ = self
            .recorder
            .lifecycle(LifecycleKind::Error, queue, command, message);
    }

    /// Maps a new memory table (SET_MEM_TABLE) and returns the extra region to append to the
    /// table forwarded to the backend.
    pub fn set_memory(&mut self, regions: Vec<Region>, fds: &[OwnedFd]) -> Result<Region, String> {
        let mut ranges = Vec::new();
        for (r, fd) in regions.iter().zip(fds) {
            let file = region_file(fd, r)?;
            let size = usize::try_from(r.size).map_err(|_| "region too large".to_owned())?;
            ranges.push((
                GuestAddress(r.gpa),
                size,
                Some(FileOffset::new(file, r.mmap_offset)),
            ));
        }
        ranges.sort_by_key(|r| r.0);
        let guest = GuestMemoryMmap::from_ranges_with_files(ranges)
            .map_err(|e| format!("cannot map the guest memory table: {e}"))?;
        // The shadow region must not overlap any guest region, in either address space.
        let overlaps = |gpa: u64, uaddr: u64| {
            regions.iter().any(|r| {
                let hit = |a: u64, b: u64| {
                    a < b.saturating_add(r.size) && b < a.saturating_add(SHADOW_SIZE)
                };
                hit(gpa, r.gpa) || hit(uaddr, r.uaddr)
            })
        };
        if overlaps(self.shadow_gpa, self.shadow_uaddr) {
            // Above every region, at the next 1 GiB boundary, when that leaves room for it (a
            // table reaching the top of an address space leaves none: the caller forwards it
            // unchanged, and the proxy's state, the shadow mapping included, stays as it was).
            let above = |end: fn(&Region) -> u64| {
                let top = regions.iter().map(end).max().unwrap_or(0);
                (top | 0x3fff_ffff)
                    .checked_add(1)
                    .filter(|base| base.checked_add(SHADOW_SIZE).is_some())
            };
            let (Some(gpa), Some(uaddr)) = (
                above(|r| r.gpa.saturating_add(r.size)),
                above(|r| r.uaddr.saturating_add(r.size)),
            ) else {
                return Err(
                    "the memory table leaves no room for the shadow rings above its regions"
                        .to_owned(),
                );
            };
            self.shadow = GuestMemoryMmap::from_ranges_with_files([(
                GuestAddress(gpa),
                SHADOW_SIZE as usize,
                Some(FileOffset::new(
                    self.shadow_file
                        .try_clone()
                        .map_err(|e| format!("dup: {e}"))?,
                    0,
                )),
            )])
            .map_err(|e| format!("mapping the shadow rings: {e}"))?;
            self.shadow_gpa = gpa;
            self.shadow_uaddr = uaddr;
        }
        self.guest = Some(Arc::new(guest));
        self.regions = regions;
        Ok(Region {
            gpa: self.shadow_gpa,
            size: SHADOW_SIZE,
            uaddr: self.shadow_uaddr,
            mmap_offset: 0,
        })
    }

    /// Front-end virtual address → guest-physical address.
    fn uaddr_to_gpa(&self, ua: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| ua >= r.uaddr && ua - r.uaddr < r.size)
            .map(|r| r.gpa + (ua - r.uaddr))
    }

    fn shadow_rings(&self, q: usize) -> (u64, u64, u64) {
        let base = self.shadow_gpa + q as u64 * QUEUE_STRIDE;
        (base, base + AVAIL_OFF, base + USED_OFF)
    }

    /// Shadow ring addresses (front-end virtual) for SET_VRING_ADDR.
    pub fn shadow_ring_uaddrs(&self, q: usize) -> (u64, u64, u64) {
        let base = self.shadow_uaddr + q as u64 * QUEUE_STRIDE;
        (base, base + AVAIL_OFF, base + USED_OFF)
    }

    /// SET_VRING_NUM.
    pub fn set_num(&mut self, q: usize, num: u32) {
        if let Some(queue) = self.queues.get_mut(q) {
            let size = u16::try_from(num).unwrap_or(0);
            let resized = size != queue.size;
            queue.size = size;
            if resized {
                // The rings set up for the old size do not fit the new one: the queue is
                // interposed again only by the SET_VRING_ADDR that follows.
                self.stop_interposing(q);
            }
        }
    }

    /// Forgets queue `q`'s guest rings: it is not interposed until a SET_VRING_ADDR can be
    /// shadowed again.
    pub fn stop_interposing(&mut self, q: usize) {
        if let Some(queue) = self.queues.get_mut(q) {
            queue.guest = None;
        }
    }

    /// Whether the proxy moves queue `q`'s entries between the guest's rings and its shadow
    /// rings (false before SET_VRING_ADDR, and when the rings could not be shadowed: then the
    /// backend works on the guest's rings itself).
    pub fn interposed(&self, q: usize) -> bool {
        self.queues
            .get(q)
            .is_some_and(|x| x.guest.is_some() && x.size > 0)
    }

    /// For a queue the proxy does not interpose, passes a notification on as the peer would
    /// have received it without the proxy (the backend always has the proxy's eventfds): a
    /// guest kick (`kick`) to the backend, a backend call to QEMU. Returns whether it did.
    pub fn pass_notification(&self, q: usize, kick: bool) -> bool {
        let Some(queue) = self.queues.get(q).filter(|_| !self.interposed(q)) else {
            return false;
        };
        if kick {
            let _ = queue.kick_back.write(1);
        } else if let Some(f) = &queue.call_front {
            signal_eventfd(f);
        }
        true
    }

    /// SET_VRING_BASE: both index pairs restart at `base`; chains taken before and never
    /// served are taken again from the guest ring.
    pub fn set_base(&mut self, q: usize, base: u32) {
        let base = base as u16;
        let Some(queue) = self.queues.get_mut(q) else {
            return;
        };
        queue.last_avail = base;
        queue.shadow_avail = base;
        queue.reported = false;
        queue.used_reported = false;
        queue.signalled_used = None;
        let q16 = q as u16;
        self.in_flight.retain(|(qq, _), _| *qq != q16);
        self.display_causes.clear(q16);
        let (_, avail, _) = self.shadow_rings(q);
        let _ = self
            .shadow
            .store(base, GuestAddress(avail + 2), Ordering::Release);
    }

    /// SET_VRING_ADDR: translates the guest rings; returns the shadow ring addresses to send
    /// to the backend, or `None` when the proxy cannot interpose this queue (then the message
    /// goes through unchanged and the backend sees what it would see without the proxy).
    pub fn set_addr(
        &mut self,
        q: usize,
        desc: u64,
        used: u64,
        avail: u64,
    ) -> Option<(u64, u64, u64)> {
        // Until this succeeds the queue is not interposed: a restart the proxy cannot shadow
        // must not leave it moving entries between the previous start's rings.
        self.stop_interposing(q);
        let size = self.queues.get(q)?.size;
        if size == 0 || size > MAX_QUEUE_SIZE {
            self.error(
                Some(q as u16),
                None,
                format!("queue {q}: size {size} cannot be shadowed (limit {MAX_QUEUE_SIZE}); not interposed"),
            );
            return None;
        }
        let (Some(d), Some(a), Some(u)) = (
            self.uaddr_to_gpa(desc),
            self.uaddr_to_gpa(avail),
            self.uaddr_to_gpa(used),
        ) else {
            self.error(
                Some(q as u16),
                None,
                format!("queue {q}: ring addresses are outside the memory table; not interposed"),
            );
            return None;
        };
        let guest = self.guest.as_ref()?;
        // The whole of each ring must be guest memory (what a device checks before it starts
        // a queue), which also keeps every address the proxy computes from them in range.
        let size64 = u64::from(size);
        let inside = |at: u64, len: u64| guest.check_range(GuestAddress(at), len as usize);
        if !(inside(d, 16 * size64) && inside(a, 6 + 2 * size64) && inside(u, 6 + 8 * size64)) {
            self.error(
                Some(q as u16),
                None,
                format!(
                    "queue {q}: rings (descriptors {d:#x}, available {a:#x}, used {u:#x}, size {size}) are not all inside guest memory; not interposed"
                ),
            );
            return None;
        }
        let used_idx: u16 = guest.load(GuestAddress(u + 2), Ordering::Acquire).ok()?;
        let (sd, sa, su) = self.shadow_rings(q);
        // A clean shadow: zero descriptor table and rings, then the indices.
        let zero = vec![0u8; QUEUE_STRIDE as usize];
        let _ = self.shadow.write_slice(&zero, GuestAddress(sd));
        let shadow_avail = self.queues[q].shadow_avail;
        let _ = self
            .shadow
            .store(shadow_avail, GuestAddress(sa + 2), Ordering::Release);
        let _ = self
            .shadow
            .store(used_idx, GuestAddress(su + 2), Ordering::Release);
        // Neither side has said yet where it wants its next notification: at the next entry,
        // as on a fresh ring. Zero would mean "at entry 0", which a ring restarted at another
        // base (QEMU's stop and cont) never reaches again: the backend would never be kicked.
        let _ = self
            .shadow
            .store(shadow_avail, avail_event_at(su, size), Ordering::Release);
        let _ = self
            .shadow
            .store(used_idx, used_event_at(sa, size), Ordering::Release);
        let queue = &mut self.queues[q];
        queue.guest = Some((d, a, u));
        queue.handed_back = false;
        queue.last_used = used_idx;
        queue.guest_used = used_idx;
        queue.signalled_used = None;
        Some(self.shadow_ring_uaddrs(q))
    }

    /// Whether the backend asked to be kicked for the shadow entries published since `old` (the
    /// shadow available index before `take_avail`): with EVENT_IDX when its `avail_event` lies
    /// in that range, else unless it set NO_NOTIFY in the shadow used ring. A backend busy
    /// taking entries does not need the kick (it looks at the index again before sleeping), so
    /// a batch costs it one wake-up instead of one per chain.
    pub fn needs_kick(&self, q: usize, old: u16) -> bool {
        let Some(queue) = self.queues.get(q) else {
            return false;
        };
        let new = queue.shadow_avail;
        if new == old {
            return false;
        }
        let size = queue.size;
        if new.wrapping_sub(old) > size {
            return true;
        }
        let (_, _, su) = self.shadow_rings(q);
        // The published index must be visible before the backend's request is read.
        fence(Ordering::SeqCst);
        if self.acked & F_EVENT_IDX != 0 {
            let Ok(event) = self
                .shadow
                .load::<u16>(avail_event_at(su, size), Ordering::Acquire)
            else {
                return true;
            };
            // vring_need_event: event + 1 in (old, new].
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.shadow
                .load::<u16>(GuestAddress(su), Ordering::Acquire)
                .map_or(true, |flags| flags & VRING_USED_F_NO_NOTIFY == 0)
        }
    }

    /// Whether the guest asked to be interrupted for the used entries moved since the last
    /// interrupt, with the device's rules (as libvhost-user and the virtio spec have them):
    /// always when NOTIFY_ON_EMPTY was negotiated and the queue has nothing left (no chain in
    /// flight, nothing new in the available ring); else with EVENT_IDX when the guest's
    /// `used_event` lies in the range moved since the last interrupt; else unless the guest set
    /// NO_INTERRUPT. Call after `take_used` moved entries; a true answer counts as sent.
    pub fn needs_interrupt(&mut self, q: usize) -> bool {
        let Some(queue) = self.queues.get(q) else {
            return false;
        };
        let (Some((_, ga, _)), Some(guest)) = (queue.guest, self.guest.as_ref()) else {
            return true;
        };
        let (size, new, old, last_avail) = (
            queue.size,
            queue.guest_used,
            queue.signalled_used,
            queue.last_avail,
        );
        // The published used index must be visible before the guest's request is read.
        fence(Ordering::SeqCst);
        let q16 = q as u16;
        let empty = self.acked & F_NOTIFY_ON_EMPTY != 0
            && guest
                .load::<u16>(GuestAddress(ga + 2), Ordering::Acquire)
                .is_ok_and(|i| i == last_avail)
            && !self.in_flight.keys().any(|(qq, _)| *qq == q16);
        let wanted = empty
            || if self.acked & F_EVENT_IDX != 0 {
                match (
                    old,
                    guest.load::<u16>(used_event_at(ga, size), Ordering::Acquire),
                ) {
                    (Some(old), Ok(event)) => {
                        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
                    }
                    _ => true,
                }
            } else {
                guest
                    .load::<u16>(GuestAddress(ga), Ordering::Acquire)
                    .map_or(true, |flags| flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
            };
        if wanted || self.acked & F_EVENT_IDX != 0 {
            self.queues[q].signalled_used = Some(new);
        }
        wanted
    }

    /// Asks the guest for a kick at its next chain on queue `q` (`avail_event` at the next
    /// chain with EVENT_IDX, NO_NOTIFY cleared without it), whatever polling had left there.
    /// For a queue being stopped (before GET_VRING_BASE goes on: the ring is still the
    /// device's) and one started (SET_VRING_KICK): a queue stopped while the worker polled
    /// would otherwise keep `avail_event` half the index space ahead, and the guest would not
    /// kick the sleeping worker once the queue ran again on the same ring.
    pub fn arm_guest_kicks(&self, q: usize) {
        self.write_guest_kicks(q, true);
        fence(Ordering::SeqCst);
    }

    /// Writes queue `q`'s guest ring so that the guest kicks at its next chain (`on`) or not
    /// while the worker polls: with EVENT_IDX `avail_event` at the next chain or half the index
    /// space ahead, without it the used ring's NO_NOTIFY flag cleared or set.
    fn write_guest_kicks(&self, q: usize, on: bool) {
        let (Some(queue), Some(g)) = (self.queues.get(q), self.guest.as_ref()) else {
            return;
        };
        let Some((_, _, gu)) = queue.guest.filter(|_| queue.size > 0) else {
            return;
        };
        let _ = if self.acked & F_EVENT_IDX != 0 {
            let event = if on {
                queue.last_avail
            } else {
                queue.last_avail.wrapping_add(0x7fff)
            };
            g.store(event, avail_event_at(gu, queue.size), Ordering::Release)
        } else {
            let flags: u16 = if on { 0 } else { VRING_USED_F_NO_NOTIFY };
            g.store(flags, GuestAddress(gu), Ordering::Release)
        };
    }

    /// Writes the shadow ring of queue `q` so that the backend calls at its next used entry
    /// (`on`) or not while the worker polls: with EVENT_IDX `used_event` at the next entry or
    /// half the index space ahead, without it the NO_INTERRUPT flag cleared or set.
    fn write_backend_calls(&self, q: usize, on: bool) {
        let Some(queue) = self.queues.get(q) else {
            return;
        };
        if queue.guest.is_none() || queue.size == 0 {
            return;
        }
        let (_, sa, _) = self.shadow_rings(q);
        let _ = if self.acked & F_EVENT_IDX != 0 {
            let event = if on {
                queue.last_used
            } else {
                queue.last_used.wrapping_add(0x7fff)
            };
            self.shadow
                .store(event, used_event_at(sa, queue.size), Ordering::Release)
        } else {
            let flags: u16 = if on { 0 } else { VRING_AVAIL_F_NO_INTERRUPT };
            self.shadow
                .store(flags, GuestAddress(sa), Ordering::Release)
        };
    }

    /// Turns notifications off while the worker polls both rings, or back on: the backend's
    /// completion interrupts (`write_backend_calls`) and the guest's kicks
    /// (`write_guest_kicks`; only on running queues: after GET_VRING_BASE the
    /// guest may have freed that memory), as a polling device does (vhost's busy polling): a
    /// guest submitting while the worker polls then makes no notification (under QEMU an exit
    /// per kick) that nobody waits for. After turning them on, the caller must look at both
    /// rings again: the backend may have completed an entry, or the guest published a chain,
    /// before it saw the change (this function ends with the full barrier that look needs).
    pub fn set_notifications(&mut self, on: bool) {
        self.polling = !on;
        for q in 0..self.queues.len() {
            self.write_backend_calls(q, on);
            if self.queues[q].running {
                self.write_guest_kicks(q, on);
            }
        }
        fence(Ordering::SeqCst);
    }

    /// Moves every new guest chain of queue `q` to the shadow ring, recording each command.
    /// Returns true when chains moved (kick the backend when [`ProxyState::needs_kick`] says
    /// so).
    pub fn take_avail(&mut self, q: usize) -> bool {
        let Some(queue) = self.queues.get(q).filter(|x| !self.closed && x.size > 0) else {
            return false;
        };
        let (Some((gd, ga, gu)), true, Some(guest)) =
            (queue.guest, queue.running, self.guest.clone())
        else {
            return false;
        };
        let size = queue.size;
        let (sd, sa, _) = self.shadow_rings(q);
        let event_idx = self.acked & F_EVENT_IDX != 0;
        let mut moved = false;
        while let Ok(avail_idx) = guest.load::<u16>(GuestAddress(ga + 2), Ordering::Acquire) {
            let last = self.queues[q].last_avail;
            if avail_idx == last {
                if !event_idx {
                    break;
                }
                if self.polling {
                    // Polling: no kick wanted (see set_notifications); keep avail_event half
                    // the index space ahead of what was taken.
                    self.write_guest_kicks(q, false);
                    break;
                }
                // Ask for a kick at the next buffer, then look again (the guest may have added
                // one before it could see the new avail_event).
                let _ = guest.store(last, avail_event_at(gu, size), Ordering::Release);
                fence(Ordering::SeqCst);
                match guest.load::<u16>(GuestAddress(ga + 2), Ordering::Acquire) {
                    Ok(again) if again != last => continue,
                    _ => break,
                }
            }
            let delta = avail_idx.wrapping_sub(last);
            if delta > size && !self.queues[q].reported {
                self.queues[q].reported = true;
                let _ = self.recorder.lifecycle(
                    LifecycleKind::ValidationError,
                    Some(q as u16),
                    None,
                    format!("queue {q}: available index moved by {delta} (queue size {size}); forwarded as is"),
                );
            }
            let n = delta.min(size);
            // A transfer ends the batch (within a sane index range): it is published and its
            // guest memory recorded (record_reads, after the kick) before the next chain is
            // taken, so that its MemoryRead records follow its Command and precede the next
            // Command in the file (replay groups records by position).
            let mut publish = avail_idx;
            let mut transfer_taken = false;
            for k in 0..n {
                let slot = last.wrapping_add(k) % size;
                let head: u16 = guest
                    .load(
                        GuestAddress(ga + 4 + 2 * u64::from(slot)),
                        Ordering::Relaxed,
                    )
                    .unwrap_or(u16::MAX);
                self.copy_chain(&guest, gd, sd, size, head);
                let reads = self.pending_reads.len();
                self.record_command(&guest, q as u16, gd, size, head);
                let _ = self.shadow.store(
                    head,
                    GuestAddress(sa + 4 + 2 * u64::from(slot)),
                    Ordering::Relaxed,
                );
                if delta <= size && self.pending_reads.len() > reads {
                    publish = last.wrapping_add(k + 1);
                    transfer_taken = true;
                    break;
                }
            }
            // Crash-safe: the commands reach the file before the backend can see them.
            self.barrier();
            let queue = &mut self.queues[q];
            queue.last_avail = publish;
            queue.shadow_avail = publish;
            let _ = self
                .shadow
                .store(publish, GuestAddress(sa + 2), Ordering::Release);
            moved = true;
            // Also when the transfer was the batch's last chain: the guest may have published
            // the next one meanwhile, and looking again would record it before the transfer's
            // memory.
            if transfer_taken {
                break;
            }
        }
        moved
    }

    /// Copies the ring descriptors of the chain at `head` into the shadow table at the same
    /// indices, following NEXT exactly as the backend will (at most `size` steps, stopping at an
    /// index outside the table): the backend sees the guest's chain, malformed or not.
    fn copy_chain(&self, guest: &GuestMemoryMmap, gd: u64, sd: u64, size: u16, head: u16) {
        let mut idx = head;
        for _ in 0..size {
            if idx >= size {
                break;
            }
            let mut d = [0u8; 16];
            let at = 16 * u64::from(idx);
            if guest.read_slice(&mut d, GuestAddress(gd + at)).is_err() {
                break;
            }
            let _ = self.shadow.write_slice(&d, GuestAddress(sd + at));
            let flags = u16::from_le_bytes([d[12], d[13]]);
            if flags & chain::VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            idx = u16::from_le_bytes([d[14], d[15]]);
        }
    }

    fn record_command(
        &mut self,
        guest: &GuestMemoryMmap,
        queue: u16,
        table: u64,
        size: u16,
        head: u16,
    ) {
        let (walked, request, error) = match chain::walk_chain(guest, table, size, head) {
            Ok(c) => match chain::gather(guest, &c) {
                Ok(r) => (c, r, None),
                Err(e) => (c, Vec::new(), Some(e.to_string())),
            },
            Err((c, e)) => (c, Vec::new(), Some(e.to_string())),
        };
        let writable_len = walked.writable_len();
        let WalkedChain {
            descriptors,
            writable,
            ..
        } = walked;
        let recorded = self.recorder.store(&request).and_then(|payload| {
            self.recorder.append(RecordBody::Command(CommandRecord {
                queue,
                head,
                descriptors,
                writable_len,
                request: payload,
            }))
        });
        let record = match recorded {
            Ok(id) => id,
            Err(e) => {
                self.error(Some(queue), None, format!("recording a command: {e}"));
                u64::MAX
            }
        };
        if let Some(why) = error {
            let _ = self.recorder.lifecycle(
                LifecycleKind::ValidationError,
                Some(queue),
                Some(record),
                format!("malformed descriptor chain (forwarded to the backend as is): {why}"),
            );
        }
        if let Some(slot) = self.last_command.get_mut(usize::from(queue)) {
            *slot = Some(record);
        }
        let flags = le32(&request, 4);
        let fence = (flags & FLAG_FENCE != 0).then(|| le64(&request, 8));
        self.decode(record, (queue, head), &request);
        self.in_flight.insert(
            (queue, head),
            InFlight {
                record,
                queue,
                head,
                name: if request.is_empty() {
                    Cow::Borrowed("malformed chain")
                } else {
                    command_name(&request)
                },
                writable,
                fence,
                reads: Vec::new(),
            },
        );
    }

    /// Keeps a command that can make the backend send display messages in [`DisplayCauses`],
    /// unless the backends refuse it before sending any (a flush or scanout rectangle outside
    /// its resource, an unknown resource, a scanout past 16: QEMU's backend answers an error).
    fn display_cause(&mut self, record: RecordId, queue: u16, command: &Command) {
        let inside = |r: &Rect, res: &Resource| {
            res.width == 0
                || (u64::from(r.x) + u64::from(r.width) <= u64::from(res.width)
                    && u64::from(r.y) + u64::from(r.height) <= u64::from(res.height))
        };
        let scanouts = vgt_device::MAX_SCANOUTS as u32;
        let cause = match (queue, command) {
            (0, Command::ResourceFlush(f)) => {
                let Some(res) = self
                    .resources
                    .get(&f.resource_id)
                    .filter(|r| inside(&f.r, r))
                else {
                    return;
                };
                Cause::Flush {
                    resource: f.resource_id,
                    rect: [f.r.x, f.r.y, f.r.width, f.r.height],
                    size: [res.width, res.height],
                }
            }
            (0, Command::SetScanout(c)) if c.scanout_id < scanouts => {
                if c.resource_id != 0
                    && !self
                        .resources
                        .get(&c.resource_id)
                        .is_some_and(|r| inside(&c.r, r))
                {
                    return;
                }
                Cause::Scanout {
                    scanout: c.scanout_id,
                    resource: c.resource_id,
                    size: [c.r.width, c.r.height],
                }
            }
            (0, Command::SetScanoutBlob(c)) if c.scanout_id < scanouts => Cause::Scanout {
                scanout: c.scanout_id,
                resource: c.resource_id,
                size: [c.r.width, c.r.height],
            },
            (0, Command::ResourceUnref(c)) => Cause::Unref {
                resource: c.resource_id,
            },
            (1, Command::UpdateCursor(c) | Command::MoveCursor(c)) => Cause::Cursor {
                update: matches!(command, Command::UpdateCursor(_)),
                scanout: c.pos.scanout_id,
                pos: [c.pos.x, c.pos.y],
                resource: c.resource_id,
            },
            _ => return,
        };
        self.display_causes.push(queue, record, cause);
    }

    /// Keeps the resource map and records the guest memory a command makes the backend read.
    fn decode(&mut self, record: RecordId, key: (u16, u16), request: &[u8]) {
        let Ok(req) = Request::decode(request) else {
            return;
        };
        self.display_cause(record, key.0, &req.command);
        match req.command {
            Command::ResourceCreate2d(c) => {
                self.resources.insert(
                    c.resource_id,
                    Resource {
                        width: c.width,
                        height: c.height,
                        entries: Vec::new(),
                    },
                );
            }
            Command::ResourceCreateBlob(c) => {
                self.resources.insert(
                    c.resource_id,
                    Resource {
                        width: 0,
                        height: 0,
                        entries: c.entries.iter().map(|e| (e.addr, e.length)).collect(),
                    },
                );
            }
            Command::ResourceAttachBacking(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.entries = c.entries.iter().map(|e| (e.addr, e.length)).collect();
                }
            }
            Command::ResourceDetachBacking(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.entries.clear();
                }
            }
            Command::ResourceUnref(c) => {
                self.resources.remove(&c.resource_id);
            }
            Command::SetScanout(c) => {
                self.scanout_resource.insert(c.scanout_id, c.resource_id);
            }
            Command::UpdateCursor(c) => {
                self.cursor_resource = c.resource_id;
            }
            Command::TransferToHost2d(t) => {
                let Some(res) = self.resources.get(&t.resource_id) else {
                    return;
                };
                if t.r.width == 0 || t.r.height == 0 || res.width == 0 {
                    return;
                }
                // A rect outside the resource is refused by the backends (QEMU's and
                // rutabaga's answer ERR_INVALID_PARAMETER) before they read anything.
                let inside = |at: u32, len: u32, size: u32| {
                    u64::from(at) + u64::from(len) <= u64::from(size)
                };
                if !inside(t.r.x, t.r.width, res.width) || !inside(t.r.y, t.r.height, res.height) {
                    return;
                }
                let stride = u64::from(res.width) * 4;
                let row_len = u64::from(t.r.width) * 4;
                let runs = row_runs(&res.entries, t.offset, row_len, stride, t.r.height);
                // Read and recorded right after the backend is kicked (record_reads), so that
                // hashing and compressing a large transfer overlaps the backend's own work; the
                // records still precede the command's response.
                self.pending_reads.push((record, key, t.resource_id, runs));
            }
            _ => {}
        }
    }

    /// Records the guest memory of the transfers taken since the last call.
    pub fn record_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let Some(guest) = self.guest.clone() else {
            self.pending_reads.clear();
            return;
        };
        // One buffer reused for every read (a fresh 8 MB allocation per 1080p frame costs
        // its page faults each time).
        let mut buf = std::mem::take(&mut self.scratch);
        for (record, key, resource_id, runs) in std::mem::take(&mut self.pending_reads) {
            let mut sums = Vec::with_capacity(runs.len());
            let (mut outside, mut outside_bytes, mut first_outside) = (0usize, 0u64, None);
            for (addr, len) in read_chunks(&runs) {
                let Ok(n) = usize::try_from(len) else {
                    continue;
                };
                // The guest names the backing: a run outside guest RAM is neither read nor
                // given a buffer (a backing of absurd size would be an allocation as large).
                if !guest.check_range(GuestAddress(addr), n) {
                    outside += 1;
                    outside_bytes = outside_bytes.saturating_add(len);
                    first_outside.get_or_insert(addr);
                    continue;
                }
                if buf.len() < n {
                    buf.resize(n, 0);
                }
                let data = &mut buf[..n];
                if guest.read_slice(data, GuestAddress(addr)).is_err() {
                    continue;
                }
                let r = self.recorder.store(data).and_then(|data| {
                    let hash = match &data {
                        Payload::Blob(b) => b.hash.0,
                        Payload::Inline(bytes) => content_hash(bytes),
                    };
                    sums.push((addr, len, hash));
                    self.recorder.append(RecordBody::MemoryRead(MemoryRead {
                        command: record,
                        resource_id,
                        addr,
                        data,
                    }))
                });
                if let Err(e) = r {
                    self.error(None, Some(record), format!("recording a memory read: {e}"));
                }
            }
            if let Some(first) = first_outside {
                // Guest input, recorded but not printed (a guest may send any number).
                let _ = self.recorder.lifecycle(
                    LifecycleKind::Error,
                    None,
                    Some(record),
                    format!(
                        "{outside} piece(s) of the memory transfer #{record} reads lie outside guest memory ({outside_bytes} bytes from {first:#x}): not recorded"
                    ),
                );
            }
            if let Some(p) = self.in_flight.get_mut(&key).filter(|p| p.record == record) {
                p.reads = sums;
            }
        }
        self.scratch = buf;
    }

    /// Reads again the guest memory recorded for command `p` now that its response has come,
    /// before the guest can see the response: memory the guest changed meanwhile is a driver
    /// race, and the backend may have read the newer bytes. Records an
    /// [`LifecycleKind::InFlightWrite`] naming the command when anything changed.
    fn check_reads(&mut self, guest: &GuestMemoryMmap, queue: u16, p: &InFlight) {
        if p.reads.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let (mut changed_runs, mut changed_bytes, mut total, mut first) =
            (0usize, 0u64, 0u64, None);
        for &(addr, len, hash) in &p.reads {
            total += len;
            let Ok(n) = usize::try_from(len) else {
                continue;
            };
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let data = &mut buf[..n];
            if guest.read_slice(data, GuestAddress(addr)).is_err() || content_hash(data) == hash {
                continue;
            }
            changed_runs += 1;
            changed_bytes += len;
            first.get_or_insert(addr);
        }
        self.scratch = buf;
        let Some(first) = first else {
            return;
        };
        let _ = self.recorder.lifecycle(
            LifecycleKind::InFlightWrite,
            Some(queue),
            Some(p.record),
            format!(
                "the guest changed the memory {} #{} read while it was in flight: {changed_runs} of \
                 its {} runs ({changed_bytes} of {total} bytes), the first at {first:#x}; the \
                 backend may have read the newer bytes, the capture holds the older",
                p.name,
                p.record,
                p.reads.len()
            ),
        );
    }

    /// Moves every new shadow used entry of queue `q` to the guest's used ring, recording each
    /// response first. Returns true when entries moved (ask [`ProxyState::needs_interrupt`]
    /// whether to interrupt the guest).
    pub fn take_used(&mut self, q: usize) -> bool {
        self.take_used_inner(q, false)
    }

    /// The first half of [`ProxyState::take_used`]: records the responses of the new shadow
    /// used entries and writes the entries into the guest's used ring, but leaves the guest's
    /// used index (what makes them visible) for the next `take_used`, which publishes them
    /// after its barrier. The queue worker takes the guest's new chains in between, so that one
    /// barrier (one write in crash-safe mode) covers the responses and the commands.
    pub fn stage_used(&mut self, q: usize) -> bool {
        self.take_used_inner(q, true)
    }

    fn take_used_inner(&mut self, q: usize, stage: bool) -> bool {
        self.record_reads();
        let Some(queue) = self.queues.get(q).filter(|x| x.size > 0 && !x.handed_back) else {
            return false;
        };
        let (Some((_, _, gu)), Some(guest)) = (queue.guest, self.guest.clone()) else {
            return false;
        };
        let size = queue.size;
        let (_, sa, su) = self.shadow_rings(q);
        let event_idx = self.acked & F_EVENT_IDX != 0;
        let mut moved = false;
        while let Ok(used_idx) = self
            .shadow
            .load::<u16>(GuestAddress(su + 2), Ordering::Acquire)
        {
            let mut last = self.queues[q].last_used;
            let mut gused = self.queues[q].guest_used;
            let delta = used_idx.wrapping_sub(last);
            if delta > size {
                // A backend bug: more entries than the ring holds. Without the proxy the guest
                // would find the backend's index and the ring's slots as they are; the slots
                // hold the last `size` entries, so only those are moved (and recorded), and
                // the guest's index moves by the whole jump.
                if !self.queues[q].used_reported {
                    self.queues[q].used_reported = true;
                    let _ = self.recorder.lifecycle(
                        LifecycleKind::ValidationError,
                        Some(q as u16),
                        None,
                        format!("queue {q}: the backend's used index moved by {delta} (queue size {size}); forwarded as is"),
                    );
                }
                let skip = delta - size;
                last = last.wrapping_add(skip);
                gused = gused.wrapping_add(skip);
            }
            let mut strays = 0u32;
            let mut first_stray = None;
            while last != used_idx {
                let slot = su + 4 + 8 * u64::from(last % size);
                let id: u32 = self
                    .shadow
                    .load(GuestAddress(slot), Ordering::Relaxed)
                    .unwrap_or(0);
                let len: u32 = self
                    .shadow
                    .load(GuestAddress(slot + 4), Ordering::Relaxed)
                    .unwrap_or(0);
                if !self.record_response(&guest, q as u16, id, len) {
                    strays += 1;
                    first_stray.get_or_insert((id, len));
                }
                let gslot = gu + 4 + 8 * u64::from(gused % size);
                let _ = guest.store(id, GuestAddress(gslot), Ordering::Relaxed);
                let _ = guest.store(len, GuestAddress(gslot + 4), Ordering::Relaxed);
                last = last.wrapping_add(1);
                gused = gused.wrapping_add(1);
                moved = true;
            }
            self.queues[q].last_used = last;
            self.queues[q].guest_used = gused;
            if let Some((id, len)) = first_stray {
                // One line per batch, not one per entry: a backend writing garbage into its
                // used ring must not flood stderr (each entry still has its Response record).
                self.error(
                    Some(q as u16),
                    None,
                    format!("backend returned {strays} id(s) not in flight on queue {q} (first: id {id}, length {len}); forwarded"),
                );
            }
            if stage {
                break;
            }
            // Crash-safe: the responses reach the file before the guest can see them.
            self.barrier();
            let _ = guest.store(gused, GuestAddress(gu + 2), Ordering::Release);
            if !event_idx {
                break;
            }
            if self.polling {
                // Polling: keep the backend from calling (see set_notifications).
                let _ = self.shadow.store(
                    last.wrapping_add(0x7fff),
                    used_event_at(sa, size),
                    Ordering::Release,
                );
                break;
            }
            // Ask the backend to call at its next used entry, then look again.
            let _ = self
                .shadow
                .store(last, used_event_at(sa, size), Ordering::Release);
            fence(Ordering::SeqCst);
            match self
                .shadow
                .load::<u16>(GuestAddress(su + 2), Ordering::Acquire)
            {
                Ok(again) if again != last => continue,
                _ => break,
            }
        }
        moved
    }

    /// Records the response of used entry `id`; false when no chain with that head is in
    /// flight (the entry is recorded with no command, and the caller reports it).
    fn record_response(&mut self, guest: &GuestMemoryMmap, queue: u16, id: u32, len: u32) -> bool {
        let head = u16::try_from(id).unwrap_or(u16::MAX);
        let Some(p) = self.in_flight.remove(&(queue, head)) else {
            let _ = self.recorder.append(RecordBody::Response(ResponseRecord {
                command: u64::MAX,
                queue,
                head,
                used_len: len,
                bytes: Payload::empty(),
            }));
            return false;
        };
        self.check_reads(guest, queue, &p);
        // The bytes the backend wrote: the first `len` bytes of the writable buffers, read
        // straight into one buffer kept for the next response.
        let mut bytes = std::mem::take(&mut self.response);
        bytes.clear();
        // The used length is the backend's word and the buffers the guest's: at most
        // MAX_READ_CHUNK bytes, and only those inside guest memory, are read (a response is a
        // few KiB; this buffer is kept for the next one).
        let mut left = (len as usize).min(MAX_READ_CHUNK as usize);
        for &(addr, l) in &p.writable {
            if left == 0 {
                break;
            }
            let n = (l as usize).min(left);
            if !guest.check_range(GuestAddress(addr), n) {
                break;
            }
            let at = bytes.len();
            bytes.resize(at + n, 0);
            if guest
                .read_slice(&mut bytes[at..], GuestAddress(addr))
                .is_err()
            {
                bytes.truncate(at);
                break;
            }
            left -= n;
        }
        let r = self.recorder.store(&bytes).and_then(|payload| {
            self.recorder.append(RecordBody::Response(ResponseRecord {
                command: p.record,
                queue,
                head,
                used_len: len,
                bytes: payload,
            }))
        });
        if let Err(e) = r {
            self.error(
                Some(queue),
                Some(p.record),
                format!("recording a response: {e}"),
            );
        }
        let rflags = le32(&bytes, 4);
        if p.fence.is_some()
            && rflags & FLAG_FENCE != 0
            && let fence_id = le64(&bytes, 8)
        {
            let _ = self.recorder.append(RecordBody::Fence(FenceSignal {
                command: p.record,
                fence_id,
                ctx_id: le32(&bytes, 16),
                ring_idx: bytes.get(20).copied().unwrap_or(0),
                context_ring: rflags & FLAG_INFO_RING_IDX != 0,
            }));
        }
        if queue == 0 {
            self.last_control_answer = Some(p.record);
        }
        self.last_completed = Some((p.record, p.name));
        self.response = bytes;
        true
    }

    /// Commands in flight for `limit` or longer at `now` that were not reported yet, oldest
    /// first (record, name, queue, head); they count as reported from now on. A command's
    /// time starts when a call first sees it in flight, so the command path carries no clock
    /// and the caller's period (the proxy's main loop: 200 ms at most) is the precision.
    pub fn newly_stalled(
        &mut self,
        now: Instant,
        limit: Duration,
    ) -> Vec<(RecordId, Cow<'static, str>, u16, u16)> {
        let mut out = Vec::new();
        let live: std::collections::HashSet<RecordId> =
            self.in_flight.values().map(|p| p.record).collect();
        let seen = &mut self.stall_watch;
        seen.retain(|record, _| live.contains(record));
        for p in self.in_flight.values() {
            let (since, reported) = seen.entry(p.record).or_insert((now, false));
            if !*reported && now.saturating_duration_since(*since) >= limit {
                *reported = true;
                out.push((p.record, p.name.clone(), p.queue, p.head));
            }
        }
        out.sort_by_key(|p| p.0);
        out
    }

    /// The last command taken from the guest on either queue.
    pub fn latest_command(&self) -> Option<RecordId> {
        self.last_command.iter().flatten().copied().max()
    }

    /// Commands in flight, oldest first.
    pub fn in_flight_sorted(&self) -> Vec<InFlight> {
        let mut v: Vec<InFlight> = self.in_flight.values().cloned().collect();
        v.sort_by_key(|p| p.record);
        v
    }
}

/// The most guest memory one MemoryRead record holds (and so the largest buffer a transfer's
/// recording and its in-flight check need): longer runs are split.
const MAX_READ_CHUNK: u64 = 16 << 20;

/// `runs` split into pieces of at most [`MAX_READ_CHUNK`] bytes.
fn read_chunks(runs: &[(u64, u64)]) -> impl Iterator<Item = (u64, u64)> + '_ {
    runs.iter().flat_map(|&(addr, len)| {
        (0..len.div_ceil(MAX_READ_CHUNK)).map(move |i| {
            let off = i * MAX_READ_CHUNK;
            (addr.wrapping_add(off), (len - off).min(MAX_READ_CHUNK))
        })
    })
}

/// Guest ranges read by a 2D transfer: `rows` rows of `row_len` bytes, row r at backing offset
/// `first + r * stride`, merged where contiguous in guest memory (as vgt-device reports them).
fn row_runs(
    entries: &[(u64, u32)],
    first: u64,
    row_len: u64,
    stride: u64,
    rows: u32,
) -> Vec<(u64, u64)> {
    let mut starts = Vec::with_capacity(entries.len());
    let mut total = 0u64;
    for e in entries {
        starts.push(total);
        total = total.saturating_add(u64::from(e.1));
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in 0..u64::from(rows) {
        let Some(mut boff) = r.checked_mul(stride).and_then(|o| o.checked_add(first)) else {
            break;
        };
        let mut remaining = row_len;
        let mut idx = starts.partition_point(|&s| s <= boff).saturating_sub(1);
        while remaining > 0 {
            let (Some(&(addr, length)), Some(&start)) = (entries.get(idx), starts.get(idx)) else {
                return out;
            };
            let within = boff.saturating_sub(start);
            let avail = u64::from(length).saturating_sub(within);
            if avail == 0 {
                idx += 1;
                continue;
            }
            let n = avail.min(remaining);
            let a = addr.wrapping_add(within);
            match out.last_mut() {
                Some(last) if last.0.checked_add(last.1) == Some(a) => last.1 += n,
                _ => out.push((a, n)),
            }
            boff += n;
            remaining -= n;
            idx += 1;
        }
    }
    out
}

/// Reads an eventfd-like file until it would block (clears it).
pub fn drain_eventfd(f: &File) {
    let mut b = [0u8; 8];
    let mut r = f;
    let _ = r.read(&mut b);
}

/// Signals an eventfd-like file.
pub fn signal_eventfd(f: &File) {
    let mut w = f;
    let _ = w.write_all(&1u64.to_le_bytes());
}

/// Makes a descriptor non-blocking.
pub fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

#[cfg(any(test, fuzzing))]
impl ProxyState {
    /// Whether the shadow rings are mapped at guest-physical `gpa` (the fuzz harnesses check
    /// that the region the backend is told about is this one).
    pub fn shadow_mapped_at(&self, gpa: u64) -> bool {
        use vm_memory::GuestMemoryRegion;
        let mut regions = self.shadow.iter();
        matches!(
            (regions.next(), regions.next()),
            (Some(r), None) if r.start_addr().0 == gpa && r.len() == SHADOW_SIZE
        )
    }

    /// The backend writes queue `q`'s shadow area at offset `at` (modulo its size).
    pub fn write_shadow(&self, q: usize, at: u64, bytes: &[u8]) {
        if q < MAX_QUEUES {
            let (base, _, _) = self.shadow_rings(q);
            let _ = self
                .shadow
                .write_slice(bytes, GuestAddress(base + at % QUEUE_STRIDE));
        }
    }
}

/// The shadow-ring engine driven by arbitrary bytes, playing the guest (ring contents and
/// indices), the backend (shadow used entries) and the front-end (ring size, restarts,
/// stop/start) at once: the `proxy_rings` fuzz target and its seeds in the tests. Nothing a
/// guest, a backend or a front-end writes may make the proxy panic or loop.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use super::*;
    use crate::sink::NullSink;

    const UA: u64 = 0x7000_0000_0000;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x5000;
    const USED: u64 = 0x6000;
    /// Guest RAM: 64 KiB at 0 (rings and buffers).
    const RAM: u64 = 64 << 10;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([
            b.get(at).copied().unwrap_or(0),
            b.get(at + 1).copied().unwrap_or(0),
        ])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from(u16_at(b, at)) | (u32::from(u16_at(b, at + 2)) << 16)
    }

    /// Runs one input: a sequence of operations, each an opcode byte and its arguments
    /// (missing bytes read as 0).
    /// - 0 `off: u16, len: u8, bytes`: the guest writes RAM (descriptors, requests, rings);
    /// - 1 `idx: u16`: the guest publishes its available index, then the proxy takes chains;
    /// - 2 `slot: u8, id: u32, len: u32`: the backend writes a shadow used entry;
    /// - 3 `idx: u16, stage: u8`: the backend publishes its used index, then the proxy moves
    ///   entries (`stage_used` when bit 0 of `stage`);
    /// - 4 `num: u16`: SET_VRING_NUM (any size, 0 and past the shadow limit included);
    /// - 5 `base: u16`: a restart: SET_VRING_BASE and SET_VRING_ADDR at the fixed rings;
    /// - 6 `on: u8, old: u16`: notifications on/off, then the kick and interrupt decisions;
    /// - 7: GET_VRING_BASE (the queue stops) or SET_VRING_KICK (it runs), alternately.
    pub fn run(data: &[u8]) {
        let recorder = Arc::new(Recorder::new(Box::new(NullSink::default())));
        let Ok(mut st) = ProxyState::new(recorder) else {
            return;
        };
        let Ok(file) = memfd(c"guest", RAM) else {
            return;
        };
        let region = Region {
            gpa: 0,
            size: RAM,
            uaddr: UA,
            mmap_offset: 0,
        };
        if st.set_memory(vec![region], &[OwnedFd::from(file)]).is_err() {
            return;
        }
        st.acked = F_EVENT_IDX;
        st.set_num(0, 16);
        st.set_base(0, 0);
        let _ = st.set_addr(0, UA + DESC, UA + USED, UA + AVAIL);
        st.queues[0].running = true;
        let Some(guest) = st.guest.clone() else {
            return;
        };
        let mut at = 0usize;
        while at < data.len() {
            let op = data[at] % 8;
            let args = &data[at + 1..];
            at += 1;
            match op {
                0 => {
                    let off = u64::from(u16_at(args, 0));
                    let len = usize::from(args.get(2).copied().unwrap_or(0));
                    let bytes = args.get(3..3 + len).unwrap_or(&args[args.len().min(3)..]);
                    let _ = guest.write_slice(bytes, GuestAddress(off));
                    at += 3 + bytes.len();
                }
                1 => {
                    let _ =
                        guest.store(u16_at(args, 0), GuestAddress(AVAIL + 2), Ordering::Release);
                    st.take_avail(0);
                    st.record_reads();
                    at += 2;
                }
                2 => {
                    let size = u64::from(st.queues[0].size.max(1));
                    let slot = u64::from(args.first().copied().unwrap_or(0)) % size;
                    let (_, _, su) = st.shadow_rings(0);
                    let entry = su + 4 + 8 * slot;
                    let _ =
                        st.shadow
                            .store(u32_at(args, 1), GuestAddress(entry), Ordering::Relaxed);
                    let _ = st.shadow.store(
                        u32_at(args, 5),
                        GuestAddress(entry + 4),
                        Ordering::Relaxed,
                    );
                    at += 9;
                }
                3 => {
                    let (_, _, su) = st.shadow_rings(0);
                    let _ =
                        st.shadow
                            .store(u16_at(args, 0), GuestAddress(su + 2), Ordering::Release);
                    if args.get(2).copied().unwrap_or(0) & 1 != 0 {
                        st.stage_used(0);
                    } else {
                        st.take_used(0);
                    }
                    at += 3;
                }
                4 => {
                    st.set_num(0, u32::from(u16_at(args, 0)));
                    at += 2;
                }
                5 => {
                    st.set_base(0, u32::from(u16_at(args, 0)));
                    let _ = st.set_addr(0, UA + DESC, UA + USED, UA + AVAIL);
                    at += 2;
                }
                6 => {
                    st.set_notifications(args.first().copied().unwrap_or(0) & 1 != 0);
                    let _ = st.needs_kick(0, u16_at(args, 1));
                    let _ = st.needs_interrupt(0);
                    at += 3;
                }
                _ => {
                    let running = !st.queues[0].running;
                    st.queues[0].running = running;
                    st.arm_guest_kicks(0);
                }
            }
            let _ = st.in_flight_sorted();
        }
    }

    /// What a guest, a backend and a front-end do, as [`run`] inputs: a chain through
    /// and back, an index jump past the ring, a used entry for no chain, a size change
    /// mid-flight, a restart and a stop (the `proxy_rings` fuzz target starts from these).
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut chain = vec![0u8];
        chain.extend_from_slice(&0x1000u16.to_le_bytes());
        chain.push(32);
        for (addr, len, flags, next) in [(0x2000u64, 40u32, 1u16, 1u16), (0x3000, 24, 2, 0)] {
            chain.extend_from_slice(&addr.to_le_bytes());
            chain.extend_from_slice(&len.to_le_bytes());
            chain.extend_from_slice(&flags.to_le_bytes());
            chain.extend_from_slice(&next.to_le_bytes());
        }
        // Request: RESOURCE_CREATE_2D's code at 0x2000.
        chain.extend_from_slice(&[0, 0x00, 0x20, 4, 0x01, 0x01, 0, 0]);
        let publish = |idx: u16| {
            let mut v = vec![1u8];
            v.extend_from_slice(&idx.to_le_bytes());
            v
        };
        let used = |slot: u8, id: u32, len: u32, idx: u16, stage: u8| {
            let mut v = vec![2u8, slot];
            v.extend_from_slice(&id.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.push(3);
            v.extend_from_slice(&idx.to_le_bytes());
            v.push(stage);
            v
        };
        let round_trip = [chain.clone(), publish(1), used(0, 0, 24, 1, 0)].concat();
        let jump = [
            chain.clone(),
            publish(40),
            used(0, 0, 24, 1, 1),
            used(1, 9, 8, 2, 0),
        ]
        .concat();
        let resize = [
            chain.clone(),
            publish(1),
            vec![4, 0, 0],
            used(0, 0, 24, 1, 0),
        ]
        .concat();
        let restart = [
            chain.clone(),
            publish(1),
            vec![7, 5, 1, 0, 7, 4, 0, 8],
            chain.clone(),
            publish(2),
            vec![6, 0, 1, 0, 6, 1, 0, 0],
            used(1, 0, 24, 2, 0),
        ]
        .concat();
        vec![
            ("round_trip", round_trip),
            ("index_jump", jump),
            ("resize_in_flight", resize),
            ("restart", restart),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vgt_format::record::{Payload, Record, RecordId};

    use crate::recorder::{RecordSink, SinkError};

    /// Called with each record as it is appended (plays a guest acting meanwhile).
    type OnAppend = Arc<Mutex<Option<Box<dyn FnMut(&Record) + Send>>>>;

    /// Keeps records in memory (payloads inline); clone the handle to read them back.
    #[derive(Default, Clone)]
    struct MemorySink {
        records: Arc<Mutex<Vec<Record>>>,
        on_append: OnAppend,
    }

    impl std::fmt::Debug for MemorySink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MemorySink").finish_non_exhaustive()
        }
    }

    impl RecordSink for MemorySink {
        fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
            Ok(Payload::Inline(bytes.to_vec()))
        }

        fn append(&mut self, record: &Record) -> Result<RecordId, SinkError> {
            if let Some(hook) = self
                .on_append
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                hook(record);
            }
            let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
            r.push(record.clone());
            Ok(r.len() as u64 - 1)
        }

        fn finish(self: Box<Self>) -> Result<(), SinkError> {
            Ok(())
        }

        fn bytes_written(&self) -> u64 {
            0
        }
    }

    const UA: u64 = 0x7000_0000_0000;
    const DESC: u64 = 0x100;
    const AVAIL: u64 = 0x200;
    const USED: u64 = 0x300;

    /// A proxy state over 1 MiB of guest memory with queue 0 (size 16) set up and running.
    fn setup() -> (ProxyState, MemorySink) {
        setup_with(1 << 20)
    }

    /// [`setup`] with `size` bytes of guest memory.
    fn setup_with(size: u64) -> (ProxyState, MemorySink) {
        let sink = MemorySink::default();
        let recorder = Arc::new(Recorder::new(Box::new(sink.clone())));
        let mut st = ProxyState::new(recorder).unwrap();
        let file = memfd(c"guest", size).unwrap();
        let region = Region {
            gpa: 0,
            size,
            uaddr: UA,
            mmap_offset: 0,
        };
        let extra = st.set_memory(vec![region], &[OwnedFd::from(file)]).unwrap();
        assert_eq!((extra.gpa, extra.uaddr), (SHADOW_GPA, SHADOW_UADDR));
        st.set_num(0, 16);
        st.set_base(0, 0);
        let shadow = st.set_addr(0, UA + DESC, UA + USED, UA + AVAIL).unwrap();
        assert_eq!(shadow, st.shadow_ring_uaddrs(0));
        st.queues[0].running = true;
        (st, sink)
    }

    fn guest(st: &ProxyState) -> Arc<GuestMemoryMmap> {
        st.guest.clone().unwrap()
    }

    /// Chain 0: a 40-byte RESOURCE_CREATE_2D at 0x1000 and 24 writable bytes at 0x2000.
    fn publish_create(st: &ProxyState, avail_idx: u16) {
        let g = guest(st);
        let mut req = vec![0u8; 40];
        req[0..4].copy_from_slice(&0x101u32.to_le_bytes());
        g.write_slice(&req, GuestAddress(0x1000)).unwrap();
        let mut d = Vec::new();
        d.extend_from_slice(&0x1000u64.to_le_bytes());
        d.extend_from_slice(&40u32.to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&0x2000u64.to_le_bytes());
        d.extend_from_slice(&24u32.to_le_bytes());
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        g.write_slice(&d, GuestAddress(DESC)).unwrap();
        g.store(0u16, GuestAddress(AVAIL + 4), Ordering::Relaxed)
            .unwrap();
        g.store(avail_idx, GuestAddress(AVAIL + 2), Ordering::Release)
            .unwrap();
    }

    fn bodies(sink: &MemorySink) -> Vec<RecordBody> {
        sink.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    #[test]
    fn chain_goes_to_the_shadow_ring_and_its_response_back_recorded() {
        let (mut st, sink) = setup();
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        let (sd, sa, su) = st.shadow_rings(0);
        // The backend sees the same descriptors and the head in its available ring.
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        guest(&st).read_slice(&mut a, GuestAddress(DESC)).unwrap();
        st.shadow.read_slice(&mut b, GuestAddress(sd)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            st.shadow
                .load::<u16>(GuestAddress(sa + 2), Ordering::Acquire)
                .unwrap(),
            1
        );
        // The backend answers: bytes in guest memory, then its used ring.
        let mut resp = vec![0u8; 24];
        resp[0..4].copy_from_slice(&0x1100u32.to_le_bytes());
        guest(&st).write_slice(&resp, GuestAddress(0x2000)).unwrap();
        st.shadow
            .store(0u32, GuestAddress(su + 4), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(24u32, GuestAddress(su + 8), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(1u16, GuestAddress(su + 2), Ordering::Release)
            .unwrap();
        assert!(st.take_used(0));
        let g = guest(&st);
        assert_eq!(
            g.load::<u16>(GuestAddress(USED + 2), Ordering::Acquire)
                .unwrap(),
            1
        );
        assert_eq!(g.read_obj::<u32>(GuestAddress(USED + 8)).unwrap(), 24);
        let recs = bodies(&sink);
        let cmd = recs
            .iter()
            .position(|r| matches!(r, RecordBody::Command(_)))
            .unwrap() as u64;
        let resp_rec = recs.iter().find_map(|r| match r {
            RecordBody::Response(x) => Some(x.clone()),
            _ => None,
        });
        let resp_rec = resp_rec.unwrap();
        assert_eq!(resp_rec.command, cmd);
        assert_eq!(resp_rec.bytes, Payload::Inline(resp));
        assert!(st.in_flight.is_empty());
        assert_eq!(st.last_completed.as_ref().map(|l| l.0), Some(cmd));
    }

    #[test]
    fn a_response_claim_as_large_as_the_guest_buffer_is_read_16_mib_at_most() {
        // The guest's writable buffer is 48 MiB of its 64 MiB, the backend's used entry says it
        // wrote 4 GiB - 1: the proxy used to read all 48 MiB as "the response" and keep a
        // buffer that large for every later one. A virtio-gpu response is a few KiB.
        let (mut st, sink) = setup_with(64 << 20);
        publish_create(&st, 1);
        let g = guest(&st);
        g.write_obj(48u32 << 20, GuestAddress(DESC + 16 + 8))
            .unwrap();
        assert!(st.take_avail(0));
        backend_entry(&st, 0, 0, u32::MAX);
        backend_used_idx(&st, 1);
        assert!(st.take_used(0));
        assert!(
            st.response.capacity() <= MAX_READ_CHUNK as usize,
            "{} bytes kept",
            st.response.capacity()
        );
        let resp = bodies(&sink)
            .into_iter()
            .find_map(|r| match r {
                RecordBody::Response(x) => Some(x),
                _ => None,
            })
            .unwrap();
        assert_eq!(resp.used_len, u32::MAX);
    }

    #[test]
    fn staged_response_is_recorded_but_reaches_the_guest_only_at_the_next_take_used() {
        let (mut st, sink) = setup();
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        backend_completes(&st, 1);
        guest_republishes(&st, 2);
        assert!(st.stage_used(0));
        let used_idx = |st: &ProxyState| {
            guest(st)
                .load::<u16>(GuestAddress(USED + 2), Ordering::Acquire)
                .unwrap()
        };
        // Recorded, entry written, index not yet published.
        assert!(
            bodies(&sink)
                .iter()
                .any(|r| matches!(r, RecordBody::Response(_)))
        );
        assert_eq!(used_idx(&st), 0);
        // The next chain is taken (its barrier covers the response), then published.
        assert!(st.take_avail(0));
        assert_eq!(used_idx(&st), 0);
        assert!(!st.take_used(0));
        assert_eq!(used_idx(&st), 1);
        assert_eq!(
            guest(&st).read_obj::<u32>(GuestAddress(USED + 8)).unwrap(),
            24
        );
    }

    #[test]
    fn bogus_used_id_from_the_backend_is_forwarded_and_recorded_not_fatal() {
        let (mut st, sink) = setup();
        let (_, _, su) = st.shadow_rings(0);
        st.shadow
            .store(7u32, GuestAddress(su + 4), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(99u32, GuestAddress(su + 8), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(1u16, GuestAddress(su + 2), Ordering::Release)
            .unwrap();
        assert!(st.take_used(0));
        let g = guest(&st);
        // The guest sees exactly what the backend wrote (as without the proxy).
        assert_eq!(g.read_obj::<u32>(GuestAddress(USED + 4)).unwrap(), 7);
        assert_eq!(g.read_obj::<u32>(GuestAddress(USED + 8)).unwrap(), 99);
        let recs = bodies(&sink);
        assert!(recs.iter().any(
            |r| matches!(r, RecordBody::Response(x) if x.command == u64::MAX && x.used_len == 99)
        ));
        assert!(
            recs.iter()
                .any(|r| matches!(r, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error))
        );
    }

    #[test]
    fn used_index_running_ahead_moves_the_ring_once_and_is_reported_once() {
        // A backend bug: its used index jumps 40000 entries on a ring of 16. The guest gets
        // the backend's index and the 16 slots as they are (what it would see without the
        // proxy), but the proxy moves and records 16 entries, not 40000, and reports the jump
        // and the stray ids once each (it used to write 40000 entries and print 40000 lines).
        let (mut st, sink) = setup();
        for slot in 0..16u64 {
            backend_entry(&st, slot, 1000 + slot as u32, slot as u32);
        }
        backend_used_idx(&st, 40000);
        assert!(st.take_used(0));
        let g = guest(&st);
        assert_eq!(
            g.load::<u16>(GuestAddress(USED + 2), Ordering::Acquire)
                .unwrap(),
            40000
        );
        for slot in 0..16u64 {
            assert_eq!(
                g.read_obj::<u32>(GuestAddress(USED + 4 + 8 * slot))
                    .unwrap(),
                1000 + slot as u32
            );
        }
        let recs = bodies(&sink);
        let responses = recs
            .iter()
            .filter(|r| matches!(r, RecordBody::Response(_)))
            .count();
        assert_eq!(responses, 16);
        let lifecycle: Vec<&str> = recs
            .iter()
            .filter_map(|r| match r {
                RecordBody::Lifecycle(l) => Some(l.message.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(lifecycle.len(), 2, "{lifecycle:?}");
        assert!(
            lifecycle[0].contains("used index moved by 40000"),
            "{lifecycle:?}"
        );
        assert!(
            lifecycle[1].contains("16 id(s) not in flight"),
            "{lifecycle:?}"
        );
        // Nothing more to move.
        assert!(!st.take_used(0));
    }

    #[test]
    fn avail_index_running_ahead_is_forwarded_and_reported_once() {
        let (mut st, sink) = setup();
        publish_create(&st, 100);
        assert!(st.take_avail(0));
        let (_, sa, _) = st.shadow_rings(0);
        assert_eq!(
            st.shadow
                .load::<u16>(GuestAddress(sa + 2), Ordering::Acquire)
                .unwrap(),
            100
        );
        let errors = bodies(&sink)
            .iter()
            .filter(|r| matches!(r, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::ValidationError))
            .count();
        assert_eq!(errors, 1);
    }

    #[test]
    fn no_chains_are_taken_once_the_backend_is_gone() {
        let (mut st, _) = setup();
        st.closed = true;
        publish_create(&st, 1);
        assert!(!st.take_avail(0));
        assert!(st.in_flight.is_empty());
    }

    /// The backend completes chain 0 as shadow used entry `n - 1` (used index becomes `n`).
    fn backend_completes(st: &ProxyState, n: u16) {
        let (_, _, su) = st.shadow_rings(0);
        let slot = su + 4 + 8 * u64::from((n - 1) % 16);
        st.shadow
            .store(0u32, GuestAddress(slot), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(24u32, GuestAddress(slot + 4), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(n, GuestAddress(su + 2), Ordering::Release)
            .unwrap();
    }

    /// The guest publishes chain 0 again as available entry `n - 1`.
    fn guest_republishes(st: &ProxyState, n: u16) {
        let g = guest(st);
        g.store(
            0u16,
            GuestAddress(AVAIL + 4 + 2 * u64::from((n - 1) % 16)),
            Ordering::Relaxed,
        )
        .unwrap();
        g.store(n, GuestAddress(AVAIL + 2), Ordering::Release)
            .unwrap();
    }

    #[test]
    fn needs_kick_with_event_idx_only_when_the_backend_waits_at_the_new_entries() {
        let (mut st, _) = setup();
        st.acked = F_EVENT_IDX;
        let (_, _, su) = st.shadow_rings(0);
        let avail_event = su + 4 + 8 * 16;
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        // The backend waits for entry 0 (avail_event 0): kick.
        st.shadow
            .store(0u16, GuestAddress(avail_event), Ordering::Release)
            .unwrap();
        assert!(st.needs_kick(0, 0));
        // A backend still busy before entry 0 (avail_event behind) looks again by itself.
        st.shadow
            .store(u16::MAX, GuestAddress(avail_event), Ordering::Release)
            .unwrap();
        assert!(!st.needs_kick(0, 0));
        // Nothing published since `old`: no kick.
        assert!(!st.needs_kick(0, 1));
    }

    #[test]
    fn needs_kick_without_event_idx_respects_no_notify() {
        let (mut st, _) = setup();
        let (_, _, su) = st.shadow_rings(0);
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        assert!(st.needs_kick(0, 0));
        st.shadow
            .store(VRING_USED_F_NO_NOTIFY, GuestAddress(su), Ordering::Release)
            .unwrap();
        assert!(!st.needs_kick(0, 0));
    }

    #[test]
    fn needs_interrupt_with_event_idx_follows_used_event_and_notify_on_empty() {
        let (mut st, _) = setup();
        st.acked = F_EVENT_IDX;
        let used_event = GuestAddress(AVAIL + 4 + 2 * 16);
        guest(&st)
            .store(0u16, used_event, Ordering::Release)
            .unwrap();
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        backend_completes(&st, 1);
        assert!(st.take_used(0));
        // First interrupt since the ring started: always.
        assert!(st.needs_interrupt(0));
        // Entry 1 completes; the guest asked for an interrupt after entry 0 only: none.
        guest_republishes(&st, 2);
        assert!(st.take_avail(0));
        backend_completes(&st, 2);
        assert!(st.take_used(0));
        assert!(!st.needs_interrupt(0));
        // Entry 2 completes with used_event 2: interrupt.
        guest(&st)
            .store(2u16, used_event, Ordering::Release)
            .unwrap();
        guest_republishes(&st, 3);
        assert!(st.take_avail(0));
        backend_completes(&st, 3);
        assert!(st.take_used(0));
        assert!(st.needs_interrupt(0));
        // With NOTIFY_ON_EMPTY, an empty queue interrupts whatever used_event says.
        st.acked |= F_NOTIFY_ON_EMPTY;
        guest_republishes(&st, 4);
        assert!(st.take_avail(0));
        backend_completes(&st, 4);
        assert!(st.take_used(0));
        assert!(st.needs_interrupt(0));
    }

    #[test]
    fn needs_interrupt_without_event_idx_respects_no_interrupt() {
        let (mut st, _) = setup();
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        backend_completes(&st, 1);
        assert!(st.take_used(0));
        guest(&st)
            .store(
                VRING_AVAIL_F_NO_INTERRUPT,
                GuestAddress(AVAIL),
                Ordering::Release,
            )
            .unwrap();
        assert!(!st.needs_interrupt(0));
        guest(&st)
            .store(0u16, GuestAddress(AVAIL), Ordering::Release)
            .unwrap();
        assert!(st.needs_interrupt(0));
    }

    #[test]
    fn polling_moves_used_event_and_avail_event_away_and_sleeping_brings_them_back() {
        let (mut st, _) = setup();
        st.acked = F_EVENT_IDX;
        let (_, sa, _) = st.shadow_rings(0);
        let used_event = GuestAddress(sa + 4 + 2 * 16);
        let avail_event = GuestAddress(USED + 4 + 8 * 16);
        let g = guest(&st);
        let events = |st: &ProxyState| {
            (
                st.shadow
                    .load::<u16>(used_event, Ordering::Acquire)
                    .unwrap(),
                g.load::<u16>(avail_event, Ordering::Acquire).unwrap(),
            )
        };
        st.set_notifications(false);
        assert_eq!(events(&st), (0x7fff, 0x7fff));
        // A chain taken while polling leaves the guest's avail_event ahead of it: the guest's
        // next chain makes no kick.
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        assert_eq!(events(&st), (0x7fff, 0x8000));
        st.set_notifications(true);
        assert_eq!(events(&st), (0, 1));
        // Not polling: taking a chain asks for a kick at the next one.
        publish_create(&st, 2);
        assert!(st.take_avail(0));
        assert_eq!(events(&st), (0, 2));
    }

    #[test]
    fn a_stopped_queue_s_guest_ring_is_not_written_when_polling_starts_or_stops() {
        let (mut st, _) = setup();
        st.acked = F_EVENT_IDX;
        let g = guest(&st);
        let avail_event = GuestAddress(USED + 4 + 8 * 16);
        // GET_VRING_BASE stopped the queue; the guest reuses the ring's memory.
        st.queues[0].running = false;
        g.store(0xabcdu16, avail_event, Ordering::Release).unwrap();
        g.store(0x1234u16, GuestAddress(USED), Ordering::Release)
            .unwrap();
        st.set_notifications(false);
        st.set_notifications(true);
        st.acked = 0;
        st.set_notifications(false);
        assert_eq!(
            g.load::<u16>(avail_event, Ordering::Acquire).unwrap(),
            0xabcd
        );
        assert_eq!(
            g.load::<u16>(GuestAddress(USED), Ordering::Acquire)
                .unwrap(),
            0x1234
        );
    }

    #[test]
    fn a_queue_stopped_while_polling_asks_for_kicks_again_when_it_runs_again() {
        let (mut st, _) = setup();
        st.acked = F_EVENT_IDX;
        let g = guest(&st);
        let avail_event = GuestAddress(USED + 4 + 8 * 16);
        publish_create(&st, 1);
        st.set_notifications(false);
        assert!(st.take_avail(0));
        assert_eq!(
            g.load::<u16>(avail_event, Ordering::Acquire).unwrap(),
            0x8000
        );
        // GET_VRING_BASE while polling: the ring is left asking for the next kick.
        st.arm_guest_kicks(0);
        st.queues[0].running = false;
        st.set_notifications(true);
        assert_eq!(g.load::<u16>(avail_event, Ordering::Acquire).unwrap(), 1);
        // Without EVENT_IDX: NO_NOTIFY cleared.
        st.acked = 0;
        st.queues[0].running = true;
        st.set_notifications(false);
        assert_eq!(
            g.load::<u16>(GuestAddress(USED), Ordering::Acquire)
                .unwrap(),
            VRING_USED_F_NO_NOTIFY
        );
        st.arm_guest_kicks(0);
        assert_eq!(
            g.load::<u16>(GuestAddress(USED), Ordering::Acquire)
                .unwrap(),
            0
        );
    }

    #[test]
    fn polling_without_event_idx_sets_no_notify_and_no_interrupt() {
        let (mut st, _) = setup();
        let (_, sa, _) = st.shadow_rings(0);
        let g = guest(&st);
        let flags = |st: &ProxyState| {
            (
                st.shadow
                    .load::<u16>(GuestAddress(sa), Ordering::Acquire)
                    .unwrap(),
                g.load::<u16>(GuestAddress(USED), Ordering::Acquire)
                    .unwrap(),
            )
        };
        st.set_notifications(false);
        assert_eq!(
            flags(&st),
            (VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY)
        );
        st.set_notifications(true);
        assert_eq!(flags(&st), (0, 0));
    }

    /// Writes a one-chain request (readable `req` at `at`, 24 writable bytes after it) as
    /// descriptors `head` and `head + 1`, and publishes it as available entry `avail_idx - 1`.
    fn publish_request(g: &GuestMemoryMmap, head: u16, at: u64, req: &[u8], avail_idx: u16) {
        g.write_slice(req, GuestAddress(at)).unwrap();
        let mut d = Vec::new();
        d.extend_from_slice(&at.to_le_bytes());
        d.extend_from_slice(&(req.len() as u32).to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&(head + 1).to_le_bytes());
        d.extend_from_slice(&(at + 0x100).to_le_bytes());
        d.extend_from_slice(&24u32.to_le_bytes());
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        g.write_slice(&d, GuestAddress(DESC + 16 * u64::from(head)))
            .unwrap();
        let slot = u64::from((avail_idx - 1) % 16);
        g.store(head, GuestAddress(AVAIL + 4 + 2 * slot), Ordering::Relaxed)
            .unwrap();
        g.store(avail_idx, GuestAddress(AVAIL + 2), Ordering::Release)
            .unwrap();
    }

    /// The guest publishes a flush while the proxy records the transfer that was, when the
    /// proxy looked, the last available chain: the flush is taken only after the transfer's
    /// guest memory is recorded (the CI failure of stop 10 had it the other way round).
    #[test]
    fn chain_published_while_a_last_transfer_is_recorded_waits_for_its_memory() {
        for event_idx in [false, true] {
            let (mut st, sink) = setup();
            if event_idx {
                st.acked = F_EVENT_IDX;
            }
            let g = guest(&st);
            // Resource 3: 4x4 pixels backed by 64 bytes at 0x8000.
            g.write_slice(&[0xab; 64], GuestAddress(0x8000)).unwrap();
            st.resources.insert(
                3,
                Resource {
                    width: 4,
                    height: 4,
                    entries: vec![(0x8000, 64)],
                },
            );
            let mut transfer = vec![0u8; 56];
            transfer[0..4].copy_from_slice(&0x105u32.to_le_bytes());
            transfer[32..36].copy_from_slice(&4u32.to_le_bytes());
            transfer[36..40].copy_from_slice(&4u32.to_le_bytes());
            transfer[48..52].copy_from_slice(&3u32.to_le_bytes());
            let mut flush = vec![0u8; 48];
            flush[0..4].copy_from_slice(&0x104u32.to_le_bytes());
            flush[40..44].copy_from_slice(&3u32.to_le_bytes());
            publish_request(&g, 0, 0x1000, &transfer, 1);
            let guest_side = g.clone();
            *sink.on_append.lock().unwrap() = Some(Box::new(move |r: &Record| {
                if let RecordBody::Command(c) = &r.body
                    && c.head == 0
                {
                    publish_request(&guest_side, 2, 0x3000, &flush, 2);
                }
            }));
            // What the queue worker does (step): take, record the memory, take again.
            while st.take_avail(0) {
                st.record_reads();
            }
            let order: Vec<&str> = bodies(&sink)
                .iter()
                .filter_map(|r| match r {
                    RecordBody::Command(c) if c.head == 0 => Some("transfer"),
                    RecordBody::Command(c) if c.head == 2 => Some("flush"),
                    RecordBody::MemoryRead(m) if m.data == Payload::Inline(vec![0xab; 64]) => {
                        Some("memory")
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                order,
                ["transfer", "memory", "flush"],
                "event_idx {event_idx}"
            );
        }
    }

    #[test]
    fn read_chunks_split_long_runs_and_keep_short_ones() {
        let m = MAX_READ_CHUNK;
        let runs = [(0x1000, 64), (1 << 40, 2 * m + 5), (0x9000, m)];
        let chunks: Vec<(u64, u64)> = read_chunks(&runs).collect();
        assert_eq!(
            chunks,
            vec![
                (0x1000, 64),
                (1 << 40, m),
                ((1 << 40) + m, m),
                ((1 << 40) + 2 * m, 5),
                (0x9000, m),
            ]
        );
        assert_eq!(read_chunks(&[(0, 0)]).count(), 0);
    }

    #[test]
    fn row_runs_full_width_rows_merge_into_one_run() {
        let runs = row_runs(&[(0x1000, 4096)], 0, 64, 64, 4);
        assert_eq!(runs, vec![(0x1000, 256)]);
    }

    #[test]
    fn row_runs_split_across_entries() {
        // Two pages not contiguous; one 16-byte row straddles them.
        let runs = row_runs(&[(0x1000, 8), (0x9000, 8)], 0, 16, 16, 1);
        assert_eq!(runs, vec![(0x1000, 8), (0x9000, 8)]);
    }

    #[test]
    fn row_runs_partial_rows_skip_the_gap() {
        let runs = row_runs(&[(0, 1024)], 4, 8, 32, 2);
        assert_eq!(runs, vec![(4, 8), (36, 8)]);
    }

    /// The backend writes used entry `slot` of queue 0's shadow ring: `id`, `len`.
    fn backend_entry(st: &ProxyState, slot: u64, id: u32, len: u32) {
        let (_, _, su) = st.shadow_rings(0);
        let at = su + 4 + 8 * slot;
        st.shadow
            .store(id, GuestAddress(at), Ordering::Relaxed)
            .unwrap();
        st.shadow
            .store(len, GuestAddress(at + 4), Ordering::Relaxed)
            .unwrap();
    }

    /// The backend publishes its used index `idx` on queue 0's shadow ring.
    fn backend_used_idx(st: &ProxyState, idx: u16) {
        let (_, _, su) = st.shadow_rings(0);
        st.shadow
            .store(idx, GuestAddress(su + 2), Ordering::Release)
            .unwrap();
    }

    /// The backend publishes one used entry (id 0, 24 bytes) on queue 0's shadow ring.
    fn backend_uses_one(st: &ProxyState) {
        backend_entry(st, 0, 0, 24);
        backend_used_idx(st, 1);
    }

    #[test]
    fn new_queue_size_without_new_ring_addresses_leaves_the_queue_alone() {
        // SET_VRING_NUM 0 (or any size change) after the rings were set up: the old ring
        // addresses do not fit the new size, and used entries from the backend were taken
        // modulo 0 (a panic).
        let (mut st, _sink) = setup();
        publish_create(&st, 1);
        assert!(st.take_avail(0));
        st.set_num(0, 0);
        backend_uses_one(&st);
        assert!(!st.take_used(0));
        assert!(!st.stage_used(0));
        publish_create(&st, 2);
        assert!(!st.take_avail(0));
        // SET_VRING_ADDR at the new size interposes the queue again.
        st.set_num(0, 8);
        st.set_base(0, 2);
        assert!(st.set_addr(0, UA + DESC, UA + USED, UA + AVAIL).is_some());
        publish_create(&st, 3);
        assert!(st.take_avail(0));
    }

    #[test]
    fn ring_engine_keeps_going_on_every_seed_and_its_cuts() {
        for (name, input) in super::fuzzing::seeds() {
            for cut in 0..=input.len() {
                eprintln!("{name} cut at {cut}");
                super::fuzzing::run(&input[..cut]);
            }
        }
    }

    #[test]
    fn ring_seeds_on_disk_are_the_generated_ones() {
        // fuzz/seeds/proxy_rings holds fuzzing::seeds() for the proxy_rings fuzz target.
        crate::fuzzing::check_seeds_on_disk("proxy_rings", &super::fuzzing::seeds());
    }

    #[test]
    fn rings_that_leave_guest_memory_are_not_interposed() {
        // 1 MiB of RAM at 0 (setup) and one page at the very top of guest-physical space.
        let (mut st, sink) = setup();
        let top = Region {
            gpa: u64::MAX - 0x1000,
            size: 0x1000,
            uaddr: UA + (2 << 20),
            mmap_offset: 0,
        };
        st.add_region(top, &OwnedFd::from(memfd(c"top", 0x1000).unwrap()))
            .unwrap();
        // A used ring of 16 entries (134 bytes) starting 8 bytes before the end of RAM, then
        // one starting 8 bytes before the end of the address space: the proxy computed
        // `used + 4 + 8 * size` for the latter (an overflow) and wrote past RAM for both.
        for used in [UA + (1 << 20) - 8, top.uaddr + 0xff8] {
            assert_eq!(st.set_addr(0, UA + DESC, used, UA + AVAIL), None);
            assert!(!st.interposed(0));
            st.arm_guest_kicks(0);
            assert!(!st.take_avail(0));
            assert!(!st.take_used(0));
        }
        // Descriptor table and available ring too.
        assert_eq!(
            st.set_addr(0, top.uaddr + 0x1000 - 0x80, UA + USED, UA + AVAIL),
            None
        );
        assert_eq!(
            st.set_addr(0, UA + DESC, UA + USED, top.uaddr + 0xffc),
            None
        );
        let errors: Vec<String> = bodies(&sink)
            .iter()
            .filter_map(|r| match r {
                RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error => {
                    Some(l.message.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| e.contains("not all inside guest memory")),
            "{errors:?}"
        );
        // Rings inside RAM are shadowed again.
        assert!(st.set_addr(0, UA + DESC, UA + USED, UA + AVAIL).is_some());
        assert!(st.interposed(0));
    }

    #[test]
    fn a_memory_table_leaving_no_room_for_the_shadow_keeps_the_proxy_as_it_was() {
        let (mut st, _sink) = setup();
        let before = st.shadow_region();
        // A region where the shadow sits (front-end addresses) and one at the top of
        // guest-physical space: no room above them. The proxy saturated its shadow address to
        // 2^64-1, kept its mapping where it was, and overflowed at the next table.
        let table = [
            Region {
                gpa: 0,
                size: 1 << 20,
                uaddr: SHADOW_UADDR,
                mmap_offset: 0,
            },
            Region {
                gpa: u64::MAX - 0x1000,
                size: 0x1000,
                uaddr: UA,
                mmap_offset: 0,
            },
        ];
        let fds = [
            OwnedFd::from(memfd(c"low", 1 << 20).unwrap()),
            OwnedFd::from(memfd(c"top", 0x1000).unwrap()),
        ];
        let e = st.set_memory(table.to_vec(), &fds).unwrap_err();
        assert!(e.contains("no room for the shadow rings"), "{e}");
        assert_eq!(st.shadow_region(), before);
        assert!(st.shadow_mapped_at(before.gpa));
        assert_eq!(
            st.regions[0].uaddr, UA,
            "the old table is still the proxy's view"
        );
        // The next table that has room moves the shadow above it.
        let extra = st.set_memory(table[..1].to_vec(), &fds[..1]).unwrap();
        assert_eq!(
            (extra.gpa, extra.uaddr),
            (1 << 30, SHADOW_UADDR + (1 << 30))
        );
        assert!(st.shadow_mapped_at(extra.gpa));
    }

    #[test]
    fn regions_past_the_end_of_their_file_are_refused() {
        // Mapped, the missing pages raise SIGBUS at the proxy's first read of them (found by
        // the proxy_messages fuzz target: a ring in such a region took the proxy down).
        let (mut st, _sink) = setup();
        let short = Region {
            gpa: 0x1000_0000,
            size: 0x10000,
            uaddr: UA + 0x1000_0000,
            mmap_offset: 0,
        };
        let page = || OwnedFd::from(memfd(c"short", 0x1000).unwrap());
        let e = st.add_region(short, &page()).unwrap_err();
        assert!(
            e.contains("extend past the end of its 4096-byte file"),
            "{e}"
        );
        let offset = Region {
            size: 0x1000,
            mmap_offset: 0x1000,
            ..short
        };
        assert!(st.add_region(offset, &page()).is_err());
        let wraps = Region {
            mmap_offset: u64::MAX,
            ..offset
        };
        assert!(st.add_region(wraps, &page()).is_err());
        let e = st.set_memory(vec![short], &[page()]).unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        // The proxy's view is the previous table's, and a region its file holds is taken.
        assert_eq!(st.regions.len(), 1);
        st.add_region(
            Region {
                size: 0x1000,
                ..short
            },
            &page(),
        )
        .unwrap();
    }

    #[test]
    fn notifications_of_a_queue_not_interposed_pass_through() {
        let (mut st, _sink) = setup();
        // QEMU's call eventfd, played by a socket whose other end shows what was signalled.
        let (call, qemu) = std::os::unix::net::UnixStream::pair().unwrap();
        qemu.set_nonblocking(true).unwrap();
        st.queues[0].call_front = Some(File::from(OwnedFd::from(call)));
        let signalled = || {
            let mut b = [0u8; 8];
            (&qemu).read(&mut b).map(|_| u64::from_le_bytes(b)).ok()
        };
        assert!(st.interposed(0));
        assert!(!st.pass_notification(0, true));
        assert!(!st.pass_notification(0, false));
        assert!(st.queues[0].kick_back.read().is_err(), "no kick passed on");
        assert_eq!(signalled(), None, "no call passed on");
        assert!(
            st.set_addr(0, UA + (4 << 20), UA + USED, UA + AVAIL)
                .is_none()
        );
        assert!(!st.interposed(0));
        assert!(st.pass_notification(0, true));
        assert_eq!(st.queues[0].kick_back.read().unwrap(), 1);
        assert!(st.pass_notification(0, false));
        assert_eq!(signalled(), Some(1));
    }

    #[test]
    fn ring_addresses_the_proxy_cannot_shadow_stop_the_old_interposition() {
        // A restart whose SET_VRING_ADDR cannot be interposed goes to the backend unchanged;
        // the backend then works on the guest's rings itself, and the proxy must stop moving
        // entries between them and the shadow rings of the previous start.
        let (mut st, _sink) = setup();
        st.set_base(0, 0);
        assert!(
            st.set_addr(0, UA + (4 << 20), UA + USED, UA + AVAIL)
                .is_none()
        );
        publish_create(&st, 1);
        assert!(!st.take_avail(0));
        backend_uses_one(&st);
        assert!(!st.take_used(0));
    }
}
