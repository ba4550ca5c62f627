//! The control crate's test fixture: one scale set `web` whose model
//! versions are Standard on image 1.0.0 (1, and 3: the rollback of 2) and
//! Trusted Launch on image 2.0.0 (2), the catalogs that resolve them, and
//! the store write the API would make.

#![allow(dead_code)]

use std::sync::Arc;

use serde_json::json;
use trustlaunch_control::orchestrator::Catalogs;
use trustlaunch_fleet::image::{ImageCatalog, ImageDefinition, ImageVersion};
use trustlaunch_fleet::resources::{ScaleSet, SCALE_SET_TYPE};
use trustlaunch_fleet::sizes::SizeCatalog;
use trustlaunch_store::{NewResource, Precondition, Store};

pub const SET: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web";

pub fn catalogs() -> Arc<Catalogs> {
    let mut images = ImageCatalog::new();
    let def: ImageDefinition = serde_json::from_value(json!({
        "name": "tiny", "osType": "Linux", "hyperVGeneration": "V2",
        "features": [{"name": "SecurityType", "value": "TrustedLaunchSupported"}],
        "identifier": {"publisher": "trustlaunch", "offer": "tiny", "sku": "1"}
    }))
    .unwrap();
    images.add_definition("g1", def).unwrap();
    for (v, source) in [("1.0.0", "/images/tiny-1"), ("2.0.0", "/images/tiny-2")] {
        images
            .add_version(
                "g1",
                "tiny",
                ImageVersion {
                    name: v.into(),
                    source: source.into(),
                    guest_agent: None,
                },
            )
            .unwrap();
    }
    Arc::new(Catalogs {
        sizes: SizeCatalog::built_in(),
        images,
    })
}

/// The scale set at model `version`: 1 is Standard on image 1.0.0, 2 is
/// Trusted Launch on image 2.0.0, 3 is the rollback of 2: Standard again
/// (no `uefiSettings`) on the previous image, 1.0.0.
pub fn scale_set(capacity: u32, version: u64, rolling: &serde_json::Value) -> ScaleSet {
    let (image, security) = if version == 2 {
        (
            "2.0.0",
            json!({"securityType": "TrustedLaunch",
                   "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}),
        )
    } else {
        ("1.0.0", json!({"securityType": "Standard"}))
    };
    serde_json::from_value(json!({
        "id": SET, "name": "web", "type": SCALE_SET_TYPE, "location": "local",
        "sku": {"name": "Standard_D2s_v3", "capacity": capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": rolling},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!(
                    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/{image}")}},
                "securityProfile": security
            },
            "modelVersion": version
        }
    }))
    .unwrap()
}

pub async fn put_set(store: &Store, set: &ScaleSet) {
    store
        .put_resource(
            &NewResource {
                id: SET.into(),
                kind: SCALE_SET_TYPE.into(),
                resource_group: "rg".into(),
                name: "web".into(),
                parent: None,
                body: serde_json::to_value(set).unwrap(),
                usage: None,
            },
            Precondition::Any,
            1,
        )
        .await
        .unwrap();
}
