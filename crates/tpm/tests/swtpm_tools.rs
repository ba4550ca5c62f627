//! Against a real swtpm driven by tpm2-tools (the reference stack): quotes
//! made by the TPM verify with ours and with `tpm2_checkquote`, and a
//! credential made by our MakeCredential is activated by the TPM for the
//! AK's name only. The test command installs swtpm and tpm2-tools; a
//! missing tool fails the test with a message, it never skips.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trustlaunch_tpm::ak::check_ak;
use trustlaunch_tpm::alg::HashAlg;
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::pcr::PcrValues;
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{verify_quote, QuoteFailure};
use trustlaunch_tpm::signature::Signature;

struct Swtpm {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run ./scripts/test.sh (it installs swtpm and tpm2-tools)"
    );
}

fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

fn start_swtpm(name: &str) -> Swtpm {
    require("swtpm");
    require("tpm2_createek");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("swtpm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    let port = free_port_pair();
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.display()))
        .args([
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        ])
        .args([
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
        ])
        .args(["--flags", "not-need-init,startup-clear"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start swtpm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Swtpm { child, port, dir }
}

impl Swtpm {
    fn tool(&self, args: &[&str]) -> Vec<u8> {
        let out = self.tool_keep(args);
        self.flush();
        out
    }

    /// Runs a tool and keeps what it loaded (a policy session in use).
    fn tool_keep(&self, args: &[&str]) -> Vec<u8> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .current_dir(&self.dir)
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .expect("run tpm2-tools");
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    /// Without a resource manager, objects a tool loaded stay in the TPM's
    /// few slots: flush transient objects and sessions after every tool.
    fn flush(&self) {
        for kind in ["-t", "-l", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(kind)
                .env(
                    "TPM2TOOLS_TCTI",
                    format!("swtpm:host=127.0.0.1,port={}", self.port),
                )
                .stderr(Stdio::null())
                .status();
        }
    }

    /// The EK's policy (PolicySecret with the endorsement hierarchy) in a
    /// session `session.ctx`, for commands that use the EK.
    fn ek_policy_session(&self) {
        self.tool_keep(&[
            "tpm2_startauthsession",
            "--policy-session",
            "-S",
            "session.ctx",
        ]);
        self.tool_keep(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
    }

    fn tool_status(&self, args: &[&str]) -> bool {
        let ok = Command::new(args[0])
            .args(&args[1..])
            .current_dir(&self.dir)
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run tpm2-tools")
            .success();
        self.flush();
        ok
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// `tpm2_pcrread sha256:... ` YAML: `  0 : 0x…` lines under `sha256:`.
fn pcrread(tpm: &Swtpm, bank: HashAlg, pcrs: &str) -> PcrValues {
    let out = tpm.tool(&["tpm2_pcrread", &format!("{}:{pcrs}", bank.name())]);
    let text = String::from_utf8(out).expect("utf-8");
    let mut values = PcrValues::new();
    for line in text.lines() {
        let Some((index, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(index), Some(hex)) = (index.trim().parse::<u32>(), value.trim().strip_prefix("0x"))
        else {
            continue;
        };
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        values.entry(bank).or_default().insert(index, bytes);
    }
    values
}

fn quote_round(tpm: &Swtpm, key: &str) {
    let (g, scheme) = match key {
        "rsa" => ("rsa", "rsassa"),
        _ => ("ecc", "ecdsa"),
    };
    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", g, "-u", "ek.pub"]);
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        g,
        "-g",
        "sha256",
        "-s",
        scheme,
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
        "-f",
        "tss",
    ]);
    // Non-zero PCRs, so the digest check means something.
    tpm.tool(&[
        "tpm2_pcrextend",
        "0:sha256=0000000000000000000000000000000000000000000000000000000000000001",
    ]);
    tpm.tool(&[
        "tpm2_pcrextend",
        "7:sha256=00000000000000000000000000000000000000000000000000000000000000ff",
    ]);
    let nonce = "c0ffee0123456789";
    tpm.tool(&[
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        "sha256:0,1,2,3,4,5,6,7",
        "-q",
        nonce,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-o",
        "quote.pcrs",
        "-g",
        "sha256",
    ]);
    let ak = Public::from_tpm2b(&tpm.file("ak.pub")).expect("AK TPM2B_PUBLIC");
    check_ak(&ak).expect("tpm2_createak makes a proper AK");
    assert_eq!(
        ak.name().expect("name"),
        tpm.file("ak.name"),
        "our TPM name equals the TPM's"
    );
    let attest = tpm.file("quote.msg");
    let sig = Signature::from_bytes(&tpm.file("quote.sig")).expect("TPMT_SIGNATURE");
    let pcrs = pcrread(tpm, HashAlg::Sha256, "0,1,2,3,4,5,6,7");
    // tpm2_quote's own PCR file holds the same values.
    let (selection, from_file) =
        trustlaunch_tpm::pcr::parse_tpm2_tools_pcrs(&tpm.file("quote.pcrs")).expect("PCR file");
    assert_eq!(from_file, pcrs);
    assert_eq!(selection.banks[0].pcrs, (0..8).collect::<Vec<u32>>());
    let nonce_bytes: Vec<u8> = (0..nonce.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&nonce[i..i + 2], 16).expect("hex"))
        .collect();
    let q =
        verify_quote(&ak, &attest, &sig, &nonce_bytes, &pcrs).expect("the TPM's quote verifies");
    assert_eq!(q.selection.banks[0].pcrs, (0..8).collect::<Vec<u32>>());
    // The reference verifier agrees on the same files.
    tpm.tool(&[
        "tpm2_checkquote",
        "-u",
        &tpm.path("ak.pub"),
        "-m",
        &tpm.path("quote.msg"),
        "-s",
        &tpm.path("quote.sig"),
        "-f",
        &tpm.path("quote.pcrs"),
        "-g",
        "sha256",
        "-q",
        nonce,
    ]);
    // The same AK as PEM (what `-f pem` writes) verifies the quote too.
    tpm.tool(&[
        "tpm2_readpublic",
        "-c",
        "ak.ctx",
        "-f",
        "pem",
        "-o",
        "ak.pem",
    ]);
    let pem = String::from_utf8(tpm.file("ak.pem")).expect("PEM");
    let from_pem = trustlaunch_tpm::ek::public_from_spki_pem(&pem).expect("PEM public key");
    verify_quote(&from_pem, &attest, &sig, &nonce_bytes, &pcrs).expect("verifies with the PEM key");
    // A stale nonce and a changed PCR are refused, each by its check.
    let err = verify_quote(&ak, &attest, &sig, b"other", &pcrs).unwrap_err();
    assert!(matches!(err, QuoteFailure::NonceMismatch { .. }), "{err}");
    let mut changed = pcrs.clone();
    changed
        .get_mut(&HashAlg::Sha256)
        .unwrap()
        .insert(7, vec![0; 32]);
    let err = verify_quote(&ak, &attest, &sig, &nonce_bytes, &changed).unwrap_err();
    assert!(
        matches!(err, QuoteFailure::PcrDigestMismatch { .. }),
        "{err}"
    );
    // A quote by another AK does not verify with this one.
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak2.ctx",
        "-G",
        g,
        "-g",
        "sha256",
        "-s",
        scheme,
        "-u",
        "ak2.pub",
        "-f",
        "tss",
    ]);
    let other = Public::from_tpm2b(&tpm.file("ak2.pub")).expect("AK2");
    let err = verify_quote(&other, &attest, &sig, &nonce_bytes, &pcrs).unwrap_err();
    assert_eq!(err, QuoteFailure::BadSignature);
}

#[test]
fn rsa_quotes_from_a_real_tpm_verify() {
    quote_round(&start_swtpm("rsa-quote"), "rsa");
}

#[test]
fn ecc_quotes_from_a_real_tpm_verify() {
    quote_round(&start_swtpm("ecc-quote"), "ecc");
}

fn activation_round(tpm: &Swtpm, g: &str) {
    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", g, "-u", "ek.pub"]);
    tpm.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "rsa",
        "-g",
        "sha256",
        "-s",
        "rsassa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
        "-f",
        "tss",
    ]);
    let ek = Public::from_tpm2b(&tpm.file("ek.pub")).expect("EK TPM2B_PUBLIC");
    let name = tpm.file("ak.name");
    let secret = b"attestation secret 0123456789ab";
    let mut rng = rand_core::OsRng;
    let made = make_credential(&ek, &name, secret, &mut rng).expect("make credential");
    std::fs::write(tpm.dir.join("cred.out"), made.to_tpm2_tools_file()).expect("write");
    tpm.ek_policy_session();
    tpm.tool(&[
        "tpm2_activatecredential",
        "-c",
        "ak.ctx",
        "-C",
        "ek.ctx",
        "-i",
        "cred.out",
        "-o",
        "secret.out",
        "-P",
        "session:session.ctx",
    ]);
    assert_eq!(
        tpm.file("secret.out"),
        secret,
        "the TPM recovered our credential"
    );

    // Made for another name (an AK that is not in this TPM): refused.
    let mut wrong = name.clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    let made = make_credential(&ek, &wrong, secret, &mut rng).expect("make credential");
    std::fs::write(tpm.dir.join("cred2.out"), made.to_tpm2_tools_file()).expect("write");
    tpm.ek_policy_session();
    assert!(
        !tpm.tool_status(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred2.out",
            "-o",
            "secret2.out",
            "-P",
            "session:session.ctx",
        ]),
        "activation must fail for a name that is not the AK's"
    );
}

#[test]
fn credentials_for_an_rsa_ek_activate_in_a_real_tpm() {
    activation_round(&start_swtpm("rsa-ek"), "rsa");
}

#[test]
fn credentials_for_an_ecc_ek_activate_in_a_real_tpm() {
    activation_round(&start_swtpm("ecc-ek"), "ecc");
}
