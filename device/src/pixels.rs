//! Pixel conversion to pixman x8r8g8b8 / a8r8g8b8 (memory bytes B, G, R, X/A), what QEMU wants.

use vgt_format::wire::Format;

/// Rewrites tightly packed 4-byte pixels of `format` in place as B, G, R, A/X bytes. The fourth
/// byte keeps the source's alpha or X byte. B8G8R8A8/B8G8R8X8 are already in that order and
/// cost nothing. Unknown formats are left as they are (the device refuses them earlier).
/// True when `format`'s bytes are already in B, G, R, X/A order: [`to_bgra_in_place`] leaves
/// them as they are.
pub(crate) fn is_bgrx_order(format: Format) -> bool {
    format.channel_order().is_some_and(|([r, g, b], a)| {
        let a = a.unwrap_or(6 - r - g - b);
        [b, g, r, a] == [0, 1, 2, 3]
    })
}

pub(crate) fn to_bgra_in_place(format: Format, pixels: &mut [u8]) {
    let Some(([r, g, b], a)) = format.channel_order() else {
        return;
    };
    // The fourth byte: alpha, or for X formats the index not used by R, G, B.
    let a = a.unwrap_or(6 - r - g - b);
    if [b, g, r, a] == [0, 1, 2, 3] {
        return;
    }
    for px in pixels.chunks_exact_mut(4) {
        let src = [px[0], px[1], px[2], px[3]];
        px[0] = src[b];
        px[1] = src[g];
        px[2] = src[r];
        px[3] = src[a];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(format: Format, input: [u8; 4], expected: [u8; 4]) {
        let mut px = input;
        to_bgra_in_place(format, &mut px);
        assert_eq!(px, expected, "{format}");
    }

    #[test]
    fn every_format_converts_to_bgra_order() {
        // Red 0x11, green 0x22, blue 0x33, alpha/X 0x44, laid out per format's byte order.
        check(
            Format::B8G8R8A8_UNORM,
            [0x33, 0x22, 0x11, 0x44],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::B8G8R8X8_UNORM,
            [0x33, 0x22, 0x11, 0x44],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::A8R8G8B8_UNORM,
            [0x44, 0x11, 0x22, 0x33],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::X8R8G8B8_UNORM,
            [0x44, 0x11, 0x22, 0x33],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::R8G8B8A8_UNORM,
            [0x11, 0x22, 0x33, 0x44],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::R8G8B8X8_UNORM,
            [0x11, 0x22, 0x33, 0x44],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::X8B8G8R8_UNORM,
            [0x44, 0x33, 0x22, 0x11],
            [0x33, 0x22, 0x11, 0x44],
        );
        check(
            Format::A8B8G8R8_UNORM,
            [0x44, 0x33, 0x22, 0x11],
            [0x33, 0x22, 0x11, 0x44],
        );
    }
}
