//! `vgt-inspect info` and `dump` run as a user runs them, on synthetic captures made of real
//! wire bytes, on truncated and damaged copies, and on files that are not captures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vgt_format::record::LifecycleKind;
use vgt_format::testing::CaptureBuilder;
use vgt_format::{CaptureWriter, WriterOptions};

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

/// A finished capture of a Linux-like boot: session, 4 setup exchanges, `updates` transfer+flush
/// pairs with memory reads and frames, a marker and an end event.
fn boot_capture(dir: &Path, updates: u32) -> PathBuf {
    let path = dir.join("boot.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(32, 16, updates).unwrap();
    b.marker("workload done").unwrap();
    b.lifecycle(LifecycleKind::End, "capture finished").unwrap();
    b.finish().unwrap();
    path
}

#[test]
fn info_reports_counts_frames_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 3);
    let o = inspect(&["info", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("indexed"), "{out}");
    assert!(out.contains("vgt-testing"), "{out}");
    // 1 session + 4 setup exchanges * 2 + 3 updates * (2 exchanges * 2 + 2 memory reads + 1 frame)
    // + marker + end.
    assert!(out.contains("records:     32"), "{out}");
    assert!(
        out.contains("TRANSFER_TO_HOST_2D                  3"),
        "{out}"
    );
    assert!(
        out.contains("RESOURCE_FLUSH                       3"),
        "{out}"
    );
    assert!(
        out.contains("OK_NODATA                            9"),
        "{out}"
    );
    assert!(out.contains("frames:      3 scanout0=3"), "{out}");
    assert!(out.contains("health:      ok"), "{out}");
}

#[test]
fn info_json_is_one_object_with_the_same_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 2);
    let o = inspect(&["info", "--json", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["records"], 25);
    assert_eq!(v["frames"], 2);
    assert_eq!(v["per_command"]["GET_DISPLAY_INFO"], 1);
    assert_eq!(v["per_kind"]["memory-read"], 4);
    assert_eq!(v["indexed"], true);
    assert_eq!(v["error_responses"], 0);
    assert!(v["truncated_at"].is_null());
}

#[test]
fn dump_prints_one_decoded_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 1);
    let o = inspect(&["dump", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 18, "{out}");
    assert!(
        lines[0].starts_with("#0 ") && lines[0].contains("session"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("command") && lines[1].contains("GET_DISPLAY_INFO"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("response") && lines[2].contains("cmd=#1"),
        "{}",
        lines[2]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("RESOURCE_CREATE_2D") && l.contains("32x16")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("memory-read")), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("frame") && l.contains("scanout=0")),
        "{out}"
    );
    assert!(lines[16].contains("\"workload done\""), "{}", lines[16]);
}

#[test]
fn dump_range_and_kind_filter_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 3);
    let p = path.to_str().unwrap();
    let o = inspect(&["dump", p, "--range", "3..7"]);
    let ids: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["#3", "#4", "#5", "#6"]);
    let o = inspect(&["dump", p, "--kind", "frame", "--kind", "marker"]);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains(" frame ") || l.contains(" marker ")),
        "{out}"
    );
}

#[test]
fn dump_json_lines_parse_and_carry_decoded_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 1);
    let o = inspect(&[
        "dump",
        "--json",
        "--kind",
        "command",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let objects: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 6);
    assert_eq!(objects[0]["kind"], "command");
    assert_eq!(objects[0]["queue"], 0);
    assert!(
        objects[0]["decoded"]["text"]
            .as_str()
            .unwrap()
            .contains("GET_DISPLAY_INFO")
    );
    assert!(objects[1]["decoded"]["request"].is_object());
}

#[test]
fn truncated_capture_dumps_up_to_the_cut_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 3);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.vgt");
    // Cut in the middle of the data, well before the index.
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = inspect(&["dump", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning") && err.contains("truncated at byte"),
        "{err}"
    );
    let n = stdout(&o).lines().count();
    assert!(n > 0 && n < 32, "{n} records");
    assert!(
        err.contains(&format!("{n} complete records recovered")),
        "{err}"
    );

    let o = inspect(&["info", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("no index"), "{}", stdout(&o));
    assert!(stdout(&o).contains("truncated at byte"), "{}", stdout(&o));
}

#[test]
fn damaged_capture_reports_the_offset_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_capture(dir.path(), 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = 200;
    bytes[at] ^= 0x10;
    let bad = dir.path().join("bad.vgt");
    std::fs::write(&bad, &bytes).unwrap();
    let o = inspect(&["info", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("damaged at byte"), "{}", stdout(&o));
    let o = inspect(&["dump", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).lines().count() >= 30, "the rest still dumps");
}

#[test]
fn a_file_that_is_not_a_capture_gets_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not a capture, just some text\n").unwrap();
    for verb in ["info", "dump"] {
        let o = inspect(&[verb, path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not a vgt capture"), "{err}");
    }
}

#[test]
fn a_missing_file_and_bad_arguments_are_reported() {
    let o = inspect(&["info", "/nonexistent/capture.vgt"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/capture.vgt"));
    let o = inspect(&["dump", "x.vgt", "--range", "9..2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("after its end"), "{}", stderr(&o));
    let o = inspect(&["dump", "x.vgt", "--kind", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
}
