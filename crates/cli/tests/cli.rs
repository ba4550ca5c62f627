//! The `trustlaunch eventlog` command as a user runs it: the JSON contract
//! of `replay --json`, `verify` exit codes and report, stdin, and errors.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn corpus(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs")
        .join(name);
    assert!(p.is_file(), "shared test data missing: {}", p.display());
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .output()
        .expect("trustlaunch runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

#[test]
fn replay_json_is_exactly_the_contract() {
    let log = corpus("ga-sb_cert_eventlog");
    let o = run(&["eventlog", "replay", log.to_str().expect("path"), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let top = v.as_object().expect("object");
    assert_eq!(top.keys().collect::<Vec<_>>(), ["pcrs"]);
    let banks = top["pcrs"].as_object().expect("banks");
    assert_eq!(
        banks.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sha1", "sha256", "sha384"]
    );
    for (alg, pcrs) in banks {
        let pcrs = pcrs.as_object().expect("pcrs");
        assert_eq!(
            pcrs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["0", "4", "5", "7"],
            "{alg}: exactly the PCRs with events"
        );
        for hex in pcrs.values() {
            let hex = hex.as_str().expect("string");
            assert!(hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }
    assert_eq!(
        banks["sha1"]["7"], "45a8621d34a57df2b2e7f14c92b99ac8de7d5805",
        "PCR 7 as read from the machine's TPM"
    );
}

fn write_pcrs(json: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(json.as_bytes())
}

/// A tiny temp-file helper (no extra crate): a unique path under the
/// target dir, removed on drop.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempPath(pub PathBuf);

    static N: AtomicUsize = AtomicUsize::new(0);

    impl TempPath {
        pub fn with(bytes: &[u8]) -> Self {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let n = N.fetch_add(1, Ordering::SeqCst);
            let p = dir.join(format!("pcrs-{}-{n}.json", std::process::id()));
            std::fs::write(&p, bytes).expect("write temp file");
            TempPath(p)
        }

        pub fn path(&self) -> &str {
            self.0.to_str().expect("utf-8 path")
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn verify_passes_on_the_machine_values_and_fails_on_a_changed_one() {
    let log = corpus("ga-sb_cert_eventlog");
    let log = log.to_str().expect("path");
    let good = write_pcrs(
        r#"{"pcrs": {"sha1": {"0": "51c323de0c0c694f4601cdd02beb58ff13629f74",
            "7": "45a8621d34a57df2b2e7f14c92b99ac8de7d5805",
            "10": "8284103e06d40122bc64a0e4a1891af9ecd45cf6"}}}"#,
    );
    let o = run(&["eventlog", "verify", log, "--pcrs", good.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("sha1    PCR  7: match"), "{text}");
    assert!(text.contains("PCR 10: not compared"), "{text}");

    let bad = write_pcrs(
        r#"{"pcrs": {"sha1": {"0": "51c323de0c0c694f4601cdd02beb58ff13629f74",
            "7": "0000000000000000000000000000000000000000"}}}"#,
    );
    let o = run(&["eventlog", "verify", log, "--pcrs", bad.path()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("PCR  7: MISMATCH"), "{text}");
    assert!(
        text.contains("45a8621d34a57df2b2e7f14c92b99ac8de7d5805"),
        "{text}"
    );

    let o = run(&["eventlog", "verify", log, "--pcrs", bad.path(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["passed"], false);
}

#[test]
fn verify_of_nothing_is_not_a_pass() {
    let log = corpus("ga-sb_cert_eventlog");
    let none =
        write_pcrs(r#"{"pcrs": {"sha1": {"9": "0000000000000000000000000000000000000000"}}}"#);
    let o = run(&[
        "eventlog",
        "verify",
        log.to_str().expect("path"),
        "--pcrs",
        none.path(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn replay_output_feeds_verify() {
    let log = corpus("ga-windows_gcp_shielded_vm.json");
    // The log inside the Windows document, extracted by the user.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&log).expect("read")).expect("JSON");
    let raw = doc["Log"]["Raw"].as_str().expect("Log.Raw");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .expect("base64");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(["eventlog", "replay", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&bytes)
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success());
    let pcrs = write_pcrs(&stdout(&o));
    let logfile = tempfile_path::TempPath::with(&bytes);
    let o = run(&["eventlog", "verify", logfile.path(), "--pcrs", pcrs.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Its SIPA events: `show` names them, `evidence` has a Windows section.
    let o = run(&["eventlog", "show", logfile.path()]);
    let text = stdout(&o);
    assert!(
        text.contains("SIPA TRUSTBOUNDARY (13 events): BOOTCOUNTER=4"),
        "{text}"
    );
    let o = run(&["eventlog", "evidence", logfile.path()]);
    let ev: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(ev["windows"]["boot_counter"][0]["value"], 4);
    assert_eq!(ev["windows"]["elam"][0]["key_name"], "Windows Defender");
    assert_eq!(ev["windows"]["code_integrity"][0]["value"], true);
}

#[test]
fn errors_are_clear_and_exit_2() {
    let o = run(&["eventlog", "show", "/nonexistent/log"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/log"));

    let junk = tempfile_path::TempPath::with(&[0x01, 0x00, 0x00, 0x00, 0x05]);
    let o = run(&["eventlog", "replay", junk.path(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("event 0") && err.contains("offset"), "{err}");

    let log = corpus("ga-sb_cert_eventlog");
    let wrong = write_pcrs(r#"{"pcrs": {"sha1": {"7": "abcd"}}}"#);
    let o = run(&[
        "eventlog",
        "verify",
        log.to_str().expect("path"),
        "--pcrs",
        wrong.path(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 bytes, a sha1 value has 20"));
}

#[test]
fn show_json_decodes_every_event() {
    let log = corpus("tss-binary_measurements_hcrtm.bin");
    let o = run(&["eventlog", "show", log.to_str().expect("path"), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.len(), 204);
    assert!(events.iter().all(|e| e.get("decode_error").is_none()));
    assert_eq!(v["format"], "crypto_agile");
    let text = run(&["eventlog", "show", log.to_str().expect("path")]);
    assert!(stdout(&text).lines().count() > events.len());
}
