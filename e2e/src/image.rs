//! RGB images: QMP screendumps (binary PPM), capture frames (x8r8g8b8 as sent to QEMU), and the
//! patterns the test guest draws (the formulas atop `samples/guest/vgt-drm-test.c`).

use anyhow::{Context, Result, bail, ensure};

/// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl Rgb {
    /// An image whose pixel (x, y) is `f(x, y)`.
    pub fn from_fn(width: u32, height: u32, mut f: impl FnMut(u32, u32) -> [u8; 3]) -> Self {
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&f(x, y));
            }
        }
        Rgb {
            width,
            height,
            pixels,
        }
    }

    /// Parses a binary PPM (P6, maxval 255), the format of QMP `screendump`.
    pub fn from_ppm(data: &[u8]) -> Result<Self> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while fields.len() < 4 {
            while data.get(pos).is_some_and(u8::is_ascii_whitespace) {
                pos += 1;
            }
            if data.get(pos) == Some(&b'#') {
                while data.get(pos).is_some_and(|b| *b != b'\n') {
                    pos += 1;
                }
                continue;
            }
            let start = pos;
            while data.get(pos).is_some_and(|b| !b.is_ascii_whitespace()) {
                pos += 1;
            }
            ensure!(start < pos, "PPM header cut off at byte {pos}");
            fields.push(String::from_utf8_lossy(&data[start..pos]).into_owned());
        }
        pos += 1; // the one whitespace byte after maxval
        ensure!(
            fields[0] == "P6" && fields[3] == "255",
            "not an 8-bit binary PPM: magic {:?}, maxval {:?}",
            fields[0],
            fields[3]
        );
        let width: u32 = fields[1].parse().context("PPM width")?;
        let height: u32 = fields[2].parse().context("PPM height")?;
        let want = width as usize * height as usize * 3;
        let pixels = data.get(pos..).unwrap_or_default();
        ensure!(
            pixels.len() == want,
            "PPM {width}x{height} needs {want} bytes of pixels, found {}",
            pixels.len()
        );
        Ok(Rgb {
            width,
            height,
            pixels: pixels.to_vec(),
        })
    }

    /// Converts B, G, R, X pixels (virtio-gpu B8G8R8X8, pixman x8r8g8b8 on little-endian: what
    /// a capture's Frame records hold) with `stride` bytes per row.
    pub fn from_bgrx(width: u32, height: u32, stride: u32, data: &[u8]) -> Result<Self> {
        let row = width as usize * 4;
        ensure!(
            stride as usize >= row,
            "stride {stride} is less than {width} pixels of 4 bytes"
        );
        let need = (height as usize).saturating_sub(1) * stride as usize + row;
        ensure!(
            height == 0 || data.len() >= need,
            "{width}x{height} pixels with stride {stride} need {need} bytes, found {}",
            data.len()
        );
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height as usize {
            let start = y * stride as usize;
            for px in data[start..start + row].chunks_exact(4) {
                pixels.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        Ok(Rgb {
            width,
            height,
            pixels,
        })
    }

    /// Pixel (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// `Ok` when `self` equals `other` pixel for pixel; otherwise an error naming the sizes or
    /// the number of differing pixels and the first of them. `what` names the two images.
    pub fn check_equal(&self, other: &Rgb, what: &str) -> Result<()> {
        if (self.width, self.height) != (other.width, other.height) {
            bail!(
                "{what}: sizes differ: {}x{} vs {}x{}",
                self.width,
                self.height,
                other.width,
                other.height
            );
        }
        if self.pixels == other.pixels {
            return Ok(());
        }
        let mut bad = 0u64;
        let mut first = None;
        for y in 0..self.height {
            for x in 0..self.width {
                let (a, b) = (self.pixel(x, y), other.pixel(x, y));
                if a != b {
                    bad += 1;
                    first.get_or_insert((x, y, a, b));
                }
            }
        }
        let (x, y, a, b) = first.unwrap_or_default();
        bail!(
            "{what}: {bad} of {} pixels differ; first at ({x},{y}): {} vs {}",
            u64::from(self.width) * u64::from(self.height),
            hex(a),
            hex(b)
        )
    }
}

fn hex(p: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", p[0], p[1], p[2])
}

/// Frames the `fb` workload writes by default (`FB_FRAMES` in vgt-drm-test.c).
pub const FB_FRAMES: u32 = 50;

/// Frame `f` of the `fb` workload: R = (x + 4f) & 255, G = (y + 2f) & 255,
/// B = 255 when (x/32 + y/32 + f) is odd.
pub fn fb_frame(f: u32, width: u32, height: u32) -> Rgb {
    Rgb::from_fn(width, height, |x, y| {
        [
            (x.wrapping_add(4 * f) & 255) as u8,
            (y.wrapping_add(2 * f) & 255) as u8,
            if (x / 32 + y / 32 + f) & 1 == 1 {
                255
            } else {
                0
            },
        ]
    })
}

/// The DRM test buffer of `scanout`, `variant` (0 or 1): a gradient R = x*255/(w-1),
/// G = y*255/(h-1), B = 255 for variant 1, with scanout+1 white 32x32 squares at
/// x = 16 + 48k, y = 16.
pub fn drm_pattern(scanout: u32, variant: u32, width: u32, height: u32) -> Rgb {
    let wd = width.saturating_sub(1).max(1);
    let hd = height.saturating_sub(1).max(1);
    Rgb::from_fn(width, height, |x, y| {
        let square =
            (16..48).contains(&y) && x >= 16 && (x - 16) % 48 < 32 && (x - 16) / 48 <= scanout;
        if square {
            [255, 255, 255]
        } else {
            [
                (x * 255 / wd) as u8,
                (y * 255 / hd) as u8,
                if variant == 1 { 255 } else { 0 },
            ]
        }
    })
}

/// The 64x64 ARGB cursor image `c` (0 or 1) of the `cursor` workload as B, G, R, A bytes:
/// a white 2-pixel top/left border, the triangle x + y < 64 with R = 4x, G = 4y,
/// B = 128 (image 0) or 255 (image 1), the rest transparent.
pub fn cursor_image(c: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 64 * 4);
    for y in 0..64u32 {
        for x in 0..64u32 {
            let px = if x < 2 || y < 2 {
                [255, 255, 255, 255]
            } else if x + y < 64 {
                [
                    if c == 1 { 255 } else { 128 },
                    (4 * y) as u8,
                    (4 * x) as u8,
                    255,
                ]
            } else {
                [0, 0, 0, 0]
            };
            out.extend_from_slice(&px);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ppm_with_comment_parses_to_the_same_pixels() {
        let img = Rgb::from_fn(3, 2, |x, y| [x as u8, y as u8, 7]);
        let mut ppm = b"P6\n# made by a test\n3 2\n255\n".to_vec();
        ppm.extend_from_slice(&img.pixels);
        assert_eq!(Rgb::from_ppm(&ppm).unwrap(), img);
    }

    #[test]
    fn ppm_short_pixels_is_an_error() {
        let err = Rgb::from_ppm(b"P6 2 2 255\n\x00\x01").unwrap_err();
        assert!(err.to_string().contains("needs 12 bytes"), "{err}");
    }

    #[test]
    fn bgrx_with_padding_converts_to_rgb() {
        // 1x2 pixels, stride 8: B, G, R, X then 4 padding bytes per row.
        let data = [1, 2, 3, 0, 9, 9, 9, 9, 4, 5, 6, 0];
        let img = Rgb::from_bgrx(1, 2, 8, &data).unwrap();
        assert_eq!(img.pixels, [3, 2, 1, 6, 5, 4]);
    }

    #[test]
    fn check_equal_names_the_first_differing_pixel() {
        let a = drm_pattern(0, 0, 64, 64);
        let mut b = a.clone();
        b.pixels[(5 * 64 + 3) * 3] ^= 1;
        let err = a.check_equal(&b, "a vs b").unwrap_err().to_string();
        assert!(
            err.contains("1 of 4096 pixels differ; first at (3,5)"),
            "{err}"
        );
    }

    #[test]
    fn fb_frame_matches_the_documented_formula() {
        let f = fb_frame(49, 64, 40);
        // x=33, y=1: R = (33 + 196) & 255, G = (1 + 98), B: 33/32 + 0 + 49 = 50, even -> 0.
        assert_eq!(f.pixel(33, 1), [229, 99, 0]);
        assert_eq!(f.pixel(0, 0), [196, 98, 255]);
    }

    #[test]
    fn drm_pattern_has_one_square_per_scanout_plus_one() {
        let p = drm_pattern(1, 1, 200, 100);
        assert_eq!(p.pixel(16, 16), [255, 255, 255]);
        assert_eq!(p.pixel(64, 20), [255, 255, 255]);
        assert_ne!(p.pixel(112, 20), [255, 255, 255]);
        assert_eq!(p.pixel(199, 99), [255, 255, 255]);
        assert_eq!(p.pixel(0, 99), [0, 255, 255]);
    }
}
