//! Content hash throughput: `vgt_format::hash::content_hash` (twox-hash, SIMD path picked at run
//! time) next to xxhash-rust's `xxh3_128` (SIMD path picked at compile time: SSE2 in a default
//! x86-64 build), the implementation it replaced, on an 8 MB 1080p frame and a 256 KiB blob.
//! A `ratio content_hash/xxhash-rust` line is printed at the end for each size.
//!
//! `cargo bench -p vgt-format --bench hash -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vgt_format::hash::content_hash;

/// SplitMix64 bytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = 1u64;
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

/// Best-of-N seconds per call, for the ratio line (criterion's estimates are not returned).
fn best_secs(bytes: &[u8], f: fn(&[u8]) -> u128) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..4 {
            black_box(f(black_box(bytes)));
        }
        best = best.min(t.elapsed().as_secs_f64() / 4.0);
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
    let sizes = [
        ("1080p_frame_8MB", 1920 * 1080 * 4),
        ("blob_256KiB", 256 * 1024),
    ];
    let mut ratios = Vec::new();
    for (name, len) in sizes {
        let bytes = random_bytes(len);
        assert_eq!(content_hash(&bytes), xxhash_rust::xxh3::xxh3_128(&bytes));
        let mut g = c.benchmark_group(format!("hash_{name}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("content_hash", |b| {
            b.iter(|| content_hash(black_box(&bytes)))
        });
        g.bench_function("xxhash_rust_xxh3_128", |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_128(black_box(&bytes)))
        });
        g.finish();
        let new = best_secs(&bytes, content_hash);
        let old = best_secs(&bytes, xxhash_rust::xxh3::xxh3_128);
        let gbps = |s: f64| len as f64 / s / 1e9;
        ratios.push(format!(
            "ratio content_hash/xxhash-rust {name}: {:.3} (content_hash {:.1} GB/s, xxhash-rust {:.1} GB/s, best of 15)",
            new / old,
            gbps(new),
            gbps(old)
        ));
    }
    c.final_summary();
    for line in ratios {
        println!("{line}");
    }
}
