#!/usr/bin/env bash
# Builds the static clearbox guest agent (PID 1) and prints the path of the binary.
#   scripts/build-agent.sh            # release, size-optimised
# Env: CLEARBOX_AGENT_TARGET_DIR (default: <repo>/target/agent) - cargo target dir used for
#      this build only, so its size-oriented profile never invalidates other builds.
#      CLEARBOX_AGENT_OPT_LEVEL (default: s) - opt-level for this build.
# glibc static (no musl target available): -C target-feature=+crt-static with an explicit
# --target, so build scripts and proc-macros stay dynamic host binaries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CLEARBOX_AGENT_TARGET_DIR:-$root/target/agent}"
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CLEARBOX_AGENT_OPT_LEVEL:-s}"
# Development builds may trade size for build time: CLEARBOX_AGENT_LTO=off (and more codegen
# units) builds in a fraction of the fat-LTO time; shipped images and benchmarks use the default.
export CARGO_PROFILE_RELEASE_LTO="${CLEARBOX_AGENT_LTO:-fat}"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CLEARBOX_AGENT_CODEGEN_UNITS:-1}"
export CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_PROFILE_RELEASE_PANIC=abort
# The agent sets up containers with libcontainer, which links libseccomp: link it statically
# too (libseccomp-sys reads these; Debian's libseccomp-dev ships libseccomp.a).
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
[[ -f $LIBSECCOMP_LIB_PATH/libseccomp.a ]] ||
    { echo "build-agent.sh: no libseccomp.a in $LIBSECCOMP_LIB_PATH (install libseccomp-dev)" >&2; exit 1; }

cargo build --manifest-path "$root/Cargo.toml" --release --target "$target" \
    -p clearbox-agent >&2

bin="$CARGO_TARGET_DIR/$target/release/clearbox-agent"
if ! file "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    echo "build-agent.sh: $bin is not statically linked" >&2
    exit 1
fi
echo "$bin"
