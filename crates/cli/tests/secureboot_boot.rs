//! The real Secure Boot boot (VM tier: `#[ignore]`d in the default run,
//! run by `./scripts/test.sh` with `--ignored`).
//!
//! Everything security-relevant is ours: keys from `trustlaunch secureboot
//! keys generate`, a small UKI (systemd-stub + Debian's kernel + a busybox
//! initramfs) signed by `trustlaunch secureboot sign`, a store enrolled by
//! `trustlaunch secureboot vars enroll`, PCR 7 predicted by `trustlaunch
//! secureboot pcr7`. Debian's OVMF (`OVMF_CODE_4M.secboot.fd`, SMM, secure
//! pflash) boots it under QEMU with a swtpm vTPM; the guest sends its PCR 7
//! and TCG event log back over a second serial port. Then:
//! - the signed UKI boots, the log replays to the guest's PCR 7, and the
//!   predicted PCR 7 equals it in every bank (`trustlaunch eventlog verify`
//!   against the predicted values);
//! - the same UKI unsigned, and signed by a key that is not in db, are
//!   refused by the firmware ("Access Denied" / "Security Violation" on the
//!   console), and our verifier refuses them too.
//!
//! Needs the Debian packages the test command installs: ovmf, swtpm,
//! qemu-system-x86, systemd-boot-efi, busybox-static, cpio, fdisk,
//! dosfstools, mtools, binutils, linux-image-amd64.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trustlaunch_runtime::image;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const BUSYBOX: &str = "/bin/busybox";

/// Under TCG on two loaded cores a boot takes 10-20 s; allow plenty.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: apt-get install -y {package} (./scripts/test.sh does)"
    );
}

fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    check(what, out)
}

fn tl(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trustlaunch"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("trustlaunch runs")
}

fn kernel() -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir("/boot")
        .expect("/boot: apt-get install -y linux-image-amd64")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().starts_with("/boot/vmlinuz-"))
        .collect();
    v.sort();
    v.pop()
        .expect("no /boot/vmlinuz-*: apt-get install -y linux-image-amd64")
}

/// The guest: mount the kernel's filesystems, send PCR 7 and the event log
/// (base64) over the second serial port, power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{
echo "TL-PCR7 $(cat /sys/class/tpm/tpm0/pcr-sha256/7)"
echo TL-EVENTLOG-BEGIN
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo TL-EVENTLOG-END
} > /dev/ttyS1
echo TL-DONE
poweroff -f
"#;

fn build_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("initramfs");
    for d in ["bin", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    fs::write(root.join("init"), INIT).expect("write init");
    run(
        "chmod",
        Command::new("chmod")
            .args(["0755", "init", "bin/busybox"])
            .current_dir(&root),
    );
    let list = run("find", Command::new("find").arg(".").current_dir(&root)).stdout;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio: apt-get install -y cpio");
    cpio.stdin
        .take()
        .expect("stdin")
        .write_all(&list)
        .expect("cpio stdin");
    let out = check("cpio", cpio.wait_with_output().expect("cpio"));
    let path = dir.join("initramfs.cpio");
    fs::write(&path, out.stdout).expect("write initramfs");
    path
}

/// The UKI and the disk come from the runtime's image builder.
fn build_uki(dir: &Path, initramfs: &Path) -> PathBuf {
    let uki = dir.join("uki.efi");
    image::build_uki(
        &image::UkiParts {
            stub: STUB.into(),
            kernel: kernel(),
            initrd: initramfs.to_owned(),
            cmdline: "console=ttyS0 quiet panic=-1".into(),
            os_release: "ID=trustlaunch-test\nNAME=\"trustlaunch boot test\"\n".into(),
        },
        &dir.join("uki-scratch"),
        &uki,
    )
    .expect("build UKI");
    uki
}

fn build_disk(dir: &Path, efi: &Path, name: &str) -> PathBuf {
    let disk = dir.join(format!("{name}.img"));
    image::build_disk(
        &[("EFI/BOOT/BOOTX64.EFI", efi)],
        &dir.join(format!("{name}-scratch")),
        &disk,
    )
    .expect("build disk");
    disk
}

/// A running VM: QEMU and its swtpm, killed on drop.
struct Vm {
    qemu: Child,
    swtpm: Child,
    console: PathBuf,
    channel: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let _ = self.swtpm.kill();
        let _ = self.swtpm.wait();
    }
}

fn start_vm(dir: &Path, name: &str, vars_template: &Path, disk: &Path) -> Vm {
    let vm = dir.join(format!("vm-{name}"));
    let tpm = vm.join("tpm");
    fs::create_dir_all(&tpm).expect("vm dir");
    let vars = vm.join("VARS.fd");
    fs::copy(vars_template, &vars).expect("copy vars");
    let sock = vm.join("swtpm.sock");
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", tpm.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .args(["--log"])
        .arg(format!("file={}", vm.join("swtpm.log").display()))
        .spawn()
        .expect("swtpm: apt-get install -y swtpm");
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "swtpm socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let console = vm.join("console.log");
    let channel = vm.join("channel.log");
    let qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35,smm=on,accel=tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "1",
        ])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .args(["-global", "ICH9-LPC.disable_s3=1"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args([
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ])
        .arg("-drive")
        .arg(format!("if=none,id=os,format=raw,file={}", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=os,bootindex=1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", channel.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64: apt-get install -y qemu-system-x86");
    Vm {
        qemu,
        swtpm,
        console,
        channel,
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The guest ran to the end and powered off.
    Booted,
    /// The firmware refused the boot image (the console line).
    Refused(String),
}

/// Waits for the guest to power off or for the firmware to refuse the
/// image, watching the console rather than waiting for a timeout.
fn wait(vm: &mut Vm) -> Outcome {
    let t0 = Instant::now();
    loop {
        let console = fs::read(&vm.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&console);
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("Access Denied") || l.contains("Security Violation"))
        {
            return Outcome::Refused(line.trim().to_owned());
        }
        if let Some(status) = vm.qemu.try_wait().expect("qemu wait") {
            assert!(
                text.contains("TL-DONE"),
                "qemu exited ({status}) before the guest finished; console:\n{text}"
            );
            return Outcome::Booted;
        }
        assert!(
            t0.elapsed() < BOOT_TIMEOUT,
            "no boot and no refusal after {BOOT_TIMEOUT:?}; console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guest's PCR 7 (sha256) and event log from the channel.
fn guest_report(vm: &Vm) -> (String, Vec<u8>) {
    use base64::Engine;
    let text = fs::read_to_string(&vm.channel).expect("channel output");
    let pcr7 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("TL-PCR7 "))
        .unwrap_or_else(|| panic!("no PCR 7 from the guest:\n{text}"))
        .to_ascii_lowercase();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.contains("TL-EVENTLOG-BEGIN"))
        .skip(1)
        .take_while(|l| !l.contains("TL-EVENTLOG-END"))
        .map(str::trim)
        .collect();
    let log = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("event log base64");
    (pcr7, log)
}

/// PK, KEK, db key pairs (key PEM, certificate PEM) from our generator:
/// PK self-signed, KEK signed by PK, db signed by KEK.
fn generate_keys(dir: &Path) -> [(PathBuf, PathBuf); 3] {
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for name in ["PK", "KEK", "db"] {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.crt"));
        let cn = format!("trustlaunch boot test {name}");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"secureboot",
            &"keys",
            &"generate",
            &"--cn",
            &cn,
            &"--key-out",
            &key,
            &"--cert-out",
            &cert,
        ];
        let parent = out.last().cloned();
        if let Some((pkey, pcert)) = &parent {
            args.extend([
                &"--issuer-key" as &dyn AsRef<std::ffi::OsStr>,
                pkey,
                &"--issuer-cert",
                pcert,
            ]);
        }
        check("keys generate", tl(&args));
        out.push((key, cert));
    }
    [out[0].clone(), out[1].clone(), out[2].clone()]
}

#[test]
#[ignore = "VM tier (three QEMU boots, ~30 s under TCG): ./scripts/test.sh runs it with --ignored"]
fn signed_uki_boots_with_our_keys_and_pcr7_is_predicted() {
    need(OVMF_CODE, "ovmf");
    need(OVMF_VARS, "ovmf");
    need(STUB, "systemd-boot-efi");
    need(BUSYBOX, "busybox-static");
    let tmp = tempfile::Builder::new()
        .prefix("tl-sb-boot-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();

    let [(_, pk), (_, kek), (db_key, db_cert)] = generate_keys(dir);
    let other_key = dir.join("other.key");
    let other_cert = dir.join("other.crt");
    check(
        "keys generate (other)",
        tl(&[
            &"secureboot",
            &"keys",
            &"generate",
            &"--cn",
            &"not in db",
            &"--key-out",
            &other_key,
            &"--cert-out",
            &other_cert,
        ]),
    );

    let uki = build_uki(dir, &build_initramfs(dir));
    let signed = dir.join("uki.signed.efi");
    let wrong = dir.join("uki.other.efi");
    for (key, cert, out) in [
        (&db_key, &db_cert, &signed),
        (&other_key, &other_cert, &wrong),
    ] {
        check(
            "secureboot sign",
            tl(&[
                &"secureboot",
                &"sign",
                &"--key",
                key,
                &"--cert",
                cert,
                &"--output",
                out,
                &uki,
            ]),
        );
    }

    let vars = dir.join("VARS.fd");
    check(
        "vars enroll",
        tl(&[
            &"secureboot",
            &"vars",
            &"enroll",
            &OVMF_VARS,
            &"--pk",
            &pk,
            &"--kek",
            &kek,
            &"--db",
            &db_cert,
            &"--secure-boot",
            &"--output",
            &vars,
        ]),
    );
    // Our verifier agrees with what the firmware is about to do.
    for (image, allowed) in [(&signed, true), (&uki, false), (&wrong, false)] {
        let o = tl(&[&"secureboot", &"verify", image, &"--vars", &vars]);
        assert_eq!(
            o.status.success(),
            allowed,
            "{}: {}",
            image.display(),
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let predicted = dir.join("predicted.json");
    let o = check(
        "secureboot pcr7",
        tl(&[
            &"secureboot",
            &"pcr7",
            &"--vars",
            &vars,
            &"--image",
            &signed,
            &"--json",
        ]),
    );
    fs::write(&predicted, &o.stdout).expect("write prediction");
    let prediction: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let predicted_sha256 = prediction["pcrs"]["sha256"]["7"]
        .as_str()
        .expect("sha256 PCR 7")
        .to_owned();

    // The signed UKI boots; the log it measured replays to the PCR 7 the
    // guest read, and to the one we predicted, in every bank.
    let disk = build_disk(dir, &signed, "signed");
    let mut vm = start_vm(dir, "signed", &vars, &disk);
    assert_eq!(wait(&mut vm), Outcome::Booted);
    let (guest_pcr7, log) = guest_report(&vm);
    drop(vm);
    let log_path = dir.join("boot.log");
    fs::write(&log_path, &log).expect("write log");
    assert_eq!(guest_pcr7, predicted_sha256, "guest PCR 7 vs prediction");
    let o = tl(&[&"eventlog", &"verify", &log_path, &"--pcrs", &predicted]);
    assert!(
        o.status.success(),
        "the boot's log does not replay to the predicted PCR 7:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = check(
        "eventlog evidence",
        tl(&[&"eventlog", &"evidence", &log_path]),
    );
    let evidence: serde_json::Value = serde_json::from_slice(&o.stdout).expect("evidence json");
    assert_eq!(evidence["secure_boot"], serde_json::json!(1), "{evidence}");
    // The firmware names our db certificate as the authority of the UKI.
    let db_der = run(
        "openssl x509",
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&db_cert),
    )
    .stdout;
    let hex: String = db_der.iter().map(|b| format!("{b:02x}")).collect();
    let authorities = evidence["authorities"].as_array().expect("authorities");
    assert_eq!(authorities.len(), 1, "{evidence}");
    assert_eq!(authorities[0]["entry"].as_str(), Some(hex.as_str()));

    // Unsigned, and signed by a key not in db: the firmware refuses both.
    for (image, name) in [(&uki, "unsigned"), (&wrong, "other-key")] {
        let disk = build_disk(dir, image, name);
        let mut vm = start_vm(dir, name, &vars, &disk);
        match wait(&mut vm) {
            Outcome::Refused(line) => eprintln!("{name}: firmware refused: {line}"),
            Outcome::Booted => panic!("{name} UKI booted under Secure Boot"),
        }
    }
}
