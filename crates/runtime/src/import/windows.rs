//! The Windows Boot Manager on an imported disk's ESP.
//!
//! A Windows disk's ESP holds `EFI/Microsoft/Boot/bootmgfw.efi` (the
//! Windows Boot Manager), its boot configuration store
//! `EFI/Microsoft/Boot/BCD`, and usually a copy of the boot manager at
//! the removable-media path, which is what a new VM's firmware starts.
//! The firmware verifies that first stage against db and dbx like any
//! other; what the boot manager loads next (`winload.efi`, the kernel,
//! the boot drivers, all on the NTFS volume) is verified by Windows' own
//! code integrity, not by UEFI's db, and measured by Windows into PCRs
//! 12-14 as SIPA events of its boot configuration log, which the
//! attestation service reads from the event log. The import therefore
//! evaluates the boot manager against every key template and leaves the
//! rest to those two, saying so.
//!
//! Recognition goes by the ESP's layout, never by a signer's name: the
//! signature of the boot manager counts only where a template's db
//! verifies it. The NTFS volume is not read.

use super::{AgentPresence, BOOT_PATH};
use crate::disk::{DiskError, Fat};
use crate::image_meta::{NamedDigest, PredictedBoot, PredictedChain};

/// The role of the first stage when it is the Windows Boot Manager.
pub(super) const ROLE: &str = "Windows Boot Manager";
/// What [`super::Inspection::os`] says of a recognised Windows disk (the
/// edition and version are on the NTFS volume, which is not read).
pub(super) const OS: &str = "Windows";
/// The boot manager's own path on the ESP.
pub(super) const BOOTMGR_PATH: &str = "EFI/Microsoft/Boot/bootmgfw.efi";
/// The boot configuration store the boot manager reads.
pub(super) const BCD_PATH: &str = "EFI/Microsoft/Boot/BCD";

/// The Windows part of an ESP.
pub(super) struct WindowsEsp {
    /// `EFI/Microsoft/Boot/bootmgfw.efi`, as read (bounded by
    /// [`crate::disk::MAX_FILE_BYTES`]).
    bootmgr: Vec<u8>,
    /// Whether `EFI/Microsoft/Boot/BCD` is there.
    has_bcd: bool,
}

impl WindowsEsp {
    /// The ESP's Windows Boot Manager and whether its BCD is there; `None`
    /// when there is no `bootmgfw.efi` (FAT names match without regard to
    /// case).
    pub(super) fn find(fat: &Fat) -> Result<Option<Self>, DiskError> {
        let Some(bootmgr) = fat.read(BOOTMGR_PATH)? else {
            return Ok(None);
        };
        let has_bcd = fat.read(BCD_PATH)?.is_some();
        Ok(Some(Self { bootmgr, has_bcd }))
    }

    /// What the report says about the layout: whether the removable-media
    /// copy is the boot manager itself, a missing BCD, and who verifies
    /// and measures what comes after the boot manager.
    pub(super) fn notes(&self, first: &[u8]) -> Vec<String> {
        let mut notes = Vec::new();
        if first == self.bootmgr.as_slice() {
            notes.push(format!(
                "{BOOT_PATH} is a byte-identical copy of {BOOTMGR_PATH}, the Windows Boot Manager"
            ));
        } else {
            let describe = |data: &[u8]| {
                super::signers(data).0.map_or_else(
                    || "not a PE image".to_owned(),
                    |a| format!("Authenticode {a}"),
                )
            };
            notes.push(format!(
                "{BOOT_PATH} ({}) differs from {BOOTMGR_PATH} ({}): the firmware of a new VM starts {BOOT_PATH}, so it is the boot manager evaluated here; {BOOTMGR_PATH} runs only from a boot entry, which a new VM's NVRAM does not have",
                describe(first),
                describe(&self.bootmgr)
            ));
        }
        if !self.has_bcd {
            notes.push(format!(
                "{BCD_PATH} is missing: the boot manager reads its boot configuration there and, without it, would stop before loading Windows"
            ));
        }
        notes.push(
            "what the Windows Boot Manager loads (winload.efi, the kernel, the boot drivers on the NTFS volume) is verified by Windows' own code integrity, not by UEFI's db, and measured by Windows into PCRs 12-14 (SIPA events), which the attestation service reads from the event log; the import evaluates the boot manager only and does not read the NTFS volume"
                .into(),
        );
        notes
    }
}

/// The guest agent of a Windows disk: trustlaunch's agent is a Linux
/// program (a Debian package or the tiny image's initramfs), so a Windows
/// image cannot hold it, and the Linux places are not looked at.
pub(super) fn agent() -> AgentPresence {
    AgentPresence {
        installed: Some(false),
        evidence: "Windows: no Windows guest agent is detected (trustlaunch's agent is a Linux program; the NTFS volume is not read)".into(),
    }
}

/// What the first boot measures that the disk tells: the boot manager as
/// the first boot application in PCR 4 (its Authenticode SHA-256, under
/// the removable-media path the firmware loads it from). The boot manager
/// loads `winload.efi` with its own loader, not the firmware's LoadImage,
/// so PCR 4 gets nothing more from it (a real Windows boot's log shows
/// the boot manager as PCR 4's only boot application:
/// `../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json`).
/// Authorities, grub's files and command lines are not predicted: what
/// Windows measures is on the NTFS volume.
pub(super) fn predicted(authenticode_sha256: &str) -> PredictedBoot {
    PredictedBoot {
        chain: PredictedChain::WindowsBootManager,
        boot_applications: vec![NamedDigest {
            name: format!("\\{}", BOOT_PATH.replace('/', "\\")),
            sha256: authenticode_sha256.to_owned(),
        }],
        loaded_files: Vec::new(),
        kernel_command_lines: Vec::new(),
        authorities: Vec::new(),
    }
}
