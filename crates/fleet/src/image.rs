//! Gallery images: definitions (`osType`, `hyperVGeneration`, `features`
//! with `SecurityType`, `identifier`), versions, the `imageReference` that
//! names a version, and a catalog to resolve references against.
//!
//! A definition's `SecurityType` feature says which security types its VMs
//! may have: absent = Standard only; `TrustedLaunchSupported` = Standard or
//! TrustedLaunch; `TrustedLaunch` = TrustedLaunch only; and the confidential
//! values, which the model keeps so definitions parse (validation refuses
//! ConfidentialVM VMs).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, FleetError};
use crate::ids::{IdError, Segments};
use crate::security::SecurityType;

/// `osType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OsType {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

impl OsType {
    /// Longest VM name Azure allows for this OS (15 on Windows: NetBIOS).
    pub fn max_name_len(self) -> usize {
        match self {
            Self::Linux => 64,
            Self::Windows => 15,
        }
    }
}

impl fmt::Display for OsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linux => "Linux",
            Self::Windows => "Windows",
        })
    }
}

/// `hyperVGeneration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HyperVGeneration {
    /// Legacy BIOS: no Secure Boot, no vTPM.
    V1,
    /// UEFI.
    V2,
}

/// The name of the feature that carries the security type.
pub const SECURITY_TYPE_FEATURE: &str = "SecurityType";

/// Values of the `SecurityType` feature of an image definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageSecurityType {
    /// Standard or TrustedLaunch VMs.
    TrustedLaunchSupported,
    /// TrustedLaunch VMs only.
    TrustedLaunch,
    /// Standard, TrustedLaunch or ConfidentialVM VMs.
    TrustedLaunchAndConfidentialVmSupported,
    /// Standard or ConfidentialVM VMs.
    ConfidentialVmSupported,
    /// ConfidentialVM VMs only.
    #[serde(rename = "ConfidentialVM")]
    ConfidentialVm,
}

impl ImageSecurityType {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrustedLaunchSupported => "TrustedLaunchSupported",
            Self::TrustedLaunch => "TrustedLaunch",
            Self::TrustedLaunchAndConfidentialVmSupported => {
                "TrustedLaunchAndConfidentialVmSupported"
            }
            Self::ConfidentialVmSupported => "ConfidentialVmSupported",
            Self::ConfidentialVm => "ConfidentialVM",
        }
    }

    /// Parses a feature value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::TrustedLaunchSupported,
            Self::TrustedLaunch,
            Self::TrustedLaunchAndConfidentialVmSupported,
            Self::ConfidentialVmSupported,
            Self::ConfidentialVm,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(value))
    }

    /// VMs of `t` may be made from an image with this value (or, for
    /// `None`, without the feature).
    pub fn allows(value: Option<Self>, t: SecurityType) -> bool {
        use SecurityType::{ConfidentialVm as C, Standard as S, TrustedLaunch as T};
        match value {
            None => t == S,
            Some(Self::TrustedLaunchSupported) => matches!(t, S | T),
            Some(Self::TrustedLaunch) => t == T,
            Some(Self::TrustedLaunchAndConfidentialVmSupported) => true,
            Some(Self::ConfidentialVmSupported) => matches!(t, S | C),
            Some(Self::ConfidentialVm) => t == C,
        }
    }
}

/// An entry of a definition's `features`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GalleryImageFeature {
    /// Feature name (`SecurityType`).
    pub name: String,
    /// Its value (`TrustedLaunchSupported`).
    pub value: String,
}

/// A definition's `identifier`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GalleryImageIdentifier {
    /// Publisher (`Canonical`).
    pub publisher: String,
    /// Offer (`0001-com-ubuntu-server-jammy`).
    pub offer: String,
    /// SKU (`22_04-lts-gen2`).
    pub sku: String,
}

/// A gallery image definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDefinition {
    /// Definition name.
    pub name: String,
    /// OS.
    pub os_type: OsType,
    /// Generation.
    pub hyper_v_generation: HyperVGeneration,
    /// Features (`SecurityType`, and others recorded as given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<GalleryImageFeature>,
    /// Publisher, offer and SKU.
    pub identifier: GalleryImageIdentifier,
}

impl ImageDefinition {
    /// The `SecurityType` feature's value; an unknown value is an error.
    pub fn security_feature(&self) -> Result<Option<ImageSecurityType>, FleetError> {
        let Some(f) = self
            .features
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(SECURITY_TYPE_FEATURE))
        else {
            return Ok(None);
        };
        ImageSecurityType::parse(&f.value).map(Some).ok_or_else(|| {
            FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The value '{}' of feature 'SecurityType' is not valid. Valid values are TrustedLaunchSupported, TrustedLaunch, TrustedLaunchAndConfidentialVmSupported, ConfidentialVmSupported and ConfidentialVM.",
                    f.value
                ),
            )
            .at("features")
        })
    }

    /// VMs of security type `t` may be made from this image (a V1 image
    /// allows Standard only, whatever its features say).
    pub fn allows(&self, t: SecurityType) -> bool {
        if self.hyper_v_generation == HyperVGeneration::V1 {
            return t == SecurityType::Standard;
        }
        ImageSecurityType::allows(self.security_feature().ok().flatten(), t)
    }

    /// Gen2 and TrustedLaunch allowed.
    pub fn trusted_launch_eligible(&self) -> bool {
        self.allows(SecurityType::TrustedLaunch)
    }

    /// Only TrustedLaunch VMs may be made from it.
    pub fn trusted_launch_only(&self) -> bool {
        self.hyper_v_generation == HyperVGeneration::V2
            && matches!(
                self.security_feature(),
                Ok(Some(ImageSecurityType::TrustedLaunch))
            )
    }

    /// Checks the definition itself: its name, a known `SecurityType`
    /// value, and no Trusted Launch or confidential value on a V1 image.
    pub fn validate(&self) -> Result<(), FleetError> {
        image_name_rule(&self.name).map_err(|rule| {
            FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The image definition name '{}' is invalid: use {rule}.",
                    self.name
                ),
            )
            .at("name")
        })?;
        if let Some(v) = self.security_feature()? {
            if self.hyper_v_generation == HyperVGeneration::V1 {
                return Err(FleetError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "The feature 'SecurityType' value '{}' requires hyperVGeneration 'V2'.",
                        v.as_str()
                    ),
                )
                .at("features"));
            }
        }
        Ok(())
    }
}

/// A gallery image version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVersion {
    /// `Major.Minor.Patch` (`1.0.0`).
    pub name: String,
    /// The name of the runtime image it was made from.
    pub source: String,
    /// Whether the guest attestation agent is installed in the image, as
    /// the platform read it from the image (`None`: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent: Option<bool>,
}

/// What the platform itself read from a version's image (its build or
/// import), checked against the definition the version is published
/// under: Azure trusts the publisher's flag; this verifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// The disk's generation.
    pub generation: HyperVGeneration,
    /// Whether the boot chain was verified to boot under Secure Boot.
    pub trusted_launch_supported: bool,
    /// Why not, when not (one line per key template).
    pub reasons: Vec<String>,
}

impl ImageDefinition {
    /// Refuses an image whose generation differs from the definition's,
    /// or that a Trusted Launch definition would launch although its boot
    /// chain was not verified to boot under Secure Boot.
    pub fn accepts(&self, source: &str, facts: &ImageFacts) -> Result<(), FleetError> {
        if facts.generation != self.hyper_v_generation {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The image '{source}' is a Hypervisor Generation '{}' disk; the image definition '{}' is Generation '{}'.",
                    gen_name(facts.generation),
                    self.name,
                    gen_name(self.hyper_v_generation)
                ),
            )
            .at("properties.source"));
        }
        if self.allows(SecurityType::TrustedLaunch) && !facts.trusted_launch_supported {
            let why = if facts.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", facts.reasons.join("; "))
            };
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The image '{source}' is not Trusted Launch capable: its boot chain would not boot under Secure Boot{why}. Publish it under a definition without the feature 'SecurityType' = 'TrustedLaunchSupported', or fix its boot chain.",
                ),
            )
            .at("properties.source"));
        }
        Ok(())
    }
}

fn gen_name(g: HyperVGeneration) -> &'static str {
    match g {
        HyperVGeneration::V1 => "1",
        HyperVGeneration::V2 => "2",
    }
}

/// `storageProfile.imageReference`: a gallery image version id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{g}/images/{def}/versions/{ver}`.
    pub id: String,
}

impl ImageReference {
    /// A reference to `id`.
    pub fn new(id: &GalleryImageVersionId) -> Self {
        Self { id: id.to_string() }
    }

    /// Parses the id; errors are `InvalidParameter` at `target`.
    pub fn parse(&self, target: &str) -> Result<GalleryImageVersionId, FleetError> {
        self.id
            .parse()
            .map_err(|e: IdError| e.to_fleet_error(&self.id, target))
    }

    /// Same image version (ids compare case-insensitively, as in ARM).
    pub fn same_as(&self, other: &ImageReference) -> bool {
        self.id.eq_ignore_ascii_case(&other.id)
    }
}

/// A parsed gallery image version id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GalleryImageVersionId {
    /// Subscription.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Gallery.
    pub gallery: String,
    /// Image definition.
    pub image: String,
    /// Version (`1.0.0`).
    pub version: String,
}

/// A gallery's full id.
pub fn gallery_id(subscription: &str, resource_group: &str, gallery: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/galleries/{gallery}"
    )
}

/// The gallery name of a catalog key: the key itself, or the last segment
/// of a full gallery id (whose shape is checked).
fn gallery_name(key: &str) -> Result<&str, FleetError> {
    if !key.starts_with('/') {
        return Ok(key);
    }
    let parts: Vec<&str> = key.split('/').collect();
    let shape = matches!(
        parts.as_slice(),
        ["", s, _, r, _, p, c, g, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && r.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && c.eq_ignore_ascii_case("Microsoft.Compute")
                && g.eq_ignore_ascii_case("galleries")
                && !name.is_empty()
    );
    match parts.last() {
        Some(name) if shape => Ok(name),
        _ => Err(FleetError::new(
            ErrorCode::InvalidParameter,
            format!("'{key}' is not a gallery id (/subscriptions/{{s}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/galleries/{{g}})."),
        )),
    }
}

fn gallery_name_rule(s: &str) -> Result<(), &'static str> {
    let ok = (1..=80).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b));
    ok.then_some(())
        .ok_or("1 to 80 letters, digits, '_' and '.'")
}

fn image_name_rule(s: &str) -> Result<(), &'static str> {
    let ok = (1..=80).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    ok.then_some(())
        .ok_or("1 to 80 letters, digits, '_', '-' and '.'")
}

/// Checks a version name: `Major.Minor.Patch`, each a 32-bit integer.
pub fn version_name_rule(s: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = s.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok()
        });
    ok.then_some(())
        .ok_or("Major.Minor.Patch, each a 32-bit integer")
}

impl fmt::Display for GalleryImageVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/galleries/{}/images/{}/versions/{}",
            self.subscription, self.resource_group, self.gallery, self.image, self.version
        )
    }
}

impl FromStr for GalleryImageVersionId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut seg = Segments::new(s)?;
        let (subscription, resource_group) = seg.compute_prefix()?;
        seg.keyword("galleries")?;
        let gallery = seg.name("gallery name", gallery_name_rule)?;
        seg.keyword("images")?;
        let image = seg.name("image definition name", image_name_rule)?;
        seg.keyword("versions")?;
        let version = seg.name("image version", version_name_rule)?;
        seg.end()?;
        Ok(Self {
            subscription,
            resource_group,
            gallery,
            image,
            version,
        })
    }
}

/// A definition in a gallery, with its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GalleryImage {
    /// The gallery's name.
    pub gallery: String,
    /// The definition.
    pub definition: ImageDefinition,
    /// Its versions.
    #[serde(default)]
    pub versions: Vec<ImageVersion>,
}

/// The image definitions and versions references resolve against. Gallery
/// and definition names match case-insensitively; the subscription and
/// resource group of a reference are the caller's to authorize (one
/// deployment, gallery names unique in it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCatalog {
    images: Vec<GalleryImage>,
}

impl ImageCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a definition to `gallery` after [`ImageDefinition::validate`];
    /// `Conflict` if the gallery already has one of that name.
    pub fn add_definition(
        &mut self,
        gallery: &str,
        def: ImageDefinition,
    ) -> Result<(), FleetError> {
        gallery_name_rule(gallery_name(gallery)?).map_err(|rule| {
            FleetError::new(
                ErrorCode::InvalidParameter,
                format!("The gallery name '{gallery}' is invalid: use {rule}."),
            )
        })?;
        def.validate()?;
        if self.find(gallery, &def.name).is_some() {
            return Err(FleetError::new(
                ErrorCode::Conflict,
                format!(
                    "The gallery '{gallery}' already has an image definition '{}'.",
                    def.name
                ),
            ));
        }
        self.images.push(GalleryImage {
            gallery: gallery.to_owned(),
            definition: def,
            versions: Vec::new(),
        });
        Ok(())
    }

    /// Adds a version to a definition.
    pub fn add_version(
        &mut self,
        gallery: &str,
        image: &str,
        version: ImageVersion,
    ) -> Result<(), FleetError> {
        version_name_rule(&version.name).map_err(|rule| {
            FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The image version name '{}' is invalid: use {rule}.",
                    version.name
                ),
            )
            .at("name")
        })?;
        let entry = self
            .images
            .iter_mut()
            .find(|g| {
                g.gallery.eq_ignore_ascii_case(gallery)
                    && g.definition.name.eq_ignore_ascii_case(image)
            })
            .ok_or_else(|| not_found(&format!("{gallery}/{image}")))?;
        if entry.versions.iter().any(|v| v.name == version.name) {
            return Err(FleetError::new(
                ErrorCode::Conflict,
                format!(
                    "The image definition '{image}' already has a version '{}'.",
                    version.name
                ),
            ));
        }
        entry.versions.push(version);
        Ok(())
    }

    /// A definition by gallery (as it was added: name or full id) and name.
    pub fn find(&self, gallery: &str, image: &str) -> Option<&GalleryImage> {
        self.images.iter().find(|g| {
            g.gallery.eq_ignore_ascii_case(gallery) && g.definition.name.eq_ignore_ascii_case(image)
        })
    }

    /// The definition a version id names: galleries added by full id
    /// match that id's subscription, resource group and gallery; those
    /// added by name match the name alone.
    fn find_for(&self, id: &GalleryImageVersionId) -> Option<&GalleryImage> {
        let full = gallery_id(&id.subscription, &id.resource_group, &id.gallery);
        self.images.iter().find(|g| {
            let gallery = if g.gallery.starts_with('/') {
                g.gallery.eq_ignore_ascii_case(&full)
            } else {
                g.gallery.eq_ignore_ascii_case(&id.gallery)
            };
            gallery && g.definition.name.eq_ignore_ascii_case(&id.image)
        })
    }

    /// All definitions.
    pub fn images(&self) -> &[GalleryImage] {
        &self.images
    }

    /// The definition and version a reference names; `ResourceNotFound` at
    /// `target` if there is none.
    pub fn resolve(
        &self,
        reference: &ImageReference,
        target: &str,
    ) -> Result<(&ImageDefinition, &ImageVersion), FleetError> {
        let id = reference.parse(target)?;
        let g = self
            .find_for(&id)
            .ok_or_else(|| not_found(&reference.id).at(target))?;
        let v = g
            .versions
            .iter()
            .find(|v| v.name == id.version)
            .ok_or_else(|| not_found(&reference.id).at(target))?;
        Ok((&g.definition, v))
    }
}

fn not_found(what: &str) -> FleetError {
    FleetError::new(
        ErrorCode::ResourceNotFound,
        format!("The gallery image '{what}' was not found."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(generation: HyperVGeneration, feature: Option<&str>) -> ImageDefinition {
        ImageDefinition {
            name: "ubuntu-22.04".into(),
            os_type: OsType::Linux,
            hyper_v_generation: generation,
            features: feature
                .map(|v| GalleryImageFeature {
                    name: "SecurityType".into(),
                    value: v.into(),
                })
                .into_iter()
                .collect(),
            identifier: GalleryImageIdentifier {
                publisher: "p".into(),
                offer: "o".into(),
                sku: "s".into(),
            },
        }
    }

    #[test]
    fn allows() {
        use HyperVGeneration::*;
        use SecurityType::*;
        let cases = [
            (V2, None, [true, false, false]),
            (V2, Some("TrustedLaunchSupported"), [true, true, false]),
            (V2, Some("TrustedLaunch"), [false, true, false]),
            (
                V2,
                Some("TrustedLaunchAndConfidentialVmSupported"),
                [true, true, true],
            ),
            (V2, Some("ConfidentialVmSupported"), [true, false, true]),
            (V2, Some("ConfidentialVM"), [false, false, true]),
            (V1, None, [true, false, false]),
        ];
        for (g, f, want) in cases {
            let d = def(g, f);
            let got = [
                d.allows(Standard),
                d.allows(TrustedLaunch),
                d.allows(ConfidentialVm),
            ];
            assert_eq!(got, want, "{g:?} {f:?}");
        }
        assert!(def(V1, Some("TrustedLaunchSupported")).validate().is_err());
        assert!(def(V2, Some("Bogus")).validate().is_err());
        assert!(def(V2, Some("trustedlaunchsupported")).trusted_launch_eligible());
    }

    #[test]
    fn version_ids() {
        let s = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/ubuntu-22.04/versions/1.0.0";
        let id: GalleryImageVersionId = s.parse().unwrap();
        assert_eq!(id.version, "1.0.0");
        assert_eq!(id.to_string(), s);
        for bad in [
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/u",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/u/versions/1.0",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g-1/images/u/versions/1.0.0",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/u/versions/1.0.99999999999",
        ] {
            assert!(bad.parse::<GalleryImageVersionId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_definition_accepts_only_images_whose_facts_agree() {
        let facts = |generation, tl: bool| ImageFacts {
            generation,
            trusted_launch_supported: tl,
            reasons: vec!["microsoft: ESP:/vmlinuz would be refused by shim (unsigned)".into()],
        };
        let tl = def(HyperVGeneration::V2, Some("TrustedLaunchSupported"));
        assert!(tl
            .accepts("img", &facts(HyperVGeneration::V2, true))
            .is_ok());
        let e = tl
            .accepts("img", &facts(HyperVGeneration::V2, false))
            .unwrap_err();
        assert!(
            e.message.contains("not Trusted Launch capable"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("refused by shim (unsigned)"),
            "{}",
            e.message
        );
        let e = tl
            .accepts("img", &facts(HyperVGeneration::V1, false))
            .unwrap_err();
        assert!(e.message.contains("Generation '1' disk"), "{}", e.message);
        // A definition without the feature allows Standard VMs only: any
        // Gen2 image will do.
        let std = def(HyperVGeneration::V2, None);
        assert!(std
            .accepts("img", &facts(HyperVGeneration::V2, false))
            .is_ok());
        let v1 = def(HyperVGeneration::V1, None);
        assert!(v1
            .accepts("img", &facts(HyperVGeneration::V1, false))
            .is_ok());
    }
}
