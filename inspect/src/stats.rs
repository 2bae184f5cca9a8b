//! `vgt-inspect stats`: command histogram, latency percentiles per command type, bytes moved and
//! frames per second over time.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;
use vgt_format::CaptureReader;
use vgt_format::record::{RecordBody, RecordId};
use vgt_format::wire::{CommandType, CtrlHeader};

use crate::cli::Outcome;
use crate::progress;

/// Latency distribution of one command type (response time minus submission time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Commands answered.
    pub count: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 90th percentile, nanoseconds.
    pub p90_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// Slowest, nanoseconds.
    pub max_ns: u64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (sorted in place).
    pub fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let at = |p: u64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let n = samples.len() as u64;
            let rank = (p * n).div_ceil(100).clamp(1, n);
            samples[(rank - 1) as usize]
        };
        Latency {
            count: samples.len() as u64,
            p50_ns: at(50),
            p90_ns: at(90),
            p99_ns: at(99),
            max_ns: samples.last().copied().unwrap_or(0),
        }
    }
}

/// Bytes moved between guest and device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Request bytes (headers, structs, entries, command streams).
    pub requests: u64,
    /// Response bytes.
    pub responses: u64,
    /// Guest memory the device read (transfer sources, cursor images …).
    pub memory_reads: u64,
    /// Guest memory read per resource.
    pub memory_reads_per_resource: BTreeMap<u32, u64>,
    /// Frame pixels recorded.
    pub frames: u64,
}

/// Everything `stats` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Records read.
    pub records: u64,
    /// Records that could not be read.
    pub unreadable_records: u64,
    /// Time of the last record, nanoseconds.
    pub duration_ns: u64,
    /// Commands per type name.
    pub commands: BTreeMap<String, u64>,
    /// Latency per command type name.
    pub latency: BTreeMap<String, Latency>,
    /// Bytes moved.
    pub bytes: Bytes,
    /// Frames recorded.
    pub frames: u64,
    /// Frames in each whole second of the capture (index = second).
    pub frames_per_second: Vec<u64>,
}

/// The name a command type is counted under.
pub fn command_name(t: CommandType) -> String {
    t.name()
        .map_or_else(|| format!("UNKNOWN({:#x})", t.0), str::to_string)
}

/// Reads every record and tallies the statistics.
pub fn gather(reader: &CaptureReader) -> Stats {
    let mut s = Stats::default();
    let mut submitted: HashMap<RecordId, (String, u64)> = HashMap::new();
    let mut samples: HashMap<String, Vec<u64>> = HashMap::new();
    let bar = progress::records_bar(reader.len(), "reading");
    for (n, item) in reader.iter().enumerate() {
        if n % 4096 == 0 {
            bar.set_position(n as u64);
        }
        let Ok((id, record)) = item else {
            s.unreadable_records += 1;
            continue;
        };
        s.records += 1;
        s.duration_ns = s.duration_ns.max(record.ts_ns);
        match &record.body {
            RecordBody::Command(c) => {
                // Byte counts saturate: payload lengths are what records claim.
                s.bytes.requests = s.bytes.requests.saturating_add(c.request.len());
                let name = match reader.read_payload(&c.request) {
                    Ok(b) => match CtrlHeader::decode(&b) {
                        Ok(h) => command_name(CommandType(h.type_)),
                        Err(_) => "<undecodable>".to_string(),
                    },
                    Err(_) => "<unreadable>".to_string(),
                };
                *s.commands.entry(name.clone()).or_default() += 1;
                if c.writable_len > 0 {
                    submitted.insert(id, (name, record.ts_ns));
                }
            }
            RecordBody::Response(r) => {
                s.bytes.responses = s.bytes.responses.saturating_add(r.bytes.len());
                if let Some((name, ts)) = submitted.remove(&r.command) {
                    samples
                        .entry(name)
                        .or_default()
                        .push(record.ts_ns.saturating_sub(ts));
                }
            }
            RecordBody::MemoryRead(m) => {
                s.bytes.memory_reads = s.bytes.memory_reads.saturating_add(m.data.len());
                let per = s
                    .bytes
                    .memory_reads_per_resource
                    .entry(m.resource_id)
                    .or_default();
                *per = per.saturating_add(m.data.len());
            }
            RecordBody::Frame(f) => {
                s.frames += 1;
                s.bytes.frames = s.bytes.frames.saturating_add(f.pixels.len());
                let sec = (record.ts_ns / 1_000_000_000) as usize;
                // A damaged timestamp must not allocate a huge table.
                if sec < 10_000_000 {
                    if s.frames_per_second.len() <= sec {
                        s.frames_per_second.resize(sec + 1, 0);
                    }
                    s.frames_per_second[sec] += 1;
                }
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    for (name, mut v) in samples {
        s.latency.insert(name, Latency::of(&mut v));
    }
    s
}

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000, ns % 1_000)
}

/// Runs `stats`.
pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let s = gather(&reader);
    let damaged = !reader.health().corrupt.is_empty() || s.unreadable_records > 0;
    if json {
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
        return Ok(Outcome {
            damaged,
            ..Outcome::default()
        });
    }
    writeln!(
        out,
        "records: {}  duration: {}.{:09} s  frames: {}",
        s.records,
        s.duration_ns / 1_000_000_000,
        s.duration_ns % 1_000_000_000,
        s.frames
    )?;
    writeln!(
        out,
        "\ncommands and latency (us, response time - submission time):"
    )?;
    writeln!(
        out,
        "  {:<24} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "type", "count", "p50", "p90", "p99", "max"
    )?;
    for (name, count) in &s.commands {
        match s.latency.get(name) {
            Some(l) => writeln!(
                out,
                "  {name:<24} {count:>9} {:>10} {:>10} {:>10} {:>10}",
                us(l.p50_ns),
                us(l.p90_ns),
                us(l.p99_ns),
                us(l.max_ns)
            )?,
            None => writeln!(out, "  {name:<24} {count:>9} {:>10}", "-")?,
        }
    }
    writeln!(out, "\nbytes:")?;
    writeln!(out, "  requests      {:>14}", s.bytes.requests)?;
    writeln!(out, "  responses     {:>14}", s.bytes.responses)?;
    writeln!(out, "  memory reads  {:>14}", s.bytes.memory_reads)?;
    for (res, n) in &s.bytes.memory_reads_per_resource {
        writeln!(out, "    resource {res:<6} {n:>12}")?;
    }
    writeln!(out, "  frame pixels  {:>14}", s.bytes.frames)?;
    writeln!(out, "\nframes per second:")?;
    for (sec, n) in s.frames_per_second.iter().enumerate() {
        writeln!(out, "  {sec:>6}s {n:>6}")?;
    }
    Ok(Outcome {
        damaged,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut v);
        assert_eq!(
            (l.count, l.p50_ns, l.p90_ns, l.p99_ns, l.max_ns),
            (100, 50, 90, 99, 100)
        );
        let l = Latency::of(&mut [7]);
        assert_eq!((l.p50_ns, l.p99_ns, l.max_ns), (7, 7, 7));
        assert_eq!(Latency::of(&mut []), Latency::default());
    }
}
