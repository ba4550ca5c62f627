//! What the agent reads from the guest: where things are
//! ([`GuestPaths`]), the attestation port's discovery in sysfs, the TPM
//! device, bounded file reads and the `SecureBoot` efivar (the kernel log
//! is `kmsg.rs`'s).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use trustlaunch_tpm_client::Tpm;

use crate::error::AgentError;

/// Where the agent looks for everything; [`GuestPaths::default`] is a
/// Linux guest's layout. Tests point these into temporary trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPaths {
    /// sysfs root (`/sys`): ports are found under `class/virtio-ports`.
    pub sysfs: PathBuf,
    /// Device directory (`/dev`): the port `/sys/class/virtio-ports/vportNpM`
    /// is opened as `/dev/vportNpM` (no udev, so no `/dev/virtio-ports`
    /// symlinks).
    pub dev: PathBuf,
    /// TPM devices, tried in order (`/dev/tpmrm0`, then `/dev/tpm0`).
    pub tpm_devices: Vec<PathBuf>,
    /// The firmware's TCG event log (securityfs).
    pub event_log: PathBuf,
    /// The `SecureBoot` variable in efivarfs (4 attribute bytes, then the
    /// 1-byte value).
    pub secure_boot: PathBuf,
    /// The kernel's boot id.
    pub boot_id: PathBuf,
    /// The kernel release (`uname -r`).
    pub os_release: PathBuf,
    /// The kernel log (`/dev/kmsg`), read for modules that failed
    /// signature verification.
    pub kmsg: PathBuf,
}

impl Default for GuestPaths {
    fn default() -> Self {
        Self {
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            tpm_devices: vec![PathBuf::from("/dev/tpmrm0"), PathBuf::from("/dev/tpm0")],
            event_log: PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements"),
            secure_boot: PathBuf::from(
                "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
            ),
            boot_id: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            os_release: PathBuf::from("/proc/sys/kernel/osrelease"),
            kmsg: PathBuf::from("/dev/kmsg"),
        }
    }
}

/// The largest event log read (real machines': 20-200 KiB).
pub const MAX_EVENT_LOG: usize = 16 << 20;

/// How often the port is looked for while it has not appeared.
pub const PORT_POLL: Duration = Duration::from_millis(200);

/// The default time to wait for the port (modules load at boot).
pub const DEFAULT_PORT_WAIT: Duration = Duration::from_secs(60);

impl GuestPaths {
    /// `sysfs/class/virtio-ports`.
    pub fn virtio_ports_dir(&self) -> PathBuf {
        self.sysfs.join("class").join("virtio-ports")
    }
}

/// Finds the virtio-serial port named `name`: the device node
/// (`dev/<entry>`) of the entry of `sysfs/class/virtio-ports` whose `name`
/// file holds it. `None` if there is none (yet). Entries are scanned in
/// name order.
pub fn find_port(paths: &GuestPaths, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(paths.virtio_ports_dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries.into_iter().find_map(|entry| {
        let port_name = read_bounded(&entry.join("name"), 256, "port").ok()?;
        if port_name.trim_ascii() != name.as_bytes() {
            return None;
        }
        entry.file_name().map(|dir| paths.dev.join(dir))
    })
}

/// Waits (polling every `poll`) up to `timeout` for the port named `name`
/// to appear and open read+write; returns it and its path.
pub fn wait_for_port(
    paths: &GuestPaths,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(File, PathBuf), AgentError> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(dev) = find_port(paths, name) {
            match OpenOptions::new().read(true).write(true).open(&dev) {
                Ok(f) => return Ok((f, dev)),
                Err(e) => last = format!(" (found {}, open failed: {e})", dev.display()),
            }
        }
        if started.elapsed() >= timeout {
            return Err(AgentError::NoPort {
                name: name.to_string(),
                dir: paths.virtio_ports_dir(),
                waited_secs: started.elapsed().as_secs(),
                last,
            });
        }
        sleep(poll);
    }
}

/// Opens the first TPM device of `paths.tpm_devices` that opens.
pub fn open_tpm(paths: &GuestPaths) -> Result<(Tpm, PathBuf), AgentError> {
    let mut tried = Vec::new();
    for dev in &paths.tpm_devices {
        match Tpm::open_device(dev) {
            Ok(tpm) => return Ok((tpm, dev.clone())),
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(AgentError::NoTpm {
        tried: if tried.is_empty() {
            "no device configured".into()
        } else {
            tried.join("; ")
        },
    })
}

/// Reads at most `limit` bytes of `path`; a longer file is an error.
/// securityfs and procfs files report size 0, so the length is learnt by
/// reading.
pub fn read_bounded(path: &Path, limit: usize, stage: &'static str) -> Result<Vec<u8>, AgentError> {
    let io_err = |source: io::Error| AgentError::Io {
        stage,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap).read_to_end(&mut out).map_err(io_err)?;
    if out.len() > limit {
        return Err(AgentError::TooLarge {
            stage,
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// The value of an efivarfs `SecureBoot` file: 4 bytes of attributes, then
/// the 1-byte variable. `None` for any other length.
pub fn parse_secure_boot(file: &[u8]) -> Option<u8> {
    match file {
        [_, _, _, _, value] => Some(*value),
        _ => None,
    }
}

/// Reads the `SecureBoot` variable; `None` if it is not readable (no
/// UEFI, efivarfs not mounted) or malformed.
pub fn read_secure_boot(paths: &GuestPaths) -> Option<u8> {
    read_bounded(&paths.secure_boot, 64, "secure_boot")
        .ok()
        .and_then(|b| parse_secure_boot(&b))
}

/// A small text file (boot id, kernel release), trimmed; empty if it
/// cannot be read.
pub fn read_text(path: &Path) -> String {
    read_bounded(path, 4096, "text")
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, GuestPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = GuestPaths {
            sysfs: dir.path().join("sys"),
            dev: dir.path().join("dev"),
            ..GuestPaths::default()
        };
        std::fs::create_dir_all(&paths.dev).unwrap();
        (dir, paths)
    }

    fn add_port(paths: &GuestPaths, entry: &str, name: &str) {
        let d = paths.virtio_ports_dir().join(entry);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
    }

    #[test]
    fn secure_boot_efivar() {
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0, 1]), Some(1));
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0, 0]), Some(0));
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0]), None);
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0, 1, 0]), None);
        assert_eq!(parse_secure_boot(&[]), None);

        let (dir, mut paths) = tree();
        paths.secure_boot = dir.path().join("SecureBoot-x");
        assert_eq!(read_secure_boot(&paths), None, "missing file");
        std::fs::write(&paths.secure_boot, [0x06, 0, 0, 0, 1]).unwrap();
        assert_eq!(read_secure_boot(&paths), Some(1));
    }

    #[test]
    fn port_discovery_by_name() {
        let (_dir, paths) = tree();
        let name = trustlaunch_protocol::PORT_NAME;
        assert_eq!(find_port(&paths, name), None, "no virtio-ports dir");
        add_port(&paths, "vport0p1", "org.qemu.guest_agent.0");
        assert_eq!(find_port(&paths, name), None);
        add_port(&paths, "vport1p2", name);
        assert_eq!(find_port(&paths, name), Some(paths.dev.join("vport1p2")));
        // A name that only starts with ours does not match.
        let (_d2, other) = tree();
        add_port(&other, "vport0p1", &format!("{name}x"));
        assert_eq!(find_port(&other, name), None);
    }

    #[test]
    fn waits_for_the_port_then_opens_it() {
        let (_dir, paths) = tree();
        let name = trustlaunch_protocol::PORT_NAME;
        let err = wait_for_port(
            &paths,
            name,
            Duration::from_millis(30),
            Duration::from_millis(5),
        )
        .unwrap_err();
        assert_eq!(err.stage(), "port");
        assert!(err.to_string().contains(name), "{err}");

        // Found in sysfs but no device node yet: the error says so.
        add_port(&paths, "vport2p1", name);
        let err = wait_for_port(&paths, name, Duration::ZERO, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("open failed"), "{err}");

        // The node appears while the agent waits.
        let node = paths.dev.join("vport2p1");
        let writer = {
            let node = node.clone();
            std::thread::spawn(move || {
                sleep(Duration::from_millis(50));
                std::fs::write(node, b"").unwrap();
            })
        };
        let (_f, dev) = wait_for_port(
            &paths,
            name,
            Duration::from_secs(10),
            Duration::from_millis(10),
        )
        .unwrap();
        writer.join().unwrap();
        assert_eq!(dev, node);
    }

    #[test]
    fn bounded_reads() {
        let (dir, _paths) = tree();
        let p = dir.path().join("log");
        std::fs::write(&p, [1u8; 10]).unwrap();
        assert_eq!(read_bounded(&p, 10, "event_log").unwrap().len(), 10);
        let err = read_bounded(&p, 9, "event_log").unwrap_err();
        assert!(matches!(err, AgentError::TooLarge { limit: 9, .. }));
        assert_eq!(err.stage(), "event_log");
        let err = read_bounded(&dir.path().join("nope"), 9, "event_log").unwrap_err();
        assert!(matches!(err, AgentError::Io { .. }));
        std::fs::write(dir.path().join("boot_id"), "abc-def\n").unwrap();
        assert_eq!(read_text(&dir.path().join("boot_id")), "abc-def");
        assert_eq!(read_text(&dir.path().join("nope")), "");
    }
}
