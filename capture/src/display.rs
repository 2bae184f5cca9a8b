//! The display socket side: pixel format conversion and the byte layout of vhost-user-gpu
//! socket messages as the `vhost` crate's `GpuBackend` sends them (so that the GpuSocket records
//! hold exactly those bytes). The scanout pictures behind Frame records are
//! [`vgt_device::display::Framebuffers`], shared with replay.

/// vhost-user-gpu request codes (QEMU docs/interop/vhost-user-gpu.rst).
pub mod gpu_req {
    /// GET_PROTOCOL_FEATURES.
    pub const GET_PROTOCOL_FEATURES: u32 = 1;
    /// SET_PROTOCOL_FEATURES.
    pub const SET_PROTOCOL_FEATURES: u32 = 2;
    /// GET_DISPLAY_INFO.
    pub const GET_DISPLAY_INFO: u32 = 3;
    /// CURSOR_POS.
    pub const CURSOR_POS: u32 = 4;
    /// CURSOR_POS_HIDE.
    pub const CURSOR_POS_HIDE: u32 = 5;
    /// CURSOR_UPDATE.
    pub const CURSOR_UPDATE: u32 = 6;
    /// SCANOUT.
    pub const SCANOUT: u32 = 7;
    /// UPDATE.
    pub const UPDATE: u32 = 8;
    /// GET_EDID.
    pub const GET_EDID: u32 = 11;
    /// The REPLY header flag.
    pub const FLAG_REPLY: u32 = 0x4;
    /// Protocol feature bit: the front-end answers GET_EDID.
    pub const PROTOCOL_F_EDID: u64 = 1 << 0;
}

/// virtio-gpu format B8G8R8X8_UNORM: bytes B, G, R, X = pixman x8r8g8b8 on little-endian.
pub const FORMAT_B8G8R8X8: u32 = 2;

/// Converts one row of `format` pixels to B, G, R, X byte order (what QEMU's UPDATE expects).
/// Unknown formats are copied unchanged (all virtio-gpu formats are 4 bytes per pixel).
pub fn to_bgrx(format: u32, src: &[u8], dst: &mut [u8]) {
    // Byte positions of B, G, R and the fourth byte in the source pixel.
    let (b, g, r, a) = match format {
        1 | 2 => (0, 1, 2, 3),    // B8G8R8A8 / B8G8R8X8
        3 | 4 => (3, 2, 1, 0),    // A8R8G8B8 / X8R8G8B8
        67 | 134 => (2, 1, 0, 3), // R8G8B8A8 / R8G8B8X8
        68 | 121 => (1, 2, 3, 0), // X8B8G8R8 / A8B8G8R8
        _ => (0, 1, 2, 3),
    };
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
        d[0] = s[b];
        d[1] = s[g];
        d[2] = s[r];
        d[3] = s[a];
    }
}

/// A damaged rectangle's pixels, tightly packed (stride = width * 4) in B, G, R, X order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedUpdate {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub pixels: Vec<u8>,
}

/// Repacks device update pixels (`stride` bytes per row, `format`) into a tight BGRX rectangle.
/// Rows missing from `pixels` (a short buffer) are left black rather than read out of bounds.
pub fn pack_update(
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    format: u32,
    stride: u32,
    pixels: &[u8],
) -> PackedUpdate {
    let mut out = Vec::new();
    pack_update_into(&mut out, width, height, format, stride, pixels);
    PackedUpdate {
        x,
        y,
        width,
        height,
        pixels: out,
    }
}

/// [`pack_update`]'s pixels, written into `out` (cleared first; its allocation is reused).
pub fn pack_update_into(
    out: &mut Vec<u8>,
    width: u32,
    height: u32,
    format: u32,
    stride: u32,
    pixels: &[u8],
) {
    let row = width as usize * 4;
    out.clear();
    out.resize(row * height as usize, 0);
    for (i, dst) in out
        .chunks_exact_mut(row.max(1))
        .enumerate()
        .take(height as usize)
    {
        let start = i * stride as usize;
        if let Some(src) = pixels.get(start..start + row) {
            to_bgrx(format, src, dst);
        }
    }
}

/// Payload of a vhost-user-gpu message made of u32 fields.
pub fn u32_payload(fields: &[u32]) -> Vec<u8> {
    fields.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn to_bgrx_rgbx_swaps_red_and_blue() {
        let mut out = [0u8; 4];
        to_bgrx(134, &[1, 2, 3, 4], &mut out);
        assert_eq!(out, [3, 2, 1, 4]);
        to_bgrx(4, &[9, 1, 2, 3], &mut out);
        assert_eq!(out, [3, 2, 1, 9]);
    }

    #[test]
    fn pack_update_with_stride_drops_row_padding() {
        // 2x2 pixels with a 12-byte stride (4 bytes of padding per row).
        let src: Vec<u8> = (0..24).collect();
        let p = pack_update(0, 0, 2, 2, FORMAT_B8G8R8X8, 12, &src);
        assert_eq!(
            p.pixels,
            [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19]
        );
    }
}
