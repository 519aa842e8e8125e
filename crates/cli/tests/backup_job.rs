//! `tusk backup run`, the backup Job's command, against the sandbox API server (real HTTP, the
//! real kube client), a real PostgreSQL server and the embedded S3 server.

#[path = "../../backup/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use support::{Postgres, S3};
use tusk_api::backup_request::{BackupRequestPhase, PostgresBackupRequestSpec};
use tusk_api::common::{ClusterReference, TriggeredBy};
use tusk_api::{PostgresBackup, PostgresBackupRequest, PostgresCluster};
use tusk_sandbox::Sandbox;

const TUSK: &str = env!("CARGO_BIN_EXE_tusk");
const NAMESPACE: &str = "project-a";

async fn sandbox_with_cluster() -> (Sandbox, kube::Client, String) {
    tusk_operator::install_crypto_provider();
    let sandbox = Sandbox::builder().start().await.unwrap();
    let client = sandbox.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tusk_api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while clusters.list(&ListParams::default()).await.is_err() {
        assert!(Instant::now() < deadline, "the CRDs are never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spec = serde_json::from_value(serde_json::json!({
        "displayName": "Elephant", "memorySize": 1, "postgresDiskSize": 1
    }))
    .unwrap();
    let cluster = clusters
        .create(
            &PostParams::default(),
            &PostgresCluster::new("elephant", spec),
        )
        .await
        .unwrap();
    let uid = cluster.metadata.uid.unwrap();
    (sandbox, client, uid)
}

async fn request(client: &kube::Client, name: &str) -> Api<PostgresBackupRequest> {
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let request = PostgresBackupRequest::new(
        name,
        PostgresBackupRequestSpec {
            cluster: ClusterReference::new("elephant"),
            triggered_by: TriggeredBy::User,
        },
    );
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    requests
}

fn backup_run(
    sandbox: &Sandbox,
    s3: &S3,
    cluster_uid: &str,
    request: &str,
    pg_port: u16,
) -> std::process::Output {
    Command::new(TUSK)
        .args(["backup", "run", "--request", request])
        .envs(s3.env("prod"))
        .env("KUBECONFIG", sandbox.kubeconfig_path())
        .env("POD_NAMESPACE", NAMESPACE)
        .env("TUSK_CLUSTER_UID", cluster_uid)
        .env("TUSK_WAL_ARCHIVING", "false")
        .env("TUSK_BACKUP_PASSPHRASE", "job passphrase")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg_port.to_string())
        .env("PGUSER", "postgres")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_run_records_the_backup_and_ends_the_request() {
    let (sandbox, client, uid) = sandbox_with_cluster().await;
    let s3 = S3::start().await;
    let source = Postgres::init(&[]);
    source.pgbench_init(1);
    let requests = request(&client, "manual-1").await;

    let output = backup_run(&sandbox, &s3, &uid, "manual-1", source.port);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let status = requests.get("manual-1").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(BackupRequestPhase::Succeeded));
    assert_eq!(status.backup_name.as_deref(), Some("manual-1"));
    assert!(status.started_at.is_some() && status.finished_at.is_some());
    let progress = status.progress.unwrap();
    assert_eq!(progress.percent, 100);
    assert!(progress.bytes_done > 0);

    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NAMESPACE);
    let backup = backups.get("manual-1").await.unwrap();
    let owner = &backup.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.name.as_str(), owner.uid.as_str()),
        ("elephant", uid.as_str())
    );
    assert_eq!(backup.spec.s3.bucket, s3.bucket);
    assert_eq!(
        backup.spec.s3.path,
        "prod/project-a/elephant/base/manual-1.tar.gz.dare"
    );
    let stored = s3
        .store("prod")
        .list("prod/project-a/elephant/base")
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(backup.spec.size, stored[0].size as i64);
    assert_eq!(backup.spec.timeline, Some(1));
    assert!(backup.spec.start_lsn.is_some() && backup.spec.stop_lsn.is_some());
    assert_eq!(
        backup.spec.postgres_version.as_deref(),
        Some(source.psql("SHOW server_version").as_str())
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_run_with_postgres_down_fails_the_request_with_the_reason() {
    let (sandbox, client, uid) = sandbox_with_cluster().await;
    let s3 = S3::start().await;
    let mut source = Postgres::init(&[]);
    let port = source.port;
    source.stop();
    let requests = request(&client, "manual-2").await;

    let output = backup_run(&sandbox, &s3, &uid, "manual-2", port);
    assert!(!output.status.success());

    let status = requests.get("manual-2").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(BackupRequestPhase::Failed));
    let message = status.message.unwrap();
    assert!(
        message.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("job passphrase"));
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NAMESPACE);
    assert!(
        backups
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(s3.store("").list("").await.unwrap().is_empty());
    sandbox.shutdown().await;
}
