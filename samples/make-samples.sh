#!/usr/bin/env bash
# make-samples.sh: regenerate the real captures in samples/ (see samples/README.md), one per
# workload of the test guest, each by one scripts/capture-demo command. Needs what
# scripts/capture-demo needs (it runs samples/guest/setup.sh first).
#
#   samples/make-samples.sh [boot|fb|modes|cursor]...   (default: all four)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
demo=$here/../scripts/capture-demo

# The exact commands; samples/README.md lists the same ones.
make_one() {
    case $1 in
        boot) "$demo" "${extra[@]}" --workload boot -o "$here/boot.vgt" ;;
        # 3 frames at 640x480 instead of 50 at 1280x800: every frame costs about 0.8 MB here
        # (its pixels are stored as memory read and frame record; the display update shares the latter).
        fb) "$demo" "${extra[@]}" --workload fb --fb-frames 3 --append video=Virtual-1:640x480 -o "$here/fb.vgt" ;;
        modes) "$demo" "${extra[@]}" --workload modes --outputs 2 -o "$here/modes.vgt" ;;
        cursor) "$demo" "${extra[@]}" --workload cursor -o "$here/cursor.vgt" ;;
        *) echo "make-samples.sh: unknown workload '$1'" >&2; exit 2 ;;
    esac
}

(($#)) || set -- boot fb modes cursor
extra=() # the first run prepares the guest (setup.sh), the others skip that
for w in "$@"; do
    make_one "$w" >/dev/null
    extra=(--no-setup)
    printf 'make-samples.sh: samples/%s.vgt  %s\n' "$w" "$(du -h "$here/$w.vgt" | cut -f1)"
done
