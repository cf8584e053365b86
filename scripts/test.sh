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
failures=()
e2e_dir="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
rm -f "$e2e_dir"/failed-*.tap
# vm twice: VMs restored from templates (the default where the host supports them), then
# every VM booted cold (TEMPLATES=off).
for run in vm vm-cold namespaces fly; do
    iso=${run%-cold}
    templates=""
    [[ $run != *-cold ]] || templates=off
    log "end-to-end suites, isolation=$iso${templates:+ templates=$templates} (podman, docker, containerd, CRI, network, lifecycle, bad input)"
    if ! ISOLATION=$iso TEMPLATES=$templates RUNTIME="$root/target/release/clearbox" tests/e2e/run.sh; then
        status=1
        failures+=("e2e $run")
        cp -f "$e2e_dir/last-run.tap" "$e2e_dir/failed-$run.tap" 2>/dev/null || true
    fi
done
log "fuzzing, bounded (scripts/fuzz.sh TARGET [SECONDS] for a longer run)"
scripts/fuzz.sh all "${FUZZ_SECONDS:-40}" || { status=1; failures+=("fuzzing"); }

# CI shows only the end of the log: repeat what failed, with each failed test's diagnostics.
if [ "$status" -ne 0 ]; then
    log "FAILED: ${failures[*]}"
    for run in vm vm-cold namespaces fly; do
        tap="$e2e_dir/failed-$run.tap"
        [ -f "$tap" ] || continue
        echo "== failed tests, e2e $run"
        awk '/^not ok /{p=1; n=0; print; next} /^(ok |not ok )/{p=0} p && n < 25 {print; n++}' "$tap"
    done
fi
exit $status
