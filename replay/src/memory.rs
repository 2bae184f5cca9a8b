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
/// Extents never overlap and never touch (touching ones are merged), so a read the recorded
/// bytes cover always lies inside one extent. Later records overwrite earlier bytes, as the
/// guest overwrote its memory between commands.
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
        if data.is_empty() {
            return;
        }
        let Some(end) = addr.checked_add(data.len() as u64) else {
            // Cannot be a real guest range; a device never reads it back either.
            return;
        };
        // Fast path: the range lies inside one extent (a frame's transfer source, read again
        // and again).
        if let Some((&start, bytes)) = self.extents.range_mut(..=addr).next_back()
            && start + bytes.len() as u64 >= end
        {
            let off = (addr - start) as usize;
            bytes[off..off + data.len()].copy_from_slice(data);
            return;
        }
        // Merge every extent that overlaps or touches [addr, end).
        let mut new_start = addr;
        let mut new_end = end;
        let mut absorbed = Vec::new();
        if let Some((&start, bytes)) = self.extents.range(..addr).next_back()
            && start + bytes.len() as u64 >= addr
        {
            new_start = start;
            absorbed.push(start);
        }
        for (&start, bytes) in self.extents.range(addr..=end) {
            absorbed.push(start);
            new_end = new_end.max(start + bytes.len() as u64);
        }
        let mut merged = vec![0u8; (new_end - new_start) as usize];
        for start in absorbed {
            if let Some(bytes) = self.extents.remove(&start) {
                let off = (start - new_start) as usize;
                merged[off..off + bytes.len()].copy_from_slice(&bytes);
            }
        }
        let off = (addr - new_start) as usize;
        merged[off..off + data.len()].copy_from_slice(data);
        self.extents.insert(new_start, merged);
    }

    /// Stores `data` at `addr` like [`SparseMemory::write`], taking the buffer over instead of
    /// copying it when it replaces one extent exactly or touches none (the common case of a
    /// transfer source read again and again). Returns the buffer no longer needed (the extent
    /// replaced, or `data` itself once copied), for the caller to reuse.
    pub fn write_owned(&mut self, addr: u64, data: Vec<u8>) -> Option<Vec<u8>> {
        let end = addr.checked_add(data.len() as u64)?;
        let exact = self
            .extents
            .get(&addr)
            .is_some_and(|b| b.len() == data.len());
        let before_touches = self
            .extents
            .range(..addr)
            .next_back()
            .is_some_and(|(&s, b)| s + b.len() as u64 >= addr);
        let after_touches = self
            .extents
            .range(addr..=end)
            .any(|(&s, b)| s != addr || b.len() != data.len());
        if !data.is_empty()
            && (exact || !self.extents.contains_key(&addr))
            && !before_touches
            && !after_touches
        {
            self.extents.insert(addr, data)
        } else {
            self.write(addr, &data);
            Some(data)
        }
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
        if let Some(end) = addr.checked_add(len)
            && let Some((&start, bytes)) = self.extents.range(..=addr).next_back()
            && start + bytes.len() as u64 >= end
        {
            let off = (addr - start) as usize;
            buf.copy_from_slice(&bytes[off..off + buf.len()]);
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
    fn touching_and_overlapping_writes_merge_and_later_bytes_win() {
        let mut m = SparseMemory::new();
        m.write(10, &[1, 1]);
        m.write(14, &[3, 3]);
        m.write(12, &[2, 2]);
        assert_eq!(read(&m, 10, 6), Some(vec![1, 1, 2, 2, 3, 3]));
        m.write(9, &[7, 7, 7]);
        assert_eq!(read(&m, 9, 7), Some(vec![7, 7, 7, 2, 2, 3, 3]));
        m.write(11, &[8]);
        assert_eq!(read(&m, 9, 7), Some(vec![7, 7, 8, 2, 2, 3, 3]));
        assert_eq!(m.extents.len(), 1);
        assert_eq!(m.len(), 7);
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
