//! A full run — a cluster, a failing backup, a deleted backup whose bucket is missing, a remote
//! link — and then every Event, every status and every log line is searched for the generated
//! passwords, the backup passphrase and the object store's secret key.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Operator, elephant, eventually, namespace};
use tusk_api::common::ClusterReference;
use tusk_api::remote_cluster::RemoteClusterReference;
use tusk_api::{
    PostgresBackupRequest, PostgresBackupRequestSpec, PostgresBackupSchedule, PostgresCluster,
    PostgresRemoteCluster, PostgresRemoteClusterSpec,
};

const NS: &str = "project-a";

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_an_event_a_status_or_a_log_line() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, client) = support::sandbox().await;
    let (customer, _customer_client) = support::sandbox().await;
    let s3 = support::s3(dir.path()).await;
    let config = support::config(&client, &s3).await;
    namespace(&client, NS).await;
    let operator = Operator::start(config, client.clone());

    Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &elephant())
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let credentials = eventually("credentials exist", || async {
        secrets.get_opt("elephant-credentials").await.ok()?
    })
    .await;
    // The cluster's store keys are its own gateway keys, naming it, not the platform's.
    let store_keys = eventually("the backup-store Secret exists", || async {
        secrets.get_opt("elephant-backup-store").await.ok()?
    })
    .await
    .data
    .unwrap();
    let access_key_id = String::from_utf8(store_keys["access-key-id"].0.clone()).unwrap();
    assert!(
        access_key_id.starts_with("tusk.project-a.elephant."),
        "{access_key_id}"
    );

    // A backup whose Job fails.
    let requests: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), NS);
    let request = PostgresBackupRequest::new(
        "doomed",
        PostgresBackupRequestSpec {
            cluster: ClusterReference::new("elephant"),
        },
    );
    requests
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    eventually("the Job exists", || async {
        jobs.get_opt("doomed-backup").await.ok()?
    })
    .await;
    let now = jiff::Timestamp::now().to_string();
    jobs.patch_status(
        "doomed-backup",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Failed", "status": "True",
            "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline",
            "lastProbeTime": now, "lastTransitionTime": now}]}})),
    )
    .await
    .unwrap();
    eventually("the request fails", || async {
        let request = requests.get("doomed").await.ok()?;
        request.status?.phase?.is_finished().then_some(())
    })
    .await;

    // A remote link, and its removal.
    let kubeconfig = std::fs::read_to_string(customer.kubeconfig_path()).unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("customer-kubeconfig".into()),
            ..ObjectMeta::default()
        },
        data: Some([("kubeconfig".to_owned(), ByteString(kubeconfig.into_bytes()))].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let links: Api<PostgresRemoteCluster> = Api::namespaced(client.clone(), NS);
    let link = PostgresRemoteCluster::new(
        "customer",
        PostgresRemoteClusterSpec {
            cluster: ClusterReference::new("elephant"),
            remote_cluster: RemoteClusterReference {
                name: "customer-kubeconfig".into(),
            },
        },
    );
    links.create(&PostParams::default(), &link).await.unwrap();
    eventually("the link is Ready", || async {
        links
            .get("customer")
            .await
            .ok()?
            .status?
            .endpoint
            .map(|_| ())
    })
    .await;
    links
        .delete("customer", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the link is gone", || async {
        links
            .get_opt("customer")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    operator.stop().await;

    let mut secret_values: Vec<String> = credentials
        .data
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key.ends_with("password") || key.ends_with("passphrase"))
        .map(|(_, value)| String::from_utf8(value.0).unwrap())
        .collect();
    secret_values.push(s3.secret_key().to_owned());
    assert_eq!(secret_values.len(), 4);

    let mut observed = String::new();
    for event in Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        observed.push_str(&serde_json::to_string(&event).unwrap());
    }
    let statuses = [
        serde_json::to_string(
            &Api::<PostgresCluster>::namespaced(client.clone(), NS)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items,
        )
        .unwrap(),
        serde_json::to_string(&requests.list(&ListParams::default()).await.unwrap().items).unwrap(),
        serde_json::to_string(
            &Api::<PostgresBackupSchedule>::namespaced(client.clone(), NS)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items,
        )
        .unwrap(),
    ];
    for status in statuses {
        observed.push_str(&status);
    }
    let captured = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        captured.contains("reconcile") || !captured.is_empty(),
        "logs were captured"
    );
    observed.push_str(&captured);
    assert!(observed.contains("BackupFailed"), "the run produced Events");
    for value in &secret_values {
        assert!(!observed.contains(value.as_str()), "a secret value leaked");
    }

    // The platform's store keys are nowhere in the tenant's namespace: no Secret, no pod
    // template of the instance or of a backup Job.
    let platform_keys = [s3.access_key(), s3.secret_key()];
    for secret in secrets.list(&ListParams::default()).await.unwrap() {
        for (key, value) in secret.data.unwrap_or_default() {
            let value = String::from_utf8_lossy(&value.0);
            assert!(
                !platform_keys
                    .iter()
                    .any(|platform| value.contains(platform)),
                "Secret {} key {key} holds the platform's store keys",
                secret.metadata.name.unwrap_or_default()
            );
        }
    }
    let mut templates =
        serde_json::to_string(&jobs.list(&ListParams::default()).await.unwrap().items).unwrap();
    templates.push_str(
        &serde_json::to_string(
            &Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), NS)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items,
        )
        .unwrap(),
    );
    assert!(templates.contains("elephant-backup-store"));
    assert!(
        !platform_keys
            .iter()
            .any(|platform| templates.contains(platform))
    );
    assert!(
        !templates.contains(s3.endpoint()),
        "pods are pointed at the gateway"
    );
}
