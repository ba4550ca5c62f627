//! The QEMU command line of a VM, built from a typed description. Pure
//! (no IO): the runtime decides the paths, this module decides the flags.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Hardware acceleration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM (`/dev/kvm`): the default where it works.
    Kvm,
    /// TCG, QEMU's emulator: always works, ~10x slower.
    Tcg,
}

impl Accel {
    /// The name QEMU takes (`kvm`, `tcg`).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The firmware a VM boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Gen1: legacy BIOS (SeaBIOS), `pc` machine.
    Bios,
    /// Gen2 without Secure Boot: plain OVMF code + the VM's own VARS copy.
    Uefi {
        /// OVMF code (read-only), e.g. `OVMF_CODE_4M.fd`.
        code: PathBuf,
        /// The VM's own variable store (OVMF writes to it).
        vars: PathBuf,
    },
    /// Gen2 with Secure Boot: the SMM build of OVMF, secure pflash (only
    /// SMM code may write the variable store, so the guest OS cannot
    /// rewrite db), S3 off as edk2 requires with SMM.
    UefiSecureBoot {
        /// `OVMF_CODE_4M.secboot.fd`.
        code: PathBuf,
        /// The VM's own variable store.
        vars: PathBuf,
    },
}

/// Everything QEMU needs to start one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuConfig {
    /// VM name (QEMU `-name`, also in process listings).
    pub name: String,
    /// Accelerator.
    pub accel: Accel,
    /// Firmware.
    pub firmware: Firmware,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The OS disk (a qcow2 overlay).
    pub os_disk: PathBuf,
    /// Data disks (qcow2) by LUN: never bootable.
    pub data_disks: Vec<(u32, PathBuf)>,
    /// swtpm's control socket, when the VM has a vTPM.
    pub swtpm_socket: Option<PathBuf>,
    /// File the serial console is written to.
    pub console_log: PathBuf,
    /// QMP socket (the runtime's control channel).
    pub qmp_socket: PathBuf,
    /// Unix socket of the attestation channel (a virtio-serial port named
    /// `org.trustlaunch.attest.0` in the guest), when the VM has one.
    pub attestation_socket: Option<PathBuf>,
}

/// The virtio-serial port name the guest agent opens
/// (`/dev/virtio-ports/<name>`).
pub const ATTESTATION_PORT: &str = "org.trustlaunch.attest.0";

impl QemuConfig {
    /// The arguments after the program name (`qemu-system-x86_64`).
    ///
    /// Invariants (each one a test below): the guest has no network
    /// (`-nic none`, `-nodefaults`); it boots from its disk with
    /// `bootindex=1` and never by `-kernel`; Secure Boot firmware gets SMM,
    /// secure pflash and S3 off; the vTPM is a TIS device on the VM's own
    /// swtpm; QEMU never reboots by itself (`-no-reboot`: the runtime
    /// decides).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&str]| a.extend(parts.iter().map(OsString::from));
        push(&["-name", &self.name]);
        push(&["-nodefaults", "-no-user-config", "-no-reboot"]);
        let machine = match &self.firmware {
            Firmware::Bios => format!("pc,accel={}", self.accel.name()),
            Firmware::Uefi { .. } => format!("q35,accel={}", self.accel.name()),
            Firmware::UefiSecureBoot { .. } => format!("q35,smm=on,accel={}", self.accel.name()),
        };
        push(&["-machine", &machine]);
        push(&[
            "-cpu",
            if self.accel == Accel::Kvm {
                "host"
            } else {
                "max"
            },
        ]);
        push(&["-smp", &self.vcpus.to_string()]);
        push(&["-m", &self.memory_mib.to_string()]);
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi { code, vars } | Firmware::UefiSecureBoot { code, vars } => {
                if matches!(self.firmware, Firmware::UefiSecureBoot { .. }) {
                    push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                    push(&["-global", "ICH9-LPC.disable_s3=1"]);
                }
                push(&[
                    "-drive",
                    &format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        drive_path(code)
                    ),
                ]);
                push(&[
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", drive_path(vars)),
                ]);
            }
        }
        if let Some(sock) = &self.swtpm_socket {
            push(&[
                "-chardev",
                &format!("socket,id=chrtpm,path={}", drive_path(sock)),
            ]);
            push(&["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]);
            push(&["-device", "tpm-tis,tpmdev=tpm0"]);
        }
        push(&[
            "-drive",
            &format!(
                "if=none,id=os,format=qcow2,file={}",
                drive_path(&self.os_disk)
            ),
        ]);
        push(&["-device", "virtio-blk-pci,drive=os,bootindex=1"]);
        for (lun, path) in &self.data_disks {
            push(&[
                "-drive",
                &format!(
                    "if=none,id=data{lun},format=qcow2,file={}",
                    drive_path(path)
                ),
            ]);
            push(&[
                "-device",
                &format!("virtio-blk-pci,drive=data{lun},serial=lun{lun}"),
            ]);
        }
        push(&["-display", "none", "-nic", "none"]);
        push(&[
            "-chardev",
            &format!("file,id=console,path={}", drive_path(&self.console_log)),
        ]);
        push(&["-serial", "chardev:console"]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", drive_path(&self.qmp_socket)),
        ]);
        if let Some(sock) = &self.attestation_socket {
            push(&["-device", "virtio-serial-pci,id=vser0"]);
            push(&[
                "-chardev",
                &format!(
                    "socket,id=attest,path={},server=on,wait=off",
                    drive_path(sock)
                ),
            ]);
            push(&[
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=attest,name={ATTESTATION_PORT}"),
            ]);
        }
        a
    }
}

/// A path inside a QEMU option string: commas are doubled (QEMU's escape),
/// so a path cannot inject options.
fn drive_path(p: &std::path::Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(firmware: Firmware, tpm: bool) -> QemuConfig {
        QemuConfig {
            name: "vm1".into(),
            accel: Accel::Tcg,
            firmware,
            vcpus: 2,
            memory_mib: 1024,
            os_disk: "/vms/vm1/os.qcow2".into(),
            data_disks: Vec::new(),
            swtpm_socket: tpm.then(|| "/vms/vm1/swtpm.sock".into()),
            console_log: "/vms/vm1/console.log".into(),
            qmp_socket: "/vms/vm1/qmp.sock".into(),
            attestation_socket: Some("/vms/vm1/attest.sock".into()),
        }
    }

    fn text(c: &QemuConfig) -> Vec<String> {
        c.args()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    fn secure() -> Firmware {
        Firmware::UefiSecureBoot {
            code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".into(),
            vars: "/vms/vm1/VARS.fd".into(),
        }
    }

    #[test]
    fn every_vm_has_no_network_and_boots_its_disk_first_never_kernel() {
        for fw in [
            Firmware::Bios,
            Firmware::Uefi {
                code: "c".into(),
                vars: "v".into(),
            },
            secure(),
        ] {
            let a = text(&config(fw, true));
            assert!(has_pair(&a, "-nic", "none"), "{a:?}");
            assert!(a.contains(&"-nodefaults".to_owned()));
            assert!(has_pair(
                &a,
                "-device",
                "virtio-blk-pci,drive=os,bootindex=1"
            ));
            for forbidden in ["-kernel", "-initrd", "-append", "-netdev", "-net"] {
                assert!(!a.iter().any(|x| x == forbidden), "{forbidden} in {a:?}");
            }
        }
    }

    #[test]
    fn data_disks_are_attached_by_lun_and_never_bootable() {
        let mut c = config(secure(), true);
        c.data_disks = vec![
            (0, "/vms/vm1/data-0.qcow2".into()),
            (7, "/d,x/data-7.qcow2".into()),
        ];
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-drive",
            "if=none,id=data0,format=qcow2,file=/vms/vm1/data-0.qcow2"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "if=none,id=data7,format=qcow2,file=/d,,x/data-7.qcow2"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "virtio-blk-pci,drive=data7,serial=lun7"
        ));
        // Only the OS disk has a boot index.
        assert_eq!(a.iter().filter(|x| x.contains("bootindex")).count(), 1);
        assert!(has_pair(
            &a,
            "-device",
            "virtio-blk-pci,drive=os,bootindex=1"
        ));
    }

    #[test]
    fn secure_boot_gets_smm_secure_pflash_and_no_s3() {
        let a = text(&config(secure(), true));
        assert!(has_pair(&a, "-machine", "q35,smm=on,accel=tcg"));
        assert!(has_pair(
            &a,
            "-global",
            "driver=cfi.pflash01,property=secure,value=on"
        ));
        assert!(has_pair(&a, "-global", "ICH9-LPC.disable_s3=1"));
        assert!(has_pair(
            &a,
            "-drive",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
        ));
        // Without Secure Boot: no SMM, no secure flag.
        let a = text(&config(
            Firmware::Uefi {
                code: "c".into(),
                vars: "v".into(),
            },
            false,
        ));
        assert!(has_pair(&a, "-machine", "q35,accel=tcg"));
        assert!(!a.iter().any(|x| x.contains("property=secure")));
        assert!(!a.iter().any(|x| x == "-tpmdev"));
        // Gen1: pc machine, no pflash.
        let a = text(&config(Firmware::Bios, false));
        assert!(has_pair(&a, "-machine", "pc,accel=tcg"));
        assert!(!a.iter().any(|x| x.starts_with("if=pflash")));
    }

    #[test]
    fn vtpm_and_attestation_channel() {
        let a = text(&config(secure(), true));
        assert!(has_pair(
            &a,
            "-chardev",
            "socket,id=chrtpm,path=/vms/vm1/swtpm.sock"
        ));
        assert!(has_pair(&a, "-device", "tpm-tis,tpmdev=tpm0"));
        assert!(has_pair(
            &a,
            "-device",
            "virtserialport,bus=vser0.0,chardev=attest,name=org.trustlaunch.attest.0"
        ));
    }

    #[test]
    fn commas_in_paths_cannot_inject_options() {
        let mut c = config(secure(), true);
        c.os_disk = "/vms/x,snapshot=on/os.qcow2".into();
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-drive",
            "if=none,id=os,format=qcow2,file=/vms/x,,snapshot=on/os.qcow2"
        ));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut c = config(secure(), true);
        c.accel = Accel::Kvm;
        let a = text(&c);
        assert!(has_pair(&a, "-cpu", "host"));
        assert!(has_pair(&a, "-machine", "q35,smm=on,accel=kvm"));
    }
}
