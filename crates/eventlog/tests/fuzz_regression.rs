//! Regression test over the fuzzing corpora: every file of
//! `fuzz/seeds/eventlog_parse/` and `fuzz/regression/eventlog_parse/` goes
//! through the same sequence as the fuzz target
//! (`fuzz/fuzz_targets/eventlog_parse.rs`; keep the two in step): parse; if
//! it parses, decode every event, replay, verify, check digests, extract the
//! boot evidence, and round-trip through `to_bytes`. Nothing may panic and
//! the round trip must hold. See `docs/fuzzing.md`.

use std::fs;
use std::path::{Path, PathBuf};

use trustlaunch_eventlog::{
    check_digests, replay, verify, BootEvidence, Digest, EventLog, PcrBanks, PcrStatus,
};

/// The corpora, relative to the workspace's `fuzz/` directory.
const CORPORA: [&str; 2] = ["seeds/eventlog_parse", "regression/eventlog_parse"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of one corpus directory, sorted; panics with a clear message
/// when the directory is missing or holds no file.
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "fuzz corpus directory {} is missing or unreadable ({e}); it is committed \
             with the repository, see docs/fuzzing.md",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "fuzz corpus directory {} holds no file; it is committed with the repository, \
         see docs/fuzzing.md",
        dir.display()
    );
    files
}

/// The fuzz target's body. Returns whether the input parsed.
fn exercise(name: &str, data: &[u8]) -> bool {
    let Ok(log) = EventLog::parse(data) else {
        return false;
    };

    let uintn = log.uintn_bytes();
    for event in log.events() {
        let _ = event.decode_with_uintn(uintn);
    }

    let replayed = replay(&log);
    let own = verify(&log, &replayed.pcrs);
    for check in &own.checks {
        assert_eq!(
            check.status,
            PcrStatus::Match,
            "{name}: log does not verify against its own replay: {check:?}"
        );
    }
    let zeros: PcrBanks = replayed
        .pcrs
        .iter()
        .map(|(alg, pcrs)| {
            let pcrs = pcrs.keys().map(|&p| (p, Digest::zero(*alg))).collect();
            (*alg, pcrs)
        })
        .collect();
    let _ = verify(&log, &zeros);

    let _ = check_digests(&log);
    let _ = BootEvidence::extract(&log);

    // Round trip: every event survives; without padding, byte for byte.
    let bytes = log.to_bytes();
    let again = EventLog::parse(&bytes)
        .unwrap_or_else(|e| panic!("{name}: re-encoded log does not parse: {e}"));
    assert_eq!(
        again.format(),
        log.format(),
        "{name}: format changed in round trip"
    );
    let n = again.events().len();
    assert!(
        n <= log.events().len(),
        "{name}: round trip added events: {} -> {n}",
        log.events().len()
    );
    for (a, b) in log.events().iter().zip(again.events()) {
        assert_eq!(a.pcr, b.pcr, "{name}: event {}: pcr changed", a.index);
        assert_eq!(
            a.event_type, b.event_type,
            "{name}: event {}: type changed",
            a.index
        );
        assert_eq!(
            a.digests, b.digests,
            "{name}: event {}: digests changed",
            a.index
        );
        assert_eq!(a.data, b.data, "{name}: event {}: data changed", a.index);
    }
    assert_eq!(
        n,
        log.events().len(),
        "{name}: event count changed in round trip"
    );
    if log.trailing_padding() == 0 {
        assert!(bytes == data, "{name}: re-encoding differs from the input");
    }
    true
}

#[test]
fn fuzz_corpora_parse_without_panic_and_round_trip() {
    let root = fuzz_dir();
    for corpus in CORPORA {
        let dir = root.join(corpus);
        let files = corpus_files(&dir);
        let mut parsed = 0usize;
        for path in &files {
            let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let name = path.display().to_string();
            if exercise(&name, &data) {
                parsed += 1;
            }
        }
        eprintln!(
            "{corpus}: {} files, {parsed} parse as event logs",
            files.len()
        );
    }
}

#[test]
fn every_seed_parses() {
    // The seeds are real firmware logs: each must parse, not just not panic.
    let dir = fuzz_dir().join(CORPORA[0]);
    for path in corpus_files(&dir) {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if let Err(e) = EventLog::parse(&data) {
            panic!("seed {} does not parse: {e}", path.display());
        }
    }
}
