#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run): installs what is missing, builds, checks
# formatting and lints, runs the Rust tests (unit, CLI, agent, real VMs under TCG/KVM) and the
# end-to-end suites with the real clients (podman, Docker, containerd). Run as root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "== $*" >&2; }

log "dependencies"
scripts/install-deps.sh
log "build"
scripts/build.sh
log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace -- --test-threads=2
# Every isolation through the real clients: vm (the default), then namespaces and fly.
status=0
for iso in vm namespaces fly; do
    log "end-to-end suites, isolation=$iso (podman, docker, containerd, network, lifecycle, bad input)"
    ISOLATION=$iso RUNTIME="$root/target/release/clearbox" tests/e2e/run.sh || status=1
done
log "fuzzing, bounded (scripts/fuzz.sh TARGET [SECONDS] for a longer run)"
scripts/fuzz.sh all "${FUZZ_SECONDS:-40}" || status=1
exit $status
