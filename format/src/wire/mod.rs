//! The virtio-gpu wire protocol: typed commands and responses, vhost-user and vhost-user-gpu message codes.
//!
//! Every decoder here takes the bytes exactly as they were on the wire and every encoder gives
//! them back: for any input that decodes, `encode(decode(bytes)) == bytes`. Bytes the protocol
//! does not define (padding, data after a struct) are kept, never dropped, so a decoded view can
//! always be checked against the recorded bytes.
//!
//! - [`header`]: the 24-byte control header and the command/response codes.
//! - [`types`]: the small shared types (rectangles, boxes, memory entries, formats, capsets,
//!   blob flags, map info).
//! - [`command`]: one struct per command and [`Request`] (header + command + trailing bytes).
//! - [`response`]: the response bodies and [`Response`].
//! - [`vhost_user`]: vhost-user request codes, feature names and payload decoders.
//! - [`gpu_socket`]: the vhost-user-gpu display socket messages.
//! - [`edid`]: a generator for EDID base blocks.
//!
//! Layouts follow the virtio spec (`virtio_gpu.h`); all integers are little-endian.

pub mod command;
pub mod edid;
pub mod gpu_socket;
pub mod header;
pub mod response;
pub mod types;
pub mod vhost_user;

mod bytes;
#[cfg(test)]
mod tests;

pub use command::{
    CmdSubmit, Command, CtxCreate, CtxResource, GetCapset, GetCapsetInfo, GetEdid, Request,
    ResourceAssignUuid, ResourceAttachBacking, ResourceCreate2d, ResourceCreate3d,
    ResourceCreateBlob, ResourceDetachBacking, ResourceFlush, ResourceMapBlob, ResourceUnmapBlob,
    ResourceUnref, SetScanout, SetScanoutBlob, TransferHost3d, TransferToHost2d, UpdateCursor,
};
pub use gpu_socket::{
    GpuSocketPayload, GpuSocketRequest, decode_gpu_socket_payload, encode_gpu_socket_message,
};
pub use header::{CommandType, CtrlHeader, FLAG_FENCE, FLAG_INFO_RING_IDX, ResponseType};
pub use response::{
    CapsetInfo, DisplayInfo, DisplayOne, Edid, MapInfoResponse, Response, ResponseBody,
};
pub use types::{BlobFlags, BlobMem, Box3d, CapsetId, CursorPos, Format, MapInfo, MemEntry, Rect};
pub use vhost_user::{
    BackendRequest, VhostUserPayload, VhostUserRequest, decode_vhost_user_payload, feature_names,
    protocol_feature_names,
};

/// Why bytes could not be decoded.
///
/// Offsets count from the first byte of the input handed to the decoder (for a [`Request`] or
/// [`Response`]: the first byte of the control header).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before a struct does.
    #[error("{what} at offset {offset} needs {needed} bytes, only {found} present")]
    TooShort {
        /// The struct or field that did not fit.
        what: &'static str,
        /// Where it starts in the input.
        offset: usize,
        /// Its size in bytes.
        needed: usize,
        /// Bytes available from `offset` to the end of the input.
        found: usize,
    },
    /// A count field asks for more elements than the remaining bytes hold.
    #[error("{what} at offset {offset} is {count}, but only {max_fit} fit in the remaining bytes")]
    CountTooLarge {
        /// The count field.
        what: &'static str,
        /// Offset of the count field in the input.
        offset: usize,
        /// The count read from the input.
        count: u64,
        /// How many elements the remaining bytes can hold.
        max_fit: u64,
    },
    /// A payload whose size is fixed by its message has a different length.
    #[error("{what} must be {expected} bytes, found {found}")]
    LengthMismatch {
        /// The payload.
        what: &'static str,
        /// The size the protocol defines.
        expected: usize,
        /// The size present.
        found: usize,
    },
}

/// Serde helper: serialise a fixed byte array of any length as a sequence.
pub(crate) fn serialize_byte_array<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(bytes.iter())
}

/// Serde helper for boxed byte arrays (serde's `serialize_with` hands over `&Box<_>`).
#[allow(clippy::borrowed_box)]
pub(crate) fn serialize_boxed_byte_array<S: serde::Serializer, const N: usize>(
    bytes: &Box<[u8; N]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(bytes.iter())
}
