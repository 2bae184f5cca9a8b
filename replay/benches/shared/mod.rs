//! What the replay benches share: direct execution of pre-decoded commands over flat guest RAM
//! (`common::GuestRam`), with update buffers handed back to the device as replay does, and a
//! checked replay. Benches that use it also include `../tests/common/mod.rs` as `common`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use vgt_device::display::Framebuffers;
use vgt_device::{Device, DeviceConfig, DeviceHost, DisplayEvent, Submission};
use vgt_format::CaptureReader;
use vgt_replay::{Quiet, ReplayOptions, Replayer};

use crate::common::{GuestRam, RAM_BASE};

/// One pre-decoded command: queue, request bytes, response room, and the guest writes to
/// replay into RAM before it (address, bytes).
pub type Decoded<B> = (u16, Vec<u8>, u32, Vec<(u64, B)>);

/// Keeps each update's pixel buffer so that direct execution hands it back to the device
/// (`Device::recycle_pixels`), as replay does: the baseline gets the same buffer reuse.
pub struct NoHost(pub Vec<Vec<u8>>);
impl DeviceHost for NoHost {
    fn display(&mut self, event: DisplayEvent) {
        if let DisplayEvent::Update { pixels, .. } = event {
            self.0.push(pixels);
        }
    }
}

/// Composes the frames the way replay does (owned updates, replaced buffers handed back).
pub struct FbHost(pub Framebuffers, pub Vec<Vec<u8>>);
impl DeviceHost for FbHost {
    fn display(&mut self, event: DisplayEvent) {
        let (_, spare) = self.0.apply_owned_exact_returning(event);
        self.1.extend(spare);
    }
}

/// Replays `reader` and asserts it is identical. `VGT_BENCH_VERIFY_THREAD=0/1` forces frames to
/// be verified inline / on their own thread, `VGT_BENCH_DECODE_THREADS=N` sets the blob decoding
/// threads (0: on the reading thread) (default: replay decides both from the cores available).
pub fn replay(reader: &CaptureReader) -> vgt_replay::ReplayReport {
    let verify_thread = std::env::var("VGT_BENCH_VERIFY_THREAD")
        .ok()
        .map(|v| v != "0");
    let decode_threads = std::env::var("VGT_BENCH_DECODE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let options = ReplayOptions {
        verify_thread,
        decode_threads,
        ..ReplayOptions::default()
    };
    let report = Replayer::new(reader, options).run(&mut Quiet).unwrap();
    assert!(report.is_identical(), "{:?}", report.divergences.first());
    report
}

/// Submits `commands` to a fresh device over flat RAM of `ram_len` bytes at `RAM_BASE`, each
/// command's guest writes copied in first; with `framebuffers`, a host that composes the
/// scanouts. Returns the completions seen.
pub fn direct<B: AsRef<[u8]>>(
    config: DeviceConfig,
    ram_len: usize,
    commands: &[Decoded<B>],
    framebuffers: bool,
) -> u64 {
    let mut device = Device::new(config).unwrap();
    let mut ram = GuestRam {
        bytes: vec![0; ram_len],
    };
    let mut no = NoHost(Vec::new());
    let mut fb = FbHost(Framebuffers::new(), Vec::new());
    let mut done = 0;
    for (i, (queue, request, writable_len, writes)) in commands.iter().enumerate() {
        for spare in no.0.drain(..).chain(fb.1.drain(..)) {
            device.recycle_pixels(spare);
        }
        let host: &mut dyn DeviceHost = if framebuffers { &mut fb } else { &mut no };
        for (addr, bytes) in writes {
            let bytes = bytes.as_ref();
            let off = (addr - RAM_BASE) as usize;
            ram.bytes[off..off + bytes.len()].copy_from_slice(bytes);
        }
        let c = device.submit(
            Submission {
                queue: *queue,
                token: i as u64,
                request,
                writable_len: *writable_len,
            },
            &ram,
            host,
        );
        done += c.len() as u64;
    }
    done
}

/// CPU time of the whole process so far (every thread, finished ones included; 10 ms ticks).
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime
    // the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU time of the calling thread so far (nanoseconds from schedstat).
pub fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
    )
}

/// Wall time, process CPU and calling-thread CPU of `f`.
pub fn measure(f: impl FnOnce()) -> (Duration, Duration, Duration) {
    let (p, t) = (process_cpu(), thread_cpu());
    let start = Instant::now();
    f();
    let wall = start.elapsed();
    (wall, process_cpu() - p, thread_cpu() - t)
}

/// Minor page faults of the process so far.
pub fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(7)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}
