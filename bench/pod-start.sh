#!/usr/bin/env bash
# Kubernetes pod start through containerd's CRI (issue 11): RunPodSandbox, then CreateContainer
# + StartContainer of one container, timed by cri-client (crates/clearbox-cri-test), with the
# clearbox runtime handler vs the runc handler, in ONE run against ONE private containerd that
# has every handler configured. Two clearbox handlers, one per runtime_type:
#   clearbox     io.containerd.runc.v2 with BinaryName = clearbox (one VM per pod through
#                clearbox's pod support on the runc command line)
#   clearbox-v2  io.containerd.clearbox.v2: containerd-shim-clearbox-v2 (one shim and one VM
#                per pod); measured when a probe pod starts through it, else skipped with why.
# Then P pods started at once (wall time vs one pod alone), per handler. Every pod is stopped
# and removed, and the run checks that nothing is left (processes, VM directories, mounts,
# network namespaces, bridge ports, IPs, state, host cgroups). Prints markdown tables with
# medians and ratios against the runc anchor of the same run (paste into docs/BENCHMARKS.md).
#
# BENCH_MODE=overhead measures a pod VM's host cost instead (docs/KUBERNETES.md's
# RuntimeClass overhead.podFixed): BENCH_IDLE pods, each with one `sleep` container, idle for
# BENCH_IDLE_SECS; PSS of every host process of the pods (shims, QEMU, virtiofsd,
# vhost-device-vsock) and their CPU, and the pods' host cgroup memory.
#
#   bench/pod-start.sh                              # RUNTIME=target/release/clearbox
#   BENCH_RUNS=5 BENCH_PARALLEL=10 BENCH_ROUNDS=3 bench/pod-start.sh
#   BENCH_RUNTIME_TYPES=io.containerd.runc.v2 bench/pod-start.sh      # one clearbox handler only
#   BENCH_MODE=overhead BENCH_IDLE=5 BENCH_IDLE_SECS=30 bench/pod-start.sh
#
# Environment: RUNTIME (clearbox, or a wrapper setting CLEARBOX_CONFIG), SHIM
# (containerd-shim-clearbox-v2; default next to RUNTIME, else target/release), CRI_CLIENT
# (default target/release/cri-client), BENCH_POD_MIB (io.kubernetes.cri.sandbox-memory, 256),
# BENCH_KEEP=1 keeps the work dir's logs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "pod-start: $*" >&2; exit 1; }
say() { echo "pod-start: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
CRI_CLIENT="${CRI_CLIENT:-$REPO/target/release/cri-client}"
[ -x "$CRI_CLIENT" ] || die "$CRI_CLIENT missing: cargo build --release -p clearbox-cri-test"
if [ -z "${SHIM:-}" ]; then
    for s in "$(dirname "$RUNTIME")/containerd-shim-clearbox-v2" \
        "$REPO/target/release/containerd-shim-clearbox-v2" \
        "$(command -v containerd-shim-clearbox-v2 || true)"; do
        [ -n "$s" ] && [ -x "$s" ] && { SHIM="$s"; break; }
    done
fi
MODE="${BENCH_MODE:-start}"
RUNS="${BENCH_RUNS:-5}"
PAR="${BENCH_PARALLEL:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
IDLE="${BENCH_IDLE:-5}"
IDLE_SECS="${BENCH_IDLE_SECS:-30}"
POD_MIB="${BENCH_POD_MIB:-256}"
TYPES="${BENCH_RUNTIME_TYPES:-io.containerd.runc.v2 io.containerd.clearbox.v2}"
for c in containerd ctr jq python3 umoci skopeo; do
    command -v "$c" >/dev/null || die "$c not found (scripts/install-deps.sh)"
done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins missing: apt-get install containernetworking-plugins"

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-podbench.XXXXXX)"
BR="cbpb$(($$ % 10000))"
CG="clearbox-podbench-$$"
PAUSE_IMAGE="localhost/clearbox-pause:1"
SOCK="$W/containerd.sock"
cri() { RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$CRI_CLIENT" --socket "$SOCK" --timeout "${CRI_TIMEOUT:-600}" "$@"; }
kctr() { ctr --address "$SOCK" --namespace k8s.io "$@"; }
ls /run/clearbox-vm 2>/dev/null | sort >"$W/vm-dirs.before" || true
ls /var/run/netns 2>/dev/null | sort >"$W/netns.before" || true

cleanup() {
    local pid i
    # Pods a failed step left: remove them through the CRI while containerd is up.
    if [ -S "$SOCK" ]; then
        for i in $(cri pods 2>/dev/null | jq -r '.[].id' 2>/dev/null); do
            cri stopp "$i" >/dev/null 2>&1 || true
            cri rmp "$i" >/dev/null 2>&1 || true
        done
    fi
    if pid=$(cat "$W/pid" 2>/dev/null); then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    procs_naming "$W/" 2>/dev/null | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
    grep -F " $W/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
    ip link del "$BR" 2>/dev/null || true
    rmdir_cgroup_parents "$CG" 2>/dev/null || true
    if [ -n "${BENCH_KEEP:-}" ]; then
        say "kept $W"
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

# --- a private containerd with the CRI plugin and every handler ----------------------------
mkdir -p "$W/cni" "$W/logs" "$W/bin"
cat >"$W/cni/10-podbench.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "clearbox-podbench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BR",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.$((100 + $$ % 100)).$((($$ / 100) % 250)).0/24"}]],
        "dataDir": "$W/ipam"
      }
    }
  ]
}
EOF
ann='pod_annotations = ["io.kubernetes.cri.sandbox-memory", "io.kubernetes.cri.sandbox-cpu-quota", "io.kubernetes.cri.sandbox-cpu-period", "io.kubernetes.cri.sandbox-cpu-shares"]'
HANDLERS=(runc)
{
    cat <<EOF
version = 2
root = "$W/root"
state = "$W/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$W/debug.sock"
  level = "${BENCH_CTRD_DEBUG:-info}"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # CRI asks oom_score_adj -998 for every sandbox; root lacks CAP_SYS_RESOURCE on some hosts
  # (this one), where runc then fails the sandbox: cap it at containerd's own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$W/runc-root"
EOF
    for type in $TYPES; do
        case "$type" in
            io.containerd.runc.v2)
                HANDLERS+=(clearbox)
                cat <<EOF
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clearbox]
      runtime_type = "io.containerd.runc.v2"
      $ann
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clearbox.options]
        BinaryName = "$RUNTIME"
        Root = "$W/rt-root"
EOF
                ;;
            io.containerd.clearbox.v2)
                if [ -z "${SHIM:-}" ]; then
                    echo "SKIPPED clearbox-v2 (io.containerd.clearbox.v2): containerd-shim-clearbox-v2 not found (set SHIM= or cargo build --release -p clearbox-shim)" >>"$W/skipped"
                    continue
                fi
                ln -sf "$SHIM" "$W/bin/containerd-shim-clearbox-v2"
                HANDLERS+=(clearbox-v2)
                cat <<EOF
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clearbox-v2]
      runtime_type = "io.containerd.clearbox.v2"
      $ann
EOF
                ;;
            *) die "unknown runtime type in BENCH_RUNTIME_TYPES: $type" ;;
        esac
    done
} >"$W/config.toml"

# containerd passes its environment to the shims: it finds containerd-shim-clearbox-v2 on PATH;
# CLEARBOX_SHIM_ROOT keeps that shim's state in the work dir.
PATH="$W/bin:$PATH" CLEARBOX_SHIM_ROOT="$W/shim-root" \
    setsid containerd --config "$W/config.toml" </dev/null >"$W/containerd.log" 2>&1 &
echo $! >"$W/pid"
for _ in $(seq 100); do
    CRI_TIMEOUT=2 cri version >/dev/null 2>&1 && break
    kill -0 "$(cat "$W/pid")" 2>/dev/null || break
    sleep 0.2
done
CRI_TIMEOUT=5 cri version >/dev/null 2>&1 || die "containerd's CRI plugin did not come up: $(tail -5 "$W/containerd.log")"

# The pause image, built offline as in tests/e2e/cri.bats: the test image (busybox) sleeping.
cp -a "$IMAGE_DIR/oci-layout" "$W/pause-layout"
umoci config --image "$W/pause-layout:latest" --tag pause \
    --clear=config.cmd --config.cmd /bin/sleep --config.cmd 2147483647 >/dev/null
skopeo copy --quiet "oci:$W/pause-layout:pause" "oci-archive:$W/pause.oci.tar:$PAUSE_IMAGE"
kctr image import "$W/pause.oci.tar" >/dev/null
kctr image import "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null

ANN=(--annotation "io.kubernetes.cri.sandbox-memory=$((POD_MIB * 1024 * 1024))")
# pod_start HANDLER N TAG [--keep]: N pods at once; their JSON report goes to stdout.
seq_no=0
pod_start() {
    local h=$1 n=$2 tag=$3
    shift 3
    seq_no=$((seq_no + 1))
    cri pod-start --runtime-handler "$h" --image "$IMAGE" --parallel "$n" \
        --name-prefix "$tag-$seq_no" --log-dir "$W/logs" --cgroup-parent "/$CG/$h" \
        "${ANN[@]}" "$@" -- sleep 2147483647
}

# --- leak check: everything a pod start could leave, scoped to this run --------------------
# Every pod and container id the run created are in the reports ($W/*.json).
# (procs_naming's complaints about processes that exit while it reads them are dropped.)
check_clean() {
    if check_clean_ "$@" 2>/dev/null; then
        say "clean after $1 (state, processes, mounts, VM dirs, netns, bridge ports, IPs, cgroups)"
    else
        printf 'LEAK after %s:\n%b' "$1" "$(cat "$W/leak.last")" | tee -a "$W/leaks" >&2
        return 1
    fi
}
check_clean_() {
    local what=$1 left="" id d
    kctr task ls -q 2>/dev/null | grep -q . && left+="containerd tasks: $(kctr task ls -q | tr '\n' ' ')\n"
    kctr container ls -q 2>/dev/null | grep -q . && left+="containerd containers: $(kctr container ls -q | tr '\n' ' ')\n"
    for id in $(jq -r '.pods[] | .pod_id, .container_id' "$W"/r-*.json 2>/dev/null | grep -v '^$' | sort -u); do
        for d in "$W/rt-root/k8s.io/$id" "$W/shim-root/k8s.io/$id" "/run/clearbox-shim/k8s.io/$id" \
            "$W/runc-root/k8s.io/$id"; do
            [ ! -e "$d" ] || left+="state: $d\n"
        done
        [ -z "$(procs_naming "$id")" ] || left+="processes: $(procs_naming "$id")\n"
    done
    # Processes: only containerd itself may still name the work dir.
    local p cpid
    cpid=$(cat "$W/pid")
    p=$(procs_naming "$W/" | grep -v "^$cpid " || true)
    [ -z "$p" ] || left+="processes naming $W: $p\n"
    grep -qF " $W/root/io.containerd.runtime" /proc/self/mountinfo &&
        left+="mounts: $(grep -F " $W/root/io.containerd.runtime" /proc/self/mountinfo | awk '{print $5}')\n"
    grep -qF " $W/state/" /proc/self/mountinfo &&
        left+="mounts: $(grep -F " $W/state/" /proc/self/mountinfo | awk '{print $5}')\n"
    # VM directories (/run/clearbox-vm/<hash>) created since the start that no process names:
    # a live one belongs to someone else's VM on this machine, a dead one was leaked here.
    # Others' VMs come and go meanwhile (a directory exists a moment before its QEMU and after
    # it): a candidate counts only if it is still there, unnamed, 5 s later.
    local cand=()
    for d in $(comm -13 "$W/vm-dirs.before" <(ls /run/clearbox-vm 2>/dev/null | sort)); do
        [ -n "$(procs_naming "/run/clearbox-vm/$d/")" ] || cand+=("$d")
    done
    [ "${#cand[@]}" -eq 0 ] || sleep 5
    for d in "${cand[@]}"; do
        [ -e "/run/clearbox-vm/$d" ] || continue
        [ -n "$(procs_naming "/run/clearbox-vm/$d/")" ] && continue
        left+="VM directory: /run/clearbox-vm/$d $(grep -F " /run/clearbox-vm/$d/" /proc/self/mountinfo | awk '{print $5}' | tr '\n' ' ')\n"
    done
    # Network: the pods' namespaces (their taps live there), bridge ports, IPs.
    for d in $(comm -13 "$W/netns.before" <(ls /var/run/netns 2>/dev/null | sort)); do
        # containerd 1.6 names them cni-<uuid>; others' pods may be running: only report
        # those whose inode is not some live process's network namespace.
        ip netns pids "$d" 2>/dev/null | grep -q . && continue
        case "$d" in cni-*) left+="network namespace without a process: $d\n" ;; esac
    done
    if [ -d "/sys/class/net/$BR/brif" ] && [ -n "$(ls "/sys/class/net/$BR/brif")" ]; then
        left+="bridge ports: $(ls "/sys/class/net/$BR/brif" | tr '\n' ' ')\n"
    fi
    local ips
    ips=$(find "$W/ipam" -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null || true)
    [ -z "$ips" ] || left+="IP leases: $ips\n"
    local cgs
    cgs=$(find /sys/fs/cgroup/*/"$CG" -mindepth 2 -type d 2>/dev/null || true)
    [ -z "$cgs" ] || left+="host cgroups: $cgs\n"
    if [ -n "$left" ]; then
        printf '%s' "$left" >"$W/leak.last"
        return 1
    fi
}

# --- probe: every handler must start a pod (clearbox-v2 is skipped with the reason) --------
run_handlers=()
for h in "${HANDLERS[@]}"; do
    if pod_start "$h" 1 "probe-$h" >"$W/r-probe-$h.json" 2>"$W/probe-$h.err"; then
        run_handlers+=("$h")
    else
        [ "$h" = clearbox-v2 ] || die "the $h handler cannot start a pod: $(tail -3 "$W/probe-$h.err")"
        echo "SKIPPED clearbox-v2 (io.containerd.clearbox.v2): a probe pod failed: $(grep -v '^ ' "$W/probe-$h.err" | tail -1)" >>"$W/skipped"
    fi
done
check_clean "the probe pods" || die "pods leaked (see above)"
load0=$(cut -d' ' -f1 /proc/loadavg)

# --- overhead mode: idle pods' host memory and CPU -----------------------------------------
pss_kib() { awk '/^Pss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Every pid below $1 (inclusive).
tree() {
    ps -e -o pid=,ppid= | awk -v r="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END { q[1] = r; n = 1; i = 1
              while (i <= n) { p = q[i++]; print p
                  split(kids[p], k, " "); for (j in k) if (k[j] != "") q[++n] = k[j] } }'
}
if [ "$MODE" = overhead ]; then
    hz=$(getconf CLK_TCK)
    for h in "${run_handlers[@]}"; do
        [ "$h" = runc ] && continue
        say "overhead: $IDLE idle pods with the $h handler ..."
        for i in $(seq "$IDLE"); do
            pod_start "$h" 1 "idle-$h-$i" --keep >"$W/r-idle-$h-$i.json"
        done
        sleep 10 # boot-time work (page reporting, first faults) settles
        # The pods' host processes: the shims containerd started (they name the work dir),
        # their descendants (clearbox's VM shims, QEMU, virtiofsd, vhost-device-vsock), and
        # whatever is in the pods' host cgroups.
        {
            cpid=$(cat "$W/pid")
            for s in $(procs_naming "$W/" 2>/dev/null | awk '{print $1}' | grep -vx "$cpid"); do tree "$s"; done
            find /sys/fs/cgroup/memory/"$CG/$h" -name cgroup.procs -exec cat {} + 2>/dev/null
        } | sort -un >"$W/pids-$h"
        t0=0
        while read -r p; do t0=$((t0 + $(ticks "$p"))); done <"$W/pids-$h"
        w0=$(date +%s.%N)
        sleep "$IDLE_SECS"
        t1=0
        while read -r p; do t1=$((t1 + $(ticks "$p"))); done <"$W/pids-$h"
        w1=$(date +%s.%N)
        : >"$W/roles-$h"
        while read -r p; do
            echo "$(cat "/proc/$p/comm" 2>/dev/null || echo gone) $(pss_kib "$p")" >>"$W/roles-$h"
        done <"$W/pids-$h"
        cgmem=$(cat /sys/fs/cgroup/memory/"$CG/$h"/memory.usage_in_bytes 2>/dev/null || echo 0)
        echo "$h $IDLE $t0 $t1 $w0 $w1 $hz $cgmem" >>"$W/idle"
        for i in $(seq "$IDLE"); do
            for id in $(jq -r '.pods[].pod_id' "$W/r-idle-$h-$i.json"); do
                cri stopp "$id" >/dev/null && cri rmp "$id" >/dev/null
            done
        done
        check_clean "the idle $h pods" || die "pods leaked (see above)"
    done
    load1=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$W" "$load0" "$load1" "$POD_MIB" <<'EOF'
import collections, sys
w, load0, load1, pod_mib = sys.argv[1:5]
print(f"load average {load0} at start, {load1} at end; pods sized with sandbox-memory = {pod_mib} MiB\n")
for line in open(f"{w}/idle"):
    h, n, t0, t1, w0, w1, hz, cgmem = line.split()
    n, hz = int(n), int(hz)
    secs = float(w1) - float(w0)
    cpu_m = (int(t1) - int(t0)) / hz / secs * 1000 / n
    roles = collections.defaultdict(lambda: [0, 0])
    for l in open(f"{w}/roles-{h}"):
        comm, kib = l.split()
        roles[comm][0] += int(kib)
        roles[comm][1] += 1
    pss = sum(v[0] for v in roles.values()) / 1024 / n
    print(f"handler {h}: {n} idle pods (one `sleep` container each), CPU over {secs:.0f} s\n")
    print("| per idle pod | value |\n|---|---:|")
    print(f"| PSS of its host processes | {pss:.1f} MiB |")
    print(f"| host cgroup memory (memory.usage_in_bytes of the pods' parent / pods) | {int(cgmem) / 1048576 / n:.1f} MiB |")
    print(f"| CPU | {cpu_m:.1f} millicores |")
    print("\n| process | count per pod | PSS per pod (MiB) |\n|---|---:|---:|")
    for comm, (kib, cnt) in sorted(roles.items(), key=lambda kv: -kv[1][0]):
        print(f"| {comm} | {cnt / n:g} | {kib / 1024 / n:.1f} |")
    print()
EOF
    [ ! -f "$W/skipped" ] || cat "$W/skipped"
    exit 0
fi

# --- start mode: one pod at a time, then P at once -------------------------------------------
say "handlers: ${run_handlers[*]}; $RUNS sequential pods each, then $ROUNDS rounds of $PAR at once"
# measure KIND HANDLER N ROUND: one pod_start into r-KIND-HANDLER-ROUND.json. runc must not
# fail; a failed call of a clearbox handler is reported with its error (printed at the end)
# and left out of the medians, and the run goes on.
measure() {
    local kind=$1 h=$2 n=$3 r=$4
    if ! pod_start "$h" "$n" "$kind-$h" >"$W/r-$kind-$h-$r.json" 2>"$W/err"; then
        [ "$h" != runc ] || die "$h: $(grep -v '^ ' "$W/err" | tail -3)"
        echo "FAILED $h, $n pod(s) at once (round $r, left out): $(grep -v '^ ' "$W/err" | tail -1)" >>"$W/failures"
        mkdir -p "$W/failed"
        mv "$W/r-$kind-$h-$r.json" "$W/failed/"
    fi
    # A leak is reported (at the end too) and the run goes on; the exit status says it.
    check_clean "$kind $n pod(s) ($h)" || echo "LEAK after $kind $n pod(s) ($h) round $r: $(tr '\n' ' ' <"$W/leak.last" | cut -c1-300)" >>"$W/failures"
}
for r in $(seq "$RUNS"); do
    for h in "${run_handlers[@]}"; do # interleaved: load changes hit every handler alike
        measure one "$h" 1 "$r"
    done
done
for r in $(seq "$ROUNDS"); do
    for h in "${run_handlers[@]}"; do
        measure par "$h" "$PAR" "$r"
    done
done
load1=$(cut -d' ' -f1 /proc/loadavg)

python3 - "$W" "$PAR" "$load0" "$load1" "${run_handlers[*]}" <<'EOF'
import json, glob, os, re, statistics as st, sys
w, par, load0, load1, handlers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split()
med = st.median
def reports(kind, h):
    # Exactly handler h: "r-par-clearbox-*" would also match clearbox-v2's files.
    pat = re.compile(rf"r-{kind}-{re.escape(h)}-\d+\.json")
    return [json.load(open(f)) for f in sorted(glob.glob(f"{w}/r-{kind}-{h}-*.json"))
            if pat.fullmatch(os.path.basename(f))]
names = {"runc": "runc", "clearbox": "clearbox (runc.v2 + BinaryName)",
         "clearbox-v2": "clearbox (io.containerd.clearbox.v2)"}
print(f"load average {load0} at start, {load1} at end\n")
one = {}
n_one = 0
print("| handler | RunPodSandbox | CreateContainer | StartContainer | pod start (total) |")
print("|---|---:|---:|---:|---:|")
for h in handlers:
    pods = [p for r in reports("one", h) for p in r["pods"]]
    if not pods:
        print(f"| {names[h]} | failed (see FAILED below) | | | |")
        continue
    n_one = len(pods)
    ph = {k: med(p[k] for p in pods) for k in
          ("run_pod_sandbox_ms", "create_container_ms", "start_container_ms", "total_ms")}
    one[h] = ph
    print(f"| {names[h]} | {ph['run_pod_sandbox_ms']:.0f} | {ph['create_container_ms']:.0f} | "
          f"{ph['start_container_ms']:.0f} | {ph['total_ms']:.0f} |")
print(f"\n(ms, medians of {n_one} pods per handler, one pod at a time)\n")
print("| ratio (medians) | value |\n|---|---:|")
for h in one:
    if h == "runc":
        continue
    print(f"| pod start: {names[h]} / runc | {one[h]['total_ms'] / one['runc']['total_ms']:.1f} |")
    print(f"| RunPodSandbox: {names[h]} / runc | {one[h]['run_pod_sandbox_ms'] / one['runc']['run_pod_sandbox_ms']:.1f} |")
print(f"\n| {par} pods at once | wall (s, median of rounds) | 1 pod alone (s) | {par} at once / 1 alone | slowest pod (s) |")
print("|---|---:|---:|---:|---:|")
walls = {}
for h in handlers:
    rs = reports("par", h)
    if not rs:
        print(f"| {names[h]} | failed (see SKIPPED below) | | | |")
        continue
    wall = med(r["wall_ms"] for r in rs) / 1000
    slow = med(max(p["total_ms"] for p in r["pods"]) for r in rs) / 1000
    if h not in one:
        continue
    alone = one[h]["total_ms"] / 1000
    walls[h] = wall
    print(f"| {names[h]} | {wall:.2f} | {alone:.2f} | {wall / alone:.1f} | {slow:.2f} |")
ok_rounds = ", ".join(f"{h} {len(reports('par', h))}" for h in handlers)
print(f"\n(successful rounds per handler: {ok_rounds})\n")
print("| ratio (medians) | value |\n|---|---:|")
for h in walls:
    if h != "runc":
        print(f"| {par} at once: {names[h]} / runc (wall) | {walls[h] / walls['runc']:.1f} |")
EOF
[ ! -f "$W/skipped" ] || cat "$W/skipped"
[ ! -f "$W/failures" ] || { echo; cat "$W/failures"; }
! grep -q '^LEAK' "$W/failures" 2>/dev/null || exit 1
