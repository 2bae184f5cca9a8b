//! What the fuzz harnesses of this crate share (built only for the tests and with `--cfg
//! fuzzing`): a reader over the fuzzer's bytes, vhost-user headers, and the check that the
//! seed files under `fuzz/seeds` are the ones the harnesses generate.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::relay::HEADER_LEN;

/// The fuzzer's bytes, read front to back; bytes past the end read as 0.
pub(crate) struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    /// A reader at the start of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    pub(crate) fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next `n` bytes (fewer at the end of the input).
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let from = self.at.min(self.data.len());
        let to = self.at.saturating_add(n).min(self.data.len());
        self.at = self.at.saturating_add(n);
        &self.data[from..to]
    }

    pub(crate) fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// A memfd of `pages` 4 KiB pages: guest memory an input can write.
pub(crate) fn memfd(pages: u64) -> Option<File> {
    crate::proxy::rings::memfd(c"vgt-fuzz-guest", pages * 4096).ok()
}

/// A duplicate of `fd` (an eventfd to send while the harness keeps the original to kick).
pub(crate) fn dup(fd: &impl AsRawFd) -> Option<OwnedFd> {
    // SAFETY: dup of a live descriptor; the result is checked before it is owned.
    let raw = unsafe { libc::dup(fd.as_raw_fd()) };
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A vhost-user header whose size field is `len`.
pub(crate) fn header(request: u32, flags: u32, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&request.to_le_bytes());
    h[4..8].copy_from_slice(&flags.to_le_bytes());
    h[8..12].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    h
}

/// Checks that `fuzz/seeds/<target>` holds exactly `seeds` (`VGT_WRITE_FUZZ_SEEDS=1` writes
/// them first), for the seed tests of this crate's fuzz targets.
#[cfg(test)]
pub fn check_seeds_on_disk(target: &str, seeds: &[(&'static str, Vec<u8>)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    vgt_format::testing::check_seed_files(&dir, seeds);
}

/// Little-endian `u64`s, as vhost-user payloads carry them.
pub(crate) fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A SET_MEM_TABLE payload: the region count, then each `[gpa, size, uaddr, mmap_offset]`.
pub(crate) fn mem_table(regions: &[[u64; 4]]) -> Vec<u8> {
    let mut p = (regions.len() as u64).to_le_bytes().to_vec();
    for r in regions {
        p.extend(words(r));
    }
    p
}

/// A SET_VRING_ADDR payload for queue `q` (flags 0, no log) with its rings at `base` + 0x1000
/// (descriptors), + 0x2000 (available) and + 0x3000 (used), front-end addresses.
pub(crate) fn vring_addr(q: u32, base: u64) -> Vec<u8> {
    let mut p = u64::from(q).to_le_bytes().to_vec();
    p.extend(words(&[base + 0x1000, base + 0x3000, base + 0x2000, 0]));
    p
}
