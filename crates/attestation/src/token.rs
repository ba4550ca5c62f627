//! Signed attestation tokens: JSON Web Tokens (RFC 7519) in JWS compact
//! serialization (RFC 7515 §7.1), signed RS256 — RSASSA-PKCS1-v1_5 with
//! SHA-256 (RFC 7518 §3.3), the algorithm Azure Attestation signs with —
//! and the JSON Web Key Set (RFC 7517 §5) that publishes the verification
//! keys, each named by its JWK thumbprint (RFC 7638).
//!
//! - [`SigningKey`]: an RSA-2048/3072/4096 key and its `kid`.
//! - [`KeySet`]: the current signing key plus the public keys of previous
//!   ones, published until the retirement time the caller gave at
//!   [`KeySet::rotate`]; [`KeySet::jwks`] is what `/.well-known/jwks.json`
//!   serves.
//! - [`issue`] signs a claims object; [`verify`] checks a token against a
//!   [`Jwks`].
//!
//! Pure: the caller passes the time, randomness (key generation only) and
//! the key set. Only RS256 is accepted on verification: `none`, the HMAC
//! algorithms (the RSA-public-key-as-HMAC-secret confusion) and everything
//! else are refused before any key is looked at. Not done: JWE, detached
//! payloads, `crit` extensions (refused), `aud`/`sub` policy (the caller
//! reads the returned claims), fetching a JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::CryptoRngCore;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

pub use rsa::pkcs8::der::zeroize::Zeroizing;

/// The only signature algorithm issued and accepted.
pub const ALG: &str = "RS256";

/// Azure Attestation's token lifetime: 8 hours.
pub const DEFAULT_LIFETIME_SECS: u64 = 8 * 60 * 60;

/// The largest token [`verify`] reads (bytes of the compact form).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The RSA modulus sizes accepted, in bits (signing and verification).
pub const MIN_RSA_BITS: usize = 2048;
/// See [`MIN_RSA_BITS`].
pub const MAX_RSA_BITS: usize = 4096;

/// The modulus size [`SigningKey::generate`] uses (Azure's).
pub const DEFAULT_RSA_BITS: usize = 2048;

/// The claims [`issue`] sets itself; a claims object may not carry them.
pub const REGISTERED_CLAIMS: [&str; 6] = ["iss", "aud", "iat", "nbf", "exp", "jti"];

/// A failure to make, load or store a [`SigningKey`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The modulus size is not 2048–4096 bits (generation: not 2048, 3072
    /// or 4096).
    #[error("RSA key of {bits} bits: RS256 keys must be {MIN_RSA_BITS}-{MAX_RSA_BITS} bits")]
    Size {
        /// The size asked for or found.
        bits: usize,
    },
    /// The RSA operation (generation, consistency check) failed.
    #[error("RSA key: {0}")]
    Rsa(#[from] rsa::Error),
    /// The PEM is not a PKCS#8 RSA private key.
    #[error("PKCS#8 private key: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    /// The public key could not be encoded as SPKI PEM.
    #[error("SPKI public key: {0}")]
    Spki(#[from] rsa::pkcs8::spki::Error),
}

/// A failure to issue a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The claims did not serialize to JSON.
    #[error("claims do not serialize to JSON: {0}")]
    Claims(#[source] serde_json::Error),
    /// The claims serialized to something other than a JSON object.
    #[error("claims serialize to a JSON {found}, not an object")]
    ClaimsNotObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// The claims carry a claim `issue` sets itself.
    #[error("claims carry the registered claim `{claim}`, which the issuer sets")]
    ReservedClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// The lifetime is zero (the token would be born expired).
    #[error("token lifetime is zero")]
    ZeroLifetime,
    /// `iat + lifetime` does not fit in a u64.
    #[error("iat {iat} + lifetime {lifetime_secs} s overflows")]
    TimeOverflow {
        /// Issued-at.
        iat: u64,
        /// Lifetime.
        lifetime_secs: u64,
    },
    /// The RSA signature operation failed.
    #[error("signing with key {kid}: {source}")]
    Sign {
        /// The key's id.
        kid: String,
        /// Why.
        source: rsa::Error,
    },
}

/// Why a token was refused by [`verify`] (or a JWKS by [`Jwks::from_json`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The input exceeds the size bound.
    #[error("{what} is {len} bytes, over the {max}-byte bound")]
    TooLarge {
        /// `token` or `JWKS`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The token is not three dot-separated parts.
    #[error("token has {parts} dot-separated parts, not 3 (header.payload.signature)")]
    Parts {
        /// How many parts were found (4 means "4 or more").
        parts: usize,
    },
    /// A part is not unpadded base64url (RFC 7515 §2).
    #[error("token {part} is not unpadded base64url: {reason}")]
    Base64 {
        /// `header`, `payload` or `signature`.
        part: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// A part (or the JWKS) is not the JSON object expected.
    #[error("token {part} is not a JSON object: {reason}")]
    Json {
        /// `header`, `payload` or `JWKS`.
        part: &'static str,
        /// Why.
        reason: String,
    },
    /// A header parameter is missing, of the wrong type, or not understood.
    #[error("header parameter `{param}`: {reason}")]
    Header {
        /// The parameter.
        param: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The header's `alg` is not RS256 (`none`, HS256, ES256, ...).
    #[error("header alg `{alg}` refused: only RS256 is accepted")]
    Algorithm {
        /// The algorithm named by the token.
        alg: String,
    },
    /// The header's `kid` is not in the JWKS (unknown or retired key).
    #[error("key id `{kid}` is not in the JWKS (unknown or retired key)")]
    UnknownKid {
        /// The key id named by the token.
        kid: String,
    },
    /// The JWKS entry named by `kid` is not an RS256 RSA signing key.
    #[error("JWKS key `{kid}` cannot verify RS256: {reason}")]
    Key {
        /// The key id.
        kid: String,
        /// What is wrong with the key.
        reason: String,
    },
    /// The RS256 signature does not verify under the key.
    #[error("signature does not verify under key `{kid}`")]
    Signature {
        /// The key id.
        kid: String,
    },
    /// A registered claim is missing.
    #[error("claim `{claim}` is missing")]
    MissingClaim {
        /// The claim.
        claim: &'static str,
    },
    /// A registered claim has the wrong type (times must be non-negative
    /// integers, `iss` a string).
    #[error("claim `{claim}`: {reason}")]
    InvalidClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `iss` is not the expected issuer.
    #[error("issuer `{found}` is not the expected `{expected}`")]
    Issuer {
        /// The issuer expected.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// `exp` has passed (`now >= exp + leeway`).
    #[error("token expired at {exp} (now {now}, leeway {leeway_secs} s)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time given.
        now: u64,
        /// The leeway given.
        leeway_secs: u64,
    },
    /// `nbf` has not come (`now + leeway < nbf`).
    #[error("token not valid before {nbf} (now {now}, leeway {leeway_secs} s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time given.
        now: u64,
        /// The leeway given.
        leeway_secs: u64,
    },
}

/// One JSON Web Key (RFC 7517 §4, RSA members of RFC 7518 §6.3.1).
///
/// Keys this module publishes always carry `use: sig` and `alg: RS256`;
/// a JWKS read from elsewhere may omit them (then they do not restrict the
/// key) or carry other key types (ignored unless a token names them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`.
    pub kty: String,
    /// Key id: the RFC 7638 thumbprint, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Public key use: `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Algorithm: `RS256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Modulus, big-endian unsigned, base64url (RSA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Public exponent, big-endian unsigned, base64url (RSA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    fn from_public(key: &RsaPublicKey) -> Self {
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        let kid = rsa_thumbprint(&n, &e);
        Self {
            kty: "RSA".to_owned(),
            kid: Some(kid),
            key_use: Some("sig".to_owned()),
            alg: Some(ALG.to_owned()),
            n: Some(n),
            e: Some(e),
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url) of an RSA key: over
    /// `{"e":…,"kty":"RSA","n":…}` exactly as the members are written.
    /// `None` for other key types or without `n`/`e`.
    pub fn thumbprint(&self) -> Option<String> {
        match (self.kty.as_str(), &self.n, &self.e) {
            ("RSA", Some(n), Some(e)) => Some(rsa_thumbprint(n, e)),
            _ => None,
        }
    }

    /// The RSA public key, checked to be fit for RS256: type RSA, `use` and
    /// `alg` (when present) `sig` and `RS256`, canonical base64url, modulus
    /// 2048–4096 bits.
    pub fn rsa_public_key(&self) -> Result<RsaPublicKey, String> {
        if self.kty != "RSA" {
            return Err(format!("kty is `{}`, not RSA", self.kty));
        }
        if let Some(u) = self.key_use.as_deref().filter(|u| *u != "sig") {
            return Err(format!("use is `{u}`, not sig"));
        }
        if let Some(a) = self.alg.as_deref().filter(|a| *a != ALG) {
            return Err(format!("alg is `{a}`, not {ALG}"));
        }
        let n = b64_member(self.n.as_deref(), "n")?;
        let e = b64_member(self.e.as_deref(), "e")?;
        let bits = n.bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "modulus of {bits} bits, not {MIN_RSA_BITS}-{MAX_RSA_BITS}"
            ));
        }
        RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|err| err.to_string())
    }
}

fn b64_member(v: Option<&str>, name: &str) -> Result<BigUint, String> {
    let s = v.ok_or_else(|| format!("`{name}` is missing"))?;
    // A 4096-bit modulus is 683 base64url characters.
    if s.len() > 1024 {
        return Err(format!("`{name}` is {} characters long", s.len()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|err| format!("`{name}` is not unpadded base64url: {err}"))?;
    Ok(BigUint::from_bytes_be(&bytes))
}

fn rsa_thumbprint(n: &str, e: &str) -> String {
    /// RFC 7638 §3.2: the required members, lexicographic order, no
    /// whitespace (serde_json writes struct fields in declaration order).
    #[derive(Serialize)]
    struct Canonical<'a> {
        e: &'a str,
        kty: &'a str,
        n: &'a str,
    }
    let canonical = Canonical { e, kty: "RSA", n };
    // Serializing a struct of strings into a Vec cannot fail; an empty
    // input would only yield a wrong kid, never a panic.
    let json = serde_json::to_vec(&canonical).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(Sha256::digest(json))
}

/// A JSON Web Key Set (RFC 7517 §5): `{"keys":[...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The largest JWKS [`Jwks::from_json`] reads.
    pub const MAX_LEN: usize = 256 * 1024;

    /// Parse a JWKS document (bounded to [`Jwks::MAX_LEN`] bytes).
    pub fn from_json(json: &[u8]) -> Result<Self, TokenError> {
        if json.len() > Self::MAX_LEN {
            return Err(TokenError::TooLarge {
                what: "JWKS",
                len: json.len(),
                max: Self::MAX_LEN,
            });
        }
        serde_json::from_slice(json).map_err(|err| TokenError::Json {
            part: "JWKS",
            reason: err.to_string(),
        })
    }

    /// The key with this id.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// An RS256 signing key and its key id (the RFC 7638 thumbprint of its
/// public key, base64url).
#[derive(Clone)]
pub struct SigningKey {
    key: RsaPrivateKey,
    jwk: Jwk,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generate an RSA-2048 key (what Azure Attestation signs with).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        Self::generate_bits(DEFAULT_RSA_BITS, rng)
    }

    /// Generate an RSA key of 2048, 3072 or 4096 bits (exponent 65537).
    pub fn generate_bits(bits: usize, rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(KeyError::Size { bits });
        }
        Self::from_key(RsaPrivateKey::new(rng, bits)?)
    }

    /// Load a PKCS#8 `PRIVATE KEY` PEM (`openssl genpkey -algorithm RSA`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_key(RsaPrivateKey::from_pkcs8_pem(pem)?)
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let bits = key.n().bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::Size { bits });
        }
        key.validate()?;
        let jwk = Jwk::from_public(&key.to_public_key());
        let kid = jwk.kid.clone().unwrap_or_default();
        Ok(Self { key, jwk, kid })
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM (LF line endings).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        Ok(self.key.to_pkcs8_pem(LineEnding::LF)?)
    }

    /// The public key as an SPKI `PUBLIC KEY` PEM (`openssl pkey -pubout`).
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        Ok(self.key.to_public_key().to_public_key_pem(LineEnding::LF)?)
    }

    /// The public key.
    pub fn public_key(&self) -> RsaPublicKey {
        self.key.to_public_key()
    }

    /// The key id: the RFC 7638 thumbprint, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.n().bits()
    }

    /// The public key as a JWK (`kty`, `kid`, `use: sig`, `alg: RS256`,
    /// `n`, `e`).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `input`, blinded with `rng`
    /// (the server signs on network requests: RUSTSEC-2023-0071).
    fn sign(
        &self,
        input: &[u8],
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<Vec<u8>, IssueError> {
        let digest = Sha256::digest(input);
        self.key
            .sign_with_rng(rng, Pkcs1v15Sign::new::<Sha256>(), &digest)
            .map_err(|source| IssueError::Sign {
                kid: self.kid.clone(),
                source,
            })
    }
}

/// A previous signing key's public half, published until `retire_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousKey {
    /// The public key.
    pub jwk: Jwk,
    /// Published while `now < retire_at` (Unix seconds).
    pub retire_at: u64,
}

/// The signing key tokens are issued with, and the public keys of
/// previous ones still published so that tokens they signed keep verifying
/// until they expire.
#[derive(Clone, Debug)]
pub struct KeySet {
    current: SigningKey,
    previous: Vec<PreviousKey>,
}

impl KeySet {
    /// A set with one key.
    pub fn new(current: SigningKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// The key [`issue`] signs with.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The previous keys still held (retired ones too, until
    /// [`KeySet::prune`]).
    pub fn previous(&self) -> &[PreviousKey] {
        &self.previous
    }

    /// Make `new_key` current; the old current key's public half stays
    /// published while `now < retire_old_at`. Choose `retire_old_at` no
    /// earlier than the last token it signed expires (rotation time +
    /// lifetime + leeway). Rotating to a key already held (current or
    /// previous) moves it to current without duplicating it.
    pub fn rotate(&mut self, new_key: SigningKey, retire_old_at: u64) {
        self.previous
            .retain(|p| p.jwk.kid.as_deref() != Some(new_key.kid()));
        if new_key.kid() == self.current.kid() {
            self.current = new_key;
            return;
        }
        let old = std::mem::replace(&mut self.current, new_key);
        self.previous.push(PreviousKey {
            jwk: old.jwk.clone(),
            retire_at: retire_old_at,
        });
    }

    /// Drop the previous keys retired at `now`.
    pub fn prune(&mut self, now: u64) {
        self.previous.retain(|p| now < p.retire_at);
    }

    /// The JWKS to publish at `now`: the current key first, then the
    /// previous keys not yet retired, newest first.
    pub fn jwks(&self, now: u64) -> Jwks {
        let mut keys = vec![self.current.jwk.clone()];
        keys.extend(
            self.previous
                .iter()
                .rev()
                .filter(|p| now < p.retire_at)
                .map(|p| p.jwk.clone()),
        );
        Jwks { keys }
    }
}

/// The JOSE header `issue` writes, in this order.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Issue a token: the claims object (Azure's names, e.g.
/// [`crate::claims::Claims`]) with `iss`, `aud` (who the token is for: a
/// relying party checks it is itself), `iat`, `nbf = iat`,
/// `exp = iat + lifetime_secs` and `jti` added, signed RS256 with the set's
/// current key; header `{"alg":"RS256","typ":"JWT","kid":…}`.
///
/// `rng` blinds the RSA signature. Returns a `Result` (not a bare `String`): claims that are not an object
/// or carry a registered claim, and time overflow, are refused rather than
/// panicking or silently overwritten.
#[allow(clippy::too_many_arguments)]
pub fn issue(
    keys: &KeySet,
    claims: &impl Serialize,
    issuer: &str,
    audience: &str,
    iat: u64,
    lifetime_secs: u64,
    jti: &str,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<String, IssueError> {
    let mut payload = match serde_json::to_value(claims).map_err(IssueError::Claims)? {
        Value::Object(map) => map,
        other => {
            return Err(IssueError::ClaimsNotObject {
                found: json_type(&other),
            })
        }
    };
    if let Some(claim) = REGISTERED_CLAIMS.iter().find(|c| payload.contains_key(**c)) {
        return Err(IssueError::ReservedClaim { claim });
    }
    if lifetime_secs == 0 {
        return Err(IssueError::ZeroLifetime);
    }
    let exp = iat
        .checked_add(lifetime_secs)
        .ok_or(IssueError::TimeOverflow { iat, lifetime_secs })?;
    payload.insert("iss".to_owned(), Value::from(issuer));
    payload.insert("aud".to_owned(), Value::from(audience));
    payload.insert("iat".to_owned(), Value::from(iat));
    payload.insert("nbf".to_owned(), Value::from(iat));
    payload.insert("exp".to_owned(), Value::from(exp));
    payload.insert("jti".to_owned(), Value::from(jti));

    let key = keys.current();
    let header = Header {
        alg: ALG,
        typ: "JWT",
        kid: key.kid(),
    };
    let header = serde_json::to_vec(&header).map_err(IssueError::Claims)?;
    let payload = serde_json::to_vec(&payload).map_err(IssueError::Claims)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(token.as_bytes(), rng)?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// Verify a token: size (≤ [`MAX_TOKEN_LEN`]), three unpadded base64url
/// parts, header `alg` RS256 (nothing else), no `crit`, `typ` JWT if
/// present, `kid` in `jwks`, the signature, then — only once the signature
/// holds — the payload: a JSON object with `iss == issuer`, `aud` naming
/// `audience` (a string, or an array holding it), `exp` (required)
/// and `nbf`/`iat` (optional) integers, `now < exp + leeway` and
/// `nbf <= now + leeway`. Returns the payload.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    issuer: &str,
    audience: &str,
    now: u64,
    leeway_secs: u64,
) -> Result<Value, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge {
            what: "token",
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Parts {
            parts: token.splitn(4, '.').count(),
        });
    };
    let header = decode_part(header_b64, "header")?;
    let payload = decode_part(payload_b64, "payload")?;
    let signature = decode_part(signature_b64, "signature")?;

    let header = json_object(&header, "header")?;
    let alg = header_str(&header, "alg")?.ok_or(TokenError::Header {
        param: "alg",
        reason: "missing".to_owned(),
    })?;
    if alg != ALG {
        return Err(TokenError::Algorithm {
            alg: alg.to_owned(),
        });
    }
    if header.contains_key("crit") {
        return Err(TokenError::Header {
            param: "crit",
            reason: "no extensions are understood (RFC 7515 §4.1.11)".to_owned(),
        });
    }
    if let Some(typ) = header_str(&header, "typ")? {
        if !typ.eq_ignore_ascii_case("JWT") {
            return Err(TokenError::Header {
                param: "typ",
                reason: format!("`{typ}`, not JWT"),
            });
        }
    }
    let kid = header_str(&header, "kid")?.ok_or(TokenError::Header {
        param: "kid",
        reason: "missing".to_owned(),
    })?;
    let jwk = jwks.find(kid).ok_or_else(|| TokenError::UnknownKid {
        kid: kid.to_owned(),
    })?;
    let public = jwk.rsa_public_key().map_err(|reason| TokenError::Key {
        kid: kid.to_owned(),
        reason,
    })?;

    // The signing input is the first two parts as sent, with their dot.
    let signing_input = token
        .get(
            ..header_b64
                .len()
                .saturating_add(1)
                .saturating_add(payload_b64.len()),
        )
        .unwrap_or_default();
    let digest = Sha256::digest(signing_input.as_bytes());
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .map_err(|_| TokenError::Signature {
            kid: kid.to_owned(),
        })?;

    let claims = json_object(&payload, "payload")?;
    match claims.get("iss") {
        None => return Err(TokenError::MissingClaim { claim: "iss" }),
        Some(Value::String(iss)) if iss == issuer => {}
        Some(Value::String(iss)) => {
            return Err(TokenError::Issuer {
                expected: issuer.to_owned(),
                found: iss.clone(),
            })
        }
        Some(other) => {
            return Err(TokenError::InvalidClaim {
                claim: "iss",
                reason: format!("a JSON {}, not a string", json_type(other)),
            })
        }
    }
    match claims.get("aud") {
        None => return Err(TokenError::MissingClaim { claim: "aud" }),
        Some(Value::String(a)) if a == audience => {}
        Some(Value::Array(a)) if a.iter().any(|x| x.as_str() == Some(audience)) => {}
        Some(other) => {
            return Err(TokenError::InvalidClaim {
                claim: "aud",
                reason: format!("{other} does not name {audience:?}"),
            })
        }
    }
    let exp = time_claim(&claims, "exp")?.ok_or(TokenError::MissingClaim { claim: "exp" })?;
    let nbf = time_claim(&claims, "nbf")?;
    time_claim(&claims, "iat")?;
    if now >= exp.saturating_add(leeway_secs) {
        return Err(TokenError::Expired {
            exp,
            now,
            leeway_secs,
        });
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(leeway_secs) < nbf {
            return Err(TokenError::NotYetValid {
                nbf,
                now,
                leeway_secs,
            });
        }
    }
    Ok(Value::Object(claims))
}

fn decode_part(part: &str, name: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|err| TokenError::Base64 {
            part: name,
            reason: err.to_string(),
        })
}

fn json_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, TokenError> {
    // serde_json bounds nesting at 128 levels; the size is bounded above.
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(TokenError::Json {
            part,
            reason: format!("a JSON {}", json_type(&other)),
        }),
        Err(err) => Err(TokenError::Json {
            part,
            reason: err.to_string(),
        }),
    }
}

fn header_str<'a>(
    header: &'a Map<String, Value>,
    param: &'static str,
) -> Result<Option<&'a str>, TokenError> {
    match header.get(param) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(TokenError::Header {
            param,
            reason: format!("a JSON {}, not a string", json_type(other)),
        }),
    }
}

fn time_claim(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TokenError::InvalidClaim {
                claim,
                reason: format!("{v} is not a non-negative integer NumericDate"),
            }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rsa_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
