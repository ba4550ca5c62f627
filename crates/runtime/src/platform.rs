//! The platform's home directory and its own keys.
//!
//! ```text
//! $TRUSTLAUNCH_HOME/                      (0700)
//!   master.key                             (0600) the platform master key:
//!                                           32 bytes that seal every private
//!                                           key at rest (trustlaunch-seal)
//!   platform/secureboot/{pk,kek,db}.key    sealed; the `custom` key
//!                                           template and the db key that
//!                                           signs platform images
//!   platform/secureboot/{pk,kek,db}.crt    PEM certificates
//!   platform/vtpm-ca/ca.key, ca.crt         the vTPM CA (EK certificates)
//!   keys/<vm>.vtpm.key                     sealed per-VM swtpm state key
//!   vms/<vm>/                              one directory per VM
//! ```
//!
//! Keys are made on first use and then only read: a platform keeps its
//! PK, db key and CA for its whole life (every enrolled varstore and every
//! EK certificate depends on them). Every private key is stored sealed
//! under the master key ([`SealedFile`]: AES-256-GCM, its purpose —
//! `platform/secureboot/pk`, `platform/vtpm-ca`, `vtpm/<vm>` — as
//! associated data), never in the clear; a key an older version left in
//! the clear is sealed in place the first time it is read. Every file is
//! 0600 and every directory 0700.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::CryptoRngCore;
use trustlaunch_eventlog::Guid;
pub use trustlaunch_seal::MasterKey;
use trustlaunch_secureboot::keys::{CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;
use zeroize::Zeroizing;

/// Why the platform's home or keys are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file meant to hold a secret is not safe to use.
    #[error("{path} {reason}")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A sealed key does not open: another master key, another purpose,
    /// or altered bytes.
    #[error("{path}: {source}")]
    Sealed {
        /// The sealed file.
        path: PathBuf,
        /// Why it does not open.
        source: trustlaunch_seal::SealError,
    },
    /// A stored key or certificate is unusable.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(crate) fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PlatformError + 'a {
    move |source| PlatformError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The owner GUID of every signature-list entry the platform enrolls.
pub const OWNER: Guid = Guid::from_fields(
    0xa0ba_a8a3,
    0x041d,
    0x48a8,
    [0xbc, 0x87, 0xc3, 0x6d, 0x12, 0x1b, 0x5e, 0x3d],
);

/// The platform's state directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$TRUSTLAUNCH_HOME`, else `/var/lib/trustlaunch` for root, else
    /// `$XDG_DATA_HOME/trustlaunch` (`~/.local/share/trustlaunch`).
    pub fn default_root() -> PathBuf {
        if let Some(h) = std::env::var_os("TRUSTLAUNCH_HOME") {
            return PathBuf::from(h);
        }
        if rustix::process::getuid().is_root() {
            return PathBuf::from("/var/lib/trustlaunch");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(x).join("trustlaunch");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        home.join(".local/share/trustlaunch")
    }

    /// Opens (creating, mode 0700) the home at `root`. A home made by an
    /// older version with wider modes has them narrowed to 0700.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, PlatformError> {
        let root = root.into();
        for d in [
            root.clone(),
            root.join("vms"),
            root.join("keys"),
            root.join("platform"),
        ] {
            private_dir(&d)?;
        }
        Ok(Self { root })
    }

    /// The platform master key's file (`master.key`, 0600).
    pub fn master_key_path(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The platform master key, made on first use.
    pub fn master_key(&self) -> Result<MasterKey, PlatformError> {
        load_or_create_master_key(&self.master_key_path(), &mut rand_core::OsRng)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where VM directories live.
    pub fn vms(&self) -> PathBuf {
        self.root.join("vms")
    }

    /// The per-VM key directory.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The platform's key directory.
    pub fn platform(&self) -> PathBuf {
        self.root.join("platform")
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing, and narrows an
/// existing one to 0700. A symlink in its place is refused: the platform's
/// directories are its own.
pub fn private_dir(dir: &Path) -> Result<(), PlatformError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("creating", dir))?;
    let meta = fs::symlink_metadata(dir).map_err(io_error("reading", dir))?;
    if !meta.is_dir() {
        return Err(PlatformError::Insecure {
            path: dir.to_owned(),
            reason: "is not a directory (a symlink?)".into(),
        });
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("chmod 0700", dir))?;
    }
    Ok(())
}

/// Narrows an existing secret file to 0600; refuses a symlink or anything
/// but a regular file. Missing is fine (nothing to protect).
pub fn secure_existing(path: &Path) -> Result<(), PlatformError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("reading", path)(e)),
    };
    if !meta.file_type().is_file() {
        return Err(PlatformError::Insecure {
            path: path.to_owned(),
            reason: "is not a regular file (a symlink?): refusing to use it for a secret".into(),
        });
    }
    if meta.permissions().mode() & 0o7777 != 0o600 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_error("chmod 0600", path))?;
    }
    Ok(())
}

/// Writes a secret (a key, a token): mode 0600, never through a symlink
/// (one planted at `path` is refused), replacing an old file atomically.
pub fn write_secret(path: &Path, data: &[u8]) -> Result<(), PlatformError> {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(PlatformError::Insecure {
            path: path.to_owned(),
            reason: "is not a regular file (a symlink?): refusing to write a secret there".into(),
        });
    }
    write_file(path, data, 0o600)
}

/// Reads a secret file the platform wrote: refuses a symlink, narrows a
/// wider mode to 0600, bounded by `limit`.
pub fn read_secret(path: &Path, limit: u64) -> Result<Vec<u8>, PlatformError> {
    secure_existing(path)?;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io_error("reading", path))?;
    use std::io::Read;
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_error("reading", path))?;
    if buf.len() as u64 > limit {
        return Err(PlatformError::BadKey {
            path: path.to_owned(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(buf)
}

/// A private key at rest: a file holding the key sealed under the
/// platform master key for one purpose (`trustlaunch_seal`'s armor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedFile {
    /// The file (0600).
    pub path: PathBuf,
    /// The purpose it is sealed for (the associated data): a sealed key
    /// copied to another slot does not open there.
    pub purpose: String,
}

/// The largest sealed file read (keys are a few KiB).
const SEALED_LIMIT: u64 = 256 << 10;

impl SealedFile {
    /// The file at `path`, sealed for `purpose`.
    pub fn new(path: impl Into<PathBuf>, purpose: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            purpose: purpose.into(),
        }
    }

    /// Whether the file exists (sealed or not).
    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// Seals `secret` and writes it (0600, atomically, never through a
    /// symlink).
    pub fn write(
        &self,
        master: &MasterKey,
        secret: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), PlatformError> {
        let sealed =
            master
                .seal(&self.purpose, secret, rng)
                .map_err(|source| PlatformError::Sealed {
                    path: self.path.clone(),
                    source,
                })?;
        write_secret(&self.path, sealed.as_bytes())
    }

    /// Reads and opens the secret. A file an older version wrote in the
    /// clear (`legacy` says whether its bytes are such a key) is sealed in
    /// place first, atomically; anything else that is not sealed armor is
    /// refused.
    pub fn read(
        &self,
        master: &MasterKey,
        legacy: fn(&[u8]) -> bool,
    ) -> Result<Zeroizing<Vec<u8>>, PlatformError> {
        let bytes = Zeroizing::new(read_secret(&self.path, SEALED_LIMIT)?);
        let text = std::str::from_utf8(&bytes).ok();
        if let Some(text) = text.filter(|t| trustlaunch_seal::is_sealed(t)) {
            return master
                .open(&self.purpose, text)
                .map_err(|source| PlatformError::Sealed {
                    path: self.path.clone(),
                    source,
                });
        }
        if !legacy(&bytes) {
            return Err(PlatformError::BadKey {
                path: self.path.clone(),
                reason: "neither a sealed secret nor a key this platform wrote in the clear".into(),
            });
        }
        self.write(master, &bytes, &mut rand_core::OsRng)?;
        Ok(bytes)
    }
}

/// A PEM private key an older version wrote in the clear.
pub fn legacy_pem_key(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|t| t.trim_start().starts_with("-----BEGIN") && t.contains("PRIVATE KEY-----"))
}

/// The platform master key at `path`: read (32 bytes, 0600, no symlink),
/// or made and written with `O_EXCL` when missing, so two processes
/// starting at once agree on one key.
pub fn load_or_create_master_key(
    path: &Path,
    rng: &mut impl CryptoRngCore,
) -> Result<MasterKey, PlatformError> {
    let bad = |reason: String| PlatformError::BadKey {
        path: path.to_owned(),
        reason,
    };
    if fs::symlink_metadata(path).is_err() {
        if let Some(d) = path.parent() {
            private_dir(d)?;
        }
        let key = MasterKey::generate(rng);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
        {
            Ok(mut f) => {
                f.write_all(key.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io_error("writing", path))?;
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", path)(e)),
        }
    }
    let bytes = read_secret(path, 64)?;
    MasterKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// Writes a new file with `mode`, replacing any old one atomically.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PlatformError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error("creating", &tmp))?;
    f.write_all(data).map_err(io_error("writing", &tmp))?;
    f.sync_all().map_err(io_error("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_error("renaming to", path))
}

/// Reads a file the platform wrote, bounded (keys and JSON are small).
pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, PlatformError> {
    use std::io::Read;
    let f = fs::File::open(path).map_err(io_error("reading", path))?;
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_error("reading", path))?;
    if buf.len() as u64 > limit {
        return Err(PlatformError::BadKey {
            path: path.to_owned(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(buf)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The platform's keys: Secure Boot PK, KEK and db (the `custom` key
/// template; the db key signs platform images) and the vTPM CA.
#[derive(Clone, Debug)]
pub struct PlatformKeys {
    /// Platform key.
    pub pk: KeyPair,
    /// Key exchange key.
    pub kek: KeyPair,
    /// Signature database key (signs the platform's images).
    pub db: KeyPair,
    /// Issues every vTPM's EK certificate.
    pub vtpm_ca: VtpmCa,
}

const KEY_LIMIT: u64 = 64 << 10;
const NO_EXPIRY: u64 = 253_402_300_799;

impl PlatformKeys {
    /// Loads the platform's keys, creating those that do not exist yet;
    /// private keys are sealed under the home's master key (one left in
    /// the clear by an older version is sealed in place).
    pub fn load_or_create(
        home: &Home,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, PlatformError> {
        let master = home.master_key()?;
        let sb = home.platform().join("secureboot");
        private_dir(&sb)?;
        let now = unix_now();
        let pk = key_pair(
            &master,
            &sb,
            "pk",
            None,
            "trustlaunch platform PK",
            CertRole::Authority,
            now,
            rng,
        )?;
        let kek = key_pair(
            &master,
            &sb,
            "kek",
            Some(&pk),
            "trustlaunch platform KEK",
            CertRole::Authority,
            now,
            rng,
        )?;
        let db = key_pair(
            &master,
            &sb,
            "db",
            Some(&kek),
            "trustlaunch platform db",
            CertRole::CodeSigning,
            now,
            rng,
        )?;
        let ca_dir = home.platform().join("vtpm-ca");
        private_dir(&ca_dir)?;
        let key_file = SealedFile::new(ca_dir.join("ca.key"), "platform/vtpm-ca");
        let cert_path = ca_dir.join("ca.crt");
        let vtpm_ca = if key_file.exists() {
            let key = key_file.read(&master, legacy_pem_key)?;
            let key = String::from_utf8_lossy(&key);
            secure_existing(&cert_path)?;
            let cert = String::from_utf8_lossy(&read_small(&cert_path, KEY_LIMIT)?).into_owned();
            VtpmCa::from_pem(&key, &cert).map_err(|e| PlatformError::BadKey {
                path: key_file.path.clone(),
                reason: e.to_string(),
            })?
        } else {
            let bad = |e: trustlaunch_tpm::ca::CaError| PlatformError::BadKey {
                path: key_file.path.clone(),
                reason: e.to_string(),
            };
            let ca = VtpmCa::create(
                CaSigningKey::generate(CaKeyAlgorithm::P256, rng),
                &CaConfig {
                    common_name: "trustlaunch vTPM CA".into(),
                    organization: Some("trustlaunch".into()),
                    not_before: UnixTime::from_secs(now.saturating_sub(60)),
                    not_after: None,
                    path_len_constraint: Some(0),
                },
                rng,
            )
            .map_err(bad)?;
            write_file(&cert_path, ca.cert_pem().as_bytes(), 0o600)?;
            let pem = ca.key_pkcs8_pem().map_err(bad)?;
            key_file.write(&master, pem.as_bytes(), rng)?;
            ca
        };
        Ok(Self {
            pk,
            kek,
            db,
            vtpm_ca,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn key_pair(
    master: &MasterKey,
    dir: &Path,
    name: &str,
    issuer: Option<&KeyPair>,
    common_name: &str,
    role: CertRole,
    now: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<KeyPair, PlatformError> {
    let key_file = SealedFile::new(
        dir.join(format!("{name}.key")),
        format!("platform/secureboot/{name}"),
    );
    let cert_path = dir.join(format!("{name}.crt"));
    let bad = |path: &Path, e: trustlaunch_secureboot::keys::KeyError| PlatformError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if key_file.exists() {
        let key = key_file.read(master, legacy_pem_key)?;
        secure_existing(&cert_path)?;
        let cert = read_small(&cert_path, KEY_LIMIT)?;
        return KeyPair::from_pem(&String::from_utf8_lossy(&key), &cert)
            .map_err(|e| bad(&key_file.path, e));
    }
    let key = SigningKey::generate_rsa(rng).map_err(|e| bad(&key_file.path, e))?;
    let request = CertRequest {
        common_name: common_name.into(),
        not_before: now.saturating_sub(60),
        not_after: NO_EXPIRY,
        role,
    };
    let pair = match issuer {
        None => KeyPair::self_signed(key, &request, rng),
        Some(i) => i.issue(key, &request, rng),
    }
    .map_err(|e| bad(&key_file.path, e))?;
    write_file(
        &cert_path,
        pair.cert_pem().map_err(|e| bad(&cert_path, e))?.as_bytes(),
        0o600,
    )?;
    let pem = pair
        .key
        .to_pkcs8_pem()
        .map_err(|e| bad(&key_file.path, e))?;
    key_file.write(master, pem.as_bytes(), rng)?;
    Ok(pair)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_made_once_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/master.key");
        let a = load_or_create_master_key(&path, &mut rand_core::OsRng).unwrap();
        let b = load_or_create_master_key(&path, &mut rand_core::OsRng).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parent = fs::metadata(dir.path().join("home"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent & 0o777, 0o700);
    }

    #[test]
    fn secrets_refuse_symlinks_and_narrow_modes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"x").unwrap();
        let link = dir.path().join("key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write_secret(&link, b"secret"),
            Err(PlatformError::Insecure { .. })
        ));
        assert!(matches!(
            read_secret(&link, 64),
            Err(PlatformError::Insecure { .. })
        ));
        assert_eq!(fs::read(&target).unwrap(), b"x");
        let wide = dir.path().join("wide");
        fs::write(&wide, b"k").unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_secret(&wide, 64).unwrap(), b"k");
        assert_eq!(
            fs::metadata(&wide).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let d = dir.path().join("d");
        fs::DirBuilder::new().mode(0o755).create(&d).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
