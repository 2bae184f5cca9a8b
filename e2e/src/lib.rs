//! End-to-end harness for vgt: boots the real test guest of `samples/guest/` under QEMU with its
//! virtio-gpu served by the `vgt-capture` binary, talks QMP to QEMU, and compares what the
//! capture recorded with what QEMU displayed and what the guest drew.
//!
//! This crate is dev-only (`publish = false`): its integration tests (`tests/real_guest.rs`,
//! `tests/samples.rs`) are the project's end-to-end tests. The guest needs QEMU >= 8, Debian's
//! kernel and an initramfs, all prepared by `samples/guest/setup.sh`; [`guest::GuestPaths::load`]
//! says so when they are missing.

pub mod backends;
pub mod capture;
pub mod guest;
pub mod image;
pub mod qmp;

use std::path::PathBuf;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
