//! The check engine: one pass over a capture that finds known virtio-gpu bug classes.
//!
//! [`Checker`] folds records in file order into a *guest view* of the device (what the driver
//! believes exists: resources, contexts, scanouts, mapped blobs, fence timelines), applying each
//! command when it is submitted, and reports a [`Finding`] whenever a command breaks a protocol
//! rule. The guest view is deliberately separate from `vgt_format::state::DeviceState`, which
//! applies commands when the device answers them: checks judge what the driver sent, whichever
//! way the device answered (the answers are audited by [`CheckId::Errors`]).
//!
//! Other tools use [`check_capture`] (a whole file) or drive a [`Checker`] themselves.

mod model;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;
use vgt_format::CaptureReader;
use vgt_format::record::{
    Direction, LifecycleKind, Payload, Record, RecordBody, RecordId, SessionStart,
};
use vgt_format::state::PayloadSource;
use vgt_format::wire::{
    Command, CtrlHeader, Request, Response, ResponseBody, VhostUserPayload, VhostUserRequest,
    decode_vhost_user_payload,
};

use model::{GuestView, Lookup, ResKind};

/// Findings kept per check; the rest are counted in [`Report::suppressed`].
pub const MAX_FINDINGS_PER_CHECK: usize = 200;

/// A fence latency is an outlier when it is this many times the median …
const OUTLIER_FACTOR: u64 = 10;
/// … and at least this long …
const OUTLIER_MIN_NS: u64 = 1_000_000;
/// … among at least this many fence latencies.
const OUTLIER_MIN_SAMPLES: usize = 16;

/// A command still unanswered this long before the capture's end is an error (the device hung
/// on it); closer to the end it may only have been cut off (a warning).
const UNANSWERED_HUNG_NS: u64 = 1_000_000_000;

/// Transfers may move this many bytes more than twice the flushed area before it is a finding
/// (room for partial rows and alignment).
const REDUNDANT_SLACK_BYTES: u64 = 4096;

/// The checks, in the order the issue lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// Resources never unreferenced, backing attached twice or detached when absent, leaks.
    Lifecycle,
    /// Transfer rectangles and boxes inside the resource, source bytes inside the backing.
    TransferBounds,
    /// Scanout, capset, context and resource ids that exist and are in range.
    Ids,
    /// Fence ids increase per timeline, every fence signals, in order, without outliers.
    Fences,
    /// Every error response and device error event.
    Errors,
    /// Commands before DRIVER_OK or ring enable; configuration changes.
    InitOrder,
    /// SET_SCANOUT inside its resource, unref of shown resources, flush of hidden ones.
    ModeChanges,
    /// Blob map offsets, alignment, overlap, map/unmap balance.
    BlobMaps,
    /// Identical uploads and transfers larger than what is flushed.
    RedundantCopies,
    /// Commands that name objects after unref, context destroy or device reset.
    UseAfterTeardown,
    /// Guest memory a command had read, changed by the guest while the command was in flight
    /// (recorded by the proxy as `InFlightWrite`): driver races.
    InFlightWrites,
    /// Commands that wanted a response and never got one (not fenced, not in flight at a
    /// recorded crash): a device that hung on them, or a capture cut mid-command.
    Unanswered,
}

impl CheckId {
    /// Every check.
    pub const ALL: [CheckId; 12] = [
        CheckId::Lifecycle,
        CheckId::TransferBounds,
        CheckId::Ids,
        CheckId::Fences,
        CheckId::Errors,
        CheckId::InitOrder,
        CheckId::ModeChanges,
        CheckId::BlobMaps,
        CheckId::RedundantCopies,
        CheckId::UseAfterTeardown,
        CheckId::InFlightWrites,
        CheckId::Unanswered,
    ];

    /// The name printed in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            CheckId::Lifecycle => "lifecycle",
            CheckId::TransferBounds => "transfer-bounds",
            CheckId::Ids => "ids",
            CheckId::Fences => "fences",
            CheckId::Errors => "errors",
            CheckId::InitOrder => "init-order",
            CheckId::ModeChanges => "mode-changes",
            CheckId::BlobMaps => "blob-maps",
            CheckId::RedundantCopies => "redundant-copies",
            CheckId::UseAfterTeardown => "use-after-teardown",
            CheckId::InFlightWrites => "in-flight-writes",
            CheckId::Unanswered => "unanswered",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Suspicious or wasteful, possibly legal.
    Warning,
    /// Breaks a protocol rule or shows a device failure.
    Error,
}

impl Severity {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check found it.
    pub check: CheckId,
    /// How bad it is.
    pub severity: Severity,
    /// The records involved, the offending one first.
    pub records: Vec<RecordId>,
    /// One line saying what is wrong.
    pub message: String,
}

/// Everything a check run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Findings in the order they were found (end-of-capture findings last).
    pub findings: Vec<Finding>,
    /// Findings dropped per check once [`MAX_FINDINGS_PER_CHECK`] were kept.
    pub suppressed: BTreeMap<CheckId, u64>,
    /// Records examined.
    pub records: u64,
    /// Commands examined.
    pub commands: u64,
    /// Records that could not be read (damaged chunks).
    pub unreadable_records: u64,
    /// Most resources alive at once.
    pub peak_live_resources: u64,
    /// Host bytes of the live resources at that peak.
    pub peak_live_bytes: u64,
    /// The command that reached the peak.
    pub peak_at: Option<RecordId>,
    /// Resources alive at the end.
    pub live_resources_at_end: u64,
    /// Guest memory bytes read that equal the previous read at the same address (partly
    /// redundant uploads; wholly redundant ones are findings).
    pub unchanged_upload_bytes: u64,
}

impl Report {
    /// Findings plus suppressed findings.
    pub fn total(&self) -> u64 {
        self.findings.len() as u64 + self.suppressed.values().sum::<u64>()
    }

    /// Findings of one check (kept ones only).
    pub fn of(&self, check: CheckId) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.check == check)
    }
}

/// Runs every check over a capture. Damaged records are counted and skipped.
pub fn check_capture(reader: &CaptureReader) -> Report {
    let mut checker = Checker::new();
    let src = ReaderSource(reader);
    for item in reader.iter() {
        match item {
            Ok((id, record)) => checker.observe(id, &record, &src),
            Err(_) => checker.report.unreadable_records += 1,
        }
    }
    checker.finish()
}

/// Resolves payloads through a capture reader.
struct ReaderSource<'a>(&'a CaptureReader);

impl PayloadSource for ReaderSource<'_> {
    fn payload_bytes<'a>(&'a self, payload: &'a Payload) -> Option<std::borrow::Cow<'a, [u8]>> {
        self.0.read_payload(payload).ok()
    }
}

/// A fence timeline: the global one, or a (context, ring) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timeline {
    Global,
    Ring { ctx: u32, ring: u8 },
}

impl Timeline {
    fn of(h: &CtrlHeader) -> Timeline {
        if h.has_ring_idx() {
            Timeline::Ring {
                ctx: h.ctx_id,
                ring: h.ring_idx,
            }
        } else {
            Timeline::Global
        }
    }
}

impl std::fmt::Display for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timeline::Global => f.write_str("the global timeline"),
            Timeline::Ring { ctx, ring } => write!(f, "ctx {ctx} ring {ring}"),
        }
    }
}

#[derive(Debug, Clone)]
struct PendingFence {
    command: RecordId,
    fence_id: u64,
    ts_ns: u64,
    name: String,
}

#[derive(Debug, Clone)]
struct Awaiting {
    name: String,
    request: Request,
    ts_ns: u64,
}

/// The memory reads of one command, compared with the previous reads at the same places.
#[derive(Debug, Default)]
struct Upload {
    command: RecordId,
    resource: u32,
    reads: u64,
    bytes: u64,
    identical: u64,
    previous: Option<RecordId>,
}

/// Commands seen before something that should have come first, reported at the end if that
/// thing did come.
#[derive(Debug, Default)]
struct Early {
    count: u64,
    first: Vec<RecordId>,
}

impl Early {
    fn push(&mut self, id: RecordId) {
        self.count += 1;
        if self.first.len() < 8 {
            self.first.push(id);
        }
    }
}

/// Folds records and collects findings; see the module docs.
#[derive(Debug, Default)]
pub struct Checker {
    report: Report,
    kept: HashMap<CheckId, usize>,
    view: GuestView,
    num_scanouts: Option<u32>,
    num_capsets: Option<u32>,
    // init order
    driver_ok_at: Option<RecordId>,
    before_driver_ok: Early,
    ring_state: HashMap<u16, (bool, RecordId)>,
    before_ring_enable: BTreeMap<u16, Early>,
    ring_enabled_later: HashMap<u16, RecordId>,
    // fences
    last_fence_submitted: HashMap<Timeline, (u64, RecordId)>,
    last_fence_signalled: HashMap<Timeline, (u64, RecordId)>,
    pending_fences: BTreeMap<Timeline, Vec<PendingFence>>,
    fence_latencies: Vec<(u64, RecordId, String)>,
    // errors
    awaiting: HashMap<RecordId, Awaiting>,
    /// Commands a Crash record names (in flight when the renderer or backend died).
    crashed_in: HashSet<RecordId>,
    /// The last record's timestamp.
    last_ts_ns: u64,
    recent: VecDeque<(RecordId, String)>,
    // ids
    capsets: HashMap<u32, u32>,
    display_enabled: Option<(u32, RecordId)>,
    // redundant copies
    last_upload: HashMap<(u32, u64), (u128, RecordId)>,
    upload: Option<Upload>,
    transferred_since_flush: HashMap<u32, (u64, Vec<RecordId>)>,
    // blob maps: the host-visible region (shmid 1) as a GET_SHMEM_CONFIG reply declared it;
    // `None` means no reply was seen, so the device exposes no region (size 0).
    host_visible: Option<(u64, RecordId)>,
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(
        &mut self,
        check: CheckId,
        severity: Severity,
        records: Vec<RecordId>,
        message: String,
    ) {
        let kept = self.kept.entry(check).or_default();
        if *kept >= MAX_FINDINGS_PER_CHECK {
            *self.report.suppressed.entry(check).or_default() += 1;
            return;
        }
        *kept += 1;
        self.report.findings.push(Finding {
            check,
            severity,
            records,
            message,
        });
    }

    /// Folds one record (records must come in file order).
    pub fn observe(&mut self, id: RecordId, record: &Record, src: &dyn PayloadSource) {
        self.report.records += 1;
        self.last_ts_ns = self.last_ts_ns.max(record.ts_ns);
        match &record.body {
            RecordBody::SessionStart(s) => self.session(s, src),
            RecordBody::VhostUser(m) => {
                let Some(bytes) = src.payload_bytes(&m.payload) else {
                    return;
                };
                let is_reply = matches!(m.direction, Direction::BackToFront);
                if !matches!(m.direction, Direction::FrontToBack | Direction::BackToFront) {
                    return;
                }
                let req = VhostUserRequest(m.request);
                match decode_vhost_user_payload(req, is_reply, &bytes) {
                    Ok(VhostUserPayload::VringState(s))
                        if req == VhostUserRequest::SET_VRING_ENABLE && !is_reply =>
                    {
                        self.ring(id, s.index as u16, s.num != 0);
                    }
                    Ok(VhostUserPayload::Config(_)) | Ok(VhostUserPayload::Raw(_))
                        if req == VhostUserRequest::GET_CONFIG
                            && is_reply
                            && bytes.len() >= 12 + 16
                            && le32(&bytes, 0) == 0 =>
                    {
                        self.config(id, &bytes[12..]);
                    }
                    Ok(VhostUserPayload::ShmemConfig(c))
                        if req == VhostUserRequest::GET_SHMEM_CONFIG && is_reply =>
                    {
                        // Region 1 is virtio-gpu's host-visible region.
                        let size = c.memory_sizes.get(1).copied().unwrap_or(0);
                        self.host_visible = Some((size, id));
                    }
                    // VIRTIO_CONFIG_S_DRIVER_OK = 4.
                    Ok(VhostUserPayload::U64(status))
                        if req == VhostUserRequest::SET_STATUS
                            && !is_reply
                            && status & 4 != 0
                            && self.driver_ok_at.is_none() =>
                    {
                        self.driver_ok_at = Some(id);
                    }
                    _ => {}
                }
            }
            RecordBody::Lifecycle(l) => match l.kind {
                LifecycleKind::DriverOk if self.driver_ok_at.is_none() => {
                    self.driver_ok_at = Some(id);
                }
                LifecycleKind::QueueStart => {
                    if let Some(q) = l.queue {
                        self.ring(id, q, true);
                    }
                }
                LifecycleKind::QueueStop => {
                    if let Some(q) = l.queue {
                        self.ring(id, q, false);
                    }
                }
                LifecycleKind::Reset => {
                    self.view.reset(id);
                    self.pending_fences.clear();
                    self.last_fence_submitted.clear();
                    self.last_fence_signalled.clear();
                    self.awaiting.clear();
                }
                LifecycleKind::InFlightWrite => {
                    let mut records = vec![id];
                    records.extend(l.command);
                    self.find(
                        CheckId::InFlightWrites,
                        Severity::Warning,
                        records,
                        if l.message.is_empty() {
                            "driver race: the guest changed memory a command in flight had read"
                                .to_string()
                        } else {
                            format!("driver race: {}", l.message)
                        },
                    );
                }
                LifecycleKind::ValidationError | LifecycleKind::Error | LifecycleKind::Crash => {
                    if l.kind == LifecycleKind::Crash
                        && let Some(c) = l.command
                    {
                        self.crashed_in.insert(c);
                    }
                    let mut records = vec![id];
                    records.extend(l.command);
                    let what = match l.kind {
                        LifecycleKind::ValidationError => "the device rejected guest input",
                        LifecycleKind::Crash => "the renderer crashed",
                        _ => "device error",
                    };
                    self.find(
                        CheckId::Errors,
                        Severity::Error,
                        records,
                        if l.message.is_empty() {
                            what.to_string()
                        } else {
                            format!("{what}: {}", l.message)
                        },
                    );
                }
                _ => {}
            },
            RecordBody::Command(c) => {
                self.report.commands += 1;
                let Some(bytes) = src.payload_bytes(&c.request) else {
                    return;
                };
                match Request::decode(&bytes) {
                    Ok(request) => {
                        self.command(id, record.ts_ns, c.queue, c.writable_len, request);
                    }
                    Err(e) => self.find(
                        CheckId::Errors,
                        Severity::Error,
                        vec![id],
                        format!("the {}-byte request does not decode: {e}", bytes.len()),
                    ),
                }
            }
            RecordBody::Response(r) => {
                let Some(bytes) = src.payload_bytes(&r.bytes) else {
                    return;
                };
                let awaited = self.awaiting.remove(&r.command);
                if bytes.is_empty() {
                    return;
                }
                match Response::decode(&bytes) {
                    Ok(resp) => self.response(id, record.ts_ns, r.command, awaited, &resp),
                    Err(e) => self.find(
                        CheckId::Errors,
                        Severity::Error,
                        vec![id, r.command],
                        format!("the {}-byte response does not decode: {e}", bytes.len()),
                    ),
                }
            }
            RecordBody::Fence(f) => {
                let tl = if f.context_ring {
                    Timeline::Ring {
                        ctx: f.ctx_id,
                        ring: f.ring_idx,
                    }
                } else {
                    Timeline::Global
                };
                self.signal(id, record.ts_ns, tl, f.fence_id);
            }
            RecordBody::MemoryRead(m) => {
                let hash = match &m.data {
                    Payload::Blob(b) => b.hash.0,
                    Payload::Inline(b) => vgt_format::hash::content_hash(b),
                };
                // Per command: a transfer whose every read equals the previous read at the same
                // place uploaded nothing new. (Single unchanged pages of a partly damaged
                // framebuffer are normal and only counted.)
                if self.upload.as_ref().is_some_and(|u| u.command != m.command) {
                    self.flush_upload();
                }
                let u = self.upload.get_or_insert_with(|| Upload {
                    command: m.command,
                    resource: m.resource_id,
                    ..Upload::default()
                });
                let key = (m.resource_id, m.addr);
                let previous = self.last_upload.insert(key, (hash, m.command));
                u.reads += 1;
                // Saturating: lengths are what records claim.
                u.bytes = u.bytes.saturating_add(m.data.len());
                match previous {
                    Some((prev, prev_cmd)) if prev == hash => {
                        u.identical = u.identical.saturating_add(m.data.len());
                        u.previous = Some(prev_cmd);
                    }
                    _ => {}
                }
                let acc = self
                    .transferred_since_flush
                    .entry(m.resource_id)
                    .or_default();
                acc.0 = acc.0.saturating_add(m.data.len());
                if acc.1.len() < 8 {
                    acc.1.push(m.command);
                }
            }
            RecordBody::GpuSocket(_)
            | RecordBody::Frame(_)
            | RecordBody::Cursor(_)
            | RecordBody::Marker(_)
            | RecordBody::Unknown { .. } => {}
        }
    }

    /// Judges the finished command's uploads.
    fn flush_upload(&mut self) {
        let Some(u) = self.upload.take() else {
            return;
        };
        self.report.unchanged_upload_bytes = self
            .report
            .unchanged_upload_bytes
            .saturating_add(u.identical);
        if u.bytes > 0
            && u.identical == u.bytes
            && let Some(prev) = u.previous
        {
            self.find(
                CheckId::RedundantCopies,
                Severity::Warning,
                vec![u.command, prev],
                format!(
                    "identical upload: all {} bytes ({} reads) that #{} read for resource {} equal what #{prev} read there",
                    u.bytes, u.reads, u.command, u.resource
                ),
            );
        }
    }

    fn session(&mut self, s: &SessionStart, src: &dyn PayloadSource) {
        if let Some(cfg) = src.payload_bytes(&s.device_config)
            && cfg.len() >= 16
        {
            self.num_scanouts = Some(le32(&cfg, 8));
            self.num_capsets = Some(le32(&cfg, 12));
        }
    }

    fn config(&mut self, id: RecordId, cfg: &[u8]) {
        let scanouts = le32(cfg, 8);
        let capsets = le32(cfg, 12);
        if self.report.commands > 0 {
            if let Some(old) = self.num_capsets
                && old != capsets
            {
                self.find(
                    CheckId::InitOrder,
                    Severity::Warning,
                    vec![id],
                    format!(
                        "num_capsets changed from {old} to {capsets} after the driver started sending commands"
                    ),
                );
            }
            if let Some(old) = self.num_scanouts
                && old != scanouts
            {
                self.find(
                    CheckId::InitOrder,
                    Severity::Warning,
                    vec![id],
                    format!(
                        "num_scanouts changed from {old} to {scanouts} after the driver started sending commands"
                    ),
                );
            }
        }
        self.num_scanouts = Some(scanouts);
        self.num_capsets = Some(capsets);
    }

    fn ring(&mut self, id: RecordId, queue: u16, enabled: bool) {
        if enabled {
            self.ring_enabled_later.entry(queue).or_insert(id);
        }
        self.ring_state.insert(queue, (enabled, id));
    }

    fn scanout_ok(&mut self, id: RecordId, name: &str, scanout: u32) -> bool {
        let limit = self.num_scanouts.filter(|n| *n > 0).unwrap_or(16).min(16);
        if scanout >= limit {
            self.find(
                CheckId::Ids,
                Severity::Error,
                vec![id],
                format!("{name} names scanout {scanout}, but the device has {limit} scanouts"),
            );
            return false;
        }
        true
    }

    /// Looks a resource up, reporting a missing or destroyed one.
    fn resource(&mut self, id: RecordId, name: &str, res: u32) -> bool {
        match self.view.lookup(res) {
            Lookup::Live => {
                self.view.touch(res, id);
                true
            }
            Lookup::Retired {
                destroyed_at,
                reason,
            } => {
                self.find(
                    CheckId::UseAfterTeardown,
                    Severity::Error,
                    vec![id, destroyed_at],
                    format!(
                        "{name} names resource {res}, destroyed by {reason} at #{destroyed_at}"
                    ),
                );
                false
            }
            Lookup::Never => {
                self.find(
                    CheckId::Ids,
                    Severity::Error,
                    vec![id],
                    format!("{name} names resource {res}, which was never created"),
                );
                false
            }
        }
    }

    /// Checks a context named by a 3D command.
    fn context(&mut self, id: RecordId, name: &str, ctx: u32) -> bool {
        if ctx == 0 {
            self.find(
                CheckId::Ids,
                Severity::Error,
                vec![id],
                format!("{name} is sent on context 0, which is reserved for 2D"),
            );
            return false;
        }
        match self.view.lookup_ctx(ctx) {
            Lookup::Live => true,
            Lookup::Retired {
                destroyed_at,
                reason,
            } => {
                self.find(
                    CheckId::UseAfterTeardown,
                    Severity::Error,
                    vec![id, destroyed_at],
                    format!("{name} names context {ctx}, destroyed by {reason} at #{destroyed_at}"),
                );
                false
            }
            Lookup::Never => {
                self.find(
                    CheckId::Ids,
                    Severity::Error,
                    vec![id],
                    format!("{name} names context {ctx}, which was never created"),
                );
                false
            }
        }
    }

    fn command(&mut self, id: RecordId, ts_ns: u64, queue: u16, writable: u32, request: Request) {
        let name = request.command_type().to_string();
        self.init_order(id, queue, &name);
        let h = request.header;
        if h.is_fenced() {
            let tl = Timeline::of(&h);
            if let Some(&(last, last_id)) = self.last_fence_submitted.get(&tl)
                && h.fence_id <= last
            {
                self.find(
                    CheckId::Fences,
                    Severity::Error,
                    vec![id, last_id],
                    format!(
                        "{name} fence {} does not increase on {tl}: #{last_id} already used fence {last}",
                        h.fence_id
                    ),
                );
            }
            self.last_fence_submitted.insert(tl, (h.fence_id, id));
            if writable > 0 && !request.command_type().is_cursor() {
                self.pending_fences
                    .entry(tl)
                    .or_default()
                    .push(PendingFence {
                        command: id,
                        fence_id: h.fence_id,
                        ts_ns,
                        name: name.clone(),
                    });
            }
        }
        self.rules(id, &name, &request);
        if writable > 0 {
            self.awaiting.insert(
                id,
                Awaiting {
                    name: name.clone(),
                    request,
                    ts_ns,
                },
            );
        }
        if self.recent.len() == 4 {
            self.recent.pop_front();
        }
        self.recent.push_back((id, name));
        let (live, bytes) = self.view.live();
        if live > self.report.peak_live_resources {
            self.report.peak_live_resources = live;
            self.report.peak_live_bytes = bytes;
            self.report.peak_at = Some(id);
        }
    }

    fn init_order(&mut self, id: RecordId, queue: u16, name: &str) {
        if self.driver_ok_at.is_none() {
            self.before_driver_ok.push(id);
        }
        match self.ring_state.get(&queue) {
            None => self.before_ring_enable.entry(queue).or_default().push(id),
            Some(&(false, at)) => self.find(
                CheckId::InitOrder,
                Severity::Error,
                vec![id, at],
                format!("{name} arrived on queue {queue}, disabled at #{at}"),
            ),
            Some(&(true, _)) => {}
        }
    }

    /// The per-command protocol rules (ids, bounds, mode changes, blobs, teardown) and the
    /// guest view's update.
    fn rules(&mut self, id: RecordId, name: &str, request: &Request) {
        let ctx = request.header.ctx_id;
        match &request.command {
            Command::ResourceCreate2d(c) => {
                if self.creatable(id, name, c.resource_id) {
                    let bpp = c.format.bytes_per_pixel();
                    self.view
                        .create(id, c.resource_id, ResKind::TwoD, bpp, c.width, c.height, 0);
                }
            }
            Command::ResourceCreate3d(c) => {
                if self.creatable(id, name, c.resource_id) {
                    let kind = ResKind::ThreeD {
                        depth: c.depth,
                        array_size: c.array_size,
                        last_level: c.last_level,
                    };
                    let bpp = c.format.bytes_per_pixel();
                    self.view
                        .create(id, c.resource_id, kind, bpp, c.width, c.height, 0);
                }
            }
            Command::ResourceCreateBlob(c) => {
                if c.blob_mem.0 != 1 && ctx == 0 {
                    self.find(
                        CheckId::Ids,
                        Severity::Error,
                        vec![id],
                        format!(
                            "{name} of a {} blob is sent on context 0; host blobs come from a context",
                            c.blob_mem
                        ),
                    );
                }
                if self.creatable(id, name, c.resource_id) {
                    let kind = ResKind::Blob {
                        mem: c.blob_mem.0,
                        flags: c.blob_flags.0,
                        size: c.size,
                    };
                    let backing: u64 = c.entries.iter().map(|e| u64::from(e.length)).sum();
                    self.view
                        .create(id, c.resource_id, kind, None, 0, 0, backing);
                }
            }
            Command::ResourceUnref(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get(c.resource_id)
                {
                    let shown: Vec<(u32, RecordId)> = r.scanouts.clone();
                    let mapped = r.mapped;
                    for (s, at) in shown {
                        self.find(
                            CheckId::ModeChanges,
                            Severity::Warning,
                            vec![id, at],
                            format!(
                                "{name} of resource {} that scanout {s} still shows (set at #{at})",
                                c.resource_id
                            ),
                        );
                    }
                    if let Some((offset, at)) = mapped {
                        self.find(
                            CheckId::BlobMaps,
                            Severity::Error,
                            vec![id, at],
                            format!(
                                "{name} of blob {} still mapped at offset {offset:#x} (mapped at #{at}, never unmapped)",
                                c.resource_id
                            ),
                        );
                    }
                    self.view.destroy(c.resource_id, id, "RESOURCE_UNREF");
                }
            }
            Command::ResourceAttachBacking(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get_mut(c.resource_id)
                {
                    let previous = r.backing_at;
                    r.backing = c.entries.iter().map(|e| u64::from(e.length)).sum();
                    r.backing_at = Some(id);
                    if let Some(at) = previous {
                        self.find(
                            CheckId::Lifecycle,
                            Severity::Error,
                            vec![id, at],
                            format!(
                                "{name} to resource {} whose backing attached at #{at} was never detached",
                                c.resource_id
                            ),
                        );
                    }
                }
            }
            Command::ResourceDetachBacking(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get_mut(c.resource_id)
                {
                    let had = r.backing_at.take();
                    r.backing = 0;
                    if had.is_none() {
                        self.find(
                            CheckId::Lifecycle,
                            Severity::Warning,
                            vec![id],
                            format!("{name} of resource {} which has no backing", c.resource_id),
                        );
                    }
                }
            }
            Command::SetScanout(c) => {
                let scanout_ok = self.scanout_ok(id, name, c.scanout_id);
                if scanout_ok {
                    self.display_enabled_check(id, name, c.scanout_id, c.resource_id);
                }
                if c.resource_id == 0 {
                    if scanout_ok {
                        self.view.show(c.scanout_id, 0, id);
                    }
                } else if self.resource(id, name, c.resource_id) {
                    if let Some(r) = self.view.get(c.resource_id)
                        && !matches!(r.kind, ResKind::Blob { .. })
                        && (!inside(c.r.x, c.r.width, r.width)
                            || !inside(c.r.y, c.r.height, r.height))
                    {
                        let (w, h) = (r.width, r.height);
                        self.find(
                            CheckId::ModeChanges,
                            Severity::Error,
                            vec![id, r.created_at],
                            format!(
                                "{name} rect {} lies outside resource {} ({w}x{h})",
                                c.r, c.resource_id
                            ),
                        );
                    }
                    if scanout_ok {
                        self.view.show(c.scanout_id, c.resource_id, id);
                    }
                }
            }
            Command::SetScanoutBlob(c) => {
                let scanout_ok = self.scanout_ok(id, name, c.scanout_id);
                if scanout_ok {
                    self.display_enabled_check(id, name, c.scanout_id, c.resource_id);
                }
                if c.resource_id != 0 && self.resource(id, name, c.resource_id) {
                    if !inside(c.r.x, c.r.width, c.width) || !inside(c.r.y, c.r.height, c.height) {
                        self.find(
                            CheckId::ModeChanges,
                            Severity::Error,
                            vec![id],
                            format!(
                                "{name} rect {} lies outside the {}x{} image",
                                c.r, c.width, c.height
                            ),
                        );
                    }
                    if let Some(r) = self.view.get(c.resource_id) {
                        let bpp = u64::from(c.format.bytes_per_pixel().unwrap_or(4));
                        let row = u64::from(c.width) * bpp;
                        // Saturating: stride x rows alone can come close to 2^64, and a
                        // saturated need is still more than any blob has.
                        let need = u64::from(c.strides[0])
                            .saturating_mul(u64::from(c.height.saturating_sub(1)))
                            .saturating_add(u64::from(c.offsets[0]))
                            .saturating_add(row);
                        if u64::from(c.strides[0]) < row {
                            self.find(
                                CheckId::TransferBounds,
                                Severity::Error,
                                vec![id],
                                format!(
                                    "{name} stride {} is less than width {} x {bpp} bytes",
                                    c.strides[0], c.width
                                ),
                            );
                        } else if let ResKind::Blob { size, .. } = r.kind
                            && c.height > 0
                            && need > size
                        {
                            let created = r.created_at;
                            self.find(
                                CheckId::ModeChanges,
                                Severity::Error,
                                vec![id, created],
                                format!(
                                    "{name} image needs {need} bytes (offset {} + stride {} x {} rows) but blob {} has {size}",
                                    c.offsets[0], c.strides[0], c.height, c.resource_id
                                ),
                            );
                        }
                    }
                    if scanout_ok {
                        self.view.show(c.scanout_id, c.resource_id, id);
                    }
                } else if c.resource_id == 0 && scanout_ok {
                    self.view.show(c.scanout_id, 0, id);
                }
            }
            Command::ResourceFlush(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get(c.resource_id)
                {
                    let (w, h, bpp, created) = (r.width, r.height, r.bpp, r.created_at);
                    let sized = !matches!(r.kind, ResKind::Blob { .. });
                    let hidden = r.scanouts.is_empty();
                    if hidden {
                        self.find(
                            CheckId::ModeChanges,
                            Severity::Warning,
                            vec![id],
                            format!(
                                "{name} of resource {} which no scanout shows",
                                c.resource_id
                            ),
                        );
                    }
                    if sized && (!inside(c.r.x, c.r.width, w) || !inside(c.r.y, c.r.height, h)) {
                        self.find(
                            CheckId::TransferBounds,
                            Severity::Error,
                            vec![id, created],
                            format!(
                                "{name} rect {} lies outside resource {} ({w}x{h})",
                                c.r, c.resource_id
                            ),
                        );
                    }
                    let flushed = (u64::from(c.r.width) * u64::from(c.r.height))
                        .saturating_mul(u64::from(bpp.unwrap_or(4)));
                    if let Some((moved, cmds)) = self.transferred_since_flush.remove(&c.resource_id)
                        && moved > flushed.saturating_mul(2) + REDUNDANT_SLACK_BYTES
                    {
                        let mut records = vec![id];
                        records.extend(cmds);
                        self.find(
                            CheckId::RedundantCopies,
                            Severity::Warning,
                            records,
                            format!(
                                "{moved} bytes were transferred to resource {} since its last flush, but this flush covers only {flushed} bytes ({})",
                                c.resource_id, c.r
                            ),
                        );
                    }
                }
            }
            Command::TransferToHost2d(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get(c.resource_id)
                    && !matches!(r.kind, ResKind::Blob { .. })
                {
                    let (w, h, created) = (r.width, r.height, r.created_at);
                    let (bpp, backing, backing_at) = (r.bpp, r.backing, r.backing_at);
                    if !inside(c.r.x, c.r.width, w) || !inside(c.r.y, c.r.height, h) {
                        self.find(
                            CheckId::TransferBounds,
                            Severity::Error,
                            vec![id, created],
                            format!(
                                "{name} rect {} lies outside resource {} ({w}x{h})",
                                c.r, c.resource_id
                            ),
                        );
                    }
                    if c.r.width > 0 && c.r.height > 0 {
                        let bpp = u64::from(bpp.unwrap_or(4));
                        let stride = u64::from(w) * bpp;
                        self.source_bounds(
                            id,
                            name,
                            c.resource_id,
                            (c.offset, stride, 0),
                            (u64::from(c.r.width) * bpp, u64::from(c.r.height), 1),
                            (backing, backing_at),
                        );
                    }
                }
            }
            Command::TransferToHost3d(c) | Command::TransferFromHost3d(c) => {
                if ctx != 0 {
                    self.context(id, name, ctx);
                }
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get(c.resource_id)
                    && let ResKind::ThreeD {
                        depth,
                        array_size,
                        last_level,
                    } = r.kind
                {
                    let (bpp, backing, backing_at, created) =
                        (r.bpp, r.backing, r.backing_at, r.created_at);
                    let level = c.level.min(31);
                    let (w, h) = ((r.width >> level).max(1), (r.height >> level).max(1));
                    let d = depth.max(array_size).max(1);
                    let b = c.box_;
                    if c.level > last_level {
                        self.find(
                            CheckId::TransferBounds,
                            Severity::Error,
                            vec![id, created],
                            format!(
                                "{name} level {} is beyond resource {}'s last level {last_level}",
                                c.level, c.resource_id
                            ),
                        );
                    } else if !inside(b.x, b.w, w) || !inside(b.y, b.h, h) || !inside(b.z, b.d, d) {
                        self.find(
                            CheckId::TransferBounds,
                            Severity::Error,
                            vec![id, created],
                            format!(
                                "{name} box {b} lies outside resource {} level {} ({w}x{h}x{d}, depth {depth}, array size {array_size})",
                                c.resource_id, c.level
                            ),
                        );
                    }
                    if let Some(bpp) = bpp {
                        let row = u64::from(b.w) * u64::from(bpp);
                        if c.stride != 0 && u64::from(c.stride) < row {
                            self.find(
                                CheckId::TransferBounds,
                                Severity::Error,
                                vec![id],
                                format!(
                                    "{name} stride {} is less than box width {} x {bpp} bytes",
                                    c.stride, b.w
                                ),
                            );
                        } else if c.stride != 0 && b.w > 0 && b.h > 0 && b.d > 0 {
                            self.source_bounds(
                                id,
                                name,
                                c.resource_id,
                                (c.offset, u64::from(c.stride), u64::from(c.layer_stride)),
                                (row, u64::from(b.h), u64::from(b.d)),
                                (backing, backing_at),
                            );
                        }
                    }
                }
            }
            Command::GetCapsetInfo(c) => {
                if let Some(n) = self.num_capsets
                    && c.capset_index >= n
                {
                    self.find(
                        CheckId::Ids,
                        Severity::Error,
                        vec![id],
                        format!(
                            "{name} index {} is not below num_capsets {n}",
                            c.capset_index
                        ),
                    );
                }
            }
            Command::GetCapset(c) => {
                if !self.capsets.is_empty() {
                    match self.capsets.get(&c.capset_id.0) {
                        None => self.find(
                            CheckId::Ids,
                            Severity::Error,
                            vec![id],
                            format!(
                                "{name} asks for capset {}, which no GET_CAPSET_INFO reported",
                                c.capset_id
                            ),
                        ),
                        Some(&max) if c.capset_version > max => self.find(
                            CheckId::Ids,
                            Severity::Error,
                            vec![id],
                            format!(
                                "{name} asks for version {} of capset {}, above its max version {max}",
                                c.capset_version, c.capset_id
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            Command::GetEdid(c) => {
                self.scanout_ok(id, name, c.scanout);
            }
            Command::ResourceAssignUuid(c) => {
                self.resource(id, name, c.resource_id);
            }
            Command::CtxCreate(_) => {
                if ctx == 0 {
                    self.find(
                        CheckId::Ids,
                        Severity::Error,
                        vec![id],
                        format!("{name} with context id 0, which is reserved"),
                    );
                } else if let Some(at) = self.view.ctx_created_at(ctx) {
                    self.find(
                        CheckId::Ids,
                        Severity::Error,
                        vec![id, at],
                        format!("{name} of context {ctx}, which already exists (created at #{at})"),
                    );
                } else {
                    self.view.create_ctx(ctx, id);
                }
            }
            Command::CtxDestroy => {
                if self.context(id, name, ctx) {
                    self.view.destroy_ctx(ctx, id, "CTX_DESTROY");
                }
            }
            Command::CtxAttachResource(c) | Command::CtxDetachResource(c) => {
                self.context(id, name, ctx);
                self.resource(id, name, c.resource_id);
            }
            Command::Submit3d(_) => {
                self.context(id, name, ctx);
            }
            Command::ResourceMapBlob(c) => self.map_blob(id, name, c.resource_id, c.offset),
            Command::ResourceUnmapBlob(c) => {
                if self.resource(id, name, c.resource_id)
                    && let Some(r) = self.view.get_mut(c.resource_id)
                    && r.mapped.take().is_none()
                {
                    self.find(
                        CheckId::BlobMaps,
                        Severity::Error,
                        vec![id],
                        format!("{name} of resource {}, which is not mapped", c.resource_id),
                    );
                }
            }
            Command::UpdateCursor(c) => {
                self.scanout_ok(id, name, c.pos.scanout_id);
                if c.resource_id != 0 {
                    self.resource(id, name, c.resource_id);
                    self.view.cursors.insert(c.resource_id);
                }
            }
            Command::MoveCursor(c) => {
                self.scanout_ok(id, name, c.pos.scanout_id);
            }
            Command::GetDisplayInfo | Command::Unknown(_) => {}
        }
    }

    /// Checks that a resource id is free for a create command.
    fn creatable(&mut self, id: RecordId, name: &str, res: u32) -> bool {
        if res == 0 {
            self.find(
                CheckId::Ids,
                Severity::Error,
                vec![id],
                format!("{name} uses resource id 0, which is reserved"),
            );
            return false;
        }
        if let Some(r) = self.view.get(res) {
            let at = r.created_at;
            self.find(
                CheckId::Ids,
                Severity::Error,
                vec![id, at],
                format!("{name} reuses resource id {res}, still alive since #{at}"),
            );
            return false;
        }
        true
    }

    fn display_enabled_check(&mut self, id: RecordId, name: &str, scanout: u32, res: u32) {
        if res == 0 {
            return;
        }
        if let Some((mask, at)) = self.display_enabled
            && mask & (1 << scanout) == 0
        {
            self.find(
                CheckId::ModeChanges,
                Severity::Warning,
                vec![id, at],
                format!(
                    "{name} shows resource {res} on scanout {scanout}, which GET_DISPLAY_INFO (#{at}) reported disabled"
                ),
            );
        }
    }

    /// The source bytes of a transfer, `offset + (d-1)*layer_stride + (h-1)*stride + row`,
    /// must lie inside the backing (64-bit arithmetic, overflow is a finding).
    fn source_bounds(
        &mut self,
        id: RecordId,
        name: &str,
        res: u32,
        (offset, stride, layer_stride): (u64, u64, u64),
        (row, rows, layers): (u64, u64, u64),
        (backing, backing_at): (u64, Option<RecordId>),
    ) {
        let Some(at) = backing_at else {
            self.find(
                CheckId::TransferBounds,
                Severity::Error,
                vec![id],
                format!("{name} to resource {res}, which has no backing attached"),
            );
            return;
        };
        let end = layer_stride
            .checked_mul(layers - 1)
            .and_then(|a| stride.checked_mul(rows - 1).and_then(|b| a.checked_add(b)))
            .and_then(|a| a.checked_add(row))
            .and_then(|a| a.checked_add(offset));
        match end {
            Some(end) if end <= backing => {}
            Some(end) => self.find(
                CheckId::TransferBounds,
                Severity::Error,
                vec![id, at],
                format!(
                    "{name} reads backing bytes up to {end} (offset {offset}, stride {stride}, {rows} rows of {row}) but resource {res} has {backing} bytes of backing"
                ),
            ),
            None => self.find(
                CheckId::TransferBounds,
                Severity::Error,
                vec![id, at],
                format!(
                    "{name} source range overflows 64 bits (offset {offset}, stride {stride}, {rows} rows)"
                ),
            ),
        }
    }

    fn map_blob(&mut self, id: RecordId, name: &str, res: u32, offset: u64) {
        if !self.resource(id, name, res) {
            return;
        }
        let Some(r) = self.view.get(res) else {
            return;
        };
        let ResKind::Blob { mem, flags, size } = r.kind else {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id, r.created_at],
                format!("{name} of resource {res}, which is not a blob"),
            );
            return;
        };
        let created = r.created_at;
        if let Some((old, at)) = r.mapped {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id, at],
                format!("{name} of blob {res}, already mapped at offset {old:#x} by #{at}"),
            );
            return;
        }
        if mem == 1 {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id, created],
                format!("{name} of guest-memory blob {res}; only host blobs are mapped"),
            );
        }
        if flags & 1 == 0 {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id, created],
                format!("{name} of blob {res}, created without USE_MAPPABLE"),
            );
        }
        if !offset.is_multiple_of(4096) {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id],
                format!("{name} offset {offset:#x} is not page aligned"),
            );
        }
        let Some(end) = offset.checked_add(size) else {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id],
                format!("{name} offset {offset:#x} + size {size} overflows 64 bits"),
            );
            return;
        };
        let (region, declared_at) = match self.host_visible {
            Some((size, at)) => (size, Some(at)),
            None => (0, None),
        };
        if end > region {
            let mut records = vec![id, created];
            let whence = match declared_at {
                Some(at) => {
                    records.push(at);
                    format!("the host-visible region is {region:#x} bytes (GET_SHMEM_CONFIG #{at})")
                }
                None => {
                    "the device exposes no host-visible region (no GET_SHMEM_CONFIG reply; size 0)"
                        .to_string()
                }
            };
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                records,
                format!(
                    "{name} of blob {res} (created by #{created}) at {offset:#x}..{end:#x} lies outside the region: {whence}"
                ),
            );
        }
        if let Some((other, other_at, o_start, o_end)) = self.view.overlapping_map(offset, end) {
            self.find(
                CheckId::BlobMaps,
                Severity::Error,
                vec![id, other_at],
                format!(
                    "{name} of blob {res} at {offset:#x}..{end:#x} overlaps blob {other} mapped at {o_start:#x}..{o_end:#x} by #{other_at}"
                ),
            );
        }
        if let Some(r) = self.view.get_mut(res) {
            r.mapped = Some((offset, id));
        }
    }

    fn response(
        &mut self,
        id: RecordId,
        ts_ns: u64,
        command: RecordId,
        awaited: Option<Awaiting>,
        resp: &Response,
    ) {
        let t = resp.response_type();
        let name = awaited
            .as_ref()
            .map_or_else(|| "command".to_string(), |a| a.name.clone());
        if t.is_error() {
            let mut records = vec![command, id];
            let around: Vec<String> = self
                .recent
                .iter()
                .filter(|(r, _)| *r != command)
                .map(|(r, n)| {
                    records.push(*r);
                    format!("#{r} {n}")
                })
                .collect();
            let around = if around.is_empty() {
                String::new()
            } else {
                format!("; commands around it: {}", around.join(", "))
            };
            self.find(
                CheckId::Errors,
                Severity::Error,
                records,
                format!("{name} (#{command}) was answered {t}{around}"),
            );
            // A failed create leaves nothing behind.
            if let Some(a) = &awaited
                && matches!(
                    a.request.command,
                    Command::ResourceCreate2d(_)
                        | Command::ResourceCreate3d(_)
                        | Command::ResourceCreateBlob(_)
                )
                && let Some(res) = a.request.command.resource_id()
                && self.view.get(res).is_some_and(|r| r.created_at == command)
            {
                self.view.forget(res);
            }
        }
        match &resp.body {
            ResponseBody::OkCapsetInfo(info) => {
                if let Some(n) = self.num_capsets
                    && let Some(a) = &awaited
                    && let Command::GetCapsetInfo(c) = &a.request.command
                    && c.capset_index >= n
                {
                    self.find(
                        CheckId::InitOrder,
                        Severity::Warning,
                        vec![id, command],
                        format!(
                            "the device answered GET_CAPSET_INFO index {} although the config says num_capsets {n}",
                            c.capset_index
                        ),
                    );
                }
                if info.capset_max_size == 0 {
                    self.find(
                        CheckId::Ids,
                        Severity::Error,
                        vec![id, command],
                        format!(
                            "GET_CAPSET_INFO reports capset {} with max size 0",
                            info.capset_id
                        ),
                    );
                }
                self.capsets
                    .insert(info.capset_id.0, info.capset_max_version);
            }
            ResponseBody::OkDisplayInfo(info) => {
                let mask = info
                    .pmodes
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.enabled != 0)
                    .fold(0u32, |m, (i, _)| m | (1 << i));
                self.display_enabled = Some((mask, id));
            }
            _ => {}
        }
        if resp.header.is_fenced() {
            self.signal(id, ts_ns, Timeline::of(&resp.header), resp.header.fence_id);
        }
    }

    /// A fence completed on `tl`: retire every pending fence up to it.
    fn signal(&mut self, id: RecordId, ts_ns: u64, tl: Timeline, fence_id: u64) {
        if let Some(&(last, last_id)) = self.last_fence_signalled.get(&tl)
            && fence_id < last
        {
            self.find(
                CheckId::Fences,
                Severity::Warning,
                vec![id, last_id],
                format!(
                    "fence {fence_id} on {tl} signalled after fence {last} (#{last_id}): out of order"
                ),
            );
        }
        let entry = self.last_fence_signalled.entry(tl).or_insert((0, id));
        if fence_id >= entry.0 {
            *entry = (fence_id, id);
        }
        if let Some(pending) = self.pending_fences.get_mut(&tl) {
            let mut done = Vec::new();
            pending.retain(|p| {
                if p.fence_id <= fence_id {
                    done.push((ts_ns.saturating_sub(p.ts_ns), p.command, p.name.clone()));
                    false
                } else {
                    true
                }
            });
            self.fence_latencies.extend(done);
        }
    }

    /// End-of-capture checks (leaks, unsignalled fences, outliers, early commands) and the
    /// report.
    pub fn finish(mut self) -> Report {
        self.flush_upload();
        // Init order: commands before DRIVER_OK or before their ring was enabled, reported only
        // when the capture shows that event at all.
        if let Some(ok) = self.driver_ok_at
            && self.before_driver_ok.count > 0
        {
            let early = std::mem::take(&mut self.before_driver_ok);
            let mut records = early.first.clone();
            records.push(ok);
            self.find(
                CheckId::InitOrder,
                Severity::Error,
                records,
                format!(
                    "{} commands arrived before the driver set DRIVER_OK (#{ok})",
                    early.count
                ),
            );
        }
        let early_rings = std::mem::take(&mut self.before_ring_enable);
        for (queue, early) in early_rings {
            if let Some(&at) = self.ring_enabled_later.get(&queue) {
                let mut records = early.first.clone();
                records.push(at);
                self.find(
                    CheckId::InitOrder,
                    Severity::Error,
                    records,
                    format!(
                        "{} commands arrived on queue {queue} before the ring was enabled (#{at})",
                        early.count
                    ),
                );
            }
        }
        // Commands never answered (fenced ones are the fence check's: their answer is the
        // signal).
        let mut unanswered: Vec<(RecordId, Awaiting)> = std::mem::take(&mut self.awaiting)
            .into_iter()
            .filter(|(id, a)| !a.request.header.is_fenced() && !self.crashed_in.contains(id))
            .collect();
        unanswered.sort_by_key(|(id, _)| *id);
        for (id, a) in unanswered {
            let after = self.last_ts_ns.saturating_sub(a.ts_ns);
            let secs = after as f64 / 1e9;
            if after >= UNANSWERED_HUNG_NS {
                self.find(
                    CheckId::Unanswered,
                    Severity::Error,
                    vec![id],
                    format!(
                        "{} was never answered: the capture goes on {secs:.3} s after it (the device hung on it or lost it)",
                        a.name
                    ),
                );
            } else {
                self.find(
                    CheckId::Unanswered,
                    Severity::Warning,
                    vec![id],
                    format!(
                        "{} was not answered before the capture ended {secs:.3} s after it (cut mid-command?)",
                        a.name
                    ),
                );
            }
        }
        // Fences never signalled.
        let pending = std::mem::take(&mut self.pending_fences);
        for (tl, fences) in pending {
            for p in fences {
                self.find(
                    CheckId::Fences,
                    Severity::Error,
                    vec![p.command],
                    format!(
                        "{} fence {} on {tl} was never signalled before the capture ended",
                        p.name, p.fence_id
                    ),
                );
            }
        }
        // Latency outliers.
        if self.fence_latencies.len() >= OUTLIER_MIN_SAMPLES {
            let mut sorted: Vec<u64> = self.fence_latencies.iter().map(|l| l.0).collect();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            let limit = median.saturating_mul(OUTLIER_FACTOR).max(OUTLIER_MIN_NS);
            let outliers: Vec<(u64, RecordId, String)> = self
                .fence_latencies
                .iter()
                .filter(|l| l.0 > limit)
                .cloned()
                .collect();
            for (lat, cmd, name) in outliers {
                self.find(
                    CheckId::Fences,
                    Severity::Warning,
                    vec![cmd],
                    format!(
                        "{name} fence took {} us, over {OUTLIER_FACTOR}x the median of {} us",
                        lat / 1_000,
                        median / 1_000
                    ),
                );
            }
        }
        // Leaks: resources alive at the end that were never shown nor used as the cursor and
        // that nothing named in the second half of the capture. (Every capture ends with live
        // resources; only forgotten ones are leaks.)
        let stale_before = self.report.records / 2;
        let leaks = self.view.leaks(stale_before);
        for (res, created, last_use, bytes, backing) in leaks {
            self.find(
                CheckId::Lifecycle,
                Severity::Warning,
                vec![created, last_use],
                format!(
                    "resource {res} ({bytes} host bytes, {backing} bytes of backing) created at #{created} is never unreferenced, never shown, and unused after #{last_use} (the second half of the capture never names it)"
                ),
            );
        }
        self.report.live_resources_at_end = self.view.live().0;
        self.report
    }
}

/// True when `start + len <= limit` in 64-bit arithmetic.
fn inside(start: u32, len: u32, limit: u32) -> bool {
    u64::from(start) + u64::from(len) <= u64::from(limit)
}

fn le32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

#[cfg(test)]
mod tests;
