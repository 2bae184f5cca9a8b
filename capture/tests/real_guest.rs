//! The real thing: a Linux guest's virtio-gpu driver and QEMU's vhost-user-gpu front end talk to
//! the `vgt-capture` binary. Per workload of `samples/guest/` (boot, fb, modes with 2 scanouts,
//! cursor) the guest runs to `VGT-WORKLOAD-DONE`, QEMU's screendumps (QMP) are compared pixel
//! for pixel with the last Frame of each scanout and with what the guest drew, and the capture
//! is checked: clean file, expected command sequence, no error responses, no validation or
//! error lifecycle events, a driver log free of errors. A second test kills vgt-capture with
//! SIGKILL in the middle of the fb workload and opens what it left. Others reboot the guest, and
//! run README's first command, `scripts/capture-demo`, as a newcomer would.
//!
//! Needs QEMU >= 8 and the guest from `samples/guest/setup.sh` (scripts/test runs it first).
//! Without them these tests fail and say so, unless `VGT_SKIP_E2E=1` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use vgt_e2e::capture::Summary;
use vgt_e2e::guest::{BootOptions, CaptureProcess, GuestPaths, GuestRun, wait_timeout};
use vgt_e2e::image::{FB_FRAMES, Rgb, cursor_image, drm_pattern, fb_frame};
use vgt_e2e::qmp::Qmp;
use vgt_format::record::LifecycleKind;
use vgt_format::wire::CommandType as C;

/// One guest at a time: the machine has few cores and the guests run under TCG.
static SERIAL: Mutex<()> = Mutex::new(());

/// The vgt-capture binary under test: this package's build, or `VGT_CAPTURE_BIN`.
fn capture_bin() -> PathBuf {
    std::env::var_os("VGT_CAPTURE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vgt-capture")))
}

/// `None` (and a line saying so) when the e2e tests are to be skipped; panics with the setup
/// hint when the guest is missing.
fn guest_or_skip(test: &str) -> Option<GuestPaths> {
    if std::env::var("VGT_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("real-guest: {test}: skipped (VGT_SKIP_E2E=1)");
        return None;
    }
    match GuestPaths::load() {
        Ok(p) => Some(p),
        Err(e) => panic!("real-guest: {test}: {e:#}"),
    }
}

/// What the guest leaves on head `head` of `workload`, when it is a known pattern.
fn expected_image(workload: &str, head: u32) -> Option<Rgb> {
    match (workload, head) {
        ("fb", 0) => Some(fb_frame(FB_FRAMES - 1, 1280, 800)),
        ("modes", 0) => Some(drm_pattern(0, 1, 800, 600)),
        ("modes", 1) => Some(drm_pattern(1, 0, 1024, 768)),
        ("cursor", 0) => Some(drm_pattern(0, 0, 1280, 800)),
        _ => None,
    }
}

struct Timing {
    done: Duration,
    total: Duration,
}

/// Screendumps every head and compares each with the capture's last frame of that scanout and
/// with the expected image. Returns the screendumps once all agree, or the last disagreement.
fn shots_agree(
    qmp: &mut Qmp,
    capture: &Path,
    dir: &Path,
    workload: &str,
    heads: u32,
) -> Result<Vec<Rgb>> {
    let mut shots = Vec::new();
    for head in 0..heads {
        let file = dir.join(format!("head{head}.ppm"));
        qmp.screendump(&file, "gpu0", head)?;
        shots.push(
            Rgb::from_ppm(&std::fs::read(&file)?).with_context(|| file.display().to_string())?,
        );
    }
    let summary = Summary::read(capture)?;
    for (head, shot) in (0..heads).zip(&shots) {
        if let Some(want) = expected_image(workload, head) {
            shot.check_equal(
                &want,
                &format!("head {head}: screendump vs the guest's image"),
            )?;
        }
        let frame = summary.last_frame_rgb(head)?;
        frame.check_equal(
            shot,
            &format!("head {head}: last captured frame vs screendump"),
        )?;
    }
    Ok(shots)
}

/// Boots `workload` through vgt-capture, checks the screendumps against the capture while the
/// guest holds, quits QEMU and checks the finished capture.
/// Runs `workload` through a vgt-capture started with `extra` arguments, in `root/name`.
fn run_workload(
    name: &str,
    workload: &str,
    outputs: u32,
    extra: &[&str],
    root: &Path,
) -> Result<Timing> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut capture = CaptureProcess::spawn(&capture_bin(), &dir, outputs, extra)?;
    let start = Instant::now();
    let mut guest = GuestRun::boot(
        &capture.socket,
        &dir,
        &BootOptions {
            workload: workload.into(),
            outputs,
            hold: 300,
            qmp: true,
            timeout_s: 400,
            append: Vec::new(),
            reboot: false,
        },
    )?;
    guest.wait_done(Duration::from_secs(240))?;
    let done = start.elapsed();

    // The last frames may still be on their way when the guest says DONE: retry for a while.
    let mut qmp = Qmp::connect(
        guest.qmp.as_deref().context("no QMP socket")?,
        Duration::from_secs(10),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    let shots = loop {
        attempts += 1;
        match shots_agree(&mut qmp, &capture.output, &dir, workload, outputs) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                if std::env::var_os("VGT_E2E_VERBOSE").is_some() {
                    eprintln!(
                        "real-guest: {workload}: {:.1} s: attempt {attempts}: {e:#}",
                        start.elapsed().as_secs_f64()
                    );
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => return Err(e.context("screendumps never matched the capture")),
        }
    };
    qmp.quit()?;
    let status = guest
        .wait_exit(Duration::from_secs(60))?
        .context("QEMU did not exit within 60 s of QMP quit")?;
    ensure!(
        status.success(),
        "run-guest.sh exited {status}: {}",
        guest.log_text()
    );
    let status = wait_timeout(&mut capture.child, Duration::from_secs(30))?
        .context("vgt-capture did not exit within 30 s of QEMU")?;
    ensure!(
        status.success(),
        "vgt-capture exited {status}: {}",
        capture.log_text()
    );
    let total = start.elapsed();

    // The guest driver's own log.
    let serial = guest.serial_text();
    ensure!(
        serial.contains("[drm] Initialized virtio_gpu"),
        "no '[drm] Initialized virtio_gpu' in the serial log:\n{serial}"
    );
    if let Some(l) = serial
        .lines()
        .find(|l| l.contains("*ERROR*") || l.contains("timed out"))
    {
        bail!("the guest driver logged an error: {l}");
    }

    check_finished_capture(&capture.output, workload, outputs, &shots)?;
    Ok(Timing { done, total })
}

fn check_finished_capture(path: &Path, workload: &str, outputs: u32, shots: &[Rgb]) -> Result<()> {
    let s = Summary::read(path)?;
    s.check_healthy()?;
    match workload {
        "boot" => {
            // The init writes the end of the kernel log to the framebuffer console.
            let last = s.last_frame_rgb(0)?;
            ensure!(
                last.pixels.chunks(3).any(|p| p != &last.pixels[..3]),
                "boot: the last frame is a single colour, not the console's text"
            );
        }
        "fb" => {
            // 50 whole-screen writes; the fbdev damage worker merges some of them.
            ensure!(
                s.count(C::TRANSFER_TO_HOST_2D) >= 5,
                "fb: {:?}",
                s.sequence()
            );
            ensure!(s.count(C::RESOURCE_FLUSH) >= 5, "fb: {:?}", s.sequence());
        }
        "modes" => {
            // fbdev's buffer, one per scanout, two flip buffers at the new size.
            ensure!(
                s.count(C::RESOURCE_CREATE_2D) >= 5,
                "modes: {:?}",
                s.sequence()
            );
            ensure!(s.count(C::SET_SCANOUT) >= 6, "modes: {:?}", s.sequence());
        }
        "cursor" => {
            ensure!(s.count(C::UPDATE_CURSOR) >= 2, "cursor: {:?}", s.sequence());
            ensure!(s.count(C::MOVE_CURSOR) >= 8, "cursor: {:?}", s.sequence());
            check_cursor_records(&s)?;
        }
        _ => {}
    }

    // Frames: one stream per scanout, the last equal to QEMU's screendump.
    for head in 0..outputs {
        ensure!(
            s.frame_counts.get(&head).copied().unwrap_or(0) > 0,
            "no frames for scanout {head}: {:?}",
            s.frame_counts
        );
        let frame = s.last_frame_rgb(head)?;
        frame.check_equal(
            &shots[head as usize],
            &format!("finished capture, head {head}: last frame vs screendump"),
        )?;
    }
    Ok(())
}

/// Cursor records: both images as the guest drew them, and the last position.
fn check_cursor_records(s: &Summary) -> Result<()> {
    let images = s.cursor_images()?;
    ensure!(images.len() >= 2, "{} cursor images recorded", images.len());
    ensure!(
        images[0] == cursor_image(0),
        "first cursor image differs from image 0"
    );
    ensure!(
        images[images.len() - 1] == cursor_image(1),
        "last cursor image differs from image 1"
    );
    let last = s.cursors.last().context("no cursor records")?;
    // The last DRM_MODE_CURSOR_MOVE went to (100 + 50k, 80 + 30k), k = 7 (the image's top-left
    // corner; the hotspot travels separately).
    let want = (100 + 50 * 7, 80 + 30 * 7);
    ensure!(
        (last.x, last.y) == want,
        "last cursor position {:?}, expected {want:?} (record {last:?})",
        (last.x, last.y)
    );
    Ok(())
}

fn keep_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("VGT_E2E_KEEP") {
        Some(d) => {
            let p = PathBuf::from(d);
            std::fs::create_dir_all(&p).unwrap();
            (None, p)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

#[test]
fn real_guest_workloads_match_screendumps_and_the_guests_images() {
    let Some(_paths) = guest_or_skip("workloads") else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, root) = keep_dir();
    let start = Instant::now();
    let mut failures = Vec::new();
    let only = std::env::var("VGT_E2E_WORKLOADS").unwrap_or_default();
    // The default crash-safe file for each workload, and fb once more in buffered mode (its
    // writer thread's O_DIRECT file, or the mapped one where O_DIRECT is refused).
    let runs: [(&str, &str, u32, &[&str]); 5] = [
        ("boot", "boot", 1, &[]),
        ("fb", "fb", 1, &[]),
        ("modes", "modes", 2, &[]),
        ("cursor", "cursor", 1, &[]),
        ("fb-buffered", "fb", 1, &["--sync", "buffered"]),
    ];
    for (name, workload, outputs, extra) in runs {
        if !only.is_empty() && !only.split(',').any(|w| w == name) {
            continue;
        }
        match run_workload(name, workload, outputs, extra, &root) {
            Ok(t) => eprintln!(
                "real-guest: {name:<11} outputs {outputs}: ok; done {:.1} s after boot, total {:.1} s",
                t.done.as_secs_f64(),
                t.total.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("real-guest: {name}: FAILED: {e:#}");
                failures.push(name);
            }
        }
    }
    eprintln!(
        "real-guest: the runs took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "failed: {failures:?} (files in {}; set VGT_E2E_KEEP=DIR to keep them)",
        root.display()
    );
}

#[test]
fn sigkill_mid_fb_workload_keeps_every_command() {
    let Some(_paths) = guest_or_skip("sigkill") else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, root) = keep_dir();
    let dir = root.join("sigkill");
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    let mut capture = CaptureProcess::spawn(&capture_bin(), &dir, 1, &[]).unwrap();
    let mut guest = GuestRun::boot(
        &capture.socket,
        &dir,
        &BootOptions {
            workload: "fb".into(),
            outputs: 1,
            hold: 0,
            qmp: false,
            timeout_s: 300,
            append: Vec::new(),
            reboot: false,
        },
    )
    .unwrap();

    // Wait until the fb writes are flowing (some of the 50 frames transferred), then kill.
    let seen_before_kill = loop {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the fb workload never got going; serial log:\n{}",
            guest.serial_text()
        );
        assert!(
            matches!(guest.wait_exit(Duration::ZERO), Ok(None)),
            "QEMU exited before the kill: {}",
            guest.log_text()
        );
        if let Ok(s) = Summary::read(&capture.output) {
            let transfers = s.count(C::TRANSFER_TO_HOST_2D);
            if transfers >= 8 {
                break s.commands.len();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    capture.kill9().unwrap();
    // QEMU loses its back-end; it must not outlive the test.
    guest.kill();
    assert!(
        matches!(guest.wait_exit(Duration::from_secs(10)), Ok(Some(_))),
        "QEMU still running"
    );

    let s = Summary::read(&capture.output).expect("the file left by SIGKILL opens");
    let health = s.reader.health();
    assert!(!health.indexed, "no index after a SIGKILL: {health:?}");
    assert!(health.corrupt.is_empty(), "{health:?}");
    let report = s.reader.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{report:?}");
    assert!(s.bad_records.is_empty(), "{:?}", s.bad_records);
    assert!(
        s.commands.len() >= seen_before_kill && seen_before_kill > 0,
        "{} commands after the kill, {seen_before_kill} seen before it",
        s.commands.len()
    );
    // In crash-safe mode a command is on disk before it runs: every response follows its
    // command, and only the commands in flight at the kill (at the end) lack one.
    let first_unanswered = s
        .commands
        .iter()
        .position(|c| !c.answered)
        .unwrap_or(s.commands.len());
    let in_flight = &s.commands[first_unanswered..];
    assert!(
        in_flight.iter().all(|c| !c.answered) && in_flight.len() <= 2,
        "unanswered commands before answered ones, or too many in flight: {in_flight:?}"
    );
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert!(
        s.frame_counts.get(&0).copied().unwrap_or(0) > 0,
        "no frames before the kill"
    );
    eprintln!(
        "real-guest: sigkill: {} commands ({} in flight) and {} frames kept, {:.1} s",
        s.commands.len(),
        in_flight.len(),
        s.frame_counts.get(&0).copied().unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
}

/// A guest reboot (QMP system_reset) under vgt-capture: QEMU stops the rings as for a pause and
/// the rebooted driver sets them up from index 0. Before vgt-capture reset its device there, the
/// second boot's RESOURCE_CREATE_2D of resource 2 got ERR_INVALID_RESOURCE_ID and the guest had
/// no display. Both boots now run the fb workload without a driver error, the capture records
/// the reset, and it replays identically.
#[test]
fn a_rebooted_guest_finds_a_fresh_device_and_the_capture_replays() {
    let Some(_paths) = guest_or_skip("reboot") else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, root) = keep_dir();
    let dir = root.join("reboot");
    std::fs::create_dir_all(&dir).unwrap();
    let mut capture = CaptureProcess::spawn(&capture_bin(), &dir, 1, &[]).unwrap();
    let mut guest = GuestRun::boot(
        &capture.socket,
        &dir,
        &BootOptions {
            workload: "fb".into(),
            outputs: 1,
            hold: 120,
            qmp: true,
            timeout_s: 300,
            append: Vec::new(),
            reboot: true,
        },
    )
    .unwrap();
    guest.wait_done(Duration::from_secs(240)).unwrap();
    let mut qmp = Qmp::connect(guest.qmp.as_deref().unwrap(), Duration::from_secs(10)).unwrap();
    qmp.execute("system_reset", None).unwrap();
    guest.wait_done_times(2, Duration::from_secs(240)).unwrap();
    qmp.quit().unwrap();
    guest.wait_exit(Duration::from_secs(60)).unwrap();
    let status = wait_timeout(&mut capture.child, Duration::from_secs(30))
        .unwrap()
        .expect("vgt-capture did not exit within 30 s of QEMU");
    assert!(status.success(), "{}", capture.log_text());
    let serial = guest.serial_text();
    assert_eq!(
        serial.matches("[drm] Initialized virtio_gpu").count(),
        2,
        "{serial}"
    );
    assert!(
        !serial.lines().any(|l| l.contains("*ERROR*")),
        "the guest driver logged an error:\n{serial}"
    );
    let summary = Summary::read(&capture.output).unwrap();
    assert_eq!(summary.lifecycles(LifecycleKind::Reset).count(), 1);
    let report = vgt_replay::Replayer::new(&summary.reader, vgt_replay::ReplayOptions::default())
        .run(&mut vgt_replay::Quiet)
        .unwrap();
    assert!(report.is_identical(), "{:?}", report.divergences);
    eprintln!(
        "real-guest: reboot: ok; {} commands over two boots replayed identically",
        report.commands
    );
}

/// README's first command, as a newcomer runs it: `scripts/capture-demo` builds vgt-capture,
/// boots the guest through it and leaves a capture that holds what the guest drew, then says
/// what to run next. (setup.sh already ran: scripts/test runs it first, so `--no-setup`.)
#[test]
fn readme_capture_demo_records_the_guest_and_says_what_next() {
    let Some(_paths) = guest_or_skip("capture-demo") else {
        return;
    };
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_tmp, dir) = keep_dir();
    let out = dir.join("demo.vgt");
    let demo = vgt_e2e::workspace_root().join("scripts/capture-demo");
    let run = std::process::Command::new(&demo)
        .args(["--no-setup", "--workload", "fb", "--fb-frames", "4", "-o"])
        .arg(&out)
        .current_dir(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&out.display().to_string()) && stdout.contains("vgt-inspect -- info"),
        "{stdout}"
    );
    let s = Summary::read(&out).unwrap();
    s.check_healthy().unwrap();
    assert!(s.count(C::TRANSFER_TO_HOST_2D) >= 4, "{:?}", s.sequence());
    // The fb workload's last frame, as the guest computed it (4 frames: 0..=3).
    s.last_frame_rgb(0)
        .unwrap()
        .check_equal(
            &fb_frame(3, 1280, 800),
            "capture-demo's last frame vs fb frame 3",
        )
        .unwrap();
    // The same through the proxy, in front of QEMU's own backend (`--proxy`).
    let out = dir.join("demo-proxy.vgt");
    let run = std::process::Command::new(&demo)
        .args(["--no-setup", "--workload", "fb", "--fb-frames", "4", "-o"])
        .arg(&out)
        .args([
            "--proxy",
            &format!("{} --socket-path %s", vgt_e2e::backends::QEMU_GPU_BACKEND),
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("vgt-replay -- --backend-cmd"), "{stdout}");
    let s = Summary::read(&out).unwrap();
    s.check_healthy().unwrap();
    let reader = vgt_format::CaptureReader::open(&out).unwrap();
    let (_, first) = reader.iter().next().unwrap().unwrap();
    assert!(
        matches!(&first.body, vgt_format::record::RecordBody::SessionStart(st)
            if st.mode == vgt_format::record::CaptureMode::Proxy),
        "{first:?}"
    );
    s.last_frame_rgb(0)
        .unwrap()
        .check_equal(
            &fb_frame(3, 1280, 800),
            "proxy capture-demo's last frame vs fb frame 3",
        )
        .unwrap();
    // A backend killed mid-workload (3 s after it started: QEMU has long connected, and 2000
    // whole-screen frames take far longer): exit 1, what the proxy said, a finished capture.
    let killer = dir.join("killed-backend.sh");
    std::fs::write(
        &killer,
        format!(
            "#!/bin/sh\n{} --socket-path \"$1\" &\npid=$!\nsleep 3\nkill -9 $pid\nwait $pid\n",
            vgt_e2e::backends::QEMU_GPU_BACKEND
        ),
    )
    .unwrap();
    std::fs::set_permissions(&killer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = dir.join("demo-crash.vgt");
    let started = Instant::now();
    let run = std::process::Command::new(&demo)
        .args([
            "--no-setup",
            "--workload",
            "fb",
            "--fb-frames",
            "2000",
            "-o",
        ])
        .arg(&out)
        .args(["--proxy", &format!("{} %s", killer.display())])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    // The demo stops the guest when the proxy ends; the stalled guest's driver would take
    // about a minute of timeouts to give up on its own.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the demo waited {:?} for the stalled guest",
        started.elapsed()
    );
    assert!(
        stderr.contains("the backend crashed or closed its connection")
            && stderr.contains("status 137")
            && stderr.contains("reproduce with: vgt-replay --backend-cmd"),
        "{stderr}"
    );
    Summary::read(&out).unwrap();
    // A wrong argument: one line, exit 2, nothing booted.
    for args in [
        &["--no-setup", "--workload", "nope"][..],
        &["--no-setup", "--proxy", "a-backend-without-its-socket"],
    ] {
        let bad = std::process::Command::new(&demo)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("capture-demo: error: "), "{args:?}: {err}");
    }
}
