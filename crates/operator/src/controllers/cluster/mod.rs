//! The cluster controller: turns a PostgresCluster into its credentials Secret, ConfigMap,
//! Service, StatefulSet and default backup schedule, and reports how they are doing.
//!
//! Reconcile is a pipeline: read what exists, build the desired children (pure, in
//! [`build`]), apply them ([`apply`]), compute the status ([`status`]), and write it only when
//! it changed. Children carry a controller ownerReference, so deleting the cluster lets the
//! garbage collector remove them. What the cluster has in the object store is removed by its
//! finalizer `postgrescluster.postgres.tusk.dev/storage` ([`delete`]).
//!
//! Before building, the serving instance is asked what became of the configuration the spec
//! asks for ([`parameters`]): a restart-only setting restarts the pod only once PostgreSQL has
//! accepted it, a refused one is reported as `InvalidParameter` while the database keeps
//! serving, and `observedGeneration` advances only when the spec is in force.
//!
//! A serving cluster's health signals, its WAL archiver and the freshness of its backups, are
//! read and reported by [`health`].
//!
//! `status.lastBackup` is computed here from the cluster's PostgresBackups (which the cluster
//! owns, so a new backup triggers a reconcile), rather than written by the backup_request
//! controller: each controller writes only its own kind's status, and the value stays right
//! when a backup is deleted.

pub mod apply;
pub mod build;
pub mod client_certs;
pub mod degraded;
pub mod delete;
pub mod disk;
pub mod disk_grow;
pub mod health;
pub mod instance_report;
pub mod parameters;
pub mod postgresql_conf;
pub mod restore_progress;
pub mod restore_refresh;
pub mod status;
pub mod tls;
pub mod unschedulable;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::cluster::LastBackup;
use tusk_api::conditions::{FALSE, TRUE, reasons as condition_reasons, types};
use tusk_api::finalizers::CLUSTER_STORAGE;
use tusk_api::{
    PostgresBackup, PostgresBackupSchedule, PostgresCluster, PostgresRemoteCluster,
    labels as api_labels, names,
};

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::controllers::backup::store as backup_store;
use crate::controllers::remote_cluster;
use crate::error::{Error, Result};
use crate::events::{self, reasons};
use crate::ssa;
use tusk_backup::gateway::{ClusterCredentials, ClusterIdentity};

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "cluster";

/// How often a cluster is reconciled when nothing happens, as a safety net.
const RESYNC: Duration = Duration::from_secs(600);
/// How often a cluster whose instance is failing is looked at again, besides its pods' own
/// changes: slow enough never to load the API server, quick enough to see it recover.
const FAILING_RESYNC: Duration = Duration::from_secs(30);
/// How often a cluster whose instance is loading a new configuration is looked at again: the
/// instance's report is not a Kubernetes object, so no watch says when it changes.
const CONFIG_RESYNC: Duration = Duration::from_secs(5);
/// How often a cluster whose data volume is within [`disk::WATCHED_MARGIN`] points of full is
/// looked at again: its volume fills with no Kubernetes object changing.
const DISK_RESYNC: Duration = Duration::from_secs(60);
/// How often a restoring cluster's progress is read from its instance's log. Nothing else
/// changes while a restore runs, so without this the status would stand still.
const RESTORE_PROGRESS_RESYNC: Duration = Duration::from_secs(2);

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        api_labels::MANAGED_BY,
        api_labels::MANAGED_BY_VALUE
    ));
    let controller = Controller::new(
        Api::<PostgresCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    let clusters = controller.store();
    controller
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(Api::<Secret>::all(client.clone()), managed.clone())
        .owns(
            Api::<PostgresBackupSchedule>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<PostgresBackup>::all(client.clone()),
            watcher::Config::default(),
        )
        // The instance pods belong to the StatefulSet, not the cluster: their label names it.
        .watches(
            Api::<Pod>::all(client.clone()),
            managed.clone(),
            labelled_cluster::<Pod>,
        )
        // So are its volume claims: a growth the storage system fails to carry out shows only
        // in a claim's status.
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            managed.clone(),
            labelled_cluster::<PersistentVolumeClaim>,
        )
        // A CA Secret names its cluster in an annotation: a platform team's request to rotate the
        // CA is acted on at once.
        .watches(
            Api::<Secret>::namespaced(client.clone(), &context.config.tls.ca_namespace),
            watcher::Config::default().labels(&format!(
                "{}={}",
                api_labels::COMPONENT,
                tls::COMPONENT_CA
            )),
            |secret: Secret| {
                let owner = secret.annotations().get(tls::CA_CLUSTER_ANNOTATION)?;
                let (namespace, name) = owner.split_once('/')?;
                Some(ObjectRef::new(name).within(namespace))
            },
        )
        // A link to a customer's cluster adds its tunnel Service's names to the server
        // certificate; its removal takes them out again.
        .watches(
            Api::<PostgresRemoteCluster>::all(client.clone()),
            watcher::Config::default(),
            |link: PostgresRemoteCluster| {
                Some(ObjectRef::new(&link.spec.cluster.name).within(&link.namespace()?))
            },
        )
        // A certificate brought in a Secret (spec.tls.certificateSecret) is served anew when its
        // Secret changes, as when cert-manager renews it.
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().fields("type=kubernetes.io/tls"),
            move |secret: Secret| {
                let namespace = secret.namespace();
                let name = secret.name_any();
                clusters
                    .state()
                    .into_iter()
                    .filter(|cluster| {
                        cluster.namespace() == namespace
                            && brought_certificate_secret(cluster) == Some(name.as_str())
                    })
                    .map(|cluster| ObjectRef::from_obj(&*cluster))
                    .collect::<Vec<_>>()
            },
        )
        // A cluster's backups turn stale at a moment in time.
        .reconcile_all_on(context.clock.jumps())
        .with_config(Config::default().concurrency(context.config.concurrency.cluster))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The cluster an object's cluster label names, in the object's namespace.
fn labelled_cluster<K: kube::Resource>(object: K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = object.labels().get(api_labels::CLUSTER)?.clone();
    Some(ObjectRef::new(&cluster).within(&object.namespace()?))
}

fn error_policy(cluster: Arc<PostgresCluster>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), namespace = ?cluster.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(cluster: Arc<PostgresCluster>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    let namespace = cluster.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "namespace",
    })?;
    let api: Api<PostgresCluster> = Api::namespaced(context.client.clone(), &namespace);
    // The garbage collector removes the children in the cluster; the finalizer removes what
    // the cluster has in the object store.
    finalizer(&api, CLUSTER_STORAGE, cluster, |event| async {
        match event {
            FinalizerEvent::Apply(cluster) => apply(cluster, context.clone()).await,
            FinalizerEvent::Cleanup(cluster) => {
                context
                    .instance_restarts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&cluster.uid().unwrap_or_default());
                health::forget(&context, &cluster);
                context
                    .metrics
                    .cluster_disk(&cluster_labels(&cluster), None);
                restore_refresh::forget(&context, &cluster);
                let reference = cluster.object_ref(&());
                let result = delete::cleanup(&cluster, &context, &reference).await;
                if let Err(error) = &result {
                    delete::report_blocked(&context, &cluster, error).await;
                }
                result.map(|()| Action::await_change())
            }
        }
    })
    .await
    .map_err(Error::from)
}

/// Keeps the cluster's children and status in step with its spec.
async fn apply(cluster: Arc<PostgresCluster>, context: Arc<Context>) -> Result<Action> {
    let namespace = cluster.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "namespace",
    })?;
    let name = cluster.name_any();
    let client = &context.client;

    let cluster = record_default_version(cluster, &context, &namespace).await?;
    if let Some(action) = restore_refresh::refresh(&context, &cluster, &namespace).await? {
        return Ok(action);
    }

    // Read.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let credentials_name = names::credentials_secret(&name);
    let existing_credentials =
        secrets
            .get_opt(&credentials_name)
            .await
            .map_err(|source| Error::Get {
                kind: "Secret",
                name: credentials_name,
                source,
            })?;
    let store_credentials = store_credentials(&context, &namespace, &cluster).await?;
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let existing_stateful_set = stateful_sets
        .get_opt(&names::stateful_set(&name))
        .await
        .map_err(|source| Error::Get {
            kind: "StatefulSet",
            name: names::stateful_set(&name),
            source,
        })?;

    let restore_backup = match &cluster.spec.restore {
        Some(restore) => Api::<PostgresBackup>::namespaced(client.clone(), &namespace)
            .get_opt(&restore.backup.name)
            .await
            .map_err(|source| Error::Get {
                kind: "PostgresBackup",
                name: restore.backup.name.clone(),
                source,
            })?,
        None => None,
    };
    // A restore reads only where tusk itself stored the backup's cluster's data: the
    // PostgresBackup's recorded location must be exactly that, or nothing is built.
    if let Some(backup) = &restore_backup {
        let store = tusk_backup::BackupStore::new(&backup_store::store_config(&context, None))
            .map_err(|error| Error::StoreConfig(error.to_string()))?;
        if let Err(reason) = backup_store::check_location(backup, &store) {
            events::publish(
                &context.recorder,
                &cluster.object_ref(&()),
                EventType::Warning,
                reasons::LOCATION_MISMATCH,
                "Restore",
                format!(
                    "Cannot restore from PostgresBackup {}: {reason}",
                    backup.name_any()
                ),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    }

    if let Some(refusal) = restore_backup
        .as_ref()
        .and_then(|backup| status::restore_target_refusal(&cluster, backup))
    {
        refuse_restore(&context, &cluster, &name, &namespace, refusal).await?;
        // spec.restore is immutable: only a new cluster can ask again.
        return Ok(Action::await_change());
    }

    let server_tls = server_tls(&context, &cluster, &namespace).await?;
    let client_tls =
        client_certs::reconcile(&context, &cluster, &namespace, server_tls.ca.as_ref()).await?;

    // Where the serving instance stands with the configuration the spec asks for.
    let pods = instance_pods(client, &namespace, &name).await?;
    let rendered = postgresql_conf::render(&cluster);
    let config_state = parameters::state(
        &cluster,
        existing_stateful_set
            .as_ref()
            .and_then(|existing| status::serving_pod_ip(existing, &pods))
            .as_deref(),
        &rendered,
    )
    .await;
    // How full its data volume is: asked of any running instance, since a full volume can stop
    // PostgreSQL while the instance still answers.
    let disk_usage = disk::observe(
        existing_stateful_set
            .as_ref()
            .and_then(|existing| status::instance_pod(existing, &pods))
            .and_then(|pod| pod.status.as_ref()?.pod_ip.as_deref()),
    )
    .await;

    // Build and apply.
    let mut children = build::build(
        &cluster,
        &context.config,
        existing_credentials.as_ref(),
        store_credentials.as_ref(),
        restore_backup.as_ref(),
        server_tls.secret,
    )?;
    hold_restart_until_accepted(
        &mut children.stateful_set,
        existing_stateful_set.as_ref(),
        &config_state,
    );
    parameters::keep_running_configuration(client, &namespace, &cluster, &mut children.config_map)
        .await?;
    let applied =
        apply::apply_children(client, &namespace, children, existing_stateful_set.as_ref()).await?;
    let stateful_set = applied.stateful_set;
    if let Some(pod) = unschedulable::outdated_pod(&stateful_set, &pods) {
        unschedulable::replace(client, &namespace, pod).await?;
    }
    // The volumes' size: the spec's, or the size the operator grew them to above it.
    let grown_disk_size = cluster
        .status
        .as_ref()
        .and_then(|status| status.auto_grown_disk_size);
    let disk_size = disk_grow::effective_size(cluster.spec.postgres_disk_size, grown_disk_size);
    let expansion = apply::expand_volumes(client, &namespace, &name, disk_size).await?;
    let expanding = expansion.asked;
    if !expanding.is_empty() {
        events::publish(
            &context.recorder,
            &cluster.object_ref(&()),
            EventType::Normal,
            reasons::VOLUME_EXPANDING,
            "ExpandVolume",
            format!(
                "Asked volumes {} to grow to {disk_size}Gi",
                expanding.join(", "),
            ),
        )
        .await;
    }

    // Status.
    let last_backup = newest_backup(client, &namespace, &name)
        .await?
        .map(|backup| LastBackup {
            finished_at: backup.metadata.creation_timestamp.clone(),
            name: backup.name_any(),
        });
    let restoring = status::restore_under_way(&cluster, &stateful_set);
    let restore_progress = match status::instance_pod(&stateful_set, &pods) {
        Some(pod) if restoring => restore_progress::progress(
            &cluster,
            restore_backup.as_ref(),
            restore_progress::read(client, pod).await,
            cluster
                .status
                .as_ref()
                .and_then(|status| status.restore_progress.as_ref()),
        ),
        _ => None,
    };
    let status = status::compute(&status::Observed {
        cluster: &cluster,
        stateful_set: &stateful_set,
        pods: &pods,
        expanding_volumes: &expanding,
        last_backup,
        restore_progress,
        external_endpoint: status::external_endpoint(&context.config.tunnel, &cluster),
        now: context.clock.now(),
    });
    let status = tusk_api::PostgresClusterStatus {
        load_balancer_endpoint: applied.load_balancer_endpoint,
        ..status
    };
    let status = parameters::overlay(
        status,
        &config_state,
        cluster.status.as_ref(),
        cluster.metadata.generation,
        context.clock.now(),
    );
    let status = report_refused_parameters(&context, &cluster, status).await;
    // The server's and the client certificate's problems: one entry per reason, so that a
    // reason both have names both messages.
    let mut certificate_problems: Vec<(&'static str, String)> = Vec::new();
    for (reason, message) in [&server_tls.problem, &client_tls.problem]
        .into_iter()
        .flatten()
    {
        match certificate_problems
            .iter_mut()
            .find(|(known, _)| known == reason)
        {
            Some((_, messages)) => messages.push_str(&format!("; {message}")),
            None => certificate_problems.push((reason, message.clone())),
        }
    }
    let status = certificate_problems
        .iter()
        .fold(status, |status, (reason, message)| {
            degraded::add(
                status,
                reason,
                message,
                cluster.metadata.generation,
                context.clock.now(),
            )
        });
    for signal in &CERTIFICATE_SIGNALS {
        degraded::report(&context, &cluster, signal, &status).await;
    }
    let status = match &expansion.refused {
        Some(refusal) => refused_expansion(status, &cluster, refusal, context.clock.now()),
        None => status,
    };
    let status = match &expansion.failed {
        Some(failure) => failed_expansion(status, &cluster, failure, context.clock.now()),
        // A volume still short of the spec's size: the spec's disk size is not in force yet
        // (its growth may yet fail in the storage system).
        None if !expansion.growing.is_empty() => generation_held(status, &cluster),
        None => status,
    };
    let health = health::observe(
        &context,
        &cluster,
        status,
        status::serving_pod_ip(&stateful_set, &pods).as_deref(),
    )
    .await?;
    health::report_events(&context, &cluster, &health).await;
    let status = health.status;
    let full_percent = context.config.disk.full_percent;
    let previous_disk = cluster
        .status
        .as_ref()
        .and_then(|status| status.disk.as_ref());
    let status = disk::overlay(
        status,
        disk::record(previous_disk, disk_usage),
        full_percent,
        cluster.metadata.generation,
        context.clock.now(),
    );
    disk::report(&context, &cluster, previous_disk, status.disk.as_ref()).await;
    let status = grow_full_disk(&context, &cluster, status, disk_size, previous_disk).await?;
    // After the auto-grow, which may be refused too.
    degraded::report(&context, &cluster, &EXPANSION_REFUSED_SIGNAL, &status).await;
    degraded::report(&context, &cluster, &EXPANSION_FAILED_SIGNAL, &status).await;
    context
        .metrics
        .cluster_disk(&cluster_labels(&cluster), status.disk.as_ref());
    report_instance_failures(
        &context,
        &cluster,
        &status,
        &stateful_set,
        &pods,
        config_state.event_action(),
    )
    .await;
    let failing = conditions::find(&status.conditions, types::DEGRADED)
        .is_some_and(|condition| condition.status == TRUE);
    if cluster.status.as_ref() != Some(&status) {
        write_status(client, &namespace, &name, &status).await?;
    }
    restore_refresh::record_full_apply(&context, &cluster);
    let resync = if failing {
        FAILING_RESYNC
    } else if status.restore_progress.is_some() || restoring {
        RESTORE_PROGRESS_RESYNC
    } else if !config_state.in_force() {
        CONFIG_RESYNC
    } else if disk::is_watched(status.disk.as_ref(), full_percent) {
        DISK_RESYNC
    } else {
        RESYNC
    };
    Ok(Action::requeue(
        health
            .requeue
            .map_or(resync, |health| health.min(resync))
            .min(server_tls.recheck_in)
            .min(client_tls.recheck_in),
    ))
}

/// Grows a full data volume by the operator's `disk.autoGrow` (see [`disk_grow`]), and
/// records the grown size in the status.
async fn grow_full_disk(
    context: &Context,
    cluster: &PostgresCluster,
    mut status: tusk_api::PostgresClusterStatus,
    disk_size: i32,
    previous_disk: Option<&tusk_api::cluster::DiskUsage>,
) -> Result<tusk_api::PostgresClusterStatus> {
    let spec_size = cluster.spec.postgres_disk_size;
    status.auto_grown_disk_size = disk_grow::shown_growth(
        spec_size,
        cluster
            .status
            .as_ref()
            .and_then(|status| status.auto_grown_disk_size),
    );
    let decision = disk_grow::decide(
        &context.config.disk.auto_grow,
        context.config.disk.full_percent,
        disk_size,
        previous_disk,
        status.disk.as_ref(),
    );
    if let disk_grow::Decision::Grow { to, .. } = decision {
        let namespace = cluster.namespace().unwrap_or_default();
        let expansion =
            apply::expand_volumes(&context.client, &namespace, &cluster.name_any(), to).await?;
        match expansion.refused {
            // The platform does not let this volume grow: the owner hears of it (and of the
            // full disk), and the grown size is not recorded, since the volume does not have it.
            // No DiskGrown Event either: nothing grew.
            Some(refusal) => {
                return Ok(refused_expansion(
                    status,
                    cluster,
                    &refusal,
                    context.clock.now(),
                ));
            }
            None => status.auto_grown_disk_size = disk_grow::shown_growth(spec_size, Some(to)),
        }
    }
    disk_grow::report(context, cluster, &decision, status.disk.as_ref()).await;
    Ok(status)
}

/// The Events of a growth the platform refuses.
const EXPANSION_REFUSED_SIGNAL: degraded::Signal = degraded::Signal {
    reason: condition_reasons::VOLUME_EXPANSION_REFUSED,
    action: "ExpandVolume",
    recovered: "The data volumes are no longer refused the size asked",
};

/// The Events of a growth the storage system fails to carry out.
const EXPANSION_FAILED_SIGNAL: degraded::Signal = degraded::Signal {
    reason: condition_reasons::VOLUME_EXPANSION_FAILED,
    action: "ExpandVolume",
    recovered: "The data volumes have grown to the size asked",
};

/// The status of a cluster whose volumes the platform refused to grow: `Degraded` for
/// `VolumeExpansionRefused` with the API server's refusal.
fn refused_expansion(
    status: tusk_api::PostgresClusterStatus,
    cluster: &PostgresCluster,
    refusal: &str,
    now: jiff::Timestamp,
) -> tusk_api::PostgresClusterStatus {
    expansion_not_done(
        status,
        cluster,
        condition_reasons::VOLUME_EXPANSION_REFUSED,
        refusal,
        now,
    )
}

/// The status of a cluster whose volumes' growth the storage system could not carry out:
/// `Degraded` for `VolumeExpansionFailed` with the claim's own message.
fn failed_expansion(
    status: tusk_api::PostgresClusterStatus,
    cluster: &PostgresCluster,
    failure: &str,
    now: jiff::Timestamp,
) -> tusk_api::PostgresClusterStatus {
    expansion_not_done(
        status,
        cluster,
        condition_reasons::VOLUME_EXPANSION_FAILED,
        failure,
        now,
    )
}

/// The status of a cluster whose volumes did not get the size asked, for `reason`.
/// `observedGeneration` stays where it was, since the spec's disk size is not in force; the
/// database keeps serving on the volume it has.
fn expansion_not_done(
    status: tusk_api::PostgresClusterStatus,
    cluster: &PostgresCluster,
    reason: &'static str,
    message: &str,
    now: jiff::Timestamp,
) -> tusk_api::PostgresClusterStatus {
    let status = degraded::add(status, reason, message, cluster.metadata.generation, now);
    generation_held(status, cluster)
}

/// The status with `observedGeneration` where it was: the spec is not (yet) in force.
fn generation_held(
    mut status: tusk_api::PostgresClusterStatus,
    cluster: &PostgresCluster,
) -> tusk_api::PostgresClusterStatus {
    status.observed_generation = cluster
        .status
        .as_ref()
        .and_then(|status| status.observed_generation);
    status
}

/// The labels of the cluster's metrics.
fn cluster_labels(cluster: &PostgresCluster) -> crate::metrics::ClusterLabels {
    crate::metrics::ClusterLabels {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
    }
}

/// The `<cluster>-tls` Secret to apply, and what the status must say about it.
struct ServerTls {
    /// The Secret to apply.
    secret: Secret,
    /// Why the certificate PostgreSQL serves is not as it should be (the reason of the
    /// `Degraded` condition, and its message), when it is not.
    problem: Option<(&'static str, String)>,
    /// When to look at the certificate again: at its renewal time, or soon after a failure.
    recheck_in: Duration,
    /// The cluster's CA, when this step fetched it (to issue the certificate): the client
    /// certificates' step signs with it rather than fetching it again.
    ca: Option<tls::ClusterCa>,
}

/// How soon a certificate that could not be issued is tried again.
const CERTIFICATE_RETRY: Duration = Duration::from_secs(10);

/// The cluster's `<cluster>-tls` Secret as it should be, with a Normal Event when it changes:
/// a copy of the Secret named in `spec.tls.certificateSecret` once it passes
/// [`tls::brought_secret`]'s checks; else the existing one while it is good, else a new
/// certificate from the cluster's CA (made on first use). When neither can be had, a Warning
/// Event says why and the existing certificate, if any, is kept: the database keeps serving.
async fn server_tls(
    context: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<ServerTls> {
    let name = cluster.name_any();
    let owner = build::controller_owner(cluster)?;
    let secrets = Api::<Secret>::namespaced(context.client.clone(), namespace);
    let get = |secret_name: String| async {
        secrets
            .get_opt(&secret_name)
            .await
            .map_err(|source| Error::Get {
                kind: "Secret",
                name: secret_name,
                source,
            })
    };
    let existing = get(names::tls_secret(&name)).await?.filter(tls::is_usable);
    let now = context.clock.now();
    let reference = cluster.object_ref(&());
    let regarding = &reference;
    let warn = |action: &'static str, note: String| async move {
        events::publish(
            &context.recorder,
            regarding,
            EventType::Warning,
            reasons::CERTIFICATE_FAILED,
            action,
            note,
        )
        .await
    };

    let mut refusal = None;
    if let Some(brought_name) = brought_certificate_secret(cluster).map(str::to_owned) {
        let checked = match get(brought_name.clone()).await? {
            Some(brought) => {
                tls::brought_secret(namespace, &name, &owner, &brought, now, &context.config.tls)
            }
            None => Err(format!(
                "Secret {brought_name} (spec.tls.certificateSecret) does not exist"
            )),
        };
        match checked {
            Ok(secret) => {
                let description = format!("the certificate of Secret {brought_name}");
                return Ok(
                    served(context, &reference, existing.as_ref(), secret, &description).await,
                );
            }
            Err(message) => {
                warn(CHECK_CERTIFICATE_SECRET, message.clone()).await;
                let problem = Some((condition_reasons::INVALID_CERTIFICATE_SECRET, message));
                if let Some(existing) = &existing {
                    return Ok(ServerTls {
                        secret: tls::keep(&name, &owner, existing),
                        problem,
                        recheck_in: FAILING_RESYNC,
                        ca: None,
                    });
                }
                // A new cluster serves a certificate of its own CA meanwhile.
                refusal = problem;
            }
        }
    }

    match issue_server_certificate(context, cluster, namespace, &owner, existing.as_ref()).await {
        Ok((secret, server_names, ca)) => {
            let description = format!("the server certificate for {}", server_names.join(", "));
            let mut served =
                served(context, &reference, existing.as_ref(), secret, &description).await;
            served.problem = refusal.or(served.problem);
            if let Some(at) = ca.next_step_at {
                let wait = Duration::from_secs(at.saturating_sub(now.as_second()).max(1) as u64);
                served.recheck_in = served.recheck_in.min(wait);
            }
            served.ca = Some(ca);
            Ok(served)
        }
        Err(error) => {
            warn("IssueCertificate", error.to_string()).await;
            let Some(existing) = existing else {
                return Err(error);
            };
            let now = now.as_second();
            let due = tls::renew_at(&existing).is_none_or(|at| at <= now);
            let problem = due.then(|| {
                let expiry = match tls::not_after(&existing) {
                    Some(at) if at <= now => format!("expired at {}", timestamp(at)),
                    Some(at) => format!("expires at {}", timestamp(at)),
                    None => "is due for renewal".to_owned(),
                };
                (
                    condition_reasons::CERTIFICATE_NOT_RENEWED,
                    format!("The server certificate {expiry} and cannot be renewed: {error}"),
                )
            });
            Ok(ServerTls {
                secret: tls::keep(&name, &owner, &existing),
                problem,
                recheck_in: CERTIFICATE_RETRY,
                ca: None,
            })
        }
    }
}

/// `secret` as the one to serve, with a Normal Event when it replaces (or is the first)
/// certificate, and a problem when it is already past its renewal time (a brought certificate
/// its owner did not renew).
async fn served(
    context: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    existing: Option<&Secret>,
    secret: Secret,
    description: &str,
) -> ServerTls {
    let now = context.clock.now().as_second();
    let until = tls::not_after(&secret)
        .map(|at| format!(", valid until {}", timestamp(at)))
        .unwrap_or_default();
    if existing.and_then(|old| old.data.as_ref()) != secret.data.as_ref() {
        let (reason, verb) = match existing {
            Some(_) => (reasons::CERTIFICATE_RENEWED, "Renewed"),
            None => (reasons::CERTIFICATE_ISSUED, "Issued"),
        };
        events::publish(
            &context.recorder,
            reference,
            EventType::Normal,
            reason,
            "IssueCertificate",
            format!("{verb} {description}{until}; PostgreSQL loads it without a restart"),
        )
        .await;
    }
    let renew_at = tls::renew_at(&secret);
    let problem = renew_at.filter(|at| *at <= now).map(|_| {
        (
            condition_reasons::CERTIFICATE_NOT_RENEWED,
            format!("{description} is past its renewal time and was not renewed{until}"),
        )
    });
    let recheck_in = match renew_at {
        Some(at) if at > now => Duration::from_secs((at - now) as u64),
        Some(_) => FAILING_RESYNC,
        None => RESYNC,
    };
    ServerTls {
        secret,
        problem,
        recheck_in,
        ca: None,
    }
}

/// The name of the Secret the cluster brings its server certificate in, if it does.
fn brought_certificate_secret(cluster: &PostgresCluster) -> Option<&str> {
    let secret = cluster.spec.tls.as_ref()?.certificate_secret.as_ref()?;
    Some(secret.name.as_str())
}

/// A Unix time in seconds, as RFC 3339 for people.
fn timestamp(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|at| at.to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

/// The `<cluster>-tls` Secret from the cluster's CA (made on first use) for every name the
/// cluster is reached by, with those names and the CA.
async fn issue_server_certificate(
    context: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    existing: Option<&Secret>,
) -> Result<(Secret, Vec<String>, tls::ClusterCa)> {
    let name = cluster.name_any();
    let client = &context.client;
    let now = context.clock.now();
    let ca = tls::ensure_ca(context, namespace, &name, &owner.uid, now).await?;
    let tunnel = &context.config.tunnel;
    // A template that names the Service's address gets it once the Service has one; the
    // Service's creation brings another reconcile, which adds the address.
    let service_ip = if tunnel.needs_service_ip() {
        Api::<Service>::namespaced(client.clone(), namespace)
            .get_opt(&names::read_write_service(&name))
            .await
            .map_err(|source| Error::Get {
                kind: "Service",
                name: names::read_write_service(&name),
                source,
            })?
            .and_then(|service| service.spec?.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
    } else {
        None
    };
    let external_host = (!tunnel.needs_service_ip() || service_ip.is_some())
        .then(|| tunnel.external_host(namespace, &name, service_ip.as_deref()));
    let mut server_names = tls::server_names(
        namespace,
        &name,
        &context.config.tls.cluster_domain,
        external_host.as_deref(),
    );
    // The name the router routes by, when it is not the tunnel's (docs/external-access.md).
    if let Some(router_host) = tunnel.router_host(namespace, &name)
        && !server_names.contains(&router_host)
    {
        server_names.push(router_host);
    }
    for tunnel_name in linked_tunnel_names(context, namespace, &name).await? {
        if !server_names.contains(&tunnel_name) {
            server_names.push(tunnel_name);
        }
    }
    let secret = tls::server_secret(
        namespace,
        &name,
        owner,
        &ca,
        &server_names,
        existing,
        now,
        &context.config.tls,
    )?;
    Ok((secret, server_names, ca))
}

/// The Events of what can be wrong with the certificate PostgreSQL serves, besides the
/// `CertificateFailed` Warning of each failed attempt. The database keeps serving with the
/// certificate it has, so these are among the reasons of `Degraded` (see [`degraded`]).
const CERTIFICATE_SIGNALS: [degraded::Signal; 2] = [
    degraded::Signal {
        reason: condition_reasons::CERTIFICATE_NOT_RENEWED,
        action: "IssueCertificate",
        recovered: "The server certificate is within its renewal time again",
    },
    degraded::Signal {
        reason: condition_reasons::INVALID_CERTIFICATE_SECRET,
        action: CHECK_CERTIFICATE_SECRET,
        recovered: "The Secret named in spec.tls.certificateSecret is no longer refused",
    },
];

/// The action of the Events about the Secret named in `spec.tls.certificateSecret`.
const CHECK_CERTIFICATE_SECRET: &str = "CheckCertificateSecret";

/// The names of the tunnel Service in every customer's cluster `cluster` is linked to (by a
/// PostgresRemoteCluster in its namespace that has recorded its remote namespace), in a stable
/// order. Only the platform's own names go in: the Service is named after the cluster, the
/// remote namespace must be an RFC 1123 label, and the cluster domain is the operator's.
async fn linked_tunnel_names(
    context: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<String>> {
    let links = Api::<PostgresRemoteCluster>::namespaced(context.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresRemoteCluster",
            source,
        })?;
    let mut remote_namespaces: Vec<String> = links
        .into_iter()
        .filter(|link| link.spec.cluster.name == cluster)
        .filter_map(|link| link.status?.remote_namespace)
        .collect();
    remote_namespaces.sort();
    remote_namespaces.dedup();
    Ok(remote_namespaces
        .iter()
        .flat_map(|remote_namespace| {
            remote_cluster::build::tunnel_server_names(
                cluster,
                remote_namespace,
                &context.config.tls.cluster_domain,
            )
        })
        .collect())
}

/// Keeps the pod template's restart hash as it is while an instance serves and PostgreSQL has
/// not accepted the new configuration (see [`parameters::template_restart_hash`]), so that a
/// restart-only setting restarts the pod only once it is known to be good.
fn hold_restart_until_accepted(
    desired: &mut StatefulSet,
    existing: Option<&StatefulSet>,
    config_state: &parameters::ConfigState,
) {
    let annotation = |stateful_set: &StatefulSet| {
        stateful_set
            .spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(build::RESTART_HASH_ANNOTATION)
            .cloned()
    };
    let existing = existing.and_then(annotation);
    let Some(annotations) = desired
        .spec
        .template
        .metadata
        .as_mut()
        .and_then(|metadata| metadata.annotations.as_mut())
    else {
        return;
    };
    if let Some(hash) = annotations.get_mut(build::RESTART_HASH_ANNOTATION) {
        *hash = parameters::template_restart_hash(
            std::mem::take(hash),
            existing.as_deref(),
            config_state,
        );
    }
}

/// Reports a `spec.restore` that cannot be met: `InvalidSpec`, `Ready` and `Degraded` with the
/// refusal (which names the field), phase `Degraded`, and a Warning Event when it is new.
/// Nothing is built, so nothing starts.
async fn refuse_restore(
    context: &Context,
    cluster: &PostgresCluster,
    name: &str,
    namespace: &str,
    refusal: String,
) -> Result<()> {
    let previous = cluster.status.clone().unwrap_or_default();
    let desired = [
        DesiredCondition::new(
            types::INVALID_SPEC,
            TRUE,
            condition_reasons::INVALID_SPEC,
            &refusal,
        ),
        DesiredCondition::new(
            types::READY,
            FALSE,
            condition_reasons::INVALID_SPEC,
            &refusal,
        ),
        DesiredCondition::new(
            types::PROGRESSING,
            FALSE,
            condition_reasons::INVALID_SPEC,
            "Nothing is created for a restore that cannot be met",
        ),
        DesiredCondition::new(
            types::DEGRADED,
            TRUE,
            condition_reasons::INVALID_SPEC,
            &refusal,
        ),
    ];
    let status = tusk_api::PostgresClusterStatus {
        phase: Some(tusk_api::cluster::ClusterPhase::Degraded),
        conditions: conditions::merge(
            &previous.conditions,
            &desired,
            cluster.metadata.generation,
            context.clock.now(),
        ),
        observed_generation: cluster.metadata.generation,
        ..previous.clone()
    };
    if status == previous {
        return Ok(());
    }
    let already_refused = conditions::find(&previous.conditions, types::INVALID_SPEC)
        .is_some_and(|condition| condition.status == TRUE && condition.message == refusal);
    if !already_refused {
        events::publish(
            &context.recorder,
            &cluster.object_ref(&()),
            EventType::Warning,
            reasons::INVALID_SPEC,
            "Restore",
            refusal,
        )
        .await;
    }
    write_status(&context.client, namespace, name, &status).await
}

/// Writes the cluster's status.
async fn write_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &tusk_api::PostgresClusterStatus,
) -> Result<()> {
    let mut body = json!(status);
    // A merge patch keeps what it leaves out: a finished restore's progress, and the
    // endpoints of a database no longer open, must be removed.
    for (field, absent) in [
        ("restoreProgress", status.restore_progress.is_none()),
        ("externalEndpoint", status.external_endpoint.is_none()),
        (
            "loadBalancerEndpoint",
            status.load_balancer_endpoint.is_none(),
        ),
    ] {
        if absent {
            body[field] = serde_json::Value::Null;
        }
    }
    health::clear_absent(&mut body);
    Api::<PostgresCluster>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            kind: "PostgresCluster",
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// The cluster's instance pods (those the StatefulSet controls are picked by
/// [`status::compute`]).
async fn instance_pods(client: &kube::Client, namespace: &str, cluster: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = crate::labels::selector_string(&crate::labels::instance_selector(cluster));
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: "Pod",
            source,
        })?
        .items)
}

/// Publishes the Events of the instance's failures on the cluster: a Warning when a failure
/// appears or changes and at each crash of the instance (the Recorder folds repeats into one
/// Event with a count), a Normal `Recovered` when it clears. `refusal_action` is the action of
/// a configuration PostgreSQL refused, when that is the failure.
async fn report_instance_failures(
    context: &Context,
    cluster: &PostgresCluster,
    status: &tusk_api::PostgresClusterStatus,
    stateful_set: &StatefulSet,
    pods: &[Pod],
    refusal_action: Option<&str>,
) {
    // The instance's own failure is the first problem of `Degraded`, when it has one; the
    // others have Events of their own.
    let degraded = |status: Option<&tusk_api::PostgresClusterStatus>| {
        let condition =
            status.and_then(|status| conditions::find(&status.conditions, types::DEGRADED));
        degraded::problems(condition)
            .into_iter()
            .next()
            .filter(|problem| INSTANCE_FAILURES.contains(&problem.reason.as_str()))
            .map(|problem| (problem.reason, problem.message))
    };
    let before = degraded(cluster.status.as_ref());
    let now = degraded(Some(status));
    let reference = cluster.object_ref(&());

    let restarts = status::instance_restarts(stateful_set, pods);
    let crashed = {
        let uid = cluster.uid().unwrap_or_default();
        let mut seen = context
            .instance_restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let previous = seen.insert(uid, restarts);
        previous.is_some_and(|previous| restarts > previous)
    };

    match (&before, &now) {
        (_, Some((reason, message))) if crashed || before.as_ref() != now.as_ref() => {
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reason,
                refusal_action.unwrap_or("RunInstance"),
                message.clone(),
            )
            .await;
        }
        (Some((reason, _)), None) => {
            let note = if reason == condition_reasons::INVALID_PARAMETER {
                "PostgreSQL accepts the parameters; they are in force"
            } else {
                "The instance runs again"
            };
            events::publish(
                &context.recorder,
                &reference,
                EventType::Normal,
                condition_reasons::RECOVERED,
                "RunInstance",
                note.to_owned(),
            )
            .await;
        }
        _ if crashed => {
            // A crash the instance recovered from by itself (PostgreSQL was killed and the
            // container restarted): only its Event tells.
            if let Some(crash) = status::last_crash(stateful_set, pods) {
                events::publish(
                    &context.recorder,
                    &reference,
                    EventType::Warning,
                    crash.reason,
                    "RunInstance",
                    format!("The instance restarted: {}", crash.message),
                )
                .await;
            }
        }
        _ => {}
    }
}

/// The reasons of the Degraded condition that come from the instance's pods.
const INSTANCE_FAILURES: [&str; 6] = [
    condition_reasons::CRASH_LOOP,
    condition_reasons::INVALID_PARAMETER,
    condition_reasons::RESTORE_FAILED,
    condition_reasons::UNSCHEDULABLE,
    condition_reasons::IMAGE_PULL_FAILED,
    condition_reasons::CANNOT_START,
];

/// Adds the `InvalidSpec` condition for parameters left out of postgresql.conf (see
/// [`postgresql_conf::refused_parameters`]), with a Warning Event when it first appears or
/// changes.
async fn report_refused_parameters(
    context: &Context,
    cluster: &PostgresCluster,
    mut status: tusk_api::PostgresClusterStatus,
) -> tusk_api::PostgresClusterStatus {
    let refused = postgresql_conf::refused_parameters(cluster);
    let previous = cluster
        .status
        .as_ref()
        .and_then(|status| conditions::find(&status.conditions, types::INVALID_SPEC));
    let desired = if refused.is_empty() {
        if previous.is_none() {
            return status;
        }
        DesiredCondition::new(
            types::INVALID_SPEC,
            FALSE,
            condition_reasons::RECONCILED,
            "Every parameter is written to postgresql.conf",
        )
    } else {
        let message = format!(
            "Parameters left out of postgresql.conf: {}",
            refused.join("; ")
        );
        if previous.is_none_or(|previous| previous.status != TRUE || previous.message != message) {
            events::publish(
                &context.recorder,
                &cluster.object_ref(&()),
                EventType::Warning,
                reasons::INVALID_SPEC,
                "WriteConfiguration",
                message.clone(),
            )
            .await;
        }
        DesiredCondition::new(
            types::INVALID_SPEC,
            TRUE,
            condition_reasons::INVALID_SPEC,
            message,
        )
    };
    status.conditions = conditions::merge(
        &status.conditions,
        &[desired],
        cluster.metadata.generation,
        context.clock.now(),
    );
    status
}

/// A cluster that names no PostgreSQL version gets the operator's default written into its
/// spec, so that a later change of the default does not upgrade it behind its owner's back.
async fn record_default_version(
    cluster: Arc<PostgresCluster>,
    context: &Context,
    namespace: &str,
) -> Result<Arc<PostgresCluster>> {
    if cluster.spec.postgres_version.is_some() {
        return Ok(cluster);
    }
    let name = cluster.name_any();
    let api: Api<PostgresCluster> = Api::namespaced(context.client.clone(), namespace);
    let patch = json!({"spec": {"postgresVersion": context.config.postgres.default_version}});
    let patched = api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(ssa::field_manager(CONTROLLER)),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Patch {
            kind: "PostgresCluster",
            name,
            source,
        })?;
    Ok(Arc::new(patched))
}

/// The cluster's store-gateway credentials, derived from the gateway key (created on first
/// use); `None` for a `file://` store, which pods use directly. The platform's own store keys
/// are never read here: they must not reach a tenant's namespace.
async fn store_credentials(
    context: &Context,
    namespace: &str,
    cluster: &PostgresCluster,
) -> Result<Option<ClusterCredentials>> {
    let store = &context.config.store;
    if !store.uses_gateway() {
        return Ok(None);
    }
    let uid = cluster
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey {
            kind: "PostgresCluster",
            field: "uid",
        })?;
    let secret = &store.gateway.key_secret;
    let key = tusk_backup::gateway::ensure_gateway_key(
        &context.client,
        &secret.namespace,
        &secret.name,
        &secret.key,
    )
    .await
    .map_err(|error| Error::StoreConfig(error.to_string()))?;
    Ok(Some(key.credentials_for(&ClusterIdentity {
        namespace: namespace.to_owned(),
        name: cluster.name_any(),
        uid,
    })))
}

/// The newest PostgresBackup of the cluster that is not being deleted.
pub async fn newest_backup(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
) -> Result<Option<PostgresBackup>> {
    let api: Api<PostgresBackup> = Api::namespaced(client.clone(), namespace);
    let backups = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackup",
            source,
        })?;
    Ok(backups
        .into_iter()
        .filter(|backup| {
            backup.spec.cluster.name == cluster && backup.metadata.deletion_timestamp.is_none()
        })
        .max_by_key(|backup| {
            (
                backup
                    .metadata
                    .creation_timestamp
                    .clone()
                    .map(|time| time.0),
                backup.name_any(),
            )
        }))
}
