//! Requests: one struct per virtio-gpu command and [`Request`] (header + command + trailing).
//!
//! Field offsets in the `read` functions count from the start of the request (header
//! included), exactly as the reference tables list them, so each can be checked against them.

use serde::Serialize;

use super::DecodeError;
use super::bytes::{arr, counted, le32, le64, need, put32, put64};
use super::header::{CommandType, CtrlHeader};
use super::types::{BlobFlags, BlobMem, Box3d, CapsetId, CursorPos, Format, MemEntry, Rect};

/// A command struct of fixed size whose fields sit at fixed offsets of the request.
trait FixedBody: Sized {
    /// The C struct name, used in errors.
    const NAME: &'static str;
    /// Size on the wire including the 24-byte header.
    const SIZE: usize;
    /// Reads the fields; `b` is the whole request and holds at least `SIZE` bytes.
    fn read(b: &[u8]) -> Self;
    /// Appends the bytes after the header.
    fn write(&self, out: &mut Vec<u8>);
}

/// Decodes a fixed-size body; returns it and the bytes it spans (header included).
fn fixed<T: FixedBody>(b: &[u8]) -> Result<(T, usize), DecodeError> {
    need(b, T::NAME, 0, T::SIZE)?;
    Ok((T::read(b), T::SIZE))
}

/// Defines a struct made only of `u32`/typed-`u32` fields placed back to back after the header.
macro_rules! u32_body {
    (
        $(#[$meta:meta])*
        $name:ident, $cname:literal, $size:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ident @ $off:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// Size on the wire, header included.
            pub const SIZE: usize = $size;
        }

        impl FixedBody for $name {
            const NAME: &'static str = $cname;
            const SIZE: usize = $size;
            fn read(b: &[u8]) -> Self {
                $name { $( $field: u32_body!(@read $ty, b, $off), )* }
            }
            fn write(&self, out: &mut Vec<u8>) {
                $( put32(out, u32_body!(@raw $ty, self.$field)); )*
            }
        }
    };
    (@read u32, $b:ident, $off:literal) => { le32($b, $off) };
    (@read $ty:ident, $b:ident, $off:literal) => { $ty(le32($b, $off)) };
    (@raw u32, $v:expr) => { $v };
    (@raw $ty:ident, $v:expr) => { $v.0 };
}

u32_body! {
    /// RESOURCE_CREATE_2D (`virtio_gpu_resource_create_2d`, 40 bytes).
    ResourceCreate2d, "virtio_gpu_resource_create_2d", 40 {
        /// Guest-chosen resource id.
        resource_id: u32 @ 24,
        /// Pixel format.
        format: Format @ 28,
        /// Width in pixels.
        width: u32 @ 32,
        /// Height in pixels.
        height: u32 @ 36,
    }
}

u32_body! {
    /// RESOURCE_UNREF (`virtio_gpu_resource_unref`, 32 bytes).
    ResourceUnref, "virtio_gpu_resource_unref", 32 {
        /// Resource to drop.
        resource_id: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// RESOURCE_DETACH_BACKING (`virtio_gpu_resource_detach_backing`, 32 bytes).
    ResourceDetachBacking, "virtio_gpu_resource_detach_backing", 32 {
        /// Resource whose backing goes.
        resource_id: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// GET_CAPSET_INFO (`virtio_gpu_get_capset_info`, 32 bytes).
    GetCapsetInfo, "virtio_gpu_get_capset_info", 32 {
        /// Index below `num_capsets`.
        capset_index: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// GET_CAPSET (`virtio_gpu_get_capset`, 32 bytes).
    GetCapset, "virtio_gpu_get_capset", 32 {
        /// Capset wanted.
        capset_id: CapsetId @ 24,
        /// Version wanted.
        capset_version: u32 @ 28,
    }
}

u32_body! {
    /// GET_EDID (`virtio_gpu_cmd_get_edid`, 32 bytes).
    GetEdid, "virtio_gpu_cmd_get_edid", 32 {
        /// Scanout whose EDID is wanted.
        scanout: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// RESOURCE_ASSIGN_UUID (`virtio_gpu_resource_assign_uuid`, 32 bytes).
    ResourceAssignUuid, "virtio_gpu_resource_assign_uuid", 32 {
        /// Resource to name.
        resource_id: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// CTX_ATTACH_RESOURCE and CTX_DETACH_RESOURCE (`virtio_gpu_ctx_resource`, 32 bytes); the
    /// context is `ctx_id` of the header.
    CtxResource, "virtio_gpu_ctx_resource", 32 {
        /// Resource attached or detached.
        resource_id: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

u32_body! {
    /// RESOURCE_CREATE_3D (`virtio_gpu_resource_create_3d`, 72 bytes).
    ResourceCreate3d, "virtio_gpu_resource_create_3d", 72 {
        /// Guest-chosen resource id.
        resource_id: u32 @ 24,
        /// Gallium texture target (2 = PIPE_TEXTURE_2D).
        target: u32 @ 28,
        /// Pixel format (virtio or Gallium code).
        format: Format @ 32,
        /// Gallium bind flags.
        bind: u32 @ 36,
        /// Width.
        width: u32 @ 40,
        /// Height.
        height: u32 @ 44,
        /// Depth.
        depth: u32 @ 48,
        /// Array size.
        array_size: u32 @ 52,
        /// Last mip level.
        last_level: u32 @ 56,
        /// Sample count.
        nr_samples: u32 @ 60,
        /// Bit 0: `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP`.
        flags: u32 @ 64,
        /// Padding as sent.
        padding: u32 @ 68,
    }
}

u32_body! {
    /// RESOURCE_UNMAP_BLOB (`virtio_gpu_resource_unmap_blob`, 32 bytes).
    ResourceUnmapBlob, "virtio_gpu_resource_unmap_blob", 32 {
        /// Blob to unmap.
        resource_id: u32 @ 24,
        /// Padding as sent.
        padding: u32 @ 28,
    }
}

/// SET_SCANOUT (`virtio_gpu_set_scanout`, 48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct SetScanout {
    /// Rectangle of the resource shown.
    pub r: Rect,
    /// Scanout index.
    pub scanout_id: u32,
    /// Resource shown (0 disables the scanout).
    pub resource_id: u32,
}

impl FixedBody for SetScanout {
    const NAME: &'static str = "virtio_gpu_set_scanout";
    const SIZE: usize = 48;
    fn read(b: &[u8]) -> Self {
        SetScanout {
            r: Rect::read(b, 24),
            scanout_id: le32(b, 40),
            resource_id: le32(b, 44),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.r.write(out);
        put32(out, self.scanout_id);
        put32(out, self.resource_id);
    }
}

/// RESOURCE_FLUSH (`virtio_gpu_resource_flush`, 48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ResourceFlush {
    /// Rectangle flushed.
    pub r: Rect,
    /// Resource flushed (every scanout showing it).
    pub resource_id: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl FixedBody for ResourceFlush {
    const NAME: &'static str = "virtio_gpu_resource_flush";
    const SIZE: usize = 48;
    fn read(b: &[u8]) -> Self {
        ResourceFlush {
            r: Rect::read(b, 24),
            resource_id: le32(b, 40),
            padding: le32(b, 44),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.r.write(out);
        put32(out, self.resource_id);
        put32(out, self.padding);
    }
}

/// TRANSFER_TO_HOST_2D (`virtio_gpu_transfer_to_host_2d`, 56 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct TransferToHost2d {
    /// Rectangle of the resource written.
    pub r: Rect,
    /// Byte offset in the backing where the copy source starts.
    pub offset: u64,
    /// Resource written.
    pub resource_id: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl FixedBody for TransferToHost2d {
    const NAME: &'static str = "virtio_gpu_transfer_to_host_2d";
    const SIZE: usize = 56;
    fn read(b: &[u8]) -> Self {
        TransferToHost2d {
            r: Rect::read(b, 24),
            offset: le64(b, 40),
            resource_id: le32(b, 48),
            padding: le32(b, 52),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.r.write(out);
        put64(out, self.offset);
        put32(out, self.resource_id);
        put32(out, self.padding);
    }
}

/// SET_SCANOUT_BLOB (`virtio_gpu_set_scanout_blob`, 96 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct SetScanoutBlob {
    /// Rectangle of the blob shown.
    pub r: Rect,
    /// Scanout index.
    pub scanout_id: u32,
    /// Blob resource shown.
    pub resource_id: u32,
    /// Width of the blob image.
    pub width: u32,
    /// Height of the blob image.
    pub height: u32,
    /// Pixel format.
    pub format: Format,
    /// Padding as sent.
    pub padding: u32,
    /// Bytes per row of each plane.
    pub strides: [u32; 4],
    /// Byte offset of each plane.
    pub offsets: [u32; 4],
}

impl FixedBody for SetScanoutBlob {
    const NAME: &'static str = "virtio_gpu_set_scanout_blob";
    const SIZE: usize = 96;
    fn read(b: &[u8]) -> Self {
        let four = |off: usize| [0, 1, 2, 3].map(|i| le32(b, off + 4 * i));
        SetScanoutBlob {
            r: Rect::read(b, 24),
            scanout_id: le32(b, 40),
            resource_id: le32(b, 44),
            width: le32(b, 48),
            height: le32(b, 52),
            format: Format(le32(b, 56)),
            padding: le32(b, 60),
            strides: four(64),
            offsets: four(80),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.r.write(out);
        for v in [
            self.scanout_id,
            self.resource_id,
            self.width,
            self.height,
            self.format.0,
            self.padding,
        ] {
            put32(out, v);
        }
        for v in self.strides.iter().chain(self.offsets.iter()) {
            put32(out, *v);
        }
    }
}

/// CTX_CREATE (`virtio_gpu_ctx_create`, 96 bytes); the new context's id is `ctx_id` of the
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CtxCreate {
    /// Length of the debug name.
    pub nlen: u32,
    /// Low 8 bits: capset id of the context type (with `VIRTIO_GPU_F_CONTEXT_INIT`).
    pub context_init: u32,
    /// Debug name bytes (the first `nlen` are meaningful).
    #[serde(serialize_with = "super::serialize_byte_array")]
    pub debug_name: [u8; 64],
}

impl Default for CtxCreate {
    fn default() -> Self {
        CtxCreate {
            nlen: 0,
            context_init: 0,
            debug_name: [0; 64],
        }
    }
}

impl CtxCreate {
    /// The capset id in `context_init` (0: the device picks).
    pub fn capset_id(&self) -> CapsetId {
        CapsetId(self.context_init & CapsetId::CONTEXT_INIT_MASK)
    }

    /// The debug name: the first `nlen` bytes (at most 64), lossily as UTF-8.
    pub fn debug_name_str(&self) -> String {
        let n = (self.nlen as usize).min(self.debug_name.len());
        String::from_utf8_lossy(self.debug_name.get(..n).unwrap_or(&[])).into_owned()
    }
}

impl FixedBody for CtxCreate {
    const NAME: &'static str = "virtio_gpu_ctx_create";
    const SIZE: usize = 96;
    fn read(b: &[u8]) -> Self {
        CtxCreate {
            nlen: le32(b, 24),
            context_init: le32(b, 28),
            debug_name: arr(b, 32),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.nlen);
        put32(out, self.context_init);
        out.extend_from_slice(&self.debug_name);
    }
}

/// TRANSFER_TO_HOST_3D and TRANSFER_FROM_HOST_3D (`virtio_gpu_transfer_host_3d`, 72 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct TransferHost3d {
    /// Region of the resource (`box` in the spec).
    pub box_: Box3d,
    /// Byte offset in the backing.
    pub offset: u64,
    /// Resource.
    pub resource_id: u32,
    /// Mip level.
    pub level: u32,
    /// Bytes per row in the backing.
    pub stride: u32,
    /// Bytes per layer in the backing.
    pub layer_stride: u32,
}

impl FixedBody for TransferHost3d {
    const NAME: &'static str = "virtio_gpu_transfer_host_3d";
    const SIZE: usize = 72;
    fn read(b: &[u8]) -> Self {
        TransferHost3d {
            box_: Box3d::read(b, 24),
            offset: le64(b, 48),
            resource_id: le32(b, 56),
            level: le32(b, 60),
            stride: le32(b, 64),
            layer_stride: le32(b, 68),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.box_.write(out);
        put64(out, self.offset);
        for v in [self.resource_id, self.level, self.stride, self.layer_stride] {
            put32(out, v);
        }
    }
}

/// RESOURCE_MAP_BLOB (`virtio_gpu_resource_map_blob`, 40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ResourceMapBlob {
    /// Blob to map.
    pub resource_id: u32,
    /// Padding as sent.
    pub padding: u32,
    /// Offset in the host-visible shared memory region.
    pub offset: u64,
}

impl FixedBody for ResourceMapBlob {
    const NAME: &'static str = "virtio_gpu_resource_map_blob";
    const SIZE: usize = 40;
    fn read(b: &[u8]) -> Self {
        ResourceMapBlob {
            resource_id: le32(b, 24),
            padding: le32(b, 28),
            offset: le64(b, 32),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.resource_id);
        put32(out, self.padding);
        put64(out, self.offset);
    }
}

/// UPDATE_CURSOR and MOVE_CURSOR (`virtio_gpu_update_cursor`, 56 bytes); MOVE uses only `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct UpdateCursor {
    /// Where the cursor is.
    pub pos: CursorPos,
    /// 64×64 cursor image resource (0 hides the cursor).
    pub resource_id: u32,
    /// Hotspot x.
    pub hot_x: u32,
    /// Hotspot y.
    pub hot_y: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl FixedBody for UpdateCursor {
    const NAME: &'static str = "virtio_gpu_update_cursor";
    const SIZE: usize = 56;
    fn read(b: &[u8]) -> Self {
        UpdateCursor {
            pos: CursorPos::read(b, 24),
            resource_id: le32(b, 40),
            hot_x: le32(b, 44),
            hot_y: le32(b, 48),
            padding: le32(b, 52),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.pos.write(out);
        for v in [self.resource_id, self.hot_x, self.hot_y, self.padding] {
            put32(out, v);
        }
    }
}

/// RESOURCE_ATTACH_BACKING (`virtio_gpu_resource_attach_backing`, 32 bytes + entries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ResourceAttachBacking {
    /// Resource that gets the backing.
    pub resource_id: u32,
    /// Entry count as sent.
    pub nr_entries: u32,
    /// The scatter list (`nr_entries` entries after a successful decode).
    pub entries: Vec<MemEntry>,
}

impl ResourceAttachBacking {
    /// Size of the fixed part on the wire, header included.
    pub const SIZE: usize = 32;

    fn decode(b: &[u8]) -> Result<(Self, usize), DecodeError> {
        need(b, "virtio_gpu_resource_attach_backing", 0, Self::SIZE)?;
        let nr_entries = le32(b, 28);
        let raw = counted(
            b,
            "nr_entries",
            28,
            Self::SIZE,
            u64::from(nr_entries),
            MemEntry::SIZE,
        )?;
        let this = ResourceAttachBacking {
            resource_id: le32(b, 24),
            nr_entries,
            entries: MemEntry::read_all(raw),
        };
        Ok((this, Self::SIZE + raw.len()))
    }

    fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.resource_id);
        put32(out, self.nr_entries);
        self.entries.iter().for_each(|e| e.write(out));
    }
}

/// RESOURCE_CREATE_BLOB (`virtio_gpu_resource_create_blob`, 56 bytes + entries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ResourceCreateBlob {
    /// Guest-chosen resource id.
    pub resource_id: u32,
    /// Where the memory lives.
    pub blob_mem: BlobMem,
    /// Use flags.
    pub blob_flags: BlobFlags,
    /// Entry count as sent.
    pub nr_entries: u32,
    /// Context object the host blob is made from (HOST3D kinds).
    pub blob_id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Guest backing (`nr_entries` entries after a successful decode).
    pub entries: Vec<MemEntry>,
}

impl ResourceCreateBlob {
    /// Size of the fixed part on the wire, header included.
    pub const SIZE: usize = 56;

    fn decode(b: &[u8]) -> Result<(Self, usize), DecodeError> {
        need(b, "virtio_gpu_resource_create_blob", 0, Self::SIZE)?;
        let nr_entries = le32(b, 36);
        let raw = counted(
            b,
            "nr_entries",
            36,
            Self::SIZE,
            u64::from(nr_entries),
            MemEntry::SIZE,
        )?;
        let this = ResourceCreateBlob {
            resource_id: le32(b, 24),
            blob_mem: BlobMem(le32(b, 28)),
            blob_flags: BlobFlags(le32(b, 32)),
            nr_entries,
            blob_id: le64(b, 40),
            size: le64(b, 48),
            entries: MemEntry::read_all(raw),
        };
        Ok((this, Self::SIZE + raw.len()))
    }

    fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.resource_id);
        put32(out, self.blob_mem.0);
        put32(out, self.blob_flags.0);
        put32(out, self.nr_entries);
        put64(out, self.blob_id);
        put64(out, self.size);
        self.entries.iter().for_each(|e| e.write(out));
    }
}

/// SUBMIT_3D (`virtio_gpu_cmd_submit`, 32 bytes + `size` bytes of command stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct CmdSubmit {
    /// Length of the stream as sent.
    pub size: u32,
    /// Padding as sent (crosvm reads it as a count of u64 in-fences at the stream's start).
    pub padding: u32,
    /// The command stream (`size` bytes after a successful decode).
    pub data: Vec<u8>,
}

impl CmdSubmit {
    /// Size of the fixed part on the wire, header included.
    pub const SIZE: usize = 32;

    fn decode(b: &[u8]) -> Result<(Self, usize), DecodeError> {
        need(b, "virtio_gpu_cmd_submit", 0, Self::SIZE)?;
        let size = le32(b, 24);
        let data = counted(b, "size", 24, Self::SIZE, u64::from(size), 1)?;
        let this = CmdSubmit {
            size,
            padding: le32(b, 28),
            data: data.to_vec(),
        };
        Ok((this, Self::SIZE + data.len()))
    }

    fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.size);
        put32(out, self.padding);
        out.extend_from_slice(&self.data);
    }
}

/// A decoded command body (what follows the control header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Command {
    /// GET_DISPLAY_INFO (header only).
    GetDisplayInfo,
    /// RESOURCE_CREATE_2D.
    ResourceCreate2d(ResourceCreate2d),
    /// RESOURCE_UNREF.
    ResourceUnref(ResourceUnref),
    /// SET_SCANOUT.
    SetScanout(SetScanout),
    /// RESOURCE_FLUSH.
    ResourceFlush(ResourceFlush),
    /// TRANSFER_TO_HOST_2D.
    TransferToHost2d(TransferToHost2d),
    /// RESOURCE_ATTACH_BACKING.
    ResourceAttachBacking(ResourceAttachBacking),
    /// RESOURCE_DETACH_BACKING.
    ResourceDetachBacking(ResourceDetachBacking),
    /// GET_CAPSET_INFO.
    GetCapsetInfo(GetCapsetInfo),
    /// GET_CAPSET.
    GetCapset(GetCapset),
    /// GET_EDID.
    GetEdid(GetEdid),
    /// RESOURCE_ASSIGN_UUID.
    ResourceAssignUuid(ResourceAssignUuid),
    /// RESOURCE_CREATE_BLOB.
    ResourceCreateBlob(ResourceCreateBlob),
    /// SET_SCANOUT_BLOB.
    SetScanoutBlob(SetScanoutBlob),
    /// CTX_CREATE.
    CtxCreate(CtxCreate),
    /// CTX_DESTROY (header only).
    CtxDestroy,
    /// CTX_ATTACH_RESOURCE.
    CtxAttachResource(CtxResource),
    /// CTX_DETACH_RESOURCE.
    CtxDetachResource(CtxResource),
    /// RESOURCE_CREATE_3D.
    ResourceCreate3d(ResourceCreate3d),
    /// TRANSFER_TO_HOST_3D.
    TransferToHost3d(TransferHost3d),
    /// TRANSFER_FROM_HOST_3D.
    TransferFromHost3d(TransferHost3d),
    /// SUBMIT_3D.
    Submit3d(CmdSubmit),
    /// RESOURCE_MAP_BLOB.
    ResourceMapBlob(ResourceMapBlob),
    /// RESOURCE_UNMAP_BLOB.
    ResourceUnmapBlob(ResourceUnmapBlob),
    /// UPDATE_CURSOR.
    UpdateCursor(UpdateCursor),
    /// MOVE_CURSOR.
    MoveCursor(UpdateCursor),
    /// A code this version does not know: every byte after the header.
    Unknown(Vec<u8>),
}

impl Command {
    /// The code this command is sent with (`None` for [`Command::Unknown`]).
    pub fn command_type(&self) -> Option<CommandType> {
        Some(match self {
            Command::GetDisplayInfo => CommandType::GET_DISPLAY_INFO,
            Command::ResourceCreate2d(_) => CommandType::RESOURCE_CREATE_2D,
            Command::ResourceUnref(_) => CommandType::RESOURCE_UNREF,
            Command::SetScanout(_) => CommandType::SET_SCANOUT,
            Command::ResourceFlush(_) => CommandType::RESOURCE_FLUSH,
            Command::TransferToHost2d(_) => CommandType::TRANSFER_TO_HOST_2D,
            Command::ResourceAttachBacking(_) => CommandType::RESOURCE_ATTACH_BACKING,
            Command::ResourceDetachBacking(_) => CommandType::RESOURCE_DETACH_BACKING,
            Command::GetCapsetInfo(_) => CommandType::GET_CAPSET_INFO,
            Command::GetCapset(_) => CommandType::GET_CAPSET,
            Command::GetEdid(_) => CommandType::GET_EDID,
            Command::ResourceAssignUuid(_) => CommandType::RESOURCE_ASSIGN_UUID,
            Command::ResourceCreateBlob(_) => CommandType::RESOURCE_CREATE_BLOB,
            Command::SetScanoutBlob(_) => CommandType::SET_SCANOUT_BLOB,
            Command::CtxCreate(_) => CommandType::CTX_CREATE,
            Command::CtxDestroy => CommandType::CTX_DESTROY,
            Command::CtxAttachResource(_) => CommandType::CTX_ATTACH_RESOURCE,
            Command::CtxDetachResource(_) => CommandType::CTX_DETACH_RESOURCE,
            Command::ResourceCreate3d(_) => CommandType::RESOURCE_CREATE_3D,
            Command::TransferToHost3d(_) => CommandType::TRANSFER_TO_HOST_3D,
            Command::TransferFromHost3d(_) => CommandType::TRANSFER_FROM_HOST_3D,
            Command::Submit3d(_) => CommandType::SUBMIT_3D,
            Command::ResourceMapBlob(_) => CommandType::RESOURCE_MAP_BLOB,
            Command::ResourceUnmapBlob(_) => CommandType::RESOURCE_UNMAP_BLOB,
            Command::UpdateCursor(_) => CommandType::UPDATE_CURSOR,
            Command::MoveCursor(_) => CommandType::MOVE_CURSOR,
            Command::Unknown(_) => return None,
        })
    }

    /// The resource the command names, if it names one.
    pub fn resource_id(&self) -> Option<u32> {
        Some(match self {
            Command::ResourceCreate2d(c) => c.resource_id,
            Command::ResourceUnref(c) => c.resource_id,
            Command::SetScanout(c) => c.resource_id,
            Command::ResourceFlush(c) => c.resource_id,
            Command::TransferToHost2d(c) => c.resource_id,
            Command::ResourceAttachBacking(c) => c.resource_id,
            Command::ResourceDetachBacking(c) => c.resource_id,
            Command::ResourceAssignUuid(c) => c.resource_id,
            Command::ResourceCreateBlob(c) => c.resource_id,
            Command::SetScanoutBlob(c) => c.resource_id,
            Command::CtxAttachResource(c) | Command::CtxDetachResource(c) => c.resource_id,
            Command::ResourceCreate3d(c) => c.resource_id,
            Command::TransferToHost3d(c) | Command::TransferFromHost3d(c) => c.resource_id,
            Command::ResourceMapBlob(c) => c.resource_id,
            Command::ResourceUnmapBlob(c) => c.resource_id,
            Command::UpdateCursor(c) | Command::MoveCursor(c) => c.resource_id,
            _ => return None,
        })
    }

    /// Decodes the body of a request of code `ty`; `b` is the whole request. Returns the
    /// command and the number of bytes it spans from the start of the request.
    fn decode(ty: CommandType, b: &[u8]) -> Result<(Command, usize), DecodeError> {
        fn wrap<T>(r: Result<(T, usize), DecodeError>, f: fn(T) -> Command) -> DecodeResult {
            r.map(|(c, n)| (f(c), n))
        }
        type DecodeResult = Result<(Command, usize), DecodeError>;
        const HDR: usize = CtrlHeader::SIZE;
        match ty {
            CommandType::GET_DISPLAY_INFO => Ok((Command::GetDisplayInfo, HDR)),
            CommandType::RESOURCE_CREATE_2D => wrap(fixed(b), Command::ResourceCreate2d),
            CommandType::RESOURCE_UNREF => wrap(fixed(b), Command::ResourceUnref),
            CommandType::SET_SCANOUT => wrap(fixed(b), Command::SetScanout),
            CommandType::RESOURCE_FLUSH => wrap(fixed(b), Command::ResourceFlush),
            CommandType::TRANSFER_TO_HOST_2D => wrap(fixed(b), Command::TransferToHost2d),
            CommandType::RESOURCE_ATTACH_BACKING => wrap(
                ResourceAttachBacking::decode(b),
                Command::ResourceAttachBacking,
            ),
            CommandType::RESOURCE_DETACH_BACKING => wrap(fixed(b), Command::ResourceDetachBacking),
            CommandType::GET_CAPSET_INFO => wrap(fixed(b), Command::GetCapsetInfo),
            CommandType::GET_CAPSET => wrap(fixed(b), Command::GetCapset),
            CommandType::GET_EDID => wrap(fixed(b), Command::GetEdid),
            CommandType::RESOURCE_ASSIGN_UUID => wrap(fixed(b), Command::ResourceAssignUuid),
            CommandType::RESOURCE_CREATE_BLOB => {
                wrap(ResourceCreateBlob::decode(b), Command::ResourceCreateBlob)
            }
            CommandType::SET_SCANOUT_BLOB => wrap(fixed(b), Command::SetScanoutBlob),
            CommandType::CTX_CREATE => wrap(fixed(b), Command::CtxCreate),
            CommandType::CTX_DESTROY => Ok((Command::CtxDestroy, HDR)),
            CommandType::CTX_ATTACH_RESOURCE => wrap(fixed(b), Command::CtxAttachResource),
            CommandType::CTX_DETACH_RESOURCE => wrap(fixed(b), Command::CtxDetachResource),
            CommandType::RESOURCE_CREATE_3D => wrap(fixed(b), Command::ResourceCreate3d),
            CommandType::TRANSFER_TO_HOST_3D => wrap(fixed(b), Command::TransferToHost3d),
            CommandType::TRANSFER_FROM_HOST_3D => wrap(fixed(b), Command::TransferFromHost3d),
            CommandType::SUBMIT_3D => wrap(CmdSubmit::decode(b), Command::Submit3d),
            CommandType::RESOURCE_MAP_BLOB => wrap(fixed(b), Command::ResourceMapBlob),
            CommandType::RESOURCE_UNMAP_BLOB => wrap(fixed(b), Command::ResourceUnmapBlob),
            CommandType::UPDATE_CURSOR => wrap(fixed(b), Command::UpdateCursor),
            CommandType::MOVE_CURSOR => wrap(fixed(b), Command::MoveCursor),
            _ => Ok((
                Command::Unknown(b.get(HDR..).unwrap_or(&[]).to_vec()),
                b.len(),
            )),
        }
    }

    /// Appends the body bytes (everything after the header).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Command::GetDisplayInfo | Command::CtxDestroy => {}
            Command::ResourceCreate2d(c) => c.write(out),
            Command::ResourceUnref(c) => c.write(out),
            Command::SetScanout(c) => c.write(out),
            Command::ResourceFlush(c) => c.write(out),
            Command::TransferToHost2d(c) => c.write(out),
            Command::ResourceAttachBacking(c) => c.write(out),
            Command::ResourceDetachBacking(c) => c.write(out),
            Command::GetCapsetInfo(c) => c.write(out),
            Command::GetCapset(c) => c.write(out),
            Command::GetEdid(c) => c.write(out),
            Command::ResourceAssignUuid(c) => c.write(out),
            Command::ResourceCreateBlob(c) => c.write(out),
            Command::SetScanoutBlob(c) => c.write(out),
            Command::CtxCreate(c) => c.write(out),
            Command::CtxAttachResource(c) | Command::CtxDetachResource(c) => c.write(out),
            Command::ResourceCreate3d(c) => c.write(out),
            Command::TransferToHost3d(c) | Command::TransferFromHost3d(c) => c.write(out),
            Command::Submit3d(c) => c.write(out),
            Command::ResourceMapBlob(c) => c.write(out),
            Command::ResourceUnmapBlob(c) => c.write(out),
            Command::UpdateCursor(c) | Command::MoveCursor(c) => c.write(out),
            Command::Unknown(body) => out.extend_from_slice(body),
        }
    }
}

/// A whole virtio-gpu request as the device reads it from a virtqueue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Request {
    /// The control header.
    pub header: CtrlHeader,
    /// The command, chosen by `header.type_`.
    pub command: Command,
    /// Bytes after the command struct (and its entries or stream), kept so that re-encoding
    /// gives the input back.
    pub trailing: Vec<u8>,
}

impl Request {
    /// Decodes a request. Unknown codes give [`Command::Unknown`]; a known command whose
    /// struct does not fit gives [`DecodeError::TooShort`] (offset 0, needed = the struct's
    /// size including the header); an entry count or stream size beyond the remaining bytes
    /// gives [`DecodeError::CountTooLarge`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let header = CtrlHeader::decode(bytes)?;
        let (command, used) = Command::decode(CommandType(header.type_), bytes)?;
        Ok(Request {
            header,
            command,
            trailing: bytes.get(used..).unwrap_or(&[]).to_vec(),
        })
    }

    /// The bytes of this request: header, command, trailing.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CtrlHeader::SIZE + 64 + self.trailing.len());
        self.header.encode_into(&mut out);
        self.command.encode_into(&mut out);
        out.extend_from_slice(&self.trailing);
        out
    }

    /// The command code from the header.
    pub fn command_type(&self) -> CommandType {
        CommandType(self.header.type_)
    }

    /// A request with the code of `command` and an otherwise zero header.
    pub fn new(command: Command) -> Request {
        let type_ = command.command_type().map_or(0, |t| t.0);
        Request {
            header: CtrlHeader::new(type_),
            command,
            trailing: Vec::new(),
        }
    }
}

impl std::fmt::Display for Request {
    /// One line, apitrace style: `TRANSFER_TO_HOST_2D res=2 rect=0,0 1024x768 offset=0 fence=5`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.command_type())?;
        match &self.command {
            Command::GetDisplayInfo | Command::CtxDestroy => {}
            Command::ResourceCreate2d(c) => write!(
                f,
                " res={} format={} {}x{}",
                c.resource_id, c.format, c.width, c.height
            )?,
            Command::ResourceUnref(c) => write!(f, " res={}", c.resource_id)?,
            Command::SetScanout(c) => write!(
                f,
                " scanout={} res={} rect={}",
                c.scanout_id, c.resource_id, c.r
            )?,
            Command::ResourceFlush(c) => write!(f, " res={} rect={}", c.resource_id, c.r)?,
            Command::TransferToHost2d(c) => {
                write!(f, " res={} rect={} offset={}", c.resource_id, c.r, c.offset)?
            }
            Command::ResourceAttachBacking(c) => {
                let total: u64 = c.entries.iter().map(|e| u64::from(e.length)).sum();
                write!(
                    f,
                    " res={} entries={} bytes={}",
                    c.resource_id, c.nr_entries, total
                )?;
            }
            Command::ResourceDetachBacking(c) => write!(f, " res={}", c.resource_id)?,
            Command::GetCapsetInfo(c) => write!(f, " index={}", c.capset_index)?,
            Command::GetCapset(c) => write!(f, " id={} version={}", c.capset_id, c.capset_version)?,
            Command::GetEdid(c) => write!(f, " scanout={}", c.scanout)?,
            Command::ResourceAssignUuid(c) => write!(f, " res={}", c.resource_id)?,
            Command::ResourceCreateBlob(c) => write!(
                f,
                " res={} mem={} flags={} blob_id={} size={} entries={}",
                c.resource_id, c.blob_mem, c.blob_flags, c.blob_id, c.size, c.nr_entries
            )?,
            Command::SetScanoutBlob(c) => write!(
                f,
                " scanout={} res={} rect={} {}x{} format={} stride={} offset={}",
                c.scanout_id,
                c.resource_id,
                c.r,
                c.width,
                c.height,
                c.format,
                c.strides[0],
                c.offsets[0]
            )?,
            Command::CtxCreate(c) => {
                write!(f, " capset={} name={:?}", c.capset_id(), c.debug_name_str())?
            }
            Command::CtxAttachResource(c) | Command::CtxDetachResource(c) => {
                write!(f, " res={}", c.resource_id)?
            }
            Command::ResourceCreate3d(c) => write!(
                f,
                " res={} target={} format={} bind={:#x} {}x{}x{} array={} levels={} samples={} flags={:#x}",
                c.resource_id,
                c.target,
                c.format,
                c.bind,
                c.width,
                c.height,
                c.depth,
                c.array_size,
                c.last_level,
                c.nr_samples,
                c.flags
            )?,
            Command::TransferToHost3d(c) | Command::TransferFromHost3d(c) => write!(
                f,
                " res={} box={} offset={} level={} stride={} layer_stride={}",
                c.resource_id, c.box_, c.offset, c.level, c.stride, c.layer_stride
            )?,
            Command::Submit3d(c) => write!(f, " size={}", c.size)?,
            Command::ResourceMapBlob(c) => {
                write!(f, " res={} offset={:#x}", c.resource_id, c.offset)?
            }
            Command::ResourceUnmapBlob(c) => write!(f, " res={}", c.resource_id)?,
            Command::UpdateCursor(c) => write!(
                f,
                " scanout={} pos={},{} res={} hot={},{}",
                c.pos.scanout_id, c.pos.x, c.pos.y, c.resource_id, c.hot_x, c.hot_y
            )?,
            Command::MoveCursor(c) => write!(
                f,
                " scanout={} pos={},{}",
                c.pos.scanout_id, c.pos.x, c.pos.y
            )?,
            Command::Unknown(body) => write!(f, " len={}", body.len())?,
        }
        self.header.fmt_suffix(f)?;
        if !self.trailing.is_empty() {
            write!(f, " trailing={}", self.trailing.len())?;
        }
        Ok(())
    }
}
