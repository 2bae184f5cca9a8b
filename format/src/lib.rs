//! vgt-format: the virtio-gpu wire protocol, the vgt capture file, and the device state model.
//!
//! This crate is the bottom of vgt's dependency graph. It knows the bytes — what a virtio-gpu
//! command, response or vhost-user message looks like on the wire, and how a capture file is laid
//! out on disk — and nothing about vhost-user sockets, renderers or user interfaces.
//!
//! - [`wire`]: typed decode/encode of every virtio-gpu command and response, plus the names of the
//!   vhost-user and vhost-user-gpu messages.
//! - [`record`]: the records a capture is made of (commands, responses, memory reads, fences,
//!   frames, lifecycle events …).
//! - [`file`](mod@file): the append-only, checksummed, crash-tolerant container that stores records, with
//!   content-addressed compressed payloads and an index for random access.
//! - [`hash`]: [`hash::content_hash`], the XXH3-128 content hash stored for blobs and frames.
//! - [`state`]: folds records into the device state (resources, contexts, scanouts, fences) at
//!   any record, and [`state::StateIndex`] checkpoints it for fast random access.
//! - `image` (feature `png`): PNG encoding of frames and cursor images in every virtio-gpu
//!   format.
//! - [`summary`]: a fixed-size integer summary of each record, for tools that index and filter
//!   whole captures.
//! - [`words`]: which of a backend's output lines say why it failed.
#![forbid(unsafe_code)]

pub mod file;
pub mod hash;
#[cfg(feature = "png")]
pub mod image;
pub mod record;
pub mod state;
pub mod summary;
pub mod wire;
pub mod words;

pub use file::{CaptureReader, CaptureWriter, Compression, SyncPolicy, WriterOptions};
pub use record::{Payload, Record, RecordBody, RecordId};

#[cfg(feature = "test-utils")]
pub mod testing;
