#!/usr/bin/env bash
# Fast start and small footprint (issue 12), every anchor measured in this one run:
#   1. `clearbox run` of busybox `true`: VM restored from a template vs cold-booted vs the VM
#      boot floor vs isolation=namespaces vs gVisor's `runsc run` (medians of interleaved
#      rounds, bench/interleave.py: each round runs every command once, so the host's drift
#      hits all of them alike);
#   2. `podman run --rm IMG true` with clearbox (vm, templates and cold) vs crun;
#   3. idle containers: N (default 20) `sleep` containers in VMs, per VM start mode, memory
#      and CPU per container (all host processes of each: shim, QEMU, the agent channel's
#      backend, virtiofsd; plus a restored VM's copy of the template memory on tmpfs);
#   4. parallel start: P (default 10) `clearbox run ... true` at once vs one alone (wall
#      time), per VM start mode;
#   5. exec cost inside a container: `run` of a shell that execs /bin/true 20 times vs `run`
#      of `true`, vm (template) vs namespaces vs runsc: the difference / 20 is one exec.
# Prints markdown tables with ratios and targets (paste into docs/BENCHMARKS.md). Nothing is
# asserted: targets are printed as met/MISSED.
#
#   bench/fast-start.sh                  # RUNTIME=target/release/clearbox
#   BENCH_RUNS=10 BENCH_IDLE=20 BENCH_PARALLEL=10 BENCH_ROUNDS=3 BENCH_IDLE_SECS=30 bench/fast-start.sh
#   BENCH_SECTIONS="run idle" bench/fast-start.sh   # a subset (run podman idle parallel exec)
#   BENCH_IDLE_LIMIT_MIB=128 BENCH_SECTIONS=idle bench/fast-start.sh   # idle containers with a limit
#
set -euo pipefail
# errexit ends the script silently: name the line that failed.
trap 'echo "fast-start: line $LINENO failed (exit $?): $BASH_COMMAND" >&2' ERR

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "fast-start: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
RUNS="${BENCH_RUNS:-10}"
IDLE="${BENCH_IDLE:-20}"
IDLE_SECS="${BENCH_IDLE_SECS:-30}"
PAR="${BENCH_PARALLEL:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
SECTIONS="${BENCH_SECTIONS:-run podman idle parallel exec}"
# The VM start modes: restored from a template (where `clearbox check` says this host can)
# and cold-booted. Templates live in a private directory, built by the first use (warm-up).
COLD_CMD="env CLEARBOX_TEMPLATE=off"
TEMPLATE_CMD="env CLEARBOX_TEMPLATE=on"
MODES=(cold)
tpl_line=$(CLEARBOX_TEMPLATE=on "$RUNTIME" check 2>/dev/null | grep 'vm templates' || true)
if [[ "$tpl_line" =~ vm\ templates\ +on ]]; then
    MODES=(template cold)
else
    echo "fast-start: VM templates unsupported here, cold rows only: $tpl_line" >&2
fi
mode_cmd() { if [ "$1" = template ]; then echo "$TEMPLATE_CMD"; else echo "$COLD_CMD"; fi; }
for c in runsc jq python3 podman crun; do
    command -v "$c" >/dev/null || die "$c not found (scripts/install-deps.sh)"
done
for f in vmlinux floor-initramfs.img initramfs.img; do
    [ -f "/usr/share/clearbox/$f" ] || die "/usr/share/clearbox/$f missing: run scripts/build.sh"
done
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
# Interleaved rounds (one warm-up round; each timed run right after an untimed one of the
# same command), hyperfine's JSON.
interleave() { python3 "$here/interleave.py" --warmup 1 --runs "$RUNS" "$@" >&2; }

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-faststart.XXXXXX)"
R="$W/root"
cleanup() {
    for s in "$R"/*/; do
        [ -d "$s" ] && "$RUNTIME" --root "$R" delete --force "$(basename "$s")" >/dev/null 2>&1
    done
    rm -rf "$W" "$CLEARBOX_TEMPLATE_DIR"
}
trap cleanup EXIT
export CLEARBOX_TEMPLATE_DIR="/dev/shm/clearbox-faststart-templates.$$"
mkdir -m 0700 "$CLEARBOX_TEMPLATE_DIR"
B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
write_config "$B" '["true"]'
BS="$W/bundle-sleep"
mkdir -p "$BS"
ln -s "$B/rootfs" "$BS/rootfs"
write_config "$BS" '["sleep","100000"]'
# BENCH_IDLE_LIMIT_MIB: the idle containers get this memory limit (their VM: the limit plus
# the guest's overhead), as Kubernetes pods usually have one; unset: no limit, the VM gets
# the default size (half the host's memory, at most 2 GiB).
if [ -n "${BENCH_IDLE_LIMIT_MIB:-}" ]; then
    jq --argjson b "$((BENCH_IDLE_LIMIT_MIB * 1024 * 1024))" '.linux.resources.memory.limit = $b' \
        "$BS/config.json" >"$BS/config.json.new" && mv "$BS/config.json.new" "$BS/config.json"
fi
BX="$W/bundle-execs"
mkdir -p "$BX"
ln -s "$B/rootfs" "$BX/rootfs"
write_config "$BX" '["sh","-c","i=0; while [ $i -lt 20 ]; do /bin/true; i=$((i+1)); done"]'
out="$W/report.md"
: >"$out"

# The floor: the VMM's own probe boots the floor initramfs (no agent) and times QEMU's exit.
probe="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/boot-probe"
# BENCH_PROBE_BUILT=1: use the probe as built (no cargo run while others hold the target dir).
[ "${BENCH_PROBE_BUILT:-0}" = 1 ] && [ -x "$probe" ] ||
    (cd "$REPO" && cargo build -q --release -p clearbox-vmm --example boot-probe) >&2
load0=$(cut -d' ' -f1 /proc/loadavg)

# --- 1. run: cold vs floor vs namespaces vs runsc -----------------------------------------
if has run; then
    rows=(-n "clearbox run (vm, cold)" "$COLD_CMD $RUNTIME --root $R --isolation vm run --bundle $B b-vm"
        -n "VM boot floor" "env CLEARBOX_MEM_MIB=128 $probe floor 1"
        -n "clearbox run (namespaces)" "$RUNTIME --root $R --isolation namespaces run --bundle $B b-ns"
        -n "runsc run" "runsc --root $W/runsc --network=none --ignore-cgroups run --bundle $B b-runsc")
    [[ " ${MODES[*]} " != *" template "* ]] ||
        rows+=(-n "clearbox run (vm, template)" "$TEMPLATE_CMD $RUNTIME --root $R --isolation vm run --bundle $B b-tpl")
    echo "fast-start: run ($RUNS runs) ..." >&2
    interleave --export-json "$W/run.json" "${rows[@]}"
fi

# --- 2. podman: clearbox (vm) vs crun ------------------------------------------------------
if has podman; then
    P="$W/podman"
    mkdir -p "$P"
    cat >"$P/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
[network]
network_backend = "netavark"
network_config_dir = "$P/networks"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF="$P/containers.conf"
    pod="podman --root $P/root --runroot $P/run --storage-driver vfs"
    $pod load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
    crun_wrap="$W/crun-wrap"
    cat >"$crun_wrap" <<'EOF'
#!/bin/sh
# crun 1.8 refuses hybrid cgroups: hide the v2 mount in a private mount namespace.
exec unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun "$@"' crun "$@"
EOF
    chmod +x "$crun_wrap"
    echo "fast-start: podman ($RUNS runs) ..." >&2
    rows=()
    for m in "${MODES[@]}"; do
        # podman does not pass its environment to the runtime: a wrapper sets the mode.
        printf '#!/bin/sh\nexec %s %q "$@"\n' "$(mode_cmd "$m")" "$RUNTIME" >"$W/clearbox-$m"
        chmod +x "$W/clearbox-$m"
        rows+=(-n "podman run --rm (clearbox vm, $m)" "$pod --runtime $W/clearbox-$m run --rm $IMAGE true")
    done
    interleave --export-json "$W/podman.json" "${rows[@]}" \
        -n "podman run --rm (crun)" "$pod --runtime $crun_wrap run --rm $IMAGE true"
    $pod rm -af -t 0 >/dev/null 2>&1 || true
fi

# Every pid below $1 (inclusive), from /proc's parent links.
tree() {
    local root=$1
    ps -e -o pid=,ppid= | awk -v r="$root" '
        { kids[$2] = kids[$2] " " $1 }
        END { q[1] = r; n = 1; i = 1
              while (i <= n) { p = q[i++]; print p
                  split(kids[p], k, " "); for (j in k) if (k[j] != "") q[++n] = k[j] } }'
}
pss_kib() { awk '/^Pss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
shmem_kib() { awk '/^Pss_Shmem:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# KiB allocated on tmpfs by the restored VMs' memory copies (clearbox-vmm's CLONE_MEMORY_DIR)
# that the processes $@ hold (QEMU unlinks its copy once the guest runs), each copy once.
shm_copies_kib() {
    local p f
    for p in "$@"; do
        for f in /proc/"$p"/fd/*; do
            # (an `if`, not `&&`: a last fd that is no copy must not fail the loop, which
            # under pipefail and errexit ended the whole benchmark without a word)
            if [[ "$(readlink "$f" 2>/dev/null)" == /dev/shm/clearbox-vm/* ]]; then
                stat -L -c '%i %b %B' "$f" 2>/dev/null || true
            fi
        done
    done | sort -u | awk '{s += $2 * $3} END {print int(s / 1024)}'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# --- 3. idle: memory and CPU per idle container, per VM start mode ------------------------
idle_mode() { # $1: mode
    local m=$1 cmd i p s
    cmd=$(mode_cmd "$m")
    echo "fast-start: idle ($m): starting $IDLE vm containers ..." >&2
    local shims=() pids=()
    for i in $(seq "$IDLE"); do
        $cmd "$RUNTIME" --root "$R" --isolation vm run -d --bundle "$BS" "idle-$m-$i" </dev/null >/dev/null
        shims+=("$("$RUNTIME" --root "$R" state "idle-$m-$i" | jq -r .pid)")
    done
    sleep 10 # let boot-time work (page reporting, first faults) settle
    for s in "${shims[@]}"; do mapfile -t -O "${#pids[@]}" pids < <(tree "$s"); done
    local hz t0=0 t1=0 w0 w1 pss=0 shmem=0 copies
    hz=$(getconf CLK_TCK)
    for p in "${pids[@]}"; do t0=$((t0 + $(ticks "$p"))); done
    w0=$(date +%s.%N)
    sleep "$IDLE_SECS"
    for p in "${pids[@]}"; do t1=$((t1 + $(ticks "$p"))); done
    w1=$(date +%s.%N)
    for p in "${pids[@]}"; do
        pss=$((pss + $(pss_kib "$p")))
        shmem=$((shmem + $(shmem_kib "$p")))
    done
    copies=$(shm_copies_kib "${pids[@]}")
    # Per role, for the "where the memory goes" table.
    for p in "${pids[@]}"; do
        echo "$(cat "/proc/$p/comm" 2>/dev/null || echo gone) $(pss_kib "$p")"
    done | awk '{s[$1] += $2; n[$1]++} END {for (k in s) printf "%s %d %d\n", k, s[k], n[k]}' >"$W/pss-roles-$m"
    echo "$m $IDLE $t0 $t1 $w0 $w1 $hz $pss $shmem $copies" >"$W/idle-$m"
    for i in $(seq "$IDLE"); do "$RUNTIME" --root "$R" delete --force "idle-$m-$i" >/dev/null 2>&1 || true; done
}
if has idle; then
    for m in "${MODES[@]}"; do idle_mode "$m"; done
fi

# --- 4. parallel start: P at once vs one alone, per VM start mode ---------------------------
if has parallel; then
    one() { $2 "$RUNTIME" --root "$R" --isolation vm run --bundle "$B" "$1" </dev/null >/dev/null; }
    wall() { # wall seconds of N runs started at once
        local n=$1 tag=$2 cmd=$3 s e i
        s=$(date +%s.%N)
        for i in $(seq "$n"); do one "$tag$i" "$cmd" & done
        wait
        e=$(date +%s.%N)
        awk -v s="$s" -v e="$e" 'BEGIN {print e - s}'
    }
    for m in "${MODES[@]}"; do
        echo "fast-start: parallel ($m): $ROUNDS rounds of 1 and of $PAR ..." >&2
        : >"$W/par-$m"
        for r in $(seq "$ROUNDS"); do
            echo "one $(wall 1 "p1$m$r-" "$(mode_cmd "$m")")" >>"$W/par-$m"
            echo "many $(wall "$PAR" "pN$m$r-" "$(mode_cmd "$m")")" >>"$W/par-$m"
        done
    done
fi
# --- 5. exec cost inside a container ----------------------------------------------------------
if has exec; then
    rows=()
    [[ " ${MODES[*]} " != *" template "* ]] || rows+=(
        -n "exec: run true (vm, template)" "$TEMPLATE_CMD $RUNTIME --root $R --isolation vm run --bundle $B x-tpl"
        -n "exec: run 20 execs (vm, template)" "$TEMPLATE_CMD $RUNTIME --root $R --isolation vm run --bundle $BX x-tpl")
    rows+=(-n "exec: run true (namespaces)" "$RUNTIME --root $R --isolation namespaces run --bundle $B x-ns"
        -n "exec: run 20 execs (namespaces)" "$RUNTIME --root $R --isolation namespaces run --bundle $BX x-ns"
        -n "exec: run true (runsc)" "runsc --root $W/runsc --network=none --ignore-cgroups run --bundle $B x-runsc"
        -n "exec: run 20 execs (runsc)" "runsc --root $W/runsc --network=none --ignore-cgroups run --bundle $BX x-runsc")
    echo "fast-start: exec ($RUNS runs) ..." >&2
    interleave --export-json "$W/exec.json" "${rows[@]}"
fi
load1=$(cut -d' ' -f1 /proc/loadavg)

python3 - "$W" "$PAR" "$load0" "$load1" <<'EOF'
import json, os, statistics, sys
w, par, load0, load1 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def verdict(v, t): return "met" if v <= t else "MISSED"
rows = {}
failed = []
timed = False
for f in ("run.json", "podman.json", "exec.json"):
    p = os.path.join(w, f)
    if os.path.exists(p):
        timed = True
        for r in json.load(open(p))["results"]:
            if f != "exec.json":
                rows[r["command"]] = r["median"] * 1000
            if r.get("failures"):
                failed.append(f"{r['command']}: {r['failures']} of {len(r['times'])} runs FAILED")
print(f"load average {load0} at start, {load1} at end\n")
if timed:
    print("Timed in interleaved rounds (bench/interleave.py): every round runs each command once.\n")
for line in failed:
    print(f"**{line}** (their times still count: a failed run is not a fast run)\n")
if rows:
    print("| command | median (ms) |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.1f} |")
    print("\n| ratio (medians) | value | target | |\n|---|---:|---|---|")
    floor = rows.get("VM boot floor")
    for name, t in (("clearbox run (vm, cold)", 1.25), ("clearbox run (vm, template)", 0.3)):
        if name in rows and floor:
            v = rows[name] / floor
            print(f"| {name} / VM boot floor | {v:.2f} | <= {t} | {verdict(v, t)} |")
        if name in rows and "runsc run" in rows:
            print(f"| {name} / runsc run | {rows[name] / rows['runsc run']:.2f} | | |")
        if name in rows and "clearbox run (namespaces)" in rows:
            print(f"| {name} / namespaces | {rows[name] / rows['clearbox run (namespaces)']:.1f} | | |")
    for k in rows:
        if k.startswith("podman run --rm (clearbox vm") and "podman run --rm (crun)" in rows:
            v = rows[k] / rows["podman run --rm (crun)"]
            print(f"| {k} / podman run --rm (crun) | {v:.2f} | | |")
for mode in ("template", "cold"):
    p = os.path.join(w, f"idle-{mode}")
    if not os.path.exists(p):
        continue
    _, n, t0, t1, w0, w1, hz, pss, shmem, copies = open(p).read().split()
    n, hz = int(n), int(hz)
    cpu = (int(t1) - int(t0)) / hz / (float(w1) - float(w0)) * 100 / n
    pss_mib = int(pss) / 1024 / n
    # A restored VM's RAM is its copy of the template memory on tmpfs: all of it is resident
    # whether or not a process has mapped the page yet, so it counts whole (in place of the
    # shared-memory part of the PSS). A cold VM's RAM is a memfd, counted by the PSS.
    real_mib = (int(pss) - int(shmem) + max(int(shmem), int(copies))) / 1024 / n
    limit = os.environ.get("BENCH_IDLE_LIMIT_MIB")
    size = f", memory limit {limit} MiB" if limit else ", no memory limit"
    print(f"\n{n} idle vm containers (`sleep`, {mode}{size}), CPU sampled over {float(w1) - float(w0):.0f} s\n")
    print("| per idle container | value | target | |\n|---|---:|---|---|")
    print(f"| PSS of its host processes | {pss_mib:.1f} MiB | | |")
    print(f"| memory: PSS without shared memory + guest RAM (tmpfs copy or memfd) | {real_mib:.1f} MiB | <= 20 MiB | {verdict(real_mib, 20)} |")
    print(f"| CPU | {cpu:.2f}% of a core | <= 0.2% | {verdict(cpu, 0.2)} |")
    print("\n| process | PSS per container (MiB) |\n|---|---:|")
    for line in sorted(open(os.path.join(w, f"pss-roles-{mode}")), key=lambda l: -int(l.split()[1])):
        comm, kib, cnt = line.split()
        print(f"| {comm} (x{int(cnt) // n if int(cnt) >= n else cnt}) | {int(kib) / 1024 / n:.1f} |")
    if int(copies):
        print(f"| template memory copy on tmpfs (not all mapped) | {int(copies) / 1024 / n:.1f} |")
for mode in ("template", "cold"):
    p = os.path.join(w, f"par-{mode}")
    if not os.path.exists(p):
        continue
    one = [float(l.split()[1]) for l in open(p) if l.startswith("one")]
    many = [float(l.split()[1]) for l in open(p) if l.startswith("many")]
    o, m = statistics.median(one), statistics.median(many)
    print(f"\n| parallel start (`run ... true`, vm, {mode}) | wall (s, median of {len(one)}) |\n|---|---:|")
    print(f"| 1 alone | {o:.2f} |\n| {par} at once | {m:.2f} |")
    print(f"\n| ratio | value | target | |\n|---|---:|---|---|")
    print(f"| {par} at once / 1 alone | {m / o:.1f} | <= 3 | {verdict(m / o, 3)} |")
    print(f"| per container ({par} at once) / 1 alone | {m / o / par:.2f} | | |")
p = os.path.join(w, "exec.json")
if os.path.exists(p):
    ex = {r["command"]: r["median"] * 1000 for r in json.load(open(p))["results"]}
    print("\n| exec cost inside a container (`run`: 20 execs of /bin/true vs `true`) | run true (ms) | run 20 execs (ms) | per exec (ms) |\n|---|---:|---:|---:|")
    per = {}
    for who in ("vm, template", "namespaces", "runsc"):
        a, b = ex.get(f"exec: run true ({who})"), ex.get(f"exec: run 20 execs ({who})")
        if a is not None and b is not None:
            per[who] = (b - a) / 20
            print(f"| {who} | {a:.1f} | {b:.1f} | {per[who]:.1f} |")
    if "vm, template" in per and "runsc" in per and per["runsc"] > 0:
        print(f"\nper exec, vm / runsc: {per['vm, template'] / per['runsc']:.1f}x")
EOF
