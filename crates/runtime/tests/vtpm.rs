//! A VM's vTPM with a real swtpm: created with our vTPM CA's EK
//! certificate in NV, state private (0700/0600) and encrypted at rest, the
//! same EK and certificate after a restart, refused with another key,
//! gone after destroy.

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use trustlaunch_runtime::vtpm::{create, destroy, VtpmError, VtpmPaths};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ek::cert_matches_ek;
use trustlaunch_tpm::ekcert::{EkCertificate, EkTrustStore, UnixTime};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm_client::KeyAlg;

fn now() -> UnixTime {
    UnixTime::from_secs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

fn ca() -> VtpmCa {
    let mut rng = rand_core::OsRng;
    let key = CaSigningKey::generate(CaKeyAlgorithm::P384, &mut rng);
    let config = CaConfig {
        common_name: "trustlaunch runtime test vTPM CA".into(),
        organization: None,
        not_before: UnixTime::from_secs(now().as_secs() - 60),
        not_after: None,
        path_len_constraint: Some(0),
    };
    VtpmCa::create(key, &config, &mut rng).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn vtpm_is_private_encrypted_persistent_and_certified() {
    let dir = tempfile::tempdir().unwrap();
    let paths = VtpmPaths {
        state: dir.path().join("vm1/tpm"),
        key: dir.path().join("keys/vm1.key"),
    };
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let ca = ca();
    let id = create(&paths, &ca, now(), &mut rand_core::OsRng).expect("create vTPM");

    // Private.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.state), 0o700);
    assert_eq!(mode(&paths.key), 0o600);
    assert_eq!(std::fs::read(&paths.key).unwrap().len(), 32);
    let state_file = paths.state.join("tpm2-00.permall");
    assert_eq!(mode(&state_file), 0o600);
    // Encrypted at rest: the EK certificate written to NV is not in the
    // state file in the clear (it would be, unencrypted).
    let state = std::fs::read(&state_file).unwrap();
    assert!(!contains(&state, &id.ek_certificate[..64]));

    // The certificate chains to our CA and certifies this EK.
    let parsed = EkCertificate::parse(&id.ek_certificate).unwrap();
    EkTrustStore::new(vec![ca.certificate().clone()])
        .verify(&parsed, now())
        .expect("chains to the vTPM CA");
    let ek_pub = Public::from_bytes(&id.ek_public).unwrap();
    assert!(cert_matches_ek(&parsed, &ek_pub));

    // Persistent: a new swtpm on the same state gives the same EK and NV.
    {
        let swtpm = paths.spawn_tcp().expect("restart");
        let mut tpm = swtpm.client().unwrap();
        tpm.startup_clear().unwrap();
        assert_eq!(
            tpm.read_ek_certificate(KeyAlg::Rsa2048).unwrap().as_deref(),
            Some(&id.ek_certificate[..])
        );
        let ek = tpm.create_ek(KeyAlg::Rsa2048).unwrap();
        assert_eq!(ek.public, id.ek_public, "same EK after restart");
    }

    // Another key cannot open the state.
    let wrong = VtpmPaths {
        state: paths.state.clone(),
        key: dir.path().join("keys/wrong.key"),
    };
    std::fs::write(&wrong.key, [7u8; 32]).unwrap();
    let opened = wrong.spawn_tcp().and_then(|s| {
        let mut tpm = s.client()?;
        tpm.startup_clear()?;
        Ok(tpm.read_ek_certificate(KeyAlg::Rsa2048)?)
    });
    // swtpm refuses the state (its HMAC check fails), which also shows
    // the state is encrypted and integrity-protected under the VM's key.
    match &opened {
        Err(VtpmError::Swtpm(m)) => assert!(m.contains("exited"), "{m}"),
        other => panic!("the state opened with the wrong key: {other:?}"),
    }

    // A second create on the same state is refused; destroy removes all.
    assert!(create(&paths, &ca, now(), &mut rand_core::OsRng).is_err());
    destroy(&paths).unwrap();
    assert!(!paths.state.exists() && !paths.key.exists());
}
