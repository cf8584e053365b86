#!/usr/bin/env bash
# Boot a clearbox guest kernel + initramfs on QEMU microvm (TCG), serial on
# stdio. QEMU exits when the guest reboots/powers off (reboot=t + -no-reboot).
#
# Usage: guest/kernel/qemu-boot.sh [-s SMP] [-m MEM_MB] KERNEL INITRD [-- QEMU_ARGS...]
#   KERNEL defaults are not assumed: pass ${CLEARBOX_SHARE}/vmlinux etc.
# Environment: QEMU (default qemu-system-x86_64), CLEARBOX_APPEND (extra cmdline).
#
# Uses TCG on purpose: /dev/kvm on the development machine is not usable.
set -euo pipefail

die() { echo "qemu-boot: $*" >&2; exit 1; }

SMP=1 MEM=256
while getopts "s:m:" o; do
    case $o in
        s) SMP=$OPTARG ;;
        m) MEM=$OPTARG ;;
        *) die "usage: qemu-boot.sh [-s SMP] [-m MEM_MB] KERNEL INITRD [-- QEMU_ARGS...]" ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 2 ]] || die "usage: qemu-boot.sh [-s SMP] [-m MEM_MB] KERNEL INITRD [-- QEMU_ARGS...]"
KERNEL=$1 INITRD=$2
shift 2
[[ ${1:-} != -- ]] || shift
[[ -f $KERNEL ]] || die "kernel not found: $KERNEL"
[[ -f $INITRD ]] || die "initramfs not found: $INITRD"

# Without tsc_early_khz the TSC calibration under TCG sometimes hangs boot.
MHZ=$(awk -F': *' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
[[ -n $MHZ ]] || die "cannot read host cpu MHz from /proc/cpuinfo"
KHZ=$(awk -v m="$MHZ" 'BEGIN { printf "%d", m * 1000 }')

APPEND="console=ttyS0 quiet tsc_early_khz=$KHZ i8042.noaux i8042.nomux i8042.nopnp"
APPEND+=" i8042.dumbkbd panic=-1 tsc=reliable no_timer_check noreplace-smp"
APPEND+=" 8250.nr_uarts=1 pci=off random.trust_cpu=on cryptomgr.notests reboot=t"
APPEND+=${CLEARBOX_APPEND:+ $CLEARBOX_APPEND}

exec "${QEMU:-qemu-system-x86_64}" \
    -M microvm,acpi=off,memory-backend=mem0 -accel tcg -cpu max \
    -smp "$SMP" -m "$MEM" \
    -object "memory-backend-memfd,id=mem0,size=${MEM}M,share=on" \
    -global virtio-mmio.force-legacy=false \
    -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "$@"
