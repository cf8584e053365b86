#!/usr/bin/env bash
# Builds everything clearbox runs: the clearbox binary (release), the guest kernel (cached by
# the hash of its config), the static guest agent and its initramfs. Installs the guest assets
# to /usr/share/clearbox and the binary to /usr/local/bin. Run as root after install-deps.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "build: $*" >&2; }

log "clearbox + containerd-shim-clearbox-v2 (release)"
cargo build --release -p clearbox -p clearbox-shim >&2
install -m 0755 target/release/clearbox /usr/local/bin/clearbox
# containerd finds a runtime v2 shim by its binary name on PATH
# (runtime_type io.containerd.clearbox.v2 -> containerd-shim-clearbox-v2).
install -m 0755 target/release/containerd-shim-clearbox-v2 /usr/local/bin/containerd-shim-clearbox-v2

log "CRI test client (tests/e2e/cri.bats)"
cargo build --release -p clearbox-cri-test >&2
# The host end of the virtio-serial agent channel (VM templates), found next to clearbox.
install -m 0755 target/release/clearbox-vmux /usr/local/bin/clearbox-vmux

log "guest kernel (cached)"
scripts/build-guest-kernel.sh >&2

log "guest agent + initramfs"
agent=$(scripts/build-agent.sh)
scripts/build-initramfs.sh "$agent" >&2

log "boot floor initramfs (benchmarks)"
guest/init-floor/build.sh >&2

log "done: /usr/local/bin/{clearbox,containerd-shim-clearbox-v2}, /usr/share/clearbox/{vmlinux,initramfs.img}"
