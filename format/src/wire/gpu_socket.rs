//! The vhost-user-gpu display socket (QEMU `vhost-user-gpu.rst`): request codes, payloads,
//! and message framing.
//!
//! Requests come from the back-end; QEMU answers some of them. Display info and EDID replies
//! carry the virtio-gpu response structs and decode to [`Response`].

use serde::Serialize;

use super::DecodeError;
use super::bytes::{exact, le32, le64, need, put32, put64};
use super::header::code_type;
use super::response::Response;

code_type! {
    /// A vhost-user-gpu socket request code.
    GpuSocketRequest, "GPU_SOCKET_REQUEST" {
        /// Ask for protocol features (reply u64).
        GET_PROTOCOL_FEATURES = 1,
        /// Set protocol features (u64).
        SET_PROTOCOL_FEATURES = 2,
        /// Ask for display info (reply `virtio_gpu_resp_display_info`).
        GET_DISPLAY_INFO = 3,
        /// Show the cursor at a position.
        CURSOR_POS = 4,
        /// Hide the cursor.
        CURSOR_POS_HIDE = 5,
        /// Cursor shape, hotspot and position.
        CURSOR_UPDATE = 6,
        /// Set up a scanout surface (0×0 disables).
        SCANOUT = 7,
        /// Pixels for part of a scanout.
        UPDATE = 8,
        /// Show a dmabuf on a scanout.
        DMABUF_SCANOUT = 9,
        /// A dmabuf scanout changed (empty reply once presented).
        DMABUF_UPDATE = 10,
        /// Ask for a scanout's EDID (reply `virtio_gpu_resp_edid`).
        GET_EDID = 11,
        /// Show a dmabuf with a format modifier.
        DMABUF_SCANOUT2 = 12,
    }
}

/// Size of the socket message header (request, flags, size).
pub const HEADER_SIZE: usize = 12;
/// Header flag set on replies.
pub const FLAG_REPLY: u32 = 0x4;
/// Protocol feature bit 0: GET_EDID supported.
pub const PROTOCOL_F_EDID: u64 = 1 << 0;
/// Protocol feature bit 1: DMABUF_SCANOUT2 supported.
pub const PROTOCOL_F_DMABUF2: u64 = 1 << 1;
/// Bytes of a cursor image (64×64 ARGB).
pub const CURSOR_IMAGE_SIZE: usize = 64 * 64 * 4;

/// `VhostUserGpuCursorPos` (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct GpuCursorPos {
    /// Scanout.
    pub scanout_id: u32,
    /// Horizontal position.
    pub x: u32,
    /// Vertical position.
    pub y: u32,
}

impl GpuCursorPos {
    /// Size on the wire.
    pub const SIZE: usize = 12;

    fn read(b: &[u8]) -> Self {
        GpuCursorPos {
            scanout_id: le32(b, 0),
            x: le32(b, 4),
            y: le32(b, 8),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for v in [self.scanout_id, self.x, self.y] {
            put32(out, v);
        }
    }
}

/// `VhostUserGpuCursorUpdate` (16404 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct GpuCursorUpdate {
    /// Position.
    pub pos: GpuCursorPos,
    /// Hotspot x.
    pub hot_x: u32,
    /// Hotspot y.
    pub hot_y: u32,
    /// 64×64 pixels, pixman a8r8g8b8 ([`CURSOR_IMAGE_SIZE`] bytes after a successful decode).
    pub data: Vec<u8>,
}

impl GpuCursorUpdate {
    /// Size on the wire.
    pub const SIZE: usize = GpuCursorPos::SIZE + 8 + CURSOR_IMAGE_SIZE;
}

/// `VhostUserGpuScanout` (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct GpuScanout {
    /// Scanout.
    pub scanout_id: u32,
    /// Width (0 disables).
    pub width: u32,
    /// Height (0 disables).
    pub height: u32,
}

/// `VhostUserGpuUpdate` (20 bytes) followed by pixels (UPDATE) or nothing (DMABUF_UPDATE).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct GpuUpdate {
    /// Scanout.
    pub scanout_id: u32,
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Pixels, pixman x8r8g8b8, stride width × 4 (empty for DMABUF_UPDATE).
    pub data: Vec<u8>,
}

impl GpuUpdate {
    /// Size of the header part on the wire.
    pub const HEADER_SIZE: usize = 20;
}

/// `VhostUserGpuDMABUFScanout` (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DmabufScanout {
    /// Scanout.
    pub scanout_id: u32,
    /// Left of the shown rectangle.
    pub x: u32,
    /// Top of the shown rectangle.
    pub y: u32,
    /// Width of the shown rectangle.
    pub width: u32,
    /// Height of the shown rectangle.
    pub height: u32,
    /// Width of the dmabuf.
    pub fd_width: u32,
    /// Height of the dmabuf.
    pub fd_height: u32,
    /// Bytes per row of the dmabuf.
    pub fd_stride: u32,
    /// Bit 0: Y_0_TOP.
    pub fd_flags: u32,
    /// DRM fourcc.
    pub fd_drm_fourcc: i32,
}

impl DmabufScanout {
    /// Size on the wire.
    pub const SIZE: usize = 40;

    fn read(b: &[u8]) -> Self {
        let w = |i: usize| le32(b, 4 * i);
        DmabufScanout {
            scanout_id: w(0),
            x: w(1),
            y: w(2),
            width: w(3),
            height: w(4),
            fd_width: w(5),
            fd_height: w(6),
            fd_stride: w(7),
            fd_flags: w(8),
            fd_drm_fourcc: w(9) as i32,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for v in [
            self.scanout_id,
            self.x,
            self.y,
            self.width,
            self.height,
            self.fd_width,
            self.fd_height,
            self.fd_stride,
            self.fd_flags,
            self.fd_drm_fourcc as u32,
        ] {
            put32(out, v);
        }
    }
}

/// `VhostUserGpuDMABUFScanout2` (48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DmabufScanout2 {
    /// The DMABUF_SCANOUT fields.
    pub dmabuf_scanout: DmabufScanout,
    /// DRM format modifier.
    pub modifier: u64,
}

impl DmabufScanout2 {
    /// Size on the wire.
    pub const SIZE: usize = 48;
}

/// A decoded vhost-user-gpu socket payload.
// Replies hold a whole `Response` inline; display socket messages are few.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum GpuSocketPayload {
    /// No payload (requests without one, DMABUF_UPDATE's reply, a disabling DMABUF_SCANOUT).
    Empty,
    /// Protocol feature bits ([`PROTOCOL_F_EDID`], [`PROTOCOL_F_DMABUF2`]).
    ProtocolFeatures(u64),
    /// CURSOR_POS / CURSOR_POS_HIDE.
    CursorPos(GpuCursorPos),
    /// CURSOR_UPDATE.
    CursorUpdate(GpuCursorUpdate),
    /// SCANOUT.
    Scanout(GpuScanout),
    /// UPDATE (with pixels) or DMABUF_UPDATE (without).
    Update(GpuUpdate),
    /// DMABUF_SCANOUT.
    DmabufScanout(DmabufScanout),
    /// DMABUF_SCANOUT2.
    DmabufScanout2(DmabufScanout2),
    /// GET_EDID request: the scanout.
    EdidRequest(u32),
    /// GET_DISPLAY_INFO / GET_EDID reply: a virtio-gpu response struct.
    Reply(Response),
    /// A payload this version does not decode.
    Raw(Vec<u8>),
}

/// Decodes a display socket payload of request `req`; `is_reply` for QEMU's answers.
/// Fixed-size payloads must have exactly their size; unknown codes give
/// [`GpuSocketPayload::Raw`].
pub fn decode_gpu_socket_payload(
    req: GpuSocketRequest,
    is_reply: bool,
    payload: &[u8],
) -> Result<GpuSocketPayload, DecodeError> {
    use GpuSocketPayload as P;
    use GpuSocketRequest as R;
    let b = payload;
    if b.is_empty() {
        return Ok(P::Empty);
    }
    Ok(match (req, is_reply) {
        (R::GET_PROTOCOL_FEATURES, true) | (R::SET_PROTOCOL_FEATURES, false) => {
            exact(b, "protocol features", 8)?;
            P::ProtocolFeatures(le64(b, 0))
        }
        (R::GET_DISPLAY_INFO | R::GET_EDID, true) => P::Reply(Response::decode(b)?),
        (R::CURSOR_POS | R::CURSOR_POS_HIDE, false) => {
            exact(b, "VhostUserGpuCursorPos", GpuCursorPos::SIZE)?;
            P::CursorPos(GpuCursorPos::read(b))
        }
        (R::CURSOR_UPDATE, false) => {
            exact(b, "VhostUserGpuCursorUpdate", GpuCursorUpdate::SIZE)?;
            P::CursorUpdate(GpuCursorUpdate {
                pos: GpuCursorPos::read(b),
                hot_x: le32(b, 12),
                hot_y: le32(b, 16),
                data: b.get(20..).unwrap_or(&[]).to_vec(),
            })
        }
        (R::SCANOUT, false) => {
            exact(b, "VhostUserGpuScanout", 12)?;
            P::Scanout(GpuScanout {
                scanout_id: le32(b, 0),
                width: le32(b, 4),
                height: le32(b, 8),
            })
        }
        (R::UPDATE | R::DMABUF_UPDATE, false) => {
            need(b, "VhostUserGpuUpdate", 0, GpuUpdate::HEADER_SIZE)?;
            if req == R::DMABUF_UPDATE {
                exact(b, "VhostUserGpuUpdate", GpuUpdate::HEADER_SIZE)?;
            }
            P::Update(GpuUpdate {
                scanout_id: le32(b, 0),
                x: le32(b, 4),
                y: le32(b, 8),
                width: le32(b, 12),
                height: le32(b, 16),
                data: b.get(GpuUpdate::HEADER_SIZE..).unwrap_or(&[]).to_vec(),
            })
        }
        (R::DMABUF_SCANOUT, false) => {
            exact(b, "VhostUserGpuDMABUFScanout", DmabufScanout::SIZE)?;
            P::DmabufScanout(DmabufScanout::read(b))
        }
        (R::DMABUF_SCANOUT2, false) => {
            exact(b, "VhostUserGpuDMABUFScanout2", DmabufScanout2::SIZE)?;
            P::DmabufScanout2(DmabufScanout2 {
                dmabuf_scanout: DmabufScanout::read(b),
                modifier: le64(b, 40),
            })
        }
        (R::GET_EDID, false) => {
            exact(b, "VhostUserGpuEdidRequest", 4)?;
            P::EdidRequest(le32(b, 0))
        }
        _ => P::Raw(b.to_vec()),
    })
}

impl GpuSocketPayload {
    /// The payload bytes (inverse of [`decode_gpu_socket_payload`]).
    pub fn encode(&self) -> Vec<u8> {
        use GpuSocketPayload as P;
        let mut out = Vec::new();
        match self {
            P::Empty => {}
            P::ProtocolFeatures(v) => put64(&mut out, *v),
            P::CursorPos(p) => p.write(&mut out),
            P::CursorUpdate(c) => {
                c.pos.write(&mut out);
                put32(&mut out, c.hot_x);
                put32(&mut out, c.hot_y);
                out.extend_from_slice(&c.data);
            }
            P::Scanout(s) => {
                for v in [s.scanout_id, s.width, s.height] {
                    put32(&mut out, v);
                }
            }
            P::Update(u) => {
                for v in [u.scanout_id, u.x, u.y, u.width, u.height] {
                    put32(&mut out, v);
                }
                out.extend_from_slice(&u.data);
            }
            P::DmabufScanout(d) => d.write(&mut out),
            P::DmabufScanout2(d) => {
                d.dmabuf_scanout.write(&mut out);
                put64(&mut out, d.modifier);
            }
            P::EdidRequest(s) => put32(&mut out, *s),
            P::Reply(r) => out = r.encode(),
            P::Raw(b) => out.extend_from_slice(b),
        }
        out
    }
}

impl std::fmt::Display for GpuSocketPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use GpuSocketPayload as P;
        match self {
            P::Empty => Ok(()),
            P::ProtocolFeatures(v) => {
                write!(f, "{v:#x}")?;
                if v & PROTOCOL_F_EDID != 0 {
                    f.write_str(" EDID")?;
                }
                if v & PROTOCOL_F_DMABUF2 != 0 {
                    f.write_str(" DMABUF2")?;
                }
                Ok(())
            }
            P::CursorPos(p) => write!(f, "scanout={} pos={},{}", p.scanout_id, p.x, p.y),
            P::CursorUpdate(c) => write!(
                f,
                "scanout={} pos={},{} hot={},{}",
                c.pos.scanout_id, c.pos.x, c.pos.y, c.hot_x, c.hot_y
            ),
            P::Scanout(s) => write!(f, "scanout={} {}x{}", s.scanout_id, s.width, s.height),
            P::Update(u) => write!(
                f,
                "scanout={} rect={},{} {}x{} bytes={}",
                u.scanout_id,
                u.x,
                u.y,
                u.width,
                u.height,
                u.data.len()
            ),
            P::DmabufScanout(d) => fmt_dmabuf(f, d),
            P::DmabufScanout2(d) => {
                fmt_dmabuf(f, &d.dmabuf_scanout)?;
                write!(f, " modifier={:#x}", d.modifier)
            }
            P::EdidRequest(s) => write!(f, "scanout={s}"),
            P::Reply(r) => write!(f, "{r}"),
            P::Raw(b) => write!(f, "raw len={}", b.len()),
        }
    }
}

fn fmt_dmabuf(f: &mut std::fmt::Formatter<'_>, d: &DmabufScanout) -> std::fmt::Result {
    let fourcc: String = (d.fd_drm_fourcc as u32)
        .to_le_bytes()
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    write!(
        f,
        "scanout={} rect={},{} {}x{} fd={}x{} stride={} flags={:#x} fourcc={fourcc}",
        d.scanout_id, d.x, d.y, d.width, d.height, d.fd_width, d.fd_height, d.fd_stride, d.fd_flags
    )
}

/// Frames a display socket message: the 12-byte header (request, flags, payload size) followed
/// by `payload`. Payloads longer than `u32::MAX` bytes cannot be framed; their size field
/// saturates at `u32::MAX`.
pub fn encode_gpu_socket_message(req: GpuSocketRequest, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    put32(&mut out, req.0);
    put32(&mut out, flags);
    put32(&mut out, u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(payload);
    out
}

/// The header of a display socket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct GpuSocketHeader {
    /// Request code.
    pub request: GpuSocketRequest,
    /// Flags ([`FLAG_REPLY`]).
    pub flags: u32,
    /// Payload size.
    pub size: u32,
}

impl GpuSocketHeader {
    /// Decodes the 12-byte header at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(b, "VhostUserGpuMsg header", 0, HEADER_SIZE)?;
        Ok(GpuSocketHeader {
            request: GpuSocketRequest(le32(b, 0)),
            flags: le32(b, 4),
            size: le32(b, 8),
        })
    }

    /// True when [`FLAG_REPLY`] is set.
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
}
