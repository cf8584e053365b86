#!/usr/bin/env bats
# Bad input, driven at the runtime binary directly.
# Contract for every case: non-zero exit, a one-line error on stderr, and
# nothing left behind (state entry, process, mount, cgroup) — see
# assert_nothing_left in helpers.bash.

load helpers

setup() {
    setup_direct
    B="$BATS_TEST_TMPDIR/bundle"
}

teardown() {
    teardown_direct
}

# Known places where runc itself does not meet the contract. Only skipped when
# the runtime under test *is* runc (reference run); clearbox must pass them.
runc_deviation() {
    if [ "$RUNTIME_NAME" = "runc" ]; then
        skip "runc deviation: $*"
    fi
}

# A created, then started container running `sleep 1000`.
start_sleeper() {
    local id="$1"
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt start "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "container $id is not running: $(rt state "$id" 2>&1)"
}

@test "malformed config.json is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    printf '{"ociVersion": "1.0.2", "process": {"args": [' >"$B/config.json"
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "config.json of the wrong JSON type is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    echo '[1, 2, 3]' >"$B/config.json"
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "missing config.json is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    rm "$B/config.json"
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "missing bundle directory is rejected" {
    local id
    id=$(new_id)
    rt_detached create --bundle "$BATS_TEST_TMPDIR/does-not-exist" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$BATS_TEST_TMPDIR/does-not-exist"
}

@test "missing rootfs is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    rm -rf "$B/rootfs"
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "missing process executable: run fails cleanly" {
    local id
    id=$(new_id)
    make_bundle "$B" /no/such/binary
    run --separate-stderr rt run --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "rootfs that is a regular file is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    rm -rf "$B/rootfs"
    echo not-a-dir >"$B/rootfs"
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "empty process.args is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    edit_config "$B" '.process.args = []'
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "bind mount of a missing host path is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" true
    edit_config "$B" --arg src "$BATS_TEST_TMPDIR/no-such-source" \
        '.mounts += [{destination: "/data", type: "bind", source: $src, options: ["rbind", "rw"]}]'
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "--pid-file in a missing directory fails and cleans up" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    rt_detached create --bundle "$B" --pid-file "$BATS_TEST_TMPDIR/no/such/dir/pid" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "terminal: true without --console-socket is rejected" {
    local id
    id=$(new_id)
    make_bundle "$B" sh
    edit_config "$B" '.process.terminal = true'
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "unreachable --console-socket fails and cleans up" {
    local id
    id=$(new_id)
    make_bundle "$B" sh
    edit_config "$B" '.process.terminal = true'
    rt_detached create --bundle "$B" --console-socket "$BATS_TEST_TMPDIR/no-such.sock" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "id with a path escape (../x) is rejected" {
    make_bundle "$B" true
    rt_detached create --bundle "$B" "../x"
    assert_clean_error
    [ ! -e "$(dirname "$RT_ROOT")/x" ] || fail "runtime created $(dirname "$RT_ROOT")/x"
    assert_nothing_left "../x" "$B"
}

@test "id with a slash (a/b) is rejected" {
    make_bundle "$B" true
    rt_detached create --bundle "$B" "a/b"
    assert_clean_error
    [ ! -e "$RT_ROOT/a" ] || fail "runtime created $RT_ROOT/a"
    assert_nothing_left "a/b" "$B"
}

@test "empty id is rejected" {
    make_bundle "$B" true
    rt_detached create --bundle "$B" ""
    assert_clean_error
    assert_nothing_left "" "$B"
}

@test "1 KiB id is rejected" {
    local id
    id=$(printf 'a%.0s' $(seq 1024))
    make_bundle "$B" true
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "duplicate id is rejected and the first container is untouched" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    make_bundle "$BATS_TEST_TMPDIR/bundle2" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    rt_detached create --bundle "$BATS_TEST_TMPDIR/bundle2" "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "created" ] || fail "first container changed: $(rt state "$id" 2>&1)"
    # Nothing of the second attempt may exist while the first is still there.
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$BATS_TEST_TMPDIR/bundle2"
    assert_nothing_left "$id" "$B"
}

@test "kill with an unknown signal (SIGFOO) is rejected, container keeps running" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt kill "$id" SIGFOO
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running after bad kill"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "kill with signal number out of range (99) is rejected" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt kill "$id" 99
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running after bad kill"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "start twice is rejected" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt start "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "pause of a created (not started) container is rejected" {
    runc_deviation "runc 1.1 freezes a created container and exits 0"
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt pause "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "created" ] || fail "state changed: $(rt state "$id" 2>&1)"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "resume of a running (not paused) container is rejected" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt resume "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "delete of a running container without --force is rejected" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt delete "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "exec in a stopped container is rejected" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]'
    run --separate-stderr rt exec "$id" true
    assert_clean_error
    run --separate-stderr rt start "$id"
    assert_clean_error
    run --separate-stderr rt delete "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "exec with a malformed --process file is rejected, container keeps running" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    printf '{"args": [' >"$BATS_TEST_TMPDIR/process.json"
    run --separate-stderr rt exec --process "$BATS_TEST_TMPDIR/process.json" "$id"
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "exec of a missing binary fails, container keeps running" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt exec "$id" /no/such/binary
    assert_clean_error
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
    run --separate-stderr rt exec "$id" true
    assert_status 0
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "an oomScoreAdj the host does not allow is refused, naming it" {
    expect_vm && skip "isolation vm applies oomScoreAdj in the guest"
    runc_deviation "nsexec's multi-line fatal error"
    # CRI asks -998 for every pod sandbox; lowering needs CAP_SYS_RESOURCE.
    if sh -c 'echo -998 >/proc/self/oom_score_adj' 2>/dev/null; then
        skip "this host lets root lower oom_score_adj (CAP_SYS_RESOURCE)"
    fi
    local id
    id=$(new_id)
    make_bundle "$B" true
    edit_config "$B" '.process.oomScoreAdj = -998'
    rt_detached create --bundle "$B" "$id"
    assert_clean_error
    [[ "$stderr" == *"oomScoreAdj to -998"*"CAP_SYS_RESOURCE"* ]] || fail "error does not name it: $stderr"
    assert_nothing_left "$id" "$B"
}

@test "isolation fly refuses Kubernetes pod containers with the reason" {
    [ "${ISOLATION:-}" = fly ] && is_clearbox || skip "fly only (isolation: ${ISOLATION:-default})"
    local id kind
    make_bundle "$B" true
    for kind in sandbox container; do
        id=$(new_id "$kind")
        edit_config "$B" --arg k "$kind" \
            '.annotations = {"io.kubernetes.cri.container-type": $k, "io.kubernetes.cri.sandbox-id": "pod1"}'
        rt_detached create --bundle "$B" "$id"
        assert_clean_error
        [[ "$stderr" == *"isolation fly cannot run Kubernetes pods"* ]] || fail "error: $stderr"
        assert_nothing_left "$id" "$B"
    done
}

@test "state of an unknown id fails" {
    local id
    id=$(new_id nope)
    run --separate-stderr rt state "$id"
    assert_clean_error
    assert_nothing_left "$id"
}

@test "kill of an unknown id fails" {
    local id
    id=$(new_id nope)
    run --separate-stderr rt kill "$id" KILL
    assert_clean_error
    assert_nothing_left "$id"
}

@test "delete of an unknown id fails" {
    local id
    id=$(new_id nope)
    run --separate-stderr rt delete "$id"
    assert_clean_error
    assert_nothing_left "$id"
}

@test "start/pause/resume/exec/ps of an unknown id fail" {
    local id cmd
    id=$(new_id nope)
    for cmd in start pause resume "exec" ps; do
        if [ "$cmd" = "exec" ]; then
            run --separate-stderr rt exec "$id" true
        else
            run --separate-stderr rt "$cmd" "$id"
        fi
        assert_clean_error || fail "command: $cmd"
    done
    assert_nothing_left "$id"
}

@test "unknown command is rejected" {
    run --separate-stderr rt no-such-command
    [ "$status" -ne 0 ] || fail "unknown command exited 0"
    [ -n "$stderr" ] || fail "no message on stderr"
}

@test "a virtiofsd that fails at start: the error names it and its message, nothing left" {
    expect_vm || skip "isolation vm only (virtiofsd serves the VM's share)"
    local id fake="$BATS_TEST_TMPDIR/bin"
    mkdir -p "$fake"
    printf '#!/bin/sh\necho "virtiofsd: cannot serve the share (e2e)" >&2\nexit 3\n' >"$fake/virtiofsd"
    chmod +x "$fake/virtiofsd"
    export PATH="$fake:$PATH"
    id=$(new_id)
    make_bundle "$B" true
    run --separate-stderr rt run --bundle "$B" "$id"
    assert_clean_error
    [[ "$stderr" == *"virtiofsd-0 exited (exit status: 3)"*"cannot serve the share (e2e)"* ]] ||
        fail "the error does not name the failed virtiofsd: $stderr"
    assert_nothing_left "$id" "$B"
}

@test "create interrupted while its VM starts (SIGTERM, SIGINT, SIGHUP): undone, ends by the signal, nothing left" {
    expect_vm || skip "isolation vm only (create waits while a VM starts)"
    local id sig num pid status qemu mem base shim tries
    make_bundle "$B" true
    for sig in TERM INT HUP; do
        num=$(kill -l "$sig")
        # Caught while the VM runs and the guest has not answered: the shim is stopped the
        # moment QEMU is seen, so the create cannot finish first (tried again if it did).
        for tries in 1 2 3; do
            id=$(new_id "$sig$tries")
            track "$id"
            # Signals at their default (a runner under nohup ignores SIGHUP, and so would we).
            env --default-signal=HUP,INT,TERM \
                "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" create --bundle "$B" "$id" \
                </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/stderr" &
            pid=$!
            qemu=""
            for _ in $(seq 500); do
                qemu="$(pgrep -a -f -- "path=$RT_ROOT/$id/console.log" || true)"
                [ -n "$qemu" ] && break
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.01
            done
            [ -n "$qemu" ] || fail "no QEMU started for $id: $(cat "$BATS_TEST_TMPDIR/stderr")"
            shim="$(pgrep -f -- "$RT_ROOT/$id/shim.log __vm-shim" || true)"
            [ -n "$shim" ] && kill -STOP "$shim" 2>/dev/null
            sleep 0.2
            # Still "creating": create waits for the stopped shim (it records "created" only
            # after the shim's answer).
            [ "$(jq -r .status "$RT_ROOT/$id/state.json" 2>/dev/null)" = creating ] && break
            # The create finished before the shim stopped: start over with a new id.
            [ -n "$shim" ] && kill -CONT "$shim" 2>/dev/null
            wait "$pid" || true
            rt delete --force "$id" >/dev/null 2>&1 || true
            [ "$tries" -lt 3 ] || fail "every create finished before its shim could be stopped"
        done
        base=$(vm_base "$id")
        # A restored VM's guest RAM: a copy of the template memory on tmpfs (cold: a memfd).
        mem=""
        [[ "$qemu" =~ mem-path=([^,]+) ]] && mem="${BASH_REMATCH[1]}"
        kill -"$sig" "$pid"
        status=0
        wait "$pid" || status=$?
        [ "$status" -eq $((128 + num)) ] ||
            fail "create did not end by SIG$sig: status $status, $(cat "$BATS_TEST_TMPDIR/stderr")"
        grep -q "create interrupted by SIG$sig: the container was removed" "$BATS_TEST_TMPDIR/stderr" ||
            fail "no message naming the signal: $(cat "$BATS_TEST_TMPDIR/stderr")"
        assert_nothing_left "$id" "$B"
        assert_no_vm_processes "$base"
        [ -z "$base" ] || [ ! -e "$base" ] || fail "the VM's directory is left: $(find "$base" | head)"
        [ -z "$mem" ] || [ ! -e "$mem" ] || fail "the VM's memory copy is left: $mem"
    done
}

@test "exec interrupted while its process is set up (SIGTERM): passed on to the process, as runc does; nothing left running" {
    expect_vm || skip "isolation vm only (the exec goes through the VM's agent; elsewhere it takes a few ms)"
    local id pid shim status
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    [ "$status" -eq 0 ] || fail "create: $stderr"
    run --separate-stderr rt start "$id"
    [ "$status" -eq 0 ] || fail "start: $stderr"
    env --default-signal=HUP,INT,TERM \
        "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" exec "$id" sleep 999 \
        </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/stderr" &
    pid=$!
    # The exec's shim is stopped the moment it is seen: the exec waits for it, and the signal
    # comes while the process is being set up.
    shim=""
    for _ in $(seq 500); do
        shim="$(pgrep -f -- "$RT_ROOT/$id/shim-exec-" || true)"
        [ -n "$shim" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    [ -n "$shim" ] || fail "no exec shim seen: $(cat "$BATS_TEST_TMPDIR/stderr")"
    kill -STOP $shim
    sleep 0.2
    kill -0 "$pid" 2>/dev/null || fail "exec ended before the signal: $(cat "$BATS_TEST_TMPDIR/stderr")"
    kill -TERM "$pid"
    sleep 0.2
    kill -CONT $shim
    status=0
    wait "$pid" || status=$?
    # The process got the SIGTERM (busybox sleep dies of it), and exec reports that.
    [ "$status" -eq 143 ] || fail "exec: status $status, $(cat "$BATS_TEST_TMPDIR/stderr")"
    # Nothing runs on unattended in the container.
    local left=""
    for _ in $(seq 50); do
        run --separate-stderr rt exec "$id" ps -o args
        [ "$status" -eq 0 ] || fail "ps: $stderr"
        left="$(grep -x 'sleep 999' <<<"$output" || true)"
        [ -z "$left" ] && break
        sleep 0.1
    done
    [ -z "$left" ] || fail "the exec'd process still runs: $output"
}

@test "a VM container that stopped holds no guest memory before delete" {
    expect_vm || skip "isolation vm only"
    local id pid qemu mem
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    qemu="$(pgrep -a -f -- "path=$RT_ROOT/$id/console.log" || true)"
    [ -n "$qemu" ] || fail "no QEMU for $id"
    pid="${qemu%% *}"
    mem=""
    [[ "$qemu" =~ mem-path=([^,]+) ]] && mem="${BASH_REMATCH[1]}"
    if [ -n "$mem" ]; then
        # Restored from a template: QEMU holds its copy open, the name is gone.
        [ ! -e "$mem" ] || fail "the memory copy still has a name while the VM runs: $mem"
        ls -l "/proc/$pid/fd" | grep -qF "$mem (deleted)" ||
            fail "QEMU does not hold the memory copy: $(ls -l "/proc/$pid/fd")"
    fi
    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait_for test "$(rt_status "$id")" = stopped || fail "not stopped: $(rt state "$id" 2>&1)"
    local st
    st="$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || true)"
    # Gone, or a zombie its new parent has not reaped yet.
    [ -z "$st" ] || [ "$st" = Z ] || fail "QEMU $pid still runs (state $st) after the container stopped"
    run --separate-stderr rt delete "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

@test "create waiting on a hook that never ends: SIGTERM kills the hook and undoes the create" {
    expect_vm || skip "isolation vm only (the create of other isolations is not interruptible)"
    local id pid status marker="$BATS_TEST_TMPDIR/hook-ran"
    # A duration of its own: the leak check below must not see other tests' processes.
    local secs=$((100000 + RANDOM))
    id=$(new_id)
    make_bundle "$B" true
    edit_config "$B" --arg m "$marker" --arg s "$secs" \
        '.hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "touch \($m); exec sleep \($s)"]}]}'
    track "$id"
    env --default-signal=TERM "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" \
        create --bundle "$B" "$id" </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/stderr" &
    pid=$!
    wait_for test -e "$marker" || fail "the hook did not run: $(cat "$BATS_TEST_TMPDIR/stderr")"
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 143 ] || fail "create did not end by SIGTERM: status $status, $(cat "$BATS_TEST_TMPDIR/stderr")"
    grep -q "create interrupted by SIGTERM" "$BATS_TEST_TMPDIR/stderr" ||
        fail "no message naming the signal: $(cat "$BATS_TEST_TMPDIR/stderr")"
    ! pgrep -f -- "touch $marker; exec sleep $secs" >/dev/null || fail "the hook still runs"
    ! pgrep -x -f "sleep $secs" >/dev/null || fail "the hook's sleep still runs"
    assert_nothing_left "$id" "$B"
}
