//! A compact, fixed-size summary of one record, for tools that index whole captures.
//!
//! A browser that filters a million records cannot decode a million records per keystroke.
//! [`summarize`] decodes a record once into a [`RecordSummary`] of plain integers (kind, command
//! or response code, resource, context, fence, queue, time); a tool builds a table of them once
//! and filters that. [`SummaryLinker`] fills in the links between commands and their responses
//! (and the response code and error flag on the command) as records arrive in file order.

use std::collections::HashMap;

use serde::Serialize;

use crate::record::{Direction, Record, RecordBody, RecordId, RecordKind};
use crate::state::PayloadSource;
use crate::wire::{Command, CtrlHeader, Request, Response, ResponseType};

/// No record (a link that does not exist).
pub const NO_RECORD: RecordId = u64::MAX;

/// Flag: the command asked for a fence (FLAG_FENCE).
pub const FLAG_FENCED: u8 = 1;
/// Flag: an error response, a command answered with one, or a device error event.
pub const FLAG_ERROR: u8 = 2;
/// Flag: the bytes could not be read or decoded.
pub const FLAG_UNDECODABLE: u8 = 4;
/// Flag: the fence is on a per-context ring (FLAG_INFO_RING_IDX).
pub const FLAG_CONTEXT_RING: u8 = 8;

/// One record in integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordSummary {
    /// Monotonic nanoseconds since the capture started.
    pub ts_ns: u64,
    /// For a command, its response record; for a response, memory read, frame or cursor, its
    /// command; [`NO_RECORD`] otherwise.
    pub link: RecordId,
    /// Fence id (fenced commands and fence records), 0 otherwise.
    pub fence: u64,
    /// Command code (commands), response code (responses), request code (vhost-user and display
    /// socket messages), lifecycle kind (lifecycle records), 0 otherwise.
    pub code: u32,
    /// For a command, the code of its response once linked (0 before).
    pub response_code: u32,
    /// Resource named (0 when none).
    pub resource: u32,
    /// Context id from the header (commands, responses, fences).
    pub ctx: u32,
    /// Record kind code.
    pub kind: RecordKind,
    /// Virtqueue (commands, responses), scanout (frames, cursors), direction (vhost-user),
    /// queue (lifecycle).
    pub queue: u16,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Fence ring index (fenced commands and responses with FLAG_INFO_RING_IDX, fences).
    pub ring: u8,
}

impl RecordSummary {
    fn new(ts_ns: u64, kind: RecordKind) -> Self {
        RecordSummary {
            ts_ns,
            link: NO_RECORD,
            fence: 0,
            code: 0,
            response_code: 0,
            resource: 0,
            ctx: 0,
            kind,
            queue: 0,
            flags: 0,
            ring: 0,
        }
    }

    /// True when the record is or reports an error.
    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }
}

fn from_header(s: &mut RecordSummary, h: &CtrlHeader) {
    s.ctx = h.ctx_id;
    if h.is_fenced() {
        s.flags |= FLAG_FENCED;
        s.fence = h.fence_id;
        if h.has_ring_idx() {
            s.flags |= FLAG_CONTEXT_RING;
            s.ring = h.ring_idx;
        }
    }
}

/// Decodes one record into its summary (links and the response code of commands are filled by
/// [`SummaryLinker`]).
pub fn summarize(record: &Record, src: &dyn PayloadSource) -> RecordSummary {
    let mut s = RecordSummary::new(record.ts_ns, record.body.kind());
    match &record.body {
        RecordBody::Command(c) => {
            s.queue = c.queue;
            match src
                .payload_bytes(&c.request)
                .map(|b| Request::decode(&b).map(|r| (r, b.len())))
            {
                Some(Ok((r, _))) => {
                    s.code = r.header.type_;
                    from_header(&mut s, &r.header);
                    s.resource = match &r.command {
                        Command::SetScanout(c) => c.resource_id,
                        other => other.resource_id().unwrap_or(0),
                    };
                }
                Some(Err(_)) => {
                    // Keep the code when at least the header decodes.
                    if let Some(Ok(h)) = src
                        .payload_bytes(&c.request)
                        .map(|b| CtrlHeader::decode(&b))
                    {
                        s.code = h.type_;
                        from_header(&mut s, &h);
                    }
                    s.flags |= FLAG_UNDECODABLE;
                }
                None => s.flags |= FLAG_UNDECODABLE,
            }
        }
        RecordBody::Response(r) => {
            s.queue = r.queue;
            s.link = r.command;
            match src.payload_bytes(&r.bytes) {
                Some(b) if b.is_empty() => {}
                Some(b) => match Response::decode(&b) {
                    Ok(resp) => {
                        s.code = resp.header.type_;
                        from_header(&mut s, &resp.header);
                        if resp.response_type().is_error() {
                            s.flags |= FLAG_ERROR;
                        }
                    }
                    Err(_) => s.flags |= FLAG_UNDECODABLE,
                },
                None => s.flags |= FLAG_UNDECODABLE,
            }
        }
        RecordBody::MemoryRead(m) => {
            s.link = m.command;
            s.resource = m.resource_id;
        }
        RecordBody::Fence(f) => {
            s.link = f.command;
            s.fence = f.fence_id;
            s.ctx = f.ctx_id;
            s.ring = f.ring_idx;
            if f.context_ring {
                s.flags |= FLAG_CONTEXT_RING;
            }
        }
        RecordBody::Frame(f) => {
            s.link = f.command;
            s.resource = f.resource_id;
            s.queue = u16::try_from(f.scanout_id).unwrap_or(u16::MAX);
        }
        RecordBody::Cursor(c) => {
            s.link = c.command;
            s.resource = c.resource_id;
            s.queue = u16::try_from(c.scanout_id).unwrap_or(u16::MAX);
        }
        RecordBody::VhostUser(m) => {
            s.code = m.request;
            s.queue = match m.direction {
                Direction::FrontToBack => 0,
                Direction::BackToFront => 1,
                Direction::BackendRequest => 2,
                Direction::BackendReply => 3,
                Direction::Other => 255,
            };
        }
        RecordBody::GpuSocket(m) => s.code = m.request,
        RecordBody::Lifecycle(l) => {
            s.code = l.kind as u32;
            s.queue = l.queue.unwrap_or(0);
            if let Some(c) = l.command {
                s.link = c;
            }
            if matches!(
                l.kind,
                crate::record::LifecycleKind::ValidationError
                    | crate::record::LifecycleKind::Error
                    | crate::record::LifecycleKind::Crash
            ) {
                s.flags |= FLAG_ERROR;
            }
        }
        RecordBody::SessionStart(_) | RecordBody::Marker(_) | RecordBody::Unknown { .. } => {}
    }
    s
}

/// Links commands and responses in a table of summaries built in file order.
#[derive(Debug, Default)]
pub struct SummaryLinker {
    /// Index in the table of each command not yet answered.
    open: HashMap<RecordId, usize>,
}

impl SummaryLinker {
    /// A linker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after pushing `table[id]`: links a response to its command (setting the command's
    /// response code, link and error flag). `id` is the record id and index of the new entry;
    /// the table must hold every record from 0.
    pub fn link(&mut self, table: &mut [RecordSummary], id: RecordId) {
        let Some(s) = table.get(id as usize).copied() else {
            return;
        };
        if s.kind == RecordKind::COMMAND {
            self.open.insert(id, id as usize);
        } else if s.kind == RecordKind::RESPONSE
            && let Some(i) = self.open.remove(&s.link)
            && let Some(cmd) = table.get_mut(i)
        {
            cmd.link = id;
            cmd.response_code = s.code;
            if ResponseType(s.code).is_error() {
                cmd.flags |= FLAG_ERROR;
            }
        }
    }
}
