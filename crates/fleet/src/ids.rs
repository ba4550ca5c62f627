//! Resource ids and names: ARM ids of VMs, scale sets and their
//! instances (parsed with a checked cursor, case-insensitive like ARM),
//! and Azure's naming rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ErrorCode, FleetError};
use crate::image::OsType;
use crate::resources::{SCALE_SET_TYPE, SCALE_SET_VM_TYPE, VM_TYPE};

/// Why a resource id does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// It does not start with `/`.
    #[error("a resource id starts with '/subscriptions/'")]
    NotAbsolute,
    /// A fixed segment is missing or different.
    #[error("segment {position}: expected '{expected}', found '{found}'")]
    Segment {
        /// 0-based segment index after the leading `/`.
        position: usize,
        /// The keyword expected there.
        expected: &'static str,
        /// What is there (empty when the id ends early).
        found: String,
    },
    /// A name segment is not a valid name.
    #[error("segment {position}: '{value}' is not a valid {what} ({rule})")]
    Name {
        /// 0-based segment index.
        position: usize,
        /// What the segment names.
        what: &'static str,
        /// The segment.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Segments after the last expected one.
    #[error("unexpected trailing segments '{0}'")]
    Trailing(String),
}

impl IdError {
    /// The `InvalidParameter` error for `id` at `target`.
    pub fn to_fleet_error(&self, id: &str, target: &str) -> FleetError {
        FleetError::new(
            ErrorCode::InvalidParameter,
            format!("The resource id '{id}' is invalid: {self}."),
        )
        .at(target)
    }
}

/// A checked cursor over an id's segments.
pub(crate) struct Segments<'a> {
    parts: std::iter::Enumerate<std::str::Split<'a, char>>,
    rest_of: &'a str,
}

impl<'a> Segments<'a> {
    /// Starts after the leading `/`.
    pub(crate) fn new(id: &'a str) -> Result<Self, IdError> {
        let rest = id.strip_prefix('/').ok_or(IdError::NotAbsolute)?;
        Ok(Self {
            parts: rest.split('/').enumerate(),
            rest_of: rest,
        })
    }

    /// The next segment must be `keyword` (ASCII case-insensitive, as ARM).
    pub(crate) fn keyword(&mut self, keyword: &'static str) -> Result<(), IdError> {
        let (position, found) = self.parts.next().unwrap_or((usize::MAX, ""));
        if found.eq_ignore_ascii_case(keyword) {
            Ok(())
        } else {
            Err(IdError::Segment {
                position: if position == usize::MAX { 0 } else { position },
                expected: keyword,
                found: found.to_owned(),
            })
        }
    }

    /// The next segment is a name checked by `check`.
    pub(crate) fn name(
        &mut self,
        what: &'static str,
        check: fn(&str) -> Result<(), &'static str>,
    ) -> Result<String, IdError> {
        let (position, value) = self.parts.next().unwrap_or((0, ""));
        check(value).map_err(|rule| IdError::Name {
            position,
            what,
            value: value.to_owned(),
            rule,
        })?;
        Ok(value.to_owned())
    }

    /// Another segment follows.
    pub(crate) fn has_more(&self) -> bool {
        self.parts.clone().next().is_some()
    }

    /// No segment may follow.
    pub(crate) fn end(mut self) -> Result<(), IdError> {
        match self.parts.next() {
            None => Ok(()),
            Some((position, _)) => {
                let rest = self
                    .rest_of
                    .split('/')
                    .skip(position)
                    .collect::<Vec<_>>()
                    .join("/");
                Err(IdError::Trailing(rest))
            }
        }
    }

    /// `subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute`.
    pub(crate) fn compute_prefix(&mut self) -> Result<(String, String), IdError> {
        self.keyword("subscriptions")?;
        let sub = self.name("subscription", subscription_rule)?;
        self.keyword("resourceGroups")?;
        let rg = self.name("resource group name", resource_group_rule)?;
        self.keyword("providers")?;
        self.keyword("Microsoft.Compute")?;
        Ok((sub, rg))
    }
}

fn subscription_rule(s: &str) -> Result<(), &'static str> {
    let ok =
        (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(())
        .ok_or("1 to 64 letters, digits and hyphens, usually a GUID")
}

fn resource_group_rule(s: &str) -> Result<(), &'static str> {
    check_resource_group_name(s)
        .map_err(|_| "1 to 90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'")
}

fn vm_name_rule(s: &str) -> Result<(), &'static str> {
    name_rule(s, OsType::Linux.max_name_len())
}

fn instance_id_rule(s: &str) -> Result<(), &'static str> {
    name_rule(s, 64)
}

/// The rule shared by VM and scale set names (Azure: no spaces, control
/// characters or `~ ! @ # $ % ^ & * ( ) = + _ [ ] { } \ | ; : . ' " , < >
/// / ?`; not ending with a hyphen). We accept ASCII letters, digits and
/// hyphens only: what is left of Azure's rule without non-ASCII letters.
fn name_rule(s: &str, max: usize) -> Result<(), &'static str> {
    let ok = (1..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.ends_with('-');
    ok.then_some(()).ok_or(if max == 15 {
        "1 to 15 letters, digits and hyphens, not ending with a hyphen"
    } else {
        "1 to 64 letters, digits and hyphens, not ending with a hyphen"
    })
}

/// Checks a VM or scale set name: 1 to 64 (Linux) or 15 (Windows) ASCII
/// letters, digits and hyphens, not ending with a hyphen. Names are
/// case-insensitive and case-preserving, as in Azure; the orchestrator maps
/// them to the runtime's lowercase names.
pub fn check_vm_name(name: &str, os: OsType, target: &str) -> Result<(), FleetError> {
    name_rule(name, os.max_name_len()).map_err(|rule| {
        FleetError::new(
            ErrorCode::InvalidParameter,
            format!("The resource name '{name}' is invalid: a {os} virtual machine or scale set name is {rule}."),
        )
        .at(target)
    })
}

/// Checks a resource group name (Azure: 1 to 90 characters of letters,
/// digits, underscores, hyphens, periods and parentheses, not ending with a
/// period; we accept ASCII only).
pub fn check_resource_group_name(name: &str) -> Result<(), FleetError> {
    let ok = (1..=90).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.()".contains(&b))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(FleetError::new(
            ErrorCode::InvalidParameter,
            format!("Resource group '{name}' is invalid: use 1 to 90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'."),
        )
        .at("name"))
    }
}

/// A Compute resource id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceId {
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}`.
    VirtualMachine {
        /// Subscription.
        subscription: String,
        /// Resource group.
        resource_group: String,
        /// VM name.
        name: String,
    },
    /// `.../virtualMachineScaleSets/{name}`.
    ScaleSet {
        /// Subscription.
        subscription: String,
        /// Resource group.
        resource_group: String,
        /// Scale set name.
        name: String,
    },
    /// `.../virtualMachineScaleSets/{name}/virtualMachines/{instanceId}`.
    ScaleSetVm {
        /// Subscription.
        subscription: String,
        /// Resource group.
        resource_group: String,
        /// Scale set name.
        scale_set: String,
        /// Instance id (`"0"`, `"1"`, ... in Uniform mode).
        instance_id: String,
    },
}

impl ResourceId {
    /// Subscription.
    pub fn subscription(&self) -> &str {
        match self {
            Self::VirtualMachine { subscription, .. }
            | Self::ScaleSet { subscription, .. }
            | Self::ScaleSetVm { subscription, .. } => subscription,
        }
    }

    /// Resource group.
    pub fn resource_group(&self) -> &str {
        match self {
            Self::VirtualMachine { resource_group, .. }
            | Self::ScaleSet { resource_group, .. }
            | Self::ScaleSetVm { resource_group, .. } => resource_group,
        }
    }

    /// The last segment: the VM, scale set or instance name.
    pub fn name(&self) -> &str {
        match self {
            Self::VirtualMachine { name, .. } | Self::ScaleSet { name, .. } => name,
            Self::ScaleSetVm { instance_id, .. } => instance_id,
        }
    }

    /// The resource type (`Microsoft.Compute/virtualMachines`, ...).
    pub fn resource_type(&self) -> &'static str {
        match self {
            Self::VirtualMachine { .. } => VM_TYPE,
            Self::ScaleSet { .. } => SCALE_SET_TYPE,
            Self::ScaleSetVm { .. } => SCALE_SET_VM_TYPE,
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/",
            self.subscription(),
            self.resource_group()
        )?;
        match self {
            Self::VirtualMachine { name, .. } => write!(f, "virtualMachines/{name}"),
            Self::ScaleSet { name, .. } => write!(f, "virtualMachineScaleSets/{name}"),
            Self::ScaleSetVm {
                scale_set,
                instance_id,
                ..
            } => write!(
                f,
                "virtualMachineScaleSets/{scale_set}/virtualMachines/{instance_id}"
            ),
        }
    }
}

impl FromStr for ResourceId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut seg = Segments::new(s)?;
        let (subscription, resource_group) = seg.compute_prefix()?;
        let kind = seg.name("resource type", |t| {
            (t.eq_ignore_ascii_case("virtualMachines")
                || t.eq_ignore_ascii_case("virtualMachineScaleSets"))
            .then_some(())
            .ok_or("virtualMachines or virtualMachineScaleSets")
        })?;
        let name = seg.name("name", vm_name_rule)?;
        let id = if kind.eq_ignore_ascii_case("virtualMachines") {
            Self::VirtualMachine {
                subscription,
                resource_group,
                name,
            }
        } else if seg.has_more() {
            seg.keyword("virtualMachines")?;
            let instance_id = seg.name("instance id", instance_id_rule)?;
            Self::ScaleSetVm {
                subscription,
                resource_group,
                scale_set: name,
                instance_id,
            }
        } else {
            Self::ScaleSet {
                subscription,
                resource_group,
                name,
            }
        };
        seg.end()?;
        Ok(id)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
