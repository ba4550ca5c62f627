//! Scale set upgrade policies (`upgradePolicy`): the mode and the rolling
//! upgrade policy with Azure's defaults and ranges.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, FleetError};

/// `upgradePolicy.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpgradeMode {
    /// Instances are updated only on request (`manualupgrade`,
    /// `update-instances --instance-ids`); new instances get the latest
    /// model. Azure's default.
    #[default]
    Manual,
    /// Every instance is updated at once, in no particular order.
    Automatic,
    /// Instances are updated in health-gated batches.
    Rolling,
}

impl UpgradeMode {
    /// The mode as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "Manual",
            Self::Automatic => "Automatic",
            Self::Rolling => "Rolling",
        }
    }
}

/// `upgradePolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// The mode.
    #[serde(default)]
    pub mode: UpgradeMode,
    /// The rolling upgrade policy (Rolling mode, and `rolling-upgrade
    /// start` in any mode); unset fields take Azure's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_upgrade_policy: Option<RollingUpgradePolicy>,
}

/// `upgradePolicy.rollingUpgradePolicy` as sent: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradePolicy {
    /// Most instances upgraded in one batch, percent of the scale set
    /// (5..=100, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_instance_percent: Option<u32>,
    /// Most instances that may be unhealthy, upgraded or not, checked
    /// before each batch (5..=100, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy_instance_percent: Option<u32>,
    /// Most upgraded instances that may be unhealthy, checked after each
    /// batch; above it the upgrade stops as Faulted (0..=100, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy_upgraded_instance_percent: Option<u32>,
    /// Wait between one batch's completion and the next batch, ISO 8601
    /// (default `PT0S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_time_between_batches: Option<String>,
    /// Upgrade unhealthy instances first (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prioritize_unhealthy_instances: Option<bool>,
    /// Batches may span availability zones (default false; one host here:
    /// accepted and recorded, it changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_cross_zone_upgrade: Option<bool>,
    /// Create each batch's replacements first and delete the old instances
    /// only once their replacements are healthy (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<bool>,
    /// On a policy breach, roll the failed instances back to their previous
    /// model (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_failed_instances_on_policy_breach: Option<bool>,
}

/// A rolling upgrade policy with every default applied and every range
/// checked: what the planner works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingPolicy {
    /// `maxBatchInstancePercent`.
    pub max_batch_instance_percent: u32,
    /// `maxUnhealthyInstancePercent`.
    pub max_unhealthy_instance_percent: u32,
    /// `maxUnhealthyUpgradedInstancePercent`.
    pub max_unhealthy_upgraded_instance_percent: u32,
    /// `pauseTimeBetweenBatches`, in seconds.
    pub pause_seconds: u64,
    /// `prioritizeUnhealthyInstances`.
    pub prioritize_unhealthy_instances: bool,
    /// `enableCrossZoneUpgrade`.
    pub enable_cross_zone_upgrade: bool,
    /// `maxSurge`.
    pub max_surge: bool,
    /// `rollbackFailedInstancesOnPolicyBreach`.
    pub rollback_failed_instances_on_policy_breach: bool,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        Self {
            max_batch_instance_percent: 20,
            max_unhealthy_instance_percent: 20,
            max_unhealthy_upgraded_instance_percent: 20,
            pause_seconds: 0,
            prioritize_unhealthy_instances: false,
            enable_cross_zone_upgrade: false,
            max_surge: false,
            rollback_failed_instances_on_policy_breach: false,
        }
    }
}

/// Longest `pauseTimeBetweenBatches` accepted: one day (ours; a longer
/// pause is almost certainly a unit mistake).
pub const MAX_PAUSE_SECONDS: u64 = 24 * 3600;

impl RollingUpgradePolicy {
    /// Applies Azure's defaults and checks every range; errors name the
    /// property (`rollingUpgradePolicy.maxBatchInstancePercent`).
    pub fn resolve(&self) -> Result<RollingPolicy, FleetError> {
        let d = RollingPolicy::default();
        let pct = |v: Option<u32>, default: u32, name: &str, min: u32| match v {
            None => Ok(default),
            Some(v) if (min..=100).contains(&v) => Ok(v),
            Some(v) => Err(FleetError::out_of_range(name, v, min, 100)
                .at(format!("rollingUpgradePolicy.{name}"))),
        };
        let pause_seconds = match &self.pause_time_between_batches {
            None => 0,
            Some(text) => {
                let s = parse_iso8601_duration(text).ok_or_else(|| {
                    FleetError::new(
                        ErrorCode::InvalidParameter,
                        format!(
                            "The value '{text}' of parameter 'pauseTimeBetweenBatches' is not a valid ISO 8601 duration (e.g. PT0S, PT30S, PT5M, PT1H)."
                        ),
                    )
                    .at("rollingUpgradePolicy.pauseTimeBetweenBatches")
                })?;
                if s > MAX_PAUSE_SECONDS {
                    return Err(FleetError::new(
                        ErrorCode::InvalidParameter,
                        format!(
                            "The value '{text}' of parameter 'pauseTimeBetweenBatches' is longer than the maximum of P1D."
                        ),
                    )
                    .at("rollingUpgradePolicy.pauseTimeBetweenBatches"));
                }
                s
            }
        };
        Ok(RollingPolicy {
            max_batch_instance_percent: pct(
                self.max_batch_instance_percent,
                d.max_batch_instance_percent,
                "maxBatchInstancePercent",
                5,
            )?,
            max_unhealthy_instance_percent: pct(
                self.max_unhealthy_instance_percent,
                d.max_unhealthy_instance_percent,
                "maxUnhealthyInstancePercent",
                5,
            )?,
            max_unhealthy_upgraded_instance_percent: pct(
                self.max_unhealthy_upgraded_instance_percent,
                d.max_unhealthy_upgraded_instance_percent,
                "maxUnhealthyUpgradedInstancePercent",
                0,
            )?,
            pause_seconds,
            prioritize_unhealthy_instances: self
                .prioritize_unhealthy_instances
                .unwrap_or(d.prioritize_unhealthy_instances),
            enable_cross_zone_upgrade: self
                .enable_cross_zone_upgrade
                .unwrap_or(d.enable_cross_zone_upgrade),
            max_surge: self.max_surge.unwrap_or(d.max_surge),
            rollback_failed_instances_on_policy_breach: self
                .rollback_failed_instances_on_policy_breach
                .unwrap_or(d.rollback_failed_instances_on_policy_breach),
        })
    }
}

impl UpgradePolicy {
    /// The rolling policy in force: the one set, with defaults, or all
    /// defaults.
    pub fn rolling(&self) -> Result<RollingPolicy, FleetError> {
        self.rolling_upgrade_policy
            .as_ref()
            .map_or(Ok(RollingPolicy::default()), RollingUpgradePolicy::resolve)
    }
}

/// Parses an ISO 8601 duration of days, hours, minutes and whole seconds
/// (`P1D`, `PT0S`, `PT1H30M`, `P1DT2H`) into seconds. Years, months, weeks
/// and fractions are refused (their length is ambiguous or below our
/// resolution). `None` if it is not one, or overflows.
pub fn parse_iso8601_duration(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('P')?;
    if rest.is_empty() || text.len() > 64 {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total: u64 = 0;
    let mut add = |part: &str, units: &[(char, u64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for ch in part.chars() {
            if ch.is_ascii_digit() {
                number.push(ch);
                continue;
            }
            // Units must come in order, each at most once.
            let (_, scale) = allowed.by_ref().find(|(u, _)| *u == ch)?;
            if number.is_empty() {
                return None;
            }
            let n: u64 = number.parse().ok()?;
            total = total.checked_add(n.checked_mul(*scale)?)?;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    add(date, &[('D', 86_400)])?;
    if let Some(t) = time {
        add(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (t, s) in [
            ("PT0S", 0),
            ("PT30S", 30),
            ("PT5M", 300),
            ("PT1H30M", 5_400),
            ("P1D", 86_400),
            ("P1DT2H", 93_600),
            ("PT1H0M5S", 3_605),
        ] {
            assert_eq!(parse_iso8601_duration(t), Some(s), "{t}");
        }
        for t in [
            "",
            "P",
            "PT",
            "T5M",
            "PT5",
            "PT5X",
            "P1Y",
            "P1W",
            "PT1.5S",
            "PT5M1H",
            "PT5M5M",
            "PTM",
            "5M",
            "P99999999999999999999D",
            "-PT5M",
        ] {
            assert_eq!(parse_iso8601_duration(t), None, "{t}");
        }
    }

    #[test]
    fn defaults_and_ranges() {
        assert_eq!(
            RollingUpgradePolicy::default().resolve(),
            Ok(RollingPolicy::default())
        );
        let p = RollingUpgradePolicy {
            max_batch_instance_percent: Some(4),
            ..Default::default()
        };
        let e = p.resolve().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameter);
        assert_eq!(
            e.message,
            "The value 4 of parameter 'maxBatchInstancePercent' is out of range. The value must be between 5 and 100, inclusive."
        );
        assert_eq!(
            e.target.as_deref(),
            Some("rollingUpgradePolicy.maxBatchInstancePercent")
        );
        let p = RollingUpgradePolicy {
            max_unhealthy_upgraded_instance_percent: Some(0),
            pause_time_between_batches: Some("PT2M".into()),
            max_surge: Some(true),
            ..Default::default()
        };
        let r = p.resolve().unwrap();
        assert_eq!(r.max_unhealthy_upgraded_instance_percent, 0);
        assert_eq!(r.pause_seconds, 120);
        assert!(r.max_surge);
        let p = RollingUpgradePolicy {
            pause_time_between_batches: Some("P2D".into()),
            ..Default::default()
        };
        assert!(p.resolve().is_err());
    }
}
