//! PCR_Read and PCR_Extend against a real swtpm, checked against
//! `tpm2_pcrread`.

mod common;

use anyhow::Result;
use sha2::{Digest, Sha256};
use trustlaunch_tpm_client::{Error, HashAlg, PcrSelection};

use common::{parse_pcrread, start, tool};

#[test]
fn extend_then_read_matches_tpm2_pcrread_across_banks() -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    let before = tpm.pcr_read(&PcrSelection::new(HashAlg::Sha256, [0]))?;
    assert_eq!(before.get(HashAlg::Sha256, 0), Some(&[0u8; 32][..]));

    for pcr in 0..8u8 {
        tpm.pcr_extend(pcr, HashAlg::Sha256, &[pcr + 1; 32])?;
        tpm.pcr_extend(pcr, HashAlg::Sha1, &[pcr + 0x40; 20])?;
    }
    tpm.pcr_extend(23, HashAlg::Sha384, &[0x23; 48])?;

    // 72 PCRs: far more than one TPM2_PCR_Read returns.
    let selection = PcrSelection::new(HashAlg::Sha1, 0..24)
        .with(HashAlg::Sha256, 0..24)
        .with(HashAlg::Sha384, 0..24);
    let values = tpm.pcr_read(&selection)?;
    assert_eq!(values.values.len(), 72);
    assert_ne!(values.update_counter, before.update_counter);

    // The extend rule, computed independently: new = H(old || digest).
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update([1u8; 32]);
    assert_eq!(values.get(HashAlg::Sha256, 0), Some(&h.finalize()[..]));
    assert_eq!(values.get(HashAlg::Sha256, 8), Some(&[0u8; 32][..]));

    let out = tool(&swtpm, "tpm2_pcrread", &[&selection.to_string()])?;
    let reference = parse_pcrread(&String::from_utf8(out.stdout)?)?;
    assert_eq!(reference.len(), 72);
    for (bank, index, digest) in reference {
        let bank = match bank.as_str() {
            "sha1" => HashAlg::Sha1,
            "sha256" => HashAlg::Sha256,
            "sha384" => HashAlg::Sha384,
            other => panic!("unexpected bank {other}"),
        };
        assert_eq!(
            values.get(bank, index),
            Some(digest.as_slice()),
            "{bank:?} PCR {index}"
        );
    }
    Ok(())
}

#[test]
fn values_file_matches_tpm2_pcrread_output() -> Result<()> {
    let (swtpm, mut tpm) = start()?;
    for pcr in [0u8, 4, 7] {
        tpm.pcr_extend(pcr, HashAlg::Sha256, &[0x5a ^ pcr; 32])?;
    }
    let selection = PcrSelection::new(HashAlg::Sha256, 0..8);
    let values = tpm.pcr_read(&selection)?;
    tool(
        &swtpm,
        "tpm2_pcrread",
        &["-o", "pcrs.bin", &selection.to_string()],
    )?;
    assert_eq!(
        std::fs::read(swtpm.scratch("pcrs.bin"))?,
        values.concatenated()
    );
    Ok(())
}

#[test]
fn extend_with_a_wrong_digest_size_is_rejected_before_sending() -> Result<()> {
    let (_swtpm, mut tpm) = start()?;
    assert!(matches!(
        tpm.pcr_extend(0, HashAlg::Sha256, &[0; 20]),
        Err(Error::InvalidArgument { .. })
    ));
    let values = tpm.pcr_read(&PcrSelection::new(HashAlg::Sha256, [0]))?;
    assert_eq!(values.get(HashAlg::Sha256, 0), Some(&[0u8; 32][..]));
    Ok(())
}
