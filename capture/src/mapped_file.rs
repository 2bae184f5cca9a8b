//! The crash-safe capture file: bytes are stored into a shared mapping of the file, so they are
//! in the operating system's page cache (and survive this process being killed) as soon as the
//! copy is done, without a write(2) per command.
//!
//! The file grows in windows ([`WINDOW`]): each window's blocks are reserved with fallocate(2)
//! before it is mapped, so a full disk is an error from the reservation, never a SIGBUS on a
//! store. Large writes ([`PWRITE_MIN`], a big blob) go into the reserved space with pwrite(2)
//! instead, which is cheaper than faulting their pages in; both reach the same page cache.
//!
//! **Populating ahead.** The first store into each page of a mapping costs a page fault (a
//! page-cache page is allocated and, on ext4, the page's unwritten block converted): about
//! 3-5 us per 4 KiB, some 300 ns per small command on the thread that records. So a helper
//! thread (`vgt-populate`) prefaults each window with madvise(MADV_POPULATE_WRITE) while the
//! recording thread stores into it, and the window after the current one is reserved, mapped
//! and populated before the writer reaches it. The helper also does every munmap of a window it
//! was given, after its populate, so the writer never waits for it; the writer never touches a
//! window after handing it over. A kernel without MADV_POPULATE_WRITE (before 5.14) answers
//! EINVAL: the helper stops asking, and stores fault as before. The cost: the file is reserved
//! one window further ahead, and for a slow capture the populated (zero) pages of a window may
//! be written back once before the records that fill them are written back again. A process
//! confined to one CPU does not prefault ([`MapOptions::prefault`]): there the helper's faults
//! only take turns with the writer's work, and the pages of new frames it zeroes are the ones
//! pwrite then overwrites (the capture bench's one-core crash-safe figure for new 1080p frames,
//! commands only, went from 67-69 to 105-119 frames/s, docs/BENCHMARKS.md).
//!
//! **Retiring what is behind.** Once the writer is a window past a range, the helper writes it
//! back and drops its pages from the page cache (see `helper_loop`), so a long capture holds a
//! few windows of page cache instead of everything it wrote, and the pages the kernel hands it
//! are ones it just freed (on VMs whose free pages go back to the host, a page not used
//! recently costs a host fault: this halved the cost of recording new 1080p frames there).
//!
//! Closing the file cuts it to the bytes written; a file left by a killed process ends in the
//! zero bytes of its last windows, which readers take for the end of an unfinished capture
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
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Bytes reserved and mapped at a time.
pub const WINDOW: u64 = 16 << 20;

/// Writes of at least this many bytes go to the reserved space with pwrite(2) instead of
/// through the mapping: the first store into each page of fallocated space costs a page fault
/// of about 5 µs (ext4 converts the page's unwritten block), several times what write(2)
/// costs per page, while one system call is nothing next to the copy of a large blob. Small
/// records, which share their pages, keep the mapping (docs/BENCHMARKS.md).
pub const PWRITE_MIN: usize = 8 << 10;

/// How a [`MappedFile`] maps its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// Bytes reserved and mapped at a time: a multiple of the page size ([`WINDOW`] by default;
    /// tests use small windows to cross many).
    pub window: u64,
    /// Prefault windows on a helper thread and map the next one ahead (the default; see the
    /// module docs). Off, every page is faulted in by the store that first reaches it.
    pub populate_ahead: bool,
    /// With `populate_ahead`, have the helper prefault the windows (MADV_POPULATE_WRITE); it
    /// still maps them ahead and retires what is behind either way. On by default when this
    /// process may run on more than one CPU ([`std::thread::available_parallelism`]: its
    /// affinity and cgroup quota): on one, the helper's faults only take turns with the
    /// writer's work on that CPU, and zero pages that large pwrites then overwrite (new
    /// 1080p frames recorded on one core: docs/BENCHMARKS.md).
    pub prefault: bool,
}

/// True when this process may run on more than one CPU.
fn more_than_one_cpu() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            window: WINDOW,
            populate_ahead: true,
            prefault: more_than_one_cpu(),
        }
    }
}

/// A file written through shared mappings of space reserved ahead; see the module docs.
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    window_len: u64,
    /// The window stores go into.
    map: Option<Mapping>,
    /// The window after it, mapped ahead and being populated.
    ahead: Option<Mapping>,
    /// The populating helper; `None` when populating ahead is off or its thread is gone.
    helper: Option<Helper>,
    /// Bytes written: the file offset of the next byte.
    pos: u64,
    /// File length reserved so far (a multiple of `window_len`).
    reserved: u64,
    /// The file's page cache before this offset was handed to the helper to write back and drop.
    retired: u64,
    /// [`MapOptions::prefault`].
    prefault: bool,
    /// Bytes handed to the helper to prefault, in all.
    prefault_asked: u64,
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

impl Mapping {
    /// True when file offset `pos` lies in this window.
    fn holds(&self, pos: u64) -> bool {
        pos >= self.offset && pos < self.offset + self.len as u64
    }
}

// SAFETY: the mappings are owned by this value alone (nothing else holds their addresses but
// the helper, which only populates and unmaps the ones it was handed), so moving it to
// another thread moves the only access to them.
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

/// A capture file's output: a [`MappedFile`], the plain file, written with write(2), where the
/// file cannot be mapped ([`Opened::Unsupported`]), or (buffered mode) a
/// [`DirectIoFile`](crate::direct_io::DirectIoFile).
#[derive(Debug)]
pub enum Output {
    /// write(2) on the file.
    File(File),
    /// Into the file's reserved, populated space; cut to its length by [`Output::close`].
    Mapped(MappedFile),
    /// With O_DIRECT, past the page cache (buffered mode's writer thread).
    DirectIo(crate::direct_io::DirectIoFile),
}

impl Output {
    /// Completes the output once the writer is done with it: a mapped file is cut to the bytes
    /// written; a plain or O_DIRECT one is complete when its last write returned.
    pub fn close(&mut self) -> io::Result<()> {
        match self {
            Output::File(_) | Output::DirectIo(_) => Ok(()),
            Output::Mapped(m) => m.close(),
        }
    }

    /// Writes a hand-over buffer's data: an O_DIRECT file takes its whole blocks from where they
    /// are ([`DirectIoFile::write_reserved`](crate::direct_io::DirectIoFile::write_reserved)),
    /// the others copy it as `write_all` does.
    pub fn write_buffer(&mut self, buf: &mut crate::direct_io::AlignedBuf) -> io::Result<()> {
        match self {
            Output::DirectIo(f) => f.write_reserved(buf),
            other => other.write_all(buf.data()),
        }
    }
}

impl From<File> for Output {
    fn from(f: File) -> Self {
        Output::File(f)
    }
}

impl From<crate::direct_io::DirectIoFile> for Output {
    fn from(f: crate::direct_io::DirectIoFile) -> Self {
        Output::DirectIo(f)
    }
}

impl From<MappedFile> for Output {
    fn from(f: MappedFile) -> Self {
        Output::Mapped(f)
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Mapped(f) => f.write(buf),
            Output::DirectIo(f) => f.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::File(f) => f.write_all(buf),
            Output::Mapped(f) => f.write_all(buf),
            Output::DirectIo(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Mapped(f) => f.flush(),
            Output::DirectIo(f) => f.flush(),
        }
    }
}

impl MappedFile {
    /// Takes an empty `file` opened for reading and writing and reserves and maps its first
    /// window, in [`WINDOW`]s, populating ahead.
    pub fn open(file: File) -> io::Result<Opened> {
        Self::open_with(file, MapOptions::default())
    }

    /// Like [`MappedFile::open`] with the given options.
    pub fn open_with(file: File, options: MapOptions) -> io::Result<Opened> {
        let window_len = options.window;
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
            ahead: None,
            helper: None,
            pos: 0,
            reserved: 0,
            retired: 0,
            prefault: options.prefault,
            prefault_asked: 0,
            closed: false,
        };
        let first = match f.map_window(0) {
            Ok(m) => m,
            Err(e) if unsupported(&e) => {
                let file = f.take_file()?;
                return Ok(Opened::Unsupported { file, reason: e });
            }
            Err(e) => return Err(e),
        };
        if options.populate_ahead {
            // Without the thread (EAGAIN: too many), the file is written as without populating.
            f.helper = f.file.try_clone().and_then(Helper::spawn).ok();
        }
        f.start_window(first, true);
        Ok(Opened::Mapped(f))
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
        let mut result = Ok(());
        for m in [self.map.take(), self.ahead.take()].into_iter().flatten() {
            result = result.and(self.release(m));
        }
        // The helper's last populate and munmap are done once it has stopped: only then may the
        // file shrink under its windows.
        if let Some(helper) = self.helper.take() {
            result = result.and(helper.stop());
        }
        result?;
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

    /// Reserves and maps the window that starts at file offset `offset`.
    fn map_window(&mut self, offset: u64) -> io::Result<Mapping> {
        let len = self.window_len;
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
        Ok(Mapping {
            ptr,
            len: len as usize,
            offset,
        })
    }

    /// Makes `m` the window stores go into, has the helper populate it when it is `fresh` (not
    /// the window mapped, and populated, ahead), and maps the next window ahead.
    fn start_window(&mut self, m: Mapping, fresh: bool) {
        let next = m.offset + m.len as u64;
        if fresh {
            self.populate(&m);
        }
        self.map = Some(m);
        if self.helper.is_none() {
            return;
        }
        // Best effort: a reservation or mapping that fails here is tried again, and reported,
        // when the writer reaches that window.
        if let Ok(a) = self.map_window(next) {
            self.populate(&a);
            self.ahead = Some(a);
        }
    }

    /// Moves to the window that holds file offset `pos`: the one mapped ahead if it is that
    /// one, else a new mapping (a large pwrite went past the window ahead).
    fn move_to(&mut self, pos: u64) -> io::Result<()> {
        let offset = pos - pos % self.window_len;
        if let Some(m) = self.map.take() {
            self.release(m)?;
        }
        let (m, fresh) = match self.ahead.take() {
            Some(a) if a.offset == offset => (a, false),
            other => {
                if let Some(a) = other {
                    self.release(a)?;
                }
                (self.map_window(offset)?, true)
            }
        };
        self.start_window(m, fresh);
        // Everything before the previous window is behind the writer for good.
        let behind = offset.saturating_sub(self.window_len);
        if behind > self.retired
            && let Some(h) = &self.helper
            && h.jobs.send(Job::Retire(self.retired, behind)).is_ok()
        {
            self.retired = behind;
        }
        Ok(())
    }

    /// Asks the helper to prefault `m`'s pages. The writer may store into it meanwhile.
    fn populate(&mut self, m: &Mapping) {
        if !self.prefault || self.helper.is_none() {
            return;
        }
        self.prefault_asked += m.len as u64;
        if let Some(h) = &self.helper
            && h.jobs
                .send(Job::Populate(m.ptr.as_ptr() as usize, m.len))
                .is_err()
        {
            // The helper is gone (it cannot panic, but should it): unmap here from now on.
            self.helper = None;
        }
    }

    /// Unmaps `m`: through the helper, after any populate of it it has yet to do, or here.
    fn release(&mut self, m: Mapping) -> io::Result<()> {
        let (addr, len) = (m.ptr.as_ptr() as usize, m.len);
        if let Some(h) = &self.helper {
            match h.jobs.send(Job::Unmap(addr, len)) {
                Ok(()) => return Ok(()),
                // The helper is gone; it took no job after the last one it finished.
                Err(_) => self.helper = None,
            }
        }
        munmap(addr, len)
    }
}

/// What the populating helper is asked to do, in order: (address, length) of a window.
enum Job {
    /// madvise(MADV_POPULATE_WRITE) the window.
    Populate(usize, usize),
    /// munmap it; the writer no longer uses it.
    Unmap(usize, usize),
    /// The file range `from..to` (file offsets) will not be written again: write it back and
    /// drop its pages from the page cache (see [`helper_loop`]).
    Retire(u64, u64),
}

/// The populating helper thread.
#[derive(Debug)]
struct Helper {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<io::Result<()>>,
}

impl Helper {
    fn spawn(file: File) -> io::Result<Helper> {
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vgt-populate".into())
            .spawn(move || helper_loop(&rx, &file))?;
        Ok(Helper { jobs, thread })
    }

    /// Waits until every job sent is done; the first munmap error, if any.
    fn stop(self) -> io::Result<()> {
        drop(self.jobs);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the populate thread panicked")))
    }
}

/// The helper's jobs, in the order they were sent.
///
/// **Retiring written ranges.** Every page the page cache takes for the file is a page the
/// guest kernel has to allocate; on a VM whose free pages are reported to the host (virtio
/// balloon free page reporting, as on the project's VMs) a page that was not used recently
/// costs a fault in the host as well, several microseconds per 4 KiB, and a capture that keeps
/// every page it wrote cached takes new pages all the time (`dd bs=1M count=2000` into a file:
/// 4.7 s of system time; with `oflag=nocache`, which drops what it wrote, 0.6 s;
/// docs/BENCHMARKS.md). So once the writer is a window past a range, the helper starts its
/// writeback (sync_file_range(2) WRITE) and, a range later, waits for that writeback and drops
/// the clean pages (posix_fadvise DONTNEED): the page cache the capture holds stays a few
/// windows, and new pages come from those just freed. The bytes are on the disk before their
/// pages are dropped, so nothing a crash of this process would keep is lost; a range's
/// writeback error is this loop's error, reported by [`MappedFile::close`].
fn helper_loop(jobs: &mpsc::Receiver<Job>, file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let mut populate = true;
    let mut retire = true;
    let mut result = Ok(());
    // The range whose writeback was started last.
    let mut writing: Option<(u64, u64)> = None;
    for job in jobs {
        match job {
            Job::Populate(addr, len) if populate => {
                // SAFETY: `addr..addr + len` is a shared file mapping the writer made and keeps
                // mapped until it sends the Unmap for it, which this loop takes only after this
                // call. MADV_POPULATE_WRITE faults its pages in writable without changing a
                // byte, so the writer's concurrent stores are unaffected.
                let r = unsafe {
                    libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE)
                };
                if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    // The kernel predates MADV_POPULATE_WRITE (5.14): stores fault instead.
                    populate = false;
                }
                // Any other failure (ENOMEM, EINTR …) only means the stores fault these pages.
            }
            Job::Populate(..) => {}
            Job::Unmap(addr, len) => result = result.and(munmap(addr, len)),
            Job::Retire(..) if !retire => {}
            Job::Retire(from, to) => {
                let started = sync_range(fd, from, to, libc::SYNC_FILE_RANGE_WRITE);
                let previous = writing.replace((from, to));
                let done = match (started, previous) {
                    (Ok(()), Some((from, to))) => {
                        let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                        sync_range(fd, from, to, wait).map(|()| Some((from, to)))
                    }
                    (Ok(()), None) => Ok(None),
                    (Err(e), _) => Err(e),
                };
                match done {
                    Ok(Some((_, to))) => {
                        // From the file's start: the kernel leaves a (large) folio that
                        // crosses either end of the range, so one across an earlier range's
                        // end goes now; the ranges before hold no pages, which costs nothing.
                        // SAFETY: posix_fadvise(2) on a descriptor this thread owns; no memory
                        // is passed. DONTNEED drops clean, unmapped pages only (the range's
                        // windows were unmapped by earlier jobs); it is advice, not data.
                        unsafe {
                            libc::posix_fadvise(fd, 0, to as libc::off_t, libc::POSIX_FADV_DONTNEED)
                        };
                    }
                    Ok(None) => {}
                    // The disk failed to take the bytes: the capture is damaged; say so.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::ENOSPC)) => {
                        result = result.and(Err(e));
                    }
                    // The file system does not do it (EINVAL, ENOSYS …): the pages stay cached,
                    // as without retiring.
                    Err(_) => retire = false,
                }
            }
        }
    }
    result
}

/// sync_file_range(2) of the file range `from..to` with `flags`; EINTR retried.
fn sync_range(fd: libc::c_int, from: u64, to: u64, flags: libc::c_uint) -> io::Result<()> {
    loop {
        // SAFETY: sync_file_range(2) on a descriptor the caller owns; no memory is passed.
        let r = unsafe {
            libc::sync_file_range(
                fd,
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                flags,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::new(
                e.kind(),
                format!("writing back bytes {from}..{to} of the capture file: {e}"),
            ));
        }
    }
}

/// Unmaps a window made by `MappedFile::map_window`.
fn munmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: `addr`/`len` are a mapping made by `map_window` and unmapped exactly once, here,
    // after its owner gave it up (`MappedFile::release`); no reference into it is live.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
            if self.helper.is_some() && !self.map.as_ref().is_some_and(|m| m.holds(self.pos)) {
                // Past the current window: move on now, so that the window after this one is
                // populated before the next write reaches it (a run of large writes never
                // takes the mapped path below). Best effort, as the write is done: what fails
                // here fails again, and is reported, on the next write that needs the window.
                let _ = self.move_to(self.pos);
            }
            return Ok(n);
        }
        if !self.map.as_ref().is_some_and(|m| m.holds(self.pos)) {
            self.move_to(self.pos)?;
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
        mapped_with(path, window, true)
    }

    fn mapped_with(path: &std::path::Path, window: u64, populate_ahead: bool) -> MappedFile {
        let options = MapOptions {
            window,
            populate_ahead,
            prefault: true,
        };
        match MappedFile::open_with(open(path), options).unwrap() {
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
        for populate_ahead in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m");
            let page = page_size();
            let mut f = mapped_with(&path, page, populate_ahead);
            let mut want = Vec::new();
            // Short writes through the mapping, one across a window's end, one over three
            // windows (pwrite, past the window mapped ahead), and one into the window after it.
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
            // Windows 0 to 4 hold bytes; populating ahead reserves window 5 too.
            let windows = if populate_ahead { 6 } else { 5 };
            assert_eq!(reserved, windows * page, "reserved whole windows ahead");
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
    }

    /// Pages of `m` that are resident (mincore(2)).
    fn resident_pages(m: &Mapping) -> usize {
        let pages = m.len / page_size() as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: `m` is a live mapping of `m.len` bytes and `vec` has one byte per page of it.
        let r = unsafe { libc::mincore(m.ptr.as_ptr().cast(), m.len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 != 0).count()
    }

    /// The resident pages of `m` once all are, or after 10 s: the helper works on its own
    /// thread.
    fn populated(m: &Mapping) -> usize {
        let pages = m.len / page_size() as usize;
        let t = std::time::Instant::now();
        while resident_pages(m) < pages && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        resident_pages(m)
    }

    /// False (and says so) on a kernel without MADV_POPULATE_WRITE (before 5.14), where the
    /// helper cannot populate and stores fault as they did.
    fn kernel_populates() -> bool {
        let len = page_size() as usize;
        // SAFETY: a new private anonymous mapping of one page, unmapped below; populating it
        // changes no byte.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let r = libc::madvise(p, len, libc::MADV_POPULATE_WRITE);
            let e = io::Error::last_os_error();
            libc::munmap(p, len);
            if r != 0 {
                eprintln!("MADV_POPULATE_WRITE unsupported here ({e}): not checked");
            }
            r == 0
        }
    }

    #[test]
    fn the_window_ahead_is_mapped_and_populated_before_the_writer_reaches_it() {
        if !kernel_populates() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let window = 64 * page_size();
        let mut f = mapped_with(&path, window, true);
        f.write_all(b"header").unwrap();
        let ahead = f.ahead.as_ref().expect("the next window is mapped ahead");
        assert_eq!(ahead.offset, window);
        let pages = ahead.len / page_size() as usize;
        assert_eq!(
            populated(ahead),
            pages,
            "every page of the window ahead is in"
        );
        // Writing into it promotes it: the same mapping becomes the current window.
        let addr = ahead.ptr;
        let fill = bytes(window as usize - 6, 7);
        for chunk in fill.chunks(4000) {
            f.write_all(chunk).unwrap();
        }
        f.write_all(b"x").unwrap();
        assert_eq!(
            f.map.as_ref().unwrap().ptr,
            addr,
            "the window ahead was used"
        );
        assert_eq!(f.ahead.as_ref().unwrap().offset, 2 * window);
        f.close().unwrap();
        let got = read_back(&path);
        assert_eq!(&got[..6], b"header");
        assert_eq!(&got[6..window as usize], &fill[..]);
        assert_eq!(&got[window as usize..], b"x");
    }

    #[test]
    fn a_run_of_large_writes_moves_the_windows_on_too() {
        if !kernel_populates() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let window = 16 * page_size();
        let mut f = mapped_with(&path, window, true);
        // Two pwrites of 10 pages each: the second ends in window 1.
        let big = bytes(10 * page_size() as usize, 9);
        f.write_all(&big).unwrap();
        f.write_all(&big).unwrap();
        assert_eq!(f.map.as_ref().unwrap().offset, window, "moved to window 1");
        let ahead = f.ahead.as_ref().expect("window 2 mapped ahead");
        assert_eq!(ahead.offset, 2 * window);
        let pages = ahead.len / page_size() as usize;
        assert_eq!(
            populated(ahead),
            pages,
            "populated before any write reaches it"
        );
        f.close().unwrap();
        assert_eq!(read_back(&path), [&big[..], &big[..]].concat());
    }

    /// Pages of the file's first `len` bytes that are in the page cache: mincore(2) of a
    /// read-only mapping made for the purpose (mapping reads nothing in).
    fn cached_pages(path: &std::path::Path, len: usize) -> usize {
        let file = File::open(path).unwrap();
        // SAFETY: a new read-only shared mapping of `len` bytes of a file at least that long,
        // unmapped below; nothing reads through it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "{}", io::Error::last_os_error());
        let m = Mapping {
            ptr: NonNull::new(p.cast()).unwrap(),
            len,
            offset: 0,
        };
        let n = resident_pages(&m);
        munmap(p as usize, len).unwrap();
        n
    }

    #[test]
    fn ranges_the_writer_left_behind_are_written_back_and_leave_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        // SAFETY: statfs(2) fills the struct; the path is a NUL-terminated copy.
        let fs_type = unsafe {
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            let mut st: libc::statfs = std::mem::zeroed();
            assert_eq!(libc::statfs(c.as_ptr(), &mut st), 0);
            st.f_type
        };
        if fs_type == libc::TMPFS_MAGIC {
            // tmpfs pages are the file itself: there is nothing to write back or drop.
            eprintln!("{} is on tmpfs: not checked", dir.path().display());
            return;
        }
        // 2 MiB windows: no page-cache folio (at most a PMD, 2 MiB, naturally aligned) crosses
        // from one window into the next, where the writer would keep it dirty.
        let window = 2 << 20;
        let mut f = mapped_with(&path, window, true);
        let mut want = Vec::new();
        // 40 windows: small records through the mapping and blobs with pwrite(2), in turn.
        for i in 0..40u8 {
            for _ in 0..8 {
                let b = bytes(700, i);
                f.write_all(&b).unwrap();
                want.extend_from_slice(&b);
            }
            let b = bytes(window as usize - 8 * 700, i ^ 0x55);
            f.write_all(&b).unwrap();
            want.extend_from_slice(&b);
        }
        // Closing waits for the helper's jobs.
        f.close().unwrap();
        // The helper drops a range once a later one was handed over; all but the last few
        // windows are out of the page cache.
        let behind = 30 * window as usize;
        assert_eq!(
            cached_pages(&path, behind),
            0,
            "pages of the first 30 windows still cached"
        );
        assert_eq!(read_back(&path), want, "every byte is in the file");
    }

    #[test]
    fn without_populating_ahead_no_window_is_mapped_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut f = mapped_with(&path, page_size(), false);
        f.write_all(b"header").unwrap();
        assert!(f.ahead.is_none() && f.helper.is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), page_size());
        f.close().unwrap();
        assert_eq!(read_back(&path), b"header");
    }

    #[test]
    fn without_prefaulting_windows_are_mapped_ahead_but_not_populated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let window = 512 * page_size();
        let options = MapOptions {
            window,
            populate_ahead: true,
            prefault: false,
        };
        let Opened::Mapped(mut f) = MappedFile::open_with(open(&path), options).unwrap() else {
            panic!("mapping unsupported here");
        };
        f.write_all(b"header").unwrap();
        f.write_all(&bytes(window as usize, 3)).unwrap();
        let ahead = f.ahead.as_ref().expect("the next window is mapped ahead");
        assert_eq!(ahead.offset, 2 * window, "moved on, mapping ahead");
        // Not one page asked for (residency cannot tell: a fault's read-around brings the
        // fallocated zeros of the next window into the page cache anyway).
        assert_eq!(f.prefault_asked, 0);
        f.close().unwrap();
        let mut want = b"header".to_vec();
        want.extend_from_slice(&bytes(window as usize, 3));
        assert_eq!(read_back(&path), want);
        // The same with prefaulting: every window mapped was asked for.
        let path = dir.path().join("p");
        let options = MapOptions {
            prefault: true,
            ..options
        };
        let Opened::Mapped(mut f) = MappedFile::open_with(open(&path), options).unwrap() else {
            panic!("mapping unsupported here");
        };
        f.write_all(b"header").unwrap();
        f.write_all(&bytes(window as usize, 3)).unwrap();
        assert_eq!(f.prefault_asked, 3 * window);
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
        for (finish, populate_ahead) in [(true, true), (false, true), (true, false)] {
            let plain = dir.path().join(format!("plain-{finish}-{populate_ahead}"));
            let map = dir.path().join(format!("mapped-{finish}-{populate_ahead}"));
            write_capture(File::create(&plain).unwrap(), finish);
            let out = mapped_with(&map, page_size(), populate_ahead);
            if let Some(mut f) = write_capture(out, finish) {
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
        let options = MapOptions {
            window: 1000,
            ..MapOptions::default()
        };
        let e = MappedFile::open_with(open(&dir.path().join("m")), options).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
