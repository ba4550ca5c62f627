//! The host end of the attestation channel against the real guest agent
//! session and a VM's real vTPM (made by `vtpm::create`, served by swtpm
//! over socket pairs), over a socket pair: the evidence passes the runtime's
//! checks, and a guest presenting another vTPM, tampered PCR values, or
//! nothing at all is refused with the failed check named.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use trustlaunch_agent::{
    run_session, AgentError, Attester, GuestPaths, SessionEnd, SessionOptions, TpmAttester,
};
use trustlaunch_protocol::Evidence;
use trustlaunch_runtime::channel::{Channel, ChannelError};
use trustlaunch_runtime::platform::{MasterKey, SealedFile};
use trustlaunch_runtime::process::Marker;
use trustlaunch_runtime::vtpm::{self, PrivateSwtpm, VtpmIdentity, VtpmPaths};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn ca() -> VtpmCa {
    VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut OsRng),
        &CaConfig {
            common_name: "channel test vTPM CA".into(),
            organization: None,
            not_before: UnixTime::from_secs(now() - 60),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut OsRng,
    )
    .unwrap()
}

/// A VM's vTPM as the runtime makes it, served privately.
fn vm_vtpm(dir: &Path, ca: &VtpmCa) -> (VtpmIdentity, PrivateSwtpm) {
    let paths = VtpmPaths {
        state: dir.join("vtpm"),
        key: SealedFile::new(dir.join("vtpm.key"), "vtpm/test"),
    };
    let master = MasterKey::generate(&mut OsRng);
    let marker = Marker {
        dir: dir.display().to_string(),
        uid: None,
    };
    let id = vtpm::create(
        &paths,
        &master,
        &marker,
        None,
        ca,
        UnixTime::from_secs(now()),
        &mut OsRng,
    )
    .unwrap();
    let swtpm = paths.serve_private(&master, &marker, None).unwrap();
    // What the firmware does at power-on.
    swtpm.client().unwrap().startup_clear().unwrap();
    (id, swtpm)
}

fn guest_files(dir: &Path) -> GuestPaths {
    let paths = GuestPaths {
        sysfs: dir.join("sys"),
        dev: dir.join("dev"),
        tpm_devices: Vec::new(),
        event_log: dir.join("binary_bios_measurements"),
        secure_boot: dir.join("SecureBoot"),
        boot_id: dir.join("boot_id"),
        os_release: dir.join("osrelease"),
        kmsg: dir.join("kmsg"),
    };
    std::fs::write(&paths.event_log, vec![0x5a; 4096]).unwrap();
    std::fs::write(&paths.secure_boot, [6, 0, 0, 0, 1]).unwrap();
    std::fs::write(&paths.boot_id, "b\n").unwrap();
    std::fs::write(&paths.os_release, "6.1.0-test\n").unwrap();
    paths
}

/// Wraps the real attester and changes its evidence.
struct Tamper<A>(A, fn(&mut Evidence));

impl<A: Attester> Attester for Tamper<A> {
    fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, AgentError> {
        let mut e = self.0.evidence(nonce)?;
        (self.1)(&mut e);
        Ok(e)
    }
    fn activate(&mut self, blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, AgentError> {
        self.0.activate(blob, secret)
    }
}

fn agent(
    swtpm: &PrivateSwtpm,
    paths: GuestPaths,
    tamper: Option<fn(&mut Evidence)>,
) -> (Channel, JoinHandle<SessionEnd>) {
    let (host, mut guest) = UnixStream::pair().unwrap();
    let tpm = swtpm.client().unwrap();
    let handle = std::thread::spawn(move || {
        let options = SessionOptions {
            once: false,
            eof_delay: Duration::from_millis(10),
            max_idle: Some(Duration::from_millis(300)),
        };
        let real = TpmAttester::new(tpm, paths);
        match tamper {
            None => run_session(&mut guest, &mut { real }, &options),
            Some(f) => run_session(&mut guest, &mut Tamper(real, f), &options),
        }
    });
    (Channel::from_stream(host, "socket pair"), handle)
}

#[test]
fn evidence_from_the_vms_own_vtpm_passes_and_impostors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca();
    let (id, swtpm) = vm_vtpm(&tmp.path().join("vm"), &ca);
    let files = guest_files(tmp.path());

    // The VM's own vTPM: every check passes, twice (fresh nonces, same AK).
    let (mut ch, agent_thread) = agent(&swtpm, files.clone(), None);
    let limit = Duration::from_secs(60);
    let r1 = ch.attest(&id.ek_public, limit, &mut OsRng, now()).unwrap();
    assert_eq!(
        r1.checks,
        [
            "nonce",
            "ek_is_this_vms",
            "ak_name",
            "quote",
            "ak_activated_under_ek"
        ]
    );
    assert_eq!(
        r1.evidence.ek_certificate.as_ref().unwrap().0,
        id.ek_certificate
    );
    let r2 = ch.attest(&id.ek_public, limit, &mut OsRng, now()).unwrap();
    assert_ne!(r1.evidence.nonce, r2.evidence.nonce);
    assert_eq!(r1.evidence.ak_public, r2.evidence.ak_public);
    drop(ch);
    agent_thread.join().unwrap();

    // Another VM's vTPM answering on this VM's channel.
    let (other, other_swtpm) = vm_vtpm(&tmp.path().join("other"), &ca);
    assert_ne!(other.ek_public, id.ek_public);
    let (mut ch, t) = agent(&other_swtpm, files.clone(), None);
    match ch.attest(&id.ek_public, limit, &mut OsRng, now()) {
        Err(ChannelError::Rejected { check, .. }) => assert_eq!(check, "ek_is_this_vms"),
        other => panic!("{other:?}"),
    }
    drop(ch);
    t.join().unwrap();

    // PCR values that are not what was quoted.
    let (mut ch, t) = agent(
        &swtpm,
        files.clone(),
        Some(|e: &mut Evidence| {
            if let Some((_, v)) = e.pcrs.first_mut().and_then(|b| b.values.get_mut(7)) {
                v.0[0] ^= 1;
            }
        }),
    );
    match ch.attest(&id.ek_public, limit, &mut OsRng, now()) {
        Err(ChannelError::Rejected { check, reason }) => {
            assert_eq!(check, "quote");
            assert!(reason.contains("PCR digest"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    drop(ch);
    t.join().unwrap();

    // An AK name that is not the AK's.
    let (mut ch, t) = agent(
        &swtpm,
        files,
        Some(|e: &mut Evidence| {
            if let Some(b) = e.ak_name.0.last_mut() {
                *b ^= 1;
            }
        }),
    );
    match ch.attest(&id.ek_public, limit, &mut OsRng, now()) {
        Err(ChannelError::Rejected { check, .. }) => assert_eq!(check, "ak_name"),
        other => panic!("{other:?}"),
    }
    drop(ch);
    t.join().unwrap();
}

#[test]
fn a_silent_guest_times_out_and_a_garbage_one_is_refused() {
    let (host, _guest) = UnixStream::pair().unwrap();
    let mut ch = Channel::from_stream(host, "socket pair");
    let t0 = Instant::now();
    match ch.attest(&[1, 2, 3], Duration::from_millis(700), &mut OsRng, now()) {
        Err(ChannelError::Timeout { waiting_for, .. }) => assert_eq!(waiting_for, "evidence"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));

    let (host, mut guest) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut guest, b"{\"type\":\"evidence\",\"nonce\":\"zz\"}\n").unwrap();
    let mut ch = Channel::from_stream(host, "socket pair");
    match ch.attest(&[1], Duration::from_secs(5), &mut OsRng, now()) {
        Err(ChannelError::Frame(e)) => assert!(e.to_string().starts_with("frame 0: ")),
        other => panic!("{other:?}"),
    }
}
