//! `vgt-inspect dump`: one line per record, decoded, or JSON Lines.

use std::borrow::Cow;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context as _, Result};
use vgt_format::CaptureReader;
use vgt_format::record::{Payload, RecordKind};
use vgt_format::state::PayloadSource;

use crate::cli::Outcome;
use crate::describe::{describe, format_ts, to_json};

/// Resolves payloads through a capture reader (a blob that cannot be read resolves to nothing,
/// and the description says so).
pub struct ReaderPayloads<'a>(pub &'a CaptureReader);

impl PayloadSource for ReaderPayloads<'_> {
    fn payload_bytes<'a>(&'a self, payload: &'a Payload) -> Option<Cow<'a, [u8]>> {
        self.0.read_payload(payload).ok()
    }
}

/// Prints a line for a truncated capture (warning) and one per damaged place (error); true when
/// anything is damaged.
pub fn report_health(path: &Path, reader: &CaptureReader) -> bool {
    let health = reader.health();
    if let Some(at) = health.truncated_at {
        eprintln!(
            "vgt-inspect: warning: {} is truncated at byte {at}: {} complete records recovered",
            path.display(),
            reader.len()
        );
    }
    for c in &health.corrupt {
        eprintln!(
            "vgt-inspect: error: {} is damaged at byte {} ({:?}): {}",
            path.display(),
            c.offset,
            c.kind,
            c.detail
        );
    }
    !health.corrupt.is_empty()
}

/// Runs `dump`.
pub fn run(
    path: &Path,
    range: Option<Range<u64>>,
    kinds: &[RecordKind],
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut damaged = report_health(path, &reader);
    let len = reader.len();
    let range = range.unwrap_or(0..len);
    let range = range.start.min(len)..range.end.min(len);
    let src = ReaderPayloads(&reader);
    for item in reader.iter_range(range) {
        let (id, record) = match item {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vgt-inspect: error: {e}");
                damaged = true;
                continue;
            }
        };
        let kind = record.body.kind();
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        if json {
            writeln!(out, "{}", to_json(id, &record, &src))?;
        } else {
            writeln!(
                out,
                "#{id:<7} {:>12} {:<12} {}",
                format_ts(record.ts_ns),
                kind.name(),
                describe(&record, &src)
            )?;
        }
    }
    Ok(Outcome {
        damaged,
        ..Outcome::default()
    })
}
