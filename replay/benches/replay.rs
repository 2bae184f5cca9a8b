//! Replay throughput against executing the same pre-decoded commands on vgt-device directly,
//! in the same run, over a synthetic capture recorded from the real device.
//!
//! The capture: one scanout of `VGT_BENCH_SIZE` (default 320x200), `VGT_BENCH_FRAMES` (default
//! 10000) frames at 60 Hz, each a full-screen TRANSFER_TO_HOST_2D of new guest pixels and a
//! RESOURCE_FLUSH (so every frame carries a memory read and a whole-scanout Frame record).
//!
//! - `direct`: the same commands, decoded beforehand, submitted to a fresh device over flat
//!   guest RAM (the guest's pixel writes replayed as memcpy), with a host that does nothing.
//! - `direct+framebuffers`: the same, with a host that composes the scanout framebuffers (what
//!   any display consumer, capture included, does).
//! - `replay`: `Replayer` over the capture file in memory: record decoding, blob decompression,
//!   sparse memory, frame composition and hashing, comparison with the recording.
//!
//! After criterion's groups, an interleaved A/B run prints the same-run ratios and the x
//! realtime figure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/mod.rs"]
mod shared;

use shared::{measure, replay};

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use criterion::{Criterion, Throughput};
use vgt_device::DeviceConfig;
use vgt_format::CaptureReader;
use vgt_format::record::RecordBody;
use vgt_format::wire::Format;

/// A pre-decoded command: queue, request bytes, writable length, guest bytes it reads.
type Decoded = shared::Decoded<Vec<u8>>;

struct Workload {
    capture: Vec<u8>,
    commands: Vec<Decoded>,
    frames: u64,
    config: DeviceConfig,
}

fn size() -> (u32, u32) {
    std::env::var("VGT_BENCH_SIZE")
        .ok()
        .and_then(|s| {
            let (w, h) = s.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((320, 200))
}

fn frame_count() -> u32 {
    std::env::var("VGT_BENCH_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn build() -> Workload {
    let (w, h) = size();
    let frames = frame_count();
    let config = DeviceConfig {
        scanouts: vec![(w, h)],
        ..DeviceConfig::default()
    };
    let size = (w * h * 4) as usize;
    let fb = RAM_BASE + 0x20_0000;
    let mut r = Recording::new(config.clone(), 0x20_0000 + size, None);
    r.submit(&vgt_format::wire::Request::new(
        vgt_format::wire::Command::GetDisplayInfo,
    ));
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, w, h));
    r.submit(&attach(1, &[(fb, size as u32)]));
    r.submit(&set_scanout(0, 1, rect(0, 0, w, h)));
    let mut px = vec![0u8; size];
    for i in 0..frames {
        r.advance(16_666_667);
        // New content every frame: a gradient that moves (compresses like real desktops do,
        // neither trivially nor not at all).
        for (j, p) in px.chunks_exact_mut(4).enumerate() {
            let x = (j as u32 % w).wrapping_add(i);
            let y = j as u32 / w;
            p.copy_from_slice(&[x as u8, y as u8, (x ^ y) as u8, 0]);
        }
        r.poke(fb, &px);
        r.submit(&transfer(1, rect(0, 0, w, h), 0));
        r.submit(&flush(1, rect(0, 0, w, h)));
    }
    let capture = r.finish();
    // Pre-decode: per command its request and the guest bytes it reads.
    let reader = CaptureReader::from_bytes(capture.clone()).unwrap();
    let mut commands: Vec<Decoded> = Vec::new();
    for item in reader.iter() {
        let (_, rec) = item.unwrap();
        match rec.body {
            RecordBody::Command(c) => commands.push((
                c.queue,
                reader.read_payload(&c.request).unwrap().into_owned(),
                c.writable_len,
                Vec::new(),
            )),
            RecordBody::MemoryRead(m) => {
                let bytes = reader.read_payload(&m.data).unwrap().into_owned();
                commands.last_mut().unwrap().3.push((m.addr, bytes));
            }
            _ => {}
        }
    }
    Workload {
        capture,
        commands,
        frames: u64::from(frames) + 1,
        config,
    }
}

fn direct(w: &Workload, framebuffers: bool) -> u64 {
    let ram = 0x20_0000 + (size().0 * size().1 * 4) as usize;
    shared::direct(w.config.clone(), ram, &w.commands, framebuffers)
}

/// What replay's reading thread does alone: decode every record and read (decompress, verify)
/// the payloads replay needs.
fn read_only(reader: &CaptureReader) -> u64 {
    let mut n = 0;
    for item in reader.iter() {
        let (_, rec) = item.unwrap();
        let p = match &rec.body {
            RecordBody::Command(c) => &c.request,
            RecordBody::MemoryRead(m) => &m.data,
            RecordBody::Response(r) => &r.bytes,
            _ => continue,
        };
        n += reader.read_payload(p).unwrap().len() as u64;
    }
    n
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let w = build();
    let commands = w.commands.len() as u64;
    let (width, height) = size();
    eprintln!(
        "workload: {width}x{height}, {} frames, {commands} commands, capture {} bytes",
        w.frames,
        w.capture.len()
    );
    // The capture is opened once, as a file would be; replay reads it from memory.
    let reader = CaptureReader::from_bytes(w.capture.clone()).unwrap();
    if std::env::var_os("VGT_BENCH_PROFILE_REPLAY").is_some() {
        // For `perf record`: replay only.
        for _ in 0..20 {
            black_box(replay(&reader));
        }
        return;
    }
    if std::env::var_os("VGT_BENCH_PROFILE_DIRECT").is_some() {
        // For `perf record`: direct only.
        for _ in 0..20 {
            black_box(direct(&w, false));
        }
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for (name, unit) in [("commands", commands), ("frames", w.frames)] {
        let mut g = c.benchmark_group(format!("replay_{name}"));
        g.throughput(Throughput::Elements(unit));
        g.bench_function("direct", |b| b.iter(|| black_box(direct(&w, false))));
        g.bench_function("direct+framebuffers", |b| {
            b.iter(|| black_box(direct(&w, true)))
        });
        g.bench_function("replay", |b| b.iter(|| black_box(replay(&reader))));
        g.finish();
    }
    c.final_summary();

    // Same-run A/B, interleaved so both see the same machine load.
    let mut d = Vec::new();
    let mut f = Vec::new();
    let mut r = Vec::new();
    let mut o = Vec::new();
    // CPU time: direct's (one thread), replay's executing thread (this one) and the rest of
    // replay's process time (its reading and verifying threads).
    let mut dc = Vec::new();
    let mut rx = Vec::new();
    let mut rr = Vec::new();
    let mut span = 0;
    for _ in 0..5 {
        o.push(time(|| {
            black_box(read_only(&reader));
        }));
        let (wall, cpu, _) = measure(|| {
            black_box(direct(&w, false));
        });
        d.push(wall);
        dc.push(cpu);
        f.push(time(|| {
            black_box(direct(&w, true));
        }));
        let (wall, cpu, this) = measure(|| {
            span = replay(&reader).capture_span_ns;
        });
        r.push(wall);
        rx.push(this);
        rr.push(cpu.saturating_sub(this));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (d, f, r, o) = (
        median(&mut d),
        median(&mut f),
        median(&mut r),
        median(&mut o),
    );
    let per_s = |t: Duration, n: u64| n as f64 / t.as_secs_f64();
    println!(
        "same-run medians of 5 ({width}x{height}, {} frames, {commands} commands):",
        w.frames
    );
    for (name, t) in [
        ("direct", d),
        ("direct+framebuffers", f),
        ("replay", r),
        ("reading only", o),
    ] {
        println!(
            "  {name:<20} {:>8.3} s  {:>10.0} commands/s  {:>9.0} frames/s",
            t.as_secs_f64(),
            per_s(t, commands),
            per_s(t, w.frames)
        );
    }
    println!(
        "  replay / direct = {:.3}   replay / direct+framebuffers = {:.3}   replay speed = {:.1}x realtime",
        d.as_secs_f64() / r.as_secs_f64(),
        f.as_secs_f64() / r.as_secs_f64(),
        span as f64 / 1e9 / r.as_secs_f64()
    );
    let (dc, rx, rr) = (median(&mut dc), median(&mut rx), median(&mut rr));
    println!(
        "  CPU: direct {:.3} s; replay executing thread {:.3} s, reading and verifying threads \
         {:.3} s; direct / max(executing, others) = {:.3} (a lower bound of the ratio with a free \
         core for each thread)",
        dc.as_secs_f64(),
        rx.as_secs_f64(),
        rr.as_secs_f64(),
        dc.as_secs_f64() / rx.max(rr).as_secs_f64()
    );
}
