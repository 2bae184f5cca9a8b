//! vhost-user-gpu socket payloads and framing.

use super::{msg, put, put_u32, put_u64};
use crate::wire::gpu_socket::*;
use crate::wire::{DecodeError, GpuSocketPayload as P, GpuSocketRequest as R, Response};

fn check(req: R, is_reply: bool, bytes: &[u8], expected: P) {
    let p = decode_gpu_socket_payload(req, is_reply, bytes).unwrap();
    assert_eq!(p, expected);
    assert_eq!(p.encode(), bytes);
}

#[test]
fn names_1_to_12() {
    assert!((1..=12).all(|c| R(c).name().is_some()));
    assert_eq!(R(10).name(), Some("DMABUF_UPDATE"));
    assert_eq!(R(13).name(), None);
}

#[test]
fn cursor_pos_and_update() {
    let mut b = Vec::new();
    put_u32(&mut b, 0, 1);
    put_u32(&mut b, 4, 10);
    put_u32(&mut b, 8, 20);
    let pos = GpuCursorPos {
        scanout_id: 1,
        x: 10,
        y: 20,
    };
    check(R::CURSOR_POS, false, &b, P::CursorPos(pos));
    put_u32(&mut b, 12, 3);
    put_u32(&mut b, 16, 4);
    let image: Vec<u8> = (0..16384).map(|i| i as u8).collect();
    put(&mut b, 20, &image);
    check(
        R::CURSOR_UPDATE,
        false,
        &b,
        P::CursorUpdate(GpuCursorUpdate {
            pos,
            hot_x: 3,
            hot_y: 4,
            data: image,
        }),
    );
    assert_eq!(
        decode_gpu_socket_payload(R::CURSOR_UPDATE, false, &b[..16403]).unwrap_err(),
        DecodeError::TooShort {
            what: "VhostUserGpuCursorUpdate",
            offset: 0,
            needed: 16404,
            found: 16403
        }
    );
}

#[test]
fn scanout_update_and_dmabuf_update() {
    let mut b = Vec::new();
    put_u32(&mut b, 0, 0);
    put_u32(&mut b, 4, 800);
    put_u32(&mut b, 8, 600);
    check(
        R::SCANOUT,
        false,
        &b,
        P::Scanout(GpuScanout {
            scanout_id: 0,
            width: 800,
            height: 600,
        }),
    );
    let mut b = Vec::new();
    for (i, v) in [0u32, 1, 2, 2, 1].into_iter().enumerate() {
        put_u32(&mut b, 4 * i, v);
    }
    let header_only = b.clone();
    put(&mut b, 20, &[0xff; 8]);
    let u = GpuUpdate {
        scanout_id: 0,
        x: 1,
        y: 2,
        width: 2,
        height: 1,
        data: vec![0xff; 8],
    };
    check(R::UPDATE, false, &b, P::Update(u.clone()));
    check(
        R::DMABUF_UPDATE,
        false,
        &header_only,
        P::Update(GpuUpdate { data: vec![], ..u }),
    );
    assert!(decode_gpu_socket_payload(R::DMABUF_UPDATE, false, &b).is_err());
    check(R::DMABUF_UPDATE, true, &[], P::Empty);
}

#[test]
fn dmabuf_scanout_and_scanout2() {
    let mut b = Vec::new();
    for i in 0..9 {
        put_u32(&mut b, 4 * i, 10 + i as u32);
    }
    put(&mut b, 36, b"XR24");
    let d = DmabufScanout {
        scanout_id: 10,
        x: 11,
        y: 12,
        width: 13,
        height: 14,
        fd_width: 15,
        fd_height: 16,
        fd_stride: 17,
        fd_flags: 18,
        fd_drm_fourcc: i32::from_le_bytes(*b"XR24"),
    };
    check(R::DMABUF_SCANOUT, false, &b, P::DmabufScanout(d));
    assert!(P::DmabufScanout(d).to_string().ends_with("fourcc=XR24"));
    put_u64(&mut b, 40, 0x0100_0000_0000_0001);
    check(
        R::DMABUF_SCANOUT2,
        false,
        &b,
        P::DmabufScanout2(DmabufScanout2 {
            dmabuf_scanout: d,
            modifier: 0x0100_0000_0000_0001,
        }),
    );
}

#[test]
fn edid_and_display_info_replies_are_responses() {
    check(R::GET_EDID, false, &2u32.to_le_bytes(), P::EdidRequest(2));
    let b = msg(0x1104, 1056);
    check(
        R::GET_EDID,
        true,
        &b,
        P::Reply(Response::decode(&b).unwrap()),
    );
    let b = msg(0x1101, 408);
    check(
        R::GET_DISPLAY_INFO,
        true,
        &b,
        P::Reply(Response::decode(&b).unwrap()),
    );
    check(
        R::GET_PROTOCOL_FEATURES,
        true,
        &3u64.to_le_bytes(),
        P::ProtocolFeatures(3),
    );
}

#[test]
fn encode_message_frames_with_12_byte_header() {
    let m = encode_gpu_socket_message(R::GET_EDID, 0, &5u32.to_le_bytes());
    assert_eq!(m, [11, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]);
    let h = GpuSocketHeader::decode(&m).unwrap();
    assert_eq!(
        (h.request, h.flags, h.size, h.is_reply()),
        (R::GET_EDID, 0, 4, false)
    );
    let reply = encode_gpu_socket_message(R::DMABUF_UPDATE, FLAG_REPLY, &[]);
    assert!(GpuSocketHeader::decode(&reply).unwrap().is_reply());
}
