//! Frame verification: composes the scanout framebuffers from the display events the device
//! produced (with `vgt_device::display::Framebuffers`, the code capture uses), hashes every
//! composed frame and compares it with the recorded Frame records; on a thread of its own
//! while the executing thread runs the next commands (with enough cores), else on the executing
//! thread as each command's frames are handed over.
//!
//! The executing thread sends one [`FrameJob`] per command window that showed something, in
//! command order; the verifier answers each with a [`FrameOutcome`], in the same order. The
//! executing thread files an outcome's findings at the point where its command's frames are
//! compared, so divergences come out in exactly the order (and with exactly the record numbers)
//! of a replay that verifies every frame before running the next command.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};

use vgt_device::DisplayEvent;
use vgt_device::display::{FRAME_FORMAT, Framebuffers};
use vgt_format::CaptureReader;
use vgt_format::hash::content_hash;
use vgt_format::record::{Frame, RecordId};

use crate::frames::{self, PngError};
use crate::report::{DivergenceKind, FrameDigest, FrameShape, PixelDifference};

/// The display output of one command window, for the verifier.
pub(crate) struct FrameJob {
    /// The command record (the record of an extra frame's divergence).
    pub command: RecordId,
    /// Compare the frames with the recording (the command is verified, ran, and the original
    /// did not crash on it); otherwise the events only keep the framebuffers up to date.
    pub compare: bool,
    /// Write each frame as a PNG (when the verifier has a frames directory).
    pub write_png: bool,
    /// The recorded Frame records of the window, in order.
    pub expected: Vec<(RecordId, Frame)>,
    /// The device's display events (cursor events excluded), in order.
    pub events: Vec<DisplayEvent>,
    /// A device reset follows the command: the framebuffers are dropped after the events.
    pub reset: bool,
    /// The last job of a run: in stream matching, frames still unmatched are reported.
    pub finish: bool,
}

/// What the verifier found for one [`FrameJob`].
#[derive(Default)]
pub(crate) struct FrameOutcome {
    /// Frames compared.
    pub frames: u64,
    /// The digest of every compared frame (first loop only).
    pub digests: Vec<FrameDigest>,
    /// Divergences: record, command record, what.
    pub findings: Vec<(RecordId, RecordId, DivergenceKind)>,
    /// Frames written as PNG among the compared ones.
    pub frames_written: u64,
    /// A PNG could not be written (the replay ends with this error).
    pub png_error: Option<PngError>,
}

/// A frame replay produced.
struct Produced {
    shape: FrameShape,
    hash: u128,
    /// The recorded frame `expected_hash` and `first_difference` were taken from (the one at
    /// the same place when the frame was produced).
    anticipated: Option<RecordId>,
    expected_hash: Option<u128>,
    first_difference: Option<PixelDifference>,
    written: bool,
}

/// The verifier's state for one loop of a replay.
pub(crate) struct Verifier<'r> {
    reader: &'r CaptureReader,
    fbs: Framebuffers,
    /// Per scanout: the framebuffer version last hashed and its hash (a frame whose pixels did
    /// not change since is not hashed again).
    hashes: BTreeMap<u32, (u64, u128)>,
    /// Frames compared so far in this loop.
    frame_index: usize,
    /// The first loop's frame digests, for later loops (None in the first loop).
    reference: Option<Vec<FrameDigest>>,
    frames_dir: Option<PathBuf>,
    png_failed: bool,
    /// Pixel buffers no longer needed go back to the executing thread, which hands them to
    /// the device for the next frames' pixels (no fresh allocation, no page faults). None:
    /// dropped here.
    retired: Option<Sender<Vec<u8>>>,
    /// Match frames in order over the whole capture instead of per command window (for proxy
    /// captures, whose Frame records follow the command the proxy last took, not always the
    /// one whose execution showed them).
    stream: bool,
    /// Stream matching, per scanout.
    streams: BTreeMap<u32, Stream>,
}

/// Stream matching on one scanout (the order of frames across scanouts is the backend's
/// business): recorded frames no produced frame has met yet, and produced frames (with the
/// command that showed them) no recorded frame has met yet.
#[derive(Default)]
struct Stream {
    expected: VecDeque<(RecordId, Frame)>,
    produced: VecDeque<(RecordId, Produced)>,
}

impl<'r> Verifier<'r> {
    /// A verifier with empty framebuffers. `reference`: the first loop's digests, when this
    /// is a later loop; `frames_dir`: where PNGs go (first loop only).
    pub fn new(
        reader: &'r CaptureReader,
        reference: Option<Vec<FrameDigest>>,
        frames_dir: Option<PathBuf>,
        retired: Option<Sender<Vec<u8>>>,
        stream: bool,
    ) -> Self {
        Verifier {
            stream,
            streams: BTreeMap::new(),
            reader,
            fbs: Framebuffers::new(),
            hashes: BTreeMap::new(),
            frame_index: 0,
            reference,
            frames_dir,
            png_failed: false,
            retired,
        }
    }

    /// Answers jobs in order until the executing thread hangs up.
    pub fn run(mut self, jobs: Receiver<FrameJob>, outcomes: Sender<FrameOutcome>) {
        for job in jobs {
            if outcomes.send(self.verify_guarded(job)).is_err() {
                return;
            }
        }
    }

    /// [`Verifier::verify`]; composing ran inside the device's crash guard when frames were
    /// composed during the device's display callback: a panic here is still reported as a
    /// crash at the job's command.
    pub fn verify_guarded(&mut self, job: FrameJob) -> FrameOutcome {
        let command = job.command;
        catch_unwind(AssertUnwindSafe(|| self.verify(job))).unwrap_or_else(|p| {
            let message = if let Some(s) = p.downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = p.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_owned()
            };
            FrameOutcome {
                findings: vec![(command, command, DivergenceKind::Crash { message })],
                ..FrameOutcome::default()
            }
        })
    }

    /// The XXH3-128 of a scanout's current picture, computed once per picture.
    fn hash(&mut self, scanout_id: u32) -> Option<u128> {
        let fb = self.fbs.get(scanout_id)?;
        if let Some(&(version, hash)) = self.hashes.get(&scanout_id)
            && version == fb.version
        {
            return Some(hash);
        }
        let hash = content_hash(&fb.pixels);
        self.hashes.insert(scanout_id, (fb.version, hash));
        Some(hash)
    }

    /// Applies a window's display events and compares the frames they show.
    pub fn verify(&mut self, job: FrameJob) -> FrameOutcome {
        let FrameJob {
            command,
            compare,
            write_png,
            expected,
            events,
            reset,
            finish,
        } = job;
        let mut out = FrameOutcome::default();
        // Stream matching: the recorded frames join the queue, and each produced frame is
        // checked against the one it will meet (known when the recording showed it earlier).
        let expected = if self.stream {
            if compare {
                for (rid, f) in expected {
                    self.streams
                        .entry(f.scanout_id)
                        .or_default()
                        .expected
                        .push_back((rid, f));
                }
            }
            Vec::new()
        } else {
            expected
        };
        let mut produced = Vec::new();
        for event in events {
            let (change, spare) = self.fbs.apply_owned_returning(event);
            if let Some(spare) = spare
                && let Some(retired) = &self.retired
            {
                // The executing thread is gone: the buffer is simply dropped here.
                let _ = retired.send(spare);
            }
            let Some(change) = change else {
                continue;
            };
            let index = produced.len();
            let recorded = if self.stream {
                let on_scanout = produced
                    .iter()
                    .filter(|p: &&Produced| p.shape.scanout_id == change.scanout_id)
                    .count();
                self.streams
                    .get(&change.scanout_id)
                    .and_then(|st| st.expected.get(st.produced.len() + on_scanout).cloned())
            } else {
                expected.get(index).cloned()
            };
            let recorded = recorded.as_ref();
            let (hash, expected_hash) = if compare {
                let Some(hash) = self.hash(change.scanout_id) else {
                    continue;
                };
                (hash, recorded.map(|(_, f)| payload_hash(&f.pixels)))
            } else {
                (0, None)
            };
            let Some(fb) = self.fbs.get(change.scanout_id) else {
                continue;
            };
            let mut first_difference = None;
            if compare
                && let Some((_, f)) = recorded
                && expected_hash != Some(hash)
                && f.width == fb.width
                && let Ok(want) = self.reader.read_payload(&f.pixels)
            {
                first_difference = want
                    .chunks(4)
                    .zip(fb.pixels.chunks(4))
                    .position(|(a, b)| a != b)
                    .and_then(|i| {
                        let e = want.get(i * 4..i * 4 + 4)?;
                        let g = fb.pixels.get(i * 4..i * 4 + 4)?;
                        Some(PixelDifference {
                            x: (i % fb.width.max(1) as usize) as u32,
                            y: (i / fb.width.max(1) as usize) as u32,
                            expected: e.try_into().ok()?,
                            found: g.try_into().ok()?,
                        })
                    });
            }
            let mut written = false;
            if write_png
                && !self.png_failed
                && let Some(dir) = &self.frames_dir
            {
                let record = recorded.map_or(command, |(rid, _)| *rid);
                let path = dir.join(frames::frame_file_name(record, change.scanout_id));
                match frames::write_png(
                    &path,
                    FRAME_FORMAT,
                    fb.width,
                    fb.height,
                    fb.stride(),
                    &fb.pixels,
                ) {
                    Ok(()) => written = true,
                    Err(e) => {
                        self.png_failed = true;
                        out.png_error = Some(e);
                    }
                }
            }
            produced.push(Produced {
                shape: FrameShape {
                    scanout_id: change.scanout_id,
                    width: fb.width,
                    height: fb.height,
                    rect: change.rect,
                },
                hash,
                anticipated: recorded.map(|(rid, _)| *rid),
                expected_hash,
                first_difference,
                written,
            });
        }
        if reset {
            self.fbs.clear();
        }
        if self.stream {
            if compare {
                for p in produced {
                    self.streams
                        .entry(p.shape.scanout_id)
                        .or_default()
                        .produced
                        .push_back((command, p));
                }
            } else {
                out.frames_written += produced.iter().filter(|p| p.written).count() as u64;
            }
            self.match_stream(finish, &mut out);
        } else if compare {
            self.compare(command, &expected, &produced, &mut out);
        }
        out
    }

    /// Stream matching: pairs the oldest waiting recorded and produced frames; at the finish,
    /// what is left is missing or extra.
    ///
    /// Where the two differ, a frame one side showed and the other did not would shift every
    /// later pair: so when the produced frame equals (shape and hash) one of the next
    /// [`RESYNC`] recorded frames, the recorded ones before it are missing; when the recorded
    /// frame equals one of the next produced ones, the produced ones before it are extra.
    /// Otherwise the pair differs, decided once both sides have their lookahead (or at the
    /// finish).
    fn match_stream(&mut self, finish: bool, out: &mut FrameOutcome) {
        let mut streams = std::mem::take(&mut self.streams);
        for st in streams.values_mut() {
            self.match_one(st, finish, out);
        }
        streams.retain(|_, st| !st.expected.is_empty() || !st.produced.is_empty());
        self.streams = streams;
    }

    /// [`Verifier::match_stream`] on one scanout.
    fn match_one(&mut self, st: &mut Stream, finish: bool, out: &mut FrameOutcome) {
        let same =
            |f: &Frame, p: &Produced| shape_of(f) == p.shape && payload_hash(&f.pixels) == p.hash;
        loop {
            let (ne, np) = (st.expected.len(), st.produced.len());
            let (Some((_, e0)), Some((_, p0))) = (st.expected.front(), st.produced.front()) else {
                break;
            };
            if !same(e0, p0) {
                if let Some(k) = (1..ne.min(RESYNC + 1)).find(|&k| same(&st.expected[k].1, p0)) {
                    for (rid, f) in st.expected.drain(..k) {
                        out.findings.push((
                            rid,
                            f.command,
                            DivergenceKind::MissingFrame {
                                expected: shape_of(&f),
                            },
                        ));
                    }
                    continue;
                }
                if let Some(k) = (1..np.min(RESYNC + 1)).find(|&k| same(e0, &st.produced[k].1)) {
                    for (command, p) in st.produced.drain(..k).collect::<Vec<_>>() {
                        out.frames_written += u64::from(p.written);
                        self.extra(command, &p, out);
                    }
                    continue;
                }
                if !finish && (ne <= RESYNC || np <= RESYNC) {
                    // Either may still turn up a few frames on: wait for more.
                    break;
                }
            }
            let (Some((rid, f)), Some((command, p))) =
                (st.expected.pop_front(), st.produced.pop_front())
            else {
                break;
            };
            out.frames_written += u64::from(p.written);
            self.compare_pair(command, rid, &f, &p, out);
        }
        if finish {
            for (rid, f) in std::mem::take(&mut st.expected) {
                out.findings.push((
                    rid,
                    f.command,
                    DivergenceKind::MissingFrame {
                        expected: shape_of(&f),
                    },
                ));
            }
            for (command, p) in std::mem::take(&mut st.produced) {
                out.frames_written += u64::from(p.written);
                self.extra(command, &p, out);
            }
        }
    }

    /// One recorded frame against the produced frame it met.
    fn compare_pair(
        &mut self,
        id: RecordId,
        rid: RecordId,
        f: &Frame,
        p: &Produced,
        out: &mut FrameOutcome,
    ) {
        out.frames += 1;
        let digest = FrameDigest {
            record: rid,
            scanout_id: p.shape.scanout_id,
            hash: p.hash,
        };
        self.check_digest(rid, id, digest, out);
        let want = shape_of(f);
        let anticipated = p.anticipated == Some(rid);
        let expected_hash = p
            .expected_hash
            .filter(|_| anticipated)
            .or_else(|| Some(payload_hash(&f.pixels)));
        if want != p.shape {
            out.findings.push((
                rid,
                id,
                DivergenceKind::FrameShape {
                    expected: want,
                    found: p.shape,
                },
            ));
        } else if expected_hash != Some(p.hash) {
            out.findings.push((
                rid,
                id,
                DivergenceKind::Frame {
                    shape: p.shape,
                    expected_hash: expected_hash
                        .map_or_else(|| "(unreadable)".to_owned(), |h| format!("{h:032x}")),
                    found_hash: format!("{:032x}", p.hash),
                    first_difference: p.first_difference.filter(|_| anticipated),
                },
            ));
        }
    }

    /// A produced frame the recording does not show.
    fn extra(&mut self, id: RecordId, p: &Produced, out: &mut FrameOutcome) {
        let digest = FrameDigest {
            record: id,
            scanout_id: p.shape.scanout_id,
            hash: p.hash,
        };
        self.check_digest(id, id, digest, out);
        out.findings
            .push((id, id, DivergenceKind::ExtraFrame { found: p.shape }));
    }

    /// Compares the frames a command showed with the recorded ones.
    fn compare(
        &mut self,
        id: RecordId,
        expected: &[(RecordId, Frame)],
        produced: &[Produced],
        out: &mut FrameOutcome,
    ) {
        let n = expected.len().max(produced.len());
        for i in 0..n {
            match (expected.get(i), produced.get(i)) {
                (Some((rid, f)), Some(p)) => self.compare_pair(id, *rid, f, p, out),
                (Some((rid, f)), None) => out.findings.push((
                    *rid,
                    id,
                    DivergenceKind::MissingFrame {
                        expected: shape_of(f),
                    },
                )),
                (None, Some(p)) => self.extra(id, p, out),
                (None, None) => {}
            }
        }
        out.frames_written += produced.iter().filter(|p| p.written).count() as u64;
    }

    /// Files the digest of frame number `frame_index` (first loop) or compares it with the
    /// first loop's (later loops).
    fn check_digest(
        &mut self,
        rid: RecordId,
        command: RecordId,
        digest: FrameDigest,
        out: &mut FrameOutcome,
    ) {
        let i = self.frame_index;
        self.frame_index += 1;
        match &self.reference {
            None => out.digests.push(digest),
            Some(reference) if reference.get(i) != Some(&digest) => out.findings.push((
                rid,
                command,
                DivergenceKind::Nondeterministic {
                    what: format!("frame #{i} (record {rid})"),
                },
            )),
            Some(_) => {}
        }
    }
}

/// The XXH3-128 of a payload's bytes: from the blob reference, or computed for inline bytes.
pub(crate) fn payload_hash(p: &vgt_format::record::Payload) -> u128 {
    match p {
        vgt_format::record::Payload::Blob(r) => r.hash.0,
        vgt_format::record::Payload::Inline(b) => content_hash(b),
    }
}

/// How far stream matching looks ahead for a frame one side showed and the other did not.
const RESYNC: usize = 8;

fn shape_of(f: &Frame) -> FrameShape {
    FrameShape {
        scanout_id: f.scanout_id,
        width: f.width,
        height: f.height,
        rect: f.rect,
    }
}
