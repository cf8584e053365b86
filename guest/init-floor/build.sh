#!/usr/bin/env bash
# Build the boot-floor init (static, -Os) and pack it into its own initramfs.
#
# Usage: guest/init-floor/build.sh [OUT]
#   OUT defaults to ${CLEARBOX_SHARE:-/usr/share/clearbox}/floor-initramfs.img
# Prints the path of the initramfs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-${CLEARBOX_SHARE:-/usr/share/clearbox}/floor-initramfs.img}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
${CC:-gcc} -static -Os -s -Wall -Wextra -Werror -o "$WORK/floor-init" "$HERE/floor-init.c"
"$REPO/scripts/build-initramfs.sh" "$WORK/floor-init" "$OUT"
