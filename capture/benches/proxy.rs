//! Proxy overhead, same run, same machine: the Rust test front-end drives QEMU's C backend
//! (/usr/lib/qemu/vhost-user-gpu) directly and through `vgt-capture proxy`, and compares
//! - small commands one at a time: latency per command (p50, p99) and the added latency;
//! - small commands in batches of 32: throughput ratio proxy / direct;
//! - full-frame 1920x1080 TRANSFER_TO_HOST_2D + RESOURCE_FLUSH: frames per second ratio.
//!
//! - small commands paced like a 200 Hz guest (one every 5 ms): the proxy's CPU time per command,
//!   which shows what polling costs a guest that is not issuing bursts.
//!
//! Besides the rates, it prints the proxy process's CPU time (user + system, all its threads)
//! per command or frame of each phase, from /proc/<pid>/task/*/schedstat, and the kicks per
//! command the front-end made (it kicks only when the device's `avail_event` asks, as Linux
//! does; under QEMU each kick is a VM exit).
//!
//! `cargo bench -p vgt-capture --bench proxy` (env VGT_BENCH_SYNC=buffered to run the proxy with
//! `--sync buffered`; VGT_BENCH_ROUNDS to change the command count; VGT_BENCH_RUNS to change
//! the number of interleaved direct/proxy runs, 5 by default, after one warm-up pair that is not
//! counted (VGT_BENCH_WARMUP=0 drops it); VGT_BENCH_FRAMES the number of
//! 1080p frames, 200 by default; VGT_BENCH_SIDE=proxy or direct to
//! run one side alone, e.g. under `perf record -p`; the proxy's pid is printed). Run standalone
//! (`target/release/deps/proxy-<hash> --bench` from the repository root), it finds vgt-capture
//! at its build path, else at `target/release/vgt-capture`; `VGT_CAPTURE_BIN` and
//! `VGT_BENCH_BACKEND` name other binaries (e.g. on a machine without QEMU installed).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use vm_memory::{Bytes, GuestAddress};

const C_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";

/// The C backend to measure against (`VGT_BENCH_BACKEND` overrides the installed path).
fn c_backend() -> String {
    std::env::var("VGT_BENCH_BACKEND").unwrap_or_else(|_| C_BACKEND.to_owned())
}

/// The vgt-capture binary: `VGT_CAPTURE_BIN`, else the one cargo built, else
/// `target/release/vgt-capture` under the current directory.
fn capture_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("VGT_CAPTURE_BIN") {
        return p.into();
    }
    let built = Path::new(env!("CARGO_BIN_EXE_vgt-capture"));
    if built.exists() {
        built.to_owned()
    } else {
        Path::new("target/release/vgt-capture").to_owned()
    }
}

/// Reuses fixed descriptors and buffers (the bump allocator would run out of guest memory).
struct Slots {
    req: Vec<u64>,
    resp: Vec<u64>,
}

fn push_fixed(fe: &mut TestFrontend, slot: u16, req_addr: u64, req: &[u8], resp_addr: u64) {
    fe.mem.write_slice(req, GuestAddress(req_addr)).unwrap();
    let table = fe.queues[0].desc;
    let d0 = slot * 2;
    fe.write_desc(
        table,
        d0,
        (req_addr, req.len() as u32, common::F_NEXT, d0 + 1),
    );
    fe.write_desc(table, d0 + 1, (resp_addr, 24, common::F_WRITE, 0));
    fe.publish(0, d0);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// CPU time of process `pid` (all its threads), in microseconds, from the nanosecond
/// run-time counters in /proc/<pid>/task/*/schedstat (stat's clock ticks are 10 ms); 0 for the
/// direct side (the backend is not the subject) or when /proc cannot be read.
fn cpu_us(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else {
        return 0.0;
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e3
}

struct Small {
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
    /// Proxy CPU per command: one at a time, in batches.
    cpu_single_us: f64,
    cpu_batch_us: f64,
    /// Kicks the front-end made per command (the device asked for them): one at a time, in
    /// batches.
    kicks_single: f64,
    kicks_batch: f64,
}

fn small_commands(fe: &mut TestFrontend, rounds: usize, pid: Option<u32>) -> Small {
    let slots = Slots {
        req: (0..32).map(|_| fe.alloc(64)).collect(),
        resp: (0..32).map(|_| fe.alloc(24)).collect(),
    };
    // One resource to flush over and over (not on a scanout: the backend answers at once).
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(99, 2, 64, 64)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let flush = gpu::flush(99, [0, 0, 1, 1]);
    // Warm-up, then one at a time.
    let mut lat = Vec::with_capacity(rounds);
    let mut cpu0 = 0.0;
    let mut kicks0 = 0;
    for i in 0..rounds + 100 {
        if i == 100 {
            cpu0 = cpu_us(pid);
            kicks0 = fe.queues[0].kicks;
        }
        let t = Instant::now();
        push_fixed(fe, 0, slots.req[0], &flush, slots.resp[0]);
        fe.wait_used(0);
        if i >= 100 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let cpu_single_us = (cpu_us(pid) - cpu0) / rounds as f64;
    let kicks_single = (fe.queues[0].kicks - kicks0) as f64 / rounds as f64;
    lat.sort_by(f64::total_cmp);
    // Batches of 32.
    let batches = rounds / 32;
    let cpu0 = cpu_us(pid);
    let kicks0 = fe.queues[0].kicks;
    let t = Instant::now();
    for _ in 0..batches {
        for s in 0..32u16 {
            push_fixed(
                fe,
                s,
                slots.req[usize::from(s)],
                &flush,
                slots.resp[usize::from(s)],
            );
        }
        for _ in 0..32 {
            fe.wait_used(0);
        }
    }
    let per_sec = (batches * 32) as f64 / t.elapsed().as_secs_f64();
    let cpu_batch_us = (cpu_us(pid) - cpu0) / (batches * 32) as f64;
    let kicks_batch = (fe.queues[0].kicks - kicks0) as f64 / (batches * 32) as f64;
    Small {
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        per_sec,
        cpu_single_us,
        cpu_batch_us,
        kicks_single,
        kicks_batch,
    }
}

/// A guest that is mostly idle: `n` small commands, one every 5 ms. Returns the proxy's CPU
/// time per command (what its polling costs when no burst follows).
fn paced_commands(fe: &mut TestFrontend, n: usize, pid: Option<u32>) -> f64 {
    let req = fe.alloc(64);
    let resp = fe.alloc(24);
    let flush = gpu::flush(99, [0, 0, 1, 1]);
    let cpu0 = cpu_us(pid);
    for _ in 0..n {
        push_fixed(fe, 0, req, &flush, resp);
        fe.wait_used(0);
        std::thread::sleep(Duration::from_millis(5));
    }
    (cpu_us(pid) - cpu0) / n as f64
}

fn full_frames(fe: &mut TestFrontend, frames: usize, pid: Option<u32>) -> (f64, f64) {
    let (w, h) = (1920u32, 1080u32);
    let len = (w * h * 4) as usize;
    let backing = fe.alloc(len);
    let pattern: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    fe.mem.write_slice(&pattern, GuestAddress(backing)).unwrap();
    let cmds = [
        gpu::create_2d(7, 2, w, h),
        gpu::attach_backing(7, 1),
        gpu::set_scanout(0, 7, [0, 0, w, h]),
    ];
    let (_, _, r) = fe.command(0, &[Buf::Out(cmds[0].clone()), Buf::In(24)], false);
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let (_, _, r) = fe.command(
        0,
        &[
            Buf::Out(cmds[1].clone()),
            Buf::Out(gpu::mem_entries(&[(backing, len as u32)])),
            Buf::In(24),
        ],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let (_, _, r) = fe.command(0, &[Buf::Out(cmds[2].clone()), Buf::In(24)], false);
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let slots: Vec<(u64, u64)> = (0..2).map(|_| (fe.alloc(64), fe.alloc(24))).collect();
    let transfer = gpu::transfer_2d(7, [0, 0, w, h], 0, None);
    let flush = gpu::flush(7, [0, 0, w, h]);
    let run = |fe: &mut TestFrontend, n: usize| {
        for f in 0..n {
            // A changing first row, so every frame differs.
            fe.mem
                .write_slice(&(f as u64).to_le_bytes(), GuestAddress(backing))
                .unwrap();
            push_fixed(fe, 0, slots[0].0, &transfer, slots[0].1);
            push_fixed(fe, 1, slots[1].0, &flush, slots[1].1);
            fe.wait_used(0);
            fe.wait_used(0);
        }
    };
    run(fe, 3);
    let cpu0 = cpu_us(pid);
    let t = Instant::now();
    run(fe, frames);
    let fps = frames as f64 / t.elapsed().as_secs_f64();
    (fps, (cpu_us(pid) - cpu0) / frames as f64)
}

fn wait_exit(c: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

struct Measured {
    small: Small,
    paced_cpu_us: f64,
    fps: f64,
    frame_cpu_us: f64,
}

fn measure(proxy: bool, dir: &Path, rounds: usize, frames: usize) -> Measured {
    let sock = dir.join(if proxy { "proxy.sock" } else { "direct.sock" });
    let mut child = if proxy {
        let sync = std::env::var("VGT_BENCH_SYNC").unwrap_or_else(|_| "crash-safe".to_owned());
        Command::new(capture_bin())
            .args(["proxy", "--quiet", "--sync", &sync, "--socket"])
            .arg(&sock)
            .arg("--backend-cmd")
            .arg(format!("{} --socket-path %s", c_backend()))
            .arg("-o")
            .arg(dir.join("bench.vgt"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    } else {
        Command::new(c_backend())
            .arg("--socket-path")
            .arg(&sock)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let answers = DisplayAnswers {
        width: 1920,
        height: 1080,
        ..DisplayAnswers::default()
    };
    let pid = proxy.then(|| child.id());
    if let Some(pid) = pid {
        eprintln!("proxy bench: vgt-capture proxy pid {pid}");
    }
    let mut fe = TestFrontend::connect(&sock, answers);
    let small = small_commands(&mut fe, rounds, pid);
    let paced_cpu_us = paced_commands(&mut fe, 50, pid);
    let (fps, frame_cpu_us) = if frames == 0 {
        (0.0, 0.0)
    } else {
        full_frames(&mut fe, frames, pid)
    };
    drop(fe);
    wait_exit(&mut child);
    Measured {
        small,
        paced_cpu_us,
        fps,
        frame_cpu_us,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !Path::new(&c_backend()).exists() {
        eprintln!("proxy bench: skipped, {} is not installed", c_backend());
        return;
    }
    let rounds = env_usize("VGT_BENCH_ROUNDS", 4000);
    let runs = env_usize("VGT_BENCH_RUNS", 5);
    let side = std::env::var("VGT_BENCH_SIDE").unwrap_or_default();
    // Well beyond the display relay's 32-message queue, so that deferred recording is paid
    // inside the measurement (VGT_BENCH_FRAMES=0 skips the 1080p phase, e.g. to profile the
    // small commands alone).
    let frames = env_usize("VGT_BENCH_FRAMES", 200);
    let dir = tempfile::tempdir().unwrap();
    if side == "proxy" || side == "direct" {
        // One side alone (for a profiler): no ratios.
        for i in 0..runs {
            let m = measure(side == "proxy", dir.path(), rounds, frames);
            println!(
                "{side} run {i}: p50 {:.1} us p99 {:.1} us, {:.0} commands/s in batches, {:.1} frames/s; proxy CPU {:.1} us/command single, {:.1} batched, {:.1} paced, {:.0} us/frame; guest kicks {:.3}/command single, {:.3} batched",
                m.small.p50_us,
                m.small.p99_us,
                m.small.per_sec,
                m.fps,
                m.small.cpu_single_us,
                m.small.cpu_batch_us,
                m.paced_cpu_us,
                m.frame_cpu_us,
                m.small.kicks_single,
                m.small.kicks_batch
            );
        }
        return;
    }
    // One pair first, not counted: the first run of a fresh process met a cold machine (page
    // cache, the backend binary, the first memfds), which made its direct p50 5-14 times the
    // later runs' (docs/BENCHMARKS.md).
    if env_usize("VGT_BENCH_WARMUP", 1) > 0 {
        let _ = measure(false, dir.path(), rounds, frames);
        let _ = measure(true, dir.path(), rounds, frames);
    }
    // Interleave direct and proxied runs so that machine load affects both alike.
    let mut results = Vec::new();
    for _ in 0..runs {
        let d = measure(false, dir.path(), rounds, frames);
        let p = measure(true, dir.path(), rounds, frames);
        results.push((d, p));
    }
    for (i, (d, p)) in results.iter().enumerate() {
        let (ds, ps) = (&d.small, &p.small);
        println!(
            "run {i}: small command latency direct p50 {:.1} us p99 {:.1} us, proxy p50 {:.1} us p99 {:.1} us, added p50 {:.1} us p99 {:.1} us",
            ds.p50_us,
            ds.p99_us,
            ps.p50_us,
            ps.p99_us,
            ps.p50_us - ds.p50_us,
            ps.p99_us - ds.p99_us
        );
        println!(
            "run {i}: small command throughput (batches of 32) direct {:.0}/s, proxy {:.0}/s, ratio {:.3}",
            ds.per_sec,
            ps.per_sec,
            ps.per_sec / ds.per_sec
        );
        println!(
            "run {i}: 1080p transfer+flush direct {:.1} frames/s, proxy {:.1} frames/s, ratio {:.3}",
            d.fps,
            p.fps,
            p.fps / d.fps
        );
        println!(
            "run {i}: proxy CPU time {:.1} us/command one at a time, {:.1} us/command in batches, {:.1} us/command paced 5 ms apart, {:.0} us/1080p frame",
            ps.cpu_single_us, ps.cpu_batch_us, p.paced_cpu_us, p.frame_cpu_us
        );
        println!(
            "run {i}: guest kicks per command direct {:.3} one at a time, {:.3} in batches; proxy {:.3}, {:.3}",
            ds.kicks_single, ds.kicks_batch, ps.kicks_single, ps.kicks_batch
        );
    }
    if runs > 2 {
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let added = med(results
            .iter()
            .map(|(d, p)| p.small.p50_us - d.small.p50_us)
            .collect());
        let thr = med(results
            .iter()
            .map(|(d, p)| p.small.per_sec / d.small.per_sec)
            .collect());
        // VGT_BENCH_FRAMES=0: no 1080p phase, so no ratio (0/0).
        let fr = if frames == 0 {
            "not measured".to_owned()
        } else {
            format!(
                "{:.3}",
                med(results.iter().map(|(d, p)| p.fps / d.fps).collect())
            )
        };
        println!(
            "median of {runs} runs: added p50 {added:.1} us, throughput ratio {thr:.3}, 1080p ratio {fr}"
        );
    }
}
