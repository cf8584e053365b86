#!/usr/bin/env bats
# Kubernetes' CRI through containerd 1.6's CRI plugin, with a `clearbox` runtime handler, the
# CNI bridge plugin and a locally built pause image, driven by cri-client (our small CRI
# client: Debian 12 has no crictl or kubelet; crates/clearbox-cri-test).
#
# A private containerd (own root/state/sockets, CRI enabled, random stream port) runs for the
# whole file; the tests run one pod in order, as a kubelet would:
# RunPodSandbox -> two containers -> ExecSync, ContainerStats, logs -> a container killed
# inside the pod -> StopPodSandbox, RemovePodSandbox -> nothing left.
# With isolation vm the whole pod is one VM (checked); other runtimes/isolations run the same
# flow and skip the VM-only checks with a reason.

load helpers

# === The one place that picks the handler's shim ===========================================
# Default: containerd-shim-clearbox-v2 (io.containerd.clearbox.v2): one shim and one VM per
# pod, the shim's state under $CTRD_DIR/shim-root (CLEARBOX_SHIM_ROOT in containerd's env).
# CRI_RUNTIME_TYPE=io.containerd.runc.v2 runs the same flow through containerd's runc shim
# with the runtime under test as its runc binary (BinaryName; one VM per pod through
# clearbox's pod support on the runc command line), its state under $CTRD_DIR/rt-root.
# cri-runc.bats (a link to this file, in run.sh's default list) runs the runc-shim variant.
if [ "$(basename "$BATS_TEST_FILENAME")" = cri-runc.bats ]; then
    CRI_RUNTIME_TYPE="${CRI_RUNTIME_TYPE:-io.containerd.runc.v2}"
fi
CRI_RUNTIME_TYPE="${CRI_RUNTIME_TYPE:-io.containerd.clearbox.v2}"
# ============================================================================================

PAUSE_IMAGE="localhost/clearbox-pause:1"
# The pod's VM size, as containerd 1.7+ annotates it (1.6 passes them through pod_annotations).
POD_MEMORY=$((${CRI_POD_MIB:-256} * 1024 * 1024))

cri() { RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0 t "$CRI_CLIENT" --socket "$CTRD_DIR/containerd.sock" "$@"; }
kctr() { t ctr --address "$CTRD_DIR/containerd.sock" --namespace k8s.io "$@"; }

cri_v2() { [ "$CRI_RUNTIME_TYPE" = io.containerd.clearbox.v2 ]; }

# The state root of the pod's containers: the clearbox shim's root, or the runc root the runc
# shim passes to the runtime (Root/<containerd namespace>).
cri_root() {
    if cri_v2; then
        echo "$CTRD_DIR/shim-root/k8s.io"
    else
        echo "$CTRD_DIR/rt-root/k8s.io"
    fi
}

setup() {
    [ -z "${CRI_SKIP:-}" ] || skip "$CRI_SKIP"
}

setup_file() {
    require_runtime
    # Pods run with isolation vm (one VM per pod) and namespaces (the containers join the
    # sandbox's namespaces, as with runc). fly creates no namespaces, so it refuses pods with a
    # clear error (bad-input.bats checks it).
    if is_clearbox && [ "${ISOLATION:-}" = fly ]; then
        export CRI_SKIP="isolation fly runs no Kubernetes pods (refused: a pod's containers share namespaces, fly creates none)"
        return 0
    fi
    require_image
    CRI_CLIENT="$REPO/target/release/cri-client"
    [ -x "$CRI_CLIENT" ] || {
        echo "cri-client not built: cargo build --release -p clearbox-cri-test" >&2
        return 1
    }
    [ -x /usr/lib/cni/bridge ] || {
        echo "CNI plugins missing: apt-get install containernetworking-plugins" >&2
        return 1
    }
    export CRI_CLIENT
    echo "# cri: handler runtime_type $CRI_RUNTIME_TYPE" >&3
    CTRD_DEBUG="${CRI_DEBUG:-info}"
    if cri_v2; then
        ctrd_prepare cri --cri --shim
    else
        ctrd_prepare cri --cri
    fi
    # A bridge, subnet and host cgroup parent of this run's own (tests run in other processes:
    # they read these, never $$).
    CRI_BRIDGE="cbcri$(( $$ % 10000 ))"
    CRI_CG="clearbox-cri-$$"
    export CRI_BRIDGE CRI_CG
    mkdir -p "$CTRD_DIR/cni" "$CTRD_DIR/logs"
    cat >"$CTRD_DIR/cni/10-clearbox-cri.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "clearbox-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CRI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.$(( 100 + $$ % 100 )).$(( $$ / 100 % 250 )).0/24"}]],
        "dataDir": "$CTRD_DIR/ipam"
      }
    }
  ]
}
EOF
    cat >>"$CTRD_DIR/config.toml" <<EOF
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # CRI asks oom_score_adj -998 for every sandbox; lowering it needs CAP_SYS_RESOURCE, which
  # root lacks on some hosts (runc and isolation namespaces then fail the sandbox's create).
  # This caps the requests at containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CTRD_DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clearbox]
      runtime_type = "$CRI_RUNTIME_TYPE"
      pod_annotations = ["io.kubernetes.cri.sandbox-memory", "io.kubernetes.cri.sandbox-cpu-quota", "io.kubernetes.cri.sandbox-cpu-period", "io.kubernetes.cri.sandbox-cpu-shares"]
EOF
    cri_v2 || cat >>"$CTRD_DIR/config.toml" <<EOF
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clearbox.options]
        BinaryName = "$RUNTIME"
        Root = "$CTRD_DIR/rt-root"
EOF
    ctrd_start
    local i
    for i in $(seq 100); do
        "$CRI_CLIENT" --socket "$CTRD_DIR/containerd.sock" --timeout 2 version >/dev/null 2>&1 && break
        sleep 0.2
    done
    "$CRI_CLIENT" --socket "$CTRD_DIR/containerd.sock" --timeout 5 version >"$CTRD_DIR/version.json" || {
        echo "containerd's CRI plugin did not come up:" >&2
        tail -20 "$CTRD_DIR/containerd.log" >&2
        return 1
    }
    # The pause image: the test image (busybox) whose command sleeps forever, as pause would.
    # With clearbox's vm isolation it never runs (the sandbox runs nothing in its VM).
    cp -a "$IMAGE_DIR/oci-layout" "$CTRD_DIR/pause-layout"
    umoci config --image "$CTRD_DIR/pause-layout:latest" --tag pause \
        --clear=config.cmd --config.cmd /bin/sleep --config.cmd 2147483647 >/dev/null
    skopeo copy --quiet "oci:$CTRD_DIR/pause-layout:pause" \
        "oci-archive:$CTRD_DIR/pause.oci.tar:$PAUSE_IMAGE"
    kctr image import "$CTRD_DIR/pause.oci.tar" >/dev/null
    kctr image import "$IMAGE_DIR/clearbox-test.oci.tar" >/dev/null
    kctr image ls -q | grep -qx "$PAUSE_IMAGE" || {
        echo "pause image not imported: $(kctr image ls -q)" >&2
        return 1
    }
    # The pod of this file, shared by the tests in order.
    POD_NAME="cri-$$"
    export POD_NAME
}

teardown_file() {
    [ -n "${CTRD_DIR:-}" ] || return 0
    local id rc=0
    if [ -f "$CTRD_DIR/pod.id" ]; then
        id=$(cat "$CTRD_DIR/pod.id")
        "$CRI_CLIENT" --socket "$CTRD_DIR/containerd.sock" --timeout 60 stopp "$id" >/dev/null 2>&1 || true
        "$CRI_CLIENT" --socket "$CTRD_DIR/containerd.sock" --timeout 60 rmp "$id" >/dev/null 2>&1 || true
    fi
    # CRI_KEEP=1 keeps the logs (containerd.log, the pod's logs) for a post-mortem.
    CTRD_KEEP="${CRI_KEEP:-}" ctrd_teardown k8s.io || rc=$?
    ip link del "$CRI_BRIDGE" 2>/dev/null || true
    rmdir_cgroup_parents "$CRI_CG"
    return "$rc"
}

# Only the direct-CLI test sets RT_ROOT: force-delete what it created, pass or fail.
teardown() {
    if [ -n "${RT_ROOT:-}" ]; then
        teardown_direct
    fi
}

pod_id() { cat "$CTRD_DIR/pod.id"; }
ctr_id() { cat "$CTRD_DIR/$1.id"; }

# The host directory of a container's VM record (vm isolation).
vm_record() { cat "$(cri_root)/$1/vm-box.json" 2>/dev/null; }

# create_started NAME -- CMD... : CreateContainer + StartContainer in the pod; saves the id.
create_started() {
    local name="$1"
    shift
    [ "$1" = -- ] && shift
    run --separate-stderr cri create --pod "$(pod_id)" --pod-config "$CTRD_DIR/pod.json" \
        --name "$name" --image "$IMAGE" ${CRI_MEMORY:+--memory "$CRI_MEMORY"} -- "$@"
    assert_status 0
    echo "$output" >"$CTRD_DIR/$name.id"
    run --separate-stderr cri start "$output"
    assert_status 0
}

# wait_state ID STATE — ContainerStatus.state reaches STATE (0 created, 1 running, 2 exited).
wait_state() {
    local i s
    for i in $(seq 100); do
        s=$(cri status "$1" | jq -r .state)
        [ "$s" = "$2" ] && return 0
        sleep 0.2
    done
    fail "container $1 is in state $s, not $2"
    return 1
}

@test "cri: RunPodSandbox with the clearbox handler boots one VM sized from the pod's annotations" {
    run --separate-stderr cri runp --name "$POD_NAME" --runtime-handler clearbox \
        --log-dir "$CTRD_DIR/logs" --cgroup-parent "/$CRI_CG/pod" \
        --annotation "io.kubernetes.cri.sandbox-memory=$POD_MEMORY" \
        --save "$CTRD_DIR/pod.json"
    assert_status 0
    echo "$output" >"$CTRD_DIR/pod.id"
    run cri pod-status "$(pod_id)"
    assert_status 0
    [ "$(jq -r .state <<<"$output")" = 0 ] || fail "pod not ready: $output"
    [ -n "$(jq -r '.network.ip' <<<"$output")" ] || fail "pod has no IP from CNI: $output"
    expect_vm || skip "isolation is not vm: no pod VM to check"
    local rec run_dir qemu
    rec=$(vm_record "$(pod_id)") || fail "no VM record for the sandbox"
    [ "$(jq -r .pod <<<"$rec")" = Sandbox ] || fail "sandbox not recorded as one: $rec"
    run_dir=$(jq -r .vm_run_dir <<<"$rec")
    qemu=$(procs_naming "$run_dir/" | grep qemu-system || true)
    [ "$(wc -l <<<"$qemu")" = 1 ] && [ -n "$qemu" ] || fail "not exactly one QEMU for the pod: $qemu"
    # 256 MiB asked + 64 MiB of guest overhead.
    [[ "$qemu" == *"-m $(( POD_MEMORY / 1048576 + 64 ))"* ]] || fail "pod VM not sized from the annotation: $qemu"
}

@test "cri: two containers in the pod share one guest kernel and reach each other over localhost" {
    create_started web -- sh -c 'echo started-web; mkdir -p /www && echo hello-from-web >/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www'
    create_started client -- sh -c 'echo started-client; exec sleep 2147483647'
    wait_state "$(ctr_id web)" 1
    wait_state "$(ctr_id client)" 1
    local b1 b2
    run --separate-stderr cri exec "$(ctr_id web)" -- cat /proc/sys/kernel/random/boot_id
    assert_status 0
    b1=$output
    run --separate-stderr cri exec "$(ctr_id client)" -- cat /proc/sys/kernel/random/boot_id
    assert_status 0
    b2=$output
    [ -n "$b1" ] && [ "$b1" = "$b2" ] || fail "boot ids differ: '$b1' vs '$b2'"
    local i got=""
    for i in $(seq 30); do
        got=$(cri exec "$(ctr_id client)" -- wget -qO- http://127.0.0.1:8080/ 2>/dev/null) && break
        sleep 0.3
    done
    [ "$got" = hello-from-web ] || fail "client did not reach web over localhost: '$got'"
    if cri_v2; then
        # One shim for the pod: the containers' tasks have the sandbox's shim address.
        local tasks="$CTRD_DIR/state/io.containerd.runtime.v2.task/k8s.io" addr shims
        addr=$(cat "$tasks/$(pod_id)/address")
        for c in web client; do
            [ "$(cat "$tasks/$(ctr_id $c)/address")" = "$addr" ] || fail "$c has a shim of its own"
        done
        shims=$(procs_naming "-address $CTRD_DIR/containerd.sock" | grep -c containerd-shim-clearbox-v2 || true)
        [ "$shims" = 1 ] || fail "$shims shims for the pod, not 1"
    fi
    expect_vm || skip "isolation is not vm: the shared kernel is the host's"
    [ "$b1" != "$(cat /proc/sys/kernel/random/boot_id)" ] || fail "the pod runs on the host kernel"
    run --separate-stderr cri exec "$(ctr_id web)" -- uname -r
    assert_guest_kernel "$output"
    # Both joined the sandbox's VM: no VM of their own.
    local vm
    vm=$(vm_record "$(pod_id)" | jq -r .vm_run_dir)
    for c in web client; do
        [ "$(vm_record "$(ctr_id $c)" | jq -r .vm_run_dir)" = "$vm" ] || fail "$c is not in the pod's VM"
    done
    local qemus
    qemus=$(procs_naming "$vm/" | grep -c qemu-system || true)
    [ "$qemus" = 1 ] || fail "$qemus QEMUs for the pod, not 1"
}

@test "cri: ExecSync returns the command's output and exit code" {
    run --separate-stderr cri exec "$(ctr_id client)" -- sh -c 'echo out-line; echo err-line >&2; exit 3'
    assert_status 3
    [ "$output" = out-line ] || fail "stdout: '$output'"
    [ "$stderr" = err-line ] || fail "stderr: '$stderr'"
}

@test "cri: ContainerStats reports the container" {
    run --separate-stderr cri stats "$(ctr_id web)"
    assert_status 0
    [ "$(jq -r .attributes.id <<<"$output")" = "$(ctr_id web)" ] || fail "stats of another container: $output"
    [ "$(jq -r '.memory.working_set_bytes.value // 0' <<<"$output")" -gt 0 ] || fail "no memory usage: $output"
    [ "$(jq -r '.cpu.timestamp // 0' <<<"$output")" -gt 0 ] || fail "no cpu sample: $output"
}

@test "cri: the container's log file holds its output in the CRI format" {
    local log
    log=$(cri status "$(ctr_id web)" | jq -r .log_path)
    [ "$log" = "$CTRD_DIR/logs/web.log" ] || fail "log path: $log"
    grep -E '^[0-9TZ:.+-]+ stdout F started-web$' "$log" || fail "log: $(cat "$log")"
}

@test "cri: a container killed inside the pod reports its exit code" {
    create_started victim -- sh -c 'trap "exit 42" TERM; sleep 2147483647 & wait'
    wait_state "$(ctr_id victim)" 1
    # From inside the container: its init gets SIGTERM and exits 42.
    run --separate-stderr cri exec "$(ctr_id victim)" -- kill -TERM 1
    wait_state "$(ctr_id victim)" 2
    run cri status "$(ctr_id victim)"
    [ "$(jq -r .exit_code <<<"$output")" = 42 ] || fail "exit code: $output"
    # The pod lives on.
    run --separate-stderr cri exec "$(ctr_id client)" -- echo still-here
    assert_status 0
    [ "$output" = still-here ] || fail "pod gone with its container: $output"
    # Removing it takes it out of the guest and the export.
    run --separate-stderr cri rm "$(ctr_id victim)"
    assert_status 0
    if expect_vm; then
        local shared
        shared=$(vm_record "$(pod_id)" | jq -r .shared)
        [ ! -e "$shared/$(ctr_id victim)" ] || fail "victim's share left: $(ls "$shared")"
        ! grep -qF "$shared/$(ctr_id victim)" /proc/self/mountinfo || fail "victim's mounts left"
    fi
}

# cgroup_limits ID — "MEMORY_LIMIT CPU_QUOTA CPU_PERIOD" of the container's own cgroup, read
# from inside it: cgroup v2 files (memory.max, cpu.max) in a VM's guest, the v1 controllers'
# files where the container sees them (isolation namespaces on this hybrid host).
cgroup_limits() {
    cri exec "$1" -- sh -c '
        if [ -d /sys/fs/cgroup/memory ]; then
            echo "$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
        else
            d="/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)"
            echo "$(cat "$d/memory.max") $(cat "$d/cpu.max")"
        fi'
}

@test "cri: UpdateContainerResources changes the container's cgroup (in the guest with vm)" {
    local id
    id=$(ctr_id client)
    run --separate-stderr cgroup_limits "$id"
    assert_status 0
    [ "${output%% *}" != 67108864 ] || fail "the memory limit is already 64 MiB: $output"
    run --separate-stderr cri update "$id" --memory 67108864 --cpu-quota 50000 --cpu-period 100000
    assert_status 0
    run --separate-stderr cgroup_limits "$id"
    assert_status 0
    [ "$output" = "67108864 50000 100000" ] || fail "limits after the update: '$output' $stderr"
}

@test "cri: a container OOM-killed in the pod is reported OOMKilled (TaskOOM from its cgroup)" {
    cri_v2 || skip "the runc shim watches the container's host cgroup (its host shim only), not the guest's"
    # 32 MiB limit; dd's 64 MiB buffer is filled from /dev/zero: the cgroup's OOM killer ends it.
    CRI_MEMORY=33554432 create_started hog -- dd if=/dev/zero of=/dev/null bs=64M count=1
    wait_state "$(ctr_id hog)" 2
    local i st=""
    for i in $(seq 50); do
        st=$(cri status "$(ctr_id hog)")
        [ "$(jq -r .reason <<<"$st")" = OOMKilled ] && break
        sleep 0.2
    done
    [ "$(jq -r .reason <<<"$st")" = OOMKilled ] || fail "not OOMKilled: $st"
    [ "$(jq -r .exit_code <<<"$st")" = 137 ] || fail "exit code: $st"
    # The pod lives on.
    run --separate-stderr cri exec "$(ctr_id client)" -- echo still-here
    assert_status 0
    run --separate-stderr cri rm "$(ctr_id hog)"
    assert_status 0
}

@test "cri: StopPodSandbox and RemovePodSandbox leave nothing behind" {
    local rec="" base="" netns
    if expect_vm; then
        rec=$(vm_record "$(pod_id)")
        base=$(jq -r .base <<<"$rec")
    fi
    netns=$(jq -r '.linux.namespaces[] | select(.type == "network") | .path // empty' \
        "$(cri_root)/$(pod_id)/config.json" 2>/dev/null || true)
    local shim_sock=""
    if cri_v2; then
        shim_sock=$(cat "$CTRD_DIR/state/io.containerd.runtime.v2.task/k8s.io/$(pod_id)/address")
        shim_sock=${shim_sock#unix://}
        [ -S "$shim_sock" ] || fail "the pod's shim socket $shim_sock is not there"
    fi
    run --separate-stderr cri stopp "$(pod_id)"
    assert_status 0
    run --separate-stderr cri rmp "$(pod_id)"
    assert_status 0
    run cri pods
    [ "$(jq length <<<"$output")" = 0 ] || fail "pods left: $output"
    rm -f "$CTRD_DIR/pod.id"
    # Nothing under the runtime's root, no process, mount, tap or network namespace.
    [ -z "$(ls -A "$(cri_root)" 2>/dev/null)" ] || fail "state left: $(ls -A "$(cri_root)")"
    [ -z "$(procs_naming "$(cri_root)/")" ] || fail "processes left: $(procs_naming "$(cri_root)/")"
    ! grep -qF "$(cri_root)/" /proc/self/mountinfo || fail "mounts left under the runtime root"
    if [ -n "$netns" ]; then
        [ ! -e "$netns" ] || fail "pod network namespace $netns left"
    fi
    if [ -n "$base" ]; then
        [ ! -e "$base" ] || fail "VM directory $base left"
        ! grep -qF " $base/" /proc/self/mountinfo || fail "mounts left under $base"
        [ -z "$(procs_naming "$base/")" ] || fail "VM processes left: $(procs_naming "$base/")"
    fi
    [ -z "$(find /sys/fs/cgroup/*/"$CRI_CG" -mindepth 2 -type d 2>/dev/null)" ] ||
        fail "host cgroups left: $(find /sys/fs/cgroup/*/"$CRI_CG" -mindepth 2 -type d)"
    cri_v2 || return 0
    # The pod's shim ends with its last container (containerd shuts it down after
    # RemovePodSandbox): no shim process of this containerd, no socket, no state, not even
    # the namespace's directory under the shim's root.
    local i shims=""
    for i in $(seq 50); do
        shims=$(procs_naming "-address $CTRD_DIR/containerd.sock" | grep containerd-shim-clearbox-v2 || true)
        [ -z "$shims" ] && break
        sleep 0.2
    done
    [ -z "$shims" ] || fail "shim processes left: $shims"
    [ ! -e "$shim_sock" ] || fail "shim socket $shim_sock left"
    [ -z "$(ls -A "$CTRD_DIR/shim-root" 2>/dev/null)" ] ||
        fail "shim state left: $(find "$CTRD_DIR/shim-root")"
    [ -z "$(procs_naming "$CTRD_DIR/shim-root/")" ] || fail "processes left: $(procs_naming "$CTRD_DIR/shim-root/")"
    local sock
    for sock in "$CTRD_DIR"/state/io.containerd.runtime.v2.task/k8s.io/*; do
        [ ! -e "$sock" ] || fail "task bundle left: $sock"
    done
}

@test "pod: an app container whose sandbox is missing or malformed fails clearly and leaves nothing" {
    expect_vm || skip "pods are a clearbox vm feature (isolation: ${ISOLATION:-default}, runtime: $RUNTIME_NAME)"
    setup_direct
    local id bundle sandbox
    id=$(new_id app)
    bundle="$BATS_TEST_TMPDIR/bundle"
    make_bundle "$bundle" sh
    for sandbox in nope ../x; do
        edit_config "$bundle" --arg s "$sandbox" \
            '.annotations = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": $s}'
        run --separate-stderr rt create --bundle "$bundle" "$id"
        assert_clean_error
        [[ "$stderr" == *sandbox* ]] || fail "error does not name the sandbox: $stderr"
        assert_nothing_left "$id" "$bundle"
    done
    # A sandbox id naming a container that is not a sandbox.
    local plain
    plain=$(new_id plain)
    edit_config "$bundle" '.annotations = {}'
    track "$plain"
    rt_detached create --bundle "$bundle" "$plain"
    assert_status 0
    edit_config "$bundle" --arg s "$plain" \
        '.annotations = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": $s}'
    run --separate-stderr rt create --bundle "$bundle" "$id"
    assert_clean_error
    [[ "$stderr" == *"not a pod sandbox"* ]] || fail "error: $stderr"
    rt delete --force "$plain"
    assert_nothing_left "$id" "$bundle"
    assert_nothing_left "$plain" "$bundle"
}
