#!/usr/bin/env bash
# Makes a two-certificate chain signed with RSASSA-PSS, which neither our
# vTPM CA (ECDSA) nor swtpm_localca (PKCS#1 v1.5) produce: a self-signed
# root (RSA-2048, PSS SHA-256, salt 32) and an EK-like leaf (RSA-2048, PSS
# SHA-384, salt 48), both valid for 100 years from when this runs.
#
# Usage: make-openssl-pss.sh OUTDIR
# Writes OUTDIR/pss-root.pem and OUTDIR/pss-leaf.pem; the keys are thrown away.
set -euo pipefail

out="${1:?usage: $0 OUTDIR}"
command -v openssl >/dev/null || { echo "error: openssl not found: apt-get install openssl" >&2; exit 2; }
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = trustlaunch PSS test root
[root_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
authorityKeyIdentifier = keyid
CNF

openssl req -x509 -config "$work/openssl.cnf" -extensions root_ext \
    -newkey rsa:2048 -nodes -keyout "$work/root.key" -days 36500 \
    -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 \
    -set_serial 1 -out "$out/pss-root.pem"
openssl req -new -config "$work/openssl.cnf" -subj "/CN=trustlaunch PSS test leaf" \
    -newkey rsa:2048 -nodes -keyout "$work/leaf.key" -out "$work/leaf.csr"
openssl x509 -req -in "$work/leaf.csr" -CA "$out/pss-root.pem" -CAkey "$work/root.key" \
    -extfile "$work/openssl.cnf" -extensions leaf_ext -set_serial 2 -days 36500 \
    -sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 -out "$out/pss-leaf.pem"
