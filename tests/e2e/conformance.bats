#!/usr/bin/env bats
# runc's command-line contract, point by point (issue #7), driven at the runtime
# binary directly in every isolation; `RUNTIME=/usr/sbin/runc tests/e2e/run.sh
# conformance` is the reference run. Points a VM or fly cannot give are asserted
# as clear errors there.

load helpers

setup() {
    setup_direct
    B="$BATS_TEST_TMPDIR/bundle"
}

teardown() {
    teardown_direct
    [ -z "${SHARED_CG:-}" ] || remove_shared_cgroup "$SHARED_CG"
}

# A cgroup in every hierarchy (v1 cpuset with its parent's cpus and mems), as an engine or an
# administrator would prepare one.
make_shared_cgroup() {
    local cg="$1" h
    for h in /sys/fs/cgroup/*/; do
        mkdir -p "$h$cg"
    done
    if [ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]; then
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$cg/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$cg/cpuset.mems"
    fi
}

remove_shared_cgroup() {
    local cg="$1" h p
    [ ! -f "/sys/fs/cgroup/freezer/$cg/freezer.state" ] || echo THAWED >"/sys/fs/cgroup/freezer/$cg/freezer.state"
    [ ! -f "/sys/fs/cgroup/unified/$cg/cgroup.freeze" ] || echo 0 >"/sys/fs/cgroup/unified/$cg/cgroup.freeze"
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$cg" ] || continue
        for p in $(cat "$h$cg/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    done
    sleep 0.2
    for h in /sys/fs/cgroup/*/; do
        [ ! -d "$h$cg" ] || find "$h$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

iso() { is_clearbox && echo "${ISOLATION:-vm}" || echo runc; }

start_sleeper() {
    local id="$1"
    shift
    make_bundle "$B" sleep 1000
    [ "$#" -eq 0 ] || edit_config "$B" "$@"
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    rt_detached start "$id"
    assert_status 0
}

# --- spec, version, help -------------------------------------------------------

@test "spec writes runc's template: terminal, sh, read-only rootfs" {
    cd "$BATS_TEST_TMPDIR"
    run --separate-stderr rt spec
    assert_status 0
    jq -e '.process.terminal == true and .process.args == ["sh"] and .root.path == "rootfs"
           and .root.readonly == true and (.linux.namespaces | map(.type) | index("mount") != null)
           and (.mounts | map(.destination) | index("/dev/pts") != null)' config.json >/dev/null ||
        fail "not runc's template: $(cat config.json)"
    rm config.json
    run --separate-stderr rt spec --rootless
    assert_status 0
    jq -e '.linux.uidMappings[0].hostID == 0 and (.linux.namespaces | map(.type) | index("user") != null)' \
        config.json >/dev/null || fail "rootless template: $(cat config.json)"
}

@test "-v, --version, help, -h and COMMAND -h succeed" {
    run --separate-stderr rt -v
    assert_status 0
    assert_output_contains "version"
    run --separate-stderr rt --version
    assert_status 0
    run --separate-stderr rt help
    assert_status 0
    run --separate-stderr rt -h
    assert_status 0
    assert_output_contains "kill"
    run --separate-stderr rt kill -h
    assert_status 0
    assert_output_contains "signal"
}

# --- exit codes and errors --------------------------------------------------

@test "exec of a missing binary exits 255 with runc's 'no such file or directory'" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt exec "$id" /no/such/binary
    assert_status 255
    [[ "$stderr" == *"no such file or directory"* ]] || fail "stderr: $stderr"
    run --separate-stderr rt exec "$id" no-such-command
    assert_status 255
    [[ "$stderr" == *"executable file not found in \$PATH"* ]] || fail "stderr: $stderr"
    run --separate-stderr rt exec "$id" /etc/passwd
    assert_status 255
    [[ "$stderr" == *"permission denied"* ]] || fail "stderr: $stderr"
    # The cause is said once.
    [ "$(grep -o 'no such file\|permission denied' <<<"$stderr" | wc -l)" -eq 1 ] || fail "cause repeated: $stderr"
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
}

@test "run of a missing or non-executable binary fails with runc's words and leaves nothing" {
    local id
    id=$(new_id)
    make_bundle "$B" /no/such/binary
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_clean_error
    [[ "$stderr" == *"no such file or directory"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$id" "$B"
    edit_config "$B" '.process.args = ["/etc/passwd"]'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_clean_error
    [[ "$stderr" == *"permission denied"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$id" "$B"
}

@test "an oversized argument list is 'argument list too long', not a silent failure" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    # One variable longer than the kernel's MAX_ARG_STRLEN (128 KiB), through a process file.
    head -c 140000 /dev/zero | tr '\0' x >"$BATS_TEST_TMPDIR/big"
    jq -n --rawfile big "$BATS_TEST_TMPDIR/big" \
        '{args: ["true"], cwd: "/", user: {uid: 0, gid: 0}, env: ["PATH=/bin", "BIG=" + $big]}' \
        >"$BATS_TEST_TMPDIR/p.json"
    run --separate-stderr rt exec --process "$BATS_TEST_TMPDIR/p.json" "$id"
    [ "$status" -ne 0 ] || fail "oversized environment accepted"
    [[ "$stderr" == *"argument list too long"* ]] || fail "stderr: ${stderr:0:300}"
    [ "$(rt_status "$id")" = "running" ] || fail "container no longer running"
}

@test "exec --pid-file in a missing directory fails with 255" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt exec --pid-file "$BATS_TEST_TMPDIR/no/such/dir/pid" "$id" true
    assert_status 255
}

@test "exec into a paused container fails with 255; --ignore-paused does not block resume" {
    local id bg rc=0
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt pause "$id"
    assert_status 0
    run --separate-stderr rt exec "$id" true
    assert_status 255
    [[ "$stderr" == *"paused"* ]] || fail "stderr: $stderr"
    rt exec --ignore-paused "$id" true </dev/null >/dev/null 2>&1 &
    bg=$!
    sleep 1
    # resume must get the lock while the exec waits for the frozen container.
    run --separate-stderr rt resume "$id"
    assert_status 0
    wait "$bg" || rc=$?
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "exec --ignore-paused hung"
    [ "$(rt_status "$id")" = "running" ] || fail "not running after resume"
}

@test "exec into a created (not started) container works" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    run --separate-stderr rt exec "$id" echo exec-in-created
    assert_status 0
    assert_output_contains "exec-in-created"
    [ "$(rt_status "$id")" = "created" ] || fail "status changed: $(rt_status "$id")"
    rt_detached start "$id"
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "not running after start"
}

@test "a relative --root works for every command, from another directory too (runc makes it absolute)" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    track "$id"
    cd "$BATS_TEST_TMPDIR"
    # Detached: the container keeps the caller's stdio, so no capture (as rt_detached).
    t "$RUNTIME" --root rt-root "${RUNTIME_GLOBAL_ARGS[@]}" run -d --bundle bundle "$id" \
        </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/run.err" ||
        fail "run -d with a relative --root: $(cat "$BATS_TEST_TMPDIR/run.err")"
    run --separate-stderr t "$RUNTIME" --root rt-root "${RUNTIME_GLOBAL_ARGS[@]}" exec "$id" echo relative-root
    assert_status 0
    assert_output_contains "relative-root"
    [ "$(rt_status "$id")" = "running" ] || fail "the absolute --root does not see it"
    run --separate-stderr t "$RUNTIME" --root rt-root "${RUNTIME_GLOBAL_ARGS[@]}" delete --force "$id"
    assert_status 0
    [ -z "$(rt_status "$id")" ] || fail "still listed after delete"
}

@test "exec --process without user runs as root" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    echo '{"args": ["id", "-u"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]}' >"$BATS_TEST_TMPDIR/p.json"
    run --separate-stderr rt exec --process "$BATS_TEST_TMPDIR/p.json" "$id"
    assert_status 0
    [ "$output" = "0" ] || fail "output: $output"
}

# --- kill ------------------------------------------------------------------------

@test "kill ID 0 checks that the container is alive" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt kill "$id" 0
    assert_status 0
    [ "$(rt_status "$id")" = "running" ] || fail "signal 0 changed the container"
    run --separate-stderr rt kill "$id" KILL
    assert_status 0
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' || fail "not stopped after KILL"
    run --separate-stderr rt kill "$id" 0
    [ "$status" -ne 0 ] || fail "kill 0 of a stopped container succeeded"
    run --separate-stderr rt kill "$id" TERM
    [ "$status" -ne 0 ] || fail "kill of a stopped container was a silent no-op"
}

@test "a signal sent right after start reaches the process" {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'while :; do sleep 0.2; done'
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    rt start "$id" </dev/null >/dev/null 2>&1 && rt kill "$id" KILL
    for _ in $(seq 100); do
        [ "$(rt_status "$id")" = "stopped" ] && break
        sleep 0.1
    done
    # KILL, not TERM: the process is its pid namespace's init, and the kernel drops a signal
    # from outside that has no handler. start returns once the process is released, not once
    # it ran its first command (runc too), so a TERM sent before `trap` ran is discarded by
    # the kernel, whatever the runtime does. KILL cannot be dropped: "stopped" means it arrived.
    [ "$(rt_status "$id")" = "stopped" ] || fail "SIGKILL right after start was lost"
}

# --- capabilities ------------------------------------------------------------------

@test "capabilities only permitted, inheritable and ambient become effective, as in runc and crun" {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'grep -E "^Cap(Eff|Amb)" /proc/self/status'
    edit_config "$B" '.process.user = {uid: 1000, gid: 1000} | .process.noNewPrivileges = false
        | .process.capabilities = {bounding: ["CAP_NET_RAW", "CAP_KILL"], permitted: ["CAP_NET_RAW"],
                                   inheritable: ["CAP_NET_RAW"], ambient: ["CAP_NET_RAW"]}'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_status 0
    [[ "$output" == *"CapEff:"*"0000000000002000"* ]] || fail "CAP_NET_RAW not effective: $output / $stderr"
    [[ "$output" == *"CapAmb:"*"0000000000002000"* ]] || fail "CAP_NET_RAW not ambient: $output"
    assert_nothing_left "$id" "$B"
    # Effective but not permitted (a missing set is empty) fails, as runc fails.
    edit_config "$B" '.process.capabilities = {bounding: ["CAP_NET_RAW"], effective: ["CAP_NET_RAW"], ambient: ["CAP_NET_RAW"]}'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_clean_error
    assert_nothing_left "$id" "$B"
}

@test "an unknown command exits 3 with runc's 'No help topic'" {
    run --separate-stderr rt nosuch
    assert_status 3
    [[ "$stderr" == *"No help topic for 'nosuch'"* ]] || fail "stderr: $stderr"
    run --separate-stderr rt start
    assert_status 1
}

# --- seccomp ---------------------------------------------------------------------

@test "seccomp listenerPath gets the notify fd (vm, fly: a clear error)" {
    local id sock="$BATS_TEST_TMPDIR/notify.sock" bg
    id=$(new_id)
    make_bundle "$B" sh -c 'mkdir /tmp/notified; echo "mkdir=$?"'
    edit_config "$B" --arg sock "$sock" '.linux.seccomp = {defaultAction: "SCMP_ACT_ALLOW",
        listenerPath: $sock, architectures: ["SCMP_ARCH_X86_64"],
        syscalls: [{names: ["mkdir", "mkdirat"], action: "SCMP_ACT_NOTIFY"}]}'
    if expect_vm || [ "${ISOLATION:-}" = fly ]; then
        run --separate-stderr rt run --bundle "$B" "$id" </dev/null
        assert_clean_error
        [[ "$stderr" == *"listenerPath"* ]] || fail "stderr: $stderr"
        assert_nothing_left "$id" "$B"
        return
    fi
    python3 "$E2E_DIR/seccomp-listener.py" "$sock" >"$BATS_TEST_TMPDIR/listener.out" 2>&1 &
    bg=$!
    wait_for test -S "$sock" || fail "listener not up"
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    wait "$bg" || fail "listener: $(cat "$BATS_TEST_TMPDIR/listener.out")"
    assert_status 0
    grep -q 'fds=1 names=seccompFd pid=[1-9]' "$BATS_TEST_TMPDIR/listener.out" ||
        fail "listener got: $(cat "$BATS_TEST_TMPDIR/listener.out")"
    # The listener closed the fd unanswered: the notifying call failed (ENOSYS).
    [[ "$output" == *"mkdir=1"* ]] || fail "output: $output / $stderr"
    [ ! -e "$B/rootfs/tmp/notified" ] || fail "mkdir was not intercepted"
    assert_nothing_left "$id" "$B"
}

@test "seccomp: syscalls newer than the profile get ENOSYS, so glibc falls back from clone3" {
    [ "$(iso)" != fly ] || skip "fly loads no seccomp filter"
    local id names
    id=$(new_id)
    make_bundle "$B" /bin/clone3-probe
    gcc -static -O2 -pthread -o "$B/rootfs/bin/clone3-probe" "$E2E_DIR/clone3-probe.c"
    # Every syscall numbered below clone3 (435) but sysinfo: a profile from before clone3.
    names=$(python3 -c '
import ctypes, json
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
out = []
for nr in range(435):
    p = lib.seccomp_syscall_resolve_num_arch(0, nr)
    if p:
        n = ctypes.cast(p, ctypes.c_char_p).value.decode()
        if n != "sysinfo":
            out.append(n)
print(json.dumps(out))')
    edit_config "$B" --argjson names "$names" '.linux.seccomp = {defaultAction: "SCMP_ACT_ERRNO",
        architectures: ["SCMP_ARCH_X86_64"],
        syscalls: [{names: $names, action: "SCMP_ACT_ALLOW"}]}'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_status 0
    # clone3 is newer than the profile: ENOSYS (runc's stub), not the default EPERM, and glibc
    # starts threads and processes with clone; an older syscall left out gets the default.
    [ "$(printf '%s\n' "$output" | tr '\n' ' ')" = "clone3=ENOSYS sysinfo=EPERM thread=ok spawn=ok fork=ok " ] ||
        fail "output: $output / $stderr"
    assert_nothing_left "$id" "$B"
}

# --- cgroups ------------------------------------------------------------------------

@test "unified resources on a cgroup v1 host are refused, as runc refuses them" {
    [ "$(iso)" != fly ] || skip "fly has no cgroups"
    [ "$(iso)" != vm ] || skip "vm: the guest's cgroups are v2 only, where unified resources apply"
    [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] || skip "host cgroups are v2 only: unified is valid"
    local id
    id=$(new_id)
    make_bundle "$B" true
    edit_config "$B" '.linux.resources.unified = {"memory.high": "50000000"}'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_clean_error
    [[ "$stderr" == *"cannot use unified on cgroup v1"* ]] || fail "stderr: $stderr"
    assert_nothing_left "$id" "$B"
}

@test "a non-empty pre-existing cgroup is used with runc's warning and outlives the container; a frozen one is refused" {
    [ "$(iso)" != fly ] || skip "fly has no cgroups"
    local id other h
    id=$(new_id)
    SHARED_CG="e2e-shared-$$"
    make_shared_cgroup "$SHARED_CG"
    sleep 1000 &
    other=$!
    for h in /sys/fs/cgroup/*/; do echo "$other" >"$h$SHARED_CG/cgroup.procs"; done
    make_bundle "$B" sh -c 'echo in-container'
    edit_config "$B" --arg p "/$SHARED_CG" '.linux.cgroupsPath = $p'
    track "$id"
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_status 0
    [[ "$output" == *in-container* ]] || fail "output: $output"
    [[ "$stderr" == *"container's cgroup is not empty: 1 process(es) found"* ]] || fail "stderr: $stderr"
    # The cgroup's own process is not the container's: it lives on, in its cgroup.
    kill -0 "$other" || fail "delete killed a process that was not the container's"
    grep -qx "$other" "/sys/fs/cgroup/memory/$SHARED_CG/cgroup.procs" 2>/dev/null ||
        grep -qx "$other" "/sys/fs/cgroup/unified/$SHARED_CG/cgroup.procs" ||
        fail "the cgroup was removed under its process"
    kill -9 "$other"
    wait "$other" 2>/dev/null || true
    # A frozen cgroup would hang the container: refused, and left as it was.
    if [ -f "/sys/fs/cgroup/freezer/$SHARED_CG/freezer.state" ]; then
        echo FROZEN >"/sys/fs/cgroup/freezer/$SHARED_CG/freezer.state"
    else
        echo 1 >"/sys/fs/cgroup/$SHARED_CG/cgroup.freeze"
    fi
    id=$(new_id frozen)
    track "$id"
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    [ "$status" -ne 0 ] || fail "ran in a frozen cgroup: $output"
    [ "$status" -lt 124 ] || fail "timed out or killed (status $status)"
    [[ "$stderr" == *"container's cgroup unexpectedly frozen"* ]] || fail "stderr: $stderr"
    [ -d "/sys/fs/cgroup/freezer/$SHARED_CG" ] || [ -d "/sys/fs/cgroup/$SHARED_CG" ] ||
        fail "the pre-existing cgroup was removed"
    [ "$(rt_status "$id")" = "" ] || fail "a container was left: $(rt_status "$id")"
}

@test "exec --cgroup joins an existing sub-cgroup; delete --force removes sub-cgroups" {
    local id parent dirs d rc=0
    id=$(new_id)
    if [ "$(iso)" = fly ] || [ "$(iso)" = vm ]; then
        start_sleeper "$id"
        run --separate-stderr rt exec --cgroup sub "$id" true
        assert_clean_error
        [[ "$stderr" == *"--cgroup"* ]] || fail "stderr: $stderr"
        return
    fi
    parent="cb-e2e-$id"
    start_sleeper "$id" --arg p "/$parent/c" '.linux.cgroupsPath = $p'
    dirs=$(ls -d /sys/fs/cgroup/"$parent"/c /sys/fs/cgroup/*/"$parent"/c 2>/dev/null || true)
    [ -n "$dirs" ] || fail "no cgroup for the container"
    for d in $dirs; do
        mkdir "$d/sub"
        # A v1 cpuset starts empty: give it its parent's.
        if [ -f "$d/sub/cpuset.cpus" ]; then
            cat "$d/cpuset.cpus" >"$d/sub/cpuset.cpus"
            cat "$d/cpuset.mems" >"$d/sub/cpuset.mems"
        fi
    done
    run --separate-stderr rt exec --cgroup sub "$id" cat /proc/self/cgroup
    assert_status 0
    [[ "$output" == *"/$parent/c/sub"* ]] || fail "not in the sub-cgroup: $output"
    run --separate-stderr rt exec --cgroup nosuch "$id" true
    [ "$status" -ne 0 ] || fail "exec into a missing sub-cgroup succeeded"
    rt_detached exec -d --cgroup sub "$id" sleep 1000
    assert_status 0
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    for d in $dirs; do
        [ ! -e "$d" ] || rc=1
        rmdir "$(dirname "$d")" 2>/dev/null || true
    done
    [ "$rc" -eq 0 ] || fail "cgroups left: $(ls -d $dirs 2>/dev/null)"
}

# --- units -----------------------------------------------------------------------

@test "update takes sizes with units; events --interval takes durations" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    case "$(iso)" in
        fly)
            run --separate-stderr rt update --memory 50M "$id"
            assert_clean_error
            [[ "$stderr" == *"not supported"* ]] || fail "stderr: $stderr"
            ;;
        *)
            run --separate-stderr rt update --memory 50M --memory-swap -1 --pids-limit 100 "$id"
            assert_status 0
            run --separate-stderr rt events --stats "$id"
            assert_status 0
            jq -e '.data.memory.usage.limit == 52428800' <<<"$output" >/dev/null || fail "limit not 50M: ${output:0:400}"
            run --separate-stderr rt update --cpu-period 100000 --cpu-quota 50000 "$id"
            assert_status 0
            ;;
    esac
    run --separate-stderr rt update --memory 50X "$id"
    assert_clean_error
    if [ "$(iso)" != fly ]; then
        run --separate-stderr timeout 1.5 "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" events --interval 100ms "$id"
        [ "$(grep -c '"type":"stats"' <<<"$output")" -ge 3 ] || fail "events --interval 100ms: ${output:0:300} / $stderr"
    fi
}

# --- events ------------------------------------------------------------------

@test "events --stats prints runc's JSON shape" {
    [ "$(iso)" != fly ] || skip "fly has no cgroups: no statistics (clear error, tested below)"
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt events --stats "$id"
    assert_status 0
    jq -e --arg id "$id" '.type == "stats" and .id == $id and (.data.cpu.usage.total | type == "number")
           and (.data.memory.usage.usage | type == "number") and (.data.pids.current >= 1)' \
        <<<"$output" >/dev/null || fail "not runc's shape: ${output:0:500}"
}

@test "events prints an oom event when the container is OOM-killed" {
    [ "$(iso)" != fly ] || skip "fly has no cgroups"
    local id out="$BATS_TEST_TMPDIR/events.out" bg
    id=$(new_id)
    make_bundle "$B" sh -c 'sleep 2; tail /dev/zero'
    edit_config "$B" '.linux.resources.memory = {limit: 33554432, swap: 33554432}'
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    rt_detached start "$id"
    assert_status 0
    timeout 30 "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" events --interval 1s "$id" >"$out" 2>&1 &
    bg=$!
    wait "$bg" || true
    grep -q '"type":"oom"' "$out" || fail "no oom event: $(head -c 400 "$out")"
}

# --- terminal ----------------------------------------------------------------------

@test "foreground run with terminal: true and no console socket gets a pty" {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'tty; exit 7'
    edit_config "$B" '.process.terminal = true'
    run in_pty "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" run --bundle "$B" "$id"
    [ "$status" -eq 7 ] || fail "status $status, output: $output"
    [[ "$(clean_output)" == *"/dev/pts/"* ]] || fail "no pty: $output"
    assert_nothing_left "$id" "$B"
}

@test "foreground exec --tty without console socket gets a pty" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run in_pty "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" exec --tty "$id" sh -c 'tty; exit 5'
    [ "$status" -eq 5 ] || fail "status $status, output: $output"
    [[ "$(clean_output)" == *"/dev/pts/"* ]] || fail "no pty: $output"
}

# --- hooks, delete ---------------------------------------------------------------

@test "a prestart hook that does not read its state does not kill run (SIGPIPE)" {
    local id
    id=$(new_id)
    make_bundle "$B" echo ran
    head -c 300000 /dev/zero | tr '\0' x >"$BATS_TEST_TMPDIR/big"
    edit_config "$B" --rawfile big "$BATS_TEST_TMPDIR/big" '.annotations = {"org.example.big": $big}
        | .hooks = {prestart: [{path: "/bin/true", args: ["true"]}]}'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_status 0
    assert_output_contains "ran"
    assert_nothing_left "$id" "$B"
}

@test "a failing poststop hook does not keep delete --force from removing the container" {
    local id
    id=$(new_id)
    make_bundle "$B" sleep 1000
    edit_config "$B" '.hooks = {poststop: [{path: "/bin/false", args: ["false"]}]}'
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    rt_detached start "$id"
    assert_status 0
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
}

# --- spec values ------------------------------------------------------------------

@test "rootfsPropagation rprivate and a mount without source are valid" {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'echo ok; ls /proc/self >/dev/null'
    edit_config "$B" '.linux.rootfsPropagation = "rprivate"
        | .mounts |= map(if .destination == "/proc" then del(.source) else . end)'
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_status 0
    assert_output_contains "ok"
    assert_nothing_left "$id" "$B"
}

@test "checkpoint and restore give a clear error" {
    is_clearbox || skip "runc has CRIU-based checkpoint"
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt checkpoint "$id"
    assert_clean_error
    [[ "$stderr" == *"not supported"* ]] || fail "stderr: $stderr"
    run --separate-stderr rt restore "$id"
    assert_clean_error
}

# --- VM faults -------------------------------------------------------------------

# vm_helper_pid ID ROLE-PREFIX — pid of a VM helper from the VMM's record. The role
# "agent-channel" is the agent channel's host backend: vhost-device-vsock on a cold boot,
# clearbox-vmux (virtio-serial) on a VM restored from a template.
vm_helper_pid() {
    local run_dir
    run_dir="$(jq -r '.vm_run_dir' "$RT_ROOT/$1/vm-box.json")"
    jq -r --arg r "$2" '[.processes[] | select(if $r == "agent-channel"
        then (.role | startswith("vhost-device-vsock") or startswith("clearbox-vmux"))
        else (.role | startswith($r)) end)][0].pid' "$run_dir/vm.json"
}

@test "vm: any host-side piece of the VM dying stops the container (137); delete --force cleans up" {
    expect_vm || skip "applies to isolation vm"
    local role id pid bg rc base
    make_bundle "$B" sleep 1000
    for role in virtiofsd agent-channel qemu; do
        id=$(new_id "${role:0:5}")
        track "$id"
        rt run --bundle "$B" "$id" </dev/null >/dev/null 2>"$BATS_TEST_TMPDIR/run.err" &
        bg=$!
        wait_for eval '[ "$(rt_status "$id")" = "running" ]' || fail "$role: never running"
        base=$(vm_base "$id")
        pid=$(vm_helper_pid "$id" "$role")
        [ -n "$pid" ] && [ "$pid" != null ] || fail "$role: no pid in the VM record"
        kill -9 "$pid"
        for _ in $(seq 30); do
            [ "$(rt_status "$id")" = "running" ] || break
            sleep 0.1
        done
        [ "$(rt_status "$id")" != "running" ] || fail "$role: container still running 3 s after the $role died"
        rc=0
        wait "$bg" || rc=$?
        [ "$rc" -eq 137 ] || fail "$role: run exited $rc, want 137: $(cat "$BATS_TEST_TMPDIR/run.err")"
        assert_nothing_left "$id" "$B"
        assert_no_vm_processes "$base"
    done
}

@test "vm: after a helper dies, kill fails loudly and the first delete --force removes everything" {
    expect_vm || skip "applies to isolation vm"
    local id pid base
    id=$(new_id)
    start_sleeper "$id"
    base=$(vm_base "$id")
    pid=$(vm_helper_pid "$id" virtiofsd)
    kill -9 "$pid"
    wait_for eval '[ "$(rt_status "$id")" = "stopped" ]' || fail "not stopped after virtiofsd died"
    run --separate-stderr rt kill "$id" TERM
    [ "$status" -ne 0 ] || fail "kill of a dead VM container was a silent no-op"
    run --separate-stderr rt delete --force "$id"
    assert_status 0
    assert_nothing_left "$id" "$B"
    assert_no_vm_processes "$base"
}

# --- logs --------------------------------------------------------------------------

@test "ps lists the container's processes in ps -ef form (vm: the guest's)" {
    local id lines
    id=$(new_id)
    start_sleeper "$id"
    rt_detached exec -d "$id" sleep 2000
    assert_status 0
    for opts in "" "-ef" "-e -f"; do
        # shellcheck disable=SC2086 # the ps options are words
        run --separate-stderr rt ps "$id" $opts
        assert_status 0
        lines=$(printf '%s\n' "$output" | grep -c .)
        [[ "$(printf '%s\n' "$output" | head -1)" == "UID "*" PID "*" PPID "*" CMD" ]] || fail "header: $output"
        [[ "$output" == *"sleep 1000"* ]] || fail "ps $opts: no init in: $output / $stderr"
        [[ "$output" == *"sleep 2000"* ]] || fail "ps $opts: no exec'd process in: $output"
        [ "$lines" -ge 3 ] || fail "ps $opts: $output"
    done
    run --separate-stderr rt ps --format json "$id"
    assert_status 0
    jq -e 'length >= 2 and all(type == "number")' <<<"$output" >/dev/null || fail "json: $output"
    # Other ps options: runc passes them to ps; a VM's processes are listed in -ef form only.
    run --separate-stderr rt ps "$id" -o pid,args
    if expect_vm; then
        assert_clean_error
        [[ "$stderr" == *"ps -ef"* ]] || fail "stderr: $stderr"
    else
        assert_status 0
        [[ "$output" == *"sleep 1000"* ]] || fail "ps -o: $output"
    fi
}

@test "--debug logs level=debug lines in runc's text and JSON formats" {
    local id
    id=$(new_id)
    start_sleeper "$id"
    run --separate-stderr rt --debug --log "$BATS_TEST_TMPDIR/text.log" exec "$id" true
    assert_status 0
    grep -q 'level=debug msg=' "$BATS_TEST_TMPDIR/text.log" || fail "text log: $(head -c 300 "$BATS_TEST_TMPDIR/text.log")"
    run --separate-stderr rt --debug --log "$BATS_TEST_TMPDIR/json.log" --log-format json exec "$id" true
    assert_status 0
    jq -e -s 'map(select(.level == "debug" and (.msg | type == "string") and .time)) | length > 0' \
        "$BATS_TEST_TMPDIR/json.log" >/dev/null || fail "json log: $(head -c 300 "$BATS_TEST_TMPDIR/json.log")"
    # Without --debug, nothing but the output on a successful command.
    run --separate-stderr rt state "$id"
    assert_status 0
    [ -z "$stderr" ] || fail "unexpected stderr: $stderr"
}

@test "run --detach releases the caller's pipes when the container closes them" {
    local id t0 out
    id=$(new_id)
    make_bundle "$B" sh -c 'echo detached-out; exec >&- 2>&-; sleep 40'
    track "$id"
    t0=$(date +%s)
    out=$(rt run --detach --bundle "$B" "$id" 2>&1 </dev/null)
    [ $(($(date +%s) - t0)) -lt 25 ] || fail "the caller's pipe was held after the container closed it"
    [[ "$out" == *detached-out* ]] || fail "output: $out"
    [ "$(rt_status "$id")" = "running" ] || fail "not running"
}

# refuses_pid_spec JQ_EDIT STDERR_PART — a VM container whose spec JQ_EDIT changes is refused
# with one line naming STDERR_PART, its program never runs and nothing is left.
refuses_pid_spec() {
    local id
    id=$(new_id)
    make_bundle "$B" sh -c 'echo ran'
    edit_config "$B" "$1"
    run --separate-stderr rt run --bundle "$B" "$id" </dev/null
    assert_clean_error
    [[ "$stderr" == *"$2"* ]] || fail "stderr: $stderr"
    [[ "$output" != *ran* ]] || fail "the container ran: $output"
    assert_nothing_left "$id" "$B"
}

@test "vm: a pid namespace with a path is a clear error" {
    expect_vm || skip "applies to isolation vm (the host kernel can join it)"
    refuses_pid_spec '.linux.namespaces |= map(if .type == "pid" then .path = "/proc/1/ns/pid" else . end)' \
        "cannot join the host's pid namespace"
}

@test "vm: no pid namespace (the host's) is a clear error" {
    expect_vm || skip "applies to isolation vm (the host kernel can share it)"
    refuses_pid_spec '.linux.namespaces |= map(select(.type != "pid"))' \
        "cannot share the host's pid namespace"
}
