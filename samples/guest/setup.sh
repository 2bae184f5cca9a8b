#!/usr/bin/env bash
# setup.sh: prepare a Debian 12 (bookworm) host to boot a real Linux guest against a vhost-user
# GPU backend (see /work/shared/reference/real-guest.md and samples/guest/NOTES.md).
#
# Idempotent. Needs root only while something is missing (it installs packages with apt-get):
#   - QEMU >= 8 from bookworm-backports (the suite is added with the URI of the configured
#     Debian source): qemu-system-x86 qemu-system-gui qemu-system-common qemu-system-data
#   - from bookworm: busybox-static kmod cpio xz-utils gcc libc6-dev linux-libc-dev python3
# Then, in ${VGT_CACHE:-$HOME/.cache/vgt}/guest (never in the repository):
#   - kernel/<package>_<version>/: Debian's guest kernel (the package linux-image-amd64
#     depends on) and the matching linux-headers-*-common (for the DRM uapi headers, which
#     linux-libc-dev lacks), fetched with `apt-get download` and unpacked with `dpkg -x`; kept
#     are the xz payload of vmlinuz as an uncompressed ELF vmlinux (QEMU boots that through
#     PVH, skipping ~4 s of decompression), the needed modules and the DRM headers
#   - initramfs-<key>.cpio.gz: static busybox, virtio_pci/virtio_gpu modules in load order,
#     samples/guest/init as /init and a static build of samples/guest/vgt-drm-test.c; <key>
#     hashes those sources, so editing them gives a new initramfs on the next run.
# Prints the paths as KEY=VALUE lines (also written to paths.env in the cache, which
# run-guest.sh reads) and, on stderr, how long it took. Everything else goes to setup.log.
set -euo pipefail

# shellcheck source=samples/guest/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$(date +%s.%N)
cache=$VGT_GUEST_CACHE
log=$cache/setup.log
mkdir -p "$cache"
: >"$log"

die() {
    echo "setup.sh: error: $*" >&2
    if [[ -s $log ]]; then
        echo "setup.sh: last lines of $log:" >&2
        tail -n 15 "$log" | sed 's/^/  | /' >&2
    fi
    exit 1
}

# quiet CMD...: run CMD with its output in the log; stop with one line if it fails.
quiet() {
    echo "+ $*" >>"$log"
    "$@" >>"$log" 2>&1 || die "'$*' failed"
}

# missing PKG...: print the packages that are not installed.
missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

apt_updated=no
apt_update() {
    if [[ $apt_updated == no ]]; then
        quiet apt-get update
        apt_updated=yes
    fi
}

need_root() {
    [[ $(id -u) == 0 ]] || die "must run as root to $* (or have an administrator run samples/guest/setup.sh once)"
}

# debian_source: print "URI<TAB>SIGNED-BY" of the configured source that serves the suite
# bookworm (deb822 files first, then one-line sources.list files).
debian_source() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v RS='' -F'\n' '
            {
                types = uris = suites = signed = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i; key = line; sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    if (key == "Types") types = " " val " "
                    else if (key == "URIs") uris = val
                    else if (key == "Suites") suites = " " val " "
                    else if (key == "Signed-By") signed = val
                    else if (key == "Enabled") enabled = val
                }
                if (types ~ / deb / && suites ~ / bookworm / && uris != "" && enabled != "no") {
                    split(uris, u, /[ \t]+/); print u[1] "\t" signed; exit
                }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [opt=val ...] URI bookworm COMPONENTS -> URI<TAB>signed-by value, if any
        sed -nE 's/^deb[ \t]+(\[([^]]*)\][ \t]+)?([^ \t]+)[ \t]+bookworm[ \t].*/\3\t\2/p' "$f" |
            sed -E 's/\t(.*signed-by=([^ ]*).*|.*)$/\t\2/'
    done
}

have_backports() {
    grep -Eqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources
}

add_backports() {
    local src uri signed file=/etc/apt/sources.list.d/vgt-bookworm-backports.sources
    src=$(debian_source | awk 'NR == 1')
    [[ -n $src ]] || die "no configured Debian source for bookworm found in /etc/apt (needed to add bookworm-backports)"
    uri=${src%%$'\t'*}
    signed=${src#*$'\t'}
    [[ $signed == /* ]] || signed= # an inline key block is not copied; apt's keyrings apply
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: bookworm-backports"
        echo "Components: main"
        [[ -z $signed ]] || echo "Signed-By: $signed"
    } >"$file"
    echo "added $file with URI $uri" >>"$log"
    apt_updated=no
}

qemu_major() {
    local v
    v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
    echo "${v:-0}"
}

# --- 1. packages ---------------------------------------------------------------------------
qemu_pkgs=(qemu-system-x86 qemu-system-gui qemu-system-common qemu-system-data)
host_pkgs=(busybox-static kmod cpio xz-utils gcc libc6-dev linux-libc-dev python3)

if [[ $(qemu_major) -lt 8 || ! -x /usr/lib/qemu/vhost-user-gpu || -n $(missing "${qemu_pkgs[@]}") ]]; then
    need_root "install QEMU >= 8 from bookworm-backports"
    have_backports || add_backports
    apt_update
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -t bookworm-backports "${qemu_pkgs[@]}"
    [[ $(qemu_major) -ge 8 ]] || die "qemu-system-x86_64 is older than 8.0 after installing from bookworm-backports"
    [[ -x /usr/lib/qemu/vhost-user-gpu ]] || die "/usr/lib/qemu/vhost-user-gpu missing after installing qemu-system-gui"
fi

mapfile -t want < <(missing "${host_pkgs[@]}")
if ((${#want[@]})); then
    need_root "install ${want[*]}"
    apt_update
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}"
fi

# --- 2. guest kernel -----------------------------------------------------------------------
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !n++ { print $2 }')
if [[ -z $kpkg ]]; then
    need_root "refresh the apt package lists (linux-image-amd64 is unknown)"
    apt_update
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !n++ { print $2 }')
    [[ -n $kpkg ]] || die "apt knows no linux-image-amd64 package; is a bookworm source configured?"
fi
kver=$(apt-cache show --no-all-versions "$kpkg" 2>/dev/null | awk '$1 == "Version:" && !n++ { print $2 }')
[[ -n $kver ]] || die "apt-cache show $kpkg gave no version"
kernel_id=${kpkg}_$kver
# linux-image-6.1.0-56-amd64 -> linux-headers-6.1.0-56-common (same source and version)
hpkg=${kpkg/#linux-image-/linux-headers-}
hpkg=${hpkg%-*}-common

# fetch_deb PKG: print the path of PKG_$kver_*.deb in the cache, downloading it if needed.
fetch_deb() {
    local name="${1}_${kver//:/%3a}_*.deb" deb
    mkdir -p "$cache/debs"
    deb=$(find "$cache/debs" -maxdepth 1 -name "$name" -print -quit)
    if [[ -z $deb ]]; then
        (cd "$cache/debs" && quiet apt-get download "$1=$kver")
        deb=$(find "$cache/debs" -maxdepth 1 -name "$name" -print -quit)
        [[ -n $deb ]] || die "apt-get download $1=$kver left no $name in $cache/debs"
    fi
    echo "$deb"
}
kdir=$cache/kernel/$kernel_id

# The kernel directory keeps only what the initramfs and QEMU need: vmlinux, modules/ (the
# virtio_pci and virtio_gpu modules and their dependencies, named NN-name.ko in load order,
# listed in modules/load-order), uapi/drm/ and `complete`. The .debs and the unpacked packages
# (about 500 MB) are deleted once it is complete.
prepare_kernel() {
    local tmp=$kdir/unpacked deb uapi vmlinuz offset modver mods m n=0 name
    rm -rf "$kdir"
    mkdir -p "$kdir/modules" "$kdir/uapi" "$tmp"
    deb=$(fetch_deb "$kpkg")
    quiet dpkg -x "$deb" "$tmp/image"
    # Debian's linux-libc-dev lacks the DRM uapi headers; take them from the same kernel.
    deb=$(fetch_deb "$hpkg")
    quiet dpkg -x "$deb" "$tmp/headers"
    uapi=$(find "$tmp/headers/usr/src" -mindepth 3 -maxdepth 3 -path '*/include/uapi' -print -quit)
    [[ -e $uapi/drm/drm_mode.h ]] || die "no include/uapi/drm/drm_mode.h in $hpkg"
    cp -r "$uapi/drm" "$kdir/uapi/drm"

    vmlinuz=$(find "$tmp/image/boot" -name 'vmlinuz-*' -print -quit)
    [[ -n $vmlinuz ]] || die "no /boot/vmlinuz-* in $kpkg"
    # The bzImage carries the kernel as an xz stream; everything after its magic decompresses
    # to the ELF vmlinux (trailing bytes of the bzImage are ignored by --single-stream).
    offset=$({ LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" || true; } | awk -F: 'NR == 1 { print $1 }')
    [[ -n $offset ]] || die "no xz payload in $vmlinuz"
    # (xz stops reading at the end of the stream, so tail may get SIGPIPE: ignore its status.)
    xz -dc --single-stream < <(tail -c "+$((offset + 1))" "$vmlinuz") >"$kdir/vmlinux" 2>>"$log" ||
        die "could not decompress the xz payload of $vmlinuz"
    [[ $(head -c 4 "$kdir/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] ||
        die "$kdir/vmlinux is not an ELF file"

    # Modules and their dependencies, in the order modprobe would load them.
    modver=$(basename "$(find "$tmp/image/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit)")
    quiet depmod -b "$tmp/image" "$modver"
    mods=$(for m in virtio_pci virtio_gpu; do
        modprobe -d "$tmp/image" -S "$modver" --show-depends "$m" 2>>"$log"
    done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
    [[ -n $mods ]] || die "modprobe found no modules for virtio_pci virtio_gpu in $kpkg"
    for m in $mods; do
        n=$((n + 1))
        name=$(printf '%02d-%s' "$n" "$(basename "${m%.xz}")")
        case $m in
            *.xz) xz -dc "$m" >"$kdir/modules/$name" ;;
            *) cp "$m" "$kdir/modules/$name" ;;
        esac
        echo "$name" >>"$kdir/modules/load-order"
    done

    rm -rf "$tmp" "$cache/debs"
    echo "$modver" >"$kdir/complete"
}

[[ -e $kdir/complete ]] || prepare_kernel

# --- 3. initramfs --------------------------------------------------------------------------
key=$(guest_key "$kernel_id")
initrd=$cache/initramfs-$key.cpio.gz

build_initramfs() {
    local stage=$cache/stage.$$
    rm -rf "$stage"
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib}
    cp /bin/busybox "$stage/bin/busybox"
    cp "$VGT_GUEST_DIR/init" "$stage/init"
    chmod 755 "$stage/init"
    cp -r "$kdir/modules" "$stage/lib/modules"
    # (-D__user=: the kernel's own uapi headers still carry the annotation headers_install strips)
    quiet gcc -static -O2 -Wall -Wextra -Werror -idirafter "$kdir/uapi" -D__user= \
        -o "$stage/bin/vgt-drm-test" "$VGT_GUEST_DIR/vgt-drm-test.c"
    (cd "$stage" && find . -print | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
        gzip -9 >"$initrd.tmp" || die "cpio/gzip of $stage failed"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$stage"
}

if [[ ! -s $initrd ]]; then
    build_initramfs
    # Older initramfs images are of no further use.
    find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "initramfs-$key.cpio.gz" -delete
fi

# --- 4. report -----------------------------------------------------------------------------
cat >"$VGT_GUEST_PATHS.tmp" <<EOF
VGT_QEMU=$(command -v qemu-system-x86_64)
VGT_VHOST_USER_GPU=/usr/lib/qemu/vhost-user-gpu
VGT_GUEST_KERNEL=$kdir/vmlinux
VGT_GUEST_INITRD=$initrd
VGT_GUEST_KERNEL_ID=$kernel_id
VGT_GUEST_KEY=$key
EOF
mv "$VGT_GUEST_PATHS.tmp" "$VGT_GUEST_PATHS"
cat "$VGT_GUEST_PATHS"
awk -v a="$started" -v b="$(date +%s.%N)" -v k="$kernel_id" -v i="$key" \
    'BEGIN { printf "setup.sh: ready in %.1f s (kernel %s, initramfs %s)\n", b - a, k, i }' >&2
