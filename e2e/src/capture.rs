//! What an end-to-end test asserts on, read from a capture file: the commands in order with
//! their responses, lifecycle events, cursor records and the last frame of each scanout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use vgt_format::CaptureReader;
use vgt_format::record::{Cursor, CursorAction, Lifecycle, LifecycleKind, RecordBody, RecordId};
use vgt_format::wire::{CommandType, CtrlHeader, ResponseType};

use crate::image::Rgb;

/// One command and how it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// Record id of the Command record.
    pub id: RecordId,
    /// Virtqueue (0 control, 1 cursor).
    pub queue: u16,
    /// The command code from the request header.
    pub command: CommandType,
    /// The response code, when a Response record answered it (`None` when the response had no
    /// bytes, as cursor-queue commands have, or none was recorded).
    pub response: Option<ResponseType>,
    /// True when a Response record refers to this command.
    pub answered: bool,
}

/// A capture, digested.
#[derive(Debug)]
pub struct Summary {
    /// The reader (for payloads and health).
    pub reader: CaptureReader,
    /// Every command in file order.
    pub commands: Vec<CommandInfo>,
    /// Every lifecycle record.
    pub lifecycle: Vec<Lifecycle>,
    /// Every cursor record.
    pub cursors: Vec<Cursor>,
    /// Number of Frame records per scanout.
    pub frame_counts: BTreeMap<u32, usize>,
    /// Record id of the last Frame record of each scanout.
    pub last_frame: BTreeMap<u32, RecordId>,
    /// Record ids of every Frame record, per scanout, in order.
    pub frames: BTreeMap<u32, Vec<RecordId>>,
    /// Records that failed to decode (id or offset and the error).
    pub bad_records: Vec<String>,
}

impl Summary {
    /// Opens `path` and reads every record.
    pub fn read(path: &Path) -> Result<Self> {
        let reader =
            CaptureReader::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut commands = Vec::new();
        let mut by_id = HashMap::new();
        let mut lifecycle = Vec::new();
        let mut cursors = Vec::new();
        let mut frame_counts = BTreeMap::new();
        let mut last_frame = BTreeMap::new();
        let mut frames: BTreeMap<u32, Vec<RecordId>> = BTreeMap::new();
        let mut bad_records = Vec::new();
        for item in reader.iter() {
            let (id, rec) = match item {
                Ok(x) => x,
                Err(e) => {
                    bad_records.push(e.to_string());
                    continue;
                }
            };
            match rec.body {
                RecordBody::Command(c) => {
                    let req = reader.read_payload(&c.request)?;
                    let command = CtrlHeader::decode(&req)
                        .map(|h| CommandType(h.type_))
                        .unwrap_or(CommandType(0));
                    by_id.insert(id, commands.len());
                    commands.push(CommandInfo {
                        id,
                        queue: c.queue,
                        command,
                        response: None,
                        answered: false,
                    });
                }
                RecordBody::Response(r) => {
                    if let Some(i) = by_id.get(&r.command) {
                        let bytes = reader.read_payload(&r.bytes)?;
                        let cmd = &mut commands[*i];
                        cmd.answered = true;
                        cmd.response = CtrlHeader::decode(&bytes)
                            .ok()
                            .map(|h| ResponseType(h.type_));
                    }
                }
                RecordBody::Lifecycle(l) => lifecycle.push(l),
                RecordBody::Cursor(c) => cursors.push(c),
                RecordBody::Frame(f) => {
                    *frame_counts.entry(f.scanout_id).or_insert(0) += 1;
                    last_frame.insert(f.scanout_id, id);
                    frames.entry(f.scanout_id).or_default().push(id);
                }
                _ => {}
            }
        }
        Ok(Summary {
            reader,
            commands,
            lifecycle,
            cursors,
            frame_counts,
            last_frame,
            frames,
            bad_records,
        })
    }

    /// How many commands of type `t` there are.
    pub fn count(&self, t: CommandType) -> usize {
        self.commands.iter().filter(|c| c.command == t).count()
    }

    /// The command types in order with consecutive repeats collapsed.
    pub fn sequence(&self) -> Vec<CommandType> {
        let mut out: Vec<CommandType> = Vec::new();
        for c in &self.commands {
            if out.last() != Some(&c.command) {
                out.push(c.command);
            }
        }
        out
    }

    /// Commands answered with an error code.
    pub fn errors(&self) -> Vec<&CommandInfo> {
        self.commands
            .iter()
            .filter(|c| c.response.is_some_and(ResponseType::is_error))
            .collect()
    }

    /// The last frame of `scanout` as an RGB image.
    pub fn last_frame_rgb(&self, scanout: u32) -> Result<Rgb> {
        let id = *self
            .last_frame
            .get(&scanout)
            .with_context(|| format!("the capture has no frame for scanout {scanout}"))?;
        self.frame_rgb(id)
    }

    /// True when some frame of `scanout` shows exactly `want`.
    pub fn shows(&self, scanout: u32, want: &Rgb) -> Result<bool> {
        for id in self
            .frames
            .get(&scanout)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if self.frame_rgb(*id)? == *want {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The images of the cursor Update records, in order.
    pub fn cursor_images(&self) -> Result<Vec<Vec<u8>>> {
        self.cursors
            .iter()
            .filter(|c| c.action == CursorAction::Update)
            .filter_map(|c| c.image.as_ref())
            .map(|p| Ok(self.reader.read_payload(p)?.into_owned()))
            .collect()
    }

    /// The Frame record `id` as an RGB image.
    pub fn frame_rgb(&self, id: RecordId) -> Result<Rgb> {
        let rec = self.reader.record(id)?;
        let RecordBody::Frame(f) = rec.body else {
            anyhow::bail!("record {id} is not a frame");
        };
        let pixels = self.reader.read_payload(&f.pixels)?;
        Rgb::from_bgrx(f.width, f.height, f.stride, &pixels)
            .with_context(|| format!("frame record {id}"))
    }
}

/// The commands a Linux guest's virtio-gpu driver sends to bring up its framebuffer, in order
/// (other commands may come between).
pub const START_UP: [CommandType; 6] = [
    CommandType::GET_DISPLAY_INFO,
    CommandType::RESOURCE_CREATE_2D,
    CommandType::RESOURCE_ATTACH_BACKING,
    CommandType::SET_SCANOUT,
    CommandType::TRANSFER_TO_HOST_2D,
    CommandType::RESOURCE_FLUSH,
];

impl Summary {
    /// The lifecycle records of one kind, in order.
    pub fn lifecycles(&self, kind: LifecycleKind) -> impl Iterator<Item = &Lifecycle> {
        self.lifecycle.iter().filter(move |l| l.kind == kind)
    }

    /// The checks every finished capture of a healthy guest passes: the file is clean and
    /// indexed and verifies, every record decodes, no validation-error, error or crash
    /// lifecycle record and a clean end, every command answered and none with an error, cursor
    /// commands only on the cursor queue, and [`START_UP`] in order.
    pub fn check_healthy(&self) -> Result<()> {
        let health = self.reader.health();
        ensure!(
            health.is_clean() && health.indexed,
            "capture not clean: {health:?}"
        );
        let report = self.reader.verify()?;
        ensure!(report.is_clean() && report.index_ok, "verify: {report:?}");
        ensure!(
            self.bad_records.is_empty(),
            "undecodable records: {:?}",
            self.bad_records
        );
        for l in &self.lifecycle {
            ensure!(
                !matches!(
                    l.kind,
                    LifecycleKind::ValidationError | LifecycleKind::Error | LifecycleKind::Crash
                ),
                "lifecycle {:?}: {}",
                l.kind,
                l.message
            );
        }
        ensure!(
            self.lifecycle.iter().any(|l| l.kind == LifecycleKind::End),
            "no End lifecycle record"
        );
        ensure!(!self.commands.is_empty(), "no commands recorded");
        if let Some(c) = self.commands.iter().find(|c| !c.answered) {
            bail!("command #{} ({}) has no response", c.id, c.command);
        }
        let errors = self.errors();
        ensure!(errors.is_empty(), "error responses: {errors:?}");
        for c in &self.commands {
            ensure!(
                (c.queue == 1) == c.command.is_cursor(),
                "command #{} {} on queue {}",
                c.id,
                c.command,
                c.queue
            );
        }
        let mut it = self.commands.iter().map(|c| c.command);
        ensure!(
            START_UP.iter().all(|w| it.any(|c| c == *w)),
            "the start-up sequence {START_UP:?} is not in order in {:?}",
            self.sequence()
        );
        Ok(())
    }
}
