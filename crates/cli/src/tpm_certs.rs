//! `trustlaunch tpm ek-cert ...` and `trustlaunch tpm ca ...`: EK
//! certificates and the platform's vTPM CA. The CA's key and certificate
//! live in a directory the operator chooses (mode 0700, key 0600).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, EkCertRequest, VtpmCa};
use trustlaunch_tpm::ek::{cert_matches_ek, ek_public_key};
use trustlaunch_tpm::ekcert::{
    CaCertificate, EkCertificate, EkPublicKey, EkTrustStore, TpmIdentity, TpmSpecification,
    UnixTime,
};

use crate::human::date_u64;
use crate::input::read_bounded;

const CA_KEY: &str = "ca-key.pem";
const CA_CERT: &str = "ca-cert.pem";

/// EK certificate subcommands.
#[derive(Subcommand)]
pub enum EkCertCommand {
    /// Print an EK certificate's TPM fields (PEM or DER).
    Show {
        /// The certificate.
        file: PathBuf,
    },
    /// Verify an EK certificate's chain against trusted roots; exit 0 only
    /// when it chains, is valid now (or at --at), and (with --ek) certifies
    /// that EK.
    Verify {
        /// The certificate (PEM or DER).
        file: PathBuf,
        /// Trusted roots: a PEM bundle (the vTPM CA's certificate, vendor roots).
        #[arg(long, required = true)]
        roots: Vec<PathBuf>,
        /// Intermediate CA certificates (PEM bundle).
        #[arg(long)]
        intermediates: Vec<PathBuf>,
        /// Check validity at this Unix time (seconds) instead of now.
        #[arg(long)]
        at: Option<u64>,
        /// The EK's public area (TPM2B_PUBLIC): require the certificate to
        /// certify exactly this key.
        #[arg(long)]
        ek: Option<PathBuf>,
    },
}

/// vTPM CA subcommands.
#[derive(Subcommand)]
pub enum CaCommand {
    /// Create a CA: a new key and a self-signed certificate in DIR.
    Init {
        /// Directory for ca-key.pem and ca-cert.pem (created, mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// Key algorithm.
        #[arg(long, default_value = "p384", value_parser = ["p256", "p384"])]
        key: String,
        /// The CA's common name.
        #[arg(long, default_value = "trustlaunch vTPM CA")]
        common_name: String,
    },
    /// Issue an EK certificate for an EK public area, with the TCG profile's
    /// fields (manufacturer, model, version, TPM specification).
    IssueEkCert {
        /// The CA directory made by `ca init`.
        #[arg(long)]
        dir: PathBuf,
        /// The EK's public area (`tpm2_createek -u`, TPM2B_PUBLIC).
        #[arg(long)]
        ek: PathBuf,
        /// Output certificate (DER; `.pem` for PEM).
        #[arg(long, short)]
        output: PathBuf,
        /// tcg-at-tpmManufacturer.
        #[arg(long, default_value = "id:00001014")]
        manufacturer: String,
        /// tcg-at-tpmModel.
        #[arg(long, default_value = "swtpm")]
        model: String,
        /// tcg-at-tpmVersion.
        #[arg(long, default_value = "id:20191023")]
        version: String,
    },
}

fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime::from_secs(secs)
}

fn load_bundle(paths: &[PathBuf]) -> Result<Vec<CaCertificate>> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = read_bounded(p)?;
        // DER certificates start with a SEQUENCE tag; anything else is PEM.
        let certs = if !bytes.starts_with(&[0x30]) {
            CaCertificate::parse_pem_bundle(&bytes)
        } else {
            CaCertificate::parse(&bytes).map(|c| vec![c])
        }
        .with_context(|| format!("{}: not a certificate or PEM bundle", p.display()))?;
        out.extend(certs);
    }
    Ok(out)
}

fn key_text(k: &EkPublicKey) -> String {
    match k {
        EkPublicKey::Rsa { modulus, exponent } => {
            format!("RSA-{} (e = {exponent})", modulus.len() * 8)
        }
        EkPublicKey::Ecc { curve, .. } => format!("ECC {curve:?}"),
        _ => "another key type".into(),
    }
}

/// Runs an `ek-cert` subcommand.
pub fn run_ek_cert(cmd: EkCertCommand) -> Result<ExitCode> {
    match cmd {
        EkCertCommand::Show { file } => {
            let cert = EkCertificate::parse(&read_bounded(&file)?)
                .with_context(|| format!("{}: not an EK certificate", file.display()))?;
            println!("issuer:        {}", cert.id().issuer());
            println!("subject:       {}", cert.id().subject());
            println!("serial:        {}", cert.serial());
            println!(
                "valid:         {} .. {}{}",
                date_u64(cert.not_before().as_secs()),
                date_u64(cert.not_after().as_secs()),
                if cert.not_after() == UnixTime::NO_EXPIRY {
                    " (no expiry)"
                } else {
                    ""
                }
            );
            println!("key:           {}", key_text(cert.public_key()));
            match cert.tpm_identity() {
                Some(t) => println!(
                    "tpm:           manufacturer {} model {} version {}",
                    t.manufacturer, t.model, t.version
                ),
                None => println!("tpm:           (no TCG subject alternative name)"),
            }
            if let Some(s) = cert.tpm_specification() {
                println!(
                    "specification: {} level {} revision {}",
                    s.family, s.level, s.revision
                );
            }
            for d in cert.profile_deviations() {
                println!("note:          {d:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        EkCertCommand::Verify {
            file,
            roots,
            intermediates,
            at,
            ek,
        } => {
            let cert = EkCertificate::parse(&read_bounded(&file)?)
                .with_context(|| format!("{}: not an EK certificate", file.display()))?;
            let store = EkTrustStore::new(load_bundle(&roots)?)
                .with_intermediates(load_bundle(&intermediates)?);
            let when = at.map_or_else(now, UnixTime::from_secs);
            match store.verify(&cert, when) {
                Ok(chain) => {
                    if let Some(ek) = ek {
                        let public = crate::tpm::load_public(&ek)?;
                        if !cert_matches_ek(&cert, &public) {
                            println!(
                                "FAIL: the certificate does not certify the EK in {}",
                                ek.display()
                            );
                            return Ok(ExitCode::from(1));
                        }
                    }
                    let names: Vec<String> = chain
                        .certs
                        .iter()
                        .map(|c| match c.subject() {
                            "" => format!("(EK, serial {})", c.serial()),
                            s => s.to_string(),
                        })
                        .collect();
                    println!("OK: chain {}", names.join(" <- "));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("FAIL: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Runs a `ca` subcommand.
pub fn run_ca(cmd: CaCommand) -> Result<ExitCode> {
    match cmd {
        CaCommand::Init {
            dir,
            key,
            common_name,
        } => {
            if dir.join(CA_KEY).exists() {
                bail!(
                    "{} already holds a CA key: refusing to overwrite it",
                    dir.display()
                );
            }
            create_private_dir(&dir)?;
            let alg = if key == "p256" {
                CaKeyAlgorithm::P256
            } else {
                CaKeyAlgorithm::P384
            };
            let mut rng = rand_core::OsRng;
            let signing = CaSigningKey::generate(alg, &mut rng);
            let config = CaConfig {
                common_name,
                organization: Some("trustlaunch".into()),
                not_before: now(),
                not_after: None,
                path_len_constraint: Some(0),
            };
            let ca = VtpmCa::create(signing, &config, &mut rng)?;
            write_private(&dir.join(CA_KEY), ca.key_pkcs8_pem()?.as_bytes())?;
            std::fs::write(dir.join(CA_CERT), ca.cert_pem())
                .with_context(|| format!("writing {}", dir.join(CA_CERT).display()))?;
            println!(
                "created {} and {}",
                dir.join(CA_KEY).display(),
                dir.join(CA_CERT).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::IssueEkCert {
            dir,
            ek,
            output,
            manufacturer,
            model,
            version,
        } => {
            let key_pem = String::from_utf8(read_bounded(&dir.join(CA_KEY))?)
                .map_err(|_| anyhow!("{}: not PEM", dir.join(CA_KEY).display()))?;
            let cert_pem = String::from_utf8(read_bounded(&dir.join(CA_CERT))?)
                .map_err(|_| anyhow!("{}: not PEM", dir.join(CA_CERT).display()))?;
            let ca = VtpmCa::from_pem(&key_pem, &cert_pem)?;
            let public = crate::tpm::load_public(&ek)?;
            let key = ek_public_key(&public)
                .ok_or_else(|| anyhow!("{}: not an RSA or ECC P-256/P-384 key", ek.display()))?;
            let request = EkCertRequest {
                ek: key,
                tpm: TpmIdentity {
                    manufacturer,
                    model,
                    version,
                },
                spec: TpmSpecification {
                    family: "2.0".into(),
                    level: 0,
                    revision: 164,
                },
                not_before: now(),
                not_after: None,
                policies: Vec::new(),
            };
            let cert = ca.issue_ek_cert(&request, &mut rand_core::OsRng)?;
            let pem = output.extension().is_some_and(|e| e == "pem");
            let bytes = if pem {
                cert.to_pem().into_bytes()
            } else {
                cert.der().to_vec()
            };
            std::fs::write(&output, bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    Ok(())
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
