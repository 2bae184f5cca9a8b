//! The crash-safe capture file: bytes are stored into a shared mapping of the file, so they are
//! in the operating system's page cache (and survive this process being killed) as soon as the
//! copy is done, without a write(2) per command.
//!
//! The file grows in windows ([`WINDOW`]): each window's blocks are reserved with fallocate(2)
//! before it is mapped, so a full disk is an error from the reservation, never a SIGBUS on a
//! store. Large writes ([`PWRITE_MIN`], a big blob) go into the reserved space with pwrite(2)
//! instead, which is cheaper than faulting their pages in; both reach the same page cache.
//!
//! Closing the file cuts it to the bytes written; a file left by a killed process ends in the
//! zero bytes of its last window, which readers take for the end of an unfinished capture
//! (docs/FORMAT.md, "zero padding"). Like write(2), this does not survive an OS crash or power
//! loss (no msync/fsync).
//!
//! Another process truncating the file while it is mapped would make stores fault (SIGBUS); a
//! capture file is written by one vgt-capture only.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

/// Bytes reserved and mapped at a time.
pub const WINDOW: u64 = 16 << 20;

/// Writes of at least this many bytes go to the reserved space with pwrite(2) instead of
/// through the mapping: the first store into each page of fallocated space costs a page fault
/// of about 5 µs (ext4 converts the page's unwritten block), several times what write(2)
/// costs per page, while one system call is nothing next to the copy of a large blob. Small
/// records, which share their pages, keep the mapping (docs/BENCHMARKS.md).
pub const PWRITE_MIN: usize = 8 << 10;

/// A file written through shared mappings of space reserved ahead; see the module docs.
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    window_len: u64,
    map: Option<Mapping>,
    /// Bytes written: the file offset of the next byte.
    pos: u64,
    /// File length reserved so far (a multiple of `window_len`).
    reserved: u64,
    closed: bool,
}

/// One mapped window.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// File offset of the window's first byte.
    offset: u64,
}

// SAFETY: the mapping is owned by this value alone (nothing else holds its address), so moving
// it to another thread moves the only access to it.
unsafe impl Send for MappedFile {}

/// What [`MappedFile::open`] made of a file.
#[derive(Debug)]
pub enum Opened {
    /// The file is mapped.
    Mapped(MappedFile),
    /// The file system cannot reserve or map the file; write it with write(2) instead.
    Unsupported {
        /// The file, unchanged.
        file: File,
        /// Why (EOPNOTSUPP from fallocate, ENODEV from mmap …).
        reason: io::Error,
    },
}

impl MappedFile {
    /// Takes an empty `file` opened for reading and writing and reserves and maps its first
    /// window, in [`WINDOW`]s.
    pub fn open(file: File) -> io::Result<Opened> {
        Self::open_with_window(file, WINDOW)
    }

    /// Like [`MappedFile::open`] with windows of `window_len` bytes, a multiple of the page
    /// size (tests use small windows to cross many).
    pub fn open_with_window(file: File, window_len: u64) -> io::Result<Opened> {
        if window_len == 0
            || !window_len.is_multiple_of(page_size())
            || window_len > isize::MAX as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("window of {window_len} bytes is not a multiple of the page size"),
            ));
        }
        let mut f = MappedFile {
            file,
            window_len,
            map: None,
            pos: 0,
            reserved: 0,
            closed: false,
        };
        match f.map_window_at(0) {
            Ok(()) => Ok(Opened::Mapped(f)),
            Err(e) if unsupported(&e) => {
                let file = f.take_file()?;
                Ok(Opened::Unsupported { file, reason: e })
            }
            Err(e) => Err(e),
        }
    }

    /// Bytes written so far (the file's length once closed).
    pub fn written(&self) -> u64 {
        self.pos
    }

    /// Unmaps and cuts the file to the bytes written. Writing afterwards is an error; a second
    /// call does nothing. Dropping the file does this too, reporting a failure on stderr.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.unmap()?;
        if self.reserved == 0 {
            // Nothing reserved (the first reservation failed): the file is as it was.
            return Ok(());
        }
        self.file.set_len(self.pos)
    }

    /// Gives the file back after undoing the reservation (used when mapping is unsupported:
    /// nothing was written yet).
    fn take_file(mut self) -> io::Result<File> {
        self.close()?;
        let file = self.file.try_clone()?;
        Ok(file)
    }

    /// Reserves whole windows with fallocate(2) until the file's first `end` bytes are.
    fn reserve_to(&mut self, end: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        while self.reserved < end {
            let (offset, len) = (self.reserved, self.window_len);
            // SAFETY: fallocate(2) on a descriptor this value owns; it touches no memory of ours.
            let r = unsafe { libc::fallocate(fd, 0, offset as libc::off_t, len as libc::off_t) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.reserved = offset + len;
        }
        Ok(())
    }

    /// Unmaps the current window and maps the reserved one that holds file offset `pos`.
    fn map_window_at(&mut self, pos: u64) -> io::Result<()> {
        self.unmap()?;
        let len = self.window_len;
        let offset = pos - pos % len;
        self.reserve_to(offset + len)?;
        let fd = self.file.as_raw_fd();
        // SAFETY: a new shared mapping chosen by the kernel (no address hint), of `len` bytes of
        // our own file that fallocate reserved, so every page of it has blocks behind it.
        // It aliases no Rust object; only `write` stores into it, within `len`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        self.map = Some(Mapping {
            ptr,
            len: len as usize,
            offset,
        });
        Ok(())
    }

    fn unmap(&mut self) -> io::Result<()> {
        let Some(m) = self.map.take() else {
            return Ok(());
        };
        // SAFETY: `m` is a mapping made by `map_window_at` and unmapped only here (taken out of
        // `self.map`), with its own address and length; no reference into it outlives `write`.
        let r = unsafe { libc::munmap(m.ptr.as_ptr().cast(), m.len) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Write for MappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.closed {
            return Err(io::Error::other("the capture file is closed"));
        }
        if buf.len() >= PWRITE_MIN {
            // Reserved first, so that a full disk is this error and the file stays as it was.
            self.reserve_to(self.pos + buf.len() as u64)?;
            let n = self.file.write_at(buf, self.pos)?;
            self.pos += n as u64;
            return Ok(n);
        }
        let outside = self
            .map
            .as_ref()
            .is_none_or(|m| self.pos < m.offset || self.pos >= m.offset + m.len as u64);
        if outside {
            self.map_window_at(self.pos)?;
        }
        let Some(m) = &self.map else {
            return Err(io::Error::other("no window mapped"));
        };
        let at = (self.pos - m.offset) as usize;
        let n = buf.len().min(m.len - at);
        // SAFETY: `at + n <= m.len`, so the destination lies inside the live mapping `m`, which
        // no Rust reference points into; `buf` is ordinary memory, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), m.ptr.as_ptr().add(at), n) };
        self.pos += n as u64;
        Ok(n)
    }

    /// Nothing to do: every byte written is in the page cache already.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!("vgt-capture: error: cannot cut the capture file to its length: {e}");
        }
    }
}

/// True for the errors that mean "this file system cannot do it", not "it failed".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENODEV | libc::ESPIPE)
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn open(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    fn mapped(path: &std::path::Path, window: u64) -> MappedFile {
        match MappedFile::open_with_window(open(path), window).unwrap() {
            Opened::Mapped(m) => m,
            Opened::Unsupported { reason, .. } => panic!("mapping unsupported here: {reason}"),
        }
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn read_back(path: &std::path::Path) -> Vec<u8> {
        let mut v = Vec::new();
        File::open(path).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn writes_spanning_windows_read_back_and_close_cuts_to_the_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let page = page_size();
        let mut f = mapped(&path, page);
        let mut want = Vec::new();
        // Short writes through the mapping, one across a window's end, one over three windows
        // (pwrite), and one into the window after it.
        for (n, seed) in [
            (100, 1),
            (page as usize - 103, 2),
            (10, 3),
            (3 * page as usize, 4),
            (1, 5),
        ] {
            let b = bytes(n, seed);
            f.write_all(&b).unwrap();
            want.extend_from_slice(&b);
            assert_eq!(f.written(), want.len() as u64);
            // Visible to read(2) at once, before any flush or close.
            assert_eq!(&read_back(&path)[..want.len()], &want[..]);
        }
        let reserved = std::fs::metadata(&path).unwrap().len();
        assert_eq!(reserved, 5 * page, "reserved whole windows ahead");
        assert!(
            read_back(&path)[want.len()..].iter().all(|b| *b == 0),
            "the rest is zero"
        );
        f.close().unwrap();
        assert_eq!(read_back(&path), want);
        assert!(f.write(b"x").is_err(), "closed");
        drop(f);
        assert_eq!(read_back(&path), want, "drop after close changes nothing");
    }

    #[test]
    fn drop_without_close_cuts_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut f = mapped(&path, page_size());
        f.write_all(b"records so far").unwrap();
        drop(f);
        assert_eq!(read_back(&path), b"records so far");
    }

    #[test]
    fn empty_file_closes_to_zero_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut f = mapped(&path, page_size());
        f.close().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    /// Writes the same records (blobs across several windows, a dedup hit) into `out`.
    fn write_capture<W: Write>(out: W, finish: bool) -> Option<W> {
        use vgt_format::file::{CaptureWriter, WriterOptions};
        use vgt_format::record::{Lifecycle, LifecycleKind, RecordBody};
        let opts = WriterOptions {
            created_unix_ns: Some(1),
            ..WriterOptions::default()
        };
        let mut w = CaptureWriter::new(out, opts).unwrap();
        for i in 0..40u64 {
            // Incompressible (xorshift): each blob is stored as it is, a pwrite of its own.
            let blob = crate::noise(9000, i);
            if i % 2 == 0 {
                w.store(&blob).unwrap();
                w.store(&blob).unwrap();
            }
            w.append_body(
                i,
                RecordBody::Lifecycle(Lifecycle {
                    kind: LifecycleKind::Error,
                    queue: None,
                    command: None,
                    message: format!("record {i}"),
                }),
            )
            .unwrap();
            w.flush().unwrap();
        }
        if finish {
            Some(w.finish_into_inner().unwrap().1)
        } else {
            drop(w);
            None
        }
    }

    #[test]
    fn mapped_capture_is_byte_identical_to_one_written_with_write() {
        let dir = tempfile::tempdir().unwrap();
        for finish in [true, false] {
            let plain = dir.path().join(format!("plain-{finish}"));
            let map = dir.path().join(format!("mapped-{finish}"));
            write_capture(File::create(&plain).unwrap(), finish);
            if let Some(mut f) = write_capture(mapped(&map, page_size()), finish) {
                f.close().unwrap();
            }
            let (a, b) = (read_back(&plain), read_back(&map));
            assert!(a.len() > 40 * page_size() as usize, "spans many windows");
            assert!(
                a == b,
                "finished {finish}: {} vs {} bytes",
                a.len(),
                b.len()
            );
        }
    }

    #[test]
    fn a_device_that_cannot_be_mapped_is_unsupported_and_given_back() {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        match MappedFile::open(null).unwrap() {
            Opened::Unsupported { mut file, reason } => {
                assert!(unsupported(&reason), "{reason}");
                file.write_all(b"still writable").unwrap();
            }
            Opened::Mapped(_) => panic!("/dev/null mapped"),
        }
    }

    #[test]
    fn window_not_a_multiple_of_the_page_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = MappedFile::open_with_window(open(&dir.path().join("m")), 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
