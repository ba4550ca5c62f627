#!/usr/bin/env bash
# Install and start Keylime's verifier locally (127.0.0.1, HTTPS, SQLite) for the
# side-by-side benchmark. Idempotent, non-interactive, runs as root on Debian 12.
#
# Env:  KEYLIME_VENV      venv path            (default $REPO/target/keylime-venv)
#       KEYLIME_DIR       private state dir    (default $REPO/target/keylime): conf/, cv_ca/, cv_data.sqlite, verifier.log, verifier.pid
#       KEYLIME_PORT      HTTPS port           (default 8881)
#       KEYLIME_MB_POLICY measured-boot policy engine: example (default; full refstate check, fits the shim case)
#                         or accept-all (log replay of PCRs 0-9,11-15 only; needed for the UKI cases tiny-sb*)
#       KEYLIME_WORKERS   tornado worker processes (default 0 = one per CPU)
#       KEYLIME_LOG_LEVEL keylime log level    (default WARNING; INFO logs ~15 lines per request)
#       KEYLIME_IMA_PCR   see run_verifier.py  (default 24 = no IMA PCR; 10 = stock keylime)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KEYLIME_VERSION=7.14.3
VENV="${KEYLIME_VENV:-$REPO/target/keylime-venv}"
KLDIR="${KEYLIME_DIR:-$REPO/target/keylime}"
PORT="${KEYLIME_PORT:-8881}"
MB_POLICY="${KEYLIME_MB_POLICY:-example}"
WORKERS="${KEYLIME_WORKERS:-0}"
LOG_LEVEL="${KEYLIME_LOG_LEVEL:-WARNING}"
export KEYLIME_IMA_PCR="${KEYLIME_IMA_PCR:-24}"

case "$MB_POLICY" in example|accept-all) ;; *) echo "KEYLIME_MB_POLICY must be example or accept-all" >&2; exit 2;; esac

# 1. Debian packages: tpm2-tools (keylime shells out to tpm2_eventlog to parse the boot log),
#    python3-gpg (keylime imports `gpg`; the PyPI binding needs a gpgme build), python3-venv, curl.
need=()
for p in tpm2-tools python3-gpg python3-venv curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. venv on Debian's python3.11 (same ABI as python3-gpg), keylime + pinned deps
#    (the keylime wheel on PyPI declares no dependencies at all).
PY=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ln -sfn /usr/lib/python3/dist-packages/gpg "$SITE/gpg"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('keylime') != '$KEYLIME_VERSION')" 2>/dev/null \
   || [ ! -f "$VENV/.deps-ok" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "keylime==$KEYLIME_VERSION" \
        alembic==1.20.1 argcomplete==3.7.2 cryptography==50.0.2 Jinja2==3.1.6 jsonschema==4.26.0 \
        lark==1.3.1 packaging==26.3 psutil==7.2.2 pyasn1==0.6.5 pyasn1_modules==0.4.2 PyYAML==6.0.3 \
        pyzmq==27.3.0 requests==2.34.2 SQLAlchemy==2.1.9 tornado==6.6.1 typing_extensions==4.16.0
    KEYLIME_LOGGING_CONFIG=/dev/null "$VENV/bin/python" -c 'import keylime.cmd.verifier, keylime.cmd.keylime_policy, gpg, yaml' >/dev/null 2>&1 \
        || { echo "keylime import check failed" >&2; exit 1; }
    touch "$VENV/.deps-ok"
fi

# 3. private config (generated once by `keylime_upgrade_config --defaults` from the 7.14.3 sdist templates,
#    version 2.6, then trimmed/changed: ip, port, policy, evaluate=always, no revocation notifier)
mkdir -p "$KLDIR/conf"
chmod 700 "$KLDIR"
cat > "$KLDIR/conf/verifier.conf" <<CONF
[verifier]
version = 2.6
uuid = default
ip = 127.0.0.1
port = $PORT
registrar_ip = 127.0.0.1
registrar_port = 8891
enable_agent_mtls = True
tls_dir = generate
server_key = default
server_key_password =
server_cert = default
cert_subject_alternative_names =
trusted_client_ca = default
client_key = default
client_key_password =
client_cert = default
trusted_server_ca = default
authorization_provider = simple
database_url = sqlite
database_pool_sz_ovfl = 5,10
auto_migrate_db = True
num_workers = $WORKERS
max_workers = 16
exponential_backoff = True
retry_interval = 2
max_retries = 5
quote_interval = 2
max_upload_size = 104857600
request_timeout = 60.0
measured_boot_policy_name = $MB_POLICY
measured_boot_imports = []
measured_boot_evaluate = always
severity_labels = ["info", "notice", "warning", "error", "critical", "alert", "emergency"]
severity_policy = [{"event_id": ".*", "severity_label" : "emergency"}]
ignore_tomtou_errors = False
durable_attestation_import =
persistent_store_url =
transparency_log_url =
time_stamp_authority_url =
time_stamp_authority_certs_path =
persistent_store_format = json
persistent_store_encoding =
transparency_log_sign_algo = sha256
signed_attributes =
require_allow_list_signatures = False
mode = pull
challenge_lifetime = 1800
verification_timeout = 0
session_create_rate_limit_per_ip = 50
session_create_rate_limit_window_ip = 60
session_create_rate_limit_per_agent = 15
session_create_rate_limit_window_agent = 60
session_lifetime = 180
extend_token_on_attestation = True
auto_recover_attestation_failures = False
shutdown_drain_timeout = 10

[revocations]
enabled_revocation_notifications = []
zmq_ip = 127.0.0.1
zmq_port = 8992
webhook_url =
CONF
cat > "$KLDIR/conf/ca.conf" <<CONF
[ca]
password = default
version = 2.6
cert_country = US
cert_ca_name = Keylime Certificate Authority (trustlaunch bench)
cert_state = MA
cert_locality = Lexington
cert_organization = Keylime
cert_org_unit = 53
cert_ca_lifetime = 3650
cert_lifetime = 365
cert_bits = 2048
cert_crl_dist = http://localhost:38080/crl
CONF
cat > "$KLDIR/conf/logging.conf" <<CONF
[logging]
version = 2.6
[loggers]
keys = root,keylime
[handlers]
keys = consoleHandler
[formatters]
keys = formatter
[formatter_formatter]
format = %(asctime)s.%(msecs)03d - %(name)s - %(levelname)s - %(message)s
datefmt = %Y-%m-%d %H:%M:%S
[logger_root]
level = $LOG_LEVEL
handlers = consoleHandler
[handler_consoleHandler]
class = StreamHandler
level = $LOG_LEVEL
formatter = formatter
args = (sys.stdout,)
[logger_keylime]
level = $LOG_LEVEL
qualname = keylime
handlers =
CONF
cat > "$KLDIR/env.sh" <<CONF
# source this to run keylime tools (keylime-policy, ...) against the private config
export KEYLIME_DIR="$KLDIR"
export KEYLIME_VERIFIER_CONFIG="$KLDIR/conf/verifier.conf"
export KEYLIME_LOGGING_CONFIG="$KLDIR/conf/logging.conf"
export KEYLIME_CA_CONFIG="$KLDIR/conf/ca.conf"
export KEYLIME_VENV="$VENV"
CONF
# shellcheck disable=SC1091
. "$KLDIR/env.sh"

# 4. (re)start: a running one is stopped first so config changes apply
"$HERE/stop.sh" >/dev/null
cd "$KLDIR"
setsid "$VENV/bin/python" "$HERE/run_verifier.py" >"$KLDIR/verifier.log" 2>&1 < /dev/null &
echo $! > "$KLDIR/verifier.pid"
PID="$(cat "$KLDIR/verifier.pid")"

URL="https://127.0.0.1:$PORT"
for i in $(seq 1 120); do
    if ! kill -0 "$PID" 2>/dev/null; then echo "keylime verifier died; see $KLDIR/verifier.log" >&2; tail -20 "$KLDIR/verifier.log" >&2; exit 1; fi
    if [ -f "$KLDIR/cv_ca/cacert.crt" ] && curl -sf --cacert "$KLDIR/cv_ca/cacert.crt" "$URL/version" >/dev/null 2>&1; then break; fi
    sleep 0.5
    [ "$i" = 120 ] && { echo "keylime verifier did not answer in 60 s; see $KLDIR/verifier.log" >&2; exit 1; }
done
echo "keylime $KEYLIME_VERSION verifier up: pid $PID, mb policy '$MB_POLICY', IMA PCR $KEYLIME_IMA_PCR"
echo "CA cert: $KLDIR/cv_ca/cacert.crt (client cert optional: $KLDIR/cv_ca/client-cert.crt + client-private.pem)"
echo "$URL"
