//! `trustlaunch tpm ...`: quote verification, attestation-key checks and
//! MakeCredential, on the files tpm2-tools writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use trustlaunch_tpm::ak::check_ak;
use trustlaunch_tpm::alg::HashAlg;
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::pcr::{parse_tpm2_tools_pcrs, PcrValues};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::verify_quote;
use trustlaunch_tpm::signature::Signature;

use crate::input::read_bounded;

/// TPM subcommands.
#[derive(Subcommand)]
pub enum TpmCommand {
    /// Verify a quote: the AK's signature, the nonce, and the PCR digest
    /// over the given PCR values. Exit 0 only when the quote is valid.
    QuoteVerify {
        /// The AK's public area: TPM2B_PUBLIC (`tpm2_createak -u`, `-f tss`),
        /// a bare TPMT_PUBLIC, or a PEM public key (`-f pem`; then the key's
        /// scheme and attributes are unknown and not checked).
        #[arg(long)]
        ak: PathBuf,
        /// The quote, a TPMS_ATTEST (`tpm2_quote -m`).
        #[arg(long)]
        quote: PathBuf,
        /// The signature, a TPMT_SIGNATURE (`tpm2_quote -s`).
        #[arg(long)]
        signature: PathBuf,
        /// The expected nonce (qualifying data), in hex.
        #[arg(long, conflicts_with = "nonce_file")]
        nonce: Option<String>,
        /// The expected nonce, as a binary file.
        #[arg(long)]
        nonce_file: Option<PathBuf>,
        /// PCR values: the JSON of `eventlog replay --json`, or the PCR
        /// file of `tpm2_quote -o` / `tpm2_pcrread -o`.
        #[arg(long)]
        pcrs: PathBuf,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that a key is a proper attestation key (fixedTPM, fixedParent,
    /// sensitiveDataOrigin, restricted, sign; not decrypt). Exit 0 only
    /// when it is.
    AkCheck {
        /// The key's public area (TPM2B_PUBLIC or TPMT_PUBLIC).
        #[arg(long)]
        ak: PathBuf,
    },
    /// MakeCredential, verifier side: a credential only the TPM holding the
    /// EK can activate, for the object with the given name. Writes the file
    /// `tpm2_activatecredential -i` reads.
    MakeCredential {
        /// The EK's public area (`tpm2_createek -u`).
        #[arg(long)]
        ek: PathBuf,
        /// The AK's TPM name in hex (as `tpm2_createak -n` writes, hex-encoded).
        #[arg(long, conflicts_with = "name_file")]
        name: Option<String>,
        /// The AK's TPM name as a binary file (`tpm2_createak -n`).
        #[arg(long)]
        name_file: Option<PathBuf>,
        /// The secret (at most the EK name algorithm's digest size).
        #[arg(long)]
        secret: PathBuf,
        /// Output file (tpm2-tools credential format).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// EK certificates: show, verify against roots.
    #[command(subcommand)]
    EkCert(crate::tpm_certs::EkCertCommand),
    /// The platform's vTPM CA: create it, issue EK certificates.
    #[command(subcommand)]
    Ca(crate::tpm_certs::CaCommand),
    /// Print a TPM structure file (TPMT_PUBLIC, TPMS_ATTEST or
    /// TPMT_SIGNATURE) as JSON, with a key's TPM name.
    Show {
        /// What the file holds.
        #[arg(long, value_parser = ["public", "attest", "signature"])]
        kind: String,
        /// The file.
        file: PathBuf,
    },
}

/// Runs a subcommand.
pub fn run(cmd: TpmCommand) -> Result<ExitCode> {
    match cmd {
        TpmCommand::QuoteVerify {
            ak,
            quote,
            signature,
            nonce,
            nonce_file,
            pcrs,
            json,
        } => {
            let ak = load_public(&ak)?;
            let attest = read_bounded(&quote)?;
            let sig = Signature::from_bytes(&read_bounded(&signature)?)
                .with_context(|| format!("{}: not a TPMT_SIGNATURE", signature.display()))?;
            let nonce = match (nonce, nonce_file) {
                (Some(hex), None) => trustlaunch_eventlog::hex::decode(&hex)
                    .ok_or_else(|| anyhow!("--nonce {hex:?} is not hex"))?,
                (None, Some(path)) => read_bounded(&path)?,
                _ => bail!("give the expected nonce with --nonce HEX or --nonce-file FILE"),
            };
            let values = load_pcrs(&pcrs)?;
            let verdict = verify_quote(&ak, &attest, &sig, &nonce, &values);
            if json {
                let doc = match &verdict {
                    Ok(q) => serde_json::json!({"valid": true, "quote": q}),
                    Err(f) => {
                        serde_json::json!({"valid": false, "failure": f, "message": f.to_string()})
                    }
                };
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                match &verdict {
                    Ok(q) => {
                        let banks: Vec<String> = q
                            .selection
                            .banks
                            .iter()
                            .map(|b| format!("{}:{:?}", b.hash, b.pcrs))
                            .collect();
                        println!(
                            "OK: quote verified (PCRs {}; clock {} ms, resets {}, restarts {})",
                            banks.join(" "),
                            q.clock_info.clock,
                            q.clock_info.reset_count,
                            q.clock_info.restart_count
                        );
                    }
                    Err(f) => println!("FAIL: {f}"),
                }
            }
            Ok(if verdict.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        TpmCommand::AkCheck { ak } => {
            let key = load_public(&ak)?;
            match check_ak(&key) {
                Ok(()) => {
                    println!(
                        "OK: a proper attestation key ({})",
                        key.attributes.names().join("|")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(f) => {
                    println!("FAIL: {f}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        TpmCommand::MakeCredential {
            ek,
            name,
            name_file,
            secret,
            output,
        } => {
            let ek = load_public(&ek)?;
            let name = match (name, name_file) {
                (Some(hex), None) => trustlaunch_eventlog::hex::decode(&hex)
                    .ok_or_else(|| anyhow!("--name {hex:?} is not hex"))?,
                (None, Some(path)) => read_bounded(&path)?,
                _ => bail!("give the AK's name with --name HEX or --name-file FILE"),
            };
            let secret = read_bounded(&secret)?;
            let made = make_credential(&ek, &name, &secret, &mut rand_core::OsRng)?;
            std::fs::write(&output, made.to_tpm2_tools_file())
                .with_context(|| format!("writing {}", output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        TpmCommand::EkCert(cmd) => crate::tpm_certs::run_ek_cert(cmd),
        TpmCommand::Ca(cmd) => crate::tpm_certs::run_ca(cmd),
        TpmCommand::Show { kind, file } => {
            let bytes = read_bounded(&file)?;
            let doc = match kind.as_str() {
                "public" => {
                    let p = load_public(&file)?;
                    let name = p.name().map(|n| trustlaunch_eventlog::hex::encode(&n));
                    serde_json::json!({"public": p, "name": name})
                }
                "attest" => serde_json::json!(trustlaunch_tpm::attest::Attest::from_bytes(&bytes)
                    .with_context(|| format!("{}: not a TPMS_ATTEST", file.display()))?),
                _ => serde_json::json!(Signature::from_bytes(&bytes)
                    .with_context(|| format!("{}: not a TPMT_SIGNATURE", file.display()))?),
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A public area from a TPM2B_PUBLIC file (u16 size prefix that matches the
/// file) or a bare TPMT_PUBLIC.
pub(crate) fn load_public(path: &Path) -> Result<Public> {
    let bytes = read_bounded(path)?;
    if bytes.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        let pem = String::from_utf8_lossy(&bytes);
        return trustlaunch_tpm::ek::public_from_spki_pem(&pem).ok_or_else(|| {
            anyhow!(
                "{}: not an RSA or ECC P-256/P-384 public key",
                path.display()
            )
        });
    }
    let sized = matches!(bytes.as_slice(), [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len());
    let parsed = if sized {
        Public::from_tpm2b(&bytes)
    } else {
        Public::from_bytes(&bytes)
    };
    parsed.with_context(|| format!("{}: not a TPM2B_PUBLIC or TPMT_PUBLIC", path.display()))
}

fn load_pcrs(path: &Path) -> Result<PcrValues> {
    let bytes = read_bounded(path)?;
    let json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !json {
        let (_, values) = parse_tpm2_tools_pcrs(&bytes).with_context(|| {
            format!("{}: not a PCR JSON or tpm2-tools PCR file", path.display())
        })?;
        return Ok(values);
    }
    let raw = crate::pcrs::parse(path, &bytes)?;
    let mut values = PcrValues::new();
    for (name, bank) in raw {
        let alg = HashAlg::from_name(&name)
            .ok_or_else(|| anyhow!("{}: bank {name} cannot be quoted here", path.display()))?;
        values.insert(alg, bank);
    }
    Ok(values)
}
