//! The writer's incompressibility probes: a long blob whose probes do not compress is stored
//! raw without compressing the whole of it, and the probes' blind spots (a noisy start, one
//! compressible stretch between two probes, rows repeating at long distances) still get
//! compressed. Whatever the writer chooses, the blob reads back as the bytes stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Rng;
use vgt_format::file::{CaptureReader, CaptureWriter, Compression, WriterOptions};
use vgt_format::record::*;

/// What docs/FORMAT.md says of the probes: blobs of 2 MiB or more, 16 probes of 32 KiB spread
/// evenly from the first byte to the last.
const PROBE_MIN_LEN: usize = 2 << 20;
const PROBE_LEN: usize = 32 << 10;
const PROBES: usize = 16;

fn probe_offsets(len: usize) -> Vec<usize> {
    (0..PROBES)
        .map(|i| (len - PROBE_LEN) * i / (PROBES - 1))
        .collect()
}

const FRAME: usize = 1920 * 1080 * 4;

/// Stores `data` as the only blob of a finished capture; returns the codec the writer chose,
/// the stored length, and checks that the blob reads back as `data`.
fn store_one(compression: Compression, data: &[u8]) -> (u8, u64) {
    let mut file = Vec::new();
    let mut w = CaptureWriter::new(
        &mut file,
        WriterOptions::default().with_compression(compression),
    )
    .unwrap();
    let payload = w.store(data).unwrap();
    w.append_body(
        1,
        RecordBody::MemoryRead(MemoryRead {
            command: 0,
            resource_id: 1,
            addr: 0,
            data: payload.clone(),
        }),
    )
    .unwrap();
    let stored = w.finish().unwrap().stored_bytes;
    let Payload::Blob(blob) = payload else {
        panic!("{} bytes stored inline", data.len());
    };
    // The blob chunk: 16-byte chunk header, then hash (16), raw_len (8), codec (1).
    let codec = file[blob.offset as usize + 16 + 24];
    let r = CaptureReader::from_bytes(file).unwrap();
    assert!(r.health().is_clean(), "{:?}", r.health());
    let got = r.record(0).unwrap();
    let p = &got.body.payloads()[0];
    assert!(
        r.read_payload(p).unwrap().as_ref() == data,
        "blob reads back"
    );
    assert!(r.verify().unwrap().is_clean());
    (codec, stored)
}

const CODECS: [(Compression, u8); 2] = [(Compression::Lz4, 1), (Compression::Zstd(3), 2)];

#[test]
fn incompressible_frame_is_stored_raw_and_reads_back_identical() {
    let noise = Rng(1).bytes(FRAME);
    for (compression, _) in CODECS {
        let (codec, stored) = store_one(compression, &noise);
        assert_eq!((codec, stored), (0, FRAME as u64), "{compression}");
    }
}

#[test]
fn frame_with_a_noisy_first_half_and_a_flat_rest_is_compressed() {
    let mut data = Rng(2).bytes(FRAME / 2);
    data.resize(FRAME, 0x40);
    for (compression, want) in CODECS {
        let (codec, stored) = store_one(compression, &data);
        assert_eq!(codec, want, "{compression}");
        assert!(
            stored < (FRAME / 2 + FRAME / 16) as u64,
            "{compression}: {stored}"
        );
    }
}

#[test]
fn noise_with_one_flat_eighth_right_after_a_probe_is_compressed() {
    // The worst place for one compressible stretch: starting just after a probe ends. A flat
    // eighth of the blob and a little more (noise grows by about 0.4 % in lz4) is what makes
    // the whole blob save 1/8.
    let len = FRAME;
    let offsets = probe_offsets(len);
    for k in [0, 6, 12] {
        let mut data = Rng(3 + k as u64).bytes(len);
        let start = offsets[k] + PROBE_LEN + 1;
        let flat = len / 8 + len / 64;
        data[start..start + flat].fill(0);
        for (compression, want) in CODECS {
            let (codec, stored) = store_one(compression, &data);
            assert_eq!(codec, want, "{compression}, after probe {k}");
            assert!(stored <= (len - len / 8) as u64, "{compression}: {stored}");
        }
    }
}

#[test]
fn rows_of_the_same_noise_compress_up_to_30_kib_long() {
    // Every row the same incompressible pixels: a probe sees the repetition as long as a row
    // is well under a probe (7680-pixel rows of 4 bytes).
    for row_len in [7680usize, 20480, 30720] {
        let row = Rng(4).bytes(row_len);
        let data: Vec<u8> = row.iter().copied().cycle().take(FRAME).collect();
        let (codec, stored) = store_one(Compression::Lz4, &data);
        assert_eq!(codec, 1, "rows of {row_len} bytes");
        assert!(stored < (FRAME / 8) as u64, "rows of {row_len}: {stored}");
    }
}

/// Noise whose every gap between two probes is flat in its middle half: about half the blob
/// compresses, and no probe sees any of it.
fn flat_between_every_probe(len: usize, probed_as: usize) -> Vec<u8> {
    let mut data = Rng(5).bytes(len);
    let offsets = probe_offsets(probed_as);
    for w in offsets.windows(2) {
        let (gap_start, gap_end) = (w[0] + PROBE_LEN, w[1]);
        let quarter = (gap_end - gap_start) / 4;
        data[gap_start + quarter..gap_end - quarter].fill(7);
    }
    data
}

#[test]
fn blob_below_the_probing_length_is_compressed_whole_as_before() {
    let len = PROBE_MIN_LEN - 1;
    let (codec, stored) = store_one(Compression::Lz4, &flat_between_every_probe(len, len));
    assert_eq!(codec, 1);
    assert!(stored < (len - len / 3) as u64, "{stored}");
}

#[test]
fn compressible_stretches_hidden_between_all_probes_are_the_blind_spot_and_stored_raw() {
    // The price of probing, pinned so that changing the probes is a deliberate choice: data
    // that compresses only where no probe looks is stored raw (it reads back all the same).
    for len in [PROBE_MIN_LEN, FRAME] {
        let (codec, stored) = store_one(Compression::Lz4, &flat_between_every_probe(len, len));
        assert_eq!((codec, stored), (0, len as u64), "{len}");
    }
}

/// A blob made of stretches: noise, one byte repeated, or a repeated short noise pattern.
fn blob_of(parts: &[(u8, usize, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(kind, len, seed) in parts {
        match kind % 3 {
            0 => out.extend(Rng(seed).bytes(len)),
            1 => out.resize(out.len() + len, seed as u8),
            _ => {
                let pattern = Rng(seed).bytes(1 + (seed % 40_000) as usize);
                out.extend(pattern.iter().copied().cycle().take(len));
            }
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever mix of noise and compressible stretches a blob is, and whatever the probes
    /// decide, it reads back as its bytes and never takes more room than raw.
    #[test]
    fn any_blob_reads_back_whatever_the_probes_choose(
        parts in proptest::collection::vec((0u8..3, 1usize..(1 << 20), 0u64..1000), 1..8),
        zstd in proptest::bool::ANY,
        pad in 0usize..(1 << 20),
    ) {
        let mut data = blob_of(&parts);
        // Noise up to a length from just below the probing threshold to well above it.
        let want = PROBE_MIN_LEN - 4096 + pad;
        if data.len() < want {
            data.extend(Rng(pad as u64).bytes(want - data.len()));
        }
        let compression = if zstd { Compression::Zstd(1) } else { Compression::Lz4 };
        let (codec, stored) = store_one(compression, &data);
        proptest::prop_assert!(stored <= data.len() as u64);
        proptest::prop_assert_eq!(codec == 0, stored == data.len() as u64);
    }
}
