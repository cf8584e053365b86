#!/usr/bin/env bash
# Demo: podman runs a busybox container with clearbox as its OCI runtime, and the container
# reports the kernel it runs on. With isolation=vm (the default once the VM backend is built)
# that is clearbox's guest kernel, not the host's. Run as root after scripts/build.sh.
#   ISOLATION=namespaces scripts/demo.sh     # pick another isolation
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runtime=${RUNTIME:-/usr/local/bin/clearbox}
work=${DEMO_WORKDIR:-/var/tmp/clearbox-demo}
mkdir -p "$work"

# This host lacks CAP_SYS_RESOURCE: container ulimits must stay within the host's hard limits.
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
[network]
# podman's default bridge network, as users run it; its config stays in the demo's directory.
network_backend = "netavark"
network_config_dir = "$work/networks"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$work/containers.conf"
podman=(podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs --runtime "$runtime")

E2E_WORKDIR="$work" "$root/tests/e2e/build-image.sh" >/dev/null
image_tar="$work/image/clearbox-test.oci.tar"
"${podman[@]}" image exists localhost/clearbox-test:latest ||
    "${podman[@]}" load -q -i "$image_tar" >/dev/null

env_args=()
[[ -n ${ISOLATION:-} ]] && env_args=(--annotation "io.clearbox.isolation=$ISOLATION")
echo "host kernel:      $(uname -r)"
echo -n "container kernel: "
"${podman[@]}" run --rm "${env_args[@]}" localhost/clearbox-test:latest uname -r
"${podman[@]}" run --rm "${env_args[@]}" localhost/clearbox-test:latest sh -c \
    'echo "hello from $(hostname), pid $$ of a container"'
