//! The API server: the Kubernetes REST API over HTTP/1.1 on loopback.
//!
//! Start one with [`Sandbox::builder`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = tusk_sandbox::apiserver::Sandbox::builder().start().await?;
//! let client = sandbox.client().await?;
//! // ... use `client`, or point kubectl at `sandbox.kubeconfig_path()` ...
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod aggregation;
mod auth;
mod builtin_kinds;
mod defaults;
mod discovery;
mod error;
mod events;
mod eviction;
mod ext;
mod impersonation;
mod kubernetes_service;
mod list_options;
mod namespace_defaults;
pub(crate) mod ops;
mod persist;
mod protobuf;
mod rbac;
pub(crate) mod resources;
mod reviews;
mod scale;
mod server;
mod services;
pub(crate) mod storage_classes;
pub(crate) mod store;
mod streams;
mod tls;
mod typed;
pub(crate) mod validation;
mod watch;

pub mod openapi;
pub mod patch;
pub mod schema;
pub mod selector;
pub mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::RngExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use auth::SigningKeyError;
pub use persist::PersistError;
pub use tls::TlsError;

use resources::NAMESPACE_STORAGE;
use store::Store;

pub(crate) use discovery::{MAJOR as KUBERNETES_MAJOR, MINOR as KUBERNETES_MINOR, go_arch};

/// What `GET .../pods/<name>/log` asks for, once the server has resolved the container.
#[derive(Clone, Debug)]
pub struct LogRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid: a pod recreated under the same name has a log of its own.
    pub uid: String,
    /// The container's name.
    pub container: String,
    /// The log of the previous instance of the container, after a restart.
    pub previous: bool,
    /// Keep streaming what the container writes until it stops.
    pub follow: bool,
    /// Only the last lines.
    pub tail_lines: Option<usize>,
    /// Only the lines written at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Each line preceded by the time it was written (RFC 3339, nanoseconds).
    pub timestamps: bool,
}

/// A log as it streams out: chunks of bytes.
pub type LogStream = std::pin::Pin<Box<dyn futures::Stream<Item = bytes::Bytes> + Send>>;

/// Where the sandbox reads pod logs from; the local runtime implements it. Without one,
/// `GET .../pods/<name>/log` answers an empty log.
pub trait PodLogs: Send + Sync {
    /// The log asked for, or the message of a 400 Bad Request (no such container instance).
    fn logs(&self, request: LogRequest) -> Result<LogStream, String>;
}

/// Starting the sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for (0 for any).
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory's database could not be opened or read.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The serving certificate could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The client the local runtime talks through could not be built.
    #[error("cannot start the local runtime: {0}")]
    Client(#[source] ClientError),
    /// The local runtime's directory could not be prepared.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The ServiceAccount token signing key could not be read or made.
    #[error(transparent)]
    SigningKey(#[from] SigningKeyError),
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Building a kube client for the sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read back.
    #[error("cannot read the sandbox kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// The client could not be built.
    #[error("cannot build a client for the sandbox: {0}")]
    Client(#[from] kube::Error),
}

/// How long an Event stays after its last write unless set: kube-apiserver's `--event-ttl`.
const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// Options of a sandbox about to start.
pub struct SandboxBuilder {
    data_dir: Option<PathBuf>,
    event_ttl: Duration,
    port: u16,
    kubeconfig_path: Option<PathBuf>,
    pod_logs: Option<Arc<dyn PodLogs>>,
    runtime: Option<crate::runtime::RuntimeOptions>,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            event_ttl: DEFAULT_EVENT_TTL,
            port: 0,
            kubeconfig_path: None,
            pod_logs: None,
            runtime: None,
        }
    }
}

impl SandboxBuilder {
    /// Deletes each Event this long after it was last written (default one hour, as
    /// kube-apiserver's `--event-ttl`).
    pub fn event_ttl(mut self, ttl: Duration) -> Self {
        self.event_ttl = ttl;
        self
    }

    /// Persists objects (and the resourceVersion) in this directory, reloading what is there.
    /// Without it, everything lives in memory only.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Listens on this port of 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Writes the kubeconfig here (default: a private temporary directory).
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig_path = Some(path.into());
        self
    }

    /// Serves pod logs from this source (the local runtime).
    pub fn pod_logs(mut self, source: Arc<dyn PodLogs>) -> Self {
        self.pod_logs = Some(source);
        self
    }

    /// Runs the pods bound to this sandbox's node as local processes (the kubelet stand-in),
    /// which also serves their logs.
    pub fn runtime(mut self, options: crate::runtime::RuntimeOptions) -> Self {
        self.runtime = Some(options);
        self
    }

    /// Binds, loads the data directory if any, writes the kubeconfig and starts serving.
    pub async fn start(self) -> Result<Sandbox, StartError> {
        // A workspace build links both of rustls' backends (object_store brings aws-lc-rs, kube
        // and this server use ring), and rustls then refuses to guess. Whoever installed one
        // first wins; both serve this server and its clients equally.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (persist, (rv, objects)) = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                let (persist, loaded) = persist::Persist::open(dir)?;
                (Some(persist), loaded)
            }
            None => (None, (0, Vec::new())),
        };
        let fresh = objects.is_empty();
        let store = Arc::new(Store::new(rv, objects, persist));
        if fresh {
            seed_namespaces(&store);
        }
        if self.runtime.is_some() {
            // Before anything reads a pod: none of the node's containers runs yet.
            mark_node_pods_restarting(&store);
        }
        store.write(rbac::seed);
        store.write(aggregation::seed);
        store.write(storage_classes::seed);
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(|source| StartError::Bind {
                port: self.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: self.port,
            source,
        })?;
        let token = random_token();
        let authenticator = auth::Authenticator::new(token.clone(), self.data_dir.as_deref())?;
        let (kubeconfig_path, kubeconfig_dir) = match self.kubeconfig_path {
            Some(path) => (path, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("tusk-sandbox-")
                    .tempdir()
                    .map_err(|source| StartError::Kubeconfig {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        let tls = tls::generate()?;
        let url = format!("https://{addr}");
        write_kubeconfig(&kubeconfig_path, &url, &token, &tls.ca_pem).map_err(|source| {
            StartError::Kubeconfig {
                path: kubeconfig_path.clone(),
                source,
            }
        })?;
        let shutdown = CancellationToken::new();
        let runtime_options = self.runtime.map(crate::runtime::place).transpose()?;
        let runtime_logs = runtime_options
            .as_ref()
            .map(|options| Arc::new(crate::runtime::LogFiles::new(options)));
        let pod_access = runtime_options
            .as_ref()
            .map(|_| Arc::new(crate::runtime::exec::PodAccess::default()));
        let pod_logs = match &runtime_logs {
            Some(logs) => Some(logs.clone() as Arc<dyn PodLogs>),
            None => self.pod_logs,
        };
        let server = Arc::new(server::Server {
            store: store.clone(),
            auth: authenticator,
            address: addr.to_string(),
            shutdown: shutdown.clone(),
            pod_logs,
            pod_access: pod_access.clone(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::gc::run(
            store.clone(),
            self.event_ttl,
            shutdown.clone(),
        ));
        tasks.spawn(namespace_defaults::run(
            store.clone(),
            tls.ca_pem.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(aggregation::run(store.clone(), shutdown.clone()));
        tasks.spawn(kubernetes_service::run(
            store.clone(),
            addr,
            shutdown.clone(),
        ));
        tasks.spawn(accept_loop(
            listener,
            tls.acceptor,
            server,
            shutdown.clone(),
        ));
        let mut sandbox = Sandbox {
            addr,
            url,
            token,
            ca_pem: tls.ca_pem,
            kubeconfig_path,
            _kubeconfig_dir: kubeconfig_dir,
            store,
            shutdown,
            tasks,
            runtime: None,
            workloads_shutdown: CancellationToken::new(),
        };
        if let (Some(options), Some(logs), Some(access)) =
            (runtime_options, runtime_logs, pod_access)
        {
            let client = sandbox.client().await.map_err(StartError::Client)?;
            let api = crate::runtime::ApiEndpoint {
                port: addr.port(),
                ca_pem: sandbox.ca_pem.clone(),
            };
            sandbox.runtime = Some(crate::runtime::Runtime::start(
                options,
                client.clone(),
                api,
                logs,
                access,
            )?);
            // Pods only run where something schedules them from workloads and routes
            // Services to them: the controller-manager's and kube-proxy's parts.
            let stop = sandbox.workloads_shutdown.clone();
            sandbox.tasks.spawn(crate::controllers::run(
                client.clone(),
                crate::controllers::ControllerOptions::default(),
                stop.clone(),
            ));
            sandbox.tasks.spawn(crate::proxy::run(client, stop));
        }
        Ok(sandbox)
    }
}

/// A running sandbox API server. Dropping it stops it too, but [`Sandbox::shutdown`] also
/// waits until everything is written to the data directory.
pub struct Sandbox {
    addr: SocketAddr,
    url: String,
    token: String,
    ca_pem: String,
    kubeconfig_path: PathBuf,
    _kubeconfig_dir: Option<tempfile::TempDir>,
    store: Arc<Store>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    runtime: Option<crate::runtime::Runtime>,
    /// Stops the workload controllers and the service proxy before the runtime stops pods, so
    /// that no controller replaces a pod that is only going down with the sandbox.
    workloads_shutdown: CancellationToken,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never printed.
        f.debug_struct("Sandbox")
            .field("url", &self.url)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A builder with the defaults: any free port, in memory, kubeconfig in a temporary dir.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token clients must present.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The PEM certificate of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The kubeconfig (mode 0600) pointing at this sandbox.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A kube client for this sandbox, configured from its kubeconfig.
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig_path)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Forgets the watch history, as an etcd compaction would: every watch resuming from an
    /// older resourceVersion then gets a 410 Gone ERROR event and must relist. For tests.
    pub fn compact_watch_history(&self) {
        self.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.read().rv
    }

    /// Stops the local runtime's pods (when it runs one), stops serving, ends every watch,
    /// and waits until the data directory is up to date.
    pub async fn shutdown(mut self) {
        self.workloads_shutdown.cancel();
        // The kubelet stops its containers while the API server still answers it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown().await;
        }
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.workloads_shutdown.cancel();
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<server::Server>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "the sandbox could not accept a connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "TLS handshake with a sandbox client failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| server.clone().handle(request));
            // exec, attach and port-forward switch protocols on their connection.
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The namespaces every cluster starts with.
fn seed_namespaces(store: &Store) {
    let storage: Arc<str> = Arc::from(NAMESPACE_STORAGE);
    store.write(|txn| {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace = json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": format!("{:032x}", rand::rng().random::<u128>()),
                    "creationTimestamp": ops::now(),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            txn.put(&storage, namespace);
        }
    });
}

/// Marks every pod of the runtime's node that is not finished as not ready, its containers
/// neither ready nor started, before the API is served: the node restarts, so none of its
/// containers runs until the runtime has started it again. Without this, pods (and whatever
/// reads their readiness: workload status, Endpoints, operators' conditions) would say Ready
/// from before the stop until the runtime got to them, and a readiness wait would pass before
/// anything answers. The state and restart count of each container stay as they were: the
/// runtime reports the interrupted instance from them, as the kubelet does after a reboot.
fn mark_node_pods_restarting(store: &Store) {
    let pods: Arc<str> = Arc::from(ops::POD_STORAGE);
    let restarting: Vec<serde_json::Value> = store
        .read()
        .objects(&pods, None)
        .filter(|(_, pod)| {
            pod.pointer("/spec/nodeName")
                .and_then(serde_json::Value::as_str)
                == Some(crate::runtime::NODE_NAME)
                && !matches!(
                    pod.pointer("/status/phase")
                        .and_then(serde_json::Value::as_str),
                    Some("Succeeded" | "Failed")
                )
        })
        .map(|(_, pod)| (**pod).clone())
        .collect();
    if restarting.is_empty() {
        return;
    }
    let now = ops::now();
    store.write(|txn| {
        for mut pod in restarting {
            let Some(status) = pod
                .get_mut("status")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            let mut names = Vec::new();
            for field in ["initContainerStatuses", "containerStatuses"] {
                for container in status
                    .get_mut(field)
                    .and_then(serde_json::Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    container["ready"] = json!(false);
                    container["started"] = json!(false);
                    if field == "containerStatuses"
                        && let Some(name) = container["name"].as_str()
                    {
                        names.push(name.to_owned());
                    }
                }
            }
            for condition in status
                .get_mut("conditions")
                .and_then(serde_json::Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let kind = condition["type"].as_str().unwrap_or_default();
                if matches!(kind, "Ready" | "ContainersReady") && condition["status"] != "False" {
                    condition["status"] = json!("False");
                    condition["lastTransitionTime"] = json!(now);
                    condition["reason"] = json!("ContainersNotReady");
                    condition["message"] = json!(format!(
                        "containers with unready status: [{}]",
                        names.join(" ")
                    ));
                }
            }
            txn.put(&pods, pod);
        }
    });
}

/// Writes a kubeconfig with mode 0600 (it holds the token).
fn write_kubeconfig(path: &Path, url: &str, token: &str, ca_pem: &str) -> std::io::Result<()> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tusk-sandbox", "cluster": {"server": url, "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem)}}],
        "users": [{"name": "tusk-sandbox", "user": {"token": token}}],
        "contexts": [{"name": "tusk-sandbox", "context": {"cluster": "tusk-sandbox", "user": "tusk-sandbox", "namespace": "default"}}],
        "current-context": "tusk-sandbox",
        "preferences": {},
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A kubeconfig that existed before keeps its old mode unless it is reset.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the runtime left it when the node stopped: running and ready.
    fn ready_pod(name: &str, node: &str, phase: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": name},
            "spec": {"nodeName": node, "containers": [{"name": "postgres", "image": "tusk"}]},
            "status": {
                "phase": phase,
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": [{
                    "name": "postgres",
                    "ready": true,
                    "started": true,
                    "restartCount": 2,
                    "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}},
                }],
            },
        })
    }

    fn pod(store: &Store, name: &str) -> serde_json::Value {
        let storage: Arc<str> = Arc::from(ops::POD_STORAGE);
        let key = ("shop".to_owned(), name.to_owned());
        (**store.read().get(&storage, &key).expect("the pod is stored")).clone()
    }

    fn condition(pod: &serde_json::Value, kind: &str) -> String {
        pod.pointer("/status/conditions")
            .and_then(serde_json::Value::as_array)
            .and_then(|conditions| conditions.iter().find(|c| c["type"] == kind))
            .and_then(|c| c["status"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// What a reader sees of a node's pods between loading the data directory and the
    /// runtime's first status write after a restart: not ready, so that neither a readiness
    /// wait nor a workload's status believes a container answers before it runs again. Pods
    /// of other nodes and finished pods are left as they were.
    #[test]
    fn a_restarting_nodes_pods_are_not_ready_before_the_runtime_reports_them() {
        let storage: Arc<str> = Arc::from(ops::POD_STORAGE);
        let objects = vec![
            (
                storage.clone(),
                ready_pod("elephant-0", crate::runtime::NODE_NAME, "Running"),
            ),
            (
                storage.clone(),
                ready_pod("elsewhere", "other-node", "Running"),
            ),
            (
                storage.clone(),
                ready_pod("finished", crate::runtime::NODE_NAME, "Succeeded"),
            ),
        ];
        let store = Store::new(7, objects, None);
        mark_node_pods_restarting(&store);

        let restarting = pod(&store, "elephant-0");
        assert_eq!(condition(&restarting, "Ready"), "False");
        assert_eq!(condition(&restarting, "ContainersReady"), "False");
        assert_eq!(condition(&restarting, "Initialized"), "True");
        let container = &restarting["status"]["containerStatuses"][0];
        assert_eq!(container["ready"], json!(false));
        assert_eq!(container["started"], json!(false));
        // The interrupted instance stays visible for the runtime to report it.
        assert_eq!(container["restartCount"], json!(2));
        assert!(container["state"]["running"].is_object());
        assert_eq!(
            restarting.pointer("/status/conditions/2/message"),
            Some(&json!("containers with unready status: [postgres]"))
        );

        for untouched in ["elsewhere", "finished"] {
            let pod = pod(&store, untouched);
            assert_eq!(condition(&pod, "Ready"), "True", "{untouched}");
            assert_eq!(
                pod["status"]["containerStatuses"][0]["ready"],
                json!(true),
                "{untouched}"
            );
        }
    }
}
