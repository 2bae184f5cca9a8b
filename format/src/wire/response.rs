//! Responses: the bodies the device writes back and [`Response`] (header + body + trailing).

use serde::Serialize;

use super::DecodeError;
use super::bytes::{arr, le32, need, put32};
use super::header::{CtrlHeader, FLAG_FENCE, FLAG_INFO_RING_IDX, ResponseType};
use super::types::{CapsetId, MapInfo, Rect};

/// `VIRTIO_GPU_MAX_SCANOUTS`.
pub const MAX_SCANOUTS: usize = 16;

/// One scanout in OK_DISPLAY_INFO (`virtio_gpu_display_one`, 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DisplayOne {
    /// Preferred position and size.
    pub r: Rect,
    /// Non-zero when the scanout is enabled (connected).
    pub enabled: u32,
    /// Flags as sent.
    pub flags: u32,
}

impl DisplayOne {
    /// Size on the wire.
    pub const SIZE: usize = 24;
}

/// OK_DISPLAY_INFO body (`virtio_gpu_resp_display_info`, 408 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DisplayInfo {
    /// One entry per possible scanout.
    pub pmodes: [DisplayOne; MAX_SCANOUTS],
}

impl DisplayInfo {
    /// Size on the wire, header included.
    pub const SIZE: usize = 408;

    /// Display info with scanout `i` enabled at `modes[i]` (at most 16 are used) and the
    /// rest disabled.
    pub fn from_modes(modes: &[Rect]) -> Self {
        let mut pmodes = [DisplayOne::default(); MAX_SCANOUTS];
        for (p, r) in pmodes.iter_mut().zip(modes) {
            *p = DisplayOne {
                r: *r,
                enabled: 1,
                flags: 0,
            };
        }
        DisplayInfo { pmodes }
    }

    fn read(b: &[u8]) -> Self {
        let mut pmodes = [DisplayOne::default(); MAX_SCANOUTS];
        for (i, p) in pmodes.iter_mut().enumerate() {
            let off = CtrlHeader::SIZE + i * DisplayOne::SIZE;
            *p = DisplayOne {
                r: Rect::read(b, off),
                enabled: le32(b, off + 16),
                flags: le32(b, off + 20),
            };
        }
        DisplayInfo { pmodes }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for p in &self.pmodes {
            p.r.write(out);
            put32(out, p.enabled);
            put32(out, p.flags);
        }
    }
}

/// OK_CAPSET_INFO body (`virtio_gpu_resp_capset_info`, 40 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct CapsetInfo {
    /// The capset at the asked index.
    pub capset_id: CapsetId,
    /// Highest version supported.
    pub capset_max_version: u32,
    /// Largest capset data size.
    pub capset_max_size: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl CapsetInfo {
    /// Size on the wire, header included.
    pub const SIZE: usize = 40;
}

/// OK_EDID body (`virtio_gpu_resp_edid`, 1056 bytes with the header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Edid {
    /// Meaningful bytes in `edid`.
    pub size: u32,
    /// Padding as sent.
    pub padding: u32,
    /// The EDID blob area (first `size` bytes meaningful).
    #[serde(serialize_with = "super::serialize_boxed_byte_array")]
    pub edid: Box<[u8; 1024]>,
}

impl Default for Edid {
    fn default() -> Self {
        Edid {
            size: 0,
            padding: 0,
            edid: Box::new([0; 1024]),
        }
    }
}

impl Edid {
    /// Size on the wire, header included.
    pub const SIZE: usize = 1056;

    /// An OK_EDID body holding `blob` (at most 1024 bytes are kept).
    pub fn from_blob(blob: &[u8]) -> Self {
        let mut e = Edid::default();
        let n = blob.len().min(1024);
        if let (Some(dst), Some(src)) = (e.edid.get_mut(..n), blob.get(..n)) {
            dst.copy_from_slice(src);
        }
        e.size = n as u32;
        e
    }

    /// The meaningful bytes (`size`, at most 1024).
    pub fn bytes(&self) -> &[u8] {
        let n = (self.size as usize).min(1024);
        self.edid.get(..n).unwrap_or(&[])
    }
}

/// OK_MAP_INFO body (`virtio_gpu_resp_map_info`, 32 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MapInfoResponse {
    /// Cache type and access bits.
    pub map_info: MapInfo,
    /// Padding as sent.
    pub padding: u32,
}

impl MapInfoResponse {
    /// Size on the wire, header included.
    pub const SIZE: usize = 32;
}

/// A decoded response body (what follows the control header).
// Display info is inline (384 bytes) so that matching on it needs no box; responses are few.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum ResponseBody {
    /// OK_NODATA.
    OkNodata,
    /// OK_DISPLAY_INFO.
    OkDisplayInfo(DisplayInfo),
    /// OK_CAPSET_INFO.
    OkCapsetInfo(CapsetInfo),
    /// OK_CAPSET: the capset data (every byte after the header).
    OkCapset(Vec<u8>),
    /// OK_EDID.
    OkEdid(Edid),
    /// OK_RESOURCE_UUID.
    OkResourceUuid([u8; 16]),
    /// OK_MAP_INFO.
    OkMapInfo(MapInfoResponse),
    /// OK_RESOURCE_PLANE_INFO (crosvm extension): every byte after the header.
    OkResourcePlaneInfo(Vec<u8>),
    /// Any error code (0x12xx); the code is in the header.
    Error,
    /// A code this version does not know: every byte after the header.
    Unknown(Vec<u8>),
}

impl ResponseBody {
    /// The code a response with this body is sent with; `None` for [`ResponseBody::Error`]
    /// and [`ResponseBody::Unknown`], whose code only the header knows.
    pub fn response_type(&self) -> Option<ResponseType> {
        Some(match self {
            ResponseBody::OkNodata => ResponseType::OK_NODATA,
            ResponseBody::OkDisplayInfo(_) => ResponseType::OK_DISPLAY_INFO,
            ResponseBody::OkCapsetInfo(_) => ResponseType::OK_CAPSET_INFO,
            ResponseBody::OkCapset(_) => ResponseType::OK_CAPSET,
            ResponseBody::OkEdid(_) => ResponseType::OK_EDID,
            ResponseBody::OkResourceUuid(_) => ResponseType::OK_RESOURCE_UUID,
            ResponseBody::OkMapInfo(_) => ResponseType::OK_MAP_INFO,
            ResponseBody::OkResourcePlaneInfo(_) => ResponseType::OK_RESOURCE_PLANE_INFO,
            ResponseBody::Error | ResponseBody::Unknown(_) => return None,
        })
    }
}

/// A whole virtio-gpu response as the device writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Response {
    /// The control header.
    pub header: CtrlHeader,
    /// The body, chosen by `header.type_`.
    pub body: ResponseBody,
    /// Bytes after the body, kept so that re-encoding gives the input back.
    pub trailing: Vec<u8>,
}

impl Response {
    /// Decodes a response. Unknown codes give [`ResponseBody::Unknown`]; a known body that
    /// does not fit gives [`DecodeError::TooShort`] (offset 0, needed = the size including the
    /// header).
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let header = CtrlHeader::decode(bytes)?;
        let b = bytes;
        let rest = || b.get(CtrlHeader::SIZE..).unwrap_or(&[]).to_vec();
        let ty = ResponseType(header.type_);
        let (body, used) = match ty {
            ResponseType::OK_NODATA => (ResponseBody::OkNodata, CtrlHeader::SIZE),
            ResponseType::OK_DISPLAY_INFO => {
                need(b, "virtio_gpu_resp_display_info", 0, DisplayInfo::SIZE)?;
                (
                    ResponseBody::OkDisplayInfo(DisplayInfo::read(b)),
                    DisplayInfo::SIZE,
                )
            }
            ResponseType::OK_CAPSET_INFO => {
                need(b, "virtio_gpu_resp_capset_info", 0, CapsetInfo::SIZE)?;
                let info = CapsetInfo {
                    capset_id: CapsetId(le32(b, 24)),
                    capset_max_version: le32(b, 28),
                    capset_max_size: le32(b, 32),
                    padding: le32(b, 36),
                };
                (ResponseBody::OkCapsetInfo(info), CapsetInfo::SIZE)
            }
            ResponseType::OK_CAPSET => (ResponseBody::OkCapset(rest()), b.len()),
            ResponseType::OK_EDID => {
                need(b, "virtio_gpu_resp_edid", 0, Edid::SIZE)?;
                let edid = Edid {
                    size: le32(b, 24),
                    padding: le32(b, 28),
                    edid: Box::new(arr(b, 32)),
                };
                (ResponseBody::OkEdid(edid), Edid::SIZE)
            }
            ResponseType::OK_RESOURCE_UUID => {
                need(b, "virtio_gpu_resp_resource_uuid", 0, 40)?;
                (ResponseBody::OkResourceUuid(arr(b, 24)), 40)
            }
            ResponseType::OK_MAP_INFO => {
                need(b, "virtio_gpu_resp_map_info", 0, MapInfoResponse::SIZE)?;
                let m = MapInfoResponse {
                    map_info: MapInfo(le32(b, 24)),
                    padding: le32(b, 28),
                };
                (ResponseBody::OkMapInfo(m), MapInfoResponse::SIZE)
            }
            ResponseType::OK_RESOURCE_PLANE_INFO => {
                (ResponseBody::OkResourcePlaneInfo(rest()), b.len())
            }
            t if t.is_error() => (ResponseBody::Error, CtrlHeader::SIZE),
            _ => (ResponseBody::Unknown(rest()), b.len()),
        };
        Ok(Response {
            header,
            body,
            trailing: b.get(used..).unwrap_or(&[]).to_vec(),
        })
    }

    /// The bytes of this response: header, body, trailing.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CtrlHeader::SIZE + 64 + self.trailing.len());
        self.header.encode_into(&mut out);
        match &self.body {
            ResponseBody::OkNodata | ResponseBody::Error => {}
            ResponseBody::OkDisplayInfo(d) => d.write(&mut out),
            ResponseBody::OkCapsetInfo(c) => {
                for v in [
                    c.capset_id.0,
                    c.capset_max_version,
                    c.capset_max_size,
                    c.padding,
                ] {
                    put32(&mut out, v);
                }
            }
            ResponseBody::OkCapset(data)
            | ResponseBody::OkResourcePlaneInfo(data)
            | ResponseBody::Unknown(data) => out.extend_from_slice(data),
            ResponseBody::OkEdid(e) => {
                put32(&mut out, e.size);
                put32(&mut out, e.padding);
                out.extend_from_slice(&e.edid[..]);
            }
            ResponseBody::OkResourceUuid(u) => out.extend_from_slice(u),
            ResponseBody::OkMapInfo(m) => {
                put32(&mut out, m.map_info.0);
                put32(&mut out, m.padding);
            }
        }
        out.extend_from_slice(&self.trailing);
        out
    }

    /// The response code from the header.
    pub fn response_type(&self) -> ResponseType {
        ResponseType(self.header.type_)
    }

    /// The header of a response to `req` with code `t`: when the request is fenced, the
    /// response echoes FLAG_FENCE, `fence_id` and `ctx_id`, and with FLAG_INFO_RING_IDX also
    /// that flag and `ring_idx` (as QEMU and crosvm do); otherwise everything but the code is 0.
    pub fn header_for(t: ResponseType, req: &CtrlHeader) -> CtrlHeader {
        let mut h = CtrlHeader::new(t.0);
        if req.is_fenced() {
            h.flags = req.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX);
            h.fence_id = req.fence_id;
            h.ctx_id = req.ctx_id;
            if req.has_ring_idx() {
                h.ring_idx = req.ring_idx;
            }
        }
        h
    }

    /// A response with `header` and `body` and no trailing bytes.
    pub fn new(header: CtrlHeader, body: ResponseBody) -> Response {
        Response {
            header,
            body,
            trailing: Vec::new(),
        }
    }

    /// OK_NODATA answering the request with header `hdr_from_request` (see [`Self::header_for`]).
    pub fn ok_nodata(hdr_from_request: &CtrlHeader) -> Response {
        Self::new(
            Self::header_for(ResponseType::OK_NODATA, hdr_from_request),
            ResponseBody::OkNodata,
        )
    }

    /// A success response carrying `body` answering the request with header `req`; the code
    /// comes from the body ([`ResponseBody::response_type`], UNDEFINED for bodies without one).
    pub fn ok(body: ResponseBody, req: &CtrlHeader) -> Response {
        let t = body.response_type().unwrap_or(ResponseType::UNDEFINED);
        Self::new(Self::header_for(t, req), body)
    }

    /// An error response of code `t` answering the request with header `req`.
    pub fn error(t: ResponseType, req: &CtrlHeader) -> Response {
        Self::new(Self::header_for(t, req), ResponseBody::Error)
    }
}

impl std::fmt::Display for Response {
    /// One line: the code, the interesting body fields, then fence/ctx/ring.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.response_type())?;
        match &self.body {
            ResponseBody::OkNodata | ResponseBody::Error => {}
            ResponseBody::OkDisplayInfo(d) => {
                for (i, p) in d.pmodes.iter().enumerate() {
                    if p.enabled != 0 {
                        write!(f, " {i}:{}", p.r)?;
                    }
                }
            }
            ResponseBody::OkCapsetInfo(c) => write!(
                f,
                " id={} max_version={} max_size={}",
                c.capset_id, c.capset_max_version, c.capset_max_size
            )?,
            ResponseBody::OkCapset(data) => write!(f, " len={}", data.len())?,
            ResponseBody::OkEdid(e) => write!(f, " size={}", e.size)?,
            ResponseBody::OkResourceUuid(u) => {
                f.write_str(" uuid=")?;
                for (i, byte) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
            }
            ResponseBody::OkMapInfo(m) => write!(f, " map_info={}", m.map_info)?,
            ResponseBody::OkResourcePlaneInfo(data) | ResponseBody::Unknown(data) => {
                write!(f, " len={}", data.len())?
            }
        }
        self.header.fmt_suffix(f)?;
        if !self.trailing.is_empty() {
            write!(f, " trailing={}", self.trailing.len())?;
        }
        Ok(())
    }
}
