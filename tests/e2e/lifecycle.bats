#!/usr/bin/env bats
# Container lifecycle driven at the runtime binary directly (runc CLI contract).

load helpers

setup() {
    setup_direct
    B="$BATS_TEST_TMPDIR/bundle"
}

teardown() {
    teardown_direct
}

# create (with --pid-file) + start a long-running container.
create_started() {
    local id="$1"
    shift
    make_bundle "$B" "$@"
    track "$id"
    rt_detached create --bundle "$B" --pid-file "$BATS_TEST_TMPDIR/pid" "$id"
    assert_status 0
    rt_detached start "$id"
    assert_status 0
}

@test "harness self-check: assert_nothing_left detects a live container" {
    local id
    id=$(new_id)
    create_started "$id" sleep 1000
    run assert_nothing_left "$id" "$B"
    [ "$status" -ne 0 ] || fail "assert_nothing_left passed with a running container"
    [[ "$output" == *"state entry"* ]] || fail "state entry not detected: $output"
    [[ "$output" == *"process"* ]] || fail "container process not detected: $output"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "harness self-check: assert_nothing_left detects mounts and cgroups" {
    local id
    id=$(new_id fake)
    mkdir -p "$B/rootfs"
    mount --bind "$B/rootfs" "$B/rootfs"
    mkdir /sys/fs/cgroup/pids/"$id"
    run assert_nothing_left "$id" "$B"
    umount "$B/rootfs"
    rmdir /sys/fs/cgroup/pids/"$id"
    [ "$status" -ne 0 ] || fail "assert_nothing_left missed a mount and a cgroup"
    [[ "$output" == *"mount left"* ]] || fail "mount not detected: $output"
    [[ "$output" == *"cgroup left"* ]] || fail "cgroup not detected: $output"
    assert_nothing_left "$id" "$B"
}

@test "spec writes a valid config.json" {
    cd "$BATS_TEST_TMPDIR"
    run --separate-stderr rt spec
    assert_status 0
    jq -e '.ociVersion and (.process.args | length > 0) and .root.path' config.json >/dev/null ||
        fail "spec output is not a usable runtime spec: $(cat config.json)"
    # A second spec must refuse to overwrite.
    run --separate-stderr rt spec
    assert_clean_error
}

@test "create/start/state/kill/delete with --pid-file" {
    local id pid
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" --pid-file "$BATS_TEST_TMPDIR/pid" "$id"
    assert_status 0

    run --separate-stderr rt state "$id"
    assert_status 0
    [ "$(jq -r .status <<<"$output")" = "created" ] || fail "state after create: $output"
    [ "$(jq -r .id <<<"$output")" = "$id" ] || fail "state id: $output"
    [ "$(jq -r .bundle <<<"$output")" = "$B" ] || fail "state bundle: $output"
    [ -n "$(jq -r .ociVersion <<<"$output")" ] || fail "state ociVersion missing: $output"
    jq -e '.created | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")' <<<"$output" >/dev/null || fail "state created not RFC 3339: $output"
    pid=$(jq -r .pid <<<"$output")
    [ "$pid" -gt 0 ] || fail "state pid: $output"
    [ -s "$BATS_TEST_TMPDIR/pid" ] || fail "--pid-file not written"
    [ "$(cat "$BATS_TEST_TMPDIR/pid")" = "$pid" ] || fail "pid-file $(cat "$BATS_TEST_TMPDIR/pid") != state pid $pid"
    kill -0 "$pid" || fail "pid $pid not alive after create"

    rt_detached start "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "state after start: $(rt state "$id" 2>&1)"

    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' || fail "not stopped after kill: $(rt state "$id" 2>&1)"

    run --separate-stderr rt delete "$id"
    assert_status 0
    run --separate-stderr rt state "$id"
    [ "$status" -ne 0 ] || fail "state still succeeds after delete"
    assert_nothing_left "$id" "$B"
}

@test "kill defaults to SIGTERM and reaches a handler in the container" {
    local id
    id=$(new_id)
    create_started "$id" sh -c 'trap "echo got-term >/tmp/term; exit 0" TERM; echo ready >/tmp/ready; while :; do sleep 0.1; done'
    wait_for test -e "$B/rootfs/tmp/ready" || fail "container never became ready"
    run --separate-stderr rt kill "$id"
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' || fail "not stopped after TERM"
    [ "$(cat "$B/rootfs/tmp/term")" = "got-term" ] || fail "TERM handler did not run"
    run --separate-stderr rt delete "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "pause/resume change the state" {
    local id
    id=$(new_id)
    create_started "$id" sleep 1000
    run --separate-stderr rt pause "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "paused" ] || fail "state after pause: $(rt state "$id" 2>&1)"
    run --separate-stderr rt resume "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "state after resume: $(rt state "$id" 2>&1)"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "kill of a created (never started) container stops it; delete cleans up" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' || fail "not stopped: $(rt state "$id" 2>&1)"
    run --separate-stderr rt delete "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "kill of a created container: SIGTERM stops it (as runc's), SIGWINCH leaves it created" {
    local id
    id=$(new_id term)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt kill "$id" TERM
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' ||
        fail "SIGTERM did not stop the created container: $(rt state "$id" 2>&1)"
    run --separate-stderr rt delete "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"

    id=$(new_id winch)
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt kill "$id" WINCH
    assert_status 0
    sleep 0.5
    [ "$(rt_status "$id")" = "created" ] || fail "after SIGWINCH: $(rt state "$id" 2>&1)"
    run --separate-stderr rt start "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "not running after start: $(rt state "$id" 2>&1)"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "delete --force of a paused container leaves nothing" {
    local id
    id=$(new_id)
    create_started "$id" sleep 1000
    run --separate-stderr rt pause "$id"
    assert_status 0
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "delete --force of a created container leaves nothing" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "exec --detach and exec --pid-file" {
    local id pid
    id=$(new_id)
    create_started "$id" sleep 1000
    rt_detached exec --detach --pid-file "$BATS_TEST_TMPDIR/exec.pid" "$id" sh -c 'echo detached >/tmp/exec-ran; sleep 1000'
    assert_status 0
    pid=$(cat "$BATS_TEST_TMPDIR/exec.pid")
    [ "$pid" -gt 0 ] && kill -0 "$pid" || fail "exec pid-file pid $pid not alive"
    wait_for test -e "$B/rootfs/tmp/exec-ran" || fail "detached exec never ran"
    run --separate-stderr rt ps --format json "$id"
    jq -e --argjson pid "$pid" 'index($pid) != null' <<<"$output" >/dev/null || fail "ps lacks exec pid $pid: $output"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "ps --format json lists the container init pid" {
    local id pid
    id=$(new_id)
    create_started "$id" sleep 1000
    pid=$(cat "$BATS_TEST_TMPDIR/pid")
    run --separate-stderr rt ps --format json "$id"
    assert_status 0
    jq -e --argjson pid "$pid" 'type == "array" and (index($pid) != null)' <<<"$output" >/dev/null ||
        fail "ps json does not contain init pid $pid: $output"
}

@test "list -q and list --format json show the container" {
    local id
    id=$(new_id)
    create_started "$id" sleep 1000
    run --separate-stderr rt list -q
    assert_status 0
    grep -qx -- "$id" <<<"$output" || fail "list -q lacks $id: $output"
    run --separate-stderr rt list --format json
    assert_status 0
    jq -e --arg id "$id" 'map(select(.id == $id and .status == "running")) | length == 1' <<<"$output" >/dev/null ||
        fail "list json lacks running $id: $output"
}

@test "exec runs in the container and passes its exit code back" {
    local id
    id=$(new_id)
    create_started "$id" sleep 1000
    run --separate-stderr rt exec "$id" sh -c 'echo exec-out; cat /etc/hostname; hostname'
    assert_status 0
    assert_output_contains "exec-out"
    # fly shares the host's UTS namespace: the spec's hostname cannot apply there.
    if [ "${ISOLATION:-}" != fly ]; then
        assert_output_contains "clearbox-e2e"
    fi
    run --separate-stderr rt exec "$id" sh -c 'exit 3'
    assert_status 3
    run --separate-stderr rt exec --env FOO=bar --cwd /tmp --user 1000:1000 "$id" sh -c 'echo $FOO $(pwd) $(id -u)'
    assert_status 0
    assert_output_contains "bar /tmp 1000"
}

@test "run passes the exit code through" {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'echo run-out; exit 42'
    run --separate-stderr rt run --bundle "$B" "$id"
    assert_status 42
    assert_output_contains "run-out"
    assert_nothing_left "$id" "$B"
}

@test "run of a process killed by SIGKILL exits 137" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    local bg rc=0
    rt run --bundle "$B" "$id" </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/run.err" &
    bg=$!
    wait_for eval '[ "$(rt_status "$id")" = "running" ]' || fail "run never reached running"
    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait "$bg" || rc=$?
    [ "$rc" -eq 137 ] || fail "run exited $rc, want 137; stderr: $(cat "$BATS_TEST_TMPDIR/run.err")"
    assert_nothing_left "$id" "$B"
}

@test "run of a process killed by SIGUSR1 (not pid-ns init) exits 138" {
    # In a VM the container's process is always its pid namespace's init: a spec without a
    # pid namespace is refused there (conformance.bats: "vm: no pid namespace (the host's) is
    # a clear error"), and an init cannot die of a signal it has no handler for.
    ! expect_vm || skip "isolation vm refuses a spec without a pid namespace"
    local id
    id=$(new_id)
    # Without a pid namespace the process is not an init, so its own signal
    # with the default action kills it.
    make_bundle "$B" sh -c 'echo before; kill -USR1 $$; echo after'
    edit_config "$B" '.linux.namespaces |= map(select(.type != "pid"))'
    run --separate-stderr rt run --bundle "$B" "$id"
    assert_status 138
    assert_output_contains "before"
    [[ "$output" != *after* ]] || fail "process survived its signal"
    assert_nothing_left "$id" "$B"
}

@test "run --detach leaves a running container" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached run --detach --bundle "$B" "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "not running after run -d"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "20 containers created, started and deleted leave nothing behind" {
    make_bundle "$B" sleep 1000
    local i id ids=() bases=()
    for i in $(seq 1 20); do
        id=$(new_id "n$i")
        ids+=("$id")
        track "$id"
        rt_detached create --bundle "$B" "$id"
        assert_status 0
        rt_detached start "$id"
        assert_status 0
        bases+=("$(vm_base "$id")")
    done
    run --separate-stderr rt list -q
    assert_status 0
    [ "$(grep -c . <<<"$output")" -eq 20 ] || fail "list shows: $output"
    for id in "${ids[@]}"; do
        run --separate-stderr rt delete --force "$id"
        assert_status 0
    done
    for id in "${ids[@]}"; do
        assert_nothing_left "$id" "$B"
    done
    if expect_vm; then
        assert_no_vm_processes "${bases[@]}"
    fi
}

@test "with isolation vm, the container runs on the guest kernel" {
    expect_vm || skip "isolation is not vm"
    local id
    id=$(new_id)
    make_bundle "$B" uname -r
    track "$id"
    run --separate-stderr rt run --bundle "$B" "$id"
    assert_status 0
    assert_guest_kernel "$output"
    assert_nothing_left "$id" "$B"
}
