//! The real captures in samples/ (made by samples/make-samples.sh from the test guest through
//! vgt-capture) open, verify clean, and hold what their workloads send and draw. Later tools
//! (replay, inspect) use these files as real inputs; this test keeps them honest.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use vgt_e2e::capture::Summary;
use vgt_e2e::image::{cursor_image, drm_pattern, fb_frame};
use vgt_format::wire::CommandType as C;

fn sample(name: &str) -> Summary {
    let path: PathBuf = vgt_e2e::workspace_root().join("samples").join(name);
    let s = Summary::read(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    if let Err(e) = s.check_healthy() {
        panic!("{name}: {e:#}");
    }
    s
}

#[test]
fn boot_sample_is_clean_and_shows_the_console() {
    let s = sample("boot.vgt");
    assert!(s.count(C::TRANSFER_TO_HOST_2D) >= 2, "{:?}", s.sequence());
    assert!(s.count(C::GET_EDID) >= 1, "{:?}", s.sequence());
    let last = s.last_frame_rgb(0).unwrap();
    assert_eq!((last.width, last.height), (1280, 800));
    // fbcon's text: not one colour.
    assert!(last.pixels.chunks(3).any(|p| p != &last.pixels[..3]));
}

#[test]
fn fb_sample_is_clean_and_ends_on_the_last_frame_written() {
    let s = sample("fb.vgt");
    assert!(s.count(C::TRANSFER_TO_HOST_2D) >= 3, "{:?}", s.sequence());
    // make-samples.sh: 3 frames at 640x480; the screen ends on frame 2.
    let last = s.last_frame_rgb(0).unwrap();
    last.check_equal(&fb_frame(2, 640, 480), "fb.vgt last frame vs fb frame 2")
        .unwrap();
}

#[test]
fn modes_sample_is_clean_and_shows_both_scanouts_and_every_buffer() {
    let s = sample("modes.vgt");
    assert!(s.count(C::RESOURCE_CREATE_2D) >= 5, "{:?}", s.sequence());
    for (scanout, variant, w, h) in [
        (0, 0, 1280, 800),
        (0, 0, 800, 600),
        (0, 1, 800, 600),
        (1, 0, 1024, 768),
    ] {
        assert!(
            s.shows(scanout, &drm_pattern(scanout, variant, w, h))
                .unwrap(),
            "no frame of scanout {scanout} shows variant {variant} at {w}x{h}"
        );
    }
}

#[test]
fn cursor_sample_is_clean_and_holds_both_cursor_images() {
    let s = sample("cursor.vgt");
    assert!(s.count(C::UPDATE_CURSOR) >= 2, "{:?}", s.sequence());
    assert!(s.count(C::MOVE_CURSOR) >= 8, "{:?}", s.sequence());
    let images = s.cursor_images().unwrap();
    assert!(images.contains(&cursor_image(0)) && images.contains(&cursor_image(1)));
    assert!(s.shows(0, &drm_pattern(0, 0, 1280, 800)).unwrap());
}
