//! The vTPM CA from the command line: `ca init`, `ca issue-ek-cert` for a
//! real swtpm EK, `ek-cert show`, `ek-cert verify` (chain, and binding to
//! the EK), and OpenSSL's agreement that the chain verifies.

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .output()
        .expect("runs")
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_new_ca_issues_ek_certificates_that_verify() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ca-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = dir.join("ca").display().to_string();
    let o = run(&["tpm", "ca", "init", "--dir", &ca]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
    };
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&format!("{ca}/ca-key.pem")), 0o600);
    let o = run(&["tpm", "ca", "init", "--dir", &ca]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a second init must not overwrite the key"
    );

    let cert = dir.join("ek.pem").display().to_string();
    let ek = data("swtpm-rsa-ek.tpmt");
    let o = run(&[
        "tpm",
        "ca",
        "issue-ek-cert",
        "--dir",
        &ca,
        "--ek",
        &ek,
        "-o",
        &cert,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = run(&["tpm", "ek-cert", "show", &cert]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("model swtpm") && text.contains("RSA-2048"),
        "{text}"
    );

    let roots = format!("{ca}/ca-cert.pem");
    let o = run(&[
        "tpm", "ek-cert", "verify", &cert, "--roots", &roots, "--ek", &ek,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Another CA's root does not vouch for it.
    let other = dir.join("other").display().to_string();
    assert!(run(&["tpm", "ca", "init", "--dir", &other])
        .status
        .success());
    let o = run(&[
        "tpm",
        "ek-cert",
        "verify",
        &cert,
        "--roots",
        &format!("{other}/ca-cert.pem"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("FAIL"));

    // Not valid before it was issued.
    let o = run(&[
        "tpm", "ek-cert", "verify", &cert, "--roots", &roots, "--at", "1000",
    ]);
    assert_eq!(o.status.code(), Some(1));

    // OpenSSL agrees the chain verifies.
    let o = Command::new("openssl")
        .args(["verify", "-CAfile", &roots, &cert])
        .output()
        .expect("openssl is installed by ./scripts/test.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
