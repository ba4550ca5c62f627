#!/usr/bin/env bash
# The whole test suite: installs what is missing, then format and lint
# checks, then every test of the workspace (unit, golden tests over
# shared/testdata, property tests, the differential test against
# tpm2_eventlog, the fuzz regression corpus), then the VM tier: tests that
# boot real VMs under QEMU (marked #[ignore] so that a plain `cargo test`
# stays fast; run here with --ignored).
source "$(dirname "$0")/lib.sh"

# PostgreSQL for the store's tests (crates/store): Debian's cluster,
# started without systemd and listening on 127.0.0.1 only, a role that may
# create the fresh database each test run makes (and drops), and a
# database to connect to first. Idempotent. Exports
# TRUSTLAUNCH_TEST_POSTGRES, without which the store tests only use SQLite.
PG_TEST_PASSWORD="trustlaunch-test-only"
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && sudo -u postgres "$@"); fi
}
start_test_postgres() {
    local version port status
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$version" ]; then
        version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
        as_root pg_createcluster "$version" main
    fi
    # A drop-in (Debian's postgresql.conf includes conf.d/), not an edit.
    echo "listen_addresses = '127.0.0.1'" \
        | as_root tee "/etc/postgresql/$version/main/conf.d/trustlaunch-test.conf" >/dev/null
    port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')"
    status="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')"
    if [ "$status" != "online" ]; then
        as_root pg_ctlcluster "$version" main start
    elif [ "$(as_postgres psql -p "$port" -qtAc 'SHOW listen_addresses')" != "127.0.0.1" ]; then
        as_root pg_ctlcluster "$version" main restart
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
    echo "PostgreSQL $version on 127.0.0.1:$port for the store tests"
}

install_packages
install_python_tools
require_rust
require_shared
start_test_postgres
cd "$ROOT"
export CARGO_TERM_COLOR=never
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
