//! Positioned reads from a capture: a file (pread, no mmap) or bytes in memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Error, Result};

/// Where a reader's bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    File { file: File, len: u64 },
    Bytes(Vec<u8>),
}

/// Read counters shared by everything that reads a [`Source`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
    pub index_chunks: AtomicU64,
}

impl Source {
    pub fn len(&self) -> u64 {
        match self {
            Source::File { len, .. } => *len,
            Source::Bytes(b) => b.len() as u64,
        }
    }

    /// Fills `buf` from `offset`; a read past the end is [`Error::Truncated`].
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64, counters: &Counters) -> Result<()> {
        let needed = buf.len() as u64;
        let available = self.len().saturating_sub(offset);
        if needed > available {
            return Err(Error::Truncated {
                offset,
                needed,
                available,
            });
        }
        counters.reads.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(needed, Ordering::Relaxed);
        match self {
            Source::File { file, .. } => file
                .read_exact_at(buf, offset)
                .map_err(|source| Error::Io { offset, source }),
            Source::Bytes(b) => {
                // In range: checked against len() above.
                let start = offset as usize;
                buf.copy_from_slice(&b[start..start + buf.len()]);
                Ok(())
            }
        }
    }

    /// `len` bytes at `offset` borrowed without a copy when the source is in memory; `None`
    /// for a file (read it with [`Source::read_exact_at`]). Past the end is
    /// [`Error::Truncated`].
    pub fn borrow(&self, offset: u64, len: u64, counters: &Counters) -> Option<Result<&[u8]>> {
        let Source::Bytes(b) = self else {
            return None;
        };
        let available = self.len().saturating_sub(offset);
        if len > available {
            return Some(Err(Error::Truncated {
                offset,
                needed: len,
                available,
            }));
        }
        counters.reads.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(len, Ordering::Relaxed);
        // In range: checked against len() above.
        let start = offset as usize;
        Some(Ok(&b[start..start + len as usize]))
    }

    /// Reads `len` bytes at `offset` into a new vector.
    pub fn read_vec(&self, offset: u64, len: u64, counters: &Counters) -> Result<Vec<u8>> {
        let available = self.len().saturating_sub(offset);
        if len > available {
            return Err(Error::Truncated {
                offset,
                needed: len,
                available,
            });
        }
        let mut v = vec![0u8; len as usize];
        self.read_exact_at(&mut v, offset, counters)?;
        Ok(v)
    }
}

/// Default size of a sequential read window.
pub(crate) const WINDOW: u64 = 1 << 20;

/// Read-ahead after a jump: enough for a record and the next chunk header.
const SMALL_AHEAD: u64 = 4096;

/// A buffered window over a [`Source`] for sequential access.
///
/// Each refill reads ahead; the read-ahead doubles with every refill up to [`WINDOW`] and drops
/// back to a few KiB after [`Window::jumped`], so that stepping over large blobs does not read
/// them while runs of small records are still read in large blocks.
#[derive(Debug)]
pub(crate) struct Window {
    buf: Vec<u8>,
    start: u64,
    ahead: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buf: Vec::new(),
            start: 0,
            ahead: WINDOW,
        }
    }
}

impl Window {
    /// The reader is about to skip past the window: read little ahead next time.
    pub fn jumped(&mut self) {
        self.ahead = SMALL_AHEAD;
    }

    /// `len` bytes at `offset`, from the window when they are in it, else after a refill that
    /// reads ahead. Past the end of the source is [`Error::Truncated`].
    pub fn get(
        &mut self,
        src: &Source,
        counters: &Counters,
        offset: u64,
        len: u64,
    ) -> Result<&[u8]> {
        let end = offset.checked_add(len).ok_or(Error::Truncated {
            offset,
            needed: len,
            available: 0,
        })?;
        let have_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > have_end {
            let available = src.len().saturating_sub(offset);
            if len > available {
                return Err(Error::Truncated {
                    offset,
                    needed: len,
                    available,
                });
            }
            let want = len.max(self.ahead).min(available);
            self.ahead = (self.ahead * 2).min(WINDOW);
            self.buf.resize(want as usize, 0);
            self.start = offset;
            if let Err(e) = src.read_exact_at(&mut self.buf, offset, counters) {
                self.buf.clear();
                return Err(e);
            }
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + len as usize])
    }
}
