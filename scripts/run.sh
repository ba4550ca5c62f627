#!/usr/bin/env bash
# Installs what is missing, builds trustlaunch, and runs the main job:
# measured-boot evidence (this machine's TCG event log, or a real log from
# shared/testdata: show, replay, extract), then the attestation service over
# HTTPS and a Trusted Launch VM — the tiny image built and signed with the
# platform's db key, booted unprivileged under OVMF Secure Boot with its own
# vTPM, attested by the service at boot — its verdict, baseline,
# recommendations and alerts, then the VM stopped.
source "$(dirname "$0")/lib.sh"
install_packages
require_rust
cd "$ROOT"
cargo build --release --locked -p trustlaunch-cli -p trustlaunch-agent
bin="$ROOT/target/release/trustlaunch"

live=/sys/kernel/security/tpm0/binary_bios_measurements
# securityfs reports size 0: probe by reading.
if [ "$(head -c 64 "$live" 2>/dev/null | wc -c)" -gt 0 ]; then
    log="$live"
    echo "== this machine's event log: $log"
else
    require_shared
    log="$SHARED/testdata/eventlogs/ga-sb_cert_eventlog"
    echo "== no readable event log on this machine; using a real one: $log"
fi
"$bin" eventlog show "$log"
echo "== replay"
"$bin" eventlog replay "$log" --json
echo "== boot evidence (Secure Boot state, authorities, boot applications)"
"$bin" eventlog evidence "$log" | head -n 40
echo "(full evidence: $bin eventlog evidence $log)"

export TRUSTLAUNCH_HOME="${TRUSTLAUNCH_HOME:-$ROOT/target/trustlaunch-home}"
images="$TRUSTLAUNCH_HOME/images"
echo "== this host (trustlaunch host doctor)"
"$bin" host doctor
echo "== a Trusted Launch VM (platform state in $TRUSTLAUNCH_HOME)"
if [ ! -f "$images/tiny/image.json" ]; then
    "$bin" image build tiny --out "$images/tiny"
fi
# The attestation service: it registers the host's VMs, attests each
# Trusted Launch VM at every boot (and every --interval seconds), enrolls it,
# learns its baseline and raises alerts.
port="${TRUSTLAUNCH_PORT:-8844}"
export TRUSTLAUNCH_SERVER="https://127.0.0.1:$port"
# HTTPS: the server makes the platform's TLS CA in the home on first start;
# the CLI trusts it from the home, curl is given it.
ca="$TRUSTLAUNCH_HOME/tls/ca.crt"
"$bin" host vm delete demo --yes >/dev/null 2>&1 || true
echo "== trustlaunch server on $TRUSTLAUNCH_SERVER (database $TRUSTLAUNCH_HOME/trustlaunch.db)"
"$bin" server --home "$TRUSTLAUNCH_HOME" --listen "127.0.0.1:$port" --interval 60 &
server=$!
# Stop the server on the way out, keeping this script's own exit status
# (the server's, killed by SIGTERM, is 143).
stop_server() {
    local rc=$?
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    exit "$rc"
}
trap stop_server EXIT
for _ in $(seq 100); do
    [ -f "$ca" ] && curl -fsS --cacert "$ca" "$TRUSTLAUNCH_SERVER/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
"$bin" host vm create demo --image "$images/tiny" --start --no-wait
echo "== waiting for the server to attest demo at boot"
for _ in $(seq 180); do
    "$bin" attestation show demo >/dev/null 2>&1 && break
    sleep 1
done
"$bin" attestation show demo
"$bin" baseline show demo | head -n 20
echo "== recommendations and alerts"
"$bin" security recommendations
"$bin" security alerts
"$bin" host vm stop demo
"$bin" host vm list
echo "== done: run the service yourself with: $bin server --home $TRUSTLAUNCH_HOME"
