#!/bin/sh
# Runs one shell command in the SCTP test guest and exits with its status.
#
#   tests/sctp/vm/run.sh WORKDIR 'command'
#
# WORKDIR is shared read-write with the guest at the same path (the command starts there; its
# results and logs come back through it); the host's / is shared read-only, so the repository
# and its virtualenv are at their host paths (the repository is shared again on its own, so a clone
# under the host's /tmp stays visible). The guest's /tmp is its own tmpfs: WORKDIR must not be
# under the host's /tmp unless it is inside the repository. Environment: EIR_SCTP_VM_DIR (what build.sh
# built), VM_TIMEOUT (seconds, default 900), VM_MEMORY (MiB, default 768), VM_CPUS (default 2).
# Exit status 255: the guest gave no status (it crashed, or the timeout killed it).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
DIR=${EIR_SCTP_VM_DIR:-$REPO/.cache/sctp-vm}
WORK=$(cd "$1" && pwd)
shift
printf '%s\n' "$*" > "$WORK/.vm-cmd.sh"
rm -f "$WORK/.vm-rc"
# TCG: KVM is not usable on these machines. -nic none: the guest has only its loopback.
timeout "${VM_TIMEOUT:-900}" qemu-system-x86_64 -accel "${VM_ACCEL:-tcg}" -cpu "${VM_CPU:-qemu64}" -m "${VM_MEMORY:-768}" \
  -smp "${VM_CPUS:-2}" -nic none -nographic -no-reboot \
  -kernel "$DIR/vmlinuz" -initrd "$DIR/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 workdir=$WORK repodir=$REPO" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$WORK,mount_tag=work,security_model=none" </dev/null || true
if [ -f "$WORK/.vm-rc" ]; then exit "$(cat "$WORK/.vm-rc")"; fi
exit 255
