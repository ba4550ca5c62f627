//! TLS for the API, with rustls (ring): a certificate chain and key from
//! PEM files, or the platform's own TLS CA and a server certificate it
//! issues, made on first start under a directory (`<home>/tls`):
//!
//! ```text
//! tls/ca.crt              the CA clients trust (PEM; `trustlaunch --cacert`)
//! tls/ca.key.sealed       its key, sealed under the platform master key
//! tls/server.crt          the server's certificate, issued by the CA
//! tls/server.key.sealed   its key, sealed
//! ```
//!
//! The server certificate names the listen address (an IP SAN; for an
//! unspecified address 127.0.0.1, ::1 and the host name), `localhost`, and
//! any extra names the operator gives. It is issued again at a start where
//! it does not verify against the CA for every one of those names, or
//! expires within 30 days; the CA is kept (clients keep trusting it).
//! Keys are ECDSA P-256; the CA may issue server certificates only
//! (path length 0).
//!
//! Not here: client certificates, certificate reload without a restart,
//! revocation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use trustlaunch_runtime::platform::{
    load_or_create_master_key, private_dir, read_secret, write_secret,
};
use trustlaunch_seal::MasterKey;

/// The CA certificate's file in a platform TLS directory.
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key.sealed";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key.sealed";
/// Purposes the keys are sealed for (associated data of the seal).
const CA_PURPOSE: &str = "platform/tls/ca";
const SERVER_PURPOSE: &str = "platform/tls/server";
/// Certificates and keys are small; anything larger is not one.
const FILE_LIMIT: u64 = 1 << 20;
const DAY: u64 = 86_400;
/// The CA lives ten years; a server certificate one year, renewed at a
/// start within 30 days of its end.
const CA_DAYS: u64 = 3650;
const SERVER_DAYS: u64 = 365;
const RENEW_DAYS: u64 = 30;

/// Where the server's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// A certificate chain (leaf first) and its private key, PEM files.
    Files {
        /// The chain.
        cert: PathBuf,
        /// The key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// The platform's TLS CA in `dir`, made on first start, issuing the
    /// server's certificate; the keys sealed under the master key in
    /// `master_key` (made if missing).
    Platform {
        /// The directory (created 0700).
        dir: PathBuf,
        /// The platform master key's file.
        master_key: PathBuf,
        /// Names the certificate carries besides the listen address and
        /// `localhost` (DNS names or IP addresses).
        extra_names: Vec<String>,
    },
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written, or holds no usable PEM.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The platform master key, or a key sealed under another one.
    #[error("{0}")]
    MasterKey(String),
    /// A certificate could not be made or does not fit its key.
    #[error("{0}")]
    Certificate(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// TLS as the server serves it.
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// The CA file clients should trust (the platform's).
    pub ca_file: Option<PathBuf>,
    /// The names the platform-issued certificate carries.
    pub names: Vec<String>,
    /// A server certificate was issued at this start.
    pub issued: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("ca_file", &self.ca_file)
            .field("names", &self.names)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads (or, for the platform, makes) the server's certificate for
/// `listen`. Blocking: file IO and key generation.
pub fn load(source: &TlsSource, listen: SocketAddr) -> Result<ServerTls, TlsError> {
    match source {
        TlsSource::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let key_pem = read_file(key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| file_err(key, format!("no private key in PEM: {e}")))?;
            Ok(ServerTls {
                acceptor: acceptor(chain, key_der).map_err(|e| {
                    TlsError::Certificate(format!("{} with {}: {e}", cert.display(), key.display()))
                })?,
                ca_file: None,
                names: Vec::new(),
                issued: false,
            })
        }
        TlsSource::Platform {
            dir,
            master_key,
            extra_names,
        } => platform(dir, master_key, listen, extra_names),
    }
}

fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut buf = Vec::new();
    f.take(FILE_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| file_err(path, e))?;
    if buf.len() as u64 > FILE_LIMIT {
        return Err(file_err(
            path,
            "larger than 1 MiB: not a certificate or key",
        ));
    }
    Ok(buf)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(path, "no CERTIFICATE in PEM"));
    }
    Ok(chain)
}

/// The names the server certificate carries for `listen`.
pub fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if listen.ip().is_unspecified() {
        names.push("127.0.0.1".to_owned());
        names.push("::1".to_owned());
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                names.push(h.to_owned());
            }
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.push("localhost".to_owned());
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| TlsError::Certificate(format!("certificate time: {e}")))
}

fn cert_err(e: rcgen::Error) -> TlsError {
    TlsError::Certificate(format!("making a certificate: {e}"))
}

/// The CA's parameters. Its name carries a digest of its key, so that the
/// CAs of two platforms are told apart by name; an issuer is rebuilt from
/// the key alone.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = Sha256::digest(key.public_key_der());
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!(
            "trustlaunch platform TLS CA {}",
            trustlaunch_eventlog::hex::encode(id.get(..4).unwrap_or_default())
        ),
    );
    dn.push(DnType::OrganizationName, "trustlaunch");
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn seal(master: &MasterKey, purpose: &str, key: &KeyPair, path: &Path) -> Result<(), TlsError> {
    let pem = zeroize::Zeroizing::new(key.serialize_pem());
    let sealed = master
        .seal(purpose, pem.as_bytes(), &mut OsRng)
        .map_err(|e| TlsError::MasterKey(e.to_string()))?;
    write_secret(path, sealed.as_bytes()).map_err(|e| file_err(path, e))
}

fn unseal(master: &MasterKey, purpose: &str, path: &Path) -> Result<KeyPair, TlsError> {
    let text = read_secret(path, FILE_LIMIT).map_err(|e| file_err(path, e))?;
    let text = String::from_utf8(text).map_err(|_| file_err(path, "not a sealed secret"))?;
    let pem = master.open(purpose, &text).map_err(|e| {
        TlsError::MasterKey(format!(
            "{}: {e} (the master key is not the one this directory was made with)",
            path.display()
        ))
    })?;
    let pem = std::str::from_utf8(&pem).map_err(|_| file_err(path, "not a PEM key"))?;
    KeyPair::from_pem(pem).map_err(|e| file_err(path, e))
}

/// Writes a certificate, replacing the old one atomically: 0600 like
/// everything in the home (the home is 0700; clients elsewhere get a copy).
fn write_public(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// Holds the directory's lock file: one process makes or renews its
/// certificates at a time.
struct DirLock(#[allow(dead_code)] std::fs::File);

fn lock(dir: &Path) -> Result<DirLock, TlsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| file_err(&path, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| file_err(&path, std::io::Error::from(e)))?;
    Ok(DirLock(f))
}

fn platform(
    dir: &Path,
    master_key: &Path,
    listen: SocketAddr,
    extra: &[String],
) -> Result<ServerTls, TlsError> {
    private_dir(dir).map_err(|e| file_err(dir, e))?;
    let _lock = lock(dir)?;
    let master = load_or_create_master_key(master_key, &mut OsRng)
        .map_err(|e| TlsError::MasterKey(format!("platform master key: {e}")))?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let now = unix_now();
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => unseal(&master, CA_PURPOSE, &ca_key)?,
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
            let mut params = ca_params(&key);
            params.not_before = at(now.saturating_sub(3600))?;
            params.not_after = at(now + CA_DAYS * DAY)?;
            let cert = params.self_signed(&key).map_err(cert_err)?;
            seal(&master, CA_PURPOSE, &key, &ca_key)?;
            write_public(&ca_cert, cert.pem().as_bytes())?;
            tracing::info!("made the platform TLS CA: {}", ca_cert.display());
            key
        }
        _ => {
            return Err(TlsError::Certificate(format!(
                "{} holds only half of a CA ({CA_CERT} and {CA_KEY} go together): remove the \
                 other to make a new CA, which every client must then trust",
                dir.display()
            )))
        }
    };
    let roots = {
        let mut r = RootCertStore::empty();
        for c in read_chain(&ca_cert)? {
            r.add(c).map_err(|e| file_err(&ca_cert, e))?;
        }
        Arc::new(r)
    };
    let names = certificate_names(listen, extra);
    let (server_cert, server_key) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    let renew_at = UnixTime::since_unix_epoch(Duration::from_secs(now + RENEW_DAYS * DAY));
    let current = if server_cert.exists() && server_key.exists() {
        let chain = read_chain(&server_cert)?;
        let key = unseal(&master, SERVER_PURPOSE, &server_key)?;
        chain
            .first()
            .filter(|leaf| verify(&roots, leaf, &names, renew_at).is_ok())
            .map(|_| (chain.clone(), key))
    } else {
        None
    };
    let issued = current.is_none();
    let (chain, key) = match current {
        Some(c) => c,
        None => {
            let issuer = ca_params(&ca).self_signed(&ca).map_err(cert_err)?;
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "trustlaunch server");
            dn.push(DnType::OrganizationName, "trustlaunch");
            params.distinguished_name = dn;
            params.subject_alt_names = names
                .iter()
                .map(|n| match n.parse() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => n
                        .clone()
                        .try_into()
                        .map(SanType::DnsName)
                        .map_err(|e| TlsError::Certificate(format!("name {n:?}: {e}"))),
                })
                .collect::<Result<_, _>>()?;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            params.not_before = at(now.saturating_sub(3600))?;
            params.not_after = at(now + SERVER_DAYS * DAY)?;
            let cert = params.signed_by(&key, &issuer, &ca).map_err(cert_err)?;
            seal(&master, SERVER_PURPOSE, &key, &server_key)?;
            write_public(&server_cert, cert.pem().as_bytes())?;
            (vec![cert.der().clone()], key)
        }
    };
    // What clients will check: the chain verifies against ca.crt for
    // every name.
    let leaf = chain
        .first()
        .ok_or_else(|| file_err(&server_cert, "no certificate"))?;
    let now_t = UnixTime::since_unix_epoch(Duration::from_secs(now));
    verify(&roots, leaf, &names, now_t).map_err(|e| {
        TlsError::Certificate(format!(
            "{} does not verify against {}: {e}",
            server_cert.display(),
            ca_cert.display()
        ))
    })?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok(ServerTls {
        acceptor: acceptor(chain, key_der)
            .map_err(|e| TlsError::Certificate(format!("{}: {e}", server_cert.display())))?,
        ca_file: Some(ca_cert),
        names,
        issued,
    })
}

/// Whether `leaf` verifies against `roots` for each of `names` at `time`.
fn verify(
    roots: &Arc<RootCertStore>,
    leaf: &CertificateDer<'_>,
    names: &[String],
    time: UnixTime,
) -> Result<(), String> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
    for n in names {
        let name = ServerName::try_from(n.clone()).map_err(|e| format!("{n:?}: {e}"))?;
        verifier
            .verify_server_cert(leaf, &[], &name, &[], time)
            .map_err(|e| format!("for {n}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_listen_address_and_localhost() {
        let n = certificate_names("127.0.0.2:8844".parse().unwrap(), &["tl.example".into()]);
        assert_eq!(n, ["127.0.0.2", "localhost", "tl.example"]);
        let n = certificate_names("[::1]:0".parse().unwrap(), &[]);
        assert_eq!(n, ["::1", "localhost"]);
        let n = certificate_names("0.0.0.0:8844".parse().unwrap(), &[]);
        assert!(n.starts_with(&["127.0.0.1".to_owned(), "::1".to_owned()]));
        assert!(n.contains(&"localhost".to_owned()));
    }
}
