#!/usr/bin/env bash
# Runs fuzz targets one after another (or JOBS at a time) for SECONDS each,
# each from its committed seeds and regression corpus into a working corpus,
# and prints libFuzzer's final stats per target into LOGDIR.
#   fuzz/run-all.sh [target ...]        (default: every target)
#   SECONDS_PER_TARGET=600 JOBS=2 LOGDIR=/tmp/fuzz-logs fuzz/run-all.sh
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-600}"
jobs="${JOBS:-1}"
logdir="${LOGDIR:-target/fuzz-logs}"
mkdir -p "$logdir"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build
run_one() {
    local t="$1"
    mkdir -p "corpus/$t" "regression/$t"
    local extra=()
    [ -d "seeds/$t" ] && extra+=("seeds/$t")
    echo "== $t: start $(date -u +%FT%TZ)" > "$logdir/$t.log"
    cargo +nightly fuzz run "$t" "corpus/$t" "regression/$t" "${extra[@]}" -- \
        -max_len=131072 -max_total_time="$secs" -print_final_stats=1 >> "$logdir/$t.log" 2>&1
    echo "== $t: exit $? end $(date -u +%FT%TZ)" >> "$logdir/$t.log"
}
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true  # a crashed target must not stop the others
        running=$((running - 1))
    fi
done
wait || true
for t in "${targets[@]}"; do
    grep -E "^== |Done|DONE|stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY" "$logdir/$t.log" | sed "s/^/$t: /"
done
