//! What recording costs the queue worker per small command, without the rings, the device or
//! the sockets around it: the `Recorder` calls the built-in backend makes for one MOVE_CURSOR
//! (its Command, the CURSOR_POS display message, the Cursor record and the Response, with the
//! `store` calls for their payloads), into a capture file in buffered and crash-safe mode, and
//! the same calls into the `--no-record` null sink as the baseline.
//!
//! ```text
//! cargo bench -p vgt-capture --bench recorder
//! ```
//!
//! The summary gives ns per command for each sink (wall time, the recording thread's CPU, and
//! every thread's CPU, the writer thread's and the populating helper's included) and the added
//! cost over the null sink, then
//! what the crash-safe file's stores cost with and without populating ahead
//! (`mapped_file::MapOptions::populate_ahead`). The capture bench (`--bench capture`) measures
//! the same recording inside the whole backend.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};

use vgt_capture::mapped_file::{MapOptions, MappedFile, Opened};
use vgt_capture::recorder::Recorder;
use vgt_capture::server::SyncMode;
use vgt_capture::sink::{NullSink, open_file};
use vgt_format::record::{
    CommandRecord, Cursor, CursorAction, Descriptor, Direction, GpuSocketMessage, RecordBody,
    ResponseRecord,
};

/// The 56-byte virtio_gpu_update_cursor a MOVE_CURSOR carries (type 0x0301).
fn request(i: u32) -> [u8; 56] {
    let mut r = [0u8; 56];
    r[..4].copy_from_slice(&0x0301u32.to_le_bytes());
    r[24..28].copy_from_slice(&0u32.to_le_bytes());
    r[28..32].copy_from_slice(&(i % 1920).to_le_bytes());
    r[32..36].copy_from_slice(&(i % 1080).to_le_bytes());
    r
}

/// The records the built-in backend makes for one MOVE_CURSOR, in its order.
fn move_cursor(rec: &Recorder, i: u32) {
    let req = request(i);
    let payload = rec.store(&req).unwrap();
    let command = rec
        .append(RecordBody::Command(CommandRecord {
            queue: 1,
            head: (i % 256) as u16,
            descriptors: vec![Descriptor {
                addr: 0x10_0000 + u64::from(i % 256) * 64,
                len: 56,
                flags: 0,
                next: 0,
            }],
            writable_len: 0,
            request: payload,
        }))
        .unwrap();
    let mut pos = [0u8; 12];
    pos[4..8].copy_from_slice(&(i % 1920).to_le_bytes());
    pos[8..12].copy_from_slice(&(i % 1080).to_le_bytes());
    let head = rec.store(&pos).unwrap();
    rec.append_output(RecordBody::GpuSocket(GpuSocketMessage {
        direction: Direction::BackendRequest,
        request: 5,
        flags: 0,
        fd_count: 0,
        payload: head,
        data: None,
    }))
    .unwrap();
    rec.append_output(RecordBody::Cursor(Cursor {
        command,
        action: CursorAction::Move,
        scanout_id: 0,
        x: i % 1920,
        y: i % 1080,
        hot_x: 0,
        hot_y: 0,
        resource_id: 0,
        image: None,
    }))
    .unwrap();
    let bytes = rec.store(&[]).unwrap();
    rec.append_output(RecordBody::Response(ResponseRecord {
        command,
        queue: 1,
        head: (i % 256) as u16,
        used_len: 0,
        bytes,
    }))
    .unwrap();
}

/// Commands per measured step: one queue pass of a batch, as the backend serves them (crash-safe
/// mode hands the outputs to the OS once per pass).
const BATCH: u32 = 32;

fn pass(rec: &Recorder, i: &mut u32) {
    for _ in 0..BATCH {
        move_cursor(rec, *i);
        *i = i.wrapping_add(1);
    }
    rec.sync_outputs().unwrap();
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sinks: [(&str, Recorder); 3] = [
        ("no-record", Recorder::new(Box::new(NullSink::default()))),
        (
            "buffered",
            Recorder::new(open_file(&dir.path().join("b.vgt"), SyncMode::Buffered).unwrap()),
        ),
        (
            "crash-safe",
            Recorder::new(open_file(&dir.path().join("c.vgt"), SyncMode::CrashSafe).unwrap()),
        ),
    ];
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("record_move_cursor");
        g.throughput(Throughput::Elements(u64::from(BATCH)));
        for (name, rec) in &sinks {
            let mut i = 0;
            g.bench_function(*name, |b| b.iter(|| pass(black_box(rec), &mut i)));
        }
        g.finish();
    }
    // Interleaved rounds of a fixed count for the summary: the medians are the figures.
    let mut per_cmd: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let mut cpu_per_cmd: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let mut all_cpu_per_cmd: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let passes = 2_000;
    let mut i = 0;
    for _ in 0..9 {
        for (k, (_, rec)) in sinks.iter().enumerate() {
            let t = Instant::now();
            let cpu = thread_cpu_ns();
            let all_cpu = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
            for _ in 0..passes {
                pass(rec, &mut i);
            }
            let n = f64::from(passes * BATCH);
            cpu_per_cmd[k].push((thread_cpu_ns() - cpu) as f64 / n);
            per_cmd[k].push(t.elapsed().as_nanos() as f64 / n);
            // Lets the crash-safe file's populating helper finish the window it was given
            // before the next sink's round: on two cores it would take the core that the
            // buffered writer thread needs, and charge crash-safe's cost to buffered.
            std::thread::sleep(Duration::from_millis(50));
            // Every thread's CPU, the writer thread's and the populating helper's included,
            // up to the end of that pause (which lets them finish this round's work).
            all_cpu_per_cmd[k].push((cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - all_cpu) as f64 / n);
        }
    }
    let base = median(&mut per_cmd[0]);
    let base_cpu = median(&mut cpu_per_cmd[0]);
    let base_all = median(&mut all_cpu_per_cmd[0]);
    println!(
        "\nrecording one MOVE_CURSOR (4 records), median of 9 interleaved rounds \
         (wall time; CPU time of the recording thread, which excludes the writer thread; \
         CPU time of every thread, writer and populating helper included):"
    );
    println!(
        "  no-record  {base:8.1} ns/command, CPU {base_cpu:8.1} ns, all threads {base_all:8.1} ns"
    );
    for (k, (name, _)) in sinks.iter().enumerate().skip(1) {
        let m = median(&mut per_cmd[k]);
        let c = median(&mut cpu_per_cmd[k]);
        let a = median(&mut all_cpu_per_cmd[k]);
        println!(
            "  {name:<10} {m:8.1} ns/command, CPU {c:8.1} ns, all threads {a:8.1} ns  \
             (+{:.1} ns wall, +{:.1} ns CPU, +{:.1} ns all threads over no-record)",
            m - base,
            c - base_cpu,
            a - base_all
        );
    }
    let commands = rec_count(&sinks[1].1);
    for (_, rec) in sinks {
        rec.finish("bench done").unwrap();
    }
    let size = std::fs::metadata(dir.path().join("b.vgt")).unwrap().len();
    println!(
        "  file: {:.1} bytes/command ({commands} commands in {size} bytes, buffered)",
        size as f64 / commands as f64
    );
    mapped_stores(dir.path());
}

/// The crash-safe file's own part: 360-byte stores (one MOVE_CURSOR's records) into a
/// `MappedFile` with and without populating ahead, interleaved rounds into two growing files.
fn mapped_stores(dir: &std::path::Path) {
    const RECORD: usize = 360;
    const PER_ROUND: usize = 64 << 10;
    let record = [0x5au8; RECORD];
    let mut files: Vec<(&str, MappedFile)> = [("populate ahead", true), ("fault on store", false)]
        .into_iter()
        .map(|(name, populate_ahead)| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(format!("m-{populate_ahead}")))
                .unwrap();
            let options = MapOptions {
                populate_ahead,
                ..MapOptions::default()
            };
            match MappedFile::open_with(file, options).unwrap() {
                Opened::Mapped(m) => (name, m),
                Opened::Unsupported { reason, .. } => panic!("cannot map in {dir:?}: {reason}"),
            }
        })
        .collect();
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    for _ in 0..9 {
        for (k, (_, f)) in files.iter_mut().enumerate() {
            let t = Instant::now();
            let c = thread_cpu_ns();
            for _ in 0..PER_ROUND {
                f.write_all(black_box(&record)).unwrap();
            }
            cpu[k].push((thread_cpu_ns() - c) as f64 / PER_ROUND as f64);
            wall[k].push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    println!(
        "\ncrash-safe file alone, {RECORD}-byte stores, {PER_ROUND} per round, median of 9 \
         interleaved rounds (wall; CPU of the storing thread):"
    );
    for (k, (name, f)) in files.iter_mut().enumerate() {
        let (w, c) = (median(&mut wall[k]), median(&mut cpu[k]));
        println!("  {name:<15} {w:7.1} ns/store, CPU {c:7.1} ns");
        f.close().unwrap();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of `clock` (the calling thread's or the whole process's), in nanoseconds.
fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Commands recorded so far by `rec`.
fn rec_count(rec: &Recorder) -> u64 {
    rec.stats().commands
}
