//! Small types shared by several commands: rectangles, boxes, memory entries, pixel formats,
//! capset ids, blob memory kinds and flags, and map info.

use serde::Serialize;

use super::bytes::{le32, le64, put32, put64};
use super::header::code_type;

/// `struct virtio_gpu_rect` (16 bytes): origin top-left, x right, y down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    /// Reads a rect at `off` (the caller has checked the length).
    pub(crate) fn read(b: &[u8], off: usize) -> Self {
        Rect {
            x: le32(b, off),
            y: le32(b, off + 4),
            width: le32(b, off + 8),
            height: le32(b, off + 12),
        }
    }

    /// Appends the 16 bytes.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put32(out, self.x);
        put32(out, self.y);
        put32(out, self.width);
        put32(out, self.height);
    }
}

impl std::fmt::Display for Rect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{} {}x{}", self.x, self.y, self.width, self.height)
    }
}

/// `struct virtio_gpu_box` (24 bytes): a 3D region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Box3d {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Front.
    pub z: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Depth.
    pub d: u32,
}

impl Box3d {
    /// Size on the wire.
    pub const SIZE: usize = 24;

    pub(crate) fn read(b: &[u8], off: usize) -> Self {
        Box3d {
            x: le32(b, off),
            y: le32(b, off + 4),
            z: le32(b, off + 8),
            w: le32(b, off + 12),
            h: le32(b, off + 16),
            d: le32(b, off + 20),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for v in [self.x, self.y, self.z, self.w, self.h, self.d] {
            put32(out, v);
        }
    }
}

impl std::fmt::Display for Box3d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{} {}x{}x{}",
            self.x, self.y, self.z, self.w, self.h, self.d
        )
    }
}

/// `struct virtio_gpu_mem_entry` (16 bytes): one piece of a scatter list of guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MemEntry {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl MemEntry {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    pub(crate) fn read(b: &[u8], off: usize) -> Self {
        MemEntry {
            addr: le64(b, off),
            length: le32(b, off + 8),
            padding: le32(b, off + 12),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put64(out, self.addr);
        put32(out, self.length);
        put32(out, self.padding);
    }

    /// Reads `bytes.len() / 16` entries.
    pub(crate) fn read_all(bytes: &[u8]) -> Vec<MemEntry> {
        bytes
            .chunks_exact(Self::SIZE)
            .map(|c| MemEntry::read(c, 0))
            .collect()
    }
}

/// `struct virtio_gpu_cursor_pos` (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct CursorPos {
    /// Scanout the cursor is on.
    pub scanout_id: u32,
    /// Horizontal position.
    pub x: u32,
    /// Vertical position.
    pub y: u32,
    /// Padding as sent.
    pub padding: u32,
}

impl CursorPos {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    pub(crate) fn read(b: &[u8], off: usize) -> Self {
        CursorPos {
            scanout_id: le32(b, off),
            x: le32(b, off + 4),
            y: le32(b, off + 8),
            padding: le32(b, off + 12),
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for v in [self.scanout_id, self.x, self.y, self.padding] {
            put32(out, v);
        }
    }
}

code_type! {
    /// `enum virtio_gpu_formats`: pixel formats, named by memory byte order (Gallium style).
    Format, "FORMAT" {
        /// Bytes B, G, R, A.
        B8G8R8A8_UNORM = 1,
        /// Bytes B, G, R, X (DRM XRGB8888, what Linux uses for the primary plane).
        B8G8R8X8_UNORM = 2,
        /// Bytes A, R, G, B.
        A8R8G8B8_UNORM = 3,
        /// Bytes X, R, G, B.
        X8R8G8B8_UNORM = 4,
        /// Bytes R, G, B, A.
        R8G8B8A8_UNORM = 67,
        /// Bytes X, B, G, R.
        X8B8G8R8_UNORM = 68,
        /// Bytes A, B, G, R.
        A8B8G8R8_UNORM = 121,
        /// Bytes R, G, B, X.
        R8G8B8X8_UNORM = 134,
    }
}

impl Format {
    /// Every format the protocol defines.
    pub const ALL: [Format; 8] = [
        Self::B8G8R8A8_UNORM,
        Self::B8G8R8X8_UNORM,
        Self::A8R8G8B8_UNORM,
        Self::X8R8G8B8_UNORM,
        Self::R8G8B8A8_UNORM,
        Self::X8B8G8R8_UNORM,
        Self::A8B8G8R8_UNORM,
        Self::R8G8B8X8_UNORM,
    ];

    /// Bytes per pixel (4 for every defined format), `None` for unknown codes.
    pub fn bytes_per_pixel(self) -> Option<u32> {
        self.channel_order().map(|_| 4)
    }

    /// Which memory byte holds red, green, blue and alpha (`None` for alpha: an X byte, which
    /// reads as opaque). `None` for unknown codes.
    pub fn channel_order(self) -> Option<([usize; 3], Option<usize>)> {
        Some(match self {
            Self::B8G8R8A8_UNORM => ([2, 1, 0], Some(3)),
            Self::B8G8R8X8_UNORM => ([2, 1, 0], None),
            Self::A8R8G8B8_UNORM => ([1, 2, 3], Some(0)),
            Self::X8R8G8B8_UNORM => ([1, 2, 3], None),
            Self::R8G8B8A8_UNORM => ([0, 1, 2], Some(3)),
            Self::X8B8G8R8_UNORM => ([3, 2, 1], None),
            Self::A8B8G8R8_UNORM => ([3, 2, 1], Some(0)),
            Self::R8G8B8X8_UNORM => ([0, 1, 2], None),
            _ => return None,
        })
    }

    /// True when the format has an alpha channel (rather than an ignored X byte).
    pub fn has_alpha(self) -> bool {
        matches!(self.channel_order(), Some((_, Some(_))))
    }

    /// Converts one pixel, given as its 4 memory bytes, to R, G, B, A bytes (A = 255 for X
    /// formats). `None` for unknown codes.
    pub fn to_rgba(self, px: [u8; 4]) -> Option<[u8; 4]> {
        let ([r, g, b], a) = self.channel_order()?;
        let pick = |i: usize| px.get(i).copied().unwrap_or(0);
        Some([pick(r), pick(g), pick(b), a.map_or(255, pick)])
    }
}

code_type! {
    /// Capability set ids (spec 1–5, Linux/rutabaga 6–9).
    CapsetId, "CAPSET" {
        /// virglrenderer, GL.
        VIRGL = 1,
        /// virglrenderer, GL (version 2).
        VIRGL2 = 2,
        /// gfxstream Vulkan.
        GFXSTREAM_VULKAN = 3,
        /// virglrenderer Venus (Vulkan).
        VENUS = 4,
        /// rutabaga cross-domain (Wayland).
        CROSS_DOMAIN = 5,
        /// virglrenderer native DRM contexts.
        DRM = 6,
        /// Magma.
        MAGMA = 7,
        /// gfxstream GLES.
        GFXSTREAM_GLES = 8,
        /// gfxstream composer.
        GFXSTREAM_COMPOSER = 9,
    }
}

impl CapsetId {
    /// `VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK`: the low byte of `context_init` is a capset id.
    pub const CONTEXT_INIT_MASK: u32 = 0xff;
}

code_type! {
    /// `blob_mem` of RESOURCE_CREATE_BLOB: where the blob's memory lives.
    BlobMem, "BLOB_MEM" {
        /// Guest pages only.
        GUEST = 1,
        /// Host allocation made from a context object (`blob_id`).
        HOST3D = 2,
        /// Host allocation with a guest shadow.
        HOST3D_GUEST = 3,
    }
}

/// `blob_flags` of RESOURCE_CREATE_BLOB (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct BlobFlags(pub u32);

impl BlobFlags {
    /// The blob can be mapped (MAP_BLOB).
    pub const USE_MAPPABLE: u32 = 1;
    /// The blob can be shared with other processes.
    pub const USE_SHAREABLE: u32 = 2;
    /// The blob can be shared with other devices.
    pub const USE_CROSS_DEVICE: u32 = 4;
    /// Non-standard crosvm flag: create a guest handle.
    pub const CREATE_GUEST_HANDLE: u32 = 8;

    const NAMES: [(u32, &'static str); 4] = [
        (Self::USE_MAPPABLE, "USE_MAPPABLE"),
        (Self::USE_SHAREABLE, "USE_SHAREABLE"),
        (Self::USE_CROSS_DEVICE, "USE_CROSS_DEVICE"),
        (Self::CREATE_GUEST_HANDLE, "CREATE_GUEST_HANDLE"),
    ];

    /// Names of the known bits that are set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|&(_, n)| n)
            .collect()
    }
}

impl std::fmt::Display for BlobFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_bits(f, self.0, &self.names(), 0xf)
    }
}

/// Writes `A|B` plus any unknown bits in hex, or `0`.
pub(crate) fn fmt_bits(
    f: &mut std::fmt::Formatter<'_>,
    value: u32,
    names: &[&str],
    known_mask: u32,
) -> std::fmt::Result {
    let mut parts: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
    let unknown = value & !known_mask;
    if unknown != 0 {
        parts.push(format!("{unknown:#x}"));
    }
    if parts.is_empty() {
        f.write_str("0")
    } else {
        f.write_str(&parts.join("|"))
    }
}

/// `map_info` of OK_MAP_INFO: cache type (low nibble) and rutabaga access bits (high nibble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MapInfo(pub u32);

impl MapInfo {
    /// Mask of the cache type.
    pub const CACHE_MASK: u32 = 0x0f;
    /// No cache type given.
    pub const CACHE_NONE: u32 = 0;
    /// Cached.
    pub const CACHE_CACHED: u32 = 1;
    /// Uncached.
    pub const CACHE_UNCACHED: u32 = 2;
    /// Write-combined.
    pub const CACHE_WC: u32 = 3;
    /// Mask of the access bits.
    pub const ACCESS_MASK: u32 = 0xf0;
    /// Readable.
    pub const ACCESS_READ: u32 = 0x10;
    /// Writable.
    pub const ACCESS_WRITE: u32 = 0x20;
    /// Readable and writable.
    pub const ACCESS_RW: u32 = 0x30;

    /// The cache type (`CACHE_*`).
    pub fn cache_type(self) -> u32 {
        self.0 & Self::CACHE_MASK
    }

    /// Name of the cache type, `None` when unknown.
    pub fn cache_name(self) -> Option<&'static str> {
        match self.cache_type() {
            Self::CACHE_NONE => Some("NONE"),
            Self::CACHE_CACHED => Some("CACHED"),
            Self::CACHE_UNCACHED => Some("UNCACHED"),
            Self::CACHE_WC => Some("WC"),
            _ => None,
        }
    }

    /// Name of the access bits (`None` when no access bit is set).
    pub fn access_name(self) -> Option<&'static str> {
        match self.0 & Self::ACCESS_MASK {
            Self::ACCESS_READ => Some("READ"),
            Self::ACCESS_WRITE => Some("WRITE"),
            Self::ACCESS_RW => Some("RW"),
            _ => None,
        }
    }
}

impl std::fmt::Display for MapInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cache_name() {
            Some(n) => f.write_str(n)?,
            None => write!(f, "CACHE({:#x})", self.cache_type())?,
        }
        if let Some(a) = self.access_name() {
            write!(f, "|{a}")?;
        }
        let rest = self.0 & !(Self::CACHE_MASK | Self::ACCESS_MASK);
        if rest != 0 {
            write!(f, "|{rest:#x}")?;
        }
        Ok(())
    }
}
