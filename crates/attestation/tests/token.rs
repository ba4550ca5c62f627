//! Attestation tokens: issue → verify, key rotation, the refusals (expiry,
//! issuer, tampering, `alg: none`, the HS256/RSA-key confusion, unknown
//! kid, garbage), the JWKS, and a differential check of the signature with
//! `openssl dgst`.

use std::process::Command;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand_core::OsRng;
use rsa::pkcs8::DecodePublicKey;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use trustlaunch_attestation::claims::Claims;
use trustlaunch_attestation::token::{
    issue, verify, IssueError, Jwks, KeySet, SigningKey, TokenError, DEFAULT_LIFETIME_SECS,
    MAX_TOKEN_LEN,
};

const ISSUER: &str = "https://attest.trustlaunch.example";
const AUDIENCE: &str = "relying-party.example";
const T0: u64 = 1_760_000_000;

/// Two RSA-2048 keys, generated once (key generation is the slow part).
fn keys() -> &'static (SigningKey, SigningKey) {
    static KEYS: OnceLock<(SigningKey, SigningKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            SigningKey::generate(&mut OsRng).unwrap(),
            SigningKey::generate(&mut OsRng).unwrap(),
        )
    })
}

fn claims() -> Claims {
    Claims {
        secureboot: true,
        attestation_type: "azurevm",
        attested_pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7],
        db_validated: true,
        os_type: "Linux",
        vm_id: "vm-0042".to_owned(),
        nonce: "00ff".to_owned(),
        ..Claims::default()
    }
}

fn set() -> KeySet {
    KeySet::new(keys().0.clone())
}

fn token() -> String {
    issue(
        &set(),
        &claims(),
        ISSUER,
        AUDIENCE,
        T0,
        DEFAULT_LIFETIME_SECS,
        "jti-1",
        &mut OsRng,
    )
    .unwrap()
}

fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    assert_eq!(v.len(), 3, "{token}");
    (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
}

fn decode_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header and payload, signed RS256 with the rsa crate
/// directly (`issue` only writes well-formed headers and payloads).
fn sign_raw(key_pem: &str, header: &Value, payload: &Value) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem).unwrap();
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let sig = key
        .sign(
            rsa::Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input.as_bytes()),
        )
        .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn good_payload() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "iat": T0, "nbf": T0, "exp": T0 + 3600, "jti": "x"})
}

#[test]
fn round_trip_with_azure_claim_names() {
    let set = set();
    let token = issue(
        &set,
        &claims(),
        ISSUER,
        AUDIENCE,
        T0,
        DEFAULT_LIFETIME_SECS,
        "jti-1",
        &mut OsRng,
    )
    .unwrap();
    let (h, p, _) = parts(&token);

    let header = decode_json(&h);
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": keys().0.kid()})
    );
    // The header is written in the documented order.
    assert_eq!(
        String::from_utf8(URL_SAFE_NO_PAD.decode(&h).unwrap()).unwrap(),
        format!(
            r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#,
            keys().0.kid()
        )
    );
    assert_eq!(
        decode_json(&p),
        verify(&token, &set.jwks(T0), ISSUER, AUDIENCE, T0, 0).unwrap()
    );

    let v = verify(&token, &set.jwks(T0), ISSUER, AUDIENCE, T0 + 60, 0).unwrap();
    assert_eq!(v["x-ms-attestation-type"], "azurevm");
    assert_eq!(v["secureboot"], true);
    assert_eq!(v["x-ms-azurevm-dbvalidated"], true);
    assert_eq!(v["x-ms-azurevm-dbxvalidated"], false);
    assert_eq!(
        v["x-ms-azurevm-attested-pcrs"],
        json!([0, 1, 2, 3, 4, 5, 6, 7])
    );
    assert_eq!(v["x-ms-azurevm-ostype"], "Linux");
    assert_eq!(v["x-ms-azurevm-vmid"], "vm-0042");
    assert_eq!(v["x-ms-azurevm-nonce"], "00ff");
    assert_eq!(v["iss"], ISSUER);
    assert_eq!(v["iat"], T0);
    assert_eq!(v["nbf"], T0);
    assert_eq!(v["exp"], T0 + 8 * 3600);
    assert_eq!(v["jti"], "jti-1");
    assert!(
        v.get("attestation_type").is_none(),
        "Rust field names leaked: {v}"
    );
}

#[test]
fn issue_refusals() {
    let set = set();
    assert!(matches!(
        issue(
            &set,
            &json!({"exp": 1}),
            ISSUER,
            AUDIENCE,
            T0,
            60,
            "j",
            &mut OsRng
        ),
        Err(IssueError::ReservedClaim { claim: "exp" })
    ));
    assert!(matches!(
        issue(
            &set,
            &json!([1, 2]),
            ISSUER,
            AUDIENCE,
            T0,
            60,
            "j",
            &mut OsRng
        ),
        Err(IssueError::ClaimsNotObject { found: "array" })
    ));
    assert!(matches!(
        issue(
            &set,
            &claims(),
            ISSUER,
            AUDIENCE,
            u64::MAX - 10,
            60,
            "j",
            &mut OsRng
        ),
        Err(IssueError::TimeOverflow { .. })
    ));
    assert!(matches!(
        issue(&set, &claims(), ISSUER, AUDIENCE, T0, 0, "j", &mut OsRng),
        Err(IssueError::ZeroLifetime)
    ));
}

#[test]
fn rotation() {
    let (old, new) = keys();
    let mut set = KeySet::new(old.clone());
    let old_token = issue(
        &set,
        &claims(),
        ISSUER,
        AUDIENCE,
        T0,
        3600,
        "old",
        &mut OsRng,
    )
    .unwrap();

    let retire = T0 + 3600 + 300;
    set.rotate(new.clone(), retire);
    assert_eq!(set.current().kid(), new.kid());
    let new_token = issue(
        &set,
        &claims(),
        ISSUER,
        AUDIENCE,
        T0 + 10,
        3600,
        "new",
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(decode_json(&parts(&new_token).0)["kid"], new.kid());
    assert_eq!(decode_json(&parts(&old_token).0)["kid"], old.kid());

    // While published, both verify.
    let published = set.jwks(T0 + 20);
    let kids: Vec<_> = published
        .keys
        .iter()
        .map(|k| k.kid.clone().unwrap())
        .collect();
    assert_eq!(kids, [new.kid(), old.kid()]);
    verify(&old_token, &published, ISSUER, AUDIENCE, T0 + 20, 0).unwrap();
    verify(&new_token, &published, ISSUER, AUDIENCE, T0 + 20, 0).unwrap();

    // Once retired the old key is gone from the JWKS and its tokens fail by kid.
    let after = set.jwks(retire);
    assert_eq!(after.keys.len(), 1);
    assert_eq!(
        verify(&old_token, &after, ISSUER, AUDIENCE, T0 + 20, 0),
        Err(TokenError::UnknownKid {
            kid: old.kid().to_owned()
        })
    );
    verify(&new_token, &after, ISSUER, AUDIENCE, T0 + 20, 0).unwrap();
    set.prune(retire);
    assert!(set.previous().is_empty());

    // Rotating back to a held key does not duplicate it.
    let mut set = KeySet::new(old.clone());
    set.rotate(new.clone(), retire);
    set.rotate(old.clone(), retire);
    assert_eq!(set.current().kid(), old.kid());
    assert_eq!(set.jwks(T0).keys.len(), 2);
}

#[test]
fn time_window() {
    let token = token();
    let jwks = set().jwks(T0);
    let exp = T0 + DEFAULT_LIFETIME_SECS;
    verify(&token, &jwks, ISSUER, AUDIENCE, exp - 1, 0).unwrap();
    assert_eq!(
        verify(&token, &jwks, ISSUER, AUDIENCE, exp, 0),
        Err(TokenError::Expired {
            exp,
            now: exp,
            leeway_secs: 0
        })
    );
    verify(&token, &jwks, ISSUER, AUDIENCE, exp + 59, 60).unwrap();
    assert!(matches!(
        verify(&token, &jwks, ISSUER, AUDIENCE, exp + 60, 60),
        Err(TokenError::Expired { .. })
    ));

    assert_eq!(
        verify(&token, &jwks, ISSUER, AUDIENCE, T0 - 1, 0),
        Err(TokenError::NotYetValid {
            nbf: T0,
            now: T0 - 1,
            leeway_secs: 0
        })
    );
    verify(&token, &jwks, ISSUER, AUDIENCE, T0 - 30, 30).unwrap();
    assert!(matches!(
        verify(&token, &jwks, ISSUER, AUDIENCE, T0 - 31, 30),
        Err(TokenError::NotYetValid { .. })
    ));
    // Huge leeway saturates instead of overflowing.
    verify(&token, &jwks, ISSUER, AUDIENCE, T0, u64::MAX).unwrap();
}

#[test]
fn wrong_issuer() {
    assert_eq!(
        verify(
            &token(),
            &set().jwks(T0),
            "https://evil.example",
            AUDIENCE,
            T0,
            0
        ),
        Err(TokenError::Issuer {
            expected: "https://evil.example".to_owned(),
            found: ISSUER.to_owned()
        })
    );
}

#[test]
fn tampering() {
    let token = token();
    let jwks = set().jwks(T0);
    let kid = keys().0.kid().to_owned();
    let (h, p, s) = parts(&token);

    // Payload: claim a different VM.
    let mut claims = decode_json(&p);
    claims["x-ms-azurevm-vmid"] = json!("vm-other");
    let forged = format!("{h}.{}.{s}", b64(claims.to_string().as_bytes()));
    assert_eq!(
        verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Signature { kid: kid.clone() })
    );

    // Signature: one bit flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(&s).unwrap();
    sig[100] ^= 0x01;
    let forged = format!("{h}.{p}.{}", b64(&sig));
    assert_eq!(
        verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Signature { kid: kid.clone() })
    );
    // Signature truncated.
    let forged = format!("{h}.{p}.{}", b64(&sig[..255]));
    assert_eq!(
        verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Signature { kid: kid.clone() })
    );

    // Header: a different (equivalent) header breaks the signature too.
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let forged = format!("{}.{p}.{s}", b64(header.to_string().as_bytes()));
    assert_eq!(
        verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Signature { kid })
    );
}

#[test]
fn alg_none_is_refused() {
    let jwks = set().jwks(T0);
    let payload = b64(good_payload().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": keys().0.kid()});
        let forged = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        assert_eq!(
            verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
            Err(TokenError::Algorithm {
                alg: alg.to_owned()
            })
        );
    }
    // Without a kid either.
    let forged = format!("{}.{payload}.", b64(br#"{"alg":"none"}"#));
    assert!(matches!(
        verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Algorithm { .. })
    ));
}

#[test]
fn hs256_with_the_rsa_public_key_as_secret_is_refused() {
    let key = &keys().0;
    let jwks = set().jwks(T0);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(good_payload().to_string().as_bytes())
    );
    // Every form of the public key a confused verifier might use as the secret.
    let pem = key.public_key_pem().unwrap();
    let jwk = serde_json::to_vec(key.jwk()).unwrap();
    for secret in [pem.as_bytes(), pem.trim_end().as_bytes(), jwk.as_slice()] {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        let forged = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(
            verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
            Err(TokenError::Algorithm {
                alg: "HS256".to_owned()
            })
        );
    }
    // Other algorithms too.
    for alg in ["HS384", "HS512", "RS384", "PS256", "ES256", "rs256", ""] {
        let header = json!({"alg": alg, "kid": key.kid()});
        let forged = format!(
            "{}.{}.AAAA",
            b64(header.to_string().as_bytes()),
            b64(good_payload().to_string().as_bytes())
        );
        assert_eq!(
            verify(&forged, &jwks, ISSUER, AUDIENCE, T0, 0),
            Err(TokenError::Algorithm {
                alg: alg.to_owned()
            })
        );
    }
}

#[test]
fn header_refusals() {
    let key = &keys().0;
    let pem = key.to_pkcs8_pem().unwrap();
    let jwks = set().jwks(T0);
    // Correctly signed by the published key, but with an unknown kid, no
    // kid, a crit extension or a foreign typ.
    let cases = [
        (
            json!({"alg": "RS256", "kid": "no-such-key"}),
            TokenError::UnknownKid {
                kid: "no-such-key".to_owned(),
            },
        ),
        (
            json!({"alg": "RS256"}),
            TokenError::Header {
                param: "kid",
                reason: "missing".to_owned(),
            },
        ),
        (
            json!({"alg": "RS256", "kid": key.kid(), "crit": ["exp"]}),
            TokenError::Header {
                param: "crit",
                reason: "no extensions are understood (RFC 7515 §4.1.11)".to_owned(),
            },
        ),
        (
            json!({"alg": "RS256", "kid": key.kid(), "typ": "at+jwt"}),
            TokenError::Header {
                param: "typ",
                reason: "`at+jwt`, not JWT".to_owned(),
            },
        ),
    ];
    for (header, want) in cases {
        let t = sign_raw(&pem, &header, &good_payload());
        assert_eq!(
            verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
            Err(want),
            "{header}"
        );
    }
    // The same construction with a proper header verifies: the refusals
    // above are the header's doing.
    let t = sign_raw(
        &pem,
        &json!({"alg": "RS256", "kid": key.kid()}),
        &good_payload(),
    );
    verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0).unwrap();

    // Missing exp, non-integer times.
    let header = json!({"alg": "RS256", "kid": key.kid()});
    let t = sign_raw(&pem, &header, &json!({"iss": ISSUER, "aud": AUDIENCE}));
    assert_eq!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::MissingClaim { claim: "exp" })
    );
    let t = sign_raw(
        &pem,
        &header,
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": "tomorrow"}),
    );
    assert!(matches!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::InvalidClaim { claim: "exp", .. })
    ));
    let t = sign_raw(
        &pem,
        &header,
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": T0 + 10, "nbf": -1}),
    );
    assert!(matches!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::InvalidClaim { claim: "nbf", .. })
    ));
    let t = sign_raw(&pem, &header, &json!({"exp": T0 + 10}));
    assert_eq!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::MissingClaim { claim: "iss" })
    );
    let t = sign_raw(&pem, &header, &json!(["not", "an", "object"]));
    assert!(matches!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Json {
            part: "payload",
            ..
        })
    ));
}

#[test]
fn garbage_and_oversized_input() {
    let jwks = set().jwks(T0);
    let good = token();
    let (h, p, s) = parts(&good);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "parts"),
        ("abc".to_owned(), "parts"),
        ("a.b".to_owned(), "parts"),
        (format!("{good}.x"), "parts"),
        ("...".to_owned(), "parts"),
        ("..".to_owned(), "json"),
        (format!("{h}=.{p}.{s}"), "base64"),
        (format!("{h}.{p}.{s}=="), "base64"),
        (format!("{h}.{p}+.{s}"), "base64"),
        (format!("{h}.{p}.{}", s.replace(['-', '_'], "/")), "base64"),
        ("!!!!.e30.AA".to_owned(), "base64"),
        (format!("{}.{p}.{s}", b64(b"not json")), "json"),
        (format!("{}.{p}.{s}", b64(b"[1]")), "json"),
        (format!("{}.{p}.{s}", b64(br#"{"alg":1}"#)), "header"),
        (format!("{}.{p}.{s}", b64(&[b'['; 10_000])), "json"),
        (format!("{h} .{p}.{s}"), "base64"),
    ];
    for (input, kind) in cases {
        let err = verify(&input, &jwks, ISSUER, AUDIENCE, T0, 0).unwrap_err();
        let got = match err {
            TokenError::Parts { .. } => "parts",
            TokenError::Base64 { .. } => "base64",
            TokenError::Json { .. } => "json",
            TokenError::Header { .. } => "header",
            ref other => panic!("{input:.80}: unexpected {other}"),
        };
        assert_eq!(got, kind, "{input:.80}: {err}");
    }

    let big = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        verify(&big, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::TooLarge {
            what: "token",
            len: MAX_TOKEN_LEN + 1,
            max: MAX_TOKEN_LEN
        })
    );
    // A well-formed but oversized token (big payload) is refused by size
    // before anything else.
    let padded = format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_LEN));
    assert!(matches!(
        verify(&padded, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::TooLarge { .. })
    ));
}

/// Deterministic mutations of a valid token (byte substitutions,
/// truncations, duplications): verification never panics and never
/// accepts anything but the original.
#[test]
fn mutations_never_verify() {
    let jwks = set().jwks(T0);
    let good = token();
    let bytes = good.as_bytes();
    let alphabet = b"AZaz09-_.=+/ \x00";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut tried = 0;
    for _ in 0..3000 {
        let mut m = bytes.to_vec();
        match next() % 3 {
            0 => {
                let i = (next() as usize) % m.len();
                m[i] = alphabet[(next() as usize) % alphabet.len()];
            }
            1 => m.truncate((next() as usize) % m.len()),
            _ => {
                let i = (next() as usize) % m.len();
                let j = (i + 1 + (next() as usize) % 40).min(m.len());
                let chunk = m[i..j].to_vec();
                m.splice(i..i, chunk);
            }
        }
        let Ok(s) = String::from_utf8(m) else {
            continue;
        };
        if s == good {
            continue;
        }
        tried += 1;
        assert!(
            verify(&s, &jwks, ISSUER, AUDIENCE, T0, 0).is_err(),
            "accepted: {s}"
        );
    }
    assert!(tried > 2500);
}

#[test]
fn jwks_shape_and_key_reconstruction() {
    let (a, b) = keys();
    let mut set = KeySet::new(a.clone());
    set.rotate(b.clone(), T0 + 100);
    let jwks = set.jwks(T0);
    let doc = serde_json::to_value(&jwks).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (entry, key) in keys.iter().zip([b, a]) {
        let obj = entry.as_object().unwrap();
        let mut names: Vec<_> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(entry["kty"], "RSA");
        assert_eq!(entry["use"], "sig");
        assert_eq!(entry["alg"], "RS256");
        assert_eq!(entry["kid"], key.kid());
        assert_eq!(entry["e"], "AQAB");

        // n and e rebuild the key the public PEM holds.
        let n = URL_SAFE_NO_PAD
            .decode(entry["n"].as_str().unwrap())
            .unwrap();
        let e = URL_SAFE_NO_PAD
            .decode(entry["e"].as_str().unwrap())
            .unwrap();
        assert_eq!(n.len(), 256);
        assert_ne!(n[0], 0, "n has no leading zero octets");
        let rebuilt =
            RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap();
        let from_pem = RsaPublicKey::from_public_key_pem(&key.public_key_pem().unwrap()).unwrap();
        assert_eq!(rebuilt, from_pem);

        // kid is the RFC 7638 thumbprint, recomputed here by hand.
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            entry["e"].as_str().unwrap(),
            entry["n"].as_str().unwrap()
        );
        assert_eq!(
            entry["kid"].as_str().unwrap(),
            b64(&Sha256::digest(canonical.as_bytes()))
        );
    }
    assert_ne!(a.kid(), b.kid());

    // The served document parses back and verifies tokens.
    let text = serde_json::to_vec(&jwks).unwrap();
    let parsed = Jwks::from_json(&text).unwrap();
    assert_eq!(parsed, jwks);
    let t = issue(&set, &claims(), ISSUER, AUDIENCE, T0, 60, "j", &mut OsRng).unwrap();
    verify(&t, &parsed, ISSUER, AUDIENCE, T0, 0).unwrap();
}

#[test]
fn foreign_jwks_keys_are_checked() {
    let key = &keys().0;
    let t = token();
    let mut jwk = key.jwk().clone();
    jwk.key_use = Some("enc".to_owned());
    let jwks = Jwks { keys: vec![jwk] };
    assert!(matches!(
        verify(&t, &jwks, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Key { .. })
    ));
    // Without the optional members the key still verifies.
    let mut jwk = key.jwk().clone();
    jwk.key_use = None;
    jwk.alg = None;
    verify(&t, &Jwks { keys: vec![jwk] }, ISSUER, AUDIENCE, T0, 0).unwrap();
    // A short modulus is refused.
    let mut jwk = key.jwk().clone();
    jwk.n = Some(b64(&[0xC5; 128]));
    assert!(matches!(
        verify(&t, &Jwks { keys: vec![jwk] }, ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::Key { .. })
    ));
    assert!(matches!(
        Jwks::from_json(&vec![b' '; Jwks::MAX_LEN + 1]),
        Err(TokenError::TooLarge { .. })
    ));
    assert!(matches!(
        Jwks::from_json(b"{\"keys\":3}"),
        Err(TokenError::Json { .. })
    ));
}

#[test]
fn pem_round_trip() {
    let key = &keys().0;
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(back.kid(), key.kid());
    assert_eq!(back.bits(), 2048);
    // Tokens signed by the reloaded key verify under the original's JWKS.
    let t = issue(
        &KeySet::new(back),
        &claims(),
        ISSUER,
        AUDIENCE,
        T0,
        60,
        "j",
        &mut OsRng,
    )
    .unwrap();
    verify(&t, &set().jwks(T0), ISSUER, AUDIENCE, T0, 0).unwrap();
    assert!(SigningKey::from_pkcs8_pem(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    .is_err());
    assert!(SigningKey::generate_bits(1024, &mut OsRng).is_err());
}

/// PKCS#8 PEM from `openssl genpkey` loads, and its kid is the thumbprint
/// of the modulus openssl prints.
#[test]
fn openssl_generated_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
        ])
        .arg(&path)
        .output()
        .expect("openssl is installed by ./scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&path).unwrap();
    let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(key.bits(), 3072);
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let modulus: String = text
        .split("modulus:")
        .nth(1)
        .unwrap()
        .split("publicExponent")
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let mut n: Vec<u8> = (0..modulus.len() / 2)
        .map(|i| u8::from_str_radix(&modulus[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    while n.first() == Some(&0) {
        n.remove(0);
    }
    let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{}"}}"#, b64(&n));
    assert_eq!(key.kid(), b64(&Sha256::digest(canonical.as_bytes())));
}

/// The signature verifies with `openssl dgst -sha256 -verify`, and a
/// changed signing input does not.
#[test]
fn openssl_verifies_the_signature() {
    let key = &keys().0;
    let token = token();
    let (h, p, s) = parts(&token);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let sig = dir.path().join("sig.bin");
    let public = dir.path().join("pub.pem");
    std::fs::write(&input, format!("{h}.{p}")).unwrap();
    std::fs::write(&sig, URL_SAFE_NO_PAD.decode(&s).unwrap()).unwrap();
    std::fs::write(&public, key.public_key_pem().unwrap()).unwrap();

    let run = || {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig)
            .arg(&input)
            .output()
            .expect("openssl is installed by ./scripts/test.sh")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Verified OK"),
        "openssl: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Negative control: the same command refuses a tampered input.
    std::fs::write(&input, format!("{h}.{p}x")).unwrap();
    let out = run();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
}

/// A token is for one audience: a relying party that is not it refuses
/// the token, as it refuses one without an audience.
#[test]
fn the_audience_is_checked() {
    let set = set();
    let t = issue(&set, &claims(), ISSUER, AUDIENCE, T0, 60, "j", &mut OsRng).unwrap();
    let v = verify(&t, &set.jwks(T0), ISSUER, AUDIENCE, T0, 0).unwrap();
    assert_eq!(v["aud"], AUDIENCE);
    assert!(matches!(
        verify(&t, &set.jwks(T0), ISSUER, "another-party", T0, 0),
        Err(TokenError::InvalidClaim { claim: "aud", .. })
    ));
    let key = &keys().0;
    let pem = key.to_pkcs8_pem().unwrap();
    let header = json!({"alg": "RS256", "kid": key.kid()});
    let no_aud = sign_raw(
        &pem,
        &header,
        &json!({"iss": ISSUER, "iat": T0, "exp": T0 + 60}),
    );
    assert_eq!(
        verify(&no_aud, &set.jwks(T0), ISSUER, AUDIENCE, T0, 0),
        Err(TokenError::MissingClaim { claim: "aud" })
    );
    let many = sign_raw(
        &pem,
        &header,
        &json!({"iss": ISSUER, "aud": ["x", AUDIENCE], "iat": T0, "exp": T0 + 60}),
    );
    verify(&many, &set.jwks(T0), ISSUER, AUDIENCE, T0, 0).unwrap();
    // Claims cannot smuggle their own audience.
    assert!(issue(
        &set,
        &json!({"aud": "x"}),
        ISSUER,
        AUDIENCE,
        T0,
        60,
        "j",
        &mut OsRng
    )
    .is_err());
}
