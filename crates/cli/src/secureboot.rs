//! `trustlaunch secureboot ...`: Authenticode hashes and verification
//! against db/dbx, signature lists, and OVMF variable stores.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use trustlaunch_eventlog::Guid;
use trustlaunch_secureboot::authenticode::{image_hash, ImageDigest, ImageHashAlg};
use trustlaunch_secureboot::siglist::SignatureDb;
use trustlaunch_secureboot::varstore::{SecureBootVar, VarStore, VarStoreJson};
use trustlaunch_secureboot::verify::{verify_image, Database, DbEntry, Verdict};

use crate::input::read_bounded;

/// Secure Boot subcommands.
#[derive(Subcommand)]
pub enum SecurebootCommand {
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
}

/// Signature list subcommands.
#[derive(Subcommand)]
pub enum SiglistCommand {
    /// Print the entries of a signature list file as JSON.
    Show {
        /// The file.
        file: PathBuf,
    },
}

/// Variable store subcommands.
#[derive(Subcommand)]
pub enum VarsCommand {
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
    /// Enroll X.509 certificates (DER) as PK, KEK and db, optionally turn
    /// Secure Boot on, and write a new store.
    Enroll {
        /// The VARS file to start from (e.g. OVMF_VARS_4M.fd).
        file: PathBuf,
        /// Owner GUID of the enrolled entries.
        #[arg(long, default_value = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d")]
        owner: String,
        /// PK certificate (replaces PK).
        #[arg(long)]
        pk: Option<PathBuf>,
        /// KEK certificates to add.
        #[arg(long)]
        kek: Vec<PathBuf>,
        /// db certificates to add.
        #[arg(long)]
        db: Vec<PathBuf>,
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
    let (name, guid) = which.id();
    match store.get(name, guid) {
        None => Ok(Database::default()),
        Some(v) => Ok(Database::from_signature_db(&v.signature_db()?)),
    }
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
                    let what = match by {
                        DbEntry::Cert(i) => format!(
                            "db certificate #{i} (signature {}, chain position {})",
                            signature.unwrap_or(0),
                            chain_position.unwrap_or(0)
                        ),
                        DbEntry::Sha256(i) => format!("db image hash #{i}"),
                        other => format!("{other:?}"),
                    };
                    println!("ALLOWED by {what}");
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Denied(why) => {
                    println!("DENIED: {why:?}");
                    Ok(ExitCode::from(1))
                }
                other => {
                    println!("DENIED: {other:?}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        SecurebootCommand::Siglist(SiglistCommand::Show { file }) => {
            let db = SignatureDb::parse(&read_bounded(&file)?)
                .with_context(|| format!("{}: not EFI_SIGNATURE_LISTs", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&db.view())?);
            Ok(ExitCode::SUCCESS)
        }
        SecurebootCommand::Vars(cmd) => run_vars(cmd),
    }
}

fn run_vars(cmd: VarsCommand) -> Result<ExitCode> {
    match cmd {
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
            owner,
            pk,
            kek,
            db,
            secure_boot,
            output,
        } => {
            let owner =
                Guid::parse(&owner).ok_or_else(|| anyhow!("--owner {owner:?} is not a GUID"))?;
            let mut store = load_store(&file)?;
            if let Some(pk) = pk {
                store.enroll_x509(SecureBootVar::Pk, owner, &read_bounded(&pk)?, true)?;
            }
            for (which, certs) in [(SecureBootVar::Kek, kek), (SecureBootVar::Db, db)] {
                for c in certs {
                    store.enroll_x509(which, owner, &read_bounded(&c)?, false)?;
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
