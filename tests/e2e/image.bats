#!/usr/bin/env bats
# clearbox image / trust: images from a local registry (Debian's docker-registry on 127.0.0.1)
# and from OCI layouts/archives, signed with GPG (skopeo --sign-by, key made here in a temp
# GNUPGHOME) and cosign-style (ECDSA P-256 key made here with openssl), run with
# `clearbox image run` in a VM. Only for clearbox.

load helpers

# The suite's own store, policy, trust dir and bundles: nothing outside $W is touched.
setup_file() {
    require_runtime || return 1
    require_image || return 1
    is_clearbox || { echo "image.bats needs clearbox (RUNTIME=$RUNTIME)" >&2; return 1; }
    for tool in docker-registry skopeo umoci gpg openssl curl jq python3; do
        command -v "$tool" >/dev/null || { echo "missing tool: $tool (scripts/install-deps.sh)" >&2; return 1; }
    done
    id clearbox-fetch >/dev/null 2>&1 || { echo "no clearbox-fetch user (scripts/install-deps.sh)" >&2; return 1; }
    export W="$E2E_WORKDIR/image-suite"
    rm -rf "$W"
    mkdir -p "$W"
    chmod 755 "$W"
    start_registry "$W" || return 1
    export REG
    write_image_config "$W"

    # Keys: a trusted and an untrusted GPG key, a cosign key pair.
    export GNUPGHOME="$W/gnupg"
    mkdir -m 700 "$GNUPGHOME"
    gpg --batch --passphrase '' --quick-gen-key 'clearbox trusted <trusted@clearbox.test>' ed25519 sign never 2>/dev/null
    gpg --batch --passphrase '' --quick-gen-key 'clearbox other <other@clearbox.test>' rsa2048 sign never 2>/dev/null
    export FPR_TRUSTED FPR_OTHER
    FPR_TRUSTED=$(gpg --with-colons --list-keys trusted@clearbox.test | awk -F: '/^fpr/{print $10; exit}')
    FPR_OTHER=$(gpg --with-colons --list-keys other@clearbox.test | awk -F: '/^fpr/{print $10; exit}')
    gpg --armor --export "$FPR_TRUSTED" >"$W/trusted.asc"
    openssl ecparam -genkey -name prime256v1 -noout -out "$W/cosign.key" 2>/dev/null
    openssl ec -in "$W/cosign.key" -pubout -out "$W/cosign.pub" 2>/dev/null

    # skopeo writes simple signatures into the lookaside directory clearbox reads.
    mkdir -p "$W/registries.d" "$W/sigstore"
    cat >"$W/registries.d/default.yaml" <<EOF
default-docker:
  sigstore-staging: file://$W/sigstore
  sigstore: file://$W/sigstore
EOF
    local L="oci:$IMAGE_DIR/oci-layout:latest"
    push "$L" signed/busybox:1 --sign-by "$FPR_TRUSTED"
    # (Another repository: skopeo keeps one set of lookaside signatures per manifest digest.)
    push "$L" signed/other:1 --sign-by "$FPR_OTHER"
    push "$L" unsigned/busybox:1
    push "$L" cosigned/busybox:1
    cosign_sign cosigned/busybox 1
    # A distinct image (its own layer blob) whose layer gets tampered with in the registry.
    make_layered "$W/tamper" tamper-me
    push "oci:$W/tamper:latest" tampered/busybox:1 --sign-by "$FPR_TRUSTED"
    # Whiteouts: a layer that deletes /etc/hostname and makes /home opaque.
    make_layered "$W/whiteout" whiteout
    push "oci:$W/whiteout:latest" signed/whiteout:1 --sign-by "$FPR_TRUSTED"

    t "$RUNTIME" trust add --prefix "$REG/signed" "$W/trusted.asc"
    t "$RUNTIME" trust add --prefix "$REG/tampered" "$W/trusted.asc"
    t "$RUNTIME" trust add --prefix "$REG/cosigned" "$W/cosign.pub"
}

teardown_file() {
    if [ -f "$W/registry.pid" ]; then
        kill "$(cat "$W/registry.pid")" 2>/dev/null || true
    fi
    # Images left by a failed test; then the whole scratch dir.
    if [ -d "$W/store/refs" ]; then
        timeout 60 "$RUNTIME" image rm $(timeout 30 "$RUNTIME" image list --format json | jq -r '.[].name') >/dev/null 2>&1 || true
    fi
    rm -rf "$W"
}

setup() {
    RT_ROOT="$BATS_TEST_TMPDIR/rt-root"
    mkdir -p "$RT_ROOT"
}

# cb ARGS... — clearbox with this test's --root and the suite's isolation flags.
cb() { t "$RUNTIME" --root "$RT_ROOT" "${RUNTIME_GLOBAL_ARGS[@]}" "$@"; }

# push SRC REPO:TAG [skopeo flags] — copy an image into the local registry.
push() {
    local src="$1" dst="$2"
    shift 2
    skopeo copy --quiet --registries.d "$W/registries.d" --dest-tls-verify=false "$@" \
        "$src" "docker://$REG/$dst"
}

# cosign_sign REPO TAG — a cosign-style signature: the simple-signing payload signed with the
# test's P-256 key (openssl), stored as the sha256-<hex>.sig artifact cosign uses.
cosign_sign() {
    local repo="$1" tag="$2" digest payload sig cfg man d
    digest=$(curl -sfI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REG/v2/$repo/manifests/$tag" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    [ -n "$digest" ] || { echo "no digest for $repo:$tag" >&2; return 1; }
    payload="$W/cosign-payload.json"
    printf '{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
        "$REG/$repo" "$digest" >"$payload"
    sig=$(openssl dgst -sha256 -sign "$W/cosign.key" "$payload" | base64 -w0)
    printf '{}' >"$W/cosign-config.json"
    upload "$repo" "$payload"
    upload "$repo" "$W/cosign-config.json"
    jq -n --arg pd "sha256:$(sha256sum "$payload" | cut -d' ' -f1)" --argjson ps "$(stat -c %s "$payload")" \
        --arg cd "sha256:$(sha256sum "$W/cosign-config.json" | cut -d' ' -f1)" --arg sig "$sig" '{
        schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: 2},
        layers: [{mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", digest: $pd, size: $ps,
                  annotations: {"dev.cosignproject.cosign/signature": $sig}}]}' >"$W/cosign-manifest.json"
    curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$W/cosign-manifest.json" \
        "http://$REG/v2/$repo/manifests/sha256-${digest#sha256:}.sig" >/dev/null
}

# upload REPO FILE — one blob through the distribution API.
upload() {
    local repo="$1" f="$2" loc d
    d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    loc=$(curl -sfi -X POST "http://$REG/v2/$repo/blobs/uploads/" | tr -d '\r' |
        awk -F': ' 'tolower($1)=="location"{print $2}')
    case "$loc" in http*) ;; *) loc="http://$REG$loc" ;; esac
    case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
    curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$f" "$loc" >/dev/null
}

# make_layered DIR KIND — the test image plus one crafted layer (python tarfile), via umoci.
make_layered() {
    local dir="$1" kind="$2"
    rm -rf "$dir"
    cp -a "$IMAGE_DIR/oci-layout" "$dir"
    python3 - "$kind" "$dir.layer.tar" <<'PY'
import io, sys, tarfile
kind, out = sys.argv[1], sys.argv[2]
t = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)
def add(name, data=b"", type=tarfile.REGTYPE, link="", mode=0o644, devmajor=0, devminor=0):
    i = tarfile.TarInfo(name); i.type = type; i.linkname = link; i.mode = mode
    i.size = len(data) if type == tarfile.REGTYPE else 0
    i.devmajor, i.devminor = devmajor, devminor
    t.addfile(i, io.BytesIO(data) if type == tarfile.REGTYPE else None)
if kind == "tamper-me":
    add("etc/tamper-me", b"original\n")
elif kind == "whiteout":
    add("etc/.wh.hostname")
    add("home/.wh..wh..opq")
    add("home/fresh", b"new\n")
elif kind == "dotdot":
    add("../../../../tmp/clearbox-escape", b"x")
elif kind == "abs-symlink":
    add("evil", type=tarfile.SYMTYPE, link="/")
    add("evil/tmp/clearbox-escape", b"x")
elif kind == "device":
    add("dev/evil-mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666)
t.close()
PY
    umoci raw add-layer --image "$dir:latest" "$dir.layer.tar"
}

@test "image run: a GPG-signed image is verified and runs in a VM with its stdio and exit code" {
    run --separate-stderr t "$RUNTIME" --root "$RT_ROOT" --isolation vm image run "$REG/signed/busybox:1" -- \
        sh -c 'echo hello-from-image; stat -c "%u:%g %a" /bin/busybox /home/user; exit 3'
    assert_status 3
    assert_output_contains "hello-from-image"
    # Ownership and modes as in the image, not the fetch user's.
    assert_output_contains "0:0 755"
    assert_output_contains "1000:1000 755"
    [[ "$stderr" == *"verified (signedBy key $FPR_TRUSTED"* ]] || fail "no verification note: $stderr"
    # The container and its bundle are gone.
    [ -z "$(ls -A "$RT_ROOT")" ] || fail "state left: $(ls -A "$RT_ROOT")"
    [ -z "$(ls -A "$W/bundles")" ] || fail "bundle left: $(ls -A "$W/bundles")"
}

@test "image pull: an unsigned image is refused, naming image, policy and missing key" {
    run --separate-stderr cb image pull "$REG/unsigned/busybox:1"
    assert_clean_error
    [[ "$stderr" == *"$REG/unsigned/busybox:1"* ]] || fail "image not named: $stderr"
    [[ "$stderr" == *"$W/policy.json (default)"* ]] || fail "policy not named: $stderr"
    [[ "$stderr" == *"rejects every image"* ]] || fail "$stderr"
    # Under a trusted prefix, the missing signature and key are named.
    skopeo copy --quiet --dest-tls-verify=false "docker://$REG/unsigned/busybox:1" "docker://$REG/signed/nosig:1" --src-tls-verify=false
    run --separate-stderr cb image run "$REG/signed/nosig:1" -- true
    assert_clean_error
    [[ "$stderr" == *"no GPG signature found"* ]] || fail "$stderr"
    [[ "$stderr" == *"$FPR_TRUSTED"* ]] || fail "missing key not named: $stderr"
    run cb image list
    [[ "$output" != *unsigned* && "$output" != *nosig* ]] || fail "refused image stored: $output"
}

@test "image pull: a signature by an untrusted key is refused" {
    run --separate-stderr cb image pull "$REG/signed/other:1"
    assert_clean_error
    [[ "$stderr" == *"signed by $FPR_OTHER, which is not a trusted key"* ]] || fail "$stderr"
    [[ "$stderr" == *"the missing key is $FPR_TRUSTED"* ]] || fail "$stderr"
}

@test "image pull: a tampered layer is refused by its digest" {
    local layer
    layer=$(jq -r '.manifests[0].digest' "$W/tamper/index.json" | cut -d: -f2)
    layer=$(jq -r '.layers[-1].digest' "$W/tamper/blobs/sha256/$layer" | cut -d: -f2)
    local data="$W/registry/docker/registry/v2/blobs/sha256/${layer:0:2}/$layer/data"
    [ -f "$data" ] || fail "no registry blob $data"
    printf 'tampered' >>"$data"
    run --separate-stderr cb image pull "$REG/tampered/busybox:1"
    assert_clean_error
    [[ "$stderr" == *"digest mismatch"* && "$stderr" == *"$layer"* ]] || fail "$stderr"
    [ -z "$(ls -A "$W/store/tmp")" ] || fail "partial download left: $(ls -A "$W/store/tmp")"
}

@test "image run --insecure-skip-verify runs an unsigned image and warns" {
    run --separate-stderr cb image run --insecure-skip-verify "$REG/unsigned/busybox:1" -- echo ran-unsigned
    assert_status 0
    assert_output_contains "ran-unsigned"
    [[ "$stderr" == *"WARNING: --insecure-skip-verify"* ]] || fail "no warning: $stderr"
    # Stored unverified: a run without the flag is refused.
    run --separate-stderr cb image run "$REG/unsigned/busybox:1" -- true
    assert_clean_error
    cb image rm "$REG/unsigned/busybox:1"
}

@test "image run: a cosign-signed image is verified with the trusted public key" {
    run --separate-stderr cb image run "$REG/cosigned/busybox:1" -- echo cosign-ok
    assert_status 0
    assert_output_contains "cosign-ok"
    [[ "$stderr" == *"sigstoreSigned key"* ]] || fail "$stderr"
    # Another key: refused at run time too (the policy is judged again on each run).
    openssl ecparam -genkey -name prime256v1 -noout -out "$BATS_TEST_TMPDIR/k" 2>/dev/null
    openssl ec -in "$BATS_TEST_TMPDIR/k" -pubout -out "$BATS_TEST_TMPDIR/k.pub" 2>/dev/null
    t "$RUNTIME" trust rm --prefix "$REG/cosigned"
    t "$RUNTIME" trust add --prefix "$REG/cosigned" "$BATS_TEST_TMPDIR/k.pub"
    run --separate-stderr cb image run "$REG/cosigned/busybox:1" -- true
    t "$RUNTIME" trust rm --prefix "$REG/cosigned"
    t "$RUNTIME" trust add --prefix "$REG/cosigned" "$W/cosign.pub"
    assert_clean_error
    [[ "$stderr" == *"does not verify with any trusted key"* ]] || fail "$stderr"
}

@test "image: whiteouts and opaque directories are applied" {
    run --separate-stderr cb image run "$REG/signed/whiteout:1" -- \
        sh -c 'test ! -e /etc/hostname && ls /home && test -e /etc/passwd && echo layers-ok'
    assert_status 0
    assert_output_contains "layers-ok"
    assert_output_contains "fresh"
    [[ "$output" != *user* ]] || fail "opaque /home kept lower-layer content: $output"
}

@test "image import: malicious tarballs are refused, naming the entry" {
    local kind want
    for kind in dotdot abs-symlink device; do
        make_layered "$BATS_TEST_TMPDIR/$kind" "$kind"
        run --separate-stderr cb image import --insecure-skip-verify --name "$REG/evil/$kind:1" "$BATS_TEST_TMPDIR/$kind"
        [ "$status" -eq 1 ] || fail "$kind: status $status; $stderr"
        case $kind in
            dotdot) want='"../../../../tmp/clearbox-escape" refused: path contains `..`' ;;
            abs-symlink) want='"evil/tmp/clearbox-escape" refused: path escapes the rootfs' ;;
            device) want='"dev/evil-mem" refused: device node (character 1:1)' ;;
        esac
        [[ "$stderr" == *"$want"* ]] || fail "$kind: $stderr"
    done
    [ ! -e /tmp/clearbox-escape ] || fail "a file escaped to /tmp"
    [ -z "$(ls -A "$W/store/tmp")" ] || fail "unpack leftovers: $(ls -A "$W/store/tmp")"
    run cb image list
    [[ "$output" != *evil* ]] || fail "$output"
}

@test "image pull: the fetch worker runs as the fetch user, without capabilities, writing only the store" {
    # A registry that accepts and never answers holds the worker while we look at it.
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(8)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
" &
    local hang=$! i
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    sed -i "s/^insecure_registries = .*/insecure_registries = [\"$REG\", \"127.0.0.1:$port\"]/" "$W/config.toml"
    "$RUNTIME" image pull "127.0.0.1:$port/slow/app:1" >/dev/null 2>&1 &
    local pull=$! worker=""
    for i in $(seq 100); do
        worker=$(cat /proc/$pull/task/*/children 2>/dev/null | tr ' ' '\n' | grep . | head -1)
        [ -n "$worker" ] && grep -q __image-worker /proc/$worker/cmdline 2>/dev/null &&
            grep -q '^Uid:.*[1-9]' /proc/$worker/status && break
        sleep 0.1
    done
    local status_txt mounts
    status_txt=$(cat /proc/$worker/status)
    mounts=$(cat /proc/$worker/mountinfo)
    kill $pull $hang
    wait $pull $hang 2>/dev/null || true
    local uid
    uid=$(id -u clearbox-fetch)
    [[ "$status_txt" == *$'\nUid:\t'"$uid"$'\t'"$uid"$'\t'"$uid"$'\t'"$uid"* ]] || fail "worker uid: $(grep Uid <<<"$status_txt")"
    grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$status_txt" || fail "$(grep Cap <<<"$status_txt")"
    grep -q '^CapPrm:[[:space:]]*0000000000000000$' <<<"$status_txt" || fail "$(grep Cap <<<"$status_txt")"
    grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$status_txt" || fail "$(grep Cap <<<"$status_txt")"
    grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status_txt" || fail "no_new_privs not set"
    grep -q '^Groups:[[:space:]]*$' <<<"$status_txt" || fail "$(grep Groups <<<"$status_txt")"
    # / is read-only in the worker's mount namespace; the store is its one writable place.
    awk '$5=="/" {print $6}' <<<"$mounts" | grep -q '^ro' || fail "/ is writable for the worker"
    awk -v s="$W/store" '$5==s {print $6}' <<<"$mounts" | grep -q '^rw' || fail "store not writable: $(grep store <<<"$mounts")"
    # The worker died with its parent.
    sleep 0.5
    [ ! -d /proc/$worker ] || [ "$(awk '/^State/{print $2}' /proc/$worker/status)" = Z ] || fail "worker $worker outlived the pull"
    # What it stored belongs to the fetch user.
    [ "$(stat -c %U "$W/store")" = clearbox-fetch ] || fail "store owner: $(stat -c %U "$W/store")"
    [ "$(stat -c %a "$W/store")" = 700 ] || fail "store mode: $(stat -c %a "$W/store")"
}

@test "image import: oci layout (signature from the lookaside), oci-archive and docker-archive" {
    run --separate-stderr cb image import --name "$REG/signed/busybox:imported" "$IMAGE_DIR/oci-layout"
    # Signed for the tag :1, not :imported: refused (the identity is checked too).
    assert_clean_error
    [[ "$stderr" == *"not $REG/signed/busybox:imported"* ]] || fail "$stderr"
    run --separate-stderr cb image import --name "$REG/signed/busybox:1" "$IMAGE_DIR/oci-layout"
    assert_status 0
    [[ "$stderr" == *"verified"* ]] || fail "$stderr"
    run --separate-stderr cb image import "$IMAGE_DIR/clearbox-test.oci.tar"
    assert_clean_error
    [[ "$stderr" == *"localhost/clearbox-test:latest"* ]] || fail "$stderr"
    run --separate-stderr cb image import --insecure-skip-verify "$IMAGE_DIR/clearbox-test.oci.tar"
    assert_status 0
    run --separate-stderr cb image import --insecure-skip-verify --name localhost/from-docker:1 "$IMAGE_DIR/clearbox-test.docker.tar"
    assert_status 0
    run --separate-stderr cb image list --format json
    assert_status 0
    jq -e --arg r "$REG" 'map(.name) | index("localhost/clearbox-test:latest") and index("localhost/from-docker:1") and index($r + "/signed/busybox:1")' <<<"$output" >/dev/null ||
        fail "$output"
    # One layer blob shared by the three names.
    local layer
    layer=$(jq -r '.[0].layers[0]' <<<"$output")
    [ "$(jq --arg l "$layer" '[.[] | select(.layers | index($l))] | length' <<<"$output")" -ge 2 ] || fail "$output"
    run --separate-stderr cb image inspect localhost/from-docker:1
    assert_status 0
    jq -e '.config.config.Cmd == ["/bin/sh"]' <<<"$output" >/dev/null || fail "$output"
    cb image rm localhost/clearbox-test:latest localhost/from-docker:1
}

# bg_image_run ISOLATION NAME ARGS... — clearbox itself in the background (no wrapper), as a
# systemd unit's main process; stdout/stderr in $BATS_TEST_TMPDIR/NAME.{out,err}.
bg_image_run() {
    local iso="$1" name="$2"
    shift 2
    "$RUNTIME" --root "$RT_ROOT" --isolation "$iso" image run --name "$name" "$REG/signed/busybox:1" -- "$@" \
        >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" &
}

@test "image run: SIGTERM is forwarded and the container's exit code becomes clearbox's (systemd ExecStart)" {
    local script='trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.2; done'
    bg_image_run namespaces "sig-ns-$$" sh -c "$script"
    local pid=$! rc=0
    wait_for_file "$BATS_TEST_TMPDIR/sig-ns-$$.out" ready
    kill -TERM $pid
    wait $pid || rc=$?
    [ "$rc" -eq 7 ] || fail "exit $rc; $(cat "$BATS_TEST_TMPDIR/sig-ns-$$".*)"
    grep -q got-term "$BATS_TEST_TMPDIR/sig-ns-$$.out" || fail "the container did not see SIGTERM"
    # In a VM: the shim forwards SIGTERM to the guest process, whose trap's code becomes
    # clearbox's, and nothing is left.
    bg_image_run vm "sig-vm-$$" sh -c "$script"
    pid=$!
    rc=0
    wait_for_file "$BATS_TEST_TMPDIR/sig-vm-$$.out" ready
    kill -TERM $pid
    wait $pid || rc=$?
    [ "$rc" -eq 7 ] || fail "exit $rc; $(cat "$BATS_TEST_TMPDIR/sig-vm-$$".*)"
    grep -q got-term "$BATS_TEST_TMPDIR/sig-vm-$$.out" || fail "the VM container did not see SIGTERM"
    [ -z "$(ls -A "$RT_ROOT")" ] || fail "state left: $(ls -A "$RT_ROOT")"
    [ -z "$(ls -A "$W/bundles")" ] || fail "bundle left: $(ls -A "$W/bundles")"
}

@test "trust list / rm and a bad key" {
    run --separate-stderr t "$RUNTIME" trust list --format json
    assert_status 0
    jq -e --arg p "$REG/signed" --arg f "$FPR_TRUSTED" 'map(select(.prefix == $p and .key == $f)) | length == 1' <<<"$output" >/dev/null || fail "$output"
    echo garbage >"$BATS_TEST_TMPDIR/bad.key"
    run --separate-stderr t "$RUNTIME" trust add --prefix "$REG/x" "$BATS_TEST_TMPDIR/bad.key"
    assert_clean_error
    run --separate-stderr t "$RUNTIME" trust add --prefix "$REG/x:1" "$W/trusted.asc"
    assert_clean_error
    run --separate-stderr t "$RUNTIME" trust rm --prefix "$REG/nothing"
    assert_clean_error
}

@test "image rm: nothing is left" {
    run --separate-stderr cb image pull "$REG/signed/busybox:1"
    assert_status 0
    local names
    names=$(cb image list --format json | jq -r '.[].name')
    [ -n "$names" ] || fail "nothing to remove"
    # shellcheck disable=SC2086
    cb image rm $names
    run --separate-stderr cb image rm "$REG/signed/busybox:1"
    assert_clean_error
    for d in blobs/sha256 unpacked refs tmp; do
        [ -z "$(ls -A "$W/store/$d")" ] || fail "$d left: $(ls -A "$W/store/$d")"
    done
    [ -z "$(ls -A "$W/bundles" 2>/dev/null)" ] || fail "bundles left"
    [ -z "$(procs_naming __image-worker)" ] || fail "worker left: $(procs_naming __image-worker)"
}

# wait_for_file FILE TEXT — up to E2E_TIMEOUT seconds.
wait_for_file() {
    local i
    for i in $(seq $((E2E_TIMEOUT * 10))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$1 never contained $2: $(cat "$1")"
}
