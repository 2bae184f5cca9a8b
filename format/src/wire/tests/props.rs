//! Property tests: arbitrary bytes that decode re-encode identically, and generated values
//! survive encode → decode.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::wire::*;

/// A header prefix (type + 20 arbitrary bytes) followed by an arbitrary body.
fn with_code(code: u32, rest: [u8; 20], body: Vec<u8>) -> Vec<u8> {
    let mut b = code.to_le_bytes().to_vec();
    b.extend_from_slice(&rest);
    b.extend_from_slice(&body);
    b
}

fn command_code() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => proptest::sample::select(CommandType::ALL.to_vec()).prop_map(|t| t.0),
        1 => any::<u32>(),
    ]
}

fn response_code() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => proptest::sample::select(vec![
            0x1100u32, 0x1101, 0x1102, 0x1103, 0x1104, 0x1105, 0x1106, 0x11FF, 0x1200, 0x1205,
            0x12ff, 0,
        ]),
        1 => any::<u32>(),
    ]
}

/// Puts a count that fits (or one past) at the count field of the variable commands, so the
/// entries/stream paths are exercised and not only CountTooLarge.
fn patch_count(b: &mut [u8], code: u32, fudge: u32) {
    let (count_off, start, elem) = match code {
        0x106 => (28, 32, 16),
        0x10C => (36, 56, 16),
        0x207 => (24, 32, 1),
        _ => return,
    };
    if b.len() < start {
        return;
    }
    let fit = ((b.len() - start) / elem) as u32;
    let n = fit
        .saturating_sub(fudge % 3)
        .saturating_add(u32::from(fudge.is_multiple_of(7)));
    b[count_off..count_off + 4].copy_from_slice(&n.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_bytes_that_decode_reencode_identically(
        code in command_code(),
        rest in any::<[u8; 20]>(),
        body in vec(any::<u8>(), 0..200),
        fudge in any::<u32>(),
    ) {
        let mut b = with_code(code, rest, body);
        patch_count(&mut b, code, fudge);
        match Request::decode(&b) {
            Ok(r) => {
                prop_assert_eq!(r.encode(), b.clone());
                let _ = r.to_string();
            }
            Err(DecodeError::TooShort { needed, found, .. }) => prop_assert!(found < needed),
            Err(DecodeError::CountTooLarge { count, max_fit, .. }) => prop_assert!(count > max_fit),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn response_bytes_that_decode_reencode_identically(
        code in response_code(),
        rest in any::<[u8; 20]>(),
        body in prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 380..1100)],
    ) {
        let b = with_code(code, rest, body);
        match Response::decode(&b) {
            Ok(r) => {
                prop_assert_eq!(r.encode(), b.clone());
                let _ = r.to_string();
            }
            Err(DecodeError::TooShort { needed, found, .. }) => prop_assert!(found < needed),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn truncated_valid_requests_never_panic(
        w in any::<[u32; 24]>(),
        q in any::<[u64; 3]>(),
        data in vec(any::<u8>(), 0..40),
        entries in vec(any::<(u64, u32, u32)>(), 0..4),
        which in 0usize..27,
        cut in any::<prop::sample::Index>(),
    ) {
        let req = make_request(&w, &q, &data, &entries, which, Vec::new());
        let b = req.encode();
        let n = cut.index(b.len() + 1);
        let _ = Request::decode(&b[..n]);
    }

    #[test]
    fn generated_requests_survive_encode_decode(
        w in any::<[u32; 24]>(),
        q in any::<[u64; 3]>(),
        data in vec(any::<u8>(), 0..40),
        entries in vec(any::<(u64, u32, u32)>(), 0..4),
        which in 0usize..27,
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let req = make_request(&w, &q, &data, &entries, which, trailing);
        let decoded = Request::decode(&req.encode());
        prop_assert_eq!(decoded, Ok(req));
    }

    #[test]
    fn generated_responses_survive_encode_decode(
        w in any::<[u32; 24]>(),
        bytes in vec(any::<u8>(), 0..40),
        blob in any::<[u8; 16]>(),
        which in 0usize..10,
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let resp = make_response(&w, &bytes, blob, which, trailing);
        let decoded = Response::decode(&resp.encode());
        prop_assert_eq!(decoded, Ok(resp));
    }
}

fn header(w: &[u32; 24], q: &[u64; 3], type_: u32) -> CtrlHeader {
    CtrlHeader {
        type_,
        flags: w[20],
        fence_id: q[2],
        ctx_id: w[21],
        ring_idx: w[22] as u8,
        padding: [(w[23] >> 8) as u8, (w[23] >> 16) as u8, (w[23] >> 24) as u8],
    }
}

fn rect(w: &[u32; 24]) -> Rect {
    Rect {
        x: w[0],
        y: w[1],
        width: w[2],
        height: w[3],
    }
}

/// Builds the `which`-th command (26 = an unknown code) from random words.
fn make_request(
    w: &[u32; 24],
    q: &[u64; 3],
    data: &[u8],
    entries: &[(u64, u32, u32)],
    which: usize,
    mut trailing: Vec<u8>,
) -> Request {
    let entries: Vec<MemEntry> = entries
        .iter()
        .map(|&(addr, length, padding)| MemEntry {
            addr,
            length,
            padding,
        })
        .collect();
    let n = entries.len() as u32;
    let ctx_res = CtxResource {
        resource_id: w[4],
        padding: w[5],
    };
    let t3d = TransferHost3d {
        box_: Box3d {
            x: w[0],
            y: w[1],
            z: w[2],
            w: w[3],
            h: w[4],
            d: w[5],
        },
        offset: q[0],
        resource_id: w[6],
        level: w[7],
        stride: w[8],
        layer_stride: w[9],
    };
    let cursor = UpdateCursor {
        pos: CursorPos {
            scanout_id: w[0],
            x: w[1],
            y: w[2],
            padding: w[3],
        },
        resource_id: w[4],
        hot_x: w[5],
        hot_y: w[6],
        padding: w[7],
    };
    let mut name = [0u8; 64];
    for (i, b) in name.iter_mut().enumerate() {
        *b = (w[i % 20] >> (i % 4 * 8)) as u8;
    }
    let command = match which {
        0 => Command::GetDisplayInfo,
        1 => Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: w[4],
            format: Format(w[5]),
            width: w[6],
            height: w[7],
        }),
        2 => Command::ResourceUnref(ResourceUnref {
            resource_id: w[4],
            padding: w[5],
        }),
        3 => Command::SetScanout(SetScanout {
            r: rect(w),
            scanout_id: w[4],
            resource_id: w[5],
        }),
        4 => Command::ResourceFlush(ResourceFlush {
            r: rect(w),
            resource_id: w[4],
            padding: w[5],
        }),
        5 => Command::TransferToHost2d(TransferToHost2d {
            r: rect(w),
            offset: q[0],
            resource_id: w[4],
            padding: w[5],
        }),
        6 => Command::ResourceAttachBacking(ResourceAttachBacking {
            resource_id: w[4],
            nr_entries: n,
            entries,
        }),
        7 => Command::ResourceDetachBacking(ResourceDetachBacking {
            resource_id: w[4],
            padding: w[5],
        }),
        8 => Command::GetCapsetInfo(GetCapsetInfo {
            capset_index: w[4],
            padding: w[5],
        }),
        9 => Command::GetCapset(GetCapset {
            capset_id: CapsetId(w[4]),
            capset_version: w[5],
        }),
        10 => Command::GetEdid(GetEdid {
            scanout: w[4],
            padding: w[5],
        }),
        11 => Command::ResourceAssignUuid(ResourceAssignUuid {
            resource_id: w[4],
            padding: w[5],
        }),
        12 => Command::ResourceCreateBlob(ResourceCreateBlob {
            resource_id: w[4],
            blob_mem: BlobMem(w[5]),
            blob_flags: BlobFlags(w[6]),
            nr_entries: n,
            blob_id: q[0],
            size: q[1],
            entries,
        }),
        13 => Command::SetScanoutBlob(SetScanoutBlob {
            r: rect(w),
            scanout_id: w[4],
            resource_id: w[5],
            width: w[6],
            height: w[7],
            format: Format(w[8]),
            padding: w[9],
            strides: [w[10], w[11], w[12], w[13]],
            offsets: [w[14], w[15], w[16], w[17]],
        }),
        14 => Command::CtxCreate(CtxCreate {
            nlen: w[4],
            context_init: w[5],
            debug_name: name,
        }),
        15 => Command::CtxDestroy,
        16 => Command::CtxAttachResource(ctx_res),
        17 => Command::CtxDetachResource(ctx_res),
        18 => Command::ResourceCreate3d(ResourceCreate3d {
            resource_id: w[0],
            target: w[1],
            format: Format(w[2]),
            bind: w[3],
            width: w[4],
            height: w[5],
            depth: w[6],
            array_size: w[7],
            last_level: w[8],
            nr_samples: w[9],
            flags: w[10],
            padding: w[11],
        }),
        19 => Command::TransferToHost3d(t3d),
        20 => Command::TransferFromHost3d(t3d),
        21 => Command::Submit3d(CmdSubmit {
            size: data.len() as u32,
            padding: w[5],
            data: data.to_vec(),
        }),
        22 => Command::ResourceMapBlob(ResourceMapBlob {
            resource_id: w[4],
            padding: w[5],
            offset: q[0],
        }),
        23 => Command::ResourceUnmapBlob(ResourceUnmapBlob {
            resource_id: w[4],
            padding: w[5],
        }),
        24 => Command::UpdateCursor(cursor),
        25 => Command::MoveCursor(cursor),
        _ => {
            // An unknown code takes every byte after the header.
            trailing.clear();
            Command::Unknown(data.to_vec())
        }
    };
    let type_ = command
        .command_type()
        .map_or(0x400 | (w[0] & 0xff), |t| t.0);
    Request {
        header: header(w, q, type_),
        command,
        trailing,
    }
}

/// Builds the `which`-th response body from random words.
fn make_response(
    w: &[u32; 24],
    bytes: &[u8],
    blob: [u8; 16],
    which: usize,
    mut trailing: Vec<u8>,
) -> Response {
    let (type_, body) = match which {
        0 => (0x1100, ResponseBody::OkNodata),
        1 => {
            let mut pmodes = [DisplayOne::default(); 16];
            for (i, p) in pmodes.iter_mut().enumerate() {
                *p = DisplayOne {
                    r: Rect {
                        x: w[i],
                        y: w[i + 1],
                        width: w[i + 2],
                        height: w[i + 3],
                    },
                    enabled: w[i + 4] & 1,
                    flags: w[i + 5],
                };
            }
            (0x1101, ResponseBody::OkDisplayInfo(DisplayInfo { pmodes }))
        }
        2 => (
            0x1102,
            ResponseBody::OkCapsetInfo(CapsetInfo {
                capset_id: CapsetId(w[0]),
                capset_max_version: w[1],
                capset_max_size: w[2],
                padding: w[3],
            }),
        ),
        3 => {
            trailing.clear();
            (0x1103, ResponseBody::OkCapset(bytes.to_vec()))
        }
        4 => {
            let mut e = Edid::from_blob(bytes);
            e.size = w[0];
            e.padding = w[1];
            e.edid[1000..1016].copy_from_slice(&blob);
            (0x1104, ResponseBody::OkEdid(e))
        }
        5 => (0x1105, ResponseBody::OkResourceUuid(blob)),
        6 => (
            0x1106,
            ResponseBody::OkMapInfo(MapInfoResponse {
                map_info: MapInfo(w[0]),
                padding: w[1],
            }),
        ),
        7 => {
            trailing.clear();
            (0x11FF, ResponseBody::OkResourcePlaneInfo(bytes.to_vec()))
        }
        8 => (0x1200 | (w[0] & 0xff), ResponseBody::Error),
        _ => {
            trailing.clear();
            (
                0x1300 | (w[0] & 0xff),
                ResponseBody::Unknown(bytes.to_vec()),
            )
        }
    };
    Response {
        header: header(w, &[0, 0, u64::from(w[3])], type_),
        body,
        trailing,
    }
}
