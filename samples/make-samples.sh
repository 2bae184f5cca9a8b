#!/usr/bin/env bash
# make-samples.sh: regenerate the real captures in samples/ (see samples/README.md), one per
# workload of the test guest, each recorded by one scripts/capture-demo command (lz4, as
# vgt-capture records by default) and then shrunk by `vgt-inspect repack --compression zstd:19`
# (2.6-6x smaller; recorded at zstd:19 the fb and modes workloads end early). Needs what
# scripts/capture-demo needs (it runs samples/guest/setup.sh first).
#
#   samples/make-samples.sh [boot|fb|modes|cursor]...   (default: all four)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
demo=$root/scripts/capture-demo
(cd "$root" && cargo build --release --locked -q -p vgt-inspect)
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
inspect=$target/release/vgt-inspect
work=$(mktemp -d --tmpdir vgt-samples.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The exact commands; samples/README.md lists the same ones (with $work/ as the current
# directory).
make_one() {
    case $1 in
        boot) "$demo" "${extra[@]}" --workload boot -o "$work/boot.vgt" ;;
        # 3 frames at 640x480 instead of 50 at 1280x800: every distinct frame is stored twice
        # (as memory read and as frame record; the display update shares the latter).
        fb) "$demo" "${extra[@]}" --workload fb --fb-frames 3 --append video=Virtual-1:640x480 -o "$work/fb.vgt" ;;
        modes) "$demo" "${extra[@]}" --workload modes --outputs 2 -o "$work/modes.vgt" ;;
        cursor) "$demo" "${extra[@]}" --workload cursor -o "$work/cursor.vgt" ;;
        *) echo "make-samples.sh: unknown workload '$1'" >&2; exit 2 ;;
    esac
    "$inspect" repack "$work/$1.vgt" "$here/$1.vgt" --compression zstd:19
}

(($#)) || set -- boot fb modes cursor
extra=() # the first run prepares the guest (setup.sh), the others skip that
for w in "$@"; do
    make_one "$w" >/dev/null
    extra=(--no-setup)
    printf 'make-samples.sh: samples/%s.vgt  %s\n' "$w" "$(du -h "$here/$w.vgt" | cut -f1)"
done
