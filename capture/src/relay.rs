//! The vhost-user message relay: QEMU's connection ends here, every message (with its file
//! descriptors) is recorded byte for byte and passed on to the vhost-user-backend daemon over a
//! private socket, and the daemon's replies travel back the same way.
//!
//! vhost-user-backend builds its request handler privately (`VhostUserHandler::new` is
//! crate-internal), so wrapping the handler to observe requests is not possible; interposing the
//! socket is, and it records the real wire bytes (header flags, fd counts, replies included)
//! instead of re-encoded parsed values.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vgt_format::record::{Direction, LifecycleKind, RecordBody, VhostUserMessage};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::gpu_socket::GpuSlot;
use crate::recorder::Recorder;

/// vhost-user header length.
pub const HEADER_LEN: usize = 12;
/// Largest payload the relay accepts (the vhost crate's own limit is 4 KiB).
pub const MAX_PAYLOAD: u32 = 0x10000;
/// Most file descriptors one message may carry.
const MAX_FDS: usize = 32;

/// vhost-user front-end request codes the relay interprets for lifecycle records.
pub mod req {
    /// RESET_OWNER.
    pub const RESET_OWNER: u32 = 4;
    /// SET_MEM_TABLE.
    pub const SET_MEM_TABLE: u32 = 5;
    /// SET_VRING_BASE.
    pub const SET_VRING_BASE: u32 = 10;
    /// GET_VRING_BASE (stops the ring).
    pub const GET_VRING_BASE: u32 = 11;
    /// SET_VRING_ENABLE.
    pub const SET_VRING_ENABLE: u32 = 18;
    /// GPU_SET_SOCKET.
    pub const GPU_SET_SOCKET: u32 = 33;
    /// RESET_DEVICE.
    pub const RESET_DEVICE: u32 = 34;
    /// ADD_MEM_REG.
    pub const ADD_MEM_REG: u32 = 37;
    /// SET_STATUS.
    pub const SET_STATUS: u32 = 39;
}

/// Header flag: the front-end wants a reply (REPLY_ACK).
pub const NEED_REPLY: u32 = 0x8;
/// Header flags of a reply: version 1, reply.
const REPLY_FLAGS: u32 = 0x1 | 0x4;

/// The file behind a memory region (a duplicate of `fd`), checked to hold all of the region
/// (`size` bytes at `mmap_offset`). vm-memory maps a region whatever the file's length, and the
/// first read of a page past the end raises SIGBUS. Device files (device-DAX), which have no
/// size, pass.
pub fn region_file(fd: &OwnedFd, mmap_offset: u64, size: u64) -> Result<std::fs::File, String> {
    let file = std::fs::File::from(fd.try_clone().map_err(|e| format!("dup: {e}"))?);
    let meta = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if meta.is_file()
        && mmap_offset
            .checked_add(size)
            .is_none_or(|end| end > meta.len())
    {
        return Err(format!(
            "{size:#x} bytes at file offset {mmap_offset:#x} extend past the end of its {}-byte file",
            meta.len()
        ));
    }
    Ok(file)
}

/// Why a SET_MEM_TABLE or ADD_MEM_REG must not reach the built-in device: a region its file
/// does not hold (mapped, it would take the process down at the first read past the file's
/// end). Other malformations are the daemon's to answer.
pub fn unmappable_memory(msg: &RawMessage) -> Option<String> {
    let regions: Vec<(usize, u64, u64, u64)> = match msg.request() {
        req::SET_MEM_TABLE => {
            let n = msg.payload_u32(0).unwrap_or(0) as usize;
            (0..n.min(msg.fds.len()))
                .filter(|i| msg.payload.len() >= 8 + 32 * (i + 1))
                .map(|i| {
                    let o = 8 + 32 * i;
                    let at = |k: usize| msg.payload_u64(o + k).unwrap_or(0);
                    (i, at(0), at(8), at(24))
                })
                .collect()
        }
        req::ADD_MEM_REG if !msg.fds.is_empty() && msg.payload.len() >= 40 => {
            let at = |k: usize| msg.payload_u64(k).unwrap_or(0);
            vec![(0, at(8), at(16), at(32))]
        }
        _ => return None,
    };
    regions.into_iter().find_map(|(i, gpa, size, offset)| {
        region_file(&msg.fds[i], offset, size)
            .err()
            .map(|e| format!("region {i} at guest-physical {gpa:#x}: {e}"))
    })
}

/// The reply a front-end gets for a request the relay refused (REPLY_ACK's failure value).
fn refusal(msg: &RawMessage) -> RawMessage {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&msg.request().to_le_bytes());
    header[4..8].copy_from_slice(&REPLY_FLAGS.to_le_bytes());
    header[8..12].copy_from_slice(&8u32.to_le_bytes());
    RawMessage {
        header,
        payload: 1u64.to_le_bytes().to_vec(),
        fds: Vec::new(),
    }
}

/// One vhost-user message as it travelled.
#[derive(Debug)]
pub struct RawMessage {
    /// The 12 header bytes.
    pub header: [u8; HEADER_LEN],
    /// The payload.
    pub payload: Vec<u8>,
    /// Attached descriptors.
    pub fds: Vec<OwnedFd>,
}

impl RawMessage {
    /// Request code.
    pub fn request(&self) -> u32 {
        u32::from_le_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ])
    }

    /// Header flags.
    pub fn flags(&self) -> u32 {
        u32::from_le_bytes([
            self.header[4],
            self.header[5],
            self.header[6],
            self.header[7],
        ])
    }

    fn payload_u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.payload.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn payload_u64(&self, at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.payload.get(at..at + 8)?.try_into().ok()?,
        ))
    }
}

/// Reads one message; `Ok(None)` at a clean end of stream.
pub fn read_message(sock: &UnixStream) -> io::Result<Option<RawMessage>> {
    read_message_limit(sock, MAX_PAYLOAD)
}

/// Like [`read_message`] with a payload limit of `limit` bytes (the display socket carries
/// whole frames).
pub fn read_message_limit(sock: &UnixStream, limit: u32) -> io::Result<Option<RawMessage>> {
    Ok(read_message_split(sock, limit, |_, _| usize::MAX, Vec::new())?.map(|(m, _)| m))
}

/// Like [`read_message_limit`], but only the first `head(request, size)` bytes of the payload
/// land in the message's `payload`; the rest is read into `data` (its allocation reused, so
/// that a relay of large messages need not allocate and fault in fresh pages for each). The
/// wire bytes are the message's payload followed by the returned data.
pub fn read_message_split(
    sock: &UnixStream,
    limit: u32,
    head: impl FnOnce(u32, u32) -> usize,
    mut data: Vec<u8>,
) -> io::Result<Option<(RawMessage, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    let mut raw_fds: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: header.as_mut_ptr().cast(),
        iov_len: HEADER_LEN,
    }];
    // SAFETY: the iovec points at `header`, which lives across the call and may hold any bytes.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw_fds) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let fds: Vec<OwnedFd> = raw_fds[..nfds]
        .iter()
        // SAFETY: recvmsg returned these descriptors to us; nothing else owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    let mut reader = sock;
    if n < HEADER_LEN {
        reader.read_exact(&mut header[n..])?;
    }
    let request = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let size = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message {request} announces a {size}-byte payload (limit {limit})"),
        ));
    }
    let size = size as usize;
    let first = head(request, size as u32).min(size);
    let mut payload = vec![0u8; first];
    reader.read_exact(&mut payload)?;
    // Only the length changes: the bytes are overwritten by the read.
    data.truncate(size - first);
    data.resize(size - first, 0);
    reader.read_exact(&mut data)?;
    Ok(Some((
        RawMessage {
            header,
            payload,
            fds,
        },
        data,
    )))
}

/// Writes one message with its descriptors.
pub fn write_message(sock: &UnixStream, msg: &RawMessage) -> io::Result<()> {
    write_message_parts(sock, msg, &[])
}

/// Writes one message whose payload is `msg.payload` followed by `data` (the header's size
/// already counts both), without joining them into one buffer first.
pub fn write_message_parts(sock: &UnixStream, msg: &RawMessage, data: &[u8]) -> io::Result<()> {
    let fds: Vec<RawFd> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
    let parts: [&[u8]; 3] = [&msg.header, &msg.payload, data];
    let sent = sock
        .send_with_fds(&parts[..], &fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    // A short send (a large message on a full socket): the rest, part by part.
    let mut skip = sent;
    let mut w = sock;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        w.write_all(&part[skip..])?;
        skip = 0;
    }
    Ok(())
}

/// Records one message as a VhostUser record (errors are reported on stderr, not returned: a
/// message must be forwarded whether or not it could be recorded).
pub fn record(recorder: &Recorder, direction: Direction, msg: &RawMessage) {
    let r = recorder.store(&msg.payload).and_then(|payload| {
        recorder.append(RecordBody::VhostUser(VhostUserMessage {
            direction,
            request: msg.request(),
            flags: msg.flags(),
            fd_count: u8::try_from(msg.fds.len()).unwrap_or(u8::MAX),
            payload,
        }))
    });
    if let Err(e) = r {
        eprintln!("vgt-capture: error: recording a vhost-user message: {e}");
    }
}

/// Lifecycle records implied by a front-end request.
pub fn lifecycle_of(recorder: &Recorder, msg: &RawMessage) {
    let queue = msg.payload_u32(0).and_then(|q| u16::try_from(q).ok());
    let event = match msg.request() {
        req::RESET_OWNER | req::RESET_DEVICE => {
            Some((LifecycleKind::Reset, None, "reset requested"))
        }
        req::GET_VRING_BASE => Some((
            LifecycleKind::QueueStop,
            queue,
            "GET_VRING_BASE stops the ring",
        )),
        req::SET_VRING_ENABLE => match msg.payload_u32(4) {
            Some(0) => Some((LifecycleKind::QueueStop, queue, "SET_VRING_ENABLE 0")),
            Some(_) => Some((LifecycleKind::QueueStart, queue, "SET_VRING_ENABLE 1")),
            None => None,
        },
        req::GPU_SET_SOCKET => Some((
            LifecycleKind::DriverOk,
            None,
            "GPU_SET_SOCKET (QEMU hands over the display socket when the driver sets DRIVER_OK)",
        )),
        req::SET_STATUS => match msg.payload_u64(0) {
            Some(s) if s & 4 != 0 => Some((LifecycleKind::DriverOk, None, "SET_STATUS DRIVER_OK")),
            Some(0) => Some((LifecycleKind::Reset, None, "SET_STATUS 0")),
            _ => None,
        },
        _ => None,
    };
    if let Some((kind, queue, message)) = event {
        let _ = recorder.lifecycle(kind, queue, None, message);
    }
}

/// Sets SO_SNDTIMEO and SO_RCVTIMEO on a socket (shared with every duplicate of the fd).
pub fn set_socket_timeouts(fd: &OwnedFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    for opt in [libc::SO_SNDTIMEO, libc::SO_RCVTIMEO] {
        // SAFETY: `fd` is a valid open descriptor for the call's duration and `tv` is a
        // properly initialised timeval whose size is passed along.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A duplicate of the display socket QEMU handed over, with timeouts set.
fn take_gpu_socket(fd: &OwnedFd) -> io::Result<UnixStream> {
    let dup = fd.try_clone()?;
    set_socket_timeouts(&dup, crate::gpu_socket::GPU_SOCKET_POLL)?;
    Ok(UnixStream::from(dup))
}

/// Orders the messages written to the front-end: the relay's own replies (refusals, from the
/// thread reading the front-end) and the daemon's (from the thread reading the daemon) are
/// each recorded and written under it, so the capture holds them in the order the front-end
/// reads them.
pub type FrontOrder = std::sync::Mutex<()>;

/// Records `msg` as a reply to the front-end and writes it there, under `order`.
fn reply_to_front(
    front: &UnixStream,
    msg: &RawMessage,
    recorder: &Recorder,
    order: &FrontOrder,
) -> io::Result<()> {
    let _turn = order.lock().unwrap_or_else(|p| p.into_inner());
    record(recorder, Direction::BackToFront, msg);
    #[cfg(test)]
    {
        let pause = REPLY_PAUSE_US.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_micros(pause));
    }
    write_message(front, msg)
}

/// Test hook: a pause between recording a reply to the front-end and writing it, which widens
/// the window [`FrontOrder`] closes (the test of the ordering sets it).
#[cfg(test)]
pub(crate) static REPLY_PAUSE_US: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Where each ring last stopped (the base GET_VRING_BASE answered), to tell a guest reset from
/// a pause. QEMU sends the back-end nothing at a guest reset that it does not also send when
/// the VM is paused: both stop the rings (GET_VRING_BASE), close the display socket and later
/// hand over a new one. What differs is the restart: after a pause the rings go on from where
/// they stopped; after a reset the driver has set the device up anew, and its rings start from
/// index 0. A ring set up at 0 that had stopped anywhere else therefore means the device was
/// reset, and its resources, scanouts and fences must go (the driver will create them again,
/// with the same ids). A ring that stopped at a multiple of 65536 is indistinguishable and is
/// taken for a pause.
#[derive(Debug, Default)]
pub struct RingRestarts {
    stopped_at: std::sync::Mutex<[Option<u16>; 2]>,
}

impl RingRestarts {
    /// A GET_VRING_BASE reply passed to the front-end.
    pub fn stopped(&self, msg: &RawMessage) {
        if msg.request() != req::GET_VRING_BASE {
            return;
        }
        let (Some(q), Some(base)) = (msg.payload_u32(0), msg.payload_u32(4)) else {
            return;
        };
        let mut at = self.stopped_at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = at.get_mut(q as usize) {
            // The split ring's index is 16 bits wide.
            *slot = Some(base as u16);
        }
    }

    /// A SET_VRING_BASE from the front-end: the index the ring had stopped at when it restarts
    /// from 0 after stopping elsewhere (a device reset), else None. Either way the ring's stop
    /// is consumed; a reset consumes every ring's.
    pub fn restarted(&self, msg: &RawMessage) -> Option<(u16, u16)> {
        if msg.request() != req::SET_VRING_BASE {
            return None;
        }
        let q = msg.payload_u32(0)?;
        let base = msg.payload_u32(4)?;
        let mut at = self.stopped_at.lock().unwrap_or_else(|p| p.into_inner());
        let was = at.get_mut(q as usize)?.take()?;
        if base != 0 || was == 0 {
            return None;
        }
        *at = [None; 2];
        Some((u16::try_from(q).ok()?, was))
    }
}

/// Relays front-end requests to the daemon until either side closes. Returns why it stopped.
/// `reset` resets the device; it runs when a ring restart shows a guest reset
/// ([`RingRestarts`]), before the message that shows it reaches the daemon.
pub fn front_to_back(
    front: &UnixStream,
    back: &UnixStream,
    recorder: &Arc<Recorder>,
    gpu_slot: &GpuSlot,
    order: &FrontOrder,
    restarts: &RingRestarts,
    reset: &dyn Fn(),
) -> io::Result<()> {
    loop {
        let Some(msg) = read_message(front)? else {
            return Ok(());
        };
        record(recorder, Direction::FrontToBack, &msg);
        lifecycle_of(recorder, &msg);
        if let Some(why) = unmappable_memory(&msg) {
            // Refused as a device refuses a table it cannot map: the daemon keeps the memory it
            // had, and a front-end that asked for a reply is told the request failed.
            let _ = recorder.lifecycle(
                LifecycleKind::Error,
                None,
                None,
                format!(
                    "vhost-user request {} refused, not passed to the device: {why}",
                    msg.request()
                ),
            );
            eprintln!(
                "vgt-capture: error: vhost-user request {} refused: {why}",
                msg.request()
            );
            if msg.flags() & NEED_REPLY != 0 {
                reply_to_front(front, &refusal(&msg), recorder, order)?;
            }
            continue;
        }
        if msg.request() == req::GPU_SET_SOCKET
            && let Some(fd) = msg.fds.first()
        {
            match take_gpu_socket(fd) {
                Ok(stream) => gpu_slot.put(stream),
                Err(e) => {
                    let _ = recorder.lifecycle(
                        LifecycleKind::Error,
                        None,
                        None,
                        format!("cannot use the gpu socket: {e}"),
                    );
                }
            }
        }
        if let Some((queue, was)) = restarts.restarted(&msg) {
            // The rings are stopped (QEMU waited for every GET_VRING_BASE reply): the device
            // is idle while it resets.
            reset();
            let _ = recorder.lifecycle(
                LifecycleKind::Reset,
                Some(queue),
                None,
                format!(
                    "queue {queue} set up again from index 0 after it stopped at {was}: the driver \
                     reinitialized the device (a guest reset); device reset"
                ),
            );
        }
        write_message(back, &msg)?;
    }
}

/// Relays the daemon's replies to the front-end until either side closes.
pub fn back_to_front(
    back: &UnixStream,
    front: &UnixStream,
    recorder: &Arc<Recorder>,
    order: &FrontOrder,
    restarts: &RingRestarts,
) -> io::Result<()> {
    loop {
        let Some(msg) = read_message(back)? else {
            return Ok(());
        };
        restarts.stopped(&msg);
        reply_to_front(front, &msg, recorder, order)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn message_with_fd_survives_a_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[0] = 33;
        header[4] = 1;
        header[8] = 3;
        let msg = RawMessage {
            header,
            payload: vec![1, 2, 3],
            fds: vec![OwnedFd::from(x)],
        };
        write_message(&a, &msg).unwrap();
        let got = read_message(&b).unwrap().unwrap();
        assert_eq!(got.request(), 33);
        assert_eq!(got.flags(), 1);
        assert_eq!(got.payload, vec![1, 2, 3]);
        assert_eq!(got.fds.len(), 1);
        drop(a);
        assert!(read_message(&b).unwrap().is_none());
    }

    #[test]
    fn oversized_payload_is_an_error_not_an_allocation() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        a.write_all(&header).unwrap();
        let e = read_message(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
