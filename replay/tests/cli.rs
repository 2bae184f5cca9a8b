//! The `vgt-replay` binary: exit codes, summary, JSON, frames directory, argument errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use vgt_format::record::RecordBody;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgt-replay"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn identical_capture_exits_0_with_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.vgt", &linux_like(16, 8, 3).finish());
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("divergences: 0"), "{s}");
    assert!(s.contains("x realtime"), "{s}");
    assert!(s.contains("result: identical"), "{s}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn diverged_capture_exits_1_with_one_line_per_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = linux_like(16, 8, 3).finish();
    let mut n = 0;
    let edited = rewrite(&bytes, |_, mut rec| {
        if let RecordBody::MemoryRead(m) = &mut rec.body
            && m.resource_id == 1
        {
            n += 1;
            if n % 2 == 1 {
                bytes_mut(&mut m.data)[0] ^= 0xff;
            }
        }
        Some(rec)
    });
    let file = write(dir.path(), "bad.vgt", &edited);
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("vgt-replay: divergence: record "), "{err}");
    assert!(err.contains("frame differs"), "{err}");
    let out = run(&["--keep-going", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).lines().count() > 1);
}

#[test]
fn json_summary_parses_and_frames_dir_gets_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.vgt", &linux_like(8, 4, 2).finish());
    let frames = dir.path().join("frames");
    let out = run(&[
        "--json",
        "--frames-dir",
        frames.to_str().unwrap(),
        "--loop",
        "2",
        &file,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identical"], true);
    assert_eq!(v["loops"], 2);
    assert_eq!(v["divergences"].as_array().unwrap().len(), 0);
    assert!(v["x_realtime"].as_f64().unwrap() > 0.0);
    let frames_n = v["frames"].as_u64().unwrap();
    let pngs = std::fs::read_dir(&frames).unwrap().count() as u64;
    // Frames are written in the first loop only; both loops are compared.
    assert_eq!(pngs * 2, frames_n);
    assert_eq!(v["frames_written"].as_u64().unwrap(), pngs);
}

#[test]
fn unreadable_input_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.vgt", b"this is not a capture at all");
    let out = run(&[&junk]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a vgt capture"));
    let out = run(&[dir.path().join("missing.vgt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let ok = write(dir.path(), "ok.vgt", &linux_like(8, 4, 1).finish());
    for bad in [
        vec!["--range", "5..2", ok.as_str()],
        vec!["--timing", "x0", ok.as_str()],
        vec!["--timing", "fast", ok.as_str()],
        vec!["--loop", "0", ok.as_str()],
        vec!["--until", "3", "--range", "1..2", ok.as_str()],
        vec![],
    ] {
        let out = run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

#[test]
fn until_and_original_timing_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.vgt", &linux_like(8, 4, 2).finish());
    let out = run(&["--until", "10", "--timing", "x4", "--json", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["last_record"].as_u64().unwrap() >= 10);
    assert!(v["commands"].as_u64().unwrap() < 14);
    // Original pacing: the capture spans its timestamps (10 µs per record), so replay takes
    // at least that long.
    let out = run(&["--timing", "original", "--json", &file]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let span = v["capture_span_ns"].as_u64().unwrap();
    assert!(v["wall_ns"].as_u64().unwrap() >= span, "{v}");
}
