# lib.sh: helpers shared by setup.sh and run-guest.sh (sourced, not executed).

# Directory of this harness and of its cache (kernel, initramfs, debs; never inside the repo).
VGT_GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VGT_GUEST_CACHE=${VGT_CACHE:-$HOME/.cache/vgt}/guest
VGT_GUEST_PATHS=$VGT_GUEST_CACHE/paths.env

# guest_key KERNEL_ID: hash naming the initramfs built from the current /init, guest program
# and build recipe (setup.sh) for the given kernel. Any change to one of them gives a new initramfs.
guest_key() {
    {
        printf 'kernel %s\n' "$1"
        cat "$VGT_GUEST_DIR/init" "$VGT_GUEST_DIR/vgt-drm-test.c" "$VGT_GUEST_DIR/setup.sh"
    } | sha256sum | cut -c1-16
}
