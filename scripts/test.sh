#!/usr/bin/env bash
# Runs the whole test suite: unit tests of every crate and the end-to-end tests in tests/
# (which start real masters and agents in network namespaces, so: as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
