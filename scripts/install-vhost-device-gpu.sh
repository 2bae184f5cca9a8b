#!/usr/bin/env bash
# Installs rust-vmm's vhost-device-gpu (2D/null mode only, no virglrenderer) into a cache outside
# the repository, for the proxy-mode tests. Idempotent: prints the binary path and exits 0 when it
# is already there. Runs as root or a normal user (CI may run it as root).
set -euo pipefail
VERSION="${VHOST_DEVICE_GPU_VERSION:-0.2.0}"
ROOT="${VGT_CACHE:-$HOME/.cache/vgt}/vhost-device-gpu"
BIN="$ROOT/bin/vhost-device-gpu"
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$ROOT"
# A target dir of its own so it never collides with the workspace's build.
CARGO_TARGET_DIR="$ROOT/build" cargo install vhost-device-gpu --version "$VERSION" --locked \
    --no-default-features --root "$ROOT" >"$ROOT/install.log" 2>&1 || {
    echo "install-vhost-device-gpu: cargo install failed, see $ROOT/install.log" >&2
    tail -20 "$ROOT/install.log" >&2
    exit 1
}
rm -rf "$ROOT/build"
echo "$BIN"
