#!/usr/bin/env bats
# containerd 1.6 + ctr with clearbox's own shim: ctr run --runtime io.containerd.clearbox.v2.
#
# A private containerd (own root/state/sockets, CRI plugin disabled) runs for the whole file,
# with a PATH whose first directory holds containerd-shim-clearbox-v2 (containerd finds a
# runtime v2 shim by its binary name on PATH). The shim binary is $SHIM, else the one next to
# $RUNTIME, else target/release/containerd-shim-clearbox-v2. The shim keeps its containers'
# state under /run/clearbox-shim/<namespace>; every leak check is scoped to this suite's
# namespace, its bundles and its VMs.
#
# Isolation: the private containerd runs with CLEARBOX_ISOLATION in its environment and every
# run carries the annotation io.clearbox.isolation, as in containerd.bats.

load helpers

NS=clearbox-shim-e2e
SHIM_RUNTIME=io.containerd.clearbox.v2

ctr_argv() {
    CTR_ARGV=("$(command -v ctr)" --address "$CTRD_DIR/containerd.sock" --namespace "$NS")
}

ctr() {
    ctr_argv
    t "${CTR_ARGV[@]}" "$@"
}

run_args() {
    RUN_ARGS=(--runtime "$SHIM_RUNTIME")
    if [ -n "${CLEARBOX_ISOLATION:-}" ]; then
        RUN_ARGS+=(--annotation "io.clearbox.isolation=$CLEARBOX_ISOLATION")
    fi
}

find_shim() {
    local s
    for s in "${SHIM:-}" "$(dirname "$RUNTIME")/containerd-shim-clearbox-v2" \
        "$(dirname "$RUNTIME")/release/containerd-shim-clearbox-v2" \
        "$REPO/target/release/containerd-shim-clearbox-v2" \
        "$(command -v containerd-shim-clearbox-v2 || true)"; do
        if [ -n "$s" ] && [ -x "$s" ]; then
            echo "$s"
            return 0
        fi
    done
    return 1
}

start_containerd() {
    PATH="$CTRD_DIR/bin:$PATH" setsid containerd --config "$CTRD_DIR/config.toml" \
        </dev/null >>"$CTRD_DIR/containerd.log" 2>&1 &
    echo $! >"$CTRD_DIR/pid"
    local i
    for i in $(seq 100); do
        command ctr --address "$CTRD_DIR/containerd.sock" version >/dev/null 2>&1 && return 0
        kill -0 "$(cat "$CTRD_DIR/pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "containerd did not come up:" >&2
    tail -20 "$CTRD_DIR/containerd.log" >&2
    return 1
}

stop_containerd() {
    local pid i
    pid=$(cat "$CTRD_DIR/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

setup_file() {
    require_runtime
    is_clearbox || skip "the clearbox shim drives clearbox only (runtime: $RUNTIME_NAME)"
    require_image
    local shim
    shim="$(find_shim)" || {
        echo "containerd-shim-clearbox-v2 not found (set SHIM= or build it next to $RUNTIME)" >&2
        return 1
    }
    mkdir -p "$E2E_WORKDIR"
    CTRD_DIR="$(mktemp -d "$E2E_WORKDIR/shimctrd.XXXXXX")"
    export CTRD_DIR
    mkdir -p "$CTRD_DIR/bin"
    ln -s "$shim" "$CTRD_DIR/bin/containerd-shim-clearbox-v2"
    cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_DIR/containerd.sock"
[ttrpc]
  address = "$CTRD_DIR/containerd.sock.ttrpc"
[debug]
  address = "$CTRD_DIR/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
EOF
    start_containerd
    ctr image import "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
    ctr image ls -q | grep -qx "$IMAGE" || {
        echo "image $IMAGE not present after import: $(ctr image ls -q)" >&2
        return 1
    }
}

teardown_file() {
    [ -n "${CTRD_DIR:-}" ] || return 0
    local id i left
    if command ctr --address "$CTRD_DIR/containerd.sock" version >/dev/null 2>&1; then
        for id in $(ctr task ls -q 2>/dev/null); do
            ctr task kill -s KILL "$id" >/dev/null 2>&1 || true
        done
        for id in $(ctr task ls -q 2>/dev/null); do
            for i in $(seq 20); do
                ctr task rm -f "$id" >/dev/null 2>&1 && break
                sleep 0.2
            done
        done
        for id in $(ctr container ls -q 2>/dev/null); do
            ctr container rm "$id" >/dev/null 2>&1 || true
        done
        ctr image rm "$IMAGE" >/dev/null 2>&1 || true
    fi
    stop_containerd
    left="$(procs_naming "$CTRD_DIR"; procs_naming "/run/clearbox-shim/$NS/"; procs_naming "-namespace $NS ")"
    if [ -n "$left" ]; then
        echo "leftover processes after containerd stop:" >&2
        echo "$left" >&2
        echo "$left" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
    fi
    grep -F " $CTRD_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$CTRD_DIR"
    rmdir_cgroup_parents "$NS"
    [ -z "$left" ]
}

setup() {
    run_args
    ctr_argv
}

# The host directory of a running container's VM (vm isolation), from its record.
vm_base_of() {
    jq -r '.base // empty' "/run/clearbox-shim/$NS/$1/vm-box.json" 2>/dev/null || true
}

# Nothing of container $1 is left: no shim serving it, no VM process of its VM base $2 (may
# be empty), no mount below its bundle, no state under the shim's root.
assert_container_gone() {
    local id="$1" base="${2:-}" left
    wait_for eval "[ -z \"\$(procs_naming ' -id $id ')\" ]" ||
        fail "shim of $id still running: $(procs_naming " -id $id ")"
    left="$(procs_naming "/run/clearbox-shim/$NS/$id/")"
    [ -n "$base" ] && left="$left$(procs_naming "$base/")"
    [ -z "$left" ] || fail "processes of $id left: $left"
    ! grep -qF "/$NS/$id/" /proc/self/mountinfo ||
        fail "mounts of $id left: $(grep -F "/$NS/$id/" /proc/self/mountinfo)"
    if [ -n "$base" ]; then
        ! grep -qF " $base/" /proc/self/mountinfo || fail "VM share of $id still mounted"
        [ ! -e "$base" ] || fail "VM base $base left: $(ls -A "$base")"
    fi
    [ ! -e "/run/clearbox-shim/$NS/$id" ] ||
        fail "state left: $(ls -A "/run/clearbox-shim/$NS/$id")"
}

@test "shim: ctr run --rm prints hi, nothing left" {
    run --separate-stderr ctr run --rm "${RUN_ARGS[@]}" "$IMAGE" shim-hi echo hi
    assert_status 0
    [ "$output" = "hi" ] || fail "output: '$output' stderr: $stderr"
    assert_container_gone shim-hi
}

@test "shim: with isolation vm the container runs on the guest kernel" {
    expect_vm || skip "isolation is not vm"
    run --separate-stderr ctr run --rm "${RUN_ARGS[@]}" "$IMAGE" shim-uname uname -r
    assert_status 0
    assert_guest_kernel "$output"
}

@test "shim: ctr run returns the container's exit code (42)" {
    run --separate-stderr ctr run --rm "${RUN_ARGS[@]}" "$IMAGE" shim-exit sh -c 'exit 42'
    assert_status 42
}

@test "shim: ctr run --tty under a pty" {
    run in_pty "${CTR_ARGV[@]}" run --rm --tty "${RUN_ARGS[@]}" "$IMAGE" shim-tty \
        sh -c 'test -t 0 && echo pty-ok; tty; stty size'
    assert_status 0
    local out
    out="$(clean_output)"
    [[ "$out" == *pty-ok* ]] || fail "output: $out"
    [[ "$out" == */dev/pts/* ]] || fail "tty not a pts: $out"
}

@test "shim: run -d, exec (code, --tty), metrics, pause/resume, kill, rm, nothing left" {
    local id=shim-life base
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" \
        sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
    assert_status 0
    run --separate-stderr ctr task ls
    [[ "$output" == *"$id"*RUNNING* ]] || fail "task not running: $output"
    base="$(vm_base_of "$id")"
    if expect_vm; then
        [ -n "$base" ] || fail "no VM record for $id"
    fi
    run --separate-stderr ctr task exec --exec-id x1 "$id" sh -c 'echo exec-out; exit 7'
    assert_status 7
    [ "$output" = "exec-out" ] || fail "exec output: '$output' stderr: $stderr"
    run in_pty "${CTR_ARGV[@]}" task exec --tty --exec-id x2 "$id" sh -c 'test -t 0 && echo exec-pty-ok'
    assert_status 0
    [[ "$(clean_output)" == *exec-pty-ok* ]] || fail "exec --tty output: $output"
    if [ "${ISOLATION:-vm}" = fly ]; then
        run --separate-stderr ctr task metrics "$id"
        [ "$status" -ne 0 ] || fail "fly has no cgroups, metrics must fail: $output"
    else
        run --separate-stderr ctr task metrics --format json "$id"
        assert_status 0
        local pids
        pids="$(printf '%s' "$output" | jq -r '.pids.current // .Pids.Current // empty')"
        [ -n "$pids" ] && [ "$pids" -ge 1 ] || fail "metrics without pids: $output"
        printf '%s' "$output" | jq -e '(.memory.usage // .Memory.Usage // 0) > 0' >/dev/null ||
            fail "metrics without memory usage: $output"
    fi
    run --separate-stderr ctr task pause "$id"
    assert_status 0
    [[ "$(ctr task ls)" == *"$id"*PAUSED* ]] || fail "not paused: $(ctr task ls)"
    run --separate-stderr ctr task resume "$id"
    assert_status 0
    [[ "$(ctr task ls)" == *"$id"*RUNNING* ]] || fail "not running: $(ctr task ls)"
    run --separate-stderr ctr task kill "$id"
    assert_status 0
    wait_for eval 'ctr task ls | grep -q "^$id .*STOPPED"' || fail "task did not stop: $(ctr task ls)"
    run --separate-stderr ctr task rm "$id"
    assert_status 0
    run --separate-stderr ctr container rm "$id"
    assert_status 0
    assert_container_gone "$id" "$base"
}

@test "shim: ctr task kill -s KILL: ctr run exits 137" {
    local bg rc=0
    ctr run --rm "${RUN_ARGS[@]}" "$IMAGE" shim-kill sleep 1000 </dev/null >/dev/null 2>&1 &
    bg=$!
    wait_for eval 'ctr task ls | grep -q "^shim-kill .*RUNNING"' || fail "shim-kill never ran"
    ctr task kill -s KILL shim-kill
    wait "$bg" || rc=$?
    [ "$rc" -eq 137 ] || fail "ctr run exited $rc after SIGKILL, want 137"
    assert_container_gone shim-kill
}

@test "shim: checkpoint is refused as not implemented" {
    local id=shim-ckpt
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" sleep 1000
    assert_status 0
    run --separate-stderr ctr task checkpoint "$id"
    [ "$status" -ne 0 ] || fail "checkpoint succeeded"
    [[ "$stderr$output" == *"not implemented"* ]] || fail "unclear error: $stderr $output"
    ctr task kill -s KILL "$id"
    wait_for eval 'ctr task ls | grep -q "^$id .*STOPPED"'
    ctr task rm "$id" >/dev/null
    ctr container rm "$id"
    assert_container_gone "$id"
}

@test "shim: found again through its address file after a containerd restart" {
    local id=shim-restart base
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" sleep 1000
    assert_status 0
    base="$(vm_base_of "$id")"
    stop_containerd
    start_containerd
    wait_for eval 'ctr task ls | grep -q "^$id .*RUNNING"' || fail "task lost: $(ctr task ls)"
    run --separate-stderr ctr task exec --exec-id r1 "$id" echo after-restart
    assert_status 0
    [ "$output" = "after-restart" ] || fail "exec after restart: '$output' $stderr"
    run --separate-stderr ctr task kill -s KILL "$id"
    assert_status 0
    wait_for eval 'ctr task ls | grep -q "^$id .*STOPPED"' || fail "task did not stop"
    run --separate-stderr ctr task rm "$id"
    assert_status 0
    ctr container rm "$id"
    assert_container_gone "$id" "$base"
}

@test "shim: a shim containerd lost is cleaned up by 'delete'" {
    local id=shim-lost base shim_pid
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" sleep 1000
    assert_status 0
    base="$(vm_base_of "$id")"
    shim_pid="$(procs_naming " -id $id " | awk 'NR==1{print $1}')"
    [ -n "$shim_pid" ] || fail "no shim for $id"
    kill -KILL "$shim_pid"
    # containerd notices the dead shim, runs `containerd-shim-clearbox-v2 delete`, and the
    # task is gone.
    wait_for eval '! ctr task ls | grep -q "^$id "' || fail "task still listed: $(ctr task ls)"
    ctr container rm "$id"
    assert_container_gone "$id" "$base"
}
