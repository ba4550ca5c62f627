//! `trustlaunch tpm` as a user runs it, on the real Windows Shielded VM
//! quote from the shared test data, written out in tpm2-tools' formats.

use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("string"))
        .expect("base64")
}

struct Files {
    dir: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Files {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Writes ak.pub (TPM2B_PUBLIC), quote.msg, quote.sig and pcrs.json.
fn windows_quote(tag: &str) -> Files {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&src).expect("shared test data")).expect("JSON");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tpm-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ak = b64(&v["AK"]["Public"]);
    let mut tpm2b = u16::try_from(ak.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    tpm2b.extend(&ak);
    std::fs::write(dir.join("ak.pub"), tpm2b).expect("write");
    std::fs::write(dir.join("ak.tpmt"), &ak).expect("write");
    std::fs::write(dir.join("quote.msg"), b64(&v["Quote"]["Quote"])).expect("write");
    std::fs::write(dir.join("quote.sig"), b64(&v["Quote"]["Signature"])).expect("write");
    let mut sha1 = serde_json::Map::new();
    for p in v["Log"]["PCRs"].as_array().expect("PCRs") {
        let hex: String = b64(&p["Digest"])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        sha1.insert(p["Index"].to_string(), serde_json::Value::String(hex));
    }
    let doc = serde_json::json!({"pcrs": {"sha1": sha1}});
    std::fs::write(dir.join("pcrs.json"), doc.to_string()).expect("write");
    Files { dir }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn quote_verify_accepts_the_real_quote_and_names_what_fails() {
    let f = windows_quote("verify");
    let args = |ak: &str, nonce: &str, pcrs: &str| {
        vec![
            "tpm".to_string(),
            "quote-verify".into(),
            "--ak".into(),
            f.path(ak),
            "--quote".into(),
            f.path("quote.msg"),
            "--signature".into(),
            f.path("quote.sig"),
            "--nonce".into(),
            nonce.into(),
            "--pcrs".into(),
            f.path(pcrs),
        ]
    };
    let ok = |a: Vec<String>| run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for ak in ["ak.pub", "ak.tpmt"] {
        let o = ok(args(ak, "", "pcrs.json"));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.starts_with("OK: quote verified"), "{out}");
    }
    let o = ok(args("ak.pub", "00112233", "pcrs.json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stale or replayed"));

    let text = std::fs::read_to_string(f.dir.join("pcrs.json")).expect("read");
    let changed = text.replacen("859a5877", "00000000", 1);
    assert_ne!(text, changed, "PCR 7 is in the file");
    std::fs::write(f.dir.join("changed.json"), changed).expect("write");
    let o = ok(args("ak.pub", "", "changed.json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PCR digest"));
}

#[test]
fn ak_check_and_show() {
    let f = windows_quote("akcheck");
    let o = run(&["tpm", "ak-check", "--ak", &f.path("ak.pub")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(&["tpm", "show", "--kind", "attest", &f.path("quote.msg")]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["attested"]["type"], "quote");
    let o = run(&["tpm", "show", "--kind", "public", &f.path("quote.msg")]);
    assert_eq!(o.status.code(), Some(2), "a quote is not a public area");
}
