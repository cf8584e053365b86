#!/usr/bin/env bats
# Container networking through the real engines, as users run it:
#   * podman (netavark bridge + iptables, aardvark-dns) with `-p HOST:CTR`, two containers on one
#     network reaching each other by IP and by name, --network none, refused cases;
#   * Docker 20.10 with its bridge (a private dockerd: own bridge, data-root, exec-root, socket),
#     `docker run -p`;
#   * the runtime driven directly in a test-owned network namespace (veth pair): the tap and tc
#     wiring of a VM container, and its teardown on delete, delete --force, and after kill -9 of
#     QEMU or of the shim.
# Traffic goes only to 127.0.0.1 published ports and between the test's own containers.
# The podman and Docker tests run for every isolation but fly (which shares the host's network:
# skipped, with that reason); the wiring tests are vm-only.

load helpers

podman() {
    t "${PODMAN_BIN:-$(command -v podman)}" --root "$NET_DIR/podman/root" \
        --runroot "$NET_RUNROOT" --storage-driver "$PODMAN_STORAGE_DRIVER" \
        --cgroup-manager cgroupfs --events-backend file --runtime "$RUNTIME" "$@"
}

# podman run/create with the isolation annotation when ISOLATION is set.
prun() {
    local sub="$1"
    shift
    podman "$sub" ${CLEARBOX_ISOLATION:+--annotation io.clearbox.isolation=$CLEARBOX_ISOLATION} "$@"
}

docker() { t "$DOCKER_CLI" "$@"; }

no_fly() {
    [ "${ISOLATION:-}" != fly ] || skip "isolation fly shares the host's network namespace"
}

setup_file() {
    require_runtime
    require_image
    mkdir -p "$E2E_WORKDIR"
    NET_DIR="$(mktemp -d "$E2E_WORKDIR/network.XXXXXX")"
    export NET_DIR
    # Per-run numbers, so parallel runs on one machine do not collide.
    local n=$(($$ % 200 + 20))
    export NET_N=$n
    export PORT_BASE=$((18000 + ($$ % 500) * 4))
    [ "${ISOLATION:-}" != fly ] || return 0
    setup_podman
    setup_docker
}

setup_podman() {
    mkdir -p "$NET_DIR/podman"
    local env_vars='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
    if [ -n "${CLEARBOX_ISOLATION:-}" ]; then
        env_vars="$env_vars, \"CLEARBOX_ISOLATION=$CLEARBOX_ISOLATION\""
    fi
    cat >"$NET_DIR/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
log_driver = "k8s-file"

[network]
network_backend = "netavark"
network_config_dir = "$NET_DIR/podman/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$NET_DIR/podman/tmp"
volume_path = "$NET_DIR/podman/volumes"
conmon_env_vars = [$env_vars]
EOF
    export CONTAINERS_CONF="$NET_DIR/podman/containers.conf"
    # podman 4.3 refuses a runroot longer than 50 characters: with the default E2E_WORKDIR
    # "$NET_DIR/podman/runroot" is 51. Keep it short whatever E2E_WORKDIR is.
    NET_RUNROOT="$NET_DIR/podman/run"
    [ "${#NET_RUNROOT}" -le 50 ] || NET_RUNROOT="$(mktemp -d /run/cbe2e-net.XXXXXX)"
    export NET_RUNROOT
    cat >"$NET_DIR/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$NET_DIR/podman/root"
runroot = "$NET_RUNROOT"
EOF
    export CONTAINERS_STORAGE_CONF="$NET_DIR/podman/storage.conf"
    export PODMAN_STORAGE_DRIVER=overlay
    if ! podman load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >"$NET_DIR/podman/load.log" 2>&1; then
        podman system reset -f >/dev/null 2>&1 || true
        export PODMAN_STORAGE_DRIVER=vfs
        podman load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >"$NET_DIR/podman/load.log" 2>&1 || {
            cat "$NET_DIR/podman/load.log" >&2
            return 1
        }
    fi
    export PNET="cbe2e$NET_N"
    podman network create --subnet "10.197.$NET_N.0/24" "$PNET" >/dev/null
}

setup_docker() {
    mkdir -p "$NET_DIR/docker"
    export DOCKER_HOST="unix://$NET_DIR/docker/docker.sock"
    export DOCKER_CONFIG="$NET_DIR/docker/cli-config"
    mkdir -p "$DOCKER_CONFIG"
    # podman reads DOCKER_CONFIG too (registry auth): give it a valid, empty file.
    echo '{}' >"$DOCKER_CONFIG/config.json"
    DOCKER_CLI="${DOCKER_CLI:-$([ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker)}"
    export DOCKER_CLI
    # dockerd's bridge: our own, so another dockerd's docker0 is never touched.
    export DBRIDGE="cbdk$NET_N"
    ip link add "$DBRIDGE" type bridge
    ip addr add "10.198.$NET_N.1/24" dev "$DBRIDGE"
    ip link set "$DBRIDGE" up
    local rargs
    rargs=$(printf '%s\n' "${RUNTIME_GLOBAL_ARGS[@]}" | jq -R . | jq -s -c 'map(select(. != ""))')
    jq -n --arg path "$RUNTIME" --argjson rargs "$rargs" --arg br "$DBRIDGE" '{
        runtimes: {clearbox: {path: $path, runtimeArgs: $rargs}},
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "storage-driver": "overlay2",
        bridge: $br, iptables: true, "ip-forward": true, "ip-masq": true
    }' >"$NET_DIR/docker/daemon.json"
    dockerd_start "$NET_DIR/docker" || return 1
    docker load -q -i "$IMAGE_DIR/clearbox-test.docker.tar" >/dev/null
}

teardown_file() {
    [ -n "${NET_DIR:-}" ] || return 0
    local left="" pid i
    if [ -n "${PNET:-}" ]; then
        podman rm -af -t 0 >/dev/null 2>&1 || true
        podman network rm -f "$PNET" >/dev/null 2>&1 || true
        podman rmi -af >/dev/null 2>&1 || true
    fi
    if [ -n "${DOCKER_CLI:-}" ]; then
        if "$DOCKER_CLI" version >/dev/null 2>&1; then
            "$DOCKER_CLI" ps -aq | xargs -r timeout 30 "$DOCKER_CLI" rm -f >/dev/null 2>&1 || true
        fi
        dockerd_stop "$NET_DIR/docker"
        for i in $(seq 50); do
            left=$(procs_naming "$NET_DIR")
            [ -z "$left" ] && break
            sleep 0.2
        done
        [ -z "$left" ] || echo "$left" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
        ip link del "$DBRIDGE" 2>/dev/null || true
    fi
    local d
    for d in "$NET_DIR" ${NET_RUNROOT:+"$NET_RUNROOT"}; do
        grep -F " $d/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$d"
    done
    rmdir_cgroup_parents libpod_parent docker
    [ -z "$left" ] || {
        echo "leftover processes: $left" >&2
        return 1
    }
}

# Fetches http://127.0.0.1:$1/ until it answers (the server starts after `run -d` returns).
fetch() {
    local i out
    for i in $(seq 60); do
        out=$(curl -s -m 3 "http://127.0.0.1:$1/" 2>/dev/null) && [ -n "$out" ] && {
            echo "$out"
            return 0
        }
        sleep 0.5
    done
    return 1
}

HTTPD='mkdir -p /www && echo "hello from $(hostname)" >/www/index.html && exec httpd -f -p 80 -h /www'

# podman_netns NAME — the container's network namespace path (podman's sandbox key).
podman_netns() { podman inspect -f '{{.NetworkSettings.SandboxKey}}' "$1"; }

# assert_wired NETNS_PATH PID — in vm: the engine's netns holds a clearbox tap joined to eth0
# by tc mirred both ways, and the container's pid shows that netns.
assert_wired() {
    local ns="$1" pid="$2" f
    [ "$(stat -L -c %i "/proc/$pid/ns/net")" = "$(stat -L -c %i "$ns")" ] ||
        fail "pid $pid is not in the container's network namespace $ns"
    expect_vm || return 0
    f=$(nsenter --net="$ns" tc filter show dev eth0 ingress)
    [[ "$f" == *mirred* && "$f" == *cbtap0* ]] || fail "eth0 not redirected to cbtap0: $f"
    f=$(nsenter --net="$ns" tc filter show dev cbtap0 ingress)
    [[ "$f" == *mirred* && "$f" == *eth0* ]] || fail "cbtap0 not redirected to eth0: $f"
}

# assert_unwired NETNS_PATH — nothing of ours left in a namespace that still exists.
assert_unwired() {
    local ns="$1" q l
    [ -e "$ns" ] || return 0
    q=$(nsenter --net="$ns" tc qdisc show 2>/dev/null | grep ingress || true)
    [ -z "$q" ] || fail "ingress qdisc left in $ns: $q"
    l=$(nsenter --net="$ns" ip -o link 2>/dev/null | grep cbtap || true)
    [ -z "$l" ] || fail "tap left in $ns: $l"
}

@test "podman run -d -p HOST:80: busybox httpd answers on 127.0.0.1" {
    no_fly
    local port=$PORT_BASE ns pid
    run --separate-stderr prun run -d --name web --network "$PNET" -p "127.0.0.1:$port:80" \
        --hostname webhost "$IMAGE" sh -c "$HTTPD"
    assert_status 0
    run fetch "$port"
    assert_status 0
    [ "$output" = "hello from webhost" ] || fail "got: $output"
    ns=$(podman_netns web)
    pid=$(podman inspect -f '{{.State.Pid}}' web)
    assert_wired "$ns" "$pid"
    if expect_vm; then
        run --separate-stderr podman exec web uname -r
        assert_guest_kernel "$output"
    fi
    local cid
    cid=$(podman inspect -f '{{.Id}}' web)
    run --separate-stderr podman stop -t 2 web
    assert_status 0
    assert_unwired "$ns"
    podman rm -f -t 0 web >/dev/null
    [ -z "$(procs_naming "$cid")" ] || fail "process left: $(procs_naming "$cid")"
}

@test "podman: two containers on one network reach each other by IP and by name" {
    no_fly
    run --separate-stderr prun run -d --name srv --network "$PNET" --hostname srv "$IMAGE" sh -c "$HTTPD"
    assert_status 0
    local ip
    ip=$(podman inspect -f "{{(index .NetworkSettings.Networks \"$PNET\").IPAddress}}" srv)
    [[ "$ip" == 10.197.$NET_N.* ]] || fail "srv address: $ip"
    run --separate-stderr prun run --rm --network "$PNET" --cap-add NET_RAW "$IMAGE" \
        sh -c "ping -c 2 -W 5 $ip && nslookup srv && for i in \$(seq 30); do wget -q -O- http://srv/ && exit 0; sleep 0.5; done; exit 1"
    assert_status 0
    assert_output_contains "2 packets received"
    assert_output_contains "$ip"
    assert_output_contains "hello from srv"
    local ns
    ns=$(podman_netns srv)
    podman rm -f -t 0 srv >/dev/null
    assert_unwired "$ns"
}

@test "podman --network none: loopback only" {
    no_fly
    run --separate-stderr prun run --rm --network none "$IMAGE" \
        sh -c 'ip -o link | grep link/ether || echo no-ether; ip route; ip -o addr | grep -v " lo " || true'
    assert_status 0
    [ "$output" = "no-ether" ] || fail "devices/routes with --network none: $output"
}

@test "podman --network host, --pid host and --network container:VM are refused with one line (vm)" {
    expect_vm || skip "isolation is not vm"
    run --separate-stderr prun run --rm --network host "$IMAGE" true
    [ "$status" -ne 0 ] || fail "--network host started"
    [[ "$stderr" == *"cannot share the host's network"* ]] || fail "stderr: $stderr"
    run --separate-stderr prun run --rm --pid host "$IMAGE" true
    [ "$status" -ne 0 ] || fail "--pid host started"
    [[ "$stderr" == *"cannot share the host's pid namespace"* ]] || fail "stderr: $stderr"
    run --separate-stderr prun run -d --name first --network "$PNET" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr prun run --rm --network container:first "$IMAGE" true
    [ "$status" -ne 0 ] || fail "--network container:first started"
    [[ "$stderr" == *"belongs to another VM container"* ]] || fail "stderr: $stderr"
    # The first container is untouched.
    assert_wired "$(podman_netns first)" "$(podman inspect -f '{{.State.Pid}}' first)"
    podman rm -f -t 0 first >/dev/null
    run podman ps -aq
    [ -z "$output" ] || fail "containers left: $output"
}

@test "docker run -p with dockerd's bridge: httpd answers on 127.0.0.1" {
    no_fly
    local port=$((PORT_BASE + 1)) cid ns pid
    run --separate-stderr docker run -d --runtime=clearbox -p "127.0.0.1:$port:80" \
        --hostname dockweb "$IMAGE" sh -c "$HTTPD"
    assert_status 0
    cid=$output
    run fetch "$port"
    assert_status 0
    [ "$output" = "hello from dockweb" ] || fail "got: $output"
    ns=$(docker inspect -f '{{.NetworkSettings.SandboxKey}}' "$cid")
    pid=$(docker inspect -f '{{.State.Pid}}' "$cid")
    assert_wired "$ns" "$pid"
    run --separate-stderr docker rm -f "$cid"
    assert_status 0
    assert_unwired "$ns"
    [ -z "$(procs_naming "$cid")" ] || fail "process left: $(procs_naming "$cid")"
}

# --- the runtime directly, in a network namespace of the test's own -----------------------

setup_direct_netns() {
    setup_direct
    NS="cbe2e$NET_N-$BATS_TEST_NUMBER"
    ip netns add "$NS"
    ip link add "cbh$NET_N-$BATS_TEST_NUMBER" type veth peer name eth0 netns "$NS"
    ip addr add "10.196.$NET_N.1/24" dev "cbh$NET_N-$BATS_TEST_NUMBER"
    ip link set "cbh$NET_N-$BATS_TEST_NUMBER" up
    ip -n "$NS" addr add "10.196.$NET_N.2/24" dev eth0
    ip -n "$NS" link set eth0 up
    ip -n "$NS" route add default via "10.196.$NET_N.1"
    B="$BATS_TEST_TMPDIR/bundle"
    make_bundle "$B" sh -c "$HTTPD"
    edit_config "$B" --arg ns "/var/run/netns/$NS" \
        '.linux.namespaces |= map(if .type == "network" then .path = $ns else . end)'
}

teardown() {
    [ -n "${NS:-}" ] || return 0
    teardown_direct
    [ -z "${CLIENT:-}" ] || ip netns del "$CLIENT" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    ip link del "cbh$NET_N-$BATS_TEST_NUMBER" 2>/dev/null || true
}

# The container's address answers HTTP from the host side of the veth.
direct_fetch() { curl -s -m 3 --retry 40 --retry-delay 1 --retry-all-errors "http://10.196.$NET_N.2/"; }

shim_child() { ps -o pid=,comm= --ppid "$1" | awk -v c="$2" '$2 ~ c {print $1; exit}'; }

@test "vm wiring: delete --force, kill -9 of QEMU, kill -9 of the shim leave no tap, qdisc or filter" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    local id pid qemu
    for how in force qemu shim; do
        id=$(new_id "$how")
        track "$id"
        rt_detached run -d --bundle "$B" "$id"
        assert_status 0
        run direct_fetch
        assert_status 0
        assert_output_contains "hello from clearbox-e2e"
        pid=$(rt state "$id" | jq -r .pid)
        assert_wired "/var/run/netns/$NS" "$pid"
        case $how in
            force) rt delete --force "$id" ;;
            qemu)
                qemu=$(shim_child "$pid" qemu)
                [ -n "$qemu" ] || fail "no QEMU under shim $pid"
                kill -9 "$qemu"
                wait_for eval '[ "$(rt_status "$id")" = stopped ]' || fail "not stopped: $(rt_status "$id")"
                # The shim has dropped its privileges by then (docs/SECURITY.md): delete
                # removes the wiring, from the record.
                rt delete "$id"
                ;;
            shim)
                kill -9 "$pid"
                wait_for eval '[ "$(rt_status "$id")" = stopped ]' || fail "not stopped"
                rt delete "$id"
                ;;
        esac
        assert_unwired "/var/run/netns/$NS"
        assert_nothing_left "$id" "$B"
    done
}

@test "vm: a spec without a network namespace is refused with one line, nothing left" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    edit_config "$B" '.linux.namespaces |= map(select(.type != "network"))'
    local id
    id=$(new_id hostnet)
    rt_detached run -d --bundle "$B" "$id"
    assert_clean_error
    [[ "$stderr" == *"cannot share the host's network"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$id" "$B"
}

@test "vm: a second VM in the same network namespace is refused, the first keeps working" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    local a b
    a=$(new_id first)
    b=$(new_id second)
    track "$a"
    rt_detached run -d --bundle "$B" "$a"
    assert_status 0
    rt_detached run -d --bundle "$B" "$b"
    assert_clean_error
    [[ "$stderr" == *"belongs to another VM container"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$b"
    run direct_fetch
    assert_status 0
    assert_output_contains "hello from"
    rt delete --force "$a"
    assert_unwired "/var/run/netns/$NS"
    assert_nothing_left "$a" "$B"
}

@test "vm: prestart hooks see the shim's netns (Docker's model): a veth moved in there is carried into the VM" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    # A new network namespace (no path), filled by a prestart hook, as libnetwork-setkey does.
    local peer="cbp$NET_N-$BATS_TEST_NUMBER"
    cat >"$BATS_TEST_TMPDIR/hook.sh" <<EOF
#!/bin/sh
state=\$(cat)
echo "\$state" >"$BATS_TEST_TMPDIR/hook.state"
pid=\$(echo "\$state" | jq .pid)
ip link add $peer type veth peer name eth0 netns "\$pid" &&
ip addr add 10.195.$NET_N.1/24 dev $peer && ip link set $peer up &&
nsenter -t "\$pid" -n sh -c 'ip addr add 10.195.$NET_N.2/24 dev eth0 && ip link set eth0 up'
EOF
    chmod +x "$BATS_TEST_TMPDIR/hook.sh"
    edit_config "$B" --arg h "$BATS_TEST_TMPDIR/hook.sh" \
        '.linux.namespaces |= map(if .type == "network" then del(.path) else . end)
         | .hooks = {prestart: [{path: $h}]} | .annotations = {"org.example/k": "v"}'
    local id
    id=$(new_id hook)
    track "$id"
    rt_detached run -d --bundle "$B" "$id"
    assert_status 0
    run jq -r '"\(.status) \(.annotations["org.example/k"])"' "$BATS_TEST_TMPDIR/hook.state"
    [ "$output" = "created v" ] || fail "hook state: $(cat "$BATS_TEST_TMPDIR/hook.state")"
    run curl -s -m 3 --retry 40 --retry-delay 1 --retry-all-errors "http://10.195.$NET_N.2/"
    assert_status 0
    assert_output_contains "hello from"
    rt delete --force "$id"
    ip link del "$peer" 2>/dev/null || true
    assert_nothing_left "$id" "$B"
}

@test "vm: IPv6 addresses and routes reach the guest (host IPv6 is off here: a client netns)" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    CLIENT="${NS}c"
    local peer="cbq$NET_N-$BATS_TEST_NUMBER" v6="fd00:cb:$NET_N"
    ip netns add "$CLIENT"
    ip -n "$CLIENT" link add "$peer" type veth peer name eth1 netns "$NS"
    ip -n "$CLIENT" addr add "$v6::1/64" dev "$peer" nodad
    ip -n "$CLIENT" link set "$peer" up
    ip -n "$NS" addr add "$v6::2/64" dev eth1 nodad
    ip -n "$NS" link set eth1 up
    ip -n "$NS" -6 route add "$v6:1::/64" via "$v6::1" dev eth1
    local id
    id=$(new_id v6)
    track "$id"
    rt_detached run -d --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt exec "$id" sh -c 'ip -6 addr show dev eth1; ip -6 route; ip -o -4 addr'
    assert_status 0
    assert_output_contains "$v6::2/64"
    assert_output_contains "$v6:1::/64 via $v6::1 dev eth1"
    assert_output_contains "10.196.$NET_N.2"
    run ip netns exec "$CLIENT" curl -s -g -m 3 --retry 40 --retry-delay 1 --retry-all-errors "http://[$v6::2]/"
    assert_status 0
    assert_output_contains "hello from"
    rt delete --force "$id"
    assert_unwired "/var/run/netns/$NS"
    assert_nothing_left "$id" "$B"
}

@test "vm: createContainer hooks are refused with one line, nothing left" {
    expect_vm || skip "isolation is not vm"
    setup_direct_netns
    edit_config "$B" '.hooks = {createContainer: [{path: "/bin/true"}]}'
    local id
    id=$(new_id cchook)
    rt_detached run -d --bundle "$B" "$id"
    assert_clean_error
    [[ "$stderr" == *"createContainer hooks are not supported"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$id" "$B"
}
