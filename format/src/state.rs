//! The device state model: folds records into resources, contexts, scanouts and fences.
//!
//! [`DeviceState::apply`] takes records in file order and keeps what a virtio-gpu device would
//! hold after them: which resources exist (with format, size, backing, contexts and the scanouts
//! showing them), which contexts exist, what each scanout shows, and which fenced commands have
//! not completed. A command changes the state when its successful response is recorded (a command
//! answered with an error changed nothing); cursor-queue commands, which get no response, take
//! effect when submitted. The model never fails: bytes that do not decode are counted in
//! [`DeviceState::undecodable`] and otherwise ignored, so a damaged capture still folds.
//!
//! Destroyed resources and contexts are kept in [`DeviceState::retired_resources`] and
//! [`DeviceState::retired_contexts`] with the records that created and destroyed them, so tools
//! can show an object's whole life.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::record::{CommandRecord, Payload, Record, RecordBody, RecordId};
use crate::wire::{
    BlobFlags, BlobMem, Command, CtrlHeader, Format, MemEntry, Rect, Request, Response,
};

/// Number of scanouts a virtio-gpu device can have.
pub const MAX_SCANOUTS: usize = 16;

/// Resolves blob payloads to bytes (implemented by the capture reader).
pub trait PayloadSource {
    /// The payload's bytes, or `None` when they cannot be read.
    fn payload_bytes<'a>(&'a self, payload: &'a Payload) -> Option<Cow<'a, [u8]>>;
}

/// A payload source that can only resolve inline payloads.
#[derive(Debug, Default, Clone, Copy)]
pub struct InlineOnly;

impl PayloadSource for InlineOnly {
    fn payload_bytes<'a>(&'a self, payload: &'a Payload) -> Option<Cow<'a, [u8]>> {
        payload.inline().map(Cow::Borrowed)
    }
}

/// How a resource was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ResourceKind {
    /// RESOURCE_CREATE_2D.
    TwoD,
    /// RESOURCE_CREATE_3D.
    ThreeD {
        /// Gallium texture target.
        target: u32,
        /// Bind flags.
        bind: u32,
        /// Depth.
        depth: u32,
        /// Array size.
        array_size: u32,
        /// Last mip level.
        last_level: u32,
        /// Sample count.
        nr_samples: u32,
    },
    /// RESOURCE_CREATE_BLOB.
    Blob {
        /// Where the blob lives (guest, host3d, host3d+guest).
        blob_mem: BlobMem,
        /// Mappable/shareable/cross-device flags.
        blob_flags: BlobFlags,
        /// Host object id.
        blob_id: u64,
        /// Size in bytes.
        size: u64,
    },
}

/// A resource as the device holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Guest-chosen id.
    pub id: u32,
    /// How it was created.
    pub kind: ResourceKind,
    /// Pixel format (2D/3D resources; blobs get one from SET_SCANOUT_BLOB).
    pub format: Option<Format>,
    /// Width in pixels (0 for blobs until scanned out).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Guest memory backing the resource.
    pub backing: Vec<MemEntry>,
    /// Record that attached the current backing.
    pub backing_attached_at: Option<RecordId>,
    /// Contexts the resource is attached to.
    pub contexts: BTreeSet<u32>,
    /// Scanouts showing the resource.
    pub scanouts: BTreeSet<u32>,
    /// UUID assigned by RESOURCE_ASSIGN_UUID.
    pub uuid: Option<[u8; 16]>,
    /// Offset in the host-visible region while mapped.
    pub mapped_at_offset: Option<u64>,
    /// Record of the creating command.
    pub created_at: RecordId,
    /// Record of the command that destroyed it.
    pub destroyed_at: Option<RecordId>,
}

impl Resource {
    /// Total bytes of guest memory backing the resource.
    pub fn backing_bytes(&self) -> u64 {
        self.backing.iter().map(|e| u64::from(e.length)).sum()
    }
}

/// A rendering context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    /// Context id (from the command header).
    pub id: u32,
    /// The `context_init` word (capset id in the low 8 bits).
    pub context_init: u32,
    /// Debug name given by the guest.
    pub name: String,
    /// Resources attached.
    pub resources: BTreeSet<u32>,
    /// Record of CTX_CREATE.
    pub created_at: RecordId,
    /// Record of CTX_DESTROY.
    pub destroyed_at: Option<RecordId>,
}

/// What a scanout shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scanout {
    /// Resource shown (0 = disabled).
    pub resource_id: u32,
    /// Source rectangle within the resource.
    pub rect: Rect,
    /// Record that set it.
    pub set_at: Option<RecordId>,
}

/// A fenced command that has not completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingFence {
    /// The command.
    pub command: RecordId,
    /// Fence id.
    pub fence_id: u64,
    /// Context id.
    pub ctx_id: u32,
    /// Ring index.
    pub ring_idx: u8,
    /// True when on a per-context ring (INFO_RING_IDX).
    pub context_ring: bool,
    /// Submission time.
    pub submitted_ns: u64,
}

/// The state of a virtio-gpu device after a prefix of a capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceState {
    /// Live resources by id.
    pub resources: BTreeMap<u32, Resource>,
    /// Live contexts by id.
    pub contexts: BTreeMap<u32, Context>,
    /// Scanouts 0..16.
    pub scanouts: [Scanout; MAX_SCANOUTS],
    /// Fenced commands not yet completed, by command record.
    pub pending_fences: BTreeMap<RecordId, PendingFence>,
    /// Destroyed resources, in destruction order.
    pub retired_resources: Vec<Resource>,
    /// Destroyed contexts, in destruction order.
    pub retired_contexts: Vec<Context>,
    /// Feature bits offered by the device.
    pub features_offered: u64,
    /// Feature bits acked by the driver.
    pub features_acked: u64,
    /// `num_scanouts` from the device configuration.
    pub num_scanouts: u32,
    /// `num_capsets` from the device configuration.
    pub num_capsets: u32,
    /// Commands seen.
    pub commands: u64,
    /// Error responses seen.
    pub error_responses: u64,
    /// Commands or responses whose bytes did not decode.
    pub undecodable: u64,
    /// Last record applied.
    pub last_record: Option<RecordId>,
    /// Timestamp of the last record applied.
    pub last_ts_ns: u64,
    /// Commands waiting for their response: record id → (queue, decoded request).
    #[serde(skip)]
    awaiting_response: HashMap<RecordId, Request>,
}

impl DeviceState {
    /// An empty device.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands submitted whose response has not been recorded yet.
    pub fn commands_in_flight(&self) -> impl Iterator<Item = (RecordId, &Request)> {
        self.awaiting_response.iter().map(|(id, r)| (*id, r))
    }

    /// Folds one record into the state. `id` must be the record's number; records must come in
    /// file order.
    pub fn apply(&mut self, id: RecordId, record: &Record, payloads: &dyn PayloadSource) {
        self.last_record = Some(id);
        self.last_ts_ns = record.ts_ns;
        match &record.body {
            RecordBody::SessionStart(s) => {
                self.features_offered = s.features_offered;
                self.features_acked = s.features_acked;
                if let Some(cfg) = payloads.payload_bytes(&s.device_config) {
                    self.apply_config(&cfg);
                }
            }
            RecordBody::VhostUser(m) => {
                // SET_FEATURES (2) carries the acked feature bits; GET_CONFIG replies (24) the
                // device configuration space behind a 12-byte config header.
                let bytes = payloads.payload_bytes(&m.payload);
                match (m.request, m.direction, bytes) {
                    (2, crate::record::Direction::FrontToBack, Some(b)) if b.len() >= 8 => {
                        self.features_acked = le_u64(&b[..8]);
                    }
                    (24, crate::record::Direction::BackToFront, Some(b)) if b.len() >= 12 => {
                        let offset = le_u32(&b[0..4]);
                        if offset == 0 {
                            self.apply_config(&b[12..]);
                        }
                    }
                    _ => {}
                }
            }
            RecordBody::Command(c) => self.apply_command(id, record.ts_ns, c, payloads),
            RecordBody::Response(r) => {
                let Some(request) = self.awaiting_response.remove(&r.command) else {
                    return;
                };
                let Some(bytes) = payloads.payload_bytes(&r.bytes) else {
                    self.undecodable += 1;
                    return;
                };
                match Response::decode(&bytes) {
                    Ok(response) if response.response_type().is_error() => {
                        self.error_responses += 1;
                        // A failed command completes its fence without effect.
                        self.pending_fences.remove(&r.command);
                    }
                    Ok(response) => {
                        self.execute(r.command, &request, Some(&response));
                        if response.header.is_fenced() {
                            self.complete_fences(&response.header);
                        }
                    }
                    Err(_) => self.undecodable += 1,
                }
            }
            RecordBody::Fence(f) => {
                let header = CtrlHeader {
                    type_: 0,
                    flags: crate::wire::FLAG_FENCE
                        | if f.context_ring {
                            crate::wire::FLAG_INFO_RING_IDX
                        } else {
                            0
                        },
                    fence_id: f.fence_id,
                    ctx_id: f.ctx_id,
                    ring_idx: f.ring_idx,
                    padding: [0; 3],
                };
                self.complete_fences(&header);
            }
            RecordBody::Lifecycle(l) => {
                if l.kind == crate::record::LifecycleKind::Reset {
                    self.reset(id);
                }
            }
            RecordBody::MemoryRead(_)
            | RecordBody::GpuSocket(_)
            | RecordBody::Frame(_)
            | RecordBody::Cursor(_)
            | RecordBody::Marker(_)
            | RecordBody::Unknown { .. } => {}
        }
    }

    fn apply_config(&mut self, cfg: &[u8]) {
        if cfg.len() >= 16 {
            self.num_scanouts = le_u32(&cfg[8..12]);
            self.num_capsets = le_u32(&cfg[12..16]);
        }
    }

    fn apply_command(
        &mut self,
        id: RecordId,
        ts_ns: u64,
        c: &CommandRecord,
        payloads: &dyn PayloadSource,
    ) {
        self.commands += 1;
        let Some(bytes) = payloads.payload_bytes(&c.request) else {
            self.undecodable += 1;
            return;
        };
        let request = match Request::decode(&bytes) {
            Ok(r) => r,
            Err(_) => {
                self.undecodable += 1;
                return;
            }
        };
        if request.header.is_fenced() {
            self.pending_fences.insert(
                id,
                PendingFence {
                    command: id,
                    fence_id: request.header.fence_id,
                    ctx_id: request.header.ctx_id,
                    ring_idx: request.header.ring_idx,
                    context_ring: request.header.has_ring_idx(),
                    submitted_ns: ts_ns,
                },
            );
        }
        if request.command_type().is_cursor() || c.writable_len == 0 {
            // The cursor queue gets no response: the command takes effect now.
            self.execute(id, &request, None);
            self.pending_fences.remove(&id);
        } else {
            self.awaiting_response.insert(id, request);
        }
    }

    /// A fence completion retires every pending fence on the same timeline with an id up to
    /// the completed one (the Linux driver's semantics).
    fn complete_fences(&mut self, hdr: &CtrlHeader) {
        let context_ring = hdr.has_ring_idx();
        self.pending_fences.retain(|_, f| {
            let same_timeline = if context_ring {
                f.context_ring && f.ctx_id == hdr.ctx_id && f.ring_idx == hdr.ring_idx
            } else {
                !f.context_ring
            };
            !(same_timeline && f.fence_id <= hdr.fence_id)
        });
    }

    fn reset(&mut self, id: RecordId) {
        let resources = std::mem::take(&mut self.resources);
        for (_, mut r) in resources {
            r.destroyed_at = Some(id);
            self.retired_resources.push(r);
        }
        let contexts = std::mem::take(&mut self.contexts);
        for (_, mut c) in contexts {
            c.destroyed_at = Some(id);
            self.retired_contexts.push(c);
        }
        self.scanouts = Default::default();
        self.pending_fences.clear();
        self.awaiting_response.clear();
    }

    fn execute(&mut self, id: RecordId, request: &Request, response: Option<&Response>) {
        let ctx_id = request.header.ctx_id;
        match &request.command {
            Command::ResourceCreate2d(c) => self.create(
                id,
                c.resource_id,
                ResourceKind::TwoD,
                Some(c.format),
                c.width,
                c.height,
                Vec::new(),
            ),
            Command::ResourceCreate3d(c) => self.create(
                id,
                c.resource_id,
                ResourceKind::ThreeD {
                    target: c.target,
                    bind: c.bind,
                    depth: c.depth,
                    array_size: c.array_size,
                    last_level: c.last_level,
                    nr_samples: c.nr_samples,
                },
                Some(c.format),
                c.width,
                c.height,
                Vec::new(),
            ),
            Command::ResourceCreateBlob(c) => {
                self.create(
                    id,
                    c.resource_id,
                    ResourceKind::Blob {
                        blob_mem: c.blob_mem,
                        blob_flags: c.blob_flags,
                        blob_id: c.blob_id,
                        size: c.size,
                    },
                    None,
                    0,
                    0,
                    c.entries.clone(),
                );
                if !c.entries.is_empty()
                    && let Some(r) = self.resources.get_mut(&c.resource_id)
                {
                    r.backing_attached_at = Some(id);
                }
                if ctx_id != 0 {
                    self.attach_to_context(ctx_id, c.resource_id);
                }
            }
            Command::ResourceUnref(c) => {
                if let Some(mut r) = self.resources.remove(&c.resource_id) {
                    r.destroyed_at = Some(id);
                    for s in &r.scanouts {
                        if let Some(scanout) = self.scanouts.get_mut(*s as usize) {
                            *scanout = Scanout::default();
                        }
                    }
                    for ctx in &r.contexts {
                        if let Some(c) = self.contexts.get_mut(ctx) {
                            c.resources.remove(&r.id);
                        }
                    }
                    self.retired_resources.push(r);
                }
            }
            Command::ResourceAttachBacking(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.backing = c.entries.clone();
                    r.backing_attached_at = Some(id);
                }
            }
            Command::ResourceDetachBacking(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.backing.clear();
                    r.backing_attached_at = None;
                }
            }
            Command::SetScanout(c) => self.set_scanout(id, c.scanout_id, c.resource_id, c.r),
            Command::SetScanoutBlob(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.format = Some(c.format);
                    r.width = c.width;
                    r.height = c.height;
                }
                self.set_scanout(id, c.scanout_id, c.resource_id, c.r);
            }
            Command::ResourceAssignUuid(c) => {
                if let (Some(r), Some(resp)) = (self.resources.get_mut(&c.resource_id), response)
                    && let crate::wire::ResponseBody::OkResourceUuid(uuid) = &resp.body
                {
                    r.uuid = Some(*uuid);
                }
            }
            Command::CtxCreate(c) => {
                let name_len = (c.nlen as usize).min(c.debug_name.len());
                let name = String::from_utf8_lossy(&c.debug_name[..name_len])
                    .trim_end_matches('\0')
                    .to_string();
                self.contexts.insert(
                    ctx_id,
                    Context {
                        id: ctx_id,
                        context_init: c.context_init,
                        name,
                        resources: BTreeSet::new(),
                        created_at: id,
                        destroyed_at: None,
                    },
                );
            }
            Command::CtxDestroy => {
                if let Some(mut c) = self.contexts.remove(&ctx_id) {
                    c.destroyed_at = Some(id);
                    for res in &c.resources {
                        if let Some(r) = self.resources.get_mut(res) {
                            r.contexts.remove(&ctx_id);
                        }
                    }
                    self.retired_contexts.push(c);
                }
            }
            Command::CtxAttachResource(c) => self.attach_to_context(ctx_id, c.resource_id),
            Command::CtxDetachResource(c) => {
                if let Some(ctx) = self.contexts.get_mut(&ctx_id) {
                    ctx.resources.remove(&c.resource_id);
                }
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.contexts.remove(&ctx_id);
                }
            }
            Command::ResourceMapBlob(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.mapped_at_offset = Some(c.offset);
                }
            }
            Command::ResourceUnmapBlob(c) => {
                if let Some(r) = self.resources.get_mut(&c.resource_id) {
                    r.mapped_at_offset = None;
                }
            }
            Command::GetDisplayInfo
            | Command::ResourceFlush(_)
            | Command::TransferToHost2d(_)
            | Command::GetCapsetInfo(_)
            | Command::GetCapset(_)
            | Command::GetEdid(_)
            | Command::TransferToHost3d(_)
            | Command::TransferFromHost3d(_)
            | Command::Submit3d(_)
            | Command::UpdateCursor(_)
            | Command::MoveCursor(_)
            | Command::Unknown(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        id: RecordId,
        resource_id: u32,
        kind: ResourceKind,
        format: Option<Format>,
        width: u32,
        height: u32,
        backing: Vec<MemEntry>,
    ) {
        self.resources.insert(
            resource_id,
            Resource {
                id: resource_id,
                kind,
                format,
                width,
                height,
                backing,
                backing_attached_at: None,
                contexts: BTreeSet::new(),
                scanouts: BTreeSet::new(),
                uuid: None,
                mapped_at_offset: None,
                created_at: id,
                destroyed_at: None,
            },
        );
    }

    fn attach_to_context(&mut self, ctx_id: u32, resource_id: u32) {
        if let Some(ctx) = self.contexts.get_mut(&ctx_id) {
            ctx.resources.insert(resource_id);
        }
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.contexts.insert(ctx_id);
        }
    }

    fn set_scanout(&mut self, id: RecordId, scanout_id: u32, resource_id: u32, rect: Rect) {
        let Some(slot) = self.scanouts.get_mut(scanout_id as usize) else {
            return;
        };
        let previous = slot.resource_id;
        *slot = if resource_id == 0 {
            Scanout::default()
        } else {
            Scanout {
                resource_id,
                rect,
                set_at: Some(id),
            }
        };
        if previous != 0
            && let Some(r) = self.resources.get_mut(&previous)
        {
            r.scanouts.remove(&scanout_id);
        }
        if resource_id != 0
            && let Some(r) = self.resources.get_mut(&resource_id)
        {
            r.scanouts.insert(scanout_id);
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
