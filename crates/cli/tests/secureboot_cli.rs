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
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("ALLOWED by db entry #"), "{out}");
    assert!(
        out.contains("CN=Microsoft Corporation UEFI CA 2011"),
        "{out}"
    );
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

fn tool(what: &str, cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (./scripts/test.sh installs efitools, openssl)"));
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn kernel() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/boot")
        .expect("/boot: apt-get install -y linux-image-amd64")
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.starts_with("/boot/vmlinuz-"))
        .collect();
    v.sort();
    v.pop()
        .expect("no /boot/vmlinuz-*: apt-get install -y linux-image-amd64")
}

/// `siglist create` writes the same bytes as efitools: a PEM certificate as
/// `cert-to-efi-sig-list` does, and the signed Debian kernel's Authenticode
/// hash as `hash-to-efi-sig-list` does (its owner GUID is fixed).
#[test]
fn siglist_create_matches_efitools() {
    let dir = tempfile::Builder::new()
        .prefix("tl-siglist-")
        .tempdir()
        .expect("tempdir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    tool(
        "openssl req",
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=siglist test",
            "-days",
            "30",
            "-keyout",
            &p("k.pem"),
            "-out",
            &p("c.pem"),
        ]),
    );
    let owner = "11111111-2222-3333-4444-555555555555";
    tool(
        "cert-to-efi-sig-list",
        Command::new("cert-to-efi-sig-list").args(["-g", owner, &p("c.pem"), &p("ref.esl")]),
    );
    let o = run(&[
        "secureboot",
        "siglist",
        "create",
        "--owner",
        owner,
        "--cert",
        &p("c.pem"),
        "-o",
        &p("ours.esl"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(p("ref.esl")).unwrap(),
        std::fs::read(p("ours.esl")).unwrap(),
        "certificate list differs from cert-to-efi-sig-list's"
    );

    let kernel = kernel();
    tool(
        "hash-to-efi-sig-list",
        Command::new("hash-to-efi-sig-list").args([&kernel, &p("href.esl")]),
    );
    let reference = std::fs::read(p("href.esl")).unwrap();
    // hash-to-efi-sig-list's owner: the 16 bytes after the 28-byte header.
    let efitools_owner = trustlaunch_eventlog_guid(&reference[28..44]);
    let o = run(&[
        "secureboot",
        "siglist",
        "create",
        "--owner",
        &efitools_owner,
        "--image",
        &kernel,
        "-o",
        &p("hours.esl"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(reference, std::fs::read(p("hours.esl")).unwrap());

    // Merging the two and adding a duplicate keeps each entry once.
    let o = run(&[
        "secureboot",
        "siglist",
        "create",
        "--merge",
        &p("ours.esl"),
        "--merge",
        &p("hours.esl"),
        "--cert",
        &p("c.pem"),
        "--owner",
        owner,
        "-o",
        &p("all.esl"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["secureboot", "siglist", "show", &p("all.esl")]);
    let entries: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(entries.as_array().map(Vec::len), Some(2), "{entries}");

    // A hash of no known length and a non-certificate are refused (exit 2:
    // an error, not a verdict).
    let o = run(&[
        "secureboot",
        "siglist",
        "create",
        "--hash",
        "abcd",
        "-o",
        &p("x.esl"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("abcd"));
    let o = run(&[
        "secureboot",
        "siglist",
        "create",
        "--cert",
        &p("k.pem"),
        "-o",
        &p("x.esl"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("k.pem"));
}

/// A GUID's text form from its 16 on-disk bytes (mixed endian).
fn trustlaunch_eventlog_guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// `vars create` from the three key templates.
#[test]
fn vars_create_from_templates() {
    for p in [SHIM, MS_VARS, EMPTY_VARS] {
        need(p);
    }
    let dir = tempfile::Builder::new()
        .prefix("tl-vars-")
        .tempdir()
        .expect("tempdir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let export = |path: &str, name: &str| -> serde_json::Value {
        let o = run(&["secureboot", "vars", "export", path]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        doc["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };

    // microsoft: Microsoft's KEK and db, taken from the ms image; shim runs.
    let o = run(&[
        "secureboot",
        "vars",
        "create",
        "--template",
        "microsoft",
        "-o",
        &p("ms.fd"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["KEK", "db", "PK"] {
        assert_eq!(
            export(&p("ms.fd"), name)["data"],
            export(MS_VARS, name)["data"],
            "{name}"
        );
    }
    let o = run(&["secureboot", "verify", SHIM, "--vars", &p("ms.fd")]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Microsoft Corporation UEFI CA 2011"));
    let o = run(&["secureboot", "pcr7", "--vars", &p("ms.fd"), "--image", SHIM]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("Secure Boot on"), "{text}");
    assert_eq!(
        text.matches("EV_EFI_VARIABLE_AUTHORITY").count(),
        1,
        "{text}"
    );

    // none: Secure Boot off, no keys, and no authority predicted.
    let o = run(&[
        "secureboot",
        "vars",
        "create",
        "--template",
        "none",
        "-o",
        &p("none.fd"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(export(&p("none.fd"), "PK"), serde_json::Value::Null);
    let o = run(&["secureboot", "pcr7", "--vars", &p("none.fd")]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Secure Boot off"));
    // Under a store without that db, shim has no authority: an error.
    let o = run(&[
        "secureboot",
        "pcr7",
        "--vars",
        &p("none.fd"),
        "--image",
        SHIM,
    ]);
    assert_eq!(o.status.code(), Some(2));

    // custom needs its keys, and says which.
    let o = run(&[
        "secureboot",
        "vars",
        "create",
        "--template",
        "custom",
        "-o",
        &p("c.fd"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pk"));
}

/// Keys from `keys generate`, a db update from `authvar sign`: the same
/// bytes as efitools' `sign-efi-sig-list`, accepted against a store holding
/// that KEK, refused as another variable, as a stale update, or under a
/// store without that KEK.
#[test]
fn authvar_sign_matches_sign_efi_sig_list_and_verifies_against_a_store() {
    need(EMPTY_VARS);
    let dir = tempfile::Builder::new()
        .prefix("tl-authvar-")
        .tempdir()
        .expect("tempdir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let gen = |name: &str, issuer: Option<&str>| {
        let (key, cert) = (p(&format!("{name}.key")), p(&format!("{name}.crt")));
        let mut args = vec![
            "secureboot".to_owned(),
            "keys".into(),
            "generate".into(),
            "--cn".into(),
            format!("authvar test {name}"),
            "--key-out".into(),
            key,
            "--cert-out".into(),
            cert,
        ];
        if let Some(i) = issuer {
            args.extend([
                "--issuer-key".into(),
                p(&format!("{i}.key")),
                "--issuer-cert".into(),
                p(&format!("{i}.crt")),
                "--role".into(),
                "authority".into(),
            ]);
        }
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    gen("PK", None);
    gen("KEK", Some("PK"));
    gen("db", Some("KEK"));
    gen("other", None);
    ok(&[
        "secureboot",
        "siglist",
        "create",
        "--cert",
        &p("db.crt"),
        "-o",
        &p("db.esl"),
    ]);
    // `authvar sign` of db.esl with the KEK at `ts` into `out`.
    let sign_db = |ts: &str, out: &str| {
        ok(&[
            "secureboot",
            "authvar",
            "sign",
            &p("db.esl"),
            "--var",
            "db",
            "--key",
            &p("KEK.key"),
            "--cert",
            &p("KEK.crt"),
            "--timestamp",
            ts,
            "-o",
            &p(out),
        ]);
    };
    // `authvar verify FILE --var VAR` against a store or trusted certs.
    let verify = |file: &str, var: &str, trust: &[&str]| {
        let f = p(file);
        let mut args = vec!["secureboot", "authvar", "verify", f.as_str(), "--var", var];
        args.extend_from_slice(trust);
        run(&args)
    };
    let enroll = |extra: &[&str], out: &str| {
        let (pk, kek, out) = (p("PK.crt"), p("KEK.crt"), p(out));
        let mut args = vec![
            "secureboot",
            "vars",
            "enroll",
            EMPTY_VARS,
            "--pk",
            &pk,
            "--kek",
            &kek,
            "--secure-boot",
            "-o",
            &out,
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    let ts = "2030-06-01 12:00:00";
    sign_db(ts, "ours.auth");
    tool(
        "sign-efi-sig-list",
        Command::new("sign-efi-sig-list").args([
            "-t",
            ts,
            "-k",
            &p("KEK.key"),
            "-c",
            &p("KEK.crt"),
            "db",
            &p("db.esl"),
            &p("ref.auth"),
        ]),
    );
    assert_eq!(
        std::fs::read(p("ours.auth")).unwrap(),
        std::fs::read(p("ref.auth")).unwrap(),
        "authvar sign differs from sign-efi-sig-list"
    );

    enroll(&[], "vm.fd");
    let vm = p("vm.fd");
    let o = verify("ref.auth", "db", &["--vars", &vm]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.starts_with("ACCEPTED"), "{out}");
    assert!(out.contains("CN=authvar test KEK"), "{out}");
    let refused = |o: Output, why: &str| {
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.starts_with("REFUSED") && out.contains(why), "{out}");
    };
    // Signed for db, offered as dbx: the signature covers the name.
    refused(
        verify("ref.auth", "dbx", &["--vars", &vm]),
        "does not verify",
    );
    // As a KEK update: the PK must sign it (and the enrolled KEK's
    // timestamp is checked first, as edk2 does).
    let o = verify("ref.auth", "kek", &["--vars", &vm]);
    assert_eq!(o.status.code(), Some(1));
    // Trusted only another key.
    refused(
        verify("ref.auth", "db", &["--trusted", &p("other.crt")]),
        "not trusted",
    );
    // An older timestamp than the enrolled db's.
    enroll(&["--db", &p("db.crt")], "vm2.fd");
    sign_db("2011-01-01 00:00:00", "old.auth");
    refused(
        verify("old.auth", "db", &["--vars", &p("vm2.fd")]),
        "not later",
    );
    // Not a payload at all: an error (exit 2) naming the file.
    let o = verify("db.esl", "db", &["--vars", &vm]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("db.esl"));
}
