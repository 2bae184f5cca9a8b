//! Frames and cursors as images: PNG encoding of virtio-gpu pixel buffers in any of the eight
//! formats, and the file names vgt's tools give them (`png` feature). vgt-replay writes the
//! frames it replays with these, vgt-inspect the frames and cursor images a capture recorded,
//! so that the two directories compare file by file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::record::RecordId;
use crate::wire::Format;

/// Why a frame could not be written as a PNG.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PngError {
    /// The format code is not one of the eight virtio-gpu formats.
    #[error("format {format} is not a virtio-gpu pixel format")]
    UnknownFormat {
        /// The format code.
        format: u32,
    },
    /// The buffer is smaller than `stride * height`, or the stride is below `width * 4`.
    #[error(
        "a {width}x{height} frame with stride {stride} needs {needed} bytes, the buffer has {found}"
    )]
    ShortBuffer {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per row.
        stride: u32,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        found: u64,
    },
    /// The file could not be created or written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The PNG encoder refused.
    #[error("encoding {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: png::EncodingError,
    },
}

/// The file name of a frame: `frame-RECORD-sSCANOUT.png`, record zero-padded to six digits.
pub fn frame_file_name(record: RecordId, scanout_id: u32) -> String {
    format!("frame-{record:06}-s{scanout_id}.png")
}

/// The file name of a cursor image: `cursor-RECORD-sSCANOUT.png`, record zero-padded to six
/// digits.
pub fn cursor_file_name(record: RecordId, scanout_id: u32) -> String {
    format!("cursor-{record:06}-s{scanout_id}.png")
}

/// Side of the square cursor image a CURSOR_UPDATE carries, in pixels.
pub const CURSOR_SIZE: u32 = 64;

/// The format of a cursor image as recorded (QEMU's 32-bit ARGB, little-endian in memory: the
/// guest's B8G8R8A8 cursor resource).
pub const CURSOR_FORMAT: Format = Format::B8G8R8A8_UNORM;

/// Converts `height` rows of `format` pixels (`stride` bytes apart) to tightly packed RGBA
/// (X formats get an opaque alpha).
pub fn to_rgba(
    format: Format,
    width: u32,
    height: u32,
    stride: u32,
    pixels: &[u8],
) -> Result<Vec<u8>, PngError> {
    if format.channel_order().is_none() {
        return Err(PngError::UnknownFormat { format: format.0 });
    }
    let row = u64::from(width) * 4;
    let needed = if height == 0 {
        0
    } else {
        u64::from(stride) * u64::from(height - 1) + row
    };
    if u64::from(stride) < row || (pixels.len() as u64) < needed {
        return Err(PngError::ShortBuffer {
            width,
            height,
            stride,
            needed: needed.max(row * u64::from(height)),
            found: pixels.len() as u64,
        });
    }
    let mut out = Vec::with_capacity((row * u64::from(height)) as usize);
    for y in 0..height as usize {
        let start = y * stride as usize;
        for px in pixels[start..start + row as usize].chunks_exact(4) {
            let rgba = format
                .to_rgba([px[0], px[1], px[2], px[3]])
                .unwrap_or([0, 0, 0, 255]);
            out.extend_from_slice(&rgba);
        }
    }
    Ok(out)
}

/// Encodes a frame as an 8-bit RGBA PNG into `out`.
pub fn encode_png(
    out: impl Write,
    format: Format,
    width: u32,
    height: u32,
    stride: u32,
    pixels: &[u8],
    path_for_errors: &Path,
) -> Result<(), PngError> {
    let rgba = to_rgba(format, width, height, stride, pixels)?;
    let encode = |source| PngError::Encode {
        path: path_for_errors.to_owned(),
        source,
    };
    let mut enc = png::Encoder::new(out, width, height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().map_err(encode)?;
    w.write_image_data(&rgba).map_err(encode)?;
    w.finish().map_err(encode)
}

/// Writes a frame as an RGBA PNG file at `path`.
pub fn write_png(
    path: &Path,
    format: Format,
    width: u32,
    height: u32,
    stride: u32,
    pixels: &[u8],
) -> Result<(), PngError> {
    let file = std::fs::File::create(path).map_err(|source| PngError::Io {
        path: path.to_owned(),
        source,
    })?;
    encode_png(
        std::io::BufWriter::new(file),
        format,
        width,
        height,
        stride,
        pixels,
        path,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgba);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn every_format_encodes_to_the_right_rgba() {
        // Red 0x11, green 0x22, blue 0x33, alpha/X 0x44 laid out per format.
        let cases: [(Format, [u8; 4], [u8; 4]); 8] = [
            (
                Format::B8G8R8A8_UNORM,
                [0x33, 0x22, 0x11, 0x44],
                [0x11, 0x22, 0x33, 0x44],
            ),
            (
                Format::B8G8R8X8_UNORM,
                [0x33, 0x22, 0x11, 0x44],
                [0x11, 0x22, 0x33, 0xff],
            ),
            (
                Format::A8R8G8B8_UNORM,
                [0x44, 0x11, 0x22, 0x33],
                [0x11, 0x22, 0x33, 0x44],
            ),
            (
                Format::X8R8G8B8_UNORM,
                [0x44, 0x11, 0x22, 0x33],
                [0x11, 0x22, 0x33, 0xff],
            ),
            (
                Format::R8G8B8A8_UNORM,
                [0x11, 0x22, 0x33, 0x44],
                [0x11, 0x22, 0x33, 0x44],
            ),
            (
                Format::X8B8G8R8_UNORM,
                [0x44, 0x33, 0x22, 0x11],
                [0x11, 0x22, 0x33, 0xff],
            ),
            (
                Format::A8B8G8R8_UNORM,
                [0x44, 0x33, 0x22, 0x11],
                [0x11, 0x22, 0x33, 0x44],
            ),
            (
                Format::R8G8B8X8_UNORM,
                [0x11, 0x22, 0x33, 0x44],
                [0x11, 0x22, 0x33, 0xff],
            ),
        ];
        for (format, px, rgba) in cases {
            // 2x1 with 4 bytes of row padding; the second pixel is black.
            let mut src = px.to_vec();
            src.extend_from_slice(&[0; 8]);
            let mut out = Vec::new();
            encode_png(&mut out, format, 2, 1, 12, &src, Path::new("t.png")).unwrap();
            let (w, h, pixels) = decode(&out);
            assert_eq!((w, h), (2, 1));
            assert_eq!(&pixels[..4], &rgba, "{format}");
        }
    }

    #[test]
    fn short_buffer_is_refused() {
        let e = to_rgba(Format::B8G8R8X8_UNORM, 2, 2, 8, &[0; 12]).unwrap_err();
        assert!(
            matches!(
                e,
                PngError::ShortBuffer {
                    needed: 16,
                    found: 12,
                    ..
                }
            ),
            "{e}"
        );
        let e = to_rgba(Format(99), 1, 1, 4, &[0; 4]).unwrap_err();
        assert!(matches!(e, PngError::UnknownFormat { format: 99 }));
    }

    #[test]
    fn frame_file_name_pads_record_number() {
        assert_eq!(frame_file_name(123, 0), "frame-000123-s0.png");
        assert_eq!(cursor_file_name(7, 1), "cursor-000007-s1.png");
    }
}
