//! The buffered capture file written with O_DIRECT: the writer thread's buffers go from memory
//! to the disk without passing through the page cache.
//!
//! A capture writes gigabytes once and reads them back later, if at all, so the page cache is
//! pure cost for it: each new page-cache page is allocated, zeroed and copied into, which is
//! most of what writing costs (with `dd bs=1M count=2000` on the project VMs: 5.0 s of CPU
//! through the page cache, 0.24 s with `oflag=direct`, docs/BENCHMARKS.md), and the capture
//! pushes everything else out of the cache.
//!
//! O_DIRECT wants the buffer, the file offset and the length aligned to the device's block;
//! [`BLOCK`] (4 KiB) covers every common device. Bytes are staged in an aligned buffer; every
//! [`Write::write_all`] writes its whole blocks directly, and the partial block at the end
//! through a second, ordinary descriptor of the same file, so that, as with write(2),
//! everything handed over has reached the operating system when it returns (the periodic
//! flush of buffered mode relies on that). The next direct write covers that block again, with
//! more bytes after them; the kernel writes the cached copy back and drops it first, so the
//! file never holds a stale block. One small page-cache write per call, not per record: the
//! writer thread's calls are [`BUFFER_LEN`](crate::writer_thread::BUFFER_LEN) long.
//!
//! The writer thread's buffers are [`AlignedBuf`]s: their bytes start on a block boundary in
//! memory with room in front for the partial block staged here, so
//! [`DirectIoFile::write_reserved`] puts that block in front of them and writes their whole
//! blocks to the disk from where they are; only the new partial block (under 4 KiB) is copied
//! into the stage. Before, every byte of a buffered capture was copied once more, into the
//! stage, on the writer thread.
//!
//! [`DirectIoFile::open`] tries one aligned write before it says yes: file systems that refuse
//! O_DIRECT (older tmpfs, some FUSE file systems) fail the open or that write with
//! EINVAL, and get [`OpenedDirect::Unsupported`], so the caller writes through the page cache
//! as before. A later EINVAL (a file system that changes its mind) switches to the ordinary
//! descriptor for the rest of the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of the buffer, the file offsets and the lengths of direct writes.
pub const BLOCK: usize = 4096;

/// Bytes staged before a direct write (a multiple of [`BLOCK`]).
const STAGE_LEN: usize = 4 << 20;

/// A file written with O_DIRECT; see the module docs.
#[derive(Debug)]
pub struct DirectIoFile {
    /// The file opened with O_DIRECT.
    direct: File,
    /// The same file through the page cache: the partial last block.
    plain: File,
    /// Backing memory of the stage: `STAGE_LEN + BLOCK` bytes, so that an aligned window of
    /// `STAGE_LEN` fits at `start`.
    memory: Vec<u8>,
    start: usize,
    /// Bytes staged, from the stage's start.
    len: usize,
    /// File offset of the stage's first byte (a multiple of [`BLOCK`]).
    block_pos: u64,
    /// False once a direct write failed with EINVAL: everything goes through `plain`.
    direct_ok: bool,
    /// Bytes copied into the stage so far.
    copied: u64,
}

/// A hand-over buffer for [`DirectIoFile::write_reserved`]: up to `capacity` bytes of data that
/// start `reserved` bytes after a [`BLOCK`] boundary in memory, the `reserved` bytes in front
/// being room for the partial block the file has staged. Fill it after
/// [`AlignedBuf::reset`] with the file position it will be written at.
pub struct AlignedBuf {
    /// `capacity + 2 * BLOCK` bytes: an aligned window of `BLOCK + capacity` fits at `start`.
    mem: Vec<u8>,
    start: usize,
    reserved: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuf {
    /// An empty buffer for `capacity` bytes of data, for file position 0.
    pub fn new(capacity: usize) -> AlignedBuf {
        let mem = vec![0; capacity + 2 * BLOCK];
        let start = mem.as_ptr().align_offset(BLOCK).min(BLOCK);
        AlignedBuf {
            mem,
            start,
            reserved: 0,
            len: 0,
            capacity,
        }
    }

    /// Empties the buffer for data that will be written at file position `pos`.
    pub fn reset(&mut self, pos: u64) {
        self.reserved = (pos % BLOCK as u64) as usize;
        self.len = 0;
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of data it can still take.
    pub fn room(&self) -> usize {
        self.capacity - self.len
    }

    /// Appends the first [`AlignedBuf::room`] bytes of `bytes`; returns how many it took.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        let at = self.start + self.reserved + self.len;
        self.mem[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        let at = self.start + self.reserved;
        &self.mem[at..at + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("reserved", &self.reserved)
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Writes `data` at `at` (both aligned) with O_DIRECT, the rest through `plain` once a direct
/// write was refused with EINVAL (`direct_ok` then turns false).
fn write_direct(
    direct: &File,
    plain: &File,
    direct_ok: &mut bool,
    data: &[u8],
    at: u64,
) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() && *direct_ok {
        match direct.write_at(&data[done..], at + done as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            // A short direct write (a full disk) ends on a block; the next one fails with
            // the reason.
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct_ok = false,
            Err(e) => return Err(e),
        }
    }
    if done < data.len() {
        plain.write_all_at(&data[done..], at + done as u64)?;
    }
    Ok(())
}

/// What [`DirectIoFile::open`] made of a file.
#[derive(Debug)]
pub enum OpenedDirect {
    /// Direct writes work on this file.
    Direct(DirectIoFile),
    /// They do not; write through the page cache.
    Unsupported {
        /// The file, unchanged (still empty).
        file: File,
        /// Why (EINVAL from open or from the trial write, mostly).
        reason: io::Error,
    },
}

impl DirectIoFile {
    /// Takes `file`, empty and open for writing at `path`, opens `path` a second time with
    /// O_DIRECT and tries one aligned write at offset 0 (cut off again).
    pub fn open(path: &Path, file: File) -> io::Result<OpenedDirect> {
        if !file.metadata()?.is_file() {
            // A device or a pipe (`-o /dev/null`): nothing to gain, and set_len would fail.
            return Ok(OpenedDirect::Unsupported {
                file,
                reason: io::Error::new(io::ErrorKind::Unsupported, "not a regular file"),
            });
        }
        let direct = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            Err(reason) if reason.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(OpenedDirect::Unsupported { file, reason });
            }
            Err(e) => return Err(e),
        };
        let mut f = DirectIoFile {
            direct,
            plain: file,
            memory: vec![0; STAGE_LEN + BLOCK],
            start: 0,
            len: 0,
            block_pos: 0,
            direct_ok: true,
            copied: 0,
        };
        f.start = f.memory.as_ptr().align_offset(BLOCK);
        if f.start > BLOCK {
            return Err(io::Error::other("cannot align the O_DIRECT stage"));
        }
        let trial = f.direct.write_at(&f.memory[f.start..f.start + BLOCK], 0);
        f.plain.set_len(0)?;
        match trial {
            Ok(n) if n == BLOCK => Ok(OpenedDirect::Direct(f)),
            Ok(n) => Err(io::Error::other(format!(
                "O_DIRECT trial write of {BLOCK} bytes wrote {n}"
            ))),
            Err(reason) if reason.raw_os_error() == Some(libc::EINVAL) => {
                Ok(OpenedDirect::Unsupported {
                    file: f.plain,
                    reason,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// True while writes go directly to the disk (false after a direct write was refused).
    pub fn is_direct(&self) -> bool {
        self.direct_ok
    }

    /// Bytes copied into the stage so far (by [`Write::write_all`], and the partial last block
    /// of each [`DirectIoFile::write_reserved`]).
    pub fn copied_bytes(&self) -> u64 {
        self.copied
    }

    /// Writes `buf`'s data like [`Write::write_all`], without copying its whole blocks: the
    /// staged partial block goes into the room in front of the data, the whole blocks are
    /// written from the buffer, and only the new partial block is staged. A buffer reset for
    /// another file position than this file's (or once direct writes were refused) is written
    /// with `write_all`. The buffer's contents are spent (reset it before reuse).
    pub fn write_reserved(&mut self, buf: &mut AlignedBuf) -> io::Result<()> {
        let aligned = buf.mem[buf.start..].as_ptr().addr().is_multiple_of(BLOCK);
        if buf.reserved != self.len || !self.direct_ok || !aligned {
            return self.write_all(buf.data());
        }
        let total = buf.reserved + buf.len;
        let region = &mut buf.mem[buf.start..buf.start + total];
        region[..self.len].copy_from_slice(&self.memory[self.start..self.start + self.len]);
        let whole = total / BLOCK * BLOCK;
        write_direct(
            &self.direct,
            &self.plain,
            &mut self.direct_ok,
            &region[..whole],
            self.block_pos,
        )?;
        self.block_pos += whole as u64;
        let tail = &region[whole..];
        self.memory[self.start..self.start + tail.len()].copy_from_slice(tail);
        self.len = tail.len();
        self.copied += tail.len() as u64;
        if self.len > 0 {
            self.plain.write_all_at(self.stage(), self.block_pos)?;
        }
        Ok(())
    }

    fn stage(&self) -> &[u8] {
        &self.memory[self.start..self.start + self.len]
    }

    /// Writes the stage's first `n` bytes (a multiple of [`BLOCK`]) at `block_pos` and moves
    /// the rest to the front.
    fn write_blocks(&mut self, n: usize) -> io::Result<()> {
        debug_assert!(n.is_multiple_of(BLOCK) && n <= self.len);
        write_direct(
            &self.direct,
            &self.plain,
            &mut self.direct_ok,
            &self.memory[self.start..self.start + n],
            self.block_pos,
        )?;
        self.block_pos += n as u64;
        self.memory
            .copy_within(self.start + n..self.start + self.len, self.start);
        self.len -= n;
        Ok(())
    }
}

impl Write for DirectIoFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = (STAGE_LEN - self.len).min(rest.len());
            let to = self.start + self.len;
            self.memory[to..to + n].copy_from_slice(&rest[..n]);
            self.len += n;
            self.copied += n as u64;
            rest = &rest[n..];
            if self.len == STAGE_LEN {
                self.write_blocks(STAGE_LEN)?;
            }
        }
        let whole = self.len / BLOCK * BLOCK;
        if whole > 0 {
            self.write_blocks(whole)?;
        }
        if self.len > 0 {
            // The partial last block, through the page cache; written again, directly, once
            // it is whole.
            self.plain.write_all_at(self.stage(), self.block_pos)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Every write_all left its bytes with the operating system.
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn open(path: &Path) -> DirectIoFile {
        let file = File::create(path).unwrap();
        match DirectIoFile::open(path, file).unwrap() {
            OpenedDirect::Direct(f) => f,
            OpenedDirect::Unsupported { reason, .. } => {
                panic!("O_DIRECT refused on {}: {reason}", path.display())
            }
        }
    }

    /// A directory beside the test binary, in the target directory: on a disk file system,
    /// where O_DIRECT works (the temporary directory may be tmpfs).
    fn disk_dir() -> tempfile::TempDir {
        let exe = std::env::current_exe().unwrap();
        tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
    }

    #[test]
    fn every_write_is_in_the_file_when_it_returns_whatever_its_length() {
        let dir = disk_dir();
        let path = dir.path().join("f");
        let mut f = open(&path);
        assert!(f.is_direct());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "trial write cut off"
        );
        let mut expected = Vec::new();
        let lengths = [
            1,
            BLOCK - 1,
            2,
            BLOCK,
            3 * BLOCK + 5,
            STAGE_LEN,
            STAGE_LEN + 7,
            100,
        ];
        for (i, len) in lengths.into_iter().cycle().take(24).enumerate() {
            let chunk: Vec<u8> = (0..len).map(|k| (k * 31 + i * 7 + 1) as u8).collect();
            f.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                expected,
                "after write {i} of {len}"
            );
        }
        assert!(f.is_direct(), "no direct write was refused");
    }

    #[test]
    fn reserved_buffers_go_to_the_disk_from_where_they_are_and_only_partial_blocks_are_copied() {
        let dir = disk_dir();
        let path = dir.path().join("f");
        let mut f = open(&path);
        let mut expected = Vec::new();
        let mut buf = AlignedBuf::new(3 * BLOCK + 100);
        // Lengths that leave every partial-block size behind, some whole buffers.
        let lengths = [
            5,
            BLOCK - 5,
            3 * BLOCK + 100,
            1,
            BLOCK,
            2 * BLOCK + 7,
            3 * BLOCK,
        ];
        for (i, len) in lengths.into_iter().cycle().take(21).enumerate() {
            let chunk: Vec<u8> = (0..len).map(|k| (k * 13 + i * 5 + 3) as u8).collect();
            let before = f.copied_bytes();
            let staged_before = expected.len() % BLOCK;
            buf.reset(expected.len() as u64);
            assert_eq!(buf.extend(&chunk), len);
            assert_eq!(buf.data(), &chunk[..]);
            f.write_reserved(&mut buf).unwrap();
            expected.extend_from_slice(&chunk);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                expected,
                "after buffer {i} of {len}"
            );
            // Only the new partial block went through the stage.
            assert_eq!(
                f.copied_bytes() - before,
                (expected.len() % BLOCK) as u64,
                "buffer {i} of {len} after {staged_before} staged bytes"
            );
        }
        // Plain writes in between, and a buffer reset for the wrong position: copied, still
        // right.
        f.write_all(&[1, 2, 3]).unwrap();
        expected.extend_from_slice(&[1, 2, 3]);
        buf.reset(expected.len() as u64 + 1);
        buf.extend(&[4; 2 * BLOCK]);
        let before = f.copied_bytes();
        f.write_reserved(&mut buf).unwrap();
        expected.extend_from_slice(&[4; 2 * BLOCK]);
        assert_eq!(f.copied_bytes() - before, 2 * BLOCK as u64);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert!(f.is_direct());
    }

    #[test]
    fn a_device_is_not_opened_for_direct_writes() {
        let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
        let opened = DirectIoFile::open(Path::new("/dev/null"), null).unwrap();
        assert!(
            matches!(opened, OpenedDirect::Unsupported { .. }),
            "{opened:?}"
        );
    }

    #[test]
    fn a_file_system_without_o_direct_is_reported_unsupported_with_the_file_unchanged() {
        // /dev/shm is tmpfs; recent kernels take O_DIRECT there too (6.18 here), and then it must
        // work.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        match DirectIoFile::open(&path, file).unwrap() {
            OpenedDirect::Direct(mut f) => {
                f.write_all(b"abc").unwrap();
                f.write_all(&[9; BLOCK * 2]).unwrap();
                let mut expected = b"abc".to_vec();
                expected.extend_from_slice(&[9; BLOCK * 2]);
                assert_eq!(std::fs::read(&path).unwrap(), expected);
            }
            OpenedDirect::Unsupported { mut file, reason } => {
                assert_eq!(reason.raw_os_error(), Some(libc::EINVAL), "{reason}");
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
                file.write_all(b"abc").unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), b"abc");
            }
        }
    }
}
