# Shared by scripts/run.sh and scripts/test.sh: install what is missing,
# idempotently, on Debian 12. Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages the project uses. tpm2-tools: the reference tool of the
# differential tests; swtpm, swtpm-tools: real vTPMs for the TPM tests;
# openssl: interop of our EK certificates; hyperfine and jq: the
# whole-process benchmarks.
# ovmf, shim-signed, grub-efi-amd64-signed, linux-image-amd64, sbsigntool,
# osslsigncode, pesign, efitools: real Secure Boot artifacts and reference
# tools for the Secure Boot toolkit's tests (read at run time, never
# committed). qemu-system-x86, systemd-boot-efi, busybox-static, cpio, fdisk,
# dosfstools, mtools, binutils, kmod: the real Secure Boot boot test (a
# small UKI on a FAT ESP, booted by OVMF under QEMU). curl: run.sh waits
# for the server. postgresql: the
# store's tests run their suite against PostgreSQL as well as SQLite.
APT_PACKAGES=(tpm2-tools swtpm swtpm-tools openssl hyperfine jq ca-certificates pkg-config
    ovmf shim-signed shim-unsigned grub-efi-amd64-signed linux-image-amd64 sbsigntool osslsigncode
    pesign efitools
    qemu-system-x86 qemu-utils systemd-boot-efi busybox-static cpio fdisk dosfstools mtools binutils kmod
    python3-pip postgresql curl)

# PyPI: virt-firmware (virt-fw-vars), the reference for OVMF variable stores.
PIP_PACKAGES=(virt-firmware)

install_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        if ! as_root apt-get install -y -qq "${missing[@]}"; then
            # Seen on these machines: "cannot access archive"; repair, retry.
            as_root apt-get install -f -y -qq
            as_root apt-get install -y -qq "${missing[@]}"
        fi
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
