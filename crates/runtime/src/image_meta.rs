//! `image.json`: what a Gen2 image is and what booting it will measure.
//!
//! Written next to `disk.raw` by the image builder and read back (bounded,
//! validated) by whatever launches VMs from it. The gallery-facing part
//! follows Azure's shape (`generation: V2`, `features: [{name:
//! "SecurityType", value: "TrustedLaunchSupported"}]`); the rest is the
//! evidence an appraiser expects: for each EFI binary on the ESP its
//! Authenticode SHA-256 (what OVMF extends into PCR 4) and signer, and for
//! a UKI the section digests systemd-stub extends into PCR 11.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file name of the metadata inside an image directory.
pub const METADATA_FILE: &str = "image.json";
/// The current `schema` value.
pub const SCHEMA: u32 = 1;
/// Largest `image.json` [`ImageMetadata::read`] accepts.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// A SHA-256 digest, serialised as 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// From 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?}: not 64 hex digits")))
    }
}

/// The VM generation the image boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generation {
    /// BIOS: an MBR disk, or one without an EFI system partition (an
    /// imported disk only; the runtime boots Gen2).
    V1,
    /// UEFI (OVMF), GPT disk with an EFI system partition.
    V2,
}

/// A named measurement (SHA-256 hex), as a baseline component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedDigest {
    /// What the event names (a path, `db`, a file as grub names it).
    pub name: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Which boot chain a [`PredictedBoot`] describes, and so which of its
/// lists are predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictedChain {
    /// Debian's shim → grub → Linux: every list is a prediction (PCR 4
    /// boot applications, PCR 7 authorities, grub's PCR 9 files and the
    /// kernel command lines).
    #[default]
    ShimGrub,
    /// The Windows Boot Manager: only the boot applications (PCR 4: the
    /// boot manager) are predicted. What it loads Windows verifies and
    /// measures itself (PCRs 12-14), so the other lists are empty and say
    /// nothing.
    WindowsBootManager,
}

impl PredictedChain {
    fn is_shim_grub(&self) -> bool {
        *self == Self::ShimGrub
    }
}

/// What the first boot of an imported chain will measure, as the import
/// predicted it from the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictedBoot {
    /// The chain predicted (absent in `image.json`: shim → grub).
    #[serde(default, skip_serializing_if = "PredictedChain::is_shim_grub")]
    pub chain: PredictedChain,
    /// PCR 4 boot applications in load order (Authenticode SHA-256).
    pub boot_applications: Vec<NamedDigest>,
    /// PCR 9 files grub reads (plain SHA-256), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loaded_files: Vec<NamedDigest>,
    /// The kernel command lines grub measures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_command_lines: Vec<String>,
    /// PCR 7 authorities (SHA-256 of the entry's data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<NamedDigest>,
}

/// A gallery feature (`{name, value}`, Azure's shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Feature name, e.g. `SecurityType`.
    pub name: String,
    /// Value, e.g. `TrustedLaunchSupported`.
    pub value: String,
}

/// Which Secure Boot key template the image needs in the VM's varstore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTemplate {
    /// The platform's own PK/KEK/db: the image is signed with its db key.
    Custom,
    /// Microsoft's KEK and db (Debian's `OVMF_VARS_4M.ms.fd`): a
    /// Microsoft-signed shim.
    Microsoft,
}

/// The VM key template an image directory's metadata asks for; `custom`
/// when it has none that reads (the runtime's own images are signed with
/// the platform's db key). Shared by `host vm create` and the control
/// plane's runtime driver.
pub fn vm_key_template(dir: &Path) -> crate::spec::KeyTemplate {
    match ImageMetadata::read(dir).map(|m| m.key_template) {
        Ok(KeyTemplate::Microsoft) => crate::spec::KeyTemplate::Microsoft,
        _ => crate::spec::KeyTemplate::Custom,
    }
}

impl KeyTemplate {
    /// `custom` / `microsoft`.
    pub fn name(self) -> &'static str {
        match self {
            KeyTemplate::Custom => "custom",
            KeyTemplate::Microsoft => "microsoft",
        }
    }
}

/// The db certificate an image was signed for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateInfo {
    /// SHA-256 of the DER certificate.
    pub sha256: Sha256Digest,
    /// Its subject (RFC 4514 text).
    pub subject: String,
}

/// One section of a UKI as systemd-stub measures it into PCR 11 (the
/// section name with its NUL, then the contents, VirtualSize bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UkiSection {
    /// `.linux`, `.osrel`, `.cmdline`, `.initrd`, ...
    pub name: String,
    /// SHA-256 of the section contents.
    pub sha256: Sha256Digest,
}

/// An EFI binary on the ESP and what loading it measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootComponent {
    /// Path on the ESP, `/`-separated (`EFI/BOOT/BOOTX64.EFI`).
    pub esp_path: String,
    /// Authenticode SHA-256: the PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION
    /// digest when the firmware (or shim) loads it.
    pub authenticode_sha256: Sha256Digest,
    /// Subject of the signer certificate of each signature (empty when
    /// unsigned).
    pub signers: Vec<String>,
    /// For a UKI: its sections in systemd-stub's measurement order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uki_sections: Vec<UkiSection>,
    /// For a UKI: PCR 11 (sha256) after systemd-stub 252 measured the
    /// sections above, from all zeroes, assuming nothing else extends
    /// PCR 11 before the kernel runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki_pcr11_sha256: Option<Sha256Digest>,
}

/// A file on the ESP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspFile {
    /// Path on the ESP, `/`-separated.
    pub esp_path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the contents.
    pub sha256: Sha256Digest,
}

/// The disk file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// File name inside the image directory (`disk.raw`).
    pub file: String,
    /// Format (`raw`).
    pub format: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
}

/// `image.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMetadata {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Image name.
    pub name: String,
    /// How it was built (`tiny`, `debian-shim`, `uki`, `chain`).
    pub kind: String,
    /// Always [`Generation::V2`].
    pub generation: Generation,
    /// Gallery features: `SecurityType=TrustedLaunchSupported` when the
    /// image boots under Secure Boot (built images always; imported ones
    /// when the import verified it).
    pub features: Vec<Feature>,
    /// The key template the VM's varstore needs.
    pub key_template: KeyTemplate,
    /// For [`KeyTemplate::Custom`]: the db certificate it was signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_certificate: Option<CertificateInfo>,
    /// The EFI binaries on the ESP, the boot application first.
    pub boot_components: Vec<BootComponent>,
    /// Every file on the ESP with its plain SHA-256 (what grub's `tpm`
    /// module extends into PCR 9 for the files it reads).
    pub esp_files: Vec<EspFile>,
    /// The kernel release inside, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// The kernel command line, when fixed by the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cmdline: Option<String>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The disk.
    pub disk: DiskInfo,
    /// Free-form remarks (what is not predicted, and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Whether the guest attestation agent is installed in the image
    /// (`None`: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent: Option<bool>,
    /// Why the boot chain would not boot under Secure Boot, one line per
    /// key template that refuses it (an import's verdict; empty when a
    /// template boots it, and for the images built here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_launch_refusals: Vec<String>,
    /// What the first boot will measure, where the import could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_boot: Option<PredictedBoot>,
}

/// Why `image.json` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// It could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_METADATA_BYTES`].
    #[error("{path}: larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: std::path::PathBuf,
    },
    /// It is not valid JSON of this shape.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error (line and column).
        source: serde_json::Error,
    },
    /// It parsed but is inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The Trusted Launch feature every image carries.
pub fn trusted_launch_feature() -> Feature {
    Feature {
        name: "SecurityType".into(),
        value: "TrustedLaunchSupported".into(),
    }
}

fn valid_esp_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        })
}

impl ImageMetadata {
    /// Consistency checks beyond the JSON shape.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} (this build reads {SCHEMA})",
                self.schema
            ));
        }
        if self.name.is_empty() {
            return Err("empty name".into());
        }
        let trusted_launch = self.features.contains(&trusted_launch_feature());
        if trusted_launch && self.generation != Generation::V2 {
            return Err("SecurityType=TrustedLaunchSupported on a V1 image".into());
        }
        let f = &self.disk.file;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == "." || f == ".." {
            return Err(format!("disk.file {f:?} is not a plain file name"));
        }
        if trusted_launch && self.boot_components.is_empty() {
            return Err("no boot components".into());
        }
        let esp_paths = self
            .boot_components
            .iter()
            .map(|c| &c.esp_path)
            .chain(self.esp_files.iter().map(|f| &f.esp_path));
        for p in esp_paths {
            if !valid_esp_path(p) {
                return Err(format!("ESP path {p:?}"));
            }
        }
        for c in &self.boot_components {
            if !self.esp_files.iter().any(|f| f.esp_path == c.esp_path) {
                return Err(format!(
                    "boot component {:?} is not among esp_files",
                    c.esp_path
                ));
            }
        }
        if self.key_template == KeyTemplate::Custom && self.db_certificate.is_none() {
            // Allowed (an unsigned UKI image), but only if nothing is signed.
            if self.boot_components.iter().any(|c| !c.signers.is_empty()) {
                return Err(
                    "custom key template with signed components but no db_certificate".into(),
                );
            }
        }
        Ok(())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes `dir/image.json`.
    pub fn write(&self, dir: &Path) -> Result<(), MetadataError> {
        let path = dir.join(METADATA_FILE);
        let mut text = self.to_json();
        text.push('\n');
        fs::write(&path, text).map_err(|source| MetadataError::Io { path, source })
    }

    /// Reads and validates `dir/image.json` (at most
    /// [`MAX_METADATA_BYTES`]).
    pub fn read(dir: &Path) -> Result<Self, MetadataError> {
        let path = dir.join(METADATA_FILE);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        let file = fs::File::open(&path).map_err(io)?;
        let mut buf = Vec::new();
        file.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() as u64 > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge { path });
        }
        Self::from_json_at(&buf, path)
    }

    /// Parses and validates JSON bytes.
    fn from_json(bytes: &[u8]) -> Result<Self, FromJson> {
        let meta: Self = serde_json::from_slice(bytes).map_err(FromJson::Json)?;
        meta.validate().map_err(FromJson::Invalid)?;
        Ok(meta)
    }

    /// Parses and validates `image.json` text (for callers holding bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, MetadataError> {
        Self::from_json_at(bytes, std::path::PathBuf::from(METADATA_FILE))
    }

    /// [`Self::from_json`], its errors naming `path`.
    fn from_json_at(bytes: &[u8], path: std::path::PathBuf) -> Result<Self, MetadataError> {
        Self::from_json(bytes).map_err(|e| match e {
            FromJson::Json(source) => MetadataError::Json { path, source },
            FromJson::Invalid(message) => MetadataError::Invalid { path, message },
        })
    }
}

enum FromJson {
    Json(serde_json::Error),
    Invalid(String),
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`2026-11-23T16:52:17Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_366_337), "2026-11-22T16:52:17Z");
    }

    #[test]
    fn digests_round_trip_hex() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256Digest::from_hex("ab"), None);
        assert_eq!(Sha256Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn a_prediction_without_a_chain_is_shim_grub_and_windows_says_only_pcr_4() {
        // As images imported before Windows was recognised wrote it.
        let old = r#"{"boot_applications":[{"name":"\\EFI\\BOOT\\BOOTX64.EFI","sha256":"00"}],
            "loaded_files":[],"kernel_command_lines":["/vmlinuz ro"],"authorities":[]}"#;
        let p: PredictedBoot = serde_json::from_str(old).unwrap();
        assert_eq!(p.chain, PredictedChain::ShimGrub);
        assert_eq!(p.kernel_command_lines, ["/vmlinuz ro"]);
        assert!(!serde_json::to_string(&p).unwrap().contains("chain"));
        let w = PredictedBoot {
            chain: PredictedChain::WindowsBootManager,
            boot_applications: p.boot_applications.clone(),
            loaded_files: Vec::new(),
            kernel_command_lines: Vec::new(),
            authorities: Vec::new(),
        };
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(
            text,
            r#"{"chain":"windows_boot_manager","boot_applications":[{"name":"\\EFI\\BOOT\\BOOTX64.EFI","sha256":"00"}]}"#
        );
        assert_eq!(serde_json::from_str::<PredictedBoot>(&text).unwrap(), w);
    }
}
