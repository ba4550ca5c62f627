//! Reading a boot's outcome from the serial console, as it is written:
//! the firmware refusing the boot image (edk2's BDS prints
//! `BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(...):
//! Access Denied`; shim prints `Verification failed: (0x1A) Security
//! Violation`), the guest's init being up, a kernel panic. Pure: takes the
//! console text, so a refusal is seen as soon as it is printed rather than
//! after a timeout.

use serde::Serialize;

/// What the console says about the current boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConsoleVerdict {
    /// Nothing decisive yet.
    Booting {
        /// The firmware has started a boot option.
        firmware_started_boot: bool,
    },
    /// The firmware or shim refused a boot image under Secure Boot.
    SecureBootDenied {
        /// The human reason.
        reason: String,
        /// The console line that says so.
        line: String,
    },
    /// The guest kernel panicked.
    KernelPanic {
        /// The panic line.
        line: String,
    },
    /// The guest's init reported in (`trustlaunch-init: up ...`).
    GuestUp {
        /// The marker line.
        line: String,
    },
}

/// The marker line a trustlaunch initramfs prints when it is up.
pub const INIT_MARKER: &str = "trustlaunch-init: up";

fn clean(line: &str) -> String {
    // Tabs become spaces and other control characters (escape sequences,
    // bells) go: a reason is one plain line (found by fuzzing).
    line.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .take(400)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Parses edk2's `failed to load BootNNNN "DESC" from PATH: STATUS`.
fn bds_failure(line: &str) -> Option<(String, String, String)> {
    let rest = line.split_once("failed to load ")?.1;
    let (option, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('"')?;
    let (desc, rest) = rest.split_once('"')?;
    let rest = rest.trim_start().strip_prefix("from ")?;
    let (path, status) = rest.rsplit_once(": ")?;
    Some((
        format!("{option} \"{desc}\""),
        path.trim().to_owned(),
        status.trim().to_owned(),
    ))
}

/// Judges the console text of one boot. `boot_file` names the image the
/// firmware loads from the ESP (`EFI/BOOT/BOOTX64.EFI`), for the reason.
pub fn judge(text: &str, boot_file: &str) -> ConsoleVerdict {
    let mut started = false;
    for raw in text.lines() {
        let line = clean(raw);
        if line.contains(INIT_MARKER) {
            return ConsoleVerdict::GuestUp { line };
        }
        if line.contains("Kernel panic - not syncing") {
            return ConsoleVerdict::KernelPanic { line };
        }
        if line.contains("Access Denied") || line.contains("Security Violation") {
            let reason = if let Some((option, path, status)) = bds_failure(&line) {
                format!(
                    "Secure Boot validation failed: {boot_file} not allowed by db \
                     (firmware: boot option {option} from {path}: {status})"
                )
            } else if line.contains("Verification failed") {
                format!(
                    "Secure Boot validation failed: the next boot stage is not allowed \
                     by shim's db, MOK list or vendor certificate (shim: {line})"
                )
            } else {
                format!("Secure Boot validation failed: {boot_file} not allowed by db ({line})")
            };
            return ConsoleVerdict::SecureBootDenied { reason, line };
        }
        if line.contains("BdsDxe: loading Boot") || line.contains("BdsDxe: starting Boot") {
            started = true;
        }
    }
    ConsoleVerdict::Booting {
        firmware_started_boot: started,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_refusal_names_the_file_and_option() {
        let text = "BdsDxe: loading Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x3,0x0)\r\n\
                    BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x3,0x0): Access Denied\r\n";
        match judge(text, "EFI/BOOT/BOOTX64.EFI") {
            ConsoleVerdict::SecureBootDenied { reason, .. } => {
                assert!(reason.starts_with(
                    "Secure Boot validation failed: EFI/BOOT/BOOTX64.EFI not allowed by db"
                ));
                assert!(reason.contains("Boot0001 \"UEFI Misc Device\""), "{reason}");
                assert!(reason.contains("PciRoot(0x0)/Pci(0x3,0x0): Access Denied"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_outcomes() {
        assert_eq!(
            judge("BdsDxe: loading Boot0001 \"x\" from y\n", "f"),
            ConsoleVerdict::Booting {
                firmware_started_boot: true
            }
        );
        assert!(matches!(
            judge(
                "foo\ntrustlaunch-init: up (kernel 6.1, SecureBoot=1)\n",
                "f"
            ),
            ConsoleVerdict::GuestUp { .. }
        ));
        assert!(matches!(
            judge("[ 1.0] Kernel panic - not syncing: VFS\n", "f"),
            ConsoleVerdict::KernelPanic { .. }
        ));
        match judge("Verification failed: (0x1A) Security Violation\n", "f") {
            ConsoleVerdict::SecureBootDenied { reason, .. } => assert!(reason.contains("shim")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge("", "f"),
            ConsoleVerdict::Booting {
                firmware_started_boot: false
            }
        );
        // Control characters and escape sequences do not end up in reasons.
        match judge("i\tSecurity Violationcy\n", "f") {
            ConsoleVerdict::SecureBootDenied { reason, .. } => {
                assert!(!reason.chars().any(char::is_control), "{reason:?}")
            }
            other => panic!("{other:?}"),
        }
        match judge("\x1b[2J\x07Access Denied\n", "f") {
            ConsoleVerdict::SecureBootDenied { line, .. } => assert!(!line.contains('\x07')),
            other => panic!("{other:?}"),
        }
    }
}
