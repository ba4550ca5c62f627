//! Interop with the real tools: OpenSSL verifies what our CA issues, and
//! swtpm's own EK certificates parse and verify. Each test fails, saying
//! what to install, when its tool is missing.

use super::*;
use std::process::Command;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "trustlaunch-ekcert-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: this test needs it (apt-get install {package})"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn openssl_accepts_our_ek_certificates() {
    require_tool("openssl", "openssl");
    let dir = TempDir::new("openssl");
    for (alg, ek) in [
        (CaKeyAlgorithm::P256, rsa_ek()),
        (CaKeyAlgorithm::P384, ecc_ek("openssl")),
    ] {
        let ca = make_ca("trustlaunch vTPM CA", alg, &format!("openssl-{alg:?}"));
        let mut req = request(ek);
        req.policies = vec!["2.23.133.2.99".parse().unwrap()];
        let ek = ca.issue_ek_cert(&req, &mut TestRng::new("s")).unwrap();
        let ca_pem = dir.0.join("ca.pem");
        let ek_pem = dir.0.join("ek.pem");
        std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
        std::fs::write(&ek_pem, ek.to_pem()).unwrap();

        let verified = run(Command::new("openssl")
            .arg("verify")
            .args(["-attime", &NOW.as_secs().to_string()])
            .arg("-CAfile")
            .arg(&ca_pem)
            .arg(&ek_pem));
        assert!(verified.contains(": OK"), "{verified}");

        let text = run(Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&ek_pem));
        for expected in [
            "X509v3 Subject Alternative Name: critical",
            "DirName:/2.23.133.2.1=id:00001014/2.23.133.2.2=swtpm/2.23.133.2.3=id:20191023",
            "2.23.133.8.1",
            "CA:FALSE",
            "X509v3 Subject Directory Attributes",
            "X509v3 Authority Key Identifier",
            "Policy: 2.23.133.2.99",
        ] {
            assert!(
                text.contains(expected),
                "openssl x509 -text lacks {expected:?}:\n{text}"
            );
        }
        let usage = match req.ek {
            EkPublicKey::Rsa { .. } => "Key Encipherment",
            _ => "Key Agreement",
        };
        assert!(text.contains(usage), "{text}");
        let ca_text = run(Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&ca_pem));
        assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
        assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
        assert!(
            ca_text.contains("X509v3 Subject Key Identifier"),
            "{ca_text}"
        );
    }
    // Our RSA modulus reading agrees with openssl's on the swtpm fixture.
    let modulus = run(Command::new("openssl")
        .args(["x509", "-inform", "der", "-noout", "-modulus", "-in"])
        .arg(data_dir().join("swtpm/ek-rsa2048.der")));
    let EkPublicKey::Rsa { modulus: ours, .. } = rsa_ek() else {
        unreachable!()
    };
    let hex: String = ours.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(modulus.trim(), format!("Modulus={hex}"));
}

#[test]
fn swtpm_made_ek_certificates_parse_and_verify() {
    require_tool("swtpm_setup", "swtpm-tools");
    require_tool("swtpm_localca", "swtpm-tools");
    require_tool("swtpm", "swtpm");
    let dir = TempDir::new("swtpm");
    run(Command::new("bash")
        .arg(data_dir().join("make-swtpm-ek.sh"))
        .arg(&dir.0));
    check_swtpm_certs(&dir.0);
    // A fresh localca is another CA: the fixture's root does not vouch for it.
    let fresh =
        EkCertificate::parse(&std::fs::read(dir.0.join("ek-rsa2048.der")).unwrap()).unwrap();
    let fixture_root = CaCertificate::parse(&read("swtpm/localca-root.pem")).unwrap();
    let fixture_issuer = CaCertificate::parse(&read("swtpm/localca-issuer.pem")).unwrap();
    assert!(EkTrustStore::new(vec![fixture_root])
        .with_intermediates(vec![fixture_issuer])
        .verify(&fresh, fresh.not_before())
        .is_err());
}
