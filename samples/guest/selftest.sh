#!/usr/bin/env bash
# selftest.sh: boot every workload of the vgt test guest against a vhost-user GPU backend and
# check what came out. Run samples/guest/setup.sh once before.
#
#   selftest.sh [--backend 'CMD with {socket}'] [--keep DIR] [WORKLOAD...]
#
# --backend  command that starts a backend listening on {socket}, a fresh one per boot
#            (default: /usr/lib/qemu/vhost-user-gpu --socket-path {socket})
# --keep     keep serial logs, screendumps and backend logs in DIR (default: a temporary
#            directory, removed on success)
# WORKLOAD   boot fb modes cursor (default all). modes boots with 2 scanouts.
#
# Per workload: start the backend, run-guest.sh with QMP, wait for VGT-WORKLOAD-DONE on the
# serial log, take QMP screendumps and compare them with check-fb.py (fb: final frame; modes:
# head 0 and head 1; cursor: head 0 under the cursor), QMP quit, then check the serial log
# (`[drm] Initialized virtio_gpu`, no `*ERROR*`) and both exit statuses. Prints one line per
# workload with its timings; exit status 1 if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
backend='/usr/lib/qemu/vhost-user-gpu --socket-path {socket}'
keep=
workloads=()
while (($#)); do
    case $1 in
        --backend) backend=${2:?}; shift 2 ;;
        --keep) keep=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        boot | fb | modes | cursor) workloads+=("$1"); shift ;;
        *) echo "selftest.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
((${#workloads[@]})) || workloads=(boot fb modes cursor)
if [[ -n $keep ]]; then
    mkdir -p "$keep"
    dir=$(cd "$keep" && pwd)
else
    dir=$(mktemp -d --tmpdir vgt-selftest.XXXXXX)
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

failures=0
fail() {
    echo "selftest.sh: $workload: FAILED: $*" >&2
    failures=$((failures + 1))
}

# shot HEAD PATTERN-ARGS...: screendump HEAD and compare; the last frame may still be on its
# way to QEMU when DONE is printed, so retry for a few seconds.
shot() {
    local head=$1 out=$work/head$1.ppm result
    shift
    for _ in 1 2 3 4 5 6; do
        if ! "$here/qmp.py" "$qmp" screendump "$out" --device gpu0 --head "$head"; then
            fail "screendump of head $head failed"
            return 0
        fi
        if result=$("$here/check-fb.py" "$@" "$out"); then
            checks+=("head $head ok")
            return 0
        fi
        sleep 0.5
    done
    fail "$result"
}

for workload in "${workloads[@]}"; do
    work=$dir/$workload
    rm -rf "$work"
    mkdir -p "$work"
    sock=$work/gpu.sock qmp=$work/qmp.sock log=$work/serial.log
    outputs=1
    [[ $workload == modes ]] && outputs=2
    checks=()

    bash -c "${backend//\{socket\}/$sock}" >"$work/backend.log" 2>&1 &
    backend_pid=$!
    for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
    if [[ ! -S $sock ]]; then
        fail "backend did not create $sock within 10 s (log: $work/backend.log)"
        kill "$backend_pid" 2>/dev/null || true
        continue
    fi

    t0=$(now)
    "$here/run-guest.sh" --socket "$sock" --workload "$workload" --outputs "$outputs" \
        --qmp "$qmp" --hold 120 --serial-log "$log" --timeout 240 2>"$work/qemu.log" &
    guest_pid=$!
    while kill -0 "$guest_pid" 2>/dev/null && ! grep -q 'VGT-WORKLOAD-\(DONE\|FAILED\)' "$log" 2>/dev/null; do
        sleep 0.1
    done
    t_done=$(now)

    if grep -q "VGT-WORKLOAD-DONE $workload" "$log"; then
        case $workload in
            fb) shot 0 fb --size 1280x800 ;;
            modes)
                shot 0 drm --size 800x600 --scanout 0 --variant 1
                shot 1 drm --size 1024x768 --scanout 1 --variant 0
                ;;
            cursor) shot 0 drm --size 1280x800 --scanout 0 --variant 0 ;;
        esac
        "$here/qmp.py" "$qmp" quit || fail "QMP quit failed"
    fi
    guest_rc=0
    wait "$guest_pid" || guest_rc=$?
    t_end=$(now)
    backend_rc=0
    for _ in $(seq 50); do kill -0 "$backend_pid" 2>/dev/null || break; sleep 0.1; done
    kill "$backend_pid" 2>/dev/null && fail "backend still running after QEMU exited"
    wait "$backend_pid" || backend_rc=$?

    ((guest_rc == 0)) || fail "run-guest.sh exited $guest_rc ($(tail -n 1 "$work/qemu.log"))"
    ((backend_rc == 0)) || fail "backend exited $backend_rc (log: $work/backend.log)"
    grep -q '\[drm\] Initialized virtio_gpu' "$log" || fail "no '[drm] Initialized virtio_gpu' in $log"
    ! grep -q '\*ERROR\*' "$log" || fail "$(grep -m1 '\*ERROR\*' "$log")"
    uptime=$(tr -d '\r' <"$log" | awk '$1 == "VGT-UPTIME" { print $2 }')
    printf 'selftest.sh: %-6s outputs %d: done %5s s after start (guest uptime %s s), total %5s s%s\n' \
        "$workload" "$outputs" "$(elapsed "$t0" "$t_done")" "${uptime:-?}" "$(elapsed "$t0" "$t_end")" \
        "$( ((${#checks[@]})) && printf '; screendump %s' "${checks[*]}")"
done

if ((failures)); then
    echo "selftest.sh: $failures check(s) failed; logs in $dir" >&2
    exit 1
fi
[[ -n $keep ]] || rm -rf "$dir"
