#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — build every fuzz target once (stable Rust, no
# sanitizer) and run each for SECONDS (default 60) over a scratch copy of its corpus,
# one after another. Prints executions, executions per second, coverage and corpus size
# per target; fails if any target crashed, timed out or ran out of memory (the input that
# did is kept in fuzz/artifacts/TARGET/). Seeds in fuzz/corpus/ are only read: what the
# fuzzer finds goes to fuzz/target/run-corpus/TARGET/, kept between runs.
#
# A one-hour campaign on one target: fuzz/run.sh 3600 csr
#
# FUZZ_CODEGEN_UNITS=16 builds faster and runs somewhat slower (cargo-fuzz's default is 1);
# the CI smoke run uses it. The build goes to fuzz/target whatever CARGO_TARGET_DIR says.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_EACH="${1:-60}"
shift || true
[[ $SECONDS_EACH =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN="target/$TRIPLE/release"
BUILD=(--sanitizer none --target-dir target)
if [[ -n ${FUZZ_CODEGEN_UNITS:-} ]]; then
    BUILD+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi

if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

echo "==== building ${#TARGETS[@]} fuzz targets ($(rustc --version))"
BUILD_STARTED=$SECONDS
# --sanitizer none: the only cargo-fuzz build that needs no nightly flag (-Zsanitizer).
if [[ $# -gt 0 ]]; then
    for t in "${TARGETS[@]}"; do cargo fuzz build "${BUILD[@]}" "$t"; done
else
    cargo fuzz build "${BUILD[@]}"
fi
echo "==== built in $((SECONDS - BUILD_STARTED))s"

declare -a ROWS=()
FAILED=()
for t in "${TARGETS[@]}"; do
    scratch="target/run-corpus/$t"
    mkdir -p "$scratch" "artifacts/$t" corpus/"$t"
    log="target/run-corpus/$t.log"
    echo "==== $t: ${SECONDS_EACH}s"
    status=0
    "$BIN/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "$scratch" "corpus/$t" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    verdict=ok
    if [[ $status != 0 ]] || grep -qE '^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer|panicked at' "$log"; then
        verdict="FAILED (exit $status)"
        FAILED+=("$t")
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written|^Base64' "$log" | head -8 | sed 's/^/    /'
    fi
    ROWS+=("$(printf '%-14s %6s %12s %8s %6s %7s %-14s %s' "$t" "$SECONDS_EACH" \
        "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")")
done

echo
printf '%-14s %6s %12s %8s %6s %7s %-14s %s\n' target seconds executions exec/s cov ft corpus result
printf '%s\n' "${ROWS[@]}"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "failed: ${FAILED[*]} (inputs in fuzz/artifacts/; logs in fuzz/target/run-corpus/)"
    exit 1
fi
