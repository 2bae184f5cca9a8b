//! Errors: the device's construction errors and the guest-rule violations it reports.

use vgt_format::wire::{CommandType, DecodeError, Rect, ResponseType};

use crate::MemoryError;
use crate::renderer::RendererError;

/// Why a [`crate::Device`] could not be built.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `scanouts` must hold 1 to 16 entries.
    #[error("{found} scanouts configured; virtio-gpu allows 1 to 16")]
    ScanoutCount {
        /// Entries in `DeviceConfig::scanouts`.
        found: usize,
    },
    /// A configured scanout has a zero dimension.
    #[error("scanout {scanout} is configured as {width}x{height}; both must be non-zero")]
    ScanoutSize {
        /// Scanout index.
        scanout: u32,
        /// Configured width.
        width: u32,
        /// Configured height.
        height: u32,
    },
    /// The renderer could not be started.
    #[error("renderer failed to start")]
    Renderer {
        /// What the renderer said.
        #[source]
        source: RendererError,
    },
}

/// A request that broke a rule of the protocol or of the device's limits.
///
/// Each one is answered with [`ValidationError::response_type`] and reported through
/// [`crate::DeviceHost::validation_error`]; the device keeps serving.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// Fewer than 24 bytes: not even a header (answered ERR_UNSPEC with an empty header).
    #[error("request of {len} bytes has no complete 24-byte header")]
    NoHeader {
        /// Readable bytes in the chain.
        len: usize,
    },
    /// The header is readable but the command struct is cut short or inconsistent.
    #[error("{command} request does not decode")]
    Decode {
        /// Command code from the header.
        command: CommandType,
        /// What the decoder said.
        #[source]
        source: DecodeError,
    },
    /// A code that is no virtio-gpu command.
    #[error("unknown command code {code:#x}")]
    UnknownCommand {
        /// The header's type field.
        code: u32,
    },
    /// A command this device or renderer does not implement (3D, host blobs, mapping).
    #[error("{command} is not supported: {reason}")]
    Unsupported {
        /// The command.
        command: CommandType,
        /// Why.
        reason: &'static str,
    },
    /// A controlq command on the cursor queue or the other way round.
    #[error("{command} arrived on queue {queue}")]
    WrongQueue {
        /// The command.
        command: CommandType,
        /// The queue it arrived on.
        queue: u16,
    },
    /// No resource with this id exists.
    #[error("{command}: resource {resource_id} does not exist")]
    UnknownResource {
        /// The command.
        command: CommandType,
        /// The id the guest sent.
        resource_id: u32,
    },
    /// Create with id 0 or with an id already in use.
    #[error("{command}: resource id {resource_id} is {}", if *.resource_id == 0 { "reserved" } else { "already in use" })]
    ResourceIdTaken {
        /// The command.
        command: CommandType,
        /// The id the guest sent.
        resource_id: u32,
    },
    /// Scanout index out of range.
    #[error("{command}: scanout {scanout_id} does not exist ({num_scanouts} scanouts)")]
    InvalidScanout {
        /// The command.
        command: CommandType,
        /// The index the guest sent.
        scanout_id: u32,
        /// How many scanouts the device has.
        num_scanouts: u32,
    },
    /// A rectangle that is not inside the resource (or blob framebuffer).
    #[error("{command}: rect {rect} is not inside resource {resource_id} ({width}x{height})")]
    RectOutside {
        /// The command.
        command: CommandType,
        /// The resource.
        resource_id: u32,
        /// The rectangle the guest sent.
        rect: Rect,
        /// Resource width.
        width: u32,
        /// Resource height.
        height: u32,
    },
    /// TRANSFER_TO_HOST_2D would read past the end of the backing.
    #[error(
        "transfer to resource {resource_id}: offset {offset} needs backing bytes up to {end:?} (None = overflow), backing has {backing_len}"
    )]
    TransferOutsideBacking {
        /// The resource.
        resource_id: u32,
        /// The transfer's offset.
        offset: u64,
        /// One past the last backing byte the transfer reads; `None` when that overflows u64.
        end: Option<u64>,
        /// Total backing length.
        backing_len: u64,
    },
    /// The command needs backing and the resource has none.
    #[error("{command}: resource {resource_id} has no backing attached")]
    NoBacking {
        /// The command.
        command: CommandType,
        /// The resource.
        resource_id: u32,
    },
    /// ATTACH_BACKING on a resource that already has backing.
    #[error("resource {resource_id} already has backing attached")]
    BackingAttached {
        /// The resource.
        resource_id: u32,
    },
    /// nr_entries is 0 or above the configured maximum.
    #[error("{command}: resource {resource_id} has {nr_entries} mem entries, allowed 1..={max}")]
    EntryCount {
        /// The command.
        command: CommandType,
        /// The resource.
        resource_id: u32,
        /// The count the guest sent.
        nr_entries: u32,
        /// `DeviceConfig::max_backing_entries`.
        max: u32,
    },
    /// A mem entry whose range wraps around the 64-bit address space (so it can never be guest
    /// memory). Entries that are merely outside guest memory fail when read ([`Self::MemoryRead`]).
    #[error(
        "resource {resource_id}: mem entry {index} ({addr:#x}+{length:#x}) wraps around the address space"
    )]
    EntryWraps {
        /// The resource.
        resource_id: u32,
        /// Index of the entry in the scatter list.
        index: usize,
        /// Its guest-physical address.
        addr: u64,
        /// Its length.
        length: u32,
    },
    /// The sum of the mem entries is above the configured maximum.
    #[error("resource {resource_id}: backing of {total} bytes exceeds the limit of {max}")]
    BackingTooLarge {
        /// The resource.
        resource_id: u32,
        /// Sum of the entry lengths.
        total: u64,
        /// `DeviceConfig::max_resource_bytes`.
        max: u64,
    },
    /// Reading the backing from guest memory failed.
    #[error("resource {resource_id}: reading guest memory failed")]
    MemoryRead {
        /// The resource.
        resource_id: u32,
        /// What the memory said.
        #[source]
        source: MemoryError,
    },
    /// A resource with a zero dimension.
    #[error("resource {resource_id}: size {width}x{height} has a zero dimension")]
    ZeroSize {
        /// The resource.
        resource_id: u32,
        /// Width the guest sent.
        width: u32,
        /// Height the guest sent.
        height: u32,
    },
    /// A resource larger than `DeviceConfig::max_resource_bytes`.
    #[error("resource {resource_id}: {bytes} bytes exceeds the limit of {max}")]
    ResourceTooLarge {
        /// The resource.
        resource_id: u32,
        /// Bytes the resource would need.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// All resources together would hold more host memory than
    /// `DeviceConfig::max_total_bytes`.
    #[error("resource {resource_id}: {needed} more bytes with {used} in use exceeds {max}")]
    HostMemoryExhausted {
        /// The resource.
        resource_id: u32,
        /// Bytes the command would add.
        needed: u64,
        /// Bytes in use before it.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// A pixel format virtio-gpu does not define.
    #[error("{command}: format {format} is not a virtio-gpu format")]
    UnsupportedFormat {
        /// The command.
        command: CommandType,
        /// The format code the guest sent.
        format: u32,
    },
    /// GET_CAPSET_INFO index out of range.
    #[error("capset index {index} out of range ({num_capsets} capsets)")]
    CapsetIndex {
        /// Index the guest sent.
        index: u32,
        /// Capsets the renderer has.
        num_capsets: u32,
    },
    /// GET_CAPSET for a capset/version the renderer does not have.
    #[error("capset {capset_id} version {version} is not available")]
    UnknownCapset {
        /// Capset id the guest sent.
        capset_id: u32,
        /// Version the guest sent.
        version: u32,
    },
    /// UPDATE_CURSOR with a resource that is not a 64×64 2D resource.
    #[error("cursor resource {resource_id} is {width}x{height}, must be 64x64")]
    CursorSize {
        /// The resource.
        resource_id: u32,
        /// Its width (0 for blobs).
        width: u32,
        /// Its height (0 for blobs).
        height: u32,
    },
    /// GET_EDID while EDID is not offered.
    #[error("GET_EDID while VIRTIO_GPU_F_EDID is not offered")]
    EdidDisabled,
    /// The command does not apply to this kind of resource (blob vs 2D).
    #[error("{command}: resource {resource_id} is {}a blob", if *.is_blob { "" } else { "not " })]
    WrongResourceKind {
        /// The command.
        command: CommandType,
        /// The resource.
        resource_id: u32,
        /// Whether the resource is a blob.
        is_blob: bool,
    },
    /// RESOURCE_CREATE_BLOB with a blob_mem other than GUEST (or an invalid one).
    #[error("blob resource {resource_id}: blob_mem {blob_mem} not supported by this renderer")]
    BlobMem {
        /// The resource.
        resource_id: u32,
        /// blob_mem the guest sent.
        blob_mem: u32,
    },
    /// A guest blob whose size is 0 or larger than its backing.
    #[error("blob resource {resource_id}: size {size}, backing {backing_len}")]
    BlobSize {
        /// The resource.
        resource_id: u32,
        /// Size the guest sent.
        size: u64,
        /// Sum of its mem entries.
        backing_len: u64,
    },
    /// SET_SCANOUT_BLOB framebuffer that does not fit its blob.
    #[error(
        "scanout blob {resource_id}: {width}x{height} stride {stride} offset {offset} needs {end:?} bytes, blob has {size}"
    )]
    BlobLayout {
        /// The resource.
        resource_id: u32,
        /// Framebuffer width.
        width: u32,
        /// Framebuffer height.
        height: u32,
        /// `strides[0]`.
        stride: u32,
        /// `offsets[0]`.
        offset: u32,
        /// Bytes the layout needs; `None` on overflow.
        end: Option<u64>,
        /// Blob size.
        size: u64,
    },
    /// ring_idx must be below 64.
    #[error("ring_idx {ring_idx} is not below 64")]
    RingIndex {
        /// ring_idx the guest sent.
        ring_idx: u8,
    },
    /// The renderer refused an operation the device had validated.
    #[error("{command}: the renderer failed")]
    Renderer {
        /// The command.
        command: CommandType,
        /// What the renderer said.
        #[source]
        source: RendererError,
    },
    /// The response did not fit the writable part of the chain and was cut.
    #[error("{command}: response of {needed} bytes truncated to {writable} writable bytes")]
    ResponseTruncated {
        /// The command.
        command: CommandType,
        /// Full response length.
        needed: usize,
        /// Writable bytes in the chain.
        writable: u32,
    },
}

impl ValidationError {
    /// The response code the guest gets for this violation (QEMU's choice where QEMU has one).
    pub fn response_type(&self) -> ResponseType {
        use ValidationError as V;
        match self {
            V::NoHeader { .. }
            | V::UnknownCommand { .. }
            | V::Unsupported { .. }
            | V::WrongQueue { .. }
            | V::NoBacking { .. }
            | V::BackingAttached { .. }
            | V::EntryWraps { .. }
            | V::MemoryRead { .. }
            | V::EdidDisabled
            | V::ResponseTruncated { .. } => ResponseType::ERR_UNSPEC,
            V::Decode { .. }
            | V::RectOutside { .. }
            | V::TransferOutsideBacking { .. }
            | V::EntryCount { .. }
            | V::UnsupportedFormat { .. }
            | V::CapsetIndex { .. }
            | V::UnknownCapset { .. }
            | V::CursorSize { .. }
            | V::WrongResourceKind { .. }
            | V::BlobMem { .. }
            | V::BlobSize { .. }
            | V::BlobLayout { .. }
            | V::RingIndex { .. } => ResponseType::ERR_INVALID_PARAMETER,
            V::UnknownResource { .. } | V::ResourceIdTaken { .. } => {
                ResponseType::ERR_INVALID_RESOURCE_ID
            }
            V::InvalidScanout { .. } => ResponseType::ERR_INVALID_SCANOUT_ID,
            V::ZeroSize { .. }
            | V::ResourceTooLarge { .. }
            | V::BackingTooLarge { .. }
            | V::HostMemoryExhausted { .. } => ResponseType::ERR_OUT_OF_MEMORY,
            V::Renderer { source, .. } => source.response_type(),
        }
    }
}
