//! vgt-capture: a vhost-user GPU backend that QEMU's `vhost-user-gpu-pci` can use, which records
//! every virtio-gpu command, response, guest-memory read, display message and vhost-user message
//! into a vgt capture file while it serves the guest with vgt-device.
//!
//! - [`server`]: the listening loop (signals, status line, one capture file per connection).
//! - [`session`]: one connection: session start record, relay threads, daemon, shutdown.
//! - [`relay`]: records and forwards vhost-user messages between QEMU and the daemon.
//! - [`backend`]: the `VhostUserBackendMut` that walks chains, records, executes and responds.
//! - [`chain`]: descriptor-chain walking with typed errors for malformed chains.
//! - [`display`]: framebuffer copies and vhost-user-gpu message layouts.
//! - [`gpu_socket`]: the vhost-user-gpu display socket client (with timeouts).
//! - [`proxy`]: proxy mode (between QEMU and an existing backend, shadow virtqueues).
//! - [`recorder`]: the thread-safe record appender over a [`recorder::RecordSink`].
//! - [`sink`]: the capture file sinks; [`mapped_file`]: crash-safe output through a shared
//!   mapping; [`writer_thread`]: buffered mode's writer thread.

//!
//! # What is recorded, and how
//! - vhost-user messages: the relay owns QEMU's connection and forwards every message (fds
//!   included) to the vhost-user-backend daemon over a private socket, recording header fields
//!   and payload bytes exactly as they travelled, both directions (`VhostUser` records).
//!   vhost-user-backend builds its request handler privately, so it cannot be wrapped.
//! - Display socket: spoken by [`gpu_socket`] on a duplicate of the fd QEMU passed with
//!   GPU_SET_SOCKET; requests are recorded as sent, replies as received (`GpuSocket`, with
//!   `BackendRequest` / `BackendReply` directions).
//! - Chains: walked by [`chain`]; `CommandRecord::descriptors` lists ring descriptors in chain
//!   order and, for an indirect descriptor, that descriptor followed by its table's entries. The
//!   command is appended before the device runs it. A chain that cannot be walked is recorded
//!   with the descriptors read so far and an empty request, then a `ValidationError` lifecycle
//!   record, and is returned with used length 0.
//! - Frames: the whole scanout (x8r8g8b8, stride width*4) after every display update; repeats
//!   cost nothing thanks to the writer's content deduplication.
//! - Lifecycle: Connect, DriverOk (GPU_SET_SOCKET / SET_STATUS), QueueStart/Stop
//!   (SET_VRING_ENABLE, GET_VRING_BASE), Reset, ValidationError, Error, Crash, Disconnect, End.

pub mod backend;
pub mod chain;
pub mod direct_io;
pub mod display;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod gpu_socket;
pub mod mapped_file;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod server;
pub mod session;
pub mod sink;
pub mod writer_thread;

/// Renderer description written in the session start record.
pub const RENDERER: &str = "rutabaga_gfx 0.1.85 2d";

/// Errors of the capture backend and server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The device could not be created.
    #[error("device: {detail}")]
    Device {
        /// What the device said.
        detail: String,
    },
    /// The vhost-user daemon could not be started.
    #[error("vhost-user daemon: {detail}")]
    Daemon {
        /// What the daemon said.
        detail: String,
    },
    /// Recording failed.
    #[error(transparent)]
    Record(#[from] recorder::RecordError),
}

impl CaptureError {
    /// An I/O error with context.
    pub fn io(context: &str, source: std::io::Error) -> Self {
        CaptureError::Io {
            context: context.to_owned(),
            source,
        }
    }
}

/// `len` incompressible bytes (xorshift64, the low byte of each step), different for each
/// `seed`: blobs that nothing deduplicates or compresses, for the sink and file tests.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
