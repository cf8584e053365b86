# Shared helpers for the clearbox end-to-end suites (bats).
#
# Environment (all optional except that a runtime must be found):
#   RUNTIME        path of the runc-compatible runtime under test
#                  (default: $REPO/target/release/clearbox; no fallback)
#   RUNTIME_NAME   display name (default: basename of RUNTIME)
#   ISOLATION      vm | namespaces | fly, for runtimes named *clearbox* only:
#                  direct calls: global `--isolation X` (+ CLEARBOX_ISOLATION);
#                  Docker: daemon.json runtimeArgs ["--isolation", X];
#                  podman: conmon_env_vars CLEARBOX_ISOLATION=X (reaches only
#                    create/exec — podman runs start/kill/pause/delete with a
#                    scrubbed env) + annotation io.clearbox.isolation=X;
#                  containerd: CLEARBOX_ISOLATION in the private containerd's
#                    env (inherited by shim + runtime) + annotation
#                    io.clearbox.isolation=X.
#   RUNTIME_ARGS   extra global flags for direct runtime calls (word-split)
#   E2E_WORKDIR    cache + scratch dir (default /var/tmp/clearbox-e2e)
#   E2E_TIMEOUT    per-command timeout in seconds (default 60)
#   TEMPLATES      on|off: clearbox restores every VM from a VM template (on) or
#                  boots it cold (off), through a wrapper runtime that sets
#                  CLEARBOX_TEMPLATE (reaches the runtime under every engine);
#                  default: clearbox's default (templates where the host supports
#                  them, else a cold boot)

# Also sourced by bench/cli-run.sh (outside bats) for write_config/IMAGE_DIR.
if declare -F bats_require_minimum_version >/dev/null; then
    bats_require_minimum_version 1.5.0
fi

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
E2E_WORKDIR="${E2E_WORKDIR:-/var/tmp/clearbox-e2e}"
E2E_TIMEOUT="${E2E_TIMEOUT:-60}"
# shellcheck disable=SC2034 # used by the suites and bench/cli-run.sh
IMAGE="localhost/clearbox-test:latest"
IMAGE_DIR="$E2E_WORKDIR/image"
export E2E_WORKDIR

# --- runtime selection ------------------------------------------------------

if [ -z "${RUNTIME:-}" ] && [ -x "$REPO/target/release/clearbox" ]; then
    RUNTIME="$REPO/target/release/clearbox"
fi
RUNTIME="${RUNTIME:-}"
if [ -n "$RUNTIME" ] && [ "${RUNTIME#/}" = "$RUNTIME" ]; then
    # podman/docker/containerd need an absolute path.
    RUNTIME="$(command -v "$RUNTIME" || echo "$RUNTIME")"
fi
RUNTIME_NAME="${RUNTIME_NAME:-$(basename "${RUNTIME:-none}")}"
# (Not when RUNTIME already is that wrapper: helpers.bash is sourced again per test file.)
if [ -n "${TEMPLATES:-}" ] && [ -n "$RUNTIME" ] && [ -x "$RUNTIME" ] &&
    [ "$RUNTIME" != "$E2E_WORKDIR/clearbox-templates-$TEMPLATES" ]; then
    mkdir -p "$E2E_WORKDIR"
    _w="$E2E_WORKDIR/clearbox-templates-$TEMPLATES"
    printf '#!/bin/sh\nCLEARBOX_TEMPLATE=%q exec %q "$@"\n' "$TEMPLATES" "$RUNTIME" >"$_w.$$"
    chmod 0755 "$_w.$$" && mv "$_w.$$" "$_w"
    RUNTIME="$_w"
fi
# The shim and the daemons the suites start (containerd, dockerd) inherit it too.
[ -z "${TEMPLATES:-}" ] || export CLEARBOX_TEMPLATE="$TEMPLATES"

is_clearbox() { [[ "$RUNTIME_NAME" == *clearbox* ]]; }

# Global flags for direct runtime invocations (and Docker runtimeArgs).
RUNTIME_GLOBAL_ARGS=()
if [ -n "${RUNTIME_ARGS:-}" ]; then
    read -r -a RUNTIME_GLOBAL_ARGS <<<"$RUNTIME_ARGS"
fi
if [ -n "${ISOLATION:-}" ] && is_clearbox; then
    RUNTIME_GLOBAL_ARGS+=(--isolation "$ISOLATION")
    export CLEARBOX_ISOLATION="$ISOLATION"
fi

# Called at the top of every setup/setup_file: fail loudly, never skip.
require_runtime() {
    if [ -z "$RUNTIME" ]; then
        echo "no runtime: set RUNTIME=/path/to/runtime or build $REPO/target/release/clearbox" >&2
        return 1
    fi
    if [ ! -x "$RUNTIME" ]; then
        echo "RUNTIME=$RUNTIME is not an executable file" >&2
        return 1
    fi
}

require_image() {
    "$E2E_DIR/build-image.sh" >/dev/null || {
        echo "build-image.sh failed" >&2
        return 1
    }
}

# Bounded command: a hung runtime fails the test instead of hanging the run.
t() { timeout -k 5 "$E2E_TIMEOUT" "$@"; }

# Run a command under a real pseudo-terminal (tests/e2e/pty-run.py).
# Output is the terminal transcript (CRLF line endings). in_pty_input TEXT ARGV
# types TEXT (\n escapes allowed) into the terminal first.
in_pty() {
    python3 "$E2E_DIR/pty-run.py" --timeout "$E2E_TIMEOUT" -- "$@" </dev/null
}
in_pty_input() {
    local text="$1"
    shift
    python3 "$E2E_DIR/pty-run.py" --input "$text" --timeout "$E2E_TIMEOUT" -- "$@" </dev/null
}

# Remove (empty) parent cgroups an engine created, e.g. libpod_parent, docker,
# <containerd namespace>, in every v1 hierarchy and the v2 mount.
rmdir_cgroup_parents() {
    local name cg
    for name in "$@"; do
        for cg in /sys/fs/cgroup/*/"$name" /sys/fs/cgroup/unified/"$name"; do
            [ -d "$cg" ] || continue
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
    return 0
}

# procs_naming STRING — "pid cmdline" of live (non-zombie) processes whose
# command line contains STRING, excluding this shell.
procs_naming() {
    local needle="$1" p stat args
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        [ "${p#/proc/}" = "$BASHPID" ] && continue
        read -r stat <"$p/stat" 2>/dev/null || continue
        stat="${stat##*) }"
        [ "${stat:0:1}" = "Z" ] && continue
        mapfile -d '' -t _argv <"$p/cmdline" 2>/dev/null || continue
        args="${_argv[*]}"
        [[ "$args" == *"$needle"* ]] && echo "${p#/proc/} ${args:0:200}"
    done
    return 0
}

# --- assertions (no bats-assert dependency) ---------------------------------

fail() {
    echo "FAIL: $*" >&2
    return 1
}

# assert_status EXPECTED — uses $status/$output/$stderr from `run`.
assert_status() {
    if [ "$status" -ne "$1" ]; then
        echo "expected exit status $1, got $status" >&2
        echo "--- stdout:" >&2
        printf '%s\n' "$output" >&2
        echo "--- stderr:" >&2
        printf '%s\n' "${stderr:-}" >&2
        return 1
    fi
}

assert_output_contains() {
    if [[ "$output" != *"$1"* ]]; then
        echo "expected output to contain '$1'; output was:" >&2
        printf '%s\n' "$output" >&2
        echo "--- stderr:" >&2
        printf '%s\n' "${stderr:-}" >&2
        return 1
    fi
}

# Output with CR and NUL stripped (pty transcripts).
clean_output() { printf '%s' "$output" | tr -d '\r\000'; }

# Failure contract for bad input: non-zero exit, a one-line message on stderr.
# Requires `run --separate-stderr`.
assert_clean_error() {
    if [ "$status" -eq 0 ]; then
        echo "expected a non-zero exit, got 0; stdout: $output; stderr: ${stderr:-}" >&2
        return 1
    fi
    if [ "$status" -ge 124 ] && [ "$status" -le 137 ] && [ "$status" -ne 125 ] && [ "$status" -ne 126 ] && [ "$status" -ne 127 ]; then
        echo "runtime timed out or was killed (status $status)" >&2
        return 1
    fi
    local lines
    lines=$(printf '%s\n' "${stderr:-}" | grep -c '[^[:space:]]' || true)
    if [ "$lines" -eq 0 ]; then
        echo "expected an error message on stderr, got nothing (status $status)" >&2
        return 1
    fi
    if [ "$lines" -ne 1 ]; then
        echo "expected a one-line error on stderr, got $lines lines:" >&2
        printf '%s\n' "$stderr" >&2
        return 1
    fi
}

# --- direct runtime driving (bad-input / lifecycle) -------------------------

# Per-test scratch: RT_ROOT (runtime --root) and bundles under BATS_TEST_TMPDIR.
setup_direct() {
    require_runtime || return 1
    require_image || return 1
    RT_ROOT="$BATS_TEST_TMPDIR/rt-root"
    mkdir -p "$RT_ROOT"
    CREATED_IDS=()
    snapshot_host
}

# rt ARGS... — the runtime with the test's --root and global flags.
rt() { t "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" "$@"; }

# Unique container id for this test.
new_id() { echo "e2e-${BATS_SUITE_TEST_NUMBER:-0}-$$-${1:-c}"; }

# make_bundle DIR [ARGS...] — OCI bundle with a copy of the test rootfs,
# running ARGS (default: sh). No terminal, writable rootfs, own cgroup
# path /<id> is left to the runtime default.
make_bundle() {
    local dir="$1"
    shift
    [ "$#" -gt 0 ] || set -- sh
    mkdir -p "$dir"
    cp -a "$IMAGE_DIR/rootfs" "$dir/rootfs"
    local args
    args=$(printf '%s\n' "$@" | jq -R . | jq -s -c .)
    write_config "$dir" "$args"
}

# Snapshot of the host state assert_nothing_left compares against.
snapshot_host() {
    ls /sys/class/net >"$BATS_TEST_TMPDIR/netdevs.before" 2>/dev/null || true
}

# Minimal runtime-spec config (same shape as `runc spec`).
write_config() {
    local dir="$1" args="$2"
    jq -n --argjson args "$args" '{
      ociVersion: "1.0.2",
      process: {
        terminal: false,
        user: {uid: 0, gid: 0},
        args: $args,
        env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        cwd: "/",
        capabilities: {
          bounding: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
          effective: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
          permitted: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
          ambient: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        },
        rlimits: [{type: "RLIMIT_NOFILE", hard: 1024, soft: 1024}],
        noNewPrivileges: true
      },
      root: {path: "rootfs", readonly: false},
      hostname: "clearbox-e2e",
      mounts: [
        {destination: "/proc", type: "proc", source: "proc"},
        {destination: "/dev", type: "tmpfs", source: "tmpfs",
         options: ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {destination: "/dev/pts", type: "devpts", source: "devpts",
         options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {destination: "/dev/shm", type: "tmpfs", source: "shm",
         options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {destination: "/sys", type: "sysfs", source: "sysfs",
         options: ["nosuid", "noexec", "nodev", "ro"]}
      ],
      linux: {
        resources: {devices: [{allow: false, access: "rwm"}]},
        namespaces: [{type: "pid"}, {type: "network"}, {type: "ipc"},
                     {type: "uts"}, {type: "mount"}],
        maskedPaths: ["/proc/acpi", "/proc/kcore", "/proc/keys",
                      "/proc/latency_stats", "/proc/timer_list",
                      "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                        "/proc/sysrq-trigger"]
      }
    }' >"$dir/config.json"
}

# edit_config DIR [JQ-ARGS...] FILTER — edit config.json in place with jq.
edit_config() {
    local dir="$1"
    shift
    jq "$@" "$dir/config.json" >"$dir/config.json.new" && mv "$dir/config.json.new" "$dir/config.json"
}

# Remember an id so teardown_direct force-deletes it.
track() { CREATED_IDS+=("$1"); }

# Poll until CMD succeeds (max ~5 s).
wait_for() {
    local _
    for _ in $(seq 50); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

# rt_detached ARGS... — like `run --separate-stderr rt ARGS...`, for commands
# that leave a container process holding the runtime's stdio (create,
# run --detach, exec --detach): the container's stdin/stdout go to /dev/null so
# the capture does not wait for the container to exit. Sets status/stderr/output.
rt_detached() {
    local errf="$BATS_TEST_TMPDIR/rt-detached.err"
    status=0
    rt "$@" </dev/null >/dev/null 2>"$errf" || status=$?
    stderr="$(cat "$errf")"
    output=""
}

# status of ID from `state` (empty if unknown).
rt_status() { rt state "$1" 2>/dev/null | jq -r .status 2>/dev/null; }

teardown_direct() {
    local id
    for id in "${CREATED_IDS[@]}"; do
        timeout -k 2 10 "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" \
            delete --force "$id" >/dev/null 2>&1 || true
    done
}

# assert_nothing_left ID [BUNDLE] — the runtime left no trace of ID:
#  * no entry for ID under --root (RT_ROOT), also catching path escapes ("../x")
#  * no live process whose root is the bundle rootfs, whose cwd is the bundle
#    or its rootfs, or whose command line names the bundle or the id
#  * no mount referencing the bundle or the id's state dir (/proc/self/mountinfo)
#  * no cgroup directory named ID under /sys/fs/cgroup/*/ or .../unified
#  * no files besides config.json/rootfs at the bundle's top level, no socket
#    anywhere in the bundle
#  * no file named after the id in /tmp, /run, /var/run, /dev/shm (depth 2)
#  * no network device created since setup that looks like the runtime's
#    (tap*, *clearbox*, cb-*, or naming the id)
assert_nothing_left() {
    local id="$1" bundle="${2:-}" problems=() p args stat line

    if [ -n "$id" ]; then
        if [ -e "$RT_ROOT/$id" ] || [ -L "$RT_ROOT/$id" ]; then
            problems+=("state entry $RT_ROOT/$id exists")
        fi
    fi
    # Everything under RT_ROOT must belong to other (tracked) ids.
    if [ -d "$RT_ROOT" ]; then
        local e name known
        for e in "$RT_ROOT"/* "$RT_ROOT"/.[!.]*; do
            [ -e "$e" ] || [ -L "$e" ] || continue
            name="$(basename "$e")"
            known=0
            for p in "${CREATED_IDS[@]}"; do
                if [ "$p" = "$name" ] && [ "$p" != "$id" ]; then known=1; fi
            done
            # runc keeps no per-root files besides container dirs; tolerate lock files
            # named *.lock only if the runtime documents them (none today).
            [ "$known" -eq 1 ] || problems+=("unexpected entry in --root: $name")
        done
    fi

    for p in /proc/[0-9]*; do
        [ -r "$p/stat" ] || continue
        read -r stat <"$p/stat" 2>/dev/null || continue
        stat="${stat##*) }"
        [ "${stat:0:1}" = "Z" ] && continue
        [ "${p#/proc/}" = "$$" ] && continue
        [ "${p#/proc/}" = "$BASHPID" ] && continue
        if [ -n "$bundle" ]; then
            if [ "$p/root" -ef "$bundle/rootfs" ] 2>/dev/null; then
                problems+=("process ${p#/proc/} has its root in the bundle")
                continue
            fi
            if [ "$p/cwd" -ef "$bundle" ] 2>/dev/null || [ "$p/cwd" -ef "$bundle/rootfs" ] 2>/dev/null; then
                problems+=("process ${p#/proc/} has its cwd in the bundle")
                continue
            fi
        fi
        args=""
        mapfile -d '' -t _argv <"$p/cmdline" 2>/dev/null || continue
        args="${_argv[*]}"
        [ -n "$args" ] || continue
        if [ -n "$bundle" ] && [[ "$args" == *"$bundle"* ]]; then
            problems+=("process ${p#/proc/} names the bundle: $args")
        elif [ "${#id}" -ge 8 ] && [[ "$args" == *"$id"* ]] && [[ "$args" != *bats* ]]; then
            problems+=("process ${p#/proc/} names the id: ${args:0:200}")
        fi
    done

    while IFS= read -r line; do
        if [ -n "$bundle" ] && [[ "$line" == *"$bundle"* ]]; then
            problems+=("mount left: $line")
        elif [ -n "$id" ] && [[ "$line" == *"$RT_ROOT/$id"* ]]; then
            problems+=("mount left: $line")
        fi
    done </proc/self/mountinfo

    if [ -n "$id" ] && [ "${#id}" -lt 256 ]; then
        local base cg
        base="$(basename -- "$id")"
        for cg in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do
            [ -d "$cg" ] || continue
            while IFS= read -r line; do
                [ -n "$line" ] && problems+=("cgroup left: $line")
            done < <(find "$cg" -maxdepth 4 -type d \( -name "$base" -o -name "*$base.scope" \) 2>/dev/null)
        done
    fi

    if [ -n "$bundle" ] && [ -d "$bundle" ]; then
        for p in "$bundle"/* "$bundle"/.[!.]*; do
            [ -e "$p" ] || [ -L "$p" ] || continue
            case "$(basename "$p")" in
                config.json | rootfs) ;;
                *) problems+=("file left in bundle: $p") ;;
            esac
        done
        while IFS= read -r line; do
            problems+=("socket left in bundle: $line")
        done < <(find "$bundle" -xdev -type s 2>/dev/null)
    fi

    if [ "${#id}" -ge 8 ] && [ "${#id}" -lt 256 ]; then
        while IFS= read -r line; do
            [[ "$line" == "$BATS_TEST_TMPDIR"* ]] && continue
            [[ "$line" == "${BATS_RUN_TMPDIR:-/nonexistent}"* ]] && continue
            problems+=("file named after the id: $line")
        done < <(find /tmp /run /var/run /dev/shm -maxdepth 2 -name "*$id*" 2>/dev/null)
    fi

    if [ -f "$BATS_TEST_TMPDIR/netdevs.before" ]; then
        local dev
        for dev in /sys/class/net/*; do
            dev="${dev##*/}"
            [ "$dev" = "*" ] && continue
            grep -qx -- "$dev" "$BATS_TEST_TMPDIR/netdevs.before" && continue
            case "$dev" in
                tap* | *clearbox* | cb-* | cbx*) problems+=("network device left: $dev") ;;
                *) [ -n "$id" ] && [[ "$dev" == *"${id:0:8}"* ]] && problems+=("network device left: $dev") ;;
            esac
        done
    fi

    if [ "${#problems[@]}" -gt 0 ]; then
        echo "runtime left traces of '${id:0:64}':" >&2
        printf '  %s\n' "${problems[@]}" >&2
        return 1
    fi
}

# --- VM isolation -----------------------------------------------------------

# True when containers of this run go into VMs: a clearbox runtime with
# ISOLATION=vm or unset (vm is clearbox's default).
expect_vm() {
    is_clearbox && { [ -z "${ISOLATION:-}" ] || [ "$ISOLATION" = vm ]; }
}

# Fails unless $1 (a `uname -r` printed inside a container) is clearbox's
# guest kernel: different from the host's, equal to the guest kernel's
# release recorded by scripts/build-guest-kernel.sh when available.
assert_guest_kernel() {
    local inside="$1" host
    host="$(uname -r)"
    [ -n "$inside" ] || fail "no kernel release printed in the container"
    [ "$inside" != "$host" ] || fail "container runs on the host kernel $host, not in a VM"
    local rel
    rel="$(cat /var/cache/clearbox/kernel/*/kernelrelease 2>/dev/null | head -n 1 || true)"
    if [ -n "$rel" ] && ! grep -qxF "$inside" /var/cache/clearbox/kernel/*/kernelrelease; then
        fail "container kernel $inside is not a clearbox guest kernel ($rel)"
    fi
}

# vm_base ID — the host directory of ID's VM (sockets, share), from its record;
# empty when the container has none (not vm, or already deleted).
vm_base() {
    jq -r '.base // empty' "$RT_ROOT/$1/vm-box.json" 2>/dev/null || true
}

# assert_no_vm_processes BASE... — no VM process (QEMU, vhost-device-vsock,
# virtiofsd, clearbox shim) of these VMs is left. Scoped to the test's own VMs
# (their base directories, from vm_base, and the test's --root), so VMs of
# other runs on the same machine do not count.
assert_no_vm_processes() {
    local left="" b pat="$RT_ROOT/"
    for b in "$@"; do
        [ -n "$b" ] && pat="$pat|$b/"
    done
    left="$(pgrep -a -f -- "$pat" | grep -E 'qemu-system|vhost-device-vsock|clearbox-vmux|virtiofsd|__vm-shim' || true)"
    [ -z "$left" ] || fail "VM processes left behind: $left"
}

# to_bytes SIZE — "75.5MB", "1.2GiB", "512kB", "0B" (podman's decimal or
# docker's binary units) in bytes, rounded down.
to_bytes() {
    awk -v s="$1" 'BEGIN {
        n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
        m["B"] = 1; m["kB"] = 1e3; m["KB"] = 1e3; m["MB"] = 1e6; m["GB"] = 1e9
        m["KiB"] = 1024; m["MiB"] = 1048576; m["GiB"] = 1073741824
        if (!(u in m)) { exit 1 }
        printf "%.0f\n", n * m[u]
    }'
}

# assert_vm_mem_usage "USED / LIMIT" [CGROUP_LIMIT_BYTES] — what `podman
# stats` / `docker stats` print for a VM container: the VM's own host cgroup,
# so tens of MiB used (QEMU with the guest's touched memory, virtiofsd, the
# vsock backend, the shim), and a limit of guest RAM + overhead, far below the
# host's memory. podman prints the spec's limit (none: the host's RAM), so its
# test passes the cgroup's own limit instead.
assert_vm_mem_usage() {
    local used limit
    used=$(to_bytes "$(awk -F' / ' '{print $1}' <<<"$1")") || fail "usage: $1"
    limit=${2:-$(to_bytes "$(awk -F' / ' '{print $2}' <<<"$1")")} || fail "limit: $1"
    (( used >= 10 * 1048576 )) || fail "memory usage $1: below 10 MiB, the VM is not in the container's cgroup"
    (( limit <= 4 * 1073741824 )) || fail "memory limit $1: not the VM's (guest RAM + overhead)"
    (( used <= limit )) || fail "memory usage $1 above its limit"
}

# --- images (image.bats, bench/image.sh) ------------------------------------

# start_registry DIR — Debian's docker-registry on a free 127.0.0.1 port, storage in DIR/registry,
# pid in DIR/registry.pid; sets REG=127.0.0.1:PORT.
start_registry() {
    local dir="$1" port i
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    REG="127.0.0.1:$port"
    cat >"$dir/registry.yml" <<EOR
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
  delete:
    enabled: true
http:
  addr: $REG
EOR
    setsid /usr/bin/docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    for i in $(seq 50); do
        curl -sf "http://$REG/v2/" >/dev/null && return 0
        sleep 0.1
    done
    echo "registry did not start: $(cat "$dir/registry.log")" >&2
    return 1
}

# write_image_config DIR — DIR/config.toml: the caller's clearbox config (e.g. a private [vm]
# initrd) plus an [image] section whose store, bundles, policy, trust and lookaside live in DIR;
# exports CLEARBOX_CONFIG. Needs REG.
write_image_config() {
    local dir="$1" base="${CLEARBOX_CONFIG:-/etc/clearbox/config.toml}"
    {
        [ -f "$base" ] && cat "$base"
        cat <<EOC

[image]
store = "$dir/store"
bundles = "$dir/bundles"
policy = "$dir/policy.json"
trust_dir = "$dir/trust"
lookaside = "file://$dir/sigstore"
insecure_registries = ["$REG"]
EOC
    } >"$dir/config.toml.new"
    mv "$dir/config.toml.new" "$dir/config.toml"
    export CLEARBOX_CONFIG="$dir/config.toml"
}

# containerd-shim-clearbox-v2 to test: $SHIM, else the one next to $RUNTIME (or in its
# release/ dir), else target/release, else PATH.
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

# --- a private containerd (containerd.bats, shim.bats, cri.bats) ------------------------
# Own root, state, sockets and opt dir under CTRD_DIR=$E2E_WORKDIR/PREFIX.XXXXXX, so nothing
# touches the machine's containerd. containerd passes its environment to its shims: PATH
# starts with $CTRD_DIR/bin (containerd finds a runtime v2 shim by its binary name there) and
# CLEARBOX_SHIM_ROOT=$CTRD_DIR/shim-root keeps containerd-shim-clearbox-v2's state private.
#
#   ctrd_prepare PREFIX [--shim] [--cri]   CTRD_DIR, bin/ (with --shim: the shim under test,
#                                          see find_shim) and config.toml (the CRI plugin
#                                          disabled unless --cri; append your own sections)
#   ctrd_start                             start it; wait until it answers
#   ctrd_stop                              SIGTERM, then SIGKILL after 5 s
#   ctrd_teardown NS [NEEDLE...]           kill and remove NS's tasks and containers, stop
#                                          containerd, kill (and report) processes naming
#                                          CTRD_DIR or a NEEDLE, unmount, remove CTRD_DIR
#                                          (CTRD_KEEP=1 keeps the *.log files); fails when
#                                          processes were left
ctrd_prepare() {
    local prefix="$1" shim="" cri=""
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --shim)
                shim="$(find_shim)" || {
                    echo "containerd-shim-clearbox-v2 not found (set SHIM= or build it next to $RUNTIME)" >&2
                    return 1
                }
                ;;
            --cri) cri=1 ;;
            *) echo "ctrd_prepare: unknown option $1" >&2; return 2 ;;
        esac
        shift
    done
    mkdir -p "$E2E_WORKDIR"
    CTRD_DIR="$(mktemp -d "$E2E_WORKDIR/$prefix.XXXXXX")"
    export CTRD_DIR
    mkdir -p "$CTRD_DIR/bin"
    [ -z "$shim" ] || ln -s "$shim" "$CTRD_DIR/bin/containerd-shim-clearbox-v2"
    {
        echo 'version = 2'
        echo "root = \"$CTRD_DIR/root\""
        echo "state = \"$CTRD_DIR/state\""
        [ -n "$cri" ] || echo 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
        cat <<EOC
[grpc]
  address = "$CTRD_DIR/containerd.sock"
[ttrpc]
  address = "$CTRD_DIR/containerd.sock.ttrpc"
[debug]
  address = "$CTRD_DIR/debug.sock"
  level = "${CTRD_DEBUG:-info}"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
EOC
    } >"$CTRD_DIR/config.toml"
}

ctrd_start() {
    PATH="$CTRD_DIR/bin:$PATH" CLEARBOX_SHIM_ROOT="$CTRD_DIR/shim-root" \
        setsid containerd --config "$CTRD_DIR/config.toml" \
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

ctrd_stop() {
    local pid i
    pid=$(cat "$CTRD_DIR/pid" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

ctrd_teardown() {
    [ -n "${CTRD_DIR:-}" ] && [ -d "$CTRD_DIR" ] || return 0
    local ns="$1" id i left needle
    shift
    local c=(command ctr --address "$CTRD_DIR/containerd.sock" --namespace "$ns")
    if "${c[@]}" version >/dev/null 2>&1; then
        for id in $("${c[@]}" task ls -q 2>/dev/null); do
            t "${c[@]}" task kill -s KILL "$id" >/dev/null 2>&1 || true
        done
        for id in $("${c[@]}" task ls -q 2>/dev/null); do
            for i in $(seq 20); do
                t "${c[@]}" task rm -f "$id" >/dev/null 2>&1 && break
                sleep 0.2
            done
        done
        for id in $("${c[@]}" container ls -q 2>/dev/null); do
            t "${c[@]}" container rm "$id" >/dev/null 2>&1 || true
        done
    fi
    ctrd_stop
    left="$(procs_naming "$CTRD_DIR"; for needle in "$@"; do procs_naming "$needle"; done)"
    if [ -n "$left" ]; then
        echo "leftover processes after containerd stop:" >&2
        echo "$left" >&2
        echo "$left" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
    fi
    grep -F " $CTRD_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if [ -n "${CTRD_KEEP:-}" ]; then
        find "$CTRD_DIR" -mindepth 1 -maxdepth 1 ! -name '*.log' ! -name logs -exec rm -rf {} +
        echo "# kept $CTRD_DIR" >&3
    else
        rm -rf "$CTRD_DIR"
    fi
    [ -z "$left" ]
}

# dockerd_start DIR — a private dockerd (DIR/daemon.json, its data and exec roots, pidfile and
# DOCKER_HOST socket under DIR) on a private containerd under DIR/containerd. Without
# --containerd, dockerd 20.10 takes /run/containerd/containerd.sock whenever that file exists,
# and a stale one (left by a containerd that died) makes it fail with "context deadline
# exceeded": the suites must not depend on the host's containerd. Fails with the log's tail.
dockerd_start() {
    local d="$1" c="$1/containerd" i
    mkdir -p "$c"
    cat >"$c/config.toml" <<EOC
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
EOC
    setsid containerd --config "$c/config.toml" </dev/null >"$c/containerd.log" 2>&1 &
    echo $! >"$c/pid"
    for i in $(seq 100); do
        command ctr --address "$c/containerd.sock" version >/dev/null 2>&1 && break
        kill -0 "$(cat "$c/pid")" 2>/dev/null || break
        sleep 0.1
    done
    command ctr --address "$c/containerd.sock" version >/dev/null 2>&1 || {
        echo "dockerd's containerd did not come up; log:" >&2
        tail -20 "$c/containerd.log" >&2
        return 1
    }
    setsid dockerd --config-file "$d/daemon.json" --containerd "$c/containerd.sock" \
        --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/dockerd.pid" -H "$DOCKER_HOST" \
        </dev/null >"$d/dockerd.log" 2>&1 &
    echo $! >"$d/dockerd.launch-pid"
    for i in $(seq 150); do
        "$DOCKER_CLI" version >/dev/null 2>&1 && break
        kill -0 "$(cat "$d/dockerd.launch-pid")" 2>/dev/null || break
        sleep 0.2
    done
    "$DOCKER_CLI" version >/dev/null 2>&1 || {
        echo "dockerd did not come up; log:" >&2
        tail -20 "$d/dockerd.log" >&2
        return 1
    }
}

# dockerd_stop DIR — stops dockerd_start's dockerd (SIGTERM, SIGKILL after 20 s), then its
# containerd (which takes the remaining shims' parent role: they exit with their tasks).
dockerd_stop() {
    local d="$1" pid i
    for pid in "$(cat "$d/dockerd.pid" 2>/dev/null || cat "$d/dockerd.launch-pid" 2>/dev/null)" \
        "$(cat "$d/containerd/pid" 2>/dev/null)"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
