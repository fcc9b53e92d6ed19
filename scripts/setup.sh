#!/usr/bin/env bash
# Prepares a fresh Debian machine (as root) to build, run and test Plinth. Idempotent:
# it installs only what is missing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages; the tests create network namespaces)" >&2
    exit 1
fi

# 1. System packages from every scripts/packages-*.txt (other areas add their own lists).
mapfile -t wanted < <(sed -e 's/#.*//' scripts/packages-*.txt | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "setup.sh: all ${#wanted[@]} system packages present"
fi

# 2. Rust tooling: cargo is assumed; cargo-nextest is installed once.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# 3. The binary (the debug build the tests use; scripts/standalone.sh builds release).
cargo build -p plinth --bins
echo "setup.sh: done"
