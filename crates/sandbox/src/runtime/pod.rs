//! One pod's worker: its address, directories and volumes, its containers, its status, and
//! its graceful end.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;

use super::beneath::{Dir, Owner};
use super::container::{PodContext, supervise};
use super::status::{PodState, StatusRenderer};
use super::volumes::{PodVolumes, Rebase, mounts, pod_volume_list};
use super::{Node, SourceChange};

/// The kubelet retries a failed mount with a back-off up to about two minutes.
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(120);
/// How long the containers of a pod deleted outright (grace 0, or gone from the API) get.
const FORCED_STOP_GRACE: Duration = Duration::from_secs(2);

/// Why the worker stops the pod's containers.
enum End {
    /// The pod is being deleted gracefully: stop, then remove it with grace 0.
    Deleted(Duration),
    /// The pod is gone from the API already.
    Gone,
    /// The runtime is shutting down: stop, and leave the pod as it is.
    Shutdown(Duration),
}

/// Holds a pod address until the pod's processes are gone.
struct Address<'a> {
    node: &'a Node,
    ip: Ipv4Addr,
}

impl Drop for Address<'_> {
    fn drop(&mut self) {
        self.node.addresses.release(self.ip);
    }
}

/// Runs one pod until it is deleted or the runtime stops.
pub(crate) async fn run(node: Arc<Node>, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let Some(uid) = pod.uid() else { return };
    let pod_dir = node.options.pods_dir().join(&uid);
    let spec = pod.spec.clone().unwrap_or_default();
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if finished || pod.metadata.deletion_timestamp.is_some() {
        // Nothing to run: a finished pod stays finished, even across a runtime restart.
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let end = wait_for_end(&node, &mut updates, deleting).await;
        finish(&node, &pod, &uid, &pod_dir, end).await;
        return;
    }

    let previous_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    // A pod on the host's network shares the node's address, as hostNetwork pods do.
    let reserved = if spec.host_network == Some(true) {
        Some(Ipv4Addr::LOCALHOST)
    } else {
        node.addresses.reserve(previous_ip)
    };
    let Some(ip) = reserved else {
        node.event(
            &pod,
            true,
            "FailedCreatePodSandBox",
            "Failed to create pod sandbox: the pod network has no free address".to_string(),
        )
        .await;
        if let End::Deleted(_) = wait_for_end(&node, &mut updates, false).await {
            delete_now(&node, &pod, &uid).await;
        }
        return;
    };
    let _address = Address { node: &node, ip };
    // Port-forward reaches the pod's own address only: never the host's, which a pod on the
    // host's network shares.
    let _reachable =
        (spec.host_network != Some(true)).then(|| node.access.register_address(&uid, ip));

    let root = pod_dir.join("root");
    let volumes_dir = pod_dir.join("volumes");
    let volume_list = pod_volume_list(&node, &pod).await;
    let mount_paths = mounts(&pod, &volume_list)
        .into_iter()
        .map(|(path, _, _)| path)
        .collect();
    // Paths handed to the pod's processes name its root through a short link, so that a Unix
    // socket under a mountPath fits as it does in a container (see `short_roots`).
    let short_root = node
        .short_roots
        .as_ref()
        .and_then(|roots| match roots.link(&root) {
            Ok(link) => Some(link),
            Err(error) => {
                tracing::warn!(%error, pod = %pod.name_any(), "cannot link a pod's root under a short name");
                None
            }
        });
    let rebase = match &short_root {
        Some(link) => Rebase::new(root.clone(), mount_paths).named_through(link.path()),
        None => Rebase::new(root.clone(), mount_paths),
    };
    // Under a root runtime the pod gets a local user of its own; nothing runs before it has
    // one, since running as root or as someone else's user is what it must never do.
    let user = if node.runs_as_root {
        // The pod's directory comes first: a runtime starting meanwhile removes the users of
        // pods without one.
        if let Err(error) = std::fs::create_dir(&pod_dir)
            && error.kind() != std::io::ErrorKind::AlreadyExists
        {
            tracing::warn!(%error, pod = %pod.name_any(), "cannot create a pod's directory");
        }
        let users = node.clone();
        let pod_uid = uid.clone();
        let ensured = tokio::task::spawn_blocking(move || users.users.ensure(&pod_uid)).await;
        match ensured {
            Ok(Ok(user)) => Some(user),
            failed => {
                let message = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "cannot create the pod's local user".to_string(),
                };
                node.event(
                    &pod,
                    true,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {message}"),
                )
                .await;
                let end = wait_for_end(&node, &mut updates, false).await;
                finish(&node, &pod, &uid, &pod_dir, end).await;
                return;
            }
        }
    } else {
        None
    };
    let owner = user.as_ref().map(|user| (user.uid, user.gid));
    let pod_identity = user.map(|user| super::process::Identity {
        uid: user.uid,
        gid: user.gid,
        home: root.clone(),
    });

    let state = Arc::new(Mutex::new(PodState::new(&pod, ip)));
    let changed = Arc::new(Notify::new());
    let mut status = StatusWriter {
        renderer: StatusRenderer::new(&pod),
        last: None,
        node: node.clone(),
        pod: pod.clone(),
    };
    status.write(&state).await;

    if let Err(error) = prepare_pod_dir(&node, &uid, owner) {
        node.event(
            &pod,
            true,
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: {error}"),
        )
        .await;
    }
    let mut sources = node.sources.subscribe();
    let mut retry = Duration::from_millis(500);
    let mut volumes = loop {
        match PodVolumes::set_up(&node, &pod, &volume_list, &volumes_dir, &rebase, owner).await {
            Ok(volumes) => break volumes,
            Err(error) => {
                node.event(&pod, true, "FailedMount", error.to_string())
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    end = wait_for_end(&node, &mut updates, false) => {
                        finish(&node, &pod, &uid, &pod_dir, end).await;
                        return;
                    }
                }
                retry = (retry * 2).min(MOUNT_RETRY_MAX);
            }
        }
    };

    let (stop, stop_receiver) = watch::channel(None);
    let ctx = Arc::new(PodContext {
        node: node.clone(),
        pod: pod.clone(),
        uid: uid.clone(),
        pod_ip: ip.to_string(),
        rebase,
        state: state.clone(),
        changed: changed.clone(),
        pod_identity,
        pg_bindir: node.pg_bindir.clone(),
        stop: stop_receiver,
    });
    let containers = run_containers(ctx.clone());
    let mut containers = std::pin::pin!(containers);
    let mut containers_done = false;
    let renewal = volumes.token_renewal();
    let mut renew_tokens = tokio::time::interval_at(
        tokio::time::Instant::now() + renewal.unwrap_or(Duration::from_secs(3600)),
        renewal.unwrap_or(Duration::from_secs(3600)),
    );
    let end = loop {
        tokio::select! {
            _ = renew_tokens.tick(), if renewal.is_some() => {
                for error in volumes.refresh(&node, &pod).await {
                    node.event(&pod, true, "FailedMount", error.to_string()).await;
                }
            }
            _ = &mut containers, if !containers_done => containers_done = true,
            _ = changed.notified() => status.write(&state).await,
            end = wait_for_end(&node, &mut updates, false) => break end,
            change = sources.recv() => {
                let concerned = match &change {
                    Ok(SourceChange::Secret(secret)) => secret.namespace() == pod.namespace() && volumes.uses(Some(&secret.name_any()), None),
                    Ok(SourceChange::ConfigMap(map)) => map.namespace() == pod.namespace() && volumes.uses(None, Some(&map.name_any())),
                    // Missed changes: look at everything again.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => false,
                };
                if concerned {
                    for error in volumes.refresh(&node, &pod).await {
                        node.event(&pod, true, "FailedMount", error.to_string()).await;
                    }
                }
            }
        }
    };
    let grace = match &end {
        End::Deleted(grace) | End::Shutdown(grace) => *grace,
        End::Gone => FORCED_STOP_GRACE,
    };
    let _ = stop.send(Some(grace));
    if !containers_done {
        containers.await;
    }
    if let End::Deleted(_) = end {
        state.lock().unwrap_or_else(|e| e.into_inner()).deleted = true;
        status.write(&state).await;
    }
    finish(&node, &pod, &uid, &pod_dir, end).await;
}

/// Runs the init containers in order, then every container, until all are done for good.
async fn run_containers(ctx: Arc<PodContext>) {
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    let initialized = ctx
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .initialized;
    if !initialized {
        for index in 0..spec.init_containers.as_ref().map_or(0, Vec::len) {
            let exit = supervise(&ctx, true, index).await;
            if exit != Some(0) {
                // Stopped, or failed under restartPolicy Never: the pod goes no further.
                if ctx.stop.borrow().is_none() {
                    ctx.state.lock().unwrap_or_else(|e| e.into_inner()).failed = true;
                    ctx.changed.notify_one();
                }
                return;
            }
        }
        ctx.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .initialized = true;
        ctx.changed.notify_one();
    }
    let mut containers = JoinSet::new();
    for index in 0..spec.containers.len() {
        let ctx = ctx.clone();
        containers.spawn(async move {
            supervise(&ctx, false, index).await;
        });
    }
    while containers.join_next().await.is_some() {}
}

/// Waits until the pod must stop: deleted (gracefully or not), or the runtime shutting down.
/// With `already_deleting`, the pod was marked for deletion before the worker started.
async fn wait_for_end(
    node: &Node,
    updates: &mut watch::Receiver<Option<Arc<Pod>>>,
    already_deleting: bool,
) -> End {
    loop {
        let latest = updates.borrow_and_update().clone();
        match latest {
            None => return End::Gone,
            Some(pod) if pod.metadata.deletion_timestamp.is_some() || already_deleting => {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0);
                return End::Deleted(Duration::from_secs(grace));
            }
            Some(_) => {}
        }
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => {
                let grace = latest
                    .and_then(|pod| pod.spec.as_ref()?.termination_grace_period_seconds)
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30);
                return End::Shutdown(Duration::from_secs(grace));
            }
            changed = updates.changed() => if changed.is_err() { return End::Gone },
        }
    }
}

/// After the containers stopped: removes a deleted pod from the API, its directory and its
/// local user.
async fn finish(node: &Arc<Node>, pod: &Pod, uid: &str, pod_dir: &std::path::Path, end: End) {
    match end {
        End::Deleted(_) => delete_now(node, pod, uid).await,
        End::Gone => {}
        End::Shutdown(_) => return,
    }
    node.events.forget(uid);
    // std's remove_dir_all never follows a symlink: whatever the pod planted in its root or
    // volumes goes, and what it points at stays.
    if let Err(error) = std::fs::remove_dir_all(pod_dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, pod = %pod.name_any(), "cannot remove a pod's directory");
    }
    if node.runs_as_root {
        let node = node.clone();
        let uid = uid.to_string();
        let _ = tokio::task::spawn_blocking(move || node.users.release(&uid)).await;
    }
}

/// The kubelet's final delete of a pod whose containers are gone: grace 0, this pod only.
async fn delete_now(node: &Node, pod: &Pod, uid: &str) {
    let api: Api<Pod> = Api::namespaced(node.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = api.delete(&pod.name_any(), &params).await {
        tracing::debug!(%error, pod = %pod.name_any(), "cannot remove a stopped pod");
    }
}

/// The pod's directory and the directories in it, with owners and modes that keep every
/// other pod out: the pod directory and its `volumes` belong to the runtime (so the pod cannot
/// replace what the runtime writes into) and only the pod's group may pass through them; the
/// root directory is the pod's own, and nobody else's.
fn prepare_pod_dir(node: &Node, uid: &str, owner: Owner) -> std::io::Result<()> {
    let pods = Dir::open(&node.options.pods_dir())?;
    let runtime_only = owner.map(|(_, gid)| (nix::unistd::geteuid().as_raw(), gid));
    let traversable = if owner.is_some() { 0o710 } else { 0o700 };
    let pod_dir = pods.child_or_create(std::ffi::OsStr::new(uid), traversable, runtime_only)?;
    pod_dir.chmod(traversable)?;
    pod_dir.chown(runtime_only)?;
    let volumes =
        pod_dir.child_or_create(std::ffi::OsStr::new("volumes"), traversable, runtime_only)?;
    volumes.chmod(traversable)?;
    volumes.chown(runtime_only)?;
    let root = pod_dir.child_or_create(std::ffi::OsStr::new("root"), 0o700, owner)?;
    root.chmod(0o700)?;
    root.chown(owner)
}

/// Writes the pod's status when, and only when, it changed.
struct StatusWriter {
    renderer: StatusRenderer,
    last: Option<Value>,
    node: Arc<Node>,
    pod: Arc<Pod>,
}

impl StatusWriter {
    async fn write(&mut self, state: &Mutex<PodState>) {
        let status = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            self.renderer.render(&state)
        };
        if self.last.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.node.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({"status": status});
        match api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last = Some(status),
            Err(error) => {
                tracing::debug!(%error, pod = %self.pod.name_any(), "cannot write a pod status")
            }
        }
    }
}
