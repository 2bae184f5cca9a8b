//! Pixel previews drawn with half-block characters: each terminal cell shows two pixels, the
//! upper one as the foreground of `▀` and the lower one as the background.

use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use vgt_format::wire::Format;

/// A preview of `height` rows of `width` pixels (`stride` bytes apart, in `format`), scaled by
/// nearest neighbour to at most `max_cols` cells by `max_rows` lines. Pixels missing from
/// `pixels` (a short buffer) are drawn black. Empty when the format is unknown or a size is 0.
pub fn half_blocks(
    pixels: &[u8],
    (width, height, stride): (u32, u32, u32),
    format: Format,
    (max_cols, max_rows): (u16, u16),
) -> Vec<Line<'static>> {
    if width == 0 || height == 0 || max_cols == 0 || max_rows == 0 {
        return Vec::new();
    }
    let Some(bpp) = format.bytes_per_pixel() else {
        return Vec::new();
    };
    // Keep the aspect ratio: a cell is one pixel wide and two pixels tall.
    let scale = f64::max(
        f64::from(width) / f64::from(max_cols),
        f64::from(height) / (2.0 * f64::from(max_rows)),
    )
    .max(1.0);
    let cols = ((f64::from(width) / scale) as u32).max(1);
    let rows = ((f64::from(height) / scale) as u32).max(1);
    let pixel = |x: u32, y: u32| -> Color {
        let sx = ((f64::from(x) * scale) as u32).min(width - 1);
        let sy = ((f64::from(y) * scale) as u32).min(height - 1);
        let off = u64::from(sy) * u64::from(stride) + u64::from(sx) * u64::from(bpp);
        let Ok(off) = usize::try_from(off) else {
            return Color::Black;
        };
        match pixels.get(off..off + 4) {
            Some(p) => match format.to_rgba([p[0], p[1], p[2], p[3]]) {
                Some([r, g, b, _]) => Color::Rgb(r, g, b),
                None => Color::Black,
            },
            None => Color::Black,
        }
    };
    (0..rows.div_ceil(2))
        .map(|line| {
            let spans: Vec<Span<'static>> = (0..cols)
                .map(|x| {
                    let top = pixel(x, line * 2);
                    let bottom = if line * 2 + 1 < rows {
                        pixel(x, line * 2 + 1)
                    } else {
                        Color::Reset
                    };
                    Span::styled("▀", Style::default().fg(top).bg(bottom))
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_by_two_pixels_become_two_cells_with_fg_top_and_bg_bottom() {
        // B8G8R8X8: bytes B, G, R, X.
        let px = [
            [0, 0, 255, 0], // red
            [0, 255, 0, 0], // green
            [255, 0, 0, 0], // blue
            [255, 255, 255, 0],
        ]
        .concat();
        let lines = half_blocks(&px, (2, 2, 8), Format::B8G8R8X8_UNORM, (10, 10));
        assert_eq!(lines.len(), 1);
        let spans = &lines[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].style.fg, Some(Color::Rgb(255, 0, 0)));
        assert_eq!(spans[0].style.bg, Some(Color::Rgb(0, 0, 255)));
        assert_eq!(spans[1].style.fg, Some(Color::Rgb(0, 255, 0)));
        assert_eq!(spans[1].style.bg, Some(Color::Rgb(255, 255, 255)));
    }

    #[test]
    fn large_images_scale_down_and_short_buffers_draw_black() {
        let lines = half_blocks(
            &[0u8; 16],
            (1000, 500, 4000),
            Format::B8G8R8X8_UNORM,
            (20, 5),
        );
        assert_eq!(lines.len(), 5);
        assert!(lines.iter().all(|l| l.spans.len() == 20));
        assert!(half_blocks(&[], (4, 4, 16), Format(999), (4, 4)).is_empty());
    }
}
