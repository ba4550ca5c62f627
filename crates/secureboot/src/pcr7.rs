//! PCR 7 prediction: the Secure Boot policy events an edk2 (OVMF) firmware
//! measures for a variable store, and the PCR 7 value they produce, before
//! the VM ever boots.
//!
//! What the firmware measures into PCR 7 (TCG PC Client PFP §3.3.4.8 and
//! §10.4.4; edk2 `Tcg2Dxe` `MeasureAllSecureVariables` and
//! `DxeImageVerificationLib` `SecureBootHook`, checked against real OVMF
//! 2022.11 boots):
//!
//! 1. EV_EFI_VARIABLE_DRIVER_CONFIG for `SecureBoot`, `PK`, `KEK`, `db`,
//!    `dbx`, in that order, each a UEFI_VARIABLE_DATA (variable GUID, name
//!    length, data length, UTF-16 name, data) hashed as a whole. A variable
//!    that does not exist is measured with no data. `SecureBoot` is the
//!    volatile variable the firmware derives at start: 1 when a PK is
//!    enrolled (user mode) and the platform switch `SecureBootEnable` is on
//!    (or absent: edk2 then creates it enabled).
//! 2. `dbt` and `dbr` the same way, only if they exist.
//! 3. EV_SEPARATOR (four zero bytes).
//! 4. For every boot application the firmware verifies, the first time a
//!    given db entry authorises one: EV_EFI_VARIABLE_AUTHORITY, a
//!    UEFI_VARIABLE_DATA named `db` whose data is the EFI_SIGNATURE_DATA
//!    (owner GUID, then the certificate or hash) that allowed it. None when
//!    Secure Boot is off (the firmware verifies nothing then).

use trustlaunch_eventlog::{Digest, EfiVariable, Guid, HashAlg};

use crate::siglist::SignatureData;
use crate::varstore::{SecureBootVar, VarStore, VarStoreError, SECURE_BOOT_ENABLE_DISABLE};
use crate::verify::{verify_image, Database, Verdict, VerifyError};

/// EV_SEPARATOR.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// EV_EFI_VARIABLE_DRIVER_CONFIG.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// EV_EFI_VARIABLE_AUTHORITY.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// Why a prediction could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Pcr7Error {
    /// A Secure Boot database in the store is malformed.
    #[error(transparent)]
    VarStore(#[from] VarStoreError),
    /// The boot application could not be checked against db/dbx.
    #[error("boot application: {0}")]
    Verify(#[from] VerifyError),
    /// The store's db/dbx would refuse the boot application: the firmware
    /// would not boot it, so there is no authority to predict.
    #[error("boot application is not allowed by this store: {0}")]
    NotAllowed(String),
    /// The verdict named a db entry that the store's db does not hold (an
    /// internal inconsistency; reported rather than guessed).
    #[error("db entry {0} not found in the store's db")]
    EntryNotFound(String),
}

/// One event the firmware will log into PCR 7.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictedEvent {
    /// Event type (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_SEPARATOR,
    /// EV_EFI_VARIABLE_AUTHORITY).
    pub event_type: u32,
    /// Variable name (`SecureBoot`, `PK`, ..., `db` for authorities), or
    /// `separator`.
    pub name: String,
    /// Vendor GUID of the variable (nil for the separator).
    pub guid: Guid,
    /// The event data exactly as logged (UEFI_VARIABLE_DATA, or the four
    /// separator bytes); the event digest is its hash.
    pub event_data: Vec<u8>,
}

impl PredictedEvent {
    /// The digest the firmware extends for this event in bank `alg`;
    /// `None` for an algorithm that cannot be computed here.
    pub fn digest(&self, alg: HashAlg) -> Option<Digest> {
        alg.hash(&self.event_data)
    }
}

/// The predicted PCR 7 events and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcr7Prediction {
    /// Whether the firmware will enforce Secure Boot (the `SecureBoot`
    /// variable it measures).
    pub secure_boot: bool,
    /// The events, in the order the firmware logs them.
    pub events: Vec<PredictedEvent>,
}

impl Pcr7Prediction {
    /// PCR 7 after all predicted events, in bank `alg` (starting from
    /// zeros, as PCR 7 is after reset); `None` for an algorithm that cannot
    /// be computed here.
    pub fn value(&self, alg: HashAlg) -> Option<Digest> {
        let mut pcr = Digest::zero(alg);
        for e in &self.events {
            pcr = pcr.extended(&e.digest(alg)?)?;
        }
        Some(pcr)
    }
}

/// UEFI_VARIABLE_DATA (PFP §10.4.4): variable GUID, UnicodeNameLength
/// (characters, no terminator), VariableDataLength, the UTF-16LE name, the
/// data — the event log crate's encoder.
pub fn uefi_variable_data(name: &str, guid: Guid, data: &[u8]) -> Vec<u8> {
    EfiVariable {
        guid,
        name: name.to_owned(),
        data: data.to_vec(),
        data_offset: 0,
        decoded: None,
    }
    .to_bytes()
}

/// Whether an edk2 firmware started with this store enforces Secure Boot:
/// a PK is enrolled and `SecureBootEnable` is 1 or absent.
pub fn secure_boot_enforced(store: &VarStore) -> bool {
    let (pk_name, pk_guid) = SecureBootVar::Pk.id();
    let pk_enrolled = store
        .get(pk_name, pk_guid)
        .is_some_and(|v| !v.data.is_empty());
    let switch_on = match store.get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE) {
        None => true,
        Some(v) => v.data.first() == Some(&1),
    };
    pk_enrolled && switch_on
}

/// Predicts the PCR 7 events for a store and the db entries
/// (EFI_SIGNATURE_DATA) that will authorise the boot applications, in boot
/// order; a repeated entry is measured once, as the firmware does.
pub fn predict_pcr7(store: &VarStore, authorities: &[SignatureData]) -> Pcr7Prediction {
    let secure_boot = secure_boot_enforced(store);
    let mut events = Vec::new();
    let config = |name: &str, guid: Guid, data: &[u8]| PredictedEvent {
        event_type: EV_EFI_VARIABLE_DRIVER_CONFIG,
        name: name.to_owned(),
        guid,
        event_data: uefi_variable_data(name, guid, data),
    };
    events.push(config(
        "SecureBoot",
        Guid::GLOBAL_VARIABLE,
        &[u8::from(secure_boot)],
    ));
    for which in [
        SecureBootVar::Pk,
        SecureBootVar::Kek,
        SecureBootVar::Db,
        SecureBootVar::Dbx,
    ] {
        let (name, guid) = which.id();
        let data = store.get(name, guid).map(|v| v.data.as_slice());
        events.push(config(name, guid, data.unwrap_or(&[])));
    }
    for name in ["dbt", "dbr"] {
        if let Some(v) = store.get(name, Guid::IMAGE_SECURITY_DATABASE) {
            events.push(config(name, Guid::IMAGE_SECURITY_DATABASE, &v.data));
        }
    }
    events.push(PredictedEvent {
        event_type: EV_SEPARATOR,
        name: "separator".to_owned(),
        guid: Guid::from_bytes([0; 16]),
        event_data: vec![0; 4],
    });
    if secure_boot {
        let mut seen: Vec<&SignatureData> = Vec::new();
        for a in authorities {
            if seen.contains(&a) {
                continue;
            }
            seen.push(a);
            events.push(PredictedEvent {
                event_type: EV_EFI_VARIABLE_AUTHORITY,
                name: "db".to_owned(),
                guid: Guid::IMAGE_SECURITY_DATABASE,
                event_data: uefi_variable_data("db", Guid::IMAGE_SECURITY_DATABASE, &a.to_bytes()),
            });
        }
    }
    Pcr7Prediction {
        secure_boot,
        events,
    }
}

/// The db entry (EFI_SIGNATURE_DATA) that authorises `image` under this
/// store, found the way the firmware finds it: the image is verified
/// against the store's db and dbx, and the allowing entry is looked up.
pub fn authority_for_image(store: &VarStore, image: &[u8]) -> Result<SignatureData, Pcr7Error> {
    let db = store.secure_boot_db(SecureBootVar::Db)?.unwrap_or_default();
    let dbx = store
        .secure_boot_db(SecureBootVar::Dbx)?
        .unwrap_or_default();
    let db_v = Database::from_signature_db(&db);
    let dbx_v = Database::from_signature_db(&dbx);
    match verify_image(image, &db_v, &dbx_v)? {
        Verdict::Allowed { by, .. } => db_v
            .records()
            .get(by.index)
            .map(|r| SignatureData {
                owner: r.owner,
                data: r.data.clone(),
            })
            .ok_or_else(|| Pcr7Error::EntryNotFound(format!("#{}", by.index))),
        other => Err(Pcr7Error::NotAllowed(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uefi_variable_data_layout() {
        let d = uefi_variable_data("db", Guid::IMAGE_SECURITY_DATABASE, &[1, 2, 3]);
        assert_eq!(&d[..16], &Guid::IMAGE_SECURITY_DATABASE.to_bytes());
        assert_eq!(u64::from_le_bytes(d[16..24].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(d[24..32].try_into().unwrap()), 3);
        assert_eq!(&d[32..36], &[b'd', 0, b'b', 0]);
        assert_eq!(&d[36..], &[1, 2, 3]);
    }
}
