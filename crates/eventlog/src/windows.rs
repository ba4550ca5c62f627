//! What a Windows boot measured about itself, from its SIPA events
//! ([`crate::sipa`]): the boot counter, code integrity, test and flight
//! signing, boot and kernel debugging, safe mode, WinPE, DEP, the
//! hypervisor's and VSM's launch types, the HVCI policy, BitLocker
//! unlocks, the ELAM drivers and their measured policy, and every module
//! the boot manager and loader loaded with its Authenticode hash and
//! signer. Each fact names the event that measured it.
//!
//! Windows' boot manager closes PCRs 12, 13 and 14 with an EV_SEPARATOR
//! (`WBCL`) before the OS runs; anything extended into them afterwards
//! was extended by the running system, which a guest's root controls. So
//! only SIPA events before their PCR's separator are the boot's facts:
//! later ones are listed in [`WindowsBoot::after_separator`] and read no
//! further.

use serde::Serialize;

use crate::data::TaggedEvent;
use crate::sipa::{SipaEvent, SipaValue};

/// The PCRs Windows' boot measures its configuration (12), its boot
/// modules (13) and their signing authorities (14) into, and closes with
/// a separator.
pub const BOUNDARY_PCRS: [u32; 3] = [12, 13, 14];

/// A value Windows measured, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WindowsFact<T> {
    /// The value.
    pub value: T,
    /// The event (number) holding it.
    pub event: usize,
    /// Its PCR.
    pub pcr: u32,
}

/// An early-launch anti-malware driver and its measured policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElamDriver {
    /// `ELAM_KEYNAME` (`Windows Defender`).
    pub key_name: String,
    /// `ELAM_MEASURED`: the digest of its policy (hex).
    pub measured: Option<String>,
    /// The event holding it.
    pub event: usize,
    /// Its PCR.
    pub pcr: u32,
}

/// A module Windows' boot loaded (`LOADEDMODULE_AGGREGATION`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowsModule {
    /// `FILEPATH` (`\Windows\system32\winload.efi`), when measured.
    pub path: Option<String>,
    /// `AUTHENTICODEHASH` (hex).
    pub authenticode_hash: Option<String>,
    /// `HASHALGORITHMID` (a CALG id: 0x800c is SHA-256).
    pub hash_algorithm: Option<u64>,
    /// `AUTHORITYISSUER`: the signing certificate's issuer.
    pub issuer: Option<String>,
    /// `AUTHORITYPUBLISHER`: its subject.
    pub publisher: Option<String>,
    /// `IMAGEVALIDATED`: the loader validated its signature.
    pub validated: Option<bool>,
    /// The event holding it.
    pub event: usize,
    /// Its PCR.
    pub pcr: u32,
}

/// A Windows boot's own measurements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowsBoot {
    /// `BOOTCOUNTER`.
    pub boot_counter: Vec<WindowsFact<u64>>,
    /// `CODEINTEGRITY`: on.
    pub code_integrity: Vec<WindowsFact<bool>>,
    /// `TESTSIGNING`: test-signed code accepted.
    pub test_signing: Vec<WindowsFact<bool>>,
    /// `FLIGHTSIGNING`: flight-signed (pre-release) code accepted.
    pub flight_signing: Vec<WindowsFact<bool>>,
    /// `BOOTDEBUGGING`: the boot manager's debugger.
    pub boot_debugging: Vec<WindowsFact<bool>>,
    /// `OSKERNELDEBUG`: the kernel debugger.
    pub kernel_debugging: Vec<WindowsFact<bool>>,
    /// `HYPERVISOR_DEBUG`: the hypervisor's debugger.
    pub hypervisor_debugging: Vec<WindowsFact<bool>>,
    /// `SAFEMODE`.
    pub safe_mode: Vec<WindowsFact<bool>>,
    /// `WINPE`.
    pub winpe: Vec<WindowsFact<bool>>,
    /// `DATAEXECUTIONPREVENTION`: the DEP policy (0 off, 1 opt-in, 2
    /// opt-out, 3 always on).
    pub dep_policy: Vec<WindowsFact<u64>>,
    /// `HYPERVISOR_LAUNCH_TYPE` (0: not launched).
    pub hypervisor_launch_type: Vec<WindowsFact<u64>>,
    /// `VSM_LAUNCH_TYPE` (0: VBS off).
    pub vsm_launch_type: Vec<WindowsFact<u64>>,
    /// `VBS_HVCI_POLICY`.
    pub hvci_policy: Vec<WindowsFact<u64>>,
    /// `BITLOCKER_UNLOCK`: how the OS volume was unlocked (flags; 0: not
    /// encrypted or no unlock measured).
    pub bitlocker_unlock: Vec<WindowsFact<u64>>,
    /// ELAM drivers.
    pub elam: Vec<ElamDriver>,
    /// Modules loaded, in log order.
    pub modules: Vec<WindowsModule>,
    /// `LSAISO_CONFIG`: the configuration of LSA's isolated process
    /// (Credential Guard), hex.
    pub lsaiso_config: Vec<WindowsFact<String>>,
    /// SIPA event types Windows does not define (kept raw in the log).
    pub unknown_types: Vec<WindowsFact<u32>>,
    /// SIPA-typed events whose data does not decode (why).
    pub malformed: Vec<WindowsFact<String>>,
    /// The separator that closed each of PCRs 12-14 (`value`: the PCR).
    pub separators: Vec<WindowsFact<u32>>,
    /// SIPA events measured after their PCR's separator (`value`: the
    /// SIPA type, 0 when the event does not decode): extended by the
    /// running system, not read as facts.
    pub after_separator: Vec<WindowsFact<u32>>,
}

fn text(v: &SipaValue) -> Option<String> {
    match v {
        SipaValue::Text(t) => Some(t.clone()),
        _ => None,
    }
}

fn hex(v: &SipaValue) -> Option<String> {
    match v {
        SipaValue::Bytes(b) => Some(crate::hex::encode(b)),
        _ => None,
    }
}

impl WindowsBoot {
    /// Adds a tagged event of event `event` (PCR `pcr`): its facts when
    /// the PCR is still open, else a note that it came after the
    /// separator.
    pub(crate) fn add_tagged(&mut self, t: &TaggedEvent, event: usize, pcr: u32, closed: bool) {
        let fact = |value| WindowsFact { value, event, pcr };
        match (&t.sipa, &t.sipa_error) {
            (Some(_), _) | (None, Some(_)) if closed => self.after_separator.push(fact(t.id)),
            (Some(s), _) => self.add(s, event, pcr),
            (None, Some(why)) => self.add_malformed(why.clone(), event, pcr, false),
            (None, None) => {}
        }
    }

    /// Notes a SIPA event of event `event` (PCR `pcr`) that does not
    /// decode, and why.
    pub(crate) fn add_malformed(&mut self, why: String, event: usize, pcr: u32, closed: bool) {
        if closed {
            self.after_separator.push(WindowsFact {
                value: 0,
                event,
                pcr,
            });
        } else {
            self.malformed.push(WindowsFact {
                value: why,
                event,
                pcr,
            });
        }
    }

    /// Adds what SIPA event `top` (of event `event`, PCR `pcr`) measured.
    fn add(&mut self, top: &SipaEvent, event: usize, pcr: u32) {
        for e in top.walk() {
            let flag = |v: &SipaValue| match v {
                SipaValue::Flag(b) => Some(*b),
                SipaValue::Number(n) => Some(*n != 0),
                _ => None,
            };
            let number = |v: &SipaValue| match v {
                SipaValue::Number(n) => Some(*n),
                SipaValue::Flag(b) => Some(u64::from(*b)),
                _ => None,
            };
            let flags = match e.name {
                "CODEINTEGRITY" => Some(&mut self.code_integrity),
                "TESTSIGNING" => Some(&mut self.test_signing),
                "FLIGHTSIGNING" => Some(&mut self.flight_signing),
                "BOOTDEBUGGING" => Some(&mut self.boot_debugging),
                "OSKERNELDEBUG" => Some(&mut self.kernel_debugging),
                "HYPERVISOR_DEBUG" => Some(&mut self.hypervisor_debugging),
                "SAFEMODE" => Some(&mut self.safe_mode),
                "WINPE" => Some(&mut self.winpe),
                _ => None,
            };
            if let (Some(list), Some(b)) = (flags, flag(&e.value)) {
                list.push(WindowsFact {
                    value: b,
                    event,
                    pcr,
                });
                continue;
            }
            let numbers = match e.name {
                "BOOTCOUNTER" => Some(&mut self.boot_counter),
                "DATAEXECUTIONPREVENTION" => Some(&mut self.dep_policy),
                "HYPERVISOR_LAUNCH_TYPE" => Some(&mut self.hypervisor_launch_type),
                "VSM_LAUNCH_TYPE" => Some(&mut self.vsm_launch_type),
                "VBS_HVCI_POLICY" => Some(&mut self.hvci_policy),
                "BITLOCKER_UNLOCK" => Some(&mut self.bitlocker_unlock),
                _ => None,
            };
            if let (Some(list), Some(n)) = (numbers, number(&e.value)) {
                list.push(WindowsFact {
                    value: n,
                    event,
                    pcr,
                });
                continue;
            }
            match (e.name, &e.value) {
                ("ELAM_AGGREGATION", SipaValue::Events(inner)) => {
                    let find = |n: &str| inner.iter().find(|x| x.name == n).map(|x| &x.value);
                    if let Some(key_name) = find("ELAM_KEYNAME").and_then(text) {
                        self.elam.push(ElamDriver {
                            key_name,
                            measured: find("ELAM_MEASURED").and_then(hex),
                            event,
                            pcr,
                        });
                    }
                }
                ("LOADEDMODULE_AGGREGATION", SipaValue::Events(inner)) => {
                    let find = |n: &str| inner.iter().find(|x| x.name == n).map(|x| &x.value);
                    self.modules.push(WindowsModule {
                        path: find("FILEPATH").and_then(text),
                        authenticode_hash: find("AUTHENTICODEHASH").and_then(hex),
                        hash_algorithm: find("HASHALGORITHMID").and_then(number),
                        issuer: find("AUTHORITYISSUER").and_then(text),
                        publisher: find("AUTHORITYPUBLISHER").and_then(text),
                        validated: find("IMAGEVALIDATED").and_then(flag),
                        event,
                        pcr,
                    });
                }
                ("LSAISO_CONFIG", v) => {
                    if let Some(value) = hex(v) {
                        self.lsaiso_config.push(WindowsFact { value, event, pcr });
                    }
                }
                ("unknown", _) => self.unknown_types.push(WindowsFact {
                    value: e.kind,
                    event,
                    pcr,
                }),
                _ => {}
            }
        }
    }
}
