//! EDID 1.4 base blocks for virtual displays (answers to GET_EDID).
//!
//! [`edid_for_mode`] builds a 128-byte base block with one detailed timing descriptor for the
//! mode (CVT reduced-blanking style timings) and a monitor name; [`parse_detailed_timing`]
//! reads such a descriptor back.

use serde::Serialize;

/// The fixed 8-byte EDID header.
pub const HEADER: [u8; 8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
/// Three-letter PNP manufacturer id written into the block.
pub const MANUFACTURER: &str = "VGT";
/// Monitor name written into the name descriptor.
pub const MONITOR_NAME: &str = "vgt";
/// Largest active width or height a detailed timing descriptor can hold.
pub const MAX_ACTIVE: u32 = 4095;

/// Offset of the first (preferred) detailed timing descriptor.
pub const DTD_OFFSET: usize = 54;

/// The timing fields of an 18-byte detailed timing descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DetailedTiming {
    /// Pixel clock in kHz (stored in units of 10 kHz).
    pub pixel_clock_khz: u32,
    /// Active pixels per line.
    pub h_active: u32,
    /// Blanking pixels per line.
    pub h_blank: u32,
    /// Active lines.
    pub v_active: u32,
    /// Blanking lines.
    pub v_blank: u32,
    /// Horizontal front porch.
    pub h_front: u32,
    /// Horizontal sync width.
    pub h_sync: u32,
    /// Vertical front porch.
    pub v_front: u32,
    /// Vertical sync width.
    pub v_sync: u32,
    /// Image width in mm.
    pub width_mm: u32,
    /// Image height in mm.
    pub height_mm: u32,
}

impl DetailedTiming {
    /// Refresh rate in mHz (pixel clock / total pixels), 0 when the totals are 0.
    pub fn refresh_millihz(&self) -> u64 {
        let total =
            u64::from(self.h_active + self.h_blank) * u64::from(self.v_active + self.v_blank);
        (u64::from(self.pixel_clock_khz) * 1_000_000)
            .checked_div(total)
            .unwrap_or(0)
    }
}

/// Reads an 18-byte detailed timing descriptor; `None` when `d` is shorter than 18 bytes or
/// holds a display descriptor (pixel clock 0) instead.
pub fn parse_detailed_timing(d: &[u8]) -> Option<DetailedTiming> {
    let d: &[u8; 18] = d.get(..18)?.try_into().ok()?;
    let clock = u32::from(u16::from_le_bytes([d[0], d[1]]));
    if clock == 0 {
        return None;
    }
    let lo = |i: usize| u32::from(d[i]);
    let hi4 = |i: usize, shift: u32| (u32::from(d[i]) >> shift) & 0xf;
    let two = |shift: u32| (u32::from(d[11]) >> shift) & 0x3;
    Some(DetailedTiming {
        pixel_clock_khz: clock * 10,
        h_active: lo(2) | hi4(4, 4) << 8,
        h_blank: lo(3) | hi4(4, 0) << 8,
        v_active: lo(5) | hi4(7, 4) << 8,
        v_blank: lo(6) | hi4(7, 0) << 8,
        h_front: lo(8) | two(6) << 8,
        h_sync: lo(9) | two(4) << 8,
        v_front: (lo(10) >> 4) | two(2) << 4,
        v_sync: (lo(10) & 0xf) | two(0) << 4,
        width_mm: lo(12) | hi4(14, 4) << 8,
        height_mm: lo(13) | hi4(14, 0) << 8,
    })
}

/// Timings for `width`×`height` at `refresh_hz` in the style of CVT reduced blanking: 160
/// pixels of horizontal blanking and at least 460 µs of vertical blanking. Inputs are clamped
/// to what a descriptor can hold (1..=4095 pixels, 1..=240 Hz, pixel clock ≤ 655.35 MHz; a
/// mode beyond that clock gets the highest clock and so a lower refresh).
pub fn timing_for_mode(width: u32, height: u32, refresh_hz: u32) -> DetailedTiming {
    let w = width.clamp(1, MAX_ACTIVE);
    let h = height.clamp(1, MAX_ACTIVE);
    let hz = u64::from(refresh_hz.clamp(1, 240));
    let (h_blank, h_front, h_sync) = (160u32, 48u32, 32u32);
    let (v_front, v_sync) = (3u32, 6u32);
    // vblank / (vactive + vblank) >= 460 us * refresh  =>  vblank >= h * t / (1 - t).
    let t_num = 460 * hz; // in millionths
    let min_vblank = (u64::from(h) * t_num).div_ceil(1_000_000 - t_num);
    let v_blank = (min_vblank as u32).clamp(v_front + v_sync + 6, 4095);
    let total = u64::from(w + h_blank) * u64::from(h + v_blank);
    let clock_10khz = (total * hz).div_ceil(10_000).clamp(1, 65_535) as u32;
    // 96 dpi physical size.
    let mm = |px: u32| (px * 254).div_ceil(960).min(4095);
    DetailedTiming {
        pixel_clock_khz: clock_10khz * 10,
        h_active: w,
        h_blank,
        v_active: h,
        v_blank,
        h_front,
        h_sync,
        v_front,
        v_sync,
        width_mm: mm(w),
        height_mm: mm(h),
    }
}

fn write_dtd(t: &DetailedTiming) -> [u8; 18] {
    let b = |v: u32| (v & 0xff) as u8;
    let clock = t.pixel_clock_khz / 10;
    [
        b(clock),
        b(clock >> 8),
        b(t.h_active),
        b(t.h_blank),
        b(((t.h_active >> 8) & 0xf) << 4 | ((t.h_blank >> 8) & 0xf)),
        b(t.v_active),
        b(t.v_blank),
        b(((t.v_active >> 8) & 0xf) << 4 | ((t.v_blank >> 8) & 0xf)),
        b(t.h_front),
        b(t.h_sync),
        b((t.v_front & 0xf) << 4 | (t.v_sync & 0xf)),
        b(((t.h_front >> 8) & 3) << 6
            | ((t.h_sync >> 8) & 3) << 4
            | ((t.v_front >> 4) & 3) << 2
            | ((t.v_sync >> 4) & 3)),
        b(t.width_mm),
        b(t.height_mm),
        b(((t.width_mm >> 8) & 0xf) << 4 | ((t.height_mm >> 8) & 0xf)),
        0,
        0,
        // Non-interlaced, digital separate sync, +hsync -vsync (as CVT-RB).
        0x1a,
    ]
}

/// A chromaticity coordinate as EDID's 10-bit fraction of 1024.
const fn chroma(milli: u32) -> u32 {
    (milli * 1024 + 500) / 1000
}

/// Builds an EDID 1.4 base block for one `width`×`height`@`refresh_hz` mode (see
/// [`timing_for_mode`] for clamping): header, manufacturer "VGT", `serial`, digital 8-bit
/// input, sRGB chromaticity, the mode as preferred detailed timing, monitor name "vgt", no
/// extensions, and a checksum making the bytes sum to 0 mod 256.
pub fn edid_for_mode(width: u32, height: u32, refresh_hz: u32, serial: u32) -> [u8; 128] {
    let mut e = [0u8; 128];
    e[..8].copy_from_slice(&HEADER);
    let id = MANUFACTURER
        .bytes()
        .fold(0u16, |acc, c| (acc << 5) | u16::from(c - b'A' + 1));
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes()); // product code
    e[12..16].copy_from_slice(&serial.to_le_bytes());
    e[16] = 1; // week
    e[17] = 36; // year of manufacture - 1990 = 2026
    e[18] = 1; // EDID version 1.4
    e[19] = 4;
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
    let t = timing_for_mode(width, height, refresh_hz);
    e[21] = (t.width_mm / 10).clamp(1, 255) as u8;
    e[22] = (t.height_mm / 10).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // RGB 4:4:4, sRGB default, preferred timing is native
    // sRGB primaries and D65 white: red, green, blue, white (x, y) in thousandths.
    let c = [
        chroma(640),
        chroma(330),
        chroma(300),
        chroma(600),
        chroma(150),
        chroma(60),
        chroma(313),
        chroma(329),
    ];
    let low = |i: usize, shift: u32| ((c[i] & 3) << shift) as u8;
    e[25] = low(0, 6) | low(1, 4) | low(2, 2) | low(3, 0);
    e[26] = low(4, 6) | low(5, 4) | low(6, 2) | low(7, 0);
    for (i, v) in c.iter().enumerate() {
        e[27 + i] = (v >> 2) as u8;
    }
    // 35..38: no established timings. 38..54: standard timings unused.
    e[38..54].fill(0x01);
    e[DTD_OFFSET..DTD_OFFSET + 18].copy_from_slice(&write_dtd(&t));
    // Monitor name descriptor.
    let mut name = [0u8; 18];
    name[3] = 0xfc;
    let text = &mut name[5..];
    text.fill(b' ');
    text[..MONITOR_NAME.len()].copy_from_slice(MONITOR_NAME.as_bytes());
    text[MONITOR_NAME.len()] = b'\n';
    e[72..90].copy_from_slice(&name);
    // Two dummy descriptors.
    for off in [90, 108] {
        e[off + 3] = 0x10;
    }
    e[126] = 0; // extensions
    let sum = e[..127].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}
