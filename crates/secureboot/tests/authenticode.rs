//! Authenticode hashing and verification against real Debian binaries.
//!
//! Needs the Debian packages `shim-signed grub-efi-amd64-signed
//! linux-image-amd64 osslsigncode ovmf` installed; a missing file fails the
//! test with a message naming the package (never a skip).

use std::process::Command;
use trustlaunch_secureboot::authenticode::{hashed_ranges, image_hash, ImageDigest, ImageHashAlg};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::verify::{
    verify_image, Database, DbEntry, Denial, SignatureError, Verdict,
};

const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
const GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

fn read(path: &str, package: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}); install it with `apt-get install -y {package}`")
    })
}

fn kernel_path() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/boot")
        .expect("/boot missing; apt-get install -y linux-image-amd64")
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.starts_with("/boot/vmlinuz-"))
        .collect();
    v.sort();
    v.pop()
        .expect("no /boot/vmlinuz-*; apt-get install -y linux-image-amd64")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    match image_hash(data, ImageHashAlg::Sha256).expect("image hash") {
        ImageDigest::Sha256(d) => d,
        other => panic!("unexpected {other:?}"),
    }
}

/// `osslsigncode verify` prints "Calculated message digest : HEX".
fn osslsigncode_digest(path: &str) -> String {
    let out = Command::new("osslsigncode")
        .args(["verify", "-in", path])
        .output()
        .expect("osslsigncode missing; apt-get install -y osslsigncode");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("Calculated message digest"))
        .unwrap_or_else(|| panic!("no calculated digest from osslsigncode for {path}:\n{text}"));
    line.rsplit(':').next().unwrap().trim().to_ascii_lowercase()
}

#[test]
fn grub_hash_matches_osslsigncode() {
    let data = read(GRUB, "grub-efi-amd64-signed");
    assert_eq!(hex(&sha256(&data)), osslsigncode_digest(GRUB));
}

#[test]
fn kernel_hash_matches_osslsigncode() {
    let path = kernel_path();
    let data = read(&path, "linux-image-amd64");
    assert_eq!(hex(&sha256(&data)), osslsigncode_digest(&path));
}

#[test]
fn signatures_parse_and_digest_matches() {
    use trustlaunch_secureboot::pkcs7::signatures;
    for (path, pkg) in [(SHIM, "shim-signed"), (GRUB, "grub-efi-amd64-signed")] {
        let data = read(path, pkg);
        let pe = PeImage::parse(&data).unwrap();
        let sigs = signatures(pe.cert_table_bytes(&data).unwrap()).unwrap();
        for s in &sigs {
            eprintln!(
                "{path}: {} certs nested {} alg {:?} md {:?}",
                s.certificates.len(),
                s.nested.len(),
                s.signer.digest_alg,
                s.signer.message_digest.as_ref().map(|m| hex(m))
            );
            assert_eq!(hex(&s.image_digest), hex(&sha256(&data)));
        }
    }
}

const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072, little-endian.
const X509_GUID: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Every X.509 certificate in any EFI_SIGNATURE_LIST found by scanning
/// `bytes` for EFI_CERT_X509_GUID (test-only; the crate's varstore parser
/// is the real reader).
fn scan_x509_siglists(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(16).position(|w| w == X509_GUID) {
        let at = i + p;
        i = at + 16;
        if at + 28 > bytes.len() {
            break;
        }
        let (list, hdr, sig) = (
            le32(bytes, at + 16),
            le32(bytes, at + 20),
            le32(bytes, at + 24),
        );
        if sig <= 16 || list < 28 + hdr + sig || at + list > bytes.len() {
            continue;
        }
        let mut e = at + 28 + hdr;
        while e + sig <= at + list {
            out.push(bytes[e + 16..e + sig].to_vec());
            e += sig;
        }
    }
    out
}

fn subject_of(der_bytes: &[u8]) -> String {
    use der::Decode;
    x509_cert::Certificate::from_der(der_bytes)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_default()
}

/// The Microsoft Corporation UEFI CA 2011 from the OVMF "ms" db.
fn microsoft_uefi_ca_2011() -> Vec<u8> {
    let vars = read(OVMF_VARS_MS, "ovmf");
    scan_x509_siglists(&vars)
        .into_iter()
        .find(|c| subject_of(c).contains("Microsoft Corporation UEFI CA 2011"))
        .expect("Microsoft Corporation UEFI CA 2011 not found in OVMF_VARS_4M.ms.fd")
}

/// The vendor certificate built into shim (`.vendor_cert` section: four
/// u32 — authorized size, deauthorized size, authorized offset,
/// deauthorized offset — offsets relative to the section start).
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

fn db_of(certs: Vec<Vec<u8>>) -> Database {
    Database {
        certs,
        sha256_hashes: Vec::new(),
    }
}

#[test]
fn shim_chains_to_microsoft_uefi_ca_2011() {
    let ca = microsoft_uefi_ca_2011();
    let shim = read(SHIM, "shim-signed");
    // Put an unrelated cert first so the reported index is meaningful.
    let db = db_of(vec![shim_vendor_cert(), ca]);
    let v = verify_image(&shim, &db, &Database::default()).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Allowed {
                by: DbEntry::Cert(1),
                signature: Some(0),
                ..
            }
        ),
        "{v:?}"
    );
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
        let v = verify_image(&data, &debian, &Database::default()).unwrap();
        assert!(
            matches!(
                v,
                Verdict::Allowed {
                    by: DbEntry::Cert(0),
                    ..
                }
            ),
            "{path}: {v:?}"
        );
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
    let dbx = Database {
        certs: Vec::new(),
        sha256_hashes: vec![[0u8; 32], sha256(&grub)],
    };
    assert_eq!(
        verify_image(&grub, &debian, &dbx).unwrap(),
        Verdict::Denied(Denial::HashInDbx { index: 1 })
    );
    // The Debian CA in dbx revokes everything it signed, even if also in db.
    let dbx = db_of(vec![shim_vendor_cert()]);
    assert!(matches!(
        verify_image(&grub, &debian, &dbx).unwrap(),
        Verdict::Denied(Denial::CertInDbx {
            signature: 0,
            index: 0,
            chain_position: 0
        })
    ));
}

#[test]
fn image_hash_in_db_allows_unsigned_shim() {
    let data = read("/usr/lib/shim/shimx64.efi", "shim-signed");
    let db = Database {
        certs: Vec::new(),
        sha256_hashes: vec![sha256(&data)],
    };
    assert_eq!(
        verify_image(&data, &db, &Database::default()).unwrap(),
        Verdict::Allowed {
            by: DbEntry::Sha256(0),
            signature: None,
            chain_position: None
        }
    );
    assert!(matches!(
        verify_image(&data, &Database::default(), &Database::default()).unwrap(),
        Verdict::Denied(Denial::NotInDb { .. })
    ));
}

#[test]
fn both_shim_signatures_verify_with_two_cert_chains() {
    use trustlaunch_secureboot::pkcs7::signatures;
    use trustlaunch_secureboot::verify::check_signature;
    let shim = read(SHIM, "shim-signed");
    let pe = PeImage::parse(&shim).unwrap();
    let sigs = signatures(pe.cert_table_bytes(&shim).unwrap()).unwrap();
    assert_eq!(
        sigs.len(),
        2,
        "Debian shim 15.8 carries the 2011 and 2023 Microsoft signatures"
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
