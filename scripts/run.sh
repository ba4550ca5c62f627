#!/usr/bin/env bash
# Installs what is missing, builds trustlaunch, and runs the main job. At this
# stage the main job is measured-boot evidence: read this machine's TCG event
# log (or, where it has none, a real log from shared/testdata), show it,
# replay it, and extract the boot evidence.
source "$(dirname "$0")/lib.sh"
install_packages
require_rust
cd "$ROOT"
cargo build --release --locked -p trustlaunch-cli
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
