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
    /// The image the overlay is backed by (raw, read-only). QEMU gets it
    /// as a node of its own: it never opens the path the overlay's header
    /// names.
    pub os_base: PathBuf,
    /// Data disks (qcow2) by LUN: never bootable.
    pub data_disks: Vec<(u32, PathBuf)>,
    /// The VM has a vTPM (its swtpm's control channel is passed in).
    pub vtpm: bool,
    /// File the serial console is written to.
    pub console_log: PathBuf,
    /// QMP socket (the runtime's control channel).
    pub qmp_socket: PathBuf,
    /// Unix socket of the attestation channel (a virtio-serial port named
    /// `org.trustlaunch.attest.0` in the guest), when the VM has one.
    pub attestation_socket: Option<PathBuf>,
    /// The VM's NIC, if it has one.
    pub nic: Option<Nic>,
    /// The first-boot configuration (`key=value` lines) the guest reads
    /// from fw_cfg ([`FIRST_BOOT_FW_CFG`]).
    pub first_boot: Option<String>,
}

/// The fw_cfg entry of the first-boot configuration.
pub const FIRST_BOOT_FW_CFG: &str = "opt/org.trustlaunch/firstboot";

/// A VM's NIC: virtio-net without an option ROM (OVMF's own driver runs
/// it; no iPXE code in the firmware, nothing extra measured into PCR 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nic {
    /// QEMU's user-mode network, `restrict=on`: the guest reaches nothing
    /// (not the host, not beyond); the host reaches the guest's port 22
    /// at `127.0.0.1:ssh_port`.
    User {
        /// The MAC address.
        mac: String,
        /// The loopback port forwarded to the guest's SSH.
        ssh_port: u16,
    },
    /// A tap device (made by the runtime, owned by QEMU's uid) on a host
    /// bridge.
    Tap {
        /// The MAC address.
        mac: String,
        /// The tap's interface name.
        ifname: String,
    },
}

/// The virtio-serial port name the guest agent opens
/// (`/dev/virtio-ports/<name>`).
pub const ATTESTATION_PORT: &str = "org.trustlaunch.attest.0";

/// QEMU's seccomp sandbox: on, with every optional group denied (no
/// obsolete syscalls, no set*id, no fork or exec, no scheduler or
/// affinity changes).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// What the runtime hands QEMU at one descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Passed {
    /// An existing file, opened read-only or read-write.
    File {
        /// The file.
        path: PathBuf,
        /// Opened read-write.
        write: bool,
    },
    /// A file made (0600, truncated) for QEMU to write: the console.
    NewFile {
        /// The file.
        path: PathBuf,
    },
    /// A unix socket the runtime binds and listens on; QEMU accepts.
    Listener {
        /// The socket's path.
        path: PathBuf,
    },
    /// QEMU's end of the socket pair to the VM's swtpm.
    Tpm,
}

/// One descriptor QEMU gets, at `fd` in its table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedFd {
    /// The descriptor number in QEMU.
    pub fd: i32,
    /// What it is.
    pub what: Passed,
}

/// QEMU's arguments and the descriptors they refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The arguments after the program name.
    pub args: Vec<OsString>,
    /// The descriptors, by number.
    pub fds: Vec<PassedFd>,
}

/// Builds the argument list and the descriptor plan together, so that
/// every descriptor named in an argument is one the plan passes.
struct Builder {
    args: Vec<OsString>,
    fds: Vec<PassedFd>,
}

impl Builder {
    fn push(&mut self, parts: &[&str]) {
        self.args.extend(parts.iter().map(OsString::from));
    }

    fn next_fd(&self) -> i32 {
        3 + i32::try_from(self.fds.len()).unwrap_or(i32::MAX - 3)
    }

    /// A descriptor for `what`; returns its number.
    fn pass(&mut self, what: Passed) -> i32 {
        let fd = self.next_fd();
        self.fds.push(PassedFd { fd, what });
        fd
    }

    /// A file in an fd set of its own (`-add-fd`, whose `opaque` names the
    /// file for people reading the command line); returns the set's path
    /// `/dev/fdset/N`.
    fn fdset(&mut self, what: Passed) -> String {
        let path = match &what {
            Passed::File { path, .. } | Passed::NewFile { path } | Passed::Listener { path } => {
                drive_path(path)
            }
            Passed::Tpm => String::new(),
        };
        let fd = self.pass(what);
        self.push(&["-add-fd", &format!("fd={fd},set={fd},opaque={path}")]);
        format!("/dev/fdset/{fd}")
    }

    /// A block node on a file passed by descriptor.
    fn file_node(&mut self, node: &str, driver: &str, path: &std::path::Path, write: bool) {
        let set = self.fdset(Passed::File {
            path: path.to_owned(),
            write,
        });
        let ro = if write { "off" } else { "on" };
        self.push(&[
            "-blockdev",
            &format!("driver=file,filename={set},node-name={node}-file,read-only={ro}"),
        ]);
        self.push(&[
            "-blockdev",
            &format!("driver={driver},file={node}-file,node-name={node},read-only={ro}"),
        ]);
    }
}

impl QemuConfig {
    /// The arguments after the program name (`qemu-system-x86_64`) and
    /// the descriptors they name.
    ///
    /// Invariants (each one a test below): the guest has no network but
    /// its one NIC (`-nodefaults`; `-nic none` without one; user-mode
    /// networking only with `restrict=on` and its one forward bound to
    /// 127.0.0.1); it boots from its disk with
    /// `bootindex=1` and never by `-kernel`; Secure Boot firmware gets SMM,
    /// secure pflash and S3 off; the vTPM is a TIS device on the VM's own
    /// swtpm; QEMU never reboots by itself (`-no-reboot`: the runtime
    /// decides); QEMU runs in its seccomp sandbox; and it opens no file by
    /// path: firmware, variable store, disks, the overlay's backing image,
    /// the console and its sockets all arrive as descriptors, so a QEMU
    /// that cannot search the platform's directories runs all the same.
    pub fn launch(&self) -> Launch {
        let mut b = Builder {
            args: Vec::new(),
            fds: Vec::new(),
        };
        b.push(&["-name", &self.name]);
        b.push(&["-nodefaults", "-no-user-config", "-no-reboot"]);
        b.push(&["-sandbox", SANDBOX]);
        let pflash = match &self.firmware {
            Firmware::Bios => "",
            Firmware::Uefi { .. } | Firmware::UefiSecureBoot { .. } => ",pflash0=code,pflash1=vars",
        };
        let machine = match &self.firmware {
            Firmware::Bios => format!("pc,accel={}", self.accel.name()),
            Firmware::Uefi { .. } => format!("q35,accel={}{pflash}", self.accel.name()),
            Firmware::UefiSecureBoot { .. } => {
                format!("q35,smm=on,accel={}{pflash}", self.accel.name())
            }
        };
        b.push(&["-machine", &machine]);
        b.push(&[
            "-cpu",
            if self.accel == Accel::Kvm {
                "host"
            } else {
                "max"
            },
        ]);
        b.push(&["-smp", &self.vcpus.to_string()]);
        b.push(&["-m", &self.memory_mib.to_string()]);
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi { code, vars } | Firmware::UefiSecureBoot { code, vars } => {
                if matches!(self.firmware, Firmware::UefiSecureBoot { .. }) {
                    b.push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                    b.push(&["-global", "ICH9-LPC.disable_s3=1"]);
                }
                b.file_node("code", "raw", code, false);
                b.file_node("vars", "raw", vars, true);
            }
        }
        if self.vtpm {
            let fd = b.pass(Passed::Tpm);
            b.push(&["-chardev", &format!("socket,id=chrtpm,fd={fd}")]);
            b.push(&["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]);
            b.push(&["-device", "tpm-tis,tpmdev=tpm0"]);
        }
        // The overlay and its backing image as explicit nodes: QEMU never
        // follows the backing path written in the overlay's header.
        b.file_node("base", "raw", &self.os_base, false);
        let set = b.fdset(Passed::File {
            path: self.os_disk.clone(),
            write: true,
        });
        b.push(&[
            "-blockdev",
            &format!("driver=file,filename={set},node-name=os-file"),
        ]);
        b.push(&[
            "-blockdev",
            "driver=qcow2,file=os-file,backing=base,node-name=os",
        ]);
        b.push(&["-device", "virtio-blk-pci,drive=os,bootindex=1"]);
        for (lun, path) in &self.data_disks {
            let set = b.fdset(Passed::File {
                path: path.clone(),
                write: true,
            });
            b.push(&[
                "-blockdev",
                &format!("driver=file,filename={set},node-name=data{lun}-file"),
            ]);
            // JSON, for `"backing": null`: a data disk has no backing
            // image, whatever its header says.
            b.push(&[
                "-blockdev",
                &format!(
                    r#"{{"driver":"qcow2","file":"data{lun}-file","backing":null,"node-name":"data{lun}"}}"#
                ),
            ]);
            b.push(&[
                "-device",
                &format!("virtio-blk-pci,drive=data{lun},serial=lun{lun}"),
            ]);
        }
        b.push(&["-display", "none"]);
        let netdev = match &self.nic {
            None => None,
            Some(Nic::User { mac, ssh_port }) => Some((
                mac,
                format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
            )),
            Some(Nic::Tap { mac, ifname }) => Some((
                mac,
                format!("tap,id=net0,ifname={ifname},script=no,downscript=no"),
            )),
        };
        match netdev {
            None => b.push(&["-nic", "none"]),
            Some((mac, netdev)) => {
                b.push(&["-netdev", &netdev]);
                b.push(&[
                    "-device",
                    &format!("virtio-net-pci,netdev=net0,mac={mac},romfile="),
                ]);
            }
        }
        if let Some(config) = &self.first_boot {
            // fw_cfg's option syntax doubles commas.
            b.push(&[
                "-fw_cfg",
                &format!(
                    "name={FIRST_BOOT_FW_CFG},string={}",
                    config.replace(',', ",,")
                ),
            ]);
        }
        let set = b.fdset(Passed::NewFile {
            path: self.console_log.clone(),
        });
        b.push(&["-chardev", &format!("file,id=console,path={set}")]);
        b.push(&["-serial", "chardev:console"]);
        let fd = b.pass(Passed::Listener {
            path: self.qmp_socket.clone(),
        });
        b.push(&[
            "-chardev",
            &format!("socket,id=qmp,fd={fd},server=on,wait=off"),
        ]);
        b.push(&["-mon", "chardev=qmp,mode=control"]);
        if let Some(sock) = &self.attestation_socket {
            b.push(&["-device", "virtio-serial-pci,id=vser0"]);
            let fd = b.pass(Passed::Listener { path: sock.clone() });
            b.push(&[
                "-chardev",
                &format!("socket,id=attest,fd={fd},server=on,wait=off"),
            ]);
            b.push(&[
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=attest,name={ATTESTATION_PORT}"),
            ]);
        }
        Launch {
            args: b.args,
            fds: b.fds,
        }
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
            os_base: "/images/tiny/disk.raw".into(),
            data_disks: Vec::new(),
            vtpm: tpm,
            console_log: "/vms/vm1/console.log".into(),
            qmp_socket: "/vms/vm1/qmp.sock".into(),
            attestation_socket: Some("/vms/vm1/attest.sock".into()),
            nic: None,
            first_boot: None,
        }
    }

    fn text(c: &QemuConfig) -> Vec<String> {
        c.launch()
            .args
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    /// The file passed at the fd set an argument names.
    fn passed(c: &QemuConfig, set: &str) -> Passed {
        let fd: i32 = set.trim_start_matches("/dev/fdset/").parse().unwrap();
        c.launch()
            .fds
            .into_iter()
            .find(|p| p.fd == fd)
            .unwrap()
            .what
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
    fn a_user_mode_nic_reaches_nothing_and_forwards_ssh_on_loopback_only() {
        let mut c = config(secure(), true);
        c.nic = Some(Nic::User {
            mac: "52:54:00:12:34:56".into(),
            ssh_port: 40022,
        });
        let a = text(&c);
        assert!(!a.iter().any(|x| x == "-nic"), "{a:?}");
        assert!(has_pair(
            &a,
            "-netdev",
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile="
        ));
        // Still booted from the disk only.
        assert!(has_pair(
            &a,
            "-device",
            "virtio-blk-pci,drive=os,bootindex=1"
        ));
        assert_eq!(a.iter().filter(|x| x.contains("bootindex")).count(), 1);
    }

    #[test]
    fn a_bridged_nic_is_a_tap_without_scripts() {
        let mut c = config(secure(), true);
        c.nic = Some(Nic::Tap {
            mac: "52:54:00:00:00:01".into(),
            ifname: "tl0abc".into(),
        });
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-netdev",
            "tap,id=net0,ifname=tl0abc,script=no,downscript=no"
        ));
    }

    #[test]
    fn the_first_boot_configuration_is_one_fw_cfg_string_with_commas_doubled() {
        let mut c = config(secure(), true);
        c.first_boot = Some("hostname=web-1\nssh-authorized-key=ssh-ed25519 AAAA a,b\n".into());
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-fw_cfg",
            "name=opt/org.trustlaunch/firstboot,string=hostname=web-1\nssh-authorized-key=ssh-ed25519 AAAA a,,b\n"
        ));
    }

    #[test]
    fn data_disks_are_attached_by_lun_and_never_bootable() {
        let mut c = config(secure(), true);
        c.data_disks = vec![
            (0, "/vms/vm1/data-0.qcow2".into()),
            (7, "/d,x/data-7.qcow2".into()),
        ];
        let a = text(&c);
        let set = a
            .iter()
            .find_map(|x| {
                x.strip_prefix("driver=file,filename=")
                    .and_then(|r| r.strip_suffix(",node-name=data7-file"))
            })
            .unwrap();
        assert_eq!(
            passed(&c, set),
            Passed::File {
                path: "/d,x/data-7.qcow2".into(),
                write: true
            }
        );
        assert!(
            a.contains(&"opaque=/d,,x/data-7.qcow2".to_owned())
                || a.iter().any(|x| x.ends_with("opaque=/d,,x/data-7.qcow2"))
        );
        assert!(has_pair(
            &a,
            "-blockdev",
            r#"{"driver":"qcow2","file":"data0-file","backing":null,"node-name":"data0"}"#
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
        let c = config(secure(), true);
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-machine",
            "q35,smm=on,accel=tcg,pflash0=code,pflash1=vars"
        ));
        assert!(has_pair(
            &a,
            "-global",
            "driver=cfi.pflash01,property=secure,value=on"
        ));
        assert!(has_pair(&a, "-global", "ICH9-LPC.disable_s3=1"));
        // The code read-only, the variable store read-write.
        assert!(has_pair(
            &a,
            "-blockdev",
            "driver=raw,file=code-file,node-name=code,read-only=on"
        ));
        assert!(has_pair(
            &a,
            "-blockdev",
            "driver=raw,file=vars-file,node-name=vars,read-only=off"
        ));
        let code = a
            .iter()
            .find_map(|x| {
                x.strip_prefix("driver=file,filename=")
                    .and_then(|r| r.strip_suffix(",node-name=code-file,read-only=on"))
            })
            .unwrap();
        assert_eq!(
            passed(&c, code),
            Passed::File {
                path: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".into(),
                write: false
            }
        );
        // Without Secure Boot: no SMM, no secure flag.
        let a = text(&config(
            Firmware::Uefi {
                code: "c".into(),
                vars: "v".into(),
            },
            false,
        ));
        assert!(has_pair(
            &a,
            "-machine",
            "q35,accel=tcg,pflash0=code,pflash1=vars"
        ));
        assert!(!a.iter().any(|x| x.contains("property=secure")));
        assert!(!a.iter().any(|x| x == "-tpmdev"));
        // Gen1: pc machine, no pflash.
        let a = text(&config(Firmware::Bios, false));
        assert!(has_pair(&a, "-machine", "pc,accel=tcg"));
        assert!(!a.iter().any(|x| x.contains("pflash")));
    }

    #[test]
    fn vtpm_and_attestation_channel() {
        let c = config(secure(), true);
        let a = text(&c);
        let tpm = c
            .launch()
            .fds
            .into_iter()
            .find(|p| p.what == Passed::Tpm)
            .unwrap();
        assert!(has_pair(
            &a,
            "-chardev",
            &format!("socket,id=chrtpm,fd={}", tpm.fd)
        ));
        assert!(has_pair(&a, "-device", "tpm-tis,tpmdev=tpm0"));
        assert!(has_pair(
            &a,
            "-device",
            "virtserialport,bus=vser0.0,chardev=attest,name=org.trustlaunch.attest.0"
        ));
        let listeners: Vec<_> = c
            .launch()
            .fds
            .into_iter()
            .filter_map(|p| match p.what {
                Passed::Listener { path } => Some(path),
                _ => None,
            })
            .collect();
        assert_eq!(
            listeners,
            [
                PathBuf::from("/vms/vm1/qmp.sock"),
                PathBuf::from("/vms/vm1/attest.sock")
            ]
        );
    }

    #[test]
    fn qemu_is_sandboxed_and_opens_nothing_by_path() {
        for c in [config(secure(), true), config(Firmware::Bios, false)] {
            let l = c.launch();
            let a = text(&c);
            assert!(has_pair(
                &a,
                "-sandbox",
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
            ));
            // Every path the VM uses appears only as an fd set's label.
            for arg in &a {
                if arg.contains("/vms/") || arg.contains("/usr/share/") || arg.contains("/images/")
                {
                    assert!(arg.starts_with("fd="), "{arg} names a path QEMU would open");
                }
            }
            // Descriptors are numbered from 3, once each, and every one an
            // argument names is passed.
            let fds: Vec<i32> = l.fds.iter().map(|p| p.fd).collect();
            assert_eq!(fds, (3..3 + fds.len() as i32).collect::<Vec<_>>());
            for arg in &a {
                for part in arg.split(',') {
                    if let Some(n) = part
                        .strip_prefix("fd=")
                        .or_else(|| part.strip_prefix("filename=/dev/fdset/"))
                        .or_else(|| part.strip_prefix("path=/dev/fdset/"))
                    {
                        let n: i32 = n.parse().unwrap();
                        assert!(fds.contains(&n), "{arg}: fd {n} not passed");
                    }
                }
            }
        }
        // The OS disk's backing image is its own read-only node.
        let c = config(secure(), true);
        let a = text(&c);
        assert!(has_pair(
            &a,
            "-blockdev",
            "driver=qcow2,file=os-file,backing=base,node-name=os"
        ));
        assert!(has_pair(
            &a,
            "-blockdev",
            "driver=raw,file=base-file,node-name=base,read-only=on"
        ));
        assert!(c.launch().fds.iter().any(|p| p.what
            == Passed::File {
                path: "/images/tiny/disk.raw".into(),
                write: false
            }));
    }

    #[test]
    fn commas_in_paths_cannot_inject_options() {
        let mut c = config(secure(), true);
        c.os_disk = "/vms/x,snapshot=on/os.qcow2".into();
        let a = text(&c);
        assert!(a
            .iter()
            .any(|x| x.ends_with("opaque=/vms/x,,snapshot=on/os.qcow2")));
        assert!(!a.iter().any(|x| x.contains("x,snapshot")));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut c = config(secure(), true);
        c.accel = Accel::Kvm;
        let a = text(&c);
        assert!(has_pair(&a, "-cpu", "host"));
        assert!(has_pair(
            &a,
            "-machine",
            "q35,smm=on,accel=kvm,pflash0=code,pflash1=vars"
        ));
    }
}
