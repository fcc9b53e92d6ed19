#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for SECONDS (default 10), one after the
# other, with cargo-fuzz on the stable toolchain (libFuzzer without a sanitizer; debug
# assertions and overflow checks on). Prints executions and coverage per target and
# fails when any target crashed, leaked a panic or timed out (the input is in
# fuzz/artifacts/TARGET/; README.md "Fuzzing" says what to do with it).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# New inputs go to a working corpus in the target dir (kept between runs, so long runs
# build on each other); the seeds in fuzz/corpus/TARGET/ are read, never written.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${1:-10}
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "fuzz.sh: SECONDS must be a positive whole number, not \"$seconds\"" >&2
    exit 2
fi
all=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^plinth-fuzz$')
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$all"; then
        echo "fuzz.sh: no fuzz target \"$t\"; the targets are: $(echo $all)" >&2
        exit 2
    fi
done
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed; run scripts/setup.sh (or: cargo install --locked cargo-fuzz)" >&2
    exit 1
fi

# Own directory: the instrumented build must not replace the workspace's artifacts.
work=$(realpath -m "${CARGO_TARGET_DIR:-target}")/fuzz
mkdir -p "$work"
flags=(--sanitizer none --debug-assertions --target-dir "$work/build")

echo "fuzz.sh: building ${#targets[@]} fuzz targets ($(rustc --version))"
start=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "fuzz.sh: built in $(($(date +%s) - start)) s"

# tar_layer writes a layer per input under TMPDIR: on tmpfs when there is one (on a busy
# ext4 disk it runs 20 times slower), in a directory of its own, removed afterwards.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=$work
TMPDIR=$(mktemp -d "$shm/plinth-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
summary=()
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    log="$work/$t.log"
    echo "fuzz.sh: $t for ${seconds} s"
    status=0
    (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=30 -max_len=16384 -print_final_stats=1) >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # The last status line: "#N DONE cov: C ft: F corp: U/S ..." (or the last pulse).
    line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$line")
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status)"
        failed+=("$t")
        echo "fuzz.sh: $t failed; the end of its log ($log):" >&2
        tail -40 "$log" >&2
    fi
    summary+=("$(printf '%-16s %12s %10s %8s %8s %8s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
    # What a crashed unpack left behind.
    find "$TMPDIR" -mindepth 1 -delete
done

printf '%-16s %12s %10s %8s %8s %8s  %s\n' target executions "execs/s" cov ft corpus result
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no crash"
