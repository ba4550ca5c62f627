//! `trustlaunch eventlog ...`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};

use clap::Subcommand;

use crate::input::read_bounded;
use crate::pcrs::PcrJson;
use serde::Serialize;
use trustlaunch_eventlog::{
    check_digests, replay, verify, BootEvidence, Digest, Event, EventData, EventLog, HashAlg,
    PcrBanks, PcrStatus, VariableContent,
};

/// Event-log subcommands.
#[derive(Subcommand)]
pub enum EventlogCommand {
    /// Print the events, one per line (or as JSON).
    Show {
        /// Log file, `-` for stdin, or a live system's
        /// /sys/kernel/security/tpm0/binary_bios_measurements.
        file: PathBuf,
        /// Print the decoded events as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the log and print the PCR values it produces.
    Replay {
        /// Log file (see `show`).
        file: PathBuf,
        /// Print `{"pcrs": {"<alg>": {"<index>": "<hex>"}}}`.
        #[arg(long)]
        json: bool,
    },
    /// Verify the log against PCR values; exit 0 only when every given PCR
    /// that has events matches.
    Verify {
        /// Log file (see `show`).
        file: PathBuf,
        /// PCR values, in the JSON shape `replay --json` prints.
        #[arg(long)]
        pcrs: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the boot evidence (Secure Boot state, authorities, boot
    /// applications, UKI sections, ...) as JSON.
    Evidence {
        /// Log file (see `show`).
        file: PathBuf,
    },
}

/// Runs a subcommand.
pub fn run(cmd: EventlogCommand) -> Result<ExitCode> {
    match cmd {
        EventlogCommand::Show { file, json } => {
            let log = load(&file)?;
            let out = if json {
                show_json(&log)?
            } else {
                show_text(&log)
            };
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        EventlogCommand::Replay { file, json } => {
            let log = load(&file)?;
            let r = replay(&log);
            let out = if json {
                let mut s = serde_json::to_string(&pcr_json(&r.pcrs))?;
                s.push('\n');
                s
            } else {
                replay_text(&r.pcrs, &r.skipped_banks)
            };
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        EventlogCommand::Verify { file, pcrs, json } => {
            let log = load(&file)?;
            let expected = read_pcrs(&pcrs)?;
            let v = verify(&log, &expected);
            let out = if json {
                let mut s = serde_json::to_string_pretty(&serde_json::json!({
                    "passed": v.passed(),
                    "checks": v.checks,
                }))?;
                s.push('\n');
                s
            } else {
                verify_text(&v)
            };
            print(&out)?;
            Ok(if v.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        EventlogCommand::Evidence { file } => {
            let log = load(&file)?;
            let mut s = serde_json::to_string_pretty(&BootEvidence::extract(&log))?;
            s.push('\n');
            print(&s)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `trustlaunch ... | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn load(path: &Path) -> Result<EventLog> {
    let bytes = read_bounded(path)?;
    EventLog::parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn pcr_json(banks: &PcrBanks) -> PcrJson {
    let pcrs = banks
        .iter()
        .map(|(alg, bank)| {
            let values = bank.iter().map(|(i, d)| (*i, d.to_hex())).collect();
            (alg.name(), values)
        })
        .collect();
    PcrJson { pcrs }
}

fn read_pcrs(path: &Path) -> Result<PcrBanks> {
    let raw = crate::pcrs::parse(path, &read_bounded(path)?)?;
    let mut banks = PcrBanks::new();
    for (name, values) in raw {
        let alg = HashAlg::from_name(&name).ok_or_else(|| anyhow!("unknown bank {name}"))?;
        let bank = banks.entry(alg).or_default();
        for (index, bytes) in values {
            let digest =
                Digest::new(alg, &bytes).ok_or_else(|| anyhow!("{name} PCR {index}: size"))?;
            bank.insert(index, digest);
        }
    }
    Ok(banks)
}

fn replay_text(pcrs: &PcrBanks, skipped: &[HashAlg]) -> String {
    let mut s = String::new();
    for (alg, bank) in pcrs {
        let _ = writeln!(s, "{alg}:");
        for (i, d) in bank {
            let _ = writeln!(s, "  {i:>2} : {}", d.to_hex());
        }
    }
    for alg in skipped {
        let _ = writeln!(s, "{alg}: not replayed (this algorithm cannot be computed)");
    }
    s
}

fn verify_text(v: &trustlaunch_eventlog::Verification) -> String {
    let mut s = String::new();
    for c in &v.checks {
        let status = match &c.status {
            PcrStatus::Match => "match".to_string(),
            PcrStatus::MatchWithWorkaround { workaround } => format!(
                "match after appending events the log lacks ({}: {})",
                serde_json::to_value(workaround)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                workaround.actions().join(", ")
            ),
            PcrStatus::Mismatch { replayed } => {
                format!(
                    "MISMATCH: expected {}, log replays to {replayed}",
                    c.expected
                )
            }
            PcrStatus::NoEvents => "not compared: no events in the log".into(),
            PcrStatus::BankNotReplayed => "not compared: the log has no such bank".into(),
            PcrStatus::Incomplete => {
                "not compared: an event of this PCR lacks this bank's digest".into()
            }
        };
        let _ = writeln!(s, "{:<7} PCR {:>2}: {status}", c.alg.name(), c.pcr);
    }
    let compared = v.checks.iter().filter(|c| c.is_compared()).count();
    let bad = v.mismatches().count();
    if compared == 0 {
        let _ = writeln!(
            s,
            "FAIL: no given PCR has events in the log; nothing was verified"
        );
    } else if bad == 0 {
        let _ = writeln!(s, "OK: {compared} PCR values match the log");
    } else {
        let _ = writeln!(
            s,
            "FAIL: {bad} of {compared} compared PCR values do not match the log"
        );
    }
    s
}

fn short_digests(e: &Event) -> String {
    e.digests
        .iter()
        .map(|d| {
            let hex = d.to_hex();
            format!("{}:{}", d.alg(), hex.get(..16).unwrap_or(&hex))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn summary(data: &EventData) -> String {
    match data {
        EventData::SpecId(s) => {
            let banks: Vec<String> = s.banks().iter().map(|b| b.name()).collect();
            format!(
                "Spec ID Event03 (PFP {}.{} errata {}): banks {}",
                s.spec_version_major,
                s.spec_version_minor,
                s.spec_errata,
                banks.join(", ")
            )
        }
        EventData::SpecIdLegacy { .. } => "Spec ID Event00 (TCG 1.2 log)".into(),
        EventData::StartupLocality { locality } => format!("StartupLocality {locality}"),
        EventData::Sp800_155 {
            platform_manufacturer,
            platform_model,
            firmware_version,
            ..
        } => format!("SP800-155 reference manifest: {platform_manufacturer} {platform_model} firmware {firmware_version}"),
        EventData::NoAction { signature, .. } => format!("no-action {signature:?}"),
        EventData::Separator { value, error } => {
            if *error {
                "separator (ERROR)".into()
            } else {
                format!("separator 0x{value:08x}")
            }
        }
        EventData::Text { text, .. } => format!("{text:?}"),
        EventData::Variable(v) => {
            let content = match &v.decoded {
                Some(VariableContent::Flag { value }) => format!(" = {value}"),
                Some(VariableContent::BootOrder { order }) => {
                    let o: Vec<String> = order.iter().map(|n| format!("{n:04X}")).collect();
                    format!(" = {}", o.join(","))
                }
                Some(VariableContent::LoadOption(lo)) => {
                    format!(" = {:?} {}", lo.description, lo.file_path.text)
                }
                Some(VariableContent::SignatureLists { lists }) => {
                    let n: usize = lists.iter().map(|l| l.signatures.len()).sum();
                    format!(" = {} lists, {n} entries", lists.len())
                }
                Some(VariableContent::Authority(sd)) => {
                    format!(" = entry owned by {} ({} bytes)", sd.owner, sd.data.len())
                }
                Some(VariableContent::AuthorityCertificate { der }) => {
                    format!(" = certificate ({} bytes)", der.len())
                }
                Some(VariableContent::Undecodable { reason }) => format!(" (undecodable: {reason})"),
                None => format!(" ({} bytes)", v.data.len()),
            };
            format!("{} [{}]{content}", v.name, v.guid)
        }
        EventData::ImageLoad {
            length,
            device_path,
            ..
        } => format!("image {} ({length} bytes)", device_path.text),
        EventData::Gpt(g) => format!("GPT disk {} with {} partitions", g.disk_guid, g.partitions.len()),
        EventData::FirmwareBlob { base, length } => format!("blob 0x{base:x}+0x{length:x}"),
        EventData::FirmwareBlob2 {
            description,
            base,
            length,
        } => format!("blob {description:?} 0x{base:x}+0x{length:x}"),
        EventData::HandoffTables {
            description,
            tables,
        } => {
            let g: Vec<String> = tables.iter().map(|t| t.guid.to_string()).collect();
            match description {
                Some(d) => format!("tables {d:?}: {}", g.join(", ")),
                None => format!("tables {}", g.join(", ")),
            }
        }
        EventData::CrtmVersionGuid { guid } => format!("S-CRTM version {guid}"),
        EventData::Tagged { events } => {
            let t: Vec<String> = events
                .iter()
                .map(|e| match (&e.sipa, &e.text) {
                    (Some(s), _) => sipa_line(s),
                    (None, Some(t)) => format!("0x{:08x} {t:?}", e.id),
                    (None, None) => format!("0x{:08x} ({} bytes)", e.id, e.data.len()),
                })
                .collect();
            format!("tagged {}", t.join("; "))
        }
        EventData::Spdm {
            signature, version, ..
        } => format!("{signature:?} version {version}"),
        EventData::Raw { data } => format!("{} bytes", data.len()),
        _ => String::new(),
    }
}

/// A Windows SIPA event in one line: its name and its first values
/// (`SIPA TRUSTBOUNDARY (14 events): BOOTCOUNTER=4, CODEINTEGRITY=on, …`).
fn sipa_line(s: &trustlaunch_eventlog::sipa::SipaEvent) -> String {
    use trustlaunch_eventlog::sipa::SipaValue;
    const SHOWN: usize = 6;
    let value = |v: &SipaValue| match v {
        SipaValue::Flag(b) => if *b { "on" } else { "off" }.to_owned(),
        SipaValue::Number(n) => n.to_string(),
        SipaValue::Text(t) => format!("{t:?}"),
        SipaValue::Bytes(b) if b.len() > 8 => {
            format!(
                "{}… ({} bytes)",
                trustlaunch_eventlog::hex::encode(&b[..8]),
                b.len()
            )
        }
        SipaValue::Bytes(b) => trustlaunch_eventlog::hex::encode(b),
        SipaValue::Events(e) => format!("{} events", e.len()),
    };
    let all = s.walk();
    let leaves: Vec<String> = all
        .iter()
        .skip(1)
        .filter(|e| !matches!(e.value, SipaValue::Events(_)))
        .map(|e| format!("{}={}", e.name, value(&e.value)))
        .collect();
    if all.len() == 1 {
        return format!("SIPA {}={}", s.name, value(&s.value));
    }
    let more = leaves.len().saturating_sub(SHOWN);
    let mut line = format!(
        "SIPA {} ({} events): {}",
        s.name,
        all.len() - 1,
        leaves[..leaves.len().min(SHOWN)].join(", ")
    );
    if more > 0 {
        line.push_str(&format!(", … {more} more"));
    }
    line
}

fn show_text(log: &EventLog) -> String {
    let mut s = String::new();
    let banks: Vec<String> = log.banks().iter().map(|b| b.name()).collect();
    let _ = writeln!(
        s,
        "{:?} log, banks {}, {} events",
        log.format(),
        banks.join(", "),
        log.events().len()
    );
    let uintn = log.uintn_bytes();
    for e in log.events() {
        let what = match e.decode_with_uintn(uintn) {
            Ok(d) => summary(&d),
            Err(err) => format!("undecodable: {err}"),
        };
        let _ = writeln!(
            s,
            "{:>4} @{:#07x} PCR {:>2} {:<34} {} {}",
            e.index,
            e.offset,
            e.pcr,
            e.event_type.display_name(),
            short_digests(e),
            what
        );
    }
    if log.trailing_padding() > 0 {
        let _ = writeln!(
            s,
            "({} bytes of padding after the last event)",
            log.trailing_padding()
        );
    }
    for m in check_digests(log) {
        let _ = writeln!(
            s,
            "note: event {} ({}, PCR {}) {} digest {} is not the {:?} digest {}",
            m.event, m.event_type, m.pcr, m.alg, m.logged, m.expected_over, m.computed
        );
    }
    s
}

#[derive(Serialize)]
struct ShowEvent<'a> {
    #[serde(flatten)]
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<EventData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<String>,
    raw: String,
}

fn show_json(log: &EventLog) -> Result<String> {
    let uintn = log.uintn_bytes();
    let events: Vec<ShowEvent<'_>> = log
        .events()
        .iter()
        .map(|e| {
            let (data, decode_error) = match e.decode_with_uintn(uintn) {
                Ok(d) => (Some(d), None),
                Err(err) => (None, Some(err.to_string())),
            };
            ShowEvent {
                event: e,
                data,
                decode_error,
                raw: trustlaunch_eventlog::hex::encode(&e.data),
            }
        })
        .collect();
    let doc = serde_json::json!({
        "format": log.format(),
        "banks": log.banks(),
        "spec_id": log.spec_id(),
        "trailing_padding": log.trailing_padding(),
        "events": events,
        "digest_mismatches": check_digests(log),
    });
    let mut s = serde_json::to_string_pretty(&doc)?;
    s.push('\n');
    Ok(s)
}
