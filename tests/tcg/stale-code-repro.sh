#!/usr/bin/env bash
# Reproducer for guest programs crashing under QEMU TCG when they run from virtio-fs
# (docs/ARCHITECTURE.md, "QEMU under TCG: stale translations on virtio-fs pages").
#
# Boots clearbox's guest kernel with a busybox initramfs (no agent), mounts a virtio-fs share
# served by virtiofsd, and execs the same static busybox N times each from virtio-fs, from
# the initramfs and from a tmpfs copy, plus a dynamic bash+sha256sum from virtio-fs. Prints
# how many of each failed and QEMU's CPU time.
#
# Usage: tests/tcg/stale-code-repro.sh [N] [extra kernel args...]
# Env:   QEMU (qemu-system-x86_64 on PATH), QEMU_DATA (-L dir, for an unpacked QEMU),
#        VIRTIOFSD (Rust virtiofsd; else /usr/lib/qemu/virtiofsd), CACHE (virtiofsd cache
#        mode, auto), DROP=1 (drop the guest's caches before every round), KERNEL, MEM (MiB).
# Needs root (virtiofsd's namespace sandbox), busybox-static, a guest kernel.
set -euo pipefail
N=${1:-20}; shift || true
EXTRA="$*"
QEMU=${QEMU:-qemu-system-x86_64}
KERNEL=${KERNEL:-/usr/share/clearbox/vmlinux}
MEM=${MEM:-2112}
CACHE=${CACHE:-auto}
BB=$(command -v busybox)
file -L "$BB" | grep -q 'statically linked' || { echo "needs busybox-static" >&2; exit 1; }
d=$(mktemp -d /tmp/tcg-repro.XXXXXX)
trap 'kill $fpid 2>/dev/null || true; rm -rf "$d"' EXIT

# The share: a static busybox, a dynamic bash + sha256sum with their libraries, a data file.
mkdir -p "$d/share/bin" "$d/share/data" "$d/ird/bin" "$d/ird/proc" "$d/ird/sys" "$d/ird/dev" \
    "$d/ird/mnt" "$d/ird/tmp"
cp "$BB" "$d/share/bin/busybox"
cp /bin/bash "$d/share/bin/bash.dyn"; cp /usr/bin/sha256sum "$d/share/bin/sha256sum.dyn"
for l in $(ldd /bin/bash /usr/bin/sha256sum | awk '/=>/{print $3} /ld-linux/{print $1}' | sort -u); do
    mkdir -p "$d/share$(dirname "$l")"; cp -L "$l" "$d/share$l"
done
head -c 65536 /dev/urandom >"$d/share/data/in"

cp "$BB" "$d/ird/bin/busybox"
cat >"$d/ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp; mount -t virtiofs share /mnt || echo MOUNTFAIL
N=$(sed -n 's/.*rp.n=\([0-9]*\).*/\1/p' /proc/cmdline)
mkdir /tmp/t; cp /mnt/bin/busybox /tmp/t/busybox
a=0; b=0; c=0; e=0; i=0
while [ $i -lt $N ]; do
  i=$((i+1))
  grep -q rp.drop /proc/cmdline && echo 3 >/proc/sys/vm/drop_caches
  /mnt/bin/busybox sha256sum /mnt/data/in >/dev/null 2>&1 || a=$((a+1))
  /bin/busybox sha256sum /mnt/data/in >/dev/null 2>&1 || b=$((b+1))
  /tmp/t/busybox sha256sum /mnt/data/in >/dev/null 2>&1 || c=$((c+1))
  chroot /mnt /bin/bash.dyn -c '/bin/sha256sum.dyn /data/in' >/dev/null 2>&1 || e=$((e+1))
done
echo "RESULT n=$N failed: virtiofs_static=$a initramfs_static=$b tmpfs_static=$c virtiofs_dynamic=$e"
reboot -f
INIT
chmod +x "$d/ird/init"
(cd "$d/ird" && find . | cpio -o -H newc 2>/dev/null) >"$d/initrd.img"

if [[ -n ${VIRTIOFSD:-} ]]; then
    "$VIRTIOFSD" --socket-path "$d/fs.sock" --shared-dir "$d/share" --cache "$CACHE" \
        --sandbox namespace >"$d/fsd.log" 2>&1 &
else
    /usr/lib/qemu/virtiofsd --socket-path="$d/fs.sock" -o source="$d/share" -o cache="$CACHE" \
        -o sandbox=namespace -o log_level=warn >"$d/fsd.log" 2>&1 &
fi
fpid=$!
for _ in $(seq 50); do [[ -S $d/fs.sock ]] && break; sleep 0.1; done
khz=$(awk -F: '/cpu MHz/{printf "%d", $2*1000; exit}' /proc/cpuinfo)
data=(); [[ -n ${QEMU_DATA:-} ]] && data=(-L "$QEMU_DATA")
/usr/bin/time -o "$d/time" -f '%U %S' timeout 900 "$QEMU" "${data[@]}" \
    -M microvm,acpi=off,memory-backend=mem0 -accel tcg,tb-size=16 -cpu max -smp 1 -m "${MEM}M" \
    -object "memory-backend-memfd,id=mem0,size=${MEM}M,share=on" \
    -global virtio-mmio.force-legacy=false -nodefaults -no-user-config -display none -no-reboot \
    -chardev "file,id=ser0,path=$d/console.log" -serial chardev:ser0 \
    -kernel "$KERNEL" -initrd "$d/initrd.img" \
    -append "console=ttyS0 panic=-1 tsc=reliable no_timer_check 8250.nr_uarts=1 pci=off reboot=t tsc_early_khz=$khz nolapic_timer rp.n=$N ${DROP:+rp.drop} $EXTRA" \
    -chardev "socket,id=fs0,path=$d/fs.sock" -device vhost-user-fs-device,chardev=fs0,tag=share \
    -device virtio-balloon-device,free-page-reporting=on >"$d/qemu.log" 2>&1 || true
echo "$("$QEMU" --version | head -1) | kernel args: ${EXTRA:-none} | cache=$CACHE${DROP:+ drop_caches}"
grep -a RESULT "$d/console.log" || { echo "no result"; tail -20 "$d/console.log"; }
echo "guest kernel reports: $(grep -a -c -E 'segfault|traps:' "$d/console.log"); QEMU CPU s (user sys): $(cat "$d/time")"
