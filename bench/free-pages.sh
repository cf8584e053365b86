#!/usr/bin/env bash
# Freed guest memory returns to the host (virtio-balloon free page reporting).
#
# One vm container allocates and touches FILL_MIB MiB (dd's buffer), frees it, then idles. The
# host memory behind guest RAM (QEMU's shared memfd: RssShmem of the QEMU process) is sampled
# before the fill, at its peak and after the guest freed it. Without free page reporting the
# host keeps every page the guest ever touched; with it, the freed blocks come back within
# seconds (the guest reports free 2 MiB blocks about 2 s after they are freed).
#
#   bench/free-pages.sh            # RUNTIME=target/release/clearbox, FILL_MIB=256
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "free-pages: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
FILL="${FILL_MIB:-256}"

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null
W="$(mktemp -d /var/tmp/clearbox-freepages.XXXXXX)"
cleanup() {
    "$RUNTIME" --root "$W/root" delete --force fp >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
# dd with a FILL_MIB block size allocates and touches a FILL_MIB buffer, then exits: its
# memory is freed in the guest.
# It starts when the host creates /go in the rootfs (shared with the guest through virtio-fs).
write_config "$B" "[\"sh\",\"-c\",\"while [ ! -e /go ]; do sleep 0.2; done; dd if=/dev/zero of=/dev/null bs=${FILL}M count=1 2>/dev/null; exec sleep 100000\"]"
# Guest RAM large enough for the fill.
edit_config "$B" --argjson m $(((FILL + 256) * 1024 * 1024)) '.linux.resources.memory.limit = $m'

"$RUNTIME" --root "$W/root" --isolation vm run -d --bundle "$B" fp </dev/null >/dev/null
shim=$("$RUNTIME" --root "$W/root" state fp | jq -r .pid)
qemu=$(ps -o pid=,comm= --ppid "$shim" | awk '$2 ~ /qemu/ {print $1; exit}')
[ -n "$qemu" ] || die "no QEMU below shim $shim"
shmem() { awk '/^RssShmem:/ {print $2}' "/proc/$qemu/status"; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$qemu/smaps_rollup"; }
sleep 5
before=$(shmem)
before_pss=$(pss)
touch "$B/rootfs/go"
peak=$before
for _ in $(seq 60); do
    v=$(shmem)
    [ "$v" -gt "$peak" ] && peak=$v
    # The fill is done and freed once RSS has risen by most of it and come down again.
    [ "$peak" -gt $((before + FILL * 1024 * 3 / 4)) ] && [ "$v" -lt $((peak - FILL * 1024 / 2)) ] && break
    sleep 0.5
done
sleep 5 # let reporting finish
after=$(shmem)
after_pss=$(pss)
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
echo "| guest RAM on the host (QEMU RssShmem) | MiB |"
echo "|---|---:|"
echo "| idle, before the fill | $(mib "$before") |"
echo "| peak, $FILL MiB allocated in the guest | $(mib "$peak") |"
echo "| after the guest freed it (+5 s) | $(mib "$after") |"
echo
returned=$(awk -v p="$peak" -v a="$after" -v f="$FILL" 'BEGIN {printf "%.0f", (p - a) / 1024 / f * 100}')
echo "returned to the host: $(mib $((peak - after))) MiB of $FILL MiB freed ($returned%);" \
    "QEMU PSS $(mib "$before_pss") -> $(mib "$after_pss") MiB"
