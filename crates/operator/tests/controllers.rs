//! The controllers against the sandbox API server over real HTTP, with the embedded S3 server.
//! Pods do not run here: tests write the state Kubernetes would (PVCs, Job status) themselves.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use support::{BUCKET, Operator, PREFIX, elephant, events_about, eventually, namespace};
use tusk_api::backup::{BackupEncryption, S3Location};
use tusk_api::common::{ClusterReference, SecretKeySelector};
use tusk_api::remote_cluster::RemoteClusterReference;
use tusk_api::{
    PostgresBackup, PostgresBackupRequest, PostgresBackupRequestSpec, PostgresBackupSchedule,
    PostgresBackupScheduleSpec, PostgresBackupSpec, PostgresCluster, PostgresRemoteCluster,
    PostgresRemoteClusterSpec, labels, names,
};
use tusk_backup::store::{BackupStore, StoreConfig};
use tusk_operator::clock::ManualClock;

const NS: &str = "project-a";

async fn get<K>(client: &Client, name: &str) -> Option<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .expect("get")
}

async fn create_elephant(client: &Client) -> PostgresCluster {
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    clusters
        .create(&PostParams::default(), &elephant())
        .await
        .expect("elephant is created")
}

/// Waits until elephant carries the storage finalizer, which holds its deletion until its
/// store prefix is swept.
async fn wait_for_storage_finalizer(client: &Client) {
    eventually("the storage finalizer is on", || async {
        let cluster: PostgresCluster = get(client, "elephant").await?;
        cluster
            .finalizers()
            .iter()
            .any(|f| f == tusk_api::finalizers::CLUSTER_STORAGE)
            .then_some(())
    })
    .await;
}

/// Waits until elephant is gone from the API, its finalizers done.
async fn wait_until_elephant_is_gone(client: &Client) {
    eventually("the cluster is gone", || async {
        get::<PostgresCluster>(client, "elephant")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

fn store(s3: &tusk_sandbox::s3::S3Server, bucket: &str) -> BackupStore {
    BackupStore::new(&StoreConfig {
        url: format!("s3://{bucket}"),
        endpoint: Some(s3.endpoint().to_owned()),
        region: None,
        access_key_id: Some(s3.access_key().to_owned()),
        secret_access_key: Some(s3.secret_key().to_owned()),
        allow_http: true,
    })
    .expect("store opens")
}

fn put_object(s3: &tusk_sandbox::s3::S3Server, bucket: &str, key: &str) {
    let path = s3.root().join(bucket).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"encrypted bytes").unwrap();
}

/// The prefix of `cluster`'s objects in the test store.
fn prefix_of(cluster: &PostgresCluster) -> String {
    names::cluster_storage_prefix(
        PREFIX,
        NS,
        "elephant",
        cluster.metadata.uid.as_ref().unwrap(),
    )
}

/// A PostgresBackup as tusk records it: owned by `cluster`, in the configured bucket, below
/// the cluster's prefix.
fn backup(
    name: &str,
    cluster: &PostgresCluster,
    bucket: &str,
    endpoint: &str,
    start_lsn: &str,
) -> PostgresBackup {
    let mut backup = PostgresBackup::new(
        name,
        PostgresBackupSpec {
            cluster: ClusterReference::new("elephant"),
            display_name: String::new(),
            triggered_by: Default::default(),
            encryption: BackupEncryption {
                algorithm: Default::default(),
                passphrase_secret_ref: SecretKeySelector {
                    name: "elephant-credentials".into(),
                    key: "backup-passphrase".into(),
                },
            },
            s3: S3Location {
                bucket: bucket.into(),
                endpoint: Some(endpoint.into()),
                path: names::base_backup_key(&prefix_of(cluster), &format!("{name}-uid")),
            },
            compression: Default::default(),
            size: 15,
            sha256: None,
            run_duration: Some("1s".into()),
            start_lsn: Some(start_lsn.into()),
            stop_lsn: None,
            timeline: Some(1),
            postgres_version: Some("15.8".into()),
            deletion_policy: Default::default(),
        },
    );
    backup.metadata.owner_references = Some(vec![cluster.controller_owner_ref(&()).unwrap()]);
    backup
}

fn controlled_by(meta: &ObjectMeta, cluster: &PostgresCluster) -> bool {
    meta.owner_references.iter().flatten().any(|owner| {
        owner.controller == Some(true) && Some(&owner.uid) == cluster.metadata.uid.as_ref()
    })
}

#[tokio::test]
async fn elephant_gets_its_children_and_takes_them_along_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let cluster = create_elephant(&client).await;

    let sts: StatefulSet = eventually("the StatefulSet exists", || get(&client, "elephant")).await;
    let credentials: Secret =
        eventually("the Secret exists", || get(&client, "elephant-credentials")).await;
    let config_map: ConfigMap =
        eventually("the ConfigMap exists", || get(&client, "elephant-config")).await;
    let service: Service = eventually("the Service exists", || get(&client, "elephant-rw")).await;
    let schedule: PostgresBackupSchedule = eventually("the default schedule exists", || {
        get(&client, "elephant-default")
    })
    .await;
    for meta in [
        &sts.metadata,
        &credentials.metadata,
        &config_map.metadata,
        &service.metadata,
        &schedule.metadata,
    ] {
        assert!(
            controlled_by(meta, &cluster),
            "{:?} is not controlled by elephant",
            meta.name
        );
    }
    assert_eq!(schedule.spec.interval, Some(24));
    let pod = sts.spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let resources = container.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "2Gi");
    assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "2Gi");
    let claim = &sts.spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    assert_eq!(
        container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/livez")
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert!(
        config_map.data.as_ref().unwrap()["postgresql.conf"].contains("shared_buffers = '512MB'")
    );

    let recorded: PostgresCluster = eventually("the status is written", || async {
        let cluster: PostgresCluster = get(&client, "elephant").await?;
        cluster.status.as_ref()?.endpoint.as_ref()?;
        Some(cluster)
    })
    .await;
    assert_eq!(recorded.spec.postgres_version.as_deref(), Some("15"));
    assert_eq!(
        recorded.status.as_ref().unwrap().endpoint.as_deref(),
        Some("elephant-rw.project-a.svc:5432")
    );

    // A person's request is adopted by the cluster; a backup the Job would create is owned too.
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NS);
    let request = PostgresBackupRequest::new(
        "my-backup",
        PostgresBackupRequestSpec {
            cluster: ClusterReference::new("elephant"),
        },
    );
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    eventually("the request is adopted", || async {
        let request: PostgresBackupRequest = get(&client, "my-backup").await?;
        controlled_by(&request.metadata, &cluster).then_some(())
    })
    .await;
    let owned_backup = backup("my-backup", &cluster, BUCKET, s3.endpoint(), "0/2000028");
    Api::<PostgresBackup>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &owned_backup)
        .await
        .unwrap();

    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .delete("elephant", &DeleteParams::default())
        .await
        .unwrap();
    eventually("every child is gone", || async {
        let gone = get::<StatefulSet>(&client, "elephant").await.is_none()
            && get::<Secret>(&client, "elephant-credentials")
                .await
                .is_none()
            && get::<ConfigMap>(&client, "elephant-config").await.is_none()
            && get::<Service>(&client, "elephant-rw").await.is_none()
            && get::<PostgresBackupSchedule>(&client, "elephant-default")
                .await
                .is_none()
            && get::<PostgresBackupRequest>(&client, "my-backup")
                .await
                .is_none()
            && get::<PostgresBackup>(&client, "my-backup").await.is_none()
            && get::<Job>(&client, "my-backup-backup").await.is_none();
        gone.then_some(())
    })
    .await;
    operator.stop().await;
}

/// The keys below a prefix in the test store, sorted.
async fn keys_under(s3: &tusk_sandbox::s3::S3Server, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store(s3, BUCKET)
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn deleting_a_backup_while_another_is_in_flight_keeps_every_wal_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let cluster = create_elephant(&client).await;

    // Without the backup in flight, deleting b1 would free segments 1 and 2: b2 starts in 3.
    let b1 = backup("b1", &cluster, BUCKET, s3.endpoint(), "0/1000028");
    let b2 = backup("b2", &cluster, BUCKET, s3.endpoint(), "0/3000028");
    put_object(&s3, BUCKET, &b1.spec.s3.path);
    put_object(&s3, BUCKET, &b2.spec.s3.path);
    let segments = ["000000010000000000000001", "000000010000000000000002"];
    for segment in segments {
        put_object(
            &s3,
            BUCKET,
            &names::wal_segment_key(&prefix_of(&cluster), segment),
        );
    }
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NS);
    backups.create(&PostParams::default(), &b1).await.unwrap();
    backups.create(&PostParams::default(), &b2).await.unwrap();
    // A backup is in flight: it needs WAL from a start it has not recorded yet.
    Api::<PostgresBackupRequest>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &PostgresBackupRequest::new(
                "in-flight",
                PostgresBackupRequestSpec {
                    cluster: ClusterReference::new("elephant"),
                },
            ),
        )
        .await
        .unwrap();
    eventually("the finalizer is on", || async {
        let backup: PostgresBackup = get(&client, "b1").await?;
        (!backup.finalizers().is_empty()).then_some(())
    })
    .await;
    backups
        .delete("b1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the backup is gone", || async {
        get::<PostgresBackup>(&client, "b1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let mut kept: Vec<String> = segments
        .iter()
        .map(|segment| names::wal_segment_key(&prefix_of(&cluster), segment))
        .collect();
    kept.push(b2.spec.s3.path.clone());
    kept.sort();
    assert_eq!(keys_under(&s3, &prefix_of(&cluster)).await, kept);
    operator.stop().await;
}

/// The attack on "deletion leaves nothing behind": a PostgreSQL still running while the prefix is
/// swept archives its next segment into the emptied prefix, where it stays for good. A pod of
/// the cluster that its node never confirms stopped (bound to a node no kubelet runs) must hold
/// the sweep back; once it is gone, everything goes.
#[tokio::test]
async fn a_deleted_clusters_store_is_swept_only_once_its_instances_have_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let cluster = create_elephant(&client).await;
    wait_for_storage_finalizer(&client).await;
    eventually("the StatefulSet is in place", || async {
        get::<StatefulSet>(&client, "elephant").await
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let instance: Pod = serde_json::from_value(json!({
        "metadata": {"name": "elephant-straggler",
                     "labels": tusk_operator::labels::instance_selector("elephant")},
        "spec": {"nodeName": "a-node-that-is-gone",
                 "containers": [{"name": "postgres", "image": "postgres"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &instance)
        .await
        .unwrap();
    let segment = names::wal_segment_key(&prefix_of(&cluster), "000000010000000000000007");
    put_object(&s3, BUCKET, &segment);

    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .delete("elephant", &DeleteParams::default())
        .await
        .unwrap();
    // An unprotected cleanup sweeps within a second of the deletion.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        keys_under(&s3, &prefix_of(&cluster)).await,
        vec![segment.clone()],
        "the prefix was swept while an instance still ran"
    );
    assert!(get::<PostgresCluster>(&client, "elephant").await.is_some());
    // The instances are being stopped instead.
    eventually("the StatefulSet is scaled to zero", || async {
        let set: StatefulSet = get(&client, "elephant").await?;
        (set.spec.replicas == Some(0)).then_some(())
    })
    .await;

    pods.delete(
        "elephant-straggler",
        &DeleteParams::default().grace_period(0),
    )
    .await
    .unwrap();
    wait_until_elephant_is_gone(&client).await;
    assert_eq!(
        keys_under(&s3, &prefix_of(&cluster)).await,
        Vec::<String>::new()
    );
    operator.stop().await;
}

#[tokio::test]
async fn deleting_a_cluster_removes_all_it_stored_even_without_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let first = create_elephant(&client).await;
    wait_for_storage_finalizer(&client).await;
    // Archived WAL and the object of a backup that was never recorded.
    let stored = [
        names::wal_segment_key(&prefix_of(&first), "000000010000000000000001"),
        names::base_backup_key(&prefix_of(&first), "never-recorded"),
    ];
    for key in &stored {
        put_object(&s3, BUCKET, key);
    }
    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .delete("elephant", &DeleteParams::default())
        .await
        .unwrap();
    wait_until_elephant_is_gone(&client).await;
    assert_eq!(
        keys_under(&s3, &prefix_of(&first)).await,
        Vec::<String>::new()
    );

    // A cluster of the same name starts with a prefix of its own.
    let second = create_elephant(&client).await;
    assert_ne!(prefix_of(&first), prefix_of(&second));
    operator.stop().await;
}

#[tokio::test]
async fn deleting_a_backup_deletes_its_data_and_the_wal_only_it_needed() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let cluster = create_elephant(&client).await;

    // b1 starts in segment 1, b2 in segment 3: deleting b1 frees segments 1 and 2 only.
    let b1 = backup("b1", &cluster, BUCKET, s3.endpoint(), "0/1000028");
    let b2 = backup("b2", &cluster, BUCKET, s3.endpoint(), "0/3000028");
    put_object(&s3, BUCKET, &b1.spec.s3.path);
    put_object(&s3, BUCKET, &b2.spec.s3.path);
    for segment in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ] {
        put_object(
            &s3,
            BUCKET,
            &names::wal_segment_key(&prefix_of(&cluster), segment),
        );
    }
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NS);
    backups.create(&PostParams::default(), &b1).await.unwrap();
    backups.create(&PostParams::default(), &b2).await.unwrap();
    eventually("the finalizer is on", || async {
        let backup: PostgresBackup = get(&client, "b1").await?;
        backup
            .finalizers()
            .iter()
            .any(|f| f == tusk_api::finalizers::BACKUP_STORAGE)
            .then_some(())
    })
    .await;
    backups
        .delete("b1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the backup is gone", || async {
        get::<PostgresBackup>(&client, "b1")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    let mut left: Vec<String> = store(&s3, BUCKET)
        .list(&prefix_of(&cluster))
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.key)
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            b2.spec.s3.path.clone(),
            names::wal_segment_key(&prefix_of(&cluster), "000000010000000000000003"),
        ]
    );
    let events = events_about(&client, NS, "b1").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Finalizer")
                && e.note.as_deref() == Some("Deleting backup b1 from the object store"))
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_missing_bucket_blocks_deletion_until_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let mut config = support::config(&client, &s3).await;
    // The configured bucket is missing, as when it was misnamed or is being re-created.
    config.store.url = format!("s3://later-bucket/{PREFIX}");
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    let cluster = create_elephant(&client).await;

    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NS);
    backups
        .create(
            &PostParams::default(),
            &backup("b2", &cluster, "later-bucket", s3.endpoint(), "0/2000028"),
        )
        .await
        .unwrap();
    eventually("the finalizer is on", || async {
        let backup: PostgresBackup = get(&client, "b2").await?;
        (!backup.finalizers().is_empty()).then_some(())
    })
    .await;
    backups
        .delete("b2", &DeleteParams::default())
        .await
        .unwrap();
    let warning = eventually("a Warning Event carries the store's message", || async {
        events_about(&client, NS, "b2")
            .await
            .into_iter()
            .find(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("Error"))
    })
    .await;
    // The store's own words, as AWS S3 and the embedded server both put them.
    let note = warning.note.clone().unwrap_or_default();
    assert!(
        note.contains("The specified bucket does not exist"),
        "{note}"
    );
    assert!(
        get::<PostgresBackup>(&client, "b2").await.is_some(),
        "the object stays"
    );

    s3.create_bucket("later-bucket").unwrap();
    eventually("a retry removes the backup", || async {
        get::<PostgresBackup>(&client, "b2")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_failed_job_fails_its_request_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    create_elephant(&client).await;
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NS);
    let request = PostgresBackupRequest::new(
        "nightly",
        PostgresBackupRequestSpec {
            cluster: ClusterReference::new("elephant"),
        },
    );
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let job: Job = eventually("the Job exists", || get(&client, "nightly-backup")).await;
    assert_eq!(
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("nightly-backup")
    );
    let started: PostgresBackupRequest = eventually("the request is Pending", || async {
        let request: PostgresBackupRequest = get(&client, "nightly").await?;
        request.status.as_ref()?.job_name.as_ref()?;
        Some(request)
    })
    .await;
    assert_eq!(
        started.status.unwrap().job_name.as_deref(),
        Some("nightly-backup")
    );

    let now = Timestamp::now().to_string();
    Api::<Job>::namespaced(client.clone(), NS)
        .patch_status(
            "nightly-backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"failed": 1, "conditions": [{
                "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastProbeTime": now, "lastTransitionTime": now,
            }]}})),
        )
        .await
        .unwrap();
    let failed: PostgresBackupRequest = eventually("the request fails", || async {
        let request: PostgresBackupRequest = get(&client, "nightly").await?;
        (request.status.as_ref()?.phase? == tusk_api::backup_request::BackupRequestPhase::Failed)
            .then_some(request)
    })
    .await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(message.contains("BackoffLimitExceeded"), "{message}");
    eventually("a BackupFailed Event is published", || async {
        events_about(&client, NS, "nightly")
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("BackupFailed") && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_larger_disk_grows_the_volumes_and_a_smaller_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    create_elephant(&client).await;
    let sts: StatefulSet = eventually("the StatefulSet exists", || get(&client, "elephant")).await;

    // What the StatefulSet controller would create from the claim template.
    let template = sts.spec.volume_claim_templates.unwrap()[0].clone();
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data-elephant-0".into()),
            labels: template.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        ..PersistentVolumeClaim::default()
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    claims.create(&PostParams::default(), &claim).await.unwrap();
    // Bound, as a provisioner binds it: kube-apiserver lets only a bound claim's request grow.
    claims
        .patch_status(
            "data-elephant-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}})),
        )
        .await
        .unwrap();

    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    clusters
        .patch(
            "elephant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"postgresDiskSize": 3}})),
        )
        .await
        .unwrap();
    eventually("the PVC asks for 3Gi", || async {
        let claim = claims.get("data-elephant-0").await.ok()?;
        let size = claim.spec?.resources?.requests?.get("storage")?.0.clone();
        (size == "3Gi").then_some(())
    })
    .await;
    let refused = clusters
        .patch(
            "elephant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"postgresDiskSize": 2}})),
        )
        .await;
    assert!(matches!(refused, Err(kube::Error::Api(status)) if status.code == 422));
    operator.stop().await;
}

#[tokio::test]
async fn schedules_run_on_time_one_at_a_time_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let mut config = support::config(&client, &s3).await;
    // The driven clock jumps by hours; running requests must not count as stalled.
    config.backup_job.stall_timeout = Duration::from_secs(6 * 3600);
    namespace(&client, NS).await;
    let clock = ManualClock::new(Timestamp::now());
    let operator = Operator::start_with(
        config,
        client.clone(),
        "test-operator",
        Arc::new(clock.clone()),
    );
    let cluster = create_elephant(&client).await;
    let schedules: Api<PostgresBackupSchedule> = Api::namespaced(client.clone(), NS);
    let mut hourly = PostgresBackupSchedule::new(
        "hourly",
        PostgresBackupScheduleSpec {
            cluster: ClusterReference::new("elephant"),
            interval: Some(1),
            schedule: None,
            keep: Some(2),
            suspend: false,
            triggered_by: Default::default(),
        },
    );
    hourly.metadata.namespace = Some(NS.into());
    schedules
        .create(&PostParams::default(), &hourly)
        .await
        .unwrap();
    let first_due = eventually("the next run is planned", || async {
        let schedule: PostgresBackupSchedule = get(&client, "hourly").await?;
        schedule.status?.next_run_at.map(|time| time.0)
    })
    .await;
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NS);
    let of_hourly = ListParams::default().labels(&format!("{}=hourly", labels::SCHEDULE));
    let count = || async { requests.list(&of_hourly).await.unwrap().items.len() };
    assert_eq!(count().await, 0, "nothing before the due time");

    let unfinished = || async {
        requests
            .list(&of_hourly)
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|request| {
                request.status.as_ref().and_then(|status| status.phase)
                    != Some(tusk_api::backup_request::BackupRequestPhase::Succeeded)
            })
            .map(|request| request.name_any())
    };
    // What the backup Job does when it succeeds: record the backup, then report success.
    let succeed = |name: String| {
        let client = client.clone();
        let requests = requests.clone();
        let endpoint = s3.endpoint().to_owned();
        let cluster = cluster.clone();
        async move {
            Api::<PostgresBackup>::namespaced(client, NS)
                .create(
                    &PostParams::default(),
                    &backup(&name, &cluster, BUCKET, &endpoint, "0/2000028"),
                )
                .await
                .unwrap();
            requests
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Succeeded", "backupName": name}})),
                )
                .await
                .unwrap();
            name
        }
    };

    clock.set(first_due + SignedDuration::from_secs(1));
    eventually("a request is created when due", || async {
        (count().await == 1).then_some(())
    })
    .await;
    // Due again while that one runs: no second request.
    clock.advance(SignedDuration::from_hours(1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count().await, 1, "a second request while one runs");
    let oldest = succeed(unfinished().await.unwrap()).await;
    // The run that was held back happens as soon as the running one ends.
    eventually("the held-back run happens", || async {
        (count().await == 2).then_some(())
    })
    .await;
    succeed(unfinished().await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count().await, 2, "no request before the next due time");
    clock.advance(SignedDuration::from_hours(1));
    eventually("the next run happens on time", || async {
        (count().await == 3).then_some(())
    })
    .await;
    succeed(unfinished().await.unwrap()).await;
    let finished = [oldest];
    eventually("the oldest backup beyond keep is deleted", || async {
        let left: Vec<String> = Api::<PostgresBackup>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        (left.len() == 2 && !left.contains(&finished[0])).then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let mut config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    config.leader_election.enabled = true;
    config.leader_election.lease_namespace = "tusk-system".into();
    config.leader_election.lease_duration = Duration::from_secs(2);
    config.leader_election.renew_interval = Duration::from_millis(300);
    let clock = Arc::new(tusk_operator::clock::SystemClock);
    let first = Operator::start_with(config.clone(), client.clone(), "replica-a", clock.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "tusk-system");
    let holder = || async {
        leases
            .get_opt("tusk-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    eventually("replica-a leads", || async {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let second = Operator::start_with(config, client.clone(), "replica-b", clock);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        holder().await.as_deref(),
        Some("replica-a"),
        "the standby must not take a live Lease"
    );
    create_elephant(&client).await;
    eventually("the leader reconciles", || {
        get::<StatefulSet>(&client, "elephant")
    })
    .await;

    first.stop().await;
    eventually("replica-b takes over", || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let mut other = elephant();
    other.metadata.name = Some("mammoth".into());
    clusters
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    eventually("the new leader reconciles", || {
        get::<StatefulSet>(&client, "mammoth")
    })
    .await;
    second.stop().await;
}

async fn kubeconfig_secret(client: &Client, name: &str, kubeconfig: String) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([("kubeconfig".to_owned(), ByteString(kubeconfig.into_bytes()))].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The `ca.crt` of elephant's credentials Secret.
async fn credentials_ca(client: &Client) -> ByteString {
    let credentials: Secret = get(client, "elephant-credentials").await.unwrap();
    credentials.data.unwrap()["ca.crt"].clone()
}

/// The names elephant's server certificate was issued for, as its Secret records them.
async fn tls_names(client: &Client) -> Option<String> {
    let tls: Secret = get(client, "elephant-tls").await?;
    tls.metadata
        .annotations?
        .get("postgres.tusk.dev/tls-names")
        .cloned()
}

fn link(name: &str, secret: &str) -> PostgresRemoteCluster {
    PostgresRemoteCluster::new(
        name,
        PostgresRemoteClusterSpec {
            cluster: ClusterReference::new("elephant"),
            remote_cluster: RemoteClusterReference {
                name: secret.into(),
            },
        },
    )
}

#[tokio::test]
async fn linking_a_remote_cluster_builds_the_tunnel_there_and_unlinking_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let (customer, customer_client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());
    create_elephant(&client).await;
    let credentials: Secret =
        eventually("credentials exist", || get(&client, "elephant-credentials")).await;
    let app_password = credentials.data.unwrap()["password"].clone();

    kubeconfig_secret(
        &client,
        "customer-kubeconfig",
        std::fs::read_to_string(customer.kubeconfig_path()).unwrap(),
    )
    .await;
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    links
        .create(
            &PostParams::default(),
            &link("elephant-customer", "customer-kubeconfig"),
        )
        .await
        .unwrap();

    let remote_secrets: Api<Secret> = Api::namespaced(customer_client.clone(), "default");
    let remote_services: Api<Service> = Api::namespaced(customer_client.clone(), "default");
    let remote_deployments: Api<Deployment> = Api::namespaced(customer_client.clone(), "default");
    let connection = eventually("the connection Secret exists remotely", || async {
        remote_secrets.get_opt("elephant-connection").await.ok()?
    })
    .await;
    assert_eq!(connection.data.as_ref().unwrap()["password"], app_password);
    // A client there verifies the server against the tunnel Service's name.
    let credentials_ca = credentials_ca(&client).await;
    assert_eq!(connection.data.as_ref().unwrap()["ca.crt"], credentials_ca);
    assert_eq!(
        connection.data.as_ref().unwrap()["uri"].0,
        b"postgresql://app@elephant.default.svc:5432/app?sslmode=verify-full"
    );
    eventually(
        "the server certificate names the tunnel Service",
        || async {
            tls_names(&client)
                .await?
                .contains("elephant.default.svc.cluster.local")
                .then_some(())
        },
    )
    .await;
    let deployment = eventually("the tunnel Deployment exists remotely", || async {
        remote_deployments.get_opt("elephant-tunnel").await.ok()?
    })
    .await;
    let args = deployment.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    // Through the router, which it asks for the database by its router host name.
    let after = |flag: &str| {
        let at = args.iter().position(|arg| arg == flag)?;
        args.get(at + 1).map(String::as_str)
    };
    assert_eq!(
        after("--target"),
        Some("elephant.project-a.db.tusk.local:5432")
    );
    assert_eq!(
        after("--route-name"),
        Some("elephant.project-a.db.tusk.local")
    );
    eventually("the tunnel Service exists remotely", || async {
        remote_services.get_opt("elephant").await.ok()?
    })
    .await;
    eventually("the link is Ready", || async {
        let link: PostgresRemoteCluster = get(&client, "elephant-customer").await?;
        (link.status?.endpoint.as_deref() == Some("elephant.default.svc:5432")).then_some(())
    })
    .await;

    links
        .delete("elephant-customer", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the link is gone", || async {
        get::<PostgresRemoteCluster>(&client, "elephant-customer")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        remote_secrets
            .get_opt("elephant-connection")
            .await
            .unwrap()
            .is_none()
    );
    assert!(remote_services.get_opt("elephant").await.unwrap().is_none());
    eventually(
        "the server certificate no longer names the tunnel",
        || async { (!tls_names(&client).await?.contains("elephant.default.svc")).then_some(()) },
    )
    .await;
    assert!(
        remote_deployments
            .get_opt("elephant-tunnel")
            .await
            .unwrap()
            .is_none()
    );

    // An unreachable cluster: a Warning Event, and retries. Its Secret deleted: the link goes.
    let unreachable = std::fs::read_to_string(customer.kubeconfig_path())
        .unwrap()
        .replace(&customer.url().to_string(), "https://127.0.0.1:1");
    kubeconfig_secret(&client, "gone-kubeconfig", unreachable).await;
    links
        .create(
            &PostParams::default(),
            &link("elephant-gone", "gone-kubeconfig"),
        )
        .await
        .unwrap();
    eventually("an Unreachable Warning is published", || async {
        events_about(&client, NS, "elephant-gone")
            .await
            .into_iter()
            .find(|e| {
                e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("Unreachable")
            })
    })
    .await;
    Api::<Secret>::namespaced(client.clone(), NS)
        .delete("gone-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    links
        .delete("elephant-gone", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the link is released", || async {
        get::<PostgresRemoteCluster>(&client, "elephant-gone")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        events_about(&client, NS, "elephant-gone")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("CleanupSkipped"))
    );
    operator.stop().await;
}

/// The cluster's Degraded condition as `(status, reason, message)`, once it has one.
async fn degraded(client: &Client) -> Option<(String, String, String)> {
    let cluster: PostgresCluster = get(client, "elephant").await?;
    let condition = cluster
        .status?
        .conditions
        .into_iter()
        .find(|condition| condition.type_ == "Degraded")?;
    Some((condition.status, condition.reason, condition.message))
}

#[tokio::test]
async fn a_cluster_whose_newest_backup_is_older_than_twice_its_schedules_interval_is_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let start = Timestamp::now();
    let clock = ManualClock::new(start);
    let operator = Operator::start_with(
        config,
        client.clone(),
        "test-operator",
        Arc::new(clock.clone()),
    );
    let cluster = create_elephant(&client).await;
    // The default schedule backs up daily.
    let schedule: PostgresBackupSchedule = eventually("the default schedule exists", || {
        get(&client, "elephant-default")
    })
    .await;
    assert_eq!(schedule.spec.interval, Some(24));
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NS);
    backups
        .create(
            &PostParams::default(),
            &backup("b1", &cluster, BUCKET, s3.endpoint(), "0/2000028"),
        )
        .await
        .unwrap();
    eventually("b1 is the last backup", || async {
        let cluster: PostgresCluster = get(&client, "elephant").await?;
        (cluster.status?.last_backup?.name == "b1").then_some(())
    })
    .await;

    // Within twice the interval: nothing to say.
    clock.set(start + SignedDuration::from_hours(47));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = degraded(&client).await;
    assert!(
        fresh
            .as_ref()
            .is_some_and(|(status, _, _)| status == "False"),
        "{fresh:?}"
    );

    clock.set(start + SignedDuration::from_hours(49));
    let message = eventually("the cluster is Degraded for BackupStale", || async {
        match degraded(&client).await? {
            (status, reason, message) if status == "True" && reason == "BackupStale" => {
                Some(message)
            }
            _ => None,
        }
    })
    .await;
    assert!(
        message.contains("b1") && message.contains("default") && message.contains("24h"),
        "{message}"
    );
    let phase = get::<PostgresCluster>(&client, "elephant")
        .await
        .and_then(|cluster| cluster.status?.phase);
    assert_eq!(phase, Some(tusk_api::cluster::ClusterPhase::Degraded));
    eventually("a Warning BackupStale Event", || async {
        events_about(&client, NS, "elephant")
            .await
            .into_iter()
            .find(|event| {
                event.type_.as_deref() == Some("Warning")
                    && event.reason.as_deref() == Some("BackupStale")
                    && event
                        .note
                        .as_deref()
                        .is_some_and(|note| note.contains("b1"))
            })
    })
    .await;

    // A new backup, recent by the clock: fresh again.
    backups
        .create(
            &PostParams::default(),
            &backup("b2", &cluster, BUCKET, s3.endpoint(), "0/4000028"),
        )
        .await
        .unwrap();
    clock.set(Timestamp::now() + SignedDuration::from_hours(1));
    eventually("the cluster is no longer Degraded", || async {
        let (status, _, _) = degraded(&client).await?;
        (status == "False").then_some(())
    })
    .await;
    eventually("a Normal Recovered Event", || async {
        events_about(&client, NS, "elephant")
            .await
            .into_iter()
            .find(|event| {
                event.type_.as_deref() == Some("Normal")
                    && event.reason.as_deref() == Some("Recovered")
                    && event.action.as_deref() == Some("BackUp")
            })
    })
    .await;
    operator.stop().await;
}
