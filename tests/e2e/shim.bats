#!/usr/bin/env bats
# containerd 1.6 + ctr with clearbox's own shim: ctr run --runtime io.containerd.clearbox.v2.
#
# A private containerd (own root/state/sockets, CRI plugin disabled) runs for the whole file,
# with a PATH whose first directory holds containerd-shim-clearbox-v2 (containerd finds a
# runtime v2 shim by its binary name on PATH; helpers.bash's ctrd_*). The shim binary is
# $SHIM, else the one next to $RUNTIME, else target/release/containerd-shim-clearbox-v2. The
# shim keeps its containers' state under $CLEARBOX_SHIM_ROOT/<namespace> (the suite's own
# $CTRD_DIR/shim-root); every leak check is scoped to this suite's namespace, its bundles and
# its VMs.
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

setup_file() {
    require_runtime
    is_clearbox || skip "the clearbox shim drives clearbox only (runtime: $RUNTIME_NAME)"
    require_image
    ctrd_prepare shimctrd --shim
    ctrd_start
    ctr image import "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
    ctr image ls -q | grep -qx "$IMAGE" || {
        echo "image $IMAGE not present after import: $(ctr image ls -q)" >&2
        return 1
    }
}

teardown_file() {
    local rc=0
    ctrd_teardown "$NS" "$CTRD_DIR/shim-root/$NS/" "-namespace $NS " || rc=$?
    rmdir_cgroup_parents "$NS"
    return "$rc"
}

setup() {
    run_args
    ctr_argv
}

# The host directory of a running container's VM (vm isolation), from its record.
vm_base_of() {
    jq -r '.base // empty' "$CTRD_DIR/shim-root/$NS/$1/vm-box.json" 2>/dev/null || true
}

# Nothing of container $1 is left: no shim serving it, no VM process of its VM base $2 (may
# be empty), no mount below its bundle, no state under the shim's root.
assert_container_gone() {
    local id="$1" base="${2:-}" left
    wait_for eval "[ -z \"\$(procs_naming ' -id $id ')\" ]" ||
        fail "shim of $id still running: $(procs_naming " -id $id ")"
    left="$(procs_naming "$CTRD_DIR/shim-root/$NS/$id/")"
    [ -n "$base" ] && left="$left$(procs_naming "$base/")"
    [ -z "$left" ] || fail "processes of $id left: $left"
    ! grep -qF "/$NS/$id/" /proc/self/mountinfo ||
        fail "mounts of $id left: $(grep -F "/$NS/$id/" /proc/self/mountinfo)"
    if [ -n "$base" ]; then
        ! grep -qF " $base/" /proc/self/mountinfo || fail "VM share of $id still mounted"
        [ ! -e "$base" ] || fail "VM base $base left: $(ls -A "$base")"
    fi
    [ ! -e "$CTRD_DIR/shim-root/$NS/$id" ] ||
        fail "state left: $(ls -A "$CTRD_DIR/shim-root/$NS/$id")"
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
    # The init ends on TERM and leaves its child behind: delete must take it too (fly has no
    # PID namespace whose end would). A duration of its own, so the check sees only it.
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" \
        sh -c 'trap "exit 0" TERM; sleep 1000321 & wait'
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
    ! pgrep -a -x -f "sleep 1000321" || fail "the init's child outlived the container"
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
    ctrd_stop
    ctrd_start
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

@test "shim: ctr task kill --exec-id reaches the exec'd process (SIGKILL too, in the guest with vm)" {
    local id=shim-xkill bg rc=0
    run --separate-stderr ctr run -d "${RUN_ARGS[@]}" "$IMAGE" "$id" sleep 1000
    assert_status 0
    ctr task exec --exec-id k1 "$id" sh -c 'echo $$ >/tmp/k1.pid; exec sleep 1000' \
        </dev/null >/dev/null 2>&1 &
    bg=$!
    wait_for eval "ctr task exec --exec-id p1 $id test -s /tmp/k1.pid" || fail "exec k1 never ran"
    run --separate-stderr ctr task kill -s KILL --exec-id k1 "$id"
    assert_status 0
    wait "$bg" || rc=$?
    [ "$rc" -eq 137 ] || fail "ctr task exec exited $rc after SIGKILL, want 137"
    # The process itself is gone (with vm: in the guest, not only its host-side stand-in).
    run --separate-stderr ctr task exec --exec-id p2 "$id" sh -c \
        'if kill -0 "$(cat /tmp/k1.pid)" 2>/dev/null; then echo alive; else echo gone; fi'
    assert_status 0
    [ "$output" = gone ] || fail "the exec'd process survived SIGKILL: $output"
    # The container lives on; an unknown exec id is NotFound.
    run --separate-stderr ctr task kill --exec-id nope "$id"
    [ "$status" -ne 0 ] || fail "kill of an unknown exec id succeeded"
    [[ "$(ctr task ls)" == *"$id"*RUNNING* ]] || fail "container gone: $(ctr task ls)"
    ctr task kill -s KILL "$id"
    wait_for eval 'ctr task ls | grep -q "^$id .*STOPPED"'
    ctr task rm "$id" >/dev/null
    ctr container rm "$id"
    assert_container_gone "$id"
}

@test "shim: a container OOM-killed in its memory cgroup gives TaskOOM (ctr events)" {
    [ "${ISOLATION:-vm}" != fly ] || skip "fly has no cgroups: no OOM events"
    local id=shim-oom ev rc=0
    ev="$BATS_TEST_TMPDIR/events"
    "${CTR_ARGV[@]}" events >"$ev" 2>&1 &
    local evpid=$!
    sleep 0.5
    # 32 MiB; dd's 64 MiB buffer is filled from /dev/zero: the cgroup's OOM killer ends it.
    run --separate-stderr ctr run --rm --memory-limit 33554432 "${RUN_ARGS[@]}" "$IMAGE" "$id" \
        dd if=/dev/zero of=/dev/null bs=64M count=1
    rc=$status
    wait_for eval "grep -q '/tasks/delete.*\"$id\"' '$ev'" || true
    kill "$evpid" 2>/dev/null || true
    wait "$evpid" 2>/dev/null || true
    [ "$rc" -eq 137 ] || fail "ctr run exited $rc, want 137 (OOM kill): $stderr"
    grep -q "/tasks/oom.*\"$id\"" "$ev" || fail "no TaskOOM for $id: $(cat "$ev")"
    # TaskOOM comes before TaskExit, as with runc.
    [ "$(grep -n "/tasks/oom.*\"$id\"" "$ev" | head -1 | cut -d: -f1)" -lt \
        "$(grep -n "/tasks/exit.*\"$id\"" "$ev" | head -1 | cut -d: -f1)" ] ||
        fail "TaskOOM after TaskExit: $(cat "$ev")"
    assert_container_gone "$id"
}
