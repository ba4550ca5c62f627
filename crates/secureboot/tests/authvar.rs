//! Authenticated variable payloads against efitools' `sign-efi-sig-list`
//! and `openssl cms`.
//!
//! Needs the Debian packages `efitools openssl`; a missing tool fails the
//! test with a message naming the package (never a skip).

mod common;

use common::{openssl_req, run_in, TempDir};

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::{Any, Decode, Encode};
use trustlaunch_secureboot::authvar::{
    build_payload, parse_payload, serialize, trusted_certs, verify_payload, AuthVarFailure,
    VariableUpdate,
};
use trustlaunch_secureboot::keys::{CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_secureboot::siglist::SignatureDb;
use trustlaunch_secureboot::varstore::{EfiTime, SecureBootVar};

/// Runs `tool args` in `dir`; returns (success, stdout + stderr).
fn run(dir: &TempDir, tool: &str, package: &str, args: &[&str]) -> (bool, String) {
    run_in(Some(dir.dir()), tool, package, args)
}

fn must(dir: &TempDir, tool: &str, package: &str, args: &[&str]) {
    let (ok, text) = run(dir, tool, package, args);
    assert!(ok, "{tool} {args:?} failed:\n{text}");
}

/// `openssl req -x509 -newkey rsa:2048` key and certificate NAME.key/NAME.crt.
fn openssl_pair(dir: &TempDir, name: &str) -> KeyPair {
    openssl_req(dir, name, &format!("test {name}"));
    KeyPair::from_pem(
        &String::from_utf8(dir.read(&format!("{name}.key"))).unwrap(),
        &dir.read(&format!("{name}.crt")),
    )
    .unwrap()
}

const TS: &str = "2026-01-01 00:00:00";
const T2026: EfiTime = EfiTime::utc(2026, 1, 1, 0, 0, 0);

/// sign-efi-sig-list's db update signed by KEK: (payload, ESL, KEK, db pair).
fn efitools_db_update(dir: &TempDir, append: bool) -> (Vec<u8>, Vec<u8>, KeyPair, KeyPair) {
    let kek = openssl_pair(dir, "KEK");
    let db = openssl_pair(dir, "db");
    must(
        dir,
        "cert-to-efi-sig-list",
        "efitools",
        &["db.crt", "db.esl"],
    );
    let mut args = vec!["-t", TS, "-k", "KEK.key", "-c", "KEK.crt"];
    if append {
        args.push("-a");
    }
    args.extend(["db", "db.esl", "db.auth"]);
    must(dir, "sign-efi-sig-list", "efitools", &args);
    (dir.read("db.auth"), dir.read("db.esl"), kek, db)
}

/// (e) efitools' payload parses and verifies with ours, against the KEK
/// among the trusted certificates; the bytes it signs are ours.
#[test]
fn sign_efi_sig_list_payload_verifies_with_ours() {
    let dir = TempDir::new("efitools");
    let (auth, esl, kek, db) = efitools_db_update(&dir, false);
    let p = parse_payload(&auth).unwrap();
    assert_eq!(p.timestamp, T2026);
    assert_eq!(p.revision, 0x0200);
    assert!(!p.wrapped, "sign-efi-sig-list writes a bare SignedData");
    assert_eq!(p.data, &esl[..]);
    assert!(p.signer.signed_attrs_der.is_none(), "PKCS7_NOATTR");
    assert_eq!(p.certificates.len(), 1);
    assert_eq!(p.certificates[0].der, kek.cert_der);
    let parsed = SignatureDb::parse(p.data).unwrap();
    assert_eq!(parsed.entries().next().unwrap().1.data, db.cert_der);

    let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
    must(
        &dir,
        "sign-efi-sig-list",
        "efitools",
        &["-o", "-t", TS, "db", "db.esl", "db.bundle"],
    );
    assert_eq!(serialize(&up, &T2026, &esl).unwrap(), dir.read("db.bundle"));

    // Trusted: the certificates of a db list (a decoy) and of efitools' KEK list.
    must(
        &dir,
        "cert-to-efi-sig-list",
        "efitools",
        &["KEK.crt", "KEK.esl"],
    );
    let kek_list = SignatureDb::parse(&dir.read("KEK.esl")).unwrap();
    let trusted = trusted_certs(&[&parsed, &kek_list]);
    assert_eq!(trusted, vec![db.cert_der.clone(), kek.cert_der.clone()]);
    let v = verify_payload(&up, &auth, &trusted, Some(&EfiTime::INITIAL)).unwrap();
    assert_eq!((v.trusted_index, v.chain_position), (1, 0));
    assert_eq!(v.timestamp, T2026);
    assert_eq!(v.data, &esl[..]);
    let v = verify_payload(&up, &auth, &trusted, None).unwrap();
    assert_eq!(v.trusted_index, 1);
}

/// (e) Ours from the same key, certificate, ESL and timestamp is
/// byte-identical to sign-efi-sig-list's (RSA PKCS#1 v1.5 is deterministic,
/// the SignedData has no signed attributes), and `openssl cms -verify`
/// accepts our SignedData over the serialized update, and rejects it over
/// altered content.
#[test]
fn ours_matches_sign_efi_sig_list_and_openssl_verifies_it() {
    let dir = TempDir::new("ours");
    let (auth, esl, kek, _) = efitools_db_update(&dir, false);
    let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
    let ours = build_payload(&up, &T2026, &esl, &kek.key, &kek.cert_der, &[]).unwrap();
    let theirs_p = parse_payload(&auth).unwrap();
    let ours_p = parse_payload(&ours).unwrap();
    assert_eq!(
        ours_p.signer, theirs_p.signer,
        "same signer info and signature"
    );
    assert_eq!(ours_p.certificates, theirs_p.certificates);
    assert_eq!(ours, auth, "byte-identical to sign-efi-sig-list");

    // openssl cms wants a ContentInfo: wrap our bare SignedData.
    let sd = SignedData::from_der(ours_p.cert_data).unwrap();
    let ci = ContentInfo {
        content_type: trustlaunch_secureboot::pkcs7::OID_SIGNED_DATA,
        content: Any::encode_from(&sd).unwrap(),
    };
    dir.write("ours.p7", ci.to_der().unwrap());
    let serialized = serialize(&up, &T2026, &esl).unwrap();
    dir.write("serialized.bin", &serialized);
    let verify = |content: &str| {
        run(
            &dir,
            "openssl",
            "openssl",
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                "ours.p7",
                "-content",
                content,
                "-noverify",
                "-out",
                "/dev/null",
            ],
        )
    };
    let (ok, text) = verify("serialized.bin");
    assert!(ok && text.contains("Verification successful"), "{text}");
    let mut altered = serialized.clone();
    *altered.last_mut().unwrap() ^= 1;
    dir.write("altered.bin", &altered);
    let (ok, text) = verify("altered.bin");
    assert!(!ok, "openssl accepted altered content:\n{text}");
}

/// (e) Each way an update can be wrong gives its own failure.
#[test]
fn wrong_key_variable_timestamp_and_data_fail_typed() {
    let dir = TempDir::new("fail");
    let (auth, _, kek, db) = efitools_db_update(&dir, false);
    let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
    let trusted = vec![kek.cert_der.clone()];
    // Wrong key: only db's certificate is trusted.
    assert_eq!(
        verify_payload(&up, &auth, std::slice::from_ref(&db.cert_der), None).unwrap_err(),
        AuthVarFailure::Untrusted { trusted: 1 }
    );
    // Wrong variable: the same payload offered for KEK, or for dbx.
    for var in [SecureBootVar::Kek, SecureBootVar::Dbx] {
        assert_eq!(
            verify_payload(
                &VariableUpdate::secure_boot(var, false),
                &auth,
                &trusted,
                None
            )
            .unwrap_err(),
            AuthVarFailure::BadSignature,
            "{var:?}"
        );
    }
    // Old timestamp: equal to or before the current one.
    for current in [
        T2026,
        EfiTime::utc(2026, 1, 1, 0, 0, 1),
        EfiTime::utc(2030, 1, 1, 0, 0, 0),
    ] {
        assert_eq!(
            verify_payload(&up, &auth, &trusted, Some(&current)).unwrap_err(),
            AuthVarFailure::Stale {
                given: T2026,
                current
            }
        );
    }
    assert!(verify_payload(
        &up,
        &auth,
        &trusted,
        Some(&EfiTime::utc(2025, 12, 31, 23, 59, 59))
    )
    .is_ok());
    // Tampered data, timestamp or signature.
    let mut bad = auth.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        verify_payload(&up, &bad, &trusted, None).unwrap_err(),
        AuthVarFailure::BadSignature
    );
    let mut bad = auth.clone();
    bad[6] = 1; // second
    assert_eq!(
        verify_payload(&up, &bad, &trusted, None).unwrap_err(),
        AuthVarFailure::BadSignature
    );
    let p = parse_payload(&auth).unwrap();
    let sig_at = auth.len() - p.data.len() - 1; // last signature byte
    let mut bad = auth.clone();
    bad[sig_at] ^= 1;
    assert_eq!(
        verify_payload(&up, &bad, &trusted, None).unwrap_err(),
        AuthVarFailure::BadSignature
    );
}

/// An append (`sign-efi-sig-list -a`) verifies under APPEND_WRITE even when
/// the variable's timestamp is later, and not as a replacement.
#[test]
fn append_ignores_timestamp_order() {
    let dir = TempDir::new("append");
    let (auth, _, kek, _) = efitools_db_update(&dir, true);
    let later = EfiTime::utc(2030, 1, 1, 0, 0, 0);
    let append = VariableUpdate::secure_boot(SecureBootVar::Db, true);
    assert!(verify_payload(
        &append,
        &auth,
        std::slice::from_ref(&kek.cert_der),
        Some(&later)
    )
    .is_ok());
    assert_eq!(
        verify_payload(
            &VariableUpdate::secure_boot(SecureBootVar::Db, false),
            &auth,
            &[kek.cert_der],
            None
        )
        .unwrap_err(),
        AuthVarFailure::BadSignature
    );
}

/// A PK signed by itself and a KEK signed by the PK: our keys, our
/// payloads; sign-efi-sig-list's PK update verifies against its own PK.
#[test]
fn pk_and_kek_updates_with_generated_and_openssl_keys() {
    let dir = TempDir::new("pk");
    let mut rng = rand_core::OsRng;
    let req = |cn: &str| CertRequest {
        common_name: cn.into(),
        not_before: 1_700_000_000,
        not_after: 2_000_000_000,
        role: CertRole::Authority,
    };
    let pk = KeyPair::self_signed(
        SigningKey::generate_rsa(&mut rng).unwrap(),
        &req("PK"),
        &mut rng,
    )
    .unwrap();
    let kek = pk
        .issue(
            SigningKey::generate_rsa(&mut rng).unwrap(),
            &req("KEK"),
            &mut rng,
        )
        .unwrap();
    let mut esl = SignatureDb::default();
    esl.add_x509(
        trustlaunch_eventlog::Guid::GLOBAL_VARIABLE,
        kek.cert_der.clone(),
    );
    let esl = esl.encode().unwrap();
    let up = VariableUpdate::secure_boot(SecureBootVar::Kek, false);
    // KEK update signed by the PK: PK trusted.
    let p = build_payload(&up, &T2026, &esl, &pk.key, &pk.cert_der, &[]).unwrap();
    let v = verify_payload(&up, &p, std::slice::from_ref(&pk.cert_der), None).unwrap();
    assert_eq!((v.trusted_index, v.chain_position), (0, 0));
    // A db update signed by the KEK, carrying nothing else, chains to the
    // PK as issuer (chain position 0 issued by the trusted PK).
    let db_up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
    let p = build_payload(&db_up, &T2026, &[], &kek.key, &kek.cert_der, &[]).unwrap();
    let v = verify_payload(&db_up, &p, std::slice::from_ref(&pk.cert_der), None).unwrap();
    assert_eq!((v.trusted_index, v.chain_position), (0, 0));

    // efitools' self-signed PK update.
    let opk = openssl_pair(&dir, "PK");
    must(
        &dir,
        "cert-to-efi-sig-list",
        "efitools",
        &["PK.crt", "PK.esl"],
    );
    must(
        &dir,
        "sign-efi-sig-list",
        "efitools",
        &[
            "-t", TS, "-k", "PK.key", "-c", "PK.crt", "PK", "PK.esl", "PK.auth",
        ],
    );
    let auth = dir.read("PK.auth");
    let pk_up = VariableUpdate::secure_boot(SecureBootVar::Pk, false);
    let v = verify_payload(&pk_up, &auth, std::slice::from_ref(&opk.cert_der), None).unwrap();
    assert_eq!(v.trusted_index, 0);
    assert_eq!(
        build_payload(
            &pk_up,
            &T2026,
            &dir.read("PK.esl"),
            &opk.key,
            &opk.cert_der,
            &[]
        )
        .unwrap(),
        auth
    );
}

/// Every single-bit change of efitools' payload is refused, except in the
/// bytes edk2 (OpenSSL `PKCS7_verify`) does not read or that no signature
/// covers without signed attributes; those are listed here by structure,
/// so any other accepted change fails the test.
#[test]
fn every_bit_flip_is_refused_or_in_an_unread_field() {
    let dir = TempDir::new("flip");
    let (auth, _, kek, _) = efitools_db_update(&dir, false);
    let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
    let trusted = std::slice::from_ref(&kek.cert_der);
    let mut accepted = Vec::new();
    let mut copy = auth.clone();
    for at in 0..auth.len() {
        copy[at] ^= 0x01;
        if verify_payload(&up, &copy, trusted, None).is_ok() {
            accepted.push(at);
        }
        copy[at] ^= 0x01;
    }
    // CertData at 40: SignedData header (4), version (3), digestAlgorithms
    // (17), contentInfo (13), [0] header (4), then the one certificate.
    let p = parse_payload(&auth).unwrap();
    let cd = 40;
    let cert_end = cd + 41 + p.certificates[0].der.len();
    let end = cd + p.cert_data.len(); // RSA-2048: 256-byte signature last
    let mut expected = vec![
        20,             // wRevision (edk2 does not check it)
        21,             //
        cd + 6,         // SignedData version
        cd + 22,        // digestAlgorithms: NULL parameters tag
        cert_end - 263, // certificate's outer signatureAlgorithm NULL tag
        cert_end + 10,  // SignerInfo version
        end - 277,      // SignerInfo digestAlgorithm NULL tag
    ];
    expected.extend(cd + 28..=cd + 36); // eContentType OID (unsigned without attributes)
    expected.extend(end - 271..=end - 262); // digestEncryptionAlgorithm OID and NULL tag
    expected.sort_unstable();
    assert_eq!(accepted, expected);
}
