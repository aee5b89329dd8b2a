#!/bin/sh
# Builds the SCTP test guest: Debian's stock kernel (it has the sctp module) and a busybox
# initramfs that loads sctp, mounts the host's / read-only over virtio-9p and runs one command.
#
#   tests/sctp/vm/build.sh [--fetch] [DIR]
#
# DIR (default: $EIR_SCTP_VM_DIR, else .cache/sctp-vm in the repository) receives vmlinuz,
# initrd.gz and version. --fetch first downloads the kernel package (apt-get download, no root
# needed) when DIR holds none. Needs: busybox (static), kmod (depmod, modprobe), cpio, dpkg-deb,
# gzip; at run time qemu-system-x86_64. Exit status 3: something needed is missing (the message
# says what), so callers can skip rather than fail.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
FETCH=0
if [ "${1:-}" = "--fetch" ]; then FETCH=1; shift; fi
DIR=${1:-${EIR_SCTP_VM_DIR:-$REPO/.cache/sctp-vm}}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

missing() { echo "sctp-vm: $*" >&2; exit 3; }
PATH=$PATH:/sbin:/usr/sbin
for tool in cpio dpkg-deb gzip depmod modprobe; do
  command -v "$tool" >/dev/null 2>&1 || missing "$tool not installed (apt-get install kmod cpio dpkg)"
done
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || missing "busybox not installed (apt-get install busybox-static)"
# A dynamically linked busybox (it has an .interp section) would need the host's libc in the initramfs.
if grep -q "\.interp" "$BUSYBOX"; then
  missing "$BUSYBOX is dynamically linked (apt-get install busybox-static)"
fi

DEB=$(ls "$DIR"/linux-image-*-amd64_*.deb 2>/dev/null | grep -v -- -dbg | tail -n 1 || true)
if [ -z "$DEB" ] && [ "$FETCH" = 1 ]; then
  # linux-image-amd64 is the metapackage; its dependency names the current kernel.
  PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$PKG" ] || missing "apt-cache knows no linux-image-amd64 (run apt-get update)"
  (cd "$DIR" && apt-get download "$PKG" >/dev/null) || missing "apt-get download $PKG failed"
  DEB=$(ls "$DIR"/linux-image-*-amd64_*.deb | tail -n 1)
fi
[ -n "$DEB" ] || missing "no kernel package in $DIR (run tests/sctp/vm/build.sh --fetch)"

PKG=$(dpkg-deb -f "$DEB" Package)
VERSION=${PKG#linux-image-}
if [ -f "$DIR/version" ] && [ "$(cat "$DIR/version")" = "$VERSION $(cksum < "$HERE/init")" ] \
   && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.gz" ]; then
  echo "sctp-vm: $DIR is up to date ($VERSION)"
  exit 0
fi

WORK=$(mktemp -d "$DIR/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -x "$DEB" "$WORK/kernel"
depmod -b "$WORK/kernel" "$VERSION"
ROOT=$WORK/initrd
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/newroot" "$ROOT/modules"
cp "$BUSYBOX" "$ROOT/bin/busybox"
cp "$HERE/init" "$ROOT/init"
chmod 755 "$ROOT/init"
# virtio-9p carries the host's filesystem; sctp is what the guest is for. modprobe lists each
# module's dependencies first: they are loaded in that order by /init.
for module in virtio_pci 9pnet_virtio 9p sctp; do
  modprobe -d "$WORK/kernel" -S "$VERSION" --show-depends "$module"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r path; do
  cp "$path" "$ROOT/modules/"
  basename "$path" >> "$ROOT/modules/order"
done
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$DIR/initrd.gz.new"
cp "$WORK/kernel/boot/vmlinuz-$VERSION" "$DIR/vmlinuz.new"
mv "$DIR/initrd.gz.new" "$DIR/initrd.gz"
mv "$DIR/vmlinuz.new" "$DIR/vmlinuz"
echo "$VERSION $(cksum < "$HERE/init")" > "$DIR/version"
echo "sctp-vm: built $DIR/vmlinuz and $DIR/initrd.gz ($VERSION)"
