#!/usr/bin/env bash
# Container networking, host -> container: TCP throughput (iperf3) and small-request latency
# (busybox httpd, one new connection per request, as `curl` URL lists do against HTTP/1.0),
# for clearbox isolation=vm vs isolation=namespaces vs runc, in one run. Every container runs
# in a network namespace of this script, joined to the host by a veth pair (what an engine
# sets up); the vm container reaches it through a tap wired with tc mirred.
# Goals (TCG here): latency <= 3x namespaces, throughput >= 25% of namespaces.
#
#   bench/net.sh        # RUNTIME=target/release/clearbox, BENCH_SECS=5, BENCH_REQUESTS=200
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
export E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
die() { echo "net: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
RUNTIME="${RUNTIME:-$REPO/target/release/clearbox}"
[ -x "$RUNTIME" ] || die "RUNTIME=$RUNTIME is not executable (scripts/build.sh)"
SECS="${BENCH_SECS:-5}"
REQS="${BENCH_REQUESTS:-200}"
for c in iperf3 curl jq runc ip; do
    command -v "$c" >/dev/null || die "$c not found (scripts/install-deps.sh)"
done

# shellcheck source=../tests/e2e/helpers.bash
. "$REPO/tests/e2e/helpers.bash"
"$REPO/tests/e2e/build-image.sh" >/dev/null

W="$(mktemp -d /var/tmp/clearbox-netbench.XXXXXX)"
n=$(($$ % 200 + 20))
NS="cbbench$n"
HOSTVETH="cbbh$n"
IP="10.194.$n.2"
cleanup() {
    "$RUNTIME" --root "$W/root" delete --force bench-vm >/dev/null 2>&1 || true
    "$RUNTIME" --root "$W/root" delete --force bench-ns >/dev/null 2>&1 || true
    runc --root "$W/runc" delete --force bench-runc >/dev/null 2>&1 || true
    ip netns del "$NS" 2>/dev/null || true
    ip link del "$HOSTVETH" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

ip netns add "$NS"
ip link add "$HOSTVETH" type veth peer name eth0 netns "$NS"
ip addr add "10.194.$n.1/24" dev "$HOSTVETH"
ip link set "$HOSTVETH" up
ip -n "$NS" addr add "$IP/24" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up

# Rootfs: the test image plus iperf3 and its libraries.
B="$W/bundle"
mkdir -p "$B"
cp -a "$IMAGE_DIR/rootfs" "$B/rootfs"
for f in /usr/bin/iperf3 $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
    mkdir -p "$B/rootfs$(dirname "$f")"
    cp -L "$f" "$B/rootfs$f"
done
write_config "$B" '["sh","-c","mkdir -p /www && head -c 512 /dev/zero >/www/index.html && iperf3 -s -D && exec httpd -f -p 80 -h /www"]'
edit_config "$B" --arg ns "/var/run/netns/$NS" \
    '.linux.namespaces |= map(if .type == "network" then .path = $ns else . end)'

wait_http() {
    local i
    for i in $(seq 120); do
        curl -s -m 2 -o /dev/null "http://$IP/" && return 0
        sleep 0.5
    done
    die "no HTTP answer from $IP"
}

# CPU ticks (user + system) of a process, all threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# measure NAME START STOP [QEMU-PID-CMD]: throughput (Mbit/s), median request latency (ms),
# and for a VM the share of one core QEMU burnt during the iperf3 run.
results="$W/results.txt"
measure() {
    local name="$1" start="$2" stop="$3" qemu_of="${4:-}"
    echo "net: $name ..." >&2
    eval "$start" </dev/null >/dev/null
    wait_http
    local qemu="" t0=0 t1=0 w0 w1
    [ -z "$qemu_of" ] || qemu=$(eval "$qemu_of")
    [ -z "$qemu" ] || t0=$(cpu_ticks "$qemu")
    w0=$(date +%s.%N)
    # iperf3 may come up after httpd: retry its first connection.
    local i bps=""
    for i in $(seq 20); do
        bps=$(iperf3 -c "$IP" -t "$SECS" -J 2>/dev/null | jq -r '.end.sum_received.bits_per_second // empty') && [ -n "$bps" ] && break
        sleep 0.5
    done
    [ -n "$bps" ] || die "$name: iperf3 failed"
    w1=$(date +%s.%N)
    [ -z "$qemu" ] || t1=$(cpu_ticks "$qemu")
    local qcpu
    qcpu=$(awk -v a="$t0" -v b="$t1" -v w0="$w0" -v w1="$w1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {print (b - a) / hz / (w1 - w0) * 100}')
    # One curl, one new connection per request (busybox httpd closes each one).
    local args=()
    for i in $(seq "$REQS"); do args+=(-o /dev/null "http://$IP/"); done
    curl -s -o /dev/null "http://$IP/" # warm-up
    # Medians of the whole request and of its TCP handshake alone (network path + guest
    # kernel, no guest user space).
    curl -s -w '%{time_total} %{time_connect}\n' "${args[@]}" >"$W/times"
    local lat conn
    lat=$(sort -n -k1 "$W/times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}')
    conn=$(sort -n -k2 "$W/times" | awk '{a[NR]=$2} END {print a[int((NR+1)/2)] * 1000}')
    echo "$name $bps $lat $conn $qcpu" >>"$results"
    eval "$stop" >/dev/null 2>&1
}

qemu_of_vm() {
    local shim
    shim=$("$RUNTIME" --root "$W/root" state bench-vm | jq -r .pid)
    ps -o pid=,comm= --ppid "$shim" | awk '$2 ~ /qemu/ {print $1; exit}'
}

measure "clearbox vm" \
    "$RUNTIME --root $W/root --isolation vm run -d --bundle $B bench-vm" \
    "$RUNTIME --root $W/root delete --force bench-vm" qemu_of_vm
measure "clearbox namespaces" \
    "$RUNTIME --root $W/root --isolation namespaces run -d --bundle $B bench-ns" \
    "$RUNTIME --root $W/root delete --force bench-ns"
measure "runc" \
    "runc --root $W/runc run -d --bundle $B bench-runc" \
    "runc --root $W/runc delete --force bench-runc"

python3 - "$results" "$SECS" "$REQS" <<'EOF'
import sys
rows = {}
qemu_cpu = 0.0
conn = {}
for line in open(sys.argv[1]):
    *name, bps, lat, c, qcpu = line.split()
    rows[" ".join(name)] = (float(bps) / 1e6, float(lat))
    conn[" ".join(name)] = float(c)
    if name == ["clearbox", "vm"]:
        qemu_cpu = float(qcpu)
print(f"host -> container, iperf3 {sys.argv[2]} s, {sys.argv[3]} sequential HTTP requests\n")
print("| runtime | TCP throughput (Mbit/s) | request latency, median (ms) | of which TCP connect (ms) |\n|---|---:|---:|---:|")
for k, (t, l) in rows.items():
    print(f"| {k} | {t:.0f} | {l:.2f} | {conn[k]:.2f} |")
vm, ns, runc = rows["clearbox vm"], rows["clearbox namespaces"], rows["runc"]
print("\n| ratio | value | goal |\n|---|---:|---|")
print(f"| latency vm / namespaces | {vm[1] / ns[1]:.2f} | <= 3 |")
print(f"| throughput vm / namespaces | {vm[0] / ns[0] * 100:.0f}% | >= 25% |")
print(f"| latency vm / runc | {vm[1] / runc[1]:.2f} | |")
print(f"| throughput vm / runc | {vm[0] / runc[0] * 100:.0f}% | |")
print(f"\nQEMU (all threads) during the vm iperf3 run: {qemu_cpu:.0f}% of one core")
EOF
