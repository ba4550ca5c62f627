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

/// Reads an X.509 certificate, PEM (the first `-----BEGIN CERTIFICATE-----`
/// block) or DER, and returns its DER, checked to parse as X.509.
pub fn read_cert_der(path: &Path) -> Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bytes = read_bounded(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let block = match text.find(BEGIN) {
        Some(start) => {
            let end = text[start..].find(END).ok_or_else(|| {
                anyhow::anyhow!("{}: PEM certificate without END line", path.display())
            })?;
            text[start..start + end + END.len()].as_bytes().to_vec()
        }
        None => bytes,
    };
    trustlaunch_secureboot::keys::certificate_der(&block)
        .with_context(|| format!("{}: not an X.509 certificate (PEM or DER)", path.display()))
}
