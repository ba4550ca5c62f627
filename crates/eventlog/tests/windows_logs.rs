//! Real Windows boot logs (`tests/data/windows`, see its README): each
//! parses, replays to the PCR values published with it, every SIPA event
//! decodes, and the Windows section of its boot evidence says what the
//! log's bytes say (checked independently of this crate).

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sipa_events;
use std::collections::BTreeMap;

use trustlaunch_eventlog::{
    replay, verify, BootEvidence, Digest, EventLog, HashAlg, PcrBanks, PcrStatus,
};

fn read(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/windows")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SHA-256 PCRs published with the Supermicro log (`allpcrs["11"]`).
fn supermicro_sha256() -> PcrBanks {
    let hex = [
        (
            0,
            "c239b1c8812d0a3f451205ada4635efe3f410a4e7e90e266750ff93aa17685d0",
        ),
        (
            1,
            "4630e738fcdf71c1332a672b2af5e75e236521dd9d8d981e232e08904f49dfc6",
        ),
        (
            2,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
        ),
        (
            3,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
        ),
        (
            4,
            "0bb23ce2e09e810282112c5dcdc0f23eb2f79e4ee10abfb383b6ca0b72b4db44",
        ),
        (
            5,
            "37a5ff7ae66b5067852d9e6c06746f1b11428fe463d23b4591fab9cbc52a9a4b",
        ),
        (
            6,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
        ),
        (
            7,
            "852b40192a48271a3974aeeb2548c61cc9487d7ce471eeb0b39dc439c259539b",
        ),
        (
            11,
            "0fe6e8f2110d5d53935c9e7d6f6bf722598b550595aabdc6e4fd2ecdf310f980",
        ),
        (
            12,
            "d715554c7b5f86121113dbe42f42370b3a27d9544281618a032cdafb5434c9c0",
        ),
        (
            13,
            "dc6de4461fcfd57e0b8baa02c5567482e4cac0a35db56a67136afcf25797506d",
        ),
        (
            14,
            "bfb9bb28a139c9a60fd48dff1f29537a9f0a942fafecc55530b492048627ab03",
        ),
    ];
    let mut bank = BTreeMap::new();
    for (pcr, h) in hex {
        let bytes = trustlaunch_eventlog::hex::decode(h).unwrap();
        bank.insert(pcr, Digest::new(HashAlg::Sha256, &bytes).unwrap());
    }
    PcrBanks::from([(HashAlg::Sha256, bank)])
}

#[test]
fn supermicro_windows_server_2022_replays_to_its_sha256_pcrs() {
    let log = EventLog::parse(&read("guard-imn-supermicro-ws2022.bin")).unwrap();
    assert_eq!(log.banks(), [HashAlg::Sha1, HashAlg::Sha256]);
    // The Spec ID event and 38 more; Windows' own events (PCRs 11-14 and
    // the trust point at PCR 0xFFFFFFFF) carry only a SHA-256 digest.
    assert_eq!(log.events().len(), 39);
    for e in log.events().iter().filter(|e| e.pcr >= 11) {
        assert!(e.digest(HashAlg::Sha1).is_none(), "event {}", e.index);
        assert!(e.digest(HashAlg::Sha256).is_some(), "event {}", e.index);
    }
    let report = verify(&log, &supermicro_sha256());
    assert!(
        report.passed(),
        "{:?}",
        report.mismatches().collect::<Vec<_>>()
    );
    assert_eq!(report.checks.len(), 12);
    assert!(report.checks.iter().all(|c| c.status == PcrStatus::Match));
    // Every event whose digest the spec (or Windows, for SIPA events and
    // its trust point at PCR 0xFFFFFFFF) ties to its data is that data's.
    assert_eq!(trustlaunch_eventlog::check_digests(&log), []);
    // PCRs 8-10 were never extended: the TPM held zeros, the log has none.
    let replayed = replay(&log);
    for pcr in 8..=10 {
        assert!(!replayed.pcrs[&HashAlg::Sha256].contains_key(&pcr));
    }
}

#[test]
fn supermicro_windows_server_2022_as_windows_measured_it() {
    let log = EventLog::parse(&read("guard-imn-supermicro-ws2022.bin")).unwrap();
    let all = sipa_events(&log);
    assert_eq!(all.len(), 1033, "SIPA events in all");
    let w = BootEvidence::extract(&log).windows.expect("a Windows boot");
    assert!(w.unknown_types.is_empty(), "{:?}", w.unknown_types);
    // Boot counter 13, once, in PCR 12's trust boundary (event 28).
    let counters: Vec<_> = w
        .boot_counter
        .iter()
        .map(|f| (f.event, f.pcr, f.value))
        .collect();
    assert_eq!(counters, [(28, 12, 13)]);
    // Boot manager (events 28, 29) and loader (31, 32), each into PCRs 12
    // and 13: code integrity on; test and flight signing and boot
    // debugging off.
    let at = |v: &[trustlaunch_eventlog::windows::WindowsFact<bool>]| -> Vec<(usize, bool)> {
        v.iter().map(|f| (f.event, f.value)).collect()
    };
    let four = |b| [(28, b), (29, b), (31, b), (32, b)];
    assert_eq!(at(&w.code_integrity), four(true));
    assert_eq!(at(&w.test_signing), four(false));
    assert_eq!(at(&w.flight_signing), four(false));
    assert_eq!(at(&w.boot_debugging), four(false));
    // The loader's: no kernel debugger, no safe mode, no WinPE, no
    // hypervisor debugger measured.
    assert_eq!(at(&w.kernel_debugging), [(31, false), (32, false)]);
    assert_eq!(at(&w.safe_mode), [(31, false), (32, false)]);
    assert_eq!(at(&w.winpe), [(31, false), (32, false)]);
    assert!(w.hypervisor_debugging.is_empty());
    // DEP opt-in; no hypervisor launched, VBS off, so no HVCI policy.
    let numbers = |v: &[trustlaunch_eventlog::windows::WindowsFact<u64>]| -> Vec<u64> {
        v.iter().map(|f| f.value).collect()
    };
    assert_eq!(numbers(&w.dep_policy), [1, 1]);
    assert_eq!(numbers(&w.hypervisor_launch_type), [0, 0]);
    assert_eq!(numbers(&w.vsm_launch_type), [0, 0]);
    assert!(w.hvci_policy.is_empty());
    // No BitLocker unlock measured, by each of the four.
    assert_eq!(numbers(&w.bitlocker_unlock), [0, 0, 0, 0]);
    // The ELAM driver: Windows Defender, its policy digest.
    assert_eq!(w.elam.len(), 1);
    assert_eq!(w.elam[0].key_name, "Windows Defender");
    assert_eq!(
        w.elam[0].measured.as_deref(),
        Some("067d5b9dc5627f97dcf3feff602a342ed698d2cc")
    );
    // 146 loaded-module aggregations: 73 name a file, with its signer and
    // validation; the other 73 carry only an Authenticode hash.
    assert_eq!(w.modules.len(), 146);
    let named: Vec<_> = w.modules.iter().filter(|m| m.path.is_some()).collect();
    assert_eq!(named.len(), 73);
    assert!(w
        .modules
        .iter()
        .filter(|m| m.path.is_none())
        .all(|m| m.authenticode_hash.is_some() && m.issuer.is_none()));
    assert!(named.iter().all(|m| m.validated == Some(true)));
    let mut issuers = BTreeMap::<&str, usize>::new();
    for m in &named {
        *issuers.entry(m.issuer.as_deref().unwrap()).or_default() += 1;
    }
    assert_eq!(
        issuers.into_iter().collect::<Vec<_>>(),
        [
            ("Microsoft Code Signing PCA 2010", 5),
            ("Microsoft Windows Production PCA 2011", 67),
            ("Microsoft Windows Third Party Component CA 2014", 1),
        ]
    );
    let winload = named
        .iter()
        .find(|m| m.path.as_deref() == Some("\\Windows\\system32\\winload.efi"))
        .expect("winload.efi");
    assert_eq!(
        winload.authenticode_hash.as_deref(),
        Some("2efe36984916934fd694283646d9cffe327d5c130ee9c3a7db656f5c8fdac6a3")
    );
    assert_eq!(winload.hash_algorithm, Some(0x800c));
    assert!(named
        .iter()
        .any(|m| m.path.as_deref() == Some("\\EFI\\MICROSOFT\\BOOT\\en-US\\BOOTMGFW.EFI.MUI")));
}
