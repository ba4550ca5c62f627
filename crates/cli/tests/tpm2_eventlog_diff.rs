//! Differential test: `trustlaunch eventlog replay FILE --json` against
//! tpm2-tools' `tpm2_eventlog FILE` over every real log of the shared corpus
//! (`../shared/testdata/eventlogs`, see its README).
//!
//! The two must agree on every bank and PCR, except where the reference tool
//! is known to be wrong: those PCRs are listed in [`TOOL_WRONG`] with the
//! reason, and there the test asserts our value against the machine's TPM
//! value from `expected.json` (or, where the corpus publishes none, pins our
//! value, which follows the same rule the published value proves). Logs the
//! tool cannot process at all are listed in [`TOOL_FAILS`]; for those the
//! test asserts that we parse them.
//!
//! The tool must be installed (Debian/Ubuntu: `apt-get install tpm2-tools`).
//! Written against tpm2-tools 5.4; a later tool that fixes one of the
//! listed bugs is accepted (the test then compares as usual).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

/// `bank -> PCR index -> lowercase hex`.
type Pcrs = BTreeMap<String, BTreeMap<u32, String>>;

/// The reference tool; `TPM2_EVENTLOG` overrides the name/path.
fn tool_program() -> String {
    std::env::var("TPM2_EVENTLOG").unwrap_or_else(|_| "tpm2_eventlog".to_string())
}

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/eventlogs");
    assert!(
        dir.join("expected.json").is_file(),
        "the shared test data is missing: expected {} (clone shared/ beside the project)",
        dir.display()
    );
    dir
}

/// Every corpus entry as `(name, path of a binary log)`. The Windows JSON
/// document carries its log base64-encoded in `Log.Raw`; it is written to a
/// file under the test's scratch directory.
fn corpus() -> Vec<(String, PathBuf)> {
    let dir = corpus_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if name == "README.md" || name == "expected.json" {
            continue;
        }
        let path = dir.join(&name);
        if name.ends_with(".json") {
            let doc: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read JSON")).expect("JSON");
            let raw = doc["Log"]["Raw"].as_str().expect("Log.Raw");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .expect("base64 log");
            let out_path = scratch(&format!("{name}.log.bin"));
            std::fs::write(&out_path, bytes).expect("write the extracted log");
            out.push((name, out_path));
        } else {
            out.push((name, path));
        }
    }
    out.sort();
    assert!(out.len() >= 15, "corpus has {} files", out.len());
    out
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tpm2_eventlog_diff-{name}"))
}

/// `expected.json` as `file -> Pcrs`.
fn expected() -> BTreeMap<String, Pcrs> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.json")).expect("expected.json");
    let doc: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let mut out = BTreeMap::new();
    for (file, entry) in doc.as_object().expect("object") {
        out.insert(file.clone(), pcrs_from_json(&entry["pcrs"]));
    }
    out
}

fn pcrs_from_json(v: &Value) -> Pcrs {
    let mut out = Pcrs::new();
    for (alg, bank) in v.as_object().expect("pcrs object") {
        let mut values = BTreeMap::new();
        for (index, hex) in bank.as_object().expect("bank object") {
            let index: u32 = index.parse().expect("PCR index");
            values.insert(
                index,
                hex.as_str().expect("hex string").to_ascii_lowercase(),
            );
        }
        // A bank the log declares but in which nothing was extended (or
        // whose events all lack that bank's digest) has no values; the tool
        // prints no header for it. Compare values only.
        if !values.is_empty() {
            out.insert(alg.clone(), values);
        }
    }
    out
}

/// Our replay, which must succeed on every corpus file.
fn ours(name: &str, path: &Path) -> Pcrs {
    let out = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(["eventlog", "replay"])
        .arg(path)
        .arg("--json")
        .output()
        .expect("run trustlaunch");
    assert!(
        out.status.success(),
        "{name}: trustlaunch eventlog replay failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: replay --json is not JSON: {e}"));
    let obj = doc.as_object().expect("JSON object");
    assert_eq!(
        obj.len(),
        1,
        "{name}: only \"pcrs\" at the top level: {doc}"
    );
    pcrs_from_json(&doc["pcrs"])
}

/// Runs the reference tool. Not installed is a failure, not a skip.
fn run_tool(path: &Path) -> Output {
    let program = tool_program();
    match Command::new(&program).arg(path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` is not installed: this differential test needs tpm2-tools \
             (Debian/Ubuntu: `apt-get install tpm2-tools`; or set TPM2_EVENTLOG to its path)"
        ),
        Err(e) => panic!("running `{program}`: {e}"),
    }
}

/// Parses the `pcrs:` section that `tpm2_eventlog` prints after the events:
///
/// ```text
/// pcrs:
///   sha1:
///     0  : 0x3dcaea25dc86554d94b94aa5bc8f735a49212af8
///     14 : 0x...
///   sha256:
///     ...
/// ```
///
/// Tolerant of spacing, a missing `0x` and upper-case hex; any other line
/// inside the section is an error rather than silently ignored.
fn parse_tool_pcrs(stdout: &str) -> Option<Pcrs> {
    let lines: Vec<&str> = stdout.lines().collect();
    // The last top-level `pcrs:` (event data is always indented).
    let start = lines.iter().rposition(|l| l.trim_end() == "pcrs:")?;
    let mut out = Pcrs::new();
    let mut bank: Option<String> = None;
    for line in &lines[start + 1..] {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            break; // next top-level key
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("tpm2_eventlog pcrs section: unexpected line {line:?}"));
        let key = key.trim();
        let value = value.trim();
        if value.is_empty() {
            bank = Some(key.to_string());
            continue;
        }
        let index: u32 = key
            .parse()
            .unwrap_or_else(|_| panic!("tpm2_eventlog pcrs section: bad PCR index in {line:?}"));
        let hex = value.strip_prefix("0x").unwrap_or(value);
        assert!(
            !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "tpm2_eventlog pcrs section: bad value in {line:?}"
        );
        let bank = bank
            .clone()
            .unwrap_or_else(|| panic!("tpm2_eventlog pcrs section: value before a bank: {line:?}"));
        out.entry(bank)
            .or_default()
            .insert(index, hex.to_ascii_lowercase());
    }
    out.retain(|_, v| !v.is_empty());
    Some(out)
}

/// Where the truth for a PCR the tool gets wrong comes from.
enum Truth {
    /// The machine's TPM value in `expected.json`.
    Expected,
    /// No published value: our value, pinned. It follows the same rule as
    /// the bank whose published value proves it.
    Pinned(&'static str),
}

/// A PCR that `tpm2_eventlog` (5.4) replays wrongly.
struct ToolWrong {
    file: &'static str,
    alg: &'static str,
    pcr: u32,
    truth: Truth,
}

// tss-binary_measurements_hcrtm.bin comes from a machine with an H-CRTM:
// its first measured event is EV_EFI_HCRTM_EVENT (0x80000010, data
// "HCRTM"). With an H-CRTM, the measurement is made by TPM2_HashStart /
// HashData / HashEnd at locality 4, and TPM2_HashStart at locality 4 resets
// PCR 0 to 0x00..04 before extending it (TPM 2.0 Library Part 1, "H-CRTM
// measurement"; PC Client PFP, H-CRTM event). tpm2_eventlog 5.4 does not
// know that event type ("Unknown event type") and starts PCR 0 from all
// zeroes, so its PCR 0 is wrong in every bank: it replays SHA-1 PCR 0 to
// 2162942d...8bccd2, while the machine's TPM held 15f4e6ca...ad69acc5
// (expected.json), which is exactly the replay from 0x00..04. The same
// initial value applies to the SHA-256 and SM3 banks, which have no
// published value: ours are pinned (the tool says 315fc4ea...09822799 and
// cd6b3534...a33416fa, the replays from zero).
const TOOL_WRONG: &[ToolWrong] = &[
    ToolWrong {
        file: "tss-binary_measurements_hcrtm.bin",
        alg: "sha1",
        pcr: 0,
        truth: Truth::Expected,
    },
    ToolWrong {
        file: "tss-binary_measurements_hcrtm.bin",
        alg: "sha256",
        pcr: 0,
        truth: Truth::Pinned("332dd5f22946bd10839599ea0041cc7a59c7b11e6442eca521c0e82b05b1c36d"),
    },
    ToolWrong {
        file: "tss-binary_measurements_hcrtm.bin",
        alg: "sm3_256",
        pcr: 0,
        truth: Truth::Pinned("95ee6f4f62f8adec02adbfd940a07ccc6967d01a5d46e64ab7295c08ac3449d0"),
    },
];

/// A log `tpm2_eventlog` (5.4) exits non-zero on.
struct ToolFails {
    file: &'static str,
    /// For a crash caused by one bad event: the offset of that event. The
    /// tool is then also run on the log cut just before it, and compared.
    cut_at: Option<usize>,
}

const TOOL_FAILS: &[ToolFails] = &[
    // A SHA-1 (TCG 1.2 format) log whose last event (offset 0x11aa9) is an
    // EV_NO_ACTION with PCR index 0xFFFFFFFF. tpm2_eventlog 5.4 takes
    // `ctx->sha1_pcrs[event->pcrIndex]` for every legacy event without a
    // bounds check and extends it even for EV_NO_ACTION, so it hashes
    // memory far outside its PCR array and dies with SIGSEGV (in
    // SHA1_Update). EV_NO_ACTION events are never extended (PC Client PFP),
    // so this event changes no PCR: we replay every PCR the TPM reported
    // (0-7, expected.json), and the tool agrees with us on all 12 PCRs
    // once the log is cut before that event.
    ToolFails {
        file: "ga-option_rom_eventlog",
        cut_at: Some(0x11aa9),
    },
    // A SHA-1 (TCG 1.2 format) log of one event: EV_NO_ACTION, PCR 0,
    // "StartupLocality" (locality 3). tpm2_eventlog 5.4 takes any first
    // EV_NO_ACTION/PCR 0/zero-digest event to be the Spec ID event and
    // rejects its 17 data bytes: "invalid eventDataSize in specid event".
    // The log is valid; it extends nothing.
    ToolFails {
        file: "ga-short_no_action_eventlog",
        cut_at: None,
    },
];

fn diff(ours: &Pcrs, tool: &Pcrs) -> Vec<(String, u32, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let banks: std::collections::BTreeSet<&String> = ours.keys().chain(tool.keys()).collect();
    for alg in banks {
        let empty = BTreeMap::new();
        let o = ours.get(alg).unwrap_or(&empty);
        let t = tool.get(alg).unwrap_or(&empty);
        let pcrs: std::collections::BTreeSet<&u32> = o.keys().chain(t.keys()).collect();
        for pcr in pcrs {
            let (a, b) = (o.get(pcr), t.get(pcr));
            if a != b {
                out.push((alg.clone(), *pcr, a.cloned(), b.cloned()));
            }
        }
    }
    out
}

#[test]
fn replay_agrees_with_tpm2_eventlog_except_where_the_tool_is_wrong() {
    let expected = expected();
    let files = corpus();
    let mut problems = Vec::new();
    let mut compared_pcrs = 0;
    let mut used_wrong = vec![false; TOOL_WRONG.len()];

    for (name, path) in &files {
        let ours = ours(name, path);
        let run = run_tool(path);

        if let Some(fails) = TOOL_FAILS.iter().find(|f| f.file == name) {
            if !run.status.success() {
                // We parsed it (`ours` asserted success and valid JSON); the
                // published TPM values, if any, are ours.
                for (alg, bank) in &expected[name.as_str()] {
                    for (pcr, want) in bank {
                        if let Some(got) = ours.get(alg).and_then(|b| b.get(pcr)) {
                            assert_eq!(got, want, "{name} {alg} PCR {pcr}: TPM value");
                            compared_pcrs += 1;
                        }
                    }
                }
                if let Some(cut) = fails.cut_at {
                    let bytes = std::fs::read(path).expect("read log");
                    assert_eq!(
                        bytes.get(cut..cut + 4),
                        Some(&[0xff; 4][..]),
                        "{name}: the event at {cut:#x} should have PCR index 0xFFFFFFFF"
                    );
                    let cut_path = scratch(&format!("{name}.cut"));
                    std::fs::write(&cut_path, &bytes[..cut]).expect("write cut log");
                    let cut_run = run_tool(&cut_path);
                    assert!(
                        cut_run.status.success(),
                        "{name} cut at {cut:#x}: tpm2_eventlog still fails: {}",
                        String::from_utf8_lossy(&cut_run.stderr)
                    );
                    let tool = parse_tool_pcrs(&String::from_utf8_lossy(&cut_run.stdout))
                        .unwrap_or_else(|| panic!("{name} (cut): no pcrs section"));
                    let d = diff(&ours, &tool);
                    assert!(d.is_empty(), "{name}: ours vs tool on the cut log: {d:?}");
                    compared_pcrs += tool.values().map(BTreeMap::len).sum::<usize>();
                }
                continue;
            }
            // A fixed tool: compare as usual below.
            eprintln!("note: {name}: tpm2_eventlog no longer fails on it");
        }

        assert!(
            run.status.success(),
            "{name}: tpm2_eventlog failed ({}) on a log it is not known to fail on: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        let tool = parse_tool_pcrs(&String::from_utf8_lossy(&run.stdout))
            .unwrap_or_else(|| panic!("{name}: tpm2_eventlog printed no `pcrs:` section"));

        for (alg, pcr, o, t) in diff(&ours, &tool) {
            let known = TOOL_WRONG
                .iter()
                .position(|w| w.file == name && w.alg == alg && w.pcr == pcr);
            let Some(k) = known else {
                problems.push(format!(
                    "{name} {alg} PCR {pcr}: ours {}, tpm2_eventlog {}",
                    o.as_deref().unwrap_or("(no events)"),
                    t.as_deref().unwrap_or("(no events)")
                ));
                continue;
            };
            used_wrong[k] = true;
        }
        compared_pcrs += tool.values().map(BTreeMap::len).sum::<usize>();

        // Where the tool is wrong, ours must be the truth (whether or not
        // the installed tool still gets it wrong).
        for w in TOOL_WRONG.iter().filter(|w| w.file == name) {
            let want = match w.truth {
                Truth::Expected => expected[name.as_str()][w.alg][&w.pcr].clone(),
                Truth::Pinned(hex) => hex.to_string(),
            };
            let got = ours.get(w.alg).and_then(|b| b.get(&w.pcr));
            assert_eq!(got, Some(&want), "{name} {} PCR {}", w.alg, w.pcr);
        }
    }

    assert!(
        problems.is_empty(),
        "trustlaunch and tpm2_eventlog disagree; find out who is right \
         (expected.json, PC Client PFP) before listing it in TOOL_WRONG:\n{}",
        problems.join("\n")
    );
    for (w, used) in TOOL_WRONG.iter().zip(&used_wrong) {
        if !used {
            eprintln!(
                "note: {} {} PCR {}: tpm2_eventlog now agrees with us",
                w.file, w.alg, w.pcr
            );
        }
    }
    for f in TOOL_FAILS {
        assert!(
            files.iter().any(|(n, _)| n == f.file),
            "{} is not in the corpus",
            f.file
        );
    }
    for w in TOOL_WRONG {
        assert!(
            files.iter().any(|(n, _)| n == w.file),
            "{} is not in the corpus",
            w.file
        );
    }
    // A guard against comparing nothing (e.g. the parser finding no values).
    assert!(
        compared_pcrs > 150,
        "only {compared_pcrs} PCR values compared"
    );
}

#[test]
fn tool_output_parser() {
    let out = "---\nversion: 1\nevents:\n- EventNum: 0\n  PCRIndex: 0\n  Event: |-\n    pcrs:\n\
               pcrs:\n  sha1:\n    0  : 0x3DCAEA25dc86554d94b94aa5bc8f735a49212af8\n    14 : \
               0x6b03bde55dc2938fb94317eb2169bcf88204a4b1\n  sha256:\n    7 : \
               0x3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969\n  sha384:\n";
    let p = parse_tool_pcrs(out).expect("pcrs section");
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p["sha1"][&0], "3dcaea25dc86554d94b94aa5bc8f735a49212af8");
    assert_eq!(p["sha1"][&14], "6b03bde55dc2938fb94317eb2169bcf88204a4b1");
    assert_eq!(
        p["sha256"][&7],
        "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
    );
    assert_eq!(parse_tool_pcrs("pcrs:\n"), Some(Pcrs::new()));
    assert_eq!(parse_tool_pcrs("---\nversion: 1\n"), None);
}
