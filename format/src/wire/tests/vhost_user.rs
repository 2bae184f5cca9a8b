//! vhost-user request names, feature names and payload decoders.

use super::{put, put_u32, put_u64};
use crate::wire::vhost_user::*;
use crate::wire::{DecodeError, VhostUserPayload as P, VhostUserRequest as R};

fn check(req: R, is_reply: bool, bytes: &[u8], expected: P) {
    let p = decode_vhost_user_payload(req, is_reply, bytes).unwrap();
    assert_eq!(p, expected);
    assert_eq!(p.encode(), bytes);
}

#[test]
fn request_and_backend_names() {
    assert_eq!(R(1).name(), Some("GET_FEATURES"));
    assert_eq!(R(33).name(), Some("GPU_SET_SOCKET"));
    assert_eq!(R(44).name(), Some("GET_SHMEM_CONFIG"));
    assert_eq!(R(45).name(), None);
    assert_eq!(R(45).to_string(), "VHOST_USER_REQUEST(0x2d)");
    assert!((1..=44).all(|c| R(c).name().is_some()));
    assert!((1..=10).all(|c| BackendRequest(c).name().is_some()));
    assert_eq!(BackendRequest(9).name(), Some("SHMEM_MAP"));
}

#[test]
fn feature_bits_have_names() {
    assert_eq!(
        feature_names((1 << 0) | (1 << 1) | (1 << 30) | (1 << 32) | (1 << 50)),
        vec![
            "VIRTIO_GPU_F_VIRGL",
            "VIRTIO_GPU_F_EDID",
            "VHOST_USER_F_PROTOCOL_FEATURES",
            "VIRTIO_F_VERSION_1",
            "BIT_50"
        ]
    );
    assert_eq!(
        protocol_feature_names((1 << 3) | (1 << 9) | (1 << 15) | (1 << 40)),
        vec!["REPLY_ACK", "CONFIG", "CONFIGURE_MEM_SLOTS", "BIT_40"]
    );
    assert!(protocol_feature_names(0).is_empty());
}

#[test]
fn u64_payloads() {
    check(R::GET_FEATURES, false, &[], P::Empty);
    check(
        R::GET_FEATURES,
        true,
        &0x1_4000_0001u64.to_le_bytes(),
        P::Features(0x1_4000_0001),
    );
    check(
        R::SET_PROTOCOL_FEATURES,
        false,
        &0x8u64.to_le_bytes(),
        P::ProtocolFeatures(8),
    );
    check(R::GET_QUEUE_NUM, true, &2u64.to_le_bytes(), P::U64(2));
    // A REPLY_ACK to a message without a reply body.
    check(R::SET_VRING_ADDR, true, &0u64.to_le_bytes(), P::U64(0));
}

#[test]
fn vring_fd_index_and_nofd_bit() {
    let mut b = Vec::new();
    put_u64(&mut b, 0, 0x101);
    let p = decode_vhost_user_payload(R::SET_VRING_CALL, false, &b).unwrap();
    let P::VringFd(v) = p else { panic!("{p:?}") };
    assert_eq!((v.index(), v.no_fd()), (1, true));
    assert_eq!(P::VringFd(v).to_string(), "index=1 nofd");
}

#[test]
fn vring_state_and_addr() {
    let mut b = Vec::new();
    put_u32(&mut b, 0, 1);
    put_u32(&mut b, 4, 256);
    check(
        R::SET_VRING_NUM,
        false,
        &b,
        P::VringState(VringState { index: 1, num: 256 }),
    );
    let mut b = Vec::new();
    put_u32(&mut b, 0, 0);
    put_u32(&mut b, 4, 1);
    put_u64(&mut b, 8, 0x7f00_0000_1000);
    put_u64(&mut b, 16, 0x7f00_0000_3000);
    put_u64(&mut b, 24, 0x7f00_0000_2000);
    put_u64(&mut b, 32, 0);
    check(
        R::SET_VRING_ADDR,
        false,
        &b,
        P::VringAddr(VringAddr {
            index: 0,
            flags: 1,
            descriptor: 0x7f00_0000_1000,
            used: 0x7f00_0000_3000,
            available: 0x7f00_0000_2000,
            log: 0,
        }),
    );
    assert_eq!(
        decode_vhost_user_payload(R::SET_VRING_ADDR, false, &b[..39]).unwrap_err(),
        DecodeError::TooShort {
            what: "vring addr",
            offset: 0,
            needed: 40,
            found: 39
        }
    );
    assert_eq!(
        decode_vhost_user_payload(R::SET_VRING_NUM, false, &[0; 9]).unwrap_err(),
        DecodeError::LengthMismatch {
            what: "vring state",
            expected: 8,
            found: 9
        }
    );
}

#[test]
fn memory_table_regions_of_32_bytes() {
    let mut b = Vec::new();
    put_u32(&mut b, 0, 2);
    put_u32(&mut b, 4, 0);
    for i in 0..2u64 {
        let off = 8 + 32 * i as usize;
        put_u64(&mut b, off, 0x1_0000_0000 * i);
        put_u64(&mut b, off + 8, 0x8000_0000);
        put_u64(&mut b, off + 16, 0x7f00_0000_0000 + i);
        put_u64(&mut b, off + 24, 0x100 * i);
    }
    let regions = (0..2u64)
        .map(|i| MemoryRegion {
            guest_phys_addr: 0x1_0000_0000 * i,
            memory_size: 0x8000_0000,
            user_addr: 0x7f00_0000_0000 + i,
            mmap_offset: 0x100 * i,
        })
        .collect();
    check(
        R::SET_MEM_TABLE,
        false,
        &b,
        P::MemoryTable(MemoryTable {
            num_regions: 2,
            padding: 0,
            regions,
        }),
    );
    put_u32(&mut b, 0, 3);
    assert_eq!(
        decode_vhost_user_payload(R::SET_MEM_TABLE, false, &b).unwrap_err(),
        DecodeError::CountTooLarge {
            what: "num_regions",
            offset: 0,
            count: 3,
            max_fit: 2
        }
    );
}

#[test]
fn single_region_config_inflight() {
    let mut b = Vec::new();
    put_u64(&mut b, 0, 0);
    put_u64(&mut b, 8, 0x1000);
    put_u64(&mut b, 16, 0x2000);
    put_u64(&mut b, 24, 0x3000);
    put_u64(&mut b, 32, 0x40);
    check(
        R::ADD_MEM_REG,
        false,
        &b,
        P::SingleRegion(SingleMemoryRegion {
            padding: 0,
            region: MemoryRegion {
                guest_phys_addr: 0x1000,
                memory_size: 0x2000,
                user_addr: 0x3000,
                mmap_offset: 0x40,
            },
        }),
    );
    let mut b = Vec::new();
    put_u32(&mut b, 0, 8);
    put_u32(&mut b, 4, 4);
    put_u32(&mut b, 8, 0);
    put(&mut b, 12, &[0, 0, 0, 0]);
    check(
        R::GET_CONFIG,
        true,
        &b,
        P::Config(DeviceConfig {
            offset: 8,
            size: 4,
            flags: 0,
            bytes: vec![0; 4],
        }),
    );
    let mut b = Vec::new();
    put_u64(&mut b, 0, 0x1000);
    put_u64(&mut b, 8, 0);
    put(&mut b, 16, &[2, 0, 0, 1]);
    check(
        R::GET_INFLIGHT_FD,
        true,
        &b,
        P::Inflight(Inflight {
            mmap_size: 0x1000,
            mmap_offset: 0,
            num_queues: 2,
            queue_size: 256,
        }),
    );
}

#[test]
fn backend_shmem_map_and_shared_object() {
    let mut b = vec![1, 9, 9, 9, 9, 9, 9, 9];
    put_u64(&mut b, 8, 0x10);
    put_u64(&mut b, 16, 0x20);
    put_u64(&mut b, 24, 0x30);
    put_u64(&mut b, 32, 1);
    let p = decode_backend_payload(BackendRequest::SHMEM_MAP, false, &b).unwrap();
    assert_eq!(
        p,
        P::ShmemMap(ShmemMap {
            shmid: 1,
            padding: [9; 7],
            fd_offset: 0x10,
            shm_offset: 0x20,
            len: 0x30,
            flags: 1
        })
    );
    assert_eq!(p.encode(), b);
    let uuid = [7u8; 16];
    assert_eq!(
        decode_backend_payload(BackendRequest::SHARED_OBJECT_ADD, false, &uuid).unwrap(),
        P::SharedObject(uuid)
    );
}

#[test]
fn unknown_or_unexpected_payloads_are_raw() {
    check(R(99), false, &[1, 2, 3], P::Raw(vec![1, 2, 3]));
    check(R::SET_OWNER, false, &[1], P::Raw(vec![1]));
    check(R::IOTLB_MSG, false, &[0; 26], P::Raw(vec![0; 26]));
}
