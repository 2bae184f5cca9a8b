//! Capture file throughput: append, store (compress / dedup), sequential read, open and random
//! access on a 1 GiB capture, and the comparisons behind the format's choices (lz4 vs zstd, raw
//! and through the writer's `store` at the levels capture and repack use, fixed layout vs
//! postcard). Each subject is measured next to a baseline in the same run and a
//! `ratio subject/baseline` line is printed at the end.
//!
//! `cargo bench -p vgt-format --bench capture -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vgt_format::file::{CaptureReader, CaptureWriter, Compression, WriterOptions, codec};
use vgt_format::record::*;

const FB_W: usize = 1920;
const FB_H: usize = 1080;

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A desktop-like 1920x1080 BGRA frame: flat background, a flat window, a title bar, and rows
/// of text-like glyph noise in the window (about 12% of the pixels are "ink").
fn framebuffer(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut px = vec![0u8; FB_W * FB_H * 4];
    let put = |px: &mut [u8], x: usize, y: usize, c: [u8; 4]| {
        let at = (y * FB_W + x) * 4;
        px[at..at + 4].copy_from_slice(&c);
    };
    for y in 0..FB_H {
        for x in 0..FB_W {
            let c = if (200..900).contains(&x) && (150..950).contains(&y) {
                if y < 180 {
                    [0x60, 0x40, 0x20, 0xff]
                } else {
                    [0xf0, 0xf0, 0xf0, 0xff]
                }
            } else {
                [0x80, 0x50, 0x30, 0xff]
            };
            put(&mut px, x, y, c);
        }
    }
    // Text lines: 14-pixel rows, glyph cells 8 wide with random ink pixels.
    for line in 0..40 {
        let y0 = 200 + line * 18;
        for cell in 0..80 {
            let x0 = 220 + cell * 8;
            if rng.next().is_multiple_of(7) {
                continue; // a space
            }
            for dy in 0..14 {
                let bits = rng.next();
                for dx in 0..7 {
                    if bits >> dx & 3 == 0 {
                        put(&mut px, x0 + dx, y0 + dy, [0x20, 0x20, 0x20, 0xff]);
                    }
                }
            }
        }
    }
    px
}

fn command_record(i: u64) -> Record {
    let mut request = vec![0u8; 48];
    request[0..4].copy_from_slice(&0x0104u32.to_le_bytes());
    request[24..32].copy_from_slice(&i.to_le_bytes());
    Record {
        ts_ns: i * 1000,
        body: RecordBody::Command(CommandRecord {
            queue: 0,
            head: (i % 256) as u16,
            descriptors: vec![
                Descriptor {
                    addr: 0x1_0000 + i * 64,
                    len: 48,
                    flags: 1,
                    next: 1,
                },
                Descriptor {
                    addr: 0x2_0000,
                    len: 24,
                    flags: 2,
                    next: 0,
                },
            ],
            writable_len: 24,
            request: Payload::Inline(request),
        }),
    }
}

static TMP: OnceLock<tempfile::TempDir> = OnceLock::new();

fn tmp() -> &'static tempfile::TempDir {
    TMP.get_or_init(|| tempfile::tempdir().unwrap())
}

fn bench_append(c: &mut Criterion) {
    let rec = command_record(7);
    let mut encoded = vec![0u8; 16];
    codec::encode_body(&mut encoded, &rec).unwrap();
    let mut g = c.benchmark_group("append_small");
    g.throughput(Throughput::Elements(1));
    g.bench_function("capture_writer", |b| {
        b.iter_custom(|iters| {
            let path = tmp().path().join("append.vgt");
            let mut w = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(w.append(black_box(&rec)).unwrap());
            }
            w.flush().unwrap();
            let d = t.elapsed();
            drop(w);
            std::fs::remove_file(&path).unwrap();
            d
        })
    });
    g.bench_function("baseline_vec_extend", |b| {
        b.iter_custom(|iters| {
            let mut v: Vec<u8> = Vec::with_capacity(64 << 20);
            let t = Instant::now();
            for _ in 0..iters {
                if v.len() > (64 << 20) - 256 {
                    v.clear();
                }
                v.extend_from_slice(black_box(&encoded));
            }
            black_box(&v);
            t.elapsed()
        })
    });
    g.finish();
}

/// `store()` of `frame` made distinct each time (no dedup), next to a memcpy of it.
fn store_group(c: &mut Criterion, name: &str, frame: &[u8]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(20);
    g.bench_function("capture_writer", |b| {
        b.iter_custom(|iters| {
            let path = tmp().path().join(format!("{name}.vgt"));
            let mut w = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
            let mut f = frame.to_vec();
            let mut total = Duration::ZERO;
            for i in 0..iters {
                // A different frame each time (no dedup): stamp the counter into the first pixels.
                f[0..8].copy_from_slice(&i.to_le_bytes());
                let t = Instant::now();
                black_box(w.store(black_box(&f)).unwrap());
                total += t.elapsed();
            }
            w.flush().unwrap();
            drop(w);
            std::fs::remove_file(&path).unwrap();
            total
        })
    });
    g.bench_function("baseline_memcpy", |b| {
        let mut dst = vec![0u8; frame.len()];
        b.iter(|| {
            dst.copy_from_slice(black_box(frame));
            black_box(&dst);
        })
    });
    g.finish();
}

fn bench_store(c: &mut Criterion) {
    let frame = framebuffer(1);
    store_group(c, "store_framebuffer", &frame);
    // An incompressible frame (video, noise): stored raw, what lz4 would have thrown away.
    let mut noise = vec![0u8; frame.len()];
    Rng(5).fill(&mut noise);
    store_group(c, "store_framebuffer_noise", &noise);
    let mut sizes = Vec::new();
    for (name, f) in [("desktop", &frame), ("noise", &noise)] {
        let mut w = CaptureWriter::new(std::io::sink(), WriterOptions::default()).unwrap();
        w.store(f).unwrap();
        sizes.push((
            format!("store() lz4, {name} frame stored"),
            w.stats().stored_bytes as usize,
        ));
    }
    STORE_SIZES.set(sizes).ok();

    let mut g = c.benchmark_group("store_dedup_hit");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("capture_writer", |b| {
        let mut w = CaptureWriter::new(std::io::sink(), WriterOptions::default()).unwrap();
        w.store(&frame).unwrap();
        b.iter(|| black_box(w.store(black_box(&frame)).unwrap()))
    });
    g.bench_function("baseline_memcpy", |b| {
        let mut dst = vec![0u8; frame.len()];
        b.iter(|| {
            dst.copy_from_slice(black_box(&frame));
            black_box(&dst);
        })
    });
    g.finish();
}

const SEQ_RECORDS: u64 = 200_000;

fn sequential_file() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let path = tmp().path().join("seq.vgt");
        let mut w = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
        for i in 0..SEQ_RECORDS {
            w.append(&command_record(i)).unwrap();
        }
        w.finish().unwrap();
        path
    })
}

fn bench_read(c: &mut Criterion) {
    let path = sequential_file();
    let mut g = c.benchmark_group("read_sequential");
    g.throughput(Throughput::Elements(SEQ_RECORDS));
    g.sample_size(20);
    g.bench_function("capture_reader", |b| {
        b.iter(|| {
            let r = CaptureReader::open(path).unwrap();
            let mut n = 0u64;
            for item in r.iter() {
                black_box(item.unwrap());
                n += 1;
            }
            assert_eq!(n, SEQ_RECORDS);
        })
    });
    g.bench_function("baseline_pread_1mib", |b| {
        b.iter(|| {
            let f = File::open(path).unwrap();
            let len = f.metadata().unwrap().len();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < len {
                let n = f.read_at(&mut buf, off).unwrap();
                black_box(&buf[..n]);
                off += n as u64;
            }
        })
    });
    g.finish();
}

/// A capture of about 1 GiB: a million small commands and 4096 distinct 256 KiB memory reads.
fn big_file() -> &'static (PathBuf, u64) {
    static P: OnceLock<(PathBuf, u64)> = OnceLock::new();
    P.get_or_init(|| {
        let path = tmp().path().join("big.vgt");
        let t = Instant::now();
        let opts = WriterOptions {
            compression: Compression::None,
            ..WriterOptions::default()
        };
        let mut w = CaptureWriter::create(&path, opts).unwrap();
        let mut rng = Rng(11);
        let mut blob = vec![0u8; 256 << 10];
        for i in 0..1_000_000u64 {
            w.append(&command_record(i)).unwrap();
            if i.is_multiple_of(244) {
                rng.fill(&mut blob);
                let data = w.store(&blob).unwrap();
                w.append_body(
                    i * 1000 + 1,
                    RecordBody::MemoryRead(MemoryRead {
                        command: i,
                        resource_id: 1,
                        addr: 0,
                        data,
                    }),
                )
                .unwrap();
            }
        }
        let n = w.len();
        let stats = w.finish().unwrap();
        eprintln!(
            "generated {} ({} records, {:.2} GiB) in {:.1?}",
            path.display(),
            n,
            stats.file_bytes as f64 / (1u64 << 30) as f64,
            t.elapsed()
        );
        (path, n)
    })
}

fn bench_big(c: &mut Criterion) {
    // Generated on first use, so that a filtered run does not pay for it.
    let mut g = c.benchmark_group("open_1gib");
    g.bench_function("capture_reader", |b| {
        let (path, _) = big_file();
        b.iter(|| {
            let r = CaptureReader::open(path).unwrap();
            assert!(r.health().indexed);
            black_box(r.len())
        })
    });
    g.bench_function("baseline_file_open", |b| {
        let (path, _) = big_file();
        b.iter(|| {
            let f = File::open(path).unwrap();
            black_box(f.metadata().unwrap().len())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("open_1gib_scan");
    g.sample_size(10);
    g.bench_function("capture_reader", |b| {
        let (path, _) = big_file();
        b.iter(|| {
            let r = CaptureReader::open_scanning(path).unwrap();
            assert!(!r.health().indexed);
            black_box(r.len())
        })
    });
    g.bench_function("baseline_pread_1mib", |b| {
        let (path, _) = big_file();
        b.iter(|| {
            let f = File::open(path).unwrap();
            let len = f.metadata().unwrap().len();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < len {
                let n = f.read_at(&mut buf, off).unwrap();
                black_box(&buf[..n]);
                off += n as u64;
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("record_random_1gib");
    g.bench_function("capture_reader", |b| {
        let (path, n) = big_file();
        let r = CaptureReader::open(path).unwrap();
        let mut rng = Rng(3);
        b.iter(|| black_box(r.record(rng.next() % n).unwrap()))
    });
    g.bench_function("baseline_pread_128b", |b| {
        let (path, _) = big_file();
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        let mut rng = Rng(3);
        let mut buf = [0u8; 128];
        b.iter(|| {
            f.read_exact_at(&mut buf, rng.next() % (len - 128)).unwrap();
            black_box(&buf);
        })
    });
    g.finish();
}

fn bench_choices(c: &mut Criterion) {
    let frame = framebuffer(2);
    let mut g = c.benchmark_group("compress_framebuffer");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(20);
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(frame.len())];
    g.bench_function("lz4_flex", |b| {
        b.iter(|| black_box(lz4_flex::block::compress_into(black_box(&frame), &mut out).unwrap()))
    });
    let mut zout = Vec::with_capacity(zstd::zstd_safe::compress_bound(frame.len()));
    let mut zc = zstd::bulk::Compressor::new(1).unwrap();
    g.bench_function("zstd_level1", |b| {
        b.iter(|| black_box(zc.compress_to_buffer(black_box(&frame), &mut zout).unwrap()))
    });
    g.finish();
    let lz = lz4_flex::block::compress(&frame);
    let zs = zstd::bulk::compress(&frame, 1).unwrap();
    let mut g = c.benchmark_group("decompress_framebuffer");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(20);
    let mut raw = vec![0u8; frame.len()];
    g.bench_function("lz4_flex", |b| {
        b.iter(|| black_box(lz4_flex::block::decompress_into(black_box(&lz), &mut raw).unwrap()))
    });
    let mut zd = zstd::bulk::Decompressor::new().unwrap();
    g.bench_function("zstd_level1", |b| {
        b.iter(|| black_box(zd.decompress_to_buffer(black_box(&zs), &mut raw).unwrap()))
    });
    g.finish();
    SIZES
        .set(vec![
            ("framebuffer raw bytes".into(), frame.len()),
            ("lz4_flex compressed".into(), lz.len()),
            ("zstd level 1 compressed".into(), zs.len()),
        ])
        .ok();

    let rec = command_record(12345);
    let mut g = c.benchmark_group("encode_command");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(256);
    g.bench_function("fixed_layout", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_body(&mut buf, black_box(&rec)).unwrap();
            black_box(&buf);
        })
    });
    g.bench_function("postcard", |b| {
        b.iter(|| {
            buf.clear();
            let v = postcard::to_extend(black_box(&rec), std::mem::take(&mut buf)).unwrap();
            buf = v;
            black_box(&buf);
        })
    });
    g.finish();
    let mut fixed = Vec::new();
    codec::encode_body(&mut fixed, &rec).unwrap();
    let pc = postcard::to_allocvec(&rec).unwrap();
    let mut g = c.benchmark_group("decode_command");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fixed_layout", |b| {
        b.iter(|| black_box(codec::decode_body(3, black_box(&fixed)).unwrap()))
    });
    g.finish();
    ENC_SIZES
        .set(vec![
            ("command body, fixed layout".into(), fixed.len()),
            ("command, postcard".into(), pc.len()),
        ])
        .ok();
}

/// `store()` of distinct desktop-like frames through the writer with each codec: what recording
/// (lz4, or `--compression zstd`) and `vgt-inspect repack` (zstd level 19) cost per frame.
fn bench_store_codecs(c: &mut Criterion) {
    let frame = framebuffer(3);
    let mut g = c.benchmark_group("store_framebuffer_codec");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(10);
    let mut sizes = Vec::new();
    for (name, compression) in [
        ("lz4", Compression::Lz4),
        ("zstd_level3", Compression::Zstd(3)),
        ("zstd_level19", Compression::Zstd(19)),
    ] {
        let opts = WriterOptions::default().with_compression(compression);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut w = CaptureWriter::new(std::io::sink(), opts.clone()).unwrap();
                let mut f = frame.clone();
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    // A different frame each time (no dedup).
                    f[0..8].copy_from_slice(&i.to_le_bytes());
                    let t = Instant::now();
                    black_box(w.store(black_box(&f)).unwrap());
                    total += t.elapsed();
                }
                total
            })
        });
        let mut w = CaptureWriter::new(std::io::sink(), opts).unwrap();
        w.store(&frame).unwrap();
        sizes.push((
            format!("store() {name} stored"),
            w.stats().stored_bytes as usize,
        ));
    }
    g.finish();
    CODEC_SIZES.set(sizes).ok();
}

static SIZES: OnceLock<Vec<(String, usize)>> = OnceLock::new();
static STORE_SIZES: OnceLock<Vec<(String, usize)>> = OnceLock::new();
static CODEC_SIZES: OnceLock<Vec<(String, usize)>> = OnceLock::new();
static ENC_SIZES: OnceLock<Vec<(String, usize)>> = OnceLock::new();

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Mean time per iteration in ns from criterion's saved estimate of this run.
fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let p = criterion_dir()
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_summary(started: std::time::SystemTime) {
    // (group, subject, baseline, unit per iteration: "records" / bytes, target)
    let frame_bytes = (FB_W * FB_H * 4) as f64;
    let rows: [(&str, &str, &str, f64, &str, &str); 12] = [
        (
            "append_small",
            "capture_writer",
            "baseline_vec_extend",
            1.0,
            "records",
            ">= 1e6 records/s",
        ),
        (
            "store_framebuffer",
            "capture_writer",
            "baseline_memcpy",
            frame_bytes,
            "bytes",
            ">= 1 GB/s",
        ),
        (
            "store_framebuffer_noise",
            "capture_writer",
            "baseline_memcpy",
            frame_bytes,
            "bytes",
            ">= 1 GB/s",
        ),
        (
            "store_dedup_hit",
            "capture_writer",
            "baseline_memcpy",
            frame_bytes,
            "bytes",
            ">= 5 GB/s",
        ),
        (
            "read_sequential",
            "capture_reader",
            "baseline_pread_1mib",
            SEQ_RECORDS as f64,
            "records",
            ">= 1e6 records/s",
        ),
        (
            "open_1gib",
            "capture_reader",
            "baseline_file_open",
            0.0,
            "",
            "<= 50 ms",
        ),
        (
            "open_1gib_scan",
            "capture_reader",
            "baseline_pread_1mib",
            0.0,
            "",
            "no index: scan",
        ),
        (
            "record_random_1gib",
            "capture_reader",
            "baseline_pread_128b",
            0.0,
            "",
            "<= 1 ms",
        ),
        (
            "compress_framebuffer",
            "lz4_flex",
            "zstd_level1",
            frame_bytes,
            "bytes",
            "choice",
        ),
        (
            "encode_command",
            "fixed_layout",
            "postcard",
            1.0,
            "records",
            "choice",
        ),
        (
            "store_framebuffer_codec",
            "zstd_level3",
            "lz4",
            frame_bytes,
            "bytes",
            "choice: --compression zstd",
        ),
        (
            "store_framebuffer_codec",
            "zstd_level19",
            "lz4",
            frame_bytes,
            "bytes",
            "choice: repack",
        ),
    ];
    println!("\n== summary (means of this run; ratio = subject time / baseline time) ==");
    for (group, subject, baseline, per_iter, unit, target) in rows {
        let fresh = |b: &str| {
            let p = criterion_dir()
                .join(group)
                .join(b)
                .join("new/estimates.json");
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started)
        };
        let (Some(s), Some(b)) = (mean_ns(group, subject), mean_ns(group, baseline)) else {
            continue;
        };
        if !fresh(subject) || !fresh(baseline) {
            continue;
        }
        let rate = |ns: f64| {
            if per_iter == 0.0 {
                String::new()
            } else if unit == "bytes" && per_iter / ns < 0.1 {
                format!(" = {:.2} MB/s", per_iter / ns * 1e3)
            } else if unit == "bytes" {
                format!(" = {:.2} GB/s", per_iter / ns)
            } else {
                format!(" = {:.2} M{unit}/s", per_iter / ns * 1e3)
            }
        };
        println!(
            "{group:22} {subject} {:>12.1} ns{}  | {baseline} {:>12.1} ns{}  | ratio subject/baseline = {:.2}  (target {target})",
            s,
            rate(s),
            b,
            rate(b),
            s / b
        );
    }
    if let Some(d) = mean_ns("decode_command", "fixed_layout") {
        println!(
            "decode_command         fixed_layout {d:>12.1} ns = {:.2} Mrecords/s",
            1e3 / d
        );
    }
    for (what, n) in SIZES
        .get()
        .into_iter()
        .chain(STORE_SIZES.get())
        .chain(ENC_SIZES.get())
        .chain(CODEC_SIZES.get())
        .flatten()
    {
        println!("size: {what:34} {n:>10} bytes");
    }
}

fn main() {
    let started = std::time::SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    bench_append(&mut c);
    bench_store(&mut c);
    bench_read(&mut c);
    bench_big(&mut c);
    bench_choices(&mut c);
    bench_store_codecs(&mut c);
    c.final_summary();
    print_summary(started);
    // The temporary directory lives in a static, which is never dropped: remove it here.
    if let Some(dir) = TMP.get() {
        let _ = std::fs::remove_dir_all(dir.path());
    }
}
