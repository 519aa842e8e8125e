//! The restore_test controller against the sandbox API server over real HTTP, with the
//! embedded S3 server. Pods do not run here, so a throwaway never becomes Ready on its own:
//! these tests cover what happens around it (no backup, the throwaway's shape and ownership,
//! a forged report, the timeout and the cleanup, the schedule). The whole run with real
//! PostgreSQL is crates/cli/tests/restore_test.rs.

mod support;

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{BUCKET, Operator, PREFIX, elephant, events_about, eventually, namespace};
use tusk_api::backup::{BackupEncryption, S3Location};
use tusk_api::common::{ClusterReference, SecretKeySelector};
use tusk_api::restore_test::RestoreTestResult;
use tusk_api::{
    PostgresBackup, PostgresBackupSchedule, PostgresBackupSpec, PostgresCluster,
    PostgresRestoreTest, names,
};
use tusk_operator::clock::ManualClock;

const NS: &str = "project-a";

async fn test_object(client: &Client, name: &str) -> PostgresRestoreTest {
    Api::<PostgresRestoreTest>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .expect("the restore test")
}

async fn create_test(client: &Client, name: &str, extra: Value) {
    let mut spec = json!({"cluster": {"name": "elephant"}, "interval": 24, "timeoutMinutes": 2});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let test: PostgresRestoreTest = serde_json::from_value(json!({
        "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresRestoreTest",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a restore test");
    Api::<PostgresRestoreTest>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &test)
        .await
        .expect("the restore test is created");
}

/// A PostgresBackup of `cluster` as tusk records it, with its object in the store.
async fn record_backup(
    client: &Client,
    s3: &tusk_sandbox::s3::S3Server,
    cluster: &PostgresCluster,
) {
    let prefix = names::cluster_storage_prefix(
        PREFIX,
        NS,
        "elephant",
        cluster.metadata.uid.as_deref().expect("uid"),
    );
    let key = names::base_backup_key(&prefix, "b1-uid");
    let path = s3.root().join(BUCKET).join(&key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("directories");
    std::fs::write(&path, b"encrypted bytes").expect("object");
    let mut backup = PostgresBackup::new(
        "b1",
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
                bucket: BUCKET.into(),
                endpoint: Some(s3.endpoint().to_owned()),
                path: key,
            },
            compression: Default::default(),
            size: 15,
            sha256: None,
            run_duration: Some("1s".into()),
            start_lsn: Some("0/2000028".into()),
            stop_lsn: Some("0/2000100".into()),
            timeline: Some(1),
            postgres_version: Some("15.8".into()),
            deletion_policy: Default::default(),
        },
    );
    backup.metadata.owner_references = Some(vec![
        kube::Resource::controller_owner_ref(cluster, &()).expect("owner"),
    ]);
    Api::<PostgresBackup>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &backup)
        .await
        .expect("the backup is recorded");
}

/// Waits until the cluster `name` no longer exists.
async fn gone(clusters: &Api<PostgresCluster>, name: &str, what: &str) {
    eventually(what, || async {
        clusters.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// A sandbox with tusk's CRDs, an S3 server, the operator's configuration and the namespace.
struct World {
    _dir: tempfile::TempDir,
    _sandbox: tusk_sandbox::Sandbox,
    client: Client,
    s3: tusk_sandbox::s3::S3Server,
    config: tusk_operator::config::OperatorConfig,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sandbox, client) = support::sandbox().await;
        let s3 = support::s3(dir.path()).await;
        let config = support::config(&client, &s3).await;
        namespace(&client, NS).await;
        Self {
            _dir: dir,
            _sandbox: sandbox,
            client,
            s3,
            config,
        }
    }
}

/// elephant, with one recorded backup.
async fn elephant_with_a_backup(
    client: &Client,
    s3: &tusk_sandbox::s3::S3Server,
) -> PostgresCluster {
    let source = Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &elephant())
        .await
        .expect("elephant");
    record_backup(client, s3, &source).await;
    source
}

async fn finished(client: &Client, name: &str) -> tusk_api::restore_test::RestoreTestRun {
    eventually(&format!("restore test {name} finishes a run"), || async {
        let run = test_object(client, name).await.status?.last_run?;
        (run.result != RestoreTestResult::Running).then_some(run)
    })
    .await
}

#[tokio::test]
async fn a_cluster_without_a_backup_fails_its_restore_test_with_the_reason() {
    let World {
        _dir,
        _sandbox,
        client,
        s3: _,
        config,
    } = World::new().await;
    let operator = Operator::start(config, client.clone());
    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &elephant())
        .await
        .expect("elephant");
    create_test(&client, "nightly", json!({})).await;

    let run = finished(&client, "nightly").await;
    assert_eq!(run.result, RestoreTestResult::Failed);
    assert_eq!(run.reason.as_deref(), Some("NoBackup"));
    assert!(run.throwaway_cluster.is_none());
    let status = test_object(&client, "nightly")
        .await
        .status
        .expect("status");
    let degraded = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NoBackup")
    );
    // The next run is a day after this one started, not right away again.
    let next = status.next_run_at.expect("a next run").0;
    assert_eq!(next, run.started_at.0 + SignedDuration::from_hours(24));
    let events = events_about(&client, NS, "nightly").await;
    assert!(events.iter().any(|event| {
        event.type_.as_deref() == Some("Warning")
            && event.reason.as_deref() == Some("RestoreTestFailed")
            && event
                .note
                .as_deref()
                .is_some_and(|note| note.starts_with("NoBackup"))
    }));
    assert!(
        Api::<PostgresCluster>::namespaced(client.clone(), NS)
            .get_opt("nightly-restore-test")
            .await
            .expect("get")
            .is_none()
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_throwaway_belongs_to_its_test_takes_no_backups_and_goes_when_the_run_times_out() {
    let World {
        _dir,
        _sandbox,
        client,
        s3,
        config,
    } = World::new().await;
    // Ahead of the API server's clock, so that the test, created after this, is due at once.
    let clock = ManualClock::new(Timestamp::now() + SignedDuration::from_mins(1));
    let operator = Operator::start_with(
        config,
        client.clone(),
        "test-operator",
        Arc::new(clock.clone()),
    );
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let source = elephant_with_a_backup(&client, &s3).await;
    create_test(&client, "nightly", json!({})).await;
    let test = test_object(&client, "nightly").await;

    // The throwaway: controlled by the test, restoring the newest backup as taken, no WAL
    // archiving; the cluster controller builds it but gives it no backup schedule.
    let throwaway = eventually("the throwaway cluster exists", || async {
        clusters
            .get_opt("nightly-restore-test")
            .await
            .ok()
            .flatten()
    })
    .await;
    let owner = &throwaway.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            Some(owner.uid.as_str()),
            owner.controller
        ),
        (
            "PostgresRestoreTest",
            test.metadata.uid.as_deref(),
            Some(true)
        )
    );
    assert_eq!(
        throwaway
            .labels()
            .get("postgres.tusk.dev/restore-test")
            .map(String::as_str),
        Some("nightly")
    );
    assert!(!throwaway.spec.wal_archiving);
    let restore = throwaway.spec.restore.as_ref().expect("a restore");
    assert_eq!(restore.backup.name, "b1");
    assert!(restore.target_time.is_none() && restore.target_lsn.is_none() && !restore.latest);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually("the cluster controller built the throwaway", || async {
        stateful_sets
            .get_opt("nightly-restore-test")
            .await
            .ok()
            .flatten()
    })
    .await;
    let schedules: Api<PostgresBackupSchedule> = Api::namespaced(client.clone(), NS);
    eventually("the source's schedule exists", || async {
        schedules.get_opt("elephant-default").await.ok().flatten()
    })
    .await;
    assert!(
        schedules
            .get_opt("nightly-restore-test-default")
            .await
            .expect("get")
            .is_none(),
        "a throwaway must never get a backup schedule"
    );
    let run = test_object(&client, "nightly")
        .await
        .status
        .and_then(|status| status.last_run)
        .expect("a run in progress");
    assert_eq!(run.result, RestoreTestResult::Running);
    assert_eq!(run.backup.as_deref(), Some("b1"));

    // A report for another run, or before the throwaway was ever Ready, is not taken.
    let tests: Api<PostgresRestoreTest> = Api::namespaced(client.clone(), NS);
    for run_id in [
        "another-run",
        throwaway.metadata.uid.as_deref().expect("uid"),
    ] {
        tests
            .patch_status(
                "nightly",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"report": {"runId": run_id, "amcheckPassed": true}}}),
                ),
            )
            .await
            .expect("a report");
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let run = test_object(&client, "nightly")
        .await
        .status
        .and_then(|status| status.last_run)
        .expect("the run");
    assert_eq!(run.result, RestoreTestResult::Running, "{run:?}");

    // The deadline passes: the run fails, and the throwaway and all it stored go.
    clock.advance(SignedDuration::from_mins(3));
    let run = finished(&client, "nightly").await;
    assert_eq!(run.reason.as_deref(), Some("Timeout"), "{run:?}");
    assert!(run.recovery_seconds.is_none());
    gone(
        &clusters,
        "nightly-restore-test",
        "the throwaway is deleted",
    )
    .await;
    let source_after = clusters.get("elephant").await.expect("the source stays");
    assert_eq!(source_after.metadata.uid, source.metadata.uid);
    assert!(
        Api::<PostgresBackup>::namespaced(client.clone(), NS)
            .get_opt("b1")
            .await
            .expect("get")
            .is_some(),
        "the restored backup stays"
    );

    // A day after the run started, the next one starts with a new throwaway.
    clock.advance(SignedDuration::from_hours(24));
    let first_uid = throwaway.metadata.uid.clone();
    eventually("the next run starts with a new throwaway", || async {
        let next = clusters.get_opt("nightly-restore-test").await.ok()??;
        (next.metadata.uid != first_uid && next.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;

    // Deleting the test takes its throwaway along.
    tests
        .delete("nightly", &DeleteParams::default())
        .await
        .expect("deleted");
    gone(
        &clusters,
        "nightly-restore-test",
        "the throwaway goes with its test",
    )
    .await;
    operator.stop().await;
}

/// Writes the status a StatefulSet's controller and kubelet would once its pod is ready, so
/// that the cluster controller reports the cluster Ready.
async fn pretend_ready(client: &Client, name: &str) {
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let stateful_set = eventually("the StatefulSet exists", || async {
        stateful_sets.get_opt(name).await.ok().flatten()
    })
    .await;
    let status = json!({"status": {
        "observedGeneration": stateful_set.metadata.generation,
        "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
        "currentRevision": "r1", "updateRevision": "r1",
    }});
    stateful_sets
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("StatefulSet status");
}

#[tokio::test]
async fn only_the_report_of_the_run_in_progress_counts_and_a_failed_check_fails_the_run() {
    let World {
        _dir,
        _sandbox,
        client,
        s3,
        config,
    } = World::new().await;
    let operator = Operator::start(config, client.clone());
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    elephant_with_a_backup(&client, &s3).await;
    create_test(&client, "nightly", json!({})).await;
    let throwaway = eventually("the throwaway cluster exists", || async {
        clusters
            .get_opt("nightly-restore-test")
            .await
            .ok()
            .flatten()
    })
    .await;
    pretend_ready(&client, "nightly-restore-test").await;

    // Ready: the time to recover is recorded and the check Job starts, with its own identity.
    let run = eventually("the time to recover is recorded", || async {
        let run = test_object(&client, "nightly").await.status?.last_run?;
        run.recovery_seconds.is_some().then_some(run)
    })
    .await;
    assert_eq!(run.result, RestoreTestResult::Running);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), NS);
    let job = eventually("the check Job exists", || async {
        jobs.get_opt("nightly-restore-test-check")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        job.metadata.owner_references.as_ref().expect("owner")[0].uid,
        throwaway.metadata.uid.clone().expect("uid")
    );
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), NS);
    let role = roles
        .get("nightly-restore-test-check")
        .await
        .expect("the Job's Role");
    assert_eq!(
        role.rules.expect("rules")[0].resource_names.as_deref(),
        Some(&["nightly".to_owned()][..])
    );

    // A report naming another run is not taken.
    let tests: Api<PostgresRestoreTest> = Api::namespaced(client.clone(), NS);
    let report = |run_id: &str, passed: bool| {
        json!({"status": {"report": {"runId": run_id, "amcheckPassed": passed,
                                     "amcheckOutput": "heap table \"app.public.t\", block 0: invalid line pointer"}}})
    };
    tests
        .patch_status(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(report("another-run", true)),
        )
        .await
        .expect("a forged report");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let run = test_object(&client, "nightly")
        .await
        .status
        .and_then(|status| status.last_run)
        .expect("the run");
    assert_eq!(run.result, RestoreTestResult::Running, "{run:?}");

    // The run's own report, with corruption found: the run fails and the throwaway goes.
    let uid = throwaway.metadata.uid.clone().expect("uid");
    tests
        .patch_status(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(report(&uid, false)),
        )
        .await
        .expect("the report");
    let run = finished(&client, "nightly").await;
    assert_eq!(run.reason.as_deref(), Some("CheckFailed"), "{run:?}");
    assert!(
        run.message
            .as_deref()
            .is_some_and(|message| message.contains("invalid line pointer")),
        "{run:?}"
    );
    gone(
        &clusters,
        "nightly-restore-test",
        "the throwaway is deleted",
    )
    .await;
    assert!(
        test_object(&client, "nightly")
            .await
            .status
            .expect("status")
            .report
            .is_none()
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_cluster_of_the_throwaways_name_that_is_not_the_tests_is_never_touched() {
    let World {
        _dir,
        _sandbox,
        client,
        s3,
        config,
    } = World::new().await;
    let operator = Operator::start(config, client.clone());
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    elephant_with_a_backup(&client, &s3).await;
    let mut customers = elephant();
    customers.metadata.name = Some("nightly-restore-test".into());
    let customers = clusters
        .create(&PostParams::default(), &customers)
        .await
        .expect("the customer's own cluster");
    create_test(&client, "nightly", json!({})).await;

    let run = finished(&client, "nightly").await;
    assert_eq!(run.reason.as_deref(), Some("NameTaken"), "{run:?}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still = clusters
        .get("nightly-restore-test")
        .await
        .expect("the customer's cluster stays");
    assert_eq!(still.metadata.uid, customers.metadata.uid);
    assert!(still.metadata.deletion_timestamp.is_none());
    operator.stop().await;
}

/// A client of `sandbox` that records the method and path of every request other than a read.
async fn recording_client(
    sandbox: &tusk_sandbox::Sandbox,
    writes: Arc<std::sync::Mutex<Vec<String>>>,
) -> Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client configuration");
    let record =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            if request.method() != http::Method::GET {
                writes.lock().unwrap().push(format!(
                    "{} {}",
                    request.method(),
                    request.uri().path()
                ));
            }
            request
        });
    kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&record)
        .build()
}

#[tokio::test]
async fn a_restoring_cluster_is_refreshed_without_applying_its_children_again() {
    let World {
        _dir,
        _sandbox,
        client,
        s3,
        config,
    } = World::new().await;
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let operator = Operator::start(config, recording_client(&_sandbox, writes.clone()).await);
    elephant_with_a_backup(&client, &s3).await;
    let mut restored = elephant();
    restored.metadata.name = Some("restored".into());
    restored.spec.restore =
        Some(serde_json::from_value(json!({"backup": {"name": "b1"}})).unwrap());
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    clusters
        .create(&PostParams::default(), &restored)
        .await
        .expect("the restored cluster");
    // Pods do not run here, so the restore never ends: the cluster stays Restoring, looked at
    // every two seconds.
    eventually("restored is Restoring", || async {
        let cluster = clusters.get("restored").await.ok()?;
        let phase = cluster.status?.phase?;
        (phase == tusk_api::cluster::ClusterPhase::Restoring).then_some(())
    })
    .await;
    writes.lock().unwrap().clear();
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let applied: Vec<String> = writes
        .lock()
        .unwrap()
        .iter()
        .filter(|write| write.starts_with("PATCH") && write.contains("/restored"))
        .filter(|write| !write.ends_with("/status") && !write.contains("/events/"))
        .cloned()
        .collect();
    // One full reconcile (each of its seven children applied once: StatefulSet, Service,
    // ConfigMap, three Secrets, backup schedule) every 30 seconds at most, rather than one
    // every two seconds (71 applies in 20 seconds when every reconcile applied them all).
    let children = 7;
    assert!(
        applied.len() <= children,
        "{} applies of restored's children in 20 seconds: {applied:#?}",
        applied.len()
    );
    operator.stop().await;
}
