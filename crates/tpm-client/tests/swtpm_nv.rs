//! NV indices against a real swtpm: owner indices, EK certificate
//! provisioning as swtpm_setup does it, chunked reads and writes, locks,
//! with tpm2-tools reading back what this crate wrote.

mod common;

use anyhow::Result;
use trustlaunch_tpm_client::{
    Error, Hierarchy, KeyAlg, NvAttributes, NvAuth, NvDefinition, NvIndex, ResponseCode,
};

use common::{start, tool};

/// A blob longer than one NV chunk (1024 bytes), with no repeating period.
fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

#[test]
fn owner_index_round_trips_across_chunks() -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    assert!(tpm.nv_chunk_size()? <= 1024);
    let index = NvIndex(0x0150_0001);
    let data = blob(1500);
    tpm.nv_define_space(&NvDefinition::owner_read_write(index, 1500))?;
    let public = tpm.nv_read_public(index)?;
    assert_eq!(public.data_size, 1500);
    assert!(public.attributes.contains(NvAttributes::OWNER_READ_WRITE));
    assert!(!public.attributes.contains(NvAttributes::WRITTEN));

    // Reading before the first write is TPM_RC_NV_UNINITIALIZED.
    match tpm.nv_read(index, &NvAuth::Owner) {
        Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), ResponseCode::NV_UNINITIALIZED),
        other => panic!("expected NV_UNINITIALIZED, got {other:?}"),
    }

    tpm.nv_write(index, &NvAuth::Owner, &data)?;
    assert_eq!(tpm.nv_read(index, &NvAuth::Owner)?, data);
    assert_eq!(tpm.nv_read(index, &NvAuth::Index(Vec::new()))?, data);
    assert_eq!(
        tpm.nv_read_range(index, &NvAuth::Owner, 1000, 100)?,
        data[1000..1100]
    );
    assert!(tpm
        .nv_read_public(index)?
        .attributes
        .contains(NvAttributes::WRITTEN));

    // tpm2-tools reads the same bytes.
    tool(
        &swtpm,
        "tpm2_nvread",
        &["-C", "o", "-o", "nv.bin", &format!("{:#x}", index.0)],
    )?;
    assert_eq!(std::fs::read(swtpm.scratch("nv.bin"))?, data);

    // Defining it again is TPM_RC_NV_DEFINED; undefining removes it.
    match tpm.nv_define_space(&NvDefinition::owner_read_write(index, 8)) {
        Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), ResponseCode::NV_DEFINED),
        other => panic!("expected NV_DEFINED, got {other:?}"),
    }
    tpm.nv_undefine_space(Hierarchy::Owner, index)?;
    match tpm.nv_read_public(index) {
        Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), ResponseCode::HANDLE),
        other => panic!("expected TPM_RC_HANDLE, got {other:?}"),
    }
    Ok(())
}

#[test]
fn ek_certificate_is_provisioned_like_swtpm_setup_and_read_back() -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    assert_eq!(tpm.read_ek_certificate(KeyAlg::Rsa2048)?, None);

    // Stand-in DER: the index does not interpret its contents.
    let cert = blob(1234);
    tpm.provision_ek_certificate(KeyAlg::Rsa2048, &cert, true)?;
    assert_eq!(
        tpm.read_ek_certificate(KeyAlg::Rsa2048)?,
        Some(cert.clone())
    );
    assert_eq!(tpm.read_ek_certificate(KeyAlg::EccP256)?, None);

    let public = tpm.nv_read_public(NvIndex(0x01c0_0002))?;
    assert!(public.attributes.contains(NvAttributes::EK_CERTIFICATE));
    assert!(public.attributes.contains(NvAttributes::WRITELOCKED));

    // Locked: even the platform cannot write it again.
    match tpm.nv_write(
        KeyAlg::Rsa2048.ek_certificate_index(),
        &NvAuth::Platform,
        b"x",
    ) {
        Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), ResponseCode::NV_LOCKED),
        other => panic!("expected NV_LOCKED, got {other:?}"),
    }
    // tpm2-tools reads it with the index's own authorization, as
    // `tpm2_getekcertificate`-style tools do.
    tool(
        &swtpm,
        "tpm2_nvread",
        &["-C", "0x01c00002", "-o", "ekcert.der", "0x01c00002"],
    )?;
    assert_eq!(std::fs::read(swtpm.scratch("ekcert.der"))?, cert);
    Ok(())
}

#[test]
fn ecc_ek_certificate_index_without_lock_stays_writable_by_platform() -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    let cert = blob(600);
    tpm.provision_ek_certificate(KeyAlg::EccP256, &cert, false)?;
    let index = KeyAlg::EccP256.ek_certificate_index();
    assert_eq!(index, NvIndex(0x01c0_000a));
    tpm.nv_write(index, &NvAuth::Platform, &[0xAA; 10])?;
    // Only the platform may write (PPWRITE, no OWNERWRITE or AUTHWRITE).
    for (auth, expected) in [
        (NvAuth::Owner, ResponseCode::NV_AUTHORIZATION),
        (NvAuth::Index(Vec::new()), ResponseCode::AUTH_UNAVAILABLE),
    ] {
        match tpm.nv_write(index, &auth, b"x") {
            Err(Error::Tpm { rc, .. }) => assert_eq!(rc.base(), expected, "{auth:?}: {rc}"),
            other => panic!("expected {expected} for {auth:?}, got {other:?}"),
        }
    }
    let mut expected = cert;
    expected[..10].fill(0xAA);
    assert_eq!(tpm.read_ek_certificate(KeyAlg::EccP256)?, Some(expected));
    Ok(())
}
