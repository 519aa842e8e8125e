//! `tusk backup run`, the backup Job's command, against the sandbox API server (real HTTP, the
//! real kube client), a real PostgreSQL server and the embedded S3 server.

#[path = "../../backup/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use support::{Postgres, S3};
use tusk_api::backup_request::{BackupRequestPhase, PostgresBackupRequestSpec};
use tusk_api::common::ClusterReference;
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
    backup_command(sandbox, s3, cluster_uid, request, pg_port)
        .output()
        .unwrap()
}

/// `tusk backup run` for `request`, as its Job runs it.
fn backup_command(
    sandbox: &Sandbox,
    s3: &S3,
    cluster_uid: &str,
    request: &str,
    pg_port: u16,
) -> Command {
    let mut command = Command::new(TUSK);
    command
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
        .env("RUST_LOG", "warn");
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_run_stores_under_the_requests_own_key_and_reports_what_it_stored() {
    let (sandbox, client, uid) = sandbox_with_cluster().await;
    let s3 = S3::start().await;
    let source = Postgres::init(&[]);
    source.pgbench_init(1);
    let requests = request(&client, "manual-1").await;
    let request_uid = requests
        .get("manual-1")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    let output = backup_run(&sandbox, &s3, &uid, "manual-1", source.port);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The Job reports; it does not declare success, and it records no PostgresBackup: the
    // operator does both after checking the store.
    let status = requests.get("manual-1").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(BackupRequestPhase::Running));
    assert!(status.started_at.is_some());
    let progress = status.progress.unwrap();
    assert_eq!(progress.percent, 100);
    assert!(progress.bytes_done > 0);
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), NAMESPACE);
    assert!(
        backups
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let result = status.result.expect("the Job reports what it stored");
    let cluster_prefix = format!("prod/project-a/elephant/{uid}");
    assert_eq!(
        result.key,
        format!("{cluster_prefix}/base/{request_uid}.tar.gz.dare")
    );
    let store = s3.store("prod");
    let stored = store.list(&format!("{cluster_prefix}/base")).await.unwrap();
    assert_eq!(stored.len(), 1);
    let read_back = store.digest(&result.key).await.unwrap().unwrap();
    assert_eq!(result.size, read_back.size as i64);
    assert_eq!(result.sha256, read_back.sha256);
    assert_eq!(result.timeline, 1);
    assert_eq!(result.postgres_version, source.psql("SHOW server_version"));
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

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_ends_while_its_backup_runs_keeps_the_operators_word() {
    let (sandbox, client, uid) = sandbox_with_cluster().await;
    let s3 = S3::start().await;
    let source = Postgres::init(&[]);
    // Enough data that the backup is still running when the request is ended.
    source.pgbench_init(10);
    let requests = request(&client, "manual-3").await;

    let mut command = backup_command(&sandbox, &s3, &uid, "manual-3", source.port);
    let job = std::thread::spawn(move || command.output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = requests.get("manual-3").await.unwrap().status;
        if status.and_then(|status| status.phase) == Some(BackupRequestPhase::Running) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Job never reported its start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What the operator writes when it gives up on a request (a stall, a refused report).
    let ended = "The backup made no progress for 10m; its Job was stopped";
    requests
        .patch_status(
            "manual-3",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Failed", "message": ended}})),
        )
        .await
        .unwrap();

    let output = tokio::task::spawn_blocking(move || job.join().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the request ended while the backup ran"),
        "{stderr}"
    );
    let status = requests.get("manual-3").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(BackupRequestPhase::Failed));
    assert_eq!(status.message.as_deref(), Some(ended));
    assert!(status.result.is_none(), "{:?}", status.result);
    sandbox.shutdown().await;
}
