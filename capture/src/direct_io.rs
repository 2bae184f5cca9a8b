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

    fn stage(&self) -> &[u8] {
        &self.memory[self.start..self.start + self.len]
    }

    /// Writes the stage's first `n` bytes (a multiple of [`BLOCK`]) at `block_pos` and moves
    /// the rest to the front.
    fn write_blocks(&mut self, n: usize) -> io::Result<()> {
        debug_assert!(n.is_multiple_of(BLOCK) && n <= self.len);
        let at = self.block_pos;
        let mut done = 0;
        while done < n && self.direct_ok {
            let from = self.start + done;
            match self
                .direct
                .write_at(&self.memory[from..self.start + n], at + done as u64)
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // A short direct write (a full disk) ends on a block; the next one fails with
                // the reason.
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct_ok = false,
                Err(e) => return Err(e),
            }
        }
        if done < n {
            let from = self.start + done;
            self.plain
                .write_all_at(&self.memory[from..self.start + n], at + done as u64)?;
        }
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
