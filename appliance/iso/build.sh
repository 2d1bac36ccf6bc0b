#!/usr/bin/env bash
# Build the appliance ISO (root): Debian 12 live root + venv from the wheelhouse + overlay ->
# squashfs -> hybrid BIOS/UEFI ISO.
#
#   sudo appliance/iso/build.sh [base|iso]    (default: iso; `base` stops after the Debian root)
#
# The Debian root comes from the mirror this machine's apt already uses (its sources, security
# and updates suites included), and is cached under out/cache keyed by the package list and the
# sources, so rebuilding after a change to the project or the overlay takes a minute or two.
# Run appliance/iso/wheelhouse.sh first (no root); `just iso` runs both.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${SOVEREIGN_ISO_OUT:-$here/out}"
stage="${1:-iso}"
suite=bookworm
venv=/opt/sovereign-tui
iso="$out/sovereign-tui.iso"
packages=(
    linux-image-amd64 live-boot systemd-sysv systemd-resolved udev kmod iproute2 procps
    python3 python3-venv openssh-client util-linux e2fsprogs ca-certificates less
)

die() { echo "build: $*" >&2; exit 1; }
say() { echo "build: $*"; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it): sudo $0 $*"
case "$stage" in base|iso) ;; *) die "unknown stage '$stage' (base or iso)";; esac
for tool in debootstrap mksquashfs grub-mkrescue xorriso mformat; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install debootstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin mtools"
done
[ -d /usr/lib/grub/i386-pc ] || die "grub-mkrescue needs the BIOS modules: apt-get install grub-pc-bin"
[ -d /usr/lib/grub/x86_64-efi ] || die "grub-mkrescue needs the UEFI modules: apt-get install grub-efi-amd64-bin"
wheelhouse="$out/wheelhouse"
if [ "$stage" = iso ]; then
    ls "$wheelhouse"/sovereign_tui-*.whl >/dev/null 2>&1 \
        || die "no wheelhouse in $wheelhouse: run appliance/iso/wheelhouse.sh first (no root)"
fi

t0=$(date +%s)
mkdir -p "$out/cache"

# --- the mirror this machine's apt uses ----------------------------------------------------------
# Prints "URI SUITE" for every Debian deb source (deb822 .sources and one-line .list files).
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i, $(i+1) }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS=""; FS="\n" }
             { types=""; uris=""; suites=""; enabled="yes"
               for (n = 1; n <= NF; n++) {
                   line = $n; if (line ~ /^#/) continue
                   key = line; sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
                   key = tolower(key)
                   if (key == "types") types = val; else if (key == "uris") uris = val
                   else if (key == "suites") suites = val; else if (key == "enabled") enabled = val }
               if (types !~ /(^| )deb( |$)/ || enabled == "no") next
               nu = split(uris, u, " "); ns = split(suites, s, " ")
               for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print u[a], s[b] }' "$f"
    done
}
sources="$(apt_sources | sort -u)"
mirror="$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$sources")"
security="$(awk -v s="$suite-security" '$2 == s { print $1; exit }' <<<"$sources")"
updates="$(awk -v s="$suite-updates" '$2 == s { print $1; exit }' <<<"$sources")"
[ -n "$mirror" ] || die "this machine's apt has no '$suite' source (in /etc/apt/sources.list or sources.list.d); add the Debian 12 mirror it should use"
[ -n "$security" ] || say "warning: no $suite-security source in this machine's apt; the image gets no security updates"
apt_list="deb $mirror $suite main"
[ -n "$updates" ] && apt_list+=$'\n'"deb $updates $suite-updates main"
[ -n "$security" ] && apt_list+=$'\n'"deb $security $suite-security main"

# --- chroot helpers ------------------------------------------------------------------------------
mounted=()
mount_chroot() {
    local r="$1"
    mount -t proc proc "$r/proc" && mounted+=("$r/proc")
    mount -t sysfs sys "$r/sys" && mounted+=("$r/sys")
    mount --bind /dev "$r/dev" && mounted+=("$r/dev")
    mount --bind /dev/pts "$r/dev/pts" && mounted+=("$r/dev/pts")
}
umount_chroot() {
    local i
    for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
    mounted=()
}
trap umount_chroot EXIT
# A clean environment: nothing of this machine's pip or locale settings leaks into the image.
in_root() {
    local r="$1"; shift
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        chroot "$r" "$@"
}

# --- stage 1: the Debian root (cached) -------------------------------------------------------------
key="$(printf '%s\n' "$suite" "${packages[*]}" "$apt_list" | sha256sum | cut -c1-16)"
base="$out/cache/base-$key"
if [ ! -f "$base/.complete" ]; then
    say "debootstrap $suite from $mirror (updates: ${updates:-none}, security: ${security:-none})"
    rm -rf "$base" && mkdir -p "$base"
    debootstrap --variant=minbase --arch=amd64 "$suite" "$base" "$mirror" >"$out/cache/debootstrap.log" 2>&1 \
        || { tail -20 "$out/cache/debootstrap.log" >&2; die "debootstrap failed (log: $out/cache/debootstrap.log)"; }
    printf '%s\n' "$apt_list" >"$base/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$base/etc/apt/apt.conf.d/90appliance"
    # No services start inside the build chroot.
    printf '#!/bin/sh\nexit 101\n' >"$base/usr/sbin/policy-rc.d" && chmod +x "$base/usr/sbin/policy-rc.d"
    mount_chroot "$base"
    in_root "$base" apt-get update -q >"$out/cache/apt.log" 2>&1 || die "apt-get update in the root failed (log: $out/cache/apt.log)"
    in_root "$base" apt-get dist-upgrade -y -q >>"$out/cache/apt.log" 2>&1 || die "apt-get dist-upgrade failed (log: $out/cache/apt.log)"
    in_root "$base" apt-get install -y -q "${packages[@]}" >>"$out/cache/apt.log" 2>&1 \
        || { tail -20 "$out/cache/apt.log" >&2; die "installing the image's packages failed (log: $out/cache/apt.log)"; }
    in_root "$base" apt-get clean
    umount_chroot
    rm -f "$base/usr/sbin/policy-rc.d"
    touch "$base/.complete"
    say "Debian root ready in $(( $(date +%s) - t0 ))s"
else
    say "Debian root from the cache ($base)"
fi
[ "$stage" = base ] && exit 0

# --- stage 2: the appliance root -------------------------------------------------------------------
t1=$(date +%s)
rootfs="$out/rootfs"
rm -rf "$rootfs"
cp -a "$base" "$rootfs"
rm -f "$rootfs/.complete"
mount_chroot "$rootfs"

say "venv $venv from the wheelhouse (--no-index)"
mkdir -p "$rootfs/tmp/wheelhouse"
cp "$wheelhouse"/*.whl "$rootfs/tmp/wheelhouse/"
in_root "$rootfs" python3 -m venv "$venv"
in_root "$rootfs" "$venv/bin/pip" install -q --no-index --find-links /tmp/wheelhouse --upgrade pip
in_root "$rootfs" "$venv/bin/pip" install -q --no-index --find-links /tmp/wheelhouse sovereign-tui
in_root "$rootfs" "$venv/bin/pip" check || die "pip check failed in the image's venv"
in_root "$rootfs" "$venv/bin/sovereign-tui" --version
rm -rf "$rootfs/tmp/wheelhouse"
ln -sf "$venv/bin/sovereign-tui" "$rootfs/usr/bin/sovereign-tui"
mkdir -p "$rootfs/usr/share/doc/sovereign-tui"
cp "$root/README.md" "$here/README.md" "$rootfs/usr/share/doc/sovereign-tui/" 2>/dev/null || true
cp "$here/README.md" "$rootfs/usr/share/doc/sovereign-tui/APPLIANCE.md"

say "overlay"
cp -a "$here/overlay/." "$rootfs/"
chmod 0755 "$rootfs"/usr/lib/sovereign-tui/*
in_root "$rootfs" /usr/lib/sovereign-tui/setup-image
umount_chroot
# After the chroot work: the image resolves through systemd-resolved.
ln -sf /run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/tmp/* "$rootfs"/root/.cache
# Each boot gets its own machine id (a live image must not ship one).
: >"$rootfs/etc/machine-id"

# --- stage 3: squashfs and ISO ----------------------------------------------------------------
say "squashfs (zstd 9)"
staging="$out/staging"
rm -rf "$staging" && mkdir -p "$staging/live" "$staging/boot/grub"
kernel="$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)"
initrd="$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)"
cp "$kernel" "$staging/live/vmlinuz"
cp "$initrd" "$staging/live/initrd.img"
mksquashfs "$rootfs" "$staging/live/filesystem.squashfs" -comp zstd -Xcompression-level 9 \
    -noappend -quiet -e boot -wildcards -e 'var/cache/apt/archives/*.deb' >/dev/null
cp "$here/grub.cfg" "$staging/boot/grub/grub.cfg"
sed -i "s|@VERSION@|$(in_root "$rootfs" "$venv/bin/sovereign-tui" --version | awk '{print $NF}')|" \
    "$staging/boot/grub/grub.cfg"

say "ISO (grub-mkrescue: BIOS and UEFI)"
rm -f "$iso"
grub-mkrescue -o "$iso" "$staging" -- -volid SOVEREIGN-TUI >"$out/grub-mkrescue.log" 2>&1 \
    || { tail -20 "$out/grub-mkrescue.log" >&2; die "grub-mkrescue failed (log: $out/grub-mkrescue.log)"; }
t2=$(date +%s)
size=$(du -m "$iso" | cut -f1)
squash=$(du -m "$staging/live/filesystem.squashfs" | cut -f1)
say "done: $iso ${size} MiB (squashfs ${squash} MiB); root $(( t1 - t0 ))s, image $(( t2 - t1 ))s, total $(( t2 - t0 ))s"
