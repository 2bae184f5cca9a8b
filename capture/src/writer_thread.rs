//! A file whose write(2) calls happen on a thread of their own: buffered captures copy each
//! record's bytes into a reused 4 MiB buffer and go on, while the writer thread hands full
//! buffers to the operating system (the kernel's copy into the page cache was the largest single
//! cost of recording new full-screen frames on the queue worker).
//!
//! The output ([`Output`]) is written with O_DIRECT where the file system takes it
//! ([`crate::direct_io`]): its 4 MiB writes then go to the disk without allocating, zeroing and
//! filling page-cache pages, which had bounded buffered capture of new 1080p frames (about 50
//! frames/s with the page cache, docs/BENCHMARKS.md). Elsewhere it is a mapped file, whose
//! pwrite(2)s go into space reserved ahead whose pages its helper thread has already populated,
//! or else the plain file.
//!
//! Order is kept (one thread, one queue); at most [`MAX_BUFFERS`] buffers exist, so a writer
//! thread that falls behind slows the caller down instead of growing memory. `flush` returns once
//! everything written before it reached the operating system, as `File`'s does, and reports the
//! first write error: when no buffer is in flight it does the write(2) itself (no thread hop, so
//! a flush after every small record costs what it costs on a plain file), otherwise it hands the
//! rest over and waits. [`ThreadedFile::flush_waits`] switches it to hand-over only, for
//! periodic flushes. A write error is otherwise reported by a later `write`. Dropping the file
//! writes what is left and joins the thread.

use std::io::{self, Write};

use crate::direct_io::AlignedBuf;
use crate::mapped_file::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Size of one hand-over buffer.
pub const BUFFER_LEN: usize = 4 << 20;
/// Most buffers in existence (in flight or being filled): 32 MiB.
pub const MAX_BUFFERS: usize = 8;

/// The first write error: its kind and text.
type Failure = Option<(io::ErrorKind, String)>;

enum Message {
    Data(AlignedBuf),
    /// Answer once everything before this was written.
    Flush(SyncSender<()>),
}

fn lock_output(out: &Mutex<Output>) -> std::sync::MutexGuard<'_, Output> {
    // A panic while writing leaves nothing to repair: a failed write is recorded in `failed`.
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file written by a thread of its own (see the module documentation).
pub struct ThreadedFile {
    /// Locked by the writer thread for each buffer, and by the caller only while no buffer is
    /// in flight, so the two never wait for each other.
    out: Arc<Mutex<Output>>,
    current: AlignedBuf,
    /// Bytes handed to the output so far (written or in flight): the file position `current`
    /// is written at.
    handed: u64,
    /// Buffers handed to the writer thread and not yet written.
    in_flight: Arc<AtomicUsize>,
    to_writer: Option<SyncSender<Message>>,
    empties: Receiver<AlignedBuf>,
    buffers: usize,
    /// Set by the writer thread on its first failed write.
    failed: Arc<Mutex<Failure>>,
    flush_waits: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ThreadedFile {
    /// Starts the writer thread for `out` (a [`File`](std::fs::File), a
    /// [`MappedFile`](crate::mapped_file::MappedFile) or a
    /// [`DirectIoFile`](crate::direct_io::DirectIoFile)).
    pub fn new(out: impl Into<Output>) -> io::Result<Self> {
        let (to_writer, inbox) = sync_channel::<Message>(MAX_BUFFERS + 1);
        let (give_back, empties) = channel::<AlignedBuf>();
        let failed = Arc::new(Mutex::new(None));
        let thread_failed = failed.clone();
        let out = Arc::new(Mutex::new(out.into()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (thread_out, thread_in_flight) = (out.clone(), in_flight.clone());
        let thread = std::thread::Builder::new()
            .name("vgt-writer".into())
            .spawn(move || {
                write_loop(
                    &thread_out,
                    &inbox,
                    &give_back,
                    &thread_failed,
                    &thread_in_flight,
                );
            })?;
        Ok(ThreadedFile {
            out,
            current: AlignedBuf::new(BUFFER_LEN),
            handed: 0,
            in_flight,
            to_writer: Some(to_writer),
            empties,
            buffers: 1,
            failed,
            flush_waits: Arc::new(AtomicBool::new(true)),
            thread: Some(thread),
        })
    }

    /// A switch for what `flush` does: wait until everything is written (true, the default),
    /// or only hand the partly filled buffer to the writer thread (false; for periodic flushes
    /// that bound what a crash loses without stalling the caller).
    pub fn flush_waits(&self) -> Arc<AtomicBool> {
        self.flush_waits.clone()
    }

    fn failure(&self) -> Failure {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes the current buffer on the caller's thread; only while nothing is in flight.
    fn write_here(&mut self) -> io::Result<()> {
        let r = lock_output(&self.out).write_buffer(&mut self.current);
        self.handed += self.current.len() as u64;
        self.current.reset(self.handed);
        r.map_err(|e| {
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((e.kind(), e.to_string()));
            self.error()
        })
    }

    fn error(&self) -> io::Error {
        match self.failure() {
            Some((kind, msg)) => io::Error::new(kind, format!("capture writer thread: {msg}")),
            None => io::Error::other("capture writer thread stopped"),
        }
    }

    /// Sends the current buffer (when not empty) and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let mut next = match self.empties.try_recv() {
            Ok(b) => b,
            Err(_) if self.buffers < MAX_BUFFERS => {
                self.buffers += 1;
                AlignedBuf::new(BUFFER_LEN)
            }
            // All buffers in flight: wait for the writer thread to return one.
            Err(_) => self.empties.recv().map_err(|_| self.error())?,
        };
        self.handed += self.current.len() as u64;
        next.reset(self.handed);
        let full = std::mem::replace(&mut self.current, next);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = self
            .to_writer
            .as_ref()
            .map(|tx| tx.send(Message::Data(full)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Waits until everything handed over is written; the first write error, if any.
    fn wait_written(&mut self) -> io::Result<()> {
        let (tx, rx) = sync_channel(1);
        let sent = self.to_writer.as_ref().map(|w| w.send(Message::Flush(tx)));
        if !matches!(sent, Some(Ok(()))) || rx.recv().is_err() || self.failure().is_some() {
            return Err(self.error());
        }
        Ok(())
    }
}

fn write_loop(
    out: &Mutex<Output>,
    inbox: &Receiver<Message>,
    give_back: &Sender<AlignedBuf>,
    failed: &Mutex<Failure>,
    in_flight: &AtomicUsize,
) {
    for m in inbox {
        match m {
            Message::Data(mut buf) => {
                // The lock is never held across the write: the caller looks at `failed` before
                // each of its writes, and must not wait for this thread's write(2) to do so.
                let ok = failed.lock().unwrap_or_else(|p| p.into_inner()).is_none();
                if ok && let Err(e) = lock_output(out).write_buffer(&mut buf) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((e.kind(), e.to_string()));
                }
                // Written (or dropped after an error): the caller may write directly again.
                in_flight.fetch_sub(1, Ordering::AcqRel);
                // The file may be gone already (dropped): nothing to give back to.
                let _ = give_back.send(buf);
            }
            Message::Flush(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

impl Write for ThreadedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failure().is_some() {
            return Err(self.error());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let n = self.current.extend(rest);
            rest = &rest[n..];
            if self.current.room() == 0 {
                self.hand_over()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.failure().is_some() {
            return Err(self.error());
        }
        if !self.flush_waits.load(Ordering::Relaxed) {
            return self.hand_over();
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            // The writer thread is idle: everything before is written; write the rest here.
            return self.write_here();
        }
        self.hand_over()?;
        self.wait_written()
    }
}

impl ThreadedFile {
    /// Writes what is left, stops the writer thread and completes the output (a mapped file is
    /// cut to the bytes written); the first write error, if any. Dropping does the same but
    /// can only print a failure.
    pub fn close(mut self) -> io::Result<()> {
        let handed = self.hand_over();
        self.to_writer = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        handed?;
        if self.failure().is_some() {
            return Err(self.error());
        }
        lock_output(&self.out).close()
    }
}

impl Drop for ThreadedFile {
    fn drop(&mut self) {
        let _ = self.hand_over();
        // Closing the queue ends the thread once it has written everything.
        self.to_writer = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for ThreadedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedFile")
            .field("buffered", &self.current.len())
            .field("buffers", &self.buffers)
            .field("failed", &self.failure())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn threaded_file_many_writes_arrive_in_order_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = ThreadedFile::new(File::create(&path).unwrap()).unwrap();
        let mut expected = Vec::new();
        // Small and large writes, more than MAX_BUFFERS buffers in total.
        for i in 0..200u32 {
            let len = if i % 10 == 0 {
                3 * BUFFER_LEN / 2
            } else {
                1000 + i as usize
            };
            let chunk: Vec<u8> = (0..len)
                .map(|k| (k as u32 ^ i.wrapping_mul(7)) as u8)
                .collect();
            f.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        f.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        f.write_all(b"tail").unwrap();
        drop(f);
        expected.extend_from_slice(b"tail");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            expected,
            "drop writes the rest"
        );
    }

    #[test]
    fn threaded_file_over_o_direct_writes_its_buffers_without_copying_them_again() {
        // On a disk file system (the target directory), where O_DIRECT works.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let crate::direct_io::OpenedDirect::Direct(direct) =
            crate::direct_io::DirectIoFile::open(&path, file).unwrap()
        else {
            panic!("O_DIRECT refused in {}", dir.path().display());
        };
        let mut f = ThreadedFile::new(direct).unwrap();
        let waits = f.flush_waits();
        let mut expected = Vec::new();
        let mut flushes = 0u64;
        for i in 0..300u32 {
            let len = if i % 50 == 0 {
                2 * BUFFER_LEN + 17
            } else {
                777 + 13 * i as usize
            };
            let chunk: Vec<u8> = (0..len)
                .map(|k| (k as u32 ^ i.wrapping_mul(11)) as u8)
                .collect();
            f.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            // Flushes leave partial blocks behind: both the hand-over kind and the waiting
            // kind (written on this thread when nothing is in flight).
            if i % 7 == 0 {
                waits.store(i % 14 == 0, Ordering::Relaxed);
                f.flush().unwrap();
                flushes += 1;
            }
        }
        waits.store(true, Ordering::Relaxed);
        f.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        let copied = match &*lock_output(&f.out) {
            Output::DirectIo(d) => d.copied_bytes(),
            other => panic!("{other:?}"),
        };
        // At most one partial block per buffer written, not every byte.
        let buffers = expected.len() as u64 / BUFFER_LEN as u64 + flushes + 1;
        assert!(
            copied < buffers * crate::direct_io::BLOCK as u64,
            "{copied} bytes copied for {} written in about {buffers} buffers",
            expected.len()
        );
    }

    #[test]
    fn threaded_file_write_error_is_reported_by_flush() {
        // /dev/full fails every write with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut f = ThreadedFile::new(full).unwrap();
        f.write_all(&[1u8; 100]).unwrap();
        let e = f.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert!(f.write_all(b"x").is_err(), "later writes fail too");
    }

    #[test]
    fn threaded_file_hand_over_flush_writes_without_waiting_and_later_flush_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = ThreadedFile::new(File::create(&path).unwrap()).unwrap();
        let waits = f.flush_waits();
        waits.store(false, Ordering::Relaxed);
        f.write_all(b"abc").unwrap();
        f.flush().unwrap();
        waits.store(true, Ordering::Relaxed);
        f.write_all(b"def").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
    }

    #[test]
    fn a_write_while_the_writer_thread_is_stuck_in_write_does_not_wait_for_it() {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors, which are owned by the Files below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: each descriptor is new and owned by exactly one File.
        let (mut reader, writer) =
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let (done, finished) = std::sync::mpsc::channel();
        let caller = std::thread::spawn(move || {
            let mut f = ThreadedFile::new(writer).unwrap();
            // One whole buffer: the writer thread takes it and blocks in write(2) on the full
            // pipe (64 KiB), which nobody reads yet.
            f.write_all(&vec![7u8; BUFFER_LEN]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            // Copied into the next buffer; it must not wait for that write(2).
            f.write_all(b"more").unwrap();
            done.send(()).unwrap();
            f
        });
        let answered = finished.recv_timeout(std::time::Duration::from_secs(10));
        // Drain the pipe either way, so that the writer thread can finish.
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut all).unwrap();
            all
        });
        assert!(
            answered.is_ok(),
            "the write waited for the writer thread's write(2)"
        );
        drop(caller.join().unwrap());
        let all = drain.join().unwrap();
        assert_eq!(all.len(), BUFFER_LEN + 4);
        assert_eq!(&all[BUFFER_LEN..], b"more");
    }
}
