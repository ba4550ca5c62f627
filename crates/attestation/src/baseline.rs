//! Baselines at the level of boot components: which binary, which UKI
//! section, which command line, grub command or loaded file (PCR 8/9),
//! which Secure Boot variable — so that a
//! kernel update reads "UKI section .linux changed from X to Y", not "PCR
//! 11 differs".
//!
//! A baseline is a [`Measurements`] whose categories may be partial: one
//! predicted from an image before the first boot knows the boot
//! applications' Authenticode digests and the UKI sections but not the
//! firmware; a category that is `None` is not compared.

use serde::{Deserialize, Serialize};
use trustlaunch_eventlog::{BootEvidence, HashAlg, ImageKind, Replay};

use crate::sha256;

/// One measured component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// What it is (`\EFI\BOOT\BOOTX64.EFI`, `.linux`, `db`, ...).
    pub name: String,
    /// Its SHA-256 measurement (hex).
    pub sha256: String,
}

/// A boot's components, by category; `None` means "not known" (only in
/// baselines).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// The firmware: PCR 0 (SHA-256 bank), as replayed.
    pub firmware: Option<String>,
    /// Boot applications in load order: Authenticode SHA-256 (PCR 4).
    pub boot_applications: Option<Vec<Component>>,
    /// UKI sections measured by systemd-stub (PCR 11), content SHA-256.
    pub uki_sections: Option<Vec<Component>>,
    /// Kernel command lines as measured in text (grub's, systemd-stub's
    /// PCR 12).
    pub kernel_command_lines: Option<Vec<String>>,
    /// Secure Boot variables as measured (PCR 7): SHA-256 of their data.
    pub secure_boot_variables: Option<Vec<Component>>,
    /// Authorities that allowed the boot applications: SHA-256 of the db
    /// entry.
    pub authorities: Option<Vec<Component>>,
    /// The boot loader's commands (grub's `grub_cmd:` measurements of PCR
    /// 8, in order): the command as name, its digest. Absent from
    /// baselines made before boot loaders were compared.
    #[serde(default)]
    pub boot_loader_commands: Option<Vec<Component>>,
    /// Files the boot loader and kernel measured as they loaded them (PCR
    /// 9: kernel, initrd, grub.cfg, the kernel's load options), in order.
    #[serde(default)]
    pub loaded_files: Option<Vec<Component>>,
    /// The modules Windows' boot loaded (PCR 13, before its separator):
    /// path and Authenticode hash, compared by path (a driver added,
    /// removed or changed is named). Absent from baselines made before
    /// Windows boots were compared, and empty for other boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_modules: Option<Vec<Component>>,
    /// The kernel release (`uname -r` as the guest reports it, or the
    /// image's): a label that names the kernels of a PCR 4/9 deviation,
    /// never compared (the quote does not cover it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
}

/// Where a baseline came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaselineSource {
    /// Learned from a healthy boot.
    Learned {
        /// The boot (e.g. the guest's boot id).
        boot: String,
    },
    /// Predicted from the image before any boot.
    Predicted {
        /// The image.
        image: String,
    },
    /// Set by an operator.
    Pinned {
        /// Who.
        by: String,
    },
}

/// A VM's reference measurements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Where it came from.
    pub source: BaselineSource,
    /// The components.
    pub measurements: Measurements,
}

/// A difference between a boot and its baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deviation {
    /// The component, in words (`UKI section .linux`).
    pub component: String,
    /// The baseline's value (`None`: absent from the baseline).
    pub expected: Option<String>,
    /// The boot's value (`None`: absent from the boot).
    pub actual: Option<String>,
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.expected, &self.actual) {
            (Some(e), Some(a)) => write!(f, "{} changed from {} to {}", self.component, e, a),
            (Some(e), None) => write!(f, "{} ({}) is missing", self.component, e),
            (None, Some(a)) => write!(f, "{} ({}) is new", self.component, a),
            (None, None) => write!(f, "{}", self.component),
        }
    }
}

impl Measurements {
    /// The components of a boot, from its parsed evidence and replay.
    pub fn from_boot(evidence: &BootEvidence, replay: &Replay) -> Self {
        let sha = |digests: &[trustlaunch_eventlog::Digest]| {
            digests
                .iter()
                .find(|d| d.alg() == HashAlg::Sha256)
                .map(|d| d.to_hex())
                .unwrap_or_default()
        };
        let apps = evidence
            .images
            .iter()
            .filter(|i| i.kind == ImageKind::Application)
            .enumerate()
            .map(|(n, i)| Component {
                name: i
                    .file_path
                    .clone()
                    .or_else(|| i.device_path.clone())
                    .unwrap_or_else(|| format!("application #{n}")),
                sha256: sha(&i.digests),
            })
            .collect();
        let uki = evidence
            .uki_sections
            .iter()
            .map(|s| Component {
                name: s.name.clone(),
                sha256: sha(&s.content_digests),
            })
            .collect();
        let vars = evidence
            .secure_boot_variables
            .iter()
            .map(|v| Component {
                name: v.name.clone(),
                sha256: sha256(&v.data),
            })
            .collect();
        let auth = evidence
            .authorities
            .iter()
            .map(|a| Component {
                name: a.database.clone(),
                sha256: sha256(&a.entry),
            })
            .collect();
        let commands = evidence
            .ipl_strings
            .iter()
            .filter(|s| s.pcr == 8)
            .map(|s| Component {
                name: s
                    .text
                    .strip_prefix("grub_cmd: ")
                    .unwrap_or(&s.text)
                    .to_owned(),
                sha256: sha(&s.digests),
            })
            .collect();
        let files = evidence
            .loaded_files
            .iter()
            .map(|s| Component {
                name: s.text.clone(),
                sha256: sha(&s.digests),
            })
            .collect();
        let windows_modules = evidence.windows.as_ref().map(|w| {
            w.modules
                .iter()
                .filter_map(|m| {
                    Some(Component {
                        name: m.path.clone()?,
                        sha256: m.authenticode_hash.clone().unwrap_or_default(),
                    })
                })
                .collect()
        });
        Self {
            windows_modules,
            boot_loader_commands: Some(commands),
            loaded_files: Some(files),
            firmware: replay
                .pcrs
                .get(&HashAlg::Sha256)
                .and_then(|b| b.get(&0))
                .map(|d| d.to_hex()),
            boot_applications: Some(apps),
            uki_sections: Some(uki),
            kernel_command_lines: Some(
                evidence
                    .kernel_command_lines
                    .iter()
                    .map(|c| c.text.clone())
                    .collect(),
            ),
            secure_boot_variables: Some(vars),
            authorities: Some(auth),
            kernel_release: None,
        }
    }

    /// What differs from `baseline`, component by component (categories
    /// the baseline does not know are not compared).
    pub fn compare(&self, baseline: &Measurements) -> Vec<Deviation> {
        let mut out = Vec::new();
        if let (Some(e), Some(a)) = (&baseline.firmware, &self.firmware) {
            if e != a {
                out.push(Deviation {
                    component: "firmware (PCR 0)".into(),
                    expected: Some(e.clone()),
                    actual: Some(a.clone()),
                });
            }
        }
        type Pair<'a> = (
            &'a str,
            &'a Option<Vec<Component>>,
            &'a Option<Vec<Component>>,
        );
        let lists: [Pair<'_>; 6] = [
            (
                "boot application",
                &baseline.boot_applications,
                &self.boot_applications,
            ),
            ("UKI section", &baseline.uki_sections, &self.uki_sections),
            (
                "Secure Boot variable",
                &baseline.secure_boot_variables,
                &self.secure_boot_variables,
            ),
            ("authority", &baseline.authorities, &self.authorities),
            (
                "boot loader command",
                &baseline.boot_loader_commands,
                &self.boot_loader_commands,
            ),
            ("loaded file", &baseline.loaded_files, &self.loaded_files),
        ];
        for (what, expected, actual) in lists {
            if let (Some(e), Some(a)) = (expected, actual) {
                compare_components(what, e, a, &mut out);
            }
        }
        if let (Some(e), Some(a)) = (&baseline.windows_modules, &self.windows_modules) {
            compare_by_name("Windows boot module", e, a, &mut out);
        }
        // The kernels, named, when what PCR 4 or 9 measured changed.
        let kernel_changed = out.iter().any(|d| {
            d.component.starts_with("boot application") || d.component.starts_with("loaded file")
        });
        if let (true, Some(e), Some(a)) = (
            kernel_changed,
            &baseline.kernel_release,
            &self.kernel_release,
        ) {
            if e != a {
                out.insert(
                    0,
                    Deviation {
                        component: "kernel, PCR 4/9 (its release as the guest reports it)".into(),
                        expected: Some(e.clone()),
                        actual: Some(a.clone()),
                    },
                );
            }
        }
        if let (Some(e), Some(a)) = (&baseline.kernel_command_lines, &self.kernel_command_lines) {
            let n = e.len().max(a.len());
            for i in 0..n {
                let (x, y) = (e.get(i), a.get(i));
                if x != y {
                    out.push(Deviation {
                        component: format!("kernel command line #{}", i.saturating_add(1)),
                        expected: x.map(|s| format!("{s:?}")),
                        actual: y.map(|s| format!("{s:?}")),
                    });
                }
            }
        }
        out
    }
}

/// A component's name, or what it is when its event named nothing (an
/// image loaded without a device path: the kernel behind shim).
fn unnamed(name: &str) -> String {
    if name.is_empty() {
        "(loaded without a path)".into()
    } else {
        name.to_owned()
    }
}

/// Compares two component lists in order; a component is named by its
/// name and position, so a changed binary reads as "changed", a new one as
/// "new".
fn compare_components(what: &str, e: &[Component], a: &[Component], out: &mut Vec<Deviation>) {
    let n = e.len().max(a.len());
    for i in 0..n {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let name = if x.name == y.name {
                    unnamed(&x.name)
                } else {
                    format!("{} (was {})", unnamed(&y.name), unnamed(&x.name))
                };
                out.push(Deviation {
                    component: format!("{what} {}: {name}", i.saturating_add(1)),
                    expected: Some(x.sha256.clone()),
                    actual: Some(y.sha256.clone()),
                });
            }
            (Some(x), None) => out.push(Deviation {
                component: format!("{what} {}: {}", i.saturating_add(1), x.name),
                expected: Some(x.sha256.clone()),
                actual: None,
            }),
            (None, Some(y)) => out.push(Deviation {
                component: format!("{what} {}: {}", i.saturating_add(1), y.name),
                expected: None,
                actual: Some(y.sha256.clone()),
            }),
            (None, None) => {}
        }
    }
}

/// Compares two component lists by name (the first of each name): what
/// changed, what is missing, what is new — for lists whose order is not
/// the point (Windows loads its boot drivers by group, and one more
/// driver must not read as every later one changing).
fn compare_by_name<'a>(
    what: &str,
    e: &'a [Component],
    a: &'a [Component],
    out: &mut Vec<Deviation>,
) {
    // By lower-cased name (Windows' paths are case-insensitive): the
    // component as first listed.
    let index = |l: &'a [Component]| {
        let mut m: std::collections::BTreeMap<String, &'a Component> = Default::default();
        for c in l {
            m.entry(c.name.to_lowercase()).or_insert(c);
        }
        m
    };
    let (ei, ai) = (index(e), index(a));
    let names: std::collections::BTreeSet<&String> = ei.keys().chain(ai.keys()).collect();
    for n in names {
        let (x, y) = (ei.get(n), ai.get(n));
        if x.map(|c| &c.sha256) != y.map(|c| &c.sha256) {
            // The name as the boot (or else the baseline) wrote it.
            let shown = y.or(x).map_or(n.as_str(), |c| c.name.as_str());
            out.push(Deviation {
                component: format!("{what}: {shown}"),
                expected: x.map(|c| c.sha256.clone()),
                actual: y.map(|c| c.sha256.clone()),
            });
        }
    }
}

/// What an image says about the boot it will make, before any boot: the
/// inputs of [`predict`].
#[derive(Clone, Debug, Default)]
pub struct ImageFacts<'a> {
    /// The image's name (for the baseline's source).
    pub image: &'a str,
    /// Boot applications the firmware will load, in order: (ESP path,
    /// Authenticode SHA-256 hex). Give them only when the whole sequence is
    /// known (a UKI: one); otherwise leave empty and they are not
    /// compared.
    pub boot_applications: &'a [(String, String)],
    /// UKI sections systemd-stub will measure: (name, content SHA-256 hex);
    /// empty for a non-UKI image.
    pub uki_sections: &'a [(String, String)],
    /// The PCR 7 events the Secure Boot toolkit predicts from the VM's
    /// variable store and the boot application
    /// (`trustlaunch_secureboot::pcr7::predict_pcr7`).
    pub pcr7: Option<&'a trustlaunch_secureboot::pcr7::Pcr7Prediction>,
}

/// The variable data inside a predicted UEFI_VARIABLE_DATA event
/// (GUID, name length, data length, UTF-16 name, data).
fn variable_data(event_data: &[u8]) -> Option<&[u8]> {
    let name_len =
        usize::try_from(u64::from_le_bytes(event_data.get(16..24)?.try_into().ok()?)).ok()?;
    let start = name_len.checked_mul(2)?.checked_add(32)?;
    event_data.get(start..)
}

/// A baseline predicted from the image before the VM's first boot —
/// boot application digests, UKI section digests, the Secure Boot
/// variables and authorities of PCR 7. The firmware (PCR 0) and whatever
/// the image cannot say are left out (`None`: not compared).
pub fn predict(facts: &ImageFacts<'_>) -> Baseline {
    let comp = |(name, sha256): &(String, String)| Component {
        name: name.clone(),
        sha256: sha256.to_ascii_lowercase(),
    };
    let (vars, auth) = match facts.pcr7 {
        None => (None, None),
        Some(p) => {
            let mut vars = Vec::new();
            let mut auth = Vec::new();
            for e in &p.events {
                let Some(data) = variable_data(&e.event_data) else {
                    continue;
                };
                // EV_EFI_VARIABLE_DRIVER_CONFIG and EV_EFI_VARIABLE_AUTHORITY.
                match e.event_type {
                    0x8000_0001 => vars.push(Component {
                        name: e.name.clone(),
                        sha256: sha256(data),
                    }),
                    0x8000_00e0 => auth.push(Component {
                        name: e.name.clone(),
                        // The EFI_SIGNATURE_DATA's data, after its owner.
                        sha256: sha256(data.get(16..).unwrap_or_default()),
                    }),
                    _ => {}
                }
            }
            (Some(vars), Some(auth))
        }
    };
    Baseline {
        source: BaselineSource::Predicted {
            image: facts.image.to_owned(),
        },
        measurements: Measurements {
            firmware: None,
            boot_applications: (!facts.boot_applications.is_empty()).then(|| {
                facts
                    .boot_applications
                    .iter()
                    .map(|(path, d)| comp(&(format!("\\{}", path.replace('/', "\\")), d.clone())))
                    .collect()
            }),
            uki_sections: (!facts.uki_sections.is_empty())
                .then(|| facts.uki_sections.iter().map(comp).collect()),
            // A UKI's command line is measured as a section digest only.
            kernel_command_lines: (!facts.uki_sections.is_empty()).then(Vec::new),
            secure_boot_variables: vars,
            authorities: auth,
            // What grub and the kernel will measure is not predicted: the
            // first boot that matches the prediction fills it in.
            boot_loader_commands: None,
            loaded_files: None,
            windows_modules: None,
            kernel_release: None,
        },
    }
}

/// One boot's report in GCP's shape (early boot: firmware, Secure Boot
/// configuration and boot loaders; late boot: kernel, command line,
/// initrd): policy (baseline) against actual measurements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootReport {
    /// The boot's counter (the caller's).
    pub boot_counter: u64,
    /// Early boot (PCR 0-7: firmware, boot applications, Secure Boot).
    pub early_boot_report_event: PhaseReport,
    /// Late boot (PCR 8-15: command lines, UKI sections).
    pub late_boot_report_event: PhaseReport,
}

/// One phase of a [`BootReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    /// No deviation in this phase (and a baseline to compare with).
    pub policy_evaluation_passed: bool,
    /// The baseline's components of this phase.
    pub policy_measurements: Vec<Component>,
    /// The boot's components of this phase.
    pub actual_measurements: Vec<Component>,
    /// What differs.
    pub deviations: Vec<Deviation>,
}

fn early(m: &Measurements) -> Vec<Component> {
    let mut out = Vec::new();
    if let Some(f) = &m.firmware {
        out.push(Component {
            name: "firmware (PCR 0)".into(),
            sha256: f.clone(),
        });
    }
    for list in [
        &m.boot_applications,
        &m.secure_boot_variables,
        &m.authorities,
    ]
    .into_iter()
    .flatten()
    {
        out.extend(list.iter().cloned());
    }
    out
}

fn late(m: &Measurements) -> Vec<Component> {
    let mut out: Vec<Component> = m.uki_sections.iter().flatten().cloned().collect();
    for list in [&m.boot_loader_commands, &m.loaded_files, &m.windows_modules]
        .into_iter()
        .flatten()
    {
        out.extend(list.iter().cloned());
    }
    for c in m.kernel_command_lines.iter().flatten() {
        out.push(Component {
            name: "kernel command line".into(),
            sha256: sha256(c.as_bytes()),
        });
    }
    out
}

fn is_late(d: &Deviation) -> bool {
    [
        "UKI section",
        "kernel command line",
        "boot loader command",
        "loaded file",
        "Windows boot module",
    ]
    .iter()
    .any(|p| d.component.starts_with(p))
}

impl BootReport {
    /// The report of a boot against a baseline (`None`: nothing to
    /// compare with, so no phase passes).
    pub fn new(boot_counter: u64, actual: &Measurements, baseline: Option<&Baseline>) -> Self {
        let deviations = baseline.map(|b| actual.compare(&b.measurements));
        let phase = |late_phase: bool| {
            let pick = |m: &Measurements| if late_phase { late(m) } else { early(m) };
            let devs: Vec<Deviation> = deviations
                .iter()
                .flatten()
                .filter(|d| is_late(d) == late_phase)
                .cloned()
                .collect();
            PhaseReport {
                policy_evaluation_passed: baseline.is_some() && devs.is_empty(),
                policy_measurements: baseline.map(|b| pick(&b.measurements)).unwrap_or_default(),
                actual_measurements: pick(actual),
                deviations: devs,
            }
        };
        Self {
            boot_counter,
            early_boot_report_event: phase(false),
            late_boot_report_event: phase(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(kernel: &str, release: &str) -> Measurements {
        Measurements {
            boot_applications: Some(vec![
                Component {
                    name: "\\EFI\\BOOT\\BOOTX64.EFI".into(),
                    sha256: "aa".into(),
                },
                Component {
                    name: String::new(),
                    sha256: kernel.into(),
                },
            ]),
            loaded_files: Some(vec![Component {
                name: "/vmlinuz".into(),
                sha256: kernel.into(),
            }]),
            kernel_release: Some(release.into()),
            ..Measurements::default()
        }
    }

    #[test]
    fn a_new_kernel_is_named_by_its_releases_and_its_pcrs() {
        let old = boot("k1", "6.1.0-50-amd64");
        let new = boot("k2", "6.1.0-57-amd64");
        let d: Vec<String> = new.compare(&old).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            [
                "kernel, PCR 4/9 (its release as the guest reports it) changed from 6.1.0-50-amd64 to 6.1.0-57-amd64",
                "boot application 2: (loaded without a path) changed from k1 to k2",
                "loaded file 1: /vmlinuz changed from k1 to k2",
            ]
        );
        // The release alone is a label: a guest that reports another one
        // over the same measurements deviates in nothing.
        assert!(boot("k1", "6.6.6").compare(&old).is_empty());
    }
}
