//! The `device_replay` fuzz target's kept inputs (its seeds and every crasher it found), run
//! through the same harness in every test run: the device never panics, keeps its response
//! promises, and a device fed only the reported reads answers identically.
//! See fuzz/README.md for the input layout and how to fuzz for more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../../fuzz/harness/device_replay.rs"]
mod device_replay;

use std::path::{Path, PathBuf};

fn dir(which: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(which)
        .join("device_replay")
}

/// Files of a kept-input directory, sorted by name (none when it does not exist).
fn files(which: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir(which)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_on_disk_are_the_generated_ones() {
    let generated = device_replay::seeds();
    if std::env::var_os("VGT_WRITE_FUZZ_SEEDS").is_some() {
        let d = dir("seeds");
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in &generated {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
    let mut want: Vec<(String, Vec<u8>)> = generated
        .into_iter()
        .map(|(n, b)| (n.to_owned(), b))
        .collect();
    want.sort();
    assert_eq!(
        files("seeds"),
        want,
        "fuzz/seeds/device_replay is stale: rerun with VGT_WRITE_FUZZ_SEEDS=1"
    );
}

#[test]
fn seeds_and_regressions_keep_every_promise() {
    let seeds = files("seeds");
    assert!(seeds.len() >= 5, "{} seeds", seeds.len());
    for (name, bytes) in seeds.into_iter().chain(files("regressions")) {
        eprintln!("input {name}");
        device_replay::run(&bytes);
    }
}

#[test]
fn seeds_reach_the_commands_they_name() {
    // The seeds are only worth fuzzing from if they decode into the chains they were built from.
    for (name, bytes) in device_replay::seeds() {
        let (_, chains) = device_replay::decode(&bytes).unwrap();
        assert_eq!(device_replay::encode(bytes[0], &chains), bytes, "{name}");
        assert!(chains.len() >= 4, "{name}: {} chains", chains.len());
    }
}
