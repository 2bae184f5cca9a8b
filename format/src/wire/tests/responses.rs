//! Responses built byte by byte at the offsets of the reference tables.

use super::{msg, put, put_u32, put_u64};
use crate::wire::*;

fn check(bytes: &[u8], expected: ResponseBody) -> Response {
    let r = Response::decode(bytes).unwrap();
    assert_eq!(r.body, expected);
    assert_eq!(r.encode(), bytes, "re-encoding differs");
    r
}

#[test]
fn ok_nodata_echoes_fence_of_fenced_request() {
    let req = CtrlHeader {
        type_: 0x105,
        flags: FLAG_FENCE | FLAG_INFO_RING_IDX,
        fence_id: 42,
        ctx_id: 3,
        ring_idx: 2,
        padding: [9, 9, 9],
    };
    let r = Response::ok_nodata(&req);
    assert_eq!(
        r.header,
        CtrlHeader {
            type_: 0x1100,
            flags: 3,
            fence_id: 42,
            ctx_id: 3,
            ring_idx: 2,
            padding: [0; 3],
        }
    );
    let bytes = r.encode();
    assert_eq!(bytes.len(), 24);
    assert_eq!(Response::decode(&bytes).unwrap(), r);
    assert_eq!(r.to_string(), "OK_NODATA fence=42 ctx=3 ring=2");
}

#[test]
fn ok_nodata_for_unfenced_request_has_zero_fence() {
    let req = CtrlHeader {
        type_: 0x101,
        flags: 0,
        fence_id: 42,
        ctx_id: 3,
        ring_idx: 2,
        padding: [0; 3],
    };
    assert_eq!(Response::ok_nodata(&req).header, CtrlHeader::new(0x1100));
}

#[test]
fn error_response_carries_code_and_fence() {
    let mut req = CtrlHeader::new(0x101);
    req.flags = FLAG_FENCE;
    req.fence_id = 7;
    let r = Response::error(ResponseType::ERR_INVALID_RESOURCE_ID, &req);
    assert_eq!(r.body, ResponseBody::Error);
    assert!(r.response_type().is_error());
    let bytes = r.encode();
    let mut expected = msg(0x1203, 24);
    put_u32(&mut expected, 4, 1);
    put_u64(&mut expected, 8, 7);
    assert_eq!(bytes, expected);
    assert_eq!(r.to_string(), "ERR_INVALID_RESOURCE_ID fence=7");
}

#[test]
fn any_0x12xx_code_is_an_error() {
    let r = check(&msg(0x12ab, 24), ResponseBody::Error);
    assert!(r.response_type().is_error());
    assert_eq!(r.response_type().name(), None);
}

#[test]
fn display_info_sixteen_entries_of_24_bytes() {
    let mut b = msg(0x1101, 408);
    let mut pmodes = [DisplayOne::default(); 16];
    for (i, p) in pmodes.iter_mut().enumerate() {
        let off = 24 + 24 * i;
        let v = i as u32;
        put_u32(&mut b, off, v);
        put_u32(&mut b, off + 4, v + 1);
        put_u32(&mut b, off + 8, 640 + v);
        put_u32(&mut b, off + 12, 480 + v);
        put_u32(&mut b, off + 16, u32::from(i < 2));
        put_u32(&mut b, off + 20, 100 + v);
        *p = DisplayOne {
            r: Rect {
                x: v,
                y: v + 1,
                width: 640 + v,
                height: 480 + v,
            },
            enabled: u32::from(i < 2),
            flags: 100 + v,
        };
    }
    let r = check(&b, ResponseBody::OkDisplayInfo(DisplayInfo { pmodes }));
    assert_eq!(r.to_string(), "OK_DISPLAY_INFO 0:0,1 640x480 1:1,2 641x481");
    assert!(matches!(
        Response::decode(&b[..407]),
        Err(DecodeError::TooShort {
            needed: 408,
            found: 407,
            ..
        })
    ));
}

#[test]
fn capset_info_fields() {
    let mut b = msg(0x1102, 40);
    put_u32(&mut b, 24, 2);
    put_u32(&mut b, 28, 2);
    put_u32(&mut b, 32, 0x308);
    put_u32(&mut b, 36, 5);
    check(
        &b,
        ResponseBody::OkCapsetInfo(CapsetInfo {
            capset_id: CapsetId::VIRGL2,
            capset_max_version: 2,
            capset_max_size: 0x308,
            padding: 5,
        }),
    );
}

#[test]
fn capset_data_is_everything_after_header() {
    let mut b = msg(0x1103, 24);
    put(&mut b, 24, &[9; 100]);
    let r = check(&b, ResponseBody::OkCapset(vec![9; 100]));
    assert!(r.trailing.is_empty());
}

#[test]
fn edid_size_padding_and_1024_bytes() {
    let mut b = msg(0x1104, 1056);
    put_u32(&mut b, 24, 128);
    put_u32(&mut b, 28, 3);
    let blob = edid::edid_for_mode(1280, 800, 60, 1);
    put(&mut b, 32, &blob);
    b[1055] = 0x77;
    let mut e = Edid::from_blob(&blob);
    e.padding = 3;
    e.edid[1023] = 0x77;
    let r = check(&b, ResponseBody::OkEdid(e.clone()));
    assert_eq!(e.bytes(), &blob[..]);
    assert_eq!(r.to_string(), "OK_EDID size=128");
    assert!(matches!(
        Response::decode(&b[..1055]),
        Err(DecodeError::TooShort { needed: 1056, .. })
    ));
}

#[test]
fn resource_uuid_16_bytes_at_24() {
    let mut b = msg(0x1105, 40);
    let uuid: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
    put(&mut b, 24, &uuid);
    let r = check(&b, ResponseBody::OkResourceUuid(uuid));
    assert_eq!(
        r.to_string(),
        "OK_RESOURCE_UUID uuid=01020304-0506-0708-090a-0b0c0d0e0f10"
    );
}

#[test]
fn map_info_cache_and_access() {
    let mut b = msg(0x1106, 32);
    put_u32(&mut b, 24, 0x33);
    put_u32(&mut b, 28, 0);
    let r = check(
        &b,
        ResponseBody::OkMapInfo(MapInfoResponse {
            map_info: MapInfo(0x33),
            padding: 0,
        }),
    );
    assert_eq!(r.to_string(), "OK_MAP_INFO map_info=WC|RW");
}

#[test]
fn plane_info_and_unknown_keep_raw_bytes() {
    let mut b = msg(0x11FF, 24);
    put(&mut b, 24, &[1, 2, 3, 4]);
    check(&b, ResponseBody::OkResourcePlaneInfo(vec![1, 2, 3, 4]));
    let mut b = msg(0x1107, 24);
    put(&mut b, 24, &[5]);
    check(&b, ResponseBody::Unknown(vec![5]));
    check(&msg(0, 24), ResponseBody::Unknown(vec![]));
}

#[test]
fn nodata_with_extra_bytes_keeps_trailing() {
    let mut b = msg(0x1100, 24);
    put(&mut b, 24, &[0; 8]);
    let r = check(&b, ResponseBody::OkNodata);
    assert_eq!(r.trailing.len(), 8);
}

#[test]
fn response_json_dump_serialises() {
    let r = Response::decode(&msg(0x1104, 1056)).unwrap();
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["body"]["OkEdid"]["edid"].as_array().unwrap().len(), 1024);
}

#[test]
fn ok_with_body_takes_code_from_body_and_fence_from_request() {
    let mut req = CtrlHeader::new(0x100);
    req.flags = FLAG_FENCE;
    req.fence_id = 9;
    let info = DisplayInfo::from_modes(&[Rect {
        x: 0,
        y: 0,
        width: 1280,
        height: 800,
    }]);
    let r = Response::ok(ResponseBody::OkDisplayInfo(info), &req);
    let b = r.encode();
    assert_eq!(b.len(), 408);
    assert_eq!(&b[0..4], &0x1101u32.to_le_bytes());
    assert_eq!(&b[8..16], &9u64.to_le_bytes());
    assert_eq!(&b[32..36], &1280u32.to_le_bytes());
    assert_eq!(&b[40..44], &1u32.to_le_bytes());
    assert_eq!(&b[64..68], &0u32.to_le_bytes(), "scanout 1 disabled");
    assert_eq!(Response::decode(&b).unwrap(), r);
    assert_eq!(r.to_string(), "OK_DISPLAY_INFO 0:0,0 1280x800 fence=9");
}
