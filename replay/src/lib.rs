//! vgt-replay: replays a vgt capture through vgt-device without the VM, deterministically, and
//! verifies it against the recording.
//!
//! [`Replayer`] walks a [`vgt_format::CaptureReader`] command by command in recorded submission
//! order. Each command is fed exactly the guest bytes the capture recorded for it (guest memory
//! is rebuilt from the memory-read records in a [`SparseMemory`]), the host's display answers
//! come from the recorded GPU-socket replies, and fences are resolved as the device signals
//! them, never by wall clock. Every response is compared with the recorded one (type and
//! payload), every displayed frame with the recorded frame's hash, every fence completion with
//! the recorded one; the findings come back as a [`ReplayReport`] of structured
//! [`Divergence`]s and [`Unsupported`] commands.
//!
//! - [`engine`]: the replayer, its options and observer.
//! - [`memory`]: guest memory rebuilt from recorded reads.
//! - [`report`]: divergences and the summary.
//! - [`frames`]: PNG output of frames in every virtio-gpu format (`vgt_format::image`).

pub mod backend;
pub mod engine;
pub use vgt_format::image as frames;
pub mod memory;
pub mod report;
mod verify;

pub use engine::{
    DECODE_APART_MIN, DEFAULT_SCANOUT_SIZE, MAX_DECODE_THREADS, Quiet, ReplayError, ReplayObserver,
    ReplayOptions, Replayer, Timing, VERIFY_THREAD_CORES, decode_threads_for, device_config_for,
};
pub use memory::SparseMemory;
pub use report::{Divergence, DivergenceKind, ReplayReport, Unsupported};
