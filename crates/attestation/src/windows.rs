//! The checks of a Windows boot, from what Windows' boot manager and
//! loader measured about themselves (SIPA events in PCRs 12-14, decoded
//! by `trustlaunch_eventlog::windows`), and the posture they show (VBS,
//! HVCI, Credential Guard) for the security center's recommendations.
//!
//! These facts are Windows' own words, so they count only where Windows
//! provably said them:
//! - the log replays to the quoted PCRs 12-14 and each SIPA event's data
//!   is what its digest measured (`log.replay`, `log.event_data`: the
//!   caller runs these first);
//! - a boot application was authorised by one of Microsoft's Windows
//!   certificates in db, as PCR 7 measured (`windows.boot_manager`): only
//!   Windows' boot manager measures these PCRs before the OS runs;
//! - the boot manager closed PCRs 12-14 with its separator, and only
//!   events before it are read (`windows.sealed`): after it, the running
//!   system — a guest's root — can extend anything.
//!
//! Signer names of boot drivers are text Windows measured: they count
//! because that text is covered as above, and each PCR 12 hash record
//! must name a module whose signer PCR 13 measured.

use serde::{Deserialize, Serialize};
use trustlaunch_eventlog::windows::{WindowsBoot, WindowsFact};
use trustlaunch_eventlog::BootEvidence;

use crate::checks::Checks;
use crate::claims::Claims;
use crate::{sha256, Cite};

/// The db certificates that authorise Windows' boot manager, by the
/// SHA-256 of their DER: Microsoft Windows Production PCA 2011 (in
/// Debian's `OVMF_VARS_4M.ms.fd` and Azure's default db) and Microsoft
/// Root Certificate Authority 2010, its issuer (the db entry of Google's
/// Shielded VMs, as their Windows log measures it).
pub const WINDOWS_AUTHORITIES: [(&str, &str); 2] = [
    (
        "Microsoft Windows Production PCA 2011",
        "e8e95f0733a55e8bad7be0a1413ee23c51fcea64b3c8fa6a786935fddcc71961",
    ),
    (
        "Microsoft Root Certificate Authority 2010",
        "df545bf919a2439c36983b54cdfc903dfa4f37d3996d8d84b4c31eec6f3c163e",
    ),
];

/// The certification authorities Microsoft signs Windows' boot drivers
/// under (`AUTHORITYISSUER` of a loaded module).
pub const MICROSOFT_PCAS: [&str; 6] = [
    "Microsoft Windows Production PCA 2011",
    "Microsoft Windows PCA 2010",
    "Microsoft Code Signing PCA 2010",
    "Microsoft Code Signing PCA 2011",
    "Microsoft Windows Third Party Component CA 2012",
    "Microsoft Windows Third Party Component CA 2014",
];

/// The Windows checks, in order (see the crate docs).
pub const WINDOWS_CHECKS: [&str; 9] = [
    "windows.boot_manager",
    "windows.sealed",
    "windows.code_integrity",
    "windows.test_signing",
    "windows.flight_signing",
    "windows.debugging",
    "windows.elam",
    "windows.vbs",
    "windows.boot_drivers",
];

/// What a Windows boot measured about its isolation features, kept with
/// the verdict so recommendations can be made from the stored history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsPosture {
    /// Virtualization-based security ran: `VSM_LAUNCH_TYPE` non-zero.
    pub vbs: bool,
    /// Hypervisor-protected code integrity: VBS ran and
    /// `VBS_HVCI_POLICY` was measured non-zero.
    pub hvci: bool,
    /// The HVCI policy measured (0 when none was).
    pub hvci_policy: u64,
    /// Credential Guard: VBS ran and LSA's isolated process was
    /// configured (`LSAISO_CONFIG` measured).
    pub credential_guard: bool,
    /// The events these rest on (numbers).
    pub events: Vec<usize>,
}

fn cite<T>(f: &WindowsFact<T>) -> Cite {
    Cite::Event {
        number: f.event,
        pcr: f.pcr,
    }
}

/// `cites` in order, each once (one event measures several facts).
fn once_each(cites: impl IntoIterator<Item = Cite>) -> Vec<Cite> {
    let mut out: Vec<Cite> = Vec::new();
    for c in cites {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The one value of a fact measured (possibly in several PCRs), or why
/// there is none: never measured, or measured with different values.
enum One<'a, T> {
    Missing,
    Value(&'a T, Vec<Cite>),
    Conflict(Vec<Cite>),
}

fn one<T: PartialEq>(facts: &[WindowsFact<T>]) -> One<'_, T> {
    let cites: Vec<Cite> = facts.iter().map(cite).collect();
    match facts.split_first() {
        None => One::Missing,
        Some((first, rest)) if rest.iter().all(|f| f.value == first.value) => {
            One::Value(&first.value, cites)
        }
        Some(_) => One::Conflict(cites),
    }
}

/// A flag that must be measured and be `want` in every measurement.
fn flag_check(
    c: &mut Checks,
    name: &'static str,
    what: &str,
    facts: &[WindowsFact<bool>],
    want: bool,
) {
    let state = |b: bool| if b { "on" } else { "off" };
    match one(facts) {
        One::Missing => c.fail(
            name,
            format!("{what} was not measured: its state is unknown"),
            Vec::new(),
        ),
        One::Conflict(cites) => c.fail(
            name,
            format!("{what} was measured both on and off in one boot"),
            cites,
        ),
        One::Value(v, cites) if *v == want => {
            c.pass(name, format!("{what} {} as measured", state(*v)), cites)
        }
        One::Value(v, cites) => c.fail(name, format!("{what} {}", state(*v)), cites),
    }
}

/// The Windows checks of a boot whose log has SIPA events, its claims,
/// and its posture (`None` when the events are not anchored to Windows'
/// boot manager: they are then nobody's word).
pub(crate) fn windows_checks(
    ev: &BootEvidence,
    w: &WindowsBoot,
    c: &mut Checks,
    claims: &mut Claims,
) -> Option<WindowsPosture> {
    let anchor = ev
        .authorities
        .iter()
        .filter(|a| a.database == "db")
        .find_map(|a| {
            let digest = sha256(&a.entry);
            WINDOWS_AUTHORITIES
                .iter()
                .find(|(_, d)| *d == digest)
                .map(|(n, d)| (a, *n, *d))
        });
    let Some((authority, name, digest)) = anchor else {
        c.fail(
            "windows.boot_manager",
            "the log has Windows (SIPA) events in PCRs 12-14, but no boot application was authorised by Microsoft's Windows certificates in db (PCR 7): they were not measured by Windows' boot manager",
            Vec::new(),
        );
        for n in WINDOWS_CHECKS.iter().skip(1) {
            c.skip(
                n,
                "the SIPA events are not Windows' boot manager's (see windows.boot_manager)",
            );
        }
        return None;
    };
    c.pass(
        "windows.boot_manager",
        format!(
            "a boot application was authorised by {name} in db (event {}): Windows' boot manager measured PCRs 12-14",
            authority.event
        ),
        vec![
            Cite::Event {
                number: authority.event,
                pcr: authority.pcr,
            },
            Cite::Certificate {
                what: "db authority".into(),
                detail: format!("{name}, SHA-256 {digest}"),
            },
        ],
    );
    sealed_check(w, c);
    flag_check(
        c,
        "windows.code_integrity",
        "code integrity",
        &w.code_integrity,
        true,
    );
    flag_check(
        c,
        "windows.test_signing",
        "test signing",
        &w.test_signing,
        false,
    );
    flag_check(
        c,
        "windows.flight_signing",
        "flight signing",
        &w.flight_signing,
        false,
    );
    debugging_check(w, c);
    if w.elam.is_empty() {
        c.fail(
            "windows.elam",
            "no early-launch anti-malware driver was measured: boot drivers started unscreened",
            Vec::new(),
        );
    } else {
        let names: Vec<&str> = w.elam.iter().map(|e| e.key_name.as_str()).collect();
        c.pass(
            "windows.elam",
            format!("early-launch anti-malware: {}", names.join(", ")),
            w.elam
                .iter()
                .map(|e| Cite::Event {
                    number: e.event,
                    pcr: e.pcr,
                })
                .collect(),
        );
    }
    let posture = vbs_check(w, c);
    drivers_check(w, c);

    let on = |facts: &[WindowsFact<bool>]| facts.iter().any(|f| f.value);
    let (boot_debug, kernel_debug, hypervisor_debug) = (
        on(&w.boot_debugging),
        on(&w.kernel_debugging),
        on(&w.hypervisor_debugging),
    );
    claims.is_windows = true;
    claims.os_type = "Windows";
    claims.os_distro = "Microsoft".into();
    claims.boot_debug_enabled = boot_debug;
    claims.kernel_debug_enabled = kernel_debug;
    claims.hypervisor_debug_enabled = Some(hypervisor_debug);
    claims.test_signing_enabled = on(&w.test_signing);
    claims.flight_signing_enabled = Some(on(&w.flight_signing));
    claims.signing_disabled =
        Some(w.code_integrity.is_empty() || w.code_integrity.iter().any(|f| !f.value));
    claims.debuggers_disabled = Some(!boot_debug && !kernel_debug && !hypervisor_debug);
    claims.elam_enabled = Some(!w.elam.is_empty());
    claims.hvci_policy = Some(posture.hvci_policy);
    Some(posture)
}

fn sealed_check(w: &WindowsBoot, c: &mut Checks) {
    let open: Vec<u32> = trustlaunch_eventlog::windows::BOUNDARY_PCRS
        .into_iter()
        .filter(|p| !w.separators.iter().any(|s| s.pcr == *p))
        .collect();
    let mut cites: Vec<Cite> = w.separators.iter().map(cite).collect();
    if !w.malformed.is_empty() {
        let why: Vec<String> = w
            .malformed
            .iter()
            .take(8)
            .map(|m| format!("event {}: {}", m.event, m.value))
            .collect();
        cites.extend(w.malformed.iter().map(cite));
        c.fail(
            "windows.sealed",
            format!(
                "{} SIPA events do not decode: what they measured is unknown ({})",
                w.malformed.len(),
                why.join("; ")
            ),
            cites,
        );
        return;
    }
    if !open.is_empty() {
        let open: Vec<String> = open.iter().map(u32::to_string).collect();
        c.fail(
            "windows.sealed",
            format!(
                "Windows' boot did not close PCR {} with its separator: whatever the running system extends there reads as the boot's",
                open.join(", ")
            ),
            cites,
        );
        return;
    }
    let after = if w.after_separator.is_empty() {
        String::new()
    } else {
        format!(
            "; {} SIPA events measured after the separators are the running system's and not read",
            w.after_separator.len()
        )
    };
    c.pass(
        "windows.sealed",
        format!("PCRs 12, 13 and 14 closed by Windows' boot manager{after}"),
        cites,
    );
}

fn debugging_check(w: &WindowsBoot, c: &mut Checks) {
    let mut on = Vec::new();
    let mut unknown = Vec::new();
    let mut cites = Vec::new();
    for (what, facts, required) in [
        ("boot debugging", &w.boot_debugging, true),
        ("kernel debugging", &w.kernel_debugging, true),
        // Measured only when the hypervisor launches.
        ("hypervisor debugging", &w.hypervisor_debugging, false),
    ] {
        cites.extend(facts.iter().map(cite));
        match one(facts) {
            One::Missing if required => unknown.push(format!("{what} not measured")),
            One::Missing | One::Value(false, _) => {}
            One::Value(true, _) => on.push(format!("{what} on")),
            One::Conflict(_) => unknown.push(format!("{what} measured both on and off")),
        }
    }
    let cites = once_each(cites);
    if on.is_empty() && unknown.is_empty() {
        c.pass(
            "windows.debugging",
            "boot, kernel and hypervisor debugging off as measured",
            cites,
        );
    } else {
        on.extend(unknown);
        c.fail("windows.debugging", on.join(", "), cites);
    }
}

fn vbs_check(w: &WindowsBoot, c: &mut Checks) -> WindowsPosture {
    let cites = once_each(
        w.vsm_launch_type
            .iter()
            .chain(&w.hvci_policy)
            .map(cite)
            .chain(w.lsaiso_config.iter().map(cite)),
    );
    let mut events: Vec<usize> = cites
        .iter()
        .filter_map(|c| match c {
            Cite::Event { number, .. } => Some(*number),
            _ => None,
        })
        .collect();
    events.sort_unstable();
    events.dedup();
    let vsm = match one(&w.vsm_launch_type) {
        One::Conflict(cites) => {
            c.fail(
                "windows.vbs",
                "VBS (VSM_LAUNCH_TYPE) was measured with different launch types in one boot",
                cites,
            );
            return WindowsPosture {
                events,
                ..WindowsPosture::default()
            };
        }
        One::Missing => 0,
        One::Value(v, _) => *v,
    };
    let hvci_policy = match one(&w.hvci_policy) {
        One::Conflict(cites) => {
            c.fail(
                "windows.vbs",
                "the HVCI policy was measured with different values in one boot",
                cites,
            );
            return WindowsPosture {
                vbs: vsm != 0,
                events,
                ..WindowsPosture::default()
            };
        }
        One::Missing => 0,
        One::Value(v, _) => *v,
    };
    let posture = WindowsPosture {
        vbs: vsm != 0,
        hvci: vsm != 0 && hvci_policy != 0,
        hvci_policy,
        credential_guard: vsm != 0 && !w.lsaiso_config.is_empty(),
        events,
    };
    let yes = |b: bool| if b { "on" } else { "off" };
    c.pass(
        "windows.vbs",
        format!(
            "as measured: VBS {} (VSM launch type {vsm}), HVCI {} (policy 0x{hvci_policy:x}), Credential Guard {}",
            yes(posture.vbs),
            yes(posture.hvci),
            yes(posture.credential_guard)
        ),
        cites,
    );
    posture
}

/// The most modules `windows.boot_drivers` cites.
const MAX_CITED: usize = 32;

fn drivers_check(w: &WindowsBoot, c: &mut Checks) {
    let signed: Vec<_> = w
        .modules
        .iter()
        .filter(|m| m.path.is_some() || m.issuer.is_some())
        .collect();
    if signed.is_empty() {
        c.fail(
            "windows.boot_drivers",
            "no loaded module with its signer was measured",
            Vec::new(),
        );
        return;
    }
    let mut bad = Vec::new();
    let mut cites = Vec::new();
    for m in &signed {
        let path = m.path.as_deref().unwrap_or("(no path measured)");
        let why = match (m.validated, m.issuer.as_deref()) {
            (Some(true), Some(i)) if MICROSOFT_PCAS.contains(&i) => continue,
            (Some(true), Some(i)) => format!("{path} signed under {i}, not a Microsoft PCA"),
            (Some(true), None) => format!("{path}: no signer measured"),
            _ => format!("{path}: its signature was not validated"),
        };
        bad.push(why);
        cites.push(Cite::Event {
            number: m.event,
            pcr: m.pcr,
        });
    }
    // PCR 12's hash records name each module by Authenticode hash; every
    // one must be a module whose signer was measured.
    for m in w
        .modules
        .iter()
        .filter(|m| m.path.is_none() && m.issuer.is_none())
    {
        let Some(hash) = &m.authenticode_hash else {
            continue;
        };
        if !signed
            .iter()
            .any(|s| s.authenticode_hash.as_ref() == Some(hash))
        {
            bad.push(format!(
                "a module with Authenticode hash {hash} was loaded but its signer was not measured"
            ));
            cites.push(Cite::Digest {
                what: format!("Authenticode hash (event {})", m.event),
                value: hash.clone(),
            });
        }
    }
    if bad.is_empty() {
        let mut by_issuer: std::collections::BTreeMap<&str, usize> = Default::default();
        for m in &signed {
            if let Some(i) = m.issuer.as_deref() {
                let n = by_issuer.entry(i).or_default();
                *n = n.saturating_add(1);
            }
        }
        let text: Vec<String> = by_issuer
            .iter()
            .map(|(i, n)| format!("{n} under {i}"))
            .collect();
        c.pass(
            "windows.boot_drivers",
            format!(
                "{} boot modules validated and signed under Microsoft's PCAs: {}",
                signed.len(),
                text.join(", ")
            ),
            signed
                .iter()
                .map(|m| (m.event, m.pcr))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|(number, pcr)| Cite::Event { number, pcr })
                .collect(),
        );
    } else {
        let n = bad.len();
        bad.truncate(MAX_CITED);
        cites.truncate(MAX_CITED);
        c.fail(
            "windows.boot_drivers",
            format!(
                "{n} boot modules are not Microsoft-signed as measured: {}",
                bad.join("; ")
            ),
            cites,
        );
    }
}
