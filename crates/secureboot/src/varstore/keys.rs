//! Secure Boot databases and mode in a store: enrolling certificates,
//! key templates (Microsoft from a distribution image, custom, none), and
//! turning Secure Boot on the way `virt-fw-vars --sb` does.

use trustlaunch_eventlog::Guid;

use super::{
    cert_not_before, EfiTime, VarStore, VarStoreError, Variable, ATTR_SECURE_BOOT_DB,
    CUSTOM_MODE_ENABLE, OVMF_ENROLL_DEFAULT_KEYS, SECURE_BOOT_ENABLE_DISABLE,
};
use crate::siglist::{SignatureDb, SignatureType};

/// Which Secure Boot database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecureBootVar {
    /// PK (global variable GUID).
    Pk,
    /// KEK (global variable GUID).
    Kek,
    /// db (image security database GUID).
    Db,
    /// dbx (image security database GUID).
    Dbx,
}

impl SecureBootVar {
    /// Name and vendor GUID.
    pub const fn id(self) -> (&'static str, Guid) {
        match self {
            Self::Pk => ("PK", Guid::GLOBAL_VARIABLE),
            Self::Kek => ("KEK", Guid::GLOBAL_VARIABLE),
            Self::Db => ("db", Guid::IMAGE_SECURITY_DATABASE),
            Self::Dbx => ("dbx", Guid::IMAGE_SECURITY_DATABASE),
        }
    }
}

impl VarStore {
    /// A Secure Boot database as signature lists; `None` when the
    /// variable does not exist.
    pub fn secure_boot_db(
        &self,
        which: SecureBootVar,
    ) -> Result<Option<SignatureDb>, VarStoreError> {
        let (name, guid) = which.id();
        self.get(name, guid).map(Variable::signature_db).transpose()
    }

    /// Replaces a Secure Boot database; the timestamp moves forward to
    /// `timestamp` (the variable keeps a later one).
    pub fn set_signature_db(
        &mut self,
        which: SecureBootVar,
        db: &SignatureDb,
        timestamp: EfiTime,
    ) -> Result<(), VarStoreError> {
        let (name, guid) = which.id();
        let data = db.encode().map_err(|source| VarStoreError::SigList {
            name: name.to_owned(),
            source,
        })?;
        let v = self.entry(name, guid, ATTR_SECURE_BOOT_DB)?;
        v.data = data;
        v.update_time(timestamp);
        Ok(())
    }

    /// Enrolls an X.509 certificate (DER) as virt-fw-vars `--set-pk`
    /// (`replace`) or `--add-kek`/`--add-db`/`--add-dbx-cert` does: one list
    /// per certificate, duplicates skipped, timestamp moved forward to
    /// 2010-01-01 on replace and to the certificate's notBefore.
    pub fn enroll_x509(
        &mut self,
        which: SecureBootVar,
        owner: Guid,
        der: &[u8],
        replace: bool,
    ) -> Result<(), VarStoreError> {
        let not_before = cert_not_before(der)?;
        let (name, guid) = which.id();
        let v = self.entry(name, guid, ATTR_SECURE_BOOT_DB)?;
        let mut db = if replace {
            v.update_time(EfiTime::INITIAL);
            SignatureDb::default()
        } else {
            v.signature_db()?
        };
        db.add_x509(owner, der.to_vec());
        v.data = db.encode().map_err(|source| VarStoreError::SigList {
            name: name.to_owned(),
            source,
        })?;
        v.update_time(not_before);
        Ok(())
    }

    /// Turns Secure Boot on as `virt-fw-vars --sb` does: a dbx holding the
    /// SHA-256 of the empty string (owner OVMF EnrollDefaultKeys) when there
    /// is no dbx, SecureBootEnable = 1, CustomMode = 0. Secure Boot is
    /// enforced once PK is enrolled too (setup mode ends with PK).
    pub fn enable_secure_boot(&mut self) -> Result<(), VarStoreError> {
        let (name, guid) = SecureBootVar::Dbx.id();
        if self.get(name, guid).is_none() {
            let mut db = SignatureDb::default();
            let empty_sha256 = vec![
                0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
                0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
                0x78, 0x52, 0xb8, 0x55,
            ];
            db.add_hash(
                SignatureType::Sha256,
                OVMF_ENROLL_DEFAULT_KEYS,
                empty_sha256,
            )
            .map_err(|source| VarStoreError::SigList {
                name: name.to_owned(),
                source,
            })?;
            self.set_signature_db(SecureBootVar::Dbx, &db, EfiTime::INITIAL)?;
        }
        self.set_bool("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE, true)?;
        self.set_bool("CustomMode", CUSTOM_MODE_ENABLE, false)
    }

    /// Turns Secure Boot off: SecureBootEnable = 0 (edk2's platform switch;
    /// the keys stay enrolled). virt-fw-vars has no counterpart.
    pub fn disable_secure_boot(&mut self) -> Result<(), VarStoreError> {
        self.set_bool("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE, false)
    }

    /// Applies a key template: each present database replaces the current
    /// one (timestamp: the latest certificate notBefore, at least
    /// 2010-01-01); `None` leaves a variable alone.
    pub fn apply_keys(&mut self, keys: &KeyTemplate) -> Result<(), VarStoreError> {
        for (which, db) in [
            (SecureBootVar::Pk, &keys.pk),
            (SecureBootVar::Kek, &keys.kek),
            (SecureBootVar::Db, &keys.db),
            (SecureBootVar::Dbx, &keys.dbx),
        ] {
            if let Some(db) = db {
                let mut ts = EfiTime::INITIAL;
                for (t, e) in db.entries() {
                    if t == SignatureType::X509.guid() {
                        let nb = cert_not_before(&e.data)?;
                        if nb.key() > ts.key() {
                            ts = nb;
                        }
                    }
                }
                self.set_signature_db(which, db, ts)?;
            }
        }
        Ok(())
    }
}

/// Secure Boot keys to put into a store; `None` leaves a variable as is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTemplate {
    /// PK.
    pub pk: Option<SignatureDb>,
    /// KEK.
    pub kek: Option<SignatureDb>,
    /// db.
    pub db: Option<SignatureDb>,
    /// dbx.
    pub dbx: Option<SignatureDb>,
}

impl KeyTemplate {
    /// No keys: leaves every database alone (setup mode on an empty store).
    pub fn none() -> Self {
        KeyTemplate::default()
    }

    /// Caller-supplied databases.
    pub fn custom(
        pk: SignatureDb,
        kek: SignatureDb,
        db: SignatureDb,
        dbx: Option<SignatureDb>,
    ) -> Self {
        KeyTemplate {
            pk: Some(pk),
            kek: Some(kek),
            db: Some(db),
            dbx,
        }
    }

    /// Microsoft KEK and db taken from a distribution's
    /// `OVMF_VARS_4M.ms.fd` image (no certificates are vendored here);
    /// PK and dbx are left to the caller.
    pub fn microsoft(ms_vars: &[u8]) -> Result<Self, VarStoreError> {
        let store = VarStore::parse(ms_vars)?;
        let get = |which: SecureBootVar| {
            store
                .secure_boot_db(which)?
                .ok_or_else(|| VarStoreError::MissingVariable(which.id().0.to_owned()))
        };
        Ok(KeyTemplate {
            pk: None,
            kek: Some(get(SecureBootVar::Kek)?),
            db: Some(get(SecureBootVar::Db)?),
            dbx: None,
        })
    }
}
