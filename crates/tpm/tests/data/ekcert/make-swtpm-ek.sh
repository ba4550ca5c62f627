#!/usr/bin/env bash
# Makes a real swtpm EK certificate chain: a TPM 2.0 state with RSA-2048 and
# ECC EKs, their certificates issued by swtpm_localca, and the localca's
# root and intermediate. Everything lives in a fresh temporary directory:
# the system's /var/lib/swtpm-localca is never used.
#
# Usage: make-swtpm-ek.sh OUTDIR
# Writes OUTDIR/ek-rsa2048.der, OUTDIR/ek-secp384r1.der (as swtpm_setup's
# --write-ek-cert-files writes them), OUTDIR/localca-root.pem,
# OUTDIR/localca-issuer.pem and OUTDIR/versions.txt.
set -euo pipefail

out="${1:?usage: $0 OUTDIR}"
for tool in swtpm swtpm_setup swtpm_localca; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found: apt-get install swtpm swtpm-tools" >&2
        exit 2
    }
done
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/state" "$work/localca" "$work/certs"

cat >"$work/swtpm-localca.conf" <<CONF
statedir = $work/localca
signingkey = $work/localca/signkey.pem
issuercert = $work/localca/issuercert.pem
certserial = $work/localca/certserial
CONF
: >"$work/swtpm-localca.options"
cat >"$work/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/swtpm-localca.conf
create_certs_tool_options = $work/swtpm-localca.options
active_pcr_banks = sha256
CONF

swtpm_setup --tpm2 --tpmstate "$work/state" --create-ek-cert \
    --config "$work/swtpm_setup.conf" --write-ek-cert-files "$work/certs" \
    --logfile "$work/setup.log" || { cat "$work/setup.log" >&2; exit 1; }

cp "$work/certs/ek-rsa2048.crt" "$out/ek-rsa2048.der"
cp "$work/certs/ek-secp384r1.crt" "$out/ek-secp384r1.der"
# swtpm_localca makes a root CA and an intermediate ("issuer") that signs.
cp "$work/localca/swtpm-localca-rootca-cert.pem" "$out/localca-root.pem"
cp "$work/localca/issuercert.pem" "$out/localca-issuer.pem"
# swtpm_setup 0.7.1 exits 1 after printing its version: capture, don't judge.
{
    swtpm --version || true
    swtpm_setup --version || true
} >"$out/versions.txt"
