//! The vhost-user-gpu display socket, spoken directly.
//!
//! The relay takes a duplicate of the socket QEMU passes with GPU_SET_SOCKET, sets send and
//! receive timeouts on it and leaves it in a [`GpuSlot`]; the backend picks it up from there.
//! The `vhost` crate's `GpuBackend` is not used for sending because it retries a timed-out send
//! forever (a stalled QEMU main loop would wedge the queue worker, see
//! [`GPU_SOCKET_TIMEOUT`]), and speaking the protocol here also lets the capture
//! record QEMU's replies exactly as they arrived.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::display::gpu_req;

/// How long one message (a send, or a reply) may take in all. QEMU reads the display socket
/// from its main loop, which blocks while it waits for a vhost-user reply; an UPDATE larger than
/// the socket buffer sent at that moment, with that reply needing the backend lock the sender
/// holds (GET_VRING_BASE does), would otherwise wait forever.
pub const GPU_SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// The per-syscall timeout the relay sets on the socket, so that the overall deadline is
/// checked often.
pub const GPU_SOCKET_POLL: Duration = Duration::from_millis(250);

/// Whether an I/O error is a timeout or interruption to retry before `deadline`.
fn retry(e: &io::Error, deadline: Instant) -> bool {
    match e.kind() {
        io::ErrorKind::Interrupted => true,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Instant::now() < deadline,
        _ => false,
    }
}

fn timed_out(e: io::Error, what: &str, done: usize, total: usize) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{what} QEMU's display socket took longer than {GPU_SOCKET_TIMEOUT:?} \
                 ({done} of {total} bytes)"
            ),
        ),
        _ => e,
    }
}

/// Largest reply accepted (GET_EDID's 1056 bytes is the largest QEMU sends).
pub const MAX_REPLY: u32 = 4096;

/// Where the relay leaves a newly handed-over display socket for the backend.
#[derive(Debug, Default)]
pub struct GpuSlot {
    inner: Mutex<Option<UnixStream>>,
}

impl GpuSlot {
    /// Offers a new socket (replacing one not yet taken).
    pub fn put(&self, stream: UnixStream) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream);
    }

    /// Takes the newest socket, if one arrived since the last call.
    pub fn take(&self) -> Option<UnixStream> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A reply as QEMU sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReply {
    /// Header flags (REPLY set).
    pub flags: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Client side of the display socket.
#[derive(Debug)]
pub struct GpuSocket {
    stream: UnixStream,
}

impl GpuSocket {
    /// Wraps a connected socket (timeouts already set by the relay).
    pub fn new(stream: UnixStream) -> Self {
        GpuSocket { stream }
    }

    /// Sends one request (header flags 0, as QEMU's and the vhost crate's back-ends do).
    pub fn send(&mut self, request: u32, payload: &[u8]) -> io::Result<()> {
        self.send_parts(request, payload, &[])
    }

    /// Sends one request whose payload is `head` followed by `data`, without joining them
    /// (an UPDATE's pixels go from the caller's buffer straight to the socket).
    pub fn send_parts(&mut self, request: u32, head: &[u8], data: &[u8]) -> io::Result<()> {
        let total = head.len() + data.len();
        let size = u32::try_from(total).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gpu socket payload of {total} bytes"),
            )
        })?;
        let mut header = [0u8; 12];
        header[..4].copy_from_slice(&request.to_le_bytes());
        header[8..].copy_from_slice(&size.to_le_bytes());
        let parts: [&[u8]; 3] = [&header, head, data];
        let len = 12 + total;
        let deadline = Instant::now() + GPU_SOCKET_TIMEOUT;
        let mut done = 0;
        while done < len {
            // The parts from `done` on.
            let mut skip = done;
            let mut slices = Vec::with_capacity(3);
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                } else {
                    slices.push(io::IoSlice::new(&p[skip..]));
                    skip = 0;
                }
            }
            match self.stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if retry(&e, deadline) => {}
                Err(e) => return Err(timed_out(e, "sending to", done, len)),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let deadline = Instant::now() + GPU_SOCKET_TIMEOUT;
        let mut done = 0;
        while done < buf.len() {
            match self.stream.read(&mut buf[done..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if retry(&e, deadline) => {}
                Err(e) => return Err(timed_out(e, "waiting for", done, buf.len())),
            }
        }
        Ok(())
    }

    /// Sends a request and reads its reply.
    pub fn call(&mut self, request: u32, payload: &[u8]) -> io::Result<GpuReply> {
        self.send(request, payload)?;
        let mut hdr = [0u8; 12];
        self.read_exact(&mut hdr)?;
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (got, flags, size) = (word(0), word(4), word(8));
        if got != request || flags & gpu_req::FLAG_REPLY == 0 || size > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected a reply to request {request}, got request {got} flags {flags:#x} \
                     size {size}"
                ),
            ));
        }
        let mut payload = vec![0u8; size as usize];
        self.read_exact(&mut payload)?;
        Ok(GpuReply { flags, payload })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn call_reads_the_matching_reply() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut hdr = [0u8; 12];
            b.read_exact(&mut hdr).unwrap();
            assert_eq!(hdr, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            let mut reply = vec![1, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0];
            reply.extend_from_slice(&3u64.to_le_bytes());
            b.write_all(&reply).unwrap();
        });
        let mut s = GpuSocket::new(a);
        let r = s.call(gpu_req::GET_PROTOCOL_FEATURES, &[]).unwrap();
        assert_eq!(r.flags, 4);
        assert_eq!(r.payload, 3u64.to_le_bytes());
        t.join().unwrap();
    }

    #[test]
    fn reply_to_another_request_is_an_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&[3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        let mut s = GpuSocket::new(a);
        let e = s.call(gpu_req::GET_EDID, &[0; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn send_parts_larger_than_the_socket_buffer_arrives_whole() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let head: Vec<u8> = (0..20).collect();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut expected = vec![8, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&3_000_020u32.to_le_bytes());
        expected.extend_from_slice(&head);
        expected.extend_from_slice(&data);
        let len = expected.len();
        let t = std::thread::spawn(move || {
            let mut got = vec![0u8; len];
            // Small reads, so that the sender sees partial writes.
            for c in got.chunks_mut(50_000) {
                b.read_exact(c).unwrap();
            }
            got
        });
        let mut s = GpuSocket::new(a);
        s.send_parts(gpu_req::UPDATE, &head, &data).unwrap();
        assert!(t.join().unwrap() == expected);
    }
}
