#!/usr/bin/env bats
# VM templates (isolation=vm): one template per input set, built once even when first uses
# race, restored clones that each have their own RNG state and boot id and the host's time,
# and cold boots when templates are off. Needs RUNTIME_NAME=*clearbox* and ISOLATION=vm (or
# unset) and a host whose `clearbox check` says templates are on (QEMU 10, Rust virtiofsd).

load helpers

setup() {
    expect_vm || fail "the template suite needs a clearbox runtime with ISOLATION=vm"
    setup_direct
    # tmpfs, as the default (/dev/shm/clearbox-templates).
    TPL="/dev/shm/clearbox-e2e-templates-$$-${BATS_TEST_NUMBER}"
    mkdir -m 0700 -p "$TPL"
    export CLEARBOX_TEMPLATE_DIR="$TPL"
    export CLEARBOX_TEMPLATE=on
    run "$RUNTIME" check
    [[ "$output" == *"vm templates"*"on: "* ]] ||
        fail "clearbox check does not report VM templates on: $output"
}

teardown() {
    teardown_direct
    rm -rf "$TPL"
}

# Prints what the guest says about itself: boot id, 16 random bytes, its clock.
identity_bundle() {
    make_bundle "$1" sh -c 'cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"; echo; date +%s'
}

templates_built() { find "$TPL" -mindepth 2 -maxdepth 2 -name template.json | wc -l; }

# Pages of the memory file $1 that hold data: "<data pages> <pages of zeros>".
page_census() {
    python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
page, off, data, zeros = 4096, 0, 0, 0
zero = bytes(page)
while True:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, off, os.SEEK_HOLE)
    while off < end:
        b = os.pread(fd, min(end - off, 1 << 20), off)
        for i in range(0, len(b) - page + 1, page):
            data += 1
            zeros += b[i:i + page] == zero
        off += len(b)
print(data, zeros)
EOF
}

@test "template: two racing first uses build one template; clones differ in RNG and boot id, have the host's clock" {
    local a="$BATS_TEST_TMPDIR/a" b="$BATS_TEST_TMPDIR/b" ida idb
    identity_bundle "$a"
    identity_bundle "$b"
    ida=$(new_id a)
    idb=$(new_id b)
    track "$ida"
    track "$idb"
    # Both first uses at once: one builds under the lock, the other waits and restores.
    (cd "$a" && rt run "$ida" >"$BATS_TEST_TMPDIR/out.a" 2>"$BATS_TEST_TMPDIR/err.a"; echo $? >"$BATS_TEST_TMPDIR/rc.a") &
    (cd "$b" && rt run "$idb" >"$BATS_TEST_TMPDIR/out.b" 2>"$BATS_TEST_TMPDIR/err.b"; echo $? >"$BATS_TEST_TMPDIR/rc.b") &
    wait
    for x in a b; do
        [ "$(cat "$BATS_TEST_TMPDIR/rc.$x")" = 0 ] ||
            fail "run $x failed: $(cat "$BATS_TEST_TMPDIR/err.$x")"
    done
    [ "$(templates_built)" = 1 ] || fail "expected one template, found: $(ls -la "$TPL")"
    [ -z "$(find "$TPL" -maxdepth 1 -name '.build-*')" ] || fail "a build directory was left: $(ls -a "$TPL")"
    # Its memory file carries no page of zeros: each is a hole, which no restore copies.
    local census
    census=$(page_census "$(find "$TPL" -mindepth 2 -maxdepth 2 -name memory)")
    [ "${census% *}" -gt 1000 ] && [ "${census#* }" = 0 ] ||
        fail "template memory: <data pages> <zero pages> = $census"
    local boot_a boot_b rnd_a rnd_b t_a t_b now
    boot_a=$(sed -n 1p "$BATS_TEST_TMPDIR/out.a")
    boot_b=$(sed -n 1p "$BATS_TEST_TMPDIR/out.b")
    rnd_a=$(sed -n 2p "$BATS_TEST_TMPDIR/out.a")
    rnd_b=$(sed -n 2p "$BATS_TEST_TMPDIR/out.b")
    t_a=$(sed -n 3p "$BATS_TEST_TMPDIR/out.a")
    t_b=$(sed -n 3p "$BATS_TEST_TMPDIR/out.b")
    [ "${#rnd_a}" = 32 ] && [ "${#boot_a}" = 36 ] || fail "bad output: $(cat "$BATS_TEST_TMPDIR/out.a")"
    [ "$boot_a" != "$boot_b" ] || fail "two VMs share the boot id $boot_a"
    [ "$rnd_a" != "$rnd_b" ] || fail "two VMs produced the same random bytes $rnd_a"
    now=$(date +%s)
    for t in "$t_a" "$t_b"; do
        [ $((now - t)) -le 30 ] && [ $((t - now)) -le 2 ] || fail "guest clock $t, host $now"
    done
    # Both later runs are clones of that template (no new one), and still differ.
    local c="$BATS_TEST_TMPDIR/c" idc out1 out2
    identity_bundle "$c"
    idc=$(new_id c)
    track "$idc"
    out1=$(cd "$c" && rt run "$idc") || fail "clone run failed"
    out2=$(cd "$c" && rt run "$idc") || fail "clone run failed"
    [ "$(templates_built)" = 1 ] || fail "a second template was built"
    [ "$(sed -n 2p <<<"$out1")" != "$(sed -n 2p <<<"$out2")" ] || fail "clones share RNG output"
    [ "$(sed -n 1p <<<"$out1")" != "$(sed -n 1p <<<"$out2")" ] || fail "clones share a boot id"
}

@test "template: a restored container works: exec, signals, exit status, files" {
    local id B="$BATS_TEST_TMPDIR/bundle"
    id=$(new_id)
    make_bundle "$B" sh -c 'echo hello >/tmp/f; trap "exit 7" TERM; while :; do sleep 1; done'
    track "$id"
    rt_detached create --bundle "$B" "$id"
    assert_status 0
    [ "$(templates_built)" = 1 ] || fail "the VM was not restored from a template"
    rt_detached start "$id"
    assert_status 0
    got_file() { [ "$(rt exec "$id" cat /tmp/f 2>/dev/null)" = hello ]; }
    wait_for got_file || fail "exec into the clone failed"
    run rt exec "$id" sh -c 'ls /dev | grep -c vport || true'
    [ "${lines[0]}" = 0 ] || fail "the agent's virtio-serial port is visible in the container: $output"
    rt kill "$id" TERM
    stopped() { [ "$(rt_status "$id")" = stopped ]; }
    wait_for stopped || fail "container did not stop"
    rt delete "$id"
}

@test "template: CLEARBOX_TEMPLATE=off boots cold and builds nothing" {
    local id
    id=$(new_id)
    make_bundle "$BATS_TEST_TMPDIR/bundle" uname -r
    track "$id"
    run --separate-stderr env CLEARBOX_TEMPLATE=off bash -c "cd '$BATS_TEST_TMPDIR/bundle' && timeout 60 '$RUNTIME' --root '$RT_ROOT' run '$id'"
    assert_status 0
    assert_guest_kernel "${lines[0]}"
    [ "$(templates_built)" = 0 ] || fail "templates were built while off"
}

@test "template: [vm] template_max bounds the cache; the least recently used template goes" {
    local a="$BATS_TEST_TMPDIR/a" b="$BATS_TEST_TMPDIR/b" x
    printf '[vm]\ntemplate_max = 1\n' >"$BATS_TEST_TMPDIR/config.toml"
    export CLEARBOX_CONFIG="$BATS_TEST_TMPDIR/config.toml"
    # Two VM sizes (the memory limit sizes the VM): two template keys.
    make_bundle "$a" true
    make_bundle "$b" true
    edit_config "$a" '.linux.resources.memory.limit = 134217728'
    edit_config "$b" '.linux.resources.memory.limit = 201326592'
    for x in a b a; do
        local id
        id=$(new_id "$x$RANDOM")
        track "$id"
        run --separate-stderr bash -c "cd '$BATS_TEST_TMPDIR/$x' && timeout 120 '$RUNTIME' --root '$RT_ROOT' run '$id'"
        assert_status 0
        [ "$(templates_built)" = 1 ] ||
            fail "after bundle $x: expected one template (template_max = 1), found: $(ls -la "$TPL")"
    done
    [ -z "$(find "$TPL" -maxdepth 1 -name '*.lock' | sed 1d)" ] ||
        fail "the evicted template's lock file was left: $(ls -a "$TPL")"
    printf '[vm]\ntemplate_max = 0\n' >"$BATS_TEST_TMPDIR/config.toml"
    run --separate-stderr bash -c "cd '$a' && timeout 60 '$RUNTIME' --root '$RT_ROOT' run '$(new_id zero)'"
    [ "$status" -ne 0 ] || fail "template_max = 0 was accepted"
    [[ "$stderr" == *"template_max must be at least 1"* ]] || fail "unclear error: $stderr"
}

@test "template: list and prune show and empty the cache; check reports it" {
    # One template of a kernel copy that then changes (stale), one of the default kernel.
    local k="$BATS_TEST_TMPDIR/vmlinux" cfg="$BATS_TEST_TMPDIR/config.toml"
    cp /usr/share/clearbox/vmlinux "$k"
    printf '[vm]\nkernel = "%s"\n' "$k" >"$cfg"
    run --separate-stderr "$RUNTIME" template build --nics 0
    assert_status 0
    run --separate-stderr env CLEARBOX_CONFIG="$cfg" "$RUNTIME" template build --nics 0
    assert_status 0
    # (A build removes the stale templates it finds: the kernel changes after both.)
    touch -d '1 minute ago' "$k"
    # A build that died left its directory (and memory) behind.
    mkdir -m 0700 "$TPL/.build-0123456789ab"
    head -c 65536 /dev/zero >"$TPL/.build-0123456789ab/memory"
    run --separate-stderr "$RUNTIME" template list --format json
    assert_status 0
    [ "$(jq -r '[.templates[].state] | sort | join(",")' <<<"$output")" = "partial,ready,stale" ] ||
        fail "unexpected cache listing: $output"
    [ "$(jq -r '.templates[] | select(.state == "ready") | .nics' <<<"$output")" = 0 ] ||
        fail "the ready template's NIC count: $output"
    [ "$(jq -r '.bytes > 1048576' <<<"$output")" = true ] || fail "memory held not counted: $output"
    run --separate-stderr "$RUNTIME" template list
    assert_status 0
    [[ "$output" == *"1 ready of at most 8 kept"* ]] || fail "table: $output"
    run "$RUNTIME" check
    [[ "$output" == *"template cache"*"2 no VM can use"*"clearbox template prune"* ]] ||
        fail "clearbox check does not report the unusable entries: $output"
    # prune: what no VM can use goes, the ready template stays (and still restores).
    run --separate-stderr "$RUNTIME" template prune
    assert_status 0
    [[ "$output" == *"2 removed"* ]] || fail "prune: $output"
    [ "$(templates_built)" = 1 ] && [ ! -e "$TPL/.build-0123456789ab" ] ||
        fail "after prune: $(ls -la "$TPL")"
    local id
    id=$(new_id)
    track "$id"
    make_bundle "$BATS_TEST_TMPDIR/bundle" true
    run --separate-stderr bash -c "cd '$BATS_TEST_TMPDIR/bundle' && timeout 60 '$RUNTIME' --root '$RT_ROOT' run '$id'"
    assert_status 0
    [ "$(templates_built)" = 1 ] || fail "the kept template was not used: $(ls -la "$TPL")"
    # prune --all: everything, lock files too.
    run --separate-stderr "$RUNTIME" template prune --all
    assert_status 0
    [[ "$output" == *"1 removed"* ]] || fail "prune --all: $output"
    [ -z "$(ls -A "$TPL")" ] || fail "left in the cache: $(ls -la "$TPL")"
    run "$RUNTIME" check
    [[ "$output" == *"template cache"*"0 ready of at most 8 kept"* ]] || fail "check: $output"
}
