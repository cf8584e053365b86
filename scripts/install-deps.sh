#!/usr/bin/env bash
# Install everything clearbox needs on a fresh Debian 12 machine. Run as root.
# Idempotent: a rerun with everything present does no apt or cargo work.
#
#   scripts/install-deps.sh
#
# - Debian packages (apt-get update + install, skipped when all are installed)
# - vhost-device-vsock 0.3.x (cargo install --locked, into /usr/local/bin;
#   skipped when `vhost-device-vsock --version` already works). Needs a Rust
#   toolchain with cargo on PATH (or in ~/.cargo/bin).
set -euo pipefail

die() { echo "install-deps: $*" >&2; exit 1; }
log() { echo "install-deps: $*" >&2; }

[[ $# -eq 0 ]] || die "takes no arguments (got: $*)"
[[ $EUID -eq 0 ]] || die "must run as root"

PACKAGES=(
    # VMM and runtimes clearbox runs alongside / is compared with
    qemu-system-x86 qemu-system-common
    podman conmon containerd docker.io runc crun runsc skopeo umoci
    # CNI plugins (bridge, host-local, loopback in /usr/lib/cni) for the CRI suite
    containernetworking-plugins
    # clearbox image: a local registry and signing tools for its tests
    docker-registry gnupg openssl curl
    slirp4netns fuse-overlayfs uidmap iproute2
    # tests and benchmarks
    bats hyperfine busybox-static jq file time python3 util-linux curl iperf3
    # guest kernel build (scripts/build-guest-kernel.sh) and initramfs
    linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev
    cpio xz-utils
    # Rust crates: seccomp/capabilities (youki libcontainer), protobuf codegen
    libseccomp-dev libcap-ng-dev pkg-config protobuf-compiler
)
VHOST_VSOCK_VERSION="~0.3"

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' ||
        missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} Debian packages present"
else
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi

# The unprivileged user that fetches, verifies and unpacks images (clearbox image, [image] user).
if id clearbox-fetch >/dev/null 2>&1; then
    log "user clearbox-fetch present"
else
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin clearbox-fetch
    log "created the system user clearbox-fetch"
fi
# Debian's docker-registry package starts a registry on :5000 where an init system runs it;
# the image tests start their own on 127.0.0.1.

if vhost-device-vsock --version >/dev/null 2>&1; then
    log "vhost-device-vsock present: $(command -v vhost-device-vsock)"
else
    CARGO=$(command -v cargo || true)
    [[ -n $CARGO || ! -x $HOME/.cargo/bin/cargo ]] || CARGO=$HOME/.cargo/bin/cargo
    [[ -n $CARGO ]] || die "cargo not found: install a Rust toolchain (rustup) to build vhost-device-vsock"
    log "cargo install vhost-device-vsock $VHOST_VSOCK_VERSION into /usr/local"
    # Own target dir: do not share (or lock) a workspace target directory.
    tmp_target=$(mktemp -d)
    trap 'rm -rf "$tmp_target"' EXIT
    CARGO_TARGET_DIR=$tmp_target "$CARGO" install --locked --root /usr/local \
        vhost-device-vsock --version "$VHOST_VSOCK_VERSION"
    /usr/local/bin/vhost-device-vsock --version >/dev/null ||
        die "vhost-device-vsock was installed but does not run"
    log "installed /usr/local/bin/vhost-device-vsock"
fi
