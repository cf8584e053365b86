#!/usr/bin/env bash
# Pack a minimal initramfs (cpio newc) whose /init is the given static binary.
#
# Usage: scripts/build-initramfs.sh AGENT_BINARY [OUT]
#   OUT defaults to ${CLEARBOX_SHARE:-/usr/share/clearbox}/initramfs.img.
#
# Contents, nothing else (no busybox, no libraries):
#   /init          AGENT_BINARY, mode 0755
#   /dev           0755, with /dev/console (char 5,1, 0600)
#   /proc /sys /run /tmp   mount points (0755; /tmp 1777)
#
# Uses the kernel tree's usr/gen_init_cpio, which writes device nodes from a
# text list, so no root and no mknod are needed. It is taken from $GEN_INIT_CPIO,
# else ${CLEARBOX_CACHE:-/var/cache/clearbox}/kernel/bin/gen_init_cpio (left there
# by scripts/build-guest-kernel.sh), else built once from the linux-source
# tarball's single-file usr/gen_init_cpio.c.
#
# Deterministic: all mtimes are $SOURCE_DATE_EPOCH (default 0), owners 0:0,
# inode numbers sequential. CLEARBOX_INITRAMFS_GZIP=1 gzips the archive
# (gzip -n, so still deterministic); the default is uncompressed, which the
# kernel unpacks fastest.
set -euo pipefail

die() { echo "build-initramfs: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: build-initramfs.sh AGENT_BINARY [OUT]"
AGENT=$1
SHARE=${CLEARBOX_SHARE:-/usr/share/clearbox}
OUT=${2:-$SHARE/initramfs.img}
CACHE=${CLEARBOX_CACHE:-/var/cache/clearbox}
EPOCH=${SOURCE_DATE_EPOCH:-0}

[[ -f $AGENT ]] || die "agent binary not found: $AGENT"
[[ -x $AGENT ]] || die "agent binary is not executable: $AGENT"
# The kernel execs /init before anything is mounted: it must be a static ELF.
[[ $(head -c4 "$AGENT" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] ||
    die "agent binary is not an ELF executable: $AGENT"
if command -v readelf >/dev/null && readelf -lW "$AGENT" 2>/dev/null | grep -q 'INTERP'; then
    die "agent binary is dynamically linked (needs a static build): $AGENT"
fi
[[ $EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH is not a number: $EPOCH"

find_gen_init_cpio() {
    if [[ -n ${GEN_INIT_CPIO:-} ]]; then
        [[ -x $GEN_INIT_CPIO ]] || die "GEN_INIT_CPIO is not executable: $GEN_INIT_CPIO"
        echo "$GEN_INIT_CPIO"; return
    fi
    local bin=$CACHE/kernel/bin/gen_init_cpio
    if [[ ! -x $bin ]]; then
        local tarball=/usr/src/linux-source-6.1.tar.xz tmpd
        [[ -f $tarball ]] ||
            die "no gen_init_cpio: run scripts/build-guest-kernel.sh (or install linux-source-6.1)"
        mkdir -p "$CACHE/kernel/bin"
        tmpd=$(mktemp -d "$CACHE/kernel/bin/.gen.XXXXXX")
        tar -xJf "$tarball" -C "$tmpd" --strip-components=2 \
            linux-source-6.1/usr/gen_init_cpio.c ||
            { rm -rf "$tmpd"; die "could not extract gen_init_cpio.c from $tarball"; }
        cc -O2 -o "$tmpd/gen_init_cpio" "$tmpd/gen_init_cpio.c" ||
            { rm -rf "$tmpd"; die "could not compile gen_init_cpio.c"; }
        mv -f "$tmpd/gen_init_cpio" "$bin"
        rm -rf "$tmpd"
    fi
    echo "$bin"
}
GEN=$(find_gen_init_cpio)

OUT_DIR=$(dirname "$OUT")
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
TMP_OUT=
cleanup() { rm -rf "$WORK"; [[ -z $TMP_OUT ]] || rm -f "$TMP_OUT"; }
trap cleanup EXIT

# gen_init_cpio records a file's own mtime and splits list lines on spaces:
# stage a copy with a fixed mtime under a space-free path.
cp "$AGENT" "$WORK/init"
touch -h -d "@$EPOCH" "$WORK/init"
cat >"$WORK/list" <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0555 0 0
dir /sys 0555 0 0
dir /run 0755 0 0
dir /tmp 1777 0 0
file /init $WORK/init 0755 0 0
EOF

TMP_OUT=$(mktemp "$OUT.tmp.XXXXXX")
if [[ ${CLEARBOX_INITRAMFS_GZIP:-0} == 1 ]]; then
    "$GEN" -t "$EPOCH" "$WORK/list" | gzip -n -9 >"$TMP_OUT"
else
    "$GEN" -t "$EPOCH" "$WORK/list" >"$TMP_OUT"
fi
chmod 0644 "$TMP_OUT"
mv -f "$TMP_OUT" "$OUT"
TMP_OUT=
echo "$OUT"
