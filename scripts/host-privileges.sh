#!/usr/bin/env bash
# Print what each host process of a running VM container holds, as a Markdown table
# (the table in docs/SECURITY.md comes from this):
#
#   scripts/host-privileges.sh CONTAINER_ID [STATE_ROOT]     # STATE_ROOT: /run/clearbox
#
# Columns: role, pid, Uid (real), Gid (real), CapEff, CapPrm, CapBnd, CapAmb, NoNewPrivs,
# Seccomp (0 none, 2 filter), whether its mount / network / pid namespace is the host's,
# its root directory as seen from the host, and its memory cgroup.
set -euo pipefail

id=${1:?usage: host-privileges.sh CONTAINER_ID [STATE_ROOT]}
root=${2:-/run/clearbox}
dir="$root/$id"
[[ -d $dir ]] || { echo "no container $id in $root" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is needed" >&2; exit 1; }

shim=$(jq -r .pid "$dir/state.json")
base=$(jq -r .base "$dir/vm-box.json")

field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
ns_same() { [[ "$(readlink "/proc/$1/ns/$2")" == "$(readlink "/proc/self/ns/$2")" ]] && echo host || echo own; }
row() {
    local role=$1 pid=$2
    [[ -r /proc/$pid/status ]] || return 0
    local cg
    cg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' "/proc/$pid/cgroup")
    [[ -n $cg ]] || cg=$(awk -F: '$2 == "" { print $3 }' "/proc/$pid/cgroup")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$role" "$pid" "$(field "$pid" Uid)" "$(field "$pid" Gid)" \
        "$(field "$pid" CapEff)" "$(field "$pid" CapPrm)" "$(field "$pid" CapBnd)" \
        "$(field "$pid" CapAmb)" "$(field "$pid" NoNewPrivs)" "$(field "$pid" Seccomp)" \
        "$(ns_same "$pid" mnt)" "$(ns_same "$pid" net)" "$(ns_same "$pid" pid)" \
        "$(readlink "/proc/$pid/root")" "$cg"
}

echo "| process | pid | Uid | Gid | CapEff | CapPrm | CapBnd | CapAmb | NoNewPrivs | Seccomp | mnt ns | net ns | pid ns | root | memory cgroup |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
row shim "$shim"
jq -r '.processes[] | "\(.role) \(.pid)"' "$base/vm/vm.json" | while read -r role pid; do
    row "$role" "$pid"
    for child in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
        row "$role (child)" "$child"
    done
done
