//! Quotes and credential activation against a real swtpm, with tpm2-tools
//! as the verifier (`tpm2_checkquote`, `tpm2_makecredential -T none`).

mod common;

use anyhow::Result;
use trustlaunch_tpm_client::{Error, HashAlg, KeyAlg, PcrSelection, RcLocation, ResponseCode};

use common::{hex, read_tools_credential, start, tool, tool_unchecked, tools_serialized_pcrs};

fn quote_verifies_with_tpm2_checkquote(key: KeyAlg) -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    for pcr in 0..8u8 {
        tpm.pcr_extend(pcr, HashAlg::Sha256, &[0xc0 | pcr; 32])?;
    }
    let ek = tpm.create_ek(key)?;
    let ak = tpm.create_ak(ek.handle, key)?;
    let nonce = b"trustlaunch-nonce-0123456789abcd";
    let selection = PcrSelection::new(HashAlg::Sha256, 0..8);
    let quote = tpm.quote(ak.key.handle, nonce, &selection)?;
    let pcrs = tpm.pcr_read(&selection)?;
    tpm.flush_context(ak.key.handle)?;
    tpm.flush_context(ek.handle)?;

    // TPMS_ATTEST starts with TPM_GENERATED_VALUE and TPM_ST_ATTEST_QUOTE.
    assert_eq!(quote.attest[..6], [0xff, 0x54, 0x43, 0x47, 0x80, 0x18]);
    let sig_alg = u16::from_be_bytes([quote.signature[0], quote.signature[1]]);
    assert_eq!(
        sig_alg,
        if key == KeyAlg::Rsa2048 {
            0x0014
        } else {
            0x0018
        }
    );

    std::fs::write(swtpm.scratch("ak.pub"), ak.key.public_tpm2b())?;
    std::fs::write(swtpm.scratch("quote.msg"), &quote.attest)?;
    std::fs::write(swtpm.scratch("quote.sig"), &quote.signature)?;
    let indices: Vec<u8> = (0..8).collect();
    let digests: Vec<Vec<u8>> = pcrs.values.iter().map(|v| v.digest.clone()).collect();
    std::fs::write(
        swtpm.scratch("pcrs.bin"),
        tools_serialized_pcrs(0x000b, &indices, &digests),
    )?;
    // The nonce is the quote's extraData, right after the signer's name.
    let signer_len = usize::from(u16::from_be_bytes([quote.attest[6], quote.attest[7]]));
    let extra = &quote.attest[8 + signer_len..];
    assert_eq!(&extra[2..2 + nonce.len()], nonce);

    let nonce_hex = hex(nonce);
    let args = |nonce: &str| -> Vec<String> {
        [
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "pcrs.bin",
            "-g",
            "sha256",
            "-q",
            nonce,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let ok = args(&nonce_hex);
    tool(
        &swtpm,
        "tpm2_checkquote",
        &ok.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;

    // The check is real: another nonce fails, and so do other PCR values.
    let bad = args(&hex(b"another-nonce"));
    let out = tool_unchecked(
        &swtpm,
        "tpm2_checkquote",
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    assert!(!out.status.success(), "checkquote accepted a wrong nonce");
    let mut tampered = digests.clone();
    tampered[3][0] ^= 1;
    std::fs::write(
        swtpm.scratch("pcrs.bin"),
        tools_serialized_pcrs(0x000b, &indices, &tampered),
    )?;
    let out = tool_unchecked(
        &swtpm,
        "tpm2_checkquote",
        &ok.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    assert!(
        !out.status.success(),
        "checkquote accepted wrong PCR values"
    );
    Ok(())
}

#[test]
fn rsa_quote_verifies_with_tpm2_checkquote() -> Result<()> {
    quote_verifies_with_tpm2_checkquote(KeyAlg::Rsa2048)
}

#[test]
fn ecc_quote_verifies_with_tpm2_checkquote() -> Result<()> {
    quote_verifies_with_tpm2_checkquote(KeyAlg::EccP256)
}

fn activation_round_trips(key: KeyAlg) -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    let ek = tpm.create_ek(key)?;
    let ak = tpm.create_ak(ek.handle, key)?;
    let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();

    std::fs::write(swtpm.scratch("ek.pub"), ek.public_tpm2b())?;
    std::fs::write(swtpm.scratch("secret.bin"), &secret)?;
    let make = |name: &[u8], out: &str| -> Result<_> {
        tool(
            &swtpm,
            "tpm2_makecredential",
            &[
                "-T",
                "none",
                "-u",
                "ek.pub",
                "-s",
                "secret.bin",
                "-n",
                &hex(name),
                "-o",
                out,
            ],
        )?;
        read_tools_credential(&swtpm.scratch(out))
    };

    let cred = make(&ak.key.name, "cred.out")?;
    let recovered = tpm.activate_credential(
        ak.key.handle,
        ek.handle,
        &cred.id_object,
        &cred.encrypted_secret,
    )?;
    assert_eq!(recovered, secret);

    // A credential for another key name does not activate with this AK.
    let mut wrong_name = ak.key.name.clone();
    *wrong_name.last_mut().expect("non-empty name") ^= 0x01;
    let wrong = make(&wrong_name, "wrong.out")?;
    let err = tpm
        .activate_credential(
            ak.key.handle,
            ek.handle,
            &wrong.id_object,
            &wrong.encrypted_secret,
        )
        .expect_err("activation with a wrong AK name must fail");
    match &err {
        Error::Tpm { rc, .. } => {
            assert_eq!(rc.base(), ResponseCode::INTEGRITY, "{err}");
            assert_eq!(rc.location(), RcLocation::Parameter(1), "{err}");
        }
        other => panic!("expected a TPM error, got {other:?}"),
    }

    // The failed activation left no session behind: the right one still works.
    let again = tpm.activate_credential(
        ak.key.handle,
        ek.handle,
        &cred.id_object,
        &cred.encrypted_secret,
    )?;
    assert_eq!(again, secret);
    tpm.flush_context(ak.key.handle)?;
    tpm.flush_context(ek.handle)?;
    Ok(())
}

#[test]
fn rsa_credential_activation_round_trips() -> Result<()> {
    activation_round_trips(KeyAlg::Rsa2048)
}

#[test]
fn ecc_credential_activation_round_trips() -> Result<()> {
    activation_round_trips(KeyAlg::EccP256)
}
