#!/usr/bin/env python3
"""Turn one recorded trustlaunch attestation file into a request body for
Keylime's stateless evidence endpoint (POST /v2.6/verify/evidence, type "tpm").

Usage:
  make_request.py ATTESTATION_JSON OUT_BODY_JSON [--mb-policy FILE] [--tamper-nonce]
                  [--keylime-policy PATH] [--no-mb-policy]

The measured-boot policy (Keylime's "example" policy reference state) is made by
Keylime's own tool, `keylime-policy create measured-boot -e <binary log>`, from the
same event log, unless --mb-policy gives a ready one. The tool is looked up as
$KEYLIME_VENV/bin/keylime-policy (default <repo>/target/keylime-venv).

Encodings (checked against keylime 7.14.3, keylime/tpm/tpm_util.py, tpm_main.py,
cloud_verifier_tornado.py VerifyEvidenceHandler):
  quote    "r" + b64(TPMS_ATTEST) + ":" + b64(TPMT_SIGNATURE) + ":" + b64(pcrblob)
           pcrblob = tpm2-tools' in-memory (little-endian, unmarshalled) layout:
             TPML_PCR_SELECTION { u32 count; 16 x TPMS_PCR_SELECTION {u16 hash; u8 sizeofSelect;
             u8 pcrSelect[4]; u8 pad} }, u32 n_digests, n x TPML_DIGEST { u32 count;
             8 x TPM2B_DIGEST {u16 size; u8 buffer[64]} }
  nonce    base64 of the raw qualifying data (keylime compares it with TPMS_ATTEST.extraData)
  tpm_ak   base64 of TPM2B_PUBLIC (u16 BE size + our TPMT_PUBLIC)
  tpm_ek   base64 of TPM2B_PUBLIC (not checked by keylime on this endpoint, must be non-empty)
  mb_log   base64 of the binary TCG2 event log
  mb_policy  JSON *string* of the refstate
"""

import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

TPM_ALG_SHA256 = 0x000B


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def parse_selection(sel: bytes):
    """TPML_PCR_SELECTION (TPM wire format, big-endian) -> [(hash_alg, [pcr...])]"""
    (count,) = struct.unpack_from(">I", sel, 0)
    o = 4
    out = []
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", sel, o)
        o += 3
        bits = sel[o : o + size]
        o += size
        pcrs = [i for i in range(8 * size) if bits[i // 8] & (1 << (i % 8))]
        out.append((alg, size, pcrs))
    return out


def build_pcrblob(selection, values_by_alg) -> bytes:
    """tpm2-tools PCR output format that keylime's __get_pcrs_from_blob parses."""
    if len(selection) > 16:
        raise ValueError("too many banks")
    blob = struct.pack("<I", len(selection))
    for i in range(16):
        if i < len(selection):
            alg, size, pcrs = selection[i]
            mask = 0
            for p in pcrs:
                mask |= 1 << p
            if size != 3:
                raise ValueError("keylime only accepts sizeofSelect 3")
            blob += struct.pack("<HB", alg, 3) + mask.to_bytes(4, "little") + b"\x00"
        else:
            blob += b"\x00" * 8
    digests = []
    for alg, _size, pcrs in selection:
        vals = values_by_alg[alg]
        for p in sorted(pcrs):
            digests.append(vals[p])
    chunks = [digests[i : i + 8] for i in range(0, len(digests), 8)]
    blob += struct.pack("<I", len(chunks))
    for ch in chunks:
        blob += struct.pack("<I", len(ch))
        for j in range(8):
            d = ch[j] if j < len(ch) else b""
            blob += struct.pack("<H", len(d)) + d.ljust(64, b"\x00")
    return blob


def make_mb_policy(event_log: bytes, secure_boot: bool, tool: str) -> str:
    with tempfile.TemporaryDirectory() as td:
        el = os.path.join(td, "eventlog.bin")
        out = os.path.join(td, "mb_refstate.json")
        with open(el, "wb") as f:
            f.write(event_log)
        cmd = [tool, "create", "measured-boot", "-e", el, "-o", out]
        if not secure_boot:
            cmd.append("--without-secureboot")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(out):
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit(f"keylime-policy failed: {' '.join(cmd)}")
        # keylime-policy logs some complaints (e.g. a UKI boot has 1 UEFI app, not 3) but still writes a file
        for line in (r.stdout + r.stderr).splitlines():
            if "Expected" in line:
                sys.stderr.write(f"keylime-policy: {line}\n")
        with open(out) as f:
            return json.dumps(json.load(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attestation")
    ap.add_argument("out")
    ap.add_argument("--mb-policy", help="use this refstate JSON file instead of generating one")
    ap.add_argument("--no-mb-policy", action="store_true", help="send an empty-object mb_policy ({}): no log/PCR checks")
    ap.add_argument("--tamper-nonce", action="store_true", help="flip one bit in the nonce (must be rejected)")
    ap.add_argument(
        "--keylime-policy",
        default=os.path.join(os.environ.get("KEYLIME_VENV", os.path.join(REPO, "target", "keylime-venv")), "bin", "keylime-policy"),
    )
    a = ap.parse_args()

    with open(a.attestation) as f:
        doc = json.load(f)
    ev = doc["evidence"]
    h = bytes.fromhex  # every byte field of our evidence is lowercase hex

    nonce = bytearray(h(ev["nonce"]))
    if a.tamper_nonce:
        nonce[0] ^= 0x01

    selection = parse_selection(h(ev["pcr_selection"]))
    values_by_alg = {}
    for bank in ev["pcrs"]:
        values_by_alg[bank["alg"]] = {int(i): h(v) for i, v in bank["values"]}
    for alg, _s, pcrs in selection:
        missing = [p for p in pcrs if p not in values_by_alg.get(alg, {})]
        if missing:
            raise SystemExit(f"pcr values missing for alg {alg:#x}: {missing}")
    if [s[0] for s in selection] != [TPM_ALG_SHA256]:
        raise SystemExit(f"expected one sha256 bank, got {selection}")

    quote = "r" + ":".join(
        [b64(h(ev["quote_attest"])), b64(h(ev["quote_signature"])), b64(build_pcrblob(selection, values_by_alg))]
    )
    event_log = h(ev["event_log"])

    if a.no_mb_policy:
        mb_policy = "{}"
    elif a.mb_policy:
        with open(a.mb_policy) as f:
            mb_policy = json.dumps(json.load(f))
    else:
        mb_policy = make_mb_policy(event_log, bool(ev.get("secure_boot", 1)), a.keylime_policy)

    body = {
        "type": "tpm",
        "data": {
            "quote": quote,
            "nonce": b64(bytes(nonce)),
            "hash_alg": "sha256",
            "tpm_ek": b64(tpm2b(h(ev["ek_public"]))),
            "tpm_ak": b64(tpm2b(h(ev["ak_public"]))),
            "mb_log": b64(event_log),
            "mb_policy": mb_policy,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(body, f, separators=(",", ":"))
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes), pcrs {selection[0][2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
