#!/usr/bin/env bash
# The whole test suite: installs what is missing, then format and lint
# checks, then every test of the workspace (unit, golden tests over
# shared/testdata, property tests, the differential test against
# tpm2_eventlog, the fuzz regression corpus), then the VM tier: tests that
# boot real VMs under QEMU (marked #[ignore] so that a plain `cargo test`
# stays fast; run here with --ignored).
source "$(dirname "$0")/lib.sh"

# PostgreSQL for the store's tests (crates/store): Debian's cluster,
# started without systemd and listening on 127.0.0.1 only, serving TLS with
# a test CA's certificate for 127.0.0.1 and localhost, a role that may
# create the fresh database each test run makes (and drops), and a
# database to connect to first. Idempotent. Exports
# TRUSTLAUNCH_TEST_POSTGRES, without which the store tests only use SQLite,
# and TRUSTLAUNCH_TEST_POSTGRES_TLS, the same database with
# sslmode=verify-full against the test CA.
PG_TEST_PASSWORD="trustlaunch-test-only"
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && sudo -u postgres "$@"); fi
}
# The test cluster's TLS: a CA (its key thrown away once it signed) and a
# server certificate for 127.0.0.1 and localhost in $1, made once.
make_test_postgres_tls() {
    local dir="$1" tmp
    if [ -f "$dir/ca.crt" ] && [ -f "$dir/server.crt" ] && [ -f "$dir/server.key" ]; then
        return
    fi
    as_root rm -rf "$dir"
    tmp="$(mktemp -d)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=trustlaunch test PostgreSQL CA" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tmp/ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tmp/ext" -out "$tmp/server.crt" 2>/dev/null
    as_root install -d -m 0755 -o postgres -g postgres "$dir"
    as_root install -m 0644 -o postgres -g postgres "$tmp/ca.crt" "$tmp/server.crt" "$dir/"
    as_root install -m 0600 -o postgres -g postgres "$tmp/server.key" "$dir/"
    rm -rf "$tmp"
}
start_test_postgres() {
    local version port status tls
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$version" ]; then
        version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
        as_root pg_createcluster "$version" main
    fi
    tls="/etc/postgresql/$version/main/trustlaunch-tls"
    make_test_postgres_tls "$tls"
    # Drop-ins (Debian's postgresql.conf includes conf.d/), not edits.
    echo "listen_addresses = '127.0.0.1'" \
        | as_root tee "/etc/postgresql/$version/main/conf.d/trustlaunch-test.conf" >/dev/null
    printf '%s\n' "ssl = on" "ssl_cert_file = '$tls/server.crt'" "ssl_key_file = '$tls/server.key'" \
        | as_root tee "/etc/postgresql/$version/main/conf.d/trustlaunch-test-tls.conf" >/dev/null
    port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')"
    status="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')"
    if [ "$status" != "online" ]; then
        as_root pg_ctlcluster "$version" main start
    elif [ "$(as_postgres psql -p "$port" -qtAc 'SHOW listen_addresses')" != "127.0.0.1" ]; then
        as_root pg_ctlcluster "$version" main restart
    elif [ "$(as_postgres psql -p "$port" -qtAc 'SHOW ssl_cert_file')" != "$tls/server.crt" ]; then
        as_root pg_ctlcluster "$version" main reload
        sleep 1
    fi
    pg_isready -q -h 127.0.0.1 -p "$port" -t 30
    if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'trustlaunch'")" != "1" ]; then
        as_postgres psql -p "$port" -q -v ON_ERROR_STOP=1 -c "CREATE ROLE trustlaunch LOGIN"
    fi
    as_postgres psql -p "$port" -q -v ON_ERROR_STOP=1 \
        -c "ALTER ROLE trustlaunch LOGIN CREATEDB PASSWORD '$PG_TEST_PASSWORD'"
    if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'trustlaunch_test'")" != "1" ]; then
        as_postgres psql -p "$port" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE trustlaunch_test OWNER trustlaunch"
    fi
    export TRUSTLAUNCH_TEST_POSTGRES="postgres://trustlaunch:$PG_TEST_PASSWORD@127.0.0.1:$port/trustlaunch_test"
    export TRUSTLAUNCH_TEST_POSTGRES_TLS="$TRUSTLAUNCH_TEST_POSTGRES?sslmode=verify-full&sslrootcert=$tls/ca.crt"
    echo "PostgreSQL $version on 127.0.0.1:$port for the store tests (TLS: CA $tls/ca.crt)"
}

install_packages
install_python_tools
require_rust
install_azure_sdk
require_shared
start_test_postgres
cd "$ROOT"
export CARGO_TERM_COLOR=never
# The portal's browser tests may not skip here: chromium is installed above.
export TRUSTLAUNCH_REQUIRE_BROWSER=1
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test --workspace"
cargo test --locked --workspace
echo "== VM tier: cargo test --workspace -- --ignored"
cargo test --locked --workspace -- --ignored
echo "== benches compile"
cargo bench --locked --workspace --no-run
echo "== all tests passed"
