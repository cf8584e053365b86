#!/usr/bin/env bash
# VM boot benchmark: host-observed time from "start VM" to "agent answers
# Version" vs the floor (same QEMU command, kernel and devices, with an
# initramfs whose init powers off at once: time to QEMU exit), plus the PSS of
# all host processes of one idle 128 MiB VM (QEMU + vhost-device-vsock +
# virtiofsd).
#
#   bench/vm-boot.sh [ROUNDS]        (default 9; rounds alternate agent/floor)
#
# Needs the guest kernel, the agent initramfs and the floor initramfs
# (scripts/build.sh builds all three). Environment overrides: CLEARBOX_KERNEL, CLEARBOX_INITRAMFS,
# CLEARBOX_FLOOR_INITRAMFS, CLEARBOX_ACCEL (auto|kvm|tcg).
# Targets (printed, not enforced): agent/floor <= 1.10, PSS <= 30 MiB.
set -euo pipefail

die() { echo "vm-boot: $*" >&2; exit 1; }

ROUNDS=${1:-9}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARE=/usr/share/clearbox
KERNEL=${CLEARBOX_KERNEL:-$SHARE/vmlinux}
INITRD=${CLEARBOX_INITRAMFS:-$SHARE/initramfs.img}
FLOOR=${CLEARBOX_FLOOR_INITRAMFS:-$SHARE/floor-initramfs.img}
[[ -f $KERNEL ]] || die "$KERNEL missing: run scripts/build-guest-kernel.sh"
[[ -f $INITRD ]] || die "$INITRD missing: run scripts/build-initramfs.sh \"\$(scripts/build-agent.sh)\""
[[ -f $FLOOR ]] || die "$FLOOR missing: run guest/init-floor/build.sh"
export CLEARBOX_KERNEL=$KERNEL CLEARBOX_INITRAMFS=$INITRD CLEARBOX_FLOOR_INITRAMFS=$FLOOR

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --quiet --release -p clearbox-vmm --example boot-probe) ||
    die "cannot build the boot-probe example"
PROBE=$TARGET_DIR/release/examples/boot-probe
[[ -x $PROBE ]] || die "probe not found at $PROBE"

agent=() floor=()
for ((i = 0; i < ROUNDS; i++)); do
    agent+=("$("$PROBE" agent 1)") || die "agent round $i failed"
    floor+=("$("$PROBE" floor 1)") || die "floor round $i failed"
done
pss_out=$("$PROBE" pss) || die "PSS probe failed"
pss_kib=$(awk '$1 == "pss_kib" { print $2 }' <<<"$pss_out")

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }
agent_med=$(median "${agent[@]}")
floor_med=$(median "${floor[@]}")
ratio=$(awk -v a="$agent_med" -v f="$floor_med" 'BEGIN { printf "%.2f", a / f }')
pss_mib=$(awk -v k="$pss_kib" 'BEGIN { printf "%.1f", k / 1024 }')
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "MISSED" }'; }

echo "$("$PROBE" accel); rounds: $ROUNDS"
echo "agent rounds (ms): $(for v in "${agent[@]}"; do printf '%s ' "$(ms "$v")"; done)"
echo "floor rounds (ms): $(for v in "${floor[@]}"; do printf '%s ' "$(ms "$v")"; done)"
echo "$pss_out" | awk '$1 == "proc" { printf "  pss %-22s pid %-7s %6.1f MiB\n", $3, $2, $4 / 1024 }'
printf '%-34s %12s %10s %8s\n' metric value target result
printf '%-34s %12s %10s %8s\n' "boot to agent Version (median)" "$(ms "$agent_med") ms" "" ""
printf '%-34s %12s %10s %8s\n' "floor boot to QEMU exit (median)" "$(ms "$floor_med") ms" "" ""
printf '%-34s %12s %10s %8s\n' "ratio agent/floor" "${ratio}x" "<= 1.10x" "$(verdict "$ratio" 1.10)"
printf '%-34s %12s %10s %8s\n' "PSS idle VM, 128 MiB guest" "$pss_mib MiB" "<= 30 MiB" "$(verdict "$pss_mib" 30)"
