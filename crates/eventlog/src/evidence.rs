//! The boot evidence that appraisal needs, extracted from a parsed log:
//! Secure Boot state as measured into PCR 7 (PFP §3.3.4.8, §10.4.4), the
//! authorities that allowed each image, the boot applications, the order of
//! events around the separators and ExitBootServices (§8.2), systemd-stub's
//! UKI sections and command line (PCR 11/12), and shim's MOK variables
//! (PCR 14). Nothing here judges; it only names what the log says, by event.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::data::EventData;
use crate::efi::VariableContent;
use crate::event_type::EventType;
use crate::guid::Guid;
use crate::log::{Event, EventDigests, EventLog};
use crate::replay::is_extended;

/// A UEFI variable as measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeasuredVariable {
    /// Event number.
    pub event: usize,
    /// PCR.
    pub pcr: u32,
    /// Event type.
    pub event_type: EventType,
    /// Vendor GUID.
    pub guid: Guid,
    /// Name.
    pub name: String,
    /// The variable's data as measured (hex).
    #[serde(serialize_with = "crate::ser::hex")]
    pub data: Vec<u8>,
    /// Decoded content, where the name says what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<VariableContent>,
}

/// An EV_EFI_VARIABLE_AUTHORITY event: the db (or shim MOK/vendor)
/// entry that authorised the next image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Authority {
    /// Event number.
    pub event: usize,
    /// PCR (7).
    pub pcr: u32,
    /// The database the entry came from (`db`, `MokList`, `Shim`, ...).
    pub database: String,
    /// The database's vendor GUID.
    pub guid: Guid,
    /// The EFI_SIGNATURE_DATA owner, when the data is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Guid>,
    /// The certificate (DER) or hash that authorised the image (hex).
    #[serde(serialize_with = "crate::ser::hex")]
    pub entry: Vec<u8>,
    /// The next image-load event after this one, which it authorised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorised_image_event: Option<usize>,
}

/// Which kind of image was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// EV_EFI_BOOT_SERVICES_APPLICATION.
    Application,
    /// EV_EFI_BOOT_SERVICES_DRIVER.
    BootServicesDriver,
    /// EV_EFI_RUNTIME_SERVICES_DRIVER.
    RuntimeDriver,
}

/// A measured EFI image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootImage {
    /// Event number.
    pub event: usize,
    /// PCR (4 for applications, 2 for option-ROM drivers, ...).
    pub pcr: u32,
    /// Kind.
    pub kind: ImageKind,
    /// The image's Authenticode digests, one per bank.
    pub digests: EventDigests,
    /// The device path text, when it decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// The file path within the device (`\EFI\BOOT\BOOTX64.EFI`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// The authority event that immediately preceded it in PCR 7, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority_event: Option<usize>,
}

/// One event of the boot's timeline around the separators and
/// ExitBootServices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Milestone {
    /// Event number.
    pub event: usize,
    /// PCR.
    pub pcr: u32,
    /// What happened.
    #[serde(flatten)]
    pub what: MilestoneKind,
}

/// A milestone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "milestone", rename_all = "snake_case")]
pub enum MilestoneKind {
    /// EV_SEPARATOR; `error` for the 0xFFFFFFFF form.
    Separator {
        /// Whether it is the error separator.
        error: bool,
    },
    /// EV_EFI_ACTION or EV_ACTION text ("Calling EFI Application from Boot
    /// Option", "Exit Boot Services Invocation", ...).
    Action {
        /// The text.
        text: String,
    },
    /// An image load (see [`BootEvidence::images`]).
    ImageLoad,
}

/// One EV_IPL string (UKI section name, command line, grub command, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IplString {
    /// Event number.
    pub event: usize,
    /// PCR.
    pub pcr: u32,
    /// The text.
    pub text: String,
    /// The digests logged with it.
    pub digests: EventDigests,
}

/// A UKI section measured by systemd-stub into PCR 11: the name event and
/// the content event that follows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UkiSection {
    /// Section name (`.linux`, `.cmdline`, ...).
    pub name: String,
    /// Event number of the name measurement.
    pub name_event: usize,
    /// Event number of the content measurement, if present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_event: Option<usize>,
    /// Digests of the section's content.
    pub content_digests: EventDigests,
}

/// Everything appraisal reads from a log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootEvidence {
    /// PCRs that have at least one extended event.
    pub pcrs: BTreeSet<u32>,
    /// The SecureBoot variable as measured (1 = on), if measured.
    pub secure_boot: Option<u8>,
    /// EV_EFI_VARIABLE_DRIVER_CONFIG events of PCR 7 before its separator
    /// (SecureBoot, PK, KEK, db, dbx, and any others the firmware adds).
    pub secure_boot_variables: Vec<MeasuredVariable>,
    /// Authority events, in order.
    pub authorities: Vec<Authority>,
    /// EFI images loaded, in order.
    pub images: Vec<BootImage>,
    /// Separators, actions and image loads in log order.
    pub timeline: Vec<Milestone>,
    /// Event number of "Exit Boot Services Invocation", if logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_boot_services: Option<usize>,
    /// PCRs whose separator is the error form (0xFFFFFFFF).
    pub error_separators: Vec<u32>,
    /// PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG events after PCR 7's separator
    /// (Secure Boot configuration changed after it was sealed): event numbers.
    pub pcr7_config_after_separator: Vec<usize>,
    /// Boot variables (BootOrder, Boot####) measured into PCR 1.
    pub boot_variables: Vec<MeasuredVariable>,
    /// UKI sections measured by systemd-stub (PCR 11).
    pub uki_sections: Vec<UkiSection>,
    /// Kernel command lines: systemd-stub's PCR 12 measurement, or a boot
    /// loader's (grub's `kernel_cmdline:` in PCR 8).
    pub kernel_command_lines: Vec<IplString>,
    /// Other EV_IPL strings (grub commands, boot loader entries).
    pub ipl_strings: Vec<IplString>,
    /// PCR 9: files the boot loader and the kernel measured as they loaded
    /// them — grub's paths (kernel, initrd, grub.cfg) and the Linux EFI
    /// stub's tagged events (`Linux initrd`, `LOADED_IMAGE::LoadOptions`);
    /// the text names the file, the digest is its content's.
    pub loaded_files: Vec<IplString>,
    /// shim's MOK state measured into PCR 14 (MokList, MokListX,
    /// MokListTrusted, MokSBState as EV_IPL or variable events).
    pub mok: Vec<IplString>,
    /// shim's SBAT level: logged as an EV_EFI_VARIABLE_AUTHORITY event
    /// (variable `SbatLevel`, shim-lock GUID) although it authorises no
    /// image — its data is SBAT CSV text (`sbat,1,2025021800\nshim,4...`),
    /// so it is reported here and not among the authorities.
    pub sbat_levels: Vec<IplString>,
    /// A Windows boot's own measurements (its SIPA events), when the log
    /// has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::windows::WindowsBoot>,
}

fn variable(event: &Event, data: EventData) -> Option<MeasuredVariable> {
    match data {
        EventData::Variable(v) => Some(MeasuredVariable {
            event: event.index,
            pcr: event.pcr,
            event_type: event.event_type,
            guid: v.guid,
            name: v.name,
            data: v.data,
            content: v.decoded,
        }),
        _ => None,
    }
}

fn ipl(event: &Event, text: String) -> IplString {
    IplString {
        event: event.index,
        pcr: event.pcr,
        text,
        digests: event.digests.clone(),
    }
}

impl BootEvidence {
    /// Extracts the evidence. Events whose data does not decode are kept
    /// out of the typed lists (a decoding failure is visible in `show`).
    pub fn extract(log: &EventLog) -> Self {
        let uintn = log.uintn_bytes();
        let mut ev = BootEvidence::default();
        let mut pcr7_sealed = false;
        // PCRs 12-14 and the separator that closed each (Windows closes
        // them with `WBCL` before the OS runs).
        let mut windows_closed: std::collections::BTreeMap<u32, usize> = Default::default();
        let mut pending_authority: Option<usize> = None;
        let mut pending_uki: Option<usize> = None;
        for event in log.events() {
            if is_extended(event) {
                ev.pcrs.insert(event.pcr);
            }
            let data = match event.decode_with_uintn(uintn) {
                Ok(data) => data,
                Err(err) => {
                    // A Windows measurement that does not even frame as
                    // tagged events: what it measured is unknown, which
                    // is itself a fact of the boot.
                    if event.event_type == EventType::EV_EVENT_TAG
                        && crate::windows::BOUNDARY_PCRS.contains(&event.pcr)
                        && crate::sipa::starts_tagged(&event.data)
                    {
                        let closed = windows_closed.contains_key(&event.pcr);
                        ev.windows
                            .get_or_insert_with(Default::default)
                            .add_malformed(err.to_string(), event.index, event.pcr, closed);
                    }
                    continue;
                }
            };
            match event.event_type {
                EventType::EV_SEPARATOR => {
                    let error = matches!(data, EventData::Separator { error: true, .. });
                    if error {
                        ev.error_separators.push(event.pcr);
                    }
                    if event.pcr == 7 {
                        pcr7_sealed = true;
                    }
                    if crate::windows::BOUNDARY_PCRS.contains(&event.pcr) {
                        windows_closed.entry(event.pcr).or_insert(event.index);
                    }
                    ev.timeline.push(Milestone {
                        event: event.index,
                        pcr: event.pcr,
                        what: MilestoneKind::Separator { error },
                    });
                }
                EventType::EV_EFI_ACTION | EventType::EV_ACTION => {
                    if let EventData::Text { text, .. } = data {
                        if text == "Exit Boot Services Invocation"
                            && ev.exit_boot_services.is_none()
                        {
                            ev.exit_boot_services = Some(event.index);
                        }
                        ev.timeline.push(Milestone {
                            event: event.index,
                            pcr: event.pcr,
                            what: MilestoneKind::Action { text },
                        });
                    }
                }
                EventType::EV_EFI_VARIABLE_DRIVER_CONFIG => {
                    if event.pcr == 7 && pcr7_sealed {
                        ev.pcr7_config_after_separator.push(event.index);
                    }
                    if let Some(v) = variable(event, data) {
                        if event.pcr == 7 {
                            if v.name == "SecureBoot" && v.guid == Guid::GLOBAL_VARIABLE {
                                ev.secure_boot = match v.data.as_slice() {
                                    [b] => Some(*b),
                                    // Some firmware measures an empty
                                    // SecureBoot variable when it is unset.
                                    _ => Some(0),
                                };
                            }
                            ev.secure_boot_variables.push(v);
                        } else if event.pcr == 14 {
                            ev.mok.push(ipl(event, v.name));
                        }
                    }
                }
                EventType::EV_EFI_VARIABLE_BOOT | EventType::EV_EFI_VARIABLE_BOOT2 => {
                    if let Some(v) = variable(event, data) {
                        ev.boot_variables.push(v);
                    }
                }
                EventType::EV_EFI_VARIABLE_AUTHORITY => {
                    if let EventData::Variable(v) = data {
                        if v.guid == Guid::SHIM_LOCK && v.name == "SbatLevel" {
                            ev.sbat_levels.push(IplString {
                                event: event.index,
                                pcr: event.pcr,
                                text: String::from_utf8_lossy(&v.data).into_owned(),
                                digests: event.digests.clone(),
                            });
                            continue;
                        }
                        let (owner, entry) = match v.decoded {
                            Some(VariableContent::Authority(sd)) => (Some(sd.owner), sd.data),
                            Some(VariableContent::AuthorityCertificate { der }) => (None, der),
                            _ => (None, v.data),
                        };
                        let authority = ev.authorities.len();
                        ev.authorities.push(Authority {
                            event: event.index,
                            pcr: event.pcr,
                            database: v.name,
                            guid: v.guid,
                            owner,
                            entry,
                            authorised_image_event: None,
                        });
                        // Firmware logs the authority before the image it
                        // verified; shim (its vendor cert, MokList) logs it
                        // after measuring the image (seen in real logs).
                        let after_image = v.guid == Guid::SHIM_LOCK;
                        let last = ev.images.last_mut().filter(|i| i.authority_event.is_none());
                        match last {
                            Some(image) if after_image => {
                                image.authority_event = Some(event.index);
                                if let Some(a) = ev.authorities.get_mut(authority) {
                                    a.authorised_image_event = Some(image.event);
                                }
                            }
                            _ => pending_authority = Some(authority),
                        }
                    }
                }
                EventType::EV_EFI_BOOT_SERVICES_APPLICATION
                | EventType::EV_EFI_BOOT_SERVICES_DRIVER
                | EventType::EV_EFI_RUNTIME_SERVICES_DRIVER => {
                    let kind = match event.event_type {
                        EventType::EV_EFI_BOOT_SERVICES_APPLICATION => ImageKind::Application,
                        EventType::EV_EFI_BOOT_SERVICES_DRIVER => ImageKind::BootServicesDriver,
                        _ => ImageKind::RuntimeDriver,
                    };
                    let (device_path, file_path) = match &data {
                        EventData::ImageLoad { device_path, .. } => {
                            (Some(device_path.text.clone()), device_path.file_path())
                        }
                        _ => (None, None),
                    };
                    let authority_event = pending_authority.take().and_then(|i| {
                        let a = ev.authorities.get_mut(i)?;
                        a.authorised_image_event = Some(event.index);
                        Some(a.event)
                    });
                    ev.images.push(BootImage {
                        event: event.index,
                        pcr: event.pcr,
                        kind,
                        digests: event.digests.clone(),
                        device_path,
                        file_path,
                        authority_event,
                    });
                    ev.timeline.push(Milestone {
                        event: event.index,
                        pcr: event.pcr,
                        what: MilestoneKind::ImageLoad,
                    });
                }
                EventType::EV_EVENT_TAG if crate::sipa::starts_tagged(&event.data) => {
                    if let EventData::Tagged { events } = &data {
                        let w = ev.windows.get_or_insert_with(Default::default);
                        let closed = windows_closed.contains_key(&event.pcr);
                        for t in events {
                            w.add_tagged(t, event.index, event.pcr, closed);
                        }
                    }
                }
                EventType::EV_EVENT_TAG if event.pcr == 9 => {
                    if let EventData::Tagged { events } = data {
                        let names: Vec<String> = events
                            .iter()
                            .map(|t| {
                                t.text.clone().map_or_else(
                                    || format!("tagged event 0x{:08x}", t.id),
                                    |x| x.trim_end_matches('\0').to_owned(),
                                )
                            })
                            .collect();
                        ev.loaded_files.push(ipl(event, names.join(", ")));
                    }
                }
                EventType::EV_IPL => {
                    let EventData::Text { text, .. } = data else {
                        continue;
                    };
                    match event.pcr {
                        11 if text.starts_with('.') => {
                            // systemd-stub logs each section twice with the
                            // same description: first the name's hash, then
                            // the content's.
                            let open = pending_uki.take().and_then(|i| ev.uki_sections.get_mut(i));
                            if let Some(section) = open.filter(|s| s.name == text) {
                                section.content_event = Some(event.index);
                                section.content_digests = event.digests.clone();
                                continue;
                            }
                            pending_uki = Some(ev.uki_sections.len());
                            ev.uki_sections.push(UkiSection {
                                name: text,
                                name_event: event.index,
                                content_event: None,
                                content_digests: EventDigests::new(),
                            });
                        }
                        9 => ev.loaded_files.push(ipl(event, text)),
                        12 => ev.kernel_command_lines.push(ipl(event, text)),
                        14 => ev.mok.push(ipl(event, text)),
                        _ => {
                            if let Some(cmdline) = text.strip_prefix("kernel_cmdline: ") {
                                ev.kernel_command_lines
                                    .push(ipl(event, cmdline.to_string()));
                            } else {
                                ev.ipl_strings.push(ipl(event, text));
                            }
                        }
                    }
                    continue;
                }
                _ => {}
            }
        }
        if let Some(w) = ev.windows.as_mut() {
            w.separators = windows_closed
                .into_iter()
                .map(|(pcr, event)| crate::windows::WindowsFact {
                    value: pcr,
                    event,
                    pcr,
                })
                .collect();
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::HashAlg;
    use crate::efi::EfiVariable;
    use crate::log::LogFormat;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain(Some(0))
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    fn ev(index: usize, pcr: u32, t: EventType, data: Vec<u8>) -> Event {
        Event {
            index,
            offset: 0,
            pcr,
            event_type: t,
            digests: smallvec::smallvec![HashAlg::Sha1.hash(&data).unwrap()],
            data: data.into(),
            data_offset: 0,
        }
    }

    fn var(guid: Guid, name: &str, data: &[u8]) -> Vec<u8> {
        EfiVariable {
            guid,
            name: name.into(),
            data: data.to_vec(),
            data_offset: 0,
            decoded: None,
        }
        .to_bytes()
    }

    /// The shape of an OVMF + systemd-stub UKI boot (vm-runtime-notes.md).
    #[test]
    fn uki_boot_evidence() {
        let cert = {
            let mut c = vec![0x30, 0x82, 0x00, 0x03];
            c.extend_from_slice(&[1, 2, 3]);
            c
        };
        let mut authority = Guid::GLOBAL_VARIABLE.to_bytes().to_vec();
        authority.extend_from_slice(&cert);
        let events = vec![
            ev(
                0,
                7,
                EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
                var(Guid::GLOBAL_VARIABLE, "SecureBoot", &[1]),
            ),
            ev(
                1,
                7,
                EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
                var(Guid::GLOBAL_VARIABLE, "PK", &[]),
            ),
            ev(2, 7, EventType::EV_SEPARATOR, vec![0; 4]),
            ev(
                3,
                7,
                EventType::EV_EFI_VARIABLE_AUTHORITY,
                var(Guid::IMAGE_SECURITY_DATABASE, "db", &authority),
            ),
            ev(
                4,
                4,
                EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
                vec![0; 32],
            ),
            ev(5, 11, EventType::EV_IPL, utf16(".linux")),
            ev(6, 11, EventType::EV_IPL, utf16(".linux")),
            ev(7, 11, EventType::EV_IPL, utf16(".cmdline")),
            ev(8, 11, EventType::EV_IPL, utf16(".cmdline")),
            ev(9, 12, EventType::EV_IPL, utf16("console=ttyS0 quiet")),
            ev(10, 14, EventType::EV_IPL, b"MokList\0".to_vec()),
            ev(
                11,
                5,
                EventType::EV_EFI_ACTION,
                b"Exit Boot Services Invocation".to_vec(),
            ),
            ev(
                12,
                7,
                EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
                var(Guid::GLOBAL_VARIABLE, "SecureBoot", &[0]),
            ),
        ];
        let log = EventLog::from_parts(LogFormat::Sha1Legacy, None, events);
        let e = BootEvidence::extract(&log);
        assert_eq!(
            e.secure_boot,
            Some(0),
            "the last SecureBoot measurement wins"
        );
        assert_eq!(e.pcr7_config_after_separator, vec![12]);
        assert_eq!(e.authorities.len(), 1);
        assert_eq!(e.authorities[0].owner, Some(Guid::GLOBAL_VARIABLE));
        assert_eq!(e.authorities[0].entry, cert);
        assert_eq!(e.authorities[0].authorised_image_event, Some(4));
        assert_eq!(e.images[0].authority_event, Some(3));
        let sections: Vec<(&str, usize, Option<usize>)> = e
            .uki_sections
            .iter()
            .map(|s| (s.name.as_str(), s.name_event, s.content_event))
            .collect();
        assert_eq!(sections, [(".linux", 5, Some(6)), (".cmdline", 7, Some(8))]);
        assert_eq!(e.kernel_command_lines[0].text, "console=ttyS0 quiet");
        assert_eq!(e.mok[0].text, "MokList");
        assert_eq!(e.exit_boot_services, Some(11));
        assert_eq!(
            e.pcrs.iter().copied().collect::<Vec<_>>(),
            [4, 5, 7, 11, 12, 14]
        );
    }
}
