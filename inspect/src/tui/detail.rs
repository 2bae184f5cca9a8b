//! The detail pane's content for one record: decoded fields, raw bytes, the guest memory it
//! read (with a pixel preview), its response, and any check finding. Built by `App::prepare`,
//! only read by drawing.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use serde_json::Value;
use vgt_format::CaptureReader;
use vgt_format::record::{Record, RecordBody, RecordId};
use vgt_format::summary::NO_RECORD;
use vgt_format::wire::{Command, Format, Request};

use super::index::Indexed;
use super::preview::half_blocks;
use crate::describe::{describe, format_ts, to_json};

/// Raw bytes shown in hex.
const HEX_BYTES: usize = 256;
/// Records scanned after a command for its memory reads and response, without an index.
const SCAN_AHEAD: u64 = 256;
/// Decoded field lines shown at most.
const MAX_FIELDS: usize = 80;
/// Preview size in cells.
const PREVIEW: (u16, u16) = (48, 12);

/// The detail of one record.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The record.
    pub id: RecordId,
    /// Command <-> response link, when known.
    pub link: Option<RecordId>,
    /// The lines to show.
    pub lines: Vec<Line<'static>>,
}

fn heading(s: &str) -> Line<'static> {
    Line::from(Span::styled(
        s.to_string(),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// Hex dump lines, 16 bytes each, with offsets.
pub fn hex_lines(b: &[u8], max: usize) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = b
        .chunks(16)
        .take(max.div_ceil(16))
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|x| format!("{x:02x}")).collect();
            Line::from(format!("{:06x}  {}", i * 16, hex.join(" ")))
        })
        .collect();
    if b.len() > max {
        out.push(Line::from(format!("… {} more bytes", b.len() - max)));
    }
    out
}

/// Flattens a JSON value into `path: value` lines.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "hex" || k == "text" {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if a.len() > 8 && a.iter().all(Value::is_number) => {
            out.push(format!("{prefix}: [{} numbers]", a.len()));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => out.push(format!("{prefix}: {other}")),
    }
}

/// Builds the detail of record `id`.
pub fn build_detail(reader: &CaptureReader, id: RecordId, index: Option<&Indexed>) -> Detail {
    let record = match reader.record(id) {
        Ok(r) => r,
        Err(e) => {
            return Detail {
                id,
                link: None,
                lines: vec![Line::from(format!("record #{id} cannot be read: {e}"))],
            };
        }
    };
    let mut lines = vec![heading(&format!(
        "#{id} {} at {} s",
        record.body.kind().name(),
        format_ts(record.ts_ns)
    ))];
    lines.push(Line::from(describe(&record, reader)));
    if let Some(ix) = index {
        for f in ix.findings.iter().filter(|f| f.records.contains(&id)) {
            lines.push(Line::from(Span::styled(
                format!(
                    "{} [{}] {}",
                    f.severity.name(),
                    f.check.name(),
                    crate::describe::printable(&f.message)
                ),
                Style::default().fg(Color::Yellow),
            )));
        }
    }
    // Every decoded field.
    lines.push(heading("fields"));
    let mut fields = Vec::new();
    flatten("", &to_json(id, &record, reader), &mut fields);
    let n = fields.len();
    lines.extend(
        fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|f| Line::from(format!("  {f}"))),
    );
    if n > MAX_FIELDS {
        lines.push(Line::from(format!("  … {} more fields", n - MAX_FIELDS)));
    }
    // Raw bytes.
    if let Some(p) = record.body.payloads().first()
        && let Ok(b) = reader.read_payload(p)
    {
        lines.push(heading(&format!("raw bytes ({})", b.len())));
        lines.extend(hex_lines(&b, HEX_BYTES));
    }
    let mut link = None;
    match &record.body {
        RecordBody::Command(c) => {
            let request = reader
                .read_payload(&c.request)
                .ok()
                .and_then(|b| Request::decode(&b).ok());
            let response = related(reader, id, index, &mut lines, request.as_ref());
            link = response;
        }
        RecordBody::Response(r) => {
            link = Some(r.command);
            if let Ok(cmd) = reader.record(r.command) {
                lines.push(heading(&format!("command #{}", r.command)));
                lines.push(Line::from(describe(&cmd, reader)));
            }
        }
        RecordBody::Frame(f) => {
            link = (f.command != NO_RECORD).then_some(f.command);
            if let Ok(px) = reader.read_payload(&f.pixels) {
                lines.push(heading(&format!("frame {}x{}", f.width, f.height)));
                lines.extend(half_blocks(
                    &px,
                    (f.width, f.height, f.stride),
                    Format(f.format),
                    PREVIEW,
                ));
            }
        }
        RecordBody::MemoryRead(m) => {
            link = Some(m.command);
            if let Ok(px) = reader.read_payload(&m.data)
                && let Some(lines_px) = memory_preview(reader, m.command, &px, index)
            {
                lines.push(heading("as pixels"));
                lines.extend(lines_px);
            }
        }
        _ => {}
    }
    Detail { id, link, lines }
}

/// Appends the memory reads and the response of command `id`; returns the response record.
fn related(
    reader: &CaptureReader,
    id: RecordId,
    index: Option<&Indexed>,
    lines: &mut Vec<Line<'static>>,
    request: Option<&Request>,
) -> Option<RecordId> {
    let known_response = index
        .and_then(|ix| ix.table.get(id as usize))
        .map(|s| s.link)
        .filter(|l| *l != NO_RECORD);
    let end = known_response.map_or(id + 1 + SCAN_AHEAD, |r| r + 1 + SCAN_AHEAD);
    let mut response = None;
    let mut previewed = false;
    for (rid, r) in reader.iter_range(id + 1..end).flatten() {
        match &r.body {
            RecordBody::MemoryRead(m) if m.command == id => {
                lines.push(heading(&format!(
                    "memory read #{rid}: {} bytes at {:#x}",
                    m.data.len(),
                    m.addr
                )));
                if let Ok(b) = reader.read_payload(&m.data) {
                    lines.extend(hex_lines(&b, 64));
                    if !previewed && let Some(px) = memory_preview(reader, id, &b, index) {
                        lines.push(heading("as pixels"));
                        lines.extend(px);
                        previewed = true;
                    }
                }
            }
            RecordBody::Response(resp) if resp.command == id => {
                response = Some(rid);
                response_lines(rid, &r, reader, lines);
            }
            // Memory reads may be recorded after the response; the next command ends the search.
            RecordBody::Command(_) if response.is_some() => break,
            _ => {}
        }
    }
    if response.is_none() && request.is_some_and(|r| r.command_type().is_cursor()) {
        lines.push(Line::from("(cursor commands get no response)"));
    }
    response
}

fn response_lines(
    rid: RecordId,
    r: &Record,
    reader: &CaptureReader,
    lines: &mut Vec<Line<'static>>,
) {
    lines.push(heading(&format!("response #{rid}")));
    let text = describe(r, reader);
    let style = if text.contains("ERR_") {
        Style::default().fg(Color::Red)
    } else {
        Style::default()
    };
    lines.push(Line::from(Span::styled(text, style)));
}

/// Pixels of a memory read made for a 2D transfer: rows of the resource's width, in its format
/// (from the state index when ready; B8G8R8X8 at the transfer's width otherwise).
fn memory_preview(
    reader: &CaptureReader,
    command: RecordId,
    bytes: &[u8],
    index: Option<&Indexed>,
) -> Option<Vec<Line<'static>>> {
    let cmd = reader.record(command).ok()?;
    let RecordBody::Command(c) = &cmd.body else {
        return None;
    };
    let req = Request::decode(&reader.read_payload(&c.request).ok()?).ok()?;
    let Command::TransferToHost2d(t) = req.command else {
        return None;
    };
    let (width, format) = index
        .and_then(|ix| ix.states.state_at(reader, command))
        .and_then(|s| {
            s.resources
                .get(&t.resource_id)
                .and_then(|r| Some((r.width, r.format?)))
        })
        .unwrap_or((t.r.width, Format::B8G8R8X8_UNORM));
    let stride = width.checked_mul(4)?;
    if stride == 0 {
        return None;
    }
    let rows = u32::try_from(bytes.len() as u64 / u64::from(stride)).ok()?;
    let lines = half_blocks(bytes, (width, rows, stride), format, PREVIEW);
    (!lines.is_empty()).then_some(lines)
}
