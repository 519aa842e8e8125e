//! Shared pieces of the operator's integration tests: a sandbox with tusk's CRDs, the embedded
//! S3 server, and the operator running in-process.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tusk_operator::clock::{Clock, SystemClock};
use tusk_operator::config::{OperatorConfig, StoreCredentials};
use tusk_operator::{RunError, RunOptions};
use tusk_sandbox::Sandbox;
use tusk_sandbox::s3::{S3Options, S3Server};

/// The bucket every test stores backups in.
pub const BUCKET: &str = "tusk-backups";
/// The store prefix.
pub const PREFIX: &str = "prod";

/// A sandbox with tusk's CRDs installed.
pub async fn sandbox() -> (Sandbox, Client) {
    tusk_operator::install_crypto_provider();
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let client = sandbox.client().await.expect("sandbox client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in tusk_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD is accepted");
    }
    let clusters: Api<tusk_api::PostgresCluster> = Api::all(client.clone());
    eventually("the CRDs are served", || async {
        clusters.list(&ListParams::default()).await.ok()
    })
    .await;
    (sandbox, client)
}

/// Creates a namespace.
pub async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace is created");
}

/// An embedded S3 server with the backup bucket.
pub async fn s3(root: &std::path::Path) -> S3Server {
    let server = S3Server::start(root.join("s3"), S3Options::default())
        .await
        .expect("S3 starts");
    server.create_bucket(BUCKET).expect("bucket is created");
    server
}

/// The operator's configuration for a sandbox and an S3 server, with the store's keys in the
/// Secret `tusk-system/store`, which this creates.
pub async fn config(client: &Client, s3: &S3Server) -> OperatorConfig {
    namespace(client, "tusk-system").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "tusk-system");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("store".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                (
                    "access-key-id".to_owned(),
                    ByteString(s3.access_key().as_bytes().to_vec()),
                ),
                (
                    "secret-access-key".to_owned(),
                    ByteString(s3.secret_key().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("store Secret is created");
    let mut config = OperatorConfig::from_yaml(&format!(
        "store:\n  url: s3://{BUCKET}/{PREFIX}\n  endpoint: {}\n  allowHttp: true\nhttpAddress: 127.0.0.1:0\nleaderElection:\n  enabled: false\n",
        s3.endpoint()
    ))
    .expect("test configuration parses");
    config.store.credentials = Some(StoreCredentials {
        namespace: "tusk-system".into(),
        name: "store".into(),
        access_key_id_key: "access-key-id".into(),
        secret_access_key_key: "secret-access-key".into(),
    });
    config.validate().expect("test configuration is valid");
    config
}

/// An operator running in-process.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl Operator {
    /// Starts the operator on `client` with the system clock.
    pub fn start(config: OperatorConfig, client: Client) -> Self {
        Self::start_with(config, client, "test-operator", Arc::new(SystemClock))
    }

    /// Starts the operator with an identity and a clock.
    pub fn start_with(
        config: OperatorConfig,
        client: Client,
        identity: &str,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RunOptions {
            identity: identity.to_owned(),
            clock,
        };
        let task = tokio::spawn(tusk_operator::run_with(
            config,
            client,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the operator and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("operator task")
                .expect("operator stops cleanly");
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most 60 seconds.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_for(what, Duration::from_secs(60), probe).await
}

/// Polls `probe` until it returns `Some`, for at most `limit`.
pub async fn eventually_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every Event in `namespace` about the object called `name`.
pub async fn events_about(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .expect("Events list")
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// A PostgresCluster from examples/elephant.yaml.
pub fn elephant() -> tusk_api::PostgresCluster {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/elephant.yaml"
    ))
    .expect("examples/elephant.yaml");
    serde_yaml_ng::from_str(&text).expect("elephant parses")
}
