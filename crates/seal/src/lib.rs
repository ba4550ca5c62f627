//! Secrets at rest: every private key the platform keeps — the
//! token-signing keys in the database, the Secure Boot PK/KEK/db keys, the
//! vTPM CA's key, each vTPM's state key — is stored sealed under one
//! platform master key, so a copy of the database or of a key file alone
//! reveals nothing.
//!
//! A sealed secret is AES-256-GCM (NIST SP 800-38D) under the 32-byte
//! [`MasterKey`], with a fresh 96-bit random nonce per seal, and the
//! secret's *purpose* (e.g. `signing-key/3f2a…`, `platform/secureboot/db`)
//! as associated data: a sealed value moved to another slot does not
//! open. The text form is armored like PEM:
//!
//! ```text
//! -----BEGIN TRUSTLAUNCH SEALED SECRET-----
//! base64(version 0x01 || nonce (12) || ciphertext || tag (16))
//! -----END TRUSTLAUNCH SEALED SECRET-----
//! ```
//!
//! Pure: no files, no clock, no environment; the caller brings the key's
//! bytes and the randomness. What it does not do: keep the master key
//! (the runtime and the server read it from a 0600 file outside the
//! database), or rotate it.

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The armor's first line.
pub const BEGIN: &str = "-----BEGIN TRUSTLAUNCH SEALED SECRET-----";
/// The armor's last line.
pub const END: &str = "-----END TRUSTLAUNCH SEALED SECRET-----";
/// Bytes of a master key.
pub const KEY_LEN: usize = 32;
/// The format version this crate writes and reads.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The largest secret accepted (keys are a few KiB; swtpm state keys 32 B).
pub const MAX_SECRET: usize = 1 << 20;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The master key is not [`KEY_LEN`] bytes.
    #[error("the master key is {0} bytes, not 32")]
    KeyLength(usize),
    /// The text is not a sealed secret (no armor, bad base64, too short).
    #[error("not a sealed secret: {0}")]
    Malformed(&'static str),
    /// A version this build does not know.
    #[error("sealed with format version {0}, this build reads version 1")]
    Version(u8),
    /// The secret is larger than [`MAX_SECRET`].
    #[error("a secret of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    /// Authentication failed: another master key, another purpose, or the
    /// bytes were altered.
    #[error("the sealed secret for {purpose:?} does not open with this master key (another key, another purpose, or altered)")]
    Open {
        /// The purpose it was opened for.
        purpose: String,
    },
}

/// The platform's master key. Zeroed on drop; `Debug` does not print it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = [0u8; KEY_LEN];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// A key from its 32 bytes (as kept in the master key file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let k: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Self(k))
    }

    /// The key's bytes (to write the master key file).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// Seals `secret` for `purpose`: the armored text.
    pub fn seal(
        &self,
        purpose: &str,
        secret: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<String, SealError> {
        if secret.len() > MAX_SECRET {
            return Err(SealError::TooLarge(secret.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::TooLarge(secret.len()))?;
        let mut raw = Vec::with_capacity(
            1usize
                .saturating_add(NONCE_LEN)
                .saturating_add(sealed.len()),
        );
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let b64 = STANDARD.encode(&raw);
        let mut out = String::with_capacity(b64.len().saturating_add(100));
        out.push_str(BEGIN);
        out.push('\n');
        for line in b64.as_bytes().chunks(64) {
            out.push_str(core::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        Ok(out)
    }

    /// Opens a sealed secret for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let body = sealed
            .trim()
            .strip_prefix(BEGIN)
            .and_then(|s| s.strip_suffix(END))
            .ok_or(SealError::Malformed("no TRUSTLAUNCH SEALED SECRET armor"))?;
        // Base64 of at most MAX_SECRET plus overhead, before decoding.
        if body.len() > MAX_SECRET.saturating_mul(2) {
            return Err(SealError::TooLarge(body.len()));
        }
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let raw = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| SealError::Malformed("the body is not base64"))?;
        let (version, rest) = raw
            .split_first()
            .ok_or(SealError::Malformed("empty body"))?;
        if *version != VERSION {
            return Err(SealError::Version(*version));
        }
        if rest.len() < NONCE_LEN.saturating_add(TAG_LEN) {
            return Err(SealError::Malformed("shorter than a nonce and a tag"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open {
                purpose: purpose.to_owned(),
            })
    }
}

/// Whether `text` is armored as a sealed secret (not necessarily valid).
pub fn is_sealed(text: &str) -> bool {
    text.trim_start().starts_with(BEGIN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_armor() {
        let k = key(7);
        let s = k
            .seal(
                "signing-key/abc",
                b"-----BEGIN PRIVATE KEY-----",
                &mut OsRng,
            )
            .unwrap();
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END));
        assert!(!s.contains("PRIVATE KEY"));
        assert!(is_sealed(&s));
        assert_eq!(
            k.open("signing-key/abc", &s).unwrap().as_slice(),
            b"-----BEGIN PRIVATE KEY-----"
        );
    }

    #[test]
    fn other_key_other_purpose_or_altered_bytes_do_not_open() {
        let k = key(1);
        let s = k
            .seal("platform/secureboot/db", b"secret", &mut OsRng)
            .unwrap();
        assert!(matches!(
            key(2).open("platform/secureboot/db", &s),
            Err(SealError::Open { .. })
        ));
        assert!(matches!(
            k.open("platform/secureboot/pk", &s),
            Err(SealError::Open { .. })
        ));
        // Flip one bit of the ciphertext.
        let body: String = s.lines().nth(1).unwrap().to_owned();
        let mut raw = STANDARD.decode(&body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let altered = format!("{BEGIN}\n{}\n{END}\n", STANDARD.encode(&raw));
        assert!(matches!(
            k.open("platform/secureboot/db", &altered),
            Err(SealError::Open { .. })
        ));
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let k = key(3);
        assert!(matches!(k.open("x", "hello"), Err(SealError::Malformed(_))));
        assert!(matches!(
            k.open("x", &format!("{BEGIN}\n!!\n{END}")),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            k.open("x", &format!("{BEGIN}\nAQ==\n{END}")),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            k.open("x", &format!("{BEGIN}\nAg==\n{END}")),
            Err(SealError::Version(2))
        ));
        assert_eq!(
            MasterKey::from_bytes(&[0; 31]).unwrap_err(),
            SealError::KeyLength(31)
        );
    }

    #[test]
    fn nonces_differ() {
        let k = key(4);
        assert_ne!(
            k.seal("p", b"x", &mut OsRng).unwrap(),
            k.seal("p", b"x", &mut OsRng).unwrap()
        );
    }

    proptest! {
        #[test]
        fn any_secret_round_trips(secret in proptest::collection::vec(any::<u8>(), 0..4096), purpose in ".{0,40}") {
            let k = key(9);
            let s = k.seal(&purpose, &secret, &mut OsRng).unwrap();
            let opened = k.open(&purpose, &s).unwrap();
            prop_assert_eq!(opened.as_slice(), secret.as_slice());
        }

        #[test]
        fn any_text_opens_or_fails_without_panic(text in ".{0,300}") {
            let _ = key(5).open("p", &text);
            let _ = key(5).open("p", &format!("{BEGIN}\n{text}\n{END}"));
        }
    }
}
