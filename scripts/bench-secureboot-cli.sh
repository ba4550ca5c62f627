#!/usr/bin/env bash
# Whole-process benchmark of `trustlaunch secureboot` against the reference
# tools, side by side with hyperfine, on the signed Debian kernel
# (/boot/vmlinuz-*) and shim (shimx64.efi.signed):
#
#   hash:   trustlaunch secureboot hash FILE
#           vs pesign --hash -i FILE
#           vs osslsigncode verify -in FILE (it has no hash-only mode: it
#              computes the hash, checks the signature, then exits 1 for
#              want of a CA file; it refuses Debian's shim — two
#              WIN_CERTIFICATE entries — before hashing, so on shim its time
#              is that of an early failure)
#   verify: trustlaunch secureboot verify FILE --db DB.esl
#           vs sbverify --cert CERT.pem FILE
#           vs osslsigncode verify -CAfile CERT.pem -in FILE (kernel only)
#           kernel: the Debian Secure Boot CA (shim-unsigned's
#           /usr/share/shim/debian-uefi-ca.der); shim: the Microsoft db of
#           Debian's OVMF_VARS_4M.ms.fd (ours: both certificates as a db;
#           sbverify: the Microsoft Corporation UEFI CA 2011).
#
# Every command's exit status is checked once before timing. Prints a
# markdown table on stdout (hyperfine's report goes to stderr) and keeps
# hyperfine's JSON exports in $OUT.
#
#   scripts/bench-secureboot-cli.sh           # 5 warm-up runs, 50 runs
#   RUNS=100 WARMUP=10 scripts/bench-secureboot-cli.sh
#
# Environment: RUNS, WARMUP, OUT (default target/bench-secureboot-cli),
# KERNEL (default: the last /boot/vmlinuz-*), SHIM. Needs hyperfine, jq,
# openssl, pesign, osslsigncode, sbsigntool, ovmf, shim-signed,
# shim-unsigned, linux-image-amd64 (Debian packages).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
OUT="${OUT:-$ROOT/target/bench-secureboot-cli}"
KERNEL="${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort | tail -n 1)}"
SHIM="${SHIM:-/usr/lib/shim/shimx64.efi.signed}"
VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
DEBIAN_CA=/usr/share/shim/debian-uefi-ca.der
OURS="$ROOT/target/release/trustlaunch"

die() { echo "bench-secureboot-cli: $*" >&2; exit 1; }

for t in hyperfine:hyperfine jq:jq openssl:openssl pesign:pesign osslsigncode:osslsigncode \
    sbverify:sbsigntool; do
    command -v "${t%%:*}" >/dev/null || die "${t%%:*} is not installed (apt-get install ${t##*:})"
done
[ -n "$KERNEL" ] && [ -f "$KERNEL" ] || die "no /boot/vmlinuz-* (apt-get install linux-image-amd64)"
[ -f "$SHIM" ] || die "no $SHIM (apt-get install shim-signed)"
[ -f "$VARS" ] || die "no $VARS (apt-get install ovmf)"
[ -f "$DEBIAN_CA" ] || die "no $DEBIAN_CA (apt-get install shim-unsigned)"

echo "== cargo build --release -p trustlaunch-cli" >&2
(cd "$ROOT" && cargo build --release -p trustlaunch-cli >&2)

mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The databases and certificates.
openssl x509 -inform DER -in "$DEBIAN_CA" -out "$TMP/debian-ca.pem"
"$OURS" secureboot siglist create --cert "$DEBIAN_CA" -o "$TMP/debian-db.esl" >/dev/null
i=0
ms_certs=()
for hex in $("$OURS" secureboot vars export "$VARS" |
    jq -r '.variables[] | select(.name == "db") | .signatures[] | select(.kind == "X509") | .data'); do
    echo "$hex" | xxd -r -p >"$TMP/ms$i.der"
    ms_certs+=(--cert "$TMP/ms$i.der")
    if openssl x509 -inform DER -in "$TMP/ms$i.der" -noout -subject | grep -q "UEFI CA 2011"; then
        openssl x509 -inform DER -in "$TMP/ms$i.der" -out "$TMP/ms-uefi-ca-2011.pem"
    fi
    i=$((i + 1))
done
[ -f "$TMP/ms-uefi-ca-2011.pem" ] || die "no Microsoft Corporation UEFI CA 2011 in $VARS db"
"$OURS" secureboot siglist create "${ms_certs[@]}" -o "$TMP/ms-db.esl" >/dev/null

ROWS="$TMP/rows"
: >"$ROWS"
q() { printf '%q ' "$@"; }

# bench LABEL FILE NAME1 CMD1 NAME2 CMD2 [NAME3 CMD3]: time the commands in
# one hyperfine run; a row per reference tool with its ratio to ours.
bench() {
    local label="$1" file="$2"
    shift 2
    local names=() cmds=() args=() ignore=() notes=()
    while [ "$#" -gt 0 ]; do
        names+=("$1")
        cmds+=("$2")
        shift 2
    done
    for k in "${!cmds[@]}"; do
        local rc=0
        eval "${cmds[$k]}" >/dev/null 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            [ "$k" -eq 0 ] && die "$label: trustlaunch failed (exit $rc): ${cmds[$k]}"
            ignore=(-i)
            notes[$k]="${names[$k]} fails (exit $rc)"
        fi
        args+=(-n "${names[$k]}" "${cmds[$k]}")
    done
    local json="$OUT/$label.json"
    echo "== $label $(basename "$file")" >&2
    hyperfine -N --output=null --style basic "${ignore[@]}" --warmup "$WARMUP" --runs "$RUNS" \
        --export-json "$json" "${args[@]}" >&2
    local ours_ms ours_sd
    ours_ms="$(jq -r '.results[0].mean * 1000' "$json")"
    ours_sd="$(jq -r '.results[0].stddev * 1000' "$json")"
    for k in "${!cmds[@]}"; do
        [ "$k" -eq 0 ] && continue
        local t_ms t_sd ratio
        t_ms="$(jq -r ".results[$k].mean * 1000" "$json")"
        t_sd="$(jq -r ".results[$k].stddev * 1000" "$json")"
        ratio="$(jq -rn --argjson t "$t_ms" --argjson o "$ours_ms" '$t / $o')"
        printf '| %s | %s | %.3f ± %.3f | %s | %.3f ± %.3f | %.2f | %s |\n' \
            "$label" "$(basename "$file")" "$ours_ms" "$ours_sd" "${names[$k]}" "$t_ms" "$t_sd" \
            "$ratio" "${notes[$k]:-}" >>"$ROWS"
    done
}

for f in "$KERNEL" "$SHIM"; do
    bench hash "$f" \
        trustlaunch "$(q "$OURS" secureboot hash "$f")" \
        pesign "$(q pesign --hash -i "$f")" \
        osslsigncode "$(q osslsigncode verify -in "$f")"
done
bench verify "$KERNEL" \
    trustlaunch "$(q "$OURS" secureboot verify "$KERNEL" --db "$TMP/debian-db.esl")" \
    sbverify "$(q sbverify --cert "$TMP/debian-ca.pem" "$KERNEL")" \
    "osslsigncode -CAfile" "$(q osslsigncode verify -CAfile "$TMP/debian-ca.pem" -in "$KERNEL")"
bench verify "$SHIM" \
    trustlaunch "$(q "$OURS" secureboot verify "$SHIM" --db "$TMP/ms-db.esl")" \
    sbverify "$(q sbverify --cert "$TMP/ms-uefi-ca-2011.pem" "$SHIM")"

echo
echo "$RUNS runs after $WARMUP warm-up runs each, hyperfine -N, output to /dev/null; mean ± σ."
echo "ratio = tool mean / trustlaunch mean (> 1: trustlaunch is faster)."
echo
echo "| command | file | trustlaunch (ms) | tool | tool (ms) | ratio | note |"
echo "| --- | --- | ---: | --- | ---: | ---: | --- |"
cat "$ROWS"
echo
echo "JSON exports: $OUT"
