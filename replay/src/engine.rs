//! The replay engine: walks a capture command by command, rebuilds guest memory from the
//! recorded reads, re-executes each command on vgt-device, and compares responses, frames and
//! fences with what the capture recorded.
//!
//! A command's records follow it in the file (its memory reads, display messages, frames,
//! fences, response) until the next command record: the engine reads that whole *window*
//! before it submits the command, so the device is fed exactly the recorded bytes and the
//! host's answers (GET_DISPLAY_INFO / GET_EDID replies) in recorded order. Nothing depends on
//! the wall clock except the optional pacing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

use vgt_device::{
    Completion, DeviceConfig, DeviceHost, DisplayEvent, DisplayInfoFromHost, FenceInfo,
    HostDisplay, Submission, ValidationError,
};
use vgt_format::CaptureReader;
use vgt_format::hash::content_hash;
use vgt_format::record::{
    BlobRef, CaptureMode, CommandRecord, CursorAction, Direction, FenceSignal, Frame,
    LifecycleKind, Payload, Record, RecordBody, RecordId,
};
use vgt_format::wire::{
    self, Command, CommandType, FLAG_INFO_RING_IDX, GpuSocketRequest, Request, Response,
    ResponseBody, VhostUserPayload, VhostUserRequest,
};

use crate::backend::{BackendOptions, ExternalBackend, Plan};
use crate::frames::PngError;
use crate::memory::{SparseMemory, UnrecordedRead};
use crate::report::{
    CursorSummary, Divergence, DivergenceKind, FenceSummary, ReplayReport, ReproducedCrash,
    ResponseDigest, ResponseSummary, Unsupported, command_name,
};
use crate::verify::{FrameJob, FrameOutcome, Verifier, payload_hash};

/// Scanout size assumed when the capture never says (vgt-capture's default `--size`).
pub const DEFAULT_SCANOUT_SIZE: (u32, u32) = (1024, 768);

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Timing {
    /// As fast as possible.
    #[default]
    Asap,
    /// At the pace the commands were recorded (from their timestamps).
    Original,
    /// At the recorded pace sped up by this factor (2.0: twice as fast; a factor that is not
    /// above 0 replays as fast as possible).
    Speed(f64),
}

impl Timing {
    /// How long after the first command one recorded `elapsed_ns` later is due (None: at
    /// once). A wait too long for a `Duration` (a tiny factor, a timestamp far off) is the
    /// longest one, never a panic.
    fn due_after(self, elapsed_ns: u64) -> Option<Duration> {
        let speed = match self {
            Timing::Asap => return None,
            Timing::Original => 1.0,
            Timing::Speed(x) if x > 0.0 => x,
            Timing::Speed(_) => return None,
        };
        let secs = elapsed_ns as f64 / 1e9 / speed;
        Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }
}

impl std::str::FromStr for Timing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asap" => Ok(Timing::Asap),
            "original" => Ok(Timing::Original),
            _ => {
                let x = s
                    .strip_prefix('x')
                    .and_then(|f| f.parse::<f64>().ok())
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| {
                        format!("expected asap, original or xN (N > 0, e.g. x2), got {s:?}")
                    })?;
                Ok(Timing::Speed(x))
            }
        }
    }
}

/// What to replay and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// First record whose command is verified; commands before it are executed only to
    /// rebuild the device state.
    pub start: RecordId,
    /// Stop before the first command at or after this record (None: the whole capture).
    pub end: Option<RecordId>,
    /// Report every divergence instead of stopping at the first.
    pub keep_going: bool,
    /// Write every replayed frame (of the first loop, within the verified range) as a PNG here.
    pub frames_dir: Option<PathBuf>,
    /// Pacing.
    pub timing: Timing,
    /// How many times to replay (at least 1); later loops are also compared with the first.
    pub loops: u32,
    /// Device configuration; None derives it from the capture ([`device_config_for`]).
    pub device_config: Option<DeviceConfig>,
    /// Verify frames on a thread of their own while the next commands run (`Some(true)`), on
    /// the executing thread (`Some(false)`), or decide from the cores available (`None`: a
    /// thread of its own when there are at least [`VERIFY_THREAD_CORES`]). Reports are the
    /// same either way.
    pub verify_thread: Option<bool>,
    /// Threads that decode (decompress and verify) large recorded guest-memory blobs while
    /// the reading thread goes on and the device executes earlier commands: `Some(0)` decodes
    /// everything on the reading thread, `None` decides from the cores available
    /// ([`decode_threads_for`]). Reports are the same either way.
    pub decode_threads: Option<usize>,
    /// Replay against this external vhost-user backend instead of vgt-device
    /// ([`crate::backend`]); `None` replays on vgt-device.
    pub backend: Option<BackendOptions>,
}

/// Blobs of recorded guest memory at least this long are decoded on the decoding threads (a
/// smaller one costs less to decode than to hand over).
pub const DECODE_APART_MIN: u64 = 64 << 10;

/// At most this many decoding threads are started.
pub const MAX_DECODE_THREADS: usize = 4;

/// The decoding threads used when [`ReplayOptions::decode_threads`] is `None`: one per core
/// but the executing thread's (the reading thread only parses records once blobs decode
/// elsewhere), at most [`MAX_DECODE_THREADS`], none on a single core. More would take turns with
/// the executing thread: on 2 cores, 2 decoding threads made the decode-bound fb sample 10-17 %
/// faster but the execution-bound modes sample 5-8 % slower (docs/BENCHMARKS.md).
pub fn decode_threads_for(cores: usize) -> usize {
    cores.saturating_sub(1).min(MAX_DECODE_THREADS)
}

/// With at least this many cores, frames are verified on a thread of their own by default
/// (one core each for reading, executing and verifying; with fewer, a third busy thread only
/// takes turns with the other two).
pub const VERIFY_THREAD_CORES: usize = 3;

/// Receives progress and findings while a replay runs (the CLI's progress bar and error
/// lines). Every method has a default that does nothing.
pub trait ReplayObserver {
    /// The replay of loop `loop_index` starts over `records` records.
    fn started(&mut self, loop_index: u32, records: u64) {
        let _ = (loop_index, records);
    }
    /// Command record `record` is about to be executed.
    fn progress(&mut self, record: RecordId) {
        let _ = record;
    }
    /// A divergence was found.
    fn divergence(&mut self, divergence: &Divergence) {
        let _ = divergence;
    }
    /// A command could not be replayed by this renderer.
    fn unsupported(&mut self, unsupported: &Unsupported) {
        let _ = unsupported;
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl ReplayObserver for Quiet {}

/// Why a replay could not run at all (divergences are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The capture could not be read.
    #[error("reading the capture: {source}")]
    Capture {
        /// The cause.
        #[source]
        source: vgt_format::file::Error,
    },
    /// The device could not be created.
    #[error("creating the device: {source}")]
    Device {
        /// The cause.
        #[source]
        source: vgt_device::DeviceError,
    },
    /// The frames directory could not be created.
    #[error("creating frames directory {path}: {source}")]
    FramesDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be written.
    #[error(transparent)]
    Png(#[from] PngError),
    /// The external backend could not be started or connected to.
    #[error("{detail}")]
    Backend {
        /// What went wrong.
        detail: String,
    },
    /// The options make no sense.
    #[error("bad options: {detail}")]
    Options {
        /// What is wrong.
        detail: String,
    },
}

/// Derives the device configuration from a capture: the number of scanouts from the recorded
/// config space, EDID from the offered features, and each scanout's configured size from what
/// the device answered from its configuration: a GET_DISPLAY_INFO response, or else the modes
/// of GET_EDID responses, that no GPU-socket reply fed. When every answer came from the host,
/// the first GET_DISPLAY_INFO response's sizes are used, then [`DEFAULT_SCANOUT_SIZE`].
pub fn device_config_for(reader: &CaptureReader) -> DeviceConfig {
    let mut num_scanouts = 1usize;
    // A capture whose session start holds no config space (proxy mode: it is in the recorded
    // GET_CONFIG, where QEMU then replaces num_scanouts with its own): the scanouts the driver
    // used tell how many it was given.
    let mut config_known = false;
    let mut used_scanouts = 1usize;
    let mut edid = true;
    // The command whose window we are in: (id, code, EDID scanout), and whether a GPU-socket
    // reply answered it.
    let mut current: Option<(RecordId, u32, u32)> = None;
    let mut replied = false;
    let mut from_config: Option<Vec<(u32, u32)>> = None;
    let mut from_edid: Vec<Option<(u32, u32)>> = vec![None; 16];
    let mut from_host: Option<Vec<(u32, u32)>> = None;
    let sizes_of = |info: &vgt_format::wire::DisplayInfo| -> Vec<(u32, u32)> {
        info.pmodes
            .iter()
            .map(|p| {
                if p.r.width == 0 || p.r.height == 0 {
                    DEFAULT_SCANOUT_SIZE
                } else {
                    (p.r.width, p.r.height)
                }
            })
            .collect()
    };
    for item in reader.iter().take(20_000) {
        let Ok((id, record)) = item else { break };
        match record.body {
            RecordBody::SessionStart(s) => {
                edid = s.features_offered & vgt_device::F_EDID != 0;
                if let Ok(cfg) = reader.read_payload(&s.device_config)
                    && let Some(n) = cfg.get(8..12).and_then(|b| b.try_into().ok())
                {
                    num_scanouts = (u32::from_le_bytes(n) as usize).clamp(1, 16);
                    config_known = true;
                }
            }
            RecordBody::Command(c) => {
                replied = false;
                if let Ok(req) = reader.read_payload(&c.request)
                    && let Ok(r) = Request::decode(&req)
                {
                    let scanout = match r.command {
                        Command::GetEdid(g) => Some(g.scanout),
                        Command::SetScanout(s) => Some(s.scanout_id),
                        Command::SetScanoutBlob(s) => Some(s.scanout_id),
                        Command::UpdateCursor(u) | Command::MoveCursor(u) => Some(u.pos.scanout_id),
                        _ => None,
                    };
                    if let Some(id) = scanout.filter(|&id| id < 16) {
                        used_scanouts = used_scanouts.max(id as usize + 1);
                    }
                }
                current = reader.read_payload(&c.request).ok().and_then(|req| {
                    let code = u32::from_le_bytes(req.get(0..4)?.try_into().ok()?);
                    let scanout = req
                        .get(24..28)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_le_bytes);
                    Some((id, code, scanout))
                });
            }
            RecordBody::GpuSocket(g)
                if g.direction == Direction::BackendReply
                    && (g.request == GpuSocketRequest::GET_DISPLAY_INFO.0
                        || g.request == GpuSocketRequest::GET_EDID.0) =>
            {
                replied = true;
            }
            RecordBody::Response(r) => {
                let Some((cmd, code, scanout)) = current else {
                    continue;
                };
                if r.command != cmd {
                    continue;
                }
                let Ok(bytes) = reader.read_payload(&r.bytes) else {
                    continue;
                };
                let Ok(resp) = Response::decode(&bytes) else {
                    continue;
                };
                match resp.body {
                    ResponseBody::OkDisplayInfo(info)
                        if code == CommandType::GET_DISPLAY_INFO.0 =>
                    {
                        if replied {
                            from_host.get_or_insert_with(|| sizes_of(&info));
                        } else {
                            from_config = Some(sizes_of(&info));
                            break;
                        }
                    }
                    ResponseBody::OkEdid(e) if code == CommandType::GET_EDID.0 && !replied => {
                        if let Some(t) = e
                            .edid
                            .get(wire::edid::DTD_OFFSET..)
                            .and_then(wire::edid::parse_detailed_timing)
                            && let Some(slot) = from_edid.get_mut(scanout as usize)
                            && slot.is_none()
                            && t.h_active > 0
                            && t.v_active > 0
                        {
                            *slot = Some((t.h_active, t.v_active));
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !config_known {
        num_scanouts = used_scanouts;
    }
    let scanouts = (0..num_scanouts)
        .map(|i| {
            from_config
                .as_ref()
                .and_then(|s| s.get(i).copied())
                .or_else(|| from_edid.get(i).copied().flatten())
                .or_else(|| from_host.as_ref().and_then(|s| s.get(i).copied()))
                .unwrap_or(DEFAULT_SCANOUT_SIZE)
        })
        .collect();
    DeviceConfig {
        scanouts,
        edid,
        ..DeviceConfig::default()
    }
}

/// Replays a capture through vgt-device (rutabaga_gfx 2D).
#[derive(Debug)]
pub struct Replayer<'r> {
    reader: &'r CaptureReader,
    options: ReplayOptions,
}

impl<'r> Replayer<'r> {
    /// A replayer over an opened capture.
    pub fn new(reader: &'r CaptureReader, options: ReplayOptions) -> Self {
        Replayer { reader, options }
    }

    /// Runs the replay (all loops) and returns what it found.
    pub fn run(&self, observer: &mut dyn ReplayObserver) -> Result<ReplayReport, ReplayError> {
        let opts = &self.options;
        if let Some(end) = opts.end
            && end <= opts.start
        {
            return Err(ReplayError::Options {
                detail: format!("empty range {}..{end}", opts.start),
            });
        }
        if let Some(dir) = &opts.frames_dir {
            std::fs::create_dir_all(dir).map_err(|source| ReplayError::FramesDir {
                path: dir.clone(),
                source,
            })?;
        }
        let config = match &opts.device_config {
            Some(c) => c.clone(),
            None => device_config_for(self.reader),
        };
        let mut report = ReplayReport {
            records: self.reader.len(),
            truncated_at: self.reader.health().truncated_at,
            unfinished: false,
            ..ReplayReport::default()
        };
        let plan = opts.backend.as_ref().map(|_| Plan::scan(self.reader));
        let stream = stream_matched(self.reader);
        // One pass over the records for what lies outside its command's window.
        let (crashes, stream_replies, in_flight_writes) = recorded_elsewhere(self.reader, stream);
        let started = Instant::now();
        let loops = opts.loops.max(1);
        for loop_index in 0..loops {
            observer.started(loop_index, self.reader.len());
            let device = vgt_device::Device::new(config.clone())
                .map_err(|source| ReplayError::Device { source })?;
            let backend = match (&opts.backend, &plan) {
                (Some(b), Some(plan)) => Some(
                    ExternalBackend::start(b, plan)
                        .map_err(|detail| ReplayError::Backend { detail })?,
                ),
                _ => None,
            };
            if let Some(b) = &backend {
                report.backend = Some(b.describe().to_owned());
            }
            let mut run = Run {
                stream,
                cursors_in_order: InOrder::default(),
                fences_in_order: InOrder::default(),
                crashes: crashes.clone(),
                stream_replies: stream_replies.clone(),
                backend,
                backend_failure: None,
                executed_any: false,
                reader: self.reader,
                opts,
                loop_index,
                device,
                memory: SparseMemory::new(),
                expected: HashMap::new(),
                actual: HashMap::new(),
                commands: HashMap::new(),
                unsupported_resources: HashMap::new(),
                report: &mut report,
                observer,
                response_index: 0,
                stop: false,
                crashed: false,
                halted: false,
                crash_recorded: false,
                first_ts: None,
                paced_from: Instant::now(),
                span_start: None,
                span_end: 0,
                unverified: None,
                batch: Vec::new(),
                recycle: None,
            };
            run.run()?;
            report.loops += 1;
            if report.stopped_early || report.damaged.is_some() {
                break;
            }
        }
        report.wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The races that concern what was replayed.
        let last = report.last_record;
        report.in_flight_writes = in_flight_writes
            .into_iter()
            .filter(|c| last.is_some_and(|l| *c <= l))
            .collect();
        Ok(report)
    }
}

/// The records that belong to one command: everything after it up to the next command, with
/// every payload already read (by the reading thread).
#[derive(Default)]
struct Window {
    /// The command: record, timestamp, record, request bytes.
    command: Option<(RecordId, u64, CommandRecord, Vec<u8>)>,
    /// Guest bytes read for it: address, bytes.
    reads: Vec<(u64, Vec<u8>)>,
    /// Blob reads whose content hash the reading thread left to the executing thread: index
    /// in `reads`, memory-read record, blob reference.
    unhashed: Vec<(usize, RecordId, BlobRef)>,
    /// Blob reads being decoded on a decoding thread: index in `reads` (an empty vector until
    /// then), memory-read record, where the bytes (or the reader's error) will come from.
    decoding: Vec<(usize, RecordId, Receiver<Decoded>)>,
    /// The raw length of the blobs in `decoding`.
    decoding_bytes: usize,
    replies: VecDeque<(u32, Vec<u8>)>,
    responses: Vec<(RecordId, RecordId, Vec<u8>)>,
    frames: Vec<(RecordId, Frame)>,
    fences: Vec<(RecordId, FenceSignal)>,
    cursors: Vec<(RecordId, CursorSummary)>,
    malformed: bool,
    crash: Option<String>,
    reset: bool,
    /// The window holds a DriverOk lifecycle record (QEMU handed over a display socket).
    driver_ok: bool,
    memory_ops: Vec<(VhostUserRequest, Vec<u8>)>,
    last_ts: u64,
    /// The last window of the capture.
    last: bool,
    /// It holds the capture's End lifecycle record (the writer finished its records).
    end: bool,
    /// A later record of this window could not be read: the window is not executed, only its
    /// reads are resolved, so that damage in one of them (found on a decoding thread or by a
    /// deferred hash check) is reported as the earlier damage it is.
    unread: bool,
}

/// What the reading thread hands to the executing thread.
enum Item {
    /// Consecutive windows, in order (batched so that the threads meet once per batch, not
    /// once per command).
    Windows(Vec<Window>),
    /// A record or payload could not be read; nothing after it is delivered.
    Damaged(RecordId, String),
    /// Reading ended; the last record read.
    End(Option<RecordId>),
}

/// A blob decoded by a decoding thread: its bytes, or the reader's error for it.
type Decoded = Result<Vec<u8>, vgt_format::file::Error>;

/// One blob for a decoding thread: the payload, a buffer to decode into, where to send it.
struct DecodeJob {
    payload: Payload,
    buf: Vec<u8>,
    done: SyncSender<Decoded>,
}

/// The decoding threads' side: they take jobs in turn from one queue, so blobs are decoded
/// about in file order, several at once.
fn decode(reader: &CaptureReader, jobs: &Mutex<Receiver<DecodeJob>>) {
    loop {
        let job = {
            let queue = jobs.lock().unwrap_or_else(|p| p.into_inner());
            queue.recv()
        };
        let Ok(DecodeJob {
            payload,
            mut buf,
            done,
        }) = job
        else {
            return;
        };
        // The same checks as on the reading thread (CRC, header, decompression, content hash).
        let decoded = reader.read_payload_into(&payload, &mut buf).map(|()| buf);
        // A window that is no longer wanted (replay stopped) drops its receiver.
        let _ = done.send(decoded);
    }
}

/// Payload buffers waiting to be reused by the reading thread.
const RECYCLED: usize = 64;

/// The reading thread leaves blob content hashes to the executing thread while fewer than this
/// many batches wait for it (it would otherwise wait for the reading thread): the two threads
/// share the hashing according to which one is behind.
const DEFER_BELOW: usize = 2;

/// A batch is handed over once it holds this many payload bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many windows.
const BATCH_WINDOWS: usize = 64;

/// Buffers the executing thread no longer needs, handed back for the reading thread to read
/// payloads into (so that steady-state replay allocates, and faults in, no new payload memory).
struct Pool {
    rx: Receiver<Vec<u8>>,
}

impl Pool {
    fn get(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    /// The bytes of `p`, owned: an inline payload's vector is taken over; a blob is read (and
    /// verified) into a buffer from the pool.
    fn take(&self, reader: &CaptureReader, p: Payload) -> Result<Vec<u8>, vgt_format::file::Error> {
        match p {
            Payload::Inline(b) => Ok(b),
            blob @ Payload::Blob(_) => {
                let mut out = self.get();
                reader.read_payload_into(&blob, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Like [`Pool::take`] for a blob whose content hash the executing thread checks
    /// ([`Run::check_unhashed`]) before it uses the bytes.
    fn take_unhashed(
        &self,
        reader: &CaptureReader,
        p: &Payload,
    ) -> Result<Vec<u8>, vgt_format::file::Error> {
        let mut out = self.get();
        reader.read_payload_into_unhashed(p, &mut out)?;
        Ok(out)
    }
}

/// Reads records in order, groups them into windows and reads their payloads (blob
/// decompression and verification happen here, on the reading thread, while the device
/// executes earlier commands).
fn produce(
    reader: &CaptureReader,
    end: Option<RecordId>,
    tx: &SyncSender<Item>,
    pool: &Pool,
    waiting: &AtomicUsize,
    decoders: Option<Sender<DecodeJob>>,
) {
    let mut window = Window::default();
    let mut uploads = Uploads::default();
    let mut last_record = None;
    let mut damaged = None;
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    for item in reader.iter() {
        let (id, record) = match item {
            Ok(r) => r,
            Err(e) => {
                damaged = Some((last_record.map_or(0, |r: RecordId| r + 1), e.to_string()));
                break;
            }
        };
        last_record = Some(id);
        if let RecordBody::Command(_) = &record.body
            && end.is_some_and(|end| id >= end)
        {
            break;
        }
        // Few batches waiting: the executing thread is about to wait for this one, so it
        // checks the content hashes of this window's blobs itself.
        let defer = waiting.load(Ordering::Relaxed) < DEFER_BELOW;
        let to = Reading {
            reader,
            pool,
            defer_hash: defer,
            decoders: decoders.as_ref(),
        };
        match push(&to, &mut uploads, &mut window, id, record) {
            Ok(None) => {}
            Ok(Some(done)) => {
                // Saturating: decoding_bytes counts the lengths records claim, which damage
                // can make anything.
                batch_bytes = batch_bytes
                    .saturating_add(done.reads.iter().map(|(_, b)| b.len()).sum::<usize>())
                    .saturating_add(done.decoding_bytes);
                batch.push(done);
                if (batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_WINDOWS)
                    && !send_windows(tx, waiting, std::mem::take(&mut batch))
                {
                    return;
                }
                if batch.is_empty() {
                    batch_bytes = 0;
                }
            }
            Err(e) => {
                // The window this record belongs to is not executed, but its earlier reads
                // may be damaged too, and the first damage in record order is the one to
                // report, however the reads were spread over threads.
                window.unread = true;
                batch.push(std::mem::take(&mut window));
                if !send_windows(tx, waiting, batch) {
                    return;
                }
                let _ = tx.send(Item::Damaged(id, e.to_string()));
                let _ = tx.send(Item::End(last_record));
                return;
            }
        }
    }
    if !batch.is_empty() && !send_windows(tx, waiting, batch) {
        return;
    }
    if let Some((id, why)) = damaged {
        // Before the last window, so that it is known to be incomplete.
        if tx.send(Item::Damaged(id, why)).is_err() {
            return;
        }
    }
    window.last = true;
    if send_windows(tx, waiting, vec![window]) {
        let _ = tx.send(Item::End(last_record));
    }
}

/// Hands a batch over, counting it as waiting; false when the executing thread has stopped.
fn send_windows(tx: &SyncSender<Item>, waiting: &AtomicUsize, batch: Vec<Window>) -> bool {
    waiting.fetch_add(1, Ordering::Relaxed);
    tx.send(Item::Windows(batch)).is_ok()
}

/// The content last written to each guest range, by blob hash, so that an identical re-upload
/// (same range, same stored blob) is neither decompressed nor copied again: guest memory as
/// rebuilt already holds exactly those bytes.
#[derive(Default)]
struct Uploads {
    /// start -> (length, content hash); the ranges never overlap.
    ranges: BTreeMap<u64, (u64, u128)>,
    longest: u64,
}

impl Uploads {
    /// Records a write of `len` bytes at `addr` with content `hash` (None: unknown content).
    /// Returns true when the range already holds exactly that content.
    fn unchanged(&mut self, addr: u64, len: u64, hash: Option<u128>) -> bool {
        if let Some(h) = hash
            && self.ranges.get(&addr) == Some(&(len, h))
        {
            return true;
        }
        let end = addr.saturating_add(len);
        let overlapping: Vec<u64> = self
            .ranges
            .range(addr.saturating_sub(self.longest)..end)
            .filter(|(s, (l, _))| s.saturating_add(*l) > addr)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            self.ranges.remove(&s);
        }
        if let Some(h) = hash {
            self.ranges.insert(addr, (len, h));
            self.longest = self.longest.max(len);
        }
        false
    }
}

/// How the reading thread reads a window's payloads.
struct Reading<'a> {
    reader: &'a CaptureReader,
    pool: &'a Pool,
    /// Leave blob content hashes to the executing thread.
    defer_hash: bool,
    /// The decoding threads' queue, when there are any.
    decoders: Option<&'a Sender<DecodeJob>>,
}

/// Adds a record to the current window; returns the finished window when a new command
/// starts one.
fn push(
    to: &Reading<'_>,
    uploads: &mut Uploads,
    w: &mut Window,
    id: RecordId,
    record: Record,
) -> Result<Option<Window>, vgt_format::file::Error> {
    let (reader, pool, defer_hash) = (to.reader, to.pool, to.defer_hash);
    let ts = record.ts_ns;
    let out = match record.body {
        RecordBody::Command(c) => {
            let mut c = c;
            let request = pool.take(
                reader,
                std::mem::replace(&mut c.request, Payload::Inline(Vec::new())),
            )?;
            let done = std::mem::take(w);
            w.command = Some((id, ts, c, request));
            w.last_ts = ts;
            return Ok(Some(done));
        }
        RecordBody::MemoryRead(m) => {
            let len = m.data.len();
            let hash = match &m.data {
                Payload::Blob(r) => Some(r.hash.0),
                Payload::Inline(_) => None,
            };
            if !uploads.unchanged(m.addr, len, hash) {
                let mut data = m.data;
                if let (Payload::Blob(_), Some(decoders)) = (&data, to.decoders)
                    && len >= DECODE_APART_MIN
                {
                    let (done, decoded) = std::sync::mpsc::sync_channel(1);
                    let job = DecodeJob {
                        payload: data,
                        buf: pool.get(),
                        done,
                    };
                    match decoders.send(job) {
                        Ok(()) => {
                            w.decoding.push((w.reads.len(), id, decoded));
                            w.decoding_bytes = w
                                .decoding_bytes
                                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                            w.reads.push((m.addr, Vec::new()));
                            w.last_ts = w.last_ts.max(ts);
                            return Ok(None);
                        }
                        // No decoding thread left (one panicked): decode it here.
                        Err(std::sync::mpsc::SendError(job)) => data = job.payload,
                    }
                }
                let bytes = match &data {
                    Payload::Blob(r) if defer_hash => {
                        let bytes = pool.take_unhashed(reader, &data)?;
                        w.unhashed.push((w.reads.len(), id, *r));
                        bytes
                    }
                    _ => pool.take(reader, data)?,
                };
                w.reads.push((m.addr, bytes));
            }
            None
        }
        RecordBody::Response(r) => {
            let bytes = pool.take(reader, r.bytes)?;
            w.responses.push((id, r.command, bytes));
            None
        }
        RecordBody::Frame(f) => {
            w.frames.push((id, f));
            None
        }
        RecordBody::Cursor(c) => {
            let action = match c.action {
                CursorAction::Update => "update",
                CursorAction::Move => "move",
                CursorAction::Hide => "hide",
                CursorAction::Other => "other",
            };
            w.cursors.push((
                id,
                CursorSummary {
                    action,
                    scanout_id: c.scanout_id,
                    x: c.x,
                    y: c.y,
                    hot: (c.hot_x, c.hot_y),
                    resource_id: c.resource_id,
                    image_hash: c.image.as_ref().map(|p| hex(payload_hash(p))),
                },
            ));
            None
        }
        RecordBody::Fence(f) => {
            w.fences.push((id, f));
            None
        }
        RecordBody::GpuSocket(g) => {
            if g.direction == Direction::BackendReply {
                let bytes = pool.take(reader, g.payload)?;
                w.replies.push_back((g.request, bytes));
            }
            None
        }
        RecordBody::Lifecycle(l) => {
            let this = w.command.as_ref().map(|c| c.0);
            match l.kind {
                LifecycleKind::ValidationError
                    if l.command.is_some()
                        && l.command == this
                        && l.message.starts_with("malformed descriptor chain") =>
                {
                    w.malformed = true;
                }
                LifecycleKind::Crash if l.command.is_some() && l.command == this => {
                    w.crash = Some(l.message);
                }
                LifecycleKind::Reset => w.reset = true,
                LifecycleKind::DriverOk => w.driver_ok = true,
                LifecycleKind::End => w.end = true,
                _ => {}
            }
            None
        }
        RecordBody::VhostUser(v) => {
            let req = VhostUserRequest(v.request);
            if v.direction == Direction::FrontToBack
                && matches!(
                    req,
                    VhostUserRequest::SET_MEM_TABLE
                        | VhostUserRequest::ADD_MEM_REG
                        | VhostUserRequest::REM_MEM_REG
                )
            {
                let bytes = pool.take(reader, v.payload)?;
                w.memory_ops.push((req, bytes));
            }
            None
        }
        _ => None,
    };
    w.last_ts = w.last_ts.max(ts);
    Ok(out)
}

struct CommandInfo {
    name: String,
    verify: bool,
    unsupported: Option<String>,
    unrecorded_read: bool,
    resource_id: Option<u32>,
}

/// Windows whose frames may still be with the verifier while the executing thread runs the
/// next commands (their findings are filed in order once the verifier has answered)...
const PIPELINE_WINDOWS: usize = 16;
/// ...of which at most this many sent frames to verify (each holds a picture: bounded memory,
/// and a steady number of picture buffers for the allocator to reuse).
const PIPELINE_JOBS: usize = 2;

/// Where frames are verified.
enum FrameLink<'r> {
    /// On the verifying thread: the executing thread's ends of its channels.
    Threaded {
        jobs: Sender<FrameJob>,
        outcomes: Receiver<FrameOutcome>,
        /// Pixel buffers the verifier no longer needs (see `Verifier::retired`).
        retired: Receiver<Vec<u8>>,
    },
    /// On the executing thread, as each command's frames are handed over.
    Inline {
        verifier: Box<Verifier<'r>>,
        outcomes: VecDeque<FrameOutcome>,
        /// Pixel buffers the verifier no longer needs.
        retired: Receiver<Vec<u8>>,
    },
}

impl FrameLink<'_> {
    /// Hands a job over; false when the verifying thread is gone.
    fn send(&mut self, job: FrameJob) -> bool {
        match self {
            FrameLink::Threaded { jobs, .. } => jobs.send(job).is_ok(),
            FrameLink::Inline {
                verifier, outcomes, ..
            } => {
                outcomes.push_back(verifier.verify_guarded(job));
                true
            }
        }
    }

    /// The outcome of the oldest job not yet answered (waits for the verifying thread; one that
    /// is gone has nothing to say).
    fn recv(&mut self) -> FrameOutcome {
        match self {
            FrameLink::Threaded { outcomes, .. } => outcomes.recv().unwrap_or_default(),
            FrameLink::Inline { outcomes, .. } => outcomes.pop_front().unwrap_or_default(),
        }
    }

    /// Picture buffers the verifier handed back so far.
    fn retired(&self) -> std::sync::mpsc::TryIter<'_, Vec<u8>> {
        match self {
            FrameLink::Threaded { retired, .. } | FrameLink::Inline { retired, .. } => {
                retired.try_iter()
            }
        }
    }
}

/// What the device did for one command (the raw results, compared when the window is filed).
struct Ran {
    /// The completions, or the panic message when the device crashed.
    result: Result<Vec<Completion>, String>,
    misses: Vec<UnrecordedRead>,
    unsupported: Option<String>,
    signalled: Vec<FenceInfo>,
    shown: Vec<CursorSummary>,
}

/// A window's command as executed.
struct Executed {
    id: RecordId,
    ts: u64,
    code: Option<u32>,
    resource_id: Option<u32>,
    verify: bool,
    /// The crash the capture recorded for it.
    crash: Option<String>,
    /// None: the capturing transport rejected the chain, so no device ever saw it.
    ran: Option<Ran>,
}

/// A window the device has executed, waiting to be filed: everything the comparison needs.
struct Done {
    command: Option<Executed>,
    responses: Vec<(RecordId, RecordId, Vec<u8>)>,
    fences: Vec<(RecordId, FenceSignal)>,
    cursors: Vec<(RecordId, CursorSummary)>,
    reset: bool,
    last_ts: u64,
    /// A frame job was sent for it: an outcome comes back.
    job: bool,
    /// The capture's writer never finished (this is the last window).
    unfinished: bool,
    /// The capture ends inside this command's records.
    incomplete: Option<RecordId>,
    /// The capture recorded a crash in this window.
    crash_recorded: bool,
}

struct Run<'a> {
    reader: &'a CaptureReader,
    opts: &'a ReplayOptions,
    loop_index: u32,
    device: vgt_device::Device,
    /// Frames, cursor changes and fences are matched in order over the whole capture, not per
    /// command window ([`stream_matched`]).
    stream: bool,
    cursors_in_order: InOrder<CursorSummary>,
    fences_in_order: InOrder<FenceSummary>,
    /// Stream matching: every recorded GPU-socket reply, in order, for the host questions.
    stream_replies: VecDeque<(u32, Vec<u8>)>,
    /// The commands the capture records a crash on (a device panic, or in flight when the
    /// backend went away), with the message.
    crashes: HashMap<RecordId, String>,
    /// The external backend commands run on instead of `device`, when replaying against one.
    backend: Option<ExternalBackend>,
    /// The backend failed outside a command (resetting it): (record, why), filed next.
    backend_failure: Option<(RecordId, String)>,
    /// A command was executed in this loop (a later DriverOk restarts a backend's rings).
    executed_any: bool,
    memory: SparseMemory,
    /// Recorded responses not yet matched, by command record.
    expected: HashMap<RecordId, (RecordId, Vec<u8>)>,
    /// Replayed completions not yet matched, by command record.
    actual: HashMap<RecordId, Vec<u8>>,
    commands: HashMap<RecordId, CommandInfo>,
    /// Resources whose creation this renderer could not do, with the creating record.
    unsupported_resources: HashMap<u32, RecordId>,
    report: &'a mut ReplayReport,
    observer: &'a mut dyn ReplayObserver,
    response_index: usize,
    stop: bool,
    crashed: bool,
    /// The device panicked: nothing more is executed.
    halted: bool,
    /// A window filed so far recorded a crash.
    crash_recorded: bool,
    first_ts: Option<u64>,
    paced_from: Instant,
    span_start: Option<u64>,
    span_end: u64,
    /// A command not to verify (the last one of a cut capture).
    unverified: Option<RecordId>,
    /// Divergences of the current window, reported in record order when it is done.
    batch: Vec<Divergence>,
    /// Hands payload buffers back to the reading thread.
    recycle: Option<SyncSender<Vec<u8>>>,
}

impl Run<'_> {
    fn run(&mut self) -> Result<(), ReplayError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(4);
        let (recycle, returned) = std::sync::mpsc::sync_channel::<Vec<u8>>(RECYCLED);
        self.recycle = Some(recycle);
        let reader = self.reader;
        let end = self.opts.end;
        let waiting = AtomicUsize::new(0);
        // Later loops compare their frame digests with the first loop's.
        let reference = (self.loop_index > 0).then(|| self.report.frame_digests.clone());
        let frames_dir = if self.loop_index == 0 {
            self.opts.frames_dir.clone()
        } else {
            None
        };
        let threaded = self.opts.verify_thread.unwrap_or_else(|| {
            std::thread::available_parallelism().is_ok_and(|n| n.get() >= VERIFY_THREAD_CORES)
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let decode_threads = self
            .opts
            .decode_threads
            .unwrap_or_else(|| decode_threads_for(cores))
            .min(MAX_DECODE_THREADS);
        let stream = self.stream;
        let (jobs, job_queue) = std::sync::mpsc::channel::<DecodeJob>();
        let job_queue = Mutex::new(job_queue);
        std::thread::scope(|scope| {
            let waiting_ = &waiting;
            let decoders = (decode_threads > 0).then_some(jobs);
            for _ in 0..decode_threads {
                let queue = &job_queue;
                scope.spawn(move || decode(reader, queue));
            }
            scope.spawn(move || {
                produce(reader, end, &tx, &Pool { rx: returned }, waiting_, decoders);
            });
            let link = if threaded {
                let (jobs, job_rx) = std::sync::mpsc::channel::<FrameJob>();
                let (outcome_tx, outcomes) = std::sync::mpsc::channel::<FrameOutcome>();
                let (retired_tx, retired) = std::sync::mpsc::channel::<Vec<u8>>();
                let verifier =
                    Verifier::new(reader, reference, frames_dir, Some(retired_tx), stream);
                scope.spawn(move || verifier.run(job_rx, outcome_tx));
                FrameLink::Threaded {
                    jobs,
                    outcomes,
                    retired,
                }
            } else {
                let (retired_tx, retired) = std::sync::mpsc::channel::<Vec<u8>>();
                FrameLink::Inline {
                    verifier: Box::new(Verifier::new(
                        reader,
                        reference,
                        frames_dir,
                        Some(retired_tx),
                        stream,
                    )),
                    outcomes: VecDeque::new(),
                    retired,
                }
            };
            // Leaving early drops `rx` and the link, which ends the other threads.
            self.consume(rx, &waiting, link)
        })
    }

    fn consume(
        &mut self,
        rx: Receiver<Item>,
        waiting: &AtomicUsize,
        mut link: FrameLink<'_>,
    ) -> Result<(), ReplayError> {
        // Writing PNGs: no window runs ahead of its frames (a replay that stops writes no
        // frame of the commands after the stop).
        let depth = if self.opts.frames_dir.is_some() && self.loop_index == 0 {
            0
        } else {
            PIPELINE_WINDOWS
        };
        // Without an index and without the End record the writer never finished: the capture
        // was cut (maybe at a chunk boundary, which leaves no incomplete chunk behind). A
        // capture opened by scanning on purpose still has its End record.
        let no_index = !self.reader.health().indexed;
        let mut cut = self.report.truncated_at.is_some();
        let mut pending: VecDeque<Done> = VecDeque::new();
        'items: for item in rx {
            match item {
                Item::Windows(batch) => {
                    waiting.fetch_sub(1, Ordering::Relaxed);
                    for mut w in batch {
                        if let Err((id, why)) = self.resolve_reads(&mut w) {
                            // As if the reading thread had found it: this window is not
                            // executed, and nothing after it is read. It comes before damage
                            // the reading thread already reported further on.
                            self.file(&mut pending, &mut link, 0)?;
                            if self.stop {
                                break 'items;
                            }
                            self.damaged_at(id, why);
                            self.report.last_record = Some(id);
                            cut = true;
                            break 'items;
                        }
                        if w.unread {
                            // Its reads are sound; the damage the reading thread found next
                            // (the Damaged item that follows) is the one to report.
                            continue;
                        }
                        let unfinished =
                            w.last && no_index && !w.end && self.report.truncated_at.is_none();
                        cut |= unfinished;
                        let mut incomplete = None;
                        if w.last
                            && cut
                            && let Some((id, ..)) = &w.command
                        {
                            // The file ends inside this command's records: some of its reads,
                            // frames or its response may be missing, so it runs (a crash still
                            // shows) unverified.
                            self.unverified = Some(*id);
                            if self.loop_index == 0 {
                                incomplete = Some(*id);
                            }
                        }
                        let mut done = self.execute(w, &mut link);
                        done.unfinished = unfinished;
                        done.incomplete = incomplete;
                        pending.push_back(done);
                        // After a device crash nothing more runs: file everything now.
                        let keep = if self.halted { 0 } else { depth };
                        self.file(&mut pending, &mut link, keep)?;
                        if self.stop {
                            break 'items;
                        }
                    }
                }
                Item::Damaged(id, why) => {
                    self.file(&mut pending, &mut link, 0)?;
                    if self.stop {
                        break 'items;
                    }
                    self.damaged_at(id, why);
                    cut = true;
                }
                Item::End(last) => {
                    self.file(&mut pending, &mut link, 0)?;
                    if self.stop {
                        break 'items;
                    }
                    self.report.last_record = last;
                }
            }
        }
        if !self.stop {
            self.file(&mut pending, &mut link, 0)?;
        }
        if !self.stop && !self.crashed && self.stream {
            // Stream matching: the frames still unmatched are missing or extra.
            let last = self.report.last_record.unwrap_or(0);
            if link.send(FrameJob {
                command: last,
                compare: true,
                write_png: false,
                expected: Vec::new(),
                events: Vec::new(),
                reset: false,
                finish: true,
            }) {
                let outcome = link.recv();
                self.report.frames += outcome.frames;
                self.report.frame_digests.extend(outcome.digests);
                self.report.frames_written += outcome.frames_written;
                for (rid, command, kind) in outcome.findings {
                    self.diverge(rid, command, kind);
                }
            }
        }
        if let Some(start) = self.span_start {
            // Saturating: recorded timestamps are the capture's word, however far apart.
            self.report.capture_span_ns = self
                .report
                .capture_span_ns
                .saturating_add(self.span_end.saturating_sub(start));
        }
        let incomplete = cut || self.crash_recorded;
        self.finish(incomplete);
        self.emit();
        Ok(())
    }

    /// Files executed windows in order, oldest first, until at most `keep` wait (always the
    /// same number, so that how far execution runs ahead of the filing never depends on thread
    /// timing). Stops at a stop, dropping the windows executed after it.
    fn file(
        &mut self,
        pending: &mut VecDeque<Done>,
        link: &mut FrameLink<'_>,
        keep: usize,
    ) -> Result<(), ReplayError> {
        while pending.len() > keep
            || (keep > 0 && pending.iter().filter(|d| d.job).count() > PIPELINE_JOBS)
        {
            let Some(done) = pending.pop_front() else {
                break;
            };
            // Waits for the verifier; a verifier that is gone has nothing to say.
            let outcome = done.job.then(|| link.recv());
            self.commit(done, outcome)?;
            if self.stop {
                pending.clear();
                break;
            }
        }
        Ok(())
    }

    /// Completes a window's reads: takes the blobs the decoding threads decoded (waiting for
    /// them), then checks the content hashes the reading thread left to this thread (the same
    /// XXH3-128 check `CaptureReader::read_payload_into` makes). A blob that does not decode or
    /// whose hash does not match is damage: the memory-read record and the reader's own error
    /// for that blob, exactly as if the reading thread had read it.
    ///
    /// When several reads are damaged, the error is the first one's in record order (decoded
    /// and deferred reads interleave, and which read went where depends on timing).
    fn resolve_reads(&self, w: &mut Window) -> Result<(), (RecordId, String)> {
        let mut first: Option<(RecordId, String)> = None;
        for (i, id, decoded) in std::mem::take(&mut w.decoding) {
            let bytes = match decoded.recv() {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    first = Some((id, e.to_string()));
                    break;
                }
                Err(_) => {
                    first = Some((id, "a decoding thread stopped".to_owned()));
                    break;
                }
            };
            if let Some((_, slot)) = w.reads.get_mut(i) {
                *slot = bytes;
            }
        }
        for (i, id, r) in std::mem::take(&mut w.unhashed) {
            if first.as_ref().is_some_and(|(f, _)| *f < id) {
                break;
            }
            let Some((_, bytes)) = w.reads.get_mut(i) else {
                continue;
            };
            if content_hash(bytes) == r.hash.0 {
                continue;
            }
            match self.reader.read_payload(&Payload::Blob(r)) {
                Ok(good) => *bytes = good.into_owned(),
                Err(e) => {
                    first = Some((id, e.to_string()));
                    break;
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Notes damage at record `id`; the earliest damaged record is the one reported (the
    /// reading thread may find damage further on before a decoding thread reports an earlier
    /// blob's).
    fn damaged_at(&mut self, id: RecordId, why: String) {
        if self
            .report
            .damaged
            .as_ref()
            .is_none_or(|(first, _)| id < *first)
        {
            self.report.damaged = Some((id, why));
        }
    }

    fn diverge(&mut self, record: RecordId, command: RecordId, kind: DivergenceKind) {
        let command_name = match self.commands.get(&command) {
            Some(c) => c.name.clone(),
            // Stream matching files frames after their command's response was compared.
            None => recorded_command_name(self.reader, command),
        };
        self.batch.push(Divergence {
            record,
            command,
            command_name,
            loop_index: self.loop_index,
            kind,
        });
    }

    /// Reports the divergences found for one window, in record order.
    fn emit(&mut self) {
        self.batch.sort_by_key(|d| d.record);
        for d in self.batch.drain(..) {
            self.observer.divergence(&d);
            self.report.divergences.push(d);
        }
    }

    fn pace(&mut self, ts: u64) {
        if self.opts.timing == Timing::Asap {
            return;
        }
        let first = *self.first_ts.get_or_insert(ts);
        if first == ts {
            self.paced_from = Instant::now();
        }
        let Some(target) = self.opts.timing.due_after(ts.saturating_sub(first)) else {
            return;
        };
        if let Some(wait) = target.checked_sub(self.paced_from.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// Runs a window's command on the device (guest memory, the device, its reset and memory
    /// table changes) and hands its display output to the verifier. Nothing is compared or
    /// reported here: [`Run::commit`] files the result once the frames are verified.
    fn execute(&mut self, w: Window, link: &mut FrameLink<'_>) -> Done {
        let Window {
            command,
            reads,
            unhashed: _,
            decoding: _,
            decoding_bytes: _,
            mut replies,
            responses,
            frames,
            fences,
            cursors,
            malformed,
            crash,
            reset,
            driver_ok,
            memory_ops,
            last_ts,
            last: _,
            end: _,
            unread: _,
        } = w;
        // A proxy files the crash records of every command in flight after the last command
        // it took, in that command's window: each names its command.
        let crash = match &command {
            Some((id, ..)) => crash.or_else(|| self.crashes.get(id).cloned()),
            None => crash,
        };
        let crash_recorded = crash.is_some();
        let mut events = Vec::new();
        let mut executed = None;
        let mut job_command = 0;
        let mut compare = false;
        let mut write_png = false;
        if let Some((id, ts, cmd, request)) = command {
            let verify = id >= self.opts.start && self.unverified != Some(id);
            if verify {
                self.pace(ts);
            }
            self.observer.progress(id);
            // A backend gets the recorded bytes in its own (shared) memory, at submission.
            let mut backend_reads = Vec::new();
            if self.backend.is_some() {
                backend_reads = reads;
            } else {
                for (addr, bytes) in reads {
                    if let Some(spare) = self.memory.write_owned(addr, bytes)
                        && let Some(r) = &self.recycle
                    {
                        // A full pool: the buffer is simply dropped.
                        let _ = r.try_send(spare);
                    }
                }
            }
            let code = request
                .get(0..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes);
            let resource_id = Request::decode(&request)
                .ok()
                .and_then(|r| r.command.resource_id());
            // Picture buffers the verifier no longer needs go back to the device, which writes
            // the next updates into them instead of allocating and faulting in fresh ones (it
            // keeps a few and drops the rest).
            for spare in link.retired() {
                self.device.recycle_pixels(spare);
            }
            let ran = (!malformed).then(|| {
                // The device takes the recorded display answers decoded, a backend as bytes.
                // Stream-matched captures answer from all replies in order: a queued command's
                // reply can sit in a later command's window.
                let mut no_replies = VecDeque::new();
                let answers = if self.stream {
                    &mut self.stream_replies
                } else {
                    &mut replies
                };
                let (device_replies, backend_replies) = if self.backend.is_some() {
                    (&mut no_replies, answers)
                } else {
                    (answers, &mut no_replies)
                };
                let mut host = Host {
                    replies: device_replies,
                    events: &mut events,
                    fences: Vec::new(),
                    cursors: Vec::new(),
                    unsupported: None,
                };
                let submission = Submission {
                    queue: cmd.queue,
                    token: id,
                    request: &request,
                    writable_len: cmd.writable_len,
                };
                let device = &mut self.device;
                let memory = &self.memory;
                let result = match &mut self.backend {
                    Some(b) => b
                        .submit(
                            id,
                            &cmd,
                            &request,
                            &backend_reads,
                            backend_replies,
                            &mut host,
                        )
                        .map_err(|f| f.0),
                    None => catch_unwind(AssertUnwindSafe(|| {
                        device.submit(submission, memory, &mut host)
                    }))
                    .map_err(|panic| panic_message(panic.as_ref())),
                };
                let Host {
                    fences: signalled,
                    cursors: shown,
                    unsupported,
                    ..
                } = host;
                Ran {
                    result,
                    misses: self.memory.take_misses(),
                    unsupported,
                    signalled,
                    shown,
                }
            });
            let ok = ran.as_ref().is_some_and(|r| r.result.is_ok());
            self.halted |= ran.as_ref().is_some_and(|r| r.result.is_err());
            // Where the original crashed, it showed nothing more: only the crash is compared.
            compare = verify && crash.is_none() && ok;
            write_png = verify;
            job_command = id;
            executed = Some(Executed {
                id,
                ts,
                code,
                resource_id,
                verify,
                crash,
                ran,
            });
        }
        if executed.is_some() {
            self.executed_any = true;
        }
        match &mut self.backend {
            // A backend gets what QEMU sent: a DriverOk after commands ran is QEMU's stop,
            // new display socket and ring restart (a guest reset or a VM pause; vgt-capture's
            // Reset records are its own device's inference and change nothing here).
            Some(b) if driver_ok && self.executed_any => {
                if let Err(f) = b.reset() {
                    self.halted = true;
                    self.backend_failure = Some((job_command, f.0));
                }
            }
            Some(_) => {}
            None if reset => self.device.reset(),
            None => {}
        }
        for (req, bytes) in memory_ops {
            match wire::decode_vhost_user_payload(req, false, &bytes) {
                Ok(VhostUserPayload::MemoryTable(t)) => self.memory.set_regions(&t.regions),
                Ok(VhostUserPayload::SingleRegion(r)) if req == VhostUserRequest::ADD_MEM_REG => {
                    self.memory.add_region(&r.region)
                }
                Ok(VhostUserPayload::SingleRegion(r)) => self.memory.remove_region(&r.region),
                _ => {}
            }
        }
        let job = (!events.is_empty() || reset || (compare && !frames.is_empty()))
            && link.send(FrameJob {
                command: job_command,
                compare,
                write_png,
                expected: frames,
                events,
                reset,
                finish: false,
            });
        Done {
            command: executed,
            responses,
            fences,
            cursors,
            reset,
            last_ts,
            job,
            unfinished: false,
            incomplete: None,
            crash_recorded,
        }
    }

    /// Files an executed window, with its frames' outcome: compares responses, frames, fences
    /// and cursors and reports what differs, in the order a replay that verified each window
    /// before running the next would.
    fn commit(&mut self, done: Done, outcome: Option<FrameOutcome>) -> Result<(), ReplayError> {
        let Done {
            command,
            responses,
            fences,
            cursors,
            reset,
            last_ts,
            job: _,
            unfinished,
            incomplete,
            crash_recorded,
        } = done;
        let mut outcome = outcome.unwrap_or_default();
        if let Some(e) = outcome.png_error.take() {
            return Err(e.into());
        }
        self.crash_recorded |= crash_recorded;
        if unfinished {
            self.report.unfinished = true;
        }
        if incomplete.is_some() {
            self.report.incomplete_command = incomplete;
        }
        if let Some(ex) = command {
            let (ts, verify) = (ex.ts, ex.verify);
            self.file_command(ex, &fences, &cursors, outcome);
            if verify {
                self.span_start.get_or_insert(ts);
                self.span_end = self.span_end.max(last_ts).max(ts);
            }
        }
        for (rid, command, bytes) in responses {
            if malformed_command(&self.report.transport_rejected, command) {
                continue;
            }
            match self.actual.remove(&command) {
                Some(found) => self.compare_response(rid, command, &bytes, &found),
                None => {
                    self.expected.insert(command, (rid, bytes));
                }
            }
        }
        if reset {
            self.expected.clear();
            self.actual.clear();
        }
        if let Some((record, message)) = self.backend_failure.take() {
            self.crashed = true;
            self.stop = true;
            self.diverge(record, record, DivergenceKind::Backend { message });
        }
        self.emit();
        if !self.opts.keep_going && !self.report.divergences.is_empty() {
            self.report.stopped_early = true;
            self.stop = true;
        }
        Ok(())
    }

    /// Files one executed command: counts, unrecorded reads, crashes, its completions, and
    /// (when its outputs are compared) its frames, fences and cursors.
    fn file_command(
        &mut self,
        ex: Executed,
        fences: &[(RecordId, FenceSignal)],
        cursors: &[(RecordId, CursorSummary)],
        outcome: FrameOutcome,
    ) {
        let Executed {
            id,
            ts: _,
            code,
            resource_id,
            verify,
            crash,
            ran,
        } = ex;
        self.commands.insert(
            id,
            CommandInfo {
                name: command_name(code),
                verify,
                unsupported: None,
                unrecorded_read: false,
                resource_id,
            },
        );
        let Some(ran) = ran else {
            // The capturing transport refused the chain; no device ever saw it.
            self.report.transport_rejected.push(id);
            self.commands.remove(&id);
            return;
        };
        self.report.commands += 1;
        if verify {
            self.report.verified_commands += 1;
        }
        let Ran {
            result,
            misses,
            unsupported,
            signalled,
            shown,
        } = ran;
        if let Some(info) = self.commands.get_mut(&id) {
            info.unsupported = unsupported.clone();
            info.unrecorded_read = !misses.is_empty();
        }
        if verify {
            for m in misses {
                self.diverge(
                    id,
                    id,
                    DivergenceKind::UnrecordedMemory {
                        addr: m.addr,
                        len: m.len,
                    },
                );
            }
        }
        // A resource whose creation (or setup) this renderer refused: later commands that use
        // it fail here too, and say so.
        if unsupported.is_some()
            && let Some(rid) = resource_id
            && code != Some(CommandType::RESOURCE_UNREF.0)
        {
            self.unsupported_resources.entry(rid).or_insert(id);
        }
        // Where the original crashed, it showed nothing more: only the crash is compared.
        let compare_outputs = verify && crash.is_none();
        let completions = match result {
            Ok(c) => {
                if let Some(recorded) = crash
                    && verify
                {
                    self.diverge(id, id, DivergenceKind::CrashNotReproduced { recorded });
                }
                c
            }
            Err(message) => {
                self.crashed = true;
                self.stop = true;
                match crash {
                    Some(recorded) => {
                        self.report.reproduced_crash = Some(ReproducedCrash {
                            record: id,
                            command_name: command_name(code),
                            recorded,
                            replayed: message,
                        });
                    }
                    None if self.backend.is_some() => {
                        self.diverge(id, id, DivergenceKind::Backend { message })
                    }
                    None => self.diverge(id, id, DivergenceKind::Crash { message }),
                }
                return;
            }
        };
        for c in completions {
            match self.expected.remove(&c.token) {
                Some((rid, bytes)) => self.compare_response(rid, c.token, &bytes, &c.response),
                None => {
                    self.actual.insert(c.token, c.response);
                }
            }
        }
        if compare_outputs {
            self.report.frames += outcome.frames;
            self.report.frame_digests.extend(outcome.digests);
            for (rid, command, kind) in outcome.findings {
                self.diverge(rid, command, kind);
            }
            self.report.frames_written += outcome.frames_written;
            self.compare_fences(id, fences, &signalled);
            self.compare_cursors(id, cursors, shown);
        }
    }

    fn compare_response(
        &mut self,
        rid: RecordId,
        command: RecordId,
        expected: &[u8],
        found: &[u8],
    ) {
        let Some(info) = self.commands.remove(&command) else {
            return;
        };
        if !info.verify {
            return;
        }
        self.report.responses += 1;
        let digest = ResponseDigest {
            command,
            hash: content_hash(found),
            len: u32::try_from(found.len()).unwrap_or(u32::MAX),
        };
        self.check_digest_response(rid, command, digest);
        if expected == found {
            return;
        }
        if info.unrecorded_read {
            return; // reported as its cause already
        }
        let dependent = info.resource_id.and_then(|r| {
            self.unsupported_resources
                .get(&r)
                .filter(|&&created| created != command)
                .map(|created| (r, *created))
        });
        let reason = info.unsupported.clone().or_else(|| {
            dependent.map(|(r, created)| {
                format!(
                    "uses resource {r}, which this renderer could not create (record {created})"
                )
            })
        });
        if let Some(reason) = reason {
            let u = Unsupported {
                record: command,
                command_name: info.name.clone(),
                reason,
                recorded: Some(ResponseSummary::of(expected)),
                replayed: Some(ResponseSummary::of(found)),
            };
            self.observer.unsupported(&u);
            self.report.unsupported.push(u);
            return;
        }
        let first_difference = expected
            .iter()
            .zip(found)
            .position(|(a, b)| a != b)
            .map(|o| o as u32);
        self.commands.insert(command, info);
        self.diverge(
            rid,
            command,
            DivergenceKind::Response {
                expected: ResponseSummary::of(expected),
                found: ResponseSummary::of(found),
                first_difference,
            },
        );
        self.commands.remove(&command);
    }

    fn check_digest_response(&mut self, rid: RecordId, command: RecordId, digest: ResponseDigest) {
        let i = self.response_index;
        self.response_index += 1;
        if self.loop_index == 0 {
            self.report.response_digests.push(digest);
        } else if self.report.response_digests.get(i) != Some(&digest) {
            self.diverge(
                rid,
                command,
                DivergenceKind::Nondeterministic {
                    what: format!("response #{i} (command {command})"),
                },
            );
        }
    }

    fn compare_cursors(
        &mut self,
        id: RecordId,
        expected: &[(RecordId, CursorSummary)],
        found: Vec<CursorSummary>,
    ) {
        let pairs = if self.stream {
            self.cursors_in_order
                .push(id, expected.iter().cloned(), found)
        } else {
            in_window(id, expected.iter().cloned(), found)
        };
        self.cursor_findings(pairs);
    }

    fn cursor_findings(&mut self, pairs: Vec<Paired<CursorSummary>>) {
        for (record, command, e, mut g) in pairs {
            // A proxy capture's cursor records name no resource (the display socket does not
            // carry it): resource 0 there means unknown.
            if self.stream
                && let (Some(e), Some(g)) = (&e, &mut g)
                && e.resource_id == 0
            {
                g.resource_id = 0;
            }
            if e != g {
                self.diverge(
                    record,
                    command,
                    DivergenceKind::Cursor {
                        expected: e,
                        found: g,
                    },
                );
            }
        }
    }

    fn fence_findings(&mut self, pairs: Vec<Paired<FenceSummary>>) {
        for (record, command, e, g) in pairs {
            if e != g {
                self.diverge(
                    record,
                    command,
                    DivergenceKind::Fence {
                        expected: e,
                        found: g,
                    },
                );
            }
        }
    }

    fn compare_fences(
        &mut self,
        id: RecordId,
        expected: &[(RecordId, FenceSignal)],
        found: &[FenceInfo],
    ) {
        let expected = expected.iter().map(|(rid, f)| {
            (
                *rid,
                FenceSummary {
                    fence_id: f.fence_id,
                    ctx_id: f.ctx_id,
                    ring_idx: f.ring_idx,
                    context_ring: f.context_ring,
                },
            )
        });
        let found = found.iter().map(|f| FenceSummary {
            fence_id: f.fence_id,
            ctx_id: f.ctx_id,
            ring_idx: f.ring_idx,
            context_ring: f.flags & FLAG_INFO_RING_IDX != 0,
        });
        let pairs = if self.stream {
            self.fences_in_order.push(id, expected, found)
        } else {
            in_window(id, expected, found)
        };
        self.fence_findings(pairs);
    }

    fn finish(&mut self, incomplete: bool) {
        if self.crashed || self.report.stopped_early || self.report.damaged.is_some() {
            return;
        }
        if !incomplete {
            let cursors = self.cursors_in_order.rest();
            self.cursor_findings(cursors);
            let fences = self.fences_in_order.rest();
            self.fence_findings(fences);
        }
        let mut actual: Vec<_> = self.actual.drain().collect();
        actual.sort_by_key(|(k, _)| *k);
        for (command, bytes) in actual {
            let verify = self.commands.get(&command).is_some_and(|c| c.verify);
            if incomplete || self.opts.end.is_some() {
                if self.loop_index == 0 {
                    self.report.unanswered.push(command);
                }
            } else if verify {
                self.diverge(
                    command,
                    command,
                    DivergenceKind::ExtraResponse {
                        found: ResponseSummary::of(&bytes),
                    },
                );
            }
        }
        let mut expected: Vec<_> = self.expected.drain().collect();
        expected.sort_by_key(|(k, _)| *k);
        for (command, (rid, bytes)) in expected {
            if self.commands.get(&command).is_some_and(|c| c.verify) {
                self.diverge(
                    rid,
                    command,
                    DivergenceKind::MissingResponse {
                        expected: ResponseSummary::of(&bytes),
                    },
                );
            }
        }
    }
}

/// A recorded output and the replayed one it is compared with: (record to name, command,
/// recorded, replayed); `None` where one side has nothing.
type Paired<T> = (RecordId, RecordId, Option<T>, Option<T>);

/// One command window's recorded and replayed outputs, paired by position.
fn in_window<T>(
    command: RecordId,
    expected: impl IntoIterator<Item = (RecordId, T)>,
    found: impl IntoIterator<Item = T>,
) -> Vec<Paired<T>> {
    let mut expected = expected.into_iter();
    let mut found = found.into_iter();
    let mut out = Vec::new();
    loop {
        match (expected.next(), found.next()) {
            (None, None) => return out,
            (e, g) => out.push((
                e.as_ref().map_or(command, |(rid, _)| *rid),
                command,
                e.map(|(_, v)| v),
                g,
            )),
        }
    }
}

/// Recorded and replayed outputs matched in order over the whole capture (stream matching):
/// what one side has that the other has not shown yet waits.
struct InOrder<T> {
    expected: VecDeque<(RecordId, T)>,
    found: VecDeque<(RecordId, T)>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            expected: VecDeque::new(),
            found: VecDeque::new(),
        }
    }
}

impl<T> InOrder<T> {
    /// Adds a window's outputs; returns the pairs that met.
    fn push(
        &mut self,
        command: RecordId,
        expected: impl IntoIterator<Item = (RecordId, T)>,
        found: impl IntoIterator<Item = T>,
    ) -> Vec<Paired<T>> {
        self.expected.extend(expected);
        self.found.extend(found.into_iter().map(|v| (command, v)));
        let mut out = Vec::new();
        while !self.expected.is_empty() && !self.found.is_empty() {
            if let (Some((rid, e)), Some((command, g))) =
                (self.expected.pop_front(), self.found.pop_front())
            {
                out.push((rid, command, Some(e), Some(g)));
            }
        }
        out
    }

    /// What never met anything (at the end of the capture).
    fn rest(&mut self) -> Vec<Paired<T>> {
        let mut out: Vec<Paired<T>> = self
            .expected
            .drain(..)
            .map(|(rid, e)| (rid, rid, Some(e), None))
            .collect();
        out.extend(self.found.drain(..).map(|(c, g)| (c, c, None, Some(g))));
        out
    }
}

/// Commands the capture records a crash on, with the message.
type Crashes = HashMap<RecordId, String>;
/// GPU-socket replies in order: (request, payload).
type Replies = VecDeque<(u32, Vec<u8>)>;

/// The type name of the command recorded at `id`, read back from the capture ("?" when that
/// record is not a readable command).
fn recorded_command_name(reader: &CaptureReader, id: RecordId) -> String {
    let Ok(Record {
        body: RecordBody::Command(c),
        ..
    }) = reader.record(id)
    else {
        return "?".to_owned();
    };
    let code = reader.read_payload(&c.request).ok().and_then(|request| {
        request
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    });
    command_name(code)
}

/// What replay takes from anywhere in the capture, not from the command's window (one pass):
/// the commands Crash records name with their queue (the crashed command, or one in flight
/// when a proxied backend went away; the proxy's summary record names the last completed
/// command without a queue, as context), and, with `replies`, every GPU-socket reply
/// (request, payload) in order, for stream-matched captures. Unreadable records end the pass
/// (the replay reports that damage where it meets it).
fn recorded_elsewhere(reader: &CaptureReader, replies: bool) -> (Crashes, Replies, Vec<RecordId>) {
    let mut crashes = HashMap::new();
    let mut answers = VecDeque::new();
    let mut in_flight_writes = Vec::new();
    for (_, r) in reader.iter().map_while(Result::ok) {
        match r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::InFlightWrite => {
                in_flight_writes.extend(l.command);
            }
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash && l.queue.is_some() => {
                if let Some(c) = l.command {
                    crashes.insert(c, l.message);
                }
            }
            RecordBody::GpuSocket(g) if replies && g.direction == Direction::BackendReply => {
                if let Ok(b) = reader.read_payload(&g.payload) {
                    answers.push_back((g.request, b.into_owned()));
                }
            }
            _ => {}
        }
    }
    (crashes, answers, in_flight_writes)
}

/// Frames are matched in order over the whole capture, not per command window, for proxy
/// captures: which command a frame came from is the proxy's inference (the display socket does
/// not say; captures made before 2026-12-07 name the last command the proxy took), and the
/// replaying device may show frames at other commands than the recording backend did.
fn stream_matched(reader: &CaptureReader) -> bool {
    reader.iter().take(8).any(|item| {
        matches!(item, Ok((_, Record { body: RecordBody::SessionStart(s), .. })) if s.mode == CaptureMode::Proxy)
    })
}

fn hex(h: u128) -> String {
    format!("{h:032x}")
}

/// Whether the capturing transport rejected `command` (rare: a short list, searched from its
/// end, where the command just rejected is).
fn malformed_command(rejected: &[RecordId], command: RecordId) -> bool {
    rejected.iter().rev().any(|&r| r == command)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The device's surroundings during one replayed command.
struct Host<'a> {
    replies: &'a mut VecDeque<(u32, Vec<u8>)>,
    /// Display events other than cursor changes, for the verifier.
    events: &'a mut Vec<DisplayEvent>,
    fences: Vec<FenceInfo>,
    cursors: Vec<CursorSummary>,
    unsupported: Option<String>,
}

impl Host<'_> {
    fn take_reply(&mut self, request: GpuSocketRequest) -> Option<Response> {
        let i = self.replies.iter().position(|(r, _)| *r == request.0)?;
        let (_, bytes) = self.replies.remove(i)?;
        Response::decode(&bytes).ok()
    }
}

impl DeviceHost for Host<'_> {
    fn display(&mut self, event: DisplayEvent) {
        let cursor = match &event {
            DisplayEvent::CursorUpdate {
                scanout_id,
                x,
                y,
                hot_x,
                hot_y,
                resource_id,
                image,
            } => Some(CursorSummary {
                action: "update",
                scanout_id: *scanout_id,
                x: *x,
                y: *y,
                hot: (*hot_x, *hot_y),
                resource_id: *resource_id,
                image_hash: Some(hex(content_hash(&image[..]))),
            }),
            DisplayEvent::CursorMove { scanout_id, x, y }
            | DisplayEvent::CursorHide { scanout_id, x, y } => Some(CursorSummary {
                action: if matches!(event, DisplayEvent::CursorMove { .. }) {
                    "move"
                } else {
                    "hide"
                },
                scanout_id: *scanout_id,
                x: *x,
                y: *y,
                hot: (0, 0),
                resource_id: 0,
                image_hash: None,
            }),
            _ => None,
        };
        if let Some(c) = cursor {
            self.cursors.push(c);
            return;
        }
        self.events.push(event);
    }

    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        let resp = self.take_reply(GpuSocketRequest::GET_DISPLAY_INFO)?;
        let ResponseBody::OkDisplayInfo(info) = resp.body else {
            return None;
        };
        Some(DisplayInfoFromHost {
            displays: info
                .pmodes
                .iter()
                .map(|m| HostDisplay {
                    x: m.r.x,
                    y: m.r.y,
                    width: m.r.width,
                    height: m.r.height,
                    enabled: m.enabled != 0,
                    flags: m.flags,
                })
                .collect(),
        })
    }

    fn edid(&mut self, _scanout: u32) -> Option<Vec<u8>> {
        let resp = self.take_reply(GpuSocketRequest::GET_EDID)?;
        let ResponseBody::OkEdid(e) = resp.body else {
            return None;
        };
        let len = (e.size as usize).min(e.edid.len());
        (len > 0).then(|| e.edid[..len].to_vec())
    }

    fn fence_signalled(&mut self, fence: FenceInfo) {
        self.fences.push(fence);
    }

    fn validation_error(&mut self, _token: u64, err: &ValidationError) {
        let reason = match err {
            ValidationError::Unsupported { reason, .. } => Some((*reason).to_owned()),
            ValidationError::BlobMem { blob_mem, .. } => Some(format!(
                "blob_mem {blob_mem} (host memory) needs a host-visible memory region, which the 2D renderer does not have"
            )),
            _ => None,
        };
        if let Some(r) = reason {
            self.unsupported.get_or_insert(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_waits_scale_with_the_factor_and_never_overflow() {
        assert_eq!(Timing::Asap.due_after(5_000_000_000), None);
        assert_eq!(
            Timing::Original.due_after(1_500_000_000),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            Timing::Speed(2.0).due_after(1_000_000_000),
            Some(Duration::from_millis(500))
        );
        // `--timing x1e-300` used to panic converting the wait into a Duration.
        let slow: Timing = "x1e-300".parse().unwrap();
        assert_eq!(slow.due_after(1_000_000), Some(Duration::MAX));
        assert_eq!(
            Timing::Original.due_after(u64::MAX),
            Some(Duration::from_secs_f64(u64::MAX as f64 / 1e9))
        );
        for odd in [0.0, -1.0, f64::NAN] {
            assert_eq!(Timing::Speed(odd).due_after(1_000), None, "{odd}");
        }
        assert_eq!(
            Timing::Speed(f64::INFINITY).due_after(1_000),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn decoding_threads_leave_the_executing_thread_its_core() {
        let by_cores: Vec<usize> = [1, 2, 3, 4, 5, 16].map(decode_threads_for).into();
        assert_eq!(by_cores, [0, 1, 2, 3, 4, 4]);
    }

    #[test]
    fn uploads_skip_only_identical_content_at_the_same_untouched_range() {
        let mut u = Uploads::default();
        assert!(!u.unchanged(100, 10, Some(1)));
        assert!(u.unchanged(100, 10, Some(1)));
        assert!(!u.unchanged(100, 10, Some(2)));
        assert!(u.unchanged(100, 10, Some(2)));
        // Another write over part of it: the next identical upload is real again.
        assert!(!u.unchanged(105, 2, None));
        assert!(!u.unchanged(100, 10, Some(2)));
        assert!(!u.unchanged(95, 6, Some(3)));
        assert!(!u.unchanged(100, 10, Some(2)));
        // A longer or shorter range with the same start is another upload.
        assert!(!u.unchanged(100, 12, Some(2)));
        assert!(!u.unchanged(100, 10, Some(2)));
        assert!(u.unchanged(100, 10, Some(2)));
        assert!(!u.unchanged(0, 1000, None));
        assert!(!u.unchanged(100, 10, Some(2)));
    }
}
