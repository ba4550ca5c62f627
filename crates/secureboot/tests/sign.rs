//! Authenticode signing and key generation against the real tools:
//! sbsign/sbverify (sbsigntool), osslsigncode and openssl, on Debian's
//! binaries read at run time.
//!
//! Needs the Debian packages `sbsigntool osslsigncode openssl shim-signed
//! systemd-boot-efi linux-image-amd64`; a missing tool or file fails the
//! test with a message naming the package (never a skip).

mod common;

use common::{kernel_path, openssl_req, read, run, TempDir};

use trustlaunch_secureboot::authenticode::{image_hash, ImageDigest, ImageHashAlg};
use trustlaunch_secureboot::keys::{cert_to_pem, CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::pkcs7::signatures;
use trustlaunch_secureboot::sign::{
    pe_checksum, remove_all_signatures, remove_signature, sign_image, spc_indirect_data,
};
use trustlaunch_secureboot::verify::{verify_image, Database, Denial, Verdict};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";

/// `sbsign --key KEY --cert CRT` of `image`, written and read back in `dir`.
fn sbsign(dir: &TempDir, key: &str, crt: &str, image: &[u8]) -> Vec<u8> {
    let input = dir.write("sbsign.in", image);
    let out = dir.path("sbsign.out");
    let (ok, text) = run(
        "sbsign",
        "sbsigntool",
        &["--key", key, "--cert", crt, "--output", &out, &input],
    );
    assert!(ok, "sbsign failed:\n{text}");
    std::fs::read(&out).unwrap()
}

fn sbverify(cert: &str, image: &str) -> (bool, String) {
    run("sbverify", "sbsigntool", &["--cert", cert, image])
}

fn sha256(data: &[u8]) -> [u8; 32] {
    match image_hash(data, ImageHashAlg::Sha256).unwrap() {
        ImageDigest::Sha256(d) => d,
        d => panic!("{d:?}"),
    }
}

fn request(cn: &str, role: CertRole) -> CertRequest {
    CertRequest {
        common_name: cn.into(),
        not_before: 1_700_000_000,
        not_after: 2_524_608_000, // 2050-01-01, GeneralizedTime
        role,
    }
}

fn rsa_pair(cn: &str, role: CertRole) -> KeyPair {
    let mut rng = rand_core::OsRng;
    KeyPair::self_signed(
        SigningKey::generate_rsa(&mut rng).unwrap(),
        &request(cn, role),
        &mut rng,
    )
    .unwrap()
}

fn db(certs: Vec<Vec<u8>>) -> Database {
    Database::from_certs(trustlaunch_eventlog::Guid::GLOBAL_VARIABLE, certs)
}

/// `Some((db entry index, signature, chain position))` if allowed by a certificate.
fn allowed(v: &Verdict) -> Option<(usize, Option<usize>, Option<usize>)> {
    match v {
        Verdict::Allowed {
            by,
            signature,
            chain_position,
        } => Some((by.index, *signature, *chain_position)),
        _ => None,
    }
}

/// Key and certificate made by `openssl req -x509 -newkey rsa:2048`
/// (PKCS#8 key), as (key path, cert path, DER cert).
fn openssl_pair(dir: &TempDir, name: &str) -> (String, String, Vec<u8>) {
    let (key, crt) = openssl_req(dir, name, name);
    let pem = std::fs::read(&crt).unwrap();
    let der = trustlaunch_secureboot::keys::certificate_der(&pem).unwrap();
    (key, crt, der)
}

/// (a) An image we sign verifies with sbverify and osslsigncode against
/// our certificate, and not against another; its hash is that of the
/// (8-byte padded) unsigned image; our verifier allows it.
#[test]
fn our_signature_verifies_with_sbverify_and_osslsigncode() {
    let dir = TempDir::new("ours");
    let pair = rsa_pair("trustlaunch test db", CertRole::CodeSigning);
    let other = rsa_pair("someone else", CertRole::CodeSigning);
    let cert = dir.write("db.crt", pair.cert_pem().unwrap());
    let other_cert = dir.write("other.crt", other.cert_pem().unwrap());
    let stub = read(STUB, "systemd-boot-efi");
    let signed = sign_image(&stub, &pair.key, &pair.cert_der, &[]).unwrap();
    let path = dir.write("stub.signed", &signed);

    let (ok, text) = sbverify(&cert, &path);
    assert!(ok, "sbverify rejected our signature:\n{text}");
    let (ok, text) = sbverify(&other_cert, &path);
    assert!(!ok, "sbverify accepted a wrong certificate:\n{text}");
    let (ok, text) = run(
        "osslsigncode",
        "osslsigncode",
        &["verify", "-CAfile", &cert, "-in", &path],
    );
    assert!(ok && text.contains("Signature verification: ok"), "{text}");

    let mut padded = stub.clone();
    padded.resize(stub.len().div_ceil(8) * 8, 0);
    assert_eq!(sha256(&signed), sha256(&padded));
    assert_eq!(signed[..padded.len()].len(), padded.len());
    assert_eq!(
        allowed(
            &verify_image(
                &signed,
                &db(vec![other.cert_der.clone(), pair.cert_der.clone()]),
                &Database::default()
            )
            .unwrap()
        ),
        Some((1, Some(0), Some(0)))
    );
    assert!(matches!(
        verify_image(&signed, &db(vec![other.cert_der]), &Database::default()).unwrap(),
        Verdict::Denied(Denial::NotInDb { .. })
    ));
    // Removing the signature gives back the padded image, byte for byte
    // except the checksum, which is recomputed.
    let bare = remove_all_signatures(&signed).unwrap();
    let pe = PeImage::parse(&bare).unwrap();
    let ck = pe.checksum_offset;
    assert_eq!(bare.len(), padded.len());
    assert_eq!(bare[..ck], padded[..ck]);
    assert_eq!(bare[ck + 4..], padded[ck + 4..]);
}

/// (b) An image sbsign signed verifies with ours; its SpcIndirectDataContent
/// is byte-identical to the one we build; our checksum is sbsign's; our
/// signing of the same input lays out the file as sbsign does.
#[test]
fn sbsign_signature_verifies_with_ours() {
    let dir = TempDir::new("sbsign");
    let (key, crt, cert_der) = openssl_pair(&dir, "sbsign db");
    let stub = read(STUB, "systemd-boot-efi");
    let theirs = sbsign(&dir, &key, &crt, &stub);

    let pe = PeImage::parse(&theirs).unwrap();
    let sigs = signatures(pe.cert_table_bytes(&theirs).unwrap()).unwrap();
    assert_eq!(sigs.len(), 1);
    let hash = sha256(&theirs);
    assert_eq!(sigs[0].image_digest, hash);
    assert_eq!(sigs[0].content, spc_indirect_data(&hash)[2..]);
    assert_eq!(
        pe_checksum(&theirs, pe.checksum_offset).to_le_bytes(),
        theirs[pe.checksum_offset..pe.checksum_offset + 4]
    );
    assert_eq!(
        allowed(&verify_image(&theirs, &db(vec![cert_der.clone()]), &Database::default()).unwrap()),
        Some((0, Some(0), Some(0)))
    );

    // The same key, loaded from openssl's PKCS#8 PEM, signing with ours.
    let pair = KeyPair::from_pem(
        &std::fs::read_to_string(&key).unwrap(),
        &std::fs::read(&crt).unwrap(),
    )
    .unwrap();
    let ours = sign_image(&stub, &pair.key, &pair.cert_der, &[]).unwrap();
    let ours_pe = PeImage::parse(&ours).unwrap();
    assert_eq!(ours_pe.cert_table.0, pe.cert_table.0, "table offset");
    let table = pe.cert_table.0 as usize;
    let ck = pe.checksum_offset;
    let dir_entry = pe.cert_dir_offset.unwrap();
    // Everything before the table but the checksum and directory entry.
    assert_eq!(ours[..ck], theirs[..ck]);
    assert_eq!(ours[ck + 4..dir_entry], theirs[ck + 4..dir_entry]);
    assert_eq!(ours[dir_entry + 8..table], theirs[dir_entry + 8..table]);
    let (ok, text) = sbverify(&crt, &dir.write("ours.signed", &ours));
    assert!(ok, "{text}");
}

/// The vendor certificate built into shim (the Debian Secure Boot CA).
fn shim_vendor_cert() -> Vec<u8> {
    let shim = read(SHIM, "shim-signed");
    let pe = PeImage::parse(&shim).unwrap();
    let sec = pe
        .section_data(&shim, ".vendor_cert")
        .expect("shim has no .vendor_cert section");
    let le32 = |at: usize| u32::from_le_bytes(sec[at..at + 4].try_into().unwrap()) as usize;
    let (size, off) = (le32(0), le32(8));
    sec[off..off + size].to_vec()
}

/// (c) Signing Debian's signed kernel keeps Debian's signature: both
/// verify (ours and sbverify's view), removing ours restores the original
/// file byte for byte, and sbsign appends at the same place we do.
#[test]
fn signing_debian_kernel_keeps_existing_signature() {
    let dir = TempDir::new("kernel");
    let path = kernel_path();
    let kernel = read(&path, "linux-image-amd64");
    let debian = shim_vendor_cert();
    let pair = rsa_pair("trustlaunch kernel signer", CertRole::CodeSigning);
    let signed = sign_image(&kernel, &pair.key, &pair.cert_der, &[]).unwrap();
    assert_eq!(sha256(&signed), sha256(&kernel));
    let none = Database::default();
    assert_eq!(
        allowed(&verify_image(&signed, &db(vec![debian.clone()]), &none).unwrap())
            .map(|a| (a.0, a.1)),
        Some((0, Some(0)))
    );
    assert_eq!(
        allowed(&verify_image(&signed, &db(vec![pair.cert_der.clone()]), &none).unwrap())
            .map(|a| (a.0, a.1)),
        Some((0, Some(1)))
    );
    let signed_path = dir.write("vmlinuz.signed", &signed);
    let (ok, text) = run("sbverify", "sbsigntool", &["--list", &signed_path]);
    assert!(ok && text.contains("signature 2"), "{text}");
    let cert = dir.write("ours.crt", pair.cert_pem().unwrap());
    let (ok, text) = sbverify(&cert, &signed_path);
    assert!(ok, "{text}");
    let debian_ca = dir.write("debian.crt", cert_to_pem(&debian).unwrap());
    let (ok, text) = sbverify(&debian_ca, &signed_path);
    assert!(ok, "sbverify with the Debian CA:\n{text}");

    assert_eq!(remove_signature(&signed, 1).unwrap(), kernel);
    let without_debian = remove_signature(&signed, 0).unwrap();
    assert!(matches!(
        verify_image(&without_debian, &db(vec![debian.clone()]), &none).unwrap(),
        Verdict::Denied(Denial::NotInDb { .. })
    ));
    let bare = remove_all_signatures(&signed).unwrap();
    assert_eq!(sha256(&bare), sha256(&kernel));
    assert!(PeImage::parse(&bare).unwrap().cert_table == (0, 0));

    // sbsign appends its entry where we do.
    let (key, crt, _) = openssl_pair(&dir, "sbsign kernel");
    let theirs = sbsign(&dir, &key, &crt, &kernel);
    let pe = PeImage::parse(&theirs).unwrap();
    let sigs = signatures(pe.cert_table_bytes(&theirs).unwrap()).unwrap();
    assert_eq!(sigs.len(), 2);
    let old = PeImage::parse(&kernel).unwrap().cert_table;
    let old_end = (old.0 + old.1) as usize;
    assert_eq!(
        theirs[old.0 as usize..old_end],
        signed[old.0 as usize..old_end]
    );
    assert_eq!(remove_signature(&theirs, 1).unwrap(), kernel);
}

/// (d) Keys and certificates we generate: openssl prints and verifies the
/// PK -> KEK -> db chain; sbsign signs with our PKCS#8 key and sbverify
/// accepts it; our signer carries the intermediate so a db holding only PK
/// allows the image; openssl's PKCS#1 and PKCS#8 keys load.
#[test]
fn generated_keys_work_with_openssl_and_sbsign() {
    let dir = TempDir::new("keys");
    let mut rng = rand_core::OsRng;
    let pk = rsa_pair("trustlaunch PK", CertRole::Authority);
    let kek = pk
        .issue(
            SigningKey::generate_rsa(&mut rng).unwrap(),
            &request("trustlaunch KEK", CertRole::Authority),
            &mut rng,
        )
        .unwrap();
    let dbk = kek
        .issue(
            SigningKey::generate_rsa(&mut rng).unwrap(),
            &request("trustlaunch db", CertRole::CodeSigning),
            &mut rng,
        )
        .unwrap();
    let pk_pem = dir.write("pk.crt", pk.cert_pem().unwrap());
    let kek_pem = dir.write("kek.crt", kek.cert_pem().unwrap());
    let db_pem = dir.write("db.crt", dbk.cert_pem().unwrap());
    let db_key = dir.write("db.key", dbk.key.to_pkcs8_pem().unwrap().as_bytes());

    let (ok, text) = run(
        "openssl",
        "openssl",
        &["x509", "-noout", "-text", "-in", &pk_pem],
    );
    assert!(
        ok && text.contains("CA:TRUE") && text.contains("Certificate Sign"),
        "{text}"
    );
    assert!(
        text.contains("sha256WithRSAEncryption") && text.contains("2050"),
        "{text}"
    );
    let (ok, text) = run(
        "openssl",
        "openssl",
        &["x509", "-noout", "-text", "-in", &db_pem],
    );
    assert!(
        ok && text.contains("CA:FALSE") && text.contains("Code Signing"),
        "{text}"
    );
    assert!(text.contains("Issuer: CN = trustlaunch KEK"), "{text}");
    let (ok, text) = run(
        "openssl",
        "openssl",
        &[
            "verify",
            "-CAfile",
            &pk_pem,
            "-untrusted",
            &kek_pem,
            &db_pem,
        ],
    );
    assert!(ok, "openssl verify PK -> KEK -> db:\n{text}");
    let (ok, _) = run(
        "openssl",
        "openssl",
        &["verify", "-CAfile", &kek_pem, &pk_pem],
    );
    assert!(!ok, "PK must not verify under KEK");

    let stub = read(STUB, "systemd-boot-efi");
    let theirs = sbsign(&dir, &db_key, &db_pem, &stub);
    let out = dir.write("stub.sbsign", &theirs);
    let (ok, text) = sbverify(&db_pem, &out);
    assert!(ok, "{text}");

    // Ours with the KEK carried: PK alone in db anchors it (position 1 = KEK).
    let signed = sign_image(
        &stub,
        &dbk.key,
        &dbk.cert_der,
        std::slice::from_ref(&kek.cert_der),
    )
    .unwrap();
    assert_eq!(
        allowed(
            &verify_image(
                &signed,
                &db(vec![pk.cert_der.clone()]),
                &Database::default()
            )
            .unwrap()
        ),
        Some((0, Some(0), Some(1)))
    );
    let signed_path = dir.write("stub.ours", &signed);
    let (ok, text) = sbverify(&pk_pem, &signed_path);
    assert!(ok, "sbverify against PK through the carried KEK:\n{text}");
    let (ok, text) = run(
        "osslsigncode",
        "osslsigncode",
        &["verify", "-CAfile", &pk_pem, "-in", &signed_path],
    );
    assert!(ok && text.contains("Signature verification: ok"), "{text}");

    // openssl's key formats.
    let trad = dir.path("trad.key");
    let (ok, text) = run(
        "openssl",
        "openssl",
        &["genrsa", "-traditional", "-out", &trad, "2048"],
    );
    assert!(ok, "{text}");
    let pem = std::fs::read_to_string(&trad).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(matches!(
        SigningKey::from_pem(&pem).unwrap(),
        SigningKey::Rsa(_)
    ));
    let ec = dir.path("ec.key");
    let (ok, text) = run(
        "openssl",
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &ec,
        ],
    );
    assert!(ok, "{text}");
    let ec_key = SigningKey::from_pem(&std::fs::read_to_string(&ec).unwrap()).unwrap();
    assert!(matches!(ec_key, SigningKey::EcdsaP256(_)));
}
