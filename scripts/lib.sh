# Shared by scripts/run.sh and scripts/test.sh: install what is missing,
# idempotently, on Debian 12. Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# What the product needs on a host: each command or file and the package
# that provides it, one list shared with `trustlaunch host doctor`.
REQUIREMENTS="$ROOT/crates/runtime/host-requirements.txt"
requirement_lines() {
    grep -v '^[[:space:]]*\(#\|$\)' "$REQUIREMENTS"
}

# Debian packages the tests and benchmarks use besides the product's own.
# tpm2-tools: the reference tool of the differential tests; swtpm-tools:
# swtpm_setup for the TPM tests; openssl: interop of our EK certificates;
# hyperfine and jq: the whole-process benchmarks. shim-unsigned,
# linux-image-amd64, sbsigntool, osslsigncode, pesign, efitools: real
# Secure Boot artifacts and reference tools for the Secure Boot toolkit's
# tests (read at run time, never committed). cpio, kmod: the tiny image's
# initramfs checks. curl: run.sh waits for the server. postgresql: the
# store's tests run their suite against PostgreSQL as well as SQLite.
# openssh-client: the Debian VM test logs into its guest. iputils-ping:
# the bridged VM test pings its guest on the bridge. python3-venv: the
# virtual environment Azure's Python SDK is installed into for the test
# that drives the ARM API through it. chromium, chromium-driver: the web
# portal's browser tests drive headless Chromium over WebDriver
# (chromedriver).
TEST_PACKAGES=(tpm2-tools swtpm-tools openssl hyperfine jq ca-certificates pkg-config
    shim-unsigned sbsigntool osslsigncode pesign efitools cpio kmod
    python3-pip python3-venv postgresql curl openssh-client iputils-ping
    chromium chromium-driver)

# The commands of the test packages that the tests, benchmarks and
# scripts/test.sh run, each with its package: a path must be that
# executable (the browser tests' defaults), a name must be on PATH.
test_command_lines() {
    cat <<'EOF'
/usr/bin/chromium      chromium         the portal's browser tests' headless browser
/usr/bin/chromedriver  chromium-driver  drives Chromium over WebDriver for the browser tests
tpm2_eventlog          tpm2-tools       the reference tool of the event log differential test
swtpm_setup            swtpm-tools      creates the TPM tests' vTPM state
openssl                openssl          interop of our EK certificates
hyperfine              hyperfine        the whole-process benchmarks
jq                     jq               the whole-process benchmarks
sbsign                 sbsigntool       reference signatures of the Secure Boot tests
osslsigncode           osslsigncode     reference signatures of the Secure Boot tests
pesign                 pesign           reference signatures of the Secure Boot tests
cert-to-efi-sig-list   efitools         reference EFI signature lists of the Secure Boot tests
cpio                   cpio             the tiny image's initramfs checks
psql                   postgresql       sets up the store tests' PostgreSQL
pg_ctlcluster          postgresql       starts the store tests' PostgreSQL
ssh                    openssh-client   logs into the Debian VM test's guest
ping                   iputils-ping     pings the bridged VM test's guest
curl                   curl             run.sh waits for the server
EOF
}

# Every package: the requirements' and the tests'.
all_packages() {
    { requirement_lines | awk '{ print $3 }'; printf '%s\n' "${TEST_PACKAGES[@]}"; } | sort -u
}

# The installed version of package $1, or nothing (never fails: dpkg-query
# exits 1 for a package it does not know).
installed_version() {
    { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } \
        | awk '$1 == "install" && $3 == "installed" { print $4 }'
}

# The versions of package $1 that this Debian release's own suites
# (CODENAME, -updates, -security) offer: not backports.
offered_versions() {
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    apt-cache madison "$1" 2>/dev/null | awk -F'|' -v c="$codename" '
        $3 ~ (" " c "/") || $3 ~ (" " c "-updates/") || $3 ~ (" " c "-security/") {
            gsub(/ /, "", $2); print $2
        }'
}

# The newest of them.
offered_version() {
    local best="" v
    for v in $(offered_versions "$1"); do
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best="$v"; fi
    done
    echo "$best"
}

# Installs every missing package in one apt transaction that names all of
# the project's packages, so apt can never remove one of them to make room
# for another (seen: installing qemu-system-x86 from bookworm removed a
# qemu-utils from bookworm-backports, and qemu-img with it: qemu-utils
# 10.0 Breaks qemu-system-common << 8.0). A package of the set installed
# at a version the release's own suites do not offer (a backport, whether
# its source is still configured or gone) is aligned with the release in
# the same transaction, since the release's packages depend on their own
# versions.
# Then every requirement, and every command the tests run from their
# packages, is checked: one still missing fails the install, naming the
# package.
install_packages() {
    local missing=() wanted=() p have offer
    for p in $(all_packages); do
        [ -n "$(installed_version "$p")" ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        for p in $(all_packages); do
            have="$(installed_version "$p")"
            offer="$(offered_version "$p")"
            if [ -n "$have" ] && [ -n "$offer" ] \
                && ! offered_versions "$p" | grep -qxF "$have"; then
                echo "aligning $p $have (not from this release's suites) with the release's $offer"
                wanted+=("$p=$offer")
            else
                wanted+=("$p")
            fi
        done
        if ! as_root apt-get install -y -qq --allow-downgrades "${wanted[@]}"; then
            # Seen on these machines: "cannot access archive"; repair, retry.
            as_root apt-get install -f -y -qq
            as_root apt-get install -y -qq --allow-downgrades "${wanted[@]}"
        fi
    fi
    check_requirements
    check_test_commands
}

# Every command and file of the requirements is really there; otherwise
# names each missing one with its package, and fails.
check_requirements() {
    local kind what package why failed=0
    while read -r kind what package why; do
        case "$kind" in
            command) command -v "$what" >/dev/null 2>&1 && continue ;;
            file) [ -f "$what" ] && continue ;;
            glob) compgen -G "$what" >/dev/null && continue ;;
            *) echo "error: $REQUIREMENTS: unknown kind '$kind'" >&2; failed=1; continue ;;
        esac
        echo "error: $what is missing ($why): install the Debian package $package" >&2
        failed=1
    done < <(requirement_lines)
    if [ "$failed" -ne 0 ]; then
        echo "error: the host lacks what trustlaunch needs (apt-get install the packages named above)" >&2
        exit 1
    fi
}

# Every command of test_command_lines is really there (a package can be
# installed with a file of it gone); otherwise names each missing one with
# its package, and fails.
check_test_commands() {
    local what package why failed=0
    while read -r what package why; do
        case "$what" in
            /*) [ -f "$what" ] && [ -x "$what" ] && continue ;;
            *) command -v "$what" >/dev/null 2>&1 && continue ;;
        esac
        echo "error: $what is missing ($why): install the Debian package $package" >&2
        failed=1
    done < <(test_command_lines)
    if [ "$failed" -ne 0 ]; then
        echo "error: the host lacks what the tests run (apt-get install the packages named above)" >&2
        exit 1
    fi
}

install_python_tools() {
    local missing=()
    for p in "${PIP_PACKAGES[@]}"; do
        python3 -m pip show -q "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing from PyPI: ${missing[*]}"
        # Debian 12 marks its python as externally managed; these are
        # test-only reference tools, installed for the whole machine.
        as_root python3 -m pip install -q --break-system-packages "${missing[@]}" \
            || as_root python3 -m pip install -q "${missing[@]}"
    fi
}

# Azure's Python SDK (azure-mgmt-compute), at the versions the test's
# requirements pin, in a virtual environment of its own under target/
# (never the system's Python), remade when the requirements change.
# Exports TRUSTLAUNCH_AZURE_SDK_PYTHON, the interpreter the SDK test runs;
# fails when the SDK does not import after installing.
install_azure_sdk() {
    local req="$ROOT/crates/cli/tests/azure_sdk/requirements.txt"
    local venv="${TRUSTLAUNCH_AZURE_SDK_VENV:-$ROOT/target/azure-sdk-venv}"
    if ! cmp -s "$req" "$venv/requirements.txt" \
        || ! "$venv/bin/python" -c 'import azure.mgmt.compute' >/dev/null 2>&1; then
        echo "installing Azure's Python SDK from PyPI into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
        cp "$req" "$venv/requirements.txt"
    fi
    if ! "$venv/bin/python" -c 'import azure.mgmt.compute, azure.core' >/dev/null 2>&1; then
        echo "error: Azure's Python SDK does not import from $venv" >&2
        exit 1
    fi
    export TRUSTLAUNCH_AZURE_SDK_PYTHON="$venv/bin/python"
}

require_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found. trustlaunch needs Rust 1.85 or newer (rustup);" >&2
        echo "       Debian 12's own rustc (1.63) is too old." >&2
        exit 1
    fi
}

require_shared() {
    if [ ! -f "$SHARED/testdata/eventlogs/expected.json" ]; then
        echo "error: $SHARED/testdata is missing: clone shared/ beside the project" >&2
        exit 1
    fi
}
