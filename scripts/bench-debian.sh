#!/usr/bin/env bash
# The Debian image's figures, measured on this machine (root):
#  1. `trustlaunch image build debian` with an empty package cache (cold),
#     then again with the cache it filled (warm); the disk's size;
#  2. boot of a Trusted Launch VM from the image (OVMF Secure Boot,
#     Debian's shim -> grub -> kernel, its vTPM) from `host vm create` to
#     the attestation service's "healthy" verdict, against bare QEMU on
#     the same disk (plain OVMF, no Secure Boot, no vTPM, no agent's
#     attestation) from start to the serial console's login prompt;
#  3. the guest agent's memory and CPU inside the guest (systemd's
#     accounting, over SSH), after boot and after 20 more attestations;
#  4. `trustlaunch image import` of the image's disk (copy, inspection of
#     GPT, ESP and root file system, the chain against both templates,
#     the disk's SHA-256), RUNS times.
#
#   sudo scripts/bench-debian.sh        (RUNS=3 boots of each kind)
#   sudo IMPORT_ONLY=path/disk.raw scripts/bench-debian.sh   (step 4 alone, on that disk)
# Prints what it measured; ACCEL=kvm|tcg as the runtime decides (TCG here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
for t in mmdebstrap qemu-system-x86_64 swtpm ssh ssh-keygen curl jq; do
    command -v "$t" >/dev/null || { echo "bench-debian: $t is not installed" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -p trustlaunch-cli -p trustlaunch-agent >&2)
tl="$ROOT/target/release/trustlaunch"
WORK="$(mktemp -d /var/tmp/tl-bench-debian.XXXXXX)"
export TRUSTLAUNCH_HOME="$WORK/home"
server=""
cleanup() {
    local rc=$?
    [ -n "$server" ] && kill "$server" 2>/dev/null
    for vm in $("$tl" host vm list --json 2>/dev/null | jq -r '.[].spec.name' 2>/dev/null); do
        "$tl" host vm delete "$vm" --yes >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

import_runs() {
    echo "== image import ($1: $(stat -c %s "$1") bytes apparent, $(du -B1 "$1" | cut -f1) allocated)"
    for i in $(seq "$RUNS"); do
        rm -rf "$WORK/imported"
        t0=$(now)
        "$tl" image import "$1" --out "$WORK/imported" --require-trusted-launch >/dev/null 2>"$WORK/import.log"
        echo "import $i: $(since "$t0") s"
        # The copy alone, as the import makes it: its floor.
        rm -f "$WORK/copy.raw"
        t0=$(now)
        qemu-img convert -q -f raw -O raw "$1" "$WORK/copy.raw"
        echo "qemu-img convert alone $i: $(since "$t0") s"
    done
    rm -f "$WORK/copy.raw"
}
if [ -n "${IMPORT_ONLY:-}" ]; then
    import_runs "$IMPORT_ONLY"
    exit 0
fi

echo "== image build (cache $WORK/cache)"
for pass in cold warm; do
    rm -rf "$WORK/debian-$pass"
    t0=$(now)
    "$tl" image build debian --out "$WORK/debian-$pass" --cache "$WORK/cache" >/dev/null 2>"$WORK/build-$pass.log"
    echo "build $pass: $(since "$t0") s"
done
disk="$WORK/debian-warm/disk.raw"
echo "disk: $(stat -c %s "$disk") bytes apparent, $(du -B1 "$disk" | cut -f1) bytes allocated"
echo "cache: $(du -sB1 "$WORK/cache" | cut -f1) bytes"

echo "== bare QEMU on the same disk (plain OVMF, no Secure Boot, no vTPM): start -> login prompt"
accel="${ACCEL:-tcg}"
for i in $(seq "$RUNS"); do
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/vars.fd"
    qemu-img create -q -f qcow2 -F raw -b "$disk" "$WORK/bare.qcow2"
    : >"$WORK/bare.log"
    t0=$(now)
    qemu-system-x86_64 -machine q35,accel="$accel" -cpu max -m 1024 -smp 1 -nodefaults \
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
        -drive if=pflash,format=raw,unit=1,file="$WORK/vars.fd" \
        -drive if=none,id=os,format=qcow2,file="$WORK/bare.qcow2" -device virtio-blk-pci,drive=os,bootindex=1 \
        -display none -serial file:"$WORK/bare.log" -nic none &
    qemu=$!
    until grep -aq "login:" "$WORK/bare.log"; do
        kill -0 "$qemu" 2>/dev/null || { echo "bare QEMU exited" >&2; exit 1; }
        sleep 0.2
    done
    echo "bare boot $i: $(since "$t0") s"
    kill "$qemu"; wait "$qemu" 2>/dev/null || true
done

echo "== Trusted Launch VM: host vm create -> the server's healthy verdict"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
port=$(( 20000 + RANDOM % 20000 ))
"$tl" server --listen "127.0.0.1:$port" --images-root "$WORK" --interval 3600 2>"$WORK/server.log" &
server=$!
url="https://127.0.0.1:$port"
ca="$TRUSTLAUNCH_HOME/tls/ca.crt"
until [ -f "$ca" ] && curl -fsS --cacert "$ca" "$url/healthz" >/dev/null 2>&1; do sleep 0.2; done
token="$(cat "$TRUSTLAUNCH_HOME/server/admin.token")"
latest() { curl -fsS --cacert "$ca" -H "Authorization: Bearer $token" "$url/v1/vms/$1/attestations/latest" 2>/dev/null; }
for i in $(seq "$RUNS"); do
    vm="bench$i"
    t0=$(now)
    "$tl" host vm create "$vm" --image "$WORK/debian-warm" --ssh-key "$WORK/key.pub" --start --no-wait >/dev/null 2>&1
    until [ "$(latest "$vm" | jq -r '.healthy // empty')" = "true" ]; do sleep 0.5; done
    echo "trusted launch boot $i: $(since "$t0") s to healthy"
    [ "$i" -lt "$RUNS" ] && "$tl" host vm delete "$vm" --yes >/dev/null
done

echo "== the agent inside the guest"
sshport="$("$tl" host vm show "$vm" --json | jq -r '.state.sshPort')"
gssh() {
    ssh -i "$WORK/key" -p "$sshport" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1 "$@"
}
until gssh true 2>/dev/null; do sleep 2; done
agent_stats() {
    gssh 'pid=$(systemctl show -p MainPID --value trustlaunch-guest-agent);
          echo "rss $(awk "/VmRSS/ {print \$2, \$3}" /proc/$pid/status), hwm $(awk "/VmHWM/ {print \$2, \$3}" /proc/$pid/status),"\
               "cpu $(systemctl show -p CPUUsageNSec --value trustlaunch-guest-agent) ns"'
}
echo "after boot: $(agent_stats)"
for _ in $(seq 20); do
    curl -fsS --cacert "$ca" -H "Authorization: Bearer $token" -X POST "$url/v1/vms/$vm/attest" >/dev/null
done
echo "after 20 more attestations: $(agent_stats)"

import_runs "$disk"
