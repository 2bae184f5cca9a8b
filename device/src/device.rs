//! The virtio-gpu device: decodes requests, validates them, executes them on a renderer and
//! produces responses, display output and fence completions.

use std::collections::HashMap;

use vgt_format::wire::{
    BlobMem, CapsetId, CommandType, CtrlHeader, DisplayInfo, DisplayOne, Format, MemEntry, Rect,
    Request, Response, ResponseBody,
};
use vgt_format::wire::{Command, response};

use crate::backing::{Backing, RowRead};
use crate::fence::{Ring, Timelines};
use crate::host::CURSOR_IMAGE_BYTES;
use crate::pixels::{is_bgrx_order, to_bgra_in_place};
use crate::renderer::{Renderer, RutabagaRenderer};
use crate::{DeviceError, DeviceHost, DisplayEvent, FenceInfo, GuestMemory, ValidationError};

/// `VIRTIO_GPU_F_VIRGL`.
pub const F_VIRGL: u64 = 1 << 0;
/// `VIRTIO_GPU_F_EDID`.
pub const F_EDID: u64 = 1 << 1;
/// `VIRTIO_GPU_F_RESOURCE_UUID`.
pub const F_RESOURCE_UUID: u64 = 1 << 2;
/// `VIRTIO_GPU_F_RESOURCE_BLOB`.
pub const F_RESOURCE_BLOB: u64 = 1 << 3;
/// `VIRTIO_GPU_F_CONTEXT_INIT`.
pub const F_CONTEXT_INIT: u64 = 1 << 4;
/// `VIRTIO_GPU_EVENT_DISPLAY` in `events_read`.
pub const EVENT_DISPLAY: u32 = 1 << 0;
/// Index of the control queue.
pub const CONTROL_QUEUE: u16 = 0;
/// Index of the cursor queue.
pub const CURSOR_QUEUE: u16 = 1;
/// `VIRTIO_GPU_MAX_SCANOUTS`.
pub const MAX_SCANOUTS: usize = response::MAX_SCANOUTS;

const BYTES_PER_PIXEL: u64 = 4;
const CURSOR_SIZE: u32 = 64;

/// How the device is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Initial mode (width, height) of each scanout; 1 to 16 entries, all enabled.
    pub scanouts: Vec<(u32, u32)>,
    /// Offer `VIRTIO_GPU_F_EDID` and answer GET_EDID.
    pub edid: bool,
    /// Refresh rate written into generated EDIDs.
    pub refresh_hz: u32,
    /// Most mem entries one scatter list may have (QEMU: 16384).
    pub max_backing_entries: u32,
    /// Largest resource (width × height × 4), blob, or backing in bytes.
    pub max_resource_bytes: u64,
    /// Host memory all resources together may use: 2D pixels plus backing shadows (QEMU's
    /// `max_hostmem`). Beyond it creates and attaches get ERR_OUT_OF_MEMORY.
    pub max_total_bytes: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            scanouts: vec![(1280, 800)],
            edid: true,
            refresh_hz: 60,
            max_backing_entries: 16384,
            max_resource_bytes: 512 << 20,
            max_total_bytes: 1 << 30,
        }
    }
}

/// One descriptor chain handed to the device.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// Queue index: [`CONTROL_QUEUE`] or [`CURSOR_QUEUE`].
    pub queue: u16,
    /// Opaque to the device (e.g. the descriptor head); comes back in the [`Completion`].
    pub token: u64,
    /// The readable bytes of the chain, in order.
    pub request: &'a [u8],
    /// Total length of the chain's writable descriptors.
    pub writable_len: u32,
}

/// A chain the device is done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The submission's token.
    pub token: u64,
    /// Bytes for the writable descriptors (at most `writable_len`; empty on the cursor queue).
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TwoD {
        format: Format,
        width: u32,
        height: u32,
    },
    GuestBlob {
        size: u64,
    },
}

#[derive(Debug)]
struct Resource {
    kind: Kind,
    backing: Option<Backing>,
    /// Host bytes the backing is accounted for (2D only, `backing.len()`; QEMU keeps a
    /// shadow of that size). The device no longer allocates it: a transfer stages just the
    /// rows it copies in the device's reused staging buffer.
    shadow_len: u64,
    /// 2D only: the number of the device's memory read whose bytes are the resource's whole
    /// content, in its own byte order and tightly packed (its last transfer covered all of it
    /// with one contiguous read). `None` once anything else wrote to it, and at creation.
    whole_read: Option<u64>,
}

impl Resource {
    /// Host bytes this resource holds: its 2D pixels and its backing shadow.
    fn host_bytes(&self) -> u64 {
        let pixels = match self.kind {
            Kind::TwoD { width, height, .. } => {
                u64::from(width) * u64::from(height) * BYTES_PER_PIXEL
            }
            Kind::GuestBlob { .. } => 0,
        };
        pixels + self.shadow_len
    }
}

/// Framebuffer layout of a blob on a scanout (SET_SCANOUT_BLOB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlobFb {
    format: Format,
    stride: u32,
    offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    resource_id: u32,
    /// The part of the resource (or blob framebuffer) shown.
    rect: Rect,
    blob: Option<BlobFb>,
}

#[derive(Debug, Clone)]
struct Scanout {
    width: u32,
    height: u32,
    enabled: bool,
    source: Option<Source>,
}

/// The virtio-gpu device model.
///
/// Not thread-safe; `Send` (with the rutabaga 2D renderer), so it can live in a backend
/// thread.
pub struct Device {
    config: DeviceConfig,
    renderer: Box<dyn Renderer>,
    resources: HashMap<u32, Resource>,
    scanouts: Vec<Scanout>,
    events_read: u32,
    timelines: Timelines,
    signalled: Vec<FenceInfo>,
    /// Host bytes held for resources (see `DeviceConfig::max_total_bytes`).
    used_bytes: u64,
    /// Picture buffers handed back by the host ([`Device::recycle_pixels`]), reused for the
    /// next UPDATE instead of a fresh zeroed allocation.
    spare_pixels: Vec<Vec<u8>>,
    /// The rows of the current TRANSFER_TO_HOST_2D as read from the guest, lent to the
    /// renderer; reused by every transfer (grows to the largest one).
    staging: Vec<u8>,
    /// Number of the next memory read reported to the host
    /// ([`DeviceHost::numbered_memory_read`]).
    reads: u64,
}

/// At most this many recycled picture buffers are kept...
const MAX_SPARE_BUFFERS: usize = 4;
/// ...holding at most this many bytes together (four 4K pictures).
const MAX_SPARE_BYTES: usize = 4 * 3840 * 2160 * 4;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("renderer", &self.renderer.name())
            .field("resources", &self.resources.len())
            .field("scanouts", &self.scanouts)
            .field("events_read", &self.events_read)
            .field("pending_fences", &self.timelines.len())
            .finish()
    }
}

type Outcome = Result<Response, ValidationError>;

fn rect_inside(r: &Rect, width: u32, height: u32) -> bool {
    u64::from(r.x) + u64::from(r.width) <= u64::from(width)
        && u64::from(r.y) + u64::from(r.height) <= u64::from(height)
}

fn intersect(a: &Rect, b: &Rect) -> Option<Rect> {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (u64::from(a.x) + u64::from(a.width)).min(u64::from(b.x) + u64::from(b.width));
    let y1 = (u64::from(a.y) + u64::from(a.height)).min(u64::from(b.y) + u64::from(b.height));
    if x1 <= u64::from(x0) || y1 <= u64::from(y0) {
        return None;
    }
    Some(Rect {
        x: x0,
        y: y0,
        width: u32::try_from(x1 - u64::from(x0)).ok()?,
        height: u32::try_from(y1 - u64::from(y0)).ok()?,
    })
}

/// The UUID RESOURCE_ASSIGN_UUID gives a resource: a version-8 UUID
/// `76677472-0000-8000-8000-0000XXXXXXXX` ("vgtr", then the id), the same on every run.
pub fn resource_uuid(resource_id: u32) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..4].copy_from_slice(b"vgtr");
    u[6] = 0x80; // version 8
    u[8] = 0x80; // RFC variant
    u[12..].copy_from_slice(&resource_id.to_be_bytes());
    u
}

/// Checks a scatter list: count within limits, no entry wrapping around the address space, total
/// within `max_resource_bytes`. Returns the total length.
///
/// Whether the entries lie in guest memory is deliberately *not* asked here: every decision the
/// device takes must be reproducible from the request bytes and the recorded reads alone, so an
/// entry outside memory fails when (and only if) a command reads through it.
fn check_entries(
    config: &DeviceConfig,
    command: CommandType,
    resource_id: u32,
    entries: &[MemEntry],
    allow_empty: bool,
) -> Result<u64, ValidationError> {
    let n = entries.len();
    let max = config.max_backing_entries;
    if (n == 0 && !allow_empty) || n as u64 > u64::from(max) {
        return Err(ValidationError::EntryCount {
            command,
            resource_id,
            nr_entries: u32::try_from(n).unwrap_or(u32::MAX),
            max,
        });
    }
    let mut total = 0u64;
    for (index, e) in entries.iter().enumerate() {
        let len = u64::from(e.length);
        if e.addr.checked_add(len).is_none() {
            return Err(ValidationError::EntryWraps {
                resource_id,
                index,
                addr: e.addr,
                length: e.length,
            });
        }
        total += len; // at most 2^32 entries of < 2^32 bytes: no overflow
    }
    if total > config.max_resource_bytes {
        return Err(ValidationError::BackingTooLarge {
            resource_id,
            total,
            max: config.max_resource_bytes,
        });
    }
    Ok(total)
}

impl Device {
    /// A device over rutabaga_gfx's 2D renderer.
    pub fn new(config: DeviceConfig) -> Result<Device, DeviceError> {
        let renderer =
            RutabagaRenderer::new().map_err(|source| DeviceError::Renderer { source })?;
        Self::with_renderer(config, Box::new(renderer))
    }

    /// A device over any renderer.
    pub fn with_renderer(
        config: DeviceConfig,
        renderer: Box<dyn Renderer>,
    ) -> Result<Device, DeviceError> {
        if config.scanouts.is_empty() || config.scanouts.len() > MAX_SCANOUTS {
            return Err(DeviceError::ScanoutCount {
                found: config.scanouts.len(),
            });
        }
        let mut scanouts = Vec::with_capacity(config.scanouts.len());
        for (i, &(width, height)) in config.scanouts.iter().enumerate() {
            if width == 0 || height == 0 {
                return Err(DeviceError::ScanoutSize {
                    scanout: i as u32,
                    width,
                    height,
                });
            }
            scanouts.push(Scanout {
                width,
                height,
                enabled: true,
                source: None,
            });
        }
        Ok(Device {
            config,
            renderer,
            resources: HashMap::new(),
            scanouts,
            events_read: 0,
            timelines: Timelines::default(),
            signalled: Vec::new(),
            used_bytes: 0,
            spare_pixels: Vec::new(),
            staging: Vec::new(),
            reads: 0,
        })
    }

    /// Hands back the pixel buffer of a [`DisplayEvent::Update`] (or any picture buffer) the
    /// host no longer needs: the device writes a later UPDATE's pixels into it instead of
    /// allocating (and faulting in) a new one. Its content does not matter: every byte of a
    /// reused buffer is overwritten. The device keeps a few (bounded count and bytes) and
    /// drops the rest.
    pub fn recycle_pixels(&mut self, buf: Vec<u8>) {
        let held: usize = self.spare_pixels.iter().map(Vec::capacity).sum();
        if buf.capacity() == 0
            || self.spare_pixels.len() >= MAX_SPARE_BUFFERS
            || held.saturating_add(buf.capacity()) > MAX_SPARE_BYTES
        {
            return;
        }
        self.spare_pixels.push(buf);
    }

    /// A buffer of exactly `len` bytes for pixels that are about to be overwritten in full:
    /// a recycled one when one is big enough (its old bytes are left in place, not zeroed;
    /// only growth is zero-filled), else a new zeroed one.
    fn pixel_buffer(&mut self, len: usize) -> Vec<u8> {
        // The smallest spare that fits, so that a big picture's buffer is not spent on a
        // small damage rectangle when a smaller one would do.
        let best = self
            .spare_pixels
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut buf = self.spare_pixels.swap_remove(i);
                // Truncates, or zero-fills only the bytes past the old length.
                buf.resize(len, 0);
                buf
            }
            None => vec![0; len],
        }
    }

    /// The device's configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Device-specific feature bits offered: EDID (if configured), RESOURCE_UUID,
    /// RESOURCE_BLOB (guest blobs), and VIRGL + CONTEXT_INIT only with a 3D renderer.
    pub fn features(&self) -> u64 {
        let mut f = F_RESOURCE_UUID | F_RESOURCE_BLOB;
        if self.config.edid {
            f |= F_EDID;
        }
        if self.renderer.supports_3d() {
            f |= F_VIRGL | F_CONTEXT_INIT;
        }
        f
    }

    /// `struct virtio_gpu_config`: events_read, events_clear (0), num_scanouts, num_capsets.
    pub fn config_space(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&self.events_read.to_le_bytes());
        c[8..12].copy_from_slice(&(self.scanouts.len() as u32).to_le_bytes());
        c[12..16].copy_from_slice(&self.renderer.num_capsets().to_le_bytes());
        c
    }

    /// The display changed on the host: scanout `scanout` is now `w`×`h` (or disabled). Raises
    /// `EVENT_DISPLAY` so the driver re-reads display info and EDID. Out-of-range scanouts are
    /// ignored.
    pub fn set_scanout_size(&mut self, scanout: u32, w: u32, h: u32, enabled: bool) {
        if let Some(s) = self.scanouts.get_mut(scanout as usize) {
            s.width = w;
            s.height = h;
            s.enabled = enabled;
            self.events_read |= EVENT_DISPLAY;
        }
    }

    /// The driver wrote `events_clear`: clears those bits of `events_read`.
    pub fn clear_events(&mut self, mask: u32) {
        self.events_read &= !mask;
    }

    /// Completions still waiting for a fence.
    pub fn pending_fences(&self) -> usize {
        self.timelines.len()
    }

    /// Device reset: drops every resource, scanout binding and waiting completion.
    pub fn reset(&mut self) {
        let ids: Vec<u32> = self.resources.keys().copied().collect();
        for id in ids {
            // A renderer that lost the resource already is what reset wants anyway.
            let _ = self.renderer.unref(id);
        }
        self.resources.clear();
        self.used_bytes = 0;
        for (s, &(w, h)) in self.scanouts.iter_mut().zip(&self.config.scanouts) {
            *s = Scanout {
                width: w,
                height: h,
                enabled: true,
                source: None,
            };
        }
        self.events_read = 0;
        self.timelines.clear();
        self.signalled.clear();
    }

    /// Collects fences the renderer signalled since the last call (for renderers that signal
    /// asynchronously) and returns the completions they release.
    pub fn poll(&mut self, host: &mut dyn DeviceHost) -> Vec<Completion> {
        let mut out = Vec::new();
        self.release_signalled(host, &mut out);
        out
    }

    fn release_signalled(&mut self, host: &mut dyn DeviceHost, out: &mut Vec<Completion>) {
        self.renderer.take_signalled(&mut self.signalled);
        for fence in self.signalled.drain(..) {
            self.timelines.signal(Ring::of(&fence), fence.fence_id, out);
            host.fence_signalled(fence);
        }
    }

    /// Executes one chain. Returns the completions that became ready: this one (unless its
    /// fence is still pending) and any earlier ones whose fences signalled meanwhile.
    pub fn submit(
        &mut self,
        sub: Submission<'_>,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Vec<Completion> {
        let mut out = Vec::with_capacity(1);
        let cursor_queue = sub.queue == CURSOR_QUEUE;
        let hdr = match CtrlHeader::decode(sub.request) {
            Ok(h) => h,
            Err(_) => {
                let err = ValidationError::NoHeader {
                    len: sub.request.len(),
                };
                host.validation_error(sub.token, &err);
                let response = if cursor_queue {
                    Vec::new()
                } else {
                    Response::new(CtrlHeader::new(err.response_type().0), ResponseBody::Error)
                        .encode()
                };
                out.push(self.finish(sub, CommandType(0), response, host));
                return out;
            }
        };
        let command = CommandType(hdr.type_);
        let outcome = match Request::decode(sub.request) {
            Ok(req) => self.execute(sub.queue, &req, mem, host),
            Err(source) => Err(ValidationError::Decode { command, source }),
        };
        let response = match outcome {
            Ok(r) => r,
            Err(e) => {
                host.validation_error(sub.token, &e);
                Response::error(e.response_type(), &hdr)
            }
        };
        let ok = response.response_type().is_ok();
        let bytes = if cursor_queue {
            Vec::new()
        } else {
            response.encode()
        };
        let completion = self.finish(sub, command, bytes, host);
        if hdr.is_fenced() && ok && !cursor_queue {
            let fence = FenceInfo {
                flags: hdr.flags,
                fence_id: hdr.fence_id,
                ctx_id: hdr.ctx_id,
                ring_idx: hdr.ring_idx,
            };
            // Fences signal only through `release_signalled` below, so holding the completion
            // after create_fence cannot miss a fence that signalled synchronously.
            match self.renderer.create_fence(fence) {
                Ok(()) => self
                    .timelines
                    .hold(Ring::of(&fence), fence.fence_id, completion),
                Err(source) => {
                    // The command itself succeeded; answer it rather than hold it forever.
                    let err = ValidationError::Renderer { command, source };
                    host.validation_error(sub.token, &err);
                    out.push(completion);
                }
            }
        } else {
            out.push(completion);
        }
        self.release_signalled(host, &mut out);
        out
    }

    /// Truncates the response to the writable length (reporting it) and builds the completion.
    fn finish(
        &self,
        sub: Submission<'_>,
        command: CommandType,
        mut response: Vec<u8>,
        host: &mut dyn DeviceHost,
    ) -> Completion {
        if response.len() as u64 > u64::from(sub.writable_len) {
            host.validation_error(
                sub.token,
                &ValidationError::ResponseTruncated {
                    command,
                    needed: response.len(),
                    writable: sub.writable_len,
                },
            );
            response.truncate(sub.writable_len as usize);
        }
        Completion {
            token: sub.token,
            response,
        }
    }

    fn execute(
        &mut self,
        queue: u16,
        req: &Request,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Outcome {
        let hdr = &req.header;
        let command = req.command_type();
        if hdr.has_ring_idx() && hdr.ring_idx >= 64 {
            return Err(ValidationError::RingIndex {
                ring_idx: hdr.ring_idx,
            });
        }
        let on_cursor_queue = queue == CURSOR_QUEUE;
        if queue > CURSOR_QUEUE
            || (command.is_cursor() != on_cursor_queue && command.name().is_some())
        {
            return Err(ValidationError::WrongQueue { command, queue });
        }
        let unsupported = |reason| Err(ValidationError::Unsupported { command, reason });
        match &req.command {
            Command::GetDisplayInfo => Ok(self.get_display_info(hdr, host)),
            Command::GetEdid(c) => self.get_edid(hdr, c.scanout, host),
            Command::ResourceCreate2d(c) => {
                self.create_2d(command, c.resource_id, c.format, c.width, c.height)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::ResourceUnref(c) => {
                self.unref(command, c.resource_id, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::SetScanout(c) => {
                self.set_scanout(command, c.scanout_id, c.resource_id, c.r, mem, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::ResourceFlush(c) => {
                self.flush(command, c.resource_id, c.r, mem, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::TransferToHost2d(c) => {
                self.transfer_to_host_2d(command, c.resource_id, c.r, c.offset, mem, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::ResourceAttachBacking(c) => {
                self.attach_backing(command, c.resource_id, &c.entries)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::ResourceDetachBacking(c) => {
                let res = self.resource_mut(command, c.resource_id)?;
                if res.backing.take().is_none() {
                    return Err(ValidationError::NoBacking {
                        command,
                        resource_id: c.resource_id,
                    });
                }
                let freed = std::mem::take(&mut res.shadow_len);
                self.used_bytes = self.used_bytes.saturating_sub(freed);
                Ok(Response::ok_nodata(hdr))
            }
            Command::GetCapsetInfo(c) => {
                let num_capsets = self.renderer.num_capsets();
                if c.capset_index >= num_capsets {
                    return Err(ValidationError::CapsetIndex {
                        index: c.capset_index,
                        num_capsets,
                    });
                }
                let info = self
                    .renderer
                    .capset_info(c.capset_index)
                    .map_err(|source| ValidationError::Renderer { command, source })?;
                Ok(Response::ok(
                    ResponseBody::OkCapsetInfo(response::CapsetInfo {
                        capset_id: CapsetId(info.capset_id),
                        capset_max_version: info.max_version,
                        capset_max_size: info.max_size,
                        padding: 0,
                    }),
                    hdr,
                ))
            }
            Command::GetCapset(c) => {
                let known = (0..self.renderer.num_capsets()).any(|i| {
                    self.renderer.capset_info(i).is_ok_and(|info| {
                        info.capset_id == c.capset_id.0 && c.capset_version <= info.max_version
                    })
                });
                if !known {
                    return Err(ValidationError::UnknownCapset {
                        capset_id: c.capset_id.0,
                        version: c.capset_version,
                    });
                }
                let data = self
                    .renderer
                    .capset(c.capset_id.0, c.capset_version)
                    .map_err(|source| ValidationError::Renderer { command, source })?;
                Ok(Response::ok(ResponseBody::OkCapset(data), hdr))
            }
            Command::ResourceAssignUuid(c) => {
                self.resource(command, c.resource_id)?;
                Ok(Response::ok(
                    ResponseBody::OkResourceUuid(resource_uuid(c.resource_id)),
                    hdr,
                ))
            }
            Command::ResourceCreateBlob(c) => {
                self.create_blob(command, c)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::SetScanoutBlob(c) => {
                self.set_scanout_blob(command, c, mem, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::UpdateCursor(c) => {
                self.update_cursor(command, c, host)?;
                Ok(Response::ok_nodata(hdr))
            }
            Command::MoveCursor(c) => {
                self.check_scanout(command, c.pos.scanout_id)?;
                host.display(DisplayEvent::CursorMove {
                    scanout_id: c.pos.scanout_id,
                    x: c.pos.x,
                    y: c.pos.y,
                });
                Ok(Response::ok_nodata(hdr))
            }
            Command::CtxCreate(_)
            | Command::CtxDestroy
            | Command::CtxAttachResource(_)
            | Command::CtxDetachResource(_)
            | Command::ResourceCreate3d(_)
            | Command::TransferToHost3d(_)
            | Command::TransferFromHost3d(_)
            | Command::Submit3d(_) => {
                unsupported("3D commands need a 3D renderer (VIRTIO_GPU_F_VIRGL is not offered)")
            }
            Command::ResourceMapBlob(_) | Command::ResourceUnmapBlob(_) => {
                unsupported("no host-visible shared memory region")
            }
            Command::Unknown(_) => Err(ValidationError::UnknownCommand { code: hdr.type_ }),
            #[allow(unreachable_patterns)]
            _ => unsupported("command not implemented by this device"),
        }
    }

    fn resource(
        &self,
        command: CommandType,
        resource_id: u32,
    ) -> Result<&Resource, ValidationError> {
        self.resources
            .get(&resource_id)
            .ok_or(ValidationError::UnknownResource {
                command,
                resource_id,
            })
    }

    fn resource_mut(
        &mut self,
        command: CommandType,
        resource_id: u32,
    ) -> Result<&mut Resource, ValidationError> {
        self.resources
            .get_mut(&resource_id)
            .ok_or(ValidationError::UnknownResource {
                command,
                resource_id,
            })
    }

    fn check_scanout(&self, command: CommandType, scanout_id: u32) -> Result<(), ValidationError> {
        if (scanout_id as usize) < self.scanouts.len() {
            Ok(())
        } else {
            Err(ValidationError::InvalidScanout {
                command,
                scanout_id,
                num_scanouts: self.scanouts.len() as u32,
            })
        }
    }

    fn check_budget(&self, resource_id: u32, needed: u64) -> Result<(), ValidationError> {
        let max = self.config.max_total_bytes;
        if self.used_bytes.saturating_add(needed) > max {
            return Err(ValidationError::HostMemoryExhausted {
                resource_id,
                needed,
                used: self.used_bytes,
                max,
            });
        }
        Ok(())
    }

    fn check_new_id(&self, command: CommandType, resource_id: u32) -> Result<(), ValidationError> {
        if resource_id == 0 || self.resources.contains_key(&resource_id) {
            return Err(ValidationError::ResourceIdTaken {
                command,
                resource_id,
            });
        }
        Ok(())
    }

    fn get_display_info(&mut self, hdr: &CtrlHeader, host: &mut dyn DeviceHost) -> Response {
        if let Some(info) = host.display_info() {
            for (s, d) in self.scanouts.iter_mut().zip(&info.displays) {
                s.width = d.width;
                s.height = d.height;
                s.enabled = d.enabled;
            }
            let mut pmodes = [DisplayOne::default(); MAX_SCANOUTS];
            for (p, d) in pmodes.iter_mut().zip(&info.displays) {
                *p = DisplayOne {
                    r: Rect {
                        x: d.x,
                        y: d.y,
                        width: d.width,
                        height: d.height,
                    },
                    enabled: u32::from(d.enabled),
                    flags: d.flags,
                };
            }
            return display_info_response(hdr, pmodes);
        }
        let mut pmodes = [DisplayOne::default(); MAX_SCANOUTS];
        for (p, s) in pmodes.iter_mut().zip(&self.scanouts) {
            if s.enabled {
                *p = DisplayOne {
                    r: Rect {
                        x: 0,
                        y: 0,
                        width: s.width,
                        height: s.height,
                    },
                    enabled: 1,
                    flags: 0,
                };
            }
        }
        display_info_response(hdr, pmodes)
    }

    fn get_edid(&mut self, hdr: &CtrlHeader, scanout: u32, host: &mut dyn DeviceHost) -> Outcome {
        if !self.config.edid {
            return Err(ValidationError::EdidDisabled);
        }
        self.check_scanout(CommandType::GET_EDID, scanout)?;
        let edid = match host.edid(scanout) {
            Some(bytes) => response::Edid::from_blob(&bytes),
            None => {
                let (w, h) = self
                    .scanouts
                    .get(scanout as usize)
                    .map_or((0, 0), |s| (s.width, s.height));
                let block =
                    vgt_format::wire::edid::edid_for_mode(w, h, self.config.refresh_hz, scanout);
                response::Edid::from_blob(&block)
            }
        };
        Ok(Response::ok(ResponseBody::OkEdid(edid), hdr))
    }

    fn create_2d(
        &mut self,
        command: CommandType,
        resource_id: u32,
        format: Format,
        width: u32,
        height: u32,
    ) -> Result<(), ValidationError> {
        self.check_new_id(command, resource_id)?;
        if format.bytes_per_pixel().is_none() {
            return Err(ValidationError::UnsupportedFormat {
                command,
                format: format.0,
            });
        }
        if width == 0 || height == 0 {
            return Err(ValidationError::ZeroSize {
                resource_id,
                width,
                height,
            });
        }
        // Saturating: u32::MAX squared times 4 does not fit u64. The stride must fit u32.
        let bytes = (u64::from(width) * u64::from(height)).saturating_mul(BYTES_PER_PIXEL);
        if bytes > self.config.max_resource_bytes || width.checked_mul(4).is_none() {
            return Err(ValidationError::ResourceTooLarge {
                resource_id,
                bytes,
                max: self.config.max_resource_bytes,
            });
        }
        self.check_budget(resource_id, bytes)?;
        self.renderer
            .create_2d(resource_id, format, width, height)
            .map_err(|source| ValidationError::Renderer { command, source })?;
        self.used_bytes += bytes;
        self.resources.insert(
            resource_id,
            Resource {
                kind: Kind::TwoD {
                    format,
                    width,
                    height,
                },
                backing: None,
                shadow_len: 0,
                whole_read: None,
            },
        );
        Ok(())
    }

    fn unref(
        &mut self,
        command: CommandType,
        resource_id: u32,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        self.resource(command, resource_id)?;
        // As QEMU does: a scanout still showing the resource is disabled first.
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            if s.source.is_some_and(|src| src.resource_id == resource_id) {
                s.source = None;
                host.display(DisplayEvent::Scanout {
                    scanout_id: i as u32,
                    width: 0,
                    height: 0,
                });
            }
        }
        if let Some(res) = self.resources.remove(&resource_id) {
            self.used_bytes = self.used_bytes.saturating_sub(res.host_bytes());
        }
        self.renderer
            .unref(resource_id)
            .map_err(|source| ValidationError::Renderer { command, source })
    }

    fn attach_backing(
        &mut self,
        command: CommandType,
        resource_id: u32,
        entries: &[MemEntry],
    ) -> Result<(), ValidationError> {
        let res = self.resource(command, resource_id)?;
        if res.backing.is_some() {
            return Err(ValidationError::BackingAttached { resource_id });
        }
        let kind = res.kind;
        let total = check_entries(&self.config, command, resource_id, entries, false)?;
        if let Kind::GuestBlob { size } = kind
            && total < size
        {
            return Err(ValidationError::BlobSize {
                resource_id,
                size,
                backing_len: total,
            });
        }
        let shadow_len = match kind {
            Kind::TwoD { .. } => {
                usize::try_from(total).map_err(|_| ValidationError::BackingTooLarge {
                    resource_id,
                    total,
                    max: self.config.max_resource_bytes,
                })?
            }
            Kind::GuestBlob { .. } => 0,
        };
        self.check_budget(resource_id, shadow_len as u64)?;
        let res = self.resource_mut(command, resource_id)?;
        res.backing = Some(Backing::new(entries.to_vec()));
        res.shadow_len = shadow_len as u64;
        self.used_bytes += shadow_len as u64;
        Ok(())
    }

    fn transfer_to_host_2d(
        &mut self,
        command: CommandType,
        resource_id: u32,
        r: Rect,
        offset: u64,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        let res = self
            .resources
            .get_mut(&resource_id)
            .ok_or(ValidationError::UnknownResource {
                command,
                resource_id,
            })?;
        let (width, height) = match res.kind {
            Kind::TwoD { width, height, .. } => (width, height),
            // QEMU answers OK and does nothing: a guest blob's memory is the resource.
            Kind::GuestBlob { .. } => return Ok(()),
        };
        if !rect_inside(&r, width, height) {
            return Err(ValidationError::RectOutside {
                command,
                resource_id,
                rect: r,
                width,
                height,
            });
        }
        let Some(backing) = res.backing.as_ref() else {
            return Err(ValidationError::NoBacking {
                command,
                resource_id,
            });
        };
        if r.width == 0 || r.height == 0 {
            return Ok(());
        }
        let stride = u64::from(width) * BYTES_PER_PIXEL;
        let row_len = u64::from(r.width) * BYTES_PER_PIXEL;
        let end = stride
            .checked_mul(u64::from(r.height) - 1)
            .and_then(|v| v.checked_add(offset))
            .and_then(|v| v.checked_add(row_len));
        if end.is_none_or(|e| e > backing.len()) {
            return Err(ValidationError::TransferOutsideBacking {
                resource_id,
                offset,
                end,
                backing_len: backing.len(),
            });
        }
        // The staging buffer holds backing bytes `offset .. end` (row r at `r * stride`);
        // only the rows' bytes are read and copied, the gaps between them are never looked at
        // (by the renderer either), so the reused buffer's old bytes there do not matter.
        let span = end
            .and_then(|e| e.checked_sub(offset))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ValidationError::TransferOutsideBacking {
                resource_id,
                offset,
                end,
                backing_len: backing.len(),
            })?;
        let plan = RowRead {
            first: offset,
            row_len,
            stride,
            rows: r.height,
            dst_first: 0,
            dst_stride: width as usize * 4,
        };
        // Truncates, or zero-fills only the growth: no allocation once it is large enough.
        self.staging.resize(span, 0);
        let first_read = self.reads;
        backing.read_rows(
            plan,
            &mut self.staging,
            resource_id,
            mem,
            host,
            &mut self.reads,
        )?;
        // One read that filled the staging buffer, for the whole resource: its bytes are now
        // the resource's content.
        let whole =
            (r.x, r.y, r.width, r.height) == (0, 0, width, height) && self.reads == first_read + 1;
        // To the renderer, the staged bytes are a backing whose row 0 starts at offset 0.
        let written = self
            .renderer
            .transfer_write_2d(resource_id, r, &self.staging, 0, width * 4)
            .map_err(|source| ValidationError::Renderer { command, source });
        if let Some(res) = self.resources.get_mut(&resource_id) {
            res.whole_read = (whole && written.is_ok()).then_some(first_read);
        }
        written
    }

    fn set_scanout(
        &mut self,
        command: CommandType,
        scanout_id: u32,
        resource_id: u32,
        r: Rect,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        self.check_scanout(command, scanout_id)?;
        if resource_id == 0 {
            self.disable_scanout(scanout_id, host);
            return Ok(());
        }
        let res = self.resource(command, resource_id)?;
        let Kind::TwoD { width, height, .. } = res.kind else {
            return Err(ValidationError::WrongResourceKind {
                command,
                resource_id,
                is_blob: true,
            });
        };
        if r.width == 0 || r.height == 0 || !rect_inside(&r, width, height) {
            return Err(ValidationError::RectOutside {
                command,
                resource_id,
                rect: r,
                width,
                height,
            });
        }
        self.show(
            scanout_id,
            Source {
                resource_id,
                rect: r,
                blob: None,
            },
            command,
            mem,
            host,
        )
    }

    fn set_scanout_blob(
        &mut self,
        command: CommandType,
        c: &vgt_format::wire::SetScanoutBlob,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        self.check_scanout(command, c.scanout_id)?;
        if c.resource_id == 0 {
            self.disable_scanout(c.scanout_id, host);
            return Ok(());
        }
        let resource_id = c.resource_id;
        let res = self.resource(command, resource_id)?;
        let Kind::GuestBlob { size } = res.kind else {
            return Err(ValidationError::WrongResourceKind {
                command,
                resource_id,
                is_blob: false,
            });
        };
        if c.format.bytes_per_pixel().is_none() {
            return Err(ValidationError::UnsupportedFormat {
                command,
                format: c.format.0,
            });
        }
        let stride = c.strides[0];
        let offset = c.offsets[0];
        let row = u64::from(c.width) * BYTES_PER_PIXEL;
        let end = u64::from(c.height).checked_sub(1).and_then(|h1| {
            (u64::from(stride) * h1)
                .checked_add(u64::from(offset))?
                .checked_add(row)
        });
        if c.width == 0 || u64::from(stride) < row || end.is_none_or(|e| e > size) {
            return Err(ValidationError::BlobLayout {
                resource_id,
                width: c.width,
                height: c.height,
                stride,
                offset,
                end,
                size,
            });
        }
        if c.r.width == 0 || c.r.height == 0 || !rect_inside(&c.r, c.width, c.height) {
            return Err(ValidationError::RectOutside {
                command,
                resource_id,
                rect: c.r,
                width: c.width,
                height: c.height,
            });
        }
        let blob = BlobFb {
            format: c.format,
            stride,
            offset,
        };
        self.show(
            c.scanout_id,
            Source {
                resource_id,
                rect: c.r,
                blob: Some(blob),
            },
            command,
            mem,
            host,
        )
    }

    fn disable_scanout(&mut self, scanout_id: u32, host: &mut dyn DeviceHost) {
        if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
            s.source = None;
        }
        host.display(DisplayEvent::Scanout {
            scanout_id,
            width: 0,
            height: 0,
        });
    }

    /// Binds `source` to the scanout, announces its size and sends its full content.
    fn show(
        &mut self,
        scanout_id: u32,
        source: Source,
        command: CommandType,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        // Read first: a failed read leaves the scanout as it was.
        let pixels = self.read_source_rect(&source, &source.rect, command, mem, host)?;
        if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
            s.source = Some(source);
        }
        host.display(DisplayEvent::Scanout {
            scanout_id,
            width: source.rect.width,
            height: source.rect.height,
        });
        host.display(self.update_event(scanout_id, &source, &source.rect, pixels));
        Ok(())
    }

    fn update_event(
        &self,
        scanout_id: u32,
        source: &Source,
        rect: &Rect,
        pixels: Vec<u8>,
    ) -> DisplayEvent {
        let format = match (source.blob, self.resources.get(&source.resource_id)) {
            (Some(fb), _) => fb.format,
            (
                None,
                Some(Resource {
                    kind: Kind::TwoD { format, .. },
                    ..
                }),
            ) => *format,
            _ => Format::B8G8R8X8_UNORM,
        };
        DisplayEvent::Update {
            scanout_id,
            resource_id: source.resource_id,
            // `rect` lies inside `source.rect` (it is that rect or an intersection with it).
            x: rect.x.saturating_sub(source.rect.x),
            y: rect.y.saturating_sub(source.rect.y),
            width: rect.width,
            height: rect.height,
            format,
            stride: rect.width * 4,
            pixels,
            copy_of_read: None,
        }
    }

    /// The memory read whose bytes an update of `rect` of what `source` shows is a copy of:
    /// the whole of a 2D resource last written by one read, in a format whose bytes are
    /// already in x8r8g8b8 order (the conversion leaves them alone).
    fn copy_of_read(&self, source: &Source, rect: &Rect) -> Option<u64> {
        if source.blob.is_some() {
            return None;
        }
        let res = self.resources.get(&source.resource_id)?;
        let Kind::TwoD {
            format,
            width,
            height,
        } = res.kind
        else {
            return None;
        };
        let whole = (rect.x, rect.y, rect.width, rect.height) == (0, 0, width, height);
        (whole && is_bgrx_order(format)).then_some(res.whole_read?)
    }

    /// Reads `rect` (in resource / framebuffer coordinates) of what `source` shows, as
    /// tightly packed B, G, R, X bytes: from the renderer for 2D resources, from guest memory
    /// (reported) for guest blobs.
    fn read_source_rect(
        &mut self,
        source: &Source,
        rect: &Rect,
        command: CommandType,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<Vec<u8>, ValidationError> {
        let resource_id = source.resource_id;
        let res = self
            .resources
            .get(&resource_id)
            .ok_or(ValidationError::UnknownResource {
                command,
                resource_id,
            })?;
        let kind = res.kind;
        let row = rect.width as usize * 4;
        // Every byte is overwritten below (the renderer's read fills the whole rectangle, the
        // backing read every row), so a recycled buffer's stale bytes never show. A failed read
        // gives the buffer back.
        let mut pixels = self.pixel_buffer(row * rect.height as usize);
        let result = self.fill_source_rect(source, rect, kind, command, mem, host, &mut pixels);
        match result {
            Ok(()) => Ok(pixels),
            Err(e) => {
                self.recycle_pixels(pixels);
                Err(e)
            }
        }
    }

    /// Fills `pixels` (`rect.width * 4 * rect.height` bytes) with `rect` of what `source`
    /// shows, converted to B, G, R, X, writing every byte.
    #[allow(clippy::too_many_arguments)]
    fn fill_source_rect(
        &mut self,
        source: &Source,
        rect: &Rect,
        kind: Kind,
        command: CommandType,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
        pixels: &mut [u8],
    ) -> Result<(), ValidationError> {
        let resource_id = source.resource_id;
        let row = rect.width as usize * 4;
        let format = match (source.blob, kind) {
            (None, Kind::TwoD { format, .. }) => {
                self.renderer
                    .transfer_read_2d(resource_id, *rect, pixels)
                    .map_err(|source| ValidationError::Renderer { command, source })?;
                format
            }
            (Some(fb), Kind::GuestBlob { .. }) => {
                let Some(backing) = self
                    .resources
                    .get(&resource_id)
                    .and_then(|r| r.backing.as_ref())
                else {
                    return Err(ValidationError::NoBacking {
                        command,
                        resource_id,
                    });
                };
                let plan = RowRead {
                    first: u64::from(fb.offset)
                        + u64::from(rect.y) * u64::from(fb.stride)
                        + u64::from(rect.x) * BYTES_PER_PIXEL,
                    row_len: row as u64,
                    stride: u64::from(fb.stride),
                    rows: rect.height,
                    dst_first: 0,
                    dst_stride: row,
                };
                backing.read_rows(plan, pixels, resource_id, mem, host, &mut self.reads)?;
                fb.format
            }
            _ => {
                return Err(ValidationError::WrongResourceKind {
                    command,
                    resource_id,
                    is_blob: source.blob.is_none(),
                });
            }
        };
        to_bgra_in_place(format, pixels);
        Ok(())
    }

    fn flush(
        &mut self,
        command: CommandType,
        resource_id: u32,
        r: Rect,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        let res = self.resource(command, resource_id)?;
        if let Kind::TwoD { width, height, .. } = res.kind
            && !rect_inside(&r, width, height)
        {
            return Err(ValidationError::RectOutside {
                command,
                resource_id,
                rect: r,
                width,
                height,
            });
        }
        for i in 0..self.scanouts.len() {
            let Some(source) = self.scanouts.get(i).and_then(|s| s.source) else {
                continue;
            };
            if source.resource_id != resource_id {
                continue;
            }
            let Some(part) = intersect(&r, &source.rect) else {
                continue;
            };
            let pixels = self.read_source_rect(&source, &part, command, mem, host)?;
            let mut event = self.update_event(i as u32, &source, &part, pixels);
            if let DisplayEvent::Update { copy_of_read, .. } = &mut event {
                *copy_of_read = self.copy_of_read(&source, &part);
            }
            host.display(event);
        }
        Ok(())
    }

    fn create_blob(
        &mut self,
        command: CommandType,
        c: &vgt_format::wire::ResourceCreateBlob,
    ) -> Result<(), ValidationError> {
        let resource_id = c.resource_id;
        self.check_new_id(command, resource_id)?;
        if c.blob_mem != BlobMem::GUEST {
            return Err(ValidationError::BlobMem {
                resource_id,
                blob_mem: c.blob_mem.0,
            });
        }
        if c.size == 0 {
            return Err(ValidationError::BlobSize {
                resource_id,
                size: 0,
                backing_len: 0,
            });
        }
        if c.size > self.config.max_resource_bytes {
            return Err(ValidationError::ResourceTooLarge {
                resource_id,
                bytes: c.size,
                max: self.config.max_resource_bytes,
            });
        }
        let total = check_entries(&self.config, command, resource_id, &c.entries, true)?;
        if !c.entries.is_empty() && total < c.size {
            return Err(ValidationError::BlobSize {
                resource_id,
                size: c.size,
                backing_len: total,
            });
        }
        self.renderer
            .create_guest_blob(resource_id, c.blob_flags.0, c.size)
            .map_err(|source| ValidationError::Renderer { command, source })?;
        let backing = (!c.entries.is_empty()).then(|| Backing::new(c.entries.clone()));
        self.resources.insert(
            resource_id,
            Resource {
                kind: Kind::GuestBlob { size: c.size },
                backing,
                shadow_len: 0,
                whole_read: None,
            },
        );
        Ok(())
    }

    fn update_cursor(
        &mut self,
        command: CommandType,
        c: &vgt_format::wire::UpdateCursor,
        host: &mut dyn DeviceHost,
    ) -> Result<(), ValidationError> {
        let scanout_id = c.pos.scanout_id;
        self.check_scanout(command, scanout_id)?;
        if c.resource_id == 0 {
            host.display(DisplayEvent::CursorHide {
                scanout_id,
                x: c.pos.x,
                y: c.pos.y,
            });
            return Ok(());
        }
        let resource_id = c.resource_id;
        let res = self.resource(command, resource_id)?;
        let (format, width, height) = match res.kind {
            Kind::TwoD {
                format,
                width,
                height,
            } => (format, width, height),
            Kind::GuestBlob { .. } => (Format(0), 0, 0),
        };
        if width != CURSOR_SIZE || height != CURSOR_SIZE {
            return Err(ValidationError::CursorSize {
                resource_id,
                width,
                height,
            });
        }
        let mut image: Box<[u8; CURSOR_IMAGE_BYTES]> = Box::new([0; CURSOR_IMAGE_BYTES]);
        let full = Rect {
            x: 0,
            y: 0,
            width: CURSOR_SIZE,
            height: CURSOR_SIZE,
        };
        self.renderer
            .transfer_read_2d(resource_id, full, &mut image[..])
            .map_err(|source| ValidationError::Renderer { command, source })?;
        to_bgra_in_place(format, &mut image[..]);
        host.display(DisplayEvent::CursorUpdate {
            scanout_id,
            x: c.pos.x,
            y: c.pos.y,
            hot_x: c.hot_x,
            hot_y: c.hot_y,
            resource_id,
            image,
        });
        Ok(())
    }
}

fn display_info_response(hdr: &CtrlHeader, pmodes: [DisplayOne; MAX_SCANOUTS]) -> Response {
    Response::ok(ResponseBody::OkDisplayInfo(DisplayInfo { pmodes }), hdr)
}
