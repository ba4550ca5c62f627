//! `trustlaunch image import`: a disk a user brings (raw or qcow2),
//! inspected without booting it and without mounting anything — the
//! partition table, the FAT ESP and the ext4 root file system are read by
//! [`crate::disk`]'s pure-Rust readers. The inspection finds the boot
//! chain the firmware of a new VM would start (the removable-media path
//! `EFI/BOOT/BOOTX64.EFI`; shim → grub → the kernel of grub's default
//! entry; a UKI; or the Windows Boot Manager), records each component's
//! Authenticode digest and signers, and evaluates the chain against every
//! key template with the Secure Boot toolkit
//! ([`trustlaunch_secureboot::chain`]). The image gets
//! `SecurityType=TrustedLaunchSupported` only when a template boots the
//! whole chain; otherwise the report names the component that would be
//! refused and why (a signature no db certificate verifies is named by its
//! signer and issuer). Azure trusts the publisher's flag; this verifies it.
//!
//! A Windows disk is recognised by its ESP (`windows`): when the
//! removable-media path is neither shim, grub nor a UKI and
//! `EFI/Microsoft/Boot/bootmgfw.efi` is there, the first stage is the
//! Windows Boot Manager, verified against each template's db like any
//! first stage — never trusted for a signer's name. The UEFI chain ends
//! there: what the boot manager loads from the NTFS volume is verified by
//! Windows' code integrity and measured by Windows into PCRs 12-14 (SIPA
//! events the attestation service reads), which the report notes; whether
//! it is the same file as `bootmgfw.efi` and a missing `BCD` are noted
//! too. The NTFS volume is not read.
//!
//! It also predicts what the boot will measure where the chain is one
//! whose measurements are known: for Debian's shim → grub, PCR 4 boot
//! applications, the authorities of PCR 7, grub's PCR 9 files and the
//! kernel command line; for the Windows Boot Manager, PCR 4's one boot
//! application. It tells whether the guest attestation agent is installed
//! (a Windows disk cannot hold trustlaunch's Linux agent), and recognises
//! a Generation 1 disk (MBR, or no ESP).
//!
//! Every byte of the disk is untrusted: the readers are bounded, a
//! malformed structure is a typed error naming where, and a qcow2 file
//! with a backing file or an external data file is refused (it would make
//! the import read a host file the user named).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use trustlaunch_secureboot::chain::{self, Checker, RefusalKind, Stage, VendorCerts};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::verify::Database;

use crate::disk::{self, DiskError, Ext, Fat, TableKind};
use crate::image::ImageError;
use crate::image_meta::{
    self, BootComponent, CertificateInfo, DiskInfo, EspFile, Feature, Generation, ImageMetadata,
    KeyTemplate, NamedDigest, PredictedBoot, PredictedChain, Sha256Digest,
};

mod signature;
mod windows;

/// The removable-media boot path a new VM's firmware starts.
pub const BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Largest file read from a partition.
const FILE_LIMIT: u64 = disk::MAX_FILE_BYTES;
/// Largest config file read.
const CONFIG_LIMIT: u64 = 1 << 20;

/// Why an import failed (a disk that cannot run Trusted Launch is not a
/// failure: it is a report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The disk could not be read.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Writing the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The source is refused.
    #[error("{path}: {reason}")]
    Refused {
        /// The disk.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A key template's databases as a new VM's varstore holds them.
#[derive(Debug, Clone)]
pub struct TemplateDbs {
    /// Which template.
    pub template: KeyTemplate,
    /// db.
    pub db: Database,
    /// dbx.
    pub dbx: Database,
}

/// One component of the boot chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainComponent {
    /// `shim`, `boot loader`, `kernel`, `UKI`, `Windows Boot Manager`,
    /// `EFI application`.
    pub role: String,
    /// Where it is (`ESP:EFI/BOOT/BOOTX64.EFI`, `root:/boot/vmlinuz-…`).
    pub location: String,
    /// Authenticode SHA-256 (what PCR 4 gets).
    pub authenticode_sha256: Option<String>,
    /// SHA-256 of the file (what grub's PCR 9 gets).
    pub sha256: String,
    /// Subjects of the signers (empty: unsigned).
    pub signers: Vec<String>,
}

/// A refused component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The component.
    pub component: String,
    /// Who refuses it.
    pub checker: String,
    /// Why, as a kind.
    pub reason: RefusalKind,
    /// Why, in words.
    pub detail: String,
}

/// The chain against one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateVerdict {
    /// `custom` or `microsoft`.
    pub template: String,
    /// Whether the whole chain would boot.
    pub boots: bool,
    /// For each component reached: what allowed it.
    pub allowed: Vec<String>,
    /// The component refused (the first; nothing after it loads).
    pub refused: Option<Refusal>,
    /// Why the chain is incomplete, when it is (no kernel found, ...).
    pub incomplete: Option<String>,
}

/// The guest agent's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentPresence {
    /// `Some(true)` installed, `Some(false)` not, `None` not determinable.
    pub installed: Option<bool>,
    /// What was looked at.
    pub evidence: String,
}

/// What an inspection found.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// `gpt`, `mbr`, `none`.
    pub partition_table: TableKind,
    /// The partitions.
    pub partitions: Vec<disk::Partition>,
    /// `V1` or `V2`.
    pub generation: Generation,
    /// Why this generation.
    pub generation_reason: String,
    /// The operating system: `PRETTY_NAME` of os-release, or `Windows`
    /// for a disk whose ESP starts the Windows Boot Manager; `None` if
    /// neither was found.
    pub os: Option<String>,
    /// The root file system's partition and UUID.
    pub root: Option<(u32, String)>,
    /// The boot chain in load order.
    pub chain: Vec<ChainComponent>,
    /// The kernel release, when known.
    pub kernel_release: Option<String>,
    /// The kernel command line of grub's default entry.
    pub kernel_cmdline: Option<String>,
    /// The chain against each template.
    pub templates: Vec<TemplateVerdict>,
    /// The guest agent.
    pub guest_agent: AgentPresence,
    /// What the first boot will measure, where it is known.
    pub predicted: Option<PredictedBoot>,
    /// The ESP's files.
    #[serde(skip)]
    pub esp_files: Vec<EspFile>,
    /// The EFI binaries for `image.json`.
    #[serde(skip)]
    pub boot_components: Vec<BootComponent>,
    /// The db certificate that allows the first stage under the first
    /// template that boots the chain, when that template is `custom`
    /// (`image.json`'s `db_certificate`).
    #[serde(skip)]
    pub db_certificate: Option<CertificateInfo>,
    /// Remarks: what was not evaluated and why.
    pub notes: Vec<String>,
}

impl Inspection {
    /// The first template that boots the whole chain.
    pub fn bootable_template(&self) -> Option<&TemplateVerdict> {
        self.templates.iter().find(|t| t.boots)
    }

    /// Whether the image can run Trusted Launch.
    pub fn trusted_launch_supported(&self) -> bool {
        self.generation == Generation::V2 && self.bootable_template().is_some()
    }

    /// One line per template saying why it does not boot.
    pub fn refusals(&self) -> Vec<String> {
        self.templates
            .iter()
            .filter(|t| !t.boots)
            .map(|t| match (&t.refused, &t.incomplete) {
                (Some(r), _) => format!(
                    "{}: {} would be refused by {} ({}): {}",
                    t.template,
                    r.component,
                    r.checker,
                    r.reason.describe(),
                    r.detail
                ),
                (None, Some(why)) => format!("{}: {why}", t.template),
                (None, None) => format!("{}: does not boot", t.template),
            })
            .collect()
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256Digest::of(data).to_hex()
}

fn signers(data: &[u8]) -> (Option<String>, Vec<String>) {
    let Ok(pe) = PeImage::parse(data) else {
        return (None, Vec::new());
    };
    let auth = trustlaunch_secureboot::authenticode::image_sha256_parsed(data, &pe)
        .ok()
        .map(|d| Sha256Digest(d).to_hex());
    (auth, crate::image_build::signer_subjects(data, &pe))
}

fn has_section(data: &[u8], name: &str) -> bool {
    PeImage::parse(data)
        .ok()
        .and_then(|pe| pe.section_data(data, name).map(|_| ()))
        .is_some()
}

/// A grub menu entry's kernel and initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEntry {
    /// The `linux` line's path, as written.
    pub linux: String,
    /// Its arguments.
    pub args: String,
    /// The `initrd` line's paths.
    pub initrds: Vec<String>,
    /// The file system UUID a `search --fs-uuid --set=root` selected.
    pub root_uuid: Option<String>,
}

/// The default entry of a grub configuration: `set default=N` (a number;
/// anything else means the first entry) picks among the top-level
/// `menuentry` blocks; a `linux` line outside any entry counts when there
/// is no entry. Returns `None` when no `linux` line is found.
pub fn grub_default_entry(cfg: &str) -> Option<GrubEntry> {
    let mut default = 0usize;
    let mut entries: Vec<GrubEntry> = Vec::new();
    let mut top: Option<GrubEntry> = None;
    let mut depth = 0usize;
    let mut in_entry = false;
    let mut current: Option<GrubEntry> = None;
    let mut search_uuid: Option<String> = None;
    for raw in cfg.lines().take(100_000) {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first().copied() else {
            continue;
        };
        if let Some(v) = line.strip_prefix("set default=") {
            default = v.trim_matches(['"', '\'']).parse().unwrap_or(0);
        }
        if first == "search" || first == "search.fs_uuid" {
            let uuid = if first == "search.fs_uuid" {
                words.get(1).map(|s| (*s).to_owned())
            } else if words.contains(&"--fs-uuid") || words.contains(&"-u") {
                words
                    .iter()
                    .rev()
                    .find(|w| !w.starts_with('-'))
                    .map(|s| (*s).to_owned())
            } else {
                None
            };
            if let Some(u) = uuid.filter(|u| u.len() >= 8 && !u.contains('=')) {
                if let Some(c) = current.as_mut() {
                    c.root_uuid = Some(u);
                } else {
                    search_uuid = Some(u);
                }
            }
        }
        if first == "menuentry" && depth == 0 {
            in_entry = true;
            current = Some(GrubEntry {
                linux: String::new(),
                args: String::new(),
                initrds: Vec::new(),
                root_uuid: search_uuid.clone(),
            });
        }
        match first {
            "linux" | "linuxefi" | "linux16" => {
                let path = words.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
                let args = words.get(2..).map(|a| a.join(" ")).unwrap_or_default();
                let target = if in_entry {
                    current.as_mut()
                } else {
                    top.get_or_insert_with(|| GrubEntry {
                        linux: String::new(),
                        args: String::new(),
                        initrds: Vec::new(),
                        root_uuid: search_uuid.clone(),
                    });
                    top.as_mut()
                };
                if let Some(t) = target {
                    t.linux = path;
                    t.args = args;
                }
            }
            "initrd" | "initrdefi" | "initrd16" => {
                let paths: Vec<String> = words
                    .get(1..)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                if in_entry {
                    if let Some(c) = current.as_mut() {
                        c.initrds = paths;
                    }
                } else if let Some(t) = top.as_mut() {
                    t.initrds = paths;
                }
            }
            _ => {}
        }
        depth = depth
            .saturating_add(line.matches('{').count())
            .saturating_sub(line.matches('}').count());
        if in_entry && depth == 0 && line.contains('}') {
            in_entry = false;
            if let Some(c) = current.take() {
                entries.push(c);
            }
        }
    }
    let pick = entries
        .get(default)
        .or_else(|| entries.first())
        .cloned()
        .or(top)?;
    (!pick.linux.is_empty()).then_some(pick)
}

/// A path as grub writes it, without a device prefix (`($root)/boot/x`,
/// `(hd0,gpt2)/x` → `/boot/x`).
fn strip_device(p: &str) -> String {
    let p = match p.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map_or(rest, |(_, r)| r),
        None => p,
    };
    let p = p.trim_start_matches("${root}").trim_start_matches("$root");
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

/// The release in a Linux bzImage's header (`kernel_version` at 0x20E
/// points at a NUL-terminated string, 0x200 bytes in), checked.
pub fn bzimage_release(data: &[u8]) -> Option<String> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = usize::from(u16::from_le_bytes(data.get(0x20e..0x210)?.try_into().ok()?));
    let start = off.checked_add(0x200)?;
    let s = data.get(start..start.checked_add(256)?.min(data.len()))?;
    let end = s.iter().position(|b| *b == 0)?;
    let text = std::str::from_utf8(s.get(..end)?).ok()?;
    let release = text.split_whitespace().next()?;
    (!release.is_empty() && release.len() < 128).then(|| release.to_owned())
}

/// Reads the guest's os-release `PRETTY_NAME`.
fn os_name(root: &Ext) -> Option<String> {
    let text = root
        .read("/etc/os-release", CONFIG_LIMIT)
        .ok()
        .flatten()
        .or_else(|| {
            root.read("/usr/lib/os-release", CONFIG_LIMIT)
                .ok()
                .flatten()
        })?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches(['"', '\'']).to_owned())
}

/// Whether dpkg's status file says the agent package is installed, and
/// its service unit is there.
fn agent_in_root(root: &Ext) -> AgentPresence {
    let pkg = crate::agent_package::PACKAGE;
    let status = root.read("/var/lib/dpkg/status", 64 << 20).ok().flatten();
    let installed = status.as_deref().is_some_and(|s| {
        String::from_utf8_lossy(s).split("\n\n").any(|stanza| {
            stanza.lines().any(|l| l == format!("Package: {pkg}"))
                && stanza.lines().any(|l| l == "Status: install ok installed")
        })
    });
    let unit = ["/usr/lib/systemd/system/", "/lib/systemd/system/"]
        .iter()
        .any(|d| {
            root.read(
                &format!("{d}{}", crate::agent_package::SERVICE),
                CONFIG_LIMIT,
            )
            .ok()
            .flatten()
            .is_some()
        });
    let enabled = root
        .read_link(&format!(
            "/etc/systemd/system/multi-user.target.wants/{}",
            crate::agent_package::SERVICE
        ))
        .is_some();
    match (status.is_some(), installed, unit) {
        (false, _, _) => AgentPresence {
            installed: Some(unit && enabled),
            evidence: format!(
                "no dpkg database; {} {}",
                crate::agent_package::SERVICE,
                if unit { "present" } else { "absent" }
            ),
        },
        (true, true, true) => AgentPresence {
            installed: Some(true),
            evidence: format!(
                "dpkg: {pkg} install ok installed; {} {}",
                crate::agent_package::SERVICE,
                if enabled {
                    "enabled"
                } else {
                    "present, not enabled"
                }
            ),
        },
        (true, _, _) => AgentPresence {
            installed: Some(false),
            evidence: format!("dpkg: {pkg} is not installed"),
        },
    }
}

/// Whether an initramfs (uncompressed newc) holds the agent.
fn agent_in_initrd(initrd: &[u8]) -> AgentPresence {
    if initrd.starts_with(b"070701") {
        let found = initrd
            .windows(b"bin/trustlaunch-agent".len())
            .any(|w| w == b"bin/trustlaunch-agent");
        AgentPresence {
            installed: Some(found),
            evidence: format!(
                "initramfs (newc) {} bin/trustlaunch-agent",
                if found { "holds" } else { "lacks" }
            ),
        }
    } else {
        AgentPresence {
            installed: None,
            evidence: "the initramfs is compressed; its files were not read".into(),
        }
    }
}

/// Where a file the boot loader names lives.
enum Fs<'a> {
    Esp(&'a Fat),
    Ext(&'a Ext),
}

impl Fs<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DiskError> {
        match self {
            Fs::Esp(f) => f.read(path),
            Fs::Ext(e) => e.read(path, FILE_LIMIT),
        }
    }
    fn label(&self) -> String {
        match self {
            Fs::Esp(_) => "ESP".into(),
            Fs::Ext(e) => format!("partition {}", e.number()),
        }
    }
}

/// Every template's verdict for a disk that boots under none, for `why`.
fn unbootable(templates: &[TemplateDbs], why: &str) -> Vec<TemplateVerdict> {
    templates
        .iter()
        .map(|t| TemplateVerdict {
            template: t.template.name().into(),
            boots: false,
            allowed: Vec::new(),
            refused: None,
            incomplete: Some(why.to_owned()),
        })
        .collect()
}

/// Inspects the raw disk at `raw` against `templates`.
pub fn inspect(raw: &Path, templates: &[TemplateDbs]) -> Result<Inspection, ImportError> {
    let table = disk::read_table(raw)?;
    let mut ins = Inspection {
        partition_table: table.kind,
        partitions: table.partitions.clone(),
        generation: Generation::V2,
        generation_reason: String::new(),
        os: None,
        root: None,
        chain: Vec::new(),
        kernel_release: None,
        kernel_cmdline: None,
        templates: Vec::new(),
        guest_agent: AgentPresence {
            installed: None,
            evidence: "no root file system found".into(),
        },
        predicted: None,
        esp_files: Vec::new(),
        boot_components: Vec::new(),
        db_certificate: None,
        notes: Vec::new(),
    };
    // Linux file systems: the root (with /etc/os-release) and a separate
    // /boot, if any.
    let mut exts: Vec<Ext> = Vec::new();
    for p in table.partitions.iter().filter(|p| !p.is_esp()) {
        if let Ok(e) = Ext::open(raw, p) {
            exts.push(e);
        }
    }
    let root_ix = exts.iter().position(|e| {
        e.read("/etc/os-release", CONFIG_LIMIT)
            .ok()
            .flatten()
            .is_some()
            || e.read("/usr/lib/os-release", CONFIG_LIMIT)
                .ok()
                .flatten()
                .is_some()
    });
    if let Some(root) = root_ix.and_then(|i| exts.get(i)) {
        ins.os = os_name(root);
        ins.root = Some((root.number(), root.uuid()));
        ins.guest_agent = agent_in_root(root);
    }
    let esp = table.partitions.iter().find(|p| p.is_esp());
    match (table.kind, esp) {
        (TableKind::None, _) => {
            return Err(ImportError::Refused {
                path: raw.to_owned(),
                reason: "no partition table (neither GPT nor MBR): not a bootable disk".into(),
            })
        }
        (TableKind::Mbr, _) => {
            ins.generation = Generation::V1;
            ins.generation_reason =
                "an MBR partition table: a BIOS (Generation 1) disk; Trusted Launch needs a Generation 2 (UEFI, GPT + ESP) disk".into();
        }
        (TableKind::Gpt, None) => {
            ins.generation = Generation::V1;
            ins.generation_reason =
                "a GPT without an EFI system partition: a BIOS (Generation 1) disk; Trusted Launch needs a Generation 2 (UEFI, GPT + ESP) disk".into();
        }
        (TableKind::Gpt, Some(p)) => {
            ins.generation_reason = format!(
                "a GPT with an EFI system partition (partition {}): a UEFI (Generation 2) disk",
                p.number
            );
        }
    }
    let esp = match (ins.generation, esp) {
        (Generation::V2, Some(p)) => p,
        _ => {
            ins.templates = unbootable(templates, &ins.generation_reason);
            return Ok(ins);
        }
    };
    let fat = Fat::open(raw, esp)?;
    for f in fat.files(4096)? {
        if let Some(data) = fat.read(&f.path)? {
            ins.esp_files.push(EspFile {
                esp_path: f.path.clone(),
                size_bytes: data.len() as u64,
                sha256: Sha256Digest::of(&data),
            });
            if data.starts_with(b"MZ") {
                if let Some(c) = crate::image_build::boot_component(&f.path, &data) {
                    ins.boot_components.push(c);
                }
            }
        }
    }
    // The boot application first in the components (image.json's order).
    if let Some(i) = ins
        .boot_components
        .iter()
        .position(|c| c.esp_path.eq_ignore_ascii_case(BOOT_PATH))
    {
        let c = ins.boot_components.remove(i);
        ins.boot_components.insert(0, c);
    }
    let Some(first) = fat.read(BOOT_PATH)? else {
        let why = format!(
            "no {BOOT_PATH} on the ESP: the firmware of a new VM starts only the removable-media path (it has no boot entries)"
        );
        ins.templates = unbootable(templates, &why);
        return Ok(ins);
    };
    // The chain: owned bytes with their locations.
    let mut stages: Vec<(String, String, Vec<u8>)> = Vec::new(); // (role, location, data)
    let mut incomplete: Option<String> = None;
    let mut kernel_entry: Option<GrubEntry> = None;
    let mut loaded: Vec<NamedDigest> = Vec::new();
    let is_uki = has_section(&first, ".linux");
    let is_shim = has_section(&first, ".vendor_cert");
    let role = if is_uki {
        "UKI"
    } else if is_shim {
        "shim"
    } else if has_section(&first, ".sbat")
        && String::from_utf8_lossy(
            &PeImage::parse(&first)
                .ok()
                .and_then(|pe| pe.section_data(&first, ".sbat").map(<[u8]>::to_vec))
                .unwrap_or_default(),
        )
        .contains("grub")
    {
        "boot loader"
    } else {
        "EFI application"
    };
    // Neither shim, grub nor a UKI: the Windows Boot Manager when the ESP
    // is laid out as Windows lays it out.
    let windows = if role == "EFI application" {
        windows::WindowsEsp::find(&fat)?
    } else {
        None
    };
    let role = if windows.is_some() {
        windows::ROLE
    } else {
        role
    };
    stages.push((role.into(), format!("ESP:{BOOT_PATH}"), first.clone()));
    if is_uki {
        if let Some(initrd) = PeImage::parse(&first)
            .ok()
            .and_then(|pe| pe.section_data(&first, ".initrd").map(<[u8]>::to_vec))
        {
            if ins.guest_agent.installed.is_none() {
                ins.guest_agent = agent_in_initrd(&initrd);
            }
        }
        if let Some(linux) = PeImage::parse(&first)
            .ok()
            .and_then(|pe| pe.section_data(&first, ".linux").map(<[u8]>::to_vec))
        {
            ins.kernel_release = bzimage_release(&linux);
        }
    } else {
        let grub_bin = if is_shim {
            let dir = BOOT_PATH.rsplit_once('/').map_or("", |(d, _)| d);
            let path = format!("{dir}/grubx64.efi");
            if fat.read(&format!("{dir}/fbx64.efi"))?.is_some() {
                ins.notes.push(format!(
                    "{dir}/fbx64.efi is present: shim runs the fallback first, which adds boot entries from EFI/*/BOOTX64.CSV and reboots; the chain evaluated is shim's default loader"
                ));
            }
            match fat.read(&path)? {
                Some(g) => {
                    stages.push(("boot loader".into(), format!("ESP:{path}"), g.clone()));
                    Some(g)
                }
                None => {
                    incomplete = Some(format!(
                        "shim's second stage {path} is not on the ESP: shim would stop"
                    ));
                    None
                }
            }
        } else if role == "boot loader" {
            Some(first.clone())
        } else if let Some(w) = &windows {
            // The UEFI chain ends with the boot manager: Windows verifies
            // and measures the rest.
            ins.notes.extend(w.notes(&first));
            if let Some(linux) = ins.os.take() {
                ins.notes.push(format!(
                    "a Linux root file system ({linux}) is on the disk too; the removable-media path starts Windows"
                ));
            }
            ins.os = Some(windows::OS.into());
            ins.guest_agent = windows::agent();
            None
        } else {
            incomplete = Some(format!(
                "{BOOT_PATH} is neither shim, grub nor a UKI: what it loads cannot be followed"
            ));
            None
        };
        if grub_bin.is_some() {
            // grub's configuration: the prefixes distributions' signed grub
            // images carry, then the root file system's.
            let esp_cfgs = [
                "EFI/debian/x86_64-efi/grub.cfg",
                "EFI/debian/grub.cfg",
                "EFI/ubuntu/grub.cfg",
                "EFI/BOOT/grub.cfg",
            ];
            let mut found: Option<(String, String, Vec<u8>)> = None; // (grub path, label, data)
            for p in esp_cfgs {
                if let Some(d) = fat.read(p)? {
                    found = Some((
                        format!("(hd0,gpt{})/{p}", esp.number),
                        format!("ESP:{p}"),
                        d,
                    ));
                    break;
                }
            }
            let mut cfg_chain = Vec::new();
            if let Some((gpath, label, data)) = &found {
                cfg_chain.push((gpath.clone(), label.clone(), data.clone()));
                let text = String::from_utf8_lossy(data);
                if grub_default_entry(&text).is_none()
                    && (text.contains("configfile") || text.contains("source"))
                {
                    for e in &exts {
                        for p in ["/boot/grub/grub.cfg", "/grub/grub.cfg"] {
                            if let Some(d) = e.read(p, CONFIG_LIMIT)? {
                                cfg_chain.push((
                                    format!("(hd0,gpt{}){p}", e.number()),
                                    format!("partition {}:{p}", e.number()),
                                    d,
                                ));
                                break;
                            }
                        }
                        if cfg_chain.len() > 1 {
                            break;
                        }
                    }
                }
            } else {
                for e in &exts {
                    if let Some(d) = e.read("/boot/grub/grub.cfg", CONFIG_LIMIT)? {
                        cfg_chain.push((
                            format!("(hd0,gpt{})/boot/grub/grub.cfg", e.number()),
                            format!("partition {}:/boot/grub/grub.cfg", e.number()),
                            d,
                        ));
                        break;
                    }
                }
            }
            let entry = cfg_chain.last().and_then(|(_, l, d)| {
                grub_default_entry(&String::from_utf8_lossy(d)).map(|e| (e, l.clone()))
            });
            match entry {
                None => {
                    incomplete = Some(if cfg_chain.is_empty() {
                        "no grub.cfg found (EFI/debian, EFI/ubuntu, EFI/BOOT on the ESP, /boot/grub on the root file system): the kernel grub boots is unknown".into()
                    } else {
                        format!(
                            "{}: no menu entry with a linux line: the kernel grub boots is unknown",
                            cfg_chain.last().map_or("", |c| c.1.as_str())
                        )
                    });
                }
                Some((entry, clabel)) => {
                    for (g, _, d) in &cfg_chain {
                        loaded.push(NamedDigest {
                            name: g.clone(),
                            sha256: sha256_hex(d),
                        });
                    }
                    // Where the kernel path resolves: the file system a
                    // `search --fs-uuid` picked, else the ESP (grub's root
                    // is its prefix's device) and then Linux file systems.
                    let mut order: Vec<Fs<'_>> = Vec::new();
                    if let Some(u) = &entry.root_uuid {
                        if let Some(e) = exts.iter().find(|e| e.uuid().eq_ignore_ascii_case(u)) {
                            order.push(Fs::Ext(e));
                        }
                    }
                    if entry.root_uuid.is_none() || order.is_empty() {
                        order.push(Fs::Esp(&fat));
                        order.extend(exts.iter().map(Fs::Ext));
                    }
                    let kpath = strip_device(&entry.linux);
                    let mut kernel: Option<(Vec<u8>, String)> = None;
                    let mut kfs: Option<&Fs<'_>> = None;
                    for fs_ in &order {
                        if let Some(d) = fs_.read(&kpath)? {
                            kernel = Some((d, format!("{}:{kpath}", fs_.label())));
                            kfs = Some(fs_);
                            break;
                        }
                    }
                    match kernel {
                        None => {
                            incomplete = Some(format!(
                                "{clabel}: the kernel {kpath} of the default entry is on no file system of the disk"
                            ));
                        }
                        Some((kdata, klabel)) => {
                            // The release: the link's target name, else the
                            // bzImage header.
                            let link = match kfs {
                                Some(Fs::Ext(e)) => e.read_link(&kpath),
                                _ => None,
                            };
                            ins.kernel_release = link
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .and_then(|n| n.strip_prefix("vmlinuz-"))
                                .map(str::to_owned)
                                .or_else(|| bzimage_release(&kdata));
                            loaded.push(NamedDigest {
                                name: entry.linux.clone(),
                                sha256: sha256_hex(&kdata),
                            });
                            for i in &entry.initrds {
                                let ip = strip_device(i);
                                let data = match kfs {
                                    Some(f) => f.read(&ip)?,
                                    None => None,
                                };
                                match data {
                                    Some(d) => {
                                        if ins.guest_agent.installed.is_none() {
                                            ins.guest_agent = agent_in_initrd(&d);
                                        }
                                        loaded.push(NamedDigest {
                                            name: i.clone(),
                                            sha256: sha256_hex(&d),
                                        });
                                    }
                                    None => ins.notes.push(format!(
                                        "{clabel}: the initrd {ip} is on no file system of the disk"
                                    )),
                                }
                            }
                            ins.kernel_cmdline = Some(entry.args.clone());
                            stages.push(("kernel".into(), klabel, kdata));
                            kernel_entry = Some(entry);
                        }
                    }
                }
            }
        }
    }
    for (role, location, data) in &stages {
        let (auth, signers) = signers(data);
        ins.chain.push(ChainComponent {
            role: role.clone(),
            location: location.clone(),
            authenticode_sha256: auth,
            sha256: sha256_hex(data),
            signers,
        });
    }
    let chain_stages: Vec<Stage<'_>> = stages
        .iter()
        .map(|(_, location, data)| Stage {
            path: location,
            data,
        })
        .collect();
    for t in templates {
        let verdicts = chain::evaluate(&chain_stages, &t.db, &t.dbx);
        let refused = verdicts.iter().find_map(|v| {
            v.outcome.as_ref().err().map(|(kind, detail)| {
                let mut detail = detail.clone();
                if *kind == RefusalKind::SignerNotInDb {
                    if let Some(s) = chain_stages.iter().find(|s| s.path == v.path) {
                        detail.push_str(&signature::signed_by(s.data, &t.db));
                    }
                }
                Refusal {
                    component: v.path.clone(),
                    checker: v.checker.to_string(),
                    reason: *kind,
                    detail,
                }
            })
        });
        let allowed = verdicts
            .iter()
            .filter_map(|v| {
                v.outcome.as_ref().ok().map(|by| {
                    format!(
                        "{} allowed by {} ({})",
                        v.path,
                        by,
                        if v.checker == Checker::Shim {
                            "checked by shim"
                        } else {
                            "checked by the firmware"
                        }
                    )
                })
            })
            .collect();
        let boots = refused.is_none() && incomplete.is_none();
        if boots && t.template == KeyTemplate::Custom && ins.bootable_template().is_none() {
            ins.db_certificate = chain_stages
                .first()
                .and_then(|s| signature::allowing_certificate(s.data, t));
        }
        ins.templates.push(TemplateVerdict {
            template: t.template.name().into(),
            boots,
            allowed,
            refused,
            incomplete: incomplete.clone(),
        });
    }
    if is_shim {
        ins.notes.push(
            "shim's SBAT generation checks and MokList are not evaluated: a new VM's NVRAM has no MOK, and SbatLevel is set by shim itself".into(),
        );
    }
    ins.predicted = if windows.is_some() {
        ins.chain
            .first()
            .and_then(|c| c.authenticode_sha256.as_deref())
            .map(windows::predicted)
    } else {
        predict(&ins, &stages, &loaded, kernel_entry.as_ref(), templates)
    };
    Ok(ins)
}

/// What the first boot measures, for chains whose measurements are known:
/// Debian's signed grub behind shim (shim measures grub, then the kernel
/// twice — through its verification protocol and the firmware's
/// LoadImage — into PCR 4; grub measures the configuration, the kernel and
/// the initrd it reads into PCR 9 and the kernel command line into PCR 8;
/// shim measures its vendor certificate as `MokListRT` authority). A UKI
/// is predicted from its sections by the runtime.
fn predict(
    ins: &Inspection,
    stages: &[(String, String, Vec<u8>)],
    loaded: &[NamedDigest],
    entry: Option<&GrubEntry>,
    templates: &[TemplateDbs],
) -> Option<PredictedBoot> {
    let entry = entry?;
    let [shim, grub, _kernel] = stages else {
        return None;
    };
    if shim.0 != "shim" {
        return None;
    }
    let grub_sbat = PeImage::parse(&grub.2)
        .ok()
        .and_then(|pe| pe.section_data(&grub.2, ".sbat").map(<[u8]>::to_vec))
        .unwrap_or_default();
    if !String::from_utf8_lossy(&grub_sbat).contains("grub.debian") {
        return None;
    }
    // The Authenticode digests the inspection recorded, stage by stage.
    let auth = |i: usize| {
        ins.chain
            .get(i)
            .and_then(|c| c.authenticode_sha256.clone())
            .unwrap_or_default()
    };
    let path_name = |loc: &str| format!("\\{}", loc.trim_start_matches("ESP:").replace('/', "\\"));
    let mut authorities = Vec::new();
    // The db entry that allows shim under the template that boots.
    if let Some(t) = ins
        .bootable_template()
        .and_then(|b| templates.iter().find(|t| t.template.name() == b.template))
    {
        if let Ok(trustlaunch_secureboot::verify::Verdict::Allowed { by, .. }) =
            trustlaunch_secureboot::verify::verify_image(&shim.2, &t.db, &t.dbx)
        {
            if let Some(r) = t.db.records().get(by.index) {
                authorities.push(NamedDigest {
                    name: "db".into(),
                    sha256: sha256_hex(&r.data),
                });
            }
        }
    }
    if let Ok(Some(v)) = VendorCerts::from_image(&shim.2) {
        if let Some(r) = v.authorized.records().first() {
            authorities.push(NamedDigest {
                name: "MokListRT".into(),
                sha256: sha256_hex(&r.data),
            });
        }
    }
    Some(PredictedBoot {
        chain: PredictedChain::ShimGrub,
        boot_applications: vec![
            NamedDigest {
                name: path_name(&shim.1),
                sha256: auth(0),
            },
            NamedDigest {
                name: path_name(&grub.1),
                sha256: auth(1),
            },
            NamedDigest {
                name: String::new(),
                sha256: auth(2),
            },
            NamedDigest {
                name: String::new(),
                sha256: auth(2),
            },
        ],
        loaded_files: loaded.to_vec(),
        kernel_command_lines: vec![if entry.args.is_empty() {
            entry.linux.clone()
        } else {
            format!("{} {}", entry.linux, entry.args)
        }],
        authorities,
    })
}

/// The format of a disk file, by its magic (not by its name).
pub fn disk_format(path: &Path) -> Result<&'static str, ImportError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(|source| DiskError::Io {
        path: path.to_owned(),
        source,
    })?;
    let n = f.read(&mut magic).map_err(|source| DiskError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(if n == 4 && magic == *b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

/// Refuses a qcow2 file that names other files: a backing file or an
/// external data file would make the import read a host path the disk's
/// author chose.
fn check_qcow2(path: &Path) -> Result<(), ImportError> {
    let out = Command::new("qemu-img")
        .args(["info", "-f", "qcow2", "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| ImageError::Tool {
            tool: "qemu-img",
            package: "qemu-utils",
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ImportError::Refused {
            path: path.to_owned(),
            reason: format!(
                "qemu-img info: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if let Some(b) = info.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(ImportError::Refused {
            path: path.to_owned(),
            reason: format!(
                "a qcow2 with a backing file ({b:?}): flatten it first (qemu-img convert -O qcow2)"
            ),
        });
    }
    if let Some(d) = info.pointer("/format-specific/data/data-file") {
        return Err(ImportError::Refused {
            path: path.to_owned(),
            reason: format!("a qcow2 with an external data file ({d}): convert it first"),
        });
    }
    Ok(())
}

/// An import request.
pub struct ImportRequest<'a> {
    /// The user's disk (raw or qcow2).
    pub disk: &'a Path,
    /// The image directory to make.
    pub out_dir: &'a Path,
    /// The image's name.
    pub name: &'a str,
    /// The templates to evaluate.
    pub templates: &'a [TemplateDbs],
    /// Unix time.
    pub created_at: u64,
}

/// Imports a disk: copies it as the image's `disk.raw` (sparse, through
/// `qemu-img convert` with the format given, never probed), inspects it,
/// writes `image.json` and `import.json` (the whole report).
pub fn import(
    req: &ImportRequest<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<(ImageMetadata, Inspection), ImportError> {
    let format = disk_format(req.disk)?;
    if format == "qcow2" {
        check_qcow2(req.disk)?;
    }
    let meta = req.disk.metadata().map_err(|source| DiskError::Io {
        path: req.disk.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ImportError::Refused {
            path: req.disk.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    fs::create_dir_all(req.out_dir).map_err(crate::image::io_err(req.out_dir))?;
    let disk = req.out_dir.join(crate::vm::IMAGE_DISK);
    if disk.exists() || req.out_dir.join(image_meta::METADATA_FILE).exists() {
        return Err(ImportError::Refused {
            path: req.out_dir.to_owned(),
            reason: "already holds an image: choose another --out".into(),
        });
    }
    progress(&format!("copying {format} disk to {}", disk.display()));
    crate::image::run(
        "qemu-img",
        "qemu-utils",
        Command::new("qemu-img")
            .args(["convert", "-q", "-f", format, "-O", "raw"])
            .arg(req.disk)
            .arg(&disk),
        None,
    )?;
    progress("inspecting partitions, ESP and root file system");
    let ins = inspect(&disk, req.templates)?;
    let (digest, size) = crate::image_build::sha256_file(&disk)?;
    let supported = ins.trusted_launch_supported();
    let mut features = Vec::new();
    if supported {
        features.push(image_meta::trusted_launch_feature());
    }
    let key_template = ins
        .bootable_template()
        .map(|t| {
            if t.template == "microsoft" {
                KeyTemplate::Microsoft
            } else {
                KeyTemplate::Custom
            }
        })
        .unwrap_or(KeyTemplate::Microsoft);
    let mut notes = ins.notes.clone();
    notes.push(format!(
        "imported from {} ({format}); guest agent: {}",
        req.disk.display(),
        ins.guest_agent.evidence
    ));
    let meta = ImageMetadata {
        schema: image_meta::SCHEMA,
        name: req.name.to_owned(),
        kind: "imported".into(),
        generation: ins.generation,
        features: features.into_iter().collect::<Vec<Feature>>(),
        key_template,
        db_certificate: ins.db_certificate.clone(),
        boot_components: ins.boot_components.clone(),
        esp_files: ins.esp_files.clone(),
        kernel_release: ins.kernel_release.clone(),
        kernel_cmdline: ins.kernel_cmdline.clone(),
        created_at: image_meta::rfc3339(req.created_at),
        disk: DiskInfo {
            file: crate::vm::IMAGE_DISK.into(),
            format: "raw".into(),
            size_bytes: size,
            sha256: digest,
        },
        notes,
        guest_agent: ins.guest_agent.installed,
        trusted_launch_refusals: if supported {
            Vec::new()
        } else {
            ins.refusals()
        },
        predicted_boot: ins.predicted.clone(),
    };
    meta.validate().map_err(|message| ImportError::Refused {
        path: req.disk.to_owned(),
        reason: format!("the image's metadata: {message}"),
    })?;
    meta.write(req.out_dir).map_err(ImageError::from)?;
    let report = serde_json::to_string_pretty(&ins).unwrap_or_default();
    let rpath = req.out_dir.join(IMPORT_REPORT);
    fs::write(&rpath, format!("{report}\n")).map_err(crate::image::io_err(&rpath))?;
    Ok((meta, ins))
}

/// The import report next to `image.json`.
pub const IMPORT_REPORT: &str = "import.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_default_entry_follows_set_default_and_search() {
        let cfg = "set default=\"1\"\nsearch --no-floppy --fs-uuid --set=root 1234-abcd\n\
                   menuentry 'A' {\n linux /a root=x\n initrd /ia\n}\n\
                   menuentry 'B' --class x {\n\tlinux\t($root)/boot/vmlinuz-6.1.0-2 ro quiet\n\tinitrd /boot/initrd.img-6.1.0-2\n}\n";
        let e = grub_default_entry(cfg).unwrap();
        assert_eq!(e.linux, "($root)/boot/vmlinuz-6.1.0-2");
        assert_eq!(e.args, "ro quiet");
        assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-2"]);
        assert_eq!(e.root_uuid.as_deref(), Some("1234-abcd"));
        assert_eq!(strip_device(&e.linux), "/boot/vmlinuz-6.1.0-2");
        // An unknown default (saved entry) means the first.
        let e = grub_default_entry(&cfg.replace("\"1\"", "\"${saved_entry}\"")).unwrap();
        assert_eq!(e.linux, "/a");
        // Nothing to boot.
        assert_eq!(grub_default_entry("set timeout=5\nconfigfile /x\n"), None);
    }

    #[test]
    fn grub_default_entry_never_panics_on_noise() {
        for cfg in [
            "}}}}\nlinux",
            "menuentry {\nlinux\n",
            "{\n{\n{\n",
            "linux /k a b\ninitrd",
        ] {
            let _ = grub_default_entry(cfg);
        }
        assert_eq!(
            grub_default_entry("linux /k a b\ninitrd /i\n").map(|e| (e.linux, e.initrds)),
            Some(("/k".to_owned(), vec!["/i".to_owned()]))
        );
    }

    #[test]
    fn bzimage_release_is_bounded() {
        assert_eq!(bzimage_release(b"short"), None);
        let mut k = vec![0u8; 0x1000];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        k[0x500..0x51f].copy_from_slice(b"6.1.0-50-amd64 (debian-kernel@l");
        assert_eq!(bzimage_release(&k).as_deref(), Some("6.1.0-50-amd64"));
        k[0x20e..0x210].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert_eq!(bzimage_release(&k), None);
    }
}
