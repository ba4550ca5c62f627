//! The store's public API, one suite run against SQLite (always) and
//! PostgreSQL (when `TRUSTLAUNCH_TEST_POSTGRES` names a database whose
//! role may create databases: each run gets a fresh database, dropped
//! afterwards).

use serde_json::json;
use sqlx::{Connection, Row};
use trustlaunch_store::{
    AlertFilter, AlertRecord, Answered, ApiTokenRecord, Backend, BaselineAction, BaselineChange,
    ChallengeRecord, Enrollment, GroupDeletion, NewAttestation, NewAuditEntry, NewOperation,
    NewResource, OperationStatus, OperationStep, Precondition, Role, SessionRecord,
    SigningKeyRecord, Store, StoreError, StoreOptions, SuppressionRule, VmQuery, VmRecord, VmSort,
    RESOURCE_GROUP_TYPE, SESSION_TOUCH,
};

fn audited(action: &str, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: 7,
        actor: "token 0123456789ab (test)".into(),
        action: action.into(),
        target: target.into(),
        detail: json!({"why": "test"}),
        deliveries: None,
    }
}

const VMSS: &str = "Microsoft.Compute/virtualMachineScaleSets";

fn scale_set(name: &str, capacity: u32) -> NewResource {
    NewResource {
        id: format!("/subscriptions/s/resourceGroups/RG1/providers/{VMSS}/{name}"),
        kind: VMSS.to_string(),
        resource_group: "RG1".to_string(),
        name: name.to_string(),
        parent: None,
        body: json!({"name": name, "sku": {"name": "Standard_D2s_v3", "capacity": capacity}}),
        usage: None,
    }
}

fn operation(id: &str, target: &str, at: i64) -> NewOperation {
    NewOperation {
        id: id.to_string(),
        kind: "vmss.rollingUpgrade".to_string(),
        target: target.to_string(),
        state: json!({"step": 0}),
        created_at: at,
        progress: None,
    }
}

/// The control plane's resources and operations.
async fn control_suite(store: &Store) {
    // --- resources: create-only, If-Match, case-insensitive ids.
    let a = scale_set("web", 3);
    assert_eq!(
        store
            .put_resource(&a, Precondition::Absent, 10)
            .await
            .unwrap(),
        1
    );
    match store.put_resource(&a, Precondition::Absent, 11).await {
        Err(StoreError::PreconditionFailed {
            current: Some(1), ..
        }) => {}
        other => panic!("create over an existing resource: {other:?}"),
    }
    let upper = a.id.to_uppercase();
    let got = store.get_resource(&upper).await.unwrap().unwrap();
    assert_eq!((got.etag, got.created_at, got.updated_at), (1, 10, 10));
    assert_eq!(
        got.id, a.id,
        "the id keeps the spelling it was created with"
    );
    let a2 = scale_set("web", 5);
    assert_eq!(
        store
            .put_resource(&a2, Precondition::Etag(1), 12)
            .await
            .unwrap(),
        2
    );
    match store.put_resource(&a, Precondition::Etag(1), 13).await {
        Err(StoreError::PreconditionFailed {
            expected: Some(1),
            current: Some(2),
            ..
        }) => {}
        other => panic!("stale If-Match: {other:?}"),
    }
    let got = store.get_resource(&a.id).await.unwrap().unwrap();
    assert_eq!(
        got.body["sku"]["capacity"], 5,
        "the stale write changed nothing"
    );
    assert_eq!(got.created_at, 10);
    match store
        .put_resource(&scale_set("nope", 1), Precondition::Etag(1), 13)
        .await
    {
        Err(StoreError::PreconditionFailed { current: None, .. }) => {}
        other => panic!("If-Match on a missing resource: {other:?}"),
    }
    assert_eq!(
        store
            .put_resource(&a2, Precondition::Any, 14)
            .await
            .unwrap(),
        3
    );

    // Two concurrent updates with the same If-Match: exactly one wins.
    let (w7, w8) = (scale_set("web", 7), scale_set("web", 8));
    let (x, y) = tokio::join!(
        store.put_resource(&w7, Precondition::Etag(3), 15),
        store.put_resource(&w8, Precondition::Etag(3), 15),
    );
    let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{x:?} {y:?}");
    assert!(
        [&x, &y]
            .iter()
            .any(|r| matches!(r, Err(StoreError::PreconditionFailed { .. }))),
        "{x:?} {y:?}"
    );

    // Children and listing.
    for i in 0..3 {
        let inst = NewResource {
            id: format!("{}/virtualMachines/{i}", a.id),
            kind: format!("{VMSS}/virtualMachines"),
            resource_group: "RG1".to_string(),
            name: format!("web_{i}"),
            parent: Some(upper.clone()),
            body: json!({"instanceId": i.to_string()}),
            usage: None,
        };
        store
            .put_resource(&inst, Precondition::Absent, 20)
            .await
            .unwrap();
    }
    let children = store.child_resources(&a.id).await.unwrap();
    assert_eq!(children.len(), 3);
    assert_eq!(
        children[0].parent.as_deref(),
        Some(a.id.to_lowercase().as_str())
    );
    store
        .put_resource(&scale_set("api", 1), Precondition::Absent, 21)
        .await
        .unwrap();
    let names = |v: Vec<trustlaunch_store::ResourceRecord>| {
        v.into_iter().map(|r| r.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_resources(VMSS, Some("rg1")).await.unwrap()),
        ["api", "web"]
    );
    assert_eq!(
        names(store.list_resources(VMSS, None).await.unwrap()),
        ["api", "web"]
    );
    assert!(store
        .list_resources(VMSS, Some("other"))
        .await
        .unwrap()
        .is_empty());
    match store.delete_resource(&a.id, Precondition::Etag(1)).await {
        Err(StoreError::PreconditionFailed {
            expected: Some(1),
            current: Some(4),
            ..
        }) => {}
        other => panic!("stale delete: {other:?}"),
    }
    assert!(store
        .delete_resource(&children[2].id, Precondition::Etag(1))
        .await
        .unwrap());
    assert!(!store
        .delete_resource(&children[2].id, Precondition::Any)
        .await
        .unwrap());

    // --- operations: one running per target, committed with the change.
    let api = scale_set("api", 2);
    let op1 = operation("op-1", &api.id, 30);
    store
        .put_resource_with_operation(&api, Precondition::Etag(1), Some(&op1), 30)
        .await
        .unwrap();
    // A second operation on the same target is refused, and the resource
    // change it came with is not written.
    let op2 = operation("op-2", &api.id.to_uppercase(), 31);
    match store
        .put_resource_with_operation(&scale_set("api", 9), Precondition::Etag(2), Some(&op2), 31)
        .await
    {
        Err(StoreError::OperationInProgress { operation, .. }) => assert_eq!(operation, "op-1"),
        other => panic!("second operation: {other:?}"),
    }
    let got = store.get_resource(&api.id).await.unwrap().unwrap();
    assert_eq!(
        (got.etag, got.body["sku"]["capacity"].as_u64()),
        (2, Some(2))
    );
    match store.start_operation(&operation("op-1", &a.id, 32)).await {
        Err(StoreError::DuplicateOperation { id }) => assert_eq!(id, "op-1"),
        other => panic!("duplicate id: {other:?}"),
    }

    // Leases: claimed by one server; another takes it over once it expires.
    let claimed = store
        .claim_operation("server-a", 40, 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, "op-1");
    assert_eq!(claimed.lease_owner.as_deref(), Some("server-a"));
    assert_eq!(claimed.lease_until, Some(70));
    assert!(store
        .claim_operation("server-b", 50, 30)
        .await
        .unwrap()
        .is_none());
    let step = OperationStep {
        expected_revision: claimed.revision,
        status: OperationStatus::InProgress,
        state: json!({"step": 1}),
        error: None,
        at: 55,
        progress: None,
    };
    let rev = store.step_operation("op-1", &step, None).await.unwrap();
    // A renewal keeps it past its first term without moving the revision.
    assert!(store.renew_lease("op-1", "server-a", 60, 30).await.unwrap());
    assert!(!store.renew_lease("op-1", "server-b", 60, 30).await.unwrap());
    assert!(store
        .claim_operation("server-b", 71, 30)
        .await
        .unwrap()
        .is_none());
    let renewed = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!((renewed.lease_until, renewed.revision), (Some(90), rev));
    let stolen = store
        .claim_operation("server-b", 91, 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stolen.lease_owner.as_deref(), Some("server-b"));
    assert!(!store.renew_lease("op-1", "server-a", 92, 30).await.unwrap());
    assert_eq!(
        stolen.state,
        json!({"step": 1}),
        "the step survives the takeover"
    );
    // server-a, which lost the lease, cannot write another step.
    let late = OperationStep {
        expected_revision: rev,
        ..step.clone()
    };
    match store.step_operation("op-1", &late, None).await {
        Err(StoreError::OperationChanged { expected, .. }) => assert_eq!(expected, rev),
        other => panic!("step after losing the lease: {other:?}"),
    }
    // The last step writes the resource too, and frees the target.
    let done = OperationStep {
        expected_revision: stolen.revision,
        status: OperationStatus::Succeeded,
        state: json!({"step": 2}),
        error: None,
        at: 80,
        progress: None,
    };
    store
        .step_operation(
            "op-1",
            &done,
            Some((&scale_set("api", 4), Precondition::Etag(2))),
        )
        .await
        .unwrap();
    let got = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(got.status, OperationStatus::Succeeded);
    assert_eq!((got.lease_owner, got.lease_until), (None, None));
    assert_eq!(store.get_resource(&api.id).await.unwrap().unwrap().etag, 3);
    assert!(
        !store.request_cancel("op-1").await.unwrap(),
        "op-1 has ended"
    );
    store.start_operation(&op2).await.unwrap();
    assert!(store.request_cancel("op-2").await.unwrap());
    let got = store.get_operation("op-2").await.unwrap().unwrap();
    assert!(got.cancel_requested);
    assert_eq!(
        got.revision, 1,
        "a cancel request does not move the revision"
    );
    let on = store.operations_on(&api.id).await.unwrap();
    assert_eq!(
        on.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        ["op-2", "op-1"]
    );
    // A failing step with a stale resource ETag writes neither.
    let fail = OperationStep {
        expected_revision: 1,
        status: OperationStatus::Failed,
        state: json!({"step": 9}),
        error: Some(json!({"code": "X"})),
        at: 90,
        progress: None,
    };
    assert!(store
        .step_operation(
            "op-2",
            &fail,
            Some((&scale_set("api", 1), Precondition::Etag(1)))
        )
        .await
        .is_err());
    let got = store.get_operation("op-2").await.unwrap().unwrap();
    assert_eq!((got.status, got.revision), (OperationStatus::InProgress, 1));
    assert!(store.get_operation("nope").await.unwrap().is_none());

    // Resource groups: a resource's write keeps its group in existence;
    // a group is deleted only empty, the check in the deleting
    // transaction.
    let group = "/subscriptions/s/resourceGroups/Groups_1";
    let member = NewResource {
        id: format!("{group}/providers/{VMSS}/m"),
        kind: VMSS.to_string(),
        resource_group: "Groups_1".to_string(),
        name: "m".to_string(),
        parent: None,
        body: json!({"location": "east"}),
        usage: None,
    };
    store
        .put_resource(&member, Precondition::Absent, 100)
        .await
        .unwrap();
    let g = store
        .get_resource(group)
        .await
        .unwrap()
        .expect("the group was made");
    assert_eq!(
        (g.kind.as_str(), g.name.as_str()),
        (RESOURCE_GROUP_TYPE, "Groups_1")
    );
    assert_eq!(g.body["location"], "east");
    // Another group whose name the first's is a prefix of is another group.
    let (neighbour, _) = trustlaunch_store::resource_group_of(&format!(
        "/subscriptions/s/resourceGroups/Groups_10/providers/{VMSS}/x"
    ))
    .unwrap();
    store
        .put_resource(
            &NewResource {
                id: format!("{neighbour}/providers/{VMSS}/x"),
                resource_group: "Groups_10".into(),
                ..member.clone()
            },
            Precondition::Absent,
            100,
        )
        .await
        .unwrap();
    let inside = store.resources_in_group(group).await.unwrap();
    assert_eq!(inside.len(), 1, "{inside:?}");
    match store
        .delete_resource_group(&group.to_uppercase())
        .await
        .unwrap()
    {
        GroupDeletion::NotEmpty { ids, count } => {
            assert_eq!((ids, count), (vec![member.id.clone()], 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(store
        .delete_resource(&member.id, Precondition::Any)
        .await
        .unwrap());
    assert_eq!(
        store.delete_resource_group(group).await.unwrap(),
        GroupDeletion::Deleted
    );
    assert_eq!(
        store.delete_resource_group(group).await.unwrap(),
        GroupDeletion::Absent
    );
    assert!(store.get_resource(group).await.unwrap().is_none());
    assert!(store.get_resource(&neighbour).await.unwrap().is_some());

    // Usage kept with the resources, summed per family without reading a
    // document; a write without usage keeps what was recorded; a row
    // without any is handed back to be counted from its document.
    let sub = "/subscriptions/Quota_1/";
    let res = |name: &str, usage: Option<(&str, i64)>| NewResource {
        id: format!("{sub}resourceGroups/r/providers/{VMSS}/{name}"),
        kind: VMSS.to_string(),
        resource_group: "r".into(),
        name: name.into(),
        parent: None,
        body: json!({"location": "l"}),
        usage: usage.map(|(f, v)| trustlaunch_store::ResourceUsage {
            family: f.into(),
            vcpus: v,
        }),
    };
    for r in [
        res("a", Some(("DSv3", 4))),
        res("b", Some(("DSv3", 6))),
        res("c", Some(("B", 1))),
        res("legacy", None),
    ] {
        store.put_resource(&r, Precondition::Any, 1).await.unwrap();
    }
    // Another subscription whose id the first's is a prefix of.
    let other = NewResource {
        id: format!("/subscriptions/Quota_10/resourceGroups/r/providers/{VMSS}/z"),
        ..res("z", Some(("DSv3", 100)))
    };
    store
        .put_resource(&other, Precondition::Any, 1)
        .await
        .unwrap();
    store
        .put_resource(&res("b", None), Precondition::Any, 2)
        .await
        .unwrap();
    let (sums, unrecorded) = store.usage_under(sub, &[VMSS]).await.unwrap();
    assert_eq!(sums, vec![("B".to_owned(), 1), ("DSv3".to_owned(), 10)]);
    let names: Vec<&str> = unrecorded.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["legacy"]);
    store
        .put_resource(&res("b", Some(("DSv3", 2))), Precondition::Any, 3)
        .await
        .unwrap();
    let (sums, _) = store.usage_under(sub, &[VMSS]).await.unwrap();
    assert_eq!(sums, vec![("B".to_owned(), 1), ("DSv3".to_owned(), 6)]);

    // An operation's summary: its progress as written with it and each
    // step, without its state.
    let mut o = operation("op-sum", &format!("{sub}x"), 5);
    o.progress = Some(json!({"total": 3}));
    store.start_operation(&o).await.unwrap();
    let got = store.operation_summary("op-sum").await.unwrap().unwrap();
    assert_eq!(
        (got.progress, got.status),
        (Some(json!({"total": 3})), OperationStatus::InProgress)
    );
    store
        .step_operation(
            "op-sum",
            &OperationStep {
                expected_revision: 1,
                status: OperationStatus::Succeeded,
                state: json!({"big": "state"}),
                error: None,
                progress: Some(json!({"total": 3, "succeeded": 3})),
                at: 6,
            },
            None,
        )
        .await
        .unwrap();
    let got = store.operation_summary("op-sum").await.unwrap().unwrap();
    assert_eq!(got.progress, Some(json!({"total": 3, "succeeded": 3})));
    assert_eq!(
        (got.status, got.updated_at),
        (OperationStatus::Succeeded, 6)
    );
    assert!(store.operation_summary("nope").await.unwrap().is_none());

    // A resource with its latest operation in one read; children by id,
    // then a page of them.
    let target = format!("{sub}x");
    store
        .put_resource(
            &NewResource {
                id: target.clone(),
                ..res("x", None)
            },
            Precondition::Any,
            7,
        )
        .await
        .unwrap();
    let (r, summary) = store
        .get_resource_with_operation(&target)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.id, target);
    assert_eq!(
        summary,
        Some((
            "vmss.rollingUpgrade".to_owned(),
            OperationStatus::Succeeded,
            1
        ))
    );
    let lone = format!("{sub}resourceGroups/r/providers/{VMSS}/a");
    let (_, none) = store
        .get_resource_with_operation(&lone)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(none, None);
    assert!(store
        .get_resource_with_operation(&format!("{sub}nope"))
        .await
        .unwrap()
        .is_none());
    for i in 0..3 {
        store
            .put_resource(
                &NewResource {
                    id: format!("{lone}/virtualMachines/{i}"),
                    parent: Some(lone.clone()),
                    ..res(&i.to_string(), None)
                },
                Precondition::Any,
                8,
            )
            .await
            .unwrap();
    }
    let ids = store.child_ids(&lone).await.unwrap();
    assert_eq!(ids.len(), 3);
    let got = store.get_resources(&ids[1..]).await.unwrap();
    let names: Vec<&str> = got.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["1", "2"]);
    assert!(store.get_resources(&[]).await.unwrap().is_empty());
}

fn vm(id: &str, n: u8) -> VmRecord {
    VmRecord {
        vm_id: id.to_string(),
        spec: json!({"name": id, "memory_mib": 512 + u32::from(n), "disks": ["a", "b"]}),
        ek_public: vec![0x00, n, 0xff, 0x10],
        created_at: 1_700_000_000 + i64::from(n),
    }
}

fn attestation(vm_id: &str, nonce: u8, at: i64, healthy: bool) -> NewAttestation {
    NewAttestation {
        vm_id: vm_id.to_string(),
        boot_id: format!("boot-{}", at / 100),
        nonce: vec![nonce; 32],
        at,
        healthy,
        appraisal: json!({"checks": [{"name": "pcr7", "ok": healthy}], "nonce": nonce}),
        token: healthy.then(|| format!("eyJ.token.{nonce}")),
    }
}

fn change(action: BaselineAction, actor: &str, at: i64) -> BaselineChange {
    BaselineChange {
        action,
        actor: actor.to_string(),
        at,
    }
}

/// Pages of VMs: the newest verdict kept on the VM by time (an older one
/// recorded late does not replace it), found again when a deleted VM is
/// registered again; filters, orders, counts; LIKE's wildcards literal.
async fn vm_page_suite(store: &Store) {
    let tl = |id: &str, n: u8| VmRecord {
        spec: json!({"trustedLaunch": true}),
        ..vm(id, n)
    };
    for r in [
        tl("page-a", 1),
        vm("page-b", 2),
        tl("page-c", 3),
        tl("page_d", 4),
    ] {
        store
            .put_vm(&r, &audited("registration.put", "vm"))
            .await
            .unwrap();
    }
    let q = |f: fn(&mut VmQuery)| {
        let mut q = VmQuery {
            name_contains: Some("page".into()),
            limit: 10,
            ..VmQuery::default()
        };
        f(&mut q);
        q
    };
    let ids =
        |p: &trustlaunch_store::VmPage| p.rows.iter().map(|r| r.vm_id.clone()).collect::<Vec<_>>();
    // a: healthy at 200, then an older unhealthy one recorded late.
    assert!(store
        .add_attestation(&attestation("page-a", 1, 200, true))
        .await
        .unwrap());
    assert!(store
        .add_attestation(&attestation("page-a", 2, 100, false))
        .await
        .unwrap());
    // c: unhealthy, newest.
    assert!(store
        .add_attestation(&attestation("page-c", 1, 300, false))
        .await
        .unwrap());
    // A retry records nothing and changes nothing.
    assert!(!store
        .add_attestation(&attestation("page-c", 1, 999, true))
        .await
        .unwrap());
    let all = store.vm_page(&q(|_| {})).await.unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(ids(&all), ["page-a", "page-b", "page-c", "page_d"]);
    let a = &all.rows[0];
    assert_eq!(
        (a.healthy, a.last_attested_at, a.security_type.as_str()),
        (Some(true), Some(200), "TrustedLaunch")
    );
    assert_eq!(all.rows[1].security_type, "Standard");
    assert_eq!(all.rows[2].healthy, Some(false));
    assert_eq!(all.rows[3].healthy, None);
    let p = store
        .vm_page(&q(|q| q.health = Some("unhealthy".into())))
        .await
        .unwrap();
    assert_eq!((p.total, ids(&p)), (1, vec!["page-c".to_owned()]));
    let p = store
        .vm_page(&q(|q| q.health = Some("unknown".into())))
        .await
        .unwrap();
    assert_eq!(ids(&p), ["page-b", "page_d"]);
    let p = store
        .vm_page(&q(|q| q.security_type = Some("Standard".into())))
        .await
        .unwrap();
    assert_eq!(ids(&p), ["page-b"]);
    let p = store
        .vm_page(&q(|q| {
            q.sort = VmSort::LastAttested;
            q.descending = true;
        }))
        .await
        .unwrap();
    assert_eq!(ids(&p), ["page-c", "page-a", "page_d", "page-b"]);
    let p = store
        .vm_page(&q(|q| {
            q.sort = VmSort::Health;
        }))
        .await
        .unwrap();
    assert_eq!(ids(&p), ["page-b", "page_d", "page-c", "page-a"]);
    let p = store
        .vm_page(&q(|q| q.name_contains = Some("PAGE_".into())))
        .await
        .unwrap();
    assert_eq!(ids(&p), ["page_d"], "'_' is literal, case ignored");
    let p = store
        .vm_page(&q(|q| {
            q.limit = 2;
            q.offset = 2;
        }))
        .await
        .unwrap();
    assert_eq!(
        (p.total, ids(&p)),
        (4, vec!["page-c".to_owned(), "page_d".to_owned()])
    );
    let p = store.vm_page(&q(|q| q.offset = 50)).await.unwrap();
    assert_eq!(
        (p.total, p.rows.len()),
        (4, 0),
        "past the end: still counted"
    );
    // Deleted and registered again: its history is its newest verdict again.
    assert!(store.delete_vm("page-a").await.unwrap());
    store
        .put_vm(&tl("page-a", 1), &audited("registration.put", "vm"))
        .await
        .unwrap();
    let p = store
        .vm_page(&q(|q| q.name_contains = Some("page-a".into())))
        .await
        .unwrap();
    assert_eq!(
        (p.rows[0].healthy, p.rows[0].last_attested_at),
        (Some(true), Some(200))
    );
    let types: std::collections::BTreeMap<String, u64> = store
        .vm_security_counts()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        types["TrustedLaunch"] >= 3 && types["Standard"] >= 1,
        "{types:?}"
    );
    for vm in ["page-a", "page-b", "page-c", "page_d"] {
        store.delete_vm(vm).await.unwrap();
    }
}

/// Portal sessions: live within their idle time and lifetime, touched at
/// most every SESSION_TOUCH seconds, a message read once, ended, purged.
async fn session_suite(store: &Store) {
    let id = [7u8; 32];
    let rec = SessionRecord {
        token_sha256: [9u8; 32],
        csrf: "csrf-1".into(),
        created_at: 1_000,
        seen_at: 1_000,
        flash: None,
    };
    store.put_session(&id, &rec).await.unwrap();
    assert!(
        store.put_session(&id, &rec).await.is_err(),
        "ids are unique"
    );
    let got = store
        .session(&id, 1_010, 1_800, 28_800)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, rec, "within SESSION_TOUCH: nothing written");
    let got = store
        .session(&id, 1_000 + SESSION_TOUCH, 1_800, 28_800)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.seen_at, 1_000, "read as it was");
    let got = store
        .session(&id, 1_100, 1_800, 28_800)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.seen_at, 1_000 + SESSION_TOUCH, "touched");
    store.set_session_flash(&id, "saved").await.unwrap();
    let got = store
        .session(&id, 1_110, 1_800, 28_800)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.flash.as_deref(), Some("saved"));
    let got = store
        .session(&id, 1_111, 1_800, 28_800)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.flash, None, "a message is read once");
    // Idle too long: gone.
    assert!(store
        .session(&id, 1_110 + 1_800, 1_800, 28_800)
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .session(&id, 1_111, 1_800, 28_800)
            .await
            .unwrap()
            .is_none(),
        "deleted"
    );
    // Its lifetime over, however busy.
    store.put_session(&id, &rec).await.unwrap();
    assert!(store
        .session(&id, 1_000 + 28_800, 1_000_000, 28_800)
        .await
        .unwrap()
        .is_none());
    // Ended; purged.
    store.put_session(&id, &rec).await.unwrap();
    assert!(store.end_session(&id).await.unwrap());
    assert!(!store.end_session(&id).await.unwrap());
    let live = SessionRecord {
        seen_at: 5_000,
        created_at: 5_000,
        ..rec.clone()
    };
    store.put_session(&[1; 32], &rec).await.unwrap();
    store.put_session(&[2; 32], &live).await.unwrap();
    assert_eq!(store.purge_sessions(5_100, 1_800, 28_800).await.unwrap(), 1);
    assert!(store
        .session(&[1; 32], 5_100, 1_800, 28_800)
        .await
        .unwrap()
        .is_none());
    assert!(store.end_session(&[2; 32]).await.unwrap());
}

/// Every method of the store, on an empty database.
async fn suite(store: &Store) {
    // --- vms: round trip, upsert keeps created_at, list order, delete.
    assert!(store.get_vm("vm-b").await.unwrap().is_none());
    let b = vm("vm-b", 2);
    let a = vm("vm-a", 1);
    store
        .put_vm(&b, &audited("registration.put", "vm"))
        .await
        .unwrap();
    store
        .put_vm(&a, &audited("registration.put", "vm"))
        .await
        .unwrap();
    assert_eq!(store.get_vm("vm-b").await.unwrap().unwrap(), b);
    let mut b2 = vm("vm-b", 7);
    store
        .put_vm(&b2, &audited("registration.put", "vm"))
        .await
        .unwrap();
    b2.created_at = b.created_at;
    assert_eq!(store.get_vm("vm-b").await.unwrap().unwrap(), b2);
    let listed = store.list_vms().await.unwrap();
    assert_eq!(listed, vec![a.clone(), b2.clone()]);
    // The stamp: the replaced record's revision moved, the other's not.
    let stamp = |s: Option<trustlaunch_store::VmStamp>| s.unwrap();
    assert_eq!(stamp(store.vm_stamp("vm-a").await.unwrap()).revision, 0);
    assert_eq!(stamp(store.vm_stamp("vm-b").await.unwrap()).revision, 1);
    assert_eq!(
        stamp(store.vm_stamp("vm-a").await.unwrap()).enrolled_at,
        None
    );
    assert!(store.vm_stamp("vm-x").await.unwrap().is_none());

    // --- enrollments.
    assert!(store.get_enrollment("vm-a").await.unwrap().is_none());
    let mut enrollment = Enrollment {
        vm_id: "vm-a".into(),
        ek_certificate: (0..=255u8).collect(),
        ak_public: vec![1, 2, 3],
        enrolled_at: 1_700_000_100,
    };
    store.put_enrollment(&enrollment).await.unwrap();
    assert_eq!(
        store.get_enrollment("vm-a").await.unwrap().unwrap(),
        enrollment
    );
    enrollment.ak_public = vec![9, 9];
    enrollment.enrolled_at += 5;
    store.put_enrollment(&enrollment).await.unwrap();
    assert_eq!(
        store.get_enrollment("vm-a").await.unwrap().unwrap(),
        enrollment
    );

    // delete_vm removes the VM and its enrollment, and says whether it existed.
    store
        .put_vm(&vm("vm-gone", 3), &audited("registration.put", "vm"))
        .await
        .unwrap();
    store
        .put_enrollment(&Enrollment {
            vm_id: "vm-gone".into(),
            ..enrollment.clone()
        })
        .await
        .unwrap();
    assert!(store.delete_vm("vm-gone").await.unwrap());
    assert!(!store.delete_vm("vm-gone").await.unwrap());
    assert!(store.get_vm("vm-gone").await.unwrap().is_none());
    assert!(store.get_enrollment("vm-gone").await.unwrap().is_none());
    assert_eq!(store.list_vms().await.unwrap().len(), 2);

    // --- attestations: idempotent on (vm_id, nonce), history newest first.
    assert!(store.latest("vm-a").await.unwrap().is_none());
    assert!(store.history("vm-a", 10).await.unwrap().is_empty());
    let first = attestation("vm-a", 1, 1000, true);
    assert!(store.add_attestation(&first).await.unwrap());
    // A retry with the same nonce is not recorded again, even if it differs.
    let retry = NewAttestation {
        at: 1001,
        healthy: false,
        ..first.clone()
    };
    assert!(!store.add_attestation(&retry).await.unwrap());
    // The same nonce for another VM is a different attestation.
    assert!(store
        .add_attestation(&attestation("vm-b", 1, 1000, false))
        .await
        .unwrap());
    // Out of order in time: history sorts by time, then insertion.
    assert!(store
        .add_attestation(&attestation("vm-a", 3, 3000, false))
        .await
        .unwrap());
    assert!(store
        .add_attestation(&attestation("vm-a", 2, 2000, true))
        .await
        .unwrap());
    assert!(store
        .add_attestation(&attestation("vm-a", 4, 3000, true))
        .await
        .unwrap());
    let history = store.history("vm-a", 10).await.unwrap();
    let nonces: Vec<u8> = history.iter().map(|r| r.attestation.nonce[0]).collect();
    assert_eq!(nonces, vec![4, 3, 2, 1]);
    assert_eq!(history[3].attestation, first);
    assert!(history[0].id > history[1].id, "ids increase");
    assert_eq!(history[1].attestation.token, None);
    let two = store.history("vm-a", 2).await.unwrap();
    assert_eq!(two, history[..2].to_vec());
    let latest = store.latest("vm-a").await.unwrap().unwrap();
    assert_eq!(latest, history[0]);
    assert_eq!(store.history("vm-b", 10).await.unwrap().len(), 1);
    assert!(store.history("vm-none", 10).await.unwrap().is_empty());

    // --- baselines: optimistic concurrency, audit in the same transaction.
    assert!(store.get_baseline("vm-a").await.unwrap().is_none());
    let v1 = json!({"pcr": {"7": "aa"}});
    let v2 = json!({"pcr": {"7": "bb"}});
    let v3 = json!({"pcr": {"7": "cc"}, "pinned": true});
    // Expecting a version when there is none conflicts.
    match store
        .put_baseline(
            "vm-a",
            &v1,
            Some(1),
            &change(BaselineAction::Pinned, "op", 1),
        )
        .await
    {
        Err(StoreError::Conflict {
            current: None,
            expected: Some(1),
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(store.get_baseline("vm-a").await.unwrap().is_none());
    assert!(store.baseline_audit("vm-a").await.unwrap().is_empty());
    let learned = change(BaselineAction::Learned, "system", 1100);
    assert_eq!(
        store
            .put_baseline("vm-a", &v1, None, &learned)
            .await
            .unwrap(),
        1
    );
    // A second "first" baseline conflicts with version 1.
    match store.put_baseline("vm-a", &v2, None, &learned).await {
        Err(StoreError::Conflict {
            current: Some(1), ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let relearned = change(BaselineAction::Relearned, "system", 1200);
    assert_eq!(
        store
            .put_baseline("vm-a", &v2, Some(1), &relearned)
            .await
            .unwrap(),
        2
    );
    // A stale writer loses and learns the current version; nothing written.
    let err = store
        .put_baseline(
            "vm-a",
            &v3,
            Some(1),
            &change(BaselineAction::Pinned, "alice", 1300),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("vm-a"), "{err}");
    let pinned = change(BaselineAction::Pinned, "alice", 1400);
    assert_eq!(
        store
            .put_baseline("vm-a", &v3, Some(2), &pinned)
            .await
            .unwrap(),
        3
    );
    let predicted = change(BaselineAction::Predicted, "image-scan", 1500);
    assert_eq!(
        store
            .put_baseline("vm-b", &v1, None, &predicted)
            .await
            .unwrap(),
        1
    );
    let current = store.get_baseline("vm-a").await.unwrap().unwrap();
    assert_eq!(
        (
            current.baseline.clone(),
            current.version,
            current.updated_at
        ),
        (v3.clone(), 3, 1400)
    );
    // One audit entry per successful change, none for the conflicts.
    let audit = store.baseline_audit("vm-a").await.unwrap();
    let trail: Vec<_> = audit
        .iter()
        .map(|e| (e.change.clone(), e.old.clone(), e.new.clone(), e.version))
        .collect();
    assert_eq!(
        trail,
        vec![
            (learned, None, v1.clone(), 1),
            (relearned, Some(v1.clone()), v2.clone(), 2),
            (pinned, Some(v2.clone()), v3.clone(), 3),
        ]
    );
    assert!(audit.iter().all(|e| e.vm_id == "vm-a"));
    assert_eq!(store.baseline_audit("vm-b").await.unwrap().len(), 1);

    // --- alerts: upsert, filters.
    let alert = |key: &str, vm_id: &str, state: &str, at: i64| AlertRecord {
        key: key.into(),
        vm_id: vm_id.into(),
        state: state.into(),
        alert: json!({"check": key, "severity": "high"}),
        updated_at: at,
    };
    store
        .put_alert(&alert("vm-a/pcr7", "vm-a", "active", 1))
        .await
        .unwrap();
    store
        .put_alert(&alert("vm-a/kernel", "vm-a", "active", 2))
        .await
        .unwrap();
    store
        .put_alert(&alert("vm-b/pcr7", "vm-b", "active", 3))
        .await
        .unwrap();
    let resolved = alert("vm-a/kernel", "vm-a", "resolved", 4);
    store.put_alert(&resolved).await.unwrap();
    let keys = |alerts: Vec<AlertRecord>| alerts.into_iter().map(|a| a.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.alerts(&AlertFilter::default()).await.unwrap()),
        ["vm-a/kernel", "vm-a/pcr7", "vm-b/pcr7"]
    );
    let by_vm = AlertFilter {
        vm_id: Some("vm-a".into()),
        state: None,
    };
    assert_eq!(
        keys(store.alerts(&by_vm).await.unwrap()),
        ["vm-a/kernel", "vm-a/pcr7"]
    );
    let active = AlertFilter {
        vm_id: None,
        state: Some("active".into()),
    };
    assert_eq!(
        keys(store.alerts(&active).await.unwrap()),
        ["vm-a/pcr7", "vm-b/pcr7"]
    );
    let both = AlertFilter {
        vm_id: Some("vm-a".into()),
        state: Some("resolved".into()),
    };
    assert_eq!(store.alerts(&both).await.unwrap(), vec![resolved]);
    let none = AlertFilter {
        vm_id: Some("vm-b".into()),
        state: Some("resolved".into()),
    };
    assert!(store.alerts(&none).await.unwrap().is_empty());

    // --- suppression rules.
    assert!(store.suppression_rules().await.unwrap().is_empty());
    let rule = |name: &str, days: u32| SuppressionRule {
        name: name.into(),
        rule: json!({"check": "pcr7", "days": days}),
    };
    store
        .put_suppression_rule(&rule("z-rule", 1), &audited("suppression.put", "rule"))
        .await
        .unwrap();
    store
        .put_suppression_rule(&rule("a-rule", 2), &audited("suppression.put", "rule"))
        .await
        .unwrap();
    store
        .put_suppression_rule(&rule("z-rule", 3), &audited("suppression.put", "rule"))
        .await
        .unwrap();
    assert_eq!(
        store.suppression_rules().await.unwrap(),
        vec![rule("a-rule", 2), rule("z-rule", 3)]
    );
    assert!(store
        .delete_suppression_rule("a-rule", &audited("suppression.delete", "rule"))
        .await
        .unwrap());
    assert!(!store
        .delete_suppression_rule("a-rule", &audited("suppression.delete", "rule"))
        .await
        .unwrap());
    assert_eq!(
        store.suppression_rules().await.unwrap(),
        vec![rule("z-rule", 3)]
    );

    // --- signing keys: at most one current.
    assert!(store.current_signing_key().await.unwrap().is_none());
    let key = |kid: &str, at: i64, current: bool| SigningKeyRecord {
        kid: kid.into(),
        pkcs8_pem: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
        created_at: at,
        retire_at: None,
        current,
    };
    let k1 = key("k1", 10, true);
    store.put_signing_key(&k1).await.unwrap();
    assert_eq!(store.current_signing_key().await.unwrap().unwrap(), k1);
    let k2 = key("k2", 20, true);
    store.put_signing_key(&k2).await.unwrap();
    let k1_retiring = SigningKeyRecord {
        retire_at: Some(100),
        current: false,
        ..k1.clone()
    };
    store.put_signing_key(&k1_retiring).await.unwrap();
    assert_eq!(store.current_signing_key().await.unwrap().unwrap(), k2);
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![k1_retiring.clone(), k2.clone()]
    );
    assert!(!format!("{k2:?}").contains("BEGIN PRIVATE KEY"));

    // --- API tokens: create, revoke (by public id), expiry, last use;
    // each change audited in its transaction.
    let token = |b: u8, name: &str, role| ApiTokenRecord {
        sha256: [b; 32],
        name: name.into(),
        role,
        created_at: 50,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    assert!(store.lookup_api_token(&[1; 32]).await.unwrap().is_none());
    let tok_audit = audited("token.create", "token");
    store
        .put_api_token(&token(1, "ci", Role::Reader), &tok_audit)
        .await
        .unwrap();
    store
        .put_api_token(&token(2, "admin", Role::Admin), &tok_audit)
        .await
        .unwrap();
    store
        .put_api_token(&token(1, "ci", Role::Operator), &tok_audit)
        .await
        .unwrap();
    assert_eq!(
        store.lookup_api_token(&[1; 32]).await.unwrap().unwrap(),
        token(1, "ci", Role::Operator)
    );
    assert_eq!(
        store.api_tokens().await.unwrap(),
        vec![
            token(2, "admin", Role::Admin),
            token(1, "ci", Role::Operator)
        ]
    );
    assert_eq!(token(2, "admin", Role::Admin).id(), "020202020202");
    let revoke = audited("token.revoke", "token/020202020202");
    assert!(store
        .revoke_api_token("020202020202", 60, &revoke)
        .await
        .unwrap());
    assert!(!store
        .revoke_api_token("020202020202", 61, &revoke)
        .await
        .unwrap());
    let revoked = store.lookup_api_token(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(60));
    assert!(!revoked.usable_at(60));
    store.touch_api_token(&[1; 32], 70).await.unwrap();
    assert_eq!(
        store
            .lookup_api_token(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(70)
    );
    let expiring = ApiTokenRecord {
        expires_at: Some(100),
        ..token(3, "temp", Role::Reader)
    };
    assert!(expiring.usable_at(99) && !expiring.usable_at(100));
    let log = store
        .audit_log(Some("token/020202020202"), 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry, revoke);
    let all = store.audit_log(None, 1000).await.unwrap();
    assert!(all.iter().any(|e| e.entry.action == "token.create"));
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");

    // --- challenges: single use, for one VM, until they expire; the
    // credential is set once; answering records the attestation in the
    // same transaction.
    let ch = |id: &str, nonce: u8, expires_at| ChallengeRecord {
        id: id.into(),
        vm_id: "vm-ch".into(),
        nonce: vec![nonce; 32],
        ak_public: None,
        secret_sha256: None,
        issued_to: "platform".into(),
        created_at: 100,
        expires_at,
        used_at: None,
    };
    store.put_challenge(&ch("c1", 1, 400), 100).await.unwrap();
    store.put_challenge(&ch("c2", 2, 150), 100).await.unwrap();
    assert!(store
        .set_challenge_credential("c1", b"ak", &[9; 32], 120)
        .await
        .unwrap());
    assert!(!store
        .set_challenge_credential("c1", b"other ak", &[8; 32], 121)
        .await
        .unwrap());
    let got = store.get_challenge("c1").await.unwrap().unwrap();
    assert_eq!(got.ak_public.as_deref(), Some(&b"ak"[..]));
    assert_eq!(got.secret_sha256, Some([9; 32]));
    let answer = |nonce: u8, at| NewAttestation {
        vm_id: "vm-ch".into(),
        boot_id: "b".into(),
        nonce: vec![nonce; 32],
        at,
        healthy: true,
        appraisal: json!({}),
        token: None,
    };
    // Another VM cannot use it; a wrong nonce cannot either.
    let mut other_vm = answer(1, 130);
    other_vm.vm_id = "vm-other".into();
    assert_eq!(
        store.answer_challenge("c1", &other_vm).await.unwrap(),
        Answered::ChallengeGone
    );
    assert_eq!(
        store.answer_challenge("c1", &answer(3, 130)).await.unwrap(),
        Answered::ChallengeGone
    );
    assert_eq!(
        store.answer_challenge("c1", &answer(1, 130)).await.unwrap(),
        Answered::Recorded
    );
    assert_eq!(
        store.answer_challenge("c1", &answer(1, 131)).await.unwrap(),
        Answered::AlreadyRecorded
    );
    assert_eq!(
        store.get_challenge("c1").await.unwrap().unwrap().used_at,
        Some(130)
    );
    // Expired: refused, and dropped by the next issue.
    assert_eq!(
        store.answer_challenge("c2", &answer(2, 151)).await.unwrap(),
        Answered::ChallengeGone
    );
    store.put_challenge(&ch("c3", 4, 900), 500).await.unwrap();
    assert!(store.get_challenge("c2").await.unwrap().is_none());
    assert!(store.get_challenge("c3").await.unwrap().is_some());

    // --- a new EK drops the VM's enrollment (it proved an AK under the
    // old one).
    let mut v = vm("vm-ek", 5);
    store
        .put_vm(&v, &audited("registration.put", "vm/vm-ek"))
        .await
        .unwrap();
    store
        .put_enrollment(&Enrollment {
            vm_id: "vm-ek".into(),
            ek_certificate: vec![1],
            ak_public: vec![2],
            enrolled_at: 5,
        })
        .await
        .unwrap();
    store
        .put_vm(&v, &audited("registration.put", "vm/vm-ek"))
        .await
        .unwrap();
    assert!(store.get_enrollment("vm-ek").await.unwrap().is_some());
    v.ek_public = vec![0xee; 8];
    store
        .put_vm(&v, &audited("registration.put", "vm/vm-ek"))
        .await
        .unwrap();
    assert!(store.get_enrollment("vm-ek").await.unwrap().is_none());

    control_suite(store).await;
    vm_page_suite(store).await;
    session_suite(store).await;

    // --- the schema was migrated once.
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        (1..=Store::schema_version()).collect::<Vec<_>>()
    );
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("store.db").display())
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sqlite_url(&dir)).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    suite(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_suite() {
    let Ok(admin_url) = std::env::var("TRUSTLAUNCH_TEST_POSTGRES") else {
        eprintln!("TRUSTLAUNCH_TEST_POSTGRES not set: PostgreSQL suite skipped");
        return;
    };
    sqlx::any::install_default_drivers();
    // A fresh database for this run, dropped afterwards.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "trustlaunch_t{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let mut admin = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("TRUSTLAUNCH_TEST_POSTGRES is set but PostgreSQL is not reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the test database (the role needs CREATEDB)");
    let base = admin_url.split('?').next().unwrap();
    let (server, _db) = base.rsplit_once('/').unwrap();
    let url = format!("{server}/{name}");

    let outcome = tokio::spawn(async move {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        suite(&store).await;
        store.close().await;
        // Reopening applies nothing again.
        let store = Store::open(&url).await.unwrap();
        assert_eq!(
            store.applied_migrations().await.unwrap(),
            (1..=Store::schema_version()).collect::<Vec<_>>()
        );
        assert_eq!(store.list_vms().await.unwrap().len(), 3);
        store.close().await;
    })
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_reopen_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let store = Store::open(&url).await.unwrap();
    store
        .put_vm(&vm("vm-a", 1), &audited("registration.put", "vm"))
        .await
        .unwrap();
    store
        .put_baseline(
            "vm-a",
            &json!({"x": 1}),
            None,
            &change(BaselineAction::Learned, "s", 5),
        )
        .await
        .unwrap();
    store.close().await;
    assert!(dir.path().join("store.db").exists());

    for _ in 0..2 {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.get_vm("vm-a").await.unwrap().unwrap(), vm("vm-a", 1));
        assert_eq!(
            store.get_baseline("vm-a").await.unwrap().unwrap().version,
            1
        );
        assert_eq!(store.baseline_audit("vm-a").await.unwrap().len(), 1);
        assert_eq!(
            store.applied_migrations().await.unwrap(),
            (1..=Store::schema_version()).collect::<Vec<_>>()
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_share_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let one = Store::open(&url).await.unwrap();
    let two = Store::open(&url).await.unwrap();

    // The file is in WAL mode.
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await.unwrap();

    one.put_vm(&vm("vm-a", 1), &audited("registration.put", "vm"))
        .await
        .unwrap();
    assert_eq!(two.get_vm("vm-a").await.unwrap().unwrap(), vm("vm-a", 1));
    assert!(two
        .add_attestation(&attestation("vm-a", 9, 10, true))
        .await
        .unwrap());
    assert!(!one
        .add_attestation(&attestation("vm-a", 9, 10, true))
        .await
        .unwrap());
    assert_eq!(one.history("vm-a", 5).await.unwrap().len(), 1);

    // Optimistic concurrency across the two: the slower writer conflicts.
    let c = change(BaselineAction::Learned, "s", 1);
    assert_eq!(
        one.put_baseline("vm-a", &json!(1), None, &c).await.unwrap(),
        1
    );
    assert_eq!(
        two.put_baseline("vm-a", &json!(2), Some(1), &c)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        one.put_baseline("vm-a", &json!(3), Some(1), &c).await,
        Err(StoreError::Conflict {
            current: Some(2),
            ..
        })
    ));
    assert_eq!(
        one.get_baseline("vm-a").await.unwrap().unwrap().baseline,
        json!(2)
    );

    // Concurrent writers from both stores: every change lands exactly once.
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .add_attestation(&attestation("vm-b", i, i64::from(i), true))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(two.history("vm-b", 100).await.unwrap().len(), 20);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn bad_urls_are_typed_errors_without_passwords() {
    match Store::open("mysql://u:hunter2@h/db").await {
        Err(e @ StoreError::UnsupportedUrl { .. }) => {
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        other => panic!("expected UnsupportedUrl, got {other:?}"),
    }
    let options = StoreOptions {
        max_connections: Some(1),
        acquire_timeout: std::time::Duration::from_secs(2),
    };
    // Port 1 on loopback: nothing listens.
    match Store::open_with("postgres://u:hunter2@127.0.0.1:1/db", &options).await {
        Err(e @ StoreError::Connect { .. }) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("u:***@127.0.0.1:1"), "{shown}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// The database and its WAL are the owner's alone: made 0600, a file an
/// older version left 0644 narrowed, a symlink in its place refused.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let db = dir.path().join("store.db");
    let store = Store::open(&url).await.unwrap();
    store
        .put_vm(&vm("vm-a", 1), &audited("registration.put", "vm"))
        .await
        .unwrap();
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.path().join("store.db-wal")), 0o600);
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&url).await.unwrap();
    assert_eq!(mode(&db), 0o600);
    store.close().await;
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("store.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let err = Store::open(&format!("sqlite://{}", link.display()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
}

/// Migration 4 on a database an older release left (SQLite, where the
/// baseline audit table is rebuilt for its new actions): the rows and
/// tokens it held are kept, tokens get their public ids, and the new
/// actions can be written.
#[tokio::test(flavor = "multi_thread")]
async fn migration_4_keeps_an_older_databases_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}", path.display());
    {
        let mut c = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        for sql in [
            "CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            "INSERT INTO schema_version VALUES (1, 0), (2, 0), (3, 0)",
            // Version 3's control-plane tables, which version 5 extends.
            "CREATE TABLE resources (key TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, \
             resource_group TEXT NOT NULL, name TEXT NOT NULL, parent TEXT, body TEXT NOT NULL, \
             etag BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
            "INSERT INTO resources VALUES ('/subscriptions/s/resourcegroups/r/providers/microsoft.compute/virtualmachinescalesets/old', \
             '/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachineScaleSets/old', \
             'Microsoft.Compute/virtualMachineScaleSets', 'r', 'old', NULL, '{}', 1, 0, 0)",
            "CREATE TABLE operations (id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, \
             status TEXT NOT NULL, state TEXT NOT NULL, error TEXT, revision BIGINT NOT NULL, \
             lease_owner TEXT, lease_until BIGINT, cancel_requested BIGINT NOT NULL DEFAULT 0, \
             created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
            "CREATE TABLE baseline_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, vm_id TEXT NOT NULL, \
             action TEXT NOT NULL CHECK (action IN ('learned', 'pinned', 'relearned', 'predicted')), \
             actor TEXT NOT NULL, at BIGINT NOT NULL, old_baseline TEXT, \
             new_baseline TEXT NOT NULL, version BIGINT NOT NULL)",
            "INSERT INTO baseline_audit (vm_id, action, actor, at, new_baseline, version) \
             VALUES ('vm-old', 'learned', 'system', 5, '{}', 1)",
            "CREATE TABLE baselines (vm_id TEXT PRIMARY KEY, baseline TEXT NOT NULL, \
             version BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
            "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, spec TEXT NOT NULL, \
             ek_public TEXT NOT NULL, created_at BIGINT NOT NULL, revision BIGINT NOT NULL DEFAULT 0)",
            "INSERT INTO vms (vm_id, spec, ek_public, created_at) VALUES ('old-tl', '{\"trustedLaunch\": true}', '00', 1)",
            "INSERT INTO vms (vm_id, spec, ek_public, created_at) VALUES ('old-std', '{}', '01', 2)",
            "CREATE TABLE attestations (id INTEGER PRIMARY KEY AUTOINCREMENT, vm_id TEXT NOT NULL, \
             boot_id TEXT NOT NULL, nonce TEXT NOT NULL, at BIGINT NOT NULL, healthy BIGINT NOT NULL, \
             appraisal TEXT NOT NULL, token TEXT, UNIQUE (vm_id, nonce))",
            // The newer verdict (by time) was inserted first.
            "INSERT INTO attestations (vm_id, boot_id, nonce, at, healthy, appraisal) \
             VALUES ('old-tl', 'b', '02', 20, 0, '{}'), ('old-tl', 'a', '01', 10, 1, '{}')",
            "CREATE TABLE api_tokens (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, \
             role TEXT NOT NULL CHECK (role IN ('reader', 'operator', 'admin')), \
             created_at BIGINT NOT NULL)",
            "INSERT INTO api_tokens VALUES \
             ('abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789', 'old', 'admin', 1)",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    }
    let store = Store::open(&url).await.unwrap();
    // A resource from before usage was recorded: handed back to be counted.
    let (sums, unrecorded) = store
        .usage_under(
            "/subscriptions/s/",
            &["Microsoft.Compute/virtualMachineScaleSets"],
        )
        .await
        .unwrap();
    assert!(sums.is_empty());
    assert_eq!(unrecorded.len(), 1);
    // Schema 6: security types read from the specs, newest verdicts from
    // the attestations (by time, not insertion).
    let page = store
        .vm_page(&VmQuery {
            limit: 10,
            ..VmQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(
        page.rows
            .iter()
            .map(|r| (
                r.vm_id.as_str(),
                r.security_type.as_str(),
                r.healthy,
                r.last_attested_at
            ))
            .collect::<Vec<_>>(),
        [
            ("old-std", "Standard", None, None),
            ("old-tl", "TrustedLaunch", Some(false), Some(20))
        ]
    );
    let audit = store.baseline_audit("vm-old").await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].change.action, BaselineAction::Learned);
    let tokens = store.api_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].id(), "abcdef012345");
    assert!(store
        .revoke_api_token(
            "abcdef012345",
            9,
            &audited("token.revoke", "token/abcdef012345")
        )
        .await
        .unwrap());
    store
        .put_baseline(
            "vm-old",
            &json!({"y": 2}),
            None,
            &change(BaselineAction::Proposed, "boot 1", 6),
        )
        .await
        .unwrap();
    let audit = store.baseline_audit("vm-old").await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit[1].id > audit[0].id);
    assert_eq!(audit[1].change.action, BaselineAction::Proposed);
}

/// Writers that read before they write (a VM's registration looks at the
/// EK it replaces) wait for each other instead of failing with "database
/// is locked": 64 registrations at once, over every pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_all_land_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(&sqlite_url(&dir)).await.unwrap());
    let mut tasks = Vec::new();
    for n in 0..64u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("vm-{n}");
            store
                .put_vm(&vm(&id, n), &audited("registration.put", &id))
                .await
        }));
    }
    let mut failed = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            failed.push(e.to_string());
        }
    }
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed);
    assert_eq!(store.list_vms().await.unwrap().len(), 64);
}
