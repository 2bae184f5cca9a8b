//! Replay against real backend binaries (`vgt-replay --backend-cmd`): QEMU's C backend
//! (/usr/lib/qemu/vhost-user-gpu, installed by samples/guest/setup.sh) and rust-vmm's
//! vhost-device-gpu (scripts/install-vhost-device-gpu.sh). The real samples replay on QEMU's
//! backend with its responses identical and only its known display differences, a command that
//! kills a backend is named (and reported as reproduced where the capture recorded the crash),
//! a backend that stops answering or dies is reported at the command, and bad backend arguments
//! get one line and exit status 2.
//!
//! Skipped (with a message) where a backend is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use vgt_format::CaptureReader;
use vgt_format::record::{Lifecycle, LifecycleKind, Record, RecordBody, RecordId};
use vgt_format::wire::{self, BlobFlags, BlobMem, Command as Cmd, MemEntry, Request};
use vgt_replay::backend::{BackendOptions, BackendSpec};
use vgt_replay::{DivergenceKind, ReplayObserver, ReplayOptions, ReplayReport, Replayer};

use vgt_e2e::backends::QEMU_GPU_BACKEND as C_BACKEND;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn c_backend() -> Option<String> {
    if Path::new(C_BACKEND).exists() {
        Some(format!("{C_BACKEND} --socket-path %s"))
    } else {
        eprintln!("skipped: {C_BACKEND} is not installed (samples/guest/setup.sh installs it)");
        None
    }
}

/// vhost-device-gpu in null mode (installs it into the cache outside the repo when missing).
fn vhost_device_gpu() -> Option<String> {
    let Some(bin) = vgt_e2e::backends::vhost_device_gpu() else {
        eprintln!("skipped: vhost-device-gpu could not be installed");
        return None;
    };
    Some(format!(
        "{} --socket-path %s --gpu-mode null",
        bin.display()
    ))
}

fn replay_on(bytes_or_path: &Path, cmd: &str, observer: &mut dyn ReplayObserver) -> ReplayReport {
    let reader = CaptureReader::open(bytes_or_path).unwrap();
    let options = ReplayOptions {
        keep_going: true,
        backend: Some(BackendOptions::new(BackendSpec::Command(cmd.to_owned()))),
        ..ReplayOptions::default()
    };
    Replayer::new(&reader, options).run(observer).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn vgt_replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgt-replay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends `signal` to the backend when replay reaches command record `at` (before it runs).
struct SignalAt {
    at: RecordId,
    pidfile: PathBuf,
    signal: i32,
    sent: bool,
}

impl ReplayObserver for SignalAt {
    fn progress(&mut self, record: RecordId) {
        if record >= self.at && !self.sent {
            let pid: i32 = std::fs::read_to_string(&self.pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SAFETY: kill(2) on the backend's pid, which this test started.
            assert_eq!(unsafe { libc::kill(pid, self.signal) }, 0);
            self.sent = true;
        }
    }
}

#[test]
fn samples_replay_on_qemus_backend_with_identical_responses_and_its_known_display_differences() {
    let Some(cmd) = c_backend() else { return };
    for sample in ["boot", "fb", "modes", "cursor"] {
        let path = root().join(format!("samples/{sample}.vgt"));
        let report = replay_on(&path, &cmd, &mut vgt_replay::Quiet);
        assert!(
            report
                .backend
                .as_deref()
                .is_some_and(|b| b.contains(C_BACKEND)),
            "{:?}",
            report.backend
        );
        assert!(
            report.commands > 20,
            "{sample}: {} commands",
            report.commands
        );
        assert_eq!(
            report.responses, report.commands,
            "{sample}: every response compared"
        );
        assert!(
            report.frames >= 7,
            "{sample}: {} frames compared",
            report.frames
        );
        assert!(
            report.unsupported.is_empty(),
            "{sample}: {:?}",
            report.unsupported
        );
        for d in &report.divergences {
            // QEMU's backend shows a scanout only at its first flush (vgt-device shows the
            // resource at SET_SCANOUT), and gives a cursor of resource 0 an empty image where
            // vgt-device hides the cursor. Nothing else may differ.
            let known = match &d.kind {
                DivergenceKind::MissingFrame { .. } => d.command_name == "SET_SCANOUT",
                DivergenceKind::Cursor {
                    expected: Some(e),
                    found: Some(f),
                } => {
                    d.command_name == "UPDATE_CURSOR"
                        && e.action == "hide"
                        && f.action == "update"
                        && f.resource_id == 0
                }
                _ => false,
            };
            assert!(known, "{sample}: {d}");
        }
        assert!(
            report
                .divergences
                .iter()
                .any(|d| matches!(d.kind, DivergenceKind::MissingFrame { .. })),
            "{sample}: the SET_SCANOUT difference is what this test knows QEMU's backend for"
        );
    }
}

#[test]
fn a_synthetic_session_replays_on_qemus_backend_frames_fences_and_cursor_included() {
    let Some(cmd) = c_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Transfers and flushes of new content (every third flush fenced) through a backing in two
    // pieces, a partial update, a 64x64 cursor, an error the guest caused.
    let path = write(dir.path(), "s.vgt", &linux_like(32, 16, 6).finish());
    let report = replay_on(&path, &cmd, &mut vgt_replay::Quiet);
    assert_eq!(report.responses, report.commands);
    let unexpected: Vec<String> = report
        .divergences
        .iter()
        .filter(|d| {
            !(matches!(d.kind, DivergenceKind::MissingFrame { .. })
                && d.command_name == "SET_SCANOUT")
        })
        .map(|d| d.to_string())
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    // 6 full frames and the partial one; the fences of flushes 3 and 6 in order.
    assert_eq!(report.frames, 7, "{report:?}");
    let loops = ReplayOptions {
        loops: 2,
        keep_going: true,
        backend: Some(BackendOptions::new(BackendSpec::Command(cmd.clone()))),
        ..ReplayOptions::default()
    };
    let reader = CaptureReader::open(&path).unwrap();
    let twice = Replayer::new(&reader, loops)
        .run(&mut vgt_replay::Quiet)
        .unwrap();
    assert_eq!(twice.loops, 2);
    assert!(
        !twice
            .divergences
            .iter()
            .any(|d| matches!(d.kind, DivergenceKind::Nondeterministic { .. })),
        "QEMU's backend on replay is deterministic: {:?}",
        twice.divergences
    );
}

/// A capture whose command `at` (a guest-memory RESOURCE_CREATE_BLOB) vgt-device serves, then a
/// flush; with `crash`, as if the backend it was recorded with (through the proxy) had gone
/// away with the blob command in flight.
fn blob_capture(crash: bool) -> (Vec<u8>, RecordId) {
    let mut r = linux_like(16, 8, 2);
    let blob = Request::new(Cmd::ResourceCreateBlob(wire::ResourceCreateBlob {
        resource_id: 9,
        blob_mem: BlobMem::GUEST,
        blob_flags: BlobFlags(0),
        nr_entries: 1,
        blob_id: 0,
        size: 4096,
        entries: vec![MemEntry {
            addr: RAM_BASE + 0xa0_0000,
            length: 4096,
            padding: 0,
        }],
    }));
    let at = r.submit(&blob);
    r.submit(&flush(1, rect(0, 0, 16, 8)));
    if crash {
        // As a proxy files it: after the last command it took, naming the one in flight.
        r.append(RecordBody::Lifecycle(Lifecycle {
            kind: LifecycleKind::Crash,
            queue: Some(0),
            command: Some(at),
            message: "in flight when the backend went away: RESOURCE_CREATE_BLOB".to_owned(),
        }));
    }
    (r.finish(), at)
}

#[test]
fn a_command_that_breaks_vhost_device_gpu_is_named_and_a_recorded_crash_is_reproduced() {
    let Some(cmd) = vhost_device_gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // vhost-device-gpu 0.2.0 panics on RESOURCE_CREATE_BLOB (reference 4.3) in its vring
    // worker thread: the process lives on, its queue never answers again.
    let replay = |path: &Path| {
        let reader = CaptureReader::open(path).unwrap();
        let options = ReplayOptions {
            keep_going: true,
            backend: Some(BackendOptions {
                spec: BackendSpec::Command(cmd.clone()),
                timeout: Duration::from_secs(2),
            }),
            ..ReplayOptions::default()
        };
        Replayer::new(&reader, options)
            .run(&mut vgt_replay::Quiet)
            .unwrap()
    };
    let (bytes, at) = blob_capture(false);
    let path = write(dir.path(), "blob.vgt", &bytes);
    let report = replay(&path);
    let last = report.divergences.last().expect("a divergence");
    assert_eq!(last.command, at, "{last}");
    assert_eq!(last.command_name, "RESOURCE_CREATE_BLOB");
    let DivergenceKind::Backend { message } = &last.kind else {
        panic!("{last}");
    };
    assert!(
        message.contains("did not complete RESOURCE_CREATE_BLOB within 2000 ms"),
        "{message}"
    );
    // Why: the panic message its worker thread wrote on stderr, quoted from the pipe replay
    // reads it through.
    assert!(
        message.contains("process still running; its stderr since its last answer")
            && message.contains("panicked at")
            && message.contains("GpuCommand::ResourceCreateBlob unimplemented"),
        "{message}"
    );
    // Nothing ran after it.
    assert!(report.commands <= at, "{} commands", report.commands);

    let (bytes, at) = blob_capture(true);
    let path = write(dir.path(), "crashed.vgt", &bytes);
    let report = replay(&path);
    let crash = report.reproduced_crash.as_ref().expect("reproduced");
    assert_eq!(crash.record, at);
    assert_eq!(crash.command_name, "RESOURCE_CREATE_BLOB");
    assert!(
        crash.replayed.contains("did not complete"),
        "{}",
        crash.replayed
    );
    assert!(
        !report
            .divergences
            .iter()
            .any(|d| matches!(d.kind, DivergenceKind::Backend { .. })),
        "{:?}",
        report.divergences
    );

    // The command line: the divergence on stderr, exit status 1.
    let out = vgt_replay(&[
        "--backend-cmd",
        &cmd,
        "--backend-timeout",
        "2",
        "--keep-going",
        dir.path().join("blob.vgt").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "record {at} (command {at} RESOURCE_CREATE_BLOB): the backend failed on replay"
        )),
        "{err}"
    );
    assert!(text(&out.stdout).contains("replayed against the backend"));
}

#[test]
fn a_backend_that_stops_answering_or_dies_is_reported_at_the_command() {
    let Some(backend) = c_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = linux_like(16, 8, 4).finish();
    let path = write(dir.path(), "s.vgt", &bytes);
    // The fourth full-screen transfer's record: replay stops the backend right before it.
    let at = records(&bytes)
        .into_iter()
        .filter(|(_, r)| matches!(&r.body, RecordBody::Command(_)))
        .map(|(id, _)| id)
        .nth(8)
        .unwrap();
    let pidfile = dir.path().join("backend.pid");
    let cmd = format!("sh -c 'echo $$ > {}; exec {backend}'", pidfile.display());
    for (signal, expect) in [
        (libc::SIGSTOP, "did not complete"),
        (libc::SIGKILL, "signal 9, SIGKILL"),
    ] {
        let reader = CaptureReader::open(&path).unwrap();
        let options = ReplayOptions {
            keep_going: true,
            backend: Some(BackendOptions {
                spec: BackendSpec::Command(cmd.clone()),
                timeout: Duration::from_millis(500),
            }),
            ..ReplayOptions::default()
        };
        let mut observer = SignalAt {
            at,
            pidfile: pidfile.clone(),
            signal,
            sent: false,
        };
        let report = Replayer::new(&reader, options).run(&mut observer).unwrap();
        assert!(observer.sent);
        // QEMU's backend shows nothing at SET_SCANOUT (the known difference); then the failure,
        // and nothing after it.
        let d = report.divergences.last().unwrap();
        assert!(
            report.divergences[..report.divergences.len() - 1]
                .iter()
                .all(|d| d.command_name == "SET_SCANOUT"),
            "{:?}",
            report.divergences
        );
        assert_eq!(d.command, at, "{d}");
        let DivergenceKind::Backend { message } = &d.kind else {
            panic!("{d}");
        };
        assert!(message.contains(expect), "{message}");
        assert!(!report.is_identical());
    }
}

#[test]
fn a_driver_restart_restarts_the_backends_rings_and_replay_goes_on() {
    // vhost-device-gpu takes the display socket QEMU hands over after a reset. (QEMU's C
    // backend keeps the first one until a write to it fails: it refuses the second
    // GPU_SET_SOCKET, "assertion 'g->sock_fd == -1' failed", and dies of SIGPIPE at its next
    // display message; replay reports that as the backend failing at that command.)
    let Some(cmd) = vhost_device_gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut r = linux_like(16, 8, 2);
    r.reset();
    // QEMU hands over a new display socket when the rebooted driver sets DRIVER_OK: that is
    // what makes replay restart a backend (the Reset record is vgt-capture's own device's).
    r.append(RecordBody::Lifecycle(Lifecycle {
        kind: LifecycleKind::DriverOk,
        queue: None,
        command: None,
        message: "GPU_SET_SOCKET".to_owned(),
    }));
    // After the reset the guest starts over (its resources went with the reset).
    let fb = RAM_BASE + 0x20_0000;
    r.submit(&Request::new(Cmd::GetDisplayInfo));
    r.submit(&create_2d(3, wire::Format::B8G8R8X8_UNORM, 16, 8));
    r.submit(&attach(3, &[(fb, 16 * 8 * 4)]));
    r.poke(fb, &pattern(16 * 8 * 4, 5));
    r.submit(&transfer(3, rect(0, 0, 16, 8), 0));
    let path = write(dir.path(), "reset.vgt", &r.finish());
    let report = replay_on(&path, &cmd, &mut vgt_replay::Quiet);
    // Every command, those after the reset included, answered on the restarted rings (the
    // null renderer answers OK_NODATA to everything: its responses and frames differ).
    assert_eq!(
        report.responses, report.commands,
        "{:?}",
        report.divergences
    );
    assert_eq!(
        report.commands,
        records(&std::fs::read(&path).unwrap())
            .iter()
            .filter(|(_, r)| matches!(r.body, RecordBody::Command(_)))
            .count() as u64
    );
    assert!(
        !report.divergences.iter().any(|d| matches!(
            d.kind,
            DivergenceKind::Backend { .. } | DivergenceKind::MissingResponse { .. }
        )),
        "{:#?}",
        report.divergences
    );
    // QEMU's C backend shows that replay closed the first display socket and handed over a
    // second one: it refuses the second and dies writing to the first.
    let Some(c) = c_backend() else { return };
    let report = replay_on(&path, &c, &mut vgt_replay::Quiet);
    let d = report.divergences.last().unwrap();
    assert_eq!(d.command_name, "GET_DISPLAY_INFO", "{d}");
    assert!(d.command > 40, "{d}");
    let DivergenceKind::Backend { message } = &d.kind else {
        panic!("{d}");
    };
    // Killed by SIGPIPE; why, in its own words: it refused the second socket (written at the
    // restart, after its last answer and before the command it died on).
    assert!(message.contains("process killed by signal 13"), "{message}");
    assert!(
        message.contains("assertion 'g->sock_fd == -1' failed"),
        "{message}"
    );
}

#[test]
fn a_backend_already_listening_on_a_socket_is_replayed_against_with_a_json_summary() {
    if c_backend().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.vgt", &linux_like(16, 8, 2).finish());
    let sock = dir.path().join("backend.sock");
    let mut backend = Command::new(C_BACKEND)
        .arg("--socket-path")
        .arg(&sock)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no backend socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = vgt_replay(&[
        "--backend",
        sock.to_str().unwrap(),
        "--keep-going",
        "--json",
        path.to_str().unwrap(),
    ]);
    // The C backend's SET_SCANOUT difference: diverged, exit status 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["backend"],
        format!("backend at {}", sock.display()),
        "{v}"
    );
    assert_eq!(v["responses"], v["commands"]);
    assert_eq!(v["identical"], false);
    // The backend ends with its front-end.
    let start = std::time::Instant::now();
    while backend.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backend still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// vgt-replay's stdout is its report: what a started backend writes on its stdout (glib sends
/// g_message and g_info there) goes to replay's stderr, so `--json | jq` reads one document.
#[test]
fn a_started_backends_stdout_goes_to_stderr_and_the_json_summary_stays_whole() {
    let Some(backend) = c_backend() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.vgt", &linux_like(16, 8, 2).finish());
    let cmd = format!("sh -c 'echo hello from the backend; exec {backend}'");
    let out = vgt_replay(&[
        "--backend-cmd",
        &cmd,
        "--keep-going",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}", text(&out.stdout)));
    assert_eq!(v["responses"], v["commands"], "{v}");
    assert!(
        text(&out.stderr).contains("hello from the backend"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_backend_arguments_get_one_line_and_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.vgt", &linux_like(8, 4, 1).finish());
    let file = path.to_str().unwrap();
    let missing = dir.path().join("nobody.sock");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--backend", missing.to_str().unwrap(), file],
            "cannot connect to the backend",
        ),
        (
            vec!["--backend-cmd", "sh -c 'exit 3'", file],
            "exited (exit status: 3) before listening",
        ),
        (
            vec!["--backend", missing.to_str().unwrap(), "--loop", "2", file],
            "--loop needs --backend-cmd",
        ),
        (
            vec!["--backend-cmd", "true", "--backend-timeout", "0", file],
            "--backend-timeout",
        ),
        (
            vec!["--backend-cmd", "x", "--backend", "y", file],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let out = vgt_replay(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Guest addresses beyond what replay maps for a backend.
    let bytes = std::fs::read(&path).unwrap();
    let far = rewrite(&bytes, |_, mut r: Record| {
        if let RecordBody::Command(c) = &mut r.body {
            for d in &mut c.descriptors {
                d.addr += 1 << 45;
            }
        }
        Some(r)
    });
    let far = write(dir.path(), "far.vgt", &far);
    // A real backend refusing its arguments: the error quotes why.
    if let Some(c) = c_backend() {
        let wrong = format!("{c} --no-such-option");
        let out = vgt_replay(&["--backend-cmd", &wrong, file]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.contains("before listening"))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            line.contains("exited (exit status: 1)")
                && line.contains("its stderr: ")
                && line.contains("Unknown option --no-such-option"),
            "{err}"
        );
    }
    let out = vgt_replay(&["--backend-cmd", "true", far.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("beyond the 1024 GiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
