//! Where a capture's bytes go, by record kind: payload bytes each kind references, the distinct
//! blob content each kind brings in first (before and after compression), and blob content
//! referenced by more than one kind (stored once, thanks to content dedup).
//!
//! `cargo run -p vgt-capture --example bytes_by_kind -- samples/modes.vgt`
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result, bail};
use vgt_format::CaptureReader;
use vgt_format::record::{Payload, RecordKind};

/// Per-kind totals.
#[derive(Default)]
struct Totals {
    records: u64,
    referenced: u64,
    inline: u64,
    first_blobs: u64,
    first_raw: u64,
    first_file: u64,
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: bytes_by_kind FILE.vgt")?;
    let file = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let reader = CaptureReader::open(&path)?;
    let mut kinds: BTreeMap<&'static str, Totals> = BTreeMap::new();
    // Blob offset -> kinds that reference it.
    let mut users: HashMap<u64, HashSet<&'static str>> = HashMap::new();
    let mut blob_len: HashMap<u64, u64> = HashMap::new();
    for item in reader.iter() {
        let (_, record) = item?;
        let kind: RecordKind = record.body.kind();
        let name = kind.name();
        let t = kinds.entry(name).or_default();
        t.records += 1;
        for p in record.body.payloads() {
            match p {
                Payload::Inline(b) => {
                    t.referenced += b.len() as u64;
                    t.inline += b.len() as u64;
                }
                Payload::Blob(r) => {
                    t.referenced += r.len;
                    if blob_len.insert(r.offset, r.len).is_none() {
                        // Chunk header: sync u32, kind u16, flags u16, body length u32, crc u32.
                        let o = usize::try_from(r.offset)?;
                        let Some(h) = file.get(o..o + 16) else {
                            bail!("blob at {} is past the end of the file", r.offset);
                        };
                        let body = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
                        t.first_blobs += 1;
                        t.first_raw += r.len;
                        t.first_file += 16 + u64::from(body);
                    }
                    users.entry(r.offset).or_default().insert(name);
                }
            }
        }
    }
    println!("{path}: {} bytes", file.len());
    println!(
        "{:<12} {:>7} {:>14} {:>10} {:>11} {:>14} {:>12}",
        "kind", "records", "referenced", "inline", "new blobs", "new raw", "new in file"
    );
    for (name, t) in &kinds {
        println!(
            "{name:<12} {:>7} {:>14} {:>10} {:>11} {:>14} {:>12}",
            t.records, t.referenced, t.inline, t.first_blobs, t.first_raw, t.first_file
        );
    }
    let mut shared: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (offset, who) in &users {
        if who.len() > 1 {
            let mut names: Vec<&str> = who.iter().copied().collect();
            names.sort_unstable();
            let e = shared.entry(names.join("+")).or_default();
            e.0 += 1;
            e.1 += blob_len.get(offset).copied().unwrap_or(0);
        }
    }
    println!("blob content referenced by several kinds (stored once):");
    for (names, (n, bytes)) in &shared {
        println!("  {names:<30} {n:>5} blobs {bytes:>12} raw bytes");
    }
    Ok(())
}
