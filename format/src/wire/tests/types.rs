//! Small shared types: formats, capsets, blob flags, map info, code names.

use crate::wire::vhost_user::{MessageHeader, flags};
use crate::wire::*;

#[test]
fn format_to_rgba_follows_memory_byte_order() {
    let px = [0x10, 0x20, 0x30, 0x40];
    let cases = [
        (Format::B8G8R8A8_UNORM, [0x30, 0x20, 0x10, 0x40]),
        (Format::B8G8R8X8_UNORM, [0x30, 0x20, 0x10, 0xff]),
        (Format::A8R8G8B8_UNORM, [0x20, 0x30, 0x40, 0x10]),
        (Format::X8R8G8B8_UNORM, [0x20, 0x30, 0x40, 0xff]),
        (Format::R8G8B8A8_UNORM, [0x10, 0x20, 0x30, 0x40]),
        (Format::X8B8G8R8_UNORM, [0x40, 0x30, 0x20, 0xff]),
        (Format::A8B8G8R8_UNORM, [0x40, 0x30, 0x20, 0x10]),
        (Format::R8G8B8X8_UNORM, [0x10, 0x20, 0x30, 0xff]),
    ];
    for (f, rgba) in cases {
        assert_eq!(f.to_rgba(px), Some(rgba), "{f}");
        assert_eq!(f.bytes_per_pixel(), Some(4));
        assert_eq!(f.has_alpha(), rgba[3] != 0xff);
    }
    assert_eq!(Format::ALL.len(), 8);
    assert_eq!(Format(5).to_rgba(px), None);
    assert_eq!(Format(5).bytes_per_pixel(), None);
    assert_eq!(Format(2).to_string(), "B8G8R8X8_UNORM");
    assert_eq!(Format(5).to_string(), "FORMAT(0x5)");
}

#[test]
fn capset_blob_and_map_names() {
    let names: Vec<_> = (1..=9).map(|i| CapsetId(i).name().unwrap()).collect();
    assert_eq!(names[2], "GFXSTREAM_VULKAN");
    assert_eq!(names[8], "GFXSTREAM_COMPOSER");
    assert_eq!(CapsetId(10).name(), None);
    assert_eq!(BlobMem(3).name(), Some("HOST3D_GUEST"));
    assert_eq!(
        BlobFlags(0x13).names(),
        vec!["USE_MAPPABLE", "USE_SHAREABLE"]
    );
    assert_eq!(
        BlobFlags(0x13).to_string(),
        "USE_MAPPABLE|USE_SHAREABLE|0x10"
    );
    assert_eq!(BlobFlags(0).to_string(), "0");
    assert_eq!(MapInfo(0x11).cache_name(), Some("CACHED"));
    assert_eq!(MapInfo(0x11).access_name(), Some("READ"));
    assert_eq!(MapInfo(0x07).to_string(), "CACHE(0x7)");
}

#[test]
fn response_type_names_and_classes() {
    assert_eq!(ResponseType(0x11FF).name(), Some("OK_RESOURCE_PLANE_INFO"));
    assert_eq!(ResponseType(0).name(), Some("UNDEFINED"));
    assert!(ResponseType::ERR_INVALID_PARAMETER.is_error());
    assert!(!ResponseType::OK_MAP_INFO.is_error());
    assert!(ResponseType::OK_MAP_INFO.is_ok());
}

#[test]
fn vhost_user_message_header_round_trip() {
    let b = [15, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0];
    let h = MessageHeader::decode(&b).unwrap();
    assert_eq!(
        h,
        MessageHeader {
            request: 15,
            flags: 1 | flags::REPLY,
            size: 8
        }
    );
    assert!(h.is_reply() && !h.needs_reply());
    assert_eq!(h.version(), 1);
    let mut out = Vec::new();
    h.encode_into(&mut out);
    assert_eq!(out, b);
    assert!(MessageHeader::decode(&b[..11]).is_err());
}

#[test]
fn request_json_dump_has_named_fields() {
    let mut c = CtxCreate::default();
    c.debug_name[0] = b'x';
    c.nlen = 1;
    let r = Request::new(Command::CtxCreate(c));
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["header"]["type_"], 0x200);
    assert_eq!(j["command"]["CtxCreate"]["debug_name"][0], u64::from(b'x'));
    assert_eq!(Request::decode(&r.encode()).unwrap(), r);
}
