//! vgt-device: the virtio-gpu device model over a renderer (rutabaga_gfx 2D by default).
//!
//! The same command execution serves the live capture and the offline replay. The device knows
//! nothing of vhost-user or files: it is handed a chain's bytes ([`Submission`]), guest memory
//! ([`GuestMemory`]) and a host ([`DeviceHost`]) that receives display output, fence signals,
//! rule violations and **every guest byte the device reads**, per contiguous range.
//!
//! Guest memory access is the device's alone: a transfer reads exactly the backing bytes the
//! renderer will copy (row by row, mapped through the scatter list, contiguous runs coalesced)
//! into a staging buffer (reused by every transfer), reports them, and only then lets the
//! renderer copy from it. Replay can therefore rebuild guest memory from recorded reads alone.
//! The staging buffer is lent to the renderer for the duration of one call (rutabaga sees it as
//! an iovec attached and detached inside that call), so no raw pointer outlives a borrow.
//! Picture buffers of display updates can be handed back ([`Device::recycle_pixels`]) and are
//! then reused for later updates (every byte overwritten).
//! Guest blobs are displayed straight from guest memory (reads reported the same way);
//! rutabaga's 2D blob read path only handles x = y = 0 and ignores the plane offset.
//!
//! The only other inputs are the host's answers to [`DeviceHost::display_info`] and
//! [`DeviceHost::edid`] and calls to [`Device::set_scanout_size`]: a replay must feed back the
//! recorded ones to stay identical.
//!
//! Every guest-controlled value is validated in 64-bit arithmetic before it reaches the
//! renderer. A violation is answered with the error code listed on
//! [`ValidationError::response_type`] (QEMU's choice where QEMU has one), reported through
//! [`DeviceHost::validation_error`], and leaves no half-built state behind.
//!
//! Choices where the protocol leaves room (documented here once):
//! - a mem entry that wraps around the address space is refused at ATTACH/CREATE_BLOB; one
//!   outside guest memory is accepted there and fails the command that reads through it, with
//!   ERR_UNSPEC (QEMU's answer to a mapping failure). Asking guest memory at attach time would
//!   make the answer depend on something replay cannot see (only recorded reads);
//! - too many or zero entries is ERR_INVALID_PARAMETER;
//! - RESOURCE_UNREF of a resource still on a scanout disables that scanout first (as QEMU);
//! - ATTACH_BACKING twice, and TRANSFER/DETACH without backing, are ERR_UNSPEC (as QEMU);
//! - TRANSFER_TO_HOST_2D on a guest blob is OK and does nothing (as QEMU);
//! - GET_CAPSET_INFO with an index >= num_capsets and GET_CAPSET of an unknown capset are
//!   ERR_INVALID_PARAMETER; GET_EDID when EDID is not offered is ERR_UNSPEC;
//! - 3D commands without a 3D renderer and MAP/UNMAP_BLOB are ERR_UNSPEC; CREATE_BLOB with a
//!   host blob_mem is ERR_INVALID_PARAMETER (as QEMU);
//! - a failed command with FLAG_FENCE is answered at once (still echoing the fence fields),
//!   as QEMU does; successful fenced commands wait for their fence;
//! - the cursor queue never gets response bytes; a cursor command on the control queue (or
//!   the reverse) is ERR_UNSPEC.

mod backing;
mod device;
pub mod display;
mod error;
mod fence;
mod host;
mod pixels;
pub mod renderer;

pub use device::{
    CONTROL_QUEUE, CURSOR_QUEUE, Completion, Device, DeviceConfig, EVENT_DISPLAY, F_CONTEXT_INIT,
    F_EDID, F_RESOURCE_BLOB, F_RESOURCE_UUID, F_VIRGL, MAX_SCANOUTS, Submission, resource_uuid,
};
pub use error::{DeviceError, ValidationError};
pub use fence::Ring;
pub use host::{
    CURSOR_IMAGE_BYTES, DeviceHost, DisplayEvent, DisplayInfoFromHost, FenceInfo, GuestMemory,
    HostDisplay, MemoryError,
};
pub use renderer::{CapsetDescriptor, Renderer, RendererError, RutabagaRenderer};
