//! What a scanout shows: per-scanout framebuffer copies (x8r8g8b8) patched by the device's
//! [`DisplayEvent`]s, shared by capture (Frame records) and replay (frame verification) so that
//! both compose frames byte for byte the same way.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use vgt_format::wire::Format;

use crate::DisplayEvent;

/// The pixel format of every [`Framebuffer`]: B, G, R, X bytes (pixman x8r8g8b8).
pub const FRAME_FORMAT: Format = Format::B8G8R8X8_UNORM;

/// Largest scanout picture [`Framebuffers`] keeps (a 16384 x 8192 picture): a scanout larger
/// than this gets no framebuffer, so its updates produce no [`FrameChange`] (the display is
/// still driven; only the copy is not kept). Bounds what any display size can make a capture
/// or replay allocate.
pub const MAX_FRAMEBUFFER_BYTES: u64 = 512 << 20;

/// Whether a `width`×`height` framebuffer fits [`MAX_FRAMEBUFFER_BYTES`].
fn fits(width: u32, height: u32) -> bool {
    (u64::from(width) * u64::from(height))
        .checked_mul(4)
        .is_some_and(|bytes| bytes <= MAX_FRAMEBUFFER_BYTES)
}

/// The current picture of one scanout: B, G, R, X bytes, stride `width * 4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Resource last shown on it (0 when none).
    pub resource_id: u32,
    /// `width * height * 4` bytes.
    pub pixels: Vec<u8>,
    /// Changes whenever `pixels` change (through [`Framebuffers`], also when the framebuffer is
    /// replaced), so a consumer can tell that a picture is the one it saw before without
    /// comparing or hashing it. Values are unique within one [`Framebuffers`].
    pub version: u64,
}

impl Framebuffer {
    /// A black framebuffer (allocates `width * height * 4` bytes; [`Framebuffers`] only makes
    /// ones within [`MAX_FRAMEBUFFER_BYTES`]).
    pub fn new(width: u32, height: u32) -> Self {
        Framebuffer {
            width,
            height,
            resource_id: 0,
            pixels: vec![0; width as usize * height as usize * 4],
            version: 0,
        }
    }

    /// Bytes per row.
    pub fn stride(&self) -> u32 {
        self.width.saturating_mul(4)
    }

    /// Copies a `width`×`height` rectangle of x8r8g8b8 pixels (`stride` bytes per row) to
    /// (`x`, `y`), clipped to the framebuffer. A row that `pixels` does not hold in full (a
    /// short buffer) is painted black rather than read out of bounds. Returns whether any
    /// pixel changed.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixels: &[u8],
    ) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let mut changed = false;
        let row = width as usize * 4;
        let w = width.min(self.width - x) as usize * 4;
        let h = height.min(self.height - y) as usize;
        let dst_stride = self.width as usize * 4;
        for r in 0..h {
            let d = (y as usize + r) * dst_stride + x as usize * 4;
            let Some(dst) = self.pixels.get_mut(d..d + w) else {
                continue;
            };
            let s = r * stride as usize;
            match pixels.get(s..s + row) {
                Some(src) => {
                    if dst != &src[..w] {
                        dst.copy_from_slice(&src[..w]);
                        changed = true;
                    }
                }
                None => {
                    if dst.iter().any(|&b| b != 0) {
                        dst.fill(0);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

/// A scanout's picture changed: which scanout and which rectangle (x, y, width, height).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameChange {
    /// Scanout index.
    pub scanout_id: u32,
    /// Damaged rectangle, relative to the scanout.
    pub rect: [u32; 4],
}

/// The framebuffers of every scanout, kept up to date from the device's display events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Framebuffers {
    scanouts: BTreeMap<u32, Framebuffer>,
    /// Last [`Framebuffer::version`] handed out.
    version: u64,
}

impl Framebuffers {
    /// No scanout shows anything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one display event. Returns the change when pixels were updated (an
    /// [`DisplayEvent::Update`]): that is when a frame is shown (and recorded).
    ///
    /// A SCANOUT of 0×0 drops the scanout's framebuffer; one of another size starts a black
    /// one (the same size keeps the picture). An UPDATE for a scanout without a framebuffer
    /// starts one just large enough for the rectangle. A picture larger than
    /// [`MAX_FRAMEBUFFER_BYTES`] is not kept: its SCANOUT drops the framebuffer and its
    /// UPDATEs return `None`. Neither is a scanout the protocol cannot have (an id of
    /// [`crate::MAX_SCANOUTS`] or more, which only a misbehaving backend sends, or a damaged
    /// capture holds): without that bound its SCANOUTs could claim a framebuffer per id.
    pub fn apply(&mut self, event: &DisplayEvent) -> Option<FrameChange> {
        let scanout = match *event {
            DisplayEvent::Scanout { scanout_id, .. } | DisplayEvent::Update { scanout_id, .. } => {
                scanout_id
            }
            _ => 0,
        };
        if scanout as usize >= crate::MAX_SCANOUTS {
            return None;
        }
        match *event {
            DisplayEvent::Scanout {
                scanout_id,
                width,
                height,
            } => {
                if width == 0 || height == 0 || !fits(width, height) {
                    self.scanouts.remove(&scanout_id);
                } else if !self
                    .scanouts
                    .get(&scanout_id)
                    .is_some_and(|f| f.width == width && f.height == height)
                {
                    self.version += 1;
                    let mut fb = Framebuffer::new(width, height);
                    fb.version = self.version;
                    self.scanouts.insert(scanout_id, fb);
                }
                None
            }
            DisplayEvent::Update {
                scanout_id,
                resource_id,
                x,
                y,
                width,
                height,
                stride,
                ref pixels,
                ..
            } => {
                let fb = match self.scanouts.entry(scanout_id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let (w, h) = (x.saturating_add(width), y.saturating_add(height));
                        if !fits(w, h) {
                            return None;
                        }
                        self.version += 1;
                        let mut fb = Framebuffer::new(w, h);
                        fb.version = self.version;
                        e.insert(fb)
                    }
                };
                fb.resource_id = resource_id;
                if fb.patch(x, y, width, height, stride, pixels) {
                    self.version += 1;
                    fb.version = self.version;
                }
                Some(FrameChange {
                    scanout_id,
                    rect: [x, y, width, height],
                })
            }
            DisplayEvent::CursorUpdate { .. }
            | DisplayEvent::CursorMove { .. }
            | DisplayEvent::CursorHide { .. } => None,
        }
    }

    /// Like [`Framebuffers::apply`], taking the event: an update that covers a whole existing
    /// framebuffer, tightly packed, becomes that framebuffer's pixel buffer instead of being
    /// copied into it (the buffer it replaces is dropped). The result is the same picture.
    pub fn apply_owned(&mut self, event: DisplayEvent) -> Option<FrameChange> {
        self.apply_owned_inner(event, true).0
    }

    /// [`Framebuffers::apply_owned`], also handing back the pixel buffer that a whole-frame
    /// update replaced (or the update's own buffer once its pixels were copied), so that the
    /// caller decides where and when it is freed or reused. A whole-frame update moves the
    /// framebuffer's version without comparing the pixels with the old ones (for a consumer
    /// that hashes every new version anyway: the comparison would cost as much as the hash it
    /// might save); the pictures are the same as [`Framebuffers::apply`]'s.
    pub fn apply_owned_returning(
        &mut self,
        event: DisplayEvent,
    ) -> (Option<FrameChange>, Option<Vec<u8>>) {
        self.apply_owned_inner(event, false)
    }

    /// [`Framebuffers::apply_owned`] (exact versions: the version moves only when a pixel
    /// changes), also handing back the pixel buffer it no longer needs, as
    /// [`Framebuffers::apply_owned_returning`] does, for the caller to reuse (e.g. through
    /// `Device::recycle_pixels`).
    pub fn apply_owned_exact_returning(
        &mut self,
        event: DisplayEvent,
    ) -> (Option<FrameChange>, Option<Vec<u8>>) {
        self.apply_owned_inner(event, true)
    }

    /// `apply_owned` (`exact_version`: the version moves only when a pixel changes) and
    /// `apply_owned_returning`.
    fn apply_owned_inner(
        &mut self,
        event: DisplayEvent,
        exact_version: bool,
    ) -> (Option<FrameChange>, Option<Vec<u8>>) {
        if let DisplayEvent::Update {
            scanout_id,
            resource_id,
            x: 0,
            y: 0,
            width,
            height,
            format,
            stride,
            pixels,
            copy_of_read,
        } = event
        {
            match self.scanouts.get_mut(&scanout_id) {
                Some(fb)
                    if fb.width == width
                        && fb.height == height
                        && stride == width.saturating_mul(4)
                        && pixels.len() == fb.pixels.len() =>
                {
                    fb.resource_id = resource_id;
                    // Exact: the same versioning as `patch`, the version moves only when a
                    // pixel changes.
                    if !exact_version || fb.pixels != pixels {
                        self.version += 1;
                        fb.version = self.version;
                    }
                    let old = std::mem::replace(&mut fb.pixels, pixels);
                    return (
                        Some(FrameChange {
                            scanout_id,
                            rect: [0, 0, width, height],
                        }),
                        Some(old),
                    );
                }
                _ => {
                    // Rebuild the event to take the copying path (moves, no pixel copy).
                    let event = DisplayEvent::Update {
                        scanout_id,
                        resource_id,
                        x: 0,
                        y: 0,
                        width,
                        height,
                        format,
                        stride,
                        pixels,
                        copy_of_read,
                    };
                    let change = self.apply(&event);
                    return match event {
                        DisplayEvent::Update { pixels, .. } => (change, Some(pixels)),
                        _ => (change, None),
                    };
                }
            }
        }
        let change = self.apply(&event);
        match event {
            DisplayEvent::Update { pixels, .. } => (change, Some(pixels)),
            _ => (change, None),
        }
    }

    /// The framebuffer of a scanout, when it shows something.
    pub fn get(&self, scanout_id: u32) -> Option<&Framebuffer> {
        self.scanouts.get(&scanout_id)
    }

    /// Every scanout's framebuffer, in scanout order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Framebuffer)> {
        self.scanouts.iter().map(|(k, v)| (*k, v))
    }

    /// Forgets every picture (device reset).
    pub fn clear(&mut self) {
        self.scanouts.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn update(
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixels: Vec<u8>,
    ) -> DisplayEvent {
        DisplayEvent::Update {
            scanout_id: 0,
            resource_id: 7,
            x,
            y,
            width,
            height,
            format: FRAME_FORMAT,
            stride,
            pixels,
            copy_of_read: None,
        }
    }

    #[test]
    fn apply_owned_same_pictures_as_apply() {
        let scanout = |w, h| DisplayEvent::Scanout {
            scanout_id: 0,
            width: w,
            height: h,
        };
        let full: Vec<u8> = (0..16).collect();
        let events = [
            scanout(2, 2),
            // Whole frame, tightly packed: taken over.
            update(0, 0, 2, 2, 8, full.clone()),
            // Part of it: copied.
            update(1, 0, 1, 2, 4, vec![9; 8]),
            // Whole frame with row padding: copied.
            update(0, 0, 2, 2, 12, (100..124).collect()),
            // Larger than the frame: clipped.
            update(0, 0, 3, 3, 12, vec![3; 36]),
            // Whole frame, short buffer: missing rows black.
            update(0, 0, 2, 2, 8, vec![4; 8]),
            update(0, 0, 2, 2, 8, full),
            scanout(0, 0),
            // No framebuffer yet: one is started.
            update(0, 0, 1, 1, 4, vec![1, 2, 3, 4]),
        ];
        let mut copied = Framebuffers::new();
        let mut owned = Framebuffers::new();
        let mut exact = Framebuffers::new();
        for e in events {
            let a = copied.apply(&e);
            let (c, _) = exact.apply_owned_exact_returning(e.clone());
            let b = owned.apply_owned(e);
            assert_eq!(a, b);
            assert_eq!(a, c);
            assert_eq!(copied, owned);
            assert_eq!(copied, exact);
        }
        assert_eq!(owned.get(0).unwrap().pixels, [1, 2, 3, 4]);
    }

    #[test]
    fn apply_owned_returning_hands_back_the_buffer_it_no_longer_needs() {
        let mut f = Framebuffers::new();
        f.apply(&DisplayEvent::Scanout {
            scanout_id: 0,
            width: 2,
            height: 1,
        });
        // A whole-frame update replaces the black picture: that buffer comes back.
        let (change, old) = f.apply_owned_returning(update(0, 0, 2, 1, 8, vec![1; 8]));
        assert!(change.is_some());
        assert_eq!(old, Some(vec![0; 8]));
        // A partial update is copied: its own buffer comes back.
        let (change, old) = f.apply_owned_returning(update(1, 0, 1, 1, 4, vec![2; 4]));
        assert_eq!(change.map(|c| c.rect), Some([1, 0, 1, 1]));
        assert_eq!(old, Some(vec![2; 4]));
        assert_eq!(f.get(0).unwrap().pixels, [1, 1, 1, 1, 2, 2, 2, 2]);
        // The same picture again as a whole frame: the version moves without a comparison
        // (apply_owned keeps it).
        let same = f.get(0).unwrap().pixels.clone();
        let version = f.get(0).unwrap().version;
        let mut exact = f.clone();
        exact.apply_owned(update(0, 0, 2, 1, 8, same.clone()));
        assert_eq!(exact.get(0).unwrap().version, version);
        f.apply_owned_returning(update(0, 0, 2, 1, 8, same));
        assert_ne!(f.get(0).unwrap().version, version);
        assert_eq!(f.get(0).unwrap().pixels, exact.get(0).unwrap().pixels);
        let (change, old) = f.apply_owned_returning(DisplayEvent::CursorMove {
            scanout_id: 0,
            x: 0,
            y: 0,
        });
        assert_eq!((change, old), (None, None));
    }

    #[test]
    fn patch_with_stride_drops_row_padding() {
        let mut fb = Framebuffer::new(2, 2);
        let src: Vec<u8> = (0..24).collect();
        fb.patch(0, 0, 2, 2, 12, &src);
        assert_eq!(
            fb.pixels,
            [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19]
        );
    }

    #[test]
    fn patch_outside_frame_is_clipped() {
        let mut fb = Framebuffer::new(2, 2);
        fb.patch(1, 1, 2, 2, 8, &[7; 16]);
        assert_eq!(&fb.pixels[..12], &[0; 12]);
        assert_eq!(&fb.pixels[12..], &[7; 4]);
        fb.patch(2, 0, 1, 1, 4, &[9; 4]);
        assert_eq!(&fb.pixels[..12], &[0; 12]);
    }

    #[test]
    fn patch_short_buffer_paints_missing_rows_black() {
        let mut fb = Framebuffer::new(1, 2);
        fb.pixels.fill(5);
        fb.patch(0, 0, 1, 2, 4, &[1, 2, 3, 4]);
        assert_eq!(fb.pixels, [1, 2, 3, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn scanout_events_start_keep_and_drop_framebuffers() {
        let mut f = Framebuffers::new();
        let scanout = |w, h| DisplayEvent::Scanout {
            scanout_id: 0,
            width: w,
            height: h,
        };
        assert_eq!(f.apply(&scanout(2, 1)), None);
        let change = f.apply(&update(1, 0, 1, 1, 4, vec![1, 2, 3, 4]));
        assert_eq!(
            change,
            Some(FrameChange {
                scanout_id: 0,
                rect: [1, 0, 1, 1]
            })
        );
        assert_eq!(f.get(0).unwrap().pixels, [0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(f.get(0).unwrap().resource_id, 7);
        f.apply(&scanout(2, 1));
        assert_eq!(f.get(0).unwrap().pixels, [0, 0, 0, 0, 1, 2, 3, 4]);
        f.apply(&scanout(1, 1));
        assert_eq!(f.get(0).unwrap().pixels, [0, 0, 0, 0]);
        f.apply(&scanout(0, 0));
        assert!(f.get(0).is_none());
    }

    #[test]
    fn oversized_scanout_keeps_no_framebuffer_and_reports_no_change() {
        let mut f = Framebuffers::new();
        let scanout = |w, h| DisplayEvent::Scanout {
            scanout_id: 0,
            width: w,
            height: h,
        };
        f.apply(&scanout(2, 2));
        assert!(f.get(0).is_some());
        // 16384 x 8193 x 4 is one row over the cap: the old picture is dropped, not resized.
        f.apply(&scanout(16384, 8193));
        assert!(f.get(0).is_none());
        assert_eq!(
            f.apply(&update(0, 0, 1, 1, 4, vec![1; 4])),
            Some(FrameChange {
                scanout_id: 0,
                rect: [0, 0, 1, 1]
            })
        );
        // An update far out without a scanout would need a framebuffer over the cap.
        let mut g = Framebuffers::new();
        assert_eq!(
            g.apply(&update(u32::MAX - 1, u32::MAX - 1, 1, 1, 4, vec![1; 4])),
            None
        );
        assert!(g.get(0).is_none());
    }

    #[test]
    fn scanouts_the_protocol_cannot_have_keep_no_framebuffer() {
        // A backend (through the proxy) or a damaged capture naming scanouts 16 and up: a
        // SCANOUT per id used to start a framebuffer each, up to 512 MiB apiece.
        let mut f = Framebuffers::new();
        for id in [15, 16, 17, u32::MAX] {
            f.apply(&DisplayEvent::Scanout {
                scanout_id: id,
                width: 16384,
                height: 8192,
            });
        }
        assert_eq!(f.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![15]);
        let mut far = update(0, 0, 1, 1, 4, vec![1; 4]);
        if let DisplayEvent::Update { scanout_id, .. } = &mut far {
            *scanout_id = 16;
        }
        assert_eq!(f.apply(&far), None);
        assert_eq!(f.apply_owned(far), None);
        assert!(f.get(16).is_none());
    }

    #[test]
    fn version_changes_only_with_the_pixels() {
        let mut f = Framebuffers::new();
        f.apply(&DisplayEvent::Scanout {
            scanout_id: 0,
            width: 2,
            height: 1,
        });
        let v0 = f.get(0).unwrap().version;
        f.apply(&update(0, 0, 1, 1, 4, vec![0; 4]));
        assert_eq!(
            f.get(0).unwrap().version,
            v0,
            "black on black changes nothing"
        );
        f.apply(&update(0, 0, 1, 1, 4, vec![1; 4]));
        let v1 = f.get(0).unwrap().version;
        assert_ne!(v1, v0);
        f.apply(&update(0, 0, 1, 1, 4, vec![1; 4]));
        assert_eq!(f.get(0).unwrap().version, v1);
        // A short buffer blackens the pixel: a change.
        f.apply(&update(0, 0, 1, 1, 4, vec![]));
        assert_ne!(f.get(0).unwrap().version, v1);
        // A new framebuffer of another size never reuses a version.
        f.apply(&DisplayEvent::Scanout {
            scanout_id: 0,
            width: 1,
            height: 1,
        });
        assert!(f.get(0).unwrap().version > v1);
    }

    #[test]
    fn update_without_scanout_starts_framebuffer_of_rect_size() {
        let mut f = Framebuffers::new();
        f.apply(&update(1, 1, 1, 1, 4, vec![9; 4]));
        let fb = f.get(0).unwrap();
        assert_eq!((fb.width, fb.height), (2, 2));
        assert_eq!(&fb.pixels[12..], &[9; 4]);
    }
}
