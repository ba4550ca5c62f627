//! Who a VM's processes run as.
//!
//! A runtime running as root confines every VM: its QEMU and its swtpm
//! each run under a user and group id of their own, allocated for that VM
//! from a range no account uses ([`UID_BASE`]..[`UID_END`], unused by
//! systemd's conventions), with no supplementary groups and no
//! capabilities. Two ids per VM rather than one shared account: an
//! escaped QEMU shares its uid with nothing — not with another VM's
//! processes, which it could otherwise signal or ptrace, and not with its
//! own swtpm, whose memory holds the decrypted vTPM state and whose
//! directory holds the state files. The ids are claimed in
//! `$HOME/uids/<slot>` (created with `O_EXCL`, so two runtimes never hand
//! out one slot), recorded with the VM (`vms/<name>/ids.json`), and freed
//! when the VM is deleted. A runtime that is not root cannot change ids:
//! its VMs run as itself, and [`Confinement::None`] says so.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::platform::{io_error, private_dir, read_small, write_file, PlatformError};

/// The first id of the range VMs get (the range systemd leaves unused).
pub const UID_BASE: u32 = 65_536;
/// One past the last id of the range.
pub const UID_END: u32 = 524_288;

/// The ids a VM's processes run as: QEMU's and swtpm's, each both a uid
/// and a gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmIds {
    /// The claimed slot (`$HOME/uids/<slot>`).
    pub slot: u32,
    /// QEMU's uid and gid.
    pub qemu: u32,
    /// swtpm's uid and gid.
    pub swtpm: u32,
}

impl VmIds {
    fn of_slot(slot: u32) -> Option<Self> {
        let qemu = slot.checked_mul(2)?.checked_add(UID_BASE)?;
        let swtpm = qemu.checked_add(1)?;
        (swtpm < UID_END).then_some(Self { slot, qemu, swtpm })
    }
}

/// The user and group a child process is started as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Its uid.
    pub uid: u32,
    /// Its (only) gid.
    pub gid: u32,
}

/// How a VM's processes are confined, as `show` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum Confinement {
    /// They run as the runtime's own user.
    #[serde(rename_all = "camelCase")]
    None {
        /// Why.
        reason: String,
    },
    /// They run under the VM's own ids, without capabilities, QEMU in its
    /// seccomp sandbox.
    #[serde(rename_all = "camelCase")]
    Confined {
        /// QEMU's uid.
        qemu_uid: u32,
        /// swtpm's uid.
        swtpm_uid: u32,
    },
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Confinement::None { reason } => write!(f, "none ({reason})"),
            Confinement::Confined {
                qemu_uid,
                swtpm_uid,
            } => write!(
                f,
                "QEMU as uid {qemu_uid} (seccomp sandbox), swtpm as uid {swtpm_uid}; no capabilities, no supplementary groups"
            ),
        }
    }
}

/// Whether this process can start others under other ids.
pub fn runtime_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The ids `/etc/passwd` and `/etc/group` name (their third field).
fn account_ids() -> HashSet<u32> {
    let mut ids = HashSet::new();
    for file in ["/etc/passwd", "/etc/group"] {
        let text = fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.split(':').nth(2).and_then(|f| f.parse().ok()) {
                ids.insert(id);
            }
        }
    }
    ids
}

/// Whether a live process has `uid` as its real, effective, saved or
/// filesystem uid.
fn uid_in_use(uid: u32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|e| {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            return false;
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        process_uids(&e.path().join("status")).contains(&uid)
    })
}

/// The four uids of a `/proc/<pid>/status`.
pub(crate) fn process_uids(status: &Path) -> Vec<u32> {
    let text = read_small(status, 64 << 10).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The platform's claims on id slots (`$HOME/uids/`).
#[derive(Clone, Debug)]
pub struct IdRegistry {
    dir: PathBuf,
    vms: PathBuf,
}

impl IdRegistry {
    /// The registry of the home whose VM directories are in `vms`.
    pub fn new(dir: PathBuf, vms: PathBuf) -> Self {
        Self { dir, vms }
    }

    /// Claims the first free slot for `vm`: one whose ids no account and
    /// no running process uses. A claim whose VM directory is gone (a
    /// creation or deletion that was killed) is taken back.
    pub fn allocate(&self, vm: &str) -> Result<VmIds, PlatformError> {
        private_dir(&self.dir)?;
        let taken = account_ids();
        let mut slot = 0u32;
        while let Some(ids) = VmIds::of_slot(slot) {
            slot = slot.saturating_add(1);
            if taken.contains(&ids.qemu) || taken.contains(&ids.swtpm) {
                continue;
            }
            let claim = self.dir.join(ids.slot.to_string());
            if let Ok(owner) = read_small(&claim, 4096) {
                let owner = String::from_utf8_lossy(&owner).into_owned();
                // Taken back only when it names a VM, and that VM is gone.
                if crate::spec::check_name(&owner).is_err() || self.vms.join(&owner).exists() {
                    continue;
                }
                // Stale: its VM is gone.
                let _ = fs::remove_file(&claim);
            }
            if uid_in_use(ids.qemu) || uid_in_use(ids.swtpm) {
                continue;
            }
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&claim)
            {
                Ok(mut f) => {
                    f.write_all(vm.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io_error("writing", &claim))?;
                    return Ok(ids);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("creating", &claim)(e)),
            }
        }
        Err(PlatformError::Insecure {
            path: self.dir.clone(),
            reason: format!("no free ids left in {UID_BASE}..{UID_END}"),
        })
    }

    /// Frees a VM's slot.
    pub fn release(&self, ids: &VmIds) -> Result<(), PlatformError> {
        let claim = self.dir.join(ids.slot.to_string());
        match fs::remove_file(&claim) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing", &claim)(e)),
        }
    }
}

/// Reads a VM's recorded ids (`ids.json`), if it has any.
pub fn read_ids(path: &Path) -> Result<Option<VmIds>, PlatformError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let bytes = read_small(path, 4096)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PlatformError::BadKey {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Records a VM's ids (0600).
pub fn write_ids(path: &Path, ids: &VmIds) -> Result<(), PlatformError> {
    let json = serde_json::to_vec_pretty(ids).unwrap_or_default();
    write_file(path, &json, 0o600)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_give_two_ids_in_the_range_and_are_claimed_once() {
        assert_eq!(
            VmIds::of_slot(0),
            Some(VmIds {
                slot: 0,
                qemu: UID_BASE,
                swtpm: UID_BASE + 1
            })
        );
        let last = (UID_END - UID_BASE) / 2 - 1;
        assert_eq!(VmIds::of_slot(last).unwrap().swtpm, UID_END - 1);
        assert_eq!(VmIds::of_slot(last + 1), None);
        assert_eq!(VmIds::of_slot(u32::MAX), None);

        let home = tempfile::tempdir().unwrap();
        let vms = home.path().join("vms");
        fs::create_dir_all(vms.join("a")).unwrap();
        fs::create_dir_all(vms.join("b")).unwrap();
        let reg = IdRegistry::new(home.path().join("uids"), vms.clone());
        let a = reg.allocate("a").unwrap();
        let b = reg.allocate("b").unwrap();
        assert_ne!(a.slot, b.slot);
        assert!(a.qemu != b.qemu && a.qemu != a.swtpm && b.swtpm != a.swtpm);
        for ids in [a, b] {
            assert!((UID_BASE..UID_END).contains(&ids.qemu));
            assert!(!account_ids().contains(&ids.qemu));
        }
        // Freed, the slot is handed out again; a claim whose VM is gone
        // is taken back.
        reg.release(&a).unwrap();
        fs::create_dir_all(vms.join("c")).unwrap();
        assert_eq!(reg.allocate("c").unwrap().slot, a.slot);
        fs::remove_dir_all(vms.join("b")).unwrap();
        fs::create_dir_all(vms.join("d")).unwrap();
        assert_eq!(reg.allocate("d").unwrap().slot, b.slot);
        // A claim that names no VM is never taken back.
        let next = a.slot.max(b.slot) + 1;
        fs::write(home.path().join(format!("uids/{next}")), "../../etc").unwrap();
        fs::create_dir_all(vms.join("e")).unwrap();
        assert_eq!(reg.allocate("e").unwrap().slot, next + 1);

        let path = home.path().join("ids.json");
        assert_eq!(read_ids(&path).unwrap(), None);
        write_ids(&path, &a).unwrap();
        assert_eq!(read_ids(&path).unwrap(), Some(a));
    }
}
