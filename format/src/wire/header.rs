//! The 24-byte control header (`virtio_gpu_ctrl_hdr`) and the command and response codes.

use serde::Serialize;

use super::DecodeError;
use super::bytes::{arr, le8, le32, le64, need, put32, put64};

/// `VIRTIO_GPU_FLAG_FENCE`: the device answers only once the command is complete.
pub const FLAG_FENCE: u32 = 1;
/// `VIRTIO_GPU_FLAG_INFO_RING_IDX`: `ring_idx` selects a per-context fence timeline.
pub const FLAG_INFO_RING_IDX: u32 = 2;

/// `struct virtio_gpu_ctrl_hdr`: the header every request and response starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct CtrlHeader {
    /// Command or response code ([`CommandType`] / [`ResponseType`]).
    pub type_: u32,
    /// [`FLAG_FENCE`], [`FLAG_INFO_RING_IDX`]; other bits are kept as sent.
    pub flags: u32,
    /// Fence sequence number (meaningful with [`FLAG_FENCE`]).
    pub fence_id: u64,
    /// 3D context (0 for 2D commands).
    pub ctx_id: u32,
    /// Per-context ring (meaningful with [`FLAG_INFO_RING_IDX`]).
    pub ring_idx: u8,
    /// Padding bytes as sent.
    pub padding: [u8; 3],
}

impl CtrlHeader {
    /// Size of the header on the wire.
    pub const SIZE: usize = 24;

    /// Decodes the header from the first 24 bytes of `b` (further bytes are ignored).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(b, "virtio_gpu_ctrl_hdr", 0, Self::SIZE)?;
        Ok(CtrlHeader {
            type_: le32(b, 0),
            flags: le32(b, 4),
            fence_id: le64(b, 8),
            ctx_id: le32(b, 16),
            ring_idx: le8(b, 20),
            padding: arr(b, 21),
        })
    }

    /// Appends the 24 header bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put32(out, self.type_);
        put32(out, self.flags);
        put64(out, self.fence_id);
        put32(out, self.ctx_id);
        out.push(self.ring_idx);
        out.extend_from_slice(&self.padding);
    }

    /// A header with the given code and everything else zero.
    pub fn new(type_: u32) -> Self {
        CtrlHeader {
            type_,
            ..Self::default()
        }
    }

    /// True when [`FLAG_FENCE`] is set.
    pub fn is_fenced(&self) -> bool {
        self.flags & FLAG_FENCE != 0
    }

    /// True when [`FLAG_INFO_RING_IDX`] is set.
    pub fn has_ring_idx(&self) -> bool {
        self.flags & FLAG_INFO_RING_IDX != 0
    }

    /// Writes ` fence=N ctx=N ring=N` (each only when meaningful) for one-line summaries.
    pub(crate) fn fmt_suffix(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_fenced() {
            write!(f, " fence={}", self.fence_id)?;
        }
        if self.ctx_id != 0 {
            write!(f, " ctx={}", self.ctx_id)?;
        }
        if self.has_ring_idx() {
            write!(f, " ring={}", self.ring_idx)?;
        }
        Ok(())
    }
}

/// Defines a `u32` code newtype with named constants, `name()` and `Display`.
macro_rules! code_type {
    (
        $(#[$meta:meta])*
        $name:ident, $fallback:literal {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
        pub struct $name(pub u32);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: $name = $name($value); )*

            /// The protocol's name for this code, `None` when unknown.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($konst)), )*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!($fallback, "({:#x})"), self.0),
                }
            }
        }
    };
}
pub(crate) use code_type;

code_type! {
    /// A virtio-gpu command code (`enum virtio_gpu_ctrl_type`, 0x01xx–0x03xx).
    CommandType, "UNKNOWN_COMMAND" {
        /// Ask for the scanouts' geometry.
        GET_DISPLAY_INFO = 0x100,
        /// Create a 2D resource.
        RESOURCE_CREATE_2D = 0x101,
        /// Drop a resource.
        RESOURCE_UNREF = 0x102,
        /// Show a resource on a scanout.
        SET_SCANOUT = 0x103,
        /// Present a resource's rectangle.
        RESOURCE_FLUSH = 0x104,
        /// Copy guest backing into a 2D resource.
        TRANSFER_TO_HOST_2D = 0x105,
        /// Give a resource guest-memory backing.
        RESOURCE_ATTACH_BACKING = 0x106,
        /// Take a resource's backing away.
        RESOURCE_DETACH_BACKING = 0x107,
        /// Ask for one capset's id, version and size.
        GET_CAPSET_INFO = 0x108,
        /// Ask for a capset's data.
        GET_CAPSET = 0x109,
        /// Ask for a scanout's EDID.
        GET_EDID = 0x10A,
        /// Ask for a resource's UUID.
        RESOURCE_ASSIGN_UUID = 0x10B,
        /// Create a blob resource.
        RESOURCE_CREATE_BLOB = 0x10C,
        /// Show a blob resource on a scanout.
        SET_SCANOUT_BLOB = 0x10D,
        /// Create a 3D context.
        CTX_CREATE = 0x200,
        /// Destroy a 3D context.
        CTX_DESTROY = 0x201,
        /// Make a resource usable by a context.
        CTX_ATTACH_RESOURCE = 0x202,
        /// Remove a resource from a context.
        CTX_DETACH_RESOURCE = 0x203,
        /// Create a 3D resource.
        RESOURCE_CREATE_3D = 0x204,
        /// Copy guest backing into a 3D resource.
        TRANSFER_TO_HOST_3D = 0x205,
        /// Copy a 3D resource into guest backing.
        TRANSFER_FROM_HOST_3D = 0x206,
        /// Submit a context command stream.
        SUBMIT_3D = 0x207,
        /// Map a host blob into the host-visible region.
        RESOURCE_MAP_BLOB = 0x208,
        /// Unmap a host blob.
        RESOURCE_UNMAP_BLOB = 0x209,
        /// Set the cursor image and position (cursor queue).
        UPDATE_CURSOR = 0x300,
        /// Move the cursor (cursor queue).
        MOVE_CURSOR = 0x301,
    }
}

impl CommandType {
    /// Every command code the protocol defines, in code order.
    pub const ALL: [CommandType; 26] = [
        Self::GET_DISPLAY_INFO,
        Self::RESOURCE_CREATE_2D,
        Self::RESOURCE_UNREF,
        Self::SET_SCANOUT,
        Self::RESOURCE_FLUSH,
        Self::TRANSFER_TO_HOST_2D,
        Self::RESOURCE_ATTACH_BACKING,
        Self::RESOURCE_DETACH_BACKING,
        Self::GET_CAPSET_INFO,
        Self::GET_CAPSET,
        Self::GET_EDID,
        Self::RESOURCE_ASSIGN_UUID,
        Self::RESOURCE_CREATE_BLOB,
        Self::SET_SCANOUT_BLOB,
        Self::CTX_CREATE,
        Self::CTX_DESTROY,
        Self::CTX_ATTACH_RESOURCE,
        Self::CTX_DETACH_RESOURCE,
        Self::RESOURCE_CREATE_3D,
        Self::TRANSFER_TO_HOST_3D,
        Self::TRANSFER_FROM_HOST_3D,
        Self::SUBMIT_3D,
        Self::RESOURCE_MAP_BLOB,
        Self::RESOURCE_UNMAP_BLOB,
        Self::UPDATE_CURSOR,
        Self::MOVE_CURSOR,
    ];

    /// True for the two cursor-queue commands (0x03xx).
    pub fn is_cursor(self) -> bool {
        self == Self::UPDATE_CURSOR || self == Self::MOVE_CURSOR
    }

    /// True for the 3D commands (0x02xx), which need `VIRTIO_GPU_F_VIRGL`.
    pub fn is_3d(self) -> bool {
        (0x200..0x300).contains(&self.0)
    }
}

code_type! {
    /// A virtio-gpu response code (`enum virtio_gpu_ctrl_type`, 0x11xx success, 0x12xx error).
    ResponseType, "UNKNOWN_RESPONSE" {
        /// `VIRTIO_GPU_UNDEFINED`: never sent by a correct device.
        UNDEFINED = 0,
        /// Success without data.
        OK_NODATA = 0x1100,
        /// Scanout geometry.
        OK_DISPLAY_INFO = 0x1101,
        /// One capset's id, version and size.
        OK_CAPSET_INFO = 0x1102,
        /// Capset data.
        OK_CAPSET = 0x1103,
        /// A scanout's EDID.
        OK_EDID = 0x1104,
        /// A resource's UUID.
        OK_RESOURCE_UUID = 0x1105,
        /// Map info of a mapped blob.
        OK_MAP_INFO = 0x1106,
        /// Plane layout of a created resource (crosvm extension).
        OK_RESOURCE_PLANE_INFO = 0x11FF,
        /// Unspecified error.
        ERR_UNSPEC = 0x1200,
        /// Out of memory.
        ERR_OUT_OF_MEMORY = 0x1201,
        /// Bad scanout id.
        ERR_INVALID_SCANOUT_ID = 0x1202,
        /// Bad resource id.
        ERR_INVALID_RESOURCE_ID = 0x1203,
        /// Bad context id.
        ERR_INVALID_CONTEXT_ID = 0x1204,
        /// Bad parameter.
        ERR_INVALID_PARAMETER = 0x1205,
    }
}

impl ResponseType {
    /// True for error responses (0x1200–0x12FF), as the Linux driver classifies them.
    pub fn is_error(self) -> bool {
        (0x1200..0x1300).contains(&self.0)
    }

    /// True for success responses (0x1100–0x11FF).
    pub fn is_ok(self) -> bool {
        (0x1100..0x1200).contains(&self.0)
    }
}
