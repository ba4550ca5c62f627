//! Authenticode benchmarks on real Debian binaries (read at start; a
//! missing file panics naming its package):
//!
//! - `hash/*`: the Authenticode SHA-256 of the signed kernel and of shim
//!   (PE parse + ranges + hash), against a plain SHA-256 of the same bytes
//!   as the baseline; throughput in bytes of the file.
//! - `pe_parse/*`: `PeImage::parse` alone.
//! - `verify/*`: the whole `verify_image` — parse, hash, PKCS#7, RSA
//!   signature and chain checks, db/dbx decision — of the kernel against
//!   the Debian CA (shim's vendor certificate) and of shim against the
//!   Microsoft db and dbx of Debian's `OVMF_VARS_4M.ms.fd`.
//!
//! `cargo bench -p trustlaunch-secureboot --bench authenticode`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sha2::Digest;
use trustlaunch_secureboot::authenticode::{image_hash, ImageHashAlg};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::varstore::{SecureBootVar, VarStore};
use trustlaunch_secureboot::verify::{verify_image, Database, Verdict};

const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

fn read(path: &str, package: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}); install it with `apt-get install -y {package}`")
    })
}

fn kernel() -> Vec<u8> {
    let mut v: Vec<_> = std::fs::read_dir("/boot")
        .expect("/boot; apt-get install -y linux-image-amd64")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().starts_with("/boot/vmlinuz-"))
        .collect();
    v.sort();
    let p = v
        .pop()
        .expect("no /boot/vmlinuz-*; apt-get install -y linux-image-amd64");
    read(&p.to_string_lossy(), "linux-image-amd64")
}

/// shim's `.vendor_cert` (the Debian Secure Boot CA).
fn debian_ca(shim: &[u8]) -> Vec<u8> {
    let pe = PeImage::parse(shim).unwrap();
    let sec = pe.section_data(shim, ".vendor_cert").unwrap();
    let le32 = |at: usize| u32::from_le_bytes(sec[at..at + 4].try_into().unwrap()) as usize;
    let (size, off) = (le32(0), le32(8));
    sec[off..off + size].to_vec()
}

fn ovmf_db(which: SecureBootVar) -> Database {
    let store = VarStore::parse(&read(OVMF_VARS_MS, "ovmf")).unwrap();
    let (name, guid) = which.id();
    store
        .get(name, guid)
        .map(|v| Database::from_signature_db(&v.signature_db().unwrap()))
        .unwrap_or_default()
}

fn benches(c: &mut Criterion) {
    let kernel = kernel();
    let shim = read(SHIM, "shim-signed");

    let mut g = c.benchmark_group("hash");
    for (name, data) in [("kernel", &kernel), ("shim", &shim)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("authenticode_sha256/{name}"), |b| {
            b.iter(|| image_hash(black_box(data), ImageHashAlg::Sha256).unwrap())
        });
        g.bench_function(format!("raw_sha256/{name}"), |b| {
            b.iter(|| sha2::Sha256::digest(black_box(data.as_slice())))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pe_parse");
    for (name, data) in [("kernel", &kernel), ("shim", &shim)] {
        g.bench_function(name, |b| {
            b.iter(|| PeImage::parse(black_box(data)).unwrap())
        });
    }
    g.finish();

    let debian = Database::from_certs(
        trustlaunch_eventlog::Guid::GLOBAL_VARIABLE,
        [debian_ca(&shim)],
    );
    let none = Database::default();
    let (ms_db, ms_dbx) = (ovmf_db(SecureBootVar::Db), ovmf_db(SecureBootVar::Dbx));
    assert!(matches!(
        verify_image(&kernel, &debian, &none).unwrap(),
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        verify_image(&shim, &ms_db, &ms_dbx).unwrap(),
        Verdict::Allowed { .. }
    ));
    let mut g = c.benchmark_group("verify");
    g.bench_function("kernel_debian_ca", |b| {
        b.iter(|| verify_image(black_box(&kernel), &debian, &none).unwrap())
    });
    g.bench_function("shim_ovmf_ms_db_dbx", |b| {
        b.iter(|| verify_image(black_box(&shim), &ms_db, &ms_dbx).unwrap())
    });
    g.finish();
}

criterion_group!(authenticode, benches);
criterion_main!(authenticode);
