#!/usr/bin/env bash
# Whole-process benchmark: `trustlaunch eventlog replay FILE --json` against
# tpm2-tools' `tpm2_eventlog FILE`, side by side with hyperfine, for every
# log of the shared corpus (the Windows attestation's base64 `Log.Raw` is
# extracted to a temporary file first). Process start-up, reading, parsing,
# replaying and printing are all measured; output goes to /dev/null.
#
# Prints a markdown table on stdout (hyperfine's own report goes to stderr)
# and keeps hyperfine's JSON export per file in $OUT.
#
#   scripts/bench-eventlog-cli.sh            # 5 warm-up runs, 50 runs
#   RUNS=200 WARMUP=10 scripts/bench-eventlog-cli.sh
#
# Environment: CORPUS (default ../shared/testdata/eventlogs), RUNS, WARMUP,
# OUT (default target/bench-eventlog-cli), TPM2_EVENTLOG (default
# tpm2_eventlog). Needs hyperfine, tpm2-tools and jq (Debian packages).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="${CORPUS:-$ROOT/../shared/testdata/eventlogs}"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
OUT="${OUT:-$ROOT/target/bench-eventlog-cli}"
TOOL="${TPM2_EVENTLOG:-tpm2_eventlog}"
OURS="$ROOT/target/release/trustlaunch"

die() { echo "bench-eventlog-cli: $*" >&2; exit 1; }

command -v hyperfine >/dev/null || die "hyperfine is not installed (apt-get install hyperfine)"
command -v "$TOOL" >/dev/null || die "$TOOL is not installed (apt-get install tpm2-tools)"
command -v jq >/dev/null || die "jq is not installed (apt-get install jq)"
[ -f "$CORPUS/expected.json" ] || die "no corpus at $CORPUS (set CORPUS)"

# hyperfine >= 1.13 runs commands without a shell (-N); older ones need the
# shell and subtract its start-up time.
HF_SHELL=()
if hyperfine --help 2>/dev/null | grep -q -- '--shell=none'; then
    HF_SHELL=(-N)
fi
HF_OUTPUT=()
if hyperfine --help 2>/dev/null | grep -q -- '--output'; then
    HF_OUTPUT=(--output=null)
fi

echo "== cargo build --release -p trustlaunch-cli" >&2
(cd "$ROOT" && cargo build --release -p trustlaunch-cli >&2)

mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# name<TAB>path of every log, sorted by name.
LIST="$TMP/list"
: >"$LIST"
for f in "$CORPUS"/*; do
    name="$(basename "$f")"
    case "$name" in
        README.md | expected.json) continue ;;
        *.json)
            jq -er '.Log.Raw' "$f" | base64 -d >"$TMP/$name.log.bin" \
                || die "$name: cannot extract Log.Raw"
            printf '%s\t%s\n' "$name (Log.Raw)" "$TMP/$name.log.bin" >>"$LIST"
            ;;
        *) printf '%s\t%s\n' "$name" "$f" >>"$LIST" ;;
    esac
done

ROWS="$TMP/rows"
: >"$ROWS"
slower=()
failing=()
while IFS=$'\t' read -r name path; do
    size="$(stat -c %s "$path")"
    "$OURS" eventlog replay "$path" --json >/dev/null \
        || die "$name: trustlaunch eventlog replay fails"
    ignore=()
    note=""
    rc=0
    "$TOOL" "$path" >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        ignore=(-i)
        if [ "$rc" -gt 128 ]; then
            note="tpm2_eventlog fails: killed by signal $((rc - 128))"
        else
            note="tpm2_eventlog fails: exit $rc"
        fi
        failing+=("$name")
    fi
    json="$OUT/$(echo "$name" | tr -c 'A-Za-z0-9._\n-' '_').json"
    echo "== $name ($size bytes)${note:+ [$note]}" >&2
    hyperfine "${HF_SHELL[@]}" "${HF_OUTPUT[@]}" "${ignore[@]}" \
        --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$json" \
        -n trustlaunch "$(printf '%q ' "$OURS" eventlog replay "$path" --json)" \
        -n tpm2_eventlog "$(printf '%q ' "$TOOL" "$path")" >&2
    ours_ms="$(jq -r '.results[0].mean * 1000' "$json")"
    ours_sd="$(jq -r '.results[0].stddev * 1000' "$json")"
    tool_ms="$(jq -r '.results[1].mean * 1000' "$json")"
    tool_sd="$(jq -r '.results[1].stddev * 1000' "$json")"
    ratio="$(jq -rn --argjson t "$tool_ms" --argjson o "$ours_ms" '$t / $o')"
    if jq -en --argjson r "$ratio" '$r < 1' >/dev/null; then
        slower+=("$name")
    fi
    printf '| %s | %s | %.3f ± %.3f | %.3f ± %.3f | %.2f | %s |\n' \
        "$name" "$size" "$ours_ms" "$ours_sd" "$tool_ms" "$tool_sd" "$ratio" "$note" >>"$ROWS"
done <"$LIST"

echo
echo "$RUNS runs after $WARMUP warm-up runs each, hyperfine ${HF_SHELL[*]:-(with shell)}, output to /dev/null; mean ± σ."
echo "ratio = tpm2_eventlog mean / trustlaunch mean (> 1: trustlaunch is faster)."
echo
echo "| file | size (bytes) | trustlaunch (ms) | tpm2_eventlog (ms) | ratio | note |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
cat "$ROWS"
echo
if [ "${#failing[@]}" -gt 0 ]; then
    echo "tpm2_eventlog exits non-zero on: ${failing[*]} (timed with hyperfine -i; its time is that of a failed run)."
fi
if [ "${#slower[@]}" -eq 0 ]; then
    echo "Goal (trustlaunch no slower than tpm2_eventlog on any file): HOLDS."
else
    echo "Goal (trustlaunch no slower than tpm2_eventlog on any file): DOES NOT HOLD, slower on: ${slower[*]}."
fi
echo "JSON exports: $OUT"
