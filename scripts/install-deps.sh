#!/usr/bin/env bash
# Install everything clearbox needs on a fresh Debian 12 machine. Run as root.
# Idempotent: a rerun with everything present does no apt or cargo work.
#
#   scripts/install-deps.sh
#
# - Debian packages (apt-get update + install, skipped when all are installed)
# - QEMU 10 from Debian's bookworm-backports (VM templates need it: QEMU 7.2 cannot migrate
#   vhost-user-fs; skipped when qemu-system-x86_64 is 10 or newer)
# - vhost-device-vsock 0.3.x and the Rust virtiofsd 1.14 (cargo install --locked, into
#   /usr/local/bin; each skipped when its `--version` already works). Needs a Rust
#   toolchain with cargo on PATH (or in ~/.cargo/bin).
set -euo pipefail

die() { echo "install-deps: $*" >&2; exit 1; }
log() { echo "install-deps: $*" >&2; }

[[ $# -eq 0 ]] || die "takes no arguments (got: $*)"
[[ $EUID -eq 0 ]] || die "must run as root"

PACKAGES=(
    # runtimes clearbox runs alongside / is compared with (QEMU: below, from backports)
    podman conmon containerd docker.io runc crun runsc skopeo umoci
    # CNI plugins (bridge, host-local, loopback in /usr/lib/cni) for the CRI suite
    containernetworking-plugins
    # clearbox image: a local registry and signing tools for its tests
    docker-registry gnupg openssl curl
    slirp4netns fuse-overlayfs uidmap iproute2
    # tests and benchmarks
    bats hyperfine busybox-static jq file time python3 util-linux curl iperf3
    # guest kernel build (scripts/build-guest-kernel.sh) and initramfs
    linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev patch
    cpio xz-utils
    # Rust crates: seccomp/capabilities (youki libcontainer), protobuf codegen
    libseccomp-dev libcap-ng-dev pkg-config protobuf-compiler
)
VHOST_VSOCK_VERSION="~0.3"
VIRTIOFSD_VERSION="~1.14"
QEMU_MIN_MAJOR=10

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

# QEMU 10 from bookworm-backports: VM templates need it (docs/ARCHITECTURE.md, "Agent channel
# and VM templates"); it also boots faster than Debian 12's 7.2. Only the QEMU packages come
# from backports (apt's default keeps everything else on bookworm).
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n '1s/^QEMU emulator version \([0-9]*\)\..*/\1/p'; }
if [[ "$(qemu_major)" -ge $QEMU_MIN_MAJOR ]] 2>/dev/null; then
    log "QEMU $(qemu_major) present"
else
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        log "added $src"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y -t bookworm-backports qemu-system-x86 qemu-system-common qemu-system-data
    [[ "$(qemu_major)" -ge $QEMU_MIN_MAJOR ]] 2>/dev/null ||
        die "QEMU from bookworm-backports is not $QEMU_MIN_MAJOR or newer: $(qemu-system-x86_64 --version | head -1)"
    log "installed $(qemu-system-x86_64 --version | head -1)"
fi

CARGO=$(command -v cargo || true)
[[ -n $CARGO || ! -x $HOME/.cargo/bin/cargo ]] || CARGO=$HOME/.cargo/bin/cargo
tmp_target=""
trap '[[ -z $tmp_target ]] || rm -rf "$tmp_target"' EXIT
# cargo_install BINARY CRATE VERSION WHY: into /usr/local/bin unless BINARY --version works.
cargo_install() {
    local bin=$1 crate=$2 version=$3 why=$4
    if "/usr/local/bin/$bin" --version >/dev/null 2>&1; then
        log "$bin present: /usr/local/bin/$bin"
        return
    fi
    [[ -n $CARGO ]] || die "cargo not found: install a Rust toolchain (rustup) to build $bin ($why)"
    log "cargo install $crate $version into /usr/local ($why)"
    # Own target dir: do not share (or lock) a workspace target directory.
    [[ -n $tmp_target ]] || tmp_target=$(mktemp -d)
    CARGO_TARGET_DIR=$tmp_target "$CARGO" install --locked --root /usr/local \
        "$crate" --version "$version"
    "/usr/local/bin/$bin" --version >/dev/null || die "$bin was installed but does not run"
    log "installed /usr/local/bin/$bin"
}
cargo_install vhost-device-vsock vhost-device-vsock "$VHOST_VSOCK_VERSION" "the vsock backend"
# The Rust virtiofsd: QEMU 10 has no C virtiofsd, and virtio-fs migrates (templates) only
# with the Rust one.
cargo_install virtiofsd virtiofsd "$VIRTIOFSD_VERSION" "virtio-fs; migrates for VM templates"
