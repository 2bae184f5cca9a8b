//! `vgt-inspect export --frames DIR`: the frames a capture recorded (what the display was
//! shown, QEMU's side of the display socket) and, with `--cursors`, its cursor images, as PNG
//! files, without replaying anything.
//!
//! Files are named as `vgt-replay --frames-dir` names the frames it replays
//! (`frame-RECORD-sSCANOUT.png`, RECORD the Frame record's number), so a replay's directory and
//! an export of the same capture compare file by file: the recorded picture next to the
//! replayed one. Cursor images are `cursor-RECORD-sSCANOUT.png`, 64x64 with their alpha.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use vgt_format::CaptureReader;
use vgt_format::image::{self, CURSOR_FORMAT, CURSOR_SIZE};
use vgt_format::record::{CursorAction, Payload, RecordBody, RecordId};
use vgt_format::wire::Format;

use crate::progress::records_bar;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct FrameExport {
    /// The directory the PNG files go to (created when missing).
    pub dir: PathBuf,
    /// Also the cursor images of cursor updates.
    pub cursors: bool,
    /// Only records in this range of record numbers.
    pub range: Option<Range<u64>>,
    /// Only this scanout.
    pub scanout: Option<u32>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Frame files written, by scanout.
    pub frames: Vec<(u32, u64)>,
    /// Distinct pictures among them (by content hash).
    pub distinct: u64,
    /// Cursor images written.
    pub cursors: u64,
    /// Records whose picture could not be read from the file or converted, with why.
    pub failed: Vec<(RecordId, String)>,
    /// Records the reader could not decode.
    pub unreadable: u64,
}

impl Exported {
    /// Frame files written over all scanouts.
    pub fn frame_count(&self) -> u64 {
        self.frames.iter().map(|(_, n)| n).sum()
    }
}

/// One encoded picture, kept so that an unchanged frame is written without encoding it again.
struct Encoded {
    key: (u128, u32, u32, u32, u32),
    png: Vec<u8>,
}

fn blob_hash(p: &Payload) -> Option<u128> {
    match p {
        Payload::Blob(r) => Some(r.hash.0),
        Payload::Inline(_) => None,
    }
}

/// Writes `png` to `dir/name`.
fn write_file(dir: &Path, name: &str, png: &[u8]) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))
}

/// Encodes one picture, or says why it cannot be.
fn encode(
    format: Format,
    width: u32,
    height: u32,
    stride: u32,
    pixels: &[u8],
    name: &str,
) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    image::encode_png(
        &mut png,
        format,
        width,
        height,
        stride,
        pixels,
        Path::new(name),
    )
    .map_err(|e| e.to_string())?;
    Ok(png)
}

/// Exports the recorded frames (and cursor images) of `reader` as [`FrameExport`] says.
/// Failing to create or write a file stops it with an error; a picture the capture holds
/// damaged, or in a format that is not a virtio-gpu one, is listed in [`Exported::failed`]
/// and the export goes on.
pub fn export_frames(reader: &CaptureReader, what: &FrameExport) -> Result<Exported> {
    std::fs::create_dir_all(&what.dir)
        .with_context(|| format!("cannot create {}", what.dir.display()))?;
    if !what.dir.is_dir() {
        bail!("{} is not a directory", what.dir.display());
    }
    let len = reader.len();
    let range = what.range.clone().unwrap_or(0..len);
    let range = range.start.min(len)..range.end.min(len);
    let bar = records_bar(range.end - range.start, "exporting frames");
    let mut done = Exported::default();
    let mut per_scanout: HashMap<u32, u64> = HashMap::new();
    let mut seen: std::collections::HashSet<u128> = std::collections::HashSet::new();
    // The last picture encoded on each scanout: a flush that changed nothing costs a copy.
    let mut last: HashMap<u32, Encoded> = HashMap::new();
    let wanted = |scanout: u32| what.scanout.is_none_or(|s| s == scanout);
    for item in reader.iter_range(range) {
        bar.inc(1);
        let (id, record) = match item {
            Ok(r) => r,
            Err(_) => {
                done.unreadable += 1;
                continue;
            }
        };
        match record.body {
            RecordBody::Frame(f) if wanted(f.scanout_id) => {
                let name = image::frame_file_name(id, f.scanout_id);
                let hash = blob_hash(&f.pixels);
                let key = hash.map(|h| (h, f.format, f.width, f.height, f.stride));
                if let Some(e) = last.get(&f.scanout_id).filter(|e| Some(e.key) == key) {
                    write_file(&what.dir, &name, &e.png)?;
                } else {
                    let pixels = match reader.read_payload(&f.pixels) {
                        Ok(p) => p,
                        Err(e) => {
                            done.failed
                                .push((id, format!("frame pixels unreadable: {e}")));
                            continue;
                        }
                    };
                    let png = match encode(
                        Format(f.format),
                        f.width,
                        f.height,
                        f.stride,
                        &pixels,
                        &name,
                    ) {
                        Ok(png) => png,
                        Err(e) => {
                            done.failed.push((id, e));
                            continue;
                        }
                    };
                    write_file(&what.dir, &name, &png)?;
                    if let Some(key) = key {
                        last.insert(f.scanout_id, Encoded { key, png });
                    }
                }
                *per_scanout.entry(f.scanout_id).or_default() += 1;
                if hash.is_none_or(|h| seen.insert(h)) {
                    done.distinct += 1;
                }
            }
            RecordBody::Cursor(c)
                if what.cursors && c.action == CursorAction::Update && wanted(c.scanout_id) =>
            {
                let Some(payload) = &c.image else {
                    continue;
                };
                let name = image::cursor_file_name(id, c.scanout_id);
                let pixels = match reader.read_payload(payload) {
                    Ok(p) => p,
                    Err(e) => {
                        done.failed
                            .push((id, format!("cursor image unreadable: {e}")));
                        continue;
                    }
                };
                match encode(
                    CURSOR_FORMAT,
                    CURSOR_SIZE,
                    CURSOR_SIZE,
                    CURSOR_SIZE * 4,
                    &pixels,
                    &name,
                ) {
                    Ok(png) => {
                        write_file(&what.dir, &name, &png)?;
                        done.cursors += 1;
                    }
                    Err(e) => done.failed.push((id, format!("cursor image: {e}"))),
                }
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    let mut frames: Vec<(u32, u64)> = per_scanout.into_iter().collect();
    frames.sort_unstable();
    done.frames = frames;
    Ok(done)
}

/// Writes the summary line of an export to `out`.
pub fn summarize(done: &Exported, dir: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    let scanouts: Vec<String> = done
        .frames
        .iter()
        .map(|(s, n)| format!("scanout {s}: {n}"))
        .collect();
    write!(
        out,
        "wrote {} frames ({} distinct",
        done.frame_count(),
        done.distinct
    )?;
    if !scanouts.is_empty() {
        write!(out, "; {}", scanouts.join(", "))?;
    }
    write!(out, ")")?;
    if done.cursors > 0 {
        write!(out, " and {} cursor images", done.cursors)?;
    }
    writeln!(out, " to {}", dir.display())
}
