//! `trustlaunch image import` as a user runs it, and what the control
//! plane does with its verdict: a disk with Debian's signed chain is
//! Trusted Launch capable, one whose kernel lost its signature is not and
//! says why; publishing the refused one under a Trusted Launch image
//! definition is refused with that reason (Azure trusts the publisher's
//! flag; the platform verifies it), and a scale set with the Guest
//! Attestation extension on an image without the agent gets the finding
//! "guest attestation agent not installed in the image"; a Windows disk
//! whose boot manager a look-alike of Microsoft's CA signed is recognised
//! and refused by its signature. Nothing boots.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use trustlaunch_secureboot::pe::PeImage;

fn tl_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The host's newest Debian kernel.
fn kernel() -> PathBuf {
    let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    k.sort();
    k.pop().expect("a kernel in /boot (linux-image-amd64)")
}

/// A shim → grub → kernel disk built by `image build chain`.
fn chain(dir: &Path, name: &str, kernel: &[u8]) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("vmlinuz"), kernel).unwrap();
    std::fs::write(src.join("initrd.img"), b"070701").unwrap();
    std::fs::write(
        src.join("grub.cfg"),
        "set default=0\nmenuentry x {\n linux /vmlinuz ro console=ttyS0\n initrd /initrd.img\n}\n",
    )
    .unwrap();
    let out = dir.join(format!("{name}-built"));
    ok(tl_bin()
        .args(["image", "build", "chain", "--out", s(&out), "--efi"])
        .arg("/usr/lib/shim/shimx64.efi.signed")
        .args([
            "--file",
            "EFI/BOOT/grubx64.efi=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
            "--file",
        ])
        .arg(format!(
            "EFI/debian/grub.cfg={}",
            src.join("grub.cfg").display()
        ))
        .arg("--file")
        .arg(format!("vmlinuz={}", src.join("vmlinuz").display()))
        .arg("--file")
        .arg(format!("initrd.img={}", src.join("initrd.img").display()))
        .args(["--home", s(&dir.join("home"))])
        .output()
        .unwrap());
    out.join("disk.raw")
}

fn unsigned(data: &[u8]) -> Vec<u8> {
    let pe = PeImage::parse(data).unwrap();
    let mut out = data.to_vec();
    let dir = pe.cert_dir_offset.unwrap();
    out[dir..dir + 8].fill(0);
    out.truncate(pe.cert_table.0 as usize);
    out
}

fn import(dir: &Path, disk: &Path, out: &Path, extra: &[&str]) -> Output {
    tl_bin()
        .args(["image", "import", s(disk), "--out", s(out), "--home"])
        .arg(dir.join("home"))
        .args(extra)
        .output()
        .unwrap()
}

struct Server {
    child: Child,
    url: String,
    token: String,
    ca: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, images: &Path) -> Server {
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/evidence/vtpm-ca.crt");
    let token_file = dir.join("admin.token");
    let mut child = tl_bin()
        .args(["server", "--driver", "runtime", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.join("s.db").display()))
        .arg("--vtpm-ca")
        .arg(&ca)
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--home")
        .arg(dir.join("home"))
        .arg("--images-root")
        .arg(images)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("server output").expect("line");
        if let Some(u) = line.strip_prefix("trustlaunch server: listening on ") {
            break u.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    Server {
        child,
        url,
        token,
        ca: dir.join("home/tls/ca.crt"),
    }
}

fn tl(srv: &Server, args: &[&str]) -> Output {
    tl_bin()
        .args(args)
        .env("TRUSTLAUNCH_SERVER", &srv.url)
        .env("TRUSTLAUNCH_CACERT", &srv.ca)
        .env("TRUSTLAUNCH_TOKEN", &srv.token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn version(srv: &Server, def: &str, v: &str, source: &Path) -> Output {
    tl(
        srv,
        &[
            "image",
            "version",
            "create",
            "-g",
            "rg",
            "--gallery-name",
            "g1",
            "--gallery-image-definition",
            def,
            "--gallery-image-version",
            v,
            "--source",
            s(source),
        ],
    )
}

fn definition(srv: &Server, name: &str, features: &[&str]) {
    let mut args = vec![
        "image",
        "definition",
        "create",
        "-g",
        "rg",
        "--gallery-name",
        "g1",
        "--gallery-image-definition",
        name,
        "--os-type",
        "Linux",
        "--hyper-v-generation",
        "V2",
    ];
    if !features.is_empty() {
        args.push("--features");
        args.extend(features);
    }
    ok(tl(srv, &args));
}

#[test]
fn import_verifies_the_chain_and_the_control_plane_holds_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let k = std::fs::read(kernel()).unwrap();
    let signed_disk = chain(dir, "signed", &k);
    let unsigned_disk = chain(dir, "unsigned", &unsigned(&k));

    // The signed chain: Trusted Launch capable under the microsoft
    // template, no agent in it.
    let signed = images.join("signed");
    let out = ok(import(
        dir,
        &signed_disk,
        &signed,
        &["--require-trusted-launch"],
    ));
    assert!(
        out.contains("SecurityType=TrustedLaunchSupported (key template microsoft)"),
        "{out}"
    );
    assert!(out.contains("template microsoft: boots"), "{out}");
    assert!(out.contains("guest agent: not installed"), "{out}");

    // The unsigned kernel: imported (Standard only), the refusal named;
    // exit 3 when Trusted Launch is required.
    let refused = images.join("unsigned");
    let out = ok(import(dir, &unsigned_disk, &refused, &[]));
    assert!(
        out.contains("microsoft: ESP:/vmlinuz would be refused by shim (unsigned)"),
        "{out}"
    );
    assert!(out.contains("not Trusted Launch capable"), "{out}");
    let o = import(
        dir,
        &unsigned_disk,
        &images.join("unsigned-2"),
        &["--require-trusted-launch", "--json"],
    );
    assert_eq!(o.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ms = report["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template"] == "microsoft")
        .unwrap();
    assert_eq!(ms["refused"]["reason"], "unsigned");
    assert_eq!(ms["refused"]["component"], "ESP:/vmlinuz");
    // An output directory that holds an image is not overwritten.
    let o = import(dir, &signed_disk, &signed, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds an image"));

    // The control plane: a Trusted Launch definition takes the verified
    // image and refuses the other with the import's reason; a definition
    // without the feature takes it (Standard only).
    let srv = start(dir, &images);
    definition(&srv, "tl", &["SecurityType=TrustedLaunchSupported"]);
    definition(&srv, "std", &[]);
    ok(version(&srv, "tl", "1.0.0", &signed));
    let o = version(&srv, "tl", "2.0.0", &refused);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not Trusted Launch capable")
            && err.contains("ESP:/vmlinuz would be refused by shim (unsigned)"),
        "{err}"
    );
    ok(version(&srv, "std", "1.0.0", &refused));

    // A scale set with the Guest Attestation extension on the image
    // without the agent: the finding names the image (no instance needs
    // to boot for it).
    let image = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tl/versions/1.0.0";
    ok(tl(
        &srv,
        &[
            "vmss",
            "create",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            image,
            "--vm-sku",
            "Standard_D2s_v3",
            "--instance-count",
            "0",
            "--enable-guest-attestation",
            "--no-wait",
        ],
    ));
    let recs = ok(tl(&srv, &["security", "recommendations", "--json"]));
    let recs: serde_json::Value = serde_json::from_str(&recs).unwrap();
    let found: Vec<&serde_json::Value> = recs["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "guest-agent-not-in-image")
        .collect();
    assert_eq!(found.len(), 1, "{recs:#}");
    let reason = found[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("guest attestation agent not installed in image")
            && reason.contains(s(&signed)),
        "{reason}"
    );
    assert!(found[0]["vm_id"]
        .as_str()
        .unwrap()
        .ends_with("/virtualMachineScaleSets/web"));
}

/// A Windows disk made with the CLI alone: a look-alike "Microsoft Windows
/// Production PCA 2011" made with `secureboot keys`, a real EFI boot
/// manager (systemd-boot, standing in for bootmgfw.efi, which no package
/// here ships) signed under it with `secureboot sign`, laid out on an ESP
/// as Windows lays it out with `image build chain`. The import recognises
/// the Windows Boot Manager, refuses it under the microsoft template by
/// its signature (naming the look-alike), predicts PCR 4 alone, and says
/// the image is Standard only.
#[test]
fn a_windows_disk_is_recognised_and_a_look_alike_signature_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |n: &str| dir.join(n);
    ok(tl_bin()
        .args(["secureboot", "keys", "generate", "--cn"])
        .arg("Microsoft Windows Production PCA 2011")
        .args(["--key-out", s(&p("ca.key")), "--cert-out", s(&p("ca.crt"))])
        .output()
        .unwrap());
    ok(tl_bin()
        .args([
            "secureboot",
            "keys",
            "generate",
            "--cn",
            "Microsoft Windows",
        ])
        .args([
            "--key-out",
            s(&p("leaf.key")),
            "--cert-out",
            s(&p("leaf.crt")),
        ])
        .args([
            "--issuer-key",
            s(&p("ca.key")),
            "--issuer-cert",
            s(&p("ca.crt")),
        ])
        .output()
        .unwrap());
    ok(tl_bin()
        .args(["secureboot", "sign", "--key", s(&p("leaf.key")), "--cert"])
        .arg(p("leaf.crt"))
        .arg("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
        .args(["-o", s(&p("bootmgfw.efi"))])
        .output()
        .unwrap());
    // The boot configuration store: a registry hive's header.
    let mut hive = b"regf".to_vec();
    hive.resize(8192, 0);
    std::fs::write(p("BCD"), hive).unwrap();
    let built = p("win-built");
    ok(tl_bin()
        .args(["image", "build", "chain", "--out", s(&built), "--efi"])
        .arg(p("bootmgfw.efi"))
        .arg("--file")
        .arg(format!(
            "EFI/Microsoft/Boot/bootmgfw.efi={}",
            p("bootmgfw.efi").display()
        ))
        .arg("--file")
        .arg(format!("EFI/Microsoft/Boot/BCD={}", p("BCD").display()))
        .args(["--home", s(&p("home"))])
        .output()
        .unwrap());
    let o = import(
        dir,
        &built.join("disk.raw"),
        &p("win"),
        &["--require-trusted-launch"],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "os:          Windows",
        "Windows Boot Manager: ESP:EFI/BOOT/BOOTX64.EFI",
        "template microsoft: ESP:EFI/BOOT/BOOTX64.EFI would be refused by the firmware (signer not in db)",
        "signed by CN=Microsoft Windows (issued by CN=Microsoft Windows Production PCA 2011); its certificates are named like db's \"Microsoft Windows Production PCA 2011\"",
        "a signer is trusted by its key, never by its name",
        "predicted:   the Windows Boot Manager (PCR 4)",
        "verified by Windows' own code integrity, not by UEFI's db",
        "not Trusted Launch capable: the image runs as Standard only",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
}
