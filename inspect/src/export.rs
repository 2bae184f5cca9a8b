//! `vgt-inspect export --chrome-trace`: commands and fences as Chrome trace event JSON
//! (loadable by ui.perfetto.dev and chrome://tracing); `--frames` is [`crate::frames`].
//!
//! Process 1 ("virtqueues") has one thread per virtqueue with a complete (`X`) event per command
//! from submission to response. Process 2 ("fence rings") has one thread per fence timeline
//! (global, or context + ring) with a complete event per fenced command from submission to the
//! fence's signal, and a flow (`s` on the queue track, `f` on the ring track) joining the two.
//! Timestamps are microseconds since the capture started.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use vgt_format::CaptureReader;
use vgt_format::record::{RecordBody, RecordId};
use vgt_format::wire::{CommandType, CtrlHeader, Request, Response};

use crate::cli::Outcome;
use crate::frames::{FrameExport, export_frames, summarize};
use crate::stats::command_name;

const PID_QUEUES: u32 = 1;
const PID_FENCES: u32 = 2;

/// A fence timeline, as a track key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ring {
    Global,
    Context { ctx: u32, ring: u8 },
}

impl Ring {
    fn of(h: &CtrlHeader) -> Ring {
        if h.has_ring_idx() {
            Ring::Context {
                ctx: h.ctx_id,
                ring: h.ring_idx,
            }
        } else {
            Ring::Global
        }
    }

    fn name(self) -> String {
        match self {
            Ring::Global => "fences: global".to_string(),
            Ring::Context { ctx, ring } => format!("fences: ctx {ctx} ring {ring}"),
        }
    }
}

struct Submitted {
    name: String,
    ts_ns: u64,
    queue: u16,
    fence: Option<(Ring, u64)>,
    resource: Option<u32>,
}

/// The thread id of a ring's track, assigned in order of first appearance.
fn ring_tid(rings: &mut BTreeMap<Ring, u32>, r: Ring) -> u32 {
    let n = rings.len() as u32;
    *rings.entry(r).or_insert(n)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

/// Writes trace events one by one, so that memory stays flat however long the capture.
struct Sink<'w> {
    w: &'w mut dyn Write,
    n: usize,
    error: Option<std::io::Error>,
}

impl Sink<'_> {
    fn push(&mut self, v: Value) {
        if self.error.is_some() {
            return;
        }
        let sep: &[u8] = if self.n == 0 { b"\n" } else { b",\n" };
        let r = self
            .w
            .write_all(sep)
            .and_then(|()| serde_json::to_writer(&mut *self.w, &v).map_err(std::io::Error::from));
        match r {
            Ok(()) => self.n += 1,
            Err(e) => self.error = Some(e),
        }
    }
}

/// Writes the trace, `{"traceEvents": [...], "displayTimeUnit": "ns", ...}`, to `w`; returns
/// the number of events.
pub fn write_chrome_trace(reader: &CaptureReader, w: &mut dyn Write) -> std::io::Result<usize> {
    w.write_all(b"{\"traceEvents\": [")?;
    let mut sink = Sink {
        w,
        n: 0,
        error: None,
    };
    let events = &mut sink;
    let mut submitted: HashMap<RecordId, Submitted> = HashMap::new();
    let mut pending: BTreeMap<Ring, Vec<RecordId>> = BTreeMap::new();
    let mut rings: BTreeMap<Ring, u32> = BTreeMap::new();
    let mut queues: BTreeMap<u16, ()> = BTreeMap::new();
    let mut last_ts = 0;
    // A fence signal completes every pending command on its timeline up to the fence id.
    let signal = |events: &mut Sink<'_>,
                  submitted: &mut HashMap<RecordId, Submitted>,
                  pending: &mut BTreeMap<Ring, Vec<RecordId>>,
                  tid: u32,
                  ring: Ring,
                  fence_id: u64,
                  ts_ns: u64,
                  at: RecordId| {
        let Some(list) = pending.get_mut(&ring) else {
            return;
        };
        let mut keep = Vec::new();
        for cmd in list.drain(..) {
            let Some(s) = submitted.get(&cmd) else {
                continue;
            };
            match s.fence {
                Some((_, f)) if f <= fence_id => {
                    events.push(json!({
                        "name": format!("fence {f}"), "cat": "fence", "ph": "X",
                        "pid": PID_FENCES, "tid": tid,
                        "ts": us(s.ts_ns), "dur": us(ts_ns.saturating_sub(s.ts_ns)),
                        "args": {"command": cmd, "type": s.name, "fence_id": f, "signalled_by": at},
                    }));
                    events.push(json!({
                        "name": "fence", "cat": "fence", "ph": "f", "bp": "e", "id": cmd,
                        "pid": PID_FENCES, "tid": tid, "ts": us(ts_ns),
                    }));
                    // The queue event may still wait for its response; keep the entry until then.
                    if let Some(s) = submitted.get_mut(&cmd) {
                        s.fence = None;
                    }
                }
                _ => keep.push(cmd),
            }
        }
        *list = keep;
    };
    for item in reader.iter() {
        let Ok((id, record)) = item else {
            continue;
        };
        let ts = record.ts_ns;
        last_ts = last_ts.max(ts);
        match &record.body {
            RecordBody::Command(c) => {
                queues.insert(c.queue, ());
                let request = reader
                    .read_payload(&c.request)
                    .ok()
                    .and_then(|b| Request::decode(&b).ok());
                let (name, fence, resource) = match &request {
                    Some(r) => (
                        command_name(r.command_type()),
                        r.header
                            .is_fenced()
                            .then(|| (Ring::of(&r.header), r.header.fence_id)),
                        r.command.resource_id(),
                    ),
                    None => (command_name(CommandType(0)), None, None),
                };
                if let Some((ring, _)) = fence {
                    ring_tid(&mut rings, ring);
                    pending.entry(ring).or_default().push(id);
                    events.push(json!({
                        "name": "fence", "cat": "fence", "ph": "s", "id": id,
                        "pid": PID_QUEUES, "tid": c.queue, "ts": us(ts),
                    }));
                }
                if c.writable_len == 0 {
                    // No response comes (cursor queue): an instant event.
                    events.push(json!({
                        "name": name, "cat": "command", "ph": "i", "s": "t",
                        "pid": PID_QUEUES, "tid": c.queue, "ts": us(ts),
                        "args": {"record": id, "resource": resource},
                    }));
                }
                submitted.insert(
                    id,
                    Submitted {
                        name,
                        ts_ns: ts,
                        queue: c.queue,
                        fence,
                        resource,
                    },
                );
            }
            RecordBody::Response(r) => {
                let response = reader
                    .read_payload(&r.bytes)
                    .ok()
                    .and_then(|b| Response::decode(&b).ok());
                if let Some(s) = submitted.get(&r.command) {
                    let code = response
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |x| x.response_type().to_string());
                    events.push(json!({
                        "name": s.name, "cat": "command", "ph": "X",
                        "pid": PID_QUEUES, "tid": s.queue,
                        "ts": us(s.ts_ns), "dur": us(ts.saturating_sub(s.ts_ns)),
                        "args": {"record": r.command, "response_record": id, "response": code, "resource": s.resource},
                    }));
                }
                if let Some(resp) = &response
                    && resp.header.is_fenced()
                {
                    let ring = Ring::of(&resp.header);
                    let tid = ring_tid(&mut rings, ring);
                    signal(
                        events,
                        &mut submitted,
                        &mut pending,
                        tid,
                        ring,
                        resp.header.fence_id,
                        ts,
                        id,
                    );
                }
                if submitted.get(&r.command).is_some_and(|s| s.fence.is_none()) {
                    submitted.remove(&r.command);
                }
            }
            RecordBody::Fence(f) => {
                let ring = if f.context_ring {
                    Ring::Context {
                        ctx: f.ctx_id,
                        ring: f.ring_idx,
                    }
                } else {
                    Ring::Global
                };
                let tid = ring_tid(&mut rings, ring);
                signal(
                    events,
                    &mut submitted,
                    &mut pending,
                    tid,
                    ring,
                    f.fence_id,
                    ts,
                    id,
                );
            }
            RecordBody::Frame(f) => {
                events.push(json!({
                    "name": format!("frame scanout {}", f.scanout_id), "cat": "frame", "ph": "i", "s": "p",
                    "pid": PID_QUEUES, "tid": 0, "ts": us(ts), "args": {"record": id, "resource": f.resource_id},
                }));
            }
            _ => {}
        }
    }
    // Fences that never signalled: show them running to the end of the capture.
    for (ring, list) in &pending {
        let tid = rings.get(ring).copied().unwrap_or(0);
        for cmd in list {
            if let Some(s) = submitted.get(cmd)
                && let Some((_, f)) = s.fence
            {
                events.push(json!({
                    "name": format!("fence {f} (never signalled)"), "cat": "fence", "ph": "X",
                    "pid": PID_FENCES, "tid": tid,
                    "ts": us(s.ts_ns), "dur": us(last_ts.saturating_sub(s.ts_ns)),
                    "args": {"command": cmd, "type": s.name, "fence_id": f},
                }));
            }
        }
    }
    let meta = events;
    meta.push(json!({"name": "process_name", "ph": "M", "pid": PID_QUEUES, "tid": 0, "args": {"name": "virtqueues"}}));
    meta.push(json!({"name": "process_name", "ph": "M", "pid": PID_FENCES, "tid": 0, "args": {"name": "fence rings"}}));
    for q in queues.keys() {
        let name = match q {
            0 => "controlq".to_string(),
            1 => "cursorq".to_string(),
            n => format!("queue {n}"),
        };
        meta.push(json!({"name": "thread_name", "ph": "M", "pid": PID_QUEUES, "tid": q, "args": {"name": name}}));
    }
    for (ring, tid) in &rings {
        meta.push(json!({"name": "thread_name", "ph": "M", "pid": PID_FENCES, "tid": tid, "args": {"name": ring.name()}}));
    }
    let n = sink.n;
    if let Some(e) = sink.error {
        return Err(e);
    }
    let tail = json!({"generator": concat!("vgt-inspect ", env!("CARGO_PKG_VERSION"))});
    write!(
        w,
        "\n], \"displayTimeUnit\": \"ns\", \"otherData\": {tail}}}\n"
    )?;
    Ok(n)
}

/// `vgt-inspect export`: the Chrome trace to `chrome_trace_out` and/or the frames as `frames`
/// says.
pub fn run(
    path: &Path,
    chrome_trace_out: Option<&Path>,
    frames: Option<&FrameExport>,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut damaged = crate::dump::report_health(path, &reader);
    if let Some(trace) = chrome_trace_out {
        let file = std::fs::File::create(trace)
            .with_context(|| format!("cannot create {}", trace.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let n = write_chrome_trace(&reader, &mut w)
            .and_then(|n| w.flush().map(|()| n))
            .with_context(|| format!("writing {}", trace.display()))?;
        writeln!(out, "wrote {n} trace events to {}", trace.display())?;
    }
    if let Some(what) = frames {
        let done = export_frames(&reader, what)?;
        for (id, why) in &done.failed {
            eprintln!("vgt-inspect: error: record {id}: {why}");
        }
        if done.unreadable > 0 {
            eprintln!(
                "vgt-inspect: error: {} records of {} could not be read",
                done.unreadable,
                path.display()
            );
        }
        damaged |= !done.failed.is_empty() || done.unreadable > 0;
        summarize(&done, &what.dir, out)?;
    }
    Ok(Outcome {
        damaged,
        ..Outcome::default()
    })
}
