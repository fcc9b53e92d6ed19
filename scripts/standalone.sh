#!/usr/bin/env bash
# The main job: a one-box cluster (master + agent in one process) on embedded defaults:
# API on :8080, agent on :5051, state under /var/lib/plinth. Extra flags are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p plinth --bins
exec target/release/plinth standalone "$@"
