//! Recording cost on the real vhost-user path: the in-process session and backend served by the
//! QEMU-playing test front-end (memfd guest memory, split virtqueues, eventfd kicks and calls,
//! the vhost-user-gpu display socket), recording Buffered, CrashSafe, or not at all
//! (`--no-record`, the null sink).
//!
//! Subjects (scanout 1920x1080, B8G8R8X8):
//! - `move_cursor`: MOVE_CURSOR on the cursor queue, in batches of 32.
//! - `flush_64`: RESOURCE_FLUSH of a 64x64 rectangle (each one a display UPDATE and a
//!   whole-scanout Frame record), in batches of 32.
//! - `frame_new`: TRANSFER_TO_HOST_2D + RESOURCE_FLUSH of the full screen, new guest pixels
//!   every frame (written before the timed commands, as the guest would have).
//! - `frame_repeat`: the same with unchanged pixels.
//!
//! After criterion's groups, an interleaved same-run comparison prints each mode's rate and
//! its ratio to no-record (median of per-round ratios, with quartiles), then new frames per
//! second recorded with the whole process pinned to one core. `VGT_BENCH_QUICK=1` shortens
//! every phase; `VGT_BENCH_PROFILE=frame_new:buffered` (any subject:mode) runs just that, for
//! `perf record`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use criterion::{Criterion, Throughput};
use vgt_capture::recorder::Recorder;
use vgt_capture::server::SyncMode;
use vgt_capture::session::{EndReason, Session, SessionConfig};
use vgt_capture::sink::{NullSink, open_file};
use vm_memory::{Bytes, GuestAddress};

const W: u32 = 1920;
const H: u32 = 1080;
const FRAME_BYTES: usize = (W * H * 4) as usize;
const BATCH: usize = 32;
const SCREEN: u32 = 2;
const CURSOR: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoRecord,
    Buffered,
    CrashSafe,
}

const MODES: [Mode; 3] = [Mode::NoRecord, Mode::Buffered, Mode::CrashSafe];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoRecord => "no-record",
            Mode::Buffered => "buffered",
            Mode::CrashSafe => "crash-safe",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    MoveCursor,
    Flush64,
    FrameNew,
    FrameRepeat,
}

const SUBJECTS: [Subject; 4] = [
    Subject::MoveCursor,
    Subject::Flush64,
    Subject::FrameNew,
    Subject::FrameRepeat,
];

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::MoveCursor => "move_cursor",
            Subject::Flush64 => "flush_64",
            Subject::FrameNew => "frame_new",
            Subject::FrameRepeat => "frame_repeat",
        }
    }

    /// Units (commands or frames) in one timed step.
    fn per_step(self) -> u64 {
        match self {
            Subject::MoveCursor | Subject::Flush64 => BATCH as u64,
            Subject::FrameNew | Subject::FrameRepeat => 1,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Subject::MoveCursor | Subject::Flush64 => "commands/s",
            Subject::FrameNew | Subject::FrameRepeat => "frames/s",
        }
    }
}

/// One capture session with a connected front-end and a 1920x1080 scanout and cursor set up.
struct Rig {
    fe: TestFrontend,
    session: Option<Session>,
    recorder: Arc<Recorder>,
    backing: u64,
    /// Heap position after setup: every step's command buffers reuse the memory above it.
    mark: u64,
    pixels: Vec<u8>,
    frame: u64,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(mode: Mode) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let client = UnixStream::connect(&sock).unwrap();
        let (server, _) = listener.accept().unwrap();
        let path = dir.path().join("bench.vgt");
        let sink = match mode {
            Mode::NoRecord => Box::new(NullSink::default()),
            Mode::Buffered => open_file(&path, SyncMode::Buffered).unwrap(),
            Mode::CrashSafe => open_file(&path, SyncMode::CrashSafe).unwrap(),
        };
        let recorder = Arc::new(Recorder::new(sink));
        let session = Session::start(
            server,
            recorder.clone(),
            &SessionConfig {
                device: vgt_device::DeviceConfig::default(),
            },
        )
        .unwrap();
        let answers = DisplayAnswers {
            width: W,
            height: H,
            log: false,
            ..DisplayAnswers::default()
        };
        let mut fe = TestFrontend::handshake(client, answers);
        let backing = fe.alloc(FRAME_BYTES);
        let cursor = fe.alloc(64 * 64 * 4);
        let cursor_pixels: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 13 % 256) as u8).collect();
        fe.mem
            .write_slice(&cursor_pixels, GuestAddress(cursor))
            .unwrap();
        let full = [0, 0, W, H];
        for bufs in [
            vec![Buf::Out(gpu::create_2d(SCREEN, 2, W, H)), Buf::In(24)],
            vec![
                Buf::Out(gpu::attach_backing(SCREEN, 1)),
                Buf::Out(gpu::mem_entries(&[(backing, FRAME_BYTES as u32)])),
                Buf::In(24),
            ],
            vec![Buf::Out(gpu::set_scanout(0, SCREEN, full)), Buf::In(24)],
            vec![Buf::Out(gpu::create_2d(CURSOR, 2, 64, 64)), Buf::In(24)],
            vec![
                Buf::Out(gpu::attach_backing(CURSOR, 1)),
                Buf::Out(gpu::mem_entries(&[(cursor, 64 * 64 * 4)])),
                Buf::In(24),
            ],
            vec![
                Buf::Out(gpu::transfer_2d(CURSOR, [0, 0, 64, 64], 0, None)),
                Buf::In(24),
            ],
        ] {
            let (_, _, resp) = fe.command(0, &bufs, true);
            assert_eq!(gpu::resp_type(&resp), 0x1100, "setup command failed");
        }
        fe.command(
            1,
            &[Buf::Out(gpu::update_cursor(0, 10, 10, CURSOR, 0, 0))],
            true,
        );
        let mut rig = Rig {
            mark: fe.heap,
            fe,
            session: Some(session),
            recorder,
            backing,
            pixels: vec![0; FRAME_BYTES],
            frame: 0,
            _dir: dir,
        };
        // A first picture, so that the repeated-content subject repeats a real one.
        rig.new_pixels();
        rig.full_frame();
        rig
    }

    /// Pushes `bufs` BATCH times on `queue`, then waits for all of them.
    fn batch(&mut self, queue: u16, make: impl Fn(usize) -> Vec<Buf>) {
        self.fe.heap = self.mark;
        for i in 0..BATCH {
            self.fe.push(queue, &make(i), true);
        }
        for _ in 0..BATCH {
            self.fe.wait_used(queue);
        }
    }

    /// Writes new guest pixels into the scanout's backing (the guest drawing; not timed).
    fn new_pixels(&mut self) {
        // xorshift64 over every word: no two frames share a page, nothing compresses well
        // (the worst case for the recorder).
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ self.frame.wrapping_mul(0xD1B5_4A32_D192_ED03);
        for c in self.pixels.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        self.frame += 1;
        self.fe
            .mem
            .write_slice(&self.pixels, GuestAddress(self.backing))
            .unwrap();
    }

    fn full_frame(&mut self) {
        let full = [0, 0, W, H];
        self.fe.heap = self.mark;
        self.fe.command(
            0,
            &[
                Buf::Out(gpu::transfer_2d(SCREEN, full, 0, None)),
                Buf::In(24),
            ],
            true,
        );
        self.fe
            .command(0, &[Buf::Out(gpu::flush(SCREEN, full)), Buf::In(24)], true);
    }

    /// Runs `steps` steps of `subject`; returns the time spent in the commands.
    fn run(&mut self, subject: Subject, steps: u64) -> Duration {
        let mut spent = Duration::ZERO;
        for s in 0..steps {
            if subject == Subject::FrameNew {
                self.new_pixels();
            }
            let t = Instant::now();
            match subject {
                Subject::MoveCursor => self.batch(1, |i| {
                    let v = (s as usize * BATCH + i) as u32;
                    vec![Buf::Out(gpu::move_cursor(0, v % W, (v / W) % H))]
                }),
                Subject::Flush64 => self.batch(0, |i| {
                    let v = (s as usize * BATCH + i) as u32 * 64;
                    let r = [v % (W - 64), (v / W * 64) % (H - 64), 64, 64];
                    vec![Buf::Out(gpu::flush(SCREEN, r)), Buf::In(24)]
                }),
                Subject::FrameNew | Subject::FrameRepeat => self.full_frame(),
            }
            spent += t.elapsed();
        }
        spent
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // QEMU going away: the vhost-user socket closes.
            let _ = self.fe.raw.shutdown(std::net::Shutdown::Both);
            s.end(EndReason::Disconnect).unwrap();
        }
    }
}

fn quick() -> bool {
    std::env::var_os("VGT_BENCH_QUICK").is_some()
}

/// Pins the calling thread (and every thread it starts afterwards) to CPU 0.
fn pin_to_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn main() {
    if let Some(what) = std::env::var_os("VGT_BENCH_PROFILE") {
        // For `perf record`: one subject in one mode, e.g. `frame_new:buffered`.
        let what = what.to_string_lossy().into_owned();
        let (s, m) = what
            .split_once(':')
            .expect("VGT_BENCH_PROFILE=subject:mode");
        let subject = SUBJECTS
            .into_iter()
            .find(|x| x.name() == s)
            .expect("subject");
        let mode = MODES.into_iter().find(|x| x.name() == m).expect("mode");
        let mut rig = Rig::new(mode);
        let steps = if subject.per_step() == 1 { 200 } else { 2000 };
        let t = rig.run(subject, steps);
        println!(
            "{what}: {:.1} {}",
            (steps * subject.per_step()) as f64 / t.as_secs_f64(),
            subject.unit()
        );
        return;
    }
    let mut rigs: Vec<(Mode, Rig)> = MODES.iter().map(|&m| (m, Rig::new(m))).collect();
    let secs = if quick() { 1 } else { 4 };
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(secs));
    for subject in SUBJECTS {
        let mut g = c.benchmark_group(subject.name());
        g.throughput(Throughput::Elements(subject.per_step()));
        for (mode, rig) in &mut rigs {
            g.bench_function(mode.name(), |b| b.iter_custom(|n| rig.run(subject, n)));
        }
        g.finish();
    }
    c.final_summary();

    // Same-run comparison: rounds interleave the modes so all see the same machine load, each
    // round starting with the next mode so none always follows the same one (a buffered
    // writer's write-out, a crash-safe file's populating). Each round's ratio pairs a mode with
    // the no-record run beside it, which cancels the slow drifts of a shared machine; the
    // median of those ratios, with its quartiles, is the figure. Short subjects get more rounds.
    println!(
        "same-run comparison, interleaved rounds (1920x1080 scanout): median rate; ratio to \
         no-record as the median of per-round ratios [quartiles]; ratio of the median rates"
    );
    for subject in SUBJECTS {
        let (steps, rounds): (u64, usize) = match (subject, quick()) {
            (Subject::MoveCursor | Subject::Flush64, false) => (100, 21),
            (Subject::MoveCursor | Subject::Flush64, true) => (20, 5),
            (Subject::FrameNew | Subject::FrameRepeat, false) => (40, 7),
            (Subject::FrameNew | Subject::FrameRepeat, true) => (10, 3),
        };
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); MODES.len()];
        for r in 0..rounds {
            for i in 0..rigs.len() {
                let k = (r + i) % rigs.len();
                times[k].push(rigs[k].1.run(subject, steps));
            }
        }
        let per_step = (steps * subject.per_step()) as f64;
        let median_rate: Vec<f64> = times
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.sort();
                per_step / t[t.len() / 2].as_secs_f64()
            })
            .collect();
        for (k, mode) in MODES.iter().enumerate() {
            let mut ratios: Vec<f64> = times[0]
                .iter()
                .zip(&times[k])
                .map(|(base, t)| base.as_secs_f64() / t.as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            let q = |f: f64| ratios[((ratios.len() - 1) as f64 * f).round() as usize];
            println!(
                "  {:<13} {:<11} {:>10.1} {}  ratio to no-record {:.3} [{:.3}-{:.3}], of medians {:.3}",
                subject.name(),
                mode.name(),
                median_rate[k],
                subject.unit(),
                q(0.5),
                q(0.25),
                q(0.75),
                median_rate[k] / median_rate[0]
            );
        }
    }
    for (mode, rig) in &rigs {
        let s = rig.recorder.stats();
        println!(
            "  recorder {:<11} dedup {:.2}x, {} bytes written",
            mode.name(),
            s.dedup_ratio(),
            s.file_bytes
        );
    }
    drop(rigs);

    // New full frames recorded per second with the whole process (front-end, backend
    // threads, display socket reader) on one core.
    if pin_to_cpu0() {
        for mode in [Mode::Buffered, Mode::CrashSafe] {
            let mut rig = Rig::new(mode);
            let frames = if quick() { 30 } else { 120 };
            // One run gives both figures (a second run would write on top of the first's
            // page cache and measure something else).
            let t = Instant::now();
            let commands = rig.run(Subject::FrameNew, frames);
            let wall = t.elapsed();
            println!(
                "one core (pinned to CPU 0), {}: {frames} new 1920x1080 frames recorded in \
                 {:.2?}: {:.1} frames/s (guest drawing included), {:.1} frames/s (commands only)",
                mode.name(),
                wall,
                frames as f64 / wall.as_secs_f64(),
                frames as f64 / commands.as_secs_f64()
            );
        }
    } else {
        println!("one core: sched_setaffinity failed; not measured");
    }
}
