#!/usr/bin/env bats
# podman (4.3) driving the runtime under test via --runtime.
#
# Host settings that work here (no systemd PID 1, hybrid cgroups, no
# CAP_SYS_RESOURCE, no CNI/netavark setup):
#   --cgroup-manager cgroupfs --events-backend file, podman's default netavark
#   bridge network (its config in the suite's own dir),
#   default_ulimits nofile <= 20000 (hard limit) and nproc <= 32768 (podman
#   lowers its own RLIMIT_NPROC to 32768, and runc cannot raise it back).
# Isolation: podman runs start/kill/pause/delete with a scrubbed environment,
# and create/exec via conmon with only conmon_env_vars, so CLEARBOX_ISOLATION
# is put into conmon_env_vars AND the io.clearbox.isolation annotation is set
# on every run (highest precedence, lands in config.json).

load helpers

podman_argv() {
    PODMAN_ARGV=("${PODMAN_BIN:-$(command -v podman)}"
        --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/runroot"
        --storage-driver "$PODMAN_STORAGE_DRIVER"
        --cgroup-manager cgroupfs --events-backend file
        --runtime "$RUNTIME")
}

podman() {
    podman_argv
    t "${PODMAN_ARGV[@]}" "$@"
}

# podman run/create with the isolation annotation when ISOLATION is set.
prun() {
    local sub="$1"
    shift
    if [ -n "${CLEARBOX_ISOLATION:-}" ]; then
        podman "$sub" --annotation "io.clearbox.isolation=$CLEARBOX_ISOLATION" "$@"
    else
        podman "$sub" "$@"
    fi
}

setup_file() {
    require_runtime
    require_image
    mkdir -p "$E2E_WORKDIR"
    PODMAN_DIR="$(mktemp -d "$E2E_WORKDIR/podman.XXXXXX")"
    export PODMAN_DIR
    local env_vars='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
    if [ -n "${CLEARBOX_ISOLATION:-}" ]; then
        env_vars="$env_vars, \"CLEARBOX_ISOLATION=$CLEARBOX_ISOLATION\""
    fi
    cat >"$PODMAN_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
log_driver = "k8s-file"

[network]
network_backend = "netavark"
network_config_dir = "$PODMAN_DIR/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$PODMAN_DIR/tmp"
volume_path = "$PODMAN_DIR/volumes"
conmon_env_vars = [$env_vars]
EOF
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
    # Do not read /etc/containers/storage.conf's options for our private store.
    cat >"$PODMAN_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/root"
runroot = "$PODMAN_DIR/runroot"
EOF
    export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
    export PODMAN_STORAGE_DRIVER=overlay
    if ! podman load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >"$PODMAN_DIR/load.log" 2>&1; then
        # overlay can fail on some backing filesystems; vfs always works.
        podman system reset -f >/dev/null 2>&1 || true
        export PODMAN_STORAGE_DRIVER=vfs
        podman load -q -i "$IMAGE_DIR/clearbox-test.oci.tar" >"$PODMAN_DIR/load.log" 2>&1 || {
            cat "$PODMAN_DIR/load.log" >&2
            return 1
        }
    fi
    podman image exists "$IMAGE" || {
        echo "image $IMAGE missing after load" >&2
        return 1
    }
}

teardown_file() {
    [ -n "${PODMAN_DIR:-}" ] || return 0
    podman rm -af -t 0 >/dev/null 2>&1 || true
    podman rmi -af >/dev/null 2>&1 || true
    # c/storage may keep its overlay home mounted; unmount everything below us.
    grep -F " $PODMAN_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$PODMAN_DIR"
    rmdir_cgroup_parents libpod_parent
}

@test "podman run --rm prints hello" {
    run --separate-stderr prun run --rm "$IMAGE" echo hello
    assert_status 0
    [ "$output" = "hello" ] || fail "output: '$output' stderr: $stderr"
}

@test "podman: with isolation vm the container runs on the guest kernel" {
    expect_vm || skip "isolation is not vm"
    run --separate-stderr prun run --rm "$IMAGE" uname -r
    assert_status 0
    assert_guest_kernel "$output"
}

@test "podman: a file written in the container reaches the host rootfs; podman cp both ways" {
    local name=e2e-cp
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sh -c 'echo from-container >/tmp/made-inside; sleep 1000'
    assert_status 0
    local i
    for i in $(seq 1 100); do
        podman exec "$name" test -f /tmp/made-inside && break
        sleep 0.1
    done
    run --separate-stderr podman cp "$name:/tmp/made-inside" "$PODMAN_DIR/copied-out"
    assert_status 0
    [ "$(cat "$PODMAN_DIR/copied-out")" = from-container ] || fail "podman cp out: $(cat "$PODMAN_DIR/copied-out")"
    echo from-host >"$PODMAN_DIR/copy-in"
    run --separate-stderr podman cp "$PODMAN_DIR/copy-in" "$name:/tmp/copied-in"
    assert_status 0
    run --separate-stderr podman exec "$name" cat /tmp/copied-in
    assert_status 0
    [ "$output" = from-host ] || fail "podman cp in: $output"
    # The container's rootfs on the host holds the file written inside.
    local merged
    merged="$(podman inspect -f '{{.GraphDriver.Data.MergedDir}}' "$name" 2>/dev/null || true)"
    [ -z "$merged" ] || [ "$(cat "$merged/tmp/made-inside")" = from-container ] ||
        fail "file written in the container is not in the host rootfs $merged"
    podman rm -f -t 0 "$name" >/dev/null
}

@test "podman run returns the container exit code (42)" {
    run --separate-stderr prun run --rm "$IMAGE" sh -c 'exit 42'
    assert_status 42
}

@test "podman run -it under a pty: output arrives, stdin is a tty" {
    podman_argv
    run in_pty "${PODMAN_ARGV[@]}" run --rm -it ${CLEARBOX_ISOLATION:+--annotation io.clearbox.isolation=$CLEARBOX_ISOLATION} \
        "$IMAGE" sh -c 'test -t 0 && test -t 1 && echo pty-ok; tty'
    assert_status 0
    local out
    out="$(clean_output)"
    [[ "$out" == *pty-ok* ]] || fail "no pty-ok in: $out"
    [[ "$out" == */dev/pts/* ]] || fail "tty not a pts: $out"
}

@test "podman run -it: input typed on the pty reaches the container" {
    podman_argv
    run in_pty_input 'echo typed-$((6*7))\nexit 5\n' "${PODMAN_ARGV[@]}" run --rm -it \
        ${CLEARBOX_ISOLATION:+--annotation io.clearbox.isolation=$CLEARBOX_ISOLATION} "$IMAGE" sh
    assert_status 5
    [[ "$output" == *typed-42* ]] || fail "typed command output missing: $output"
}

@test "podman run -d, exec, exec -it, stop, rm" {
    local name=e2e-detached
    run --separate-stderr prun run -d --name "$name" "$IMAGE" \
        sh -c 'trap "exit 0" TERM; while :; do sleep 0.1; done'
    assert_status 0
    run --separate-stderr podman exec "$name" sh -c 'echo exec-out; exit 3'
    assert_status 3
    [ "$output" = "exec-out" ] || fail "exec output: $output"
    podman_argv
    run in_pty "${PODMAN_ARGV[@]}" exec -it "$name" sh -c 'test -t 0 && echo exec-pty-ok'
    assert_status 0
    [[ "$(clean_output)" == *exec-pty-ok* ]] || fail "exec -it output: $output"
    run --separate-stderr podman stop -t 10 "$name"
    assert_status 0
    run --separate-stderr podman inspect "$name" --format '{{.State.Status}} {{.State.ExitCode}}'
    assert_status 0
    [ "$output" = "exited 0" ] || fail "after stop (TERM handler exits 0): $output"
    run --separate-stderr podman rm "$name"
    assert_status 0
    run --separate-stderr podman container exists "$name"
    [ "$status" -ne 0 ] || fail "container still exists after rm"
}

@test "podman top lists the container's processes (vm: the guest's), never an empty table" {
    local name=e2e-top
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr podman exec -d "$name" sleep 2000
    assert_status 0
    # Default descriptors (psgo reads /proc through the container's pid), then ps(1) options
    # (podman runs ps in the container).
    for args in "" "-ef"; do
        # shellcheck disable=SC2086 # the descriptors are words
        run --separate-stderr podman top "$name" $args
        assert_status 0
        [[ "$output" == *"sleep 1000"* ]] || fail "podman top $args: no init in: $output / $stderr"
        [[ "$output" == *"sleep 2000"* ]] || fail "podman top $args: no exec'd process in: $output"
    done
    run --separate-stderr podman rm -f -t 0 "$name"
    assert_status 0
}

@test "podman pause / unpause" {
    local name=e2e-pause
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr podman pause "$name"
    assert_status 0
    run --separate-stderr podman inspect "$name" --format '{{.State.Status}}'
    [ "$output" = "paused" ] || fail "after pause: $output"
    run --separate-stderr podman unpause "$name"
    assert_status 0
    run --separate-stderr podman inspect "$name" --format '{{.State.Status}}'
    [ "$output" = "running" ] || fail "after unpause: $output"
    run --separate-stderr podman exec "$name" true
    assert_status 0
    run --separate-stderr podman rm -f -t 0 "$name"
    assert_status 0
}

@test "podman kill: container dies and the exit status is reported" {
    local name=e2e-kill
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr podman kill "$name"
    assert_status 0
    run --separate-stderr podman wait "$name"
    assert_status 0
    [ "$output" = "137" ] || fail "podman wait: $output"
    run --separate-stderr podman inspect "$name" --format '{{.State.Status}} {{.State.ExitCode}}'
    [ "$output" = "exited 137" ] || fail "inspect after kill: $output"
    run --separate-stderr podman rm "$name"
    assert_status 0
}

@test "podman -e, -u 1000, -w are honoured" {
    run --separate-stderr prun run --rm -e FOO=bar-baz -u 1000 -w /tmp "$IMAGE" \
        sh -c 'echo "$FOO $(id -u) $(id -g) $(pwd)"'
    assert_status 0
    [ "$output" = "bar-baz 1000 1000 /tmp" ] || fail "got: $output"
    run --separate-stderr prun run --rm -u nobody "$IMAGE" id -u
    assert_status 0
    [ "$output" = "65534" ] || fail "nobody uid: $output"
}

@test "podman -v hostdir:/data is readable and writable" {
    local d="$BATS_TEST_TMPDIR/vol"
    mkdir -p "$d"
    echo from-host >"$d/in"
    run --separate-stderr prun run --rm -v "$d:/data" "$IMAGE" \
        sh -c 'cat /data/in && echo from-container >/data/out'
    assert_status 0
    [ "$output" = "from-host" ] || fail "read: $output"
    [ "$(cat "$d/out")" = "from-container" ] || fail "write did not reach the host"
}

@test "host changes to a volume and to the rootfs (podman cp) show in a running container" {
    # vm: the guest keeps file pages across opens and revalidates them by attributes at each
    # open (guest/kernel/patches/0002-*): a change on the host must still show at the next open.
    local d="$BATS_TEST_TMPDIR/cvol" name=e2e-coherent
    mkdir -p "$d"
    echo version-1 >"$d/f"
    echo version-1 >"$d/same-mtime"
    run --separate-stderr prun run -d --name "$name" -v "$d:/data" "$IMAGE" sleep 1000
    assert_status 0
    run --separate-stderr podman exec "$name" sh -c \
        'echo rootfs-1 >/etc/e2e-file; cat /data/f /data/same-mtime /etc/e2e-file'
    assert_status 0
    [ "$output" = $'version-1\nversion-1\nrootfs-1' ] || fail "first read: $output"
    # Same size, new content; and a rewrite whose mtime is put back (as cp -p or rsync -t do).
    echo version-2 >"$d/f"
    touch -r "$d/same-mtime" "$d/ref"
    echo version-2 >"$d/same-mtime"
    touch -r "$d/ref" "$d/same-mtime"
    echo rootfs-2 >"$BATS_TEST_TMPDIR/e2e-file"
    run --separate-stderr podman cp "$BATS_TEST_TMPDIR/e2e-file" "$name:/etc/e2e-file"
    assert_status 0
    # podman cp replaces the file (a new inode): virtio-fs caches a name for up to 1 s.
    if expect_vm; then sleep 1; fi
    run --separate-stderr podman exec "$name" sh -c 'cat /data/f /data/same-mtime /etc/e2e-file'
    assert_status 0
    [ "$output" = $'version-2\nversion-2\nrootfs-2' ] || fail "after the host's changes: $output"
    podman rm -f -t 0 "$name" >/dev/null
}

@test "podman -v hostdir:/data:ro cannot be written (vm: not even --privileged, after a remount)" {
    local d="$BATS_TEST_TMPDIR/rovol"
    mkdir -p "$d"
    echo original >"$d/f"
    run --separate-stderr prun run --rm -v "$d:/data:ro" "$IMAGE" \
        sh -c 'cat /data/f; echo x >/data/f || echo refused-volume'
    assert_status 0
    [ "$output" = $'original\nrefused-volume' ] || fail "output: '$output' stderr: $stderr"
    [ "$(cat "$d/f")" = original ] || fail "the read-only volume was written"
    if expect_vm; then
        # A privileged guest can remount it read-write; the host still refuses the writes.
        run --separate-stderr prun run --rm --privileged -v "$d:/data:ro" "$IMAGE" \
            sh -c 'mount -o remount,rw /data && echo remounted; echo x >/data/f || echo refused-volume'
        assert_status 0
        [ "$output" = $'remounted\nrefused-volume' ] || fail "output: '$output' stderr: $stderr"
        [ "$(cat "$d/f")" = original ] || fail "the read-only volume was written"
    fi
}

@test "podman stats: a VM container's cgroup holds the VM (its memory, its limit)" {
    expect_vm || skip "isolation is not vm"
    local name=e2e-stats
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    local cid limit
    cid=$(podman inspect -f '{{.Id}}' "$name")
    # cgroupfs, hybrid or v1: podman's cgroupsPath is /libpod_parent/libpod-ID.
    limit=$(cat "/sys/fs/cgroup/memory/libpod_parent/libpod-$cid/memory.limit_in_bytes" 2>/dev/null ||
        cat "/sys/fs/cgroup/libpod_parent/libpod-$cid/memory.max") || fail "no memory cgroup for $cid"
    run --separate-stderr podman stats --no-stream --format '{{.MemUsage}}' "$name"
    assert_status 0
    echo "podman stats: $output (cgroup limit $limit)" >&3
    assert_vm_mem_usage "$output" "$limit"
    # Every process of the VM (shim, QEMU, daemons) is in the container's cgroup in every
    # controller hierarchy, not only memory's (the shim joins by moving its one thread).
    local procs p line n=0 v2only=0
    [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] && v2only=1
    procs=$(cat "/sys/fs/cgroup/memory/libpod_parent/libpod-$cid/cgroup.procs" 2>/dev/null ||
        cat "/sys/fs/cgroup/libpod_parent/libpod-$cid/cgroup.procs")
    for p in $procs; do
        while IFS= read -r line; do
            # A hybrid host's v2 hierarchy holds no controllers: the runtime uses v1 there.
            case "$line" in *name=systemd:*) continue ;; 0::*) [ "$v2only" = 1 ] || continue ;; esac
            [[ "$line" == *"/libpod-$cid" ]] || fail "pid $p ($(cat /proc/$p/comm)) outside the container's cgroup: $line"
        done <"/proc/$p/cgroup"
        n=$((n + 1))
    done
    [ "$n" -ge 3 ] || fail "only $n processes in the container's cgroup: $procs"
    podman rm -f -t 0 "$name" >/dev/null
}

@test "podman run --rm leaves no container, state, mount or cgroup behind" {
    local cid d
    run --separate-stderr prun run --rm --name e2e-gone --cidfile "$BATS_TEST_TMPDIR/cid" "$IMAGE" true
    assert_status 0
    cid=$(cat "$BATS_TEST_TMPDIR/cid")
    [ "${#cid}" -eq 64 ] || fail "bad cidfile: $cid"
    run --separate-stderr podman ps -a --format '{{.Names}}'
    assert_status 0
    [[ "$output" != *e2e-gone* ]] || fail "container left: $output"
    # podman passes no --root, so the runtime uses its default state dir.
    for d in /run/clearbox /run/runc /run/crun; do
        [ ! -e "$d/$cid" ] || fail "runtime state left: $d/$cid"
    done
    ! grep -F "$cid" /proc/self/mountinfo || fail "mount left for $cid"
    [ -z "$(find /sys/fs/cgroup/ -maxdepth 4 -type d -name "*$cid*" 2>/dev/null)" ] ||
        fail "cgroup left: $(find /sys/fs/cgroup/ -maxdepth 4 -type d -name "*$cid*")"
    [ -z "$(procs_naming "$cid")" ] || fail "process left: $(procs_naming "$cid")"
}

@test "podman exec of a missing binary exits 127, of a non-executable one 126; run likewise" {
    local name=e2e-execcodes
    run --separate-stderr prun run -d --name "$name" "$IMAGE" sleep 1000
    assert_status 0
    run -127 --separate-stderr podman exec "$name" /no/such/binary
    assert_status 127
    run -127 --separate-stderr podman exec "$name" no-such-command
    assert_status 127
    run --separate-stderr podman exec "$name" /etc/passwd
    assert_status 126
    run --separate-stderr podman rm -f -t 0 "$name"
    assert_status 0
    run -127 --separate-stderr prun run --rm "$IMAGE" /no/such/binary
    assert_status 127
    run --separate-stderr prun run --rm "$IMAGE" /etc/passwd
    assert_status 126
}
