//! The guest attestation agent as a Debian package: trustlaunch's Guest
//! Attestation extension for Debian and Ubuntu guests
//! (`trustlaunch-guest-agent_<version>_amd64.deb`).
//!
//! The package holds the agent binary (`/usr/sbin/trustlaunch-agent`), a
//! systemd service that runs it (the kernel's TPM resource manager
//! `/dev/tpmrm0`, the virtio-serial port the host attests over, the
//! firmware's event log from securityfs, the kernel log for modules that
//! failed signature verification; restarted on failure, logging to the
//! journal), and a first-boot unit that applies the platform's first-boot
//! configuration (hostname, SSH keys) handed in by QEMU's fw_cfg. Built
//! with `dpkg-deb` from files this module writes; the maintainer scripts
//! use init-system-helpers as debhelper's would, so `dpkg -i` works in a
//! running guest and in an image build's chroot alike.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::{io_err, run, ImageError};

/// The package's name.
pub const PACKAGE: &str = "trustlaunch-guest-agent";
/// The agent's service.
pub const SERVICE: &str = "trustlaunch-guest-agent.service";
/// The first-boot configuration's service.
pub const FIRSTBOOT_SERVICE: &str = "trustlaunch-firstboot.service";
/// The fw_cfg entry the first-boot configuration arrives in.
pub const FIRSTBOOT_FW_CFG: &str = "opt/org.trustlaunch/firstboot";

/// The agent's systemd unit.
pub const SERVICE_UNIT: &str = "\
[Unit]
Description=trustlaunch guest attestation agent (answers the host's attestation challenges)
# The firmware's event log is read from securityfs.
After=sys-kernel-security.mount
Wants=sys-kernel-security.mount

[Service]
Type=simple
# Waits for the host's virtio-serial port (org.trustlaunch.attest.0) and
# answers every challenge on it, at boot and periodically.
ExecStart=/usr/sbin/trustlaunch-agent --wait-port 3600
Restart=on-failure
RestartSec=5
# Output goes to the journal.
StandardOutput=journal
StandardError=journal
# Least privilege: the agent needs the TPM, the port, securityfs and
# /dev/kmsg, nothing else.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
";

/// The first-boot unit: before SSH starts, once per VM.
pub const FIRSTBOOT_UNIT: &str = "\
[Unit]
Description=trustlaunch first-boot configuration (hostname, SSH keys)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=ssh.service systemd-networkd.service sysinit.target
ConditionPathExists=!/var/lib/trustlaunch/firstboot.done

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/usr/lib/trustlaunch/firstboot
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
";

/// The first-boot script. The configuration is `key=value` lines from the
/// platform (`hostname=NAME`, `ssh-authorized-key=KEY`); each value is
/// checked against a strict pattern before use, and anything else is
/// logged and skipped. It also gives the VM its own SSH host keys (an
/// image carries none, so VMs made from one image never share them).
pub const FIRSTBOOT_SCRIPT: &str = r#"#!/bin/sh
# trustlaunch first-boot configuration: hostname and SSH keys from the
# platform (QEMU fw_cfg entry opt/org.trustlaunch/firstboot), SSH host keys
# of the VM's own. Runs once.
set -eu
entry=/sys/firmware/qemu_fw_cfg/by_name/opt/org.trustlaunch/firstboot/raw
modprobe qemu_fw_cfg 2>/dev/null || true
if [ -r "$entry" ]; then
    head -c 65536 "$entry" | while IFS= read -r line || [ -n "$line" ]; do
        key="${line%%=*}"
        value="${line#*=}"
        case "$key" in
        hostname)
            if printf '%s' "$value" | grep -Eqx '[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?'; then
                printf '%s\n' "$value" >/etc/hostname
                hostname "$value" || true
                sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
                printf '127.0.1.1\t%s\n' "$value" >>/etc/hosts
                echo "hostname: $value"
            else
                echo "hostname: refused (not a host name)" >&2
            fi
            ;;
        ssh-authorized-key)
            # Length apart: a bounded repetition of thousands makes
            # grep's automaton huge.
            if [ "${#value}" -le 17000 ] \
                && printf '%s' "$value" | grep -Eqx '(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/=]+( [[:print:]]*)?'; then
                install -d -m 0700 /root/.ssh
                printf '%s\n' "$value" >>/root/.ssh/authorized_keys
                chmod 0600 /root/.ssh/authorized_keys
                echo "ssh key: ${value%% *} added for root"
            else
                echo "ssh key: refused (not an OpenSSH public key)" >&2
            fi
            ;;
        '' | '#'*) ;;
        *) echo "first-boot key '$key' unknown: skipped" >&2 ;;
        esac
    done
else
    echo "no first-boot configuration from the platform"
fi
# SSH host keys of the VM's own (ed25519 and ECDSA: quick to make even
# under emulation, unlike RSA).
if command -v ssh-keygen >/dev/null 2>&1; then
    for t in ed25519 ecdsa; do
        f=/etc/ssh/ssh_host_${t}_key
        [ -e "$f" ] || ssh-keygen -q -t "$t" -N '' -f "$f"
    done
fi
install -d -m 0755 /var/lib/trustlaunch
touch /var/lib/trustlaunch/firstboot.done
"#;

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ]; then
    for unit in trustlaunch-firstboot.service trustlaunch-guest-agent.service; do
        deb-systemd-helper unmask "$unit" >/dev/null || true
        if deb-systemd-helper --quiet was-enabled "$unit"; then
            deb-systemd-helper enable "$unit" >/dev/null || true
        else
            deb-systemd-helper update-state "$unit" >/dev/null || true
            deb-systemd-helper enable "$unit" >/dev/null || true
        fi
    done
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        deb-systemd-invoke restart trustlaunch-guest-agent.service >/dev/null || true
    fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
    deb-systemd-invoke stop trustlaunch-guest-agent.service >/dev/null || true
fi
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper mask trustlaunch-guest-agent.service trustlaunch-firstboot.service >/dev/null || true
fi
if [ "$1" = "purge" ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper purge trustlaunch-guest-agent.service trustlaunch-firstboot.service >/dev/null || true
    deb-systemd-helper unmask trustlaunch-guest-agent.service trustlaunch-firstboot.service >/dev/null || true
    rm -rf /var/lib/trustlaunch
fi
"#;

/// The package's file name for `version`.
pub fn file_name(version: &str) -> String {
    format!("{PACKAGE}_{version}_amd64.deb")
}

/// The newest glibc symbol version `objdump -T` lists (`GLIBC_2.34`), as
/// the libc6 version the binary needs (`2.34`): what dpkg-shlibdeps would
/// put in `Depends`, so `dpkg -i` on an older system (Debian 11's 2.31)
/// refuses the package by name instead of installing an agent that cannot
/// start.
pub fn glibc_needed(objdump: &str) -> Option<String> {
    let parse = |v: &str| -> Option<Vec<u32>> { v.split('.').map(|p| p.parse().ok()).collect() };
    objdump
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| parse(v).map(|n| (n, v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.to_owned())
}

/// `DEBIAN/control` for `version`, an installed size in KiB and the
/// libc6 version the agent needs.
pub fn control(version: &str, installed_kib: u64, libc: &str) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: trustlaunch <trustlaunch@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6 (>= {libc}), libgcc-s1, init-system-helpers (>= 1.54), kmod\n\
         Section: admin\n\
         Priority: optional\n\
         Description: trustlaunch guest attestation agent\n \
         Answers the trustlaunch platform's attestation challenges over the VM's\n \
         virtio-serial port with quotes from the VM's vTPM, the firmware's event\n \
         log and the kernel's reports of modules that failed signature checks:\n \
         the Guest Attestation extension of trustlaunch's Trusted Launch VMs.\n \
         Also applies the platform's first-boot configuration (hostname, SSH keys).\n"
    )
}

/// Builds the package from the agent binary `agent` into `out_dir`,
/// returning its path. Needs `dpkg-deb` (package dpkg).
pub fn build_agent_package(
    agent: &Path,
    version: &str,
    out_dir: &Path,
) -> Result<PathBuf, ImageError> {
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.~-".contains(&b))
        || !version.as_bytes()[0].is_ascii_digit()
    {
        return Err(ImageError::Missing(format!(
            "package version {version:?}: a Debian version starts with a digit and holds only \
             letters, digits and + . ~ -"
        )));
    }
    let binary = fs::read(agent).map_err(io_err(agent))?;
    if !binary.starts_with(b"\x7fELF") {
        return Err(ImageError::Missing(format!(
            "{} is not an ELF binary (build it: cargo build --release -p trustlaunch-agent)",
            agent.display()
        )));
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let stage = out_dir.join(format!(".{PACKAGE}.stage"));
    let _ = fs::remove_dir_all(&stage);
    let result = stage_and_build(&stage, &binary, version, out_dir);
    let _ = fs::remove_dir_all(&stage);
    result
}

fn stage_and_build(
    stage: &Path,
    binary: &[u8],
    version: &str,
    out_dir: &Path,
) -> Result<PathBuf, ImageError> {
    let files: [(&str, &[u8], u32); 8] = [
        ("usr/sbin/trustlaunch-agent", binary, 0o755),
        (
            "lib/systemd/system/trustlaunch-guest-agent.service",
            SERVICE_UNIT.as_bytes(),
            0o644,
        ),
        (
            "lib/systemd/system/trustlaunch-firstboot.service",
            FIRSTBOOT_UNIT.as_bytes(),
            0o644,
        ),
        (
            "usr/lib/trustlaunch/firstboot",
            FIRSTBOOT_SCRIPT.as_bytes(),
            0o755,
        ),
        (
            "usr/share/doc/trustlaunch-guest-agent/copyright",
            b"trustlaunch guest attestation agent.\nSee the trustlaunch source for its licence.\n",
            0o644,
        ),
        ("DEBIAN/postinst", POSTINST.as_bytes(), 0o755),
        ("DEBIAN/prerm", PRERM.as_bytes(), 0o755),
        ("DEBIAN/postrm", POSTRM.as_bytes(), 0o755),
    ];
    let mut bytes = 0u64;
    for (rel, data, mode) in files {
        let p = stage.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(&p, data).map_err(io_err(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
        if !rel.starts_with("DEBIAN/") {
            bytes += data.len() as u64;
        }
    }
    // Debug information stays on the build machine (a debug build's
    // agent is mostly that).
    let agent = stage.join("usr/sbin/trustlaunch-agent");
    run(
        "objcopy",
        "binutils",
        Command::new("objcopy").arg("--strip-debug").arg(&agent),
        None,
    )?;
    bytes = bytes - binary.len() as u64 + fs::metadata(&agent).map_err(io_err(&agent))?.len();
    let symbols = Command::new("objdump")
        .arg("-T")
        .arg(&agent)
        .output()
        .map_err(|e| ImageError::Tool {
            tool: "objdump",
            package: "binutils",
            message: e.to_string(),
        })?;
    let libc = glibc_needed(&String::from_utf8_lossy(&symbols.stdout)).ok_or_else(|| {
        ImageError::Missing(format!(
            "{}: no glibc symbol versions (objdump -T): not a dynamically linked glibc binary",
            agent.display()
        ))
    })?;
    let control_path = stage.join("DEBIAN/control");
    fs::write(&control_path, control(version, bytes.div_ceil(1024), &libc))
        .map_err(io_err(&control_path))?;
    // dpkg-deb refuses group- or world-writable maintainer script dirs.
    for dir in walk_dirs(stage) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err(&dir))?;
    }
    let out = out_dir.join(file_name(version));
    run(
        "dpkg-deb",
        "dpkg",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(stage)
            .arg(&out),
        None,
    )?;
    Ok(out)
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libc_the_agent_needs_is_its_newest_symbol_version() {
        let objdump = "\
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) write\n\
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.34) __libc_start_main\n\
0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.4) __stack_chk_fail\n\
0000000000000000      DF *UND*  0000000000000000  GLIBC_2.17  clock_gettime\n\
0000000000000000  w   D  *UND*  0000000000000000 (GLIBC_PRIVATE) x\n";
        assert_eq!(glibc_needed(objdump).as_deref(), Some("2.34"));
        assert_eq!(glibc_needed("no versions here"), None);
        assert!(control("1.0", 10, "2.34").contains("Depends: libc6 (>= 2.34),"));
    }
}
