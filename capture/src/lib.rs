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

pub mod backend;
pub mod chain;
pub mod display;
pub mod gpu_socket;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod server;
pub mod session;
pub mod sink;

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
