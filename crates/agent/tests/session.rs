//! The agent's session against a real swtpm, with the host side played by
//! this test over a socket pair and every piece of evidence checked by the
//! pure verifier (`trustlaunch-tpm`): the quote (signature, nonce, PCR
//! digest), the AK's name and attributes, the EK certificate's chain to the
//! platform's vTPM CA and its binding to the EK, credential activation,
//! and the AK staying the same across challenges and across a power cycle
//! of the vTPM (a VM reboot).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trustlaunch_agent::{
    run_session, GuestPaths, SessionEnd, SessionOptions, TpmAttester, AK_HANDLE,
};
use trustlaunch_protocol::{
    decode, encode, Bytes, Evidence, FrameReader, GuestMessage, HostMessage, VERSION,
};
use trustlaunch_tpm::ak::check_ak;
use trustlaunch_tpm::alg::HashAlg as VHash;
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, EkCertRequest, VtpmCa};
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::ek::{cert_matches_ek, ek_public_key};
use trustlaunch_tpm::ekcert::{
    EkCertificate, EkTrustStore, TpmIdentity, TpmSpecification, UnixTime,
};
use trustlaunch_tpm::pcr::{PcrSelection as VSelection, PcrValues as VPcrs};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{verify_quote, VerifiedQuote};
use trustlaunch_tpm::signature::Signature;
use trustlaunch_tpm_client::harness::Swtpm;
use trustlaunch_tpm_client::{HashAlg, KeyAlg};

fn now() -> UnixTime {
    UnixTime::from_secs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
}

/// The platform's side at vTPM creation, as the runtime's `vtpm::create`
/// does it: a CA certifies the EK and the certificate goes to NV.
fn manufacture(swtpm: &Swtpm) -> VtpmCa {
    let mut rng = rand_core::OsRng;
    let key = CaSigningKey::generate(CaKeyAlgorithm::P384, &mut rng);
    let config = CaConfig {
        common_name: "trustlaunch agent test vTPM CA".into(),
        organization: None,
        not_before: UnixTime::from_secs(now().as_secs().saturating_sub(60)),
        not_after: None,
        path_len_constraint: Some(0),
    };
    let ca = VtpmCa::create(key, &config, &mut rng).expect("CA");
    let mut tpm = swtpm.client().expect("client");
    let ek = tpm.create_ek(KeyAlg::Rsa2048).expect("EK");
    let ek_pub = Public::from_bytes(&ek.public).expect("EK public");
    let request = EkCertRequest {
        ek: ek_public_key(&ek_pub).expect("EK key"),
        tpm: TpmIdentity {
            manufacturer: "id:00001014".into(),
            model: "swtpm".into(),
            version: "id:20191023".into(),
        },
        spec: TpmSpecification {
            family: "2.0".into(),
            level: 0,
            revision: 164,
        },
        not_before: UnixTime::from_secs(now().as_secs().saturating_sub(60)),
        not_after: None,
        policies: Vec::new(),
    };
    let cert = ca.issue_ek_cert(&request, &mut rng).expect("EK cert");
    tpm.provision_ek_certificate(KeyAlg::Rsa2048, cert.der(), true)
        .expect("NV");
    tpm.flush_context(ek.handle).expect("flush");
    ca
}

/// A guest's files in a temporary tree.
fn guest_files(dir: &Path) -> GuestPaths {
    let paths = GuestPaths {
        sysfs: dir.join("sys"),
        dev: dir.join("dev"),
        tpm_devices: Vec::new(),
        event_log: dir.join("binary_bios_measurements"),
        secure_boot: dir.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        boot_id: dir.join("boot_id"),
        os_release: dir.join("osrelease"),
        kmsg: dir.join("kmsg"),
    };
    std::fs::write(
        &paths.event_log,
        (0..5000u32).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(&paths.secure_boot, [0x06, 0, 0, 0, 1]).unwrap();
    std::fs::write(&paths.boot_id, "0b5e1d4c-0000-4000-8000-000000000001\n").unwrap();
    std::fs::write(&paths.os_release, "6.1.0-test-amd64\n").unwrap();
    std::fs::write(
        &paths.kmsg,
        "6,0,0,-;Linux version 6.1.0-test-amd64\n\
         5,731,4120607,-;hello: module verification failed: signature and/or required key missing - tainting kernel\n\
         5,733,5011920,-;Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7\n",
    )
    .unwrap();
    paths
}

/// The agent's session loop in a thread, on one end of a socket pair; it
/// ends when the host end is closed (idle).
fn spawn_agent(swtpm: &Swtpm, paths: &GuestPaths) -> (UnixStream, JoinHandle<SessionEnd>) {
    let (host, mut guest) = UnixStream::pair().expect("socket pair");
    let tpm = swtpm.client().expect("client");
    let paths = paths.clone();
    let agent = std::thread::spawn(move || {
        let mut attester = TpmAttester::new(tpm, paths);
        let options = SessionOptions {
            once: false,
            eof_delay: Duration::from_millis(10),
            max_idle: Some(Duration::from_millis(300)),
        };
        run_session(&mut guest, &mut attester, &options)
    });
    host.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    (host, agent)
}

/// The host's end: sends messages, reads the agent's answers.
struct Host {
    stream: UnixStream,
    reader: FrameReader,
    pending: Vec<(u64, Vec<u8>)>,
}

impl Host {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            reader: FrameReader::default(),
            pending: Vec::new(),
        }
    }

    fn send(&mut self, msg: &HostMessage) {
        self.send_raw(&encode(msg));
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn recv(&mut self) -> GuestMessage {
        let mut buf = vec![0u8; 64 << 10];
        while self.pending.is_empty() {
            let n = self.stream.read(&mut buf).expect("read");
            assert!(n > 0, "agent closed the channel");
            self.pending = self.reader.push(&buf[..n]).expect("frame");
        }
        let (n, line) = self.pending.remove(0);
        decode(n, &line).expect("a guest message")
    }

    fn challenge(&mut self, nonce: &[u8]) -> Evidence {
        self.send(&HostMessage::Challenge {
            nonce: Bytes(nonce.to_vec()),
        });
        match self.recv() {
            GuestMessage::Evidence(e) => *e,
            other => panic!("expected evidence, got {other:?}"),
        }
    }

    /// MakeCredential for the evidence's AK under its EK; the agent must
    /// give the secret back.
    fn activate(&mut self, ev: &Evidence, secret: &[u8]) {
        let ek = Public::from_bytes(&ev.ek_public.0).expect("EK public");
        let made =
            make_credential(&ek, &ev.ak_name.0, secret, &mut rand_core::OsRng).expect("made");
        self.send(&HostMessage::Activate {
            credential_blob: Bytes(made.credential_blob),
            secret: Bytes(made.secret),
        });
        assert_eq!(
            self.recv(),
            GuestMessage::Activated {
                secret: Bytes(secret.to_vec())
            }
        );
    }
}

/// Everything the verifier checks in one piece of evidence.
fn verify(ev: &Evidence, nonce: &[u8], ca: &VtpmCa, paths: &GuestPaths) -> VerifiedQuote {
    assert_eq!(ev.version, VERSION);
    assert!(ev.agent.starts_with("trustlaunch-agent "), "{}", ev.agent);
    assert_eq!(ev.nonce.0, nonce);

    // The AK: a proper attestation key, its name is the TPM's.
    let ak = Public::from_bytes(&ev.ak_public.0).expect("AK TPMT_PUBLIC");
    check_ak(&ak).expect("a proper AK");
    assert_eq!(ak.name().expect("name"), ev.ak_name.0);

    // The quote: signature, nonce, PCR digest over the values sent.
    assert_eq!(ev.pcrs.len(), 1);
    assert_eq!(ev.pcrs[0].alg, 0x000b);
    let indices: Vec<u8> = ev.pcrs[0].values.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..16).collect::<Vec<u8>>());
    let mut pcrs = VPcrs::new();
    for (i, v) in &ev.pcrs[0].values {
        pcrs.entry(VHash::Sha256)
            .or_default()
            .insert(u32::from(*i), v.0.clone());
    }
    let sig = Signature::from_bytes(&ev.quote_signature.0).expect("TPMT_SIGNATURE");
    let q = verify_quote(&ak, &ev.quote_attest.0, &sig, nonce, &pcrs).expect("quote verifies");
    let expected = VSelection::single(VHash::Sha256, &(0..16).collect::<Vec<u32>>());
    assert_eq!(q.selection, expected);
    assert_eq!(ev.pcr_selection.0, expected.to_bytes());

    // The EK certificate: chains to the platform's CA, certifies this EK.
    let ek = Public::from_bytes(&ev.ek_public.0).expect("EK TPMT_PUBLIC");
    let der = ev.ek_certificate.as_ref().expect("EK certificate sent");
    let cert = EkCertificate::parse(&der.0).expect("EK certificate parses");
    EkTrustStore::new(vec![ca.certificate().clone()])
        .verify(&cert, now())
        .expect("chains to the vTPM CA");
    assert!(cert_matches_ek(&cert, &ek));

    // The guest's files, as they are.
    assert_eq!(ev.event_log.0, std::fs::read(&paths.event_log).unwrap());
    assert_eq!(ev.secure_boot, Some(1));
    assert_eq!(ev.boot_id, "0b5e1d4c-0000-4000-8000-000000000001");
    assert_eq!(ev.kernel_release, "6.1.0-test-amd64");
    assert_eq!(
        ev.untrusted_modules,
        ["hello", trustlaunch_agent::UNKNOWN_LOCKDOWN]
    );
    q
}

#[test]
fn challenge_activate_and_the_same_ak_after_a_reboot() {
    let mut swtpm = Swtpm::start().expect("swtpm (installed by ./scripts/test.sh)");
    let ca = manufacture(&swtpm);
    let dir = tempfile::tempdir().unwrap();
    let paths = guest_files(dir.path());
    {
        // Firmware-like measurements, so the PCRs are not all zero.
        let mut tpm = swtpm.client().unwrap();
        tpm.pcr_extend(0, HashAlg::Sha256, &[0x10; 32]).unwrap();
        tpm.pcr_extend(7, HashAlg::Sha256, &[0x77; 32]).unwrap();
        assert!(
            tpm.read_public(AK_HANDLE).is_err(),
            "no AK before the agent"
        );
    }

    let (stream, agent) = spawn_agent(&swtpm, &paths);
    let mut host = Host::new(stream);
    let nonce1 = [0x1a; 32];
    let ev1 = host.challenge(&nonce1);
    verify(&ev1, &nonce1, &ca, &paths);
    host.activate(&ev1, b"first secret 0123456789abcdef");
    host.send(&HostMessage::Done {});

    // Later, another challenge in the same session: same keys, new quote.
    let nonce2 = [0x2b; 64];
    let ev2 = host.challenge(&nonce2);
    verify(&ev2, &nonce2, &ca, &paths);
    assert_eq!(ev2.ak_public, ev1.ak_public);
    assert_eq!(ev2.ak_name, ev1.ak_name);
    assert_eq!(ev2.ek_public, ev1.ek_public);
    host.send(&HostMessage::Done {});
    drop(host);
    assert_eq!(agent.join().expect("agent thread"), SessionEnd::Idle);

    // A reboot: the vTPM is power-cycled with its state; a new agent finds
    // the persistent AK and uses it.
    swtpm.restart().expect("restart");
    let (stream, agent) = spawn_agent(&swtpm, &paths);
    let mut host = Host::new(stream);
    let nonce3 = [0x3c; 20];
    let ev3 = host.challenge(&nonce3);
    verify(&ev3, &nonce3, &ca, &paths);
    assert_eq!(
        ev3.ak_public, ev1.ak_public,
        "the AK persists across reboots"
    );
    assert_eq!(ev3.ak_name, ev1.ak_name);
    assert_eq!(ev3.ek_public, ev1.ek_public);
    let pcr7 = |ev: &Evidence| ev.pcrs[0].values[7].1.clone();
    assert_ne!(pcr7(&ev3), pcr7(&ev1), "PCRs were reset by the reboot");
    host.activate(&ev3, b"after the reboot");
    host.send(&HostMessage::Done {});
    drop(host);
    assert_eq!(agent.join().expect("agent thread"), SessionEnd::Idle);
}

#[test]
fn bad_frames_get_an_error_and_the_session_goes_on() {
    let swtpm = Swtpm::start().expect("swtpm (installed by ./scripts/test.sh)");
    let ca = manufacture(&swtpm);
    let dir = tempfile::tempdir().unwrap();
    let paths = guest_files(dir.path());
    let (stream, agent) = spawn_agent(&swtpm, &paths);
    let mut host = Host::new(stream);

    host.send_raw(b"\x00\xffgarbage{\n");
    match host.recv() {
        GuestMessage::Error { stage, message } => {
            assert_eq!(stage, "frame");
            assert!(message.starts_with("frame 0: "), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Well-formed JSON, wrong message; then nonces the TPM cannot take.
    host.send_raw(b"{\"type\":\"evidence\"}\n");
    assert!(matches!(host.recv(), GuestMessage::Error { stage, .. } if stage == "frame"));
    for bad in [Vec::new(), vec![1; 65]] {
        host.send(&HostMessage::Challenge { nonce: Bytes(bad) });
        assert!(matches!(host.recv(), GuestMessage::Error { stage, .. } if stage == "challenge"));
    }
    // A credential that is not for this AK: an error, not a secret.
    host.send(&HostMessage::Activate {
        credential_blob: Bytes(vec![0; 10]),
        secret: Bytes(vec![0; 256]),
    });
    assert!(matches!(host.recv(), GuestMessage::Error { stage, .. } if stage == "activate"));
    host.send(&HostMessage::Error {
        message: "the host complains".into(),
    });

    // The session is still alive and well.
    let nonce = [0x42; 32];
    let ev = host.challenge(&nonce);
    verify(&ev, &nonce, &ca, &paths);
    host.activate(&ev, b"still here");
    drop(host);
    assert_eq!(agent.join().expect("agent thread"), SessionEnd::Idle);
}
