//! Persistent objects against a real swtpm: TPM2_EvictControl makes an AK
//! persistent at the handle Azure's guest attestation uses, the key
//! survives a power cycle of the simulator (a VM reboot), quotes and
//! activates from there, and is evicted again; tpm2-tools reads the same
//! public area from the persistent handle.

mod common;

use anyhow::Result;
use trustlaunch_tpm_client::{
    Error, HashAlg, Hierarchy, KeyAlg, ObjectHandle, PcrSelection, ResponseCode,
};

use common::{start, tool};

const AK_HANDLE: ObjectHandle = ObjectHandle(0x8100_0003);

fn is_handle_error(e: &Error) -> bool {
    e.response_code()
        .is_some_and(|rc| rc.base() == ResponseCode::HANDLE)
}

#[test]
fn evict_control_persists_an_ak_across_restarts() -> Result<()> {
    let (mut swtpm, mut tpm) = start()?;
    let err = tpm.read_public(AK_HANDLE).unwrap_err();
    assert!(is_handle_error(&err), "nothing there yet: {err}");

    let ek = tpm.create_ek(KeyAlg::Rsa2048)?;
    let ak = tpm.create_ak(ek.handle, KeyAlg::Rsa2048)?;
    tpm.evict_control(Hierarchy::Owner, ak.key.handle, AK_HANDLE)?;
    // The transient copy is still loaded and still ours to flush.
    tpm.flush_context(ak.key.handle)?;
    let persistent = tpm.read_public(AK_HANDLE)?;
    assert_eq!(persistent.public, ak.key.public);
    assert_eq!(persistent.name, ak.key.name);

    // The handle is taken: a second EvictControl to it is refused.
    let again = tpm.create_ak(ek.handle, KeyAlg::Rsa2048)?;
    let err = tpm
        .evict_control(Hierarchy::Owner, again.key.handle, AK_HANDLE)
        .unwrap_err();
    assert_eq!(
        err.response_code().map(|rc| rc.base()),
        Some(ResponseCode::NV_DEFINED),
        "{err}"
    );
    tpm.flush_context(again.key.handle)?;
    tpm.flush_context(ek.handle)?;

    // tpm2-tools sees the same key at the persistent handle.
    tool(
        &swtpm,
        "tpm2_readpublic",
        &["-c", "0x81000003", "-f", "tss", "-o", "ak.pub"],
    )?;
    assert_eq!(
        std::fs::read(swtpm.scratch("ak.pub"))?,
        ak.key.public_tpm2b()
    );

    // Power cycle: the persistent AK and the (seed-derived) EK are the same.
    swtpm.restart()?;
    let mut tpm = swtpm.client()?;
    let after = tpm.read_public(AK_HANDLE)?;
    assert_eq!(after.public, ak.key.public);
    assert_eq!(after.name, ak.key.name);
    let ek = tpm.create_ek(KeyAlg::Rsa2048)?;
    let nonce = [7u8; 32];
    let quote = tpm.quote(
        AK_HANDLE,
        &nonce,
        &PcrSelection::new(HashAlg::Sha256, 0..16),
    )?;
    assert!(!quote.attest.is_empty() && !quote.signature.is_empty());
    tpm.flush_context(ek.handle)?;

    // Evicting the persistent object removes it.
    tpm.evict_control(Hierarchy::Owner, AK_HANDLE, AK_HANDLE)?;
    let err = tpm.read_public(AK_HANDLE).unwrap_err();
    assert!(is_handle_error(&err), "evicted: {err}");
    Ok(())
}
