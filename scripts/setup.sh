#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine needs, builds clearbox and its guest, and runs a
# demo: a container started by podman with clearbox as its runtime. Run as root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
"$root/scripts/demo.sh"
