//! Reading inputs: files, `-` for stdin, and securityfs files (which report
//! size 0, so the length is learnt by reading), always bounded.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Largest input any command reads: real event logs are tens of KiB, TPM
/// structures and certificates a few KiB.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Reads a whole file (or stdin for `-`), refusing more than
/// [`MAX_INPUT_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut buf)
            .context("reading stdin")?;
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // Size the buffer from the file length when it is known (growing it
        // by doubling cost a third of the time to hash a kernel); securityfs
        // files report 0 and grow as read.
        let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
        buf.reserve(usize::try_from(hint.min(MAX_INPUT_BYTES) + 1).unwrap_or(0));
        file.take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() as u64 > MAX_INPUT_BYTES {
        bail!(
            "{} is larger than {} MiB: refusing to read it",
            path.display(),
            MAX_INPUT_BYTES >> 20
        );
    }
    Ok(buf)
}

/// Reads an X.509 certificate, PEM (`-----BEGIN CERTIFICATE-----`) or DER,
/// and returns its DER.
pub fn read_cert_der(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bounded(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let Some(start) = text.find("-----BEGIN CERTIFICATE-----") else {
        if bytes.first() != Some(&0x30) {
            bail!(
                "{}: neither a PEM certificate nor DER (does not start with a SEQUENCE)",
                path.display()
            );
        }
        return Ok(bytes);
    };
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[start..]
        .find(end_marker)
        .map(|i| start + i + end_marker.len())
        .ok_or_else(|| anyhow::anyhow!("{}: PEM certificate without END line", path.display()))?;
    let (label, der) = der::pem::decode_vec(text[start..end].as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: bad PEM certificate: {e}", path.display()))?;
    if label != "CERTIFICATE" {
        bail!(
            "{}: PEM label {label:?}, expected CERTIFICATE",
            path.display()
        );
    }
    Ok(der)
}
