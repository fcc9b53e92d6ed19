#!/usr/bin/env bash
# Prepares a fresh Debian bookworm machine (as root) to build, run and test Plinth.
# Idempotent: it installs only what is missing and rebuilds only what changed.
#   1. system packages from scripts/packages-*.txt, keeping backports families consistent
#   2. cargo-nextest
#   3. the release binary that scripts/standalone.sh runs (the test command builds its own)
#   4. a check that every tool the tests use runs (scripts/tool-checks.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages; the tests create network namespaces)" >&2
    exit 1
fi
step() { echo "setup.sh [$1/4] $2"; }

# 1. System packages.
step 1 "system packages"
mapfile -t wanted < <(sed -e 's/#.*//' scripts/packages-*.txt | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

# A machine may come with packages from bookworm-backports (a new machine of this kind has
# qemu-utils 10.x from there). Their siblings from the same source package must be the same
# version, or apt refuses the install (qemu-utils Breaks qemu-system-common < 8.0). So:
# source package -> installed backports version, and backports enabled when there is any.
declare -A bpo_version=()
while IFS=$'\t' read -r src version; do
    bpo_version[$src]=$version
done < <(dpkg-query -W -f='${db:Status-Abbrev}\t${source:Package}\t${Version}\n' 2>/dev/null |
    awk -F'\t' '$1 ~ /^ii/ && $3 ~ /~bpo/ {print $2 "\t" $3}')
backports_list=/etc/apt/sources.list.d/plinth-bookworm-backports.sources
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if [ "${#bpo_version[@]}" -gt 0 ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup.sh: packages from bookworm-backports are installed (${!bpo_version[*]}): enabling it for their siblings"
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$backports_list"
    fi
    apt-get update -qq
    # A missing package whose source has a backports version installed is taken at exactly
    # that version (or from backports when the binary's version differs, as with binNMUs).
    targets=()
    for pkg in "${missing[@]}"; do
        src=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '/^Source:/ {print $2; exit}')
        src=${src:-$pkg}
        version=${bpo_version[$src]:-}
        if [ -z "$version" ]; then
            targets+=("$pkg")
        elif apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
            targets+=("$pkg=$version")
        else
            targets+=("$pkg/bookworm-backports")
        fi
    done
    echo "setup.sh: installing ${targets[*]}"
    apt-get install -y --no-install-recommends "${targets[@]}"
else
    echo "setup.sh: all ${#wanted[@]} system packages present"
fi

# 2. Rust tooling: cargo is assumed; cargo-nextest is installed once.
step 2 "rust tooling"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# 3. The binary scripts/standalone.sh runs, built once here. The first build takes long
# (see README.md); cargo prints each crate as it compiles.
step 3 "building target/release/plinth"
cargo build --release -p plinth --bins

# 4. Every tool the tests use must run: one line per missing piece, then a failure.
step 4 "checking the tools the tests use"
failed=0
while IFS='|' read -r what check; do
    what=$(echo "$what" | xargs)
    [ -n "$what" ] || continue
    if ! bash -c "$check" >/dev/null 2>&1; then
        echo "setup.sh: MISSING $what (\`$(echo "$check" | xargs)\` failed)" >&2
        failed=1
    fi
done < <(sed -e 's/^#.*//' scripts/tool-checks.txt)
if [ "$failed" -ne 0 ]; then
    echo "setup.sh: some tools the tests use do not run (above)" >&2
    exit 1
fi
echo "setup.sh: done; run scripts/standalone.sh (a one-box cluster) or scripts/test.sh (the tests)"
