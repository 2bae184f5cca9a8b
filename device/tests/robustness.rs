//! Arbitrary requests never panic the device, always complete, and never overflow the chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use vgt_device::DeviceConfig;
use vgt_format::wire::{Command, CommandType, Format, ResourceAttachBacking, ResourceCreate2d};

/// A device with resources 1 (64x64 cursor-sized, backed) and 2 (16x16, not backed).
fn rig() -> Rig {
    let mem = VecMemory::new(&[(0x1000, 0x8000)]);
    let config = DeviceConfig {
        scanouts: vec![(64, 64), (32, 32)],
        max_resource_bytes: 1 << 20,
        max_backing_entries: 64,
        ..DeviceConfig::default()
    };
    let mut rig = Rig::new(config, mem);
    rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: 1,
        format: Format::B8G8R8A8_UNORM,
        width: 64,
        height: 64,
    }));
    rig.ok(Command::ResourceAttachBacking(ResourceAttachBacking {
        resource_id: 1,
        nr_entries: 2,
        entries: entries(&[(0x1000, 0x3000), (0x5000, 0x1000)]),
    }));
    rig.ok(Command::ResourceCreate2d(ResourceCreate2d {
        resource_id: 2,
        format: Format::R8G8B8X8_UNORM,
        width: 16,
        height: 16,
    }));
    rig
}

/// Small values near the interesting edges, or anything.
fn word() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..80,
        Just(u32::MAX),
        Just(u32::MAX - 3),
        Just(0x1000),
        any::<u32>()
    ]
}

fn request() -> impl Strategy<Value = (u16, Vec<u8>, u32)> {
    (
        0u16..3,
        prop::sample::select(CommandType::ALL.to_vec()),
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(word(), 0..24),
        0u32..1200,
        prop_oneof![Just(0usize), 0usize..40],
    )
        .prop_map(|(queue, code, flags, fence, words, writable, cut)| {
            let mut b = Vec::new();
            b.extend_from_slice(&code.0.to_le_bytes());
            b.extend_from_slice(&(flags & 3).to_le_bytes());
            b.extend_from_slice(&fence.to_le_bytes());
            b.extend_from_slice(&[0; 8]);
            for w in words {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.truncate(b.len().saturating_sub(cut));
            (queue, b, writable)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn arbitrary_requests_complete_without_panic(reqs in prop::collection::vec(request(), 1..12)) {
        let mut rig = rig();
        for (queue, bytes, writable) in reqs {
            let done = rig.submit_raw(queue, &bytes, writable);
            prop_assert_eq!(done.len(), 1);
            prop_assert!(done[0].response.len() <= writable as usize);
            if queue == 1 {
                prop_assert!(done[0].response.is_empty());
            }
        }
        prop_assert_eq!(rig.dev.pending_fences(), 0);
        // Every reported read really is guest memory with those bytes.
        for (_, addr, data) in &rig.host.reads {
            for (i, v) in data.iter().enumerate() {
                prop_assert_eq!(*v, rig.mem.byte(addr + i as u64));
            }
        }
    }
}
