//! `vgt-capture proxy` in front of QEMU's own C backend (/usr/lib/qemu/vhost-user-gpu), driven
//! by the Rust test front-end: commands and responses pass unchanged and are recorded in pairs,
//! transfer sources become MemoryRead records, the display socket is relayed and recorded, a
//! killed backend leaves a finished capture naming the commands in flight, and malformed
//! traffic reaches the backend as it would without the proxy.
//!
//! Skipped (with a message) when the C backend is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, Gate, TestFrontend, gpu};
use vgt_format::record::{CaptureMode, LifecycleKind, RecordBody};
use vm_memory::{Bytes, GuestAddress};

use vgt_e2e::backends::QEMU_GPU_BACKEND as C_BACKEND;

fn have_backend() -> bool {
    if Path::new(C_BACKEND).exists() {
        true
    } else {
        eprintln!("skipped: {C_BACKEND} is not installed (samples/guest/setup.sh installs it)");
        false
    }
}

/// Starts the proxy in front of a fresh C backend; the backend's pid lands in `dir/backend.pid`.
fn spawn_proxy(dir: &Path) -> (Child, PathBuf, PathBuf) {
    let sock = dir.join("vgpu.sock");
    let out = dir.join("proxy.vgt");
    let pidfile = dir.join("backend.pid");
    let cmd = format!(
        "sh -c 'echo $$ > {}; exec {C_BACKEND} --socket-path %s'",
        pidfile.display()
    );
    let child = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args(["proxy", "--quiet", "--socket"])
        .arg(&sock)
        .arg("--backend-cmd")
        .arg(cmd)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock, out)
}

/// [`spawn_proxy`] with extra environment for the proxy.
fn spawn_proxy_env(dir: &Path, env: &[(&str, &str)]) -> (Child, PathBuf, PathBuf) {
    let sock = dir.join("vgpu.sock");
    let out = dir.join("proxy.vgt");
    let child = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args(["proxy", "--quiet", "--socket"])
        .arg(&sock)
        .arg("--backend-cmd")
        .arg(format!("{C_BACKEND} --socket-path %s"))
        .arg("-o")
        .arg(&out)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock, out)
}

/// Starts `vgt-capture proxy --quiet ARGS --backend-cmd CMD` in `dir`, its stdout and stderr
/// as given; returns (proxy, QEMU socket, capture path).
fn start_proxy_with(
    dir: &Path,
    args: &[&str],
    backend_cmd: &str,
    stdout: Stdio,
    stderr: Stdio,
) -> (Child, PathBuf, PathBuf) {
    let sock = dir.join("vgpu.sock");
    let out = dir.join("proxy.vgt");
    let child = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args(["proxy", "--quiet"])
        .args(args)
        .arg("--socket")
        .arg(&sock)
        .arg("--backend-cmd")
        .arg(backend_cmd)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, sock, out)
}

/// Reads `r` to its end on a thread of its own (a piped child's output, read while it runs).
fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// CPU time of process `pid`, all its threads (nanoseconds, from /proc/PID/task/*/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Publishes a RESOURCE_FLUSH of resource 99 in guest memory without kicking: only a proxy
/// that is polling the available ring can see it.
fn publish_flush_without_kick(fe: &mut TestFrontend) {
    let flush = gpu::flush(99, [0, 0, 1, 1]);
    let req = fe.put(&flush);
    let resp = fe.alloc(24);
    let q = &mut fe.queues[0];
    let size = q.size;
    let (d0, d1) = (q.next_desc, (q.next_desc + 1) % size);
    q.next_desc = (q.next_desc + 2) % size;
    let table = q.desc;
    fe.write_desc(table, d0, (req, flush.len() as u32, common::F_NEXT, d1));
    fe.write_desc(table, d1, (resp, 24, common::F_WRITE, 0));
    let q = &mut fe.queues[0];
    let slot = q.avail + 4 + 2 * u64::from(q.avail_idx % q.size);
    fe.mem.write_obj(d0, GuestAddress(slot)).unwrap();
    let q = &mut fe.queues[0];
    q.avail_idx = q.avail_idx.wrapping_add(1);
    let (idx, at) = (q.avail_idx, q.avail + 2);
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    fe.mem.write_obj(idx, GuestAddress(at)).unwrap();
}

/// A C backend on its own (the direct connection to compare with).
fn spawn_direct(dir: &Path) -> (Child, PathBuf) {
    let sock = dir.join("direct.sock");
    let child = Command::new(C_BACKEND)
        .arg("--socket-path")
        .arg(&sock)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock)
}

fn wait_exit(child: &mut Child, secs: u64) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("process {} did not exit within {secs} s", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn backend_pid(dir: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("backend.pid"))
            && let Ok(p) = s.trim().parse()
        {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no backend pid");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The 2D sequence of a Linux boot: returns (request, response) per command in order.
fn workload(fe: &mut TestFrontend) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut done = Vec::new();
    let mut run = |fe: &mut TestFrontend, bufs: Vec<Buf>, indirect: bool| {
        let req: Vec<u8> = bufs
            .iter()
            .filter_map(|b| match b {
                Buf::Out(v) => Some(v.clone()),
                Buf::In(_) => None,
            })
            .flatten()
            .collect();
        let (_, _, resp) = fe.command(0, &bufs, indirect);
        done.push((req, resp));
    };
    run(
        fe,
        vec![Buf::Out(gpu::get_display_info()), Buf::In(408)],
        false,
    );
    run(
        fe,
        vec![Buf::Out(gpu::create_2d(1, 2, 64, 32)), Buf::In(24)],
        false,
    );
    // Backing in two scattered pieces, with pixels the transfer must read.
    let pixels: Vec<u8> = (0..64 * 32 * 4).map(|i| (i * 7 % 251) as u8).collect();
    let a = fe.put(&pixels[..4096]);
    let _gap = fe.alloc(4096);
    let b = fe.put(&pixels[4096..]);
    run(
        fe,
        vec![
            Buf::Out(gpu::attach_backing(1, 2)),
            Buf::Out(gpu::mem_entries(&[(a, 4096), (b, 4096)])),
            Buf::In(24),
        ],
        true,
    );
    run(
        fe,
        vec![
            Buf::Out(gpu::set_scanout(0, 1, [0, 0, 64, 32])),
            Buf::In(24),
        ],
        false,
    );
    run(
        fe,
        vec![
            Buf::Out(gpu::transfer_2d(1, [0, 0, 64, 32], 0, Some(7))),
            Buf::In(24),
        ],
        false,
    );
    run(
        fe,
        vec![Buf::Out(gpu::flush(1, [0, 0, 64, 32])), Buf::In(24)],
        false,
    );
    run(
        fe,
        vec![Buf::Out(gpu::create_2d(0, 2, 8, 8)), Buf::In(24)],
        false,
    );
    done
}

#[test]
fn proxy_c_backend_commands_pass_and_pair_with_their_responses() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let done = workload(&mut fe);
    // What a 2D backend answers: display info, OK for the rest, an error for resource id 0.
    assert_eq!(gpu::resp_type(&done[0].1), 0x1101);
    for (_, r) in &done[1..6] {
        assert_eq!(gpu::resp_type(r), 0x1100);
    }
    assert!(gpu::resp_type(&done[6].1) >= 0x1200);
    // The fenced transfer's response carries the fence.
    assert_eq!(
        u32::from_le_bytes(done[4].1[4..8].try_into().unwrap()) & 1,
        1
    );
    // The flush made the backend send SCANOUT and UPDATE through the proxy to our display
    // (relayed by the proxy's display thread, so possibly after the flush's completion).
    let msgs = fe.wait_display_until(|m| {
        m.iter().any(|m| m.request == 7) && m.iter().any(|m| m.request == 8)
    });
    assert!(msgs.iter().any(|m| m.request == 7), "no SCANOUT: {msgs:?}");
    assert!(msgs.iter().any(|m| m.request == 8), "no UPDATE");
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");

    let (reader, records) = common::read_capture(&out);
    let bytes = |p: &vgt_format::record::Payload| reader.read_payload(p).unwrap().to_vec();
    let RecordBody::SessionStart(start) = &records[0].body else {
        panic!("first record is not the session start")
    };
    assert_eq!(start.mode, CaptureMode::Proxy);
    let mut commands = BTreeMap::new();
    let mut responses = BTreeMap::new();
    let mut reads = Vec::new();
    let mut fences = Vec::new();
    let mut frames = 0;
    let mut gpu_requests = BTreeSet::new();
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Command(c) if c.queue == 0 => {
                commands.insert(id as u64, bytes(&c.request));
            }
            RecordBody::Response(r) => {
                assert!(responses.insert(r.command, bytes(&r.bytes)).is_none());
            }
            RecordBody::MemoryRead(m) => reads.push(m.clone()),
            RecordBody::Fence(f) => fences.push(*f),
            RecordBody::Frame(_) => frames += 1,
            RecordBody::GpuSocket(g) => {
                gpu_requests.insert(g.request);
            }
            _ => {}
        }
    }
    // Every command recorded once, in order, with exactly the bytes the guest wrote, and
    // paired with exactly the bytes the guest read back.
    let recorded: Vec<(&u64, &Vec<u8>)> = commands.iter().collect();
    assert_eq!(recorded.len(), done.len());
    for ((id, req), (sent, got)) in recorded.iter().zip(&done) {
        assert_eq!(*req, sent);
        assert_eq!(responses.get(id), Some(got), "response of command {id}");
    }
    // The transfer read the two backing pieces.
    let transfer_id = *recorded[4].0;
    let read_bytes: Vec<u8> = reads
        .iter()
        .filter(|m| m.command == transfer_id)
        .flat_map(|m| bytes(&m.data))
        .collect();
    let pixels: Vec<u8> = (0..64 * 32 * 4).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(read_bytes, pixels);
    assert_eq!(fences.len(), 1);
    assert_eq!((fences[0].command, fences[0].fence_id), (transfer_id, 7));
    assert!(frames >= 1);
    assert!(gpu_requests.contains(&7) && gpu_requests.contains(&8));
}

/// The proxy's capture of the workload (an indirect chain, a fenced transfer from a scattered
/// backing, a scanout, a flush, an error) replayed against a fresh C backend (`vgt-replay
/// --backend-cmd`): the same responses byte for byte, the same fence, the same frames.
#[test]
fn proxy_capture_replays_identically_against_the_backend_it_was_recorded_from() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let mut done = workload(&mut fe);
    // A 64x64 cursor: resource 5, its image transferred, shown, moved.
    let image: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 13 % 241) as u8).collect();
    let at = fe.put(&image);
    for req in [
        gpu::create_2d(5, 2, 64, 64),
        gpu::attach_backing(5, 1),
        gpu::transfer_2d(5, [0, 0, 64, 64], 0, None),
    ] {
        let mut bufs = vec![Buf::Out(req.clone())];
        if u32::from_le_bytes(req[0..4].try_into().unwrap()) == 0x106 {
            bufs.push(Buf::Out(gpu::mem_entries(&[(at, 64 * 64 * 4)])));
        }
        bufs.push(Buf::In(24));
        let (_, _, resp) = fe.command(0, &bufs, false);
        assert_eq!(gpu::resp_type(&resp), 0x1100);
        done.push((req, resp));
    }
    for req in [
        gpu::update_cursor(0, 10, 20, 5, 1, 2),
        gpu::move_cursor(0, 30, 40),
    ] {
        fe.command(1, &[Buf::Out(req.clone())], false);
        done.push((req, Vec::new()));
    }
    // The C backend answers a MOVE_CURSOR of resource 0 with CURSOR_POS_HIDE.
    fe.wait_display_until(|m| m.iter().any(|m| m.request == 8) && m.iter().any(|m| m.request == 5));
    drop(fe);
    assert!(wait_exit(&mut proxy, 20).success());
    // The cursor record names the cursor's resource (the display message does not).
    let (_, records) = common::read_capture(&out);
    let cursors: Vec<(u32, u32)> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Cursor(c) => Some((c.x, c.resource_id)),
            _ => None,
        })
        .collect();
    assert_eq!(cursors, [(10, 5), (30, 0)]);
    let reader = vgt_format::CaptureReader::open(&out).unwrap();
    let options = vgt_replay::ReplayOptions {
        keep_going: true,
        backend: Some(vgt_replay::backend::BackendOptions::new(
            vgt_replay::backend::BackendSpec::Command(format!("{C_BACKEND} --socket-path %s")),
        )),
        ..vgt_replay::ReplayOptions::default()
    };
    let report = vgt_replay::Replayer::new(&reader, options)
        .run(&mut vgt_replay::Quiet)
        .unwrap();
    assert!(report.is_identical(), "{:#?}", report.divergences);
    assert_eq!(report.commands, done.len() as u64);
    assert_eq!(report.responses, done.len() as u64);
    assert!(report.frames >= 1, "{report:?}");
}

/// A whole-scanout UPDATE and then a partial one through the proxy: QEMU's side gets exactly
/// the backend's message (header and pixels), and the Frames are the composed pictures; the
/// whole-scanout Frame shares its payload with the UPDATE's pixels (stored once, hashed once).
#[test]
fn proxy_whole_and_partial_updates_reach_qemu_intact_and_compose_the_frames() {
    if !have_backend() {
        return;
    }
    let (w, h) = (64u32, 32u32);
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let mut pixels: Vec<u8> = (0..w * h * 4).map(|i| (i * 11 % 239) as u8).collect();
    let backing = fe.put(&pixels);
    let ok = |fe: &mut TestFrontend, bufs: &[Buf]| {
        let (_, _, r) = fe.command(0, bufs, false);
        assert_eq!(gpu::resp_type(&r), 0x1100);
    };
    ok(
        &mut fe,
        &[Buf::Out(gpu::create_2d(5, 2, w, h)), Buf::In(24)],
    );
    ok(
        &mut fe,
        &[
            Buf::Out(gpu::attach_backing(5, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, pixels.len() as u32)])),
            Buf::In(24),
        ],
    );
    ok(
        &mut fe,
        &[Buf::Out(gpu::set_scanout(0, 5, [0, 0, w, h])), Buf::In(24)],
    );
    let full = [0, 0, w, h];
    ok(
        &mut fe,
        &[Buf::Out(gpu::transfer_2d(5, full, 0, None)), Buf::In(24)],
    );
    ok(&mut fe, &[Buf::Out(gpu::flush(5, full)), Buf::In(24)]);
    let first = pixels.clone();
    // An 8x4 rectangle at (16, 8) changes.
    let part = [16, 8, 8, 4];
    for y in 8..12u32 {
        for x in 16..24u32 {
            let at = ((y * w + x) * 4) as usize;
            pixels[at..at + 4].copy_from_slice(&[1, 2, 3, 0]);
        }
    }
    fe.mem.write_slice(&pixels, GuestAddress(backing)).unwrap();
    let offset = u64::from((8 * w + 16) * 4);
    ok(
        &mut fe,
        &[
            Buf::Out(gpu::transfer_2d(5, part, offset, None)),
            Buf::In(24),
        ],
    );
    ok(&mut fe, &[Buf::Out(gpu::flush(5, part)), Buf::In(24)]);
    let updates: Vec<Vec<u8>> = fe
        .wait_display_until(|m| m.iter().filter(|m| m.request == 8).count() >= 2)
        .into_iter()
        .filter(|m| m.request == 8)
        .map(|m| m.payload)
        .collect();
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    // QEMU's side: the UPDATE header (scanout, x, y, w, h) and the rectangle's pixels.
    let head = |r: [u32; 4]| -> Vec<u8> {
        [0, r[0], r[1], r[2], r[3]]
            .iter()
            .flat_map(|v: &u32| v.to_le_bytes())
            .collect()
    };
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0], [head(full), first.clone()].concat());
    let rect: Vec<u8> = (8..12u32)
        .flat_map(|y| {
            let at = ((y * w + 16) * 4) as usize;
            pixels[at..at + 32].to_vec()
        })
        .collect();
    assert_eq!(updates[1], [head(part), rect].concat());
    // The capture: the same messages, and Frames of the whole picture after each.
    let (reader, records) = common::read_capture(&out);
    let bytes = |p: &vgt_format::record::Payload| reader.read_payload(p).unwrap().to_vec();
    let mut socket_updates = Vec::new();
    let mut frames = Vec::new();
    for r in &records {
        match &r.body {
            RecordBody::GpuSocket(g) if g.request == 8 => socket_updates.push(g.clone()),
            RecordBody::Frame(f) => frames.push(f.clone()),
            _ => {}
        }
    }
    assert_eq!(socket_updates.len(), 2);
    for (g, sent) in socket_updates.iter().zip(&updates) {
        assert_eq!(
            &g.wire_payload(|p| reader.read_payload(p).map(|b| b.to_vec()))
                .unwrap(),
            sent
        );
    }
    assert_eq!(frames.len(), 2);
    assert_eq!(bytes(&frames[0].pixels), first);
    assert_eq!(frames[0].rect, full);
    assert_eq!(Some(&frames[0].pixels), socket_updates[0].data.as_ref());
    assert_eq!(bytes(&frames[1].pixels), pixels);
    assert_eq!(frames[1].rect, part);
}

/// Sends `request` on the control queue with a 24-byte response buffer; asserts OK_NODATA.
fn ok_nodata(fe: &mut TestFrontend, request: Vec<u8>) {
    let (_, _, r) = fe.command(0, &[Buf::Out(request), Buf::In(24)], false);
    assert_eq!(gpu::resp_type(&r), 0x1100);
}

/// A proxy whose queue worker polls for `window` while busy and after the last completion
/// (long windows, so that the tests' timing does not depend on the machine's load).
fn spawn_polling_proxy(dir: &Path, window: Duration) -> (Child, PathBuf, PathBuf) {
    let us = window.as_micros().to_string();
    spawn_proxy_env(
        dir,
        &[("VGT_PROXY_POLL_US", &us), ("VGT_PROXY_POLL_IDLE_US", &us)],
    )
}

/// Idle polling (docs/PROXY.md, "Queue worker"), with a 100 ms window so that the timing does
/// not depend on the machine's load: right after a completion the worker is still looking at
/// the available ring, so a chain published without a kick is served; once the window passed
/// in vain it sleeps (a chain without a kick waits, and the proxy uses no CPU), and a guest
/// that comes back later than the window does not re-arm it.
#[test]
fn proxy_idle_polling_serves_chains_without_a_kick_then_sleeps_using_no_cpu() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(100);
    let (mut proxy, sock, out) = spawn_polling_proxy(dir.path(), window);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(99, 2, 64, 64)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    // A burst: the next command right after the completion, with its kick.
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::flush(99, [0, 0, 1, 1])), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    // Within the window: served although nobody kicked.
    publish_flush_without_kick(&mut fe);
    let t = Instant::now();
    fe.wait_used(0);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // The window passes in vain: the worker sleeps and uses no CPU.
    std::thread::sleep(window * 2);
    let pid = proxy.id();
    let before = cpu_ns(pid);
    std::thread::sleep(Duration::from_millis(300));
    let idle_cpu = Duration::from_nanos(cpu_ns(pid) - before);
    assert!(
        idle_cpu < Duration::from_millis(10),
        "idle proxy used {idle_cpu:?} of CPU in 300 ms"
    );
    publish_flush_without_kick(&mut fe);
    assert!(
        fe.no_used_within(0, Duration::from_millis(200)),
        "served without a kick while asleep"
    );
    // The kick wakes it (more than the window after the last completion: not re-armed).
    fe.queues[0].kick.write(1).unwrap();
    fe.wait_used(0);
    publish_flush_without_kick(&mut fe);
    assert!(
        fe.no_used_within(0, Duration::from_millis(50)),
        "polled after a guest that came back late"
    );
    fe.queues[0].kick.write(1).unwrap();
    fe.wait_used(0);
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    // Every command recorded once, each with its response.
    let (_, records) = common::read_capture(&out);
    let commands: Vec<u64> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(&r.body, RecordBody::Command(c) if c.queue == 0))
        .map(|(i, _)| i as u64)
        .collect();
    let answered: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Response(x) => Some(x.command),
            _ => None,
        })
        .collect();
    assert_eq!(commands.len(), 5);
    assert!(commands.iter().all(|c| answered.contains(c)));
}

/// While the queue worker polls, the guest is asked for no kicks (its `avail_event` is put
/// ahead, as a polling device does); before the worker sleeps it asks for the next kick again,
/// so a guest that comes back late still wakes it.
#[test]
fn proxy_polling_asks_the_guest_for_no_kicks_and_asks_again_before_sleeping() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(200);
    let (mut proxy, sock, _out) = spawn_polling_proxy(dir.path(), window);
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    assert!(fe.event_idx_acked(), "the C backend offers EVENT_IDX");
    // The first command wakes the worker with a kick; it then polls.
    let kicks = fe.queues[0].kicks;
    ok_nodata(&mut fe, gpu::create_2d(99, 2, 64, 64));
    assert_eq!(
        fe.queues[0].kicks,
        kicks + 1,
        "the sleeping worker asked for a kick"
    );
    // Commands back to back within the window: served, and none of them kicked.
    for _ in 0..20 {
        ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    }
    assert_eq!(
        fe.queues[0].kicks,
        kicks + 1,
        "the guest kicked a polling worker"
    );
    // The window passes: the worker asks for the next kick before it sleeps, and that kick
    // wakes it.
    std::thread::sleep(window * 2);
    ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    assert_eq!(fe.queues[0].kicks, kicks + 2);
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
}

/// QEMU stops the rings (`stop`: GET_VRING_BASE) after six commands and starts them again
/// on the same rings at that base (`cont`), the queue worker asleep by then: the next command
/// is served, and the guest kicks for it. With `polling` the worker had the guest's kicks
/// turned off when the rings stopped.
fn commands_survive_stop_and_cont(polling: bool) {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(300);
    let (mut proxy, sock, out) = if polling {
        spawn_polling_proxy(dir.path(), window)
    } else {
        spawn_proxy_env(dir.path(), &[("VGT_PROXY_POLL_US", "0")])
    };
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    ok_nodata(&mut fe, gpu::create_2d(99, 2, 64, 64));
    for _ in 0..5 {
        ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    }
    if polling {
        // Still within the window: the worker polls, kicks off.
        assert_ne!(
            fe.avail_event(0),
            fe.queues[0].avail_idx,
            "no kick asked for while polling"
        );
    }
    let bases = fe.stop();
    assert_eq!(bases[0], 6);
    // The ring handed back asks for a kick at the next chain.
    assert_eq!(fe.avail_event(0), fe.queues[0].avail_idx);
    std::thread::sleep(window * 2);
    fe.start(&bases);
    let kicks = fe.queues[0].kicks;
    ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    assert_eq!(
        fe.queues[0].kicks,
        kicks + 1,
        "the guest kicked the sleeping worker"
    );
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    // A pause, not a reset.
    assert_eq!(resets(&out), 0);
}

/// QEMU closes the display socket (at a stop or a reset): the backend must find it closed,
/// as it would without the proxy. QEMU's C backend writes its next display message to it and
/// dies of SIGPIPE, directly or through the proxy; the proxy used to keep reading the backend's
/// end, and the backend went on writing into a socket nobody answered.
#[test]
fn proxy_display_socket_closed_by_qemu_is_closed_for_the_backend_too() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    ok_nodata(&mut fe, gpu::create_2d(1, 2, 8, 8));
    let px = fe.put(&[0x33; 256]);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(1, 1)),
            Buf::Out(gpu::mem_entries(&[(px, 256)])),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    ok_nodata(&mut fe, gpu::set_scanout(0, 1, [0, 0, 8, 8]));
    ok_nodata(&mut fe, gpu::flush(1, [0, 0, 8, 8]));
    fe.wait_display_until(|m| m.iter().any(|m| m.request == 8));
    fe.display_sock.shutdown(std::net::Shutdown::Both).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The next flush makes the backend write an UPDATE into the closed socket.
    fe.push(
        0,
        &[Buf::Out(gpu::flush(1, [0, 0, 8, 8])), Buf::In(24)],
        false,
    );
    let status = wait_exit(&mut proxy, 20);
    assert_eq!(
        status.code(),
        Some(3),
        "the proxy reports the backend's death"
    );
    drop(fe);
    let summary = vgt_e2e::capture::Summary::read(&out).unwrap();
    let crash = summary
        .lifecycles(LifecycleKind::Crash)
        .next()
        .expect("a crash record");
    assert!(crash.message.contains("signal 13"), "{}", crash.message);
}

/// The Reset lifecycle records of a capture.
fn resets(out: &Path) -> usize {
    vgt_e2e::capture::Summary::read(out)
        .unwrap()
        .lifecycles(LifecycleKind::Reset)
        .count()
}

/// A guest reset through the proxy: the rings stopped and set up again from index 0 on fresh
/// memory (what a rebooted driver does). The shadow rings follow, the next command is served,
/// and the capture records the reset (so that replay and the checks drop the first boot's
/// resources); the backend gets only QEMU's messages.
#[test]
fn proxy_rings_set_up_again_from_zero_serve_the_next_command_and_record_a_reset() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    ok_nodata(&mut fe, gpu::create_2d(99, 2, 64, 64));
    ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    assert_eq!(fe.stop()[0], 2);
    fe.reinit_rings();
    // The rings are the driver's now: the queue worker, still polling after the last
    // completion, must leave the fresh used ring alone (it once wrote its old used index
    // back there, and the next response was read from an empty slot).
    std::thread::sleep(Duration::from_millis(50));
    fe.start(&[0, 0]);
    // QEMU's C backend keeps its resources (it is told nothing but the ring restart).
    ok_nodata(&mut fe, gpu::flush(99, [0, 0, 1, 1]));
    ok_nodata(&mut fe, gpu::create_2d(7, 2, 8, 8));
    drop(fe);
    assert!(wait_exit(&mut proxy, 20).success());
    assert_eq!(resets(&out), 1);
}

/// Rings restarted at a base other than 0: the backend is kicked for the first chain (the
/// shadow ring's `avail_event` starts at the base, not at 0, which the ring never reaches).
#[test]
fn proxy_rings_stopped_and_started_again_at_their_base_serve_the_next_command() {
    commands_survive_stop_and_cont(false);
}

/// The same with the worker polling when the rings stop: the ring handed back asks for kicks
/// again.
#[test]
fn proxy_rings_stopped_while_polling_run_again_and_the_guest_kicks_the_sleeping_worker() {
    commands_survive_stop_and_cont(true);
}

/// A transfer and a flush published back to back (the proxy usually takes them in one
/// batch): the transfer's MemoryRead records come after its Command and before the flush's
/// Command, where replay looks for them.
#[test]
fn proxy_transfer_batched_with_a_flush_keeps_its_memory_reads_before_the_next_command() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(3, 2, 64, 64)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let pixels: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 13 % 241) as u8).collect();
    let backing = fe.put(&pixels);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(3, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, pixels.len() as u32)])),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    for _ in 0..20 {
        fe.push(
            0,
            &[
                Buf::Out(gpu::transfer_2d(3, [0, 0, 64, 64], 0, None)),
                Buf::In(24),
            ],
            false,
        );
        fe.push(
            0,
            &[Buf::Out(gpu::flush(3, [0, 0, 64, 64])), Buf::In(24)],
            false,
        );
        fe.wait_used(0);
        fe.wait_used(0);
    }
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    let (reader, records) = common::read_capture(&out);
    let mut current: Option<(u64, u32)> = None;
    let mut transfers = 0;
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Command(c) if c.queue == 0 => {
                let req = reader.read_payload(&c.request).unwrap().to_vec();
                let ty = u32::from_le_bytes(req[0..4].try_into().unwrap());
                current = Some((id as u64, ty));
                transfers += usize::from(ty == 0x105);
            }
            RecordBody::MemoryRead(m) => {
                assert_eq!(
                    current,
                    Some((m.command, 0x105)),
                    "memory read of #{} follows another command",
                    m.command
                );
                assert_eq!(reader.read_payload(&m.data).unwrap().to_vec(), pixels);
            }
            _ => {}
        }
    }
    assert_eq!(transfers, 20);
}

#[test]
fn proxy_backend_killed_with_a_command_in_flight_names_it_and_finishes_the_file() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    // The display holds GET_DISPLAY_INFO: the command stays in flight inside the backend.
    let gate = Arc::new(Gate::default());
    let answers = DisplayAnswers {
        display_info_gate: Some(gate.clone()),
        ..DisplayAnswers::default()
    };
    let mut fe = TestFrontend::connect(&sock, answers);
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(5, 2, 8, 8)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let pushed = fe.push(0, &[Buf::Out(gpu::get_display_info()), Buf::In(408)], false);
    assert!(fe.no_used_within(0, Duration::from_millis(300)));
    let pid = backend_pid(dir.path());
    // SAFETY: kill(2) on the backend we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = wait_exit(&mut proxy, 20);
    assert_eq!(status.code(), Some(3), "proxy exit {status:?}");
    gate.open();

    let (_, records) = common::read_capture(&out);
    let display_info_cmd = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Command(c) if c.head == pushed.head && c.request.inline().is_some_and(|b| b[0] == 0)))
        .unwrap() as u64;
    let crashes: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert!(
        crashes[0].message.contains("killed by signal 9"),
        "{}",
        crashes[0].message
    );
    assert!(
        crashes[0].message.contains(&format!(
            "1 command(s) in flight: #{display_info_cmd} GET_DISPLAY_INFO"
        )),
        "{}",
        crashes[0].message
    );
    assert!(crashes[0].message.contains("last completed: #"));
    assert_eq!(crashes.len(), 2);
    assert_eq!(crashes[1].command, Some(display_info_cmd));
    // The file is finished: the last record is End.
    let RecordBody::Lifecycle(end) = &records.last().unwrap().body else {
        panic!("no End record")
    };
    assert_eq!(end.kind, LifecycleKind::End);
}

/// A started backend's stdout and stderr reach the proxy's own, as written, and the capture, a
/// record per line: what a wrapper wrote before QEMU connected (one stderr line in two writes
/// stays one record), and the C backend's own GLib warning when QEMU hands over a second
/// display socket, recorded before the crash records of the SIGPIPE that kills it next.
#[test]
fn proxy_records_the_backends_output_and_its_last_words_before_the_crash() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Not `exec`: the shell's last line comes after the backend closed its connection.
    let cmd = format!(
        "sh -c 'echo on-stdout; printf \"on-stderr, \" >&2; sleep 0.01; echo \"in two writes\" >&2; \
         {C_BACKEND} --socket-path %s; echo \"backend status $?\" >&2'"
    );
    let (mut proxy, sock, out) =
        start_proxy_with(dir.path(), &[], &cmd, Stdio::piped(), Stdio::piped());
    let stdout = read_all(proxy.stdout.take().unwrap());
    let stderr = read_all(proxy.stderr.take().unwrap());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    ok_nodata(&mut fe, gpu::create_2d(1, 2, 8, 8));
    // QEMU after a `cont`: a new display socket (GPU_SET_SOCKET, request 33) ...
    let (_ours, theirs) = UnixStream::pair().unwrap();
    let mut hdr = Vec::new();
    for v in [33u32, 1, 0] {
        hdr.extend_from_slice(&v.to_le_bytes());
    }
    use std::os::fd::AsRawFd;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    fe.raw
        .send_with_fds(&[&hdr[..]], &[theirs.as_raw_fd()])
        .unwrap();
    drop(theirs);
    // ... and the old one closed: the backend kept it, and its next display message kills it.
    std::thread::sleep(Duration::from_millis(200));
    fe.display_sock.shutdown(std::net::Shutdown::Both).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fe.push(
        0,
        &[Buf::Out(gpu::set_scanout(0, 1, [0, 0, 8, 8])), Buf::In(24)],
        false,
    );
    let status = wait_exit(&mut proxy, 20);
    assert_eq!(status.code(), Some(3), "proxy exit {status:?}");
    drop(fe);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    const WARNING: &str = "assertion 'g->sock_fd == -1' failed";
    assert!(stdout.contains("on-stdout\n"), "proxy stdout: {stdout:?}");
    assert!(
        stderr.contains("on-stderr, in two writes\n"),
        "proxy stderr: {stderr:?}"
    );
    assert!(stderr.contains(WARNING), "proxy stderr: {stderr:?}");
    assert!(
        stderr.contains("backend status 141\n"),
        "proxy stderr: {stderr:?}"
    );

    let (_, records) = common::read_capture(&out);
    let lines: Vec<(usize, LifecycleKind, String, Option<u64>)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.body {
            RecordBody::Lifecycle(l)
                if matches!(
                    l.kind,
                    LifecycleKind::BackendStdout | LifecycleKind::BackendStderr
                ) =>
            {
                Some((i, l.kind, l.message.clone(), l.command))
            }
            _ => None,
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.1 == LifecycleKind::BackendStdout && l.2 == "on-stdout" && l.3.is_none()),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.1 == LifecycleKind::BackendStderr
            && l.2 == "on-stderr, in two writes"
            && l.3.is_none()),
        "{lines:#?}"
    );
    let warning = lines
        .iter()
        .find(|l| l.1 == LifecycleKind::BackendStderr && l.2.contains(WARNING))
        .unwrap_or_else(|| panic!("no recorded warning: {lines:#?}"));
    // It names the last command taken before it: the CREATE_2D.
    let create = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Command(c) if c.request.inline().is_some_and(|b| b[0] == 0x01)))
        .unwrap() as u64;
    assert_eq!(warning.3, Some(create), "{warning:?}");
    let crash = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash))
        .expect("a crash record");
    assert!(
        warning.0 < crash,
        "warning at {} after the crash at {crash}",
        warning.0
    );
    // The last words, written after the connection closed, are in before the crash records.
    let last = lines
        .iter()
        .find(|l| l.2 == "backend status 141")
        .unwrap_or_else(|| panic!("no last line: {lines:#?}"));
    assert_eq!(last.1, LifecycleKind::BackendStderr);
    assert!(
        last.0 < crash,
        "last line at {} after the crash at {crash}",
        last.0
    );
    // The crash summary, in the capture and on the proxy's stderr, quotes them: what the
    // backend said since its last answer (the CREATE_2D's).
    let RecordBody::Lifecycle(summary) = &records[crash].body else {
        unreachable!()
    };
    let quote = format!(
        "; its stderr since its last control-queue answer: {:?} / \"backend status 141\"",
        warning.2
    );
    assert!(summary.message.ends_with(&quote), "{}", summary.message);
    assert!(stderr.contains(&quote), "proxy stderr: {stderr:?}");
    let RecordBody::Lifecycle(end) = &records.last().unwrap().body else {
        panic!("no End record")
    };
    assert_eq!(end.kind, LifecycleKind::End);
}

/// A command the backend leaves unanswered for `--stall-warn` seconds is recorded (an Error
/// naming it, before its late response) and printed, once; the commands it answers at once
/// are not.
#[test]
fn proxy_reports_a_command_the_backend_sits_on_once() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = start_proxy_with(
        dir.path(),
        &["--stall-warn", "1"],
        &format!("{C_BACKEND} --socket-path %s"),
        Stdio::inherit(),
        Stdio::piped(),
    );
    let stderr = read_all(proxy.stderr.take().unwrap());
    // The display holds GET_DISPLAY_INFO's answer, so the backend sits on the command.
    let gate = Arc::new(Gate::default());
    let answers = DisplayAnswers {
        display_info_gate: Some(gate.clone()),
        ..DisplayAnswers::default()
    };
    let mut fe = TestFrontend::connect(&sock, answers);
    ok_nodata(&mut fe, gpu::create_2d(5, 2, 8, 8));
    fe.push(0, &[Buf::Out(gpu::get_display_info()), Buf::In(408)], false);
    assert!(fe.no_used_within(0, Duration::from_millis(2500)));
    gate.open();
    fe.wait_used(0);
    ok_nodata(&mut fe, gpu::create_2d(6, 2, 8, 8));
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    let stderr = stderr.join().unwrap();

    let (_, records) = common::read_capture(&out);
    let info_cmd = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Command(c) if c.request.inline().is_some_and(|b| b[0] == 0x00 && b[1] == 0x01)))
        .unwrap();
    let stalls: Vec<(usize, &vgt_format::record::Lifecycle)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error => Some((i, l)),
            _ => None,
        })
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:#?}");
    let (at, l) = stalls[0];
    assert_eq!(l.command, Some(info_cmd as u64));
    assert_eq!(l.queue, Some(0));
    assert!(
        l.message
            .starts_with("the backend has not answered GET_DISPLAY_INFO (queue 0, head ")
            && l.message.ends_with(" for 1 s (process still running)"),
        "{}",
        l.message
    );
    let response = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Response(x) if x.command == info_cmd as u64))
        .expect("the late response");
    assert!(
        at > info_cmd && at < response,
        "stall #{at}, command #{info_cmd}, response #{response}"
    );
    assert_eq!(
        stderr.matches("has not answered").count(),
        1,
        "proxy stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("vgt-capture proxy: #{info_cmd}: {}", l.message)),
        "proxy stderr: {stderr}"
    );
}

/// The case both features are for, on a real backend: vhost-device-gpu 0.2.0's vring thread
/// panics on RESOURCE_CREATE_BLOB and the process lives on, so the guest waits for ever. The
/// capture holds the panic message (its stderr, after the command) and the stall record
/// naming the command.
#[test]
fn proxy_capture_of_a_backend_that_panics_and_hangs_holds_the_panic_and_the_stall() {
    let Some(vdg) = vgt_e2e::backends::vhost_device_gpu() else {
        eprintln!("skipped: vhost-device-gpu could not be installed");
        return;
    };
    // vhost-device-gpu 0.2.0 sometimes never answers the first command after the handshake,
    // connected directly too (2 of 6 direct connections from the test front-end while the
    // other proxy tests ran, 2026-12-07; a second kick does not wake it through the proxy).
    // Such a connection is its flake, not this test's subject: start again, up to 5 times.
    let mut attempt = 0;
    let (dir, mut proxy, out, mut fe) = loop {
        attempt += 1;
        let dir = tempfile::tempdir().unwrap();
        let (mut proxy, sock, out) = start_proxy_with(
            dir.path(),
            &["--stall-warn", "1"],
            &format!("{} --socket-path %s --gpu-mode null", vdg.display()),
            Stdio::inherit(),
            Stdio::null(),
        );
        let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
        let created = fe.push(
            0,
            &[Buf::Out(gpu::create_2d(5, 2, 8, 8)), Buf::In(24)],
            false,
        );
        // 5 s, not less: with the other proxy tests running on 2 cores its first answer can
        // take over 1.5 s (a CI=true clean-clone run, 2026-12-08, took that for a lost one 5
        // times in a row).
        if !fe.no_used_within(0, Duration::from_secs(5)) {
            let (id, _) = fe.wait_used(0);
            assert_eq!(id, u32::from(created.head));
            let mut r = [0u8; 24];
            fe.mem
                .read_slice(&mut r, GuestAddress(created.writable[0].0))
                .unwrap();
            assert_eq!(gpu::resp_type(&r), 0x1100);
            break (dir, proxy, out, fe);
        }
        assert!(
            attempt < 5,
            "vhost-device-gpu answered no first command in 5 connections"
        );
        drop(fe);
        wait_exit(&mut proxy, 30);
    };
    let _keep = dir;
    // RESOURCE_CREATE_BLOB: resource 9, guest memory, no entries, 4096 bytes.
    let blob = gpu::with(gpu::hdr(0x10c, 0, 0), &[9, 1, 0, 0, 0, 0, 4096, 0]);
    fe.push(0, &[Buf::Out(blob), Buf::In(24)], false);
    assert!(fe.no_used_within(0, Duration::from_millis(2000)));
    drop(fe);
    wait_exit(&mut proxy, 30);

    let (_, records) = common::read_capture(&out);
    let blob_cmd = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Command(c) if c.request.inline().is_some_and(|b| b[0] == 0x0c && b[1] == 0x01)))
        .expect("the CREATE_BLOB command") as u64;
    let lifecycle = |kind| {
        records
            .iter()
            .enumerate()
            .filter_map(move |(i, r)| match &r.body {
                RecordBody::Lifecycle(l) if l.kind == kind => Some((i as u64, l.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let said = lifecycle(LifecycleKind::BackendStderr);
    let panic = said
        .iter()
        .find(|(_, l)| l.message.contains("panicked"))
        .unwrap_or_else(|| panic!("no panic message recorded: {said:#?}"));
    assert!(panic.0 > blob_cmd, "{panic:?}");
    assert_eq!(panic.1.command, Some(blob_cmd), "{panic:?}");
    let stalls: Vec<_> = lifecycle(LifecycleKind::Error)
        .into_iter()
        .filter(|(_, l)| l.message.contains("has not answered"))
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:#?}");
    assert_eq!(stalls[0].1.command, Some(blob_cmd));
    assert!(
        stalls[0]
            .1
            .message
            .starts_with("the backend has not answered RESOURCE_CREATE_BLOB"),
        "{:?}",
        stalls[0].1
    );
    // And it quotes why: the panic message written since the backend's last answer.
    assert!(
        stalls[0]
            .1
            .message
            .contains("(process still running); its stderr since its last control-queue answer")
            && stalls[0]
                .1
                .message
                .contains("GpuCommand::ResourceCreateBlob unimplemented"),
        "{:?}",
        stalls[0].1
    );
    // It never answered: no Response for the command.
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Response(x) if x.command == blob_cmd))
    );
}

/// What the front-end saw after sending one raw message.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A reply (header and payload).
    Reply(Vec<u8>),
    /// The backend closed the connection.
    Closed,
    /// Nothing within a second, connection still open.
    Silent,
}

/// Sends one raw vhost-user message after the handshake and reports what came back.
fn raw_exchange(fe: &TestFrontend, msg: &[u8]) -> Seen {
    let mut s: &UnixStream = &fe.raw;
    if s.write_all(msg).is_err() {
        return Seen::Closed;
    }
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut hdr = [0u8; 12];
    match s.read(&mut hdr) {
        Ok(0) => return Seen::Closed,
        Ok(n) => {
            if n < 12 && s.read_exact(&mut hdr[n..]).is_err() {
                return Seen::Closed;
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Seen::Silent;
        }
        Err(_) => return Seen::Closed,
    }
    let len = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    if s.read_exact(&mut body).is_err() {
        return Seen::Closed;
    }
    let mut all = hdr.to_vec();
    all.extend(body);
    Seen::Reply(all)
}

fn header(request: u32, flags: u32, size: u32) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [request, flags, size] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// Runs `f` against a direct C backend and through the proxy; returns both observations.
fn both<T: std::fmt::Debug + PartialEq>(f: impl Fn(&mut TestFrontend) -> T) -> (T, T, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut direct, dsock) = spawn_direct(dir.path());
    let mut fe = TestFrontend::connect(&dsock, DisplayAnswers::default());
    let a = f(&mut fe);
    drop(fe);
    let _ = wait_exit(&mut direct, 20);
    let (mut proxy, psock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&psock, DisplayAnswers::default());
    let b = f(&mut fe);
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    // Whatever happened, the capture opens.
    let _ = common::read_capture(&out);
    (a, b, status.code())
}

#[test]
fn proxy_malformed_vhost_user_messages_get_the_backends_own_answer() {
    if !have_backend() {
        return;
    }
    // An unknown request code with NEED_REPLY, a GET_VRING_BASE for a queue that does not
    // exist, a SET_VRING_NUM with a short payload: whatever the C backend does (reply, or
    // close), the front-end sees the same through the proxy, which never dies of it.
    let cases: Vec<Vec<u8>> = vec![
        // A well-formed GET_FEATURES first: its reply passes through (the proxy removes nothing
        // the C backend offers here).
        header(1, 0x1, 0),
        header(99, 0x9, 0),
        {
            let mut m = header(11, 0x1, 8);
            m.extend_from_slice(&[200, 0, 0, 0, 0, 0, 0, 0]);
            m
        },
        {
            let mut m = header(8, 0x1, 4);
            m.extend_from_slice(&[0, 0, 0, 0]);
            m
        },
    ];
    for case in cases {
        let (direct, proxied, code) = both(|fe| raw_exchange(fe, &case));
        eprintln!("case {case:02x?}: the C backend answered {direct:02x?}");
        assert_eq!(direct, proxied, "case {case:02x?}");
        assert!(code.is_some(), "proxy died of a signal");
    }
}

#[test]
fn proxy_malformed_chain_is_forwarded_and_the_backend_reacts_as_without_the_proxy() {
    if !have_backend() {
        return;
    }
    // A chain whose NEXT points outside the table, then a good command: the C backend's
    // reaction (answer, or refuse the queue) is the same with and without the proxy.
    let (direct, proxied, code) = both(|fe| {
        let req = fe.put(&gpu::create_2d(3, 2, 8, 8));
        let size = fe.queues[0].size;
        let head = fe.queues[0].next_desc;
        fe.write_desc(fe.queues[0].desc, head, (req, 56, common::F_NEXT, size + 5));
        fe.queues[0].next_desc += 1;
        fe.publish(0, head);
        let first = !fe.no_used_within(0, Duration::from_millis(500));
        let p = fe.push(
            0,
            &[Buf::Out(gpu::create_2d(4, 2, 8, 8)), Buf::In(24)],
            false,
        );
        let second = !fe.no_used_within(0, Duration::from_millis(500));
        (first, second, p.head)
    });
    eprintln!("malformed chain: (answered, next answered, head) = {direct:?}");
    assert_eq!(direct, proxied);
    assert!(code.is_some(), "proxy died of a signal");
}

#[test]
fn proxy_to_an_already_listening_backend_socket_records_the_session() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut backend, bsock) = spawn_direct(dir.path());
    let start = Instant::now();
    while !bsock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backend socket missing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sock = dir.path().join("front.sock");
    let out = dir.path().join("p.vgt");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args(["proxy", "--quiet", "--socket"])
        .arg(&sock)
        .arg("--backend")
        .arg(&bsock)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let done = workload(&mut fe);
    assert_eq!(gpu::resp_type(&done[1].1), 0x1100);
    let seen_features = fe.features;
    drop(fe);
    assert!(wait_exit(&mut proxy, 20).success());
    let _ = wait_exit(&mut backend, 20);
    let (_, records) = common::read_capture(&out);
    // SessionStart holds the backend's own offer: what QEMU saw plus what the proxy removed.
    let Some(RecordBody::SessionStart(s)) = records.first().map(|r| &r.body) else {
        panic!("no SessionStart first");
    };
    assert_ne!(s.features_offered, 0);
    assert_eq!(
        s.features_offered & !vgt_capture::proxy::STRIPPED_FEATURES,
        seen_features
    );
    let commands = records
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Command(_)))
        .count();
    let responses = records
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Response(_)))
        .count();
    assert_eq!((commands, responses), (done.len(), done.len()));
    // The handshake is recorded as QEMU saw it, and the removed protocol features are named.
    assert!(records.iter().any(|r| matches!(&r.body,
        RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Connect && l.message.contains("HOST_NOTIFIER"))));
}

#[test]
fn proxy_add_mem_reg_front_end_is_interposed_like_set_mem_table() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What the backend says directly.
    let (mut direct, dsock) = spawn_direct(dir.path());
    let fe = TestFrontend::connect_mem_slots(&dsock, DisplayAnswers::default());
    let direct_slots = fe.max_mem_slots.unwrap();
    drop(fe);
    let _ = wait_exit(&mut direct, 20);

    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect_mem_slots(&sock, DisplayAnswers::default());
    assert_eq!(
        fe.max_mem_slots,
        Some(direct_slots - 1),
        "one slot for the shadow rings"
    );
    let done = workload(&mut fe);
    assert_eq!(gpu::resp_type(&done[0].1), 0x1101);
    for (_, r) in &done[1..6] {
        assert_eq!(gpu::resp_type(r), 0x1100);
    }
    // The memory goes away again (QEMU does this on memory hot-unplug).
    let region =
        vm_memory::GuestMemoryBackend::find_region(&fe.mem, vm_memory::GuestAddress(0)).unwrap();
    let info = vhost::VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    vhost::vhost_user::VhostUserFrontend::remove_mem_region(&mut fe.frontend, &info).unwrap();
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");

    let (reader, records) = common::read_capture(&out);
    let bytes = |p: &vgt_format::record::Payload| reader.read_payload(p).unwrap().to_vec();
    let mut commands = BTreeMap::new();
    let mut responses = BTreeMap::new();
    let mut read_bytes = Vec::new();
    let mut vhost_requests = Vec::new();
    let mut notes = Vec::new();
    for (id, r) in records.iter().enumerate() {
        match &r.body {
            RecordBody::Command(c) if c.queue == 0 => {
                commands.insert(id as u64, bytes(&c.request));
            }
            RecordBody::Response(r) => {
                responses.insert(r.command, bytes(&r.bytes));
            }
            RecordBody::MemoryRead(m) => read_bytes.extend(bytes(&m.data)),
            RecordBody::VhostUser(v) => vhost_requests.push((v.direction as u8, v.request)),
            RecordBody::Lifecycle(l) => notes.push((l.kind, l.message.clone())),
            _ => {}
        }
    }
    // Commands and responses come from the shadow rings, which the backend only has through
    // the proxy's own ADD_MEM_REG; the transfer source is read through the proxy's mapping of
    // QEMU's ADD_MEM_REG region.
    assert_eq!(commands.len(), done.len());
    for ((id, req), (sent, got)) in commands.iter().zip(&done) {
        assert_eq!(req, sent);
        assert_eq!(responses.get(id), Some(got));
    }
    let pixels: Vec<u8> = (0..64 * 32 * 4).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(read_bytes, pixels);
    // Each message recorded as QEMU sent it (direction 0) and the replies (1).
    for want in [(0, 36), (1, 36), (0, 37), (0, 38)] {
        assert!(vhost_requests.contains(&want), "{want:?} missing");
    }
    assert!(
        !vhost_requests.contains(&(0, 5)),
        "SET_MEM_TABLE was not used"
    );
    assert!(
        notes
            .iter()
            .any(|(k, m)| *k == LifecycleKind::Connect && m.contains("shadow-ring region")),
        "{notes:?}"
    );
    let errors: Vec<_> = notes
        .iter()
        .filter(|(k, _)| *k == LifecycleKind::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // The protocol feature was not removed.
    assert!(
        !notes.iter().any(|(_, m)| m.contains("CONFIGURE_MEM_SLOTS")),
        "{notes:?}"
    );
}

/// Waits (up to 10 s) until the live capture at `out` holds a MemoryRead of command `cmd`.
fn wait_memory_read_of(out: &Path, cmd: u64) {
    let start = Instant::now();
    loop {
        if let Ok(reader) = vgt_format::CaptureReader::open(out)
            && reader.iter().any(|r| {
                matches!(r, Ok((_, rec)) if matches!(&rec.body, RecordBody::MemoryRead(m) if m.command == cmd))
            })
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no memory read of #{cmd} in the capture"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The guest rewrites a transfer's source while the backend still holds the transfer (behind a
/// GET_DISPLAY_INFO the display does not answer yet): the backend reads the newer bytes, so the
/// capture's recorded bytes are not what the backend saw. The proxy checks the source again at
/// the response and records an InFlightWrite naming the transfer; a transfer whose source the
/// guest leaves alone gets none. The replay of that capture diverges and says why.
#[test]
fn proxy_transfer_source_changed_in_flight_is_recorded_as_a_driver_race() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let gate = Arc::new(Gate::default());
    let answers = DisplayAnswers {
        display_info_gate: Some(gate.clone()),
        ..DisplayAnswers::default()
    };
    let mut fe = TestFrontend::connect(&sock, answers);
    let ok = |r: &[u8]| assert_eq!(gpu::resp_type(r), 0x1100);
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(7, 2, 16, 16)), Buf::In(24)],
        false,
    );
    ok(&r);
    let before: Vec<u8> = (0..16 * 16 * 4).map(|i| (i * 7 % 251) as u8).collect();
    let after: Vec<u8> = before.iter().map(|b| b ^ 0x5a).collect();
    let backing = fe.put(&before);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(7, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, before.len() as u32)])),
            Buf::In(24),
        ],
        false,
    );
    ok(&r);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::set_scanout(0, 7, [0, 0, 16, 16])),
            Buf::In(24),
        ],
        false,
    );
    ok(&r);
    // A transfer whose source stays as it was: no event.
    let (calm, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::transfer_2d(7, [0, 0, 16, 16], 0, None)),
            Buf::In(24),
        ],
        false,
    );
    ok(&r);
    // The backend is held inside GET_DISPLAY_INFO; the transfer queued behind it is taken (and
    // recorded) by the proxy, then the guest writes new bytes, then the backend goes on.
    fe.push(0, &[Buf::Out(gpu::get_display_info()), Buf::In(408)], false);
    let raced = fe.push(
        0,
        &[
            Buf::Out(gpu::transfer_2d(7, [0, 0, 16, 16], 0, None)),
            Buf::In(24),
        ],
        false,
    );
    assert!(fe.no_used_within(0, Duration::from_millis(100)));
    let commands = |out: &Path| -> Vec<(u64, u16)> {
        let (_, records) = common::read_capture(out);
        records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.body {
                RecordBody::Command(c) => Some((i as u64, c.head)),
                _ => None,
            })
            .collect()
    };
    // The proxy takes both right away; the transfer is the last command recorded.
    let start = Instant::now();
    let raced_id = loop {
        if let Some(&(id, head)) = commands(&out).last()
            && head == raced.head
        {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "transfer not taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_memory_read_of(&out, raced_id);
    fe.mem.write_slice(&after, GuestAddress(backing)).unwrap();
    gate.open();
    fe.wait_used(0);
    fe.wait_used(0);
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::flush(7, [0, 0, 16, 16])), Buf::In(24)],
        false,
    );
    ok(&r);
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");

    let (reader, records) = common::read_capture(&out);
    let calm_id = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Command(c) if c.head == calm.head && c.request.inline().is_some_and(|b| b[0] == 0x05)))
        .unwrap() as u64;
    let events: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::InFlightWrite => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].command, Some(raced_id));
    assert_ne!(events[0].command, Some(calm_id));
    assert!(
        events[0].message.contains(&format!(
            "TRANSFER_TO_HOST_2D #{raced_id} read while it was in flight: 1 of its 1 runs (1024 of 1024 bytes), the first at {backing:#x}"
        )),
        "{}",
        events[0].message
    );
    // The capture holds the older bytes for the transfer; the backend showed the newer ones.
    let read = records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::MemoryRead(m) if m.command == raced_id => Some(m.data.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(reader.read_payload(&read).unwrap().to_vec(), before);
    let frame = records
        .iter()
        .rev()
        .find_map(|r| match &r.body {
            RecordBody::Frame(f) => Some(f.pixels.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(reader.read_payload(&frame).unwrap().to_vec(), after);
    // The event comes before the transfer's response.
    let event_at = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::InFlightWrite))
        .unwrap();
    let response_at = records
        .iter()
        .position(|r| matches!(&r.body, RecordBody::Response(x) if x.command == raced_id))
        .unwrap();
    assert!(event_at < response_at);
    // Replay shows the older bytes, so its frame differs, and it says what may explain it.
    let report = vgt_replay::Replayer::new(
        &reader,
        vgt_replay::ReplayOptions {
            keep_going: true,
            ..vgt_replay::ReplayOptions::default()
        },
    )
    .run(&mut vgt_replay::Quiet)
    .unwrap();
    assert_eq!(report.in_flight_writes, vec![raced_id]);
    assert!(
        report
            .divergences
            .iter()
            .any(|d| matches!(d.kind, vgt_replay::DivergenceKind::Frame { .. })),
        "{:#?}",
        report.divergences
    );
    let mut summary = Vec::new();
    report.write_summary(&mut summary).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    assert!(
        summary.contains(&format!(
            "note: the guest changed memory under 1 command(s) while they were in flight (#{raced_id})"
        )),
        "{summary}"
    );
}

/// A transfer over a backing the guest says is 68 GiB of contiguous memory far outside guest
/// RAM (17 entries of 4 GiB - 4 KiB from 1 TiB, rows as wide as the stride, so every row joins
/// one run): the proxy neither reads nor allocates it (it used to size one buffer for the whole
/// run, which the allocator refused: an abort), records why, and serves the next command.
#[test]
fn proxy_transfer_over_an_absurd_backing_is_not_read_and_the_proxy_serves_on() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    // The backend refuses a resource this large; the transfer's reading is the proxy's own.
    fe.command(
        0,
        &[Buf::Out(gpu::create_2d(9, 2, 1 << 30, 16)), Buf::In(24)],
        false,
    );
    let len = 0xffff_f000u32;
    let entries: Vec<(u64, u32)> = (0..17u64)
        .map(|i| ((1u64 << 40) + i * u64::from(len), len))
        .collect();
    fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(9, entries.len() as u32)),
            Buf::Out(gpu::mem_entries(&entries)),
            Buf::In(24),
        ],
        false,
    );
    fe.command(
        0,
        &[
            Buf::Out(gpu::transfer_2d(9, [0, 0, 1 << 30, 16], 0, None)),
            Buf::In(24),
        ],
        false,
    );
    // Still serving.
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(10, 2, 8, 8)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    // A rect outside its resource: the backend refuses it before reading, so the proxy records
    // no memory for it either.
    let backing = fe.put(&[0x11; 8 * 8 * 4]);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::attach_backing(10, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, 8 * 8 * 4)])),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(gpu::transfer_2d(10, [4, 0, 8, 8], 0, None)),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1205, "ERR_INVALID_PARAMETER");
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    let (_, records) = common::read_capture(&out);
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.body, RecordBody::MemoryRead(m)
            if m.resource_id == 9 || m.resource_id == 10)),
        "memory outside guest RAM, or of a refused transfer, was recorded"
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Lifecycle(l)
            if l.kind == LifecycleKind::Error && l.message.contains("outside guest memory"))),
        "no record says why the transfer's memory is missing"
    );
}

/// A guest that queues several display commands before the backend runs them: every Frame and
/// Cursor record names the command whose execution sent it (not the one the proxy took last),
/// with that command's resource; a flush of a resource no scanout shows and one the backend
/// refuses (its rectangle past the resource) take nothing.
#[test]
fn proxy_frames_and_cursor_records_name_the_queued_command_that_showed_them() {
    if !have_backend() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, sock, out) = spawn_proxy(dir.path());
    let mut fe = TestFrontend::connect(&sock, DisplayAnswers::default());
    let full = [0, 0, 64, 64];
    for (id, seed) in [(3u32, 13usize), (4, 29), (5, 7)] {
        ok_nodata(&mut fe, gpu::create_2d(id, 2, 64, 64));
        let pixels: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * seed % 251) as u8).collect();
        let backing = fe.put(&pixels);
        let (_, _, r) = fe.command(
            0,
            &[
                Buf::Out(gpu::attach_backing(id, 1)),
                Buf::Out(gpu::mem_entries(&[(backing, pixels.len() as u32)])),
                Buf::In(24),
            ],
            false,
        );
        assert_eq!(gpu::resp_type(&r), 0x1100);
        ok_nodata(&mut fe, gpu::transfer_2d(id, full, 0, None));
    }
    let batch = [
        gpu::set_scanout(0, 3, full),
        gpu::flush(3, full), // shows resource 3
        gpu::flush(4, full), // not on a scanout: no update
        gpu::set_scanout(0, 4, full),
        gpu::flush(4, full),          // shows resource 4
        gpu::flush(4, [0, 0, 65, 1]), // past the resource: refused
        gpu::set_scanout(0, 3, full),
        gpu::flush(3, [0, 0, 8, 8]), // the corner of resource 3
    ];
    let chains: Vec<Vec<Buf>> = batch
        .iter()
        .map(|c| vec![Buf::Out(c.clone()), Buf::In(24)])
        .collect();
    fe.push_all(0, &chains);
    for _ in 0..batch.len() {
        fe.wait_used(0);
    }
    let move_with =
        |x: u32, y: u32, res: u32| gpu::with(gpu::hdr(0x301, 0, 0), &[0, x, y, 0, res, 0, 0, 0]);
    let cursor = [
        gpu::update_cursor(0, 10, 10, 5, 1, 2),
        move_with(20, 21, 5),
        move_with(30, 31, 5),
        gpu::move_cursor(0, 40, 41), // resource 0: hidden
    ];
    let chains: Vec<Vec<Buf>> = cursor.iter().map(|c| vec![Buf::Out(c.clone())]).collect();
    fe.push_all(1, &chains);
    for _ in 0..cursor.len() {
        fe.wait_used(1);
    }
    // Three UPDATEs (8) and the CURSOR_POS_HIDE (5) reached QEMU's side.
    fe.wait_display_until(|m| {
        m.iter().filter(|m| m.request == 8).count() >= 3 && m.iter().any(|m| m.request == 5)
    });
    drop(fe);
    let status = wait_exit(&mut proxy, 20);
    assert!(status.success(), "proxy exit {status:?}");
    let (_reader, records) = common::read_capture(&out);
    let commands = |q: u16| -> Vec<u64> {
        records
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(&r.body, RecordBody::Command(c) if c.queue == q))
            .map(|(i, _)| i as u64)
            .collect()
    };
    let control = commands(0);
    let b = &control[control.len() - batch.len()..];
    let frames: Vec<(u64, u32, [u32; 4])> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Frame(f) => Some((f.command, f.resource_id, f.rect)),
            _ => None,
        })
        .collect();
    assert_eq!(
        frames,
        vec![(b[1], 3, full), (b[4], 4, full), (b[7], 3, [0, 0, 8, 8])],
        "Frame records (command, resource, damage); the batch's commands are {b:?}"
    );
    let cursors = commands(1);
    let c = &cursors[cursors.len() - cursor.len()..];
    let seen: Vec<(u64, u32, u32)> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Cursor(k) => Some((k.command, k.x, k.resource_id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        vec![(c[0], 10, 5), (c[1], 20, 0), (c[2], 30, 0), (c[3], 40, 0)],
        "Cursor records (command, x, resource); the cursor commands are {c:?}"
    );
}
