#!/usr/bin/env bash
# Build the clearbox guest kernel (PVH vmlinux for QEMU microvm) from Debian's
# linux-source-6.1 with guest/kernel/clearbox.config applied on tinyconfig and the
# patches in guest/kernel/patches/ (applied in name order; each says why it exists).
#
# Usage: scripts/build-guest-kernel.sh
#
# Result is cached under ${CLEARBOX_CACHE:-/var/cache/clearbox}/kernel/<hash>/
# where <hash> = sha256(fragment, patches, linux-source package version, this script);
# a rerun with the same inputs only re-installs. The vmlinux is installed
# (atomic replace) to ${CLEARBOX_SHARE:-/usr/share/clearbox}/vmlinux and that
# path is printed on stdout. The kernel tree's usr/gen_init_cpio is kept next
# to it and at ${CLEARBOX_CACHE}/kernel/bin/gen_init_cpio for
# scripts/build-initramfs.sh.
#
# Environment: CLEARBOX_CACHE, CLEARBOX_SHARE, JOBS (default: nproc).
set -euo pipefail

die() { echo "build-guest-kernel: $*" >&2; exit 1; }
log() { echo "build-guest-kernel: $*" >&2; }

[[ $# -eq 0 ]] || die "takes no arguments (got: $*)"

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SCRIPT")/.." && pwd)
FRAGMENT=$REPO/guest/kernel/clearbox.config
PKG=linux-source-6.1
TARBALL=/usr/src/$PKG.tar.xz
CACHE=${CLEARBOX_CACHE:-/var/cache/clearbox}
SHARE=${CLEARBOX_SHARE:-/usr/share/clearbox}
JOBS=${JOBS:-$(nproc)}

[[ -f $FRAGMENT ]] || die "fragment not found: $FRAGMENT"
shopt -s nullglob
PATCHES=("$REPO"/guest/kernel/patches/*.patch)
shopt -u nullglob
PKG_VERSION=$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null) ||
    die "package $PKG is not installed (run scripts/install-deps.sh)"
[[ -f $TARBALL ]] || die "kernel source tarball missing: $TARBALL (reinstall $PKG)"

HASH=$(
    {
        printf 'fragment\0'; sha256sum <"$FRAGMENT"
        for p in "${PATCHES[@]}"; do
            printf 'patch\0%s\0' "$(basename "$p")"; sha256sum <"$p"
        done
        printf 'package\0%s=%s\0' "$PKG" "$PKG_VERSION"
        printf 'script\0'; sha256sum <"$SCRIPT"
    } | sha256sum | cut -d' ' -f1
)
KDIR=$CACHE/kernel
OUT=$KDIR/$HASH

mkdir -p "$KDIR" "$SHARE"
# One build at a time per cache (concurrent callers wait, then hit the cache).
exec 9>"$KDIR/.lock"
flock 9

install_file() { # src dst: atomic replace, skipped when identical
    local src=$1 dst=$2 tmp
    if [[ -f $dst ]] && cmp -s "$src" "$dst"; then return 0; fi
    tmp=$(mktemp "$dst.tmp.XXXXXX")
    cp "$src" "$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dst"
}

install_gen_init_cpio() {
    mkdir -p "$KDIR/bin"
    local dst=$KDIR/bin/gen_init_cpio tmp
    if [[ -x $dst ]] && cmp -s "$OUT/gen_init_cpio" "$dst"; then return 0; fi
    tmp=$(mktemp "$dst.tmp.XXXXXX")
    cp "$OUT/gen_init_cpio" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$dst"
}

if [[ -f $OUT/vmlinux && -x $OUT/gen_init_cpio ]]; then
    log "cache hit $HASH"
else
    log "cache miss $HASH: building (${PKG} ${PKG_VERSION}, -j$JOBS)"
    start=$SECONDS

    # Pristine source, extracted once per package version; builds use O=.
    SRC=$KDIR/src/$PKG_VERSION/$PKG
    if [[ ! -f $KDIR/src/$PKG_VERSION/.complete ]]; then
        rm -rf "$KDIR/src/$PKG_VERSION"
        mkdir -p "$KDIR/src/$PKG_VERSION"
        log "extracting $TARBALL"
        tar -xJf "$TARBALL" -C "$KDIR/src/$PKG_VERSION"
        [[ -f $SRC/Makefile ]] || die "unexpected tarball layout: no $SRC/Makefile"
        touch "$KDIR/src/$PKG_VERSION/.complete"
    fi

    # Patched builds get their own tree: hard links of the pristine one, with every file a
    # patch touches copied first (so that the pristine tree stays pristine).
    if ((${#PATCHES[@]})); then
        PSRC=$KDIR/src/$PKG_VERSION/patched-$HASH
        if [[ ! -f $PSRC.complete ]]; then
            rm -rf "$PSRC"
            cp -al "$SRC" "$PSRC"
            for p in "${PATCHES[@]}"; do
                while IFS= read -r f; do
                    [[ -f $PSRC/$f ]] && cp "$PSRC/$f" "$PSRC/$f.unlinked" && mv -f "$PSRC/$f.unlinked" "$PSRC/$f"
                done < <(sed -n 's#^+++ b/\([^[:space:]]*\).*#\1#p' "$p")
                patch -s -p1 -d "$PSRC" --no-backup-if-mismatch <"$p" ||
                    die "patch $(basename "$p") does not apply to $PKG $PKG_VERSION"
            done
            touch "$PSRC.complete"
        fi
        SRC=$PSRC
    fi

    BUILD=$KDIR/build-$HASH
    STAGE=$KDIR/.stage-$HASH
    LOG=$KDIR/build-$HASH.log
    cleanup() { rm -rf "$BUILD" "$STAGE"; }
    trap cleanup EXIT
    rm -rf "$BUILD" "$STAGE"
    mkdir -p "$BUILD" "$STAGE"

    export KBUILD_BUILD_USER=clearbox KBUILD_BUILD_HOST=clearbox
    kmake() { make -C "$SRC" O="$BUILD" "$@" >>"$LOG" 2>&1 ||
        { tail -n 40 "$LOG" >&2; die "make $* failed (full log: $LOG)"; }; }
    : >"$LOG"
    kmake tinyconfig
    (cd "$BUILD" && "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" \
        "$BUILD/.config" "$FRAGMENT") >>"$LOG" 2>&1 ||
        { tail -n 40 "$LOG" >&2; die "merge_config.sh failed (full log: $LOG)"; }
    kmake olddefconfig

    # Every option the fragment turns on must still be on after olddefconfig
    # (an unmet dependency silently drops it otherwise).
    missing=()
    while IFS= read -r opt; do
        grep -qx "$opt=y" "$BUILD/.config" || missing+=("${opt#CONFIG_}")
    done < <(sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=y[[:space:]]*$/\1/p' "$FRAGMENT")
    ((${#missing[@]} == 0)) ||
        die "options dropped by olddefconfig (unmet dependencies?): ${missing[*]}"
    # ...and every option it turns off must stay off (a `select` elsewhere could force it).
    forced=()
    while IFS= read -r opt; do
        grep -qE "^$opt=(y|m)$" "$BUILD/.config" && forced+=("${opt#CONFIG_}")
    done < <(sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set[[:space:]]*$/\1/p' "$FRAGMENT")
    ((${#forced[@]} == 0)) ||
        die "options the fragment turns off are on after olddefconfig: ${forced[*]}"

    kmake -j"$JOBS" vmlinux
    # Built as a host tool by usr/ (BLK_DEV_INITRD=y) on the way to vmlinux.
    [[ -x $BUILD/usr/gen_init_cpio ]] || die "usr/gen_init_cpio was not built"

    cp "$BUILD/vmlinux" "$STAGE/vmlinux"
    cp "$BUILD/usr/gen_init_cpio" "$STAGE/gen_init_cpio"
    cp "$BUILD/.config" "$STAGE/config"
    make -s -C "$SRC" O="$BUILD" kernelrelease >"$STAGE/kernelrelease" 2>>"$LOG"
    printf '%s=%s\n' "$PKG" "$PKG_VERSION" >"$STAGE/inputs"
    mv "$LOG" "$STAGE/build.log"
    rm -rf "$OUT"
    mv "$STAGE" "$OUT"
    cleanup
    trap - EXIT
    log "built in $((SECONDS - start)) s: $OUT"
fi

install_gen_init_cpio
install_file "$OUT/vmlinux" "$SHARE/vmlinux"
echo "$SHARE/vmlinux"
