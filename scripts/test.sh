#!/usr/bin/env bash
# Runs the whole test suite: the format and lint gates, then the unit tests of every crate
# and the end-to-end tests in tests/ (which start real masters and agents in network
# namespaces, so: as root). Arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
