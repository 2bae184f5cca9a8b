//! `vgt-capture proxy` under a real Linux guest (samples/guest): QEMU 10 → proxy → a real
//! backend (QEMU's C vhost-user-gpu, rust-vmm's vhost-device-gpu). The guest must behave as
//! with a direct connection (selftest.sh's checks: driver up without errors, screendumps equal
//! to the guest's patterns, every exit status 0; and the same driver log as a direct run), each
//! capture must pair every command with its response, the command sequence must match
//! built-in mode's, a backend killed with SIGKILL in the middle of the fb workload must
//! leave a finished capture whose crash record names exactly the unanswered commands, and a
//! guest paused and resumed (QMP `stop`, `cont`) mid-workload must get every command answered.
//!
//! Needs QEMU >= 8, the guest from `samples/guest/setup.sh` and the C backend; skipped with a
//! message when `VGT_SKIP_E2E=1` or when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vgt_format::record::{LifecycleKind, RecordBody};
use vgt_format::wire::{Command as GpuCommand, CommandType, Request};

use vgt_e2e::backends::{QEMU_GPU_BACKEND as C_BACKEND, vhost_device_gpu};

/// One guest at a time (2 cores, TCG).
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> String {
    std::env::var("VGT_CAPTURE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vgt-capture").to_owned())
}

fn guest_ready(test: &str) -> bool {
    if std::env::var("VGT_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (VGT_SKIP_E2E=1)");
        return false;
    }
    let cache = std::env::var_os("VGT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/vgt")
        });
    if !cache.join("guest/paths.env").exists() || !Path::new(C_BACKEND).exists() {
        eprintln!(
            "{test}: skipped: run samples/guest/setup.sh first (guest or {C_BACKEND} missing)"
        );
        return false;
    }
    true
}

/// Runs selftest.sh with `backend` for `workloads`, keeping its files in `keep`.
fn selftest(backend: &str, keep: &Path, workloads: &[&str]) -> (bool, String) {
    let out = Command::new(root().join("samples/guest/selftest.sh"))
        .arg("--keep")
        .arg(keep)
        .arg("--backend")
        .arg(backend)
        .args(workloads)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out.status.success(), text)
}

/// The guest driver's log lines (between the DMESG markers) without their timestamps.
fn driver_log(serial: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(serial).unwrap_or_default();
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains("VGT-DMESG-BEGIN") {
            inside = true;
        } else if line.contains("VGT-DMESG-END") {
            break;
        } else if inside {
            let l = match line.find(']') {
                Some(i) if line.starts_with('[') => line[i + 1..].trim().to_owned(),
                _ => line.to_owned(),
            };
            out.push(l);
        }
    }
    out
}

/// Per queue, the command types of a capture in order; asserts that every command got exactly
/// one response and that the capture holds no crash or error.
fn check_capture(path: &Path) -> BTreeMap<u16, Vec<CommandType>> {
    let (reader, records) = common::read_capture(path);
    let mut commands = BTreeMap::new();
    let mut answered = BTreeSet::new();
    let mut seq: BTreeMap<u16, Vec<CommandType>> = BTreeMap::new();
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Command(c) => {
                let b = reader.read_payload(&c.request).unwrap();
                let ty = b
                    .get(0..4)
                    .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()));
                commands.insert(id as u64, CommandType(ty));
                seq.entry(c.queue).or_default().push(CommandType(ty));
            }
            RecordBody::Response(r) => {
                assert!(
                    commands.contains_key(&r.command),
                    "{}: response to unknown {}",
                    path.display(),
                    r.command
                );
                assert!(
                    answered.insert(r.command),
                    "{}: two responses for {}",
                    path.display(),
                    r.command
                );
            }
            RecordBody::Lifecycle(l) => assert!(
                !matches!(l.kind, LifecycleKind::Crash | LifecycleKind::Error),
                "{}: {l:?}",
                path.display()
            ),
            _ => {}
        }
    }
    let unanswered: Vec<_> = commands
        .iter()
        .filter(|(c, _)| !answered.contains(c))
        .map(|(&c, ty)| describe_unanswered(&records, c, *ty))
        .collect();
    assert!(
        unanswered.is_empty(),
        "{}: unanswered {unanswered:#?}",
        path.display()
    );
    assert!(!commands.is_empty(), "{}: no commands", path.display());
    seq
}

/// Where an unanswered command stood: its queue and type, and how many commands that queue had
/// carried since it was last started (`QueueStart`), so a failure says whether the lost command
/// was, say, the first one after a `cont`.
fn describe_unanswered(records: &[vgt_format::record::Record], id: u64, ty: CommandType) -> String {
    let RecordBody::Command(cmd) = &records[id as usize].body else {
        unreachable!("#{id} was collected as a command");
    };
    let queue = cmd.queue;
    let mut since_start = 0;
    let mut start = None;
    for (i, r) in records[..id as usize].iter().enumerate().rev() {
        match &r.body {
            RecordBody::Command(c) if c.queue == queue => since_start += 1,
            RecordBody::Lifecycle(l)
                if l.kind == LifecycleKind::QueueStart && l.queue == Some(queue) =>
            {
                start = Some(i);
                break;
            }
            _ => {}
        }
    }
    match start {
        Some(s) => format!(
            "#{id} {ty:?} on queue {queue}: {since_start} commands after its QueueStart #{s}"
        ),
        None => format!("#{id} {ty:?} on queue {queue}: no QueueStart before it"),
    }
}

/// A test's working directory that survives a failing test: its files are copied to
/// `$CARGO_TARGET_TMPDIR/<test>` (replacing an earlier copy) when the test panics, and the path
/// is printed, so an intermittent failure leaves its capture and serial log to read.
struct KeepOnFailure {
    dir: tempfile::TempDir,
    test: &'static str,
}

impl KeepOnFailure {
    fn new(test: &'static str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            test,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join(self.test);
        let _ = std::fs::remove_dir_all(&dest);
        let copied = std::fs::create_dir_all(&dest).and_then(|()| {
            for entry in std::fs::read_dir(self.dir.path())? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::copy(entry.path(), dest.join(entry.file_name()))?;
                }
            }
            Ok(())
        });
        match copied {
            Ok(()) => eprintln!("{}: files kept in {}", self.test, dest.display()),
            Err(e) => eprintln!(
                "{}: could not keep files in {}: {e}",
                self.test,
                dest.display()
            ),
        }
    }
}

/// In a proxy capture of QEMU's C backend, every Frame names the RESOURCE_FLUSH that sent its
/// update (a flush of the frame's resource whose rectangle holds the damage, at most one frame
/// per flush and scanout) and every Cursor record a cursor command at its position; returns
/// (frames, cursor records) checked.
fn check_display_causes(path: &Path) -> (usize, usize) {
    let (reader, records) = common::read_capture(path);
    let command = |id: u64| -> GpuCommand {
        let Some(RecordBody::Command(c)) = records.get(id as usize).map(|r| &r.body) else {
            panic!("{}: #{id} is not a command", path.display());
        };
        let b = reader.read_payload(&c.request).unwrap();
        Request::decode(&b).unwrap().command
    };
    let mut shown = BTreeSet::new();
    let (mut frames, mut cursors) = (0, 0);
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Frame(f) => {
                frames += 1;
                let GpuCommand::ResourceFlush(fl) = command(f.command) else {
                    panic!(
                        "{}: frame #{id} names #{}, not a flush",
                        path.display(),
                        f.command
                    );
                };
                let [x, y, w, h] = f.rect;
                let r = fl.r;
                assert!(
                    fl.resource_id == f.resource_id
                        && x >= r.x
                        && y >= r.y
                        && x + w <= r.x + r.width
                        && y + h <= r.y + r.height,
                    "{}: frame #{id} (resource {}, damage {:?}) names #{} {fl:?}",
                    path.display(),
                    f.resource_id,
                    f.rect,
                    f.command
                );
                assert!(
                    shown.insert((f.command, f.scanout_id)),
                    "{}: a second frame #{id} for #{} on scanout {}",
                    path.display(),
                    f.command,
                    f.scanout_id
                );
            }
            RecordBody::Cursor(k) => {
                cursors += 1;
                let (GpuCommand::UpdateCursor(c) | GpuCommand::MoveCursor(c)) = command(k.command)
                else {
                    panic!("{}: cursor #{id} names #{}", path.display(), k.command);
                };
                assert_eq!(
                    (c.pos.scanout_id, c.pos.x, c.pos.y),
                    (k.scanout_id, k.x, k.y),
                    "{}: cursor #{id} names #{}",
                    path.display(),
                    k.command
                );
            }
            _ => {}
        }
    }
    (frames, cursors)
}

/// The control-queue sequence with repeated TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pairs merged
/// into one: the guest's fbdev damage worker batches framebuffer writes by timing, so the
/// number of pairs varies from run to run (even against the same backend); everything else
/// must match exactly.
fn normalise(seq: &[CommandType]) -> Vec<CommandType> {
    let mut out: Vec<CommandType> = Vec::new();
    let mut i = 0;
    while i < seq.len() {
        let pair = seq.get(i) == Some(&CommandType::TRANSFER_TO_HOST_2D)
            && seq.get(i + 1) == Some(&CommandType::RESOURCE_FLUSH);
        if pair {
            let n = out.len();
            let repeat = n >= 2
                && out[n - 2] == CommandType::TRANSFER_TO_HOST_2D
                && out[n - 1] == CommandType::RESOURCE_FLUSH;
            if !repeat {
                out.extend_from_slice(&seq[i..i + 2]);
            }
            i += 2;
        } else {
            out.push(seq[i]);
            i += 1;
        }
    }
    out
}

fn names(seq: &[CommandType]) -> Vec<String> {
    seq.iter()
        .map(|t| {
            t.name()
                .map_or_else(|| format!("{:#x}", t.0), str::to_owned)
        })
        .collect()
}

#[test]
fn proxy_real_guest_c_backend_behaves_as_direct_and_records_what_builtin_records() {
    if !guest_ready("proxy_real_guest_c_backend") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let workloads = ["boot", "fb", "modes", "cursor"];
    let proxied = dir.path().join("proxy");
    let proxy_cmd = format!(
        "{} proxy --quiet --socket {{socket}} --backend-cmd '{C_BACKEND} --socket-path %s' -o {{socket}}.vgt",
        bin()
    );
    let (ok, text) = selftest(&proxy_cmd, &proxied, &workloads);
    assert!(ok, "selftest through the proxy failed:\n{text}");
    let direct = dir.path().join("direct");
    let (ok, text) = selftest(
        &format!("{C_BACKEND} --socket-path {{socket}}"),
        &direct,
        &workloads,
    );
    assert!(ok, "selftest direct failed:\n{text}");
    // Built-in mode needs to be told about the second scanout of the modes workload.
    let builtin = dir.path().join("builtin");
    let builtin_cmd = |scanouts: u32| {
        format!(
            "{} --quiet --scanouts {scanouts} --socket {{socket}} -o {{socket}}.vgt",
            bin()
        )
    };
    let (ok, text) = selftest(&builtin_cmd(1), &builtin, &["boot", "fb", "cursor"]);
    assert!(ok, "selftest built-in failed:\n{text}");
    let builtin2 = dir.path().join("builtin2");
    let (ok, text) = selftest(&builtin_cmd(2), &builtin2, &["modes"]);
    assert!(ok, "selftest built-in (modes) failed:\n{text}");
    for w in workloads {
        // Same driver log as with a direct connection.
        let a = driver_log(&direct.join(w).join("serial.log"));
        let b = driver_log(&proxied.join(w).join("serial.log"));
        assert!(!a.is_empty());
        assert_eq!(a, b, "{w}: driver log differs between direct and proxied");
        // Every command paired; the same command sequence as built-in mode.
        let p = check_capture(&proxied.join(w).join("gpu.sock.vgt"));
        check_memory_messages(&proxied.join(w).join("gpu.sock.vgt"));
        let (frames, cursors) = check_display_causes(&proxied.join(w).join("gpu.sock.vgt"));
        assert!(frames > 0, "{w}: no frames");
        assert!(w != "cursor" || cursors > 0, "{w}: no cursor records");
        let bdir = if w == "modes" { &builtin2 } else { &builtin };
        let m = check_capture(&bdir.join(w).join("gpu.sock.vgt"));
        let pc = normalise(p.get(&0).map_or(&[][..], |v| v));
        let mc = normalise(m.get(&0).map_or(&[][..], |v| v));
        assert_eq!(names(&pc), names(&mc), "{w}: control queue sequence");
        assert_eq!(
            names(p.get(&1).map_or(&[][..], |v| v)),
            names(m.get(&1).map_or(&[][..], |v| v)),
            "{w}: cursor queue sequence"
        );
        // Both captures replayed on a fresh C backend (`vgt-replay --backend-cmd`): every
        // response as recorded. (Frames may differ where the guest's console redrew a buffer
        // while its transfer was queued: docs/PROXY.md, Limits.)
        for capture in [proxied.join(w), bdir.join(w)] {
            let report = replay_on_c_backend(&capture.join("gpu.sock.vgt"));
            assert_eq!(report.responses, report.commands, "{w}: {report:?}");
            let broken: Vec<String> = report
                .divergences
                .iter()
                .filter(|d| {
                    matches!(
                        d.kind,
                        vgt_replay::DivergenceKind::Response { .. }
                            | vgt_replay::DivergenceKind::MissingResponse { .. }
                            | vgt_replay::DivergenceKind::ExtraResponse { .. }
                            | vgt_replay::DivergenceKind::Backend { .. }
                    )
                })
                .map(|d| d.to_string())
                .collect();
            assert!(broken.is_empty(), "{}: {broken:#?}", capture.display());
            eprintln!(
                "{}: replayed on the C backend: {} commands, {} frames compared, {} divergences",
                capture.display(),
                report.commands,
                report.frames,
                report.divergences.len()
            );
        }
    }
}

/// Replays a capture on a fresh C backend, every divergence reported.
fn replay_on_c_backend(path: &Path) -> vgt_replay::ReplayReport {
    let reader = vgt_format::CaptureReader::open(path).unwrap();
    let options = vgt_replay::ReplayOptions {
        keep_going: true,
        backend: Some(vgt_replay::backend::BackendOptions::new(
            vgt_replay::backend::BackendSpec::Command(format!("{C_BACKEND} --socket-path %s")),
        )),
        ..vgt_replay::ReplayOptions::default()
    };
    vgt_replay::Replayer::new(&reader, options)
        .run(&mut vgt_replay::Quiet)
        .unwrap()
}

fn wait_child(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn wait_for(path: &Path, what: &str, secs: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(what)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits up to 20 s for a listening socket to appear; fails with `what` otherwise.
fn wait_socket(sock: &Path, what: &str) {
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `vgt-capture proxy --socket SOCK --backend-cmd BACKEND -o OUT` and waits for its socket.
fn start_proxy(backend: &str, sock: &Path, out: &Path, stderr: Stdio) -> Child {
    let proxy = Command::new(bin())
        .args(["proxy", "--quiet", "--socket"])
        .arg(sock)
        .arg("--backend-cmd")
        .arg(backend)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_socket(sock, "proxy socket missing");
    proxy
}

#[test]
fn proxy_real_guest_backend_sigkill_mid_fb_names_the_commands_in_flight() {
    if !guest_ready("proxy_real_guest_backend_sigkill") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Three kill times within the 50 framebuffer writes: it must work every time.
    for delay_ms in [100, 400, 900] {
        sigkill_mid_fb(delay_ms);
    }
}

fn sigkill_mid_fb(delay_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("gpu.sock");
    let out = d.join("proxy.vgt");
    let serial = d.join("serial.log");
    let backend = format!(
        "sh -c 'echo $$ > {}; exec {C_BACKEND} --socket-path %s'",
        d.join("backend.pid").display()
    );
    let mut proxy = start_proxy(&backend, &sock, &out, Stdio::piped());
    let mut guest = Command::new(root().join("samples/guest/run-guest.sh"))
        .arg("--socket")
        .arg(&sock)
        .args(["--workload", "fb", "--timeout", "120", "--serial-log"])
        .arg(&serial)
        .arg("--pidfile")
        .arg(d.join("qemu.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The framebuffer writes start right after the driver log: kill the backend while they run.
    assert!(
        wait_for(&serial, "VGT-DMESG-END", 120),
        "guest did not reach the workload"
    );
    std::thread::sleep(Duration::from_millis(delay_ms));
    let pid: i32 = std::fs::read_to_string(d.join("backend.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the backend this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = wait_child(&mut proxy, 30).expect("proxy did not exit");
    let mut stderr = String::new();
    std::io::Read::read_to_string(proxy.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    eprintln!("{stderr}");
    // QEMU goes too (it may or may not survive the backend's death by itself).
    if let Ok(q) = std::fs::read_to_string(d.join("qemu.pid"))
        && let Ok(q) = q.trim().parse::<i32>()
    {
        // SAFETY: kill(2) on the QEMU this test started.
        unsafe { libc::kill(q, libc::SIGKILL) };
    }
    let _ = wait_child(&mut guest, 30);
    assert_eq!(status.code(), Some(3), "proxy exit {status:?}");
    assert!(stderr.contains("killed by signal 9"), "{stderr}");

    let (_, records) = common::read_capture(&out);
    let RecordBody::Lifecycle(end) = &records.last().unwrap().body else {
        panic!("no End record")
    };
    assert_eq!(end.kind, LifecycleKind::End);
    let mut commands = BTreeMap::new();
    let mut answered = BTreeSet::new();
    let mut crash = Vec::new();
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Command(c) => {
                commands.insert(id as u64, c.queue);
            }
            RecordBody::Response(r) => {
                answered.insert(r.command);
            }
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash => crash.push(l.clone()),
            _ => {}
        }
    }
    assert!(
        commands.len() > 10,
        "the kill came too early to mean anything"
    );
    let unanswered: Vec<u64> = commands
        .keys()
        .copied()
        .filter(|c| !answered.contains(c))
        .collect();
    // The summary and one record per command in flight name exactly the unanswered commands.
    assert!(
        crash[0]
            .message
            .contains(&format!("{} command(s) in flight", unanswered.len())),
        "{} vs {unanswered:?}",
        crash[0].message
    );
    let named: Vec<u64> = crash[1..].iter().filter_map(|l| l.command).collect();
    assert_eq!(named, unanswered);
    for id in &unanswered {
        assert!(
            stderr.contains(&format!("#{id} ")),
            "stderr does not name #{id}"
        );
    }
    assert!(crash[0].message.contains("last completed: #"));
}

/// QMP `stop` and `cont` twice while the fb workload draws through the proxy in front of
/// `backend` (QEMU stops the rings with GET_VRING_BASE, closes the display socket, and at
/// `cont` hands over a new one and starts the rings again at that base). Returns the guest's
/// and the proxy's exit status and the capture.
fn stop_and_cont(
    backend: &str,
    append: &[&str],
    d: &Path,
) -> (std::process::ExitStatus, std::process::ExitStatus, PathBuf) {
    let (sock, out, serial, qmp) = (
        d.join("gpu.sock"),
        d.join("proxy.vgt"),
        d.join("serial.log"),
        d.join("qmp.sock"),
    );
    let mut proxy = start_proxy(backend, &sock, &out, Stdio::inherit());
    let mut cmd = Command::new(root().join("samples/guest/run-guest.sh"));
    cmd.arg("--socket")
        .arg(&sock)
        .args([
            "--workload",
            "fb",
            "--timeout",
            "120",
            "--hold",
            "1",
            "--serial-log",
        ])
        .arg(&serial)
        .arg("--qmp")
        .arg(&qmp);
    for a in append {
        cmd.args(["--append", a]);
    }
    let mut guest = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&serial, "VGT-DMESG-END", 120),
        "guest did not reach the workload"
    );
    let qmp_cmd = |what: &str| {
        let st = Command::new(root().join("samples/guest/qmp.py"))
            .arg(&qmp)
            .args(["execute", what])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "qmp {what}: {st:?}");
    };
    for pause_ms in [300, 500] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        qmp_cmd("stop");
        std::thread::sleep(Duration::from_millis(300));
        qmp_cmd("cont");
    }
    let guest_status = wait_child(&mut guest, 120).expect("guest did not finish");
    let proxy_status = wait_child(&mut proxy, 30).expect("proxy did not exit");
    (guest_status, proxy_status, out)
}

/// `stop` and `cont` through the proxy in front of vhost-device-gpu: every command is still
/// answered, QEMU and the guest exit cleanly. Before the fix the first command after each
/// `cont` never reached the backend (the guest's fb writes do not wait for completions, so the
/// workload still "finished", with 88 commands unanswered).
#[test]
fn proxy_real_guest_stop_and_cont_mid_fb_leave_no_command_unanswered() {
    if !guest_ready("proxy_real_guest_stop_and_cont") {
        return;
    }
    let Some(vdg) = vhost_device_gpu() else {
        panic!("vhost-device-gpu could not be installed (scripts/install-vhost-device-gpu.sh)");
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = KeepOnFailure::new("proxy_real_guest_stop_and_cont");
    let backend = format!("{} --socket-path %s --gpu-mode null", vdg.display());
    // The null backend shows no scanout unless the connector is forced.
    let (guest, proxy, out) = stop_and_cont(&backend, &["video=Virtual-1:1024x768e"], dir.path());
    assert!(guest.success(), "run-guest.sh {guest:?}");
    assert!(
        std::fs::read_to_string(dir.path().join("serial.log"))
            .unwrap()
            .contains("VGT-WORKLOAD-DONE fb")
    );
    assert!(proxy.success(), "proxy exit {proxy:?}");
    let (_, records) = common::read_capture(&out);
    let restarts = records
        .iter()
        .filter(
            |r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::QueueStart),
        )
        .count();
    // Started at boot and after each cont, both rings.
    assert!(
        restarts >= 6,
        "{restarts} queue starts: the stops did not happen"
    );
    // A pause is no reset.
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Reset))
    );
    // Every command answered, nothing recorded as an error (check_capture).
    let seq = check_capture(&out);
    assert!(seq[&0].len() > 20, "{} commands", seq[&0].len());
}

/// The same through the proxy in front of QEMU's C backend, which does not survive a `cont`
/// when connected directly: it refuses the new display socket ("assertion 'g->sock_fd == -1'
/// failed") and dies of SIGPIPE writing to the old one (exit 141, checked 2026-12-07). Through
/// the proxy it must do the same, and the proxy names what it was working on (exit 3). The
/// proxy used to keep the backend's end of the old socket open, which kept the backend alive
/// and hid this.
#[test]
fn proxy_real_guest_stop_and_cont_kill_the_c_backend_as_without_the_proxy() {
    if !guest_ready("proxy_real_guest_stop_and_cont_c") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (_guest, proxy, out) =
        stop_and_cont(&format!("{C_BACKEND} --socket-path %s"), &[], dir.path());
    assert_eq!(proxy.code(), Some(3), "proxy exit {proxy:?}");
    let summary = vgt_e2e::capture::Summary::read(&out).unwrap();
    let crash = summary
        .lifecycles(LifecycleKind::Crash)
        .next()
        .expect("a crash record");
    assert!(crash.message.contains("signal 13"), "{}", crash.message);
    // The backend said why on its stderr, and the capture holds it.
    let said: Vec<_> = summary
        .lifecycles(LifecycleKind::BackendStderr)
        .map(|l| l.message.clone())
        .collect();
    assert!(
        said.iter()
            .any(|l| l.contains("assertion 'g->sock_fd == -1' failed")),
        "{said:#?}"
    );
}

/// Boots `workload` against a backend started by `backend` (socket path substituted for
/// `{socket}`); returns (run-guest.sh status, serial log path).
fn boot_with(backend: &str, dir: &Path, workload: &str, append: &[&str]) -> (bool, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("gpu.sock");
    let serial = dir.join("serial.log");
    let mut b = Command::new("bash")
        .arg("-c")
        .arg(backend.replace("{socket}", &sock.to_string_lossy()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("backend.log")).unwrap())
        .spawn()
        .unwrap();
    wait_socket(&sock, "backend socket missing");
    let mut cmd = Command::new(root().join("samples/guest/run-guest.sh"));
    cmd.arg("--socket")
        .arg(&sock)
        .args(["--workload", workload, "--timeout", "180", "--serial-log"])
        .arg(&serial);
    for a in append {
        cmd.args(["--append", a]);
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let bstatus = wait_child(&mut b, 20);
    if bstatus.is_none() {
        let _ = b.kill();
    }
    (
        status.success() && bstatus.is_some_and(|s| s.success()),
        serial,
    )
}

#[test]
fn proxy_real_guest_vhost_device_gpu_behaves_as_direct() {
    if !guest_ready("proxy_real_guest_vhost_device_gpu") {
        return;
    }
    let Some(vdg) = vhost_device_gpu() else {
        panic!("vhost-device-gpu could not be installed (scripts/install-vhost-device-gpu.sh)");
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The null backend shows no scanout unless the connector is forced (run-guest.sh's
    // --append takes no '@', and the refresh rate is not needed).
    let append = ["video=Virtual-1:1024x768e"];
    for w in ["boot", "fb"] {
        let (ok, direct_log) = boot_with(
            &format!("{} --socket-path {{socket}} --gpu-mode null", vdg.display()),
            &dir.path().join(format!("direct-{w}")),
            w,
            &append,
        );
        assert!(ok, "{w}: direct run failed ({})", direct_log.display());
        let pdir = dir.path().join(format!("proxy-{w}"));
        let (ok, proxy_log) = boot_with(
            &format!(
                "{} proxy --quiet --socket {{socket}} --backend-cmd '{} --socket-path %s --gpu-mode null' -o {}",
                bin(),
                vdg.display(),
                pdir.join("proxy.vgt").display()
            ),
            &pdir,
            w,
            &append,
        );
        assert!(ok, "{w}: proxied run failed ({})", proxy_log.display());
        let serial = std::fs::read_to_string(&proxy_log).unwrap();
        assert!(serial.contains("[drm] Initialized virtio_gpu"), "{serial}");
        assert!(!serial.contains("*ERROR*"), "{serial}");
        assert!(serial.contains(&format!("VGT-WORKLOAD-DONE {w}")));
        assert_eq!(
            driver_log(&direct_log),
            driver_log(&proxy_log),
            "{w}: driver log"
        );
        let seq = check_capture(&pdir.join("proxy.vgt"));
        assert!(
            seq.get(&0)
                .is_some_and(|s| s.contains(&CommandType::GET_EDID)
                    || s.contains(&CommandType::GET_DISPLAY_INFO))
        );
        check_memory_messages(&pdir.join("proxy.vgt"));
    }
}

/// When the backend offers CONFIGURE_MEM_SLOTS, QEMU gives memory with ADD_MEM_REG through the
/// proxy (which passes the bit on and adds the shadow region itself), not SET_MEM_TABLE; the
/// SessionStart holds the backend's offered features.
fn check_memory_messages(path: &Path) {
    let (reader, records) = common::read_capture(path);
    let mut offered_slots = false;
    let mut requests = BTreeSet::new();
    let mut shadow_added = false;
    for r in &records {
        match &r.body {
            RecordBody::SessionStart(s) => {
                assert_ne!(s.features_offered, 0, "SessionStart.features_offered");
            }
            RecordBody::VhostUser(v) if v.direction as u8 == 1 && v.request == 15 => {
                let b = reader.read_payload(&v.payload).unwrap();
                let f = u64::from_le_bytes(b[..8].try_into().unwrap());
                offered_slots = f & (1 << 15) != 0;
            }
            RecordBody::VhostUser(v) if v.direction as u8 == 0 => {
                requests.insert(v.request);
            }
            RecordBody::Lifecycle(l) if l.message.contains("shadow-ring region") => {
                shadow_added = true;
            }
            _ => {}
        }
    }
    eprintln!(
        "{}: CONFIGURE_MEM_SLOTS offered to QEMU: {offered_slots}; ADD_MEM_REG used: {}; SET_MEM_TABLE used: {}",
        path.display(),
        requests.contains(&37),
        requests.contains(&5)
    );
    if offered_slots && requests.contains(&37) {
        assert!(shadow_added, "no shadow region added with ADD_MEM_REG");
        assert!(!requests.contains(&5));
    }
}

/// A guest reboot (QMP system_reset) through the proxy in front of vhost-device-gpu: both
/// boots run the fb workload and the capture records the reset. (The proxy once wrote its old
/// used index into the rebooted driver's fresh ring, and the second boot hung when the worker
/// was still polling then; `proxy_rings_set_up_again_from_zero_serve_the_next_command_and_record_a_reset`
/// in proxy.rs catches that every time, this only when the timing falls so.)
#[test]
fn proxy_real_guest_reboot_boots_twice_and_records_the_reset() {
    if !guest_ready("proxy_real_guest_reboot") {
        return;
    }
    let Some(vdg) = vhost_device_gpu() else {
        panic!("vhost-device-gpu could not be installed (scripts/install-vhost-device-gpu.sh)");
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gpu.sock");
    let out = dir.path().join("proxy.vgt");
    let mut proxy = start_proxy(
        &format!("{} --socket-path %s --gpu-mode null", vdg.display()),
        &sock,
        &out,
        Stdio::inherit(),
    );
    let mut guest = vgt_e2e::guest::GuestRun::boot(
        &sock,
        dir.path(),
        &vgt_e2e::guest::BootOptions {
            workload: "fb".into(),
            outputs: 1,
            hold: 120,
            qmp: true,
            timeout_s: 300,
            // The null backend shows no scanout unless the connector is forced.
            append: vec!["video=Virtual-1:1024x768e".into()],
            reboot: true,
        },
    )
    .unwrap();
    guest.wait_done(Duration::from_secs(240)).unwrap();
    let mut qmp =
        vgt_e2e::qmp::Qmp::connect(guest.qmp.as_deref().unwrap(), Duration::from_secs(10)).unwrap();
    qmp.execute("system_reset", None).unwrap();
    guest.wait_done_times(2, Duration::from_secs(240)).unwrap();
    qmp.quit().unwrap();
    guest.wait_exit(Duration::from_secs(60)).unwrap();
    let status = wait_child(&mut proxy, 30).expect("the proxy did not exit");
    assert!(status.success(), "proxy exit {status:?}");
    let serial = guest.serial_text();
    assert!(
        !serial.lines().any(|l| l.contains("*ERROR*")),
        "the guest driver logged an error:\n{serial}"
    );
    let summary = vgt_e2e::capture::Summary::read(&out).unwrap();
    assert_eq!(summary.lifecycles(LifecycleKind::Reset).count(), 1);
}
