#!/usr/bin/env bash
# Whole-process benchmark: `trustlaunch tpm quote-verify` against
# tpm2-tools' `tpm2_checkquote`, side by side with hyperfine, on the same
# quotes: an RSA-2048 (RSASSA-SHA256) and an ECC P-256 (ECDSA-SHA256) AK
# quote over sha256 PCRs 0-7, made by a real swtpm started here, plus the
# real Windows Shielded VM quote of ../shared/testdata (RSA-2048, SHA-1).
#
#   scripts/bench-quote-cli.sh          (RUNS=100 WARMUP=10 by default)
# Prints a markdown table; needs swtpm, tpm2-tools, hyperfine, jq, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-100}"
WARMUP="${WARMUP:-10}"
OUT="${OUT:-$ROOT/target/bench-quote-cli}"
for t in swtpm tpm2_quote tpm2_checkquote hyperfine jq python3; do
    command -v "$t" >/dev/null || { echo "bench-quote-cli: $t is not installed" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -p trustlaunch-cli >&2)
OURS="$ROOT/target/release/trustlaunch"
WORK="$(mktemp -d)"
PORT=$(( 20000 + RANDOM % 20000 ))
swtpm socket --tpm2 --tpmstate dir="$WORK" --server type=tcp,port=$PORT,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
SWTPM=$!
trap 'kill $SWTPM 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
cd "$WORK"
flush() { tpm2_flushcontext -t >/dev/null 2>&1 || true; }
NONCE=c0ffee0123456789
for kind in rsa ecc; do
    scheme=rsassa; [ "$kind" = ecc ] && scheme=ecdsa
    tpm2_createek -c ek.ctx -G "$kind" -u ek.pub >/dev/null; flush
    tpm2_createak -C ek.ctx -c "ak-$kind.ctx" -G "$kind" -g sha256 -s "$scheme" -u "ak-$kind.pub" -f tss >/dev/null; flush
    tpm2_quote -c "ak-$kind.ctx" -l sha256:0,1,2,3,4,5,6,7 -q "$NONCE" -m "$kind.msg" -s "$kind.sig" \
        -o "$kind.pcrs" -g sha256 >/dev/null; flush
done
# The Windows quote, in tpm2-tools' file formats.
python3 - "$ROOT/../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json" <<'PY'
import base64, json, struct, sys
d = json.load(open(sys.argv[1]))
ak = base64.b64decode(d["AK"]["Public"])
open("ak-win.pub", "wb").write(struct.pack(">H", len(ak)) + ak)
open("win.msg", "wb").write(base64.b64decode(d["Quote"]["Quote"]))
open("win.sig", "wb").write(base64.b64decode(d["Quote"]["Signature"]))
pcrs = {str(p["Index"]): base64.b64decode(p["Digest"]).hex() for p in d["Log"]["PCRs"]}
json.dump({"pcrs": {"sha1": pcrs}}, open("win.json", "w"))
# tpm2-tools' PCR file: TPML_PCR_SELECTION image, then TPML_DIGESTs of 8.
sel = struct.pack("<I", 1) + struct.pack("<HB4sB", 0x0004, 3, b"\xff\xff\xff\x00", 0) + b"\0" * 8 * 15
vals = [bytes.fromhex(pcrs[str(i)]) for i in range(24)]
lists = [vals[i:i + 8] for i in range(0, 24, 8)]
body = struct.pack("<I", len(lists))
for l in lists:
    body += struct.pack("<I", len(l))
    for j in range(8):
        v = l[j] if j < len(l) else b""
        body += struct.pack("<H", len(v)) + v.ljust(64, b"\0")
open("win.pcrs", "wb").write(sel + body)
PY
mkdir -p "$OUT"
echo "| quote | trustlaunch (ms) | tpm2_checkquote (ms) | ratio |"
echo "| --- | ---: | ---: | ---: |"
for q in rsa ecc win; do
    hash=sha256; nonce="$NONCE"; [ "$q" = win ] && { hash=sha1; nonce=""; }
    ours_pcrs="$q.pcrs"
    # hyperfine -N splits on spaces without a shell: an empty nonce is a file.
    nonce_arg=(--nonce "$nonce"); [ -z "$nonce" ] && nonce_arg=(--nonce-file /dev/null)
    tool="tpm2_checkquote -u ak-$q.pub -m $q.msg -s $q.sig -f $q.pcrs -g $hash"
    [ -n "$nonce" ] && tool="$tool -q $nonce"
    # Both must accept the quote before timing.
    "$OURS" tpm quote-verify --ak "ak-$q.pub" --quote "$q.msg" --signature "$q.sig" "${nonce_arg[@]}" --pcrs "$ours_pcrs" >/dev/null
    $tool >/dev/null
    hyperfine -N --output=null --style none --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/$q.json" \
        -n trustlaunch "$OURS tpm quote-verify --ak ak-$q.pub --quote $q.msg --signature $q.sig ${nonce_arg[*]} --pcrs $ours_pcrs" \
        -n tpm2_checkquote "$tool" >&2
    ours=$(jq '.results[0].mean * 1000' "$OUT/$q.json"); theirs=$(jq '.results[1].mean * 1000' "$OUT/$q.json")
    printf '| %s | %.3f | %.3f | %.2f |\n' "$q" "$ours" "$theirs" "$(echo "$theirs / $ours" | bc -l)"
done
