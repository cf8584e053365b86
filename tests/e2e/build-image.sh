#!/usr/bin/env bash
# Build the clearbox e2e test image (busybox rootfs) from Debian's busybox-static,
# entirely offline, and export it as:
#   $E2E_WORKDIR/image/oci-layout/              OCI image layout (tag: latest)
#   $E2E_WORKDIR/image/clearbox-test.oci.tar    OCI archive  (podman load / ctr image import)
#   $E2E_WORKDIR/image/clearbox-test.docker.tar docker-archive (docker load)
#   $E2E_WORKDIR/image/rootfs/                  the plain rootfs (for hand-made bundles)
# Image name: localhost/clearbox-test:latest.
# Cached: rebuilt only when missing, when busybox changes, or with --force.
set -euo pipefail

E2E_WORKDIR=${E2E_WORKDIR:-/var/tmp/clearbox-e2e}
IMAGE_NAME=${IMAGE_NAME:-localhost/clearbox-test:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}
OUT="$E2E_WORKDIR/image"
STAMP="$OUT/.stamp"

die() { echo "build-image: $*" >&2; exit 1; }
for tool in umoci skopeo sha256sum; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || die "$BUSYBOX is not statically linked"

want="$(sha256sum "$BUSYBOX" | cut -d' ' -f1) $IMAGE_NAME v2"
if [ "${1:-}" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && [ -f "$OUT/clearbox-test.oci.tar" ] && [ -f "$OUT/clearbox-test.docker.tar" ] \
    && [ -x "$OUT/rootfs/bin/busybox" ]; then
    echo "build-image: cached image in $OUT"
    exit 0
fi

rm -rf "$OUT"
mkdir -p "$OUT"
tmp="$(mktemp -d "$E2E_WORKDIR/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# --- rootfs -----------------------------------------------------------------
R="$OUT/rootfs"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/user,data,proc,sys,dev,run,var/tmp}
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 700 "$R/root"
cp "$BUSYBOX" "$R/bin/busybox"
# --install -s needs /proc/self/exe to point at the rootfs busybox: run it chrooted.
chroot "$R" /bin/busybox --install -s
[ -L "$R/bin/sh" ] || die "busybox --install did not create /bin/sh"
cat >"$R/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat >"$R/etc/group" <<'GR'
root:x:0:
user:x:1000:
nogroup:x:65534:
GR
chown 1000:1000 "$R/home/user"
echo 'clearbox-test' >"$R/etc/hostname"
: >"$R/etc/hosts"
: >"$R/etc/resolv.conf"

# --- OCI image via umoci ----------------------------------------------------
L="$OUT/oci-layout"
umoci init --layout "$L"
umoci new --image "$L:latest"
umoci unpack --image "$L:latest" "$tmp/bundle" >/dev/null
rm -rf "$tmp/bundle/rootfs"
cp -a "$R" "$tmp/bundle/rootfs"
umoci repack --image "$L:latest" "$tmp/bundle"
umoci config --image "$L:latest" \
    --config.cmd /bin/sh \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir / \
    --architecture amd64 --os linux
umoci gc --layout "$L"

# --- archives ---------------------------------------------------------------
skopeo copy --quiet "oci:$L:latest" "oci-archive:$OUT/clearbox-test.oci.tar:$IMAGE_NAME"
skopeo copy --quiet "oci:$L:latest" "docker-archive:$OUT/clearbox-test.docker.tar:$IMAGE_NAME"

echo "$want" >"$STAMP"
echo "build-image: built $IMAGE_NAME in $OUT"
