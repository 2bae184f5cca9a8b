//! `vgt-inspect export --frames`: the recorded frames and cursor images of the real samples come
//! out as PNG files showing what the test guest drew (checked against the guest's own pattern
//! formulas, not against the encoder), named and encoded as `vgt-replay --frames-dir` writes
//! them, and a damaged picture is named without stopping the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vgt_e2e::image::{Rgb, cursor_image, drm_pattern, fb_frame};
use vgt_format::CaptureReader;
use vgt_format::record::{BlobRef, ContentHash, CursorAction, Payload, RecordBody};
use vgt_format::testing::patch_blob_ref;

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgt-inspect"))
        .args(args)
        .output()
        .expect("run vgt-inspect")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sample(name: &str) -> PathBuf {
    vgt_e2e::workspace_root().join("samples").join(name)
}

/// Decodes a PNG file: (width, height, RGBA bytes).
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap();
    let mut r = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn rgb(path: &Path) -> Rgb {
    let (w, h, rgba) = decode(path);
    let mut pixels = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        assert_eq!(px[3], 255, "{}: a frame is opaque", path.display());
        pixels.extend_from_slice(&px[..3]);
    }
    Rgb {
        width: w,
        height: h,
        pixels,
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The file names the capture's Frame records (and with `cursors` its cursor updates) get.
fn expected_names(path: &Path, cursors: bool, scanout: Option<u32>) -> BTreeSet<String> {
    let reader = CaptureReader::open(path).unwrap();
    let mut out = BTreeSet::new();
    for item in reader.iter() {
        let (id, r) = item.unwrap();
        match r.body {
            RecordBody::Frame(f) if scanout.is_none_or(|s| s == f.scanout_id) => {
                out.insert(format!("frame-{id:06}-s{}.png", f.scanout_id));
            }
            RecordBody::Cursor(c)
                if cursors && c.action == CursorAction::Update && c.image.is_some() =>
            {
                out.insert(format!("cursor-{id:06}-s{}.png", c.scanout_id));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn cursor_sample_exports_its_frames_and_both_cursor_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let file = sample("cursor.vgt");
    let o = inspect(&[
        "export",
        "--frames",
        out.to_str().unwrap(),
        "--cursors",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = names(&out);
    assert_eq!(written, expected_names(&file, true, None));
    let frames = written.iter().filter(|n| n.starts_with("frame-")).count();
    let cursors: Vec<&String> = written
        .iter()
        .filter(|n| n.starts_with("cursor-"))
        .collect();
    assert!(
        stdout(&o).starts_with(&format!("wrote {frames} frames (")),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!("and {} cursor images", cursors.len())),
        "{}",
        stdout(&o)
    );
    // The guest's two cursor images, alpha included (B, G, R, A in the guest's resource).
    let mut images = Vec::new();
    for name in &cursors {
        let (w, h, rgba) = decode(&out.join(name));
        assert_eq!((w, h), (64, 64));
        images.push(rgba);
    }
    for c in [0, 1] {
        let want: Vec<u8> = cursor_image(c)
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0], p[3]])
            .collect();
        assert!(images.contains(&want), "cursor image {c} not exported");
    }
    // And the screen under the cursor, as the guest drew it.
    let want = drm_pattern(0, 0, 1280, 800);
    assert!(
        written
            .iter()
            .filter(|n| n.starts_with("frame-"))
            .any(|n| rgb(&out.join(n)) == want),
        "no exported frame shows the DRM pattern"
    );
}

#[test]
fn fb_sample_ends_on_the_frame_the_guest_wrote_last() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample("fb.vgt");
    let o = inspect(&[
        "export",
        "--frames",
        dir.path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = names(dir.path());
    assert_eq!(written, expected_names(&file, false, None));
    // Names sort by record: the last is the last frame shown (make-samples.sh: frame 2).
    let last = written.iter().next_back().unwrap();
    rgb(&dir.path().join(last))
        .check_equal(&fb_frame(2, 640, 480), "last exported frame vs fb frame 2")
        .unwrap();
}

#[test]
fn scanout_and_range_select_what_is_exported() {
    let file = sample("modes.vgt");
    let dir = tempfile::tempdir().unwrap();
    let o = inspect(&[
        "export",
        "--frames",
        dir.path().to_str().unwrap(),
        "--scanout",
        "1",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = names(dir.path());
    assert_eq!(written, expected_names(&file, false, Some(1)));
    assert!(
        written.iter().all(|n| n.ends_with("-s1.png")),
        "{written:?}"
    );
    let want = drm_pattern(1, 0, 1024, 768);
    assert!(
        written.iter().any(|n| rgb(&dir.path().join(n)) == want),
        "no frame of scanout 1 shows its DRM pattern"
    );
    // A record range: only the frames inside it.
    let all = expected_names(&file, false, None);
    let ids: Vec<u64> = all.iter().map(|n| n[6..12].parse().unwrap()).collect();
    let (a, b) = (ids[1], ids[3]);
    let dir = tempfile::tempdir().unwrap();
    let o = inspect(&[
        "export",
        "--frames",
        dir.path().to_str().unwrap(),
        "--range",
        &format!("{a}..{b}"),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let written = names(dir.path());
    let want: BTreeSet<String> = all
        .into_iter()
        .filter(|n| (a..b).contains(&n[6..12].parse::<u64>().unwrap()))
        .collect();
    assert_eq!(written, want);
    assert_eq!(written.len(), 2);
}

/// The export and a replay's `--frames-dir` of the same capture hold the same files, byte for
/// byte, for a capture that replays identically: the recorded picture and the replayed one sit
/// side by side under one name.
#[test]
fn export_and_replay_frames_dir_write_the_same_files() {
    let file = sample("modes.vgt");
    let exported = tempfile::tempdir().unwrap();
    let o = inspect(&[
        "export",
        "--frames",
        exported.path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let replayed = tempfile::tempdir().unwrap();
    let reader = CaptureReader::open(&file).unwrap();
    let options = vgt_replay::ReplayOptions {
        frames_dir: Some(replayed.path().to_owned()),
        ..vgt_replay::ReplayOptions::default()
    };
    let report = vgt_replay::Replayer::new(&reader, options)
        .run(&mut vgt_replay::Quiet)
        .unwrap();
    assert!(report.is_identical(), "{:#?}", report.divergences);
    let names_e = names(exported.path());
    assert_eq!(names_e, names(replayed.path()));
    assert!(names_e.len() >= 10, "{names_e:?}");
    for n in &names_e {
        assert_eq!(
            std::fs::read(exported.path().join(n)).unwrap(),
            std::fs::read(replayed.path().join(n)).unwrap(),
            "{n}"
        );
    }
}

#[test]
fn a_damaged_frame_is_named_and_the_others_are_still_written() {
    let file = sample("fb.vgt");
    let mut bytes = std::fs::read(&file).unwrap();
    let reader = CaptureReader::from_bytes(bytes.clone()).unwrap();
    let frames: Vec<(u64, BlobRef)> = reader
        .iter()
        .map(|r| r.unwrap())
        .filter_map(|(id, r)| match r.body {
            RecordBody::Frame(f) => match f.pixels {
                Payload::Blob(b) => Some((id, b)),
                Payload::Inline(_) => None,
            },
            _ => None,
        })
        .collect();
    drop(reader);
    assert!(frames.len() >= 3);
    // The second frame now claims a content no blob has.
    let (bad, r) = frames[1];
    let wrong = BlobRef {
        hash: ContentHash(r.hash.0 ^ 1),
        ..r
    };
    patch_blob_ref(&mut bytes, bad, &wrong).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.vgt");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = dir.path().join("frames");
    let o = inspect(&[
        "export",
        "--frames",
        out.to_str().unwrap(),
        damaged.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "vgt-inspect: error: record {bad}: frame pixels unreadable"
        )),
        "{err}"
    );
    let written = names(&out);
    assert_eq!(written.len(), frames.len() - 1, "{written:?}");
    assert!(!written.contains(&format!("frame-{bad:06}-s0.png")));
}

#[test]
fn bad_arguments_exit_2_with_one_clear_error() {
    let file = sample("boot.vgt");
    let file = file.to_str().unwrap();
    for args in [
        vec!["export", file],
        vec!["export", "--cursors", file],
        vec!["export", "--frames", "/tmp/x", "--scanout", "one", file],
        vec!["export", "--frames", "/tmp/x", "--range", "9..x", file],
    ] {
        let o = inspect(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // A directory that cannot be made: one line, exit 1.
    let o = inspect(&["export", "--frames", "/dev/null/frames", file]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot create /dev/null/frames"),
        "{}",
        stderr(&o)
    );
}
