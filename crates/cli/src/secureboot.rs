//! `trustlaunch secureboot ...`: Authenticode hashes and verification
//! against db/dbx, signature lists, and OVMF variable stores.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use trustlaunch_eventlog::Guid;
use trustlaunch_eventlog::HashAlg;
use trustlaunch_secureboot::authenticode::{image_hash, ImageDigest, ImageHashAlg};
use trustlaunch_secureboot::pcr7::{
    authority_for_image, predict_pcr7, EV_EFI_VARIABLE_AUTHORITY, EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_SEPARATOR,
};
use trustlaunch_secureboot::siglist::{SignatureDb, SignatureType};
use trustlaunch_secureboot::varstore::{KeyTemplate, SecureBootVar, VarStore, VarStoreJson};
use trustlaunch_secureboot::verify::{verify_image, Database, Verdict};

use trustlaunch_secureboot::authvar::{
    build_payload, trusted_certs, verify_payload, AuthVarFailure, VariableUpdate,
};
use trustlaunch_secureboot::keys::{CertRequest, CertRole, KeyPair, SigningKey};
use trustlaunch_secureboot::sign::{remove_all_signatures, remove_signature, sign_image};
use trustlaunch_secureboot::varstore::EfiTime;

use crate::input::{read_bounded, read_cert_der};

/// Secure Boot subcommands.
#[derive(Subcommand)]
pub enum SecurebootCommand {
    /// Secure Boot keys (PK, KEK, db).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign an EFI binary (what `sbsign` does): the Authenticode signature
    /// is appended, existing signatures are kept.
    Sign {
        /// The binary.
        file: PathBuf,
        /// Private key (PEM: PKCS#8, or PKCS#1 "RSA PRIVATE KEY").
        #[arg(long)]
        key: PathBuf,
        /// The key's certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// More certificates to carry in the signature (e.g. the issuer).
        #[arg(long)]
        extra_cert: Vec<PathBuf>,
        /// Output (default: FILE.signed, as sbsign).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Authenticated variable updates (EFI_VARIABLE_AUTHENTICATION_2).
    #[command(subcommand)]
    Authvar(AuthvarCommand),
    /// Remove signatures from an EFI binary.
    Unsign {
        /// The binary.
        file: PathBuf,
        /// Remove only this signature (0 = first in the certificate table);
        /// default: all.
        #[arg(long)]
        index: Option<usize>,
        /// Output file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Print the Authenticode image hash of a PE/COFF (EFI) binary.
    Hash {
        /// The binary.
        file: PathBuf,
        /// SHA-1 instead of SHA-256.
        #[arg(long)]
        sha1: bool,
    },
    /// Decide as UEFI firmware would whether a binary may run; exit 0 only
    /// when allowed, and print the db entry that allowed it.
    Verify {
        /// The binary.
        file: PathBuf,
        /// An OVMF VARS file whose db and dbx to use.
        #[arg(long, conflicts_with_all = ["db", "dbx"])]
        vars: Option<PathBuf>,
        /// A db as EFI_SIGNATURE_LISTs (the variable's data).
        #[arg(long)]
        db: Option<PathBuf>,
        /// A dbx as EFI_SIGNATURE_LISTs.
        #[arg(long)]
        dbx: Option<PathBuf>,
    },
    /// EFI_SIGNATURE_LIST files.
    #[command(subcommand)]
    Siglist(SiglistCommand),
    /// OVMF variable stores (edk2 VARS.fd).
    #[command(subcommand)]
    Vars(VarsCommand),
    /// Predict the PCR 7 events and value an edk2 (OVMF) firmware will
    /// produce when it boots the given EFI binaries with this store.
    Pcr7 {
        /// The VARS file the VM will start with.
        #[arg(long)]
        vars: PathBuf,
        /// Boot applications the firmware verifies, in boot order (the db
        /// entry that allows each becomes an authority event).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Print `{"pcrs": {"<alg>": {"7": "<hex>"}}}` (the JSON that
        /// `eventlog verify --pcrs` reads) instead of the event list.
        #[arg(long)]
        json: bool,
    },
}

/// Signature list subcommands.
#[derive(Subcommand)]
pub enum SiglistCommand {
    /// Write EFI_SIGNATURE_LISTs (a db/dbx/KEK/PK variable's data, what
    /// efitools' `cert-to-efi-sig-list` and `hash-to-efi-sig-list` make):
    /// certificates one list each, hashes grouped by type; duplicates are
    /// dropped.
    Create {
        /// Owner GUID of the new entries.
        #[arg(long, default_value = DEFAULT_OWNER)]
        owner: String,
        /// X.509 certificates (PEM or DER): EFI_CERT_X509.
        #[arg(long)]
        cert: Vec<PathBuf>,
        /// EFI binaries whose Authenticode SHA-256 to add: EFI_CERT_SHA256
        /// (allow one binary in db, or ban it in dbx).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Raw digests as hex; the length picks the type (SHA-1, -224,
        /// -256, -384, -512).
        #[arg(long)]
        hash: Vec<String>,
        /// Start from these lists (merge).
        #[arg(long)]
        merge: Vec<PathBuf>,
        /// Output file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Print the entries of a signature list file as JSON.
    Show {
        /// The file.
        file: PathBuf,
    },
}

/// `--var` of the authvar commands.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VarArg {
    /// PK (signed by the current PK).
    Pk,
    /// KEK (signed by the PK).
    Kek,
    /// db (signed by a KEK or the PK).
    Db,
    /// dbx (signed by a KEK or the PK).
    Dbx,
}

impl VarArg {
    fn which(self) -> SecureBootVar {
        match self {
            Self::Pk => SecureBootVar::Pk,
            Self::Kek => SecureBootVar::Kek,
            Self::Db => SecureBootVar::Db,
            Self::Dbx => SecureBootVar::Dbx,
        }
    }
}

/// Authenticated variable subcommands.
#[derive(Subcommand)]
pub enum AuthvarCommand {
    /// Sign EFI_SIGNATURE_LISTs as an update of PK, KEK, db or dbx (what
    /// efitools' `sign-efi-sig-list` does; the output is the same bytes).
    Sign {
        /// The new data: EFI_SIGNATURE_LISTs (e.g. from `siglist create`).
        file: PathBuf,
        /// The variable to update.
        #[arg(long, value_enum)]
        var: VarArg,
        /// Signing key: the PK's for PK/KEK, a KEK's (or the PK's) for db/dbx.
        #[arg(long)]
        key: PathBuf,
        /// The signing key's certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// Timestamp, UTC, `YYYY-MM-DD HH:MM:SS` (default: now). Must be
        /// later than the variable's unless --append.
        #[arg(long)]
        timestamp: Option<String>,
        /// An append (APPEND_WRITE) rather than a replacement.
        #[arg(long)]
        append: bool,
        /// Output file (the payload SetVariable() takes).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Check an update payload as edk2 would before accepting it; exit 0
    /// only when accepted, and print the certificate that allowed it.
    Verify {
        /// The payload.
        file: PathBuf,
        /// The variable it updates.
        #[arg(long, value_enum)]
        var: VarArg,
        /// An append (APPEND_WRITE).
        #[arg(long)]
        append: bool,
        /// The store the update is for: trusted certificates (PK; KEK and
        /// PK for db/dbx) and the current timestamp come from it.
        #[arg(long, conflicts_with = "trusted")]
        vars: Option<PathBuf>,
        /// Or: the trusted certificates (PEM or DER), with no current
        /// timestamp.
        #[arg(long)]
        trusted: Vec<PathBuf>,
    },
}

/// Key subcommands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate a key and its X.509 certificate: self-signed (a PK), or
    /// issued by another key (a KEK issued by the PK, a db key by a KEK).
    Generate {
        /// Subject commonName.
        #[arg(long)]
        cn: String,
        /// Where to write the private key (PKCS#8 PEM, mode 0600; must not
        /// exist).
        #[arg(long)]
        key_out: PathBuf,
        /// Where to write the certificate (PEM; `.der` for DER).
        #[arg(long)]
        cert_out: PathBuf,
        /// Issuer's private key (default: self-signed).
        #[arg(long, requires = "issuer_cert")]
        issuer_key: Option<PathBuf>,
        /// Issuer's certificate.
        #[arg(long, requires = "issuer_key")]
        issuer_cert: Option<PathBuf>,
        /// Certificate profile: `authority` (a CA: PK, or a KEK that issues
        /// db keys) or `code-signing` (signs images or variable updates).
        /// Default: authority when self-signed, code-signing when issued.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "rsa2048")]
        algorithm: AlgorithmArg,
        /// Validity in days from now.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
}

/// `keys generate --role`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// A CA certificate.
    Authority,
    /// A code-signing (leaf) certificate.
    CodeSigning,
}

/// `keys generate --algorithm`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// RSA-2048 (what UEFI firmware must support).
    Rsa2048,
    /// RSA-3072.
    Rsa3072,
    /// RSA-4096.
    Rsa4096,
    /// ECDSA P-256 (not accepted by every firmware).
    P256,
}

/// Owner GUID of the entries trustlaunch makes, unless `--owner` says.
const DEFAULT_OWNER: &str = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";

/// Certificates for PK, KEK and db, and the owner GUID of their entries.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// Owner GUID of the new entries.
    #[arg(long, default_value = DEFAULT_OWNER)]
    owner: String,
    /// PK certificate (PEM or DER).
    #[arg(long)]
    pk: Option<PathBuf>,
    /// KEK certificates (PEM or DER).
    #[arg(long)]
    kek: Vec<PathBuf>,
    /// db certificates (PEM or DER).
    #[arg(long)]
    db: Vec<PathBuf>,
}

impl KeyArgs {
    fn owner(&self) -> Result<Guid> {
        parse_owner(&self.owner)
    }

    fn is_empty(&self) -> bool {
        self.pk.is_none() && self.kek.is_empty() && self.db.is_empty()
    }
}

fn parse_owner(text: &str) -> Result<Guid> {
    Guid::parse(text).ok_or_else(|| anyhow!("--owner {text:?} is not a GUID"))
}

/// Key templates for `vars create` (the `keyTemplate` of a VM).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TemplateArg {
    /// Microsoft KEK and db (boots Microsoft-signed shim), taken at run time
    /// from the distribution's `OVMF_VARS_4M.ms.fd`; Secure Boot on.
    Microsoft,
    /// PK, KEK, db (and optionally dbx) given by the operator; Secure Boot on.
    Custom,
    /// No keys: setup mode, Secure Boot off.
    None,
}

/// Variable store subcommands.
#[derive(Subcommand)]
pub enum VarsCommand {
    /// Make a VM's variable store from a key template.
    Create {
        /// The key template.
        #[arg(long, value_enum)]
        template: TemplateArg,
        /// The empty store to start from.
        #[arg(long, default_value = "/usr/share/OVMF/OVMF_VARS_4M.fd")]
        base: PathBuf,
        /// Where the `microsoft` template takes the Microsoft KEK, db, and
        /// (unless --pk) PK from.
        #[arg(long, default_value = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd")]
        ms_vars: PathBuf,
        /// PK, KEK and db certificates: required for `custom`; with
        /// `microsoft`, a PK replaces the image's and KEK/db certificates are
        /// added to Microsoft's.
        #[command(flatten)]
        keys: KeyArgs,
        /// dbx as EFI_SIGNATURE_LISTs (replaces the template's).
        #[arg(long)]
        dbx: Option<PathBuf>,
        /// Output VARS file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// List the variables: name, GUID, attributes, size.
    Show {
        /// The VARS file.
        file: PathBuf,
    },
    /// Export every variable as JSON (virt-fw-vars' JSON layout).
    Export {
        /// The VARS file.
        file: PathBuf,
    },
    /// Set variables from JSON (as `export` writes) into a copy of a store.
    Import {
        /// The VARS file to start from.
        file: PathBuf,
        /// The JSON.
        #[arg(long)]
        json: PathBuf,
        /// Output VARS file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Enroll X.509 certificates (PEM or DER) into a copy of a store: a PK
    /// replaces the store's, KEK and db certificates are added; optionally
    /// turn Secure Boot on.
    Enroll {
        /// The VARS file to start from (e.g. OVMF_VARS_4M.fd).
        file: PathBuf,
        /// The certificates: a PK replaces PK, KEK and db certificates are
        /// added.
        #[command(flatten)]
        keys: KeyArgs,
        /// Turn Secure Boot on (what `virt-fw-vars --sb` does).
        #[arg(long)]
        secure_boot: bool,
        /// Output VARS file.
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn hex(b: &[u8]) -> String {
    trustlaunch_eventlog::hex::encode(b)
}

fn load_store(path: &Path) -> Result<VarStore> {
    VarStore::parse(&read_bounded(path)?)
        .with_context(|| format!("{}: not an OVMF variable store", path.display()))
}

fn store_db(store: &VarStore, which: SecureBootVar) -> Result<Database> {
    Ok(store
        .secure_boot_db(which)?
        .map(|db| Database::from_signature_db(&db))
        .unwrap_or_default())
}

fn siglist_db(path: &Path) -> Result<Database> {
    let db = SignatureDb::parse(&read_bounded(path)?)
        .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", path.display()))?;
    Ok(Database::from_signature_db(&db))
}

/// Runs a subcommand.
pub fn run(cmd: SecurebootCommand) -> Result<ExitCode> {
    match cmd {
        SecurebootCommand::Hash { file, sha1 } => {
            let alg = if sha1 {
                ImageHashAlg::Sha1
            } else {
                ImageHashAlg::Sha256
            };
            let digest = image_hash(&read_bounded(&file)?, alg)
                .with_context(|| format!("{}: not a PE/COFF image", file.display()))?;
            let d = match &digest {
                ImageDigest::Sha1(d) => hex(d),
                ImageDigest::Sha256(d) => hex(d),
                other => format!("{other:?}"),
            };
            println!("{d}  {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        SecurebootCommand::Verify {
            file,
            vars,
            db,
            dbx,
        } => {
            let (db, dbx) = match (vars, db) {
                (Some(v), _) => {
                    let store = load_store(&v)?;
                    (
                        store_db(&store, SecureBootVar::Db)?,
                        store_db(&store, SecureBootVar::Dbx)?,
                    )
                }
                (None, Some(db)) => (
                    siglist_db(&db)?,
                    dbx.as_deref()
                        .map(siglist_db)
                        .transpose()?
                        .unwrap_or_default(),
                ),
                (None, None) => bail!("give --vars VARS.fd or --db DB [--dbx DBX]"),
            };
            let image = read_bounded(&file)?;
            match verify_image(&image, &db, &dbx)
                .with_context(|| format!("{}: not a PE/COFF image", file.display()))?
            {
                Verdict::Allowed {
                    by,
                    signature,
                    chain_position,
                } => {
                    let what = match (signature, chain_position) {
                        (Some(s), Some(p)) => {
                            format!("db {by} (signature {s}, chain position {p})")
                        }
                        _ => format!("db {by}"),
                    };
                    println!("ALLOWED by {what}");
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Denied(why) => {
                    println!("DENIED: {why}");
                    Ok(ExitCode::from(1))
                }
                other => {
                    println!("DENIED: {other:?}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        SecurebootCommand::Siglist(SiglistCommand::Create {
            owner,
            cert,
            image,
            hash,
            merge,
            output,
        }) => siglist_create(&owner, &cert, &image, &hash, &merge, &output),
        SecurebootCommand::Siglist(SiglistCommand::Show { file }) => {
            let db = SignatureDb::parse(&read_bounded(&file)?)
                .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&db.view())?);
            Ok(ExitCode::SUCCESS)
        }
        SecurebootCommand::Vars(cmd) => run_vars(cmd),
        SecurebootCommand::Keys(KeysCommand::Generate {
            cn,
            key_out,
            cert_out,
            issuer_key,
            issuer_cert,
            role,
            algorithm,
            days,
        }) => keys_generate(
            &cn,
            &key_out,
            &cert_out,
            issuer_key.as_deref().zip(issuer_cert.as_deref()),
            role,
            algorithm,
            days,
        ),
        SecurebootCommand::Sign {
            file,
            key,
            cert,
            extra_cert,
            output,
        } => {
            let pair = load_key_pair(&key, &cert)?;
            let extra = extra_cert
                .iter()
                .map(|p| read_cert_der(p))
                .collect::<Result<Vec<_>>>()?;
            let image = read_bounded(&file)?;
            let signed = sign_image(&image, &pair.key, &pair.cert_der, &extra)
                .with_context(|| format!("signing {}", file.display()))?;
            let output = output.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".signed");
                PathBuf::from(name)
            });
            write(&output, &signed)
        }
        SecurebootCommand::Authvar(cmd) => run_authvar(cmd),
        SecurebootCommand::Unsign {
            file,
            index,
            output,
        } => {
            let image = read_bounded(&file)?;
            let out = match index {
                Some(i) => remove_signature(&image, i),
                None => remove_all_signatures(&image),
            }
            .with_context(|| format!("removing signatures from {}", file.display()))?;
            write(&output, &out)
        }
        SecurebootCommand::Pcr7 { vars, image, json } => run_pcr7(&vars, &image, json),
    }
}

/// The current UTC time as an EFI_TIME.
fn now_efi_time() -> Result<EfiTime> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    Ok(EfiTime::from_unix_secs(secs)?)
}

fn run_authvar(cmd: AuthvarCommand) -> Result<ExitCode> {
    match cmd {
        AuthvarCommand::Sign {
            file,
            var,
            key,
            cert,
            timestamp,
            append,
            output,
        } => {
            let pair = load_key_pair(&key, &cert)?;
            let data = read_bounded(&file)?;
            SignatureDb::parse(&data)
                .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", file.display()))?;
            let ts = match timestamp {
                Some(t) => t.parse::<EfiTime>()?,
                None => now_efi_time()?,
            };
            let update = VariableUpdate::secure_boot(var.which(), append);
            let payload = build_payload(&update, &ts, &data, &pair.key, &pair.cert_der, &[])?;
            write(&output, &payload)
        }
        AuthvarCommand::Verify {
            file,
            var,
            append,
            vars,
            trusted,
        } => {
            let which = var.which();
            let (certs, current) = match vars {
                Some(path) => {
                    let store = load_store(&path)?;
                    let pk = store.secure_boot_db(SecureBootVar::Pk)?.unwrap_or_default();
                    let kek = store
                        .secure_boot_db(SecureBootVar::Kek)?
                        .unwrap_or_default();
                    let certs = match which {
                        SecureBootVar::Pk | SecureBootVar::Kek => trusted_certs(&[&pk]),
                        SecureBootVar::Db | SecureBootVar::Dbx => trusted_certs(&[&kek, &pk]),
                    };
                    let (name, guid) = which.id();
                    (certs, store.get(name, guid).map(|v| v.timestamp))
                }
                None => (
                    trusted
                        .iter()
                        .map(|p| read_cert_der(p))
                        .collect::<Result<Vec<_>>>()?,
                    None,
                ),
            };
            if certs.is_empty() {
                bail!("no trusted certificates: give --vars with a PK (and KEK) or --trusted");
            }
            let payload = read_bounded(&file)?;
            let update = VariableUpdate::secure_boot(which, append);
            match verify_payload(&update, &payload, &certs, current.as_ref()) {
                Ok(v) => {
                    println!(
                        "ACCEPTED: {} update of {} bytes, timestamp {}, signer chain position {} meets trusted certificate #{} ({})",
                        which.id().0,
                        v.data.len(),
                        v.timestamp,
                        v.chain_position,
                        v.trusted_index,
                        v.trusted_subject
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(AuthVarFailure::Malformed(e)) => Err(anyhow!(e).context(format!(
                    "{}: not an authenticated variable payload",
                    file.display()
                ))),
                Err(why) => {
                    println!("REFUSED: {why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn load_key_pair(key: &Path, cert: &Path) -> Result<KeyPair> {
    let key_pem = String::from_utf8(read_bounded(key)?)
        .map_err(|_| anyhow!("{}: not a PEM private key", key.display()))?;
    KeyPair::from_pem(&key_pem, &read_cert_der(cert)?)
        .with_context(|| format!("key {} with certificate {}", key.display(), cert.display()))
}

fn keys_generate(
    cn: &str,
    key_out: &Path,
    cert_out: &Path,
    issuer: Option<(&Path, &Path)>,
    role: Option<RoleArg>,
    algorithm: AlgorithmArg,
    days: u64,
) -> Result<ExitCode> {
    let mut rng = rand_core::OsRng;
    let key = match algorithm {
        AlgorithmArg::Rsa2048 => SigningKey::generate_rsa_bits(2048, &mut rng)?,
        AlgorithmArg::Rsa3072 => SigningKey::generate_rsa_bits(3072, &mut rng)?,
        AlgorithmArg::Rsa4096 => SigningKey::generate_rsa_bits(4096, &mut rng)?,
        AlgorithmArg::P256 => SigningKey::generate_p256(&mut rng),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let role = match role.unwrap_or(if issuer.is_some() {
        RoleArg::CodeSigning
    } else {
        RoleArg::Authority
    }) {
        RoleArg::Authority => CertRole::Authority,
        RoleArg::CodeSigning => CertRole::CodeSigning,
    };
    let request = CertRequest {
        common_name: cn.to_owned(),
        // An hour of slack for clocks that lag behind the signer's.
        not_before: now.saturating_sub(3600),
        not_after: now.saturating_add(days.saturating_mul(86_400)),
        role,
    };
    let pair = match issuer {
        None => KeyPair::self_signed(key, &request, &mut rng)?,
        Some((ikey, icert)) => load_key_pair(ikey, icert)?.issue(key, &request, &mut rng)?,
    };
    let cert_bytes = if cert_out.extension().is_some_and(|e| e == "der") {
        pair.cert_der.clone()
    } else {
        pair.cert_pem()?.into_bytes()
    };
    crate::tpm_certs::write_private(key_out, pair.key.to_pkcs8_pem()?.as_bytes())?;
    write(cert_out, &cert_bytes)
}

fn siglist_create(
    owner: &str,
    certs: &[PathBuf],
    images: &[PathBuf],
    hashes: &[String],
    merge: &[PathBuf],
    output: &Path,
) -> Result<ExitCode> {
    let owner = parse_owner(owner)?;
    let mut db = SignatureDb::default();
    for path in merge {
        let other = SignatureDb::parse(&read_bounded(path)?)
            .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", path.display()))?;
        db.merge(&other)?;
    }
    for path in certs {
        db.add_x509(owner, read_cert_der(path)?);
    }
    for path in images {
        let digest = image_hash(&read_bounded(path)?, ImageHashAlg::Sha256)
            .with_context(|| format!("{}: not a PE/COFF image", path.display()))?;
        db.add_hash(SignatureType::Sha256, owner, digest.as_bytes().to_vec())?;
    }
    for h in hashes {
        let bytes = trustlaunch_eventlog::hex::decode(h)
            .ok_or_else(|| anyhow!("--hash {h:?} is not hex"))?;
        let kind = match bytes.len() {
            20 => SignatureType::Sha1,
            28 => SignatureType::Sha224,
            32 => SignatureType::Sha256,
            48 => SignatureType::Sha384,
            64 => SignatureType::Sha512,
            n => bail!("--hash {h:?}: {n} bytes is no SHA-1/224/256/384/512 digest"),
        };
        db.add_hash(kind, owner, bytes)?;
    }
    db.dedup();
    write(output, &db.encode()?)
}

fn run_pcr7(vars: &Path, images: &[PathBuf], json: bool) -> Result<ExitCode> {
    let store = load_store(vars)?;
    let mut authorities = Vec::new();
    for path in images {
        let image = read_bounded(path)?;
        authorities.push(
            authority_for_image(&store, &image).with_context(|| {
                format!("{}: no authority in {}", path.display(), vars.display())
            })?,
        );
    }
    let prediction = predict_pcr7(&store, &authorities);
    let banks = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];
    if json {
        let mut doc = crate::pcrs::PcrJson {
            pcrs: Default::default(),
        };
        for alg in banks {
            let value = prediction
                .value(alg)
                .ok_or_else(|| anyhow!("cannot compute {alg}"))?;
            doc.pcrs
                .entry(alg.name())
                .or_default()
                .insert(7, value.to_hex());
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Secure Boot {}",
        if prediction.secure_boot { "on" } else { "off" }
    );
    for e in &prediction.events {
        let kind = match e.event_type {
            EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
            EV_SEPARATOR => "EV_SEPARATOR",
            _ => "?",
        };
        let digest = e
            .digest(HashAlg::Sha256)
            .map(|d| d.to_hex())
            .unwrap_or_default();
        println!("{kind:<30} {:<10} sha256:{digest}", e.name);
    }
    for alg in banks {
        if let Some(v) = prediction.value(alg) {
            println!("PCR 7 {:<7} {}", alg.name(), v.to_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cert_db(owner: Guid, certs: &[PathBuf]) -> Result<SignatureDb> {
    let mut db = SignatureDb::default();
    for c in certs {
        db.add_x509(owner, read_cert_der(c)?);
    }
    Ok(db)
}

fn vars_create(
    template: TemplateArg,
    base: &Path,
    ms_vars: &Path,
    args: &KeyArgs,
    dbx: Option<&Path>,
) -> Result<VarStore> {
    let owner = args.owner()?;
    let (pk, kek, db) = (args.pk.as_deref(), &args.kek, &args.db);
    let mut store = load_store(base)?;
    let mut keys = match template {
        TemplateArg::None => {
            if !args.is_empty() || dbx.is_some() {
                bail!("--template none takes no keys");
            }
            store.disable_secure_boot()?;
            return Ok(store);
        }
        TemplateArg::Custom => {
            let pk = pk.ok_or_else(|| anyhow!("--template custom needs --pk"))?;
            if kek.is_empty() || db.is_empty() {
                bail!("--template custom needs --kek and --db");
            }
            KeyTemplate::custom(
                cert_db(owner, &[pk.to_path_buf()])?,
                cert_db(owner, kek)?,
                cert_db(owner, db)?,
                None,
            )
        }
        TemplateArg::Microsoft => {
            let ms = read_bounded(ms_vars)?;
            let mut keys = KeyTemplate::microsoft(&ms).with_context(|| {
                format!("{}: no Microsoft KEK/db in this store", ms_vars.display())
            })?;
            keys.pk = Some(match pk {
                Some(pk) => cert_db(owner, &[pk.to_path_buf()])?,
                None => VarStore::parse(&ms)?
                    .secure_boot_db(SecureBootVar::Pk)?
                    .ok_or_else(|| anyhow!("{}: no PK; give --pk", ms_vars.display()))?,
            });
            for (target, extra) in [(&mut keys.kek, kek), (&mut keys.db, db)] {
                if let Some(t) = target.as_mut() {
                    t.merge(&cert_db(owner, extra)?)?;
                }
            }
            keys
        }
    };
    if let Some(dbx) = dbx {
        keys.dbx = Some(
            SignatureDb::parse(&read_bounded(dbx)?)
                .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", dbx.display()))?,
        );
    }
    store.apply_keys(&keys)?;
    store.enable_secure_boot()?;
    Ok(store)
}

fn run_vars(cmd: VarsCommand) -> Result<ExitCode> {
    match cmd {
        VarsCommand::Create {
            template,
            base,
            ms_vars,
            keys,
            dbx,
            output,
        } => {
            let store = vars_create(template, &base, &ms_vars, &keys, dbx.as_deref())?;
            write(&output, &store.to_bytes()?)
        }
        VarsCommand::Show { file } => {
            let store = load_store(&file)?;
            for v in &store.variables {
                println!(
                    "{:<24} {} attr 0x{:02x} {:>6} bytes",
                    v.name,
                    v.guid,
                    v.attributes,
                    v.data.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Export { file } => {
            let store = load_store(&file)?;
            println!("{}", serde_json::to_string_pretty(&store.to_json())?);
            Ok(ExitCode::SUCCESS)
        }
        VarsCommand::Import { file, json, output } => {
            let mut store = load_store(&file)?;
            let doc: VarStoreJson = serde_json::from_slice(&read_bounded(&json)?)
                .with_context(|| format!("{}: not a variable JSON document", json.display()))?;
            store.set_from_json(&doc)?;
            write(&output, &store.to_bytes()?)
        }
        VarsCommand::Enroll {
            file,
            keys,
            secure_boot,
            output,
        } => {
            let owner = keys.owner()?;
            let mut store = load_store(&file)?;
            if let Some(pk) = &keys.pk {
                store.enroll_x509(SecureBootVar::Pk, owner, &read_cert_der(pk)?, true)?;
            }
            for (which, certs) in [
                (SecureBootVar::Kek, &keys.kek),
                (SecureBootVar::Db, &keys.db),
            ] {
                for c in certs {
                    store.enroll_x509(which, owner, &read_cert_der(c)?, false)?;
                }
            }
            if secure_boot {
                store.enable_secure_boot()?;
            }
            write(&output, &store.to_bytes()?)
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<ExitCode> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}
