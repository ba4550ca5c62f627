//! Authenticode hashing and verification against real Debian binaries and
//! every reference tool on the machine.
//!
//! Needs the Debian packages `shim-signed shim-unsigned
//! grub-efi-amd64-signed linux-image-amd64 systemd-boot-efi ovmf
//! osslsigncode pesign sbsigntool openssl` installed; a missing file or tool
//! fails the test with a message naming the package (never a skip).
//!
//! What each tool can tell (checked below, recorded in docs/benchmarks.md):
//! - `pesign --hash [-d sha1]` prints `hash: HEX` for any PE, signed or not,
//!   including shim's two-entry certificate table; it offers SHA-1 and
//!   SHA-256 only (`-d sha384` → `Digest "sha384" not found.`).
//! - `osslsigncode verify` prints the calculated digest only for an image
//!   with exactly one WIN_CERTIFICATE: Debian's shim (two entries, the 2011
//!   and 2023 Microsoft signatures) is refused as "Corrupted attribute
//!   certificate table", an unsigned image as "No signature found".
//!   `osslsigncode sign -h sha1|sha256|sha384|sha512` works on all four
//!   (it replaces shim's table), so its digest of every image with every
//!   algorithm is read back from the image it signed.
//! - `sbsign` (SHA-256 only) appends a signature; `sbverify` never prints a
//!   digest, so sbsign's is read from the SpcIndirectDataContent of the
//!   signature it appended, with our own PKCS#7 parser.
//! - osslsigncode and sbsign both pad an image whose length is not a
//!   multiple of 8 (systemd's stub) with zeros before appending the table,
//!   so their digest is that of the padded image, not of the input file.

mod common;

use common::{kernel_path, read, run};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use trustlaunch_eventlog::Guid;
use trustlaunch_secureboot::authenticode::{hashed_ranges, image_hash, ImageDigest, ImageHashAlg};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::pkcs7::signatures;
use trustlaunch_secureboot::siglist::{SignatureDb, SignatureType};
use trustlaunch_secureboot::varstore::{SecureBootVar, VarStore};
use trustlaunch_secureboot::verify::{
    verify_image, verify_image_with, Database, Denial, EntryKind, HashPolicy, RevokedCert,
    SignatureError, Verdict,
};

const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
const SHIM_UNSIGNED: &str = "/usr/lib/shim/shimx64.efi";
const GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// An owner GUID for entries the tests add.
const OWNER: Guid = Guid::from_fields(
    0x1234_5678,
    0x9abc,
    0xdef0,
    [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
);

fn images() -> Vec<(String, &'static str)> {
    vec![
        (SHIM.to_string(), "shim-signed"),
        (GRUB.to_string(), "grub-efi-amd64-signed"),
        (kernel_path(), "linux-image-amd64"),
        (STUB.to_string(), "systemd-boot-efi"),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ours(data: &[u8], alg: ImageHashAlg) -> String {
    hex(image_hash(data, alg).expect("image hash").as_bytes())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    match image_hash(data, ImageHashAlg::Sha256).expect("image hash") {
        ImageDigest::Sha256(d) => d,
        other => panic!("unexpected {other:?}"),
    }
}

/// Run a tool; `(success, stdout + stderr)`. A missing tool panics naming
/// its package.
/// The value after the last ':' of the first line starting with `prefix`.
fn field(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .and_then(|l| l.rsplit(':').next())
        .map(|v| v.trim().to_ascii_lowercase())
}

/// `osslsigncode verify` prints "Calculated message digest : HEX".
fn osslsigncode_digest(path: &str) -> String {
    let (_, text) = run("osslsigncode", "osslsigncode", &["verify", "-in", path]);
    field(&text, "Calculated message digest")
        .unwrap_or_else(|| panic!("no calculated digest from osslsigncode for {path}:\n{text}"))
}

/// `pesign --hash -d ALG -i FILE` prints "hash: HEX".
fn pesign_digest(path: &str, alg: &str) -> String {
    let (ok, text) = run("pesign", "pesign", &["--hash", "-d", alg, "-i", path]);
    assert!(ok, "pesign --hash -d {alg} -i {path} failed:\n{text}");
    field(&text, "hash").unwrap_or_else(|| panic!("no hash from pesign for {path}:\n{text}"))
}

/// A scratch directory with a throw-away RSA-2048 key and self-signed
/// certificate made by `openssl req` (PEM: k.pem, c.pem).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp (cargo's per-target scratch space), not /tmp.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tl-authenticode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (k, c) = (dir.join("k.pem"), dir.join("c.pem"));
        let (ok, text) = run(
            "openssl",
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=trustlaunch test signer",
                "-keyout",
                k.to_str().unwrap(),
                "-out",
                c.to_str().unwrap(),
            ],
        );
        assert!(ok, "openssl req failed:\n{text}");
        dir
    })
}

fn scratch_file(name: &str) -> String {
    scratch().join(name).to_string_lossy().into_owned()
}

/// The DER of the scratch certificate.
fn scratch_cert_der() -> Vec<u8> {
    use der::DecodePem;
    let pem = std::fs::read_to_string(scratch_file("c.pem")).unwrap();
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
    der::Encode::to_der(&cert).unwrap()
}

fn osslsigncode_alg(alg: ImageHashAlg) -> &'static str {
    match alg {
        ImageHashAlg::Sha1 => "sha1",
        ImageHashAlg::Sha256 => "sha256",
        ImageHashAlg::Sha384 => "sha384",
        ImageHashAlg::Sha512 => "sha512",
        other => panic!("osslsigncode has no {other}"),
    }
}

/// Sign a copy of `path` with `osslsigncode sign -h ALG`; returns the
/// signed bytes and the digest osslsigncode put in the signature
/// ("Current message digest" of `osslsigncode verify`), after checking it
/// equals the one osslsigncode recomputes from the signed file.
fn osslsigncode_signed(path: &str, alg: ImageHashAlg) -> (Vec<u8>, String) {
    let name = Path::new(path).file_name().unwrap().to_string_lossy();
    let out = scratch_file(&format!("{name}.ossl.{}", osslsigncode_alg(alg)));
    let _ = std::fs::remove_file(&out);
    let (ok, text) = run(
        "osslsigncode",
        "osslsigncode",
        &[
            "sign",
            "-certs",
            &scratch_file("c.pem"),
            "-key",
            &scratch_file("k.pem"),
            "-h",
            osslsigncode_alg(alg),
            "-in",
            path,
            "-out",
            &out,
        ],
    );
    assert!(ok, "osslsigncode sign -h {alg} {path} failed:\n{text}");
    let (_, text) = run("osslsigncode", "osslsigncode", &["verify", "-in", &out]);
    let current = field(&text, "Current message digest")
        .unwrap_or_else(|| panic!("no current digest from osslsigncode for {out}:\n{text}"));
    let calculated = field(&text, "Calculated message digest")
        .unwrap_or_else(|| panic!("no calculated digest from osslsigncode for {out}:\n{text}"));
    assert_eq!(
        current, calculated,
        "osslsigncode disagrees with itself on {out}"
    );
    (std::fs::read(&out).unwrap(), current)
}

/// Sign a copy of `path` with `sbsign`; returns the signed bytes.
fn sbsigned(path: &str) -> Vec<u8> {
    let name = Path::new(path).file_name().unwrap().to_string_lossy();
    let out = scratch_file(&format!("{name}.sbsign"));
    let _ = std::fs::remove_file(&out);
    let (ok, text) = run(
        "sbsign",
        "sbsigntool",
        &[
            "--key",
            &scratch_file("k.pem"),
            "--cert",
            &scratch_file("c.pem"),
            "--output",
            &out,
            path,
        ],
    );
    assert!(ok, "sbsign {path} failed:\n{text}");
    std::fs::read(&out).unwrap()
}

/// `data` padded with zeros to a multiple of 8 bytes, as signing tools do
/// before appending a certificate table.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(8) * 8, 0);
    v
}

// ---------------------------------------------------------------------------
// Hash differential: ours against pesign, osslsigncode and sbsign.
// ---------------------------------------------------------------------------

#[test]
fn grub_hash_matches_osslsigncode() {
    let data = read(GRUB, "grub-efi-amd64-signed");
    assert_eq!(ours(&data, ImageHashAlg::Sha256), osslsigncode_digest(GRUB));
}

#[test]
fn kernel_hash_matches_osslsigncode() {
    let path = kernel_path();
    let data = read(&path, "linux-image-amd64");
    assert_eq!(
        ours(&data, ImageHashAlg::Sha256),
        osslsigncode_digest(&path)
    );
}

/// osslsigncode 2.9's `verify` computes no digest for Debian's shim (two
/// WIN_CERTIFICATE entries) nor for an unsigned image; if a later version
/// does, this fails and the differential above should take those files in.
#[test]
fn osslsigncode_verify_refuses_shim_and_unsigned_stub() {
    let (ok, text) = run("osslsigncode", "osslsigncode", &["verify", "-in", SHIM]);
    assert!(!ok, "osslsigncode now verifies shim:\n{text}");
    assert!(
        text.contains("Corrupted attribute certificate table"),
        "{text}"
    );
    assert!(field(&text, "Calculated message digest").is_none());
    // Our parser reads both entries of that table.
    let shim = read(SHIM, "shim-signed");
    let pe = PeImage::parse(&shim).unwrap();
    assert_eq!(
        signatures(pe.cert_table_bytes(&shim).unwrap())
            .unwrap()
            .len(),
        2
    );

    let (ok, text) = run("osslsigncode", "osslsigncode", &["verify", "-in", STUB]);
    assert!(!ok, "osslsigncode now verifies an unsigned stub:\n{text}");
    assert!(text.contains("No signature found"), "{text}");
}

/// `pesign --hash` (SHA-256 and SHA-1) equals ours on shim (signed, two
/// entries), grub, the signed kernel and systemd's unsigned stub.
#[test]
fn pesign_hashes_match_ours() {
    for (path, pkg) in images() {
        let data = read(&path, pkg);
        assert_eq!(
            ours(&data, ImageHashAlg::Sha256),
            pesign_digest(&path, "sha256"),
            "SHA-256 of {path}"
        );
        assert_eq!(
            ours(&data, ImageHashAlg::Sha1),
            pesign_digest(&path, "sha1"),
            "SHA-1 of {path}"
        );
    }
    // The unsigned shim too (no certificate table at all).
    let data = read(SHIM_UNSIGNED, "shim-unsigned");
    assert_eq!(
        ours(&data, ImageHashAlg::Sha256),
        pesign_digest(SHIM_UNSIGNED, "sha256")
    );
}

/// osslsigncode signs each image with SHA-1/256/384/512; the digest it
/// signed equals ours of the file it wrote, and ours of the input (of the
/// input padded to 8 bytes where osslsigncode padded it: the stub).
#[test]
fn osslsigncode_sign_digests_match_ours_for_every_algorithm() {
    for (path, pkg) in images() {
        let data = read(&path, pkg);
        let aligned = data.len() % 8 == 0;
        for alg in [
            ImageHashAlg::Sha1,
            ImageHashAlg::Sha256,
            ImageHashAlg::Sha384,
            ImageHashAlg::Sha512,
        ] {
            let (signed, theirs) = osslsigncode_signed(&path, alg);
            assert_eq!(theirs.len(), 2 * alg.digest_len(), "{path} {alg}");
            assert_eq!(ours(&signed, alg), theirs, "{path} {alg}: signed copy");
            // Our verifier reads the SHA-1/256/384/512 SpcIndirectDataContent
            // and accepts osslsigncode's signature under its certificate.
            let db = Database::from_certs(OWNER, [scratch_cert_der()]);
            assert!(
                matches!(
                    verify_image(&signed, &db, &Database::default()).unwrap(),
                    Verdict::Allowed { .. }
                ),
                "{path} {alg}: osslsigncode's signature not accepted"
            );
            if aligned {
                assert_eq!(ours(&data, alg), theirs, "{path} {alg}: input");
            } else {
                assert_ne!(ours(&data, alg), theirs, "{path} {alg}: unpadded input");
                assert_eq!(ours(&padded(&data), alg), theirs, "{path} {alg}: padded");
            }
        }
    }
}

/// sbsign appends a SHA-256 signature; the image digest in its
/// SpcIndirectDataContent equals ours of the input (padded for the stub);
/// the signatures already there are kept, and ours verify it.
#[test]
fn sbsign_digest_matches_ours() {
    let cert = scratch_cert_der();
    for (path, pkg) in images() {
        let data = read(&path, pkg);
        let before = PeImage::parse(&data)
            .unwrap()
            .cert_table_bytes(&data)
            .map(|t| signatures(t).unwrap())
            .unwrap_or_default();
        let signed = sbsigned(&path);
        let pe = PeImage::parse(&signed).unwrap();
        let sigs = signatures(pe.cert_table_bytes(&signed).unwrap()).unwrap();
        assert_eq!(sigs.len(), before.len() + 1, "{path}: sbsign appends one");
        assert_eq!(&sigs[..before.len()], &before[..], "{path}: old ones kept");
        let last = sigs.last().unwrap();
        assert_eq!(last.image_digest_alg, ImageHashAlg::Sha256);
        let theirs = hex(&last.image_digest);
        assert_eq!(ours(&signed, ImageHashAlg::Sha256), theirs, "{path}");
        let input = if data.len() % 8 == 0 {
            data.clone()
        } else {
            padded(&data)
        };
        assert_eq!(ours(&input, ImageHashAlg::Sha256), theirs, "{path}: input");
        // Our verifier accepts sbsign's signature under its certificate.
        let db = Database::from_certs(OWNER, [cert.clone()]);
        match verify_image(&signed, &db, &Database::default()).unwrap() {
            Verdict::Allowed { by, signature, .. } => {
                assert_eq!((by.index, by.kind, by.owner), (0, EntryKind::X509, OWNER));
                assert_eq!(signature, Some(before.len()), "{path}");
            }
            v => panic!("{path}: {v:?}"),
        }
    }
}

#[test]
fn signatures_parse_and_digest_matches() {
    for (path, pkg) in [(SHIM, "shim-signed"), (GRUB, "grub-efi-amd64-signed")] {
        let data = read(path, pkg);
        let pe = PeImage::parse(&data).unwrap();
        let sigs = signatures(pe.cert_table_bytes(&data).unwrap()).unwrap();
        assert!(!sigs.is_empty());
        for s in &sigs {
            assert_eq!(hex(&s.image_digest), hex(&sha256(&data)));
        }
    }
}

// ---------------------------------------------------------------------------
// Verification against db/dbx.
// ---------------------------------------------------------------------------

fn store_var(path: &str, which: SecureBootVar) -> SignatureDb {
    let store = VarStore::parse(&read(path, "ovmf")).expect("OVMF VARS parses");
    let (name, guid) = which.id();
    store
        .get(name, guid)
        .map(|v| v.signature_db().expect("signature lists"))
        .unwrap_or_default()
}

fn subject_of(der_bytes: &[u8]) -> String {
    use der::Decode;
    x509_cert::Certificate::from_der(der_bytes)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_default()
}

/// The Microsoft Corporation UEFI CA 2011 from the OVMF "ms" db.
fn microsoft_uefi_ca_2011() -> Vec<u8> {
    store_var(OVMF_VARS_MS, SecureBootVar::Db)
        .entries()
        .map(|(_, e)| e.data.clone())
        .find(|c| subject_of(c).contains("Microsoft Corporation UEFI CA 2011"))
        .expect("Microsoft Corporation UEFI CA 2011 not found in OVMF_VARS_4M.ms.fd")
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The vendor certificate built into shim (`.vendor_cert` section: four
/// u32 — authorized size, deauthorized size, authorized offset,
/// deauthorized offset — offsets relative to the section start): the
/// Debian Secure Boot CA.
fn shim_vendor_cert() -> Vec<u8> {
    let shim = read(SHIM, "shim-signed");
    let pe = PeImage::parse(&shim).unwrap();
    let sec = pe
        .section_data(&shim, ".vendor_cert")
        .expect("shim has no .vendor_cert section");
    let (size, off) = (le32(sec, 0), le32(sec, 8));
    let der_bytes = sec[off..off + size].to_vec();
    assert_eq!(der_bytes[0], 0x30, "vendor cert is not a DER certificate");
    der_bytes
}

/// The DER TBSCertificate of a certificate.
fn tbs_of(cert_der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    x509_cert::Certificate::from_der(cert_der)
        .unwrap()
        .tbs_certificate
        .to_der()
        .unwrap()
}

fn db_of(certs: Vec<Vec<u8>>) -> Database {
    Database::from_certs(OWNER, certs)
}

/// A database from signature lists built with `SignatureDb` (so the
/// indexes are those of a real variable).
fn db_from(lists: &SignatureDb) -> Database {
    let bytes = lists.encode().unwrap();
    Database::from_signature_db(&SignatureDb::parse(&bytes).unwrap())
}

fn hash_type(alg: ImageHashAlg) -> SignatureType {
    match alg {
        ImageHashAlg::Sha1 => SignatureType::Sha1,
        ImageHashAlg::Sha224 => SignatureType::Sha224,
        ImageHashAlg::Sha256 => SignatureType::Sha256,
        ImageHashAlg::Sha384 => SignatureType::Sha384,
        ImageHashAlg::Sha512 => SignatureType::Sha512,
        other => panic!("{other}"),
    }
}

#[test]
fn shim_chains_to_microsoft_uefi_ca_2011() {
    let ca = microsoft_uefi_ca_2011();
    let shim = read(SHIM, "shim-signed");
    // Put an unrelated cert first so the reported index is meaningful.
    let db = db_of(vec![shim_vendor_cert(), ca]);
    match verify_image(&shim, &db, &Database::default()).unwrap() {
        Verdict::Allowed { by, signature, .. } => {
            assert_eq!(
                (by.index, by.kind, signature),
                (1, EntryKind::X509, Some(0))
            );
            assert!(by
                .subject
                .as_deref()
                .unwrap()
                .contains("Microsoft Corporation UEFI CA 2011"));
            let shown = format!("db {by}");
            assert!(
                shown.starts_with(
                    "db entry #1 (X.509, owner 12345678-9abc-def0-1122-334455667788, subject "
                ) && shown.contains("CN=Microsoft Corporation UEFI CA 2011"),
                "{shown}"
            );
        }
        v => panic!("{v:?}"),
    }
}

/// With the whole Microsoft db of Debian's OVMF: the entry named is the
/// UEFI CA 2011 at its real index, with its real owner GUID.
#[test]
fn shim_allowed_by_ovmf_microsoft_db_entry() {
    let lists = store_var(OVMF_VARS_MS, SecureBootVar::Db);
    let db = Database::from_signature_db(&lists);
    assert_eq!(db.records().len(), lists.entries().count());
    let shim = read(SHIM, "shim-signed");
    let (want, owner) = lists
        .entries()
        .enumerate()
        .find(|(_, (_, e))| subject_of(&e.data).contains("Microsoft Corporation UEFI CA 2011"))
        .map(|(i, (_, e))| (i, e.owner))
        .unwrap();
    match verify_image(&shim, &db, &Database::default()).unwrap() {
        Verdict::Allowed { by, .. } => assert_eq!((by.index, by.owner), (want, owner)),
        v => panic!("{v:?}"),
    }
}

#[test]
fn grub_and_kernel_verify_against_debian_ca_not_microsoft() {
    let debian = db_of(vec![shim_vendor_cert()]);
    let microsoft = db_of(vec![microsoft_uefi_ca_2011()]);
    let kernel = kernel_path();
    for (path, pkg) in [
        (GRUB, "grub-efi-amd64-signed"),
        (kernel.as_str(), "linux-image-amd64"),
    ] {
        let data = read(path, pkg);
        match verify_image(&data, &debian, &Database::default()).unwrap() {
            Verdict::Allowed { by, .. } => assert_eq!((by.index, by.kind), (0, EntryKind::X509)),
            v => panic!("{path}: {v:?}"),
        }
        let v = verify_image(&data, &microsoft, &Database::default()).unwrap();
        assert!(
            matches!(v, Verdict::Denied(Denial::NotInDb { .. })),
            "{path}: {v:?}"
        );
    }
}

#[test]
fn tampered_section_fails_with_hash_mismatch() {
    let mut grub = read(GRUB, "grub-efi-amd64-signed");
    let pe = PeImage::parse(&grub).unwrap();
    let s = pe.sections.iter().find(|s| s.size_of_raw_data > 0).unwrap();
    let at = s.pointer_to_raw_data as usize + s.size_of_raw_data as usize / 2;
    grub[at] ^= 0x01;
    let debian = db_of(vec![shim_vendor_cert()]);
    match verify_image(&grub, &debian, &Database::default()).unwrap() {
        Verdict::Denied(Denial::NotInDb { signatures }) => {
            assert_eq!(signatures.len(), 1);
            assert!(
                matches!(signatures[0], Err(SignatureError::ImageHashMismatch { .. })),
                "{signatures:?}"
            );
        }
        v => panic!("tampered image not denied: {v:?}"),
    }
}

#[test]
fn image_hash_in_dbx_denies_and_signer_in_dbx_denies() {
    let grub = read(GRUB, "grub-efi-amd64-signed");
    let debian = db_of(vec![shim_vendor_cert()]);
    let mut dbx = Database::default();
    dbx.push(
        EntryKind::ImageHash(ImageHashAlg::Sha256),
        OWNER,
        vec![0; 32],
    );
    dbx.push(
        EntryKind::ImageHash(ImageHashAlg::Sha256),
        OWNER,
        sha256(&grub).to_vec(),
    );
    match verify_image(&grub, &debian, &dbx).unwrap() {
        Verdict::Denied(Denial::HashInDbx { entry }) => assert_eq!(entry.index, 1),
        v => panic!("{v:?}"),
    }
    // The Debian CA in dbx revokes everything it signed, even if also in db.
    let dbx = db_of(vec![shim_vendor_cert()]);
    match verify_image(&grub, &debian, &dbx).unwrap() {
        Verdict::Denied(Denial::CertInDbx {
            entry,
            signature,
            chain_position,
        }) => assert_eq!((entry.index, signature, chain_position), (0, 0, 0)),
        v => panic!("{v:?}"),
    }
}

#[test]
fn image_hash_in_db_allows_unsigned_shim() {
    let data = read(SHIM_UNSIGNED, "shim-unsigned");
    let mut db = Database::default();
    db.push(
        EntryKind::ImageHash(ImageHashAlg::Sha256),
        OWNER,
        sha256(&data).to_vec(),
    );
    match verify_image(&data, &db, &Database::default()).unwrap() {
        Verdict::Allowed {
            by,
            signature,
            chain_position,
        } => {
            assert_eq!(by.kind, EntryKind::ImageHash(ImageHashAlg::Sha256));
            assert_eq!((by.index, signature, chain_position), (0, None, None));
        }
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        verify_image(&data, &Database::default(), &Database::default()).unwrap(),
        Verdict::Denied(Denial::NotInDb { .. })
    ));
}

/// shim is denied when its SHA-1, SHA-384 or SHA-512 Authenticode hash is
/// in dbx (each hash also computed by osslsigncode, SHA-1 by pesign too),
/// even though the Microsoft db allows it. edk2 computes only the SHA-256
/// hash of shim (its signatures' algorithm) and so lets it run:
/// `HashPolicy::Edk2` shows that.
#[test]
fn shim_denied_by_sha1_sha384_sha512_in_dbx() {
    let shim = read(SHIM, "shim-signed");
    let db = db_of(vec![microsoft_uefi_ca_2011()]);
    for alg in [
        ImageHashAlg::Sha1,
        ImageHashAlg::Sha384,
        ImageHashAlg::Sha512,
    ] {
        let digest = image_hash(&shim, alg).unwrap().as_bytes().to_vec();
        assert_eq!(hex(&digest), osslsigncode_signed(SHIM, alg).1, "{alg}");
        if alg == ImageHashAlg::Sha1 {
            assert_eq!(hex(&digest), pesign_digest(SHIM, "sha1"));
        }
        let mut lists = SignatureDb::default();
        let decoy = vec![0xee; alg.digest_len()];
        lists
            .add_hash(hash_type(alg), Guid::GLOBAL_VARIABLE, decoy)
            .unwrap();
        lists.add_hash(hash_type(alg), OWNER, digest).unwrap();
        let dbx = db_from(&lists);
        match verify_image(&shim, &db, &dbx).unwrap() {
            Verdict::Denied(Denial::HashInDbx { entry }) => {
                assert_eq!(entry.kind, EntryKind::ImageHash(alg));
                assert_eq!((entry.index, entry.list, entry.owner), (1, 0, OWNER));
                assert!(format!("dbx {entry}")
                    .starts_with(&format!("dbx entry #1 ({alg} image hash, owner 12345678-")));
            }
            v => panic!("{alg}: {v:?}"),
        }
        match verify_image_with(&shim, &db, &dbx, HashPolicy::Edk2).unwrap() {
            Verdict::Allowed { by, .. } => assert_eq!(by.kind, EntryKind::X509, "{alg}"),
            v => panic!("edk2 policy, {alg}: {v:?}"),
        }
    }
}

/// shim's SHA-1 or SHA-512 image hash alone in db allows it (signature
/// None: by hash); under edk2's policy it does not (edk2 would compute
/// only SHA-256 for shim).
#[test]
fn shim_allowed_by_sha1_or_sha512_in_db_alone() {
    let shim = read(SHIM, "shim-signed");
    for alg in [ImageHashAlg::Sha1, ImageHashAlg::Sha512] {
        let mut lists = SignatureDb::default();
        lists
            .add_hash(
                hash_type(alg),
                OWNER,
                image_hash(&shim, alg).unwrap().as_bytes().to_vec(),
            )
            .unwrap();
        let db = db_from(&lists);
        match verify_image(&shim, &db, &Database::default()).unwrap() {
            Verdict::Allowed {
                by,
                signature,
                chain_position,
            } => {
                assert_eq!(
                    (by.index, by.kind, by.owner),
                    (0, EntryKind::ImageHash(alg), OWNER)
                );
                assert_eq!((signature, chain_position), (None, None));
            }
            v => panic!("{alg}: {v:?}"),
        }
        assert!(
            matches!(
                verify_image_with(&shim, &db, &Database::default(), HashPolicy::Edk2).unwrap(),
                Verdict::Denied(Denial::NotInDb { .. })
            ),
            "{alg}"
        );
    }
}

/// grub is denied when the Debian CA's TBSCertificate SHA-256 (the CA
/// from shim's vendor cert, the anchor in db) is in dbx as
/// EFI_CERT_X509_SHA256, and when its signer's TBS SHA-384/512 is.
#[test]
fn grub_denied_by_x509_tbs_hash_in_dbx() {
    use sha2::Digest;
    let grub = read(GRUB, "grub-efi-amd64-signed");
    let ca = shim_vendor_cert();
    let db = db_of(vec![ca.clone()]);
    let time = [
        0xe7, 0x07, 0x0b, 0x17, 0x0c, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut entry = sha2::Sha256::digest(tbs_of(&ca)).to_vec();
    entry.extend_from_slice(&time);
    let mut lists = SignatureDb::default();
    lists
        .add_hash(SignatureType::X509Sha256, OWNER, entry)
        .unwrap();
    let dbx = db_from(&lists);
    let pe = PeImage::parse(&grub).unwrap();
    let sig = &signatures(pe.cert_table_bytes(&grub).unwrap()).unwrap()[0];
    let ca_embedded = sig.certificates.iter().position(|c| c.der == ca);
    match verify_image(&grub, &db, &dbx).unwrap() {
        Verdict::Denied(Denial::CertHashInDbx {
            entry,
            signature,
            cert,
            revocation_time,
        }) => {
            assert_eq!(entry.kind, EntryKind::CertTbsHash(ImageHashAlg::Sha256));
            assert_eq!((entry.index, entry.owner, signature), (0, OWNER, 0));
            assert_eq!(revocation_time, time);
            match (cert, ca_embedded) {
                (RevokedCert::Embedded { index, .. }, Some(i)) => assert_eq!(index, i),
                (RevokedCert::DbAnchor(a), None) => assert_eq!(a.index, 0),
                (c, e) => panic!("{c:?} (CA embedded at {e:?})"),
            }
        }
        v => panic!("{v:?}"),
    }
    // The signer certificate's TBS hash with SHA-384 and SHA-512.
    let signer = &sig.certificates[0].der;
    for (t, alg) in [
        (SignatureType::X509Sha384, ImageHashAlg::Sha384),
        (SignatureType::X509Sha512, ImageHashAlg::Sha512),
    ] {
        let mut entry = ImageHashAlg::digest(alg, &tbs_of(signer))
            .as_bytes()
            .to_vec();
        entry.extend_from_slice(&[0; 16]);
        let mut lists = SignatureDb::default();
        lists.add_hash(t, OWNER, entry).unwrap();
        match verify_image(&grub, &db, &db_from(&lists)).unwrap() {
            Verdict::Denied(Denial::CertHashInDbx {
                entry,
                cert: RevokedCert::Embedded { index, subject },
                ..
            }) => {
                assert_eq!(entry.kind, EntryKind::CertTbsHash(alg));
                assert_eq!(index, 0);
                assert_eq!(subject, subject_of(signer));
            }
            v => panic!("{alg}: {v:?}"),
        }
    }
    // An unrelated TBS hash denies nothing.
    let mut lists = SignatureDb::default();
    lists
        .add_hash(SignatureType::X509Sha256, OWNER, vec![0x5a; 48])
        .unwrap();
    assert!(matches!(
        verify_image(&grub, &db, &db_from(&lists)).unwrap(),
        Verdict::Allowed { .. }
    ));
}

/// RSA-2048 entries are kept, listed as ignored, and decide nothing.
#[test]
fn rsa2048_entries_are_kept_and_ignored() {
    let shim = read(SHIM, "shim-signed");
    let mut lists = SignatureDb::default();
    lists
        .add_hash(SignatureType::Rsa2048, OWNER, vec![0xab; 256])
        .unwrap();
    let db = db_from(&lists);
    assert_eq!(db.records().len(), 1);
    assert_eq!(db.ignored().count(), 1);
    assert_eq!(db.records()[0].kind, EntryKind::Rsa2048);
    assert!(matches!(
        verify_image(&shim, &db, &db).unwrap(),
        Verdict::Denied(Denial::NotInDb { .. })
    ));
}

/// Debian's OVMF_VARS_4M.ms.fd carries a dbx of one SHA-256 entry (the
/// SHA-256 of nothing, e3b0c442…, a placeholder); it parses, denies none of
/// the real images, and a hash added to that real list is honoured under
/// its real index and owner.
#[test]
fn ovmf_dbx_parses_and_its_hash_entries_are_honoured() {
    let db = Database::from_signature_db(&store_var(OVMF_VARS_MS, SecureBootVar::Db));
    let mut dbx_lists = store_var(OVMF_VARS_MS, SecureBootVar::Dbx);
    let real = Database::from_signature_db(&dbx_lists);
    assert_eq!(real.records().len(), 1);
    let r = &real.records()[0];
    assert_eq!(r.kind, EntryKind::ImageHash(ImageHashAlg::Sha256));
    assert_eq!(
        hex(&r.data),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let shim = read(SHIM, "shim-signed");
    assert!(matches!(
        verify_image(&shim, &db, &real).unwrap(),
        Verdict::Allowed { .. }
    ));
    let owner = r.owner;
    dbx_lists
        .add_hash(SignatureType::Sha256, owner, sha256(&shim).to_vec())
        .unwrap();
    match verify_image(&shim, &db, &db_from(&dbx_lists)).unwrap() {
        Verdict::Denied(Denial::HashInDbx { entry }) => {
            assert_eq!((entry.index, entry.list, entry.owner), (1, 0, owner))
        }
        v => panic!("{v:?}"),
    }
}

/// The dbx variables measured into PCR 7 by real firmware (the shared
/// event-log corpus: GCE Shielded VMs, tpm2-tss' captures) parse; every
/// entry is kept with its index; none revokes today's shim, grub or kernel;
/// and shim's hash appended to a real dbx denies it under that index.
#[test]
fn real_dbx_from_event_logs_parse_and_are_honoured() {
    use trustlaunch_eventlog::{EventData, EventLog};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/eventlogs");
    let mut dbxs = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let Ok(log) = EventLog::parse(&std::fs::read(&path).unwrap()) else {
            continue;
        };
        for ev in log.events() {
            if let Ok(EventData::Variable(v)) = ev.decode() {
                if v.name == "dbx" && !v.data.is_empty() {
                    let lists = SignatureDb::parse(&v.data)
                        .unwrap_or_else(|e| panic!("{}: dbx: {e}", path.display()));
                    dbxs.push((path.clone(), lists));
                }
            }
        }
    }
    let biggest = dbxs
        .iter()
        .map(|(_, l)| l.entries().count())
        .max()
        .unwrap_or(0);
    assert!(
        biggest >= 100,
        "expected a real Microsoft dbx (hundreds of hashes) in {}",
        dir.display()
    );
    let db = Database::from_signature_db(&store_var(OVMF_VARS_MS, SecureBootVar::Db));
    let debian = db_of(vec![shim_vendor_cert()]);
    let shim = read(SHIM, "shim-signed");
    let grub = read(GRUB, "grub-efi-amd64-signed");
    let kernel = read(&kernel_path(), "linux-image-amd64");
    for (path, lists) in &dbxs {
        let dbx = Database::from_signature_db(lists);
        assert_eq!(dbx.records().len(), lists.entries().count());
        for (i, r) in dbx.records().iter().enumerate() {
            assert_eq!(r.index, i);
        }
        let name = path.display();
        assert!(
            matches!(
                verify_image(&shim, &db, &dbx).unwrap(),
                Verdict::Allowed { .. }
            ),
            "{name}"
        );
        for img in [&grub, &kernel] {
            assert!(
                matches!(
                    verify_image(img, &debian, &dbx).unwrap(),
                    Verdict::Allowed { .. }
                ),
                "{name}"
            );
        }
        let mut more = lists.clone();
        more.add_hash(SignatureType::Sha256, OWNER, sha256(&shim).to_vec())
            .unwrap();
        let with = db_from(&more);
        let added = with
            .records()
            .iter()
            .find(|r| r.owner == OWNER)
            .map(|r| r.index)
            .unwrap();
        match verify_image(&shim, &db, &with).unwrap() {
            Verdict::Denied(Denial::HashInDbx { entry }) => {
                assert_eq!((entry.index, entry.owner), (added, OWNER), "{name}")
            }
            v => panic!("{name}: {v:?}"),
        }
    }
}

#[test]
fn both_shim_signatures_verify_with_two_cert_chains() {
    use trustlaunch_secureboot::verify::check_signature;
    let shim = read(SHIM, "shim-signed");
    let pe = PeImage::parse(&shim).unwrap();
    let sigs = signatures(pe.cert_table_bytes(&shim).unwrap()).unwrap();
    assert_eq!(
        sigs.len(),
        2,
        "Debian shim carries the 2011 and 2023 Microsoft signatures"
    );
    for s in &sigs {
        let v = check_signature(&shim, &pe, s).unwrap();
        assert_eq!(v.chain.len(), 2, "signer plus its intermediate CA");
    }
}

/// Every truncation of the first 4 KiB of a real image (its headers) and
/// of the whole signed image at coarse steps: errors, never panics.
#[test]
fn truncations_never_panic() {
    let grub = read(GRUB, "grub-efi-amd64-signed");
    let db = Database::default();
    for len in (0..4096).chain((4096..grub.len()).step_by(4093)) {
        let cut = &grub[..len];
        let _ = image_hash(cut, ImageHashAlg::Sha256);
        let _ = verify_image(cut, &db, &db);
    }
}

/// Single-byte corruptions of the header region (hashing) and of the
/// certificate table (signature parsing; full checks on a sample, since RSA
/// is slow in debug builds): errors, never panics.
#[test]
fn header_and_signature_corruptions_never_panic() {
    use trustlaunch_secureboot::pkcs7::signatures;
    use trustlaunch_secureboot::verify::check_signature;
    let grub = read(GRUB, "grub-efi-amd64-signed");
    let pe = PeImage::parse(&grub).unwrap();
    let mut copy = grub.clone();
    for at in 0..pe.size_of_headers as usize {
        for v in [0x00u8, 0xff, 0x80] {
            let old = copy[at];
            copy[at] = v;
            // Parse and range computation only: hashing 1 MB per case is slow in debug.
            if let Ok(pe) = PeImage::parse(&copy) {
                let _ = hashed_ranges(&pe, copy.len());
            }
            copy[at] = old;
        }
    }
    let mut table = pe.cert_table_bytes(&grub).unwrap().to_vec();
    for at in 0..table.len() {
        for v in [0x00u8, 0xff, 0x80] {
            let old = table[at];
            table[at] = v;
            if let Ok(sigs) = signatures(&table) {
                if at % 97 == 0 {
                    for s in &sigs {
                        let _ = check_signature(&grub, &pe, s);
                    }
                }
            }
            table[at] = old;
        }
    }
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = image_hash(&bytes, ImageHashAlg::Sha1);
        let _ = verify_image(&bytes, &Database::default(), &Database::default());
        let _ = trustlaunch_secureboot::pkcs7::win_certificates(&bytes);
        let _ = trustlaunch_secureboot::pkcs7::parse_signature(&bytes);
    }

    #[test]
    fn random_bytes_behind_mz_pe_never_panic(
        lfanew in 0u32..256,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
    ) {
        let mut img = vec![0u8; 0x40];
        img[0] = b'M';
        img[1] = b'Z';
        img[0x3c..0x40].copy_from_slice(&lfanew.to_le_bytes());
        img.resize(lfanew as usize, 0);
        img.extend_from_slice(b"PE\0\0");
        img.extend_from_slice(&tail);
        let _ = image_hash(&img, ImageHashAlg::Sha256);
        let _ = verify_image(&img, &Database::default(), &Database::default());
    }
}

/// Write `der` as PEM to the scratch directory (sbverify reads PEM).
fn scratch_pem(name: &str, der_bytes: &[u8]) -> String {
    use der::EncodePem;
    let cert = <x509_cert::Certificate as der::Decode>::from_der(der_bytes).unwrap();
    let path = scratch_file(name);
    std::fs::write(&path, cert.to_pem(der::pem::LineEnding::LF).unwrap()).unwrap();
    path
}

/// Decisions against sbverify: for grub and the kernel, `sbverify --cert`
/// and our db of that one certificate agree (Debian CA: yes; Microsoft
/// UEFI CA 2011 and a throw-away certificate: no). For Debian's shim,
/// sbverify 0.9.4 (OpenSSL 3) answers "Signature verification OK" under
/// *any* certificate, even the throw-away one that signed nothing, while we
/// (and firmware) allow shim only under a Microsoft CA. If a later
/// sbverify stops accepting that, this test fails and should be updated.
#[test]
fn decisions_match_sbverify_except_its_shim_acceptance() {
    let debian = shim_vendor_cert();
    let microsoft = microsoft_uefi_ca_2011();
    let throwaway = scratch_cert_der();
    let certs = [
        ("debian", debian.clone()),
        ("microsoft", microsoft.clone()),
        ("throwaway", throwaway.clone()),
    ];
    let kernel = kernel_path();
    for (path, pkg, good) in [
        (GRUB, "grub-efi-amd64-signed", "debian"),
        (kernel.as_str(), "linux-image-amd64", "debian"),
        (SHIM, "shim-signed", "microsoft"),
    ] {
        let data = read(path, pkg);
        for (name, der_bytes) in &certs {
            let pem = scratch_pem(&format!("{name}.pem"), der_bytes);
            let (sb_ok, text) = run("sbverify", "sbsigntool", &["--cert", &pem, path]);
            let ours_ok = matches!(
                verify_image(&data, &db_of(vec![der_bytes.clone()]), &Database::default()).unwrap(),
                Verdict::Allowed { .. }
            );
            assert_eq!(ours_ok, *name == good, "ours: {path} under {name}");
            if path == SHIM {
                assert!(
                    sb_ok,
                    "sbverify no longer accepts shim under {name}:\n{text}"
                );
            } else {
                assert_eq!(
                    sb_ok, ours_ok,
                    "sbverify vs ours: {path} under {name}:\n{text}"
                );
            }
        }
    }
}
