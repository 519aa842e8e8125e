//! The local runtime: the kubelet stand-in. It is the cluster's single node: it schedules the
//! pods no node runs yet onto itself, runs their containers as local process groups, and writes
//! their status, Events and logs as the kubelet does.
//!
//! Nothing here needs namespaces: each mountPath is rebased under the pod's own root
//! directory (named, in what the pod's processes are given, through a short link, so that a
//! Unix socket there fits: `short_roots`), and each pod gets a loopback address of its own. Run as root, the runtime runs
//! each pod as a local user of its own (`users`), so that pods cannot read each other's
//! environments and files; it never follows a symlink a pod could have planted (`beneath`),
//! and it refuses hostPath volumes. Those users must reach the pods' files and the executable
//! they run: when the runtime directory or the executable sits in a private directory, the
//! runtime keeps pods and volumes in a directory of its own under [`SYSTEM_DIR`] and runs a
//! copy of the executable (`placement`), rather than opening the user's directories. Run as
//! another user, it runs every pod as that user.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tusk_sandbox::runtime::RuntimeOptions;
//! let sandbox = tusk_sandbox::Sandbox::builder()
//!     .runtime(RuntimeOptions::new("/var/tmp/tusk-pods"))
//!     .start()
//!     .await?;
//! // ... create pods; they run as local processes ...
//! sandbox.shutdown().await; // stops every pod's processes first
//! # Ok(()) }
//! ```

mod beneath;
mod capacity;
mod claim_volume;
mod container;
mod env;
pub(crate) mod exec;
mod leftovers;
mod logs;
mod network;
mod node_object;
mod placement;
mod pod;
mod probe;
mod process;
mod pvc;
mod short_roots;
mod status;
mod termination;
mod users;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use logs::LogFiles;
pub use placement::SYSTEM_DIR;
pub(crate) use placement::place;

/// The name of the node the runtime is, as pods' `spec.nodeName` shows it.
pub const NODE_NAME: &str = "tusk-sandbox";

/// How the local runtime runs pods. Builder-style.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    root_dir: PathBuf,
    tusk_executable: Option<PathBuf>,
    pod_network: (Ipv4Addr, u8),
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl RuntimeOptions {
    /// Keeps pod directories, PersistentVolumeClaim directories and logs under `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            root_dir: root_dir.into(),
            tusk_executable: None,
            pod_network: (Ipv4Addr::new(127, 64, 0, 0), 10),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
        }
    }

    /// What a container's `tusk` command runs (default: the running executable).
    pub fn tusk_executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.tusk_executable = Some(path.into());
        self
    }

    /// Gives pods loopback addresses from this range (default 127.64.0.0/10).
    pub fn pod_network(mut self, base: Ipv4Addr, prefix_len: u8) -> Self {
        self.pod_network = (base, prefix_len);
        self
    }

    /// The crash-loop back-off between restarts of a failing container: it starts at `initial`
    /// and doubles up to `max` (the kubelet's are 10s and 5 minutes, the default).
    pub fn crash_loop_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }

    fn claims_dir(&self) -> PathBuf {
        self.root_dir.join("volumes")
    }
}

/// The local runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Its directory could not be prepared.
    #[error("cannot prepare the runtime directory {path}: {source}")]
    RootDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod network is not a loopback range with room for pods.
    #[error("the pod network {base}/{prefix_len} is not a loopback range with room for pods")]
    PodNetwork {
        /// Its first address.
        base: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
    },
}

/// Where containers reach the API server (`KUBERNETES_SERVICE_HOST`/`_PORT`, `ca.crt`).
#[derive(Clone, Debug)]
pub(crate) struct ApiEndpoint {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The PEM of the CA that signed its certificate.
    pub ca_pem: String,
}

/// A change to an object that volumes project into files.
#[derive(Clone, Debug)]
pub(crate) enum SourceChange {
    Secret(Arc<Secret>),
    ConfigMap(Arc<ConfigMap>),
}

/// What every pod worker shares.
pub(crate) struct Node {
    pub options: RuntimeOptions,
    pub client: Client,
    pub api: ApiEndpoint,
    pub logs: Arc<LogFiles>,
    pub addresses: network::Addresses,
    pub events: crate::event_recorder::EventRecorder,
    pub sources: broadcast::Sender<SourceChange>,
    pub shutdown: CancellationToken,
    pub tusk_executable: PathBuf,
    /// Where PostgreSQL's programs are, if installed.
    pub pg_bindir: Option<PathBuf>,
    /// Whether the runtime may run processes as other users.
    pub runs_as_root: bool,
    /// The pods' local users (used only when the runtime runs as root).
    pub users: users::PodUsers,
    /// The claims' volumes.
    pub claim_volumes: pvc::ClaimVolumes,
    /// The running containers and pod addresses exec, attach and port-forward reach.
    pub access: Arc<exec::PodAccess>,
    /// The short links to the pods' roots; none if they could not be made (the pods' paths
    /// then name their roots themselves).
    pub short_roots: Option<short_roots::ShortRoots>,
}

impl Node {
    /// Records an Event on a pod, as the kubelet does.
    pub async fn event(&self, pod: &Pod, warning: bool, reason: &str, note: String) {
        self.events
            .record(&pod.object_ref(&()), warning, reason, &note)
            .await;
    }
}

/// The running local runtime.
pub(crate) struct Runtime {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Prepares the root directory and starts watching pods.
    pub fn start(
        options: RuntimeOptions,
        client: Client,
        api: ApiEndpoint,
        logs: Arc<LogFiles>,
        access: Arc<exec::PodAccess>,
    ) -> Result<Self, RuntimeError> {
        for dir in [
            options.root_dir.clone(),
            options.pods_dir(),
            options.claims_dir(),
        ] {
            prepare_dir(&dir).map_err(|source| RuntimeError::RootDir { path: dir, source })?;
        }
        let (base, prefix_len) = options.pod_network;
        let addresses = network::Addresses::new(base, prefix_len)
            .ok_or(RuntimeError::PodNetwork { base, prefix_len })?;
        let tusk_executable = match &options.tusk_executable {
            Some(path) => path.clone(),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tusk")),
        };
        let shutdown = CancellationToken::new();
        let pods_dir = options.pods_dir();
        let runs_as_root = nix::unistd::geteuid().is_root();
        let node = Arc::new(Node {
            events: crate::event_recorder::EventRecorder::new(
                client.clone(),
                "kubelet",
                Some(NODE_NAME),
            ),
            options,
            client,
            api,
            logs,
            addresses,
            sources: broadcast::channel(64).0,
            shutdown: shutdown.clone(),
            tusk_executable,
            pg_bindir: process::postgres_bindir(),
            runs_as_root,
            users: users::PodUsers::new(&pods_dir),
            claim_volumes: pvc::ClaimVolumes::new(runs_as_root),
            access,
            short_roots: short_roots::ShortRoots::create()
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot make the directory of short links to the pods' roots; a Unix socket under a mountPath may not fit");
                })
                .ok(),
        });
        let task = tokio::spawn(run(node));
        Ok(Self {
            shutdown,
            task: Some(task),
        })
    }

    /// Stops every pod's containers (SIGTERM, the grace period, then SIGKILL of the whole
    /// process group) and returns once none is left. Pod objects stay, as on a node reboot.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The runtime's directories are traversable by the unprivileged users pods may run as.
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// One pod worker, fed the pod's latest state (`None` once it is gone from the API).
struct Worker {
    updates: watch::Sender<Option<Arc<Pod>>>,
}

async fn run(node: Arc<Node>) {
    // Containers a killed previous run left behind go first, as a crashed node's containers
    // are gone before its kubelet starts pods again.
    let pods_dir = node.options.pods_dir();
    let cleaned = tokio::task::spawn_blocking(move || leftovers::kill_leftovers(&pods_dir)).await;
    if let Ok(killed @ 1..) = cleaned {
        tracing::info!(
            killed,
            "ended the containers a previous run of the runtime left behind"
        );
    }
    if node.runs_as_root {
        // The users of pods whose directories went while no runtime ran them.
        let users_node = node.clone();
        let removed = tokio::task::spawn_blocking(move || users_node.users.remove_orphans()).await;
        if let Ok(removed @ 1..) = removed {
            tracing::info!(removed, "removed the local users of pods that are gone");
        }
    }
    let mut background = JoinSet::new();
    background.spawn(node_object::register(node.clone()));
    background.spawn(pvc::provision(node.clone()));
    background.spawn(watch_sources(node.clone()));
    background.spawn(reschedule_on_node_change(node.clone()));
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut pods = JoinSet::new();
    let mut seen_in_relist: Option<HashSet<String>> = None;
    let api: Api<Pod> = Api::all(node.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = node.shutdown.cancelled() => break,
            Some(_) = pods.join_next(), if !pods.is_empty() => continue,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "the runtime's pod watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => seen_in_relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let (Some(seen), Some(uid)) = (seen_in_relist.as_mut(), pod.uid()) {
                    seen.insert(uid);
                }
                pod_changed(&node, &mut workers, &mut pods, pod);
            }
            watcher::Event::Delete(pod) => {
                if let Some(worker) = pod.uid().and_then(|uid| workers.remove(&uid)) {
                    let _ = worker.updates.send(None);
                }
            }
            watcher::Event::InitDone => {
                // Pods deleted while the watch was down are gone for good.
                if let Some(seen) = seen_in_relist.take() {
                    workers.retain(|uid, worker| {
                        let keep = seen.contains(uid);
                        if !keep {
                            let _ = worker.updates.send(None);
                        }
                        keep
                    });
                }
            }
        }
    }
    // Shutting down: every worker sees the cancelled token and stops its containers. The
    // workers' channels stay open meanwhile, or they would take their pods for deleted.
    while pods.join_next().await.is_some() {}
    drop(workers);
    background.abort_all();
    while background.join_next().await.is_some() {}
    // No pod uses a claim's volume any more: none stays mounted after the runtime.
    let (backing, claims_dir) = (
        node.claim_volumes.backing.clone(),
        node.options.claims_dir(),
    );
    let _ =
        tokio::task::spawn_blocking(move || claim_volume::unmount_all(&backing, &claims_dir)).await;
}

fn pod_changed(
    node: &Arc<Node>,
    workers: &mut HashMap<String, Worker>,
    pods: &mut JoinSet<()>,
    pod: Pod,
) {
    let Some(uid) = pod.uid() else { return };
    let node_name = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
    match node_name.as_deref() {
        None | Some("") => {
            if pod.metadata.deletion_timestamp.is_none() {
                pods.spawn(schedule(node.clone(), pod, false));
            }
        }
        Some(NODE_NAME) => {
            let pod = Arc::new(pod);
            match workers.get(&uid) {
                Some(worker) => {
                    let _ = worker.updates.send(Some(pod));
                }
                None => {
                    let (updates, receiver) = watch::channel(Some(pod));
                    workers.insert(uid, Worker { updates });
                    pods.spawn(pod::run(node.clone(), receiver));
                }
            }
        }
        Some(_) => {}
    }
}

/// Binds a pod to this node, as kube-scheduler does, through the `binding` subresource, when
/// the node takes it (not cordoned, its taints tolerated, its node selector and affinity met:
/// see [`scheduling`](crate::scheduling)) and has the memory it requests (see [`capacity`]).
/// A pod found unschedulable is tried again only when the node changes (`again`).
async fn schedule(node: Arc<Node>, pod: Pod, again: bool) {
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(node.client.clone(), &namespace);
    if capacity::marked_unschedulable(&pod) && !again {
        return;
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(node.client.clone());
    match nodes.get_opt(NODE_NAME).await {
        Ok(Some(object)) => {
            if let Err(misfit) =
                crate::scheduling::fits(&pod.spec.clone().unwrap_or_default(), &object)
            {
                mark_unschedulable(&node, &api, &pod, &misfit.scheduling_message()).await;
                return;
            }
        }
        // Not registered yet: its registration reschedules what waits.
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(%error, pod = %name, "cannot read the node");
            return;
        }
    }
    match capacity::fits(&node.client, &pod).await {
        Ok(true) => {}
        Ok(false) => {
            mark_unschedulable(&node, &api, &pod, capacity::INSUFFICIENT_MEMORY).await;
            return;
        }
        Err(error) => tracing::debug!(%error, pod = %name, "cannot count the node's memory"),
    }
    let binding = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
    });
    let bound: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match bound {
        Ok(_) => {
            let note = format!("Successfully assigned {namespace}/{name} to {NODE_NAME}");
            // The scheduler, not the kubelet, reports the assignment.
            let reporter = Reporter {
                controller: "default-scheduler".to_string(),
                instance: None,
            };
            let event = Event {
                type_: EventType::Normal,
                reason: "Scheduled".to_string(),
                note: Some(note),
                action: "Binding".to_string(),
                secondary: None,
            };
            let _ = Recorder::new(node.client.clone(), reporter)
                .publish(&event, &pod.object_ref(&()))
                .await;
        }
        // Someone else bound it first, or it went away: the watch tells what happened.
        Err(error) => tracing::debug!(%error, pod = %name, "cannot bind a pod"),
    }
}

/// Leaves a pod the node does not take unbound, saying why (`message`) as kube-scheduler
/// does: the `PodScheduled` condition and a `FailedScheduling` Event.
async fn mark_unschedulable(node: &Node, api: &Api<Pod>, pod: &Pod, message: &str) {
    let name = pod.name_any();
    let condition = serde_json::json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now()
        ),
    });
    let patch = serde_json::json!({"status": {"phase": "Pending", "conditions": [condition]}});
    if let Err(error) = api
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
    {
        tracing::debug!(%error, pod = %name, "cannot mark a pod unschedulable");
        return;
    }
    let reporter = Reporter {
        controller: "default-scheduler".to_string(),
        instance: None,
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "FailedScheduling".to_string(),
        note: Some(message.to_string()),
        action: "Scheduling".to_string(),
        secondary: None,
    };
    let _ = Recorder::new(node.client.clone(), reporter)
        .publish(&event, &pod.object_ref(&()))
        .await;
}

/// Tries again to place the pods no node runs whenever the node changes (registered,
/// cordoned, uncordoned, tainted, relabelled), as kube-scheduler moves its unschedulable pods
/// back to its active queue on a Node update.
async fn reschedule_on_node_change(node: Arc<Node>) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(node.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={NODE_NAME}"));
    let changes = watcher(nodes, config).default_backoff().applied_objects();
    let mut changes = std::pin::pin!(changes);
    let pods: Api<Pod> = Api::all(node.client.clone());
    let waiting = kube::api::ListParams::default().fields("spec.nodeName=");
    while let Some(change) = changes.next().await {
        if change.is_err() {
            continue;
        }
        let Ok(unbound) = pods.list(&waiting).await else {
            continue;
        };
        for pod in unbound.items {
            if pod.metadata.deletion_timestamp.is_none() {
                schedule(node.clone(), pod, true).await;
            }
        }
    }
}

/// Feeds pod workers the Secrets and ConfigMaps their volumes project, as they change.
async fn watch_sources(node: Arc<Node>) {
    let secrets = watcher(
        Api::<Secret>::all(node.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            // A relist also delivers what changed while the watch was down.
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                Some(SourceChange::Secret(Arc::new(secret)))
            }
            _ => None,
        }
    });
    let maps = watcher(
        Api::<ConfigMap>::all(node.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                Some(SourceChange::ConfigMap(Arc::new(map)))
            }
            _ => None,
        }
    });
    let changes = futures::stream::select(secrets, maps);
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        // No pod listening is fine.
        let _ = node.sources.send(change);
    }
}
