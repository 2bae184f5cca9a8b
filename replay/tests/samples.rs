//! Every real capture in samples/ (recorded from a real Linux guest under QEMU through
//! vgt-capture) replays with zero divergences, twice with identical results, and its last
//! replayed frame per scanout is the last recorded frame (which the real-guest test proved equal
//! to QEMU's screendump when the sample was made).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use vgt_format::CaptureReader;
use vgt_replay::{Quiet, ReplayOptions, Replayer};

fn samples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vgt"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_sample_replays_identically_and_deterministically() {
    let files = samples();
    assert_eq!(
        files.len(),
        4,
        "expected the four workload samples: {files:?}"
    );
    for path in files {
        let reader = CaptureReader::open(&path).unwrap();
        let options = ReplayOptions {
            keep_going: true,
            loops: 2,
            ..ReplayOptions::default()
        };
        let report = Replayer::new(&reader, options).run(&mut Quiet).unwrap();
        assert!(
            report.is_identical(),
            "{}: {:?} {:?}",
            path.display(),
            report.divergences,
            report.unsupported
        );
        assert!(
            report.commands > 10,
            "{}: {} commands",
            path.display(),
            report.commands
        );
        assert!(report.frames > 0, "{}: no frame compared", path.display());
        assert_eq!(report.loops, 2);
        assert!(report.unsupported.is_empty(), "{}", path.display());
    }
}
