//! `trustlaunch image build|show`: the fast tier builds images with
//! throwaway keys and reads them back; the VM tier (`#[ignore]`, run by
//! `./scripts/test.sh` with `--ignored`) boots them under QEMU TCG with
//! OVMF Secure Boot:
//! - `tiny` with our db key enrolled: the init marker says SecureBoot=1,
//!   the attestation virtio-serial port is there, PCR 11 equals the value
//!   image.json predicted, and QMP `system_powerdown` powers it off;
//! - `debian-shim` with Debian's Microsoft varstore: shim -> grub ->
//!   kernel -> our initramfs.
//!
//! Needs: ovmf, qemu-system-x86, qemu-utils, swtpm, systemd-boot-efi,
//! busybox-static, shim-signed, grub-efi-amd64-signed, linux-image-amd64,
//! fdisk, dosfstools, mtools, binutils.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trustlaunch_runtime::qemu::{Accel, Firmware, QemuConfig, ATTESTATION_PORT};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const BOOT_LIMIT: Duration = Duration::from_secs(90);

fn tl(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trustlaunch"));
    for a in args {
        cmd.arg(a);
    }
    // Never the machine's own platform home (/var/lib/trustlaunch).
    cmd.env(
        "TRUSTLAUNCH_HOME",
        std::env::temp_dir().join("tl-image-cli-no-home"),
    );
    cmd.output().expect("trustlaunch runs")
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

/// PK, KEK and db (key, cert) from `trustlaunch secureboot keys generate`.
fn keys(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for name in ["PK", "KEK", "db"] {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.crt"));
        let cn = format!("trustlaunch image test {name}");
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
        if let Some((pk, pc)) = &parent {
            args.extend([
                &"--issuer-key" as &dyn AsRef<std::ffi::OsStr>,
                pk,
                &"--issuer-cert",
                pc,
            ]);
        }
        check("keys generate", tl(&args));
        out.push((key, cert));
    }
    out
}

fn build(kind: &str, out: &Path, db: Option<&(PathBuf, PathBuf)>, agent: &Path) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"image", &"build", &kind, &"--out", &out, &"--agent", &agent,
    ];
    if let Some((k, c)) = db {
        args.extend([
            &"--db-key" as &dyn AsRef<std::ffi::OsStr>,
            k,
            &"--db-cert",
            c,
        ]);
    }
    tl(&args)
}

fn esp_file(disk: &Path, esp_path: &str, out: &Path) -> Vec<u8> {
    let st = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .arg(format!("::/{esp_path}"))
        .arg(out)
        .status()
        .expect("mcopy (mtools)");
    assert!(st.success(), "{esp_path} not on the ESP");
    fs::read(out).unwrap()
}

#[test]
fn build_tiny_then_show_and_verify_the_uki() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let k = keys(dir);
    let out = dir.join("tiny");
    let o = check(
        "image build tiny",
        build("tiny", &out, Some(&k[2]), Path::new("/usr/bin/true")),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    for step in [
        "building initramfs",
        "building UKI",
        "signing",
        "building disk",
        "done in",
    ] {
        assert!(
            stderr.contains(step),
            "no {step:?} progress line:\n{stderr}"
        );
    }
    let o = check(
        "image show",
        tl(&[&"image", &"show", &out, &"--json", &"--verify-disk"]),
    );
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["generation"], "V2");
    assert_eq!(meta["key_template"], "custom");
    assert_eq!(meta["features"][0]["value"], "TrustedLaunchSupported");
    assert_eq!(
        meta["db_certificate"]["subject"],
        "CN=trustlaunch image test db"
    );

    let uki_path = dir.join("uki.efi");
    let uki = esp_file(&out.join("disk.raw"), "EFI/BOOT/BOOTX64.EFI", &uki_path);
    let db_der =
        trustlaunch_secureboot::keys::certificate_der(&fs::read(&k[2].1).unwrap()).unwrap();
    let db = trustlaunch_secureboot::verify::Database::from_certs(
        trustlaunch_eventlog::Guid::from_bytes([0x22; 16]),
        [db_der],
    );
    let verdict = trustlaunch_secureboot::verify::verify_image(
        &uki,
        &db,
        &trustlaunch_secureboot::verify::Database::default(),
    )
    .unwrap();
    assert!(
        matches!(
            verdict,
            trustlaunch_secureboot::verify::Verdict::Allowed { .. }
        ),
        "{verdict:?}"
    );
    let hash = trustlaunch_secureboot::authenticode::image_hash(
        &uki,
        trustlaunch_secureboot::authenticode::ImageHashAlg::Sha256,
    )
    .unwrap();
    let hex: String = hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(meta["boot_components"][0]["authenticode_sha256"], hex);

    // Text output names the PCR 4 digest.
    let o = check("image show", tl(&[&"image", &"show", &out]));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&hex));
    // Tampered metadata is refused.
    let json = fs::read_to_string(out.join("image.json")).unwrap();
    fs::write(out.join("image.json"), json.replace("\"V2\"", "\"V9\"")).unwrap();
    let o = tl(&[&"image", &"show", &out]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("image.json"));
}

#[test]
fn build_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Without --db-key, tiny is signed with the platform's own db key
    // (from --home; made on first use).
    let home = dir.join("home");
    let o = tl(&[
        &"image",
        &"build",
        &"tiny",
        &"--out",
        &dir.join("a"),
        &"--agent",
        &"/usr/bin/true",
        &"--home",
        &home,
        &"--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("signing with the platform's db key"));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        meta["boot_components"][0]["signers"][0]
            .as_str()
            .unwrap()
            .contains("trustlaunch platform db"),
        "{meta}"
    );
    assert!(home.join("platform/secureboot/db.key").exists());
    // --db-key without --db-cert is refused by the parser.
    let o = tl(&[
        &"image",
        &"build",
        &"tiny",
        &"--out",
        &dir.join("a2"),
        &"--db-key",
        &home.join("platform/secureboot/db.key"),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--db-cert"));
    // A missing agent.
    let o = build(
        "debian-shim",
        &dir.join("b"),
        None,
        Path::new("/nonexistent/agent"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/agent"));
    // The default agent sits next to the binary; say how to build it.
    let next_to = Path::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .parent()
        .unwrap()
        .join("trustlaunch-agent");
    if !next_to.exists() {
        let o = tl(&[&"image", &"build", &"debian-shim", &"--out", &dir.join("c")]);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("cargo build -p trustlaunch-agent"), "{e}");
    }
    // uki and chain need their inputs.
    let o = tl(&[&"image", &"build", &"uki", &"--out", &dir.join("d")]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--uki"));
    // Mistakes are caught before any platform key is made.
    assert!(!std::env::temp_dir().join("tl-image-cli-no-home").exists());
    let o = tl(&[
        &"image",
        &"build",
        &"chain",
        &"--out",
        &dir.join("e"),
        &"--efi",
        &"/etc/hostname",
    ]);
    assert!(!o.status.success());
}

#[test]
fn build_chain_from_debians_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("chain");
    let grub = "EFI/BOOT/grubx64.efi=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
    let o = check(
        "image build chain",
        tl(&[
            &"image",
            &"build",
            &"chain",
            &"--out",
            &out,
            &"--efi",
            &"/usr/lib/shim/shimx64.efi.signed",
            &"--file",
            &grub,
            &"--json",
        ]),
    );
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["key_template"], "microsoft");
    assert_eq!(meta["boot_components"].as_array().unwrap().len(), 2);
}

// ---- VM tier ----

/// A VM started from an image: QEMU (and swtpm) killed on drop.
struct Vm {
    qemu: Child,
    swtpm: Option<Child>,
    console: PathBuf,
    qmp: PathBuf,
    started: Instant,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        if let Some(s) = &mut self.swtpm {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn start(dir: &Path, image: &Path, vars_template: &str, enrolled: Option<&Path>) -> Vm {
    fs::create_dir_all(dir).unwrap();
    let vars = dir.join("VARS.fd");
    fs::copy(enrolled.unwrap_or(Path::new(vars_template)), &vars).unwrap();
    let overlay = dir.join("os.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(image.join("disk.raw"))
        .arg(&overlay)
        .status()
        .expect("qemu-img: apt-get install -y qemu-utils");
    assert!(st.success(), "qemu-img create");
    let tpm_dir = dir.join("tpm");
    fs::create_dir_all(&tpm_dir).unwrap();
    let sock = dir.join("swtpm.sock");
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", tpm_dir.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .args(["--flags", "not-need-init,startup-clear"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("swtpm: apt-get install -y swtpm");
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no swtpm socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = QemuConfig {
        name: "image-test".into(),
        accel: Accel::Tcg,
        firmware: Firmware::UefiSecureBoot {
            code: OVMF_CODE.into(),
            vars,
        },
        vcpus: 1,
        memory_mib: 1024,
        os_disk: overlay,
        os_base: image.join("disk.raw"),
        data_disks: Vec::new(),
        vtpm: true,
        console_log: dir.join("console.log"),
        qmp_socket: dir.join("qmp.sock"),
        attestation_socket: Some(dir.join("attest.sock")),
        nic: None,
        first_boot: None,
    };
    // QEMU gets its files and sockets as descriptors, as the runtime
    // starts it; its end of swtpm's control channel is a connection.
    let tpm = UnixStream::connect(&sock).expect("swtpm control socket");
    let mut cmd = trustlaunch_runtime::vm::qemu_command(
        Path::new("qemu-system-x86_64"),
        &config.launch(),
        Some(tpm.into()),
    )
    .unwrap();
    let qemu = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64: apt-get install -y qemu-system-x86");
    drop(cmd);
    Vm {
        qemu,
        swtpm: Some(swtpm),
        console: config.console_log,
        qmp: config.qmp_socket,
        started: Instant::now(),
    }
}

fn console(vm: &Vm) -> String {
    String::from_utf8_lossy(&fs::read(&vm.console).unwrap_or_default()).replace('\r', "")
}

/// Watches the console until `needle` appears; panics on refusal, exit or
/// the time limit, with the console.
fn wait_for(vm: &mut Vm, needle: &str) -> String {
    loop {
        let text = console(vm);
        if text.contains(needle) {
            return text;
        }
        if text.contains("Access Denied") || text.contains("Security Violation") {
            panic!("firmware refused the image:\n{text}");
        }
        if let Some(st) = vm.qemu.try_wait().unwrap() {
            panic!("qemu exited ({st}) before {needle:?}:\n{text}");
        }
        assert!(
            vm.started.elapsed() < BOOT_LIMIT,
            "no {needle:?} after {BOOT_LIMIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// QMP `system_powerdown`; returns how long until QEMU exited.
fn powerdown(vm: &mut Vm) -> Duration {
    let stream = UnixStream::connect(&vm.qmp).expect("QMP socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("QMP"), "{line}");
    for cmd in ["qmp_capabilities", "system_powerdown"] {
        writeln!(w, "{{\"execute\": \"{cmd}\"}}").unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.contains("\"return\"") || line.contains("\"error\"") {
                break;
            }
        }
        assert!(line.contains("\"return\""), "{cmd}: {line}");
    }
    let t0 = Instant::now();
    loop {
        if vm.qemu.try_wait().unwrap().is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "guest did not power off after system_powerdown:\n{}",
            console(vm)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stand-in agent: prints PCR 11 and sleeps (the builder does not
/// care what the agent is).
const AGENT: &str = "#!/bin/sh\n\
echo \"TL-AGENT PCR11=$(cat /sys/class/tpm/tpm0/pcr-sha256/11 2>/dev/null)\"\n\
exec sleep 3600\n";

#[test]
#[ignore = "VM tier (two QEMU boots under TCG, ~30 s): ./scripts/test.sh runs it with --ignored"]
fn tiny_and_debian_shim_boot_under_secure_boot() {
    for p in [OVMF_CODE, OVMF_VARS, OVMF_VARS_MS] {
        assert!(Path::new(p).exists(), "{p}: apt-get install -y ovmf");
    }
    let tmp = tempfile::Builder::new()
        .prefix("tl-img-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let k = keys(dir);
    let agent = dir.join("agent.sh");
    fs::write(&agent, AGENT).unwrap();
    let vars = dir.join("VARS.enrolled.fd");
    check(
        "vars enroll",
        tl(&[
            &"secureboot",
            &"vars",
            &"enroll",
            &OVMF_VARS,
            &"--pk",
            &k[0].1,
            &"--kek",
            &k[1].1,
            &"--db",
            &k[2].1,
            &"--secure-boot",
            &"--output",
            &vars,
        ]),
    );

    // tiny: our signed UKI.
    let tiny = dir.join("tiny");
    check(
        "image build tiny",
        build("tiny", &tiny, Some(&k[2]), &agent),
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(tiny.join("image.json")).unwrap()).unwrap();
    let mut vm = start(&dir.join("vm-tiny"), &tiny, OVMF_VARS, Some(&vars));
    let text = wait_for(&mut vm, "TL-AGENT PCR11=");
    let boot = vm.started.elapsed();
    // Let the agent line finish.
    std::thread::sleep(Duration::from_millis(500));
    let text = console(&vm).to_string() + &text[..0];
    assert!(
        text.contains("trustlaunch-init: up (kernel ") && text.contains("SecureBoot=1)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("trustlaunch-init: virtio port {ATTESTATION_PORT}")),
        "{text}"
    );
    let pcr11 = text
        .lines()
        .find_map(|l| l.split("TL-AGENT PCR11=").nth(1))
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    assert_eq!(
        meta["boot_components"][0]["uki_pcr11_sha256"], pcr11,
        "predicted PCR 11 vs the guest's"
    );
    let off = powerdown(&mut vm);
    eprintln!("tiny: agent up {boot:?} after start; powered off {off:?} after system_powerdown");
    assert!(
        console(&vm).contains("power button: powering off"),
        "{}",
        console(&vm)
    );
    assert!(off < Duration::from_secs(10), "power-off took {off:?}");
    drop(vm);

    // debian-shim: Debian's Microsoft-signed chain.
    let shim = dir.join("shim");
    check(
        "image build debian-shim",
        build("debian-shim", &shim, None, &agent),
    );
    let mut vm = start(&dir.join("vm-shim"), &shim, OVMF_VARS_MS, None);
    let text = wait_for(&mut vm, "trustlaunch-init: up (kernel ");
    let boot = vm.started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let text = console(&vm) + &text[..0];
    assert!(text.contains("SecureBoot=1)"), "{text}");
    let off = powerdown(&mut vm);
    eprintln!(
        "debian-shim: init up {boot:?} after start; powered off {off:?} after system_powerdown"
    );
}
