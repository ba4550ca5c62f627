//! Public-area templates (`TPMT_PUBLIC`, TPM 2.0 Part 2 §12.2.4) for the
//! EK and the AK.
//!
//! EK: TCG EK Credential Profile for TPM Family 2.0, Level 0, version 2.5,
//! §2.1.5.1 "Default EK Templates" (low range): template L-1 (RSA 2048) and
//! L-2 (ECC NIST P-256). These are what `tpm2_createek` uses, so the EK a
//! TPM derives from its endorsement primary seed is the same here and there.
//!
//! AK: a restricted signing key as `tpm2_createak` makes it: RSA 2048 with
//! RSASSA-SHA256, or ECC P-256 with ECDSA-SHA256; empty authValue, no
//! policy.

use crate::types::{alg, KeyAlg};

/// `TPMA_OBJECT` bits (TPM 2.0 Part 2 §8.3).
pub mod attr {
    /// `fixedTPM`.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// `fixedParent`.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// `sensitiveDataOrigin`.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// `userWithAuth`.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// `adminWithPolicy`.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// `restricted`.
    pub const RESTRICTED: u32 = 1 << 16;
    /// `decrypt`.
    pub const DECRYPT: u32 = 1 << 17;
    /// `sign`.
    pub const SIGN: u32 = 1 << 18;
}

/// EK attributes: fixedTPM | fixedParent | sensitiveDataOrigin |
/// adminWithPolicy | restricted | decrypt (`0x000300b2`).
pub const EK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

/// AK attributes: fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | restricted | sign (`0x00050072`).
pub const AK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::RESTRICTED
    | attr::SIGN;

/// EK Credential Profile "policy A" (SHA-256): the policy digest of
/// `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)` with empty policyRef.
pub const EK_POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `TPM2B` with a zero-filled buffer of `len` bytes (`len` ≤ 256 here).
fn put_zero_tpm2b(out: &mut Vec<u8>, len: u16) {
    put_u16(out, len);
    out.resize(out.len().saturating_add(usize::from(len)), 0);
}

/// The `TPMT_PUBLIC` of the default EK template: L-1 for RSA 2048 (AES-128
/// CFB, null scheme, 2048 bits, exponent 0, 256-byte zero `unique`), L-2
/// for ECC P-256 (AES-128 CFB, null scheme, NIST P-256, null KDF, 32-byte
/// zero `x` and `y`).
pub fn ek_template(key: KeyAlg) -> Vec<u8> {
    let mut t = Vec::with_capacity(320);
    put_u16(
        &mut t,
        match key {
            KeyAlg::Rsa2048 => alg::RSA,
            KeyAlg::EccP256 => alg::ECC,
        },
    );
    put_u16(&mut t, alg::SHA256);
    put_u32(&mut t, EK_ATTRIBUTES);
    put_u16(&mut t, 32);
    t.extend_from_slice(&EK_POLICY_A_SHA256);
    // symmetric: TPMT_SYM_DEF_OBJECT { AES, 128, CFB }
    put_u16(&mut t, alg::AES);
    put_u16(&mut t, 128);
    put_u16(&mut t, alg::CFB);
    // scheme: TPM_ALG_NULL
    put_u16(&mut t, alg::NULL);
    match key {
        KeyAlg::Rsa2048 => {
            put_u16(&mut t, 2048);
            put_u32(&mut t, 0);
            put_zero_tpm2b(&mut t, 256);
        }
        KeyAlg::EccP256 => {
            put_u16(&mut t, alg::ECC_NIST_P256);
            put_u16(&mut t, alg::NULL);
            put_zero_tpm2b(&mut t, 32);
            put_zero_tpm2b(&mut t, 32);
        }
    }
    t
}

/// The `TPMT_PUBLIC` of an AK: restricted signing key, SHA-256 name,
/// [`AK_ATTRIBUTES`], no policy, null symmetric, RSASSA-SHA256 (RSA 2048,
/// exponent 0) or ECDSA-SHA256 (NIST P-256, null KDF), empty `unique`.
pub fn ak_template(key: KeyAlg) -> Vec<u8> {
    let mut t = Vec::with_capacity(32);
    put_u16(
        &mut t,
        match key {
            KeyAlg::Rsa2048 => alg::RSA,
            KeyAlg::EccP256 => alg::ECC,
        },
    );
    put_u16(&mut t, alg::SHA256);
    put_u32(&mut t, AK_ATTRIBUTES);
    put_u16(&mut t, 0);
    put_u16(&mut t, alg::NULL);
    match key {
        KeyAlg::Rsa2048 => {
            put_u16(&mut t, alg::RSASSA);
            put_u16(&mut t, alg::SHA256);
            put_u16(&mut t, 2048);
            put_u32(&mut t, 0);
            put_u16(&mut t, 0);
        }
        KeyAlg::EccP256 => {
            put_u16(&mut t, alg::ECDSA);
            put_u16(&mut t, alg::SHA256);
            put_u16(&mut t, alg::ECC_NIST_P256);
            put_u16(&mut t, alg::NULL);
            put_u16(&mut t, 0);
            put_u16(&mut t, 0);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_ek_template_matches_profile_layout() {
        let t = ek_template(KeyAlg::Rsa2048);
        // 314 bytes: the TPM2B_PUBLIC size tpm2_createek writes (0x013a).
        assert_eq!(t.len(), 314);
        assert_eq!(&t[..8], &[0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x00, 0xb2]);
        assert_eq!(&t[10..42], &EK_POLICY_A_SHA256);
        assert_eq!(
            &t[42..56],
            &[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00, 0, 0, 0, 0]
        );
        assert_eq!(&t[56..58], &[0x01, 0x00]);
        assert!(t[58..].iter().all(|b| *b == 0));
    }

    #[test]
    fn ecc_ek_template_matches_profile_layout() {
        let t = ek_template(KeyAlg::EccP256);
        assert_eq!(t.len(), 2 + 2 + 4 + 34 + 6 + 2 + 2 + 2 + 34 + 34);
        assert_eq!(&t[..2], &[0x00, 0x23]);
        assert_eq!(&t[48..54], &[0x00, 0x10, 0x00, 0x03, 0x00, 0x10]);
    }

    #[test]
    fn ak_templates() {
        let rsa = ak_template(KeyAlg::Rsa2048);
        assert_eq!(
            rsa,
            [
                0x00, 0x01, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x14,
                0x00, 0x0b, 0x08, 0x00, 0, 0, 0, 0, 0, 0
            ]
        );
        let ecc = ak_template(KeyAlg::EccP256);
        assert_eq!(&ecc[..2], &[0x00, 0x23]);
        assert_eq!(ecc.len(), 24);
    }
}
