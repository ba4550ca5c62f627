//! Shared helpers for the swtpm tests: running tpm2-tools against the
//! harness's simulator and reading their file formats.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};
use trustlaunch_tpm_client::harness::Swtpm;
use trustlaunch_tpm_client::Tpm;

/// Starts a fresh simulator and a client on it.
pub fn start() -> Result<(Swtpm, Tpm)> {
    let swtpm = Swtpm::start().context("starting swtpm")?;
    let tpm = swtpm.client().context("connecting to swtpm")?;
    Ok((swtpm, tpm))
}

/// Runs a tpm2-tools binary against `swtpm` (or with `-T none` if the
/// arguments say so) and returns its output, failing with its stderr if it
/// exits non-zero.
pub fn tool(swtpm: &Swtpm, name: &str, args: &[&str]) -> Result<Output> {
    let out = tool_unchecked(swtpm, name, args)?;
    if !out.status.success() {
        bail!(
            "{name} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Like [`tool`] but returns a failing run's output instead of an error.
pub fn tool_unchecked(swtpm: &Swtpm, name: &str, args: &[&str]) -> Result<Output> {
    Command::new(name)
        .args(args)
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .current_dir(swtpm.state_dir())
        .output()
        .with_context(|| format!("running {name} (is tpm2-tools installed?)"))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim().trim_start_matches("0x");
    ensure!(s.len() % 2 == 0, "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex {s}")))
        .collect()
}

/// A credential file written by `tpm2_makecredential -o`: magic
/// `0xBADCC0DE`, version 1 (both big-endian `UINT32`), then
/// `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`.
pub struct ToolsCredential {
    /// `TPM2B_ID_OBJECT` contents.
    pub id_object: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents.
    pub encrypted_secret: Vec<u8>,
}

pub fn read_tools_credential(path: &Path) -> Result<ToolsCredential> {
    let bytes = std::fs::read(path)?;
    ensure!(bytes.len() >= 12, "credential file too short");
    ensure!(bytes[..4] == [0xBA, 0xDC, 0xC0, 0xDE], "bad magic");
    ensure!(bytes[4..8] == [0, 0, 0, 1], "bad version");
    let mut rest = &bytes[8..];
    let mut tpm2b = || -> Result<Vec<u8>> {
        ensure!(rest.len() >= 2, "truncated");
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        ensure!(rest.len() >= 2 + n, "truncated");
        let v = rest[2..2 + n].to_vec();
        rest = &rest[2 + n..];
        Ok(v)
    };
    let id_object = tpm2b()?;
    let encrypted_secret = tpm2b()?;
    ensure!(rest.is_empty(), "trailing bytes in credential file");
    Ok(ToolsCredential {
        id_object,
        encrypted_secret,
    })
}

/// Parses `tpm2_pcrread` YAML output (`  sha256:` then `    0 : 0x…`)
/// into (bank name, index, digest).
pub fn parse_pcrread(stdout: &str) -> Result<Vec<(String, u8, Vec<u8>)>> {
    let mut bank = None;
    let mut out = Vec::new();
    for line in stdout.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(name) = t.strip_suffix(':') {
            bank = Some(name.trim().to_string());
            continue;
        }
        let (idx, val) = t.split_once(':').context("unexpected tpm2_pcrread line")?;
        let b = bank.clone().context("value before bank")?;
        out.push((b, idx.trim().parse()?, unhex(val)?));
    }
    Ok(out)
}

/// PCR values in the "serialized" file format of tpm2-tools 5.x
/// (`tpm2_quote -o`, read by `tpm2_checkquote -f` without `-l`): native
/// little-endian C structures, as seen in files tpm2_quote writes —
/// `TPML_PCR_SELECTION` (UINT32 count, then 16 `TPMS_PCR_SELECTION` of
/// 8 bytes: UINT16 hash, UINT8 sizeofSelect, BYTE pcrSelect[4], 1 pad
/// byte), a UINT32 count of `TPML_DIGEST`s, then each `TPML_DIGEST`
/// (UINT32 count, then 8 `TPM2B_DIGEST` of 2 + 64 bytes). tpm2-tools 5.4's
/// `-f values -l` path fails even on its own files, hence this format.
///
/// Supports one bank of PCRs 0–23 with at most 8 selected PCRs.
pub fn tools_serialized_pcrs(bank_alg: u16, pcrs: &[u8], digests: &[Vec<u8>]) -> Vec<u8> {
    assert!(pcrs.len() <= 8 && pcrs.len() == digests.len());
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut select = [0u8; 4];
    for p in pcrs {
        select[usize::from(*p / 8)] |= 1 << (p % 8);
    }
    for i in 0..16 {
        if i == 0 {
            out.extend_from_slice(&bank_alg.to_le_bytes());
            out.push(3);
            out.extend_from_slice(&select);
            out.push(0);
        } else {
            out.extend_from_slice(&[0; 8]);
        }
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(digests.len() as u32).to_le_bytes());
    for i in 0..8 {
        let mut d = [0u8; 66];
        if let Some(digest) = digests.get(i) {
            d[..2].copy_from_slice(&(digest.len() as u16).to_le_bytes());
            d[2..2 + digest.len()].copy_from_slice(digest);
        }
        out.extend_from_slice(&d);
    }
    out
}
