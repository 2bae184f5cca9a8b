//! docs/CAPTURE.md and README.md tell users which QEMU options and which vgt-capture flags to use; the
//! real-guest tests boot with run-guest.sh's options and start vgt-capture with
//! `vgt_e2e::guest::capture_args`. This test keeps the two the same.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;

use vgt_e2e::guest::capture_args;
use vgt_e2e::workspace_root;

/// QEMU options that attach vgt-capture, with paths, sizes and counts replaced by placeholders.
fn device_options(text: &str) -> BTreeSet<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\\').to_string())
        .collect();
    let mut out = BTreeSet::new();
    for pair in words.windows(2) {
        if ["-object", "-machine", "-chardev", "-device"].contains(&pair[0].as_str()) {
            let normalized: Vec<String> = pair[1]
                .split(',')
                .map(|kv| match kv.split_once('=') {
                    Some((k @ ("path" | "size" | "max_outputs"), _)) => format!("{k}=*"),
                    _ => kv.to_string(),
                })
                .collect();
            out.insert(format!("{} {}", pair[0], normalized.join(",")));
        }
    }
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap()
}

#[test]
fn capture_doc_qemu_options_are_the_ones_run_guest_boots_with() {
    let script = read("samples/guest/run-guest.sh");
    let used = device_options(&script);
    for file in ["docs/CAPTURE.md", "README.md"] {
        let documented = device_options(&read(file));
        assert_eq!(documented.len(), 4, "{file}: {documented:?}");
        assert_eq!(documented, used, "{file} vs samples/guest/run-guest.sh");
    }
}

#[test]
fn capture_doc_vgt_capture_flags_are_the_ones_the_tests_use() {
    for file in ["docs/CAPTURE.md", "README.md"] {
        let doc = read(file);
        let line = doc
            .lines()
            .find(|l| l.contains("vgt-capture --socket"))
            .unwrap_or_else(|| panic!("a vgt-capture command line in {file}"));
        let documented: Vec<&str> = line
            .split_whitespace()
            .filter(|w| w.starts_with('-'))
            .collect();
        check_flags(file, &documented);
    }
}

fn check_flags(file: &str, documented: &[&str]) {
    let args = capture_args(Path::new("S"), Path::new("O"), 1);
    let used: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a.starts_with('-'))
        .collect();
    assert_eq!(documented, used, "{file}");
}
