//! Guest memory rebuilt from recorded reads: a sparse byte map that serves the device exactly the
//! bytes the capture holds, and notes every read of bytes it was never given.

use std::cell::RefCell;
use std::collections::BTreeMap;

use vgt_device::{GuestMemory, MemoryError};
use vgt_format::wire::vhost_user::MemoryRegion;

/// A guest read of bytes no memory-read record supplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UnrecordedRead {
    /// First guest-physical address of the read.
    pub addr: u64,
    /// Length of the read.
    pub len: u64,
}

/// Guest memory made of the bytes recorded so far.
///
/// Extents never overlap; touching ones stay apart (a read across them is gathered), so a
/// recorded read is kept as the buffer it was read into, never copied into a merged one. Later
/// records overwrite earlier bytes, as the guest overwrote its memory between commands.
#[derive(Debug, Default)]
pub struct SparseMemory {
    extents: BTreeMap<u64, Vec<u8>>,
    /// The guest's memory regions (from SET_MEM_TABLE / ADD_MEM_REG); empty when the capture
    /// holds none, then every range counts as guest memory.
    regions: Vec<(u64, u64)>,
    misses: RefCell<Vec<UnrecordedRead>>,
}

impl SparseMemory {
    /// Empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `data` at `addr`, replacing what was there.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        if data.is_empty() || self.write_inside(addr, data) {
            return;
        }
        let _ = self.write_owned(addr, data.to_vec());
    }

    /// Copies `data` into the one extent that holds all of `[addr, addr + len)`, when there is
    /// one (a frame's transfer source, read again and again). Returns whether it did.
    fn write_inside(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some(end) = addr.checked_add(data.len() as u64) else {
            return false;
        };
        match self.extents.range_mut(..=addr).next_back() {
            Some((&start, bytes)) if start + bytes.len() as u64 >= end => {
                let off = (addr - start) as usize;
                bytes[off..off + data.len()].copy_from_slice(data);
                true
            }
            _ => false,
        }
    }

    /// Stores `data` at `addr` like [`SparseMemory::write`], taking the buffer over instead of
    /// copying it unless the range lies inside a larger extent. Returns a buffer no longer
    /// needed (an extent the write covered whole, or `data` itself once copied), for the
    /// caller to reuse.
    pub fn write_owned(&mut self, addr: u64, data: Vec<u8>) -> Option<Vec<u8>> {
        let end = addr.checked_add(data.len() as u64)?;
        if data.is_empty() {
            return Some(data);
        }
        // The same range again: the new buffer replaces the old one.
        if let Some(old) = self.extents.get_mut(&addr)
            && old.len() == data.len()
        {
            return Some(std::mem::replace(old, data));
        }
        if self.write_inside(addr, &data) {
            return Some(data);
        }
        let spare = self.carve(addr, end);
        self.extents.insert(addr, data);
        spare
    }

    /// Removes every byte of `[addr, end)` from the extents (cutting the ones that reach into
    /// it), so that a write can take the range. Returns one extent that lay wholly inside.
    fn carve(&mut self, addr: u64, end: u64) -> Option<Vec<u8>> {
        let mut spare = None;
        // One that starts before `addr` and reaches into the range: keep its head (and its
        // tail past `end`, as an extent of its own).
        if let Some((&start, bytes)) = self.extents.range_mut(..addr).next_back()
            && start + bytes.len() as u64 > addr
        {
            let head = (addr - start) as usize;
            if start + bytes.len() as u64 > end {
                let tail = bytes[(end - start) as usize..].to_vec();
                self.extents.insert(end, tail);
            }
            if let Some(bytes) = self.extents.get_mut(&start) {
                bytes.truncate(head);
            }
        }
        // Ones that start inside the range: dropped, or cut to what lies past `end`.
        let inside: Vec<u64> = self.extents.range(addr..end).map(|(&s, _)| s).collect();
        for start in inside {
            let Some(mut bytes) = self.extents.remove(&start) else {
                continue;
            };
            let len = bytes.len() as u64;
            if start + len > end {
                bytes.drain(..(end - start) as usize);
                self.extents.insert(end, bytes);
            } else if spare
                .as_ref()
                .is_none_or(|s: &Vec<u8>| s.capacity() < bytes.capacity())
            {
                spare = Some(bytes);
            }
        }
        spare
    }

    /// Replaces the guest's memory regions (SET_MEM_TABLE).
    pub fn set_regions(&mut self, regions: &[MemoryRegion]) {
        self.regions = regions
            .iter()
            .map(|r| (r.guest_phys_addr, r.memory_size))
            .collect();
    }

    /// Adds one region (ADD_MEM_REG).
    pub fn add_region(&mut self, region: &MemoryRegion) {
        self.regions
            .push((region.guest_phys_addr, region.memory_size));
    }

    /// Removes one region (REM_MEM_REG).
    pub fn remove_region(&mut self, region: &MemoryRegion) {
        self.regions.retain(|&(a, _)| a != region.guest_phys_addr);
    }

    /// Reads since the last call that asked for bytes no record supplied.
    pub fn take_misses(&self) -> Vec<UnrecordedRead> {
        std::mem::take(&mut *self.misses.borrow_mut())
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.extents.values().map(|v| v.len() as u64).sum()
    }

    /// True when no byte is held.
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }
}

impl GuestMemory for SparseMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        // The extent holding `addr`, then the ones that touch it, until `buf` is full.
        let mut done = 0usize;
        if let Some((&start, bytes)) = self.extents.range(..=addr).next_back()
            && start + bytes.len() as u64 > addr
        {
            let off = (addr - start) as usize;
            let n = (bytes.len() - off).min(buf.len());
            buf[..n].copy_from_slice(&bytes[off..off + n]);
            done = n;
            let mut next = start + bytes.len() as u64;
            while done < buf.len() {
                let Some(bytes) = self.extents.get(&next) else {
                    break;
                };
                let n = bytes.len().min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&bytes[..n]);
                done += n;
                next += bytes.len() as u64;
            }
        }
        if done == buf.len() {
            return Ok(());
        }
        self.misses.borrow_mut().push(UnrecordedRead { addr, len });
        Err(MemoryError::Failed {
            addr,
            len,
            reason: "the capture holds no recorded read of these bytes".to_owned(),
        })
    }

    fn contains(&self, addr: u64, len: u64) -> bool {
        if self.regions.is_empty() {
            return true;
        }
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.regions.iter().any(|&(start, size)| {
            addr >= start && start.checked_add(size).is_some_and(|e| end <= e)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(m: &SparseMemory, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut b = vec![0; len];
        m.read(addr, &mut b).ok().map(|()| b)
    }

    #[test]
    fn write_then_read_inside_gives_bytes_back() {
        let mut m = SparseMemory::new();
        m.write(100, &[1, 2, 3, 4]);
        assert_eq!(read(&m, 101, 2), Some(vec![2, 3]));
        assert!(m.take_misses().is_empty());
    }

    #[test]
    fn read_past_recorded_bytes_is_a_miss() {
        let mut m = SparseMemory::new();
        m.write(100, &[1, 2, 3, 4]);
        assert_eq!(read(&m, 102, 4), None);
        assert_eq!(read(&m, 50, 1), None);
        assert_eq!(
            m.take_misses(),
            vec![
                UnrecordedRead { addr: 102, len: 4 },
                UnrecordedRead { addr: 50, len: 1 }
            ]
        );
    }

    #[test]
    fn touching_and_overlapping_writes_read_back_with_later_bytes_winning() {
        let mut m = SparseMemory::new();
        m.write(10, &[1, 1]);
        m.write(14, &[3, 3]);
        m.write(12, &[2, 2]);
        assert_eq!(read(&m, 10, 6), Some(vec![1, 1, 2, 2, 3, 3]));
        m.write(9, &[7, 7, 7]);
        assert_eq!(read(&m, 9, 7), Some(vec![7, 7, 7, 2, 2, 3, 3]));
        m.write(11, &[8]);
        assert_eq!(read(&m, 9, 7), Some(vec![7, 7, 8, 2, 2, 3, 3]));
        // A write inside one extent cuts it in three.
        m.write(0, &[5; 20]);
        m.write(4, &[6; 2]);
        assert_eq!(
            read(&m, 2, 6),
            Some(vec![5, 5, 6, 6, 5, 5]),
            "{:?}",
            m.extents
        );
        assert_eq!(m.len(), 20);
        assert!(m.take_misses().is_empty());
    }

    #[test]
    fn random_writes_read_back_like_flat_memory() {
        // A flat model (None: never written) against the extents, over many overlapping
        // writes, owned and copied, and reads that span several extents or a gap.
        let mut model: Vec<Option<u8>> = vec![None; 256];
        let mut m = SparseMemory::new();
        let mut x = 12345u32;
        let mut next = |n: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 8) % n
        };
        for i in 0..2000u32 {
            let addr = next(240) as usize;
            let len = 1 + next(16) as usize;
            let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            for (j, b) in data.iter().enumerate() {
                model[addr + j] = Some(*b);
            }
            if i % 2 == 0 {
                m.write(addr as u64, &data);
            } else {
                let _ = m.write_owned(addr as u64, data);
            }
            let (ra, rl) = (next(240) as usize, 1 + next(16) as usize);
            let want: Option<Vec<u8>> = model[ra..ra + rl].iter().copied().collect();
            assert_eq!(read(&m, ra as u64, rl), want, "write {i}: read {ra}+{rl}");
            let held: u64 = model.iter().filter(|b| b.is_some()).count() as u64;
            assert_eq!(m.len(), held);
        }
    }

    #[test]
    fn write_owned_matches_write() {
        let mut a = SparseMemory::new();
        let mut b = SparseMemory::new();
        let ops: [(u64, Vec<u8>); 6] = [
            (100, vec![1; 8]),
            (100, vec![2; 8]),
            (108, vec![3; 4]),
            (200, vec![4; 4]),
            (96, vec![5; 6]),
            (300, vec![]),
        ];
        for (addr, data) in ops {
            a.write(addr, &data);
            b.write_owned(addr, data);
            assert_eq!(a.extents, b.extents);
        }
    }

    #[test]
    fn contains_follows_memory_regions_when_known() {
        let mut m = SparseMemory::new();
        assert!(m.contains(u64::MAX - 1, 1));
        m.set_regions(&[MemoryRegion {
            guest_phys_addr: 0x1000,
            memory_size: 0x1000,
            ..MemoryRegion::default()
        }]);
        assert!(m.contains(0x1000, 0x1000));
        assert!(!m.contains(0x1800, 0x1000));
        assert!(!m.contains(u64::MAX, 2));
    }
}
