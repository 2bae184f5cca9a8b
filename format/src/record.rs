//! The records a capture is made of.
//!
//! A record is one event seen at the boundary between a VM and its virtio-gpu renderer. Records
//! keep what was on the wire unmodified (raw request/response bytes, descriptor layout, raw
//! vhost-user payloads); every decoded view is derived from those bytes by [`crate::wire`].
//!
//! Records are numbered from 0 in file order ([`RecordId`]); other records refer to a command by
//! the `RecordId` of its [`CommandRecord`]. Large byte strings are [`Payload`]s: stored inline in
//! the record, or once per content in a compressed blob that records reference by hash.

use serde::Serialize;

/// Index of a record in its capture, counted from 0 in file order.
pub type RecordId = u64;

/// 128-bit content hash (XXH3-128) of a payload's uncompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ContentHash(pub u128);

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Where a blob payload lives in the capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BlobRef {
    /// Hash of the uncompressed content.
    pub hash: ContentHash,
    /// Length of the uncompressed content in bytes.
    pub len: u64,
    /// File offset of the blob chunk that holds the content.
    pub offset: u64,
}

/// A byte string carried by a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Payload {
    /// The bytes, stored inside the record body.
    Inline(Vec<u8>),
    /// The bytes, stored once in a (possibly compressed) blob chunk.
    Blob(BlobRef),
}

impl Payload {
    /// An empty inline payload.
    pub const fn empty() -> Self {
        Payload::Inline(Vec::new())
    }

    /// Length of the uncompressed bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::Blob(r) => r.len,
        }
    }

    /// True when the payload holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes when inline; `None` for a blob (read it through the capture reader).
    pub fn inline(&self) -> Option<&[u8]> {
        match self {
            Payload::Inline(b) => Some(b),
            Payload::Blob(_) => None,
        }
    }
}

/// One record: when it happened and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Monotonic nanoseconds since the capture started (the session start record holds the wall
    /// clock of time 0).
    pub ts_ns: u64,
    /// The event.
    pub body: RecordBody,
}

/// Record kind codes as stored in the chunk header. Values below [`RecordKind::FIRST_INTERNAL`]
/// are records (numbered, visible); the rest are container-internal chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RecordKind(pub u16);

impl RecordKind {
    /// [`SessionStart`].
    pub const SESSION_START: RecordKind = RecordKind(0x0001);
    /// [`VhostUserMessage`].
    pub const VHOST_USER: RecordKind = RecordKind(0x0002);
    /// [`CommandRecord`].
    pub const COMMAND: RecordKind = RecordKind(0x0003);
    /// [`MemoryRead`].
    pub const MEMORY_READ: RecordKind = RecordKind(0x0004);
    /// [`ResponseRecord`].
    pub const RESPONSE: RecordKind = RecordKind(0x0005);
    /// [`FenceSignal`].
    pub const FENCE: RecordKind = RecordKind(0x0006);
    /// [`GpuSocketMessage`].
    pub const GPU_SOCKET: RecordKind = RecordKind(0x0007);
    /// [`Frame`].
    pub const FRAME: RecordKind = RecordKind(0x0008);
    /// [`Cursor`].
    pub const CURSOR: RecordKind = RecordKind(0x0009);
    /// [`Lifecycle`].
    pub const LIFECYCLE: RecordKind = RecordKind(0x000A);
    /// [`Marker`].
    pub const MARKER: RecordKind = RecordKind(0x000B);
    /// First kind code used by container-internal chunks (blobs, index). Not a record.
    pub const FIRST_INTERNAL: u16 = 0x0100;

    /// All record kinds this version knows, in code order.
    pub const ALL: [RecordKind; 11] = [
        Self::SESSION_START,
        Self::VHOST_USER,
        Self::COMMAND,
        Self::MEMORY_READ,
        Self::RESPONSE,
        Self::FENCE,
        Self::GPU_SOCKET,
        Self::FRAME,
        Self::CURSOR,
        Self::LIFECYCLE,
        Self::MARKER,
    ];

    /// Short lower-case name used by the CLI (`--kind command`) and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::SESSION_START => "session",
            Self::VHOST_USER => "vhost-user",
            Self::COMMAND => "command",
            Self::MEMORY_READ => "memory-read",
            Self::RESPONSE => "response",
            Self::FENCE => "fence",
            Self::GPU_SOCKET => "gpu-socket",
            Self::FRAME => "frame",
            Self::CURSOR => "cursor",
            Self::LIFECYCLE => "lifecycle",
            Self::MARKER => "marker",
            _ => "unknown",
        }
    }

    /// Inverse of [`RecordKind::name`].
    pub fn from_name(name: &str) -> Option<RecordKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The event a record describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecordBody {
    /// First record of every capture.
    SessionStart(SessionStart),
    /// A vhost-user message on the front-end socket or the back-end request channel.
    VhostUser(VhostUserMessage),
    /// A descriptor chain taken from a virtqueue: one virtio-gpu request.
    Command(CommandRecord),
    /// Guest memory the device read on behalf of a command.
    MemoryRead(MemoryRead),
    /// The bytes the device wrote back for a command and the used length it reported.
    Response(ResponseRecord),
    /// A fence completed.
    Fence(FenceSignal),
    /// A message on the vhost-user-gpu display socket.
    GpuSocket(GpuSocketMessage),
    /// Pixels shown on a scanout.
    Frame(Frame),
    /// Cursor shape or position change.
    Cursor(Cursor),
    /// Connection, reset, error, crash and other device lifecycle events.
    Lifecycle(Lifecycle),
    /// A user annotation.
    Marker(Marker),
    /// A record kind this version does not know; kept so numbering stays stable.
    Unknown {
        /// The kind code from the chunk header.
        kind: u16,
        /// The undecoded body.
        body: Vec<u8>,
    },
}

impl RecordBody {
    /// The kind code of this body.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::SessionStart(_) => RecordKind::SESSION_START,
            RecordBody::VhostUser(_) => RecordKind::VHOST_USER,
            RecordBody::Command(_) => RecordKind::COMMAND,
            RecordBody::MemoryRead(_) => RecordKind::MEMORY_READ,
            RecordBody::Response(_) => RecordKind::RESPONSE,
            RecordBody::Fence(_) => RecordKind::FENCE,
            RecordBody::GpuSocket(_) => RecordKind::GPU_SOCKET,
            RecordBody::Frame(_) => RecordKind::FRAME,
            RecordBody::Cursor(_) => RecordKind::CURSOR,
            RecordBody::Lifecycle(_) => RecordKind::LIFECYCLE,
            RecordBody::Marker(_) => RecordKind::MARKER,
            RecordBody::Unknown { kind, .. } => RecordKind(*kind),
        }
    }

    /// Every payload this body carries, in encoding order.
    pub fn payloads(&self) -> Vec<&Payload> {
        self.payload_iter().collect()
    }

    /// Every payload this body carries, in encoding order, without collecting them (the
    /// capture writer checks each record's blob references with it).
    pub fn payload_iter(&self) -> impl Iterator<Item = &Payload> {
        let (first, second) = match self {
            RecordBody::SessionStart(s) => (Some(&s.device_config), None),
            RecordBody::VhostUser(m) => (Some(&m.payload), None),
            RecordBody::Command(c) => (Some(&c.request), None),
            RecordBody::MemoryRead(m) => (Some(&m.data), None),
            RecordBody::Response(r) => (Some(&r.bytes), None),
            RecordBody::GpuSocket(g) => (Some(&g.payload), g.data.as_ref()),
            RecordBody::Frame(f) => (Some(&f.pixels), None),
            RecordBody::Cursor(c) => (c.image.as_ref(), None),
            RecordBody::Fence(_)
            | RecordBody::Lifecycle(_)
            | RecordBody::Marker(_)
            | RecordBody::Unknown { .. } => (None, None),
        };
        first.into_iter().chain(second)
    }
}

/// How the capturing tool was attached to the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum CaptureMode {
    /// vgt-capture served the guest itself (built-in renderer).
    BuiltIn = 0,
    /// vgt-capture forwarded to a real backend.
    Proxy = 1,
    /// Made by a program (tests, benchmarks, conversions), not from a live VM.
    Synthetic = 2,
    /// A mode code this version does not know.
    Other = 255,
}

/// First record of a capture: what recorded it and what the device offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionStart {
    /// Wall clock (Unix epoch nanoseconds) at `ts_ns == 0`.
    pub wall_clock_unix_ns: u64,
    /// Name of the recording tool, e.g. `vgt-capture`.
    pub tool: String,
    /// Version of the recording tool.
    pub tool_version: String,
    /// Built-in or proxy.
    pub mode: CaptureMode,
    /// Renderer description, e.g. `rutabaga_gfx 0.1.85 (2d)` or the proxied backend's command.
    pub renderer: String,
    /// Virtio feature bits the device offered (GET_FEATURES reply).
    pub features_offered: u64,
    /// Virtio feature bits the driver acked (SET_FEATURES); 0 when not yet negotiated.
    pub features_acked: u64,
    /// vhost-user protocol feature bits negotiated; 0 when unknown.
    pub protocol_features: u64,
    /// Number of virtqueues the device serves.
    pub num_queues: u16,
    /// Queue sizes known at start (may be updated later by SET_VRING_NUM messages).
    pub queue_sizes: Vec<u16>,
    /// The device configuration space (`struct virtio_gpu_config`) as the device reports it.
    pub device_config: Payload,
}

/// Which socket a vhost-user message travelled on, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum Direction {
    /// Front-end (QEMU) to back-end: a request on the main socket.
    FrontToBack = 0,
    /// Back-end to front-end: a reply on the main socket.
    BackToFront = 1,
    /// Back-end to front-end: a request on the back-end request channel.
    BackendRequest = 2,
    /// Front-end to back-end: a reply on the back-end request channel.
    BackendReply = 3,
    /// A direction code this version does not know.
    Other = 255,
}

/// A vhost-user message (header fields plus raw payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhostUserMessage {
    /// Who sent it to whom.
    pub direction: Direction,
    /// The request code (see [`crate::wire::vhost_user`]).
    pub request: u32,
    /// The header flags word.
    pub flags: u32,
    /// Number of file descriptors attached.
    pub fd_count: u8,
    /// The payload bytes exactly as sent.
    pub payload: Payload,
}

/// One descriptor of a chain as the device walked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Descriptor {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Virtq descriptor flags (NEXT=1, WRITE=2, INDIRECT=4).
    pub flags: u16,
    /// Next index (meaningful with NEXT).
    pub next: u16,
}

/// A virtio-gpu request taken from a virtqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRecord {
    /// Virtqueue index (0 control, 1 cursor).
    pub queue: u16,
    /// Head descriptor index of the chain.
    pub head: u16,
    /// The chain as walked (indirect tables expanded in place).
    pub descriptors: Vec<Descriptor>,
    /// Bytes available for the response (sum of device-writable descriptor lengths).
    pub writable_len: u32,
    /// The device-readable bytes of the chain, concatenated: header, command struct and any
    /// trailing data (mem entries, command streams). Decode with [`crate::wire`].
    pub request: Payload,
}

/// Guest memory read by the device on behalf of a command (transfer sources, cursor images…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryRead {
    /// The command that caused the read.
    pub command: RecordId,
    /// Resource the read was for (0 when none).
    pub resource_id: u32,
    /// Guest-physical address of the first byte.
    pub addr: u64,
    /// The bytes read.
    pub data: Payload,
}

/// The device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseRecord {
    /// The command answered.
    pub command: RecordId,
    /// Virtqueue index.
    pub queue: u16,
    /// Head descriptor index returned in the used ring.
    pub head: u16,
    /// Length the device reported in the used ring.
    pub used_len: u32,
    /// The bytes the device wrote (the response struct).
    pub bytes: Payload,
}

/// A completed fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FenceSignal {
    /// The fenced command whose completion this is (u64::MAX when unknown).
    pub command: RecordId,
    /// Fence id.
    pub fence_id: u64,
    /// Context id (0 for the global timeline).
    pub ctx_id: u32,
    /// Ring index within the context.
    pub ring_idx: u8,
    /// True when the fence was on a per-context ring (INFO_RING_IDX).
    pub context_ring: bool,
}

/// A message on the vhost-user-gpu display socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuSocketMessage {
    /// Back-end to front-end (request) or front-end to back-end (reply).
    pub direction: Direction,
    /// Request code (see [`crate::wire::gpu_socket`]).
    pub request: u32,
    /// Header flags.
    pub flags: u32,
    /// Number of file descriptors attached (dmabufs).
    pub fd_count: u8,
    /// The payload as sent, less `data` (for an UPDATE whose pixels are in `data`: the header).
    pub payload: Payload,
    /// Bulk bytes that follow `payload` on the wire (the pixels of an UPDATE), stored separately
    /// so that they share their blob with the Frame record showing the same pixels; the message's
    /// wire payload is `payload` followed by `data`. `None` in files written before format 1.1.
    pub data: Option<Payload>,
}

impl GpuSocketMessage {
    /// Splits a wire payload into what a writer stores as `payload` and as `data`: for a
    /// back-end UPDATE request (code 8) with pixels, the 20-byte header and the pixels; for
    /// anything else, the whole payload and `None`.
    pub fn split_wire_payload(
        direction: Direction,
        request: u32,
        payload: &[u8],
    ) -> (&[u8], Option<&[u8]>) {
        const UPDATE: u32 = 8;
        let header = crate::wire::gpu_socket::GpuUpdate::HEADER_SIZE;
        if direction == Direction::BackendRequest && request == UPDATE && payload.len() > header {
            let (h, d) = payload.split_at(header);
            (h, Some(d))
        } else {
            (payload, None)
        }
    }

    /// The message's payload exactly as it crossed the socket: `payload` followed by `data`.
    /// `read` resolves one payload to its bytes (for example `CaptureReader::read_payload`).
    pub fn wire_payload<B, E>(
        &self,
        mut read: impl FnMut(&Payload) -> Result<B, E>,
    ) -> Result<Vec<u8>, E>
    where
        B: AsRef<[u8]>,
    {
        let mut out = read(&self.payload)?.as_ref().to_vec();
        if let Some(d) = &self.data {
            out.extend_from_slice(read(d)?.as_ref());
        }
        Ok(out)
    }
}

/// Pixels shown on a scanout after a flush or display update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The command that caused it (u64::MAX when none).
    pub command: RecordId,
    /// Scanout index.
    pub scanout_id: u32,
    /// Resource shown.
    pub resource_id: u32,
    /// virtio-gpu format code of the pixels.
    pub format: u32,
    /// Full width of the pixel buffer.
    pub width: u32,
    /// Full height of the pixel buffer.
    pub height: u32,
    /// Bytes per row of `pixels`.
    pub stride: u32,
    /// Damaged rectangle (x, y, width, height) within the frame.
    pub rect: [u32; 4],
    /// The whole frame's pixels, `stride * height` bytes.
    pub pixels: Payload,
}

/// What a cursor record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum CursorAction {
    /// New image and position.
    Update = 0,
    /// Position change only.
    Move = 1,
    /// Cursor hidden.
    Hide = 2,
    /// An action code this version does not know.
    Other = 255,
}

/// Cursor shape or position change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cursor {
    /// The command that caused it.
    pub command: RecordId,
    /// Update, move or hide.
    pub action: CursorAction,
    /// Scanout index.
    pub scanout_id: u32,
    /// Position.
    pub x: u32,
    /// Position.
    pub y: u32,
    /// Hotspot.
    pub hot_x: u32,
    /// Hotspot.
    pub hot_y: u32,
    /// Cursor resource.
    pub resource_id: u32,
    /// 64x64 ARGB image for updates.
    pub image: Option<Payload>,
}

/// Lifecycle event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u16)]
pub enum LifecycleKind {
    /// A front-end connected.
    Connect = 1,
    /// The front-end disconnected.
    Disconnect = 2,
    /// Device reset.
    Reset = 3,
    /// One virtqueue was reset.
    QueueReset = 4,
    /// A virtqueue was enabled or started.
    QueueStart = 5,
    /// A virtqueue was disabled or stopped.
    QueueStop = 6,
    /// The driver set DRIVER_OK.
    DriverOk = 7,
    /// Configuration changed (display event raised).
    ConfigChange = 8,
    /// The device rejected guest input (`command` names it).
    ValidationError = 9,
    /// An error in the capturing tool or backend.
    Error = 10,
    /// The renderer or backend crashed.
    Crash = 11,
    /// The capture was finished cleanly.
    End = 12,
    /// The guest changed guest memory that a command in flight had read (`command` names the
    /// command): a driver race. In proxy mode the backend may have read the newer bytes, which
    /// the capture does not hold (it holds what was there when the command was taken).
    InFlightWrite = 13,
    /// A line the backend process wrote to its standard output (proxy mode, a backend started
    /// with `--backend-cmd`; `command` names the last command taken from the guest by then).
    BackendStdout = 14,
    /// A line the backend process wrote to its standard error (as [`LifecycleKind::BackendStdout`]):
    /// where a crashing backend says why.
    BackendStderr = 15,
    /// A code this version does not know.
    Other = 0xffff,
}

impl LifecycleKind {
    /// Every kind this version knows, in code order ([`LifecycleKind::Other`] excluded).
    pub const ALL: [LifecycleKind; 15] = [
        LifecycleKind::Connect,
        LifecycleKind::Disconnect,
        LifecycleKind::Reset,
        LifecycleKind::QueueReset,
        LifecycleKind::QueueStart,
        LifecycleKind::QueueStop,
        LifecycleKind::DriverOk,
        LifecycleKind::ConfigChange,
        LifecycleKind::ValidationError,
        LifecycleKind::Error,
        LifecycleKind::Crash,
        LifecycleKind::End,
        LifecycleKind::InFlightWrite,
        LifecycleKind::BackendStdout,
        LifecycleKind::BackendStderr,
    ];

    /// The kind with this code; [`LifecycleKind::Other`] for a code this version does not know.
    pub fn from_code(code: u16) -> LifecycleKind {
        LifecycleKind::ALL
            .into_iter()
            .find(|k| *k as u16 == code)
            .unwrap_or(LifecycleKind::Other)
    }
}

/// Connection, reset, error, crash and other lifecycle events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// What happened.
    pub kind: LifecycleKind,
    /// Queue concerned, when any.
    pub queue: Option<u16>,
    /// Command concerned, when any.
    pub command: Option<RecordId>,
    /// Human-readable detail.
    pub message: String,
}

/// A user annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    /// The text.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lifecycle_code_reads_back_as_its_kind_and_others_as_other() {
        for (i, k) in LifecycleKind::ALL.into_iter().enumerate() {
            // Codes are 1, 2, 3 ... in ALL's order, so a new kind cannot be left out of ALL.
            assert_eq!(k as u16, i as u16 + 1, "{k:?}");
            assert_eq!(LifecycleKind::from_code(k as u16), k);
        }
        for code in [0, LifecycleKind::ALL.len() as u16 + 1, 0x7fff, 0xffff] {
            assert_eq!(LifecycleKind::from_code(code), LifecycleKind::Other);
        }
    }
}
