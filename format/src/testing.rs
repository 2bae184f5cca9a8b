//! Builders for synthetic captures made of real wire bytes (feature `test-utils`; never part of
//! the shipped API).
//!
//! Tests of the tools built on captures (inspect, checks, replay) need captures with known
//! content. [`CaptureBuilder`] writes them through the real [`CaptureWriter`], encoding every
//! request and response with [`crate::wire`], so what the tools read is byte for byte what a
//! capture of a device would hold.

use std::io::Write;

use crate::file::format::{ChunkHeader, chunk_crc};
use crate::file::{CHUNK_HEADER_LEN, CaptureReader};
use crate::file::{CaptureWriter, Result};
use crate::record::{
    BlobRef, CaptureMode, CommandRecord, Descriptor, FenceSignal, Frame, Lifecycle, LifecycleKind,
    Marker, MemoryRead, Payload, Record, RecordBody, RecordId, ResponseRecord, SessionStart,
};
use crate::wire::{
    Command, CtrlHeader, Format, MemEntry, Rect, Request, ResourceAttachBacking, ResourceCreate2d,
    ResourceFlush, Response, SetScanout, TransferToHost2d,
};

/// Guest-physical address where [`CaptureBuilder`] pretends framebuffers live.
pub const FRAMEBUFFER_GPA: u64 = 0x1_0000_0000;

/// Writes a synthetic capture one exchange at a time, advancing a fake clock by 1 µs per record.
pub struct CaptureBuilder<W: Write> {
    writer: CaptureWriter<W>,
    ts_ns: u64,
    next_head: u16,
}

impl<W: Write> CaptureBuilder<W> {
    /// Starts a capture on `writer` with a session start record for a 2D device with
    /// `num_scanouts` scanouts.
    pub fn new(mut writer: CaptureWriter<W>, num_scanouts: u32) -> Result<Self> {
        let mut config = Vec::with_capacity(16);
        for v in [0u32, 0, num_scanouts, 0] {
            config.extend_from_slice(&v.to_le_bytes());
        }
        let device_config = writer.store(&config)?;
        writer.append(&Record {
            ts_ns: 0,
            body: RecordBody::SessionStart(SessionStart {
                wall_clock_unix_ns: 1_795_615_952_000_000_000,
                tool: "vgt-testing".to_string(),
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                mode: CaptureMode::Synthetic,
                renderer: "none".to_string(),
                features_offered: (1 << 32) | (1 << 1),
                features_acked: (1 << 32) | (1 << 1),
                protocol_features: 0,
                num_queues: 2,
                queue_sizes: vec![256, 16],
                device_config,
            }),
        })?;
        Ok(CaptureBuilder {
            writer,
            ts_ns: 0,
            next_head: 0,
        })
    }

    /// The underlying writer (to store payloads or append records directly).
    pub fn writer(&mut self) -> &mut CaptureWriter<W> {
        &mut self.writer
    }

    fn tick(&mut self) -> u64 {
        self.ts_ns += 1_000;
        self.ts_ns
    }

    /// Moves the fake clock `ns` forward (a pause in the capture).
    pub fn advance(&mut self, ns: u64) {
        self.ts_ns = self.ts_ns.saturating_add(ns);
    }

    /// Appends a record body at the next tick.
    pub fn append(&mut self, body: RecordBody) -> Result<RecordId> {
        let ts_ns = self.tick();
        self.writer.append(&Record { ts_ns, body })
    }

    /// Records `request` as submitted on `queue` with `writable_len` bytes for the response.
    pub fn command(
        &mut self,
        queue: u16,
        request: &Request,
        writable_len: u32,
    ) -> Result<RecordId> {
        let bytes = request.encode();
        let head = self.next_head;
        self.next_head = self
            .next_head
            .wrapping_add(if writable_len > 0 { 2 } else { 1 });
        let mut descriptors = vec![Descriptor {
            addr: 0x8000_0000 + u64::from(head) * 0x1000,
            len: bytes.len() as u32,
            flags: if writable_len > 0 { 1 } else { 0 },
            next: head.wrapping_add(1),
        }];
        if writable_len > 0 {
            descriptors.push(Descriptor {
                addr: 0x8000_0800 + u64::from(head) * 0x1000,
                len: writable_len,
                flags: 2,
                next: 0,
            });
        }
        let request = self.writer.store(&bytes)?;
        self.append(RecordBody::Command(CommandRecord {
            queue,
            head,
            descriptors,
            writable_len,
            request,
        }))
    }

    /// Records the response to `command`.
    pub fn respond(&mut self, command: RecordId, response: &Response) -> Result<RecordId> {
        let bytes = response.encode();
        let used_len = bytes.len() as u32;
        let stored = self.writer.store(&bytes)?;
        self.append(RecordBody::Response(ResponseRecord {
            command,
            queue: 0,
            head: 0,
            used_len,
            bytes: stored,
        }))
    }

    /// A control-queue command answered OK_NODATA (echoing its fence). Returns the command's
    /// record id.
    pub fn ok(&mut self, request: Request) -> Result<RecordId> {
        let cmd = self.command(0, &request, 24)?;
        self.respond(cmd, &Response::ok_nodata(&request.header))?;
        Ok(cmd)
    }

    /// A control-queue command answered with `response`. Returns the command's record id.
    pub fn exchange(&mut self, request: Request, response: &Response) -> Result<RecordId> {
        let len = response.encode().len() as u32;
        let cmd = self.command(0, &request, len.max(24))?;
        self.respond(cmd, response)?;
        Ok(cmd)
    }

    /// Records guest memory read for `command`.
    pub fn memory_read(
        &mut self,
        command: RecordId,
        resource_id: u32,
        addr: u64,
        data: &[u8],
    ) -> Result<RecordId> {
        let data = self.writer.store(data)?;
        self.append(RecordBody::MemoryRead(MemoryRead {
            command,
            resource_id,
            addr,
            data,
        }))
    }

    /// Records a frame of `pixels` (B8G8R8X8, tightly packed) on `scanout_id`.
    pub fn frame(
        &mut self,
        command: RecordId,
        scanout_id: u32,
        resource_id: u32,
        width: u32,
        height: u32,
        pixels: &[u8],
    ) -> Result<RecordId> {
        let pixels = self.writer.store(pixels)?;
        self.append(RecordBody::Frame(Frame {
            command,
            scanout_id,
            resource_id,
            format: Format::B8G8R8X8_UNORM.0,
            width,
            height,
            stride: width * 4,
            rect: [0, 0, width, height],
            pixels,
        }))
    }

    /// Records a fence completion.
    pub fn fence(&mut self, command: RecordId, fence_id: u64) -> Result<RecordId> {
        self.append(RecordBody::Fence(FenceSignal {
            command,
            fence_id,
            ctx_id: 0,
            ring_idx: 0,
            context_ring: false,
        }))
    }

    /// Records a lifecycle event.
    pub fn lifecycle(&mut self, kind: LifecycleKind, message: &str) -> Result<RecordId> {
        self.append(RecordBody::Lifecycle(Lifecycle {
            kind,
            queue: None,
            command: None,
            message: message.to_string(),
        }))
    }

    /// Records a user marker.
    pub fn marker(&mut self, text: &str) -> Result<RecordId> {
        self.append(RecordBody::Marker(Marker {
            text: text.to_string(),
        }))
    }

    /// What a Linux guest's fbdev bring-up sends (virtio-gpu.md §5.3): create a `width`x`height`
    /// B8G8R8X8 resource 2, attach its backing in two entries, show it on scanout 0, then
    /// `updates` full-screen transfer+flush pairs of distinct content, each with its memory read
    /// and frame. Returns the frames' pixel contents in order.
    pub fn linux_boot(&mut self, width: u32, height: u32, updates: u32) -> Result<Vec<Vec<u8>>> {
        let res = 2;
        let size = u64::from(width) * u64::from(height) * 4;
        self.exchange(
            Request::new(Command::GetDisplayInfo),
            &display_info_response(width, height),
        )?;
        self.ok(Request::new(Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: res,
            format: Format::B8G8R8X8_UNORM,
            width,
            height,
        })))?;
        let half = (size / 2) as u32;
        let rest = (size - u64::from(half)) as u32;
        self.ok(Request::new(Command::ResourceAttachBacking(
            ResourceAttachBacking {
                resource_id: res,
                nr_entries: 2,
                entries: vec![
                    MemEntry {
                        addr: FRAMEBUFFER_GPA,
                        length: half,
                        padding: 0,
                    },
                    MemEntry {
                        addr: FRAMEBUFFER_GPA + 0x1000_0000,
                        length: rest,
                        padding: 0,
                    },
                ],
            },
        )))?;
        let full = Rect {
            x: 0,
            y: 0,
            width,
            height,
        };
        self.ok(Request::new(Command::SetScanout(SetScanout {
            r: full,
            scanout_id: 0,
            resource_id: res,
        })))?;
        let mut frames = Vec::new();
        for i in 0..updates {
            let pixels: Vec<u8> = (0..size)
                .map(|b| (b as u32).wrapping_mul(31).wrapping_add(i * 7) as u8)
                .collect();
            let t = self.ok(Request::new(Command::TransferToHost2d(TransferToHost2d {
                r: full,
                offset: 0,
                resource_id: res,
                padding: 0,
            })))?;
            let (a, b) = pixels.split_at(half as usize);
            self.memory_read(t, res, FRAMEBUFFER_GPA, a)?;
            self.memory_read(t, res, FRAMEBUFFER_GPA + 0x1000_0000, b)?;
            let f = self.ok(Request::new(Command::ResourceFlush(ResourceFlush {
                r: full,
                resource_id: res,
                padding: 0,
            })))?;
            self.frame(f, 0, res, width, height, &pixels)?;
            frames.push(pixels);
        }
        Ok(frames)
    }

    /// Finishes the capture (index and footer).
    pub fn finish(self) -> Result<crate::file::WriterStats> {
        self.writer.finish()
    }

    /// Finishes the capture and returns what it was written to.
    pub fn finish_into_inner(self) -> Result<W> {
        self.writer.finish_into_inner().map(|(_, w)| w)
    }
}

/// A small capture with something for every view of a browser: a Linux-like boot of a 32x16
/// display with three updates, then a flush of a resource that does not exist (an error
/// response), a fenced flush of resource 2 and the End record. Its bytes are the same on every
/// call (the header's creation time is fixed; tests refer to records by number and fuzz seeds
/// are built from it).
pub fn boot_with_error_and_fence() -> Result<Vec<u8>> {
    let opts = crate::file::WriterOptions {
        created_unix_ns: Some(1_796_000_000_000_000_000),
        ..crate::file::WriterOptions::default()
    };
    let writer = CaptureWriter::new(Vec::new(), opts)?;
    let mut b = CaptureBuilder::new(writer, 1)?;
    b.linux_boot(32, 16, 3)?;
    let flush = |resource_id, width, height| {
        Request::new(Command::ResourceFlush(ResourceFlush {
            r: Rect {
                x: 0,
                y: 0,
                width,
                height,
            },
            resource_id,
            padding: 0,
        }))
    };
    let bad = flush(9, 8, 8);
    b.exchange(
        bad.clone(),
        &Response::error(
            crate::wire::ResponseType::ERR_INVALID_RESOURCE_ID,
            &bad.header,
        ),
    )?;
    let mut fenced = flush(2, 32, 16);
    fenced.header.flags = crate::wire::FLAG_FENCE;
    fenced.header.fence_id = 1;
    b.ok(fenced)?;
    b.lifecycle(LifecycleKind::End, "capture finished")?;
    b.finish_into_inner()
}

/// An OK_DISPLAY_INFO response with scanout 0 enabled at `width`x`height`.
pub fn display_info_response(width: u32, height: u32) -> Response {
    let mut info = crate::wire::DisplayInfo::default();
    info.pmodes[0].r = Rect {
        x: 0,
        y: 0,
        width,
        height,
    };
    info.pmodes[0].enabled = 1;
    Response::new(
        CtrlHeader::new(crate::wire::ResponseType::OK_DISPLAY_INFO.0),
        crate::wire::ResponseBody::OkDisplayInfo(info),
    )
}

/// A payload's inline bytes (panics on blobs: test helper).
pub fn inline(p: &Payload) -> &[u8] {
    match p {
        Payload::Inline(b) => b,
        Payload::Blob(_) => panic!("expected an inline payload"),
    }
}

/// Rewrites, in the capture `bytes`, the first blob reference of record `id` to `new` and seals
/// the record's chunk CRC again: a capture saying what a damaged or hostile one could (a
/// reference to no blob, a length no blob has), which the writer refuses to write. `Err` says
/// why when record `id` cannot be read or holds no blob reference.
pub fn patch_blob_ref(
    bytes: &mut [u8],
    id: RecordId,
    new: &BlobRef,
) -> std::result::Result<(), String> {
    let reader =
        CaptureReader::from_bytes(bytes.to_vec()).map_err(|e| format!("not a capture: {e}"))?;
    let at = reader
        .record_offset(id)
        .map_err(|e| format!("record {id}: {e}"))? as usize;
    let record = reader.record(id).map_err(|e| format!("record {id}: {e}"))?;
    let old = record
        .body
        .payloads()
        .into_iter()
        .find_map(|p| match p {
            Payload::Blob(r) => Some(*r),
            Payload::Inline(_) => None,
        })
        .ok_or_else(|| format!("record {id} holds no blob reference"))?;
    let encode = |r: &BlobRef| {
        let mut v = r.hash.0.to_le_bytes().to_vec();
        v.extend_from_slice(&r.offset.to_le_bytes());
        v.extend_from_slice(&r.len.to_le_bytes());
        v
    };
    let (old, new) = (encode(&old), encode(new));
    let h = ChunkHeader::parse(bytes.get(at..).unwrap_or(&[]))
        .ok_or_else(|| format!("record {id}: no chunk header at {at}"))?;
    let body = at + CHUNK_HEADER_LEN..at + CHUNK_HEADER_LEN + h.body_len as usize;
    let pos = bytes
        .get(body.clone())
        .and_then(|b| b.windows(old.len()).position(|w| w == old))
        .ok_or_else(|| format!("record {id}: the reference's bytes are not in its body"))?;
    let start = body.start + pos;
    bytes[start..start + new.len()].copy_from_slice(&new);
    let crc = chunk_crc(h.kind, h.flags, h.body_len, &bytes[body]);
    bytes[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks that the directory `dir` holds exactly `seeds`, one file per name with those bytes,
/// writing them first when `VGT_WRITE_FUZZ_SEEDS` is set: the seed tests of the fuzz harnesses
/// keep `fuzz/seeds/<target>` equal to what the harness generates. Panics naming what differs.
pub fn check_seed_files(dir: &std::path::Path, seeds: &[(&str, Vec<u8>)]) {
    fn ok<T>(r: std::io::Result<T>, dir: &std::path::Path) -> T {
        r.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    }
    if std::env::var_os("VGT_WRITE_FUZZ_SEEDS").is_some() {
        ok(std::fs::create_dir_all(dir), dir);
        for (name, bytes) in seeds {
            ok(std::fs::write(dir.join(name), bytes), dir);
        }
    }
    let mut on_disk: Vec<String> = ok(std::fs::read_dir(dir), dir)
        .map(|e| ok(e, dir).file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = seeds.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.sort();
    assert_eq!(
        on_disk,
        names,
        "{}: stale, rerun with VGT_WRITE_FUZZ_SEEDS=1",
        dir.display()
    );
    for (name, bytes) in seeds {
        let got = ok(std::fs::read(dir.join(name)), dir);
        assert_eq!(&got, bytes, "{}/{name} is stale", dir.display());
    }
}
