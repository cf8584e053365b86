#!/usr/bin/env bats
# Docker 20.10 with the runtime under test registered as runtime "clearbox".
#
# A private dockerd (own data-root, exec-root, pidfile, unix socket) is started
# in setup_file; it launches its own containerd (under exec-root). Containers get
# Docker's default network, as users have it: the default bridge (docker0) with
# the suite's own `bip` ($DOCKER_BIP), iptables NAT and IP forwarding. docker0 is
# created by dockerd and removed in teardown_file when this suite created it (two
# dockerds on one host would share it: do not run this suite twice at once).
# Other settings that work on this host: native.cgroupdriver=cgroupfs (no
# systemd), storage-driver overlay2. Isolation reaches clearbox via runtimeArgs
# ["--isolation", X] in daemon.json.

load helpers

docker() {
    t "$DOCKER_CLI" "$@"
}

# fly creates no namespaces (rkt's fly: chroot only), so its containers are on the host's
# network: docker's bridge setup (a prestart hook that enters the container's network
# namespace) cannot work there, and the suite asks for the host network, as fly users do.
fly_isolation() { is_clearbox && [ "${ISOLATION:-}" = fly ]; }

drun() {
    if fly_isolation; then
        docker run --runtime=clearbox --network host "$@"
    else
        docker run --runtime=clearbox "$@"
    fi
}

# The default bridge's address and subnet (docker0).
DOCKER_BIP="10.199.77.1/24"

setup_file() {
    require_runtime
    require_image
    mkdir -p "$E2E_WORKDIR"
    DOCKER_DIR="$(mktemp -d "$E2E_WORKDIR/docker.XXXXXX")"
    export DOCKER_DIR
    export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
    export DOCKER_CONFIG="$DOCKER_DIR/cli-config"
    mkdir -p "$DOCKER_CONFIG"
    # The distro CLI matches the 20.10 daemon; any newer CLI negotiates down.
    DOCKER_CLI="${DOCKER_CLI:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker)}"
    export DOCKER_CLI

    local rargs
    rargs=$(printf '%s\n' "${RUNTIME_GLOBAL_ARGS[@]}" | jq -R . | jq -s -c 'map(select(. != ""))')
    jq -n --arg path "$RUNTIME" --argjson rargs "$rargs" --arg bip "$DOCKER_BIP" '{
        runtimes: {clearbox: {path: $path, runtimeArgs: $rargs}},
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "storage-driver": "overlay2",
        bip: $bip, iptables: true, "ip-forward": true, "ip-masq": true,
        "userland-proxy": false
    }' >"$DOCKER_DIR/daemon.json"
    if ip link show docker0 >/dev/null 2>&1; then
        : >"$DOCKER_DIR/docker0.existed"
    fi

    dockerd_start "$DOCKER_DIR" || return 1
    docker load -q -i "$IMAGE_DIR/clearbox-test.docker.tar" >/dev/null
    docker image inspect "$IMAGE" >/dev/null
}

teardown_file() {
    [ -n "${DOCKER_DIR:-}" ] || return 0
    local i left
    if "$DOCKER_CLI" version >/dev/null 2>&1; then
        "$DOCKER_CLI" ps -aq | xargs -r timeout 30 "$DOCKER_CLI" rm -f >/dev/null 2>&1 || true
    fi
    dockerd_stop "$DOCKER_DIR"
    # dockerd's containerd and shims: anything whose command line names our dir.
    left=$(procs_naming "$DOCKER_DIR")
    for i in $(seq 50); do
        [ -z "$left" ] && break
        sleep 0.2
        left=$(procs_naming "$DOCKER_DIR")
    done
    if [ -n "$left" ]; then
        echo "leftover processes after dockerd stop:" >&2
        echo "$left" >&2
        echo "$left" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
    fi
    grep -F " $DOCKER_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    [ -e "$DOCKER_DIR/docker0.existed" ] || ip link del docker0 2>/dev/null || true
    rm -rf "$DOCKER_DIR"
    rmdir_cgroup_parents docker
    [ -z "$left" ]
}

@test "docker info lists the clearbox runtime" {
    run --separate-stderr docker info --format '{{json .Runtimes}}'
    assert_status 0
    jq -e --arg p "$RUNTIME" '.clearbox.path == $p' <<<"$output" >/dev/null ||
        fail "runtime not registered: $output"
}

@test "docker run --rm --runtime=clearbox prints hi" {
    run --separate-stderr drun --rm "$IMAGE" echo hi
    assert_status 0
    [ "$output" = "hi" ] || fail "output: '$output' stderr: $stderr"
}

@test "docker run --rm leaves no state, mount, cgroup or process behind" {
    local cid
    run --separate-stderr drun --rm --cidfile "$BATS_TEST_TMPDIR/cid" "$IMAGE" true
    assert_status 0
    cid=$(cat "$BATS_TEST_TMPDIR/cid")
    [ "${#cid}" -eq 64 ] || fail "bad cidfile: $cid"
    # `docker run --rm` returns once the container exits; removal is async.
    wait_for eval '! docker container inspect "$cid" >/dev/null 2>&1' || fail "container not removed"
    [ ! -e "$DOCKER_DIR/exec/runtime-runc/moby/$cid" ] || fail "runtime state left"
    ! grep -F "$cid" /proc/self/mountinfo || fail "mount left for $cid"
    [ -z "$(find /sys/fs/cgroup/ -maxdepth 4 -type d -name "*$cid*" 2>/dev/null)" ] || fail "cgroup left"
    [ -z "$(procs_naming "$cid")" ] || fail "process left: $(procs_naming "$cid")"
}

@test "docker: with isolation vm the container runs on the guest kernel" {
    expect_vm || skip "isolation is not vm"
    run --separate-stderr drun --rm "$IMAGE" uname -r
    assert_status 0
    assert_guest_kernel "$output"
}

@test "docker default bridge: a container reaches another one by its address" {
    ! fly_isolation || skip "isolation fly has no network namespace (its containers use the host's network)"
    local name=e2e-docker-web ip
    run --separate-stderr drun -d --name "$name" --hostname dockweb "$IMAGE" \
        sh -c 'mkdir -p /www && echo "hello from $(hostname)" >/www/index.html && exec httpd -f -p 80 -h /www'
    assert_status 0
    ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$name")
    [[ "$ip" == 10.199.77.* ]] || fail "address outside the bridge's $DOCKER_BIP: '$ip'"
    # The client has the bridge's address too, and fetches the page from the server's.
    # (busybox-static's wget crashes in glibc's static NSS; nc speaks the HTTP.)
    local client='ip -4 -o addr show eth0 | grep -o "inet 10.199.77.[0-9]*" || exit 1
        for i in $(seq 30); do
            printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 "$1" 80 | grep "hello from" && exit 0
            sleep 1
        done
        exit 1'
    run --separate-stderr drun --rm "$IMAGE" sh -c "$client" client "$ip"
    assert_status 0
    [[ "$output" == *"inet 10.199.77."* ]] || fail "client address: $output"
    [[ "$output" == *"hello from dockweb"* ]] || fail "fetched: $output / $stderr"
    docker rm -f "$name" >/dev/null
}

@test "docker run returns the container exit code (42)" {
    run --separate-stderr drun --rm "$IMAGE" sh -c 'exit 42'
    assert_status 42
}

@test "docker run -t under a pty" {
    local net=()
    ! fly_isolation || net=(--network host)
    run in_pty "$DOCKER_CLI" run --rm -it --runtime=clearbox "${net[@]}" "$IMAGE" \
        sh -c 'test -t 0 && echo pty-ok'
    assert_status 0
    [[ "$(clean_output)" == *pty-ok* ]] || fail "output: $output"
}

@test "docker run -d, exec, stop, rm" {
    local name=e2e-docker-d
    run --separate-stderr drun -d --name "$name" "$IMAGE" \
        sh -c 'trap "exit 0" TERM; while :; do sleep 0.1; done'
    assert_status 0
    run --separate-stderr docker exec "$name" sh -c 'echo exec-out; exit 3'
    assert_status 3
    [ "$output" = "exec-out" ] || fail "exec output: $output"
    run --separate-stderr docker exec -e FOO=bar -u 1000 -w /tmp "$name" sh -c 'echo "$FOO $(id -u) $(pwd)"'
    assert_status 0
    [ "$output" = "bar 1000 /tmp" ] || fail "exec env/user/cwd: $output"
    run --separate-stderr docker stop -t 10 "$name"
    assert_status 0
    run --separate-stderr docker inspect "$name" --format '{{.State.Status}} {{.State.ExitCode}}'
    [ "$output" = "exited 0" ] || fail "after stop: $output"
    run --separate-stderr docker rm "$name"
    assert_status 0
}

@test "docker stats: a VM container's cgroup holds the VM (its memory, its limit)" {
    expect_vm || skip "isolation is not vm"
    local name=e2e-docker-stats
    run --separate-stderr drun -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr docker stats --no-stream --format '{{.MemUsage}}' "$name"
    assert_status 0
    echo "docker stats: $output" >&3
    assert_vm_mem_usage "$output"
    docker rm -f "$name" >/dev/null
}

@test "docker kill: exit status 137 is reported" {
    local name=e2e-docker-kill
    run --separate-stderr drun -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr docker kill "$name"
    assert_status 0
    run --separate-stderr docker wait "$name"
    assert_status 0
    [ "$output" = "137" ] || fail "docker wait: $output"
    run --separate-stderr docker rm "$name"
    assert_status 0
}

@test "docker pause / unpause" {
    local name=e2e-docker-pause
    run --separate-stderr drun -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr docker pause "$name"
    assert_status 0
    run --separate-stderr docker inspect "$name" --format '{{.State.Status}}'
    [ "$output" = "paused" ] || fail "after pause: $output"
    run --separate-stderr docker unpause "$name"
    assert_status 0
    run --separate-stderr docker exec "$name" true
    assert_status 0
    run --separate-stderr docker rm -f "$name"
    assert_status 0
}

@test "docker -e, -u, -w, -v are honoured" {
    local d="$BATS_TEST_TMPDIR/vol"
    mkdir -p "$d"
    echo from-host >"$d/in"
    run --separate-stderr drun --rm -e FOO=bar -u 1000 -w /tmp -v "$d:/data" "$IMAGE" \
        sh -c 'echo "$FOO $(id -u) $(pwd) $(cat /data/in)"'
    assert_status 0
    [ "$output" = "bar 1000 /tmp from-host" ] || fail "got: $output"
    run --separate-stderr drun --rm -v "$d:/data" "$IMAGE" sh -c 'echo from-container >/data/out'
    assert_status 0
    [ "$(cat "$d/out")" = "from-container" ] || fail "write did not reach the host"
}
