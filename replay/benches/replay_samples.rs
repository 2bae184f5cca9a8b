//! Replay throughput of the real captures in `samples/` (a real Linux guest under QEMU through
//! vgt-capture: boot, fb, modes, cursor) against executing the same pre-decoded commands on
//! vgt-device directly, in the same run.
//!
//! - `direct`: every recorded command, decoded beforehand with the guest bytes it read, submitted
//!   to a fresh device (configured from the capture, as replay does) over sparse guest memory
//!   that gets each command's recorded reads just before it (a memcpy per read), with a host
//!   that hands update buffers back to the device and does nothing else;
//! - `replay`: `Replayer` over the capture file in memory: record decoding, CRC-32C, blob
//!   decompression and content check, guest memory rebuilt from the memory-read records, host
//!   answers from the recording, frame composition and the check of every response and frame.
//!
//! Criterion groups (one per sample, throughput in commands), then a same-run comparison:
//! interleaved rounds, medians, commands/s and frames/s of each, replay / direct, and replay's
//! speed relative to the original capture (x realtime).
//!
//! `cargo bench -p vgt-replay --bench replay_samples`; the samples are found next to this crate
//! (`../samples`) or, for a bench binary run elsewhere, in `./samples`; `VGT_BENCH_SAMPLES_DIR`
//! names another directory with the same four files (e.g. the samples repacked with
//! `vgt-inspect repack --compression lz4`, as vgt-capture writes them).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/mod.rs"]
mod shared;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vgt_device::{Device, Submission};
use vgt_format::CaptureReader;
use vgt_format::record::RecordBody;
use vgt_replay::{SparseMemory, device_config_for};

const SAMPLES: [&str; 4] = ["boot", "fb", "modes", "cursor"];

/// One command as the device gets it: queue, request bytes, response room, and the guest
/// bytes it read (address, bytes).
type Decoded = (u16, Vec<u8>, u32, Vec<(u64, Vec<u8>)>);

struct Sample {
    name: &'static str,
    bytes: Vec<u8>,
    commands: Vec<Decoded>,
    frames: u64,
}

fn samples_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VGT_BENCH_SAMPLES_DIR") {
        return dir.into();
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples");
    if built.is_dir() {
        built
    } else {
        PathBuf::from("samples")
    }
}

fn load(name: &'static str) -> Sample {
    let path = samples_dir().join(format!("{name}.vgt"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = CaptureReader::from_bytes(bytes.clone()).unwrap();
    let mut commands: Vec<Decoded> = Vec::new();
    let mut ids = std::collections::HashMap::new();
    let mut frames = 0;
    for item in reader.iter() {
        let (id, rec) = item.unwrap();
        match rec.body {
            RecordBody::Command(c) => {
                ids.insert(id, commands.len());
                commands.push((
                    c.queue,
                    reader.read_payload(&c.request).unwrap().into_owned(),
                    c.writable_len,
                    Vec::new(),
                ));
            }
            RecordBody::MemoryRead(m) => {
                let at = ids[&m.command];
                let data = reader.read_payload(&m.data).unwrap().into_owned();
                commands[at].3.push((m.addr, data));
            }
            RecordBody::Frame(_) => frames += 1,
            _ => {}
        }
    }
    Sample {
        name,
        bytes,
        commands,
        frames,
    }
}

fn direct(s: &Sample, reader: &CaptureReader) -> u64 {
    let mut device = Device::new(device_config_for(reader)).unwrap();
    let mut memory = SparseMemory::new();
    let mut host = shared::NoHost(Vec::new());
    let mut done = 0;
    for (i, (queue, request, writable_len, reads)) in s.commands.iter().enumerate() {
        for spare in host.0.drain(..) {
            device.recycle_pixels(spare);
        }
        for (addr, bytes) in reads {
            memory.write(*addr, bytes);
        }
        let c = device.submit(
            Submission {
                queue: *queue,
                token: i as u64,
                request,
                writable_len: *writable_len,
            },
            &memory,
            &mut host,
        );
        done += c.len() as u64;
    }
    done
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let samples: Vec<Sample> = SAMPLES.into_iter().map(load).collect();
    let readers: Vec<CaptureReader> = samples
        .iter()
        .map(|s| CaptureReader::from_bytes(s.bytes.clone()).unwrap())
        .collect();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (s, reader) in samples.iter().zip(&readers) {
        let mut g = c.benchmark_group(format!("sample_{}", s.name));
        g.throughput(Throughput::Elements(s.commands.len() as u64));
        g.bench_function("direct", |b| b.iter(|| black_box(direct(s, reader))));
        g.bench_function("replay", |b| b.iter(|| black_box(shared::replay(reader))));
        g.finish();
    }
    c.final_summary();

    // Same-run comparison: rounds alternate direct and replay so both see the same load.
    let rounds = 15;
    println!("replay_samples: same-run medians of {rounds} interleaved rounds");
    for (s, reader) in samples.iter().zip(&readers) {
        let (mut d, mut r) = (Vec::new(), Vec::new());
        let mut span_ns = 0;
        for _ in 0..rounds {
            d.push(time(|| {
                black_box(direct(s, reader));
            }));
            r.push(time(|| span_ns = shared::replay(reader).capture_span_ns));
        }
        d.sort();
        r.sort();
        let (d, r) = (d[rounds / 2], r[rounds / 2]);
        let n = s.commands.len() as f64;
        println!(
            "  {:<7} {:>4} commands {:>3} frames: direct {:>9.3} ms {:>9.0} commands/s, replay \
             {:>9.3} ms {:>9.0} commands/s {:>8.0} frames/s, replay / direct = {:.3}, replay \
             {:.1}x realtime",
            s.name,
            s.commands.len(),
            s.frames,
            d.as_secs_f64() * 1e3,
            n / d.as_secs_f64(),
            r.as_secs_f64() * 1e3,
            n / r.as_secs_f64(),
            s.frames as f64 / r.as_secs_f64(),
            d.as_secs_f64() / r.as_secs_f64(),
            span_ns as f64 / 1e9 / r.as_secs_f64(),
        );
    }
}
