#!/usr/bin/env bash
# VM templates: `clearbox run` of busybox `true` with isolation=vm restored from a template vs
# the same cold-booted (CLEARBOX_TEMPLATE=off) vs the VM boot floor (same QEMU and kernel, an
# init that powers off at once) vs gVisor's `runsc run`. One run, medians and ratios.
# Targets: template <= 0.3x the floor, and faster than runsc.
#
#   bench/vm-template.sh       # RUNTIME=target/release/clearbox, BENCH_RUNS=10
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "vm-template: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
RUNS="${BENCH_RUNS:-10}"
command -v hyperfine >/dev/null || die "hyperfine not found"
command -v runsc >/dev/null || die "runsc not found (scripts/install-deps.sh)"
[ -f /usr/share/clearbox/floor-initramfs.img ] || die "floor initramfs missing: run scripts/build.sh"
CLEARBOX_TEMPLATE=on "$RUNTIME" check | grep -q 'vm templates *on' ||
    die "VM templates are off on this host: $("$RUNTIME" check | grep 'vm templates')"

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-bench.XXXXXX)"
cleanup() {
    for id in bench-tpl bench-cold; do
        "$RUNTIME" --root "$W/root" delete --force "$id" >/dev/null 2>&1 || true
    done
    rm -rf "$W" "$CLEARBOX_TEMPLATE_DIR"
}
trap cleanup EXIT
B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
write_config "$B" '["true"]'

(cd "$REPO" && cargo build -q --release -p clearbox-vmm --example boot-probe) >&2
probe="$REPO/target/release/examples/boot-probe"

# The template is built by the warm-up run (first use); every measured run restores it.
export CLEARBOX_TEMPLATE_DIR="/dev/shm/clearbox-bench-templates.$$"
cmd_tpl="env CLEARBOX_TEMPLATE=on $RUNTIME --root $W/root --isolation vm run --bundle $B bench-tpl"
cmd_cold="env CLEARBOX_TEMPLATE=off $RUNTIME --root $W/root --isolation vm run --bundle $B bench-cold"
cmd_runsc="runsc --root $W/runsc --network=none --ignore-cgroups run --bundle $B bench-runsc"
cmd_floor="env CLEARBOX_MEM_MIB=128 $probe floor 1"

echo "vm-template: hyperfine ($RUNS runs) ..." >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$W/run.json" \
    -n "clearbox run (vm, template)" "$cmd_tpl" \
    -n "clearbox run (vm, cold)" "$cmd_cold" \
    -n "VM boot floor" "$cmd_floor" \
    -n "runsc run" "$cmd_runsc" >&2
n=$(find "$CLEARBOX_TEMPLATE_DIR" -name template.json | wc -l)
[ "$n" = 1 ] || die "expected one template, found $n"

python3 - "$W/run.json" <<'EOF'
import json, sys
rows = {r["command"]: r["median"] * 1000 for r in json.load(open(sys.argv[1]))["results"]}
print("| command | median (ms) |\n|---|---:|")
for k, v in rows.items():
    print(f"| {k} | {v:.1f} |")
tpl, cold = rows["clearbox run (vm, template)"], rows["clearbox run (vm, cold)"]
floor, runsc = rows["VM boot floor"], rows["runsc run"]
print("\n| ratio (medians) | value | target |\n|---|---:|---|")
print(f"| template / VM boot floor | {tpl / floor:.2f} | <= 0.3 |")
print(f"| template / runsc | {tpl / runsc:.2f} | < 1 |")
print(f"| cold / VM boot floor | {cold / floor:.2f} | <= 1.25 |")
print(f"| template / cold | {tpl / cold:.2f} | |")
EOF
