//! The real vhost-user GPU backends the tests run behind the proxy and under replay: QEMU's C
//! backend (installed with QEMU by `samples/guest/setup.sh`) and rust-vmm's vhost-device-gpu
//! (installed by `scripts/install-vhost-device-gpu.sh` into a cache outside the repository).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::workspace_root;

/// QEMU's own vhost-user GPU backend.
pub const QEMU_GPU_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";

/// vhost-device-gpu's binary, installed when missing; None (with the reason on stderr) when
/// the install fails.
pub fn vhost_device_gpu() -> Option<PathBuf> {
    let out = Command::new(workspace_root().join("scripts/install-vhost-device-gpu.sh"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "vhost-device-gpu install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
