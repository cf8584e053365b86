#!/usr/bin/env bash
# Images, end to end, in one run:
#  1. pull + unpack: `clearbox image pull` (unprivileged worker: fetch, verify a GPG signature,
#     check digests, unpack) of the busybox test image from a local registry, against
#     `skopeo copy docker://… oci:…` + `umoci unpack` of the same image (no verification);
#  2. run: `clearbox image run IMAGE true` (bundle from the store, isolation vm and namespaces)
#     against `podman run --rm IMAGE true` with crun.
# Medians and ratios.
#
#   bench/image.sh            # RUNTIME=target/release/clearbox, BENCH_RUNS=10
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "image-bench: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
RUNS="${BENCH_RUNS:-10}"
for tool in hyperfine docker-registry skopeo umoci gpg podman crun; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh)"
done

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-bench-image.XXXXXX)"
chmod 755 "$W"
cleanup() {
    [ -f "$W/registry.pid" ] && kill "$(cat "$W/registry.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

start_registry "$W" || die "no registry"

export GNUPGHOME="$W/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key 'bench <bench@clearbox.test>' ed25519 sign never 2>/dev/null
FPR=$(gpg --with-colons --list-keys | awk -F: '/^fpr/{print $10; exit}')
gpg --armor --export "$FPR" >"$W/key.asc"
mkdir -p "$W/registries.d" "$W/sigstore"
printf 'default-docker:\n  sigstore-staging: file://%s/sigstore\n  sigstore: file://%s/sigstore\n' "$W" "$W" \
    >"$W/registries.d/default.yaml"
skopeo copy --quiet --registries.d "$W/registries.d" --dest-tls-verify=false --sign-by "$FPR" \
    "oci:$IMAGE_DIR/oci-layout:latest" "docker://$REG/bench/busybox:1"
IMG="$REG/bench/busybox:1"

write_image_config "$W"
"$RUNTIME" trust add --prefix "$REG/bench" "$W/key.asc" 2>/dev/null

cb="$RUNTIME --root $W/root"
echo "image-bench: pull + unpack, hyperfine ($RUNS runs) ..." >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$W/pull.json" \
    --prepare "sh -c 'rm -rf $W/store $W/oci $W/bundle'" \
    -n "clearbox image pull (verify + unpack)" "$cb image pull $IMG" \
    -n "skopeo copy + umoci unpack" \
    "sh -c 'skopeo copy --quiet --src-tls-verify=false docker://$IMG oci:$W/oci:1 && umoci unpack --image $W/oci:1 $W/bundle >/dev/null'" >&2

# Runs: the image is in the store (clearbox) / loaded (podman).
$cb image pull "$IMG" >/dev/null 2>&1
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
$pod pull -q --tls-verify=false "docker://$IMG" >/dev/null
crun_wrap="$W/crun-wrap"
cat >"$crun_wrap" <<'EOF'
#!/bin/sh
# crun 1.8 refuses hybrid cgroups: hide the v2 mount in a private mount namespace.
exec unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun "$@"' crun "$@"
EOF
chmod +x "$crun_wrap"
echo "image-bench: run, hyperfine ($RUNS runs) ..." >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$W/run.json" \
    -n "clearbox image run (vm)" "$cb --isolation vm image run $IMG -- true" \
    -n "clearbox image run (namespaces)" "$cb --isolation namespaces image run $IMG -- true" \
    -n "podman run --rm (crun)" "$pod --runtime $crun_wrap run --rm $IMG true" >&2

python3 - "$W/pull.json" "$W/run.json" <<'EOF'
import json, sys
rows = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        rows[r["command"]] = r["median"] * 1000
print("| command | median (ms) |\n|---|---:|")
for k, v in rows.items():
    print(f"| {k} | {v:.1f} |")
pull, ref = rows["clearbox image pull (verify + unpack)"], rows["skopeo copy + umoci unpack"]
crun = rows["podman run --rm (crun)"]
print("\n| ratio (medians) | value |\n|---|---:|")
print(f"| clearbox pull+verify+unpack / skopeo+umoci | {pull / ref:.2f} |")
print(f"| clearbox image run (vm) / podman+crun | {rows['clearbox image run (vm)'] / crun:.2f} |")
print(f"| clearbox image run (namespaces) / podman+crun | {rows['clearbox image run (namespaces)'] / crun:.2f} |")
EOF
