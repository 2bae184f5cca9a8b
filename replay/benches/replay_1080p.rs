//! Replay throughput of a 10,000-frame 1920x1080 capture against executing the same
//! pre-decoded commands on vgt-device directly, timed in the same run (interleaved rounds; a
//! criterion group of 10 samples would take tens of minutes at this size).
//!
//! The capture, recorded from the real device by the tests' recording host: one 1920x1080
//! B8G8R8X8 scanout, 10,000 frames at 60 Hz (166.7 s). The screen is eight full-width bands of
//! 135 rows; frame `i` redraws band `i % 8` with new content (alternating between two
//! gradients per band from one pass over the screen to the next), transfers that band
//! (1,036,800 bytes of guest memory, one memory read) and flushes the whole scanout, so every
//! frame shows a new 1920x1080 picture (8,294,400 bytes) that replay composes, hashes and
//! compares with the recording. Every 60th frame transfers the whole screen instead (an 8 MB
//! memory read). The pictures repeat with a period of 16 frames after the first 8, so the
//! file stores 24 distinct frames, 16 distinct bands and 24 distinct screens, each once (blobs
//! lz4-compressed), and stays small; replay cannot know that without hashing each frame.
//!
//! Generated once into `CARGO_TARGET_TMPDIR` (or the system's temporary directory when the
//! binary runs where that does not exist) and reused.
//!
//! - `direct`: the same commands, decoded beforehand, submitted to a fresh device over flat
//!   guest RAM (the guest's writes replayed as memcpy from decoded buffers, one per distinct
//!   payload), with a host that does nothing;
//! - `direct+framebuffers`: the same with a host that composes the scanout framebuffers;
//! - `replay`: `Replayer` over the capture in memory.
//!
//! Knobs: `VGT_BENCH_FRAMES` (default 10000), `VGT_BENCH_ROUNDS` (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/mod.rs"]
mod shared;

use shared::{measure, minor_faults, replay};

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vgt_device::DeviceConfig;
use vgt_format::CaptureReader;
use vgt_format::record::{Payload, RecordBody};
use vgt_format::wire::Format;

const W: u32 = 1920;
const H: u32 = 1080;
const BANDS: u32 = 8;
const FULL_EVERY: u32 = 60;
/// Bumped when the workload changes, so that a cached capture of another one is not reused.
const VERSION: u32 = 1;

/// A pre-decoded command: queue, request bytes, writable length, guest bytes it reads.
type Decoded = shared::Decoded<Arc<[u8]>>;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fb_bytes() -> usize {
    (W * H * 4) as usize
}

fn fb_addr() -> u64 {
    RAM_BASE + 0x20_0000
}

fn config() -> DeviceConfig {
    DeviceConfig {
        scanouts: vec![(W, H)],
        ..DeviceConfig::default()
    }
}

/// Band `band`'s content in its `parity` variant: gradients that compress like desktop
/// content does (neither trivially nor not at all).
fn band_pixels(band: u32, parity: u32) -> Vec<u8> {
    let rows = H / BANDS;
    let mut px = vec![0u8; (W * rows * 4) as usize];
    for (j, p) in px.chunks_exact_mut(4).enumerate() {
        let x = j as u32 % W;
        let y = j as u32 / W + band * rows;
        p.copy_from_slice(&[
            (x ^ (parity * 0x55)) as u8,
            y.wrapping_add(band * 7) as u8,
            (x / 4 + y / 2 + parity * 31) as u8,
            0,
        ]);
    }
    px
}

fn generate(frames: u32) -> Vec<u8> {
    let size = fb_bytes();
    let fb = fb_addr();
    let mut r = Recording::new(config(), 0x20_0000 + size, None);
    r.submit(&vgt_format::wire::Request::new(
        vgt_format::wire::Command::GetDisplayInfo,
    ));
    r.submit(&create_2d(1, Format::B8G8R8X8_UNORM, W, H));
    r.submit(&attach(1, &[(fb, size as u32)]));
    r.submit(&set_scanout(0, 1, rect(0, 0, W, H)));
    let bands: Vec<Vec<u8>> = (0..2 * BANDS)
        .map(|i| band_pixels(i % BANDS, i / BANDS))
        .collect();
    let rows = H / BANDS;
    let band_len = (W * rows * 4) as u64;
    for i in 0..frames {
        r.advance(16_666_667);
        let band = i % BANDS;
        let parity = (i / BANDS) % 2;
        let offset = u64::from(band) * band_len;
        r.poke(fb + offset, &bands[(parity * BANDS + band) as usize]);
        if i % FULL_EVERY == FULL_EVERY - 1 {
            r.submit(&transfer(1, rect(0, 0, W, H), 0));
        } else {
            r.submit(&transfer(1, rect(0, band * rows, W, rows), offset));
        }
        r.submit(&flush(1, rect(0, 0, W, H)));
    }
    r.finish()
}

/// The capture: from the cache when a readable one of this workload is there, else generated
/// (and cached).
fn capture(frames: u32) -> Vec<u8> {
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("vgt-replay-bench-{W}x{H}-{frames}-v{VERSION}.vgt"));
    if let Ok(bytes) = std::fs::read(&path)
        && CaptureReader::from_bytes(bytes.clone()).is_ok_and(|r| r.health().indexed)
    {
        eprintln!("capture: {} (cached)", path.display());
        return bytes;
    }
    let t = Instant::now();
    let bytes = generate(frames);
    eprintln!(
        "capture: generated in {:.1} s, {}",
        t.elapsed().as_secs_f64(),
        path.display()
    );
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, &bytes).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
    bytes
}

/// Per command its request and the guest bytes it reads (one shared buffer per distinct
/// payload: 10,000 private copies of the bands would not fit in memory).
fn decode(reader: &CaptureReader) -> Vec<Decoded> {
    let mut distinct: HashMap<u128, Arc<[u8]>> = HashMap::new();
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
                let bytes = match &m.data {
                    Payload::Blob(b) => distinct
                        .entry(b.hash.0)
                        .or_insert_with(|| Arc::from(reader.read_payload(&m.data).unwrap()))
                        .clone(),
                    Payload::Inline(b) => Arc::from(&b[..]),
                };
                commands.last_mut().unwrap().3.push((m.addr, bytes));
            }
            _ => {}
        }
    }
    commands
}

fn direct(commands: &[Decoded], framebuffers: bool) -> u64 {
    shared::direct(config(), 0x20_0000 + fb_bytes(), commands, framebuffers)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names neither this bench nor 1080p skips
    // it (as criterion skips groups).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "replay_1080p".contains(f.as_str())) {
        return;
    }
    let frames = env_u32("VGT_BENCH_FRAMES", 10_000);
    let rounds = env_u32("VGT_BENCH_ROUNDS", 3).max(1);
    let bytes = capture(frames);
    let reader = CaptureReader::from_bytes(bytes.clone()).unwrap();
    let commands = decode(&reader);
    let n_commands = commands.len() as u64;
    let n_frames = u64::from(frames) + 1;
    eprintln!(
        "workload: {W}x{H}, {n_frames} frames, {n_commands} commands, capture {} bytes",
        bytes.len()
    );
    if std::env::var_os("VGT_BENCH_PROFILE_REPLAY").is_some() {
        for _ in 0..env_u32("VGT_BENCH_PROFILE_REPLAY", 1) {
            let faults = minor_faults();
            let (wall, cpu, this) = measure(|| {
                black_box(replay(&reader));
            });
            eprintln!(
                "replay {:.3} s, CPU: executing thread {:.3} s, others {:.3} s, {} page faults",
                wall.as_secs_f64(),
                this.as_secs_f64(),
                cpu.saturating_sub(this).as_secs_f64(),
                minor_faults() - faults
            );
        }
        return;
    }
    if std::env::var_os("VGT_BENCH_PROFILE_DIRECT").is_some() {
        for _ in 0..env_u32("VGT_BENCH_PROFILE_DIRECT", 1) {
            let faults = minor_faults();
            let (wall, cpu, _) = measure(|| {
                black_box(direct(&commands, false));
            });
            eprintln!(
                "direct {:.3} s, CPU {:.3} s, {} page faults",
                wall.as_secs_f64(),
                cpu.as_secs_f64(),
                minor_faults() - faults
            );
        }
        return;
    }
    let (mut d, mut f, mut r) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dc, mut rx, mut rr) = (Vec::new(), Vec::new(), Vec::new());
    let mut span = 0;
    for round in 0..rounds {
        let (wall, cpu, _) = measure(|| {
            black_box(direct(&commands, false));
        });
        d.push(wall);
        dc.push(cpu);
        let (wall, _, _) = measure(|| {
            black_box(direct(&commands, true));
        });
        f.push(wall);
        let (wall, cpu, this) = measure(|| {
            span = replay(&reader).capture_span_ns;
        });
        r.push(wall);
        rx.push(this);
        rr.push(cpu.saturating_sub(this));
        eprintln!(
            "round {}: direct {:.3} s, direct+framebuffers {:.3} s, replay {:.3} s",
            round + 1,
            d[d.len() - 1].as_secs_f64(),
            f[f.len() - 1].as_secs_f64(),
            r[r.len() - 1].as_secs_f64()
        );
    }
    let (d, f, r) = (median(&mut d), median(&mut f), median(&mut r));
    let per_s = |t: Duration, n: u64| n as f64 / t.as_secs_f64();
    println!(
        "replay_1080p: same-run medians of {rounds} ({W}x{H}, {n_frames} frames, {n_commands} commands):"
    );
    for (name, t) in [("direct", d), ("direct+framebuffers", f), ("replay", r)] {
        println!(
            "  {name:<20} {:>8.3} s  {:>10.0} commands/s  {:>9.0} frames/s",
            t.as_secs_f64(),
            per_s(t, n_commands),
            per_s(t, n_frames)
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
