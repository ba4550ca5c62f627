//! Which accelerator this host can really use.
//!
//! `/dev/kvm` existing is not enough: on a nested host without working
//! nested virtualisation (this project's CI machines) KVM runs trivial
//! real-mode code but OVMF dies in it with "KVM internal error". So the
//! probe boots what VMs will boot — plain OVMF, no disk — under KVM and
//! waits for OVMF's boot manager (`BdsDxe` on the serial console). KVM is
//! chosen only when that works; otherwise TCG, with the reason.
//!
//! Overridable: `TRUSTLAUNCH_ACCEL=kvm|tcg` (see [`decide`]).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::qemu::Accel;

/// The decision and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    /// The accelerator VMs get.
    pub accel: Accel,
    /// Why: "override", "KVM booted OVMF to its boot manager in N ms",
    /// or what failed.
    pub reason: String,
}

/// Why the probe could not run at all (as opposed to KVM not working).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file the probe needs is missing.
    #[error("{path}: {source} (install {package})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
        /// The IO error.
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("starting {program}: {source} (install qemu-system-x86)")]
    Spawn {
        /// The program.
        program: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Scratch files.
    #[error("probe scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// `TRUSTLAUNCH_ACCEL` holds something else than kvm or tcg.
    #[error("TRUSTLAUNCH_ACCEL={0:?}: expected kvm or tcg")]
    BadOverride(String),
}

/// What the probe runs.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Plain OVMF code (`/usr/share/OVMF/OVMF_CODE_4M.fd`).
    pub ovmf_code: PathBuf,
    /// An empty store to copy (`/usr/share/OVMF/OVMF_VARS_4M.fd`).
    pub ovmf_vars: PathBuf,
    /// The KVM device.
    pub kvm_device: PathBuf,
    /// How long OVMF may take to reach its boot manager under KVM (it
    /// takes well under a second where KVM works).
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            qemu: "qemu-system-x86_64".into(),
            ovmf_code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            ovmf_vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            kvm_device: "/dev/kvm".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The override from `TRUSTLAUNCH_ACCEL`, or the probe's decision.
pub fn decide(config: &ProbeConfig, scratch: &Path) -> Result<AccelDecision, ProbeError> {
    match std::env::var("TRUSTLAUNCH_ACCEL") {
        Ok(v) if v == "kvm" => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason: "override: TRUSTLAUNCH_ACCEL=kvm".into(),
        }),
        Ok(v) if v == "tcg" => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "override: TRUSTLAUNCH_ACCEL=tcg".into(),
        }),
        Ok(v) if !v.is_empty() => Err(ProbeError::BadOverride(v)),
        _ => probe(config, scratch),
    }
}

/// Boots plain OVMF under KVM in `scratch` and watches its console.
pub fn probe(config: &ProbeConfig, scratch: &Path) -> Result<AccelDecision, ProbeError> {
    let tcg = |reason: String| {
        Ok(AccelDecision {
            accel: Accel::Tcg,
            reason,
        })
    };
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&config.kvm_device)
    {
        return tcg(format!("{} not usable: {e}", config.kvm_device.display()));
    }
    fs::metadata(&config.ovmf_code).map_err(|source| ProbeError::Missing {
        path: config.ovmf_code.clone(),
        package: "ovmf",
        source,
    })?;
    let scratch_err = |source| ProbeError::Scratch {
        path: scratch.to_owned(),
        source,
    };
    fs::create_dir_all(scratch).map_err(scratch_err)?;
    let vars = scratch.join("probe-VARS.fd");
    let console = scratch.join("probe-console.log");
    let stderr_path = scratch.join("probe-qemu.err");
    fs::copy(&config.ovmf_vars, &vars).map_err(|source| ProbeError::Missing {
        path: config.ovmf_vars.clone(),
        package: "ovmf",
        source,
    })?;
    let _ = fs::remove_file(&console);
    let stderr = fs::File::create(&stderr_path).map_err(scratch_err)?;
    let started = Instant::now();
    let mut child = Command::new(&config.qemu)
        .args(["-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-nic", "none", "-no-reboot"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            config.ovmf_code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|source| ProbeError::Spawn {
            program: config.qemu.display().to_string(),
            source,
        })?;
    let outcome = loop {
        let text = read_lossy(&console);
        if text.contains("BdsDxe") {
            break Ok(started.elapsed());
        }
        let err = read_lossy(&stderr_path);
        if err.contains("KVM internal error") || err.contains("kvm run failed") {
            break Err(
                "KVM internal error while OVMF ran (nested virtualisation without working KVM?)"
                    .to_owned(),
            );
        }
        if let Ok(Some(status)) = child.try_wait() {
            let first = err.lines().next().unwrap_or("").trim().to_owned();
            break Err(format!(
                "QEMU with KVM exited ({status}) before OVMF's boot manager: {first}"
            ));
        }
        if started.elapsed() > config.timeout {
            break Err(format!(
                "OVMF did not reach its boot manager under KVM within {:?}",
                config.timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    for f in [&vars, &console, &stderr_path] {
        let _ = fs::remove_file(f);
    }
    match outcome {
        Ok(t) => Ok(AccelDecision {
            accel: Accel::Kvm,
            reason: format!(
                "KVM booted OVMF to its boot manager in {} ms",
                t.as_millis()
            ),
        }),
        Err(why) => tcg(why),
    }
}

/// A small file read as text (missing = empty); at most 1 MiB is read.
fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(1 << 20).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_kvm_device_means_tcg_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let config = ProbeConfig {
            kvm_device: dir.path().join("no-such-kvm"),
            ..ProbeConfig::default()
        };
        let d = probe(&config, dir.path()).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("no-such-kvm"), "{}", d.reason);
    }

    #[test]
    fn missing_qemu_is_an_error_unless_kvm_is_unusable_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let config = ProbeConfig {
            qemu: "/nonexistent/qemu".into(),
            ..ProbeConfig::default()
        };
        let kvm_usable = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        match probe(&config, dir.path()) {
            Err(ProbeError::Spawn { program, .. }) => {
                assert!(kvm_usable);
                assert_eq!(program, "/nonexistent/qemu");
            }
            Ok(d) => {
                // Without a usable /dev/kvm QEMU is never started.
                assert!(!kvm_usable);
                assert_eq!(d.accel, Accel::Tcg);
                assert!(d.reason.contains("/dev/kvm"), "{}", d.reason);
            }
            other => panic!("{other:?}"),
        }
    }
}
