//! `vgt-inspect info`: what a capture holds and whether it is whole.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;
use vgt_format::CaptureReader;
use vgt_format::record::{
    ContentHash, Direction, LifecycleKind, Payload, RecordBody, RecordId, RecordKind, SessionStart,
};
use vgt_format::wire::{
    CommandType, Request, Response, ResponseType, VhostUserPayload, VhostUserRequest,
    decode_vhost_user_payload,
};
use vgt_format::words::LastWords;

use crate::cli::Outcome;
use crate::describe::{format_ts, printable};
use crate::progress;

/// Everything `info` reports, gathered in one pass over the records.
#[derive(Debug, Default)]
pub struct Summary {
    /// The session start record, when the capture has one.
    pub session: Option<SessionStart>,
    /// The feature bits the driver acked: the last SET_FEATURES the front-end sent (the session
    /// start record is written before negotiation, so its `features_acked` is often 0).
    pub features_acked: Option<u64>,
    /// Records read.
    pub records: u64,
    /// Records that could not be read (corrupt).
    pub unreadable_records: u64,
    /// Records per kind.
    pub per_kind: BTreeMap<RecordKind, u64>,
    /// Commands per command type name.
    pub per_command: BTreeMap<String, u64>,
    /// Responses per response type name.
    pub per_response: BTreeMap<String, u64>,
    /// Error responses.
    pub error_responses: u64,
    /// Frames per scanout.
    pub frames_per_scanout: BTreeMap<u32, u64>,
    /// Timestamp of the last record.
    pub last_ts_ns: u64,
    /// Bytes carried by payloads, each reference counted in full (what was on the wire).
    pub payload_bytes: u64,
    /// Payload references to blobs.
    pub blob_refs: u64,
    /// Distinct blobs referenced.
    pub distinct_blobs: u64,
    /// Bytes of distinct blob content (uncompressed).
    pub distinct_blob_bytes: u64,
    /// The End record's message: how the capture was finished (None: it was not).
    pub end: Option<String>,
    /// The first Crash record (id, message): in proxy mode the summary naming the commands in
    /// flight, in built-in mode the panic.
    pub crash: Option<(RecordId, String)>,
    /// Crash records in all (the proxy adds one per command in flight).
    pub crash_records: u64,
    /// Lines the backend wrote (proxy mode, `--backend-cmd`): stdout, stderr.
    pub backend_lines: [u64; 2],
    /// Up to [`LAST_WORDS`] of the backend's stderr lines that are not blank (id, text), as
    /// [`vgt_format::words::LastWords`] picks them: from the first telling line (a panic, an
    /// assertion, an error) on, else the last. Taken from what it wrote since its last answer on
    /// the control queue (the last such Response record before the lines), or from all its
    /// lines when it said nothing after that.
    pub backend_last_stderr: Vec<(RecordId, String)>,
    /// `backend_last_stderr` is from the lines since the backend's last control-queue answer.
    pub backend_last_stderr_since_answer: bool,
    /// The number of the first line shown, counting from 1 the lines it was picked from.
    pub backend_last_stderr_first: u64,
    /// How many lines (not blank) it was picked from.
    pub backend_last_stderr_of: u64,
}

/// How many of a backend's stderr lines `info` shows.
pub const LAST_WORDS: usize = 5;

impl Summary {
    /// Reads every record of `reader` and tallies it.
    pub fn gather(reader: &CaptureReader) -> Summary {
        let mut s = Summary::default();
        let mut seen: HashSet<ContentHash> = HashSet::new();
        // The backend's stderr since its last answer, and all of it.
        let mut since_answer = LastWords::new(LAST_WORDS);
        let mut all = LastWords::new(LAST_WORDS);
        let mut answered = false;
        let bar = progress::records_bar(reader.len(), "reading");
        for (n, item) in reader.iter().enumerate() {
            if n % 4096 == 0 {
                bar.set_position(n as u64);
            }
            let (id, record) = match item {
                Ok(r) => r,
                Err(_) => {
                    s.unreadable_records += 1;
                    continue;
                }
            };
            s.records += 1;
            s.last_ts_ns = s.last_ts_ns.max(record.ts_ns);
            *s.per_kind.entry(record.body.kind()).or_default() += 1;
            for p in record.body.payloads() {
                // Saturating: payload lengths are what records claim (damage can make them
                // anything).
                s.payload_bytes = s.payload_bytes.saturating_add(p.len());
                if let Payload::Blob(b) = p {
                    s.blob_refs += 1;
                    if seen.insert(b.hash) {
                        s.distinct_blobs += 1;
                        s.distinct_blob_bytes = s.distinct_blob_bytes.saturating_add(b.len);
                    }
                }
            }
            match &record.body {
                RecordBody::SessionStart(st) if s.session.is_none() => {
                    s.session = Some(st.clone());
                }
                RecordBody::VhostUser(m)
                    if m.direction == Direction::FrontToBack
                        && m.request == VhostUserRequest::SET_FEATURES.0 =>
                {
                    if let Ok(b) = reader.read_payload(&m.payload)
                        && let Ok(VhostUserPayload::Features(f)) =
                            decode_vhost_user_payload(VhostUserRequest::SET_FEATURES, false, &b)
                    {
                        s.features_acked = Some(f);
                    }
                }
                RecordBody::Command(c) => {
                    let name = match reader.read_payload(&c.request) {
                        Ok(b) => match Request::decode(&b) {
                            Ok(r) => type_name(r.command_type()),
                            Err(_) => "<undecodable>".to_string(),
                        },
                        Err(_) => "<unreadable>".to_string(),
                    };
                    *s.per_command.entry(name).or_default() += 1;
                }
                RecordBody::Response(r) => {
                    // Control queue only: a cursor queue answering on while the control queue
                    // hangs does not make the backend's panic old news.
                    if r.queue == 0 {
                        since_answer.forget();
                        answered = true;
                    }
                    let name = match reader.read_payload(&r.bytes) {
                        Ok(b) if b.is_empty() => "<empty>".to_string(),
                        Ok(b) => match Response::decode(&b) {
                            Ok(resp) => {
                                let t = resp.response_type();
                                if t.is_error() {
                                    s.error_responses += 1;
                                }
                                response_name(t)
                            }
                            Err(_) => "<undecodable>".to_string(),
                        },
                        Err(_) => "<unreadable>".to_string(),
                    };
                    *s.per_response.entry(name).or_default() += 1;
                }
                RecordBody::Frame(f) => {
                    *s.frames_per_scanout.entry(f.scanout_id).or_default() += 1;
                }
                RecordBody::Lifecycle(l) => match l.kind {
                    LifecycleKind::End => s.end = Some(l.message.clone()),
                    LifecycleKind::Crash => {
                        s.crash_records += 1;
                        if s.crash.is_none() {
                            s.crash = Some((id, l.message.clone()));
                        }
                    }
                    LifecycleKind::BackendStdout => s.backend_lines[0] += 1,
                    LifecycleKind::BackendStderr => {
                        s.backend_lines[1] += 1;
                        // Blank lines are counted, not shown (GLib starts its warnings with one).
                        since_answer.push(&l.message, (id, l.message.clone()));
                        all.push(&l.message, (id, l.message.clone()));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        bar.finish_and_clear();
        let (words, since) = if since_answer.count() > 0 {
            (since_answer, answered)
        } else {
            (all, false)
        };
        (s.backend_last_stderr_first, s.backend_last_stderr) = words.selection();
        s.backend_last_stderr_of = words.count();
        s.backend_last_stderr_since_answer = since;
        s
    }

    /// Total frames.
    pub fn frames(&self) -> u64 {
        self.frames_per_scanout.values().sum()
    }
}

fn type_name(t: CommandType) -> String {
    t.name()
        .map_or_else(|| format!("UNKNOWN({:#06x})", t.0), str::to_string)
}

fn response_name(t: ResponseType) -> String {
    t.name()
        .map_or_else(|| format!("UNKNOWN({:#06x})", t.0), str::to_string)
}

/// "; on stderr since its last control-queue answer (7 lines), lines 3-7:" and the like: what the lines under
/// `backend:` are (nothing when there are none).
fn stderr_heading(s: &Summary) -> String {
    let shown = s.backend_last_stderr.len() as u64;
    if shown == 0 {
        return String::new();
    }
    let since = if s.backend_last_stderr_since_answer {
        " since its last control-queue answer"
    } else {
        ""
    };
    let first = s.backend_last_stderr_first;
    let which = match (shown == s.backend_last_stderr_of, shown) {
        (true, _) => String::new(),
        (false, 1) => format!(" ({} lines), line {first}", s.backend_last_stderr_of),
        (false, _) => format!(
            " ({} lines), lines {first}-{}",
            s.backend_last_stderr_of,
            first + shown - 1
        ),
    };
    format!("; on stderr{since}{which}:")
}

/// Formats Unix nanoseconds as an ISO-8601 UTC timestamp.
pub fn format_unix_ns(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for any u64 seconds.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs `info`.
pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let summary = Summary::gather(&reader);
    let verify = reader
        .verify()
        .with_context(|| format!("cannot verify {}", path.display()))?;
    let health = reader.health();
    let header = reader.header();
    let file_len = health.file_len;
    let damaged = !verify.corrupt.is_empty() || summary.unreadable_records > 0;

    if json {
        let v = json!({
            "file": path.display().to_string(),
            "file_bytes": file_len,
            "version": format!("{}.{}", header.version_major, header.version_minor),
            "created_unix_ns": header.created_unix_ns,
            "indexed": health.indexed,
            "session": summary.session,
            "features_acked": summary.features_acked,
            "duration_ns": summary.last_ts_ns,
            "records": summary.records,
            "unreadable_records": summary.unreadable_records,
            "per_kind": summary.per_kind.iter().map(|(k, n)| (k.name().to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "per_command": summary.per_command,
            "per_response": summary.per_response,
            "error_responses": summary.error_responses,
            "frames": summary.frames(),
            "frames_per_scanout": summary.frames_per_scanout,
            "payload_bytes": summary.payload_bytes,
            "blob_refs": summary.blob_refs,
            "distinct_blobs": summary.distinct_blobs,
            "distinct_blob_bytes": summary.distinct_blob_bytes,
            "storage_ratio": ratio(summary.payload_bytes, file_len),
            "truncated_at": verify.truncated_at.or(health.truncated_at),
            "zero_tail_bytes": health.zero_tail,
            "corrupt": verify.corrupt,
            "end": summary.end,
            "crash": summary.crash.as_ref().map(|(id, m)| json!({ "record": id, "message": m })),
            "crash_records": summary.crash_records,
            "backend_stdout_lines": summary.backend_lines[0],
            "backend_stderr_lines": summary.backend_lines[1],
            "backend_last_stderr": summary.backend_last_stderr.iter().map(|(id, m)| json!({ "record": id, "line": m })).collect::<Vec<_>>(),
            "backend_last_stderr_since_answer": summary.backend_last_stderr_since_answer,
            "backend_last_stderr_first": summary.backend_last_stderr_first,
            "backend_last_stderr_of": summary.backend_last_stderr_of,
        });
        writeln!(out, "{v}")?;
        return Ok(Outcome {
            damaged,
            ..Outcome::default()
        });
    }

    writeln!(
        out,
        "file:        {} ({})",
        path.display(),
        human_bytes(file_len)
    )?;
    writeln!(
        out,
        "format:      vgt capture {}.{}, {}",
        header.version_major,
        header.version_minor,
        if health.indexed {
            "indexed".to_owned()
        } else if health.zero_tail > 0 {
            format!(
                "no index (file was not finished; records found by scanning; {} of \
                 reserved zero bytes after them ignored)",
                human_bytes(health.zero_tail)
            )
        } else {
            "no index (file was not finished; records found by scanning)".to_owned()
        }
    )?;
    writeln!(
        out,
        "created:     {}",
        format_unix_ns(header.created_unix_ns)
    )?;
    if let Some(st) = &summary.session {
        writeln!(
            out,
            "recorded by: {} {} ({}), renderer {}",
            printable(&st.tool),
            printable(&st.tool_version),
            match st.mode {
                vgt_format::record::CaptureMode::BuiltIn => "built-in",
                vgt_format::record::CaptureMode::Proxy => "proxy",
                vgt_format::record::CaptureMode::Synthetic => "synthetic",
                vgt_format::record::CaptureMode::Other => "other mode",
            },
            printable(&st.renderer)
        )?;
        let acked = summary.features_acked.unwrap_or(st.features_acked);
        writeln!(
            out,
            "features:    offered {:#x} acked {:#x} [{}]",
            st.features_offered,
            acked,
            vgt_format::wire::vhost_user::feature_names(acked).join(" ")
        )?;
    }
    writeln!(out, "duration:    {} s", format_ts(summary.last_ts_ns))?;
    match &summary.end {
        Some(m) => writeln!(out, "ended:       {}", printable(m))?,
        None => writeln!(
            out,
            "ended:       not finished (no End record: the capturing process died or is still writing)"
        )?,
    }
    if let Some((id, m)) = &summary.crash {
        writeln!(out, "crash:       #{id} {}", printable(m))?;
    }
    let [stdout_lines, stderr_lines] = summary.backend_lines;
    if stdout_lines + stderr_lines > 0 {
        writeln!(
            out,
            "backend:     {} output line(s) recorded ({stdout_lines} stdout, {stderr_lines} stderr){}",
            stdout_lines + stderr_lines,
            stderr_heading(&summary)
        )?;
        for (id, line) in &summary.backend_last_stderr {
            writeln!(out, "  #{id:<10} {}", printable(line))?;
        }
    }
    writeln!(out, "records:     {}", summary.records)?;
    for (kind, n) in &summary.per_kind {
        writeln!(out, "  {:<13}{n:>10}", kind.name())?;
    }
    if !summary.per_command.is_empty() {
        writeln!(out, "commands:")?;
        for (name, n) in &summary.per_command {
            writeln!(out, "  {name:<28}{n:>10}")?;
        }
    }
    if !summary.per_response.is_empty() {
        writeln!(out, "responses:   ({} errors)", summary.error_responses)?;
        for (name, n) in &summary.per_response {
            writeln!(out, "  {name:<28}{n:>10}")?;
        }
    }
    writeln!(
        out,
        "frames:      {}{}",
        summary.frames(),
        summary
            .frames_per_scanout
            .iter()
            .map(|(s, n)| format!(" scanout{s}={n}"))
            .collect::<String>()
    )?;
    writeln!(
        out,
        "payloads:    {} on the wire, {} distinct blob bytes in {} blobs ({} references), file {} ({:.1}x)",
        human_bytes(summary.payload_bytes),
        human_bytes(summary.distinct_blob_bytes),
        summary.distinct_blobs,
        summary.blob_refs,
        human_bytes(file_len),
        ratio(summary.payload_bytes, file_len)
    )?;
    let truncated_at = verify.truncated_at.or(health.truncated_at);
    if verify.corrupt.is_empty() && truncated_at.is_none() && summary.unreadable_records == 0 {
        writeln!(
            out,
            "health:      ok (every checksum and blob hash verified)"
        )?;
    } else {
        if let Some(at) = truncated_at {
            writeln!(
                out,
                "health:      truncated at byte {at}: {} complete records recovered",
                summary.records
            )?;
        }
        for c in &verify.corrupt {
            writeln!(
                out,
                "health:      damaged at byte {}: {:?}: {}",
                c.offset, c.kind, c.detail
            )?;
        }
    }
    Ok(Outcome {
        damaged,
        ..Outcome::default()
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ns_formats_as_utc() {
        assert_eq!(format_unix_ns(0), "1970-01-01T00:00:00Z");
        // 2026-11-25T14:12:32Z
        assert_eq!(
            format_unix_ns(1_795_615_952_000_000_000),
            "2026-11-25T14:12:32Z"
        );
        // Leap day.
        assert_eq!(
            format_unix_ns(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
