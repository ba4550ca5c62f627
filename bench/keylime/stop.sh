#!/usr/bin/env bash
# Stop the Keylime verifier started by setup.sh (its whole process group).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KLDIR="${KEYLIME_DIR:-$REPO/target/keylime}"
PIDFILE="$KLDIR/verifier.pid"

[ -f "$PIDFILE" ] || { echo "keylime verifier: not running (no $PIDFILE)"; exit 0; }
PID="$(cat "$PIDFILE")"
if ! kill -0 "$PID" 2>/dev/null; then
    echo "keylime verifier: pid $PID already gone"; rm -f "$PIDFILE"; exit 0
fi
# setup.sh starts it with setsid, so PID is also the process group id (workers + shared-memory manager)
kill -TERM -- "-$PID" 2>/dev/null || true
for _ in $(seq 1 150); do
    pgrep -g "$PID" >/dev/null 2>&1 || break
    sleep 0.1
done
if pgrep -g "$PID" >/dev/null 2>&1; then
    echo "keylime verifier: still alive after 15 s, sending SIGKILL"
    kill -KILL -- "-$PID" 2>/dev/null || true
    sleep 0.5
fi
rm -f "$PIDFILE"
if pgrep -g "$PID" >/dev/null 2>&1; then echo "keylime verifier: processes left in group $PID" >&2; exit 1; fi
echo "keylime verifier: stopped (pgid $PID)"
