//! `vgt-inspect repack`: rewrite a capture record by record with new blob storage (for example
//! zstd before attaching it to a bug report). Records, their ids and timestamps, every payload's
//! bytes and content hash, and the sharing of blobs between records stay the same; only where and
//! how the blob bytes are stored changes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vgt_format::file::{CaptureReader, CaptureWriter, Compression, WriterOptions, WriterStats};
use vgt_format::record::{Payload, Record, RecordBody};

use crate::cli::Outcome;

/// What a repack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepackReport {
    /// Records copied.
    pub records: u64,
    /// Size of the input file in bytes.
    pub bytes_before: u64,
    /// Size of the output file in bytes.
    pub bytes_after: u64,
    /// The writer's counts for the output (blobs, dedup hits, stored bytes).
    pub stats: WriterStats,
    /// Where the input was cut, when it was (its complete records were repacked).
    pub input_truncated_at: Option<u64>,
}

/// Rewrites `input` into `output` with `compression`, printing before/after sizes to `out`.
pub fn run(
    input: &Path,
    output: &Path,
    compression: Compression,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let r = repack(input, output, compression)?;
    let change = if r.bytes_after <= r.bytes_before {
        format!(
            "{:.2}x smaller",
            r.bytes_before as f64 / r.bytes_after.max(1) as f64
        )
    } else {
        format!(
            "{:.2}x larger",
            r.bytes_after as f64 / r.bytes_before.max(1) as f64
        )
    };
    writeln!(
        out,
        "{}: {} records, {} bytes ({})",
        input.display(),
        r.records,
        r.bytes_before,
        human(r.bytes_before)
    )?;
    writeln!(
        out,
        "{}: {} bytes ({}), blobs {compression}; {change} ({} blobs, {} shared)",
        output.display(),
        r.bytes_after,
        human(r.bytes_after),
        r.stats.blobs,
        r.stats.dedup_hits
    )?;
    if let Some(at) = r.input_truncated_at {
        writeln!(
            out,
            "note: the input was cut at byte {at}; its {} complete records were repacked into a finished capture",
            r.records
        )?;
    }
    Ok(Outcome::default())
}

/// Rewrites `input` into `output` with `compression`. The output is written to a temporary file
/// next to it and renamed over `output` only when complete, so a failed repack leaves nothing
/// behind. Refuses an `output` that is `input`, and an input with damaged records (their
/// payloads could not be copied and their ids would be lost).
pub fn repack(input: &Path, output: &Path, compression: Compression) -> Result<RepackReport> {
    if same_file(input, output) {
        bail!(
            "refusing to overwrite the input {}: give another OUT",
            input.display()
        );
    }
    let reader =
        CaptureReader::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let health = reader.health().clone();
    if let Some(c) = health.corrupt.first() {
        bail!(
            "{} is damaged at byte {} ({:?}: {}); repack copies only intact captures",
            input.display(),
            c.offset,
            c.kind,
            c.detail
        );
    }
    let opts = WriterOptions {
        created_unix_ns: Some(reader.header().created_unix_ns),
        compression,
        ..WriterOptions::default()
    };
    let tmp = temp_path(output);
    let result = copy_records(&reader, &tmp, opts, input);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, output) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot create {}", output.display()));
    }
    Ok(RepackReport {
        records: stats.records,
        bytes_before: health.file_len,
        bytes_after: stats.file_bytes,
        stats,
        input_truncated_at: health.truncated_at,
    })
}

fn copy_records(
    reader: &CaptureReader,
    tmp: &Path,
    opts: WriterOptions,
    input: &Path,
) -> Result<WriterStats> {
    let inline_max = opts.inline_max;
    let mut w = CaptureWriter::create(tmp, opts)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let bar = crate::progress::bytes_bar(reader.health().file_len, "repacking");
    let mut buf = Vec::new();
    for id in 0..reader.len() {
        let at = reader.record_offset(id).unwrap_or(0);
        let mut record: Record = reader
            .record(id)
            .with_context(|| format!("cannot read record {id} of {}", input.display()))?;
        if let RecordBody::Unknown { kind, .. } = record.body {
            bail!(
                "record {id} of {} has kind {kind:#06x}, which this version does not know: \
                 repack cannot tell where its payloads are",
                input.display()
            );
        }
        for p in payloads_mut(&mut record.body) {
            *p = match &*p {
                Payload::Inline(b) if b.len() <= inline_max => w.store(b)?,
                // Longer than this writer would inline: the original writer inlined it, so do
                // the same (an inline payload is part of the record either way).
                Payload::Inline(b) => Payload::Inline(b.clone()),
                Payload::Blob(blob) => {
                    reader.read_payload_into(p, &mut buf).with_context(|| {
                        format!(
                            "cannot read the payload of record {id} (blob at byte {}) of {}",
                            blob.offset,
                            input.display()
                        )
                    })?;
                    w.store_blob(&buf)?
                }
            };
        }
        w.append(&record)
            .with_context(|| format!("cannot write record {id} to {}", tmp.display()))?;
        bar.set_position(at);
    }
    bar.finish_and_clear();
    w.finish()
        .with_context(|| format!("cannot finish {}", tmp.display()))
}

/// Every payload of `body`, mutable, in encoding order (as [`RecordBody::payloads`]).
fn payloads_mut(body: &mut RecordBody) -> Vec<&mut Payload> {
    match body {
        RecordBody::SessionStart(s) => vec![&mut s.device_config],
        RecordBody::VhostUser(m) => vec![&mut m.payload],
        RecordBody::Command(c) => vec![&mut c.request],
        RecordBody::MemoryRead(m) => vec![&mut m.data],
        RecordBody::Response(r) => vec![&mut r.bytes],
        RecordBody::GpuSocket(g) => std::iter::once(&mut g.payload)
            .chain(g.data.as_mut())
            .collect(),
        RecordBody::Frame(f) => vec![&mut f.pixels],
        RecordBody::Cursor(c) => c.image.iter_mut().collect(),
        RecordBody::Fence(_)
        | RecordBody::Lifecycle(_)
        | RecordBody::Marker(_)
        | RecordBody::Unknown { .. } => Vec::new(),
    }
}

/// True when `a` and `b` name the same file (same path, or the same inode through a link).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => ma.dev() == mb.dev() && ma.ino() == mb.ino(),
        _ => false,
    }
}

/// `.NAME.repack-PID` next to `output`.
fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    output.with_file_name(format!(".{name}.repack-{}", std::process::id()))
}

/// `1.23 MB` style size (decimal megabytes, as samples/README.md gives them).
fn human(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.2} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}
