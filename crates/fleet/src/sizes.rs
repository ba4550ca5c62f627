//! VM sizes: the families' Trusted Launch support (the seed's table in
//! `azure-model.md`), a catalog of concrete sizes (built-in Azure sizes and
//! operator-defined ones), supported alternatives for a size whose family
//! does not support Trusted Launch, and vCPU quotas per family.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, FleetError};

/// The type of workload a family is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SizeType {
    /// General purpose.
    GeneralPurpose,
    /// Compute optimized.
    ComputeOptimized,
    /// Memory optimized.
    MemoryOptimized,
    /// Storage optimized.
    StorageOptimized,
    /// GPU.
    Gpu,
    /// High-performance computing.
    Hpc,
}

/// A family's (or size's) Trusted Launch support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrustedLaunchSupport {
    /// Supported.
    Supported,
    /// Not supported yet.
    CurrentlyNotSupported,
    /// Not supported: the family has no Gen2 (UEFI) support.
    NotSupportedNoGen2,
}

impl TrustedLaunchSupport {
    /// How it reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Supported => "supports Trusted Launch",
            Self::CurrentlyNotSupported => "does not support Trusted Launch currently",
            Self::NotSupportedNoGen2 => {
                "does not support Trusted Launch (it has no Generation 2 support)"
            }
        }
    }
}

/// A row of the family table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// Family name as in Azure's tables (`Dsv3`).
    pub name: &'static str,
    /// Its type.
    pub size_type: SizeType,
    /// Its support.
    pub support: TrustedLaunchSupport,
}

macro_rules! families {
    ($($t:ident $s:ident [$($n:literal),* $(,)?];)*) => {
        &[$($(Family { name: $n, size_type: SizeType::$t, support: TrustedLaunchSupport::$s },)*)*]
    };
}

/// The seed's family table. `Dsv2` is both general purpose and memory
/// optimized, so it has two rows.
pub const FAMILIES: &[Family] = families! {
    GeneralPurpose Supported ["B", "DCsv2", "DCsv3", "DCdsv3", "Dv4", "Dsv4", "Dsv3", "Dsv2",
        "Dav4", "Dasv4", "Ddv4", "Ddsv4", "Dv5", "Dsv5", "Ddv5", "Ddsv5", "Dasv5", "Dadsv5",
        "Dlsv5", "Dldsv5"];
    GeneralPurpose CurrentlyNotSupported ["Dpsv5", "Dpdsv5", "Dplsv5", "Dpldsv5"];
    GeneralPurpose NotSupportedNoGen2 ["Av2", "Dv2", "Dv3"];
    ComputeOptimized Supported ["FX", "Fsv2"];
    MemoryOptimized Supported ["Dsv2", "Esv3", "Ev4", "Esv4", "Edv4", "Edsv4", "Eav4", "Easv4",
        "Easv5", "Eadsv5", "Ebsv5", "Ebdsv5", "Edv5", "Edsv5"];
    MemoryOptimized CurrentlyNotSupported ["Epsv5", "Epdsv5", "M", "Msv2",
        "Mdsv2 Medium Memory", "Mv2"];
    MemoryOptimized NotSupportedNoGen2 ["Ev3"];
    StorageOptimized Supported ["Lsv2", "Lsv3", "Lasv3"];
    Gpu Supported ["NCv2", "NCv3", "NCasT4_v3", "NVv3", "NVv4", "NDv2", "NC_A100_v4",
        "NVadsA10 v5"];
    Gpu CurrentlyNotSupported ["NDasrA100_v4", "NDm_A100_v4"];
    Gpu NotSupportedNoGen2 ["NC", "NV", "NP"];
    Hpc Supported ["HB", "HBv2", "HBv3", "HBv4", "HC", "HX"];
};

/// The first row of a family (case-insensitive).
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// A concrete size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSize {
    /// Name (`Standard_D2s_v3`).
    pub name: String,
    /// Family (`Dsv3`), also the quota key.
    pub family: String,
    /// Type.
    pub size_type: SizeType,
    /// vCPUs.
    #[serde(rename = "vCPUs")]
    pub vcpus: u32,
    /// Memory, MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Trusted Launch support.
    pub trusted_launch: TrustedLaunchSupport,
}

impl VmSize {
    /// Trusted Launch VMs may have this size.
    pub fn supports_trusted_launch(&self) -> bool {
        self.trusted_launch == TrustedLaunchSupport::Supported
    }

    /// The size belongs to type `t` (through any of its family's rows).
    fn is_of_type(&self, t: SizeType) -> bool {
        self.size_type == t
            || FAMILIES
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(&self.family) && f.size_type == t)
    }
}

/// An operator-defined size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SizeDefinition {
    /// Name.
    pub name: String,
    /// Family (a table family or the operator's own).
    pub family: String,
    /// vCPUs (1..=[`MAX_VCPUS`]).
    #[serde(rename = "vCPUs")]
    pub vcpus: u32,
    /// Memory, MiB ([`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`]).
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Trusted Launch VMs may have it.
    pub trusted_launch_supported: bool,
    /// Type (default: the family's, or general purpose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_type: Option<SizeType>,
}

/// Most vCPUs of an operator-defined size (the runtime's limit).
pub const MAX_VCPUS: u32 = 64;
/// Least memory of an operator-defined size, MiB (the runtime's limit).
pub const MIN_MEMORY_MIB: u64 = 256;
/// Most memory of an operator-defined size, MiB (the runtime's limit).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

const GIB: u64 = 1024;

/// Built-in sizes: (name, family, vCPUs, memory MiB), Azure's figures.
const BUILT_IN: &[(&str, &str, u32, u64)] = &[
    ("Standard_B1s", "B", 1, GIB),
    ("Standard_B1ms", "B", 1, 2 * GIB),
    ("Standard_B2s", "B", 2, 4 * GIB),
    ("Standard_B2ms", "B", 2, 8 * GIB),
    ("Standard_B4ms", "B", 4, 16 * GIB),
    ("Standard_D2s_v3", "Dsv3", 2, 8 * GIB),
    ("Standard_D4s_v3", "Dsv3", 4, 16 * GIB),
    ("Standard_D8s_v3", "Dsv3", 8, 32 * GIB),
    ("Standard_D2s_v4", "Dsv4", 2, 8 * GIB),
    ("Standard_D4s_v4", "Dsv4", 4, 16 * GIB),
    ("Standard_D2s_v5", "Dsv5", 2, 8 * GIB),
    ("Standard_D4s_v5", "Dsv5", 4, 16 * GIB),
    ("Standard_D8s_v5", "Dsv5", 8, 32 * GIB),
    ("Standard_D2_v5", "Dv5", 2, 8 * GIB),
    ("Standard_D4_v5", "Dv5", 4, 16 * GIB),
    ("Standard_DS1_v2", "Dsv2", 1, 3584),
    ("Standard_DS2_v2", "Dsv2", 2, 7 * GIB),
    ("Standard_DS3_v2", "Dsv2", 4, 14 * GIB),
    ("Standard_E2s_v3", "Esv3", 2, 16 * GIB),
    ("Standard_E4s_v3", "Esv3", 4, 32 * GIB),
    ("Standard_E2ds_v5", "Edsv5", 2, 16 * GIB),
    ("Standard_F2s_v2", "Fsv2", 2, 4 * GIB),
    ("Standard_F4s_v2", "Fsv2", 4, 8 * GIB),
    ("Standard_F8s_v2", "Fsv2", 8, 16 * GIB),
    // Not supported: what the seed workflow resizes away from.
    ("Standard_A1_v2", "Av2", 1, 2 * GIB),
    ("Standard_A2_v2", "Av2", 2, 4 * GIB),
    ("Standard_A4_v2", "Av2", 4, 8 * GIB),
    ("Standard_D1_v2", "Dv2", 1, 3584),
    ("Standard_D2_v2", "Dv2", 2, 7 * GIB),
    ("Standard_D3_v2", "Dv2", 4, 14 * GIB),
    ("Standard_D2_v3", "Dv3", 2, 8 * GIB),
    ("Standard_D4_v3", "Dv3", 4, 16 * GIB),
    ("Standard_D8_v3", "Dv3", 8, 32 * GIB),
    ("Standard_E2_v3", "Ev3", 2, 16 * GIB),
    ("Standard_E4_v3", "Ev3", 4, 32 * GIB),
    ("Standard_D2ps_v5", "Dpsv5", 2, 8 * GIB),
];

/// The sizes VMs and scale sets may have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeCatalog {
    sizes: Vec<VmSize>,
}

impl Default for SizeCatalog {
    fn default() -> Self {
        Self::built_in()
    }
}

impl SizeCatalog {
    /// The built-in Azure sizes.
    pub fn built_in() -> Self {
        let sizes = BUILT_IN
            .iter()
            .filter_map(|&(name, fam, vcpus, memory_mib)| {
                let f = family(fam)?;
                Some(VmSize {
                    name: name.to_owned(),
                    family: f.name.to_owned(),
                    size_type: f.size_type,
                    vcpus,
                    memory_mib,
                    trusted_launch: f.support,
                })
            })
            .collect();
        Self { sizes }
    }

    /// No sizes at all (operators who define their own only).
    pub fn empty() -> Self {
        Self { sizes: Vec::new() }
    }

    /// Every size.
    pub fn sizes(&self) -> &[VmSize] {
        &self.sizes
    }

    /// A size by name, case-insensitive as in Azure.
    pub fn get(&self, name: &str) -> Option<&VmSize> {
        self.sizes
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Adds an operator-defined size; `Conflict` if the name is taken,
    /// `InvalidParameter` for a bad name, vCPU count or memory. An operator
    /// may declare support for a family the table says is unsupported: it
    /// is their hardware and firmware.
    pub fn define(&mut self, def: SizeDefinition) -> Result<VmSize, FleetError> {
        let name_ok = (1..=64).contains(&def.name.len())
            && def
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The size name '{}' is invalid: use 1 to 64 letters, digits, '_' and '-'.",
                    def.name
                ),
            )
            .at("name"));
        }
        if def.family.is_empty() || def.family.len() > 64 {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                "The size family must be 1 to 64 characters.",
            )
            .at("family"));
        }
        if !(1..=MAX_VCPUS).contains(&def.vcpus) {
            return Err(FleetError::out_of_range("vCPUs", def.vcpus, 1, MAX_VCPUS));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&def.memory_mib) {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The value {} of parameter 'memoryMiB' is out of range. The value must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}, inclusive.",
                    def.memory_mib
                ),
            )
            .at("memoryMiB"));
        }
        if self.get(&def.name).is_some() {
            return Err(FleetError::new(
                ErrorCode::Conflict,
                format!("The size '{}' already exists.", def.name),
            )
            .at("name"));
        }
        let known = family(&def.family);
        let size = VmSize {
            name: def.name,
            family: known.map_or(def.family, |f| f.name.to_owned()),
            size_type: def
                .size_type
                .or(known.map(|f| f.size_type))
                .unwrap_or(SizeType::GeneralPurpose),
            vcpus: def.vcpus,
            memory_mib: def.memory_mib,
            // The operator's word on Trusted Launch; a table family without
            // Gen2 keeps that (its sizes cannot boot Gen2 images at all).
            trusted_launch: match (def.trusted_launch_supported, known.map(|f| f.support)) {
                (true, _) => TrustedLaunchSupport::Supported,
                (false, Some(TrustedLaunchSupport::NotSupportedNoGen2)) => {
                    TrustedLaunchSupport::NotSupportedNoGen2
                }
                (false, _) => TrustedLaunchSupport::CurrentlyNotSupported,
            },
        };
        self.sizes.push(size.clone());
        Ok(size)
    }

    /// Sizes of a Trusted Launch supported family, of `size`'s type, with
    /// its vCPU count (or, if there is none, the nearest count, larger
    /// first), closest memory first.
    pub fn supported_alternatives(&self, size: &VmSize) -> Vec<&VmSize> {
        let candidates: Vec<&VmSize> = self
            .sizes
            .iter()
            .filter(|s| {
                s.supports_trusted_launch()
                    && s.is_of_type(size.size_type)
                    && !s.name.eq_ignore_ascii_case(&size.name)
            })
            .collect();
        let distance = |s: &VmSize| {
            let d = s.vcpus.abs_diff(size.vcpus);
            // Among equal distances, more vCPUs first.
            (d, s.vcpus < size.vcpus)
        };
        let Some(best) = candidates.iter().map(|s| distance(s)).min() else {
            return Vec::new();
        };
        let mut out: Vec<&VmSize> = candidates
            .into_iter()
            .filter(|s| distance(s) == best)
            .collect();
        // The same series first, of the same generation first (Dv3 ->
        // Dsv3, then Dv5..., then B), then the closest memory, then by name.
        let series = |family: &str| -> String {
            family
                .chars()
                .take_while(char::is_ascii_uppercase)
                .collect()
        };
        let generation = |family: &str| family.rsplit_once('v').map(|(_, g)| g.to_owned());
        let own = (series(&size.family), generation(&size.family));
        let rank = |s: &VmSize| (series(&s.family) != own.0, generation(&s.family) != own.1);
        out.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| {
                    a.memory_mib
                        .abs_diff(size.memory_mib)
                        .cmp(&b.memory_mib.abs_diff(size.memory_mib))
                })
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }
}

/// vCPU quota per family (`family -> limit`); a family without an entry
/// is unlimited. Keys are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    limits: BTreeMap<String, u32>,
}

impl Quotas {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a family's limit.
    pub fn set(&mut self, family: &str, limit: u32) {
        self.limits.insert(family.to_ascii_lowercase(), limit);
    }

    /// A family's limit, if it has one.
    pub fn limit(&self, family: &str) -> Option<u32> {
        self.limits.get(&family.to_ascii_lowercase()).copied()
    }
}

/// vCPUs in use per family (`family -> used`), as the caller counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    used: BTreeMap<String, u32>,
}

impl Usage {
    /// Nothing in use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a family's usage.
    pub fn set(&mut self, family: &str, used: u32) {
        self.used.insert(family.to_ascii_lowercase(), used);
    }

    /// Adds vCPUs to a family's usage (saturating).
    pub fn add(&mut self, family: &str, vcpus: u32) {
        let e = self.used.entry(family.to_ascii_lowercase()).or_insert(0);
        *e = e.saturating_add(vcpus);
    }

    /// A family's usage.
    pub fn used(&self, family: &str) -> u32 {
        self.used
            .get(&family.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

/// Checks that `additional` vCPUs of `family` fit in `limit` given `used`;
/// Azure's `OperationNotAllowed` quota error if not.
pub fn check_quota(family: &str, used: u32, additional: u32, limit: u32) -> Result<(), FleetError> {
    let needed = u64::from(used).saturating_add(u64::from(additional));
    if needed <= u64::from(limit) {
        return Ok(());
    }
    let over = needed.saturating_sub(u64::from(limit));
    Err(FleetError::new(
        ErrorCode::OperationNotAllowed,
        format!(
            "Operation could not be completed as it results in exceeding approved {family} Family Cores quota. Additional details - Current Limit: {limit}, Current Usage: {used}, Additional Required: {additional}, (Minimum) New Limit Required: {needed}. Ask the operator to raise the {family} family's vCPU quota to at least {needed}, or free {over} vCPUs of it."
        ),
    ))
}

/// [`check_quota`] against `quotas` and `usage` (no limit: no check).
pub fn check_quotas(
    quotas: &Quotas,
    usage: &Usage,
    family: &str,
    additional: u32,
) -> Result<(), FleetError> {
    match quotas.limit(family) {
        None => Ok(()),
        Some(limit) => check_quota(family, usage.used(family), additional, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_catalog() {
        assert_eq!(
            family("dsv3").unwrap().support,
            TrustedLaunchSupport::Supported
        );
        assert_eq!(
            family("Dv3").unwrap().support,
            TrustedLaunchSupport::NotSupportedNoGen2
        );
        assert_eq!(FAMILIES.iter().filter(|f| f.name == "Dsv2").count(), 2);
        let c = SizeCatalog::built_in();
        assert_eq!(c.sizes().len(), BUILT_IN.len());
        let d2 = c.get("standard_d2_v3").unwrap();
        let alts: Vec<_> = c
            .supported_alternatives(d2)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            alts,
            // Same series and generation first, then the same series,
            // then other series of the type.
            [
                "Standard_D2s_v3",
                "Standard_D2_v5",
                "Standard_D2s_v4",
                "Standard_D2s_v5",
                "Standard_DS2_v2",
                "Standard_B2ms",
                "Standard_B2s"
            ]
        );
        let e2 = c.get("Standard_E2_v3").unwrap();
        let alts: Vec<_> = c
            .supported_alternatives(e2)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            alts,
            ["Standard_E2s_v3", "Standard_E2ds_v5", "Standard_DS2_v2"]
        );
    }

    #[test]
    fn quota() {
        assert!(check_quota("Dsv3", 8, 2, 10).is_ok());
        let e = check_quota("Dsv3", 8, 4, 10).unwrap_err();
        assert_eq!(e.code, ErrorCode::OperationNotAllowed);
        assert!(e.message.contains("Current Limit: 10, Current Usage: 8, Additional Required: 4, (Minimum) New Limit Required: 12."));
        assert!(check_quota("X", u32::MAX, u32::MAX, u32::MAX).is_err());
    }
}
