//! What an end-to-end test asserts on, read from a capture file: the commands in order with
//! their responses, lifecycle events, cursor records and the last frame of each scanout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use vgt_format::CaptureReader;
use vgt_format::record::{Cursor, Lifecycle, RecordBody, RecordId};
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
        let rec = self.reader.record(id)?;
        let RecordBody::Frame(f) = rec.body else {
            anyhow::bail!("record {id} is not a frame");
        };
        let pixels = self.reader.read_payload(&f.pixels)?;
        Rgb::from_bgrx(f.width, f.height, f.stride, &pixels)
            .with_context(|| format!("frame record {id}"))
    }
}
