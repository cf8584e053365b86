#!/usr/bin/env bash
# CLI start-up benchmark: `RUNTIME run` of a busybox `true` bundle vs runc and
# crun, plus `podman run --rm IMG true` with each runtime. Prints a markdown
# table (paste into docs/BENCHMARKS.md) with medians and ratios, and the max
# RSS of each runtime process (GNU time %M).
#
#   bench/cli-run.sh                           # RUNTIME=target/release/clearbox
#   RUNTIME=/usr/sbin/runc bench/cli-run.sh    # harness check
#
# Environment:
#   RUNTIME          runtime under test (default $REPO/target/release/clearbox)
#   RUNTIME_NAME     label (default basename)
#   BENCH_ISOLATION  isolation passed to clearbox (default namespaces)
#   BENCH_RUNS       hyperfine runs per command (default 30, minimum 20)
#   BENCH_WARMUP     warmup runs (default 3)
#   BENCH_PODMAN     1 = include the podman lines (default 1)
#   E2E_WORKDIR      scratch/cache dir (default /var/tmp/clearbox-e2e)
#
# Fairness notes, printed with the table:
#  * crun 1.8 refuses hybrid cgroups, so it runs as
#    `unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun run ...'`.
#    The cost of that wrapper is measured on its own (`... exec true`) and
#    subtracted to give "crun (net)"; ratios use the net figure.
#  * runc and the runtime under test are exec'd directly (hyperfine -N).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"

die() { echo "cli-run: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (build clearbox or set RUNTIME)"
RUNTIME_NAME="${RUNTIME_NAME:-$(basename "$RUNTIME")}"
# Label of the runtime under test; distinct from the reference rows even when
# RUNTIME is runc itself.
L="$RUNTIME_NAME (under test)"
BENCH_ISOLATION="${BENCH_ISOLATION:-namespaces}"
BENCH_RUNS="${BENCH_RUNS:-30}"
BENCH_WARMUP="${BENCH_WARMUP:-3}"
BENCH_PODMAN="${BENCH_PODMAN:-1}"
[ "$BENCH_RUNS" -ge 20 ] || die "BENCH_RUNS must be >= 20"
RUNC="$(command -v runc)" || die "runc not found"
CRUN="$(command -v crun)" || die "crun not found"
command -v hyperfine >/dev/null || die "hyperfine not found"
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"

# shellcheck source=tests/e2e/helpers.bash
source "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

rt_flags=()
if [[ "$RUNTIME_NAME" == *clearbox* ]]; then
    rt_flags=(--isolation "$BENCH_ISOLATION")
fi

W="$(mktemp -d "$E2E_WORKDIR/bench.XXXXXX")"
cleanup() {
    "$RUNTIME" --root "$W/root-rt" delete --force bench-rt >/dev/null 2>&1 || true
    "$RUNC" --root "$W/root-runc" delete --force bench-runc >/dev/null 2>&1 || true
    if [ -n "${PODMAN_DIR:-}" ]; then
        podman_cmd rm -af -t 0 >/dev/null 2>&1 || true
        podman_cmd rmi -af >/dev/null 2>&1 || true
        grep -F " $PODMAN_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
        rmdir_cgroup_parents libpod_parent || true
    fi
    rm -rf "$W" || true
}
trap cleanup EXIT

B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
write_config "$B" '["true"]'

# The unshare wrapper for crun (private mount ns, v2 mount hidden).
CRUN_WRAP="umount /sys/fs/cgroup/unified && exec"

cmd_rt="$RUNTIME --root $W/root-rt ${rt_flags[*]} run --bundle $B bench-rt"
cmd_runc="$RUNC --root $W/root-runc run --bundle $B bench-runc"
cmd_crun="unshare -m sh -c '$CRUN_WRAP $CRUN --root $W/root-crun run --bundle $B bench-crun'"
cmd_unshare="unshare -m sh -c '$CRUN_WRAP true'"

# Each command must work before it is timed.
for c in "$cmd_rt" "$cmd_runc" "$cmd_crun" "$cmd_unshare"; do
    sh -c "$c" </dev/null >/dev/null 2>"$W/err" || die "command failed: $c: $(cat "$W/err")"
done

load_start=$(cut -d' ' -f1 /proc/loadavg)
echo "cli-run: hyperfine ($BENCH_RUNS runs, $BENCH_WARMUP warmup) ..." >&2
hyperfine -N --warmup "$BENCH_WARMUP" --runs "$BENCH_RUNS" --export-json "$W/cli.json" \
    -n "$L run" "$cmd_rt" \
    -n "runc run" "$cmd_runc" \
    -n "crun run (unshare+umount wrapper)" "$cmd_crun" \
    -n "unshare+umount wrapper alone" "$cmd_unshare" >&2

# Max RSS (KiB) over 5 runs.
maxrss() {
    local m=0 v
    for _ in 1 2 3 4 5; do
        v=$(/usr/bin/time -f %M sh -c "$1" 2>&1 >/dev/null </dev/null | tail -1)
        [[ "$v" =~ ^[0-9]+$ ]] || die "could not measure RSS of: $1"
        [ "$v" -gt "$m" ] && m=$v
    done
    echo "$m"
}
rss_rt=$(maxrss "$cmd_rt")
rss_runc=$(maxrss "$cmd_runc")
# crun's own RSS: time crun inside the wrapper, not the wrapper.
rss_crun=0
for _ in 1 2 3 4 5; do
    v=$(unshare -m sh -c "umount /sys/fs/cgroup/unified && /usr/bin/time -f %M $CRUN --root $W/root-crun run --bundle $B bench-crun" 2>&1 >/dev/null </dev/null | tail -1)
    [[ "$v" =~ ^[0-9]+$ ]] || die "could not measure crun RSS: $v"
    [ "$v" -gt "$rss_crun" ] && rss_crun=$v
done

# --- podman ------------------------------------------------------------------
if [ "$BENCH_PODMAN" = 1 ]; then
    PODMAN_DIR="$W/podman"
    mkdir -p "$PODMAN_DIR"
    cat >"$PODMAN_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$PODMAN_DIR/tmp"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CLEARBOX_ISOLATION=$BENCH_ISOLATION"]
EOF
    cat >"$PODMAN_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/root"
runroot = "$PODMAN_DIR/runroot"
EOF
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
    export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
    pbase="podman --root $PODMAN_DIR/root --runroot $PODMAN_DIR/runroot --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
    podman_cmd() { $pbase "$@"; }
    podman_cmd load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
    annot=""
    [[ "$RUNTIME_NAME" == *clearbox* ]] && annot="--annotation io.clearbox.isolation=$BENCH_ISOLATION"
    p_rt="$pbase --runtime $RUNTIME run --rm $annot $IMAGE true"
    p_runc="$pbase --runtime $RUNC run --rm $IMAGE true"
    # podman+crun also needs the v2 mount hidden (crun reads it itself).
    p_crun="unshare -m sh -c '$CRUN_WRAP $pbase --runtime $CRUN run --rm $IMAGE true'"
    for c in "$p_rt" "$p_runc" "$p_crun"; do
        sh -c "$c" </dev/null >/dev/null 2>"$W/err" || die "command failed: $c: $(cat "$W/err")"
    done
    echo "cli-run: podman (20 runs each) ..." >&2
    hyperfine -N --warmup 2 --runs 20 --export-json "$W/podman.json" \
        -n "podman run --rm ($L)" "$p_rt" \
        -n "podman run --rm (runc)" "$p_runc" \
        -n "podman run --rm (crun, unshare wrapper)" "$p_crun" >&2
fi

# --- report -------------------------------------------------------------------
med() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .median * 1000' "$1"; }
row() { # file name
    jq -r --arg n "$2" '.results[] | select(.command == $n) |
        "| \(.command) | \(.median*1000*10|round/10) | \(.mean*1000*10|round/10) ± \(.stddev*1000*10|round/10) | \(.min*1000*10|round/10) | \(.max*1000*10|round/10) |"' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
net() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

m_rt=$(med "$W/cli.json" "$L run")
m_runc=$(med "$W/cli.json" "runc run")
m_crun_raw=$(med "$W/cli.json" "crun run (unshare+umount wrapper)")
m_wrap=$(med "$W/cli.json" "unshare+umount wrapper alone")
m_crun=$(net "$m_crun_raw" "$m_wrap")

echo
echo "### CLI \`run\` of busybox \`true\` ($(date -u +%F), $(nproc) cores, $(uname -r))"
echo
echo "Runtime under test: \`$RUNTIME_NAME\` ($RUNTIME)$( [ "${#rt_flags[@]}" -gt 0 ] && echo ", \`${rt_flags[*]}\`"). hyperfine, $BENCH_RUNS runs, $BENCH_WARMUP warmup. 1-min load average: $load_start at start, $(cut -d' ' -f1 /proc/loadavg) at end (anything near the core count makes the numbers noisy; the runc-vs-runc ratio shows the noise when RUNTIME is runc)."
echo
echo "| command | median (ms) | mean ± σ (ms) | min (ms) | max (ms) |"
echo "|---|---:|---:|---:|---:|"
row "$W/cli.json" "$L run"
row "$W/cli.json" "runc run"
row "$W/cli.json" "crun run (unshare+umount wrapper)"
row "$W/cli.json" "unshare+umount wrapper alone"
echo "| crun run (net = wrapped − wrapper) | $m_crun | | | |"
echo
echo "| ratio (medians) | value |"
echo "|---|---:|"
echo "| $RUNTIME_NAME / crun (net) | $(ratio "$m_rt" "$m_crun") |"
echo "| $RUNTIME_NAME / crun (wrapped, incl. unshare) | $(ratio "$m_rt" "$m_crun_raw") |"
echo "| $RUNTIME_NAME / runc | $(ratio "$m_rt" "$m_runc") |"
echo
echo "| max RSS of the runtime process (GNU time %M, KiB) | value |"
echo "|---|---:|"
echo "| $L run | $rss_rt |"
echo "| runc run | $rss_runc |"
echo "| crun run | $rss_crun |"
if [ -n "${PODMAN_DIR:-}" ] && [ -f "$W/podman.json" ]; then
    pm_rt=$(med "$W/podman.json" "podman run --rm ($L)")
    pm_runc=$(med "$W/podman.json" "podman run --rm (runc)")
    pm_crun=$(med "$W/podman.json" "podman run --rm (crun, unshare wrapper)")
    echo
    echo "| podman 4.3 \`run --rm IMG true\` | median (ms) | mean ± σ (ms) | min (ms) | max (ms) |"
    echo "|---|---:|---:|---:|---:|"
    row "$W/podman.json" "podman run --rm ($L)"
    row "$W/podman.json" "podman run --rm (runc)"
    row "$W/podman.json" "podman run --rm (crun, unshare wrapper)"
    echo
    echo "podman ratios (medians): $RUNTIME_NAME/crun $(ratio "$pm_rt" "$(net "$pm_crun" "$m_wrap")") (crun net of wrapper), $RUNTIME_NAME/runc $(ratio "$pm_rt" "$pm_runc")."
fi
echo
echo "crun 1.8 refuses this hybrid-cgroup host, so it runs in a private mount namespace with /sys/fs/cgroup/unified unmounted; that wrapper alone costs $(printf '%.1f' "$m_wrap") ms (median) and is subtracted for the net figure."
