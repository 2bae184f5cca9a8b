//! vhost-user: request codes, feature bit names and typed payloads of the main socket and the
//! back-end request channel.
//!
//! Payload layouts are packed little-endian (host order on x86 and arm64) as in QEMU's
//! `docs/interop/vhost-user.rst`.

use serde::Serialize;

use super::DecodeError;
use super::bytes::{arr, counted, exact, le16, le32, le64, need, put16, put32, put64};
use super::header::code_type;

code_type! {
    /// A front-end → back-end request code (`VhostUserRequest`).
    VhostUserRequest, "VHOST_USER_REQUEST" {
        /// Ask for the virtio feature bits.
        GET_FEATURES = 1,
        /// Set the negotiated virtio feature bits.
        SET_FEATURES = 2,
        /// Claim the back-end.
        SET_OWNER = 3,
        /// Deprecated.
        RESET_OWNER = 4,
        /// Guest memory regions (one fd each).
        SET_MEM_TABLE = 5,
        /// Dirty log area.
        SET_LOG_BASE = 6,
        /// Dirty log eventfd.
        SET_LOG_FD = 7,
        /// Ring size.
        SET_VRING_NUM = 8,
        /// Ring addresses.
        SET_VRING_ADDR = 9,
        /// Next avail index.
        SET_VRING_BASE = 10,
        /// Stop a ring and get its avail index.
        GET_VRING_BASE = 11,
        /// Kick eventfd.
        SET_VRING_KICK = 12,
        /// Call eventfd.
        SET_VRING_CALL = 13,
        /// Error eventfd.
        SET_VRING_ERR = 14,
        /// Ask for the protocol feature bits.
        GET_PROTOCOL_FEATURES = 15,
        /// Set the protocol feature bits.
        SET_PROTOCOL_FEATURES = 16,
        /// Ask for the queue count.
        GET_QUEUE_NUM = 17,
        /// Enable or disable a ring.
        SET_VRING_ENABLE = 18,
        /// Net: send a RARP.
        SEND_RARP = 19,
        /// Net: set the MTU.
        NET_SET_MTU = 20,
        /// The back-end request channel (socket fd); formerly SET_SLAVE_REQ_FD.
        SET_BACKEND_REQ_FD = 21,
        /// IOTLB update.
        IOTLB_MSG = 22,
        /// Ring endianness.
        SET_VRING_ENDIAN = 23,
        /// Read device config space.
        GET_CONFIG = 24,
        /// Write device config space.
        SET_CONFIG = 25,
        /// Crypto: create a session.
        CREATE_CRYPTO_SESSION = 26,
        /// Crypto: close a session.
        CLOSE_CRYPTO_SESSION = 27,
        /// Postcopy: get the userfault fd.
        POSTCOPY_ADVISE = 28,
        /// Postcopy: start listening.
        POSTCOPY_LISTEN = 29,
        /// Postcopy: end.
        POSTCOPY_END = 30,
        /// Get the inflight tracking area.
        GET_INFLIGHT_FD = 31,
        /// Set the inflight tracking area.
        SET_INFLIGHT_FD = 32,
        /// vhost-user-gpu: the display socket (socket fd).
        GPU_SET_SOCKET = 33,
        /// Reset the device.
        RESET_DEVICE = 34,
        /// In-band kick.
        VRING_KICK = 35,
        /// Ask for the memory slot limit.
        GET_MAX_MEM_SLOTS = 36,
        /// Add one memory region (one fd).
        ADD_MEM_REG = 37,
        /// Remove one memory region.
        REM_MEM_REG = 38,
        /// Set the virtio device status.
        SET_STATUS = 39,
        /// Get the virtio device status.
        GET_STATUS = 40,
        /// Look up a shared object by UUID.
        GET_SHARED_OBJECT = 41,
        /// Device state transfer pipe.
        SET_DEVICE_STATE_FD = 42,
        /// Check the device state transfer.
        CHECK_DEVICE_STATE = 43,
        /// Ask for the shared memory regions.
        GET_SHMEM_CONFIG = 44,
    }
}

code_type! {
    /// A back-end → front-end request code on the back-end request channel.
    BackendRequest, "BACKEND_REQUEST" {
        /// IOTLB miss or access failure.
        IOTLB_MSG = 1,
        /// Config space changed.
        CONFIG_CHANGE_MSG = 2,
        /// Host notifier area (fd).
        VRING_HOST_NOTIFIER_MSG = 3,
        /// In-band call.
        VRING_CALL = 4,
        /// In-band error.
        VRING_ERR = 5,
        /// Add a shared object.
        SHARED_OBJECT_ADD = 6,
        /// Remove a shared object.
        SHARED_OBJECT_REMOVE = 7,
        /// Look up a shared object.
        SHARED_OBJECT_LOOKUP = 8,
        /// Map an fd into a shared memory region.
        SHMEM_MAP = 9,
        /// Unmap from a shared memory region.
        SHMEM_UNMAP = 10,
    }
}

/// Header flag bits of vhost-user messages.
pub mod flags {
    /// Protocol version field (must be 1).
    pub const VERSION_MASK: u32 = 0x3;
    /// The message is a reply.
    pub const REPLY: u32 = 0x4;
    /// The sender wants an ack (REPLY_ACK).
    pub const NEED_REPLY: u32 = 0x8;
}

/// Size of the vhost-user message header (request, flags, size).
pub const HEADER_SIZE: usize = 12;

/// The 12-byte header of a vhost-user message (host byte order, little-endian here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MessageHeader {
    /// Request code ([`VhostUserRequest`] or, on the back-end channel, [`BackendRequest`]).
    pub request: u32,
    /// Version bits and [`flags::REPLY`] / [`flags::NEED_REPLY`].
    pub flags: u32,
    /// Payload size in bytes.
    pub size: u32,
}

impl MessageHeader {
    /// Decodes the header at the start of `b` (further bytes are ignored).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        need(b, "vhost-user header", 0, HEADER_SIZE)?;
        Ok(MessageHeader {
            request: le32(b, 0),
            flags: le32(b, 4),
            size: le32(b, 8),
        })
    }

    /// Appends the 12 header bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put32(out, self.request);
        put32(out, self.flags);
        put32(out, self.size);
    }

    /// True when [`flags::REPLY`] is set.
    pub fn is_reply(&self) -> bool {
        self.flags & flags::REPLY != 0
    }

    /// True when [`flags::NEED_REPLY`] is set.
    pub fn needs_reply(&self) -> bool {
        self.flags & flags::NEED_REPLY != 0
    }

    /// The protocol version field (1 for every valid message).
    pub fn version(&self) -> u32 {
        self.flags & flags::VERSION_MASK
    }
}

const PROTOCOL_FEATURES: [&str; 22] = [
    "MQ",
    "LOG_SHMFD",
    "RARP",
    "REPLY_ACK",
    "MTU",
    "BACKEND_REQ",
    "CROSS_ENDIAN",
    "CRYPTO_SESSION",
    "PAGEFAULT",
    "CONFIG",
    "BACKEND_SEND_FD",
    "HOST_NOTIFIER",
    "INFLIGHT_SHMFD",
    "RESET_DEVICE",
    "INBAND_NOTIFICATIONS",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "XEN_MMAP",
    "SHARED_OBJECT",
    "DEVICE_STATE",
    "GET_VRING_BASE_INFLIGHT",
    "SHMEM",
];

/// Names of the set vhost-user protocol feature bits (bit 0 = MQ …), in bit order; unknown
/// bits are named `BIT_n`.
pub fn protocol_feature_names(bits: u64) -> Vec<&'static str> {
    set_bits(bits)
        .map(|b| {
            PROTOCOL_FEATURES
                .get(b as usize)
                .copied()
                .unwrap_or_else(|| bit_name(b))
        })
        .collect()
}

/// Name of a virtio (generic, vhost-user or virtio-gpu) feature bit.
fn virtio_feature_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0 => "VIRTIO_GPU_F_VIRGL",
        1 => "VIRTIO_GPU_F_EDID",
        2 => "VIRTIO_GPU_F_RESOURCE_UUID",
        3 => "VIRTIO_GPU_F_RESOURCE_BLOB",
        4 => "VIRTIO_GPU_F_CONTEXT_INIT",
        5 => "VIRTIO_GPU_F_BLOB_ALIGNMENT",
        24 => "VIRTIO_F_NOTIFY_ON_EMPTY",
        27 => "VIRTIO_F_ANY_LAYOUT",
        28 => "VIRTIO_RING_F_INDIRECT_DESC",
        29 => "VIRTIO_RING_F_EVENT_IDX",
        30 => "VHOST_USER_F_PROTOCOL_FEATURES",
        32 => "VIRTIO_F_VERSION_1",
        33 => "VIRTIO_F_ACCESS_PLATFORM",
        34 => "VIRTIO_F_RING_PACKED",
        35 => "VIRTIO_F_IN_ORDER",
        36 => "VIRTIO_F_ORDER_PLATFORM",
        37 => "VIRTIO_F_SR_IOV",
        38 => "VIRTIO_F_NOTIFICATION_DATA",
        39 => "VIRTIO_F_NOTIF_CONFIG_DATA",
        40 => "VIRTIO_F_RING_RESET",
        41 => "VIRTIO_F_ADMIN_VQ",
        _ => return None,
    })
}

/// Names of the set virtio feature bits as a GPU device sees them (device bits 0–5 as
/// virtio-gpu features, generic virtio bits, bit 30 = vhost-user PROTOCOL_FEATURES), in bit
/// order; unknown bits are named `BIT_n`.
pub fn feature_names(bits: u64) -> Vec<&'static str> {
    set_bits(bits)
        .map(|b| virtio_feature_name(b).unwrap_or_else(|| bit_name(b)))
        .collect()
}

fn set_bits(bits: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |b| bits & (1u64 << b) != 0)
}

fn bit_name(bit: u32) -> &'static str {
    const NAMES: [&str; 64] = [
        "BIT_0", "BIT_1", "BIT_2", "BIT_3", "BIT_4", "BIT_5", "BIT_6", "BIT_7", "BIT_8", "BIT_9",
        "BIT_10", "BIT_11", "BIT_12", "BIT_13", "BIT_14", "BIT_15", "BIT_16", "BIT_17", "BIT_18",
        "BIT_19", "BIT_20", "BIT_21", "BIT_22", "BIT_23", "BIT_24", "BIT_25", "BIT_26", "BIT_27",
        "BIT_28", "BIT_29", "BIT_30", "BIT_31", "BIT_32", "BIT_33", "BIT_34", "BIT_35", "BIT_36",
        "BIT_37", "BIT_38", "BIT_39", "BIT_40", "BIT_41", "BIT_42", "BIT_43", "BIT_44", "BIT_45",
        "BIT_46", "BIT_47", "BIT_48", "BIT_49", "BIT_50", "BIT_51", "BIT_52", "BIT_53", "BIT_54",
        "BIT_55", "BIT_56", "BIT_57", "BIT_58", "BIT_59", "BIT_60", "BIT_61", "BIT_62", "BIT_63",
    ];
    NAMES.get(bit as usize).copied().unwrap_or("BIT_?")
}

/// Vring state (index, num): SET_VRING_NUM/BASE/ENABLE/ENDIAN, GET_VRING_BASE, VRING_KICK,
/// back-end VRING_CALL/ERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct VringState {
    /// Ring index.
    pub index: u32,
    /// Size, base index, enable flag … depending on the message.
    pub num: u32,
}

impl VringState {
    /// Size on the wire.
    pub const SIZE: usize = 8;
}

/// Ring addresses (SET_VRING_ADDR), front-end virtual addresses unless IOMMU is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct VringAddr {
    /// Ring index.
    pub index: u32,
    /// Bit 0: VHOST_VRING_F_LOG.
    pub flags: u32,
    /// Descriptor table address.
    pub descriptor: u64,
    /// Used ring address.
    pub used: u64,
    /// Available ring address.
    pub available: u64,
    /// Dirty log address.
    pub log: u64,
}

impl VringAddr {
    /// Size on the wire.
    pub const SIZE: usize = 40;
}

/// One guest memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MemoryRegion {
    /// Guest-physical start.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// Front-end virtual address.
    pub user_addr: u64,
    /// Offset into the region's fd.
    pub mmap_offset: u64,
}

impl MemoryRegion {
    /// Size on the wire.
    pub const SIZE: usize = 32;

    fn read(b: &[u8], off: usize) -> Self {
        MemoryRegion {
            guest_phys_addr: le64(b, off),
            memory_size: le64(b, off + 8),
            user_addr: le64(b, off + 16),
            mmap_offset: le64(b, off + 24),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for v in [
            self.guest_phys_addr,
            self.memory_size,
            self.user_addr,
            self.mmap_offset,
        ] {
            put64(out, v);
        }
    }
}

impl std::fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gpa={:#x} size={:#x} uaddr={:#x} mmap_offset={:#x}",
            self.guest_phys_addr, self.memory_size, self.user_addr, self.mmap_offset
        )
    }
}

/// SET_MEM_TABLE payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct MemoryTable {
    /// Region count as sent.
    pub num_regions: u32,
    /// Padding as sent.
    pub padding: u32,
    /// The regions (`num_regions` after a successful decode).
    pub regions: Vec<MemoryRegion>,
}

/// ADD_MEM_REG / REM_MEM_REG payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct SingleMemoryRegion {
    /// Padding as sent.
    pub padding: u64,
    /// The region.
    pub region: MemoryRegion,
}

/// GET_CONFIG / SET_CONFIG payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DeviceConfig {
    /// Offset in config space.
    pub offset: u32,
    /// Byte count as sent.
    pub size: u32,
    /// Access flags (0 normal, 1 live migration).
    pub flags: u32,
    /// The config bytes (`size` after a successful decode).
    pub bytes: Vec<u8>,
}

/// GET_INFLIGHT_FD / SET_INFLIGHT_FD payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Inflight {
    /// Size of the area.
    pub mmap_size: u64,
    /// Offset in the fd.
    pub mmap_offset: u64,
    /// Queue count.
    pub num_queues: u16,
    /// Queue size.
    pub queue_size: u16,
}

impl Inflight {
    /// Size on the wire.
    pub const SIZE: usize = 20;
}

/// SET_LOG_BASE payload with LOG_SHMFD (`VhostUserLog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct LogArea {
    /// Size of the log.
    pub mmap_size: u64,
    /// Offset in the fd.
    pub mmap_offset: u64,
}

/// Back-end VRING_HOST_NOTIFIER_MSG payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct VringArea {
    /// Bits 0–7 ring index, bit 8 "no fd".
    pub u64_: u64,
    /// Size of the area.
    pub size: u64,
    /// Offset in the fd.
    pub offset: u64,
}

/// Back-end SHMEM_MAP / SHMEM_UNMAP payload (`VhostUserMMap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ShmemMap {
    /// Shared memory region id.
    pub shmid: u8,
    /// Padding as sent.
    pub padding: [u8; 7],
    /// Offset in the fd.
    pub fd_offset: u64,
    /// Offset in the region.
    pub shm_offset: u64,
    /// Length.
    pub len: u64,
    /// Bit 0: writable.
    pub flags: u64,
}

impl ShmemMap {
    /// Size on the wire.
    pub const SIZE: usize = 40;
}

/// SET_DEVICE_STATE_FD payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DeviceStateTransfer {
    /// 0 save, 1 load.
    pub direction: u32,
    /// 0 stopped.
    pub phase: u32,
}

/// GET_SHMEM_CONFIG reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ShmemConfig {
    /// Regions in use.
    pub nregions: u32,
    /// Padding as sent.
    pub padding: u32,
    /// Size of each region (256 entries).
    pub memory_sizes: Vec<u64>,
}

impl ShmemConfig {
    /// Size on the wire.
    pub const SIZE: usize = 8 + 256 * 8;
}

/// The u64 of SET_VRING_KICK / CALL / ERR: bits 0–7 ring index, bit 8 "no fd".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct VringFd(pub u64);

impl VringFd {
    /// Bit 8: no fd is attached (poll instead / no notification).
    pub const NOFD: u64 = 0x100;

    /// The ring index.
    pub fn index(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// True when no fd is attached.
    pub fn no_fd(self) -> bool {
        self.0 & Self::NOFD != 0
    }
}

/// A decoded vhost-user payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum VhostUserPayload {
    /// No payload.
    Empty,
    /// A plain u64 (queue count, status, acks, SEND_RARP, MTU …).
    U64(u64),
    /// Virtio feature bits (GET_FEATURES reply, SET_FEATURES).
    Features(u64),
    /// Protocol feature bits.
    ProtocolFeatures(u64),
    /// Ring index + fd flag (SET_VRING_KICK/CALL/ERR).
    VringFd(VringFd),
    /// Ring index + number.
    VringState(VringState),
    /// Ring addresses.
    VringAddr(VringAddr),
    /// Memory table.
    MemoryTable(MemoryTable),
    /// One memory region.
    SingleRegion(SingleMemoryRegion),
    /// Config space access.
    Config(DeviceConfig),
    /// Inflight area.
    Inflight(Inflight),
    /// Dirty log area.
    LogArea(LogArea),
    /// Host notifier area.
    VringArea(VringArea),
    /// A shared object UUID.
    SharedObject([u8; 16]),
    /// Shared memory map / unmap.
    ShmemMap(ShmemMap),
    /// Device state transfer.
    DeviceState(DeviceStateTransfer),
    /// Shared memory configuration.
    ShmemConfig(ShmemConfig),
    /// A payload this version does not decode (IOTLB, crypto, unknown codes, unexpected
    /// payloads on messages that have none).
    Raw(Vec<u8>),
}

/// Which decoder a message uses.
#[derive(Clone, Copy)]
enum Kind {
    Empty,
    U64,
    Features,
    ProtocolFeatures,
    VringFd,
    VringState,
    VringAddr,
    MemoryTable,
    SingleRegion,
    Config,
    Inflight,
    LogBase,
    VringArea,
    SharedObject,
    ShmemMap,
    DeviceState,
    ShmemConfig,
    Raw,
}

fn front_kind(r: VhostUserRequest, is_reply: bool) -> Kind {
    type R = VhostUserRequest;
    if is_reply {
        return match r {
            R::GET_FEATURES => Kind::Features,
            R::GET_PROTOCOL_FEATURES => Kind::ProtocolFeatures,
            R::GET_VRING_BASE => Kind::VringState,
            R::GET_CONFIG => Kind::Config,
            R::GET_INFLIGHT_FD => Kind::Inflight,
            R::SET_MEM_TABLE => Kind::MemoryTable,
            R::ADD_MEM_REG => Kind::SingleRegion,
            R::GET_SHMEM_CONFIG => Kind::ShmemConfig,
            VhostUserRequest(1..=44) => Kind::U64,
            _ => Kind::Raw,
        };
    }
    match r {
        R::SET_FEATURES => Kind::Features,
        R::SET_PROTOCOL_FEATURES => Kind::ProtocolFeatures,
        R::SET_MEM_TABLE => Kind::MemoryTable,
        R::SET_LOG_BASE => Kind::LogBase,
        R::SET_VRING_NUM
        | R::SET_VRING_BASE
        | R::GET_VRING_BASE
        | R::SET_VRING_ENABLE
        | R::SET_VRING_ENDIAN
        | R::VRING_KICK => Kind::VringState,
        R::SET_VRING_ADDR => Kind::VringAddr,
        R::SET_VRING_KICK | R::SET_VRING_CALL | R::SET_VRING_ERR => Kind::VringFd,
        R::SEND_RARP | R::NET_SET_MTU | R::SET_STATUS => Kind::U64,
        R::GET_CONFIG | R::SET_CONFIG => Kind::Config,
        R::GET_INFLIGHT_FD | R::SET_INFLIGHT_FD => Kind::Inflight,
        R::ADD_MEM_REG | R::REM_MEM_REG => Kind::SingleRegion,
        R::GET_SHARED_OBJECT => Kind::SharedObject,
        R::SET_DEVICE_STATE_FD => Kind::DeviceState,
        R::GET_FEATURES
        | R::SET_OWNER
        | R::RESET_OWNER
        | R::SET_LOG_FD
        | R::GET_PROTOCOL_FEATURES
        | R::GET_QUEUE_NUM
        | R::SET_BACKEND_REQ_FD
        | R::POSTCOPY_ADVISE
        | R::POSTCOPY_LISTEN
        | R::POSTCOPY_END
        | R::GPU_SET_SOCKET
        | R::RESET_DEVICE
        | R::GET_MAX_MEM_SLOTS
        | R::GET_STATUS
        | R::CHECK_DEVICE_STATE
        | R::GET_SHMEM_CONFIG => Kind::Empty,
        _ => Kind::Raw,
    }
}

fn backend_kind(r: BackendRequest, is_reply: bool) -> Kind {
    type B = BackendRequest;
    if is_reply {
        return if (1..=10).contains(&r.0) {
            Kind::U64
        } else {
            Kind::Raw
        };
    }
    match r {
        B::CONFIG_CHANGE_MSG => Kind::Empty,
        B::VRING_HOST_NOTIFIER_MSG => Kind::VringArea,
        B::VRING_CALL | B::VRING_ERR => Kind::VringState,
        B::SHARED_OBJECT_ADD | B::SHARED_OBJECT_REMOVE | B::SHARED_OBJECT_LOOKUP => {
            Kind::SharedObject
        }
        B::SHMEM_MAP | B::SHMEM_UNMAP => Kind::ShmemMap,
        _ => Kind::Raw,
    }
}

/// Decodes the payload of a front-end request (`is_reply == false`) or of the back-end's reply
/// to it (`is_reply == true`).
///
/// Fixed-size payloads must have exactly their size ([`DecodeError::TooShort`] /
/// [`DecodeError::LengthMismatch`]). A message without a payload that carries bytes anyway,
/// an unknown code or an undecoded payload gives [`VhostUserPayload::Raw`]; an empty payload
/// always gives [`VhostUserPayload::Empty`]. Replies to messages without a reply body are
/// REPLY_ACK u64s.
pub fn decode_vhost_user_payload(
    request: VhostUserRequest,
    is_reply: bool,
    payload: &[u8],
) -> Result<VhostUserPayload, DecodeError> {
    let kind = front_kind(request, is_reply);
    if is_reply && payload.len() == 8 && matches!(kind, Kind::MemoryTable | Kind::SingleRegion) {
        // A REPLY_ACK instead of the postcopy reply.
        return Ok(VhostUserPayload::U64(le64(payload, 0)));
    }
    decode_kind(kind, payload)
}

/// Decodes the payload of a back-end request (`is_reply == false`) or of the front-end's
/// reply to it, like [`decode_vhost_user_payload`].
pub fn decode_backend_payload(
    request: BackendRequest,
    is_reply: bool,
    payload: &[u8],
) -> Result<VhostUserPayload, DecodeError> {
    decode_kind(backend_kind(request, is_reply), payload)
}

fn decode_kind(kind: Kind, b: &[u8]) -> Result<VhostUserPayload, DecodeError> {
    use VhostUserPayload as P;
    if b.is_empty() {
        return Ok(P::Empty);
    }
    Ok(match kind {
        Kind::Empty | Kind::Raw => P::Raw(b.to_vec()),
        Kind::U64 => {
            exact(b, "u64", 8)?;
            P::U64(le64(b, 0))
        }
        Kind::Features => {
            exact(b, "features", 8)?;
            P::Features(le64(b, 0))
        }
        Kind::ProtocolFeatures => {
            exact(b, "protocol features", 8)?;
            P::ProtocolFeatures(le64(b, 0))
        }
        Kind::VringFd => {
            exact(b, "vring fd u64", 8)?;
            P::VringFd(VringFd(le64(b, 0)))
        }
        Kind::VringState => {
            exact(b, "vring state", VringState::SIZE)?;
            P::VringState(VringState {
                index: le32(b, 0),
                num: le32(b, 4),
            })
        }
        Kind::VringAddr => {
            exact(b, "vring addr", VringAddr::SIZE)?;
            P::VringAddr(VringAddr {
                index: le32(b, 0),
                flags: le32(b, 4),
                descriptor: le64(b, 8),
                used: le64(b, 16),
                available: le64(b, 24),
                log: le64(b, 32),
            })
        }
        Kind::MemoryTable => {
            need(b, "memory table", 0, 8)?;
            let num_regions = le32(b, 0);
            let raw = counted(
                b,
                "num_regions",
                0,
                8,
                u64::from(num_regions),
                MemoryRegion::SIZE,
            )?;
            exact(b, "memory table", 8 + raw.len())?;
            P::MemoryTable(MemoryTable {
                num_regions,
                padding: le32(b, 4),
                regions: raw
                    .chunks_exact(MemoryRegion::SIZE)
                    .map(|c| MemoryRegion::read(c, 0))
                    .collect(),
            })
        }
        Kind::SingleRegion => {
            exact(b, "single memory region", 40)?;
            P::SingleRegion(SingleMemoryRegion {
                padding: le64(b, 0),
                region: MemoryRegion::read(b, 8),
            })
        }
        Kind::Config => {
            need(b, "config", 0, 12)?;
            let size = le32(b, 4);
            let raw = counted(b, "size", 4, 12, u64::from(size), 1)?;
            exact(b, "config", 12 + raw.len())?;
            P::Config(DeviceConfig {
                offset: le32(b, 0),
                size,
                flags: le32(b, 8),
                bytes: raw.to_vec(),
            })
        }
        Kind::Inflight => {
            exact(b, "inflight", Inflight::SIZE)?;
            P::Inflight(Inflight {
                mmap_size: le64(b, 0),
                mmap_offset: le64(b, 8),
                num_queues: le16(b, 16),
                queue_size: le16(b, 18),
            })
        }
        Kind::LogBase => {
            if b.len() == 8 {
                P::U64(le64(b, 0))
            } else {
                exact(b, "log area", 16)?;
                P::LogArea(LogArea {
                    mmap_size: le64(b, 0),
                    mmap_offset: le64(b, 8),
                })
            }
        }
        Kind::VringArea => {
            exact(b, "vring area", 24)?;
            P::VringArea(VringArea {
                u64_: le64(b, 0),
                size: le64(b, 8),
                offset: le64(b, 16),
            })
        }
        Kind::SharedObject => {
            exact(b, "shared object uuid", 16)?;
            P::SharedObject(arr(b, 0))
        }
        Kind::ShmemMap => {
            exact(b, "VhostUserMMap", ShmemMap::SIZE)?;
            P::ShmemMap(ShmemMap {
                shmid: b.first().copied().unwrap_or(0),
                padding: arr(b, 1),
                fd_offset: le64(b, 8),
                shm_offset: le64(b, 16),
                len: le64(b, 24),
                flags: le64(b, 32),
            })
        }
        Kind::DeviceState => {
            exact(b, "device state transfer", 8)?;
            P::DeviceState(DeviceStateTransfer {
                direction: le32(b, 0),
                phase: le32(b, 4),
            })
        }
        Kind::ShmemConfig => {
            exact(b, "shmem config", ShmemConfig::SIZE)?;
            P::ShmemConfig(ShmemConfig {
                nregions: le32(b, 0),
                padding: le32(b, 4),
                memory_sizes: (0..256).map(|i| le64(b, 8 + 8 * i)).collect(),
            })
        }
    })
}

impl VhostUserPayload {
    /// The payload bytes (inverse of the decoders).
    pub fn encode(&self) -> Vec<u8> {
        use VhostUserPayload as P;
        let mut out = Vec::new();
        match self {
            P::Empty => {}
            P::U64(v) | P::Features(v) | P::ProtocolFeatures(v) | P::VringFd(VringFd(v)) => {
                put64(&mut out, *v)
            }
            P::VringState(s) => {
                put32(&mut out, s.index);
                put32(&mut out, s.num);
            }
            P::VringAddr(a) => {
                put32(&mut out, a.index);
                put32(&mut out, a.flags);
                for v in [a.descriptor, a.used, a.available, a.log] {
                    put64(&mut out, v);
                }
            }
            P::MemoryTable(t) => {
                put32(&mut out, t.num_regions);
                put32(&mut out, t.padding);
                t.regions.iter().for_each(|r| r.write(&mut out));
            }
            P::SingleRegion(s) => {
                put64(&mut out, s.padding);
                s.region.write(&mut out);
            }
            P::Config(c) => {
                put32(&mut out, c.offset);
                put32(&mut out, c.size);
                put32(&mut out, c.flags);
                out.extend_from_slice(&c.bytes);
            }
            P::Inflight(i) => {
                put64(&mut out, i.mmap_size);
                put64(&mut out, i.mmap_offset);
                put16(&mut out, i.num_queues);
                put16(&mut out, i.queue_size);
            }
            P::LogArea(l) => {
                put64(&mut out, l.mmap_size);
                put64(&mut out, l.mmap_offset);
            }
            P::VringArea(a) => {
                for v in [a.u64_, a.size, a.offset] {
                    put64(&mut out, v);
                }
            }
            P::SharedObject(u) => out.extend_from_slice(u),
            P::ShmemMap(m) => {
                out.push(m.shmid);
                out.extend_from_slice(&m.padding);
                for v in [m.fd_offset, m.shm_offset, m.len, m.flags] {
                    put64(&mut out, v);
                }
            }
            P::DeviceState(d) => {
                put32(&mut out, d.direction);
                put32(&mut out, d.phase);
            }
            P::ShmemConfig(c) => {
                put32(&mut out, c.nregions);
                put32(&mut out, c.padding);
                c.memory_sizes.iter().for_each(|v| put64(&mut out, *v));
            }
            P::Raw(b) => out.extend_from_slice(b),
        }
        out
    }
}

impl std::fmt::Display for VhostUserPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use VhostUserPayload as P;
        match self {
            P::Empty => Ok(()),
            P::U64(v) => write!(f, "{v:#x}"),
            P::Features(v) => write!(f, "{v:#x} [{}]", feature_names(*v).join(" ")),
            P::ProtocolFeatures(v) => {
                write!(f, "{v:#x} [{}]", protocol_feature_names(*v).join(" "))
            }
            P::VringFd(v) => {
                write!(f, "index={}", v.index())?;
                if v.no_fd() {
                    f.write_str(" nofd")?;
                }
                Ok(())
            }
            P::VringState(s) => write!(f, "index={} num={}", s.index, s.num),
            P::VringAddr(a) => write!(
                f,
                "index={} flags={:#x} desc={:#x} used={:#x} avail={:#x} log={:#x}",
                a.index, a.flags, a.descriptor, a.used, a.available, a.log
            ),
            P::MemoryTable(t) => {
                write!(f, "regions={}", t.num_regions)?;
                for (i, r) in t.regions.iter().enumerate() {
                    write!(f, " [{i}: {r}]")?;
                }
                Ok(())
            }
            P::SingleRegion(s) => write!(f, "{}", s.region),
            P::Config(c) => write!(
                f,
                "offset={} size={} flags={:#x}",
                c.offset, c.size, c.flags
            ),
            P::Inflight(i) => write!(
                f,
                "mmap_size={:#x} mmap_offset={:#x} queues={} queue_size={}",
                i.mmap_size, i.mmap_offset, i.num_queues, i.queue_size
            ),
            P::LogArea(l) => write!(
                f,
                "mmap_size={:#x} mmap_offset={:#x}",
                l.mmap_size, l.mmap_offset
            ),
            P::VringArea(a) => write!(
                f,
                "index={} size={:#x} offset={:#x}",
                a.u64_ & 0xff,
                a.size,
                a.offset
            ),
            P::SharedObject(u) => {
                f.write_str("uuid=")?;
                u.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            P::ShmemMap(m) => write!(
                f,
                "shmid={} fd_offset={:#x} shm_offset={:#x} len={:#x} flags={:#x}",
                m.shmid, m.fd_offset, m.shm_offset, m.len, m.flags
            ),
            P::DeviceState(d) => write!(f, "direction={} phase={}", d.direction, d.phase),
            P::ShmemConfig(c) => {
                write!(f, "nregions={}", c.nregions)?;
                let n = (c.nregions as usize).min(c.memory_sizes.len());
                for s in c.memory_sizes.iter().take(n) {
                    write!(f, " {s:#x}")?;
                }
                Ok(())
            }
            P::Raw(b) => write!(f, "raw len={}", b.len()),
        }
    }
}
