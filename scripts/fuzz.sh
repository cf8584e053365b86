#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/, bodies in crates/clearbox-fuzz) with libFuzzer.
#
#   scripts/fuzz.sh all [SECONDS]      every target, SECONDS each (default 45): what CI runs
#   scripts/fuzz.sh TARGET [SECONDS]   one target (default 600 s: the longer run)
#   scripts/fuzz.sh list               the targets
#
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use -Zsanitizer. Installs
# cargo-fuzz when missing. A crash fails the run; libFuzzer leaves the input in
# fuzz/artifacts/<target>/. Keep it as a regression test: copy it to fuzz/regressions/<target>/
# (replayed by `cargo test -p clearbox-fuzz`), then fix the bug.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets=(spec_json state_json config_toml agent_request agent_reply)
die() { echo "fuzz.sh: $*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: fuzz.sh all|list|TARGET [SECONDS]"
what=$1
if [[ $what == list ]]; then
    printf '%s\n' "${targets[@]}"
    exit 0
fi
if [[ $what == all ]]; then
    secs=${2:-45}
    run=("${targets[@]}")
else
    secs=${2:-600}
    printf '%s\n' "${targets[@]}" | grep -qx -- "$what" || die "unknown target $what (try: list)"
    run=("$what")
fi
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "SECONDS must be a positive number, got $secs"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# The sanitizer build of every dependency is long on 2 cores: keep it outside the checkout, so
# later runs on the same machine (CI in a fresh clone) rebuild only what changed.
target_dir=${CLEARBOX_FUZZ_TARGET_DIR:-${CLEARBOX_CACHE:-/var/cache/clearbox}/fuzz-target}
mkdir -p "$target_dir"
cd "$root/fuzz"
echo "== building fuzz targets (target dir $target_dir)" >&2
cargo fuzz build -O --target-dir "$target_dir"
status=0
for t in "${run[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus"
    echo "== fuzzing $t for ${secs}s" >&2
    # The socket targets keep a server and connection threads alive across inputs (by design):
    # LeakSanitizer would report those as leaks. agent_request runs with the default memory
    # limit again since the agent's server releases connections that end mid-request
    # (docs/SECURITY.md); agent_reply (ttrpc's client threads per input) keeps the larger one.
    leaks=1 rss=2048
    case $t in
        agent_request) leaks=0 ;;
        agent_reply) leaks=0 rss=6144 ;;
    esac
    # The kept inputs seed the corpus (read only: new finds go to corpus/$t).
    if ! ASAN_OPTIONS="detect_leaks=$leaks" cargo fuzz run -O --target-dir "$target_dir" "$t" "$corpus" "regressions/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=$rss -detect_leaks=$leaks -timeout=10 -print_final_stats=1; then
        echo "fuzz.sh: $t FAILED: see fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
