//! `vgt_format::hash::content_hash` must give exactly the XXH3-128 values earlier versions
//! stored (they are in every capture file): it is compared with xxhash-rust's `xxh3_128`, the
//! implementation those files were written with, and the stored sample captures must still verify.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use vgt_format::file::CaptureReader;
use vgt_format::hash::content_hash;
use xxhash_rust::xxh3::xxh3_128;

/// SplitMix64 bytes: random-looking contents, reproducible per seed.
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

#[test]
fn content_hash_every_short_length_equals_xxh3_128() {
    // 0..=300 crosses every XXH3 size class: 0, 1-3, 4-8, 9-16, 17-128, 129-240, > 240.
    for len in 0..=300 {
        let bytes = random_bytes(len, len as u64);
        assert_eq!(content_hash(&bytes), xxh3_128(&bytes), "length {len}");
    }
}

#[test]
fn content_hash_long_inputs_equal_xxh3_128() {
    // 1 KiB, a stripe-unaligned 1 MiB + 7 (long-input loop plus a partial last block), a 1080p
    // x8r8g8b8 frame, and inputs one byte around the 1024-byte stripe and block boundaries.
    for len in [
        1024,
        1023,
        1025,
        16 * 1024 - 1,
        16 * 1024 + 1,
        (1 << 20) + 7,
        1920 * 1080 * 4,
    ] {
        let bytes = random_bytes(len, 0xC0FF_EE00 + len as u64);
        assert_eq!(content_hash(&bytes), xxh3_128(&bytes), "length {len}");
    }
}

#[test]
fn content_hash_uniform_contents_equal_xxh3_128() {
    // Frames are often solid colour: constant bytes, not just random ones.
    for (len, byte) in [(0x1000, 0u8), (0x1000, 0xff), ((1 << 20) + 7, 0x5a)] {
        let bytes = vec![byte; len];
        assert_eq!(
            content_hash(&bytes),
            xxh3_128(&bytes),
            "length {len} byte {byte:#x}"
        );
    }
}

#[test]
fn content_hash_differs_when_one_bit_flips() {
    let mut bytes = random_bytes(8 << 20, 7);
    let before = content_hash(&bytes);
    bytes[5_000_001] ^= 0x10;
    assert_ne!(content_hash(&bytes), before);
}

#[test]
fn stored_captures_verify_every_blob_hash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("tests/data"), root.join("../samples")] {
        for entry in std::fs::read_dir(&dir).expect("read test data dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "vgt") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 6, "found only {files:?}");
    let mut blobs = 0;
    for path in &files {
        let r = CaptureReader::open(path).unwrap();
        assert!(
            r.health().is_clean(),
            "{}: {:?}",
            path.display(),
            r.health()
        );
        let report = r.verify().unwrap();
        assert!(
            report.corrupt.is_empty() && report.truncated_at.is_none(),
            "{}: {report:?}",
            path.display()
        );
        blobs += report.blobs;
    }
    // verify() decompresses every blob and compares its stored XXH3-128 with content_hash.
    assert!(blobs > 0, "no blob was checked in {files:?}");
}
