//! `trustlaunch secureboot` on real Debian artifacts (installed by
//! ./scripts/test.sh, read at run time): shim is allowed by the Microsoft
//! db of OVMF_VARS_4M.ms.fd and denied by an empty one; grub is not
//! allowed by the Microsoft db (it is signed by Debian's key, which shim
//! carries); an enrolled store lists the enrolled keys.

use std::path::Path;
use std::process::{Command, Output};

const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
const GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
const MS_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const EMPTY_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn need(p: &str) {
    assert!(
        Path::new(p).exists(),
        "{p} is missing: run ./scripts/test.sh (it installs ovmf, shim-signed, grub-efi-amd64-signed)"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn shim_and_grub_against_the_microsoft_db() {
    for p in [SHIM, GRUB, MS_VARS, EMPTY_VARS] {
        need(p);
    }
    let o = run(&["secureboot", "verify", SHIM, "--vars", MS_VARS]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ALLOWED by db certificate"));
    let o = run(&["secureboot", "verify", SHIM, "--vars", EMPTY_VARS]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["secureboot", "verify", GRUB, "--vars", MS_VARS]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "grub is signed by Debian, not Microsoft"
    );
    let o = run(&["secureboot", "hash", SHIM]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.split_whitespace().next().map(str::len),
        Some(64),
        "{out}"
    );
}

#[test]
fn enroll_a_key_and_read_it_back() {
    need(EMPTY_VARS);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = dir.join("pk.der");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=test PK",
            "-days",
            "30",
            "-outform",
            "DER",
        ])
        .arg("-keyout")
        .arg(dir.join("pk.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed by ./scripts/test.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.join("vars.fd");
    let c = cert.to_str().expect("path");
    let o = run(&[
        "secureboot",
        "vars",
        "enroll",
        EMPTY_VARS,
        "--pk",
        c,
        "--kek",
        c,
        "--db",
        c,
        "--secure-boot",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["secureboot", "vars", "show", out.to_str().expect("path")]);
    let text = String::from_utf8_lossy(&o.stdout);
    for name in ["PK ", "KEK ", "db ", "dbx ", "SecureBootEnable "] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing in:\n{text}"
        );
    }
    // Shim is not allowed by a db holding only our test key.
    let o = run(&[
        "secureboot",
        "verify",
        SHIM,
        "--vars",
        out.to_str().expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
