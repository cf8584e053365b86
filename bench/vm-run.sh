#!/usr/bin/env bash
# Containers in VMs, end to end: `clearbox run` of busybox `true` with isolation=vm vs the VM
# boot floor (same QEMU, kernel and devices, an init that powers off at once), vs
# isolation=namespaces, vs gVisor's `runsc run`; and `podman run --rm IMG true` with clearbox
# (vm) vs crun. One run, medians and ratios. Target: vm / floor <= 1.25 (cold).
#
#   bench/vm-run.sh            # RUNTIME=target/release/clearbox, BENCH_RUNS=10
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "vm-run: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
RUNS="${BENCH_RUNS:-10}"
command -v hyperfine >/dev/null || die "hyperfine not found"
command -v runsc >/dev/null || die "runsc not found (scripts/install-deps.sh)"
for f in vmlinux floor-initramfs.img initramfs.img; do
    [ -f "/usr/share/clearbox/$f" ] || die "/usr/share/clearbox/$f missing: run scripts/build.sh"
done

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-bench.XXXXXX)"
cleanup() {
    "$RUNTIME" --root "$W/root" delete --force bench-vm >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
write_config "$B" '["true"]'

# The floor: the VMM's own probe boots the floor initramfs (no agent) and times QEMU's exit.
(cd "$REPO" && cargo build -q --release -p clearbox-vmm --example boot-probe) >&2
probe="$REPO/target/release/examples/boot-probe"

cmd_vm="$RUNTIME --root $W/root --isolation vm run --bundle $B bench-vm"
cmd_ns="$RUNTIME --root $W/root --isolation namespaces run --bundle $B bench-ns"
cmd_runsc="runsc --root $W/runsc --network=none --ignore-cgroups run --bundle $B bench-runsc"
cmd_floor="env CLEARBOX_MEM_MIB=128 $probe floor 1"

echo "vm-run: hyperfine ($RUNS runs) ..." >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$W/run.json" \
    -n "clearbox run (vm)" "$cmd_vm" \
    -n "VM boot floor" "$cmd_floor" \
    -n "clearbox run (namespaces)" "$cmd_ns" \
    -n "runsc run" "$cmd_runsc" >&2

# podman with clearbox (vm) and with crun.
P="$W/podman"
mkdir -p "$P"
cat >"$P/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$P/containers.conf"
pod="podman --root $P/root --runroot $P/run --storage-driver vfs"
$pod load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
crun_wrap="$W/crun-wrap"
cat >"$crun_wrap" <<'EOF'
#!/bin/sh
# crun 1.8 refuses hybrid cgroups: hide the v2 mount in a private mount namespace.
exec unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun "$@"' crun "$@"
EOF
chmod +x "$crun_wrap"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$W/podman.json" \
    -n "podman run --rm (clearbox vm)" "$pod --runtime $RUNTIME run --rm $IMAGE true" \
    -n "podman run --rm (crun)" "$pod --runtime $crun_wrap run --rm $IMAGE true" >&2

python3 - "$W/run.json" "$W/podman.json" <<'EOF'
import json, sys
rows = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        rows[r["command"]] = r["median"] * 1000
print("| command | median (ms) |\n|---|---:|")
for k, v in rows.items():
    print(f"| {k} | {v:.1f} |")
vm, floor = rows["clearbox run (vm)"], rows["VM boot floor"]
print("\n| ratio (medians) | value | target |\n|---|---:|---|")
print(f"| clearbox vm / VM boot floor | {vm / floor:.2f} | <= 1.25 |")
print(f"| clearbox vm / clearbox namespaces | {vm / rows['clearbox run (namespaces)']:.1f} | |")
print(f"| clearbox vm / runsc | {vm / rows['runsc run']:.2f} | |")
p_vm, p_crun = rows["podman run --rm (clearbox vm)"], rows["podman run --rm (crun)"]
print(f"| podman: clearbox vm / crun | {p_vm / p_crun:.2f} | |")
EOF
