//! OVMF variable store tests, differential against `virt-fw-vars`
//! (PyPI `virt-firmware`) over Debian's `ovmf` package images. Missing tools
//! or images fail the test with an install hint; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use trustlaunch_eventlog::Guid;
use trustlaunch_secureboot::siglist::SignatureType;
use trustlaunch_secureboot::varstore::{
    EfiTime, KeyTemplate, SecureBootVar, VarStore, VarStoreJson, Variable, CUSTOM_MODE_ENABLE,
    SECURE_BOOT_ENABLE_DISABLE,
};

const EMPTY: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const OWNER: &str = "11111111-2222-3333-4444-555555555555";

fn image(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path}: {e}; install the reference images with `apt-get install -y ovmf`")
    })
}

fn tool(name: &str) -> Command {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{name} not found: install it (`pip install virt-firmware` for virt-fw-vars, `apt-get install -y openssl`)"
    );
    Command::new(name)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tl-varstore-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// virt-fw-vars' JSON listing of a store file.
fn reference_json(file: &Path, dir: &Path) -> VarStoreJson {
    let out = dir.join("ref.json");
    run(tool("virt-fw-vars")
        .arg("-i")
        .arg(file)
        .arg("--output-json")
        .arg(&out));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// Comparable form: sorted (name, guid, attr, data, time).
fn canon(json: &VarStoreJson) -> Vec<(String, String, u32, String, Option<String>)> {
    let mut v: Vec<_> = json
        .variables
        .iter()
        .map(|j| {
            (
                j.name.clone(),
                j.guid.clone(),
                j.attr,
                j.data.clone(),
                j.time.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

fn self_signed(dir: &Path, cn: &str) -> Vec<u8> {
    let path = dir.join(format!("{cn}.der"));
    run(tool("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(dir.join(format!("{cn}.key")))
        .args(["-outform", "DER", "-out"])
        .arg(&path));
    std::fs::read(path).unwrap()
}

#[test]
fn ms_listing_equals_virt_fw_vars() {
    let dir = scratch("listing");
    let ours = VarStore::parse(&image(MS)).unwrap();
    assert_eq!(ours.variables.len(), 31);
    assert_eq!(
        canon(&ours.to_json()),
        canon(&reference_json(Path::new(MS), &dir))
    );
    let kek = ours.get("KEK", Guid::GLOBAL_VARIABLE).unwrap();
    assert_eq!(kek.attributes, 0x27);
    assert!(!kek.timestamp.is_zero());
    assert!(!kek.signature_db().unwrap().lists.is_empty());
}

#[test]
fn unchanged_rewrite_is_byte_identical_to_virt_fw_vars() {
    for src in [EMPTY, MS] {
        let dir = scratch("rewrite");
        let out = dir.join("out.fd");
        run(tool("virt-fw-vars").arg("-i").arg(src).arg("-o").arg(&out));
        let ours = VarStore::parse(&image(src)).unwrap().to_bytes().unwrap();
        assert_eq!(ours.len(), 540_672);
        assert!(
            ours == std::fs::read(&out).unwrap(),
            "{src}: rewrite differs from virt-fw-vars"
        );
    }
}

#[test]
fn enroll_equals_virt_fw_vars_and_reads_back() {
    let dir = scratch("enroll");
    let (pk, kek, db) = (
        self_signed(&dir, "PK"),
        self_signed(&dir, "KEK"),
        self_signed(&dir, "db"),
    );
    let reference = dir.join("ref.fd");
    run(tool("virt-fw-vars")
        .args(["-i", EMPTY])
        .args(["--set-pk", OWNER])
        .arg(dir.join("PK.der"))
        .args(["--add-kek", OWNER])
        .arg(dir.join("KEK.der"))
        .args(["--add-db", OWNER])
        .arg(dir.join("db.der"))
        .arg("--sb")
        .arg("-o")
        .arg(&reference));

    let owner = Guid::parse(OWNER).unwrap();
    let mut store = VarStore::parse(&image(EMPTY)).unwrap();
    store
        .enroll_x509(SecureBootVar::Pk, owner, &pk, true)
        .unwrap();
    store
        .enroll_x509(SecureBootVar::Kek, owner, &kek, false)
        .unwrap();
    store
        .enroll_x509(SecureBootVar::Db, owner, &db, false)
        .unwrap();
    store.enable_secure_boot().unwrap();
    let bytes = store.to_bytes().unwrap();
    let ours = dir.join("ours.fd");
    std::fs::write(&ours, &bytes).unwrap();

    // Same variable content (names, GUIDs, attributes, data, timestamps).
    assert_eq!(
        canon(&reference_json(&ours, &dir)),
        canon(&reference_json(&reference, &dir))
    );
    // And, since both compact and sort by name, the same bytes.
    assert!(
        bytes == std::fs::read(&reference).unwrap(),
        "image differs from virt-fw-vars"
    );
    // Reads back identically with our parser.
    let back = VarStore::parse(&bytes).unwrap();
    assert_eq!(canon(&back.to_json()), canon(&store.to_json()));
    assert_eq!(
        back.get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)
            .unwrap()
            .data,
        vec![1]
    );
    assert_eq!(
        back.get("CustomMode", CUSTOM_MODE_ENABLE).unwrap().data,
        vec![0]
    );
    let dbx = back.get("dbx", Guid::IMAGE_SECURITY_DATABASE).unwrap();
    assert_eq!(dbx.timestamp, EfiTime::INITIAL);
    assert_eq!(
        dbx.signature_db().unwrap().lists[0].type_guid,
        SignatureType::Sha256.guid()
    );
}

#[test]
fn json_round_trip_rebuilds_the_image() {
    let img = image(MS);
    let store = VarStore::parse(&img).unwrap();
    let text = serde_json::to_string(&store.to_json()).unwrap();
    assert!(text.contains("\"signatures\""));
    let json: VarStoreJson = serde_json::from_str(&text).unwrap();
    let mut other = VarStore::parse(&image(EMPTY)).unwrap();
    other.set_from_json(&json).unwrap();
    // Monotonic counts are not in the JSON; OVMF's are zero in templates.
    assert_eq!(other.to_bytes().unwrap(), store.to_bytes().unwrap());
}

#[test]
fn microsoft_template_copies_kek_and_db() {
    let ms = VarStore::parse(&image(MS)).unwrap();
    let keys = KeyTemplate::microsoft(&image(MS)).unwrap();
    let mut store = VarStore::parse(&image(EMPTY)).unwrap();
    store.apply_keys(&keys).unwrap();
    for which in [SecureBootVar::Kek, SecureBootVar::Db] {
        let (name, guid) = which.id();
        assert_eq!(
            store.get(name, guid).unwrap().data,
            ms.get(name, guid).unwrap().data
        );
    }
    assert!(store.get("PK", Guid::GLOBAL_VARIABLE).is_none());
    let before = store.clone();
    store.apply_keys(&KeyTemplate::none()).unwrap();
    assert_eq!(store, before);
}

#[test]
fn set_delete_and_store_full() {
    let mut store = VarStore::parse(&image(EMPTY)).unwrap();
    let n = store.variables.len();
    store.set(Variable::new(
        "Test",
        Guid::GLOBAL_VARIABLE,
        7,
        vec![1, 2, 3],
    ));
    let back = VarStore::parse(&store.to_bytes().unwrap()).unwrap();
    assert_eq!(
        back.get("Test", Guid::GLOBAL_VARIABLE).unwrap().data,
        vec![1, 2, 3]
    );
    assert!(store.delete("Test", Guid::GLOBAL_VARIABLE));
    assert_eq!(store.variables.len(), n);
    let cap = store.capacity();
    store.set(Variable::new("Big", Guid::GLOBAL_VARIABLE, 7, vec![0; cap]));
    assert!(store.to_bytes().is_err());
    store.disable_secure_boot().unwrap();
    assert_eq!(
        store
            .get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)
            .unwrap()
            .data,
        vec![0]
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let img = image(MS);
    let store = VarStore::parse(&img).unwrap();
    let last_var_end = 0x64 + 0x4000; // covers all variables of the template
    for len in 0..last_var_end.min(img.len()) {
        assert!(
            VarStore::parse(&img[..len]).is_err(),
            "truncation at {len} accepted"
        );
    }
    assert!(store.capacity() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn hostile_header_and_variable_bytes_never_panic(
        edits in proptest::collection::vec((0usize..0x4000, any::<u8>()), 1..16)
    ) {
        let mut img = image(MS);
        for (at, b) in edits {
            img[at] = b;
        }
        if let Ok(s) = VarStore::parse(&img) {
            let _ = s.to_json();
            let _ = s.to_bytes();
        }
    }

    #[test]
    fn random_images_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = VarStore::parse(&bytes);
    }
}

/// A store OVMF rewrote at boot (deleted copies, appended variables): see
/// tests/data/README.md. Our listing equals virt-fw-vars', and a rewrite
/// compacts it without changing any live variable.
#[test]
fn ovmf_written_store_skips_deleted_variables() {
    let dir = scratch("booted");
    let prefix = include_bytes!("data/ovmf-booted-vars.prefix.bin");
    let mut img = prefix.to_vec();
    img.extend_from_slice(&image(EMPTY)[prefix.len()..]);
    let path = dir.join("booted.fd");
    std::fs::write(&path, &img).unwrap();

    let store = VarStore::parse(&img).unwrap();
    let reference = reference_json(&path, &dir);
    assert_eq!(canon(&store.to_json()), canon(&reference));
    assert!(store.get("PK", Guid::GLOBAL_VARIABLE).is_some());
    assert_eq!(
        store
            .get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)
            .unwrap()
            .data,
        vec![1]
    );
    let compacted = VarStore::parse(&store.to_bytes().unwrap()).unwrap();
    assert_eq!(canon(&compacted.to_json()), canon(&reference));
}

/// edk2's State handling: VAR_ADDED counts, a copy "in deleted transition"
/// (0x3e) counts only while no VAR_ADDED copy exists, deleted (0x3c) and
/// header-only (0x7f) copies never do.
#[test]
fn variable_states_follow_edk2() {
    let mut store = VarStore::parse(&image(EMPTY)).unwrap();
    store.set(Variable::new("zzz", Guid::GLOBAL_VARIABLE, 7, vec![1]));
    let mut img = store.to_bytes().unwrap();
    let name: Vec<u8> = "zzz\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let at = img.windows(name.len()).position(|w| w == name).unwrap() - 60;
    let len = 60 + name.len() + 4; // one data byte, padded
    let copy: Vec<u8> = img[at..at + len].to_vec();
    let state_of = |img: &[u8]| {
        VarStore::parse(img)
            .unwrap()
            .get("zzz", Guid::GLOBAL_VARIABLE)
            .map(|v| v.data.clone())
    };
    assert_eq!(state_of(&img), Some(vec![1]));
    img[at + 2] = 0x3e; // in deleted transition, no other copy: still live
    assert_eq!(state_of(&img), Some(vec![1]));
    let mut newer = copy.clone();
    newer[60 + name.len()] = 2;
    img[at + len..at + 2 * len].copy_from_slice(&newer); // VAR_ADDED copy follows
    assert_eq!(state_of(&img), Some(vec![2]));
    img[at + len + 2] = 0x3c; // the new copy deleted: the transitional one is back
    assert_eq!(state_of(&img), Some(vec![1]));
    img[at + 2] = 0x3c;
    assert_eq!(state_of(&img), None);
    img[at + 2] = 0x7f;
    assert_eq!(state_of(&img), None);
}
