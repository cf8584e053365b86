#!/usr/bin/env bash
# Run the clearbox end-to-end suites with bats and print the TAP stream plus a
# summary. Exits non-zero if any test failed.
#
#   RUNTIME=/usr/sbin/runc tests/e2e/run.sh                # reference run
#   tests/e2e/run.sh                                       # target/release/clearbox
#   ISOLATION=namespaces tests/e2e/run.sh bad-input lifecycle
#
# Arguments: suite names (bad-input lifecycle podman docker containerd shim cri cri-runc network
# image template; cri-runc is cri.bats through the runc shim; template only with isolation vm);
# default all. Environment: see tests/e2e/helpers.bash (RUNTIME, RUNTIME_NAME,
# ISOLATION, RUNTIME_ARGS, E2E_WORKDIR, E2E_TIMEOUT).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: must run as root (runtimes, podman, dockerd, containerd)" >&2
    exit 2
fi
command -v bats >/dev/null || { echo "run.sh: bats not installed" >&2; exit 2; }

if [ -z "${RUNTIME:-}" ]; then
    if [ -x "$repo/target/release/clearbox" ]; then
        RUNTIME="$repo/target/release/clearbox"
    else
        echo "run.sh: no runtime: set RUNTIME=/path/to/runtime or build target/release/clearbox" >&2
        exit 2
    fi
fi
[ -x "$RUNTIME" ] || { echo "run.sh: RUNTIME=$RUNTIME is not executable" >&2; exit 2; }
export RUNTIME
export RUNTIME_NAME="${RUNTIME_NAME:-$(basename "$RUNTIME")}"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"

suites=("$@")
if [ "${#suites[@]}" -eq 0 ]; then
    suites=(bad-input lifecycle conformance podman docker containerd shim cri cri-runc network image)
    # VM templates: isolation vm only, and once (the suite sets CLEARBOX_TEMPLATE itself).
    if [[ "${ISOLATION:-vm}" == vm && -z "${TEMPLATES:-}" ]]; then suites+=(template); fi
fi
files=()
for s in "${suites[@]}"; do
    f="$here/${s%.bats}.bats"
    [ -f "$f" ] || { echo "run.sh: unknown suite '$s'" >&2; exit 2; }
    files+=("$f")
done

mkdir -p "$E2E_WORKDIR"
"$here/build-image.sh" || { echo "run.sh: image build failed" >&2; exit 1; }

echo "# runtime: $RUNTIME_NAME ($RUNTIME) isolation: ${ISOLATION:-default}" >&2
tap="$E2E_WORKDIR/last-run.tap"
start=$(date +%s)
# bats runs in its own process group so an interrupt of run.sh (Ctrl-C,
# `timeout`) reaches all of it and the suites' teardown_file still runs
# (stopping the private dockerd/containerd).
set -m
bats --formatter tap "${files[@]}" > >(tee "$tap") &
bats_pid=$!
set +m
trap 'kill -INT -- -"$bats_pid" 2>/dev/null' INT TERM
rc=0
wait "$bats_pid" || rc=$?
# wait returns early when a trapped signal arrives; wait again for teardown.
while kill -0 "$bats_pid" 2>/dev/null; do
    wait "$bats_pid" || rc=$?
done
trap - INT TERM
sleep 0.2 # let tee flush
secs=$(( $(date +%s) - start ))

total=$(grep -cE '^(not )?ok ' "$tap")
failed=$(grep -cE '^not ok ' "$tap")
skipped=$(grep -cE '^ok .* # skip' "$tap")
passed=$(( total - failed - skipped ))
echo "# summary: $RUNTIME_NAME isolation=${ISOLATION:-default}: $passed passed, $failed failed, $skipped skipped, $total total in ${secs}s (TAP in $tap)"
if [ "$rc" -eq 0 ] && [ "$failed" -ne 0 ]; then rc=1; fi
exit "$rc"
