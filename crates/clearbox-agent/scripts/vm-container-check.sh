#!/usr/bin/env bash
# Boots the static agent in a QEMU microvm (TCG) with a virtio-fs share (tag `clearbox`) and a
# vsock device, then runs a busybox container from the shared rootfs through the agent
# (crates/clearbox-agent/examples/vm_container.rs): uname -r, hostname, exit code, exec,
# pause/resume, and a file written in the container appearing on the host.
#
# Usage: crates/clearbox-agent/scripts/vm-container-check.sh [WORKDIR]
# Env: CLEARBOX_SHARE (kernel: $CLEARBOX_SHARE/vmlinux, default /usr/share/clearbox),
#      CLEARBOX_AGENT_TARGET_DIR (passed to scripts/build-agent.sh),
#      PODMAN_SPEC (a config.json written by podman, also run in the guest; default: the
#      one podman 4.3 wrote on the development machine, tests/data/podman-config.json;
#      empty: skip).
# Needs root (virtiofsd), busybox-static, qemu-system-x86, vhost-device-vsock.
set -euo pipefail

die() { echo "vm-container-check: $*" >&2; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
kernel="${CLEARBOX_SHARE:-/usr/share/clearbox}/vmlinux"
virtiofsd=/usr/lib/qemu/virtiofsd
[[ -f $kernel ]] || die "no kernel at $kernel"
[[ -x $virtiofsd ]] || die "no $virtiofsd (install qemu-system-x86)"
command -v vhost-device-vsock >/dev/null || die "vhost-device-vsock not found"
[[ -x /bin/busybox ]] || die "/bin/busybox not found (install busybox-static)"

PODMAN_SPEC=${PODMAN_SPEC-$root/crates/clearbox-agent/tests/data/podman-config.json}
# A work dir of our own is removed on success (kept with its logs on failure).
own_work=0
if [[ -n ${1:-} ]]; then
    work=$1
else
    work=$(mktemp -d /tmp/vm-container-check.XXXXXX)
    own_work=1
fi
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

agent=$("$root/scripts/build-agent.sh")
echo "agent: $agent ($(stat -c %s "$agent") bytes)"
initrd=$("$root/scripts/build-initramfs.sh" "$agent" "$work/initramfs.img")

shared=$work/shared
rm -rf "$shared"
mkdir -p "$shared/rootfs/bin" "$shared/mounts/0"
for d in proc sys dev tmp etc data; do mkdir -p "$shared/rootfs/$d"; done
cp /bin/busybox "$shared/rootfs/bin/busybox"
for app in $(/bin/busybox --list); do
    [[ $app == busybox ]] || ln -s busybox "$shared/rootfs/bin/$app"
done
chmod 0777 "$shared/mounts/0"

rm -f "$work/fs.sock" "$work/vhost.sock" "$work/vsock.sock"
"$virtiofsd" --socket-path="$work/fs.sock" -o source="$shared" -o cache=auto \
    >"$work/virtiofsd.log" 2>&1 &
pids+=($!)
vhost-device-vsock --socket "$work/vhost.sock" --uds-path "$work/vsock.sock" --guest-cid 3 \
    >"$work/vsock.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [[ -S $work/fs.sock && -S $work/vhost.sock ]] && break
    sleep 0.1
done
[[ -S $work/fs.sock ]] || die "virtiofsd did not start: $(cat "$work/virtiofsd.log")"
[[ -S $work/vhost.sock ]] || die "vhost-device-vsock did not start: $(cat "$work/vsock.log")"

CLEARBOX_APPEND=${CLEARBOX_APPEND:-} "$root/guest/kernel/qemu-boot.sh" -m 512 "$kernel" "$initrd" -- \
    -chardev socket,id=vs0,path="$work/vhost.sock" -device vhost-user-vsock-device,chardev=vs0 \
    -chardev socket,id=fs0,path="$work/fs.sock" -device vhost-user-fs-device,chardev=fs0,tag=clearbox \
    >"$work/console.log" 2>&1 &
qemu=$!
pids+=($qemu)

for _ in $(seq 300); do
    [[ -S $work/vsock.sock ]] && break
    sleep 0.1
done
rc=0
cargo run -q --manifest-path "$root/Cargo.toml" -p clearbox-agent --example vm_container -- \
    hybrid-vsock "$work/vsock.sock" "$shared" --shutdown \
    ${PODMAN_SPEC:+--podman-spec "$PODMAN_SPEC"} || rc=$?
for _ in $(seq 100); do
    kill -0 "$qemu" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$qemu" 2>/dev/null; then
    echo "vm-container-check: the VM did not power off" >&2
    rc=1
fi
if [[ $rc -ne 0 ]]; then
    echo "--- guest console ($work/console.log):" >&2
    tail -n 40 "$work/console.log" >&2
elif [[ $own_work == 1 ]]; then
    cleanup
    trap - EXIT
    rm -rf "$work"
fi
exit $rc
