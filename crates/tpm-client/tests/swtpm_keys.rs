//! Startup, EKs and AKs against a real swtpm, with tpm2-tools as the
//! differential reference.

mod common;

use anyhow::Result;
use sha2::{Digest, Sha256};
use trustlaunch_tpm_client::templates::{ak_template, ek_template, AK_ATTRIBUTES, EK_ATTRIBUTES};
use trustlaunch_tpm_client::{
    Authorization, Error, Hierarchy, KeyAlg, LoadedKey, RcLocation, ResponseCode, StartupOutcome,
};

use common::{start, tool};

/// The name of a SHA-256-named object: `0x000b || SHA-256(TPMT_PUBLIC)`.
fn sha256_name(public: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(&Sha256::digest(public));
    name
}

fn attributes(public: &[u8]) -> u32 {
    u32::from_be_bytes([public[4], public[5], public[6], public[7]])
}

#[test]
fn startup_is_tolerant_of_an_already_started_tpm() -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    // The harness starts swtpm with `startup-clear`.
    assert_eq!(tpm.startup_clear()?, StartupOutcome::AlreadyStarted);
    assert_eq!(tpm.startup_clear()?, StartupOutcome::AlreadyStarted);
    let a = tpm.get_random(48)?;
    let b = tpm.get_random(48)?;
    assert_eq!(a.len(), 48);
    assert_ne!(a, b);
    Ok(())
}

fn ek_matches_tpm2_createek(key: KeyAlg, tool_alg: &str) -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    let ek = tpm.create_ek(key)?;
    tpm.flush_context(ek.handle)?;

    tool(
        &swtpm,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", tool_alg, "-u", "ek.pub"],
    )?;
    let tools_pub = std::fs::read(swtpm.scratch("ek.pub"))?;
    assert_eq!(
        ek.public_tpm2b(),
        tools_pub,
        "EK public differs from tpm2_createek's"
    );

    // The TPM's name is the SHA-256 name of the public area we return.
    assert_eq!(ek.name, sha256_name(&ek.public));
    assert_eq!(attributes(&ek.public), EK_ATTRIBUTES);
    // The template fields survive; only `unique` is filled in.
    let template = ek_template(key);
    assert_eq!(ek.public[..56], template[..56]);
    assert_eq!(ek.public.len(), template.len());
    assert_ne!(ek.public, template, "unique must hold the real public key");

    // Same seed, same template: the EK is reproducible.
    let again = tpm.create_ek(key)?;
    assert_eq!(again.public, ek.public);
    assert_eq!(again.name, ek.name);
    tpm.flush_context(again.handle)?;
    Ok(())
}

#[test]
fn rsa_ek_equals_tpm2_createek() -> Result<()> {
    ek_matches_tpm2_createek(KeyAlg::Rsa2048, "rsa")
}

#[test]
fn ecc_ek_equals_tpm2_createek() -> Result<()> {
    ek_matches_tpm2_createek(KeyAlg::EccP256, "ecc")
}

fn ak_under_ek(key: KeyAlg) -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    let ek = tpm.create_ek(key)?;
    let ak = tpm.create_ak(ek.handle, key)?;
    let LoadedKey {
        handle,
        public,
        name,
    } = ak.key.clone();
    assert_eq!(name, sha256_name(&public));
    assert_eq!(attributes(&public), AK_ATTRIBUTES);
    let template = ak_template(key);
    // Type, nameAlg, attributes, policy and parameters are the template's.
    let fixed = template.len() - if key == KeyAlg::Rsa2048 { 2 } else { 4 };
    assert_eq!(public[..fixed], template[..fixed]);

    // ReadPublic agrees with what Load returned.
    let info = tpm.read_public(handle)?;
    assert_eq!(info.public, public);
    assert_eq!(info.name, name);

    // The private blob reloads under the same EK to the same key.
    tpm.flush_context(handle)?;
    let again = tpm.load_ak(ek.handle, &ak.private, &public)?;
    assert_eq!(again.name, name);
    tpm.flush_context(again.handle)?;

    // A second AK is a different key.
    let other = tpm.create_ak(ek.handle, key)?;
    assert_ne!(other.key.name, name);
    tpm.flush_context(other.key.handle)?;
    tpm.flush_context(ek.handle)?;
    Ok(())
}

#[test]
fn rsa_ak_is_created_and_loaded_under_the_ek() -> Result<()> {
    ak_under_ek(KeyAlg::Rsa2048)
}

#[test]
fn ecc_ak_is_created_and_loaded_under_the_ek() -> Result<()> {
    ak_under_ek(KeyAlg::EccP256)
}

#[test]
fn ek_without_policy_secret_fails_with_policy_fail() -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    let ek = tpm.create_ek(KeyAlg::EccP256)?;
    // A policy session that never ran PolicySecret does not satisfy policy A.
    let session = tpm.start_policy_session()?;
    let err = tpm
        .create(
            ek.handle,
            Authorization::Policy(session),
            &ak_template(KeyAlg::EccP256),
        )
        .expect_err("EK use without PolicySecret must fail");
    let rc = err.response_code().expect("a TPM response code");
    assert_eq!(rc.base(), ResponseCode::POLICY_FAIL, "{err}");
    assert_eq!(rc.location(), RcLocation::Session(1));
    assert!(
        err.to_string().contains("TPM_RC_POLICY_FAIL (session 1)"),
        "{err}"
    );
    tpm.flush_context(session)?;
    tpm.flush_context(ek.handle)?;
    Ok(())
}

#[test]
fn flushing_twice_is_a_typed_handle_error() -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    let ek = tpm.create_primary(Hierarchy::Endorsement, &ek_template(KeyAlg::EccP256))?;
    tpm.flush_context(ek.handle)?;
    match tpm.flush_context(ek.handle) {
        Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), ResponseCode::HANDLE),
        other => panic!("expected TPM_RC_HANDLE, got {other:?}"),
    }
    Ok(())
}
