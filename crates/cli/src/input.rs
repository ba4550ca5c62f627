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
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(MAX_INPUT_BYTES + 1)
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
