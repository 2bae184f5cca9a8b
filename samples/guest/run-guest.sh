#!/usr/bin/env bash
# run-guest.sh: boot the vgt test guest under QEMU (TCG) with its GPU served by a vhost-user
# backend that already listens on --socket. Run samples/guest/setup.sh once before.
#
#   run-guest.sh --socket SOCK --workload boot|fb|modes|cursor [--qmp QMP_SOCK] [--outputs N]
#                [--serial-log FILE] [--timeout SECS] [--hold SECS] [--pidfile FILE]
#                [--append PARAM]... [--reboot]
#
# --qmp      QEMU gets `-qmp unix:QMP_SOCK,server=on,wait=off`; the guest then holds for
#            --hold seconds (default 60 with --qmp, else 0) after printing VGT-WORKLOAD-DONE, so
#            a test can take a screendump and end the run with QMP `quit` (see qmp.py).
# --outputs  number of scanouts (device max_outputs, default 1); scanouts 2..N are forced
#            connected on the kernel command line (QEMU reports only head 0 as enabled).
# --serial-log  where the guest's serial console goes (default: a temporary file, printed at
#            the end); a test can follow it while the guest runs.
# --timeout  kill QEMU after SECS seconds (default 120) and exit 124.
# --pidfile  QEMU writes its pid there (-pidfile), so that a test can kill it for sure.
# --append   one more kernel parameter (repeatable), e.g. vgt.fb_frames=10.
# --reboot   a guest reset (QMP system_reset) reboots the guest instead of ending QEMU
#            (no -no-reboot); the workload then runs again after the second boot.
# Exit status: QEMU's, except 124 on timeout and 3 when QEMU exited 0 but the serial log has no
# `VGT-WORKLOAD-DONE <workload>` line (the workload failed or the guest panicked).
set -euo pipefail

# shellcheck source=samples/guest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() {
    echo "run-guest.sh: error: $*" >&2
    exit 2
}

socket= workload= qmp= outputs=1 serial_log= timeout=120 hold= pidfile= reboot=no
extra_append=()
while (($#)); do
    case $1 in
        --socket) socket=${2:?}; shift 2 ;;
        --workload) workload=${2:?}; shift 2 ;;
        --qmp) qmp=${2:?}; shift 2 ;;
        --outputs) outputs=${2:?}; shift 2 ;;
        --serial-log) serial_log=${2:?}; shift 2 ;;
        --timeout) timeout=${2:?}; shift 2 ;;
        --hold) hold=${2:?}; shift 2 ;;
        --pidfile) pidfile=${2:?}; shift 2 ;;
        --append) extra_append+=("${2:?}"); shift 2 ;;
        --reboot) reboot=yes; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ -n $socket ]] || die "--socket SOCK is required"
[[ -S $socket ]] || die "$socket is not a socket: start the vhost-user backend first"
case $workload in boot | fb | modes | cursor) ;; *) die "--workload must be boot, fb, modes or cursor" ;; esac
[[ $outputs =~ ^[1-9][0-9]*$ && $outputs -le 16 ]] || die "--outputs must be 1..16"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ -z $hold ]] && { [[ -n $qmp ]] && hold=60 || hold=0; }
[[ $hold =~ ^[0-9]+$ ]] || die "--hold must be a number of seconds"

[[ -r $VGT_GUEST_PATHS ]] || die "no $VGT_GUEST_PATHS: run samples/guest/setup.sh first"
# shellcheck disable=SC1090
source "$VGT_GUEST_PATHS"
[[ $(guest_key "$VGT_GUEST_KERNEL_ID") == "$VGT_GUEST_KEY" ]] ||
    die "the initramfs is older than samples/guest/{init,vgt-drm-test.c,setup.sh}: run setup.sh again"

append="panic=-1 loglevel=4 vgt.workload=$workload vgt.hold=$hold"
if [[ $workload == boot ]]; then
    # Kernel messages on the framebuffer console too; the last console= is /dev/console.
    # No blinking text cursor: its redraws would keep changing the screen after the workload.
    append="console=tty0 console=ttyS0 vt.global_cursor_default=0 $append"
else
    append="console=ttyS0 $append"
fi
for ((i = 2; i <= outputs; i++)); do
    append+=" video=Virtual-$i:1024x768e"
done
for a in "${extra_append[@]}"; do
    [[ $a =~ ^[A-Za-z0-9_.,:=-]+$ ]] || die "--append '$a': one kernel parameter, no spaces or quotes"
    append+=" $a"
done

print_log=no
if [[ -z $serial_log ]]; then
    serial_log=$(mktemp --tmpdir vgt-serial.XXXXXX)
    print_log=yes
fi
: >"$serial_log"

no_reboot=(-no-reboot)
[[ $reboot == no ]] || no_reboot=()
qemu_args=(
    -accel tcg -cpu max -smp 1 -nodefaults "${no_reboot[@]}" -no-user-config
    -display none -vga none -serial "file:$serial_log" -monitor none
    -kernel "$VGT_GUEST_KERNEL" -initrd "$VGT_GUEST_INITRD"
    -m 512M -object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem
    -chardev "socket,id=vgpu,path=$socket" -device "vhost-user-gpu-pci,id=gpu0,chardev=vgpu,max_outputs=$outputs"
    -append "$append"
)
[[ -z $qmp ]] || qemu_args+=(-qmp "unix:$qmp,server=on,wait=off")
[[ -z $pidfile ]] || qemu_args+=(-pidfile "$pidfile")

status=0
timeout -k 10 "$timeout" "$VGT_QEMU" "${qemu_args[@]}" || status=$?

done=no
tr -d '\r' <"$serial_log" | grep -qx "VGT-WORKLOAD-DONE $workload" && done=yes
if [[ $print_log == yes ]]; then
    cat "$serial_log"
    rm -f "$serial_log"
fi
if ((status == 124 || status == 137)); then
    echo "run-guest.sh: error: guest did not finish within $timeout s" >&2
    exit 124
elif ((status != 0)); then
    echo "run-guest.sh: error: QEMU exited with status $status" >&2
    exit "$status"
elif [[ $done == no ]]; then
    echo "run-guest.sh: error: the serial log has no 'VGT-WORKLOAD-DONE $workload' line" >&2
    exit 3
fi
