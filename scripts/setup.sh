#!/usr/bin/env bash
# Prepares a fresh Debian bookworm machine (as root) to build, run and test Plinth.
# Idempotent: it installs only what is missing and rebuilds only what changed.
#   1. system packages from scripts/packages-*.txt, keeping backports families consistent
#   2. cargo-nextest, cargo-fuzz, and the browser tests' playwright-core (npm ci in tests/ui)
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
    # A missing package whose source has a backports version installed comes from backports
    # with its dependencies (-t: apt does not take a dependency from backports otherwise,
    # e.g. qemu-system-common and seabios for qemu-system-x86), in an install of its own so
    # that nothing else is pulled from there.
    from_backports=()
    from_stable=()
    for pkg in "${missing[@]}"; do
        src=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '/^Source:/ {print $2; exit}')
        if [ -n "${bpo_version[${src:-$pkg}]:-}" ]; then
            from_backports+=("$pkg")
        else
            from_stable+=("$pkg")
        fi
    done
    if [ "${#from_backports[@]}" -gt 0 ]; then
        echo "setup.sh: installing from bookworm-backports (siblings of installed packages): ${from_backports[*]}"
        apt-get install -y --no-install-recommends -t bookworm-backports "${from_backports[@]}"
    fi
    if [ "${#from_stable[@]}" -gt 0 ]; then
        echo "setup.sh: installing ${from_stable[*]}"
        apt-get install -y --no-install-recommends "${from_stable[@]}"
    fi
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
# cargo-fuzz for scripts/fuzz.sh (the tests' short fuzz run); it runs on the stable
# toolchain (no sanitizer), libFuzzer's C++ is built by g++.
cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    echo "setup.sh: installing cargo-fuzz $cargo_fuzz_version"
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
# playwright-core at the version tests/ui/package-lock.json pins (no browser download: the
# tests drive Debian's chromium).
if [ ! -d tests/ui/node_modules/playwright-core ] || [ tests/ui/package-lock.json -nt tests/ui/node_modules ]; then
    if ! command -v npm >/dev/null; then
        echo "setup.sh: npm not found; the browser tests need Node.js 20 or newer with npm" >&2
        exit 1
    fi
    echo "setup.sh: npm ci in tests/ui (playwright-core)"
    (cd tests/ui && npm ci --no-audit --no-fund)
fi

# 3. The binary scripts/standalone.sh runs, built once here. The first build takes long
# (see README.md); cargo prints each crate as it compiles.
step 3 "building target/release/plinth"
cargo build --release -p plinth --bins

# 4. Every tool the tests use must run: one line per missing piece, then a failure.
step 4 "checking the tools the tests use"
failed=0
trim() { local s="${1#"${1%%[![:space:]]*}"}"; echo "${s%"${s##*[![:space:]]}"}"; }
while IFS='|' read -r what check; do
    what=$(trim "$what")
    [ -n "$what" ] || continue
    check=$(trim "$check")
    if ! bash -c "$check" </dev/null >/dev/null 2>&1; then
        echo "setup.sh: MISSING $what (\`$check\` failed)" >&2
        failed=1
    fi
done < <(sed -e 's/^#.*//' scripts/tool-checks.txt)
if [ "$failed" -ne 0 ]; then
    echo "setup.sh: some tools the tests use do not run (above)" >&2
    exit 1
fi
echo "setup.sh: done; run scripts/standalone.sh (a one-box cluster) or scripts/test.sh (the tests)"
