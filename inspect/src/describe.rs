//! Turns records into one-line text and JSON descriptions, decoding bytes through
//! `vgt_format::wire`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Value, json};
use vgt_format::record::{
    CaptureMode, CursorAction, Direction, LifecycleKind, Payload, Record, RecordBody, RecordId,
};
use vgt_format::state::PayloadSource;
use vgt_format::wire::{
    self, Request, Response,
    gpu_socket::{GpuSocketRequest, decode_gpu_socket_payload},
    vhost_user::{
        BackendRequest, VhostUserRequest, decode_backend_payload, decode_vhost_user_payload,
    },
};

/// Payloads above this size are not read just to describe a record.
const MAX_DESCRIBE_PAYLOAD: u64 = 64 << 20;

fn bytes<'a>(src: &'a dyn PayloadSource, p: &'a Payload) -> Option<Cow<'a, [u8]>> {
    if p.len() > MAX_DESCRIBE_PAYLOAD {
        return None;
    }
    src.payload_bytes(p)
}

/// Seconds with microseconds, for the time column.
pub fn format_ts(ts_ns: u64) -> String {
    format!(
        "{}.{:06}",
        ts_ns / 1_000_000_000,
        (ts_ns % 1_000_000_000) / 1_000
    )
}

/// `text` safe for a terminal: control characters (a recorded backend's colour codes, a
/// damaged or hostile capture's escape sequences) are written as `\u{..}` escapes; everything
/// else, tabs included, is left as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn direction_arrow(d: Direction) -> &'static str {
    match d {
        Direction::FrontToBack => "front->back",
        Direction::BackToFront => "back->front",
        Direction::BackendRequest => "back->front req",
        Direction::BackendReply => "front->back reply",
        Direction::Other => "?",
    }
}

fn mode_name(m: CaptureMode) -> &'static str {
    match m {
        CaptureMode::BuiltIn => "built-in",
        CaptureMode::Proxy => "proxy",
        CaptureMode::Synthetic => "synthetic",
        CaptureMode::Other => "other",
    }
}

fn cursor_action_name(a: CursorAction) -> &'static str {
    match a {
        CursorAction::Update => "update",
        CursorAction::Move => "move",
        CursorAction::Hide => "hide",
        CursorAction::Other => "other",
    }
}

/// Lower-case name of a lifecycle event.
pub fn lifecycle_name(k: LifecycleKind) -> &'static str {
    match k {
        LifecycleKind::Connect => "connect",
        LifecycleKind::Disconnect => "disconnect",
        LifecycleKind::Reset => "reset",
        LifecycleKind::QueueReset => "queue-reset",
        LifecycleKind::QueueStart => "queue-start",
        LifecycleKind::QueueStop => "queue-stop",
        LifecycleKind::DriverOk => "driver-ok",
        LifecycleKind::ConfigChange => "config-change",
        LifecycleKind::ValidationError => "validation-error",
        LifecycleKind::Error => "error",
        LifecycleKind::Crash => "crash",
        LifecycleKind::End => "end",
        LifecycleKind::InFlightWrite => "in-flight-write",
        LifecycleKind::BackendStdout => "backend-stdout",
        LifecycleKind::BackendStderr => "backend-stderr",
        LifecycleKind::Other => "other",
    }
}

fn vhost_request_name(direction: Direction, request: u32) -> String {
    let name = match direction {
        Direction::BackendRequest | Direction::BackendReply => BackendRequest(request).name(),
        _ => VhostUserRequest(request).name(),
    };
    name.map_or_else(|| format!("REQUEST_{request}"), str::to_string)
}

fn gpu_request_name(request: u32) -> String {
    GpuSocketRequest(request)
        .name()
        .map_or_else(|| format!("REQUEST_{request}"), str::to_string)
}

/// The text after the kind column: what the record says, decoded.
pub fn describe(record: &Record, src: &dyn PayloadSource) -> String {
    let mut s = String::new();
    match &record.body {
        RecordBody::SessionStart(st) => {
            let _ = write!(
                s,
                "{} {} mode={} renderer=\"{}\" features offered={:#x} acked={:#x} queues={} sizes={:?}",
                printable(&st.tool),
                printable(&st.tool_version),
                mode_name(st.mode),
                printable(&st.renderer),
                st.features_offered,
                st.features_acked,
                st.num_queues,
                st.queue_sizes
            );
        }
        RecordBody::VhostUser(m) => {
            let is_reply = matches!(
                m.direction,
                Direction::BackToFront | Direction::BackendReply
            );
            let _ = write!(
                s,
                "{} {} flags={:#x} fds={}",
                direction_arrow(m.direction),
                vhost_request_name(m.direction, m.request),
                m.flags,
                m.fd_count
            );
            match bytes(src, &m.payload) {
                Some(b) => {
                    let decoded = match m.direction {
                        Direction::BackendRequest | Direction::BackendReply => {
                            decode_backend_payload(BackendRequest(m.request), is_reply, &b)
                        }
                        _ => decode_vhost_user_payload(VhostUserRequest(m.request), is_reply, &b),
                    };
                    match decoded {
                        Ok(p) => {
                            let text = p.to_string();
                            if !text.is_empty() {
                                let _ = write!(s, " {text}");
                            }
                        }
                        Err(e) => {
                            let _ = write!(s, " <undecodable payload: {e}>");
                        }
                    }
                }
                None => {
                    let _ = write!(s, " payload={}B", m.payload.len());
                }
            }
        }
        RecordBody::Command(c) => {
            let _ = write!(s, "q{} head={} ", c.queue, c.head);
            match bytes(src, &c.request) {
                Some(b) => push_decoded(&mut s, "request", b.len(), Request::decode(&b)),
                None => {
                    let _ = write!(s, "<request payload unreadable>");
                }
            }
        }
        RecordBody::MemoryRead(m) => {
            let _ = write!(
                s,
                "cmd=#{} res={} addr={:#x} len={}",
                m.command,
                m.resource_id,
                m.addr,
                m.data.len()
            );
            if let Payload::Blob(b) = &m.data {
                let _ = write!(s, " hash={}", b.hash);
            }
        }
        RecordBody::Response(r) => {
            let _ = write!(s, "cmd=#{} q{} used={} ", r.command, r.queue, r.used_len);
            match bytes(src, &r.bytes) {
                Some(b) if b.is_empty() => {
                    let _ = write!(s, "(no response bytes)");
                }
                Some(b) => push_decoded(&mut s, "response", b.len(), Response::decode(&b)),
                None => {
                    let _ = write!(s, "<response payload unreadable>");
                }
            }
        }
        RecordBody::Fence(f) => {
            let _ = write!(
                s,
                "fence={} ctx={} ring={}{} cmd={}",
                f.fence_id,
                f.ctx_id,
                f.ring_idx,
                if f.context_ring {
                    " (context ring)"
                } else {
                    ""
                },
                command_ref(f.command)
            );
        }
        RecordBody::GpuSocket(g) => {
            // Capture records QEMU's replies as BackendReply (the display socket is the
            // back-end's request channel to QEMU); FrontToBack is accepted from other writers.
            let is_reply = matches!(
                g.direction,
                Direction::BackendReply | Direction::FrontToBack
            );
            let _ = write!(
                s,
                "{} {} flags={:#x} fds={}",
                if is_reply {
                    "qemu->backend"
                } else {
                    "backend->qemu"
                },
                gpu_request_name(g.request),
                g.flags,
                g.fd_count
            );
            // The wire payload is `payload` followed by `data` (an UPDATE's pixels).
            let wire_len = g
                .payload
                .len()
                .saturating_add(g.data.as_ref().map_or(0, Payload::len));
            let wire = (wire_len <= MAX_DESCRIBE_PAYLOAD)
                .then(|| {
                    g.wire_payload(|p| src.payload_bytes(p).map(Cow::into_owned).ok_or(()))
                        .ok()
                })
                .flatten();
            match wire {
                Some(b) => {
                    match decode_gpu_socket_payload(GpuSocketRequest(g.request), is_reply, &b) {
                        Ok(p) => {
                            let text = p.to_string();
                            if !text.is_empty() {
                                let _ = write!(s, " {text}");
                            }
                        }
                        Err(e) => {
                            let _ = write!(s, " <undecodable payload: {e}>");
                        }
                    }
                }
                None => {
                    let _ = write!(s, " payload={wire_len}B");
                }
            }
        }
        RecordBody::Frame(f) => {
            let format = wire::Format(f.format);
            let _ = write!(
                s,
                "scanout={} res={} {}x{} stride={} format={} damage={},{} {}x{} cmd={}",
                f.scanout_id,
                f.resource_id,
                f.width,
                f.height,
                f.stride,
                format.name().unwrap_or("?"),
                f.rect[0],
                f.rect[1],
                f.rect[2],
                f.rect[3],
                command_ref(f.command)
            );
            if let Payload::Blob(b) = &f.pixels {
                let _ = write!(s, " hash={}", b.hash);
            }
        }
        RecordBody::Cursor(c) => {
            let _ = write!(
                s,
                "{} scanout={} pos={},{} hot={},{} res={} cmd={}",
                cursor_action_name(c.action),
                c.scanout_id,
                c.x,
                c.y,
                c.hot_x,
                c.hot_y,
                c.resource_id,
                command_ref(c.command)
            );
        }
        RecordBody::Lifecycle(l) => {
            let _ = write!(s, "{}", lifecycle_name(l.kind));
            if let Some(q) = l.queue {
                let _ = write!(s, " queue={q}");
            }
            if let Some(c) = l.command {
                let _ = write!(s, " cmd=#{c}");
            }
            if !l.message.is_empty() {
                let _ = write!(s, ": {}", printable(&l.message));
            }
        }
        RecordBody::Marker(m) => {
            let _ = write!(s, "{:?}", m.text);
        }
        RecordBody::Unknown { kind, body } => {
            let _ = write!(
                s,
                "kind={kind:#06x} {} bytes (unknown to this version)",
                body.len()
            );
        }
    }
    s
}

/// Appends a decoded virtio-gpu message, or why its `len` bytes did not decode.
fn push_decoded<T: std::fmt::Display, E: std::fmt::Display>(
    s: &mut String,
    what: &str,
    len: usize,
    decoded: Result<T, E>,
) {
    let _ = match decoded {
        Ok(v) => write!(s, "{v}"),
        Err(e) => write!(s, "<undecodable {len}-byte {what}: {e}>"),
    };
}

fn command_ref(id: RecordId) -> String {
    if id == u64::MAX {
        "-".to_string()
    } else {
        format!("#{id}")
    }
}

/// Hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

fn payload_json(p: &Payload) -> Value {
    match p {
        Payload::Inline(b) => json!({ "len": b.len(), "hex": hex(b) }),
        Payload::Blob(r) => json!({ "len": r.len, "hash": r.hash.to_string(), "offset": r.offset }),
    }
}

fn id_json(id: RecordId) -> Value {
    if id == u64::MAX {
        Value::Null
    } else {
        json!(id)
    }
}

/// One JSON object describing a record: raw fields plus the decoded view where bytes decode.
pub fn to_json(id: RecordId, record: &Record, src: &dyn PayloadSource) -> Value {
    let kind = record.body.kind();
    let mut v = json!({ "id": id, "ts_ns": record.ts_ns, "kind": kind.name() });
    let fields = match &record.body {
        RecordBody::SessionStart(st) => json!({
            "wall_clock_unix_ns": st.wall_clock_unix_ns,
            "tool": st.tool,
            "tool_version": st.tool_version,
            "mode": mode_name(st.mode),
            "renderer": st.renderer,
            "features_offered": st.features_offered,
            "features_offered_names": wire::vhost_user::feature_names(st.features_offered),
            "features_acked": st.features_acked,
            "protocol_features": st.protocol_features,
            "num_queues": st.num_queues,
            "queue_sizes": st.queue_sizes,
            "device_config": payload_json(&st.device_config),
        }),
        RecordBody::VhostUser(m) => json!({
            "direction": format!("{:?}", m.direction),
            "request": m.request,
            "request_name": vhost_request_name(m.direction, m.request),
            "flags": m.flags,
            "fd_count": m.fd_count,
            "payload": payload_json(&m.payload),
        }),
        RecordBody::Command(c) => {
            let decoded = bytes(src, &c.request).map(|b| match Request::decode(&b) {
                Ok(r) => json!({ "text": r.to_string(), "request": r }),
                Err(e) => json!({ "error": e.to_string() }),
            });
            json!({
                "queue": c.queue,
                "head": c.head,
                "descriptors": c.descriptors,
                "writable_len": c.writable_len,
                "request": payload_json(&c.request),
                "decoded": decoded,
            })
        }
        RecordBody::MemoryRead(m) => json!({
            "command": m.command,
            "resource_id": m.resource_id,
            "addr": m.addr,
            "data": payload_json(&m.data),
        }),
        RecordBody::Response(r) => {
            let decoded = bytes(src, &r.bytes).map(|b| match Response::decode(&b) {
                Ok(resp) => json!({ "text": resp.to_string(), "response": resp }),
                Err(e) => json!({ "error": e.to_string() }),
            });
            json!({
                "command": r.command,
                "queue": r.queue,
                "head": r.head,
                "used_len": r.used_len,
                "bytes": payload_json(&r.bytes),
                "decoded": decoded,
            })
        }
        RecordBody::Fence(f) => json!({
            "command": id_json(f.command),
            "fence_id": f.fence_id,
            "ctx_id": f.ctx_id,
            "ring_idx": f.ring_idx,
            "context_ring": f.context_ring,
        }),
        RecordBody::GpuSocket(g) => json!({
            "direction": format!("{:?}", g.direction),
            "request": g.request,
            "request_name": gpu_request_name(g.request),
            "flags": g.flags,
            "fd_count": g.fd_count,
            "payload": payload_json(&g.payload),
            "data": g.data.as_ref().map(payload_json),
        }),
        RecordBody::Frame(f) => json!({
            "command": id_json(f.command),
            "scanout_id": f.scanout_id,
            "resource_id": f.resource_id,
            "format": f.format,
            "format_name": wire::Format(f.format).name(),
            "width": f.width,
            "height": f.height,
            "stride": f.stride,
            "rect": f.rect,
            "pixels": payload_json(&f.pixels),
        }),
        RecordBody::Cursor(c) => json!({
            "command": id_json(c.command),
            "action": cursor_action_name(c.action),
            "scanout_id": c.scanout_id,
            "x": c.x, "y": c.y, "hot_x": c.hot_x, "hot_y": c.hot_y,
            "resource_id": c.resource_id,
            "image": c.image.as_ref().map(payload_json),
        }),
        RecordBody::Lifecycle(l) => json!({
            "event": lifecycle_name(l.kind),
            "queue": l.queue,
            "command": l.command,
            "message": l.message,
        }),
        RecordBody::Marker(m) => json!({ "text": m.text }),
        RecordBody::Unknown { kind, body } => json!({ "kind_code": kind, "body_len": body.len() }),
    };
    if let (Value::Object(dst), Value::Object(src_fields)) = (&mut v, fields) {
        dst.extend(src_fields);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            printable("plain\ttext é"),
            std::borrow::Cow::Borrowed("plain\ttext é")
        ));
        assert_eq!(
            printable("\u{1b}[31mred\u{1b}[0m\r\u{7}"),
            "\\u{1b}[31mred\\u{1b}[0m\\u{d}\\u{7}"
        );
    }
}
