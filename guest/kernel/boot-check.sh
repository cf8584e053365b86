#!/usr/bin/env bash
# Prove the guest kernel config by booting feature-check.c as /init with a
# virtio-blk, virtio-net and virtio-console device attached (2 vCPUs).
#
# Usage: guest/kernel/boot-check.sh [KERNEL]
#   KERNEL defaults to ${CLEARBOX_SHARE:-/usr/share/clearbox}/vmlinux.
# Prints the guest's check lines; exits non-zero if any check failed or the
# guest did not report.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KERNEL=${1:-${CLEARBOX_SHARE:-/usr/share/clearbox}/vmlinux}
[[ -f $KERNEL ]] || { echo "boot-check: kernel not found: $KERNEL" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
${CC:-gcc} -static -O2 -Wall -Wextra -Werror -o "$WORK/feature-check" "$HERE/feature-check.c"
"$REPO/scripts/build-initramfs.sh" "$WORK/feature-check" "$WORK/initramfs.img" >/dev/null
truncate -s 1M "$WORK/disk.img"

timeout 120 "$HERE/qemu-boot.sh" -s 2 "$KERNEL" "$WORK/initramfs.img" -- \
    -drive "file=$WORK/disk.img,format=raw,if=none,id=d0" -device virtio-blk-device,drive=d0 \
    -netdev user,id=n0,restrict=on -device virtio-net-device,netdev=n0 \
    -device virtio-serial-device \
    </dev/null | tr -d '\r' | tee "$WORK/out"
summary=$(grep -E '^feature-check: [0-9]+ passed, [0-9]+ failed$' "$WORK/out" || true)
[[ -n $summary ]] || { echo "boot-check: guest did not report" >&2; exit 1; }
[[ $summary == *", 0 failed" ]] || exit 1
