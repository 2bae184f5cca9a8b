//! Requests built byte by byte at the offsets of the reference tables.

use super::{msg, put, put_u32, put_u64};
use crate::wire::*;

/// Decodes `bytes`, checks the command and that re-encoding gives the bytes back.
fn check(bytes: &[u8], expected: Command) -> Request {
    let r = Request::decode(bytes).unwrap();
    assert_eq!(r.command, expected);
    assert_eq!(r.encode(), bytes, "re-encoding differs");
    assert_eq!(r.command.command_type(), Some(r.command_type()));
    r
}

#[test]
fn header_fields_decode_at_reference_offsets() {
    let mut b = msg(0x105, 24);
    put_u32(&mut b, 4, FLAG_FENCE | FLAG_INFO_RING_IDX);
    put_u64(&mut b, 8, 0x1122_3344_5566_7788);
    put_u32(&mut b, 16, 7);
    put(&mut b, 20, &[5, 0xa, 0xb, 0xc]);
    let h = CtrlHeader::decode(&b).unwrap();
    assert_eq!(
        h,
        CtrlHeader {
            type_: 0x105,
            flags: 3,
            fence_id: 0x1122_3344_5566_7788,
            ctx_id: 7,
            ring_idx: 5,
            padding: [0xa, 0xb, 0xc],
        }
    );
    assert!(h.is_fenced() && h.has_ring_idx());
    let mut out = Vec::new();
    h.encode_into(&mut out);
    assert_eq!(out, b);
}

#[test]
fn header_shorter_than_24_bytes_is_too_short() {
    let e = Request::decode(&[0; 23]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::TooShort {
            what: "virtio_gpu_ctrl_hdr",
            offset: 0,
            needed: 24,
            found: 23
        }
    );
}

#[test]
fn get_display_info_is_header_only() {
    check(&msg(0x100, 24), Command::GetDisplayInfo);
}

#[test]
fn resource_create_2d_fields_at_24_28_32_36() {
    let mut b = msg(0x101, 40);
    put_u32(&mut b, 24, 2);
    put_u32(&mut b, 28, 1);
    put_u32(&mut b, 32, 1024);
    put_u32(&mut b, 36, 768);
    check(
        &b,
        Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: 2,
            format: Format::B8G8R8A8_UNORM,
            width: 1024,
            height: 768,
        }),
    );
}

#[test]
fn resource_unref_and_padding() {
    let mut b = msg(0x102, 32);
    put_u32(&mut b, 24, 9);
    put_u32(&mut b, 28, 0xdead);
    check(
        &b,
        Command::ResourceUnref(ResourceUnref {
            resource_id: 9,
            padding: 0xdead,
        }),
    );
}

#[test]
fn set_scanout_rect_then_scanout_then_resource() {
    let mut b = msg(0x103, 48);
    for (i, v) in [1, 2, 3, 4].into_iter().enumerate() {
        put_u32(&mut b, 24 + 4 * i, v);
    }
    put_u32(&mut b, 40, 1);
    put_u32(&mut b, 44, 5);
    check(
        &b,
        Command::SetScanout(SetScanout {
            r: Rect {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
            scanout_id: 1,
            resource_id: 5,
        }),
    );
}

#[test]
fn resource_flush_fields() {
    let mut b = msg(0x104, 48);
    put_u32(&mut b, 24, 10);
    put_u32(&mut b, 28, 20);
    put_u32(&mut b, 32, 30);
    put_u32(&mut b, 36, 40);
    put_u32(&mut b, 40, 6);
    put_u32(&mut b, 44, 77);
    check(
        &b,
        Command::ResourceFlush(ResourceFlush {
            r: Rect {
                x: 10,
                y: 20,
                width: 30,
                height: 40,
            },
            resource_id: 6,
            padding: 77,
        }),
    );
}

#[test]
fn transfer_to_host_2d_offset_is_u64_at_40() {
    let mut b = msg(0x105, 56);
    put_u32(&mut b, 32, 1024);
    put_u32(&mut b, 36, 768);
    put_u64(&mut b, 40, 0x1_0000_0004);
    put_u32(&mut b, 48, 2);
    put_u32(&mut b, 52, 3);
    put_u32(&mut b, 4, FLAG_FENCE);
    put_u64(&mut b, 8, 5);
    let r = check(
        &b,
        Command::TransferToHost2d(TransferToHost2d {
            r: Rect {
                x: 0,
                y: 0,
                width: 1024,
                height: 768,
            },
            offset: 0x1_0000_0004,
            resource_id: 2,
            padding: 3,
        }),
    );
    assert_eq!(
        r.to_string(),
        "TRANSFER_TO_HOST_2D res=2 rect=0,0 1024x768 offset=4294967300 fence=5"
    );
}

#[test]
fn attach_backing_reads_nr_entries_mem_entries() {
    let mut b = msg(0x106, 32);
    put_u32(&mut b, 24, 3);
    put_u32(&mut b, 28, 2);
    put_u64(&mut b, 32, 0x1000);
    put_u32(&mut b, 40, 4096);
    put_u32(&mut b, 44, 1);
    put_u64(&mut b, 48, 0x8000);
    put_u32(&mut b, 56, 100);
    put_u32(&mut b, 60, 0);
    let r = check(
        &b,
        Command::ResourceAttachBacking(ResourceAttachBacking {
            resource_id: 3,
            nr_entries: 2,
            entries: vec![
                MemEntry {
                    addr: 0x1000,
                    length: 4096,
                    padding: 1,
                },
                MemEntry {
                    addr: 0x8000,
                    length: 100,
                    padding: 0,
                },
            ],
        }),
    );
    assert!(r.trailing.is_empty());
    assert_eq!(
        r.to_string(),
        "RESOURCE_ATTACH_BACKING res=3 entries=2 bytes=4196"
    );
}

#[test]
fn attach_backing_with_huge_nr_entries_is_count_too_large() {
    let mut b = msg(0x106, 32 + 16 * 3 + 5);
    put_u32(&mut b, 28, u32::MAX);
    assert_eq!(
        Request::decode(&b).unwrap_err(),
        DecodeError::CountTooLarge {
            what: "nr_entries",
            offset: 28,
            count: u64::from(u32::MAX),
            max_fit: 3
        }
    );
}

#[test]
fn attach_backing_extra_bytes_after_entries_are_trailing() {
    let mut b = msg(0x106, 32 + 16 + 3);
    put_u32(&mut b, 28, 1);
    put(&mut b, 48, &[7, 8, 9]);
    let r = Request::decode(&b).unwrap();
    assert_eq!(r.trailing, vec![7, 8, 9]);
    assert_eq!(r.encode(), b);
}

#[test]
fn detach_backing_fields() {
    let mut b = msg(0x107, 32);
    put_u32(&mut b, 24, 4);
    check(
        &b,
        Command::ResourceDetachBacking(ResourceDetachBacking {
            resource_id: 4,
            padding: 0,
        }),
    );
}

#[test]
fn get_capset_info_and_get_capset() {
    let mut b = msg(0x108, 32);
    put_u32(&mut b, 24, 1);
    check(
        &b,
        Command::GetCapsetInfo(GetCapsetInfo {
            capset_index: 1,
            padding: 0,
        }),
    );
    let mut b = msg(0x109, 32);
    put_u32(&mut b, 24, 4);
    put_u32(&mut b, 28, 2);
    let r = check(
        &b,
        Command::GetCapset(GetCapset {
            capset_id: CapsetId::VENUS,
            capset_version: 2,
        }),
    );
    assert_eq!(r.to_string(), "GET_CAPSET id=VENUS version=2");
}

#[test]
fn get_edid_and_assign_uuid() {
    let mut b = msg(0x10A, 32);
    put_u32(&mut b, 24, 3);
    check(
        &b,
        Command::GetEdid(GetEdid {
            scanout: 3,
            padding: 0,
        }),
    );
    let mut b = msg(0x10B, 32);
    put_u32(&mut b, 24, 8);
    put_u32(&mut b, 28, 1);
    check(
        &b,
        Command::ResourceAssignUuid(ResourceAssignUuid {
            resource_id: 8,
            padding: 1,
        }),
    );
}

#[test]
fn create_blob_fields_and_entries() {
    let mut b = msg(0x10C, 56);
    put_u32(&mut b, 24, 11);
    put_u32(&mut b, 28, 3);
    put_u32(&mut b, 32, 5);
    put_u32(&mut b, 36, 1);
    put_u64(&mut b, 40, 0xabc);
    put_u64(&mut b, 48, 1 << 33);
    put_u64(&mut b, 56, 0x4000);
    put_u32(&mut b, 64, 0x2000);
    put_u32(&mut b, 68, 0);
    check(
        &b,
        Command::ResourceCreateBlob(ResourceCreateBlob {
            resource_id: 11,
            blob_mem: BlobMem::HOST3D_GUEST,
            blob_flags: BlobFlags(BlobFlags::USE_MAPPABLE | BlobFlags::USE_CROSS_DEVICE),
            nr_entries: 1,
            blob_id: 0xabc,
            size: 1 << 33,
            entries: vec![MemEntry {
                addr: 0x4000,
                length: 0x2000,
                padding: 0,
            }],
        }),
    );
}

#[test]
fn create_blob_nr_entries_beyond_bytes_is_count_too_large() {
    let mut b = msg(0x10C, 56 + 15);
    put_u32(&mut b, 36, 1);
    assert_eq!(
        Request::decode(&b).unwrap_err(),
        DecodeError::CountTooLarge {
            what: "nr_entries",
            offset: 36,
            count: 1,
            max_fit: 0
        }
    );
}

#[test]
fn set_scanout_blob_strides_at_64_offsets_at_80() {
    let mut b = msg(0x10D, 96);
    put_u32(&mut b, 32, 640);
    put_u32(&mut b, 36, 480);
    put_u32(&mut b, 40, 0);
    put_u32(&mut b, 44, 12);
    put_u32(&mut b, 48, 641);
    put_u32(&mut b, 52, 481);
    put_u32(&mut b, 56, 2);
    put_u32(&mut b, 60, 9);
    for i in 0..4 {
        put_u32(&mut b, 64 + 4 * i, 2560 + i as u32);
        put_u32(&mut b, 80 + 4 * i, 100 * i as u32);
    }
    check(
        &b,
        Command::SetScanoutBlob(SetScanoutBlob {
            r: Rect {
                x: 0,
                y: 0,
                width: 640,
                height: 480,
            },
            scanout_id: 0,
            resource_id: 12,
            width: 641,
            height: 481,
            format: Format::B8G8R8X8_UNORM,
            padding: 9,
            strides: [2560, 2561, 2562, 2563],
            offsets: [0, 100, 200, 300],
        }),
    );
}

#[test]
fn ctx_create_name_and_context_init() {
    let mut b = msg(0x200, 96);
    put_u32(&mut b, 16, 3);
    put_u32(&mut b, 24, 5);
    put_u32(&mut b, 28, 0x104);
    put(&mut b, 32, b"mesa!");
    let mut name = [0u8; 64];
    name[..5].copy_from_slice(b"mesa!");
    let r = check(
        &b,
        Command::CtxCreate(CtxCreate {
            nlen: 5,
            context_init: 0x104,
            debug_name: name,
        }),
    );
    let Command::CtxCreate(c) = &r.command else {
        unreachable!()
    };
    assert_eq!(c.capset_id(), CapsetId::VENUS);
    assert_eq!(c.debug_name_str(), "mesa!");
    assert_eq!(
        r.to_string(),
        "CTX_CREATE capset=VENUS name=\"mesa!\" ctx=3"
    );
}

#[test]
fn ctx_destroy_attach_detach() {
    check(&msg(0x201, 24), Command::CtxDestroy);
    let mut b = msg(0x202, 32);
    put_u32(&mut b, 24, 21);
    check(
        &b,
        Command::CtxAttachResource(CtxResource {
            resource_id: 21,
            padding: 0,
        }),
    );
    let mut b = msg(0x203, 32);
    put_u32(&mut b, 24, 22);
    check(
        &b,
        Command::CtxDetachResource(CtxResource {
            resource_id: 22,
            padding: 0,
        }),
    );
}

#[test]
fn resource_create_3d_twelve_words() {
    let mut b = msg(0x204, 72);
    for i in 0..12 {
        put_u32(&mut b, 24 + 4 * i, 100 + i as u32);
    }
    check(
        &b,
        Command::ResourceCreate3d(ResourceCreate3d {
            resource_id: 100,
            target: 101,
            format: Format(102),
            bind: 103,
            width: 104,
            height: 105,
            depth: 106,
            array_size: 107,
            last_level: 108,
            nr_samples: 109,
            flags: 110,
            padding: 111,
        }),
    );
}

#[test]
fn transfer_3d_box_offset_resource_level_strides() {
    for (code, to_host) in [(0x205, true), (0x206, false)] {
        let mut b = msg(code, 72);
        for i in 0..6 {
            put_u32(&mut b, 24 + 4 * i, 1 + i as u32);
        }
        put_u64(&mut b, 48, 0x55);
        put_u32(&mut b, 56, 7);
        put_u32(&mut b, 60, 1);
        put_u32(&mut b, 64, 256);
        put_u32(&mut b, 68, 4096);
        let t = TransferHost3d {
            box_: Box3d {
                x: 1,
                y: 2,
                z: 3,
                w: 4,
                h: 5,
                d: 6,
            },
            offset: 0x55,
            resource_id: 7,
            level: 1,
            stride: 256,
            layer_stride: 4096,
        };
        let expected = if to_host {
            Command::TransferToHost3d(t)
        } else {
            Command::TransferFromHost3d(t)
        };
        check(&b, expected);
    }
}

#[test]
fn submit_3d_stream_of_size_bytes() {
    let mut b = msg(0x207, 32);
    put_u32(&mut b, 24, 6);
    put(&mut b, 32, &[1, 2, 3, 4, 5, 6, 0xee]);
    let r = Request::decode(&b).unwrap();
    assert_eq!(
        r.command,
        Command::Submit3d(CmdSubmit {
            size: 6,
            padding: 0,
            data: vec![1, 2, 3, 4, 5, 6],
        })
    );
    assert_eq!(r.trailing, vec![0xee]);
    assert_eq!(r.encode(), b);
}

#[test]
fn submit_3d_size_beyond_bytes_is_count_too_large() {
    let mut b = msg(0x207, 40);
    put_u32(&mut b, 24, 9);
    assert_eq!(
        Request::decode(&b).unwrap_err(),
        DecodeError::CountTooLarge {
            what: "size",
            offset: 24,
            count: 9,
            max_fit: 8
        }
    );
}

#[test]
fn map_and_unmap_blob() {
    let mut b = msg(0x208, 40);
    put_u32(&mut b, 24, 13);
    put_u32(&mut b, 28, 1);
    put_u64(&mut b, 32, 0x20_0000);
    check(
        &b,
        Command::ResourceMapBlob(ResourceMapBlob {
            resource_id: 13,
            padding: 1,
            offset: 0x20_0000,
        }),
    );
    let mut b = msg(0x209, 32);
    put_u32(&mut b, 24, 13);
    check(
        &b,
        Command::ResourceUnmapBlob(ResourceUnmapBlob {
            resource_id: 13,
            padding: 0,
        }),
    );
}

#[test]
fn update_and_move_cursor_share_the_layout() {
    for code in [0x300, 0x301] {
        let mut b = msg(code, 56);
        put_u32(&mut b, 24, 1);
        put_u32(&mut b, 28, 200);
        put_u32(&mut b, 32, 300);
        put_u32(&mut b, 36, 4);
        put_u32(&mut b, 40, 50);
        put_u32(&mut b, 44, 6);
        put_u32(&mut b, 48, 7);
        put_u32(&mut b, 52, 8);
        let c = UpdateCursor {
            pos: CursorPos {
                scanout_id: 1,
                x: 200,
                y: 300,
                padding: 4,
            },
            resource_id: 50,
            hot_x: 6,
            hot_y: 7,
            padding: 8,
        };
        let expected = if code == 0x300 {
            Command::UpdateCursor(c)
        } else {
            Command::MoveCursor(c)
        };
        let r = check(&b, expected);
        assert!(r.command_type().is_cursor());
    }
}

#[test]
fn each_fixed_command_one_byte_short_is_too_short_with_its_size() {
    let sizes: [(u32, usize, &str); 22] = [
        (0x101, 40, "virtio_gpu_resource_create_2d"),
        (0x102, 32, "virtio_gpu_resource_unref"),
        (0x103, 48, "virtio_gpu_set_scanout"),
        (0x104, 48, "virtio_gpu_resource_flush"),
        (0x105, 56, "virtio_gpu_transfer_to_host_2d"),
        (0x106, 32, "virtio_gpu_resource_attach_backing"),
        (0x107, 32, "virtio_gpu_resource_detach_backing"),
        (0x108, 32, "virtio_gpu_get_capset_info"),
        (0x109, 32, "virtio_gpu_get_capset"),
        (0x10A, 32, "virtio_gpu_cmd_get_edid"),
        (0x10B, 32, "virtio_gpu_resource_assign_uuid"),
        (0x10C, 56, "virtio_gpu_resource_create_blob"),
        (0x10D, 96, "virtio_gpu_set_scanout_blob"),
        (0x200, 96, "virtio_gpu_ctx_create"),
        (0x202, 32, "virtio_gpu_ctx_resource"),
        (0x203, 32, "virtio_gpu_ctx_resource"),
        (0x204, 72, "virtio_gpu_resource_create_3d"),
        (0x205, 72, "virtio_gpu_transfer_host_3d"),
        (0x206, 72, "virtio_gpu_transfer_host_3d"),
        (0x207, 32, "virtio_gpu_cmd_submit"),
        (0x208, 40, "virtio_gpu_resource_map_blob"),
        (0x209, 32, "virtio_gpu_resource_unmap_blob"),
    ];
    for (code, size, what) in sizes {
        assert!(Request::decode(&msg(code, size)).is_ok(), "{code:#x}");
        assert_eq!(
            Request::decode(&msg(code, size - 1)).unwrap_err(),
            DecodeError::TooShort {
                what,
                offset: 0,
                needed: size,
                found: size - 1
            },
            "{code:#x}"
        );
    }
    for code in [0x300, 0x301] {
        assert!(matches!(
            Request::decode(&msg(code, 55)),
            Err(DecodeError::TooShort { needed: 56, .. })
        ));
    }
}

#[test]
fn unknown_command_code_keeps_body_bytes() {
    let mut b = msg(0x10E, 24);
    put(&mut b, 24, &[1, 2, 3]);
    let r = Request::decode(&b).unwrap();
    assert_eq!(r.command, Command::Unknown(vec![1, 2, 3]));
    assert!(r.trailing.is_empty());
    assert_eq!(r.encode(), b);
    assert_eq!(r.command_type().name(), None);
    assert_eq!(r.to_string(), "UNKNOWN_COMMAND(0x10e) len=3");
}

#[test]
fn fixed_command_with_extra_bytes_keeps_them_as_trailing() {
    let mut b = msg(0x102, 32);
    put(&mut b, 32, &[0xaa; 5]);
    let r = Request::decode(&b).unwrap();
    assert_eq!(r.trailing, vec![0xaa; 5]);
    assert_eq!(r.encode(), b);
}

#[test]
fn command_type_table_is_complete_and_classified() {
    assert_eq!(CommandType::ALL.len(), 26);
    for t in CommandType::ALL {
        assert!(t.name().is_some());
        assert_eq!(t.is_3d(), (0x200..0x300).contains(&t.0));
        assert_eq!(t.is_cursor(), t.0 >= 0x300);
    }
    assert_eq!(CommandType::ALL.iter().filter(|t| t.is_3d()).count(), 10);
    assert_eq!(
        CommandType::RESOURCE_CREATE_BLOB.name(),
        Some("RESOURCE_CREATE_BLOB")
    );
}
