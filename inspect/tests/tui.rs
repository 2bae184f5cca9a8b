//! The terminal browser's screens rendered on ratatui's TestBackend at 80x24 and compared with
//! snapshots, its actions, and one run of the real binary in tmux.
//!
//! Snapshots are deterministic: the synthetic capture's clock is fake, the name shown is fixed,
//! and every test waits for the background index before drawing (its progress percentage is the
//! only value that would otherwise vary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use vgt_format::testing::CaptureBuilder;
use vgt_format::wire::{Command, FLAG_FENCE, Request};
use vgt_format::{CaptureReader, CaptureWriter, WriterOptions};
use vgt_inspect::tui::app::{Action, App, View};
use vgt_inspect::tui::draw::draw;

/// `vgt_format::testing::boot_with_error_and_fence`: a boot with three updates, then a flush
/// of a resource that does not exist (an error response and an `ids` finding), a fenced flush
/// and the end of the capture.
fn capture(dir: &Path) -> PathBuf {
    let path = dir.join("boot.vgt");
    std::fs::write(
        &path,
        vgt_format::testing::boot_with_error_and_fence().unwrap(),
    )
    .unwrap();
    path
}

fn app(dir: &Path) -> App {
    let reader = CaptureReader::open(capture(dir)).unwrap();
    let mut app = App::new(Arc::new(reader), "boot.vgt", true);
    app.wait_index();
    app
}

/// Prepares and draws at 80x24; returns the screen as text.
fn screen(app: &mut App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    app.prepare(Rect::new(0, 0, 80, 24));
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().to_string()
}

#[test]
fn list_screen() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    insta::assert_snapshot!("list", screen(&mut app));
}

#[test]
fn detail_of_a_transfer_shows_fields_memory_pixels_and_response() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    // #9 is the first TRANSFER_TO_HOST_2D (session, 4 exchanges, then the transfer).
    app.apply(Action::Jump(9));
    let s = screen(&mut app);
    insta::assert_snapshot!("detail", s);
    let detail = app.detail.as_ref().unwrap();
    let text: Vec<String> = detail.lines.iter().map(|l| l.to_string()).collect();
    let all = text.join("\n");
    assert!(all.contains("TransferToHost2d.r.width: 32"), "{all}");
    assert!(all.contains("raw bytes (56)"), "{all}");
    assert!(
        all.contains("memory read #11: 1024 bytes at 0x100000000"),
        "{all}"
    );
    assert!(all.contains("response #10"), "{all}");
    assert_eq!(detail.link, Some(10));
    // The pixel preview: half blocks whose colours come from the guest bytes.
    let blocks = detail
        .lines
        .iter()
        .flat_map(|l| l.spans.iter())
        .filter(|s| s.content == "▀")
        .count();
    assert!(blocks >= 32, "{blocks} half blocks");
    app.apply(Action::ScrollDetail(5));
    assert_eq!(app.detail_scroll, 5);
    app.apply(Action::ScrollDetail(-50));
    assert_eq!(app.detail_scroll, 0);
}

#[test]
fn resources_screen_shows_state_at_the_selection_and_jumps_to_creation() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::Jump(20));
    app.apply(Action::Show(View::Resources));
    insta::assert_snapshot!("resources", screen(&mut app));
    app.apply(Action::Follow);
    assert_eq!(app.view, View::List);
    assert_eq!(
        app.selected_id(),
        Some(3),
        "RESOURCE_CREATE_2D of resource 2"
    );
}

#[test]
fn timeline_screen_zooms_and_pans() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::Show(View::Timeline));
    insta::assert_snapshot!("timeline", screen(&mut app));
    let whole = app.timeline_window();
    app.apply(Action::ZoomIn);
    let zoomed = app.timeline_window();
    assert_eq!(zoomed.1, whole.1 / 2);
    app.apply(Action::PanRight);
    assert_eq!(app.timeline_window().0, zoomed.0 + zoomed.1 / 4);
    app.apply(Action::ZoomReset);
    assert_eq!(app.timeline_window(), whole);
}

#[test]
fn help_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::ToggleHelp);
    insta::assert_snapshot!("help", screen(&mut app));
    app.apply(Action::ToggleHelp);
    assert!(!app.help);
}

#[test]
fn filter_typed_then_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::StartFilter);
    for c in "type:flush".chars() {
        app.apply(Action::FilterChar(c));
    }
    insta::assert_snapshot!("filter_typing", screen(&mut app));
    app.apply(Action::FilterCommit);
    insta::assert_snapshot!("filter_applied", screen(&mut app));
    // 3 boot flushes + the failed one + the fenced one.
    assert_eq!(app.count(), 5);
    app.apply(Action::ClearFilter);
    assert_eq!(app.count(), app.len);
}

#[test]
fn filters_by_resource_code_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    let apply = |app: &mut App, text: &str| {
        // `/` starts from the current filter's text: clear it to type a new one.
        app.apply(Action::ClearFilter);
        app.apply(Action::StartFilter);
        for c in text.chars() {
            app.apply(Action::FilterChar(c));
        }
        app.apply(Action::FilterCommit);
        app.filter
            .as_ref()
            .map(|(_, ids)| ids.clone())
            .unwrap_or_default()
    };
    let errs = apply(&mut app, "err");
    assert_eq!(errs, vec![30, 31], "the failed flush and its response");
    let code = apply(&mut app, "kind:command code:invalid_resource");
    assert_eq!(code, vec![30]);
    let fence = apply(&mut app, "fence:1");
    assert_eq!(fence, vec![32, 33]);
    let res9 = apply(&mut app, "res:9 kind:command");
    assert_eq!(res9, vec![30]);
    let _ = apply(&mut app, "res:x");
    assert!(app.message.as_deref().unwrap().contains("not a number"));
}

#[test]
fn next_error_follow_and_click_move_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    screen(&mut app);
    app.apply(Action::NextMark);
    assert_eq!(app.selected_id(), Some(30));
    app.apply(Action::NextMark);
    assert_eq!(app.selected_id(), Some(31));
    app.apply(Action::PrevMark);
    assert_eq!(app.selected_id(), Some(30));
    app.apply(Action::Follow);
    assert_eq!(app.selected_id(), Some(31));
    app.apply(Action::Follow);
    assert_eq!(app.selected_id(), Some(30));
    app.apply(Action::Top);
    screen(&mut app);
    // Row 2 of the screen is the first list row (status line, then the list border).
    app.apply(Action::Click(10, 5));
    assert_eq!(app.selected_id(), Some(3));
}

#[test]
fn only_visible_rows_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(8, 8, 2000).unwrap();
    b.finish().unwrap();
    let reader = Arc::new(CaptureReader::open(&path).unwrap());
    let mut app = App::new(reader.clone(), "long.vgt", false);
    app.prepare(Rect::new(0, 0, 80, 24));
    assert!(app.rows.len() <= 10, "{} rows read", app.rows.len());
    app.apply(Action::Bottom);
    app.prepare(Rect::new(0, 0, 80, 24));
    assert_eq!(app.selected_id(), Some(reader.len() - 1));
    assert!(app.rows.len() <= 20, "{} rows read", app.rows.len());
}

#[test]
fn real_terminal_in_tmux_browses_and_quits() {
    use std::process::Command as Proc;
    if Proc::new("tmux").arg("-V").output().is_err() {
        println!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = capture(dir.path());
    let session = format!("vgt-inspect-test-{}", std::process::id());
    let tmux = |args: &[&str]| Proc::new("tmux").args(args).output().expect("run tmux");
    let bin = env!("CARGO_BIN_EXE_vgt-inspect");
    let cmd = format!("{bin} {}; echo EXITED=$?; sleep 30", path.display());
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let capture = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout).into_owned()
    };
    let wait_for = |needle: &str| -> String {
        for _ in 0..100 {
            let s = capture();
            if s.contains(needle) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let s = capture();
        tmux(&["kill-session", "-t", &session]);
        panic!("{needle:?} never appeared:\n{s}");
    };
    wait_for("boot.vgt | 35 records");
    wait_for("marks");
    tmux(&["send-keys", "-t", &session, "n"]);
    let s = wait_for("ERR_INVALID_RESOURCE_ID");
    assert!(s.contains("INVALID_RESOURCE_ID"), "{s}");
    tmux(&["send-keys", "-t", &session, "?"]);
    wait_for("keys (? closes)");
    tmux(&["send-keys", "-t", &session, "?", "Tab"]);
    wait_for("device state after #30");
    tmux(&["send-keys", "-t", &session, "q"]);
    let s = wait_for("EXITED=0");
    tmux(&["kill-session", "-t", &session]);
    // The alternate screen is gone: the browser's frame is no longer on the terminal.
    assert!(!s.contains("device state after"), "{s}");
}

#[test]
fn every_view_draws_at_tiny_and_huge_sizes_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::Jump(9));
    for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (200, 60), (400, 2)] {
        for view in [View::List, View::Resources, View::Timeline] {
            for help in [false, true] {
                app.apply(Action::Show(view));
                app.help = help;
                let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
                app.prepare(Rect::new(0, 0, w, h));
                terminal.draw(|f| draw(f, &app)).unwrap();
            }
        }
    }
    // Zoomed far in and panned past the end, the timeline still draws.
    app.apply(Action::Show(View::Timeline));
    for _ in 0..40 {
        app.apply(Action::ZoomIn);
        app.apply(Action::PanRight);
    }
    let s = screen(&mut app);
    assert!(s.contains("timeline"), "{s}");
}

#[test]
fn frame_detail_has_a_pixel_preview() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    // #15 is the first frame (after the transfer exchange, two reads and the flush exchange).
    app.apply(Action::Jump(15));
    screen(&mut app);
    let d = app.detail.as_ref().unwrap();
    let text: String = d.lines.iter().map(|l| l.to_string() + "\n").collect();
    assert!(text.contains("frame 32x16"), "{text}");
    assert_eq!(d.link, Some(13), "the flush that made it");
    let rows = d
        .lines
        .iter()
        .filter(|l| l.spans.iter().any(|s| s.content == "▀"))
        .count();
    assert_eq!(rows, 8, "16 pixel rows in 8 half-block lines");
}

#[test]
fn resources_view_lists_destroyed_resources_and_jumps_to_their_destruction() {
    use vgt_format::wire::{Format, ResourceCreate2d, ResourceUnref};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unref.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(8, 8, 1).unwrap();
    let created = b
        .ok(Request::new(Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: 5,
            format: Format::B8G8R8A8_UNORM,
            width: 4,
            height: 4,
        })))
        .unwrap();
    let unref = b
        .ok(Request::new(Command::ResourceUnref(ResourceUnref {
            resource_id: 5,
            padding: 0,
        })))
        .unwrap();
    b.finish().unwrap();
    let reader = Arc::new(CaptureReader::open(&path).unwrap());
    let mut app = App::new(reader, "unref.vgt", true);
    app.wait_index();
    app.apply(Action::Bottom);
    app.apply(Action::Show(View::Resources));
    let s = screen(&mut app);
    assert!(s.contains("1 live resources, 1 retired"), "{s}");
    assert!(
        s.contains(&format!("#{created}")) && s.contains(&format!("#{unref}")),
        "{s}"
    );
    app.apply(Action::Down(1));
    app.apply(Action::FollowDestroyed);
    assert_eq!(app.selected_id(), Some(unref));
    app.apply(Action::Show(View::Resources));
    screen(&mut app);
    app.apply(Action::Down(1));
    app.apply(Action::Follow);
    assert_eq!(app.selected_id(), Some(created));
}

#[test]
fn timeline_has_a_track_per_fence_ring() {
    use vgt_format::wire::FLAG_INFO_RING_IDX;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rings.vgt");
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(8, 8, 1).unwrap();
    for (ring, fence) in [(3u8, 1u64), (5, 2)] {
        let mut r = Request::new(Command::Submit3d(Default::default()));
        r.header.flags = FLAG_FENCE | FLAG_INFO_RING_IDX;
        r.header.fence_id = fence;
        r.header.ctx_id = 1;
        r.header.ring_idx = ring;
        b.ok(r).unwrap();
    }
    b.finish().unwrap();
    let reader = Arc::new(CaptureReader::open(&path).unwrap());
    let mut app = App::new(reader, "rings.vgt", true);
    app.wait_index();
    app.apply(Action::Show(View::Timeline));
    let s = screen(&mut app);
    for track in ["controlq", "c1 r3 fences", "c1 r5 fences"] {
        assert!(s.contains(track), "{track} missing:\n{s}");
    }
}

#[test]
fn panic_in_browser_mode_restores_the_terminal() {
    use std::process::Command as Proc;
    if Proc::new("tmux").arg("-V").output().is_err() {
        println!("skipped: tmux is not installed");
        return;
    }
    // Examples are built by `cargo test` next to the test binaries' `deps` folder.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join("panic_in_browser");
    if !example.exists() {
        println!("skipped: {} is not built", example.display());
        return;
    }
    let session = format!("vgt-inspect-panic-{}", std::process::id());
    let tmux = |args: &[&str]| Proc::new("tmux").args(args).output().expect("run tmux");
    let cmd = format!(
        "{} 2>&1; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; echo DONE; sleep 30",
        example.display()
    );
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut screen = String::new();
    for _ in 0..100 {
        screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-t", &session, "-p"]).stdout)
            .into_owned();
        if screen.contains("DONE") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tmux(&["kill-session", "-t", &session]);
    assert!(screen.contains("DONE"), "{screen}");
    assert!(
        screen.contains("deliberate panic inside the browser"),
        "{screen}"
    );
    // Canonical mode is back (raw mode shows `-icanon`) and the alternate screen is gone.
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert!(!screen.contains("BROWSER-SCREEN"), "{screen}");
}

#[test]
fn filtering_at_the_end_of_the_list_keeps_the_screen_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    app.apply(Action::Bottom);
    screen(&mut app);
    app.apply(Action::StartFilter);
    for c in "kind:command".chars() {
        app.apply(Action::FilterChar(c));
    }
    app.apply(Action::FilterCommit);
    let s = screen(&mut app);
    // 12 commands; the list shows the last 10 of them with the selection on the last.
    assert_eq!(app.count(), 12);
    assert_eq!(app.top, 2);
    assert_eq!(app.selected_id(), Some(32));
    assert!(s.contains("RESOURCE_FLUSH"), "{s}");
}

#[test]
fn free_text_in_a_decoded_field_finds_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    let reader = CaptureReader::open(dir.path().join("boot.vgt")).unwrap();
    for text in ["32x16", "flush 32X16"] {
        app.apply(Action::ClearFilter);
        app.apply(Action::StartFilter);
        for c in text.chars() {
            app.apply(Action::FilterChar(c));
        }
        app.apply(Action::FilterCommit);
        let got = app.filter.as_ref().map(|(_, ids)| ids.clone()).unwrap();
        // Every word in the kind/type names or in the decoded one-line description.
        let want: Vec<u64> = reader
            .iter_range(0..reader.len())
            .flatten()
            .filter(|(id, r)| {
                let hay = format!(
                    "{} {}",
                    r.body.kind().name(),
                    vgt_inspect::describe::describe(r, &reader)
                )
                .to_ascii_uppercase();
                let s = &app.index.as_ref().unwrap().table[*id as usize];
                let names = vgt_inspect::tui::filter::code_name(s.kind, s.code);
                text.split_whitespace().all(|w| {
                    let w = w.to_ascii_uppercase();
                    hay.contains(&w) || names.contains(&w)
                })
            })
            .map(|(id, _)| id)
            .collect();
        assert!(!want.is_empty(), "{text}: nothing decodes to it");
        assert_eq!(got, want, "{text}");
        assert!(!app.message.as_deref().unwrap().contains("only"));
    }
    // The size appears only in decoded fields: the name-only filter finds nothing.
    let f = vgt_inspect::tui::filter::Filter::parse("32x16").unwrap();
    let ix = app.index.as_ref().unwrap();
    assert!(f.apply(&ix.table, &ix.marks).is_empty());
}
