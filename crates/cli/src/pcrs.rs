//! The PCR values JSON contract shared by `eventlog replay --json`,
//! `eventlog verify --pcrs` and `tpm quote-verify --pcrs`:
//! `{"pcrs": {"<alg>": {"<index>": "<lowercase hex>"}}}`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The document.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrJson {
    /// bank name -> PCR index -> hex value.
    pub pcrs: BTreeMap<String, BTreeMap<u32, String>>,
}

/// Bank name -> PCR index -> value bytes, checked: known bank names, PCR
/// indices below 32, hex values of the bank's digest size.
pub type RawPcrs = BTreeMap<String, BTreeMap<u32, Vec<u8>>>;

const BANKS: [(&str, usize); 5] = [
    ("sha1", 20),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
    ("sm3_256", 32),
];

/// Parses the JSON contract from bytes read from `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<RawPcrs> {
    let json: PcrJson = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "{}: expected {{\"pcrs\": {{\"<alg>\": {{\"<index>\": \"<hex>\"}}}}}}",
            path.display()
        )
    })?;
    let mut out = RawPcrs::new();
    for (name, values) in json.pcrs {
        let size = BANKS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                anyhow!(
                    "{}: unknown bank {name:?} (sha1, sha256, sha384, sha512, sm3_256)",
                    path.display()
                )
            })?;
        let bank = out.entry(name.clone()).or_default();
        for (index, hex) in values {
            if index > 31 {
                bail!("{}: {name} PCR {index} is not a PCR index", path.display());
            }
            let bytes = trustlaunch_eventlog::hex::decode(&hex).ok_or_else(|| {
                anyhow!("{}: {name} PCR {index}: {hex:?} is not hex", path.display())
            })?;
            if bytes.len() != size {
                bail!(
                    "{}: {name} PCR {index}: {} bytes, a {name} value has {size}",
                    path.display(),
                    bytes.len()
                );
            }
            bank.insert(index, bytes);
        }
    }
    Ok(out)
}
