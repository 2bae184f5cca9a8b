//! What a replay found: divergences, unsupported commands and the summary, as structured values
//! (serializable for `--json`, displayable as one line each).

use std::fmt;

use serde::Serialize;
use vgt_format::record::RecordId;
use vgt_format::wire::{CommandType, ResponseType};

/// A response as seen by the comparison: its type and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseSummary {
    /// The response type code (0 when the response is shorter than a header).
    pub type_code: u32,
    /// Its name, e.g. `OK_NODATA`.
    pub type_name: String,
    /// Bytes written (the used length).
    pub len: u32,
}

impl ResponseSummary {
    /// Summarizes response bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let type_code = bytes
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        ResponseSummary {
            type_code,
            type_name: if bytes.len() < 4 {
                "(no response header)".to_owned()
            } else {
                ResponseType(type_code).to_string()
            },
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for ResponseSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.type_name, self.len)
    }
}

/// A pixel that differs between the recorded and the replayed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelDifference {
    /// Column.
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Recorded bytes (B, G, R, X).
    pub expected: [u8; 4],
    /// Replayed bytes.
    pub found: [u8; 4],
}

/// A frame's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameShape {
    /// Scanout index.
    pub scanout_id: u32,
    /// Framebuffer width.
    pub width: u32,
    /// Framebuffer height.
    pub height: u32,
    /// Damaged rectangle (x, y, width, height).
    pub rect: [u32; 4],
}

impl fmt::Display for FrameShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x, y, w, h] = self.rect;
        write!(
            f,
            "scanout {} {}x{} rect {w}x{h}+{x}+{y}",
            self.scanout_id, self.width, self.height
        )
    }
}

/// A fence completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FenceSummary {
    /// Fence id.
    pub fence_id: u64,
    /// Context.
    pub ctx_id: u32,
    /// Ring index.
    pub ring_idx: u8,
    /// On a per-context ring.
    pub context_ring: bool,
}

impl fmt::Display for FenceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fence {}", self.fence_id)?;
        if self.context_ring {
            write!(f, " (ctx {} ring {})", self.ctx_id, self.ring_idx)?;
        }
        Ok(())
    }
}

/// A cursor change as shown on the display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorSummary {
    /// `update`, `move` or `hide`.
    pub action: &'static str,
    /// Scanout index.
    pub scanout_id: u32,
    /// Position.
    pub x: u32,
    /// Position.
    pub y: u32,
    /// Hot spot (updates only).
    pub hot: (u32, u32),
    /// Cursor resource (updates only).
    pub resource_id: u32,
    /// XXH3-128 of the 64x64 image (updates only).
    pub image_hash: Option<String>,
}

impl fmt::Display for CursorSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cursor {} on scanout {} at ({}, {})",
            self.action, self.scanout_id, self.x, self.y
        )?;
        if let Some(h) = &self.image_hash {
            write!(
                f,
                " hot ({}, {}) resource {} image {h}",
                self.hot.0, self.hot.1, self.resource_id
            )?;
        }
        Ok(())
    }
}

/// What differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum DivergenceKind {
    /// The response differs in type, length or payload.
    Response {
        /// Recorded.
        expected: ResponseSummary,
        /// Replayed.
        found: ResponseSummary,
        /// First byte offset where the bytes differ (None when only the length differs).
        first_difference: Option<u32>,
    },
    /// The capture holds a response that replay never produced.
    MissingResponse {
        /// Recorded.
        expected: ResponseSummary,
    },
    /// Replay completed a command that the (complete) capture never completed.
    ExtraResponse {
        /// Replayed.
        found: ResponseSummary,
    },
    /// A frame's pixels differ.
    Frame {
        /// Where.
        shape: FrameShape,
        /// XXH3-128 of the recorded pixels.
        expected_hash: String,
        /// XXH3-128 of the replayed pixels.
        found_hash: String,
        /// First differing pixel (when the recorded pixels could be read).
        first_difference: Option<PixelDifference>,
    },
    /// A frame has another scanout, size or damaged rectangle.
    FrameShape {
        /// Recorded.
        expected: FrameShape,
        /// Replayed.
        found: FrameShape,
    },
    /// The capture shows a frame that replay did not produce.
    MissingFrame {
        /// Recorded.
        expected: FrameShape,
    },
    /// Replay produced a frame the capture does not show.
    ExtraFrame {
        /// Replayed.
        found: FrameShape,
    },
    /// Fence completions differ in order or identity.
    Fence {
        /// Recorded (None: replay signalled one more).
        expected: Option<FenceSummary>,
        /// Replayed (None: replay did not signal it).
        found: Option<FenceSummary>,
    },
    /// A cursor change differs, is missing (found None) or extra (expected None).
    Cursor {
        /// Recorded.
        expected: Option<CursorSummary>,
        /// Replayed.
        found: Option<CursorSummary>,
    },
    /// The device read guest bytes that the capture never recorded.
    UnrecordedMemory {
        /// First address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The device panicked where the original did not.
    Crash {
        /// The panic message.
        message: String,
    },
    /// The external backend replay runs on died, stopped answering or broke the protocol
    /// (replay against a backend binary).
    Backend {
        /// What happened.
        message: String,
    },
    /// The capture recorded a renderer crash on this command; replay did not crash.
    CrashNotReproduced {
        /// The recorded crash message.
        recorded: String,
    },
    /// A later loop produced other bytes than the first loop (replay is not deterministic).
    Nondeterministic {
        /// What differed.
        what: String,
    },
}

/// One difference between the capture and its replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The record where it shows: the response or frame record, else the command record.
    pub record: RecordId,
    /// The command record it belongs to.
    pub command: RecordId,
    /// The command's name, e.g. `RESOURCE_FLUSH`.
    pub command_name: String,
    /// Which loop (0 for the first).
    pub loop_index: u32,
    /// What differed.
    pub kind: DivergenceKind,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} (command {} {}): ",
            self.record, self.command, self.command_name
        )?;
        match &self.kind {
            DivergenceKind::Response {
                expected,
                found,
                first_difference,
            } => {
                write!(f, "response differs: expected {expected}, got {found}")?;
                if let Some(o) = first_difference {
                    write!(f, ", first difference at byte {o}")?;
                }
                Ok(())
            }
            DivergenceKind::MissingResponse { expected } => write!(
                f,
                "the capture holds response {expected}; replay produced none"
            ),
            DivergenceKind::ExtraResponse { found } => write!(
                f,
                "replay completed the command with {found}; the capture never completed it"
            ),
            DivergenceKind::Frame {
                shape,
                expected_hash,
                found_hash,
                first_difference,
            } => {
                write!(
                    f,
                    "frame differs on {shape}: expected hash {expected_hash}, got {found_hash}"
                )?;
                if let Some(p) = first_difference {
                    write!(
                        f,
                        ", first differing pixel ({}, {}): expected {:02x?}, got {:02x?}",
                        p.x, p.y, p.expected, p.found
                    )?;
                }
                Ok(())
            }
            DivergenceKind::FrameShape { expected, found } => {
                write!(
                    f,
                    "frame geometry differs: expected {expected}, got {found}"
                )
            }
            DivergenceKind::MissingFrame { expected } => {
                write!(
                    f,
                    "the capture shows a frame ({expected}); replay showed none"
                )
            }
            DivergenceKind::ExtraFrame { found } => write!(
                f,
                "replay showed a frame ({found}) the capture does not hold"
            ),
            DivergenceKind::Fence { expected, found } => match (expected, found) {
                (Some(e), Some(g)) => write!(f, "fence differs: expected {e}, got {g}"),
                (Some(e), None) => write!(f, "expected {e} to signal; replay did not signal it"),
                (None, Some(g)) => write!(f, "replay signalled {g}; the capture did not"),
                (None, None) => write!(f, "fence differs"),
            },
            DivergenceKind::Cursor { expected, found } => match (expected, found) {
                (Some(e), Some(g)) => write!(f, "cursor differs: expected {e}, got {g}"),
                (Some(e), None) => write!(f, "the capture shows {e}; replay did not"),
                (None, Some(g)) => write!(f, "replay showed {g}; the capture did not"),
                (None, None) => write!(f, "cursor differs"),
            },
            DivergenceKind::UnrecordedMemory { addr, len } => write!(
                f,
                "device read unrecorded guest memory at {addr:#x}+{len:#x}"
            ),
            DivergenceKind::Crash { message } => {
                write!(f, "the device panicked on replay: {message}")
            }
            DivergenceKind::Backend { message } => {
                write!(f, "the backend failed on replay: {message}")
            }
            DivergenceKind::CrashNotReproduced { recorded } => write!(
                f,
                "the capture records a renderer crash here ({recorded}); replay did not crash"
            ),
            DivergenceKind::Nondeterministic { what } => {
                write!(f, "loop {} differs from loop 0: {what}", self.loop_index)
            }
        }
    }
}

/// A command this renderer could not replay, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unsupported {
    /// The command record.
    pub record: RecordId,
    /// The command's name.
    pub command_name: String,
    /// Why it could not be replayed.
    pub reason: String,
    /// What the capture recorded as its response.
    pub recorded: Option<ResponseSummary>,
    /// What replay answered.
    pub replayed: Option<ResponseSummary>,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} ({}): not replayable by this renderer: {}",
            self.record, self.command_name, self.reason
        )?;
        if let (Some(r), Some(p)) = (&self.recorded, &self.replayed) {
            write!(f, " (recorded {r}, replay answered {p})")?;
        }
        Ok(())
    }
}

/// A crash of the renderer that the capture recorded and replay reproduced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReproducedCrash {
    /// The command record.
    pub record: RecordId,
    /// The command's name.
    pub command_name: String,
    /// What the capture recorded.
    pub recorded: String,
    /// The panic message on replay.
    pub replayed: String,
}

/// The hash of one replayed frame (for determinism checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameDigest {
    /// The recorded frame record it was compared with (the command record when none).
    pub record: RecordId,
    /// Scanout index.
    pub scanout_id: u32,
    /// XXH3-128 of the scanout's pixels.
    pub hash: u128,
}

/// The hash of one replayed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseDigest {
    /// The command record.
    pub command: RecordId,
    /// XXH3-128 of the response bytes.
    pub hash: u128,
    /// Length of the response.
    pub len: u32,
}

/// Everything a replay found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Records in the capture.
    pub records: u64,
    /// Commands handed to the device (all loops).
    pub commands: u64,
    /// Of those, commands inside the verified range.
    pub verified_commands: u64,
    /// Responses compared with the capture.
    pub responses: u64,
    /// Frames compared with the capture.
    pub frames: u64,
    /// PNG files written.
    pub frames_written: u64,
    /// Loops run.
    pub loops: u32,
    /// Differences, in the order found.
    pub divergences: Vec<Divergence>,
    /// Commands this renderer could not replay.
    pub unsupported: Vec<Unsupported>,
    /// Chains the capturing transport rejected (malformed); never given to a device.
    pub transport_rejected: Vec<RecordId>,
    /// Commands whose response the capture does not hold (it ends first).
    pub unanswered: Vec<RecordId>,
    /// The last command, when the capture ends inside its records: executed but not verified.
    pub incomplete_command: Option<RecordId>,
    /// A recorded renderer crash that replay reproduced.
    pub reproduced_crash: Option<ReproducedCrash>,
    /// File offset where the capture is cut off, when it is.
    pub truncated_at: Option<u64>,
    /// The capture has neither an index nor an End record: its writer never finished (cut off
    /// or crashed).
    pub unfinished: bool,
    /// A damaged record that ended the replay: (record, what was wrong).
    pub damaged: Option<(RecordId, String)>,
    /// Replay stopped at the first divergence (without `keep_going`).
    pub stopped_early: bool,
    /// Last record taken into account.
    pub last_record: Option<RecordId>,
    /// The external backend replayed against (`None`: vgt-device).
    pub backend: Option<String>,
    /// Commands (up to the last record replayed) under which the capture records that the
    /// guest changed memory they had read while they were in flight (`InFlightWrite`, proxy
    /// captures): the backend may have read bytes the capture does not hold.
    pub in_flight_writes: Vec<RecordId>,
    /// Wall time of the replay in nanoseconds.
    pub wall_ns: u64,
    /// Capture time the replayed records span (all loops), in nanoseconds.
    pub capture_span_ns: u64,
    /// Hash of every replayed frame of the first loop, in order (not serialized).
    #[serde(skip)]
    pub frame_digests: Vec<FrameDigest>,
    /// Hash of every replayed response of the first loop, in completion order (not
    /// serialized).
    #[serde(skip)]
    pub response_digests: Vec<ResponseDigest>,
}

impl ReplayReport {
    /// True when replay matched the capture everywhere and replayed every command.
    pub fn is_identical(&self) -> bool {
        self.divergences.is_empty() && self.unsupported.is_empty()
    }

    /// Capture time per wall time: above 1 is faster than the original.
    pub fn x_realtime(&self) -> Option<f64> {
        (self.wall_ns > 0 && self.capture_span_ns > 0)
            .then(|| self.capture_span_ns as f64 / self.wall_ns as f64)
    }

    /// Writes the human summary (several lines).
    pub fn write_summary(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let secs = self.wall_ns as f64 / 1e9;
        writeln!(
            out,
            "replayed {} commands ({} verified), {} responses and {} frames compared, {} loop(s)",
            self.commands, self.verified_commands, self.responses, self.frames, self.loops
        )?;
        if let Some(b) = &self.backend {
            writeln!(out, "replayed against the {b}")?;
        }
        let speed = match self.x_realtime() {
            Some(x) => format!("{x:.2}x realtime"),
            None => "realtime ratio unknown (capture spans no time)".to_owned(),
        };
        writeln!(
            out,
            "divergences: {}, unsupported commands: {}, wall time {secs:.3} s, {speed}",
            self.divergences.len(),
            self.unsupported.len()
        )?;
        if let Some(off) = self.truncated_at {
            writeln!(
                out,
                "the capture is cut off at byte {off}; replayed up to the cut (last record {})",
                self.last_record
                    .map_or("none".to_owned(), |r| r.to_string())
            )?;
        }
        if self.unfinished && self.truncated_at.is_none() {
            writeln!(
                out,
                "the capture has no index and no End record: its writer never finished (cut off or crashed)"
            )?;
        }
        if let Some((r, why)) = &self.damaged {
            writeln!(out, "replay stopped at damaged record {r}: {why}")?;
        }
        if let Some(c) = self.incomplete_command {
            writeln!(
                out,
                "the capture ends inside the records of command {c}: executed, not verified"
            )?;
        }
        if !self.unanswered.is_empty() {
            writeln!(
                out,
                "the capture ends before the responses of {} command(s): {:?}",
                self.unanswered.len(),
                self.unanswered
            )?;
        }
        if !self.transport_rejected.is_empty() {
            writeln!(
                out,
                "{} malformed chain(s) were rejected by the capturing transport (not replayed)",
                self.transport_rejected.len()
            )?;
        }
        if !self.in_flight_writes.is_empty() {
            let mut ids: Vec<String> = self
                .in_flight_writes
                .iter()
                .take(8)
                .map(|c| format!("#{c}"))
                .collect();
            if self.in_flight_writes.len() > 8 {
                ids.push("...".to_owned());
            }
            writeln!(
                out,
                "note: the guest changed memory under {} command(s) while they were in flight ({}): the backend may have read bytes the capture does not hold, so frames or responses after them can differ without a renderer bug",
                self.in_flight_writes.len(),
                ids.join(", ")
            )?;
        }
        if let Some(c) = &self.reproduced_crash {
            writeln!(
                out,
                "reproduced the recorded crash at record {} ({}): {}",
                c.record, c.command_name, c.replayed
            )?;
        }
        if self.frames_written > 0 {
            writeln!(out, "wrote {} frame(s) as PNG", self.frames_written)?;
        }
        if self.stopped_early {
            writeln!(
                out,
                "stopped at the first divergence (use --keep-going for all)"
            )?;
        }
        writeln!(
            out,
            "result: {}",
            if self.is_identical() {
                "identical"
            } else if self.divergences.is_empty() {
                "no divergence, but some commands could not be replayed"
            } else {
                "diverged"
            }
        )
    }
}

/// The name of a command code for reports (`UNKNOWN_COMMAND(0x…)` when unknown).
pub(crate) fn command_name(code: Option<u32>) -> String {
    match code {
        Some(c) => CommandType(c).to_string(),
        None => "(no header)".to_owned(),
    }
}
