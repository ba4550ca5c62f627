#!/usr/bin/env bash
# The whole test suite: installs what is missing, then format and lint
# checks, then every test of the workspace (unit, golden tests over
# shared/testdata, property tests, the differential test against
# tpm2_eventlog, the fuzz regression corpus), then the VM tier: tests that
# boot real VMs under QEMU (marked #[ignore] so that a plain `cargo test`
# stays fast; run here with --ignored).
source "$(dirname "$0")/lib.sh"
install_packages
install_python_tools
require_rust
require_shared
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
