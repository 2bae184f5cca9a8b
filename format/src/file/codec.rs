//! Record body encoding: a fixed little-endian layout per record kind, described by [`LAYOUTS`].
//!
//! Every record body is `ts_ns u64 | fixed_len u16 | reserved [u8; 6]`, then the kind's fixed
//! part (`fixed_len` bytes), then the variable sections (string bytes, payload bytes, lists) in
//! the order of the fixed fields that own them. A reader treats fixed fields past the stored
//! `fixed_len` as zero and ignores fixed bytes and variable sections it does not know: new fields
//! are only ever appended, so older files stay readable and newer files stay partly readable.
//!
//! [`LAYOUTS`] is the single description of every fixed part. [`BodyWriter`] and [`BodyReader`]
//! walk it field by field (checking, in debug builds, that each encoder writes the type the table
//! says), and docs/FORMAT.md's tables are compared with it by a test.

use super::format::{le_u16, le_u32, le_u64, le_u128};
use crate::record::{
    BlobRef, CaptureMode, CommandRecord, ContentHash, Cursor, CursorAction, Descriptor, Direction,
    FenceSignal, Frame, GpuSocketMessage, Lifecycle, LifecycleKind, Marker, MemoryRead, Payload,
    Record, RecordBody, RecordKind, ResponseRecord, SessionStart, VhostUserMessage,
};

/// Length of the header every record body starts with (`ts_ns`, `fixed_len`, reserved).
pub const RECORD_HEADER_LEN: usize = 16;
/// Length of a blob reference in a payload's variable section.
pub const BLOB_REF_LEN: u32 = 32;
/// Payload flag: the variable section is a blob reference, not the bytes.
pub const PAYLOAD_FLAG_BLOB: u32 = 1;
/// Payload flag (optional payloads only): the value is present.
pub const PAYLOAD_FLAG_PRESENT: u32 = 2;
/// Length of one descriptor in a descriptor list's variable section.
pub const DESCRIPTOR_LEN: usize = 16;

/// How a fixed field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// One byte.
    U8,
    /// Little-endian u16.
    U16,
    /// Little-endian u32.
    U32,
    /// Little-endian u64.
    U64,
    /// One byte, 0 or 1.
    Bool,
    /// One byte of presence bits for the `Option` fields that follow.
    Presence,
    /// Zero bytes that keep the following fields aligned; must be written as zero.
    Reserved(u16),
    /// Four little-endian u32 (x, y, width, height).
    Rect,
    /// UTF-8 string: u32 byte length here, the bytes in a variable section.
    Str,
    /// A payload: `len u32 | flags u32` here (flags bit 0: blob); the inline bytes or a 32-byte
    /// blob reference (`hash u128 | offset u64 | raw_len u64`) in a variable section.
    Payload,
    /// Like [`FieldType::Payload`], with flags bit 1 set when present; all zero when absent.
    OptPayload,
    /// Descriptor list: u16 count here, 16 bytes each (`addr u64 | len u32 | flags u16 |
    /// next u16`) in a variable section.
    Descriptors,
    /// List of u16: u32 count here, 2 bytes each in a variable section.
    U16List,
}

impl FieldType {
    /// Bytes the field takes in the fixed part.
    pub const fn size(self) -> u16 {
        match self {
            FieldType::U8 | FieldType::Bool | FieldType::Presence => 1,
            FieldType::U16 | FieldType::Descriptors => 2,
            FieldType::U32 | FieldType::Str | FieldType::U16List => 4,
            FieldType::U64 | FieldType::Payload | FieldType::OptPayload => 8,
            FieldType::Rect => 16,
            FieldType::Reserved(n) => n,
        }
    }

    /// The type as docs/FORMAT.md writes it.
    pub fn doc_name(self) -> String {
        match self {
            FieldType::U8 => "u8".into(),
            FieldType::U16 => "u16".into(),
            FieldType::U32 => "u32".into(),
            FieldType::U64 => "u64".into(),
            FieldType::Bool => "bool".into(),
            FieldType::Presence => "presence".into(),
            FieldType::Reserved(n) => format!("reserved[{n}]"),
            FieldType::Rect => "rect".into(),
            FieldType::Str => "string".into(),
            FieldType::Payload => "payload".into(),
            FieldType::OptPayload => "option<payload>".into(),
            FieldType::Descriptors => "descriptors".into(),
            FieldType::U16List => "u16 list".into(),
        }
    }
}

/// One field of a kind's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name (the Rust field name, `reserved` for padding).
    pub name: &'static str,
    /// Offset from the start of the fixed part (body offset 16).
    pub offset: u16,
    /// Storage type.
    pub ty: FieldType,
}

/// The fixed part of one record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLayout {
    /// Kind code.
    pub kind: RecordKind,
    /// `fixed_len` this version writes.
    pub fixed_len: u16,
    /// Fields in offset order; variable sections follow in the same order.
    pub fields: &'static [FieldSpec],
}

const fn f(name: &'static str, offset: u16, ty: FieldType) -> FieldSpec {
    FieldSpec { name, offset, ty }
}

use FieldType as T;

/// Fixed-part layout of every record kind this version knows, in kind-code order.
pub const LAYOUTS: [KindLayout; 11] = [
    KindLayout {
        kind: RecordKind::SESSION_START,
        fixed_len: 60,
        fields: &[
            f("wall_clock_unix_ns", 0, T::U64),
            f("features_offered", 8, T::U64),
            f("features_acked", 16, T::U64),
            f("protocol_features", 24, T::U64),
            f("num_queues", 32, T::U16),
            f("mode", 34, T::U8),
            f("reserved", 35, T::Reserved(1)),
            f("tool", 36, T::Str),
            f("tool_version", 40, T::Str),
            f("renderer", 44, T::Str),
            f("queue_sizes", 48, T::U16List),
            f("device_config", 52, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::VHOST_USER,
        fixed_len: 20,
        fields: &[
            f("request", 0, T::U32),
            f("flags", 4, T::U32),
            f("direction", 8, T::U8),
            f("fd_count", 9, T::U8),
            f("reserved", 10, T::Reserved(2)),
            f("payload", 12, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::COMMAND,
        fixed_len: 20,
        fields: &[
            f("queue", 0, T::U16),
            f("head", 2, T::U16),
            f("writable_len", 4, T::U32),
            f("descriptors", 8, T::Descriptors),
            f("reserved", 10, T::Reserved(2)),
            f("request", 12, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::MEMORY_READ,
        fixed_len: 28,
        fields: &[
            f("command", 0, T::U64),
            f("addr", 8, T::U64),
            f("resource_id", 16, T::U32),
            f("data", 20, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::RESPONSE,
        fixed_len: 24,
        fields: &[
            f("command", 0, T::U64),
            f("queue", 8, T::U16),
            f("head", 10, T::U16),
            f("used_len", 12, T::U32),
            f("bytes", 16, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::FENCE,
        fixed_len: 24,
        fields: &[
            f("command", 0, T::U64),
            f("fence_id", 8, T::U64),
            f("ctx_id", 16, T::U32),
            f("ring_idx", 20, T::U8),
            f("context_ring", 21, T::Bool),
            f("reserved", 22, T::Reserved(2)),
        ],
    },
    KindLayout {
        kind: RecordKind::GPU_SOCKET,
        fixed_len: 28,
        fields: &[
            f("request", 0, T::U32),
            f("flags", 4, T::U32),
            f("direction", 8, T::U8),
            f("fd_count", 9, T::U8),
            f("reserved", 10, T::Reserved(2)),
            f("payload", 12, T::Payload),
            f("data", 20, T::OptPayload),
        ],
    },
    KindLayout {
        kind: RecordKind::FRAME,
        fixed_len: 56,
        fields: &[
            f("command", 0, T::U64),
            f("scanout_id", 8, T::U32),
            f("resource_id", 12, T::U32),
            f("format", 16, T::U32),
            f("width", 20, T::U32),
            f("height", 24, T::U32),
            f("stride", 28, T::U32),
            f("rect", 32, T::Rect),
            f("pixels", 48, T::Payload),
        ],
    },
    KindLayout {
        kind: RecordKind::CURSOR,
        fixed_len: 44,
        fields: &[
            f("command", 0, T::U64),
            f("scanout_id", 8, T::U32),
            f("x", 12, T::U32),
            f("y", 16, T::U32),
            f("hot_x", 20, T::U32),
            f("hot_y", 24, T::U32),
            f("resource_id", 28, T::U32),
            f("action", 32, T::U8),
            f("reserved", 33, T::Reserved(3)),
            f("image", 36, T::OptPayload),
        ],
    },
    KindLayout {
        kind: RecordKind::LIFECYCLE,
        fixed_len: 20,
        fields: &[
            f("kind", 0, T::U16),
            f("present", 2, T::Presence),
            f("reserved", 3, T::Reserved(1)),
            f("queue", 4, T::U16),
            f("reserved", 6, T::Reserved(2)),
            f("command", 8, T::U64),
            f("message", 16, T::Str),
        ],
    },
    KindLayout {
        kind: RecordKind::MARKER,
        fixed_len: 4,
        fields: &[f("text", 0, T::Str)],
    },
];

/// Lifecycle presence bit: `queue` is set.
const PRESENT_QUEUE: u8 = 1;
/// Lifecycle presence bit: `command` is set.
const PRESENT_COMMAND: u8 = 2;

/// The layout of `kind`, when this version knows it.
pub fn layout(kind: u16) -> Option<&'static KindLayout> {
    let l = LAYOUTS.get(usize::from(kind).checked_sub(1)?)?;
    (l.kind.0 == kind).then_some(l)
}

/// Why a body could not be encoded or decoded, in words.
pub type CodecError = String;

/// Appends one record body to a buffer, field by field in [`LAYOUTS`] order.
pub struct BodyWriter<'a> {
    buf: &'a mut Vec<u8>,
    layout: &'static KindLayout,
    field: usize,
    fixed_at: usize,
}

impl<'a> BodyWriter<'a> {
    /// Starts a body at the end of `buf`: record header, then a zeroed fixed part.
    pub fn new(buf: &'a mut Vec<u8>, ts_ns: u64, layout: &'static KindLayout) -> Self {
        buf.extend_from_slice(&ts_ns.to_le_bytes());
        buf.extend_from_slice(&layout.fixed_len.to_le_bytes());
        buf.extend_from_slice(&[0u8; 6]);
        let fixed_at = buf.len();
        buf.resize(fixed_at + usize::from(layout.fixed_len), 0);
        BodyWriter {
            buf,
            layout,
            field: 0,
            fixed_at,
        }
    }

    /// Buffer position of the next non-reserved field, which must have type `ty`.
    fn slot(&mut self, ty: FieldType) -> usize {
        while matches!(self.layout.fields[self.field].ty, FieldType::Reserved(_)) {
            self.field += 1;
        }
        let spec = self.layout.fields[self.field];
        debug_assert_eq!(spec.ty, ty, "encoder and LAYOUTS disagree on {}", spec.name);
        self.field += 1;
        self.fixed_at + usize::from(spec.offset)
    }

    fn put(&mut self, ty: FieldType, bytes: &[u8]) {
        let at = self.slot(ty);
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A u8 field.
    pub fn u8(&mut self, v: u8) {
        self.put(FieldType::U8, &[v]);
    }
    /// A presence-bits field.
    pub fn presence(&mut self, v: u8) {
        self.put(FieldType::Presence, &[v]);
    }
    /// A bool field.
    pub fn bool(&mut self, v: bool) {
        self.put(FieldType::Bool, &[u8::from(v)]);
    }
    /// A u16 field.
    pub fn u16(&mut self, v: u16) {
        self.put(FieldType::U16, &v.to_le_bytes());
    }
    /// A u32 field.
    pub fn u32(&mut self, v: u32) {
        self.put(FieldType::U32, &v.to_le_bytes());
    }
    /// A u64 field.
    pub fn u64(&mut self, v: u64) {
        self.put(FieldType::U64, &v.to_le_bytes());
    }
    /// A rectangle field.
    pub fn rect(&mut self, r: [u32; 4]) {
        let mut b = [0u8; 16];
        for (chunk, v) in b.chunks_exact_mut(4).zip(r) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        self.put(FieldType::Rect, &b);
    }
    /// A string field.
    pub fn str(&mut self, s: &str) -> Result<(), CodecError> {
        let len = u32::try_from(s.len()).map_err(|_| format!("string of {} bytes", s.len()))?;
        self.put(FieldType::Str, &len.to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }
    /// A list of u16.
    pub fn u16_list(&mut self, v: &[u16]) -> Result<(), CodecError> {
        let n = u32::try_from(v.len()).map_err(|_| format!("list of {} u16", v.len()))?;
        self.put(FieldType::U16List, &n.to_le_bytes());
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        Ok(())
    }
    /// A descriptor list.
    pub fn descriptors(&mut self, d: &[Descriptor]) -> Result<(), CodecError> {
        let n = u16::try_from(d.len())
            .map_err(|_| format!("{} descriptors (at most 65535)", d.len()))?;
        self.put(FieldType::Descriptors, &n.to_le_bytes());
        for x in d {
            self.buf.extend_from_slice(&x.addr.to_le_bytes());
            self.buf.extend_from_slice(&x.len.to_le_bytes());
            self.buf.extend_from_slice(&x.flags.to_le_bytes());
            self.buf.extend_from_slice(&x.next.to_le_bytes());
        }
        Ok(())
    }
    /// A payload field.
    pub fn payload(&mut self, p: &Payload) -> Result<(), CodecError> {
        let at = self.slot(FieldType::Payload);
        self.put_payload(at, p, 0)
    }
    /// An optional payload field.
    pub fn opt_payload(&mut self, p: Option<&Payload>) -> Result<(), CodecError> {
        let at = self.slot(FieldType::OptPayload);
        match p {
            Some(p) => self.put_payload(at, p, PAYLOAD_FLAG_PRESENT),
            None => Ok(()),
        }
    }

    fn put_payload(&mut self, at: usize, p: &Payload, flags: u32) -> Result<(), CodecError> {
        let (len, flags) = match p {
            Payload::Inline(b) => (
                u32::try_from(b.len())
                    .map_err(|_| format!("inline payload of {} bytes", b.len()))?,
                flags,
            ),
            Payload::Blob(_) => (BLOB_REF_LEN, flags | PAYLOAD_FLAG_BLOB),
        };
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        match p {
            Payload::Inline(b) => self.buf.extend_from_slice(b),
            Payload::Blob(r) => {
                self.buf.extend_from_slice(&r.hash.0.to_le_bytes());
                self.buf.extend_from_slice(&r.offset.to_le_bytes());
                self.buf.extend_from_slice(&r.len.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Reads one record body field by field in [`LAYOUTS`] order.
pub struct BodyReader<'a> {
    layout: &'static KindLayout,
    field: usize,
    fixed: &'a [u8],
    var: &'a [u8],
}

impl<'a> BodyReader<'a> {
    /// Splits `body` into record header, fixed part and variable sections; returns `ts_ns` too.
    pub fn new(body: &'a [u8], layout: &'static KindLayout) -> Result<(u64, Self), CodecError> {
        if body.len() < RECORD_HEADER_LEN {
            return Err(format!(
                "record body of {} bytes is shorter than the {RECORD_HEADER_LEN}-byte record header",
                body.len()
            ));
        }
        let ts = le_u64(body, 0);
        let fixed_len = usize::from(le_u16(body, 8));
        let rest = &body[RECORD_HEADER_LEN..];
        if fixed_len > rest.len() {
            return Err(format!(
                "fixed_len {fixed_len} exceeds the {} bytes after the record header",
                rest.len()
            ));
        }
        let (fixed, var) = rest.split_at(fixed_len);
        Ok((
            ts,
            BodyReader {
                layout,
                field: 0,
                fixed,
                var,
            },
        ))
    }

    /// Reads the next field's bytes; zero when the stored fixed part ends before it.
    fn get<const N: usize>(&mut self, ty: FieldType) -> [u8; N] {
        while matches!(self.layout.fields[self.field].ty, FieldType::Reserved(_)) {
            self.field += 1;
        }
        let spec = self.layout.fields[self.field];
        debug_assert_eq!(spec.ty, ty, "decoder and LAYOUTS disagree on {}", spec.name);
        debug_assert_eq!(usize::from(spec.ty.size()), N);
        self.field += 1;
        let at = usize::from(spec.offset);
        let mut out = [0u8; N];
        if let Some(b) = self.fixed.get(at..at + N) {
            out.copy_from_slice(b);
        }
        out
    }

    fn take_var(&mut self, len: u64, what: &str) -> Result<&'a [u8], CodecError> {
        match usize::try_from(len) {
            Ok(n) if n <= self.var.len() => {
                let (head, tail) = self.var.split_at(n);
                self.var = tail;
                Ok(head)
            }
            _ => Err(format!(
                "{what} needs {len} bytes, {} left in the body",
                self.var.len()
            )),
        }
    }

    /// A u8 field.
    pub fn u8(&mut self) -> u8 {
        self.get::<1>(FieldType::U8)[0]
    }
    /// A presence-bits field.
    pub fn presence(&mut self) -> u8 {
        self.get::<1>(FieldType::Presence)[0]
    }
    /// A bool field (any non-zero byte is true).
    pub fn bool(&mut self) -> bool {
        self.get::<1>(FieldType::Bool)[0] != 0
    }
    /// A u16 field.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.get(FieldType::U16))
    }
    /// A u32 field.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.get(FieldType::U32))
    }
    /// A u64 field.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.get(FieldType::U64))
    }
    /// A rectangle field.
    pub fn rect(&mut self) -> [u32; 4] {
        let b: [u8; 16] = self.get(FieldType::Rect);
        [le_u32(&b, 0), le_u32(&b, 4), le_u32(&b, 8), le_u32(&b, 12)]
    }
    /// A string field.
    pub fn str(&mut self) -> Result<String, CodecError> {
        let len = u32::from_le_bytes(self.get(FieldType::Str));
        let b = self.take_var(u64::from(len), "string")?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
    }
    /// A list of u16.
    pub fn u16_list(&mut self) -> Result<Vec<u16>, CodecError> {
        let n = u32::from_le_bytes(self.get(FieldType::U16List));
        let b = self.take_var(u64::from(n) * 2, "u16 list")?;
        Ok(b.chunks_exact(2).map(|c| le_u16(c, 0)).collect())
    }
    /// A descriptor list.
    pub fn descriptors(&mut self) -> Result<Vec<Descriptor>, CodecError> {
        let n = u16::from_le_bytes(self.get(FieldType::Descriptors));
        let b = self.take_var(u64::from(n) * DESCRIPTOR_LEN as u64, "descriptor list")?;
        Ok(b.chunks_exact(DESCRIPTOR_LEN)
            .map(|c| Descriptor {
                addr: le_u64(c, 0),
                len: le_u32(c, 8),
                flags: le_u16(c, 12),
                next: le_u16(c, 14),
            })
            .collect())
    }
    /// A payload field.
    pub fn payload(&mut self) -> Result<Payload, CodecError> {
        let b: [u8; 8] = self.get(FieldType::Payload);
        self.read_payload(b)
    }
    /// An optional payload field.
    pub fn opt_payload(&mut self) -> Result<Option<Payload>, CodecError> {
        let b: [u8; 8] = self.get(FieldType::OptPayload);
        if le_u32(&b, 4) & PAYLOAD_FLAG_PRESENT == 0 {
            return Ok(None);
        }
        self.read_payload(b).map(Some)
    }

    fn read_payload(&mut self, b: [u8; 8]) -> Result<Payload, CodecError> {
        let len = le_u32(&b, 0);
        let flags = le_u32(&b, 4);
        let v = self.take_var(u64::from(len), "payload")?;
        if flags & PAYLOAD_FLAG_BLOB == 0 {
            return Ok(Payload::Inline(v.to_vec()));
        }
        // A longer reference from a newer minor version starts with the same 32 bytes.
        if v.len() < BLOB_REF_LEN as usize {
            return Err(format!("blob reference of {} bytes (needs 32)", v.len()));
        }
        Ok(Payload::Blob(BlobRef {
            hash: ContentHash(le_u128(v, 0)),
            offset: le_u64(v, 16),
            len: le_u64(v, 24),
        }))
    }
}

/// Appends the body of `record` to `buf` (no chunk header).
pub fn encode_body(buf: &mut Vec<u8>, record: &Record) -> Result<(), CodecError> {
    let kind = record.body.kind();
    let Some(layout) = layout(kind.0) else {
        return match &record.body {
            RecordBody::Unknown { kind, body } if *kind < RecordKind::FIRST_INTERNAL => {
                buf.extend_from_slice(&record.ts_ns.to_le_bytes());
                buf.extend_from_slice(body);
                Ok(())
            }
            _ => Err(format!("kind {:#06x} is not a record kind", kind.0)),
        };
    };
    let w = &mut BodyWriter::new(buf, record.ts_ns, layout);
    match &record.body {
        RecordBody::SessionStart(s) => encode_session(w, s),
        RecordBody::VhostUser(m) => {
            encode_message(w, m.request, m.flags, m.direction, m.fd_count, &m.payload)
        }
        RecordBody::Command(c) => encode_command(w, c),
        RecordBody::MemoryRead(m) => encode_memory_read(w, m),
        RecordBody::Response(r) => encode_response(w, r),
        RecordBody::Fence(x) => {
            encode_fence(w, x);
            Ok(())
        }
        RecordBody::GpuSocket(m) => {
            encode_message(w, m.request, m.flags, m.direction, m.fd_count, &m.payload)?;
            w.opt_payload(m.data.as_ref())
        }
        RecordBody::Frame(x) => encode_frame(w, x),
        RecordBody::Cursor(c) => encode_cursor(w, c),
        RecordBody::Lifecycle(l) => encode_lifecycle(w, l),
        RecordBody::Marker(m) => w.str(&m.text),
        RecordBody::Unknown { kind, .. } => Err(format!(
            "kind {kind:#06x} is a known kind and must not be written as unknown"
        )),
    }
}

/// Decodes a record body of chunk kind `kind` (which must be below `0x0100`).
pub fn decode_body(kind: u16, body: &[u8]) -> Result<Record, CodecError> {
    let Some(layout) = layout(kind) else {
        if body.len() < 8 {
            return Err(format!(
                "record body of {} bytes has no timestamp",
                body.len()
            ));
        }
        return Ok(Record {
            ts_ns: le_u64(body, 0),
            body: RecordBody::Unknown {
                kind,
                body: body[8..].to_vec(),
            },
        });
    };
    let (ts_ns, mut r) = BodyReader::new(body, layout)?;
    let r = &mut r;
    let body = match layout.kind {
        RecordKind::SESSION_START => RecordBody::SessionStart(decode_session(r)?),
        RecordKind::VHOST_USER => {
            let (request, flags, direction, fd_count, payload) = decode_message(r)?;
            RecordBody::VhostUser(VhostUserMessage {
                direction,
                request,
                flags,
                fd_count,
                payload,
            })
        }
        RecordKind::COMMAND => RecordBody::Command(decode_command(r)?),
        RecordKind::MEMORY_READ => RecordBody::MemoryRead(MemoryRead {
            command: r.u64(),
            addr: r.u64(),
            resource_id: r.u32(),
            data: r.payload()?,
        }),
        RecordKind::RESPONSE => RecordBody::Response(ResponseRecord {
            command: r.u64(),
            queue: r.u16(),
            head: r.u16(),
            used_len: r.u32(),
            bytes: r.payload()?,
        }),
        RecordKind::FENCE => RecordBody::Fence(FenceSignal {
            command: r.u64(),
            fence_id: r.u64(),
            ctx_id: r.u32(),
            ring_idx: r.u8(),
            context_ring: r.bool(),
        }),
        RecordKind::GPU_SOCKET => {
            let (request, flags, direction, fd_count, payload) = decode_message(r)?;
            RecordBody::GpuSocket(GpuSocketMessage {
                direction,
                request,
                flags,
                fd_count,
                payload,
                data: r.opt_payload()?,
            })
        }
        RecordKind::FRAME => RecordBody::Frame(Frame {
            command: r.u64(),
            scanout_id: r.u32(),
            resource_id: r.u32(),
            format: r.u32(),
            width: r.u32(),
            height: r.u32(),
            stride: r.u32(),
            rect: r.rect(),
            pixels: r.payload()?,
        }),
        RecordKind::CURSOR => RecordBody::Cursor(decode_cursor(r)?),
        RecordKind::LIFECYCLE => RecordBody::Lifecycle(decode_lifecycle(r)?),
        _ => RecordBody::Marker(Marker { text: r.str()? }),
    };
    Ok(Record { ts_ns, body })
}

fn encode_session(w: &mut BodyWriter<'_>, s: &SessionStart) -> Result<(), CodecError> {
    w.u64(s.wall_clock_unix_ns);
    w.u64(s.features_offered);
    w.u64(s.features_acked);
    w.u64(s.protocol_features);
    w.u16(s.num_queues);
    w.u8(s.mode as u8);
    w.str(&s.tool)?;
    w.str(&s.tool_version)?;
    w.str(&s.renderer)?;
    w.u16_list(&s.queue_sizes)?;
    w.payload(&s.device_config)
}

fn decode_session(r: &mut BodyReader<'_>) -> Result<SessionStart, CodecError> {
    Ok(SessionStart {
        wall_clock_unix_ns: r.u64(),
        features_offered: r.u64(),
        features_acked: r.u64(),
        protocol_features: r.u64(),
        num_queues: r.u16(),
        mode: capture_mode(r.u8()),
        tool: r.str()?,
        tool_version: r.str()?,
        renderer: r.str()?,
        queue_sizes: r.u16_list()?,
        device_config: r.payload()?,
    })
}

/// vhost-user and vhost-user-gpu messages share one layout.
fn encode_message(
    w: &mut BodyWriter<'_>,
    request: u32,
    flags: u32,
    direction: Direction,
    fd_count: u8,
    payload: &Payload,
) -> Result<(), CodecError> {
    w.u32(request);
    w.u32(flags);
    w.u8(direction as u8);
    w.u8(fd_count);
    w.payload(payload)
}

type MessageFields = (u32, u32, Direction, u8, Payload);

fn decode_message(r: &mut BodyReader<'_>) -> Result<MessageFields, CodecError> {
    Ok((r.u32(), r.u32(), direction(r.u8()), r.u8(), r.payload()?))
}

fn encode_command(w: &mut BodyWriter<'_>, c: &CommandRecord) -> Result<(), CodecError> {
    w.u16(c.queue);
    w.u16(c.head);
    w.u32(c.writable_len);
    w.descriptors(&c.descriptors)?;
    w.payload(&c.request)
}

fn decode_command(r: &mut BodyReader<'_>) -> Result<CommandRecord, CodecError> {
    Ok(CommandRecord {
        queue: r.u16(),
        head: r.u16(),
        writable_len: r.u32(),
        descriptors: r.descriptors()?,
        request: r.payload()?,
    })
}

fn encode_memory_read(w: &mut BodyWriter<'_>, m: &MemoryRead) -> Result<(), CodecError> {
    w.u64(m.command);
    w.u64(m.addr);
    w.u32(m.resource_id);
    w.payload(&m.data)
}

fn encode_response(w: &mut BodyWriter<'_>, r: &ResponseRecord) -> Result<(), CodecError> {
    w.u64(r.command);
    w.u16(r.queue);
    w.u16(r.head);
    w.u32(r.used_len);
    w.payload(&r.bytes)
}

fn encode_fence(w: &mut BodyWriter<'_>, x: &FenceSignal) {
    w.u64(x.command);
    w.u64(x.fence_id);
    w.u32(x.ctx_id);
    w.u8(x.ring_idx);
    w.bool(x.context_ring);
}

fn encode_frame(w: &mut BodyWriter<'_>, x: &Frame) -> Result<(), CodecError> {
    w.u64(x.command);
    w.u32(x.scanout_id);
    w.u32(x.resource_id);
    w.u32(x.format);
    w.u32(x.width);
    w.u32(x.height);
    w.u32(x.stride);
    w.rect(x.rect);
    w.payload(&x.pixels)
}

fn encode_cursor(w: &mut BodyWriter<'_>, c: &Cursor) -> Result<(), CodecError> {
    w.u64(c.command);
    w.u32(c.scanout_id);
    w.u32(c.x);
    w.u32(c.y);
    w.u32(c.hot_x);
    w.u32(c.hot_y);
    w.u32(c.resource_id);
    w.u8(c.action as u8);
    w.opt_payload(c.image.as_ref())
}

fn decode_cursor(r: &mut BodyReader<'_>) -> Result<Cursor, CodecError> {
    Ok(Cursor {
        command: r.u64(),
        scanout_id: r.u32(),
        x: r.u32(),
        y: r.u32(),
        hot_x: r.u32(),
        hot_y: r.u32(),
        resource_id: r.u32(),
        action: cursor_action(r.u8()),
        image: r.opt_payload()?,
    })
}

fn encode_lifecycle(w: &mut BodyWriter<'_>, l: &Lifecycle) -> Result<(), CodecError> {
    w.u16(l.kind as u16);
    let mut present = 0;
    if l.queue.is_some() {
        present |= PRESENT_QUEUE;
    }
    if l.command.is_some() {
        present |= PRESENT_COMMAND;
    }
    w.presence(present);
    w.u16(l.queue.unwrap_or(0));
    w.u64(l.command.unwrap_or(0));
    w.str(&l.message)
}

fn decode_lifecycle(r: &mut BodyReader<'_>) -> Result<Lifecycle, CodecError> {
    let kind = LifecycleKind::from_code(r.u16());
    let present = r.presence();
    let queue = r.u16();
    let command = r.u64();
    Ok(Lifecycle {
        kind,
        queue: (present & PRESENT_QUEUE != 0).then_some(queue),
        command: (present & PRESENT_COMMAND != 0).then_some(command),
        message: r.str()?,
    })
}

fn capture_mode(v: u8) -> CaptureMode {
    match v {
        0 => CaptureMode::BuiltIn,
        1 => CaptureMode::Proxy,
        2 => CaptureMode::Synthetic,
        _ => CaptureMode::Other,
    }
}

fn direction(v: u8) -> Direction {
    match v {
        0 => Direction::FrontToBack,
        1 => Direction::BackToFront,
        2 => Direction::BackendRequest,
        3 => Direction::BackendReply,
        _ => Direction::Other,
    }
}

fn cursor_action(v: u8) -> CursorAction {
    match v {
        0 => CursorAction::Update,
        1 => CursorAction::Move,
        2 => CursorAction::Hide,
        _ => CursorAction::Other,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn layouts_fields_are_contiguous_and_fill_fixed_len() {
        for (i, l) in LAYOUTS.iter().enumerate() {
            assert_eq!(l.kind, RecordKind::ALL[i], "LAYOUTS is in kind order");
            let mut at = 0u16;
            for fs in l.fields {
                assert_eq!(fs.offset, at, "{}.{} offset", l.kind.name(), fs.name);
                at += fs.ty.size();
            }
            assert_eq!(at, l.fixed_len, "{} fixed_len", l.kind.name());
        }
    }

    #[test]
    fn layout_of_internal_or_unknown_kind_is_none() {
        assert!(layout(0).is_none());
        assert!(layout(0x0C).is_none());
        assert!(layout(0x0100).is_none());
        assert_eq!(layout(3).map(|l| l.kind), Some(RecordKind::COMMAND));
    }

    #[test]
    fn decode_short_fixed_part_reads_missing_fields_as_zero() {
        // A response body written by an imagined older version whose fixed part ended after
        // `queue`: the later fields must read as zero/empty.
        let mut body = Vec::new();
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&10u16.to_le_bytes());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u16.to_le_bytes());
        let r = decode_body(RecordKind::RESPONSE.0, &body).expect("decodes");
        assert_eq!(
            r,
            Record {
                ts_ns: 7,
                body: RecordBody::Response(ResponseRecord {
                    command: 42,
                    queue: 3,
                    head: 0,
                    used_len: 0,
                    bytes: Payload::empty(),
                })
            }
        );
    }

    #[test]
    fn decode_longer_fixed_part_and_trailing_sections_are_ignored() {
        let rec = Record {
            ts_ns: 9,
            body: RecordBody::Marker(Marker { text: "hi".into() }),
        };
        let mut body = Vec::new();
        encode_body(&mut body, &rec).expect("encodes");
        // Grow the fixed part by 4 unknown bytes and append an unknown variable section.
        let mut newer = body[..16].to_vec();
        newer[8..10].copy_from_slice(&8u16.to_le_bytes());
        newer.extend_from_slice(&body[16..20]);
        newer.extend_from_slice(&[0xAA; 4]);
        newer.extend_from_slice(b"hi");
        newer.extend_from_slice(b"future section");
        assert_eq!(decode_body(RecordKind::MARKER.0, &newer), Ok(rec));
    }

    #[test]
    fn gpu_socket_data_roundtrips_and_is_absent_in_a_1_0_body() {
        let msg = |data| Record {
            ts_ns: 5,
            body: RecordBody::GpuSocket(GpuSocketMessage {
                direction: Direction::BackendRequest,
                request: 8,
                flags: 0,
                fd_count: 0,
                payload: Payload::Inline(vec![1; 20]),
                data,
            }),
        };
        let with = msg(Some(Payload::Inline(vec![7; 16])));
        let mut body = Vec::new();
        encode_body(&mut body, &with).expect("encodes");
        assert_eq!(decode_body(RecordKind::GPU_SOCKET.0, &body), Ok(with));
        // A 1.0 body: fixed_len 20, then the payload's bytes.
        let mut old = Vec::new();
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&20u16.to_le_bytes());
        old.extend_from_slice(&[0; 6]);
        old.extend_from_slice(&8u32.to_le_bytes());
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&[Direction::BackendRequest as u8, 0, 0, 0]);
        old.extend_from_slice(&20u32.to_le_bytes());
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&[1; 20]);
        assert_eq!(decode_body(RecordKind::GPU_SOCKET.0, &old), Ok(msg(None)));
    }
}
