//! Fuzz target: vgt-capture's descriptor-chain walker over guest memory the input fills (the
//! descriptor table, indirect tables and buffers are all guest-written). Never a panic; a chain
//! that walks keeps the split-virtqueue rules and its buffers gather and scatter whole.
//!
//! Input: `queue_size: u16 LE`, `head: u16 LE`, then the bytes of guest RAM from address 0
//! (two adjacent 32 KiB regions, so buffers may cross a region boundary; a third at 1 MiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgt_capture::chain::{
    MAX_REQUEST_BYTES, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_WRITE, gather, range_in_memory,
    scatter, walk_chain,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const REGION: usize = 32 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let queue_size = u16::from_le_bytes([data[0], data[1]]);
    let head = u16::from_le_bytes([data[2], data[3]]);
    let ram = &data[4..data.len().min(4 + 2 * REGION)];
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), REGION),
        (GuestAddress(REGION as u64), REGION),
        (GuestAddress(1 << 20), REGION),
    ])
    .expect("guest memory");
    mem.write_slice(ram, GuestAddress(0)).expect("fill RAM");

    let chain = match walk_chain(&mem, 0, queue_size, head) {
        Ok(chain) => chain,
        Err((walked, err)) => {
            // What was walked (for the record) never exceeds the bound plus the faulty entry.
            assert!(walked.descriptors.len() <= usize::from(queue_size) + 1, "{err}");
            let _ = err.to_string();
            return;
        }
    };
    assert!(!chain.descriptors.is_empty());
    assert!(chain.descriptors.len() <= usize::from(queue_size));
    let buffers = chain
        .descriptors
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_INDIRECT == 0)
        .count();
    assert_eq!(buffers, chain.readable.len() + chain.writable.len());
    assert!(chain.readable_len() <= MAX_REQUEST_BYTES);
    let writable: u64 = chain.writable.iter().map(|&(_, l)| u64::from(l)).sum();
    assert_eq!(writable, u64::from(chain.writable_len()));
    for &(addr, len) in chain.readable.iter().chain(&chain.writable) {
        assert!(len == 0 || range_in_memory(&mem, addr, len), "{addr:#x}+{len}");
    }
    // Readable buffers come before writable ones, in descriptor order.
    let kinds: Vec<bool> = chain
        .descriptors
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_INDIRECT == 0)
        .map(|d| d.flags & VIRTQ_DESC_F_WRITE != 0)
        .collect();
    assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");

    let bytes = gather(&mem, &chain).expect("a walked chain gathers");
    assert_eq!(bytes.len() as u64, chain.readable_len());
    let mut at = 0usize;
    for &(addr, len) in &chain.readable {
        let mut want = vec![0; len as usize];
        mem.read_slice(&mut want, GuestAddress(addr)).expect("readable buffer");
        assert_eq!(&bytes[at..at + want.len()], &want[..]);
        at += want.len();
    }
    // Scattering a response as long as the writable buffers fills them all.
    let response = vec![0xa5u8; (writable as usize).min(1 << 20)];
    assert_eq!(scatter(&mem, &chain, &response) as usize, response.len());
});
