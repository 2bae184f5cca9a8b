//! Walking a split-virtqueue descriptor chain by hand, so that the capture sees (and records)
//! exactly the descriptors the guest wrote, follows NEXT and INDIRECT, and turns every malformed
//! chain into a typed error instead of a panic or a silent truncation.

use vgt_format::record::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// Descriptor flag: the chain continues at `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Size of one descriptor in the table.
const DESC_SIZE: u64 = 16;

/// Largest request (sum of readable descriptor lengths) the capture gathers: larger chains are
/// refused as malformed rather than letting a guest make the backend allocate without bound.
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// Why a chain could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The head index from the available ring is not below the queue size.
    #[error("head index {head} is outside the descriptor table of {size} entries")]
    HeadOutOfRange {
        /// Head index.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// A descriptor's `next` points outside its table.
    #[error("descriptor {position} of the chain has next {next}, outside a table of {size}")]
    NextOutOfRange {
        /// Position of the offending descriptor in the walked chain.
        position: usize,
        /// Its `next` field.
        next: u16,
        /// Entries in the table it indexes.
        size: u32,
    },
    /// The chain is longer than allowed: a loop, or more descriptors than the queue size.
    #[error("chain longer than {limit} descriptors (a loop or an over-long chain)")]
    TooLong {
        /// Maximum number of descriptors.
        limit: usize,
    },
    /// A descriptor table entry could not be read from guest memory.
    #[error("descriptor table entry at {addr:#x} is outside guest memory")]
    TableOutOfMemory {
        /// Guest-physical address of the entry.
        addr: u64,
    },
    /// An indirect descriptor inside an indirect table.
    #[error("indirect descriptor at position {position} inside an indirect table")]
    NestedIndirect {
        /// Position in the walked chain.
        position: usize,
    },
    /// An indirect descriptor that also has NEXT or WRITE set (the spec forbids both).
    #[error(
        "indirect descriptor at position {position} has flags {flags:#x} (NEXT/WRITE not allowed)"
    )]
    IndirectFlags {
        /// Position in the walked chain.
        position: usize,
        /// Its flags.
        flags: u16,
    },
    /// An indirect table whose length is zero or not a multiple of 16.
    #[error("indirect table of {len} bytes is empty or not a multiple of 16")]
    IndirectLength {
        /// Length of the indirect descriptor.
        len: u32,
    },
    /// A device-readable descriptor after a device-writable one.
    #[error("readable descriptor at position {position} follows a writable one")]
    ReadableAfterWritable {
        /// Position in the walked chain.
        position: usize,
    },
    /// A buffer that is not entirely inside guest memory.
    #[error("buffer of {len} bytes at {addr:#x} (position {position}) is outside guest memory")]
    BufferOutOfMemory {
        /// Position in the walked chain.
        position: usize,
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// The readable bytes add up to more than [`MAX_REQUEST_BYTES`].
    #[error("request of {len} bytes exceeds the limit of {limit}")]
    RequestTooLarge {
        /// Sum of the readable lengths so far.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The writable lengths add up to more than `u32::MAX`.
    #[error("writable buffers add up to more than 4 GiB")]
    WritableTooLarge,
}

/// A chain walked successfully (or as far as it could be, see [`walk_chain`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkedChain {
    /// Every descriptor as walked: ring descriptors, and for an indirect descriptor the
    /// descriptor itself followed by its table's entries in chain order.
    pub descriptors: Vec<Descriptor>,
    /// Device-readable buffers (address, length) in order.
    pub readable: Vec<(u64, u32)>,
    /// Device-writable buffers (address, length) in order.
    pub writable: Vec<(u64, u32)>,
}

impl WalkedChain {
    /// Sum of the writable lengths.
    pub fn writable_len(&self) -> u32 {
        // Bounded by walk_chain (WritableTooLarge), so this cannot saturate in practice.
        self.writable
            .iter()
            .fold(0u32, |acc, (_, l)| acc.saturating_add(*l))
    }

    /// Sum of the readable lengths.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|(_, l)| u64::from(*l)).sum()
    }
}

fn read_desc<M: GuestMemory>(mem: &M, addr: u64) -> Result<Descriptor, ChainError> {
    let mut raw = [0u8; DESC_SIZE as usize];
    mem.read_slice(&mut raw, GuestAddress(addr))
        .map_err(|_| ChainError::TableOutOfMemory { addr })?;
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        l0,
        l1,
        l2,
        l3,
        f0,
        f1,
        n0,
        n1,
    ] = raw;
    Ok(Descriptor {
        addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        flags: u16::from_le_bytes([f0, f1]),
        next: u16::from_le_bytes([n0, n1]),
    })
}

/// Walks the chain starting at `head` in the descriptor table at `desc_table` of a queue with
/// `queue_size` entries.
///
/// On failure the error comes with the descriptors walked up to and including the faulty one, so
/// that the capture can still record what the guest wrote.
pub fn walk_chain<M: GuestMemory>(
    mem: &M,
    desc_table: u64,
    queue_size: u16,
    head: u16,
) -> Result<WalkedChain, (WalkedChain, ChainError)> {
    let mut chain = WalkedChain::default();
    match walk_into(mem, desc_table, queue_size, head, &mut chain) {
        Ok(()) => Ok(chain),
        Err(e) => Err((chain, e)),
    }
}

fn walk_into<M: GuestMemory>(
    mem: &M,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    chain: &mut WalkedChain,
) -> Result<(), ChainError> {
    if head >= queue_size {
        return Err(ChainError::HeadOutOfRange {
            head,
            size: queue_size,
        });
    }
    // The spec bounds a chain (indirect entries included) by the queue size.
    let limit = usize::from(queue_size);
    let mut seen_writable = false;
    let mut readable_total = 0u64;
    let mut writable_total = 0u64;
    let mut next = Some(head);
    while let Some(index) = next {
        if chain.descriptors.len() >= limit {
            return Err(ChainError::TooLong { limit });
        }
        let desc = read_desc(mem, desc_table + u64::from(index) * DESC_SIZE)?;
        let position = chain.descriptors.len();
        chain.descriptors.push(desc);
        if desc.flags & VIRTQ_DESC_F_INDIRECT != 0 {
            if desc.flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE) != 0 {
                return Err(ChainError::IndirectFlags {
                    position,
                    flags: desc.flags,
                });
            }
            if desc.len == 0 || u64::from(desc.len) % DESC_SIZE != 0 {
                return Err(ChainError::IndirectLength { len: desc.len });
            }
            let entries = desc.len / DESC_SIZE as u32;
            if desc.addr.checked_add(u64::from(desc.len)).is_none() {
                return Err(ChainError::TableOutOfMemory { addr: desc.addr });
            }
            let mut inner = Some(0u16);
            while let Some(i) = inner {
                if chain.descriptors.len() >= limit {
                    return Err(ChainError::TooLong { limit });
                }
                let d = read_desc(mem, desc.addr + u64::from(i) * DESC_SIZE)?;
                let position = chain.descriptors.len();
                chain.descriptors.push(d);
                if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                    return Err(ChainError::NestedIndirect { position });
                }
                take_buffer(
                    mem,
                    chain,
                    d,
                    position,
                    &mut seen_writable,
                    &mut readable_total,
                    &mut writable_total,
                )?;
                inner = if d.flags & VIRTQ_DESC_F_NEXT != 0 {
                    if u32::from(d.next) >= entries {
                        return Err(ChainError::NextOutOfRange {
                            position,
                            next: d.next,
                            size: entries,
                        });
                    }
                    Some(d.next)
                } else {
                    None
                };
            }
            // An indirect descriptor ends the ring chain (it may not carry NEXT).
            next = None;
        } else {
            take_buffer(
                mem,
                chain,
                desc,
                position,
                &mut seen_writable,
                &mut readable_total,
                &mut writable_total,
            )?;
            next = if desc.flags & VIRTQ_DESC_F_NEXT != 0 {
                if desc.next >= queue_size {
                    return Err(ChainError::NextOutOfRange {
                        position,
                        next: desc.next,
                        size: u32::from(queue_size),
                    });
                }
                Some(desc.next)
            } else {
                None
            };
        }
    }
    Ok(())
}

fn take_buffer<M: GuestMemory>(
    mem: &M,
    chain: &mut WalkedChain,
    d: Descriptor,
    position: usize,
    seen_writable: &mut bool,
    readable_total: &mut u64,
    writable_total: &mut u64,
) -> Result<(), ChainError> {
    if d.len > 0 && !range_in_memory(mem, d.addr, d.len) {
        return Err(ChainError::BufferOutOfMemory {
            position,
            addr: d.addr,
            len: d.len,
        });
    }
    if d.flags & VIRTQ_DESC_F_WRITE != 0 {
        *seen_writable = true;
        *writable_total += u64::from(d.len);
        if *writable_total > u64::from(u32::MAX) {
            return Err(ChainError::WritableTooLarge);
        }
        chain.writable.push((d.addr, d.len));
    } else {
        if *seen_writable {
            return Err(ChainError::ReadableAfterWritable { position });
        }
        *readable_total += u64::from(d.len);
        if *readable_total > MAX_REQUEST_BYTES {
            return Err(ChainError::RequestTooLarge {
                len: *readable_total,
                limit: MAX_REQUEST_BYTES,
            });
        }
        chain.readable.push((d.addr, d.len));
    }
    Ok(())
}

/// True when `[addr, addr + len)` lies entirely in guest memory (possibly across regions).
pub fn range_in_memory<M: GuestMemory>(mem: &M, addr: u64, len: u32) -> bool {
    if addr.checked_add(u64::from(len)).is_none() {
        return false;
    }
    mem.check_range(GuestAddress(addr), len as usize, Permissions::Read)
}

/// Reads the readable buffers of `chain` into one byte vector.
pub fn gather<M: GuestMemory>(mem: &M, chain: &WalkedChain) -> Result<Vec<u8>, ChainError> {
    let mut out = vec![0u8; usize::try_from(chain.readable_len()).unwrap_or(usize::MAX)];
    let mut at = 0usize;
    for (position, &(addr, len)) in chain.readable.iter().enumerate() {
        let l = len as usize;
        mem.read_slice(&mut out[at..at + l], GuestAddress(addr))
            .map_err(|_| ChainError::BufferOutOfMemory {
                position,
                addr,
                len,
            })?;
        at += l;
    }
    Ok(out)
}

/// Writes `bytes` into the writable buffers of `chain` in order; returns how many bytes fit.
pub fn scatter<M: GuestMemory>(mem: &M, chain: &WalkedChain, bytes: &[u8]) -> u32 {
    let mut done = 0usize;
    for &(addr, len) in &chain.writable {
        if done >= bytes.len() {
            break;
        }
        let n = (len as usize).min(bytes.len() - done);
        if mem
            .write_slice(&bytes[done..done + n], GuestAddress(addr))
            .is_err()
        {
            break;
        }
        done += n;
    }
    u32::try_from(done).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(m: &GuestMemoryMmap<()>, table: u64, i: u16, d: Descriptor) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        m.write_slice(&b, GuestAddress(table + u64::from(i) * 16))
            .unwrap();
    }

    fn d(addr: u64, len: u32, flags: u16, next: u16) -> Descriptor {
        Descriptor {
            addr,
            len,
            flags,
            next,
        }
    }

    #[test]
    fn walk_direct_chain_splits_readable_and_writable() {
        let m = mem();
        put(&m, 0, 0, d(0x1000, 24, VIRTQ_DESC_F_NEXT, 3));
        put(&m, 0, 3, d(0x2000, 24, VIRTQ_DESC_F_WRITE, 0));
        let c = walk_chain(&m, 0, 8, 0).unwrap();
        assert_eq!(c.readable, vec![(0x1000, 24)]);
        assert_eq!(c.writable, vec![(0x2000, 24)]);
        assert_eq!(c.descriptors.len(), 2);
    }

    #[test]
    fn walk_indirect_table_is_expanded_after_its_descriptor() {
        let m = mem();
        put(&m, 0, 1, d(0x800, 48, VIRTQ_DESC_F_INDIRECT, 0));
        put(&m, 0x800, 0, d(0x1000, 40, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0x800, 1, d(0x2000, 64, VIRTQ_DESC_F_NEXT, 2));
        put(&m, 0x800, 2, d(0x3000, 24, VIRTQ_DESC_F_WRITE, 0));
        let c = walk_chain(&m, 0, 8, 1).unwrap();
        assert_eq!(c.descriptors.len(), 4);
        assert_eq!(c.readable_len(), 104);
        assert_eq!(c.writable_len(), 24);
    }

    #[test]
    fn walk_loop_is_too_long() {
        let m = mem();
        put(&m, 0, 0, d(0x1000, 4, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0, 1, d(0x1000, 4, VIRTQ_DESC_F_NEXT, 0));
        let (walked, e) = walk_chain(&m, 0, 8, 0).unwrap_err();
        assert_eq!(e, ChainError::TooLong { limit: 8 });
        assert_eq!(walked.descriptors.len(), 8);
    }

    #[test]
    fn walk_indirect_loop_is_too_long() {
        let m = mem();
        put(&m, 0, 0, d(0x800, 32, VIRTQ_DESC_F_INDIRECT, 0));
        put(&m, 0x800, 0, d(0x1000, 4, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0x800, 1, d(0x1000, 4, VIRTQ_DESC_F_NEXT, 0));
        let (_, e) = walk_chain(&m, 0, 16, 0).unwrap_err();
        assert_eq!(e, ChainError::TooLong { limit: 16 });
    }

    #[test]
    fn walk_buffer_outside_memory_is_rejected() {
        let m = mem();
        put(&m, 0, 0, d(0xffff_0000, 24, 0, 0));
        let (_, e) = walk_chain(&m, 0, 8, 0).unwrap_err();
        assert!(matches!(
            e,
            ChainError::BufferOutOfMemory { position: 0, .. }
        ));
    }

    #[test]
    fn walk_buffer_wrapping_address_space_is_rejected() {
        let m = mem();
        put(&m, 0, 0, d(u64::MAX - 4, 24, 0, 0));
        let (_, e) = walk_chain(&m, 0, 8, 0).unwrap_err();
        assert!(matches!(e, ChainError::BufferOutOfMemory { .. }));
    }

    #[test]
    fn walk_readable_after_writable_is_rejected() {
        let m = mem();
        put(
            &m,
            0,
            0,
            d(0x1000, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1),
        );
        put(&m, 0, 1, d(0x1000, 4, 0, 0));
        let (_, e) = walk_chain(&m, 0, 8, 0).unwrap_err();
        assert_eq!(e, ChainError::ReadableAfterWritable { position: 1 });
    }

    #[test]
    fn walk_nested_indirect_and_bad_lengths_are_rejected() {
        let m = mem();
        put(&m, 0, 0, d(0x800, 16, VIRTQ_DESC_F_INDIRECT, 0));
        put(&m, 0x800, 0, d(0x900, 16, VIRTQ_DESC_F_INDIRECT, 0));
        assert_eq!(
            walk_chain(&m, 0, 8, 0).unwrap_err().1,
            ChainError::NestedIndirect { position: 1 }
        );
        put(&m, 0, 0, d(0x800, 20, VIRTQ_DESC_F_INDIRECT, 0));
        assert_eq!(
            walk_chain(&m, 0, 8, 0).unwrap_err().1,
            ChainError::IndirectLength { len: 20 }
        );
        assert_eq!(
            walk_chain(&m, 0, 8, 9).unwrap_err().1,
            ChainError::HeadOutOfRange { head: 9, size: 8 }
        );
    }

    #[test]
    fn gather_and_scatter_move_the_bytes() {
        let m = mem();
        m.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
        m.write_slice(b"world", GuestAddress(0x2000)).unwrap();
        put(&m, 0, 0, d(0x1000, 5, VIRTQ_DESC_F_NEXT, 1));
        put(&m, 0, 1, d(0x2000, 5, VIRTQ_DESC_F_NEXT, 2));
        put(
            &m,
            0,
            2,
            d(0x3000, 3, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3),
        );
        put(&m, 0, 3, d(0x4000, 3, VIRTQ_DESC_F_WRITE, 0));
        let c = walk_chain(&m, 0, 8, 0).unwrap();
        assert_eq!(gather(&m, &c).unwrap(), b"helloworld");
        assert_eq!(scatter(&m, &c, b"abcdefgh"), 6);
        let mut out = [0u8; 3];
        m.read_slice(&mut out, GuestAddress(0x4000)).unwrap();
        assert_eq!(&out, b"def");
    }
}
