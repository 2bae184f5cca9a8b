//! What surrounds the device: guest memory it reads and the host it reports to.

use vgt_format::wire::Format;

/// Size in bytes of a cursor image (64 × 64 pixels, 4 bytes each).
pub const CURSOR_IMAGE_BYTES: usize = 64 * 64 * 4;

/// Why a guest-physical read failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// Part of `addr .. addr + len` is not guest memory.
    #[error("guest range {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange {
        /// First guest-physical address of the read.
        addr: u64,
        /// Length of the read in bytes.
        len: u64,
    },
    /// The memory could not be read for another reason (e.g. a mapping went away).
    #[error("guest read at {addr:#x}+{len:#x} failed: {reason}")]
    Failed {
        /// First guest-physical address of the read.
        addr: u64,
        /// Length of the read in bytes.
        len: u64,
        /// What went wrong.
        reason: String,
    },
}

/// Guest-physical memory, as the device sees it (the capture's mapped regions, or replay's
/// memory rebuilt from recorded reads).
pub trait GuestMemory {
    /// Fills `buf` with the guest bytes at `addr .. addr + buf.len()`; `Err` when any of it is
    /// outside guest memory (then `buf` may be partly written).
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Whether `addr .. addr + len` lies inside guest memory. The device never calls this (its
    /// decisions depend only on request bytes and reads, so that replay, which knows only the
    /// recorded reads, decides the same); it is here for hosts that share the trait object.
    fn contains(&self, addr: u64, len: u64) -> bool {
        let _ = (addr, len);
        true
    }
}

/// A scanout as the host (QEMU) reports it in its GET_DISPLAY_INFO answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostDisplay {
    /// Left edge of the scanout on the host's desktop.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether the output is enabled.
    pub enabled: bool,
    /// `virtio_gpu_display_one.flags` as the host sent them.
    pub flags: u32,
}

/// The host's answer to GET_DISPLAY_INFO: one entry per scanout (at most 16; missing entries
/// read as disabled 0×0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisplayInfoFromHost {
    /// Scanouts in scanout-id order.
    pub displays: Vec<HostDisplay>,
}

/// A fence as the guest asked for it (`virtio_gpu_ctrl_hdr` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FenceInfo {
    /// Header flags (`FLAG_FENCE`, maybe `FLAG_INFO_RING_IDX`).
    pub flags: u32,
    /// Fence sequence number.
    pub fence_id: u64,
    /// Context of the fence (0 for the global timeline).
    pub ctx_id: u32,
    /// Ring inside the context (meaningful with `FLAG_INFO_RING_IDX`).
    pub ring_idx: u8,
}

/// Display output of the device, in the vocabulary of the vhost-user-gpu socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayEvent {
    /// A scanout now shows a `width`×`height` image (0×0: disabled). An `Update` with the
    /// content follows when enabled.
    Scanout {
        /// Scanout index.
        scanout_id: u32,
        /// Width of the scanout surface.
        width: u32,
        /// Height of the scanout surface.
        height: u32,
    },
    /// New pixels for a rectangle of a scanout, coordinates relative to the scanout.
    Update {
        /// Scanout index.
        scanout_id: u32,
        /// Resource the pixels came from.
        resource_id: u32,
        /// Left edge inside the scanout.
        x: u32,
        /// Top edge inside the scanout.
        y: u32,
        /// Width of the rectangle.
        width: u32,
        /// Height of the rectangle.
        height: u32,
        /// Format of the resource (the pixels below are already converted to x8r8g8b8).
        format: Format,
        /// Bytes per row of `pixels` (always `width * 4`).
        stride: u32,
        /// Tightly packed rows of the rectangle, pixman x8r8g8b8 (memory bytes B, G, R, X/A),
        /// as QEMU's UPDATE message wants them.
        pixels: Vec<u8>,
        /// When `pixels` are byte for byte the data of one of the device's memory reads (a
        /// whole 2D resource filled by a single transfer read, in a format that needs no
        /// conversion): that read's number ([`DeviceHost::numbered_memory_read`]). A host that
        /// stored the read's bytes can reuse them instead of looking at `pixels` again.
        copy_of_read: Option<u64>,
    },
    /// A new cursor image and position.
    CursorUpdate {
        /// Scanout index.
        scanout_id: u32,
        /// Cursor position.
        x: u32,
        /// Cursor position.
        y: u32,
        /// Hot spot inside the image.
        hot_x: u32,
        /// Hot spot inside the image.
        hot_y: u32,
        /// Resource the image came from.
        resource_id: u32,
        /// 64×64 a8r8g8b8 pixels (memory bytes B, G, R, A).
        image: Box<[u8; CURSOR_IMAGE_BYTES]>,
    },
    /// The cursor moved.
    CursorMove {
        /// Scanout index.
        scanout_id: u32,
        /// New position.
        x: u32,
        /// New position.
        y: u32,
    },
    /// The cursor is hidden.
    CursorHide {
        /// Scanout index.
        scanout_id: u32,
        /// Last position.
        x: u32,
        /// Last position.
        y: u32,
    },
}

/// What surrounds the device: the capture (records and talks to QEMU) or the replay.
///
/// Every method has a default that does nothing, so a host implements only what it needs.
pub trait DeviceHost {
    /// The device read `data` from guest-physical `addr` on behalf of `resource_id` (0 when no
    /// resource is involved). Called once per contiguous range, for every guest byte the device
    /// reads; replay rebuilds guest memory from these alone.
    fn memory_read(&mut self, resource_id: u32, addr: u64, data: &[u8]) {
        let _ = (resource_id, addr, data);
    }

    /// [`DeviceHost::memory_read`] with the read's number: the device numbers its reads from 0
    /// in the order it makes them, over its lifetime, and an update's `copy_of_read` names one.
    /// This is what the device calls; the default forgets the number.
    fn numbered_memory_read(&mut self, read: u64, resource_id: u32, addr: u64, data: &[u8]) {
        let _ = read;
        self.memory_read(resource_id, addr, data);
    }

    /// Display output (scanouts, updates, cursor).
    fn display(&mut self, event: DisplayEvent) {
        let _ = event;
    }

    /// The host's current display layout (QEMU's GET_DISPLAY_INFO on the gpu socket); `None`
    /// makes the device answer from its configuration.
    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        None
    }

    /// The host's EDID for a scanout (QEMU's GET_EDID); `None` makes the device generate one
    /// for the configured mode.
    fn edid(&mut self, scanout: u32) -> Option<Vec<u8>> {
        let _ = scanout;
        None
    }

    /// A fence the guest asked for has signalled (its command is now complete).
    fn fence_signalled(&mut self, fence: FenceInfo) {
        let _ = fence;
    }

    /// A request broke a rule; the device answered it with an error response (or, on the cursor
    /// queue, dropped it) and keeps serving. `token` is the submission's token.
    fn validation_error(&mut self, token: u64, err: &crate::ValidationError) {
        let _ = (token, err);
    }
}
