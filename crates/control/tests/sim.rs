//! The simulated driver keeps the driver contract: idempotent calls, boot
//! time, injected outcomes, data kept across apply.

use std::sync::Arc;
use std::time::Duration;

use trustlaunch_control::sim::{BootOutcome, SimDriver};
use trustlaunch_control::{
    DataDiskSpec, Driver, DriverError, Health, InstanceSecurity, InstanceSpec, PowerState,
};

fn spec(name: &str, version: u64) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        model_version: version,
        vcpus: 2,
        memory_mib: 1024,
        image: "tiny".to_owned(),
        security: InstanceSecurity::default(),
        data_disks: vec![DataDiskSpec {
            lun: 0,
            disk_size_gb: 1,
        }],
        guest_attestation: false,
        network: None,
        os: None,
    }
}

#[tokio::test(start_paused = true)]
async fn boots_take_their_time_and_end_as_injected() {
    let d = SimDriver::with_outcomes(
        Duration::from_secs(15),
        Arc::new(
            |s: &InstanceSpec| match (s.name.as_str(), s.model_version) {
                ("bad", _) => BootOutcome::Fails("Secure Boot validation failed".into()),
                (_, 2) => BootOutcome::Unhealthy,
                _ => BootOutcome::Healthy,
            },
        ),
    );
    for n in ["a", "bad"] {
        d.create(&spec(n, 1)).await.unwrap();
        d.start(n).await.unwrap();
    }
    let a = d.status("a").await.unwrap().unwrap();
    assert_eq!((a.power, a.health), (PowerState::Starting, Health::Unknown));
    tokio::time::advance(Duration::from_secs(15)).await;
    let a = d.status("a").await.unwrap().unwrap();
    assert_eq!((a.power, a.health), (PowerState::Running, Health::Healthy));
    let bad = d.status("bad").await.unwrap().unwrap();
    assert_eq!(
        bad.power,
        PowerState::Failed("Secure Boot validation failed".into())
    );
    assert_eq!(bad.health, Health::Unhealthy);

    // Version 2 boots unhealthy; its data disks come along.
    d.apply(&spec("a", 2)).await.unwrap();
    d.start("a").await.unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    let a = d.status("a").await.unwrap().unwrap();
    assert_eq!(a.health, Health::Unhealthy);
    assert_eq!(a.spec.model_version, 2);
    assert_eq!(a.spec.data_disks.len(), 1);
}

#[tokio::test]
async fn every_call_is_idempotent() {
    let d = SimDriver::new(Duration::ZERO);
    d.create(&spec("a", 1)).await.unwrap();
    d.create(&spec("a", 1)).await.unwrap();
    assert_eq!(
        d.create(&spec("a", 2)).await,
        Err(DriverError::Exists {
            name: "a".into(),
            existing: 1
        })
    );
    d.start("a").await.unwrap();
    d.start("a").await.unwrap();
    d.apply(&spec("a", 2)).await.unwrap();
    d.apply(&spec("a", 2)).await.unwrap();
    d.stop("a", true).await.unwrap();
    d.stop("a", true).await.unwrap();
    d.delete("a").await.unwrap();
    d.delete("a").await.unwrap();
    assert_eq!(d.start("a").await, Err(DriverError::NotFound("a".into())));
    let actions: Vec<_> = d
        .events()
        .into_iter()
        .map(|e| (e.action, e.model_version))
        .collect();
    assert_eq!(
        actions,
        [
            ("create", 1),
            ("start", 1),
            ("apply", 2),
            ("deallocate", 2),
            ("delete", 2)
        ]
    );
    assert!(d.list().await.unwrap().is_empty());
}
