//! A cluster's status, computed from what was applied and observed. Pure, so every transition
//! is unit-tested.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use tusk_api::cluster::{ClusterPhase, LastBackup, PostgresClusterStatus, RestoreProgress};
use tusk_api::conditions::{FALSE, TRUE, reasons, types};
use tusk_api::{PostgresCluster, names};

use crate::conditions::{self, DesiredCondition};

/// What the status is computed from.
pub struct Observed<'a> {
    /// The cluster.
    pub cluster: &'a PostgresCluster,
    /// Its StatefulSet as the API server returned it after the apply.
    pub stateful_set: &'a StatefulSet,
    /// The pods of the cluster's instances (those the StatefulSet controls are used).
    pub pods: &'a [Pod],
    /// PVCs that were just asked to grow.
    pub expanding_volumes: &'a [String],
    /// The newest backup of the cluster.
    pub last_backup: Option<LastBackup>,
    /// How far the restore got, while [`restore_under_way`].
    pub restore_progress: Option<RestoreProgress>,
    /// Where a client outside reaches the cluster through the router, as host:port, while it
    /// is open ([`crate::config::TunnelSettings::router_endpoint`]).
    pub external_endpoint: Option<String>,
    /// The current time.
    pub now: Timestamp,
}

/// The cluster's `status.externalEndpoint` (host:port) under the operator's router settings.
pub fn external_endpoint(
    tunnel: &crate::config::TunnelSettings,
    cluster: &PostgresCluster,
) -> Option<String> {
    let (host, port) = tunnel.router_endpoint(cluster)?;
    Some(format!("{host}:{port}"))
}

/// The status the cluster should have.
pub fn compute(observed: &Observed<'_>) -> PostgresClusterStatus {
    let cluster = observed.cluster;
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;

    let sts_generation = observed.stateful_set.metadata.generation;
    let sts_status = observed.stateful_set.status.clone().unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0) >= 1;
    let rolled_out = sts_status.observed_generation.is_some()
        && sts_status.observed_generation >= sts_generation
        && sts_status.update_revision.is_some()
        && sts_status.current_revision == sts_status.update_revision
        && sts_status.updated_replicas.unwrap_or(0) >= 1;
    let was_ready = has_served(&previous);
    // Only a cluster that never served restores: one restored long ago and restarting (its
    // instance not ready yet) restores nothing.
    let restoring = cluster.spec.restore.is_some() && !was_ready;
    let failure = instance_failure(observed.stateful_set, observed.pods);

    let (phase, desired) = if let Some(failure) = failure.filter(|_| !ready) {
        (
            ClusterPhase::Degraded,
            [
                DesiredCondition::new(types::READY, FALSE, failure.reason, &failure.message),
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    failure.reason,
                    "The instance cannot start; the Degraded condition says why",
                ),
                DesiredCondition::new(types::DEGRADED, TRUE, failure.reason, failure.message),
            ],
        )
    } else if ready && rolled_out && observed.expanding_volumes.is_empty() {
        (
            ClusterPhase::Ready,
            [
                DesiredCondition::new(
                    types::READY,
                    TRUE,
                    reasons::AVAILABLE,
                    "PostgreSQL accepts connections",
                ),
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::RECONCILED,
                    "The cluster matches its spec",
                ),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    } else if ready || (was_ready && !rolled_out) {
        let message = if observed.expanding_volumes.is_empty() {
            "A change to the spec is rolling out".to_owned()
        } else {
            format!("Growing volumes {}", observed.expanding_volumes.join(", "))
        };
        (
            ClusterPhase::Updating,
            [
                if ready {
                    DesiredCondition::new(
                        types::READY,
                        TRUE,
                        reasons::AVAILABLE,
                        "PostgreSQL accepts connections",
                    )
                } else {
                    DesiredCondition::new(
                        types::READY,
                        FALSE,
                        reasons::UPDATING,
                        "The instance restarts with the new spec",
                    )
                },
                DesiredCondition::new(types::PROGRESSING, TRUE, reasons::UPDATING, message),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    } else if was_ready {
        (
            ClusterPhase::Degraded,
            [
                DesiredCondition::new(
                    types::READY,
                    FALSE,
                    reasons::INSTANCE_UNAVAILABLE,
                    "The PostgreSQL instance is not ready; see the pod's Events and logs",
                ),
                DesiredCondition::new(
                    types::PROGRESSING,
                    FALSE,
                    reasons::RECONCILED,
                    "The cluster matches its spec",
                ),
                DesiredCondition::new(
                    types::DEGRADED,
                    TRUE,
                    reasons::INSTANCE_UNAVAILABLE,
                    "The PostgreSQL instance stopped accepting connections",
                ),
            ],
        )
    } else {
        let (phase, reason, message) = if restoring {
            (
                ClusterPhase::Restoring,
                reasons::RESTORING,
                match &observed.restore_progress {
                    Some(progress) => {
                        format!("Restoring the data from a backup: {}", progress.summary)
                    }
                    None => "Restoring the data from a backup".to_owned(),
                },
            )
        } else if sts_status.replicas > 0 {
            (
                ClusterPhase::Creating,
                reasons::STARTING,
                "PostgreSQL is starting".to_owned(),
            )
        } else {
            (
                ClusterPhase::Creating,
                reasons::CREATING,
                "The instance is being created".to_owned(),
            )
        };
        (
            phase,
            [
                DesiredCondition::new(types::READY, FALSE, reason, &message),
                DesiredCondition::new(types::PROGRESSING, TRUE, reason, message),
                DesiredCondition::new(
                    types::DEGRADED,
                    FALSE,
                    reasons::RECONCILED,
                    "Nothing is wrong",
                ),
            ],
        )
    };

    PostgresClusterStatus {
        phase: Some(phase),
        conditions: conditions::merge(&previous.conditions, &desired, generation, observed.now),
        observed_generation: generation,
        endpoint: Some(format!(
            "{}.{namespace}.svc:{}",
            names::read_write_service(name),
            names::POSTGRES_PORT
        )),
        external_endpoint: observed.external_endpoint.clone(),
        // Set from the LoadBalancer Service where the children are applied; it stands until then.
        load_balancer_endpoint: previous.load_balancer_endpoint,
        last_backup: observed.last_backup.clone(),
        restore_progress: observed
            .restore_progress
            .clone()
            .filter(|_| phase == ClusterPhase::Restoring),
        // Added by `health::observe`.
        archiving: None,
        // The instance's last report stands until a new one is read (see `disk`).
        disk: previous.disk,
        // The size the operator grew the volumes to stands too (see `disk_grow`).
        auto_grown_disk_size: previous.auto_grown_disk_size,
    }
}

/// Whether the cluster is still restoring from `spec.restore`: it was never Ready and its
/// instance is not ready yet. Only then is the restore's progress read and shown.
pub fn restore_under_way(cluster: &PostgresCluster, stateful_set: &StatefulSet) -> bool {
    let ready = stateful_set
        .status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0)
        >= 1;
    let was_ready = cluster.status.as_ref().is_some_and(has_served);
    cluster.spec.restore.is_some() && !ready && !was_ready
}

/// Whether the cluster has served before, as its last status tells: it is Ready, or its
/// Progressing condition says it had reconciled or was rolling a change out, which only a
/// cluster that had been Ready says (it stays so while its instance is unavailable, as after
/// a restart of the node). An instance that crashes loses it: from then on the cluster is
/// starting again.
fn has_served(status: &PostgresClusterStatus) -> bool {
    let ready = conditions::find(&status.conditions, types::READY)
        .is_some_and(|condition| condition.status == TRUE);
    let had_reconciled =
        conditions::find(&status.conditions, types::PROGRESSING).is_some_and(|condition| {
            condition.reason == reasons::RECONCILED || condition.reason == reasons::UPDATING
        });
    ready || had_reconciled
}

/// The instance pod the StatefulSet controls, if it has one.
pub fn instance_pod<'a>(stateful_set: &'a StatefulSet, pods: &'a [Pod]) -> Option<&'a Pod> {
    controlled_pods(stateful_set, pods).next()
}

/// Why `spec.restore` cannot be met by its backup, before anything is built: a `targetLSN`
/// before the WAL location where the backup ended, where the restored data is first
/// consistent. The message names the field. (A `targetTime` before the backup's end is refused
/// by PostgreSQL itself, `requested recovery stop point is before consistent recovery point`,
/// and shows as `RestoreFailed`: the PostgresBackup records no exact end time to compare with.)
pub fn restore_target_refusal(
    cluster: &PostgresCluster,
    backup: &tusk_api::PostgresBackup,
) -> Option<String> {
    let target = cluster.spec.restore.as_ref()?.target_lsn.as_deref()?;
    let stop = backup.spec.stop_lsn.as_deref()?;
    (parse_lsn(target)? < parse_lsn(stop)?).then(|| {
        format!(
            "spec.restore.targetLSN {target} is before {stop}, where PostgresBackup {} ended; \
             the restored data is consistent only from there on",
            backup.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// A WAL location `X/Y` (hexadecimal halves) as one number.
fn parse_lsn(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// Why the instance is not running, as its pod says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceFailure {
    /// One of the instance failure reasons of `tusk_api::conditions::reasons`.
    pub reason: &'static str,
    /// The decisive line: the container's termination message, or the kubelet's.
    pub message: String,
}

/// The longest message a failure carries into a condition or an Event.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// The instance pods the StatefulSet controls. A pod that only carries the cluster's labels
/// (anyone in the namespace can make one) says nothing about the cluster.
fn controlled_pods<'a>(
    stateful_set: &'a StatefulSet,
    pods: &'a [Pod],
) -> impl Iterator<Item = &'a Pod> {
    let uid = stateful_set.metadata.uid.as_deref();
    pods.iter().filter(move |pod| {
        uid.is_some()
            && pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| owner.controller == Some(true) && Some(owner.uid.as_str()) == uid)
    })
}

/// The IP of an instance pod the StatefulSet controls that is Ready, as the kubelet reported
/// it: the instance that serves now.
pub fn serving_pod_ip(stateful_set: &StatefulSet, pods: &[Pod]) -> Option<String> {
    controlled_pods(stateful_set, pods).find_map(|pod| {
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|condition| condition.type_ == "Ready" && condition.status == TRUE);
        ready.then(|| status.pod_ip.clone()).flatten()
    })
}

/// How many times the instance containers have restarted, summed over the instance pods.
pub fn instance_restarts(stateful_set: &StatefulSet, pods: &[Pod]) -> i32 {
    controlled_pods(stateful_set, pods)
        .flat_map(container_statuses)
        .map(|status| status.restart_count)
        .sum()
}

/// The last termination of an instance container that failed, classified, whether or not
/// the container runs again: what a crash Event says.
pub fn last_crash(stateful_set: &StatefulSet, pods: &[Pod]) -> Option<InstanceFailure> {
    controlled_pods(stateful_set, pods)
        .flat_map(container_statuses)
        .filter_map(|status| {
            let terminated = status.last_state.as_ref()?.terminated.as_ref()?;
            (terminated.exit_code != 0).then(|| terminated_failure(terminated))
        })
        .next()
}

fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status
        .iter()
        .flat_map(|status| status.container_statuses.iter().flatten())
}

/// What keeps the instance from running, if anything does: a pod that cannot be scheduled,
/// an image that cannot be pulled, a container that cannot be started or keeps exiting.
pub fn instance_failure(stateful_set: &StatefulSet, pods: &[Pod]) -> Option<InstanceFailure> {
    controlled_pods(stateful_set, pods).find_map(pod_failure)
}

fn pod_failure(pod: &Pod) -> Option<InstanceFailure> {
    let status = pod.status.as_ref()?;
    let unscheduled = status.conditions.iter().flatten().find(|condition| {
        condition.type_ == "PodScheduled"
            && condition.status == FALSE
            && condition.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unscheduled {
        return Some(failure(
            reasons::UNSCHEDULABLE,
            condition
                .message
                .as_deref()
                .unwrap_or("no node fits the pod"),
        ));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(container_failure)
}

fn container_failure(status: &ContainerStatus) -> Option<InstanceFailure> {
    let state = status.state.as_ref()?;
    if let Some(terminated) = &state.terminated {
        return (terminated.exit_code != 0).then(|| terminated_failure(terminated));
    }
    let last_failure = || {
        status
            .last_state
            .as_ref()
            .and_then(|last| last.terminated.as_ref())
            .filter(|terminated| terminated.exit_code != 0)
    };
    if state.running.is_some() {
        // Restarted after a failure but not ready yet: still failing until it proves
        // otherwise, so that a crash loop does not flap between failing and starting (and
        // the cluster's status and Events with it) at each restart.
        return last_failure()
            .filter(|_| !status.ready)
            .map(terminated_failure);
    }
    let waiting = state.waiting.as_ref()?;
    let waiting_message = waiting.message.as_deref().unwrap_or_default();
    match waiting.reason.as_deref()? {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            Some(failure(reasons::IMAGE_PULL_FAILED, waiting_message))
        }
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Some(failure(reasons::CANNOT_START, waiting_message))
        }
        "CrashLoopBackOff" => Some(last_failure().map_or_else(
            || failure(reasons::CRASH_LOOP, waiting_message),
            terminated_failure,
        )),
        _ => None,
    }
}

fn terminated_failure(
    terminated: &k8s_openapi::api::core::v1::ContainerStateTerminated,
) -> InstanceFailure {
    let message = terminated
        .message
        .as_deref()
        .map(str::trim)
        .filter(|message| !message.is_empty())
        .map_or_else(
            || format!("the instance exited with code {}", terminated.exit_code),
            str::to_owned,
        );
    let reason = match terminated.reason.as_deref() {
        Some("StartError" | "ContainerCannotRun") => reasons::CANNOT_START,
        _ => classify(&message),
    };
    failure(reason, &message)
}

/// The reason of a failed instance, from its termination message.
fn classify(message: &str) -> &'static str {
    const PARAMETER: [&str; 4] = [
        "invalid value for parameter",
        "unrecognized configuration parameter",
        "parameter \"",
        "configuration file",
    ];
    const RESTORE: [&str; 7] = [
        "restoring the backup",
        "recovery ended before",
        "recovery stop point",
        "recovery target",
        "\"recovery_target",
        "unfinished restore",
        "restore into data directory",
    ];
    let lower = message.to_ascii_lowercase();
    // A restore's own settings (recovery_target_time...) are part of the restore.
    if RESTORE.iter().any(|needle| lower.contains(needle)) {
        reasons::RESTORE_FAILED
    } else if PARAMETER.iter().any(|needle| lower.contains(needle)) {
        reasons::INVALID_PARAMETER
    } else {
        reasons::CRASH_LOOP
    }
}

/// A failure with its message on one line, cut to [`MAX_FAILURE_MESSAGE`].
fn failure(reason: &'static str, message: &str) -> InstanceFailure {
    let mut line = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if line.len() > MAX_FAILURE_MESSAGE {
        let mut end = MAX_FAILURE_MESSAGE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    InstanceFailure {
        reason,
        message: line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use std::collections::BTreeMap;
    use tusk_api::PostgresClusterSpec;

    fn cluster() -> PostgresCluster {
        let mut cluster = PostgresCluster::new(
            "elephant",
            PostgresClusterSpec {
                display_name: "e".into(),
                memory_size: 1,
                postgres_disk_size: 1,
                wal_archiving: false,
                postgres_version: Some("15".into()),
                parameters: BTreeMap::new(),
                restore: None,
                tls: None,
                external_access: None,
            },
        );
        cluster.metadata.namespace = Some("project-a".into());
        cluster.metadata.generation = Some(3);
        cluster
    }

    fn sts(ready: i32, current: &str, update: &str) -> StatefulSet {
        StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(2),
                uid: Some("sts-uid".into()),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(ready),
                updated_replicas: Some(1),
                observed_generation: Some(2),
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn status(cluster: &PostgresCluster, sts: &StatefulSet, now: i64) -> PostgresClusterStatus {
        compute(&Observed {
            cluster,
            stateful_set: sts,
            pods: &[],
            expanding_volumes: &[],
            last_backup: None,
            restore_progress: None,
            external_endpoint: None,
            now: at(now),
        })
    }

    fn condition<'a>(status: &'a PostgresClusterStatus, type_: &str) -> &'a str {
        &conditions::find(&status.conditions, type_).unwrap().status
    }

    #[test]
    fn a_new_cluster_is_creating_then_ready() {
        let mut cluster = cluster();
        let creating = status(&cluster, &StatefulSet::default(), 10);
        assert_eq!(creating.phase, Some(ClusterPhase::Creating));
        assert_eq!(condition(&creating, types::READY), FALSE);
        assert_eq!(condition(&creating, types::PROGRESSING), TRUE);
        assert_eq!(
            creating.endpoint.as_deref(),
            Some("elephant-rw.project-a.svc:5432")
        );
        assert_eq!(creating.observed_generation, Some(3));

        cluster.status = Some(creating);
        let ready = status(&cluster, &sts(1, "a", "a"), 20);
        assert_eq!(ready.phase, Some(ClusterPhase::Ready));
        assert_eq!(condition(&ready, types::READY), TRUE);
        assert_eq!(condition(&ready, types::PROGRESSING), FALSE);

        // Nothing changed: the status is identical, so no write is needed.
        cluster.status = Some(ready.clone());
        assert_eq!(status(&cluster, &sts(1, "a", "a"), 30), ready);
    }

    #[test]
    fn a_lost_instance_degrades_the_cluster_and_a_rollout_is_updating() {
        let mut cluster = cluster();
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 1));
        let degraded = status(&cluster, &sts(0, "a", "a"), 2);
        assert_eq!(degraded.phase, Some(ClusterPhase::Degraded));
        assert_eq!(condition(&degraded, types::DEGRADED), TRUE);

        let updating = status(&cluster, &sts(0, "a", "b"), 2);
        assert_eq!(updating.phase, Some(ClusterPhase::Updating));
        assert_eq!(condition(&updating, types::PROGRESSING), TRUE);
    }

    #[test]
    fn a_restored_cluster_restarting_is_degraded_until_ready_and_never_restoring_again() {
        let mut cluster = cluster();
        cluster.spec.restore = Some(tusk_api::cluster::RestoreSource {
            backup: tusk_api::cluster::BackupReference {
                name: "nightly".into(),
            },
            target_time: None,
            target_lsn: None,
            latest: false,
        });
        let restoring = status(&cluster, &sts(0, "a", "a"), 1);
        assert_eq!(restoring.phase, Some(ClusterPhase::Restoring));
        cluster.status = Some(restoring);
        assert!(restore_under_way(&cluster, &sts(0, "a", "a")));
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 2));
        assert_eq!(
            cluster.status.as_ref().unwrap().phase,
            Some(ClusterPhase::Ready)
        );

        // The node restarts: the instance is not ready, status after status, until it is.
        for now in 3..6 {
            let restarting = status(&cluster, &sts(0, "a", "a"), now);
            assert_eq!(
                restarting.phase,
                Some(ClusterPhase::Degraded),
                "{restarting:?}"
            );
            assert_eq!(condition(&restarting, types::READY), FALSE);
            cluster.status = Some(restarting);
            assert!(!restore_under_way(&cluster, &sts(0, "a", "a")));
        }
        let ready = status(&cluster, &sts(1, "a", "a"), 6);
        assert_eq!(ready.phase, Some(ClusterPhase::Ready));
    }

    #[test]
    fn growing_volumes_show_as_progressing() {
        let mut cluster = cluster();
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 1));
        let growing = compute(&Observed {
            cluster: &cluster,
            stateful_set: &sts(1, "a", "a"),
            pods: &[],
            expanding_volumes: &["data-elephant-0".into()],
            last_backup: None,
            restore_progress: None,
            external_endpoint: None,
            now: at(2),
        });
        assert_eq!(growing.phase, Some(ClusterPhase::Updating));
        let progressing = conditions::find(&growing.conditions, types::PROGRESSING).unwrap();
        assert!(progressing.message.contains("data-elephant-0"));
    }

    /// An instance pod of the StatefulSet (owned by `owner_uid`) whose one container has
    /// restarted `restarts` times, is in `state` and last ended with `last`.
    fn pod(
        owner_uid: &str,
        state: serde_json::Value,
        last: serde_json::Value,
        restarts: i32,
    ) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "elephant-0",
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "elephant",
                    "uid": owner_uid, "controller": true,
                }],
            },
            "status": {
                "containerStatuses": [{
                    "name": "postgres", "image": "tusk", "imageID": "", "ready": false,
                    "restartCount": restarts, "state": state, "lastState": last,
                }],
            },
        }))
        .unwrap()
    }

    fn crash_looping(message: &str) -> Pod {
        pod(
            "sts-uid",
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}),
            serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error", "message": message}}),
            3,
        )
    }

    fn with_pods(
        cluster: &PostgresCluster,
        sts: &StatefulSet,
        pods: &[Pod],
    ) -> PostgresClusterStatus {
        compute(&Observed {
            cluster,
            stateful_set: sts,
            pods,
            expanding_volumes: &[],
            last_backup: None,
            restore_progress: None,
            external_endpoint: None,
            now: at(50),
        })
    }

    #[test]
    fn a_refused_parameter_degrades_a_new_cluster_with_postgresqls_line() {
        let cluster = cluster();
        let message = "LOG:  invalid value for parameter \"shared_buffers\": \"banana\"\npostgres exited unexpectedly (exit status: 1)\n";
        let status = with_pods(&cluster, &sts(0, "a", "a"), &[crash_looping(message)]);
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        let degraded = conditions::find(&status.conditions, types::DEGRADED).unwrap();
        assert_eq!(degraded.status, TRUE);
        assert_eq!(degraded.reason, reasons::INVALID_PARAMETER);
        assert_eq!(
            degraded.message,
            "LOG:  invalid value for parameter \"shared_buffers\": \"banana\" | postgres exited unexpectedly (exit status: 1)"
        );
        let ready = conditions::find(&status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (FALSE, reasons::INVALID_PARAMETER)
        );
    }

    #[test]
    fn failures_are_told_apart() {
        let cluster = cluster();
        let reason = |pod: Pod| {
            let status = with_pods(&cluster, &sts(0, "a", "a"), &[pod]);
            conditions::find(&status.conditions, types::DEGRADED)
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(
            reason(crash_looping(
                "FATAL:  recovery ended before configured recovery target was reached\nsecuring the roles failed"
            )),
            reasons::RESTORE_FAILED
        );
        assert_eq!(
            reason(crash_looping(
                "restoring the backup: the object's SHA-256 differs"
            )),
            reasons::RESTORE_FAILED
        );
        assert_eq!(
            reason(crash_looping(
                "postgres exited unexpectedly (signal: 9 (SIGKILL))"
            )),
            reasons::CRASH_LOOP
        );
        assert_eq!(
            reason(pod(
                "sts-uid",
                serde_json::json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}),
                serde_json::json!({}),
                0
            )),
            reasons::IMAGE_PULL_FAILED
        );
        assert_eq!(
            reason(pod(
                "sts-uid",
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                serde_json::json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": "exec: permission denied"}}),
                1
            )),
            reasons::CANNOT_START
        );
        let unschedulable: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "elephant-0", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "elephant", "uid": "sts-uid", "controller": true}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]},
        })).unwrap();
        assert_eq!(reason(unschedulable), reasons::UNSCHEDULABLE);
    }

    #[test]
    fn a_restarted_instance_is_failing_until_it_is_ready() {
        let cluster = cluster();
        let restarted = pod(
            "sts-uid",
            serde_json::json!({"running": {"startedAt": "2026-12-06T03:00:00Z"}}),
            serde_json::json!({"terminated": {"exitCode": 1, "message": "LOG:  invalid value for parameter \"work_mem\": \"x\""}}),
            2,
        );
        let status = with_pods(&cluster, &sts(0, "a", "a"), &[restarted]);
        let degraded = conditions::find(&status.conditions, types::DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            (TRUE, reasons::INVALID_PARAMETER)
        );
    }

    #[test]
    fn a_pod_the_stateful_set_does_not_control_says_nothing() {
        let cluster = cluster();
        let forged = pod(
            "someone-else",
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            serde_json::json!({"terminated": {"exitCode": 1, "message": "restoring the backup: forged"}}),
            9,
        );
        let status = with_pods(&cluster, &sts(0, "a", "a"), std::slice::from_ref(&forged));
        assert_eq!(status.phase, Some(ClusterPhase::Creating));
        assert_eq!(instance_restarts(&sts(0, "a", "a"), &[forged]), 0);
    }

    #[test]
    fn a_ready_instance_is_not_failing_and_its_last_crash_is_remembered() {
        let mut cluster = cluster();
        cluster.status = Some(status(&cluster, &sts(1, "a", "a"), 1));
        let recovered = pod(
            "sts-uid",
            serde_json::json!({"running": {"startedAt": "2026-12-06T03:00:00Z"}}),
            serde_json::json!({"terminated": {"exitCode": 1, "message": "postgres exited unexpectedly (signal: 9 (SIGKILL))"}}),
            1,
        );
        let status = with_pods(
            &cluster,
            &sts(1, "a", "a"),
            std::slice::from_ref(&recovered),
        );
        assert_eq!(status.phase, Some(ClusterPhase::Ready));
        let crash = last_crash(&sts(1, "a", "a"), &[recovered]).unwrap();
        assert_eq!(crash.reason, reasons::CRASH_LOOP);
        assert!(crash.message.contains("SIGKILL"));
    }

    #[test]
    fn a_target_lsn_before_the_backups_end_is_refused() {
        let backup: tusk_api::PostgresBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "postgres.tusk.dev/v1", "kind": "PostgresBackup",
            "metadata": {"name": "nightly"},
            "spec": {
                "cluster": {"name": "source"}, "displayName": "n",
                "triggeredBy": "user",
                "encryption": {"algorithm": "dare", "passphraseSecretRef": {"name": "s", "key": "k"}},
                "s3": {"bucket": "b", "path": "p"},
                "size": 1, "startLsn": "0/2000028", "stopLsn": "1/A0000100",
            },
        }))
        .unwrap();
        let restoring = |target: &str| {
            let mut cluster = cluster();
            cluster.spec.restore = serde_json::from_value(serde_json::json!({
                "backup": {"name": "nightly"}, "targetLSN": target,
            }))
            .unwrap();
            restore_target_refusal(&cluster, &backup)
        };
        let refusal = restoring("1/9FFFFFFF").expect("refused");
        assert!(refusal.contains("spec.restore.targetLSN"), "{refusal}");
        assert_eq!(restoring("1/A0000100"), None);
        // Compared as numbers, not as text.
        assert_eq!(restoring("2/0"), None);
        assert!(restoring("0/FFFFFFFF").is_some());
    }

    #[test]
    fn a_long_message_is_cut() {
        let failure = failure(reasons::CRASH_LOOP, &"é".repeat(2000));
        assert!(failure.message.len() <= MAX_FAILURE_MESSAGE);
    }
}
