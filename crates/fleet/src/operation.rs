//! Which long-running operation a scale set's change needs: a pure
//! function of the set before and after, so the HTTP layer only carries
//! out what it decides.

use crate::policy::UpgradeMode;
use crate::resources::ScaleSet;

/// The operation that brings a scale set's instances to its new state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOperation {
    /// Create instances up to the capacity, or remove those above it (a
    /// new set, a capacity change).
    Reconcile,
    /// Every instance to the latest model at once (upgrade policy
    /// Automatic).
    UpgradeAll,
    /// Health-gated batches (upgrade policy Rolling).
    RollingUpgrade,
}

/// What a change from `old` (absent: a new set) to `new` runs: a new set
/// or a capacity change reconciles; a new model version upgrades the
/// instances as the upgrade policy says (Manual: none until asked); no
/// change runs nothing.
pub fn for_set_change(old: Option<&ScaleSet>, new: &ScaleSet) -> Option<SetOperation> {
    match old {
        None => Some(SetOperation::Reconcile),
        Some(o) if o.sku.capacity != new.sku.capacity => Some(SetOperation::Reconcile),
        Some(o) if o.properties.model_version != new.properties.model_version => {
            match new.upgrade_policy().mode {
                UpgradeMode::Manual => None,
                UpgradeMode::Automatic => Some(SetOperation::UpgradeAll),
                UpgradeMode::Rolling => Some(SetOperation::RollingUpgrade),
            }
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(capacity: u32, model_version: u64, mode: UpgradeMode) -> ScaleSet {
        serde_json::from_value(serde_json::json!({
            "name": "web", "location": "local", "type": "Microsoft.Compute/virtualMachineScaleSets",
            "sku": {"name": "Standard_B1s", "capacity": capacity},
            "properties": {"upgradePolicy": {"mode": format!("{mode:?}")},
                "virtualMachineProfile": {"storageProfile": {}},
                "modelVersion": model_version}
        }))
        .unwrap()
    }

    fn mode() -> impl Strategy<Value = UpgradeMode> {
        prop_oneof![
            Just(UpgradeMode::Manual),
            Just(UpgradeMode::Automatic),
            Just(UpgradeMode::Rolling)
        ]
    }

    proptest! {
        /// A new set always reconciles; a capacity change always
        /// reconciles (the model reaches new instances as they are made);
        /// a model change alone follows the policy; nothing else runs.
        #[test]
        fn the_operation_follows_capacity_model_and_policy(
            c0 in 0u32..5, c1 in 0u32..5, v0 in 0u64..3, v1 in 0u64..3,
            m0 in mode(), m1 in mode(),
        ) {
            let (old, new) = (set(c0, v0, m0), set(c1, v1, m1));
            prop_assert_eq!(for_set_change(None, &new), Some(SetOperation::Reconcile));
            let got = for_set_change(Some(&old), &new);
            let want = if c0 != c1 {
                Some(SetOperation::Reconcile)
            } else if v0 != v1 {
                match m1 {
                    UpgradeMode::Manual => None,
                    UpgradeMode::Automatic => Some(SetOperation::UpgradeAll),
                    UpgradeMode::Rolling => Some(SetOperation::RollingUpgrade),
                }
            } else {
                None
            };
            prop_assert_eq!(got, want);
        }
    }
}
