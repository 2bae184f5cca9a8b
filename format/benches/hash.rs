//! Content hash throughput: `vgt_format::hash::content_hash` (twox-hash, SIMD path picked at run
//! time) next to xxhash-rust's `xxh3_128` (SIMD path picked at compile time: SSE2 in a default
//! x86-64 build), the implementation it replaced, on an 8 MB 1080p frame and a 256 KiB blob
//! hashed again and again (cache-warm), and on 12 distinct 1080p frames (96 MB, more than a
//! typical L3) hashed in turn, as capture and replay meet them (from memory).
//! A `ratio content_hash/xxhash-rust` line is printed at the end for each case.
//!
//! `cargo bench -p vgt-format --bench hash -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vgt_format::hash::content_hash;

/// SplitMix64 bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hashes the buffers in turn, one per call (round robin).
struct Rotor<'a> {
    bufs: &'a [Vec<u8>],
    next: usize,
}

impl Rotor<'_> {
    fn hash(&mut self, f: fn(&[u8]) -> u128) -> u128 {
        let h = f(black_box(&self.bufs[self.next]));
        self.next = (self.next + 1) % self.bufs.len();
        h
    }
}

/// Best-of-N seconds per call, for the ratio line (criterion's estimates are not returned).
fn best_secs(bufs: &[Vec<u8>], f: fn(&[u8]) -> u128) -> f64 {
    let mut rotor = Rotor { bufs, next: 0 };
    let per_round = bufs.len().max(4);
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..per_round {
            black_box(rotor.hash(f));
        }
        best = best.min(t.elapsed().as_secs_f64() / per_round as f64);
    }
    best
}

fn main() {
    let quick = std::env::var_os("VGT_BENCH_QUICK").is_some();
    let mut c = Criterion::default().configure_from_args();
    if quick {
        c = c
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
    }
    const FRAME: usize = 1920 * 1080 * 4;
    let cases = [
        ("1080p_frame_8MB", FRAME, 1),
        ("blob_256KiB", 256 * 1024, 1),
        ("1080p_12_frames_96MB", FRAME, 12),
    ];
    let mut ratios = Vec::new();
    for (name, len, count) in cases {
        let bufs: Vec<Vec<u8>> = (0..count).map(|i| random_bytes(len, i + 1)).collect();
        for b in &bufs {
            assert_eq!(content_hash(b), xxhash_rust::xxh3::xxh3_128(b));
        }
        let mut g = c.benchmark_group(format!("hash_{name}"));
        g.throughput(Throughput::Bytes(len as u64));
        let mut rotor = Rotor {
            bufs: &bufs,
            next: 0,
        };
        g.bench_function("content_hash", |b| b.iter(|| rotor.hash(content_hash)));
        g.bench_function("xxhash_rust_xxh3_128", |b| {
            b.iter(|| rotor.hash(xxhash_rust::xxh3::xxh3_128))
        });
        g.finish();
        let new = best_secs(&bufs, content_hash);
        let old = best_secs(&bufs, xxhash_rust::xxh3::xxh3_128);
        let gbps = |s: f64| len as f64 / s / 1e9;
        ratios.push(format!(
            "ratio content_hash/xxhash-rust {name}: {:.3} (content_hash {:.1} GB/s {:.0} us, xxhash-rust {:.1} GB/s {:.0} us, best of 15)",
            new / old,
            gbps(new),
            new * 1e6,
            gbps(old),
            old * 1e6
        ));
    }
    c.final_summary();
    for line in ratios {
        println!("{line}");
    }
}
