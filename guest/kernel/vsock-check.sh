#!/usr/bin/env bash
# End-to-end check of the guest's virtio-vsock through vhost-device-vsock:
# the guest connects to host port 1234, the backend forwards that to the
# unix socket "<uds-path>_1234", where a host listener answers "pong".
#
# Usage: guest/kernel/vsock-check.sh [KERNEL]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KERNEL=${1:-${CLEARBOX_SHARE:-/usr/share/clearbox}/vmlinux}
[[ -f $KERNEL ]] || { echo "vsock-check: kernel not found: $KERNEL" >&2; exit 1; }
command -v vhost-device-vsock >/dev/null ||
    { echo "vsock-check: vhost-device-vsock not installed (scripts/install-deps.sh)" >&2; exit 1; }

WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

${CC:-gcc} -static -O2 -Wall -Wextra -Werror -o "$WORK/vsock-check" "$HERE/vsock-check.c"
"$REPO/scripts/build-initramfs.sh" "$WORK/vsock-check" "$WORK/initramfs.img" >/dev/null

vhost-device-vsock --vm "guest-cid=3,socket=$WORK/vhost.sock,uds-path=$WORK/vm.vsock" \
    >"$WORK/backend.log" 2>&1 &
pids+=($!)
python3 - "$WORK/vm.vsock_1234" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1); s.settimeout(60)
c, _ = s.accept()
if c.recv(16) == b"ping":
    c.sendall(b"pong")
c.close()
PY
pids+=($!)
for _ in $(seq 100); do [[ -S $WORK/vhost.sock && -S $WORK/vm.vsock_1234 ]] && break; sleep 0.05; done
[[ -S $WORK/vhost.sock ]] || { cat "$WORK/backend.log" >&2; echo "vsock-check: backend did not start" >&2; exit 1; }

timeout 60 "$HERE/qemu-boot.sh" "$KERNEL" "$WORK/initramfs.img" -- \
    -chardev "socket,id=vs0,path=$WORK/vhost.sock" -device vhost-user-vsock-device,chardev=vs0 \
    </dev/null | tr -d '\r' | tee "$WORK/out"
grep -qx 'vsock-check: pong received' "$WORK/out"
